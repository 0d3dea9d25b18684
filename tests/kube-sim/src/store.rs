//! The generic in-memory object store: JSON objects keyed by (group, plural, namespace, name),
//! one global monotonically increasing resourceVersion, a bounded per-resource event history
//! for watches and a broadcast of every change for watchers and the simulated controllers.
//!
//! Two indexes are kept up to date under the same lock as the objects, so lookups cost what
//! they return rather than a scan of the store: uid → object (owner existence checks) and
//! owner uid → dependents (garbage collection, orphaning and the Job controller's pods).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
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

pub type ObjKey = (String, String);

/// Where an object lives: its resource and (namespace, name).
pub type Location = (ResKey, String, String);

struct Inner {
    rv: u64,
    objects: HashMap<ResKey, BTreeMap<ObjKey, Value>>,
    /// uid → where the object with that uid is stored.
    by_uid: HashMap<String, Location>,
    /// owner uid → the objects whose ownerReferences name it (the owner need not exist).
    dependents: HashMap<String, BTreeSet<Location>>,
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

/// One page of a list.
pub struct Page {
    pub items: Vec<Value>,
    /// Matching objects after the last item (0 without a limit).
    pub remaining: usize,
    /// The resourceVersion of the snapshot.
    pub rv: u64,
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
                by_uid: HashMap::new(),
                dependents: HashMap::new(),
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
        let page = self.list_page(key, ns, None, |_| true, None);
        (page.items, page.rv)
    }

    /// Like [`Store::list`], from the object after `after` (a list's continue token), keeping
    /// only the objects `keep` accepts, at most `limit` of them; only those are cloned, the rest
    /// are counted. A page starts where the last one ended, as etcd's range reads do, so
    /// listing N objects in pages costs O(N) per page at most, not a scan from the start.
    pub fn list_page(
        &self,
        key: &ResKey,
        ns: Option<&str>,
        after: Option<&ObjKey>,
        mut keep: impl FnMut(&Value) -> bool,
        limit: Option<usize>,
    ) -> Page {
        let inner = self.lock();
        let mut items = Vec::new();
        let mut remaining = 0;
        if let Some(m) = inner.objects.get(key) {
            for v in in_namespace(m, ns, after).filter(|v| keep(v)) {
                if limit.is_none_or(|l| items.len() < l) {
                    items.push(v.clone());
                } else {
                    remaining += 1;
                }
            }
        }
        Page {
            items,
            remaining,
            rv: inner.rv,
        }
    }

    /// The stored object with this uid, and where it is stored.
    pub fn get_by_uid(&self, uid: &str) -> Option<(ResKey, Value)> {
        let inner = self.lock();
        let (key, ns, name) = inner.by_uid.get(uid)?;
        let obj = inner
            .objects
            .get(key)?
            .get(&(ns.clone(), name.clone()))?
            .clone();
        Some((key.clone(), obj))
    }

    /// The stored objects with an ownerReference to `owner_uid` (of resource `only`, if
    /// given), whether or not the owner exists.
    pub fn dependents(&self, owner_uid: &str, only: Option<&ResKey>) -> Vec<(ResKey, Value)> {
        let inner = self.lock();
        let Some(deps) = inner.dependents.get(owner_uid) else {
            return Vec::new();
        };
        deps.iter()
            .filter(|(k, _, _)| only.is_none_or(|o| o == k))
            .filter_map(|(k, ns, name)| {
                let obj = inner.objects.get(k)?.get(&(ns.clone(), name.clone()))?;
                Some((k.clone(), obj.clone()))
            })
            .collect()
    }

    /// Every namespaced object in namespace `ns` (all resources but namespaces themselves).
    pub fn namespace_content(&self, ns: &str) -> Vec<(ResKey, Value)> {
        let inner = self.lock();
        inner
            .objects
            .iter()
            .filter(|(k, _)| !(k.0.is_empty() && k.1 == "namespaces"))
            .flat_map(|(k, m)| in_namespace(m, Some(ns), None).map(move |v| (k.clone(), v.clone())))
            .collect()
    }

    /// Whether namespace `ns` holds no namespaced object.
    pub fn namespace_is_empty(&self, ns: &str) -> bool {
        let inner = self.lock();
        inner
            .objects
            .iter()
            .filter(|(k, _)| !(k.0.is_empty() && k.1 == "namespaces"))
            .all(|(_, m)| in_namespace(m, Some(ns), None).next().is_none())
    }

    /// Every stored object with its resource key (for the garbage collector's full sweep).
    pub fn all(&self) -> Vec<(ResKey, Value)> {
        let inner = self.lock();
        inner
            .objects
            .iter()
            .flat_map(|(k, m)| m.values().map(move |v| (k.clone(), v.clone())))
            .collect()
    }

    /// Applies `f` to a copy of the stored `obj` and stores it, if the object stored under its
    /// name is still the same one (same uid): controllers must not edit a successor that was
    /// created under the same name. Returns what is stored then.
    pub fn update_same<F: FnOnce(&mut Value)>(
        &self,
        key: &ResKey,
        obj: &Value,
        f: F,
    ) -> Option<Outcome> {
        let uid = util::uid(obj);
        self.modify(key, util::namespace(obj), util::name(obj), |existing| {
            let Some(cur) = existing.filter(|cur| util::uid(cur) == uid) else {
                return Ok(Change::Keep);
            };
            let mut next = cur.clone();
            f(&mut next);
            Ok(Change::Put(next))
        })
        .ok()
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
                let at: Location = (key.clone(), ns.to_string(), name.to_string());
                if let Some(old) = &existing {
                    inner.unindex(&at, old);
                }
                inner.index(&at, &obj);
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
                inner.unindex(&(key.clone(), ns.to_string(), name.to_string()), &old);
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

impl Inner {
    fn index(&mut self, at: &Location, obj: &Value) {
        let uid = util::uid(obj);
        if !uid.is_empty() {
            self.by_uid.insert(uid.to_string(), at.clone());
        }
        for owner in util::owner_uids(obj) {
            self.dependents.entry(owner).or_default().insert(at.clone());
        }
    }

    fn unindex(&mut self, at: &Location, obj: &Value) {
        let uid = util::uid(obj);
        if self.by_uid.get(uid) == Some(at) {
            self.by_uid.remove(uid);
        }
        for owner in util::owner_uids(obj) {
            if let Some(deps) = self.dependents.get_mut(&owner) {
                deps.remove(at);
                if deps.is_empty() {
                    self.dependents.remove(&owner);
                }
            }
        }
    }
}

/// The objects of one resource map in namespace `ns` (all with `None`), in key order.
/// The objects of namespace `ns` (all when `None`) in (namespace, name) order, from the one
/// after `after` when given.
fn in_namespace<'a>(
    m: &'a BTreeMap<ObjKey, Value>,
    ns: Option<&str>,
    after: Option<&ObjKey>,
) -> Box<dyn Iterator<Item = &'a Value> + 'a> {
    use std::ops::Bound;
    let first = ns.map(|ns| (ns.to_string(), String::new()));
    let lower = match (after, &first) {
        (Some(after), Some(first)) if after < first => Bound::Included(first.clone()),
        (Some(after), _) => Bound::Excluded(after.clone()),
        (None, Some(first)) => Bound::Included(first.clone()),
        (None, None) => Bound::Unbounded,
    };
    let ns = ns.map(str::to_string);
    Box::new(
        m.range((lower, Bound::Unbounded))
            .take_while(move |((n, _), _)| ns.as_ref().is_none_or(|ns| n == ns))
            .map(|(_, v)| v),
    )
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

    #[test]
    fn uid_and_owner_indexes_follow_changes() {
        let s = Store::new(10);
        let owned = |name: &str, uid: &str, owners: &[&str]| {
            let refs: Vec<Value> = owners.iter().map(|u| json!({"uid": u})).collect();
            json!({"metadata": {"name": name, "uid": uid, "ownerReferences": refs}})
        };
        put(&s, "a", owned("a", "ua", &["o1"]));
        put(&s, "b", owned("b", "ub", &["o1", "o2"]));
        let names = |owner: &str| -> Vec<String> {
            s.dependents(owner, None)
                .iter()
                .map(|(_, v)| util::name(v).to_string())
                .collect()
        };
        assert_eq!(names("o1"), ["a", "b"]);
        assert_eq!(names("o2"), ["b"]);
        assert_eq!(
            s.get_by_uid("ub")
                .map(|(_, v)| v["metadata"]["name"].clone()),
            Some(json!("b"))
        );
        // Dropping an owner reference, then deleting, updates both indexes.
        put(&s, "b", owned("b", "ub", &["o2"]));
        assert_eq!(names("o1"), ["a"]);
        s.modify(&key(), "default", "a", |_| Ok(Change::Delete))
            .unwrap();
        assert!(names("o1").is_empty());
        assert!(s.get_by_uid("ua").is_none());
        assert!(
            s.dependents("o2", Some(&(String::new(), "pods".into())))
                .is_empty()
        );
        assert_eq!(names("o2"), ["b"]);
    }
}
