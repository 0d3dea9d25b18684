//! The generic in-memory object store: JSON objects keyed by (group, plural, namespace, name),
//! one global monotonically increasing resourceVersion, a bounded per-resource event history
//! for watches and a broadcast of every change for watchers and the simulated controllers.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::error::ApiError;
use crate::resources::ResKey;
use crate::util;

/// Watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change of one object.
#[derive(Debug, Clone)]
pub struct StoreEvent {
    pub key: ResKey,
    pub namespace: String,
    pub name: String,
    pub type_: EventType,
    pub rv: u64,
    /// The object after the change (for DELETED, its last state with the deletion's rv).
    pub object: Value,
    /// The object before the change, if it existed.
    pub old: Option<Value>,
}

/// What a `modify` closure decides.
pub enum Change {
    /// Store this object (creating or replacing).
    Put(Value),
    /// Remove the object.
    Delete,
    /// Leave the store unchanged.
    Keep,
}

/// What `modify` did.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The object now stored (unchanged if the put was a no-op).
    Stored(Value),
    /// The object was removed; its last state.
    Deleted(Value),
    /// Nothing stored and nothing existed.
    Absent,
}

type ObjKey = (String, String);

struct Inner {
    rv: u64,
    objects: HashMap<ResKey, BTreeMap<ObjKey, Value>>,
    history: HashMap<ResKey, VecDeque<Arc<StoreEvent>>>,
    /// Watches from a resourceVersion below this get 410 Expired.
    compacted: HashMap<ResKey, u64>,
    history_limit: usize,
}

/// Thread-safe object store.
pub struct Store {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<StoreEvent>>,
}

/// The events a new watch starts with and the receiver of later ones.
pub struct WatchStart {
    pub initial: Vec<Arc<StoreEvent>>,
    pub rx: broadcast::Receiver<Arc<StoreEvent>>,
    /// The global resourceVersion at the moment the watch was registered.
    pub rv: u64,
}

impl Store {
    pub fn new(history_limit: usize) -> Self {
        let (tx, _) = broadcast::channel(16384);
        Store {
            inner: Mutex::new(Inner {
                rv: 1,
                objects: HashMap::new(),
                history: HashMap::new(),
                compacted: HashMap::new(),
                history_limit: history_limit.max(1),
            }),
            tx,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoreEvent>> {
        self.tx.subscribe()
    }

    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    pub fn get(&self, key: &ResKey, ns: &str, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(key)
            .and_then(|m| m.get(&(ns.to_string(), name.to_string())))
            .cloned()
    }

    /// Objects of a resource (in one namespace, or all), sorted by (namespace, name), and the
    /// resourceVersion of this snapshot.
    pub fn list(&self, key: &ResKey, ns: Option<&str>) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let items = inner
            .objects
            .get(key)
            .map(|m| {
                m.iter()
                    .filter(|((n, _), _)| ns.is_none_or(|want| want == n))
                    .map(|(_, v)| v.clone())
                    .collect()
            })
            .unwrap_or_default();
        (items, inner.rv)
    }

    /// Every stored object with its resource key (for the garbage collector).
    pub fn all(&self) -> Vec<(ResKey, Value)> {
        let inner = self.lock();
        inner
            .objects
            .iter()
            .flat_map(|(k, m)| m.values().map(move |v| (k.clone(), v.clone())))
            .collect()
    }

    /// Atomically reads the object (if any) and applies the closure's decision.
    ///
    /// A `Put` of an object equal to the stored one is a no-op (no new resourceVersion, no
    /// event), as in the real API server. A `Put` of an object that has a deletionTimestamp and
    /// no pending finalizers removes it instead.
    pub fn modify<F>(&self, key: &ResKey, ns: &str, name: &str, f: F) -> Result<Outcome, ApiError>
    where
        F: FnOnce(Option<&Value>) -> Result<Change, ApiError>,
    {
        let mut inner = self.lock();
        let okey = (ns.to_string(), name.to_string());
        let existing = inner.objects.get(key).and_then(|m| m.get(&okey)).cloned();
        let change = f(existing.as_ref())?;
        let change = match change {
            Change::Put(obj) if util::is_deleting(&obj) && !has_pending_finalizers(&obj) => {
                if existing.is_some() {
                    Change::Delete
                } else {
                    Change::Keep
                }
            }
            other => other,
        };
        match change {
            Change::Keep => Ok(existing.map_or(Outcome::Absent, Outcome::Stored)),
            Change::Put(mut obj) => {
                if let Some(old) = &existing {
                    let mut cmp = obj.clone();
                    util::meta_mut(&mut cmp).insert(
                        "resourceVersion".into(),
                        old.get("metadata")
                            .and_then(|m| m.get("resourceVersion"))
                            .cloned()
                            .unwrap_or(Value::Null),
                    );
                    if &cmp == old {
                        return Ok(Outcome::Stored(old.clone()));
                    }
                }
                inner.rv += 1;
                let rv = inner.rv;
                util::meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
                inner
                    .objects
                    .entry(key.clone())
                    .or_default()
                    .insert(okey, obj.clone());
                let type_ = if existing.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                self.record(&mut inner, key, ns, name, type_, rv, obj.clone(), existing);
                Ok(Outcome::Stored(obj))
            }
            Change::Delete => {
                let Some(mut old) = existing else {
                    return Ok(Outcome::Absent);
                };
                if let Some(m) = inner.objects.get_mut(key) {
                    m.remove(&okey);
                }
                inner.rv += 1;
                let rv = inner.rv;
                let before = old.clone();
                util::meta_mut(&mut old).insert("resourceVersion".into(), json!(rv.to_string()));
                self.record(
                    &mut inner,
                    key,
                    ns,
                    name,
                    EventType::Deleted,
                    rv,
                    old.clone(),
                    Some(before),
                );
                Ok(Outcome::Deleted(old))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        inner: &mut Inner,
        key: &ResKey,
        ns: &str,
        name: &str,
        type_: EventType,
        rv: u64,
        object: Value,
        old: Option<Value>,
    ) {
        let ev = Arc::new(StoreEvent {
            key: key.clone(),
            namespace: ns.to_string(),
            name: name.to_string(),
            type_,
            rv,
            object,
            old,
        });
        let limit = inner.history_limit;
        let hist = inner.history.entry(key.clone()).or_default();
        hist.push_back(ev.clone());
        let mut dropped = None;
        while hist.len() > limit {
            dropped = hist.pop_front().map(|e| e.rv);
        }
        if let Some(d) = dropped {
            inner.compacted.insert(key.clone(), d);
        }
        // No receivers is fine: nobody watches.
        let _ = self.tx.send(ev);
    }

    /// Registers a watch on a resource from `from_rv` (exclusive). `None` means "current
    /// state": the initial events are synthetic ADDED events for every stored object.
    pub fn watch(&self, key: &ResKey, from_rv: Option<u64>) -> Result<WatchStart, ApiError> {
        let inner = self.lock();
        let rx = self.tx.subscribe();
        let initial = match from_rv {
            None => inner
                .objects
                .get(key)
                .map(|m| {
                    m.iter()
                        .map(|((ns, name), obj)| {
                            Arc::new(StoreEvent {
                                key: key.clone(),
                                namespace: ns.clone(),
                                name: name.clone(),
                                type_: EventType::Added,
                                rv: 0,
                                object: obj.clone(),
                                old: None,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default(),
            Some(rv) => {
                let compacted = inner.compacted.get(key).copied().unwrap_or(0);
                if rv < compacted {
                    return Err(ApiError::expired(format!(
                        "too old resource version: {rv} ({compacted})"
                    )));
                }
                inner
                    .history
                    .get(key)
                    .map(|h| h.iter().filter(|e| e.rv > rv).cloned().collect())
                    .unwrap_or_default()
            }
        };
        Ok(WatchStart {
            initial,
            rx,
            rv: inner.rv,
        })
    }

    /// Forgets all watch history, as an etcd compaction would: every watch from a
    /// resourceVersion older than now gets 410 Expired.
    pub fn compact(&self) {
        let mut inner = self.lock();
        let rv = inner.rv;
        inner.history.clear();
        let keys: Vec<ResKey> = inner.objects.keys().cloned().collect();
        for k in keys {
            inner.compacted.insert(k, rv);
        }
        inner.compacted.insert(("*".into(), "*".into()), rv);
    }

    /// The compaction floor for a resource (for continue tokens).
    pub fn compacted(&self, key: &ResKey) -> u64 {
        let inner = self.lock();
        let global = inner
            .compacted
            .get(&("*".to_string(), "*".to_string()))
            .copied()
            .unwrap_or(0);
        inner.compacted.get(key).copied().unwrap_or(0).max(global)
    }
}

/// Whether an object being deleted still waits for finalizers (metadata.finalizers, or for
/// namespaces also spec.finalizers).
pub fn has_pending_finalizers(obj: &Value) -> bool {
    if !util::finalizers(obj).is_empty() {
        return true;
    }
    obj.get("kind").and_then(Value::as_str) == Some("Namespace")
        && obj
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ResKey {
        (String::new(), "configmaps".into())
    }

    fn put(store: &Store, name: &str, v: Value) -> Outcome {
        store
            .modify(&key(), "default", name, |_| Ok(Change::Put(v)))
            .unwrap()
    }

    #[test]
    fn rv_increases_and_noop_puts_do_not_bump() {
        let s = Store::new(100);
        let a = put(
            &s,
            "a",
            json!({"metadata": {"name": "a"}, "data": {"x": "1"}}),
        );
        let Outcome::Stored(a) = a else { panic!() };
        let rv1 = a["metadata"]["resourceVersion"].clone();
        let Outcome::Stored(b) = put(&s, "a", a.clone()) else {
            panic!()
        };
        assert_eq!(b["metadata"]["resourceVersion"], rv1);
        let mut c = a.clone();
        c["data"]["x"] = json!("2");
        let Outcome::Stored(c) = put(&s, "a", c) else {
            panic!()
        };
        assert_ne!(c["metadata"]["resourceVersion"], rv1);
    }

    #[test]
    fn watch_history_and_expiry() {
        let s = Store::new(2);
        for i in 0..5 {
            put(
                &s,
                &format!("o{i}"),
                json!({"metadata": {"name": format!("o{i}")}}),
            );
        }
        // rv started at 1, five puts: rvs 2..=6; history keeps 5 and 6; 4 was dropped.
        assert!(s.watch(&key(), Some(3)).is_err());
        let w = s.watch(&key(), Some(4)).unwrap();
        assert_eq!(w.initial.len(), 2);
        let w = s.watch(&key(), None).unwrap();
        assert_eq!(w.initial.len(), 5);
        s.compact();
        assert!(s.watch(&key(), Some(5)).is_err());
        assert!(s.watch(&key(), Some(6)).is_ok());
    }

    #[test]
    fn deleting_without_finalizers_removes() {
        let s = Store::new(10);
        put(
            &s,
            "a",
            json!({"metadata": {"name": "a", "finalizers": ["x"]}}),
        );
        let o = put(
            &s,
            "a",
            json!({"metadata": {"name": "a", "finalizers": ["x"], "deletionTimestamp": "t"}}),
        );
        assert!(matches!(o, Outcome::Stored(_)));
        let o = put(
            &s,
            "a",
            json!({"metadata": {"name": "a", "deletionTimestamp": "t"}}),
        );
        assert!(matches!(o, Outcome::Deleted(_)));
        assert!(s.get(&key(), "default", "a").is_none());
    }
}
