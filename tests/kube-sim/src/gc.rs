//! The garbage collector: owner-reference cascades (background and foreground), orphaning, and
//! namespace termination.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::Shared;
use crate::objects::{self, DeleteOpts};
use crate::resources::ResKey;
use crate::store::{Change, EventType, StoreEvent};
use crate::util;

/// Removes owner references to `owner_uid` from its dependents (orphan propagation).
pub fn orphan_dependents(shared: &Shared, owner_uid: &str) {
    if owner_uid.is_empty() {
        return;
    }
    for (key, obj) in shared.store.dependents(owner_uid, None) {
        let _ = shared
            .store
            .modify(&key, util::namespace(&obj), util::name(&obj), |existing| {
                let Some(cur) = existing else {
                    return Ok(Change::Keep);
                };
                let mut next = cur.clone();
                let refs: Vec<Value> = util::owner_refs(cur)
                    .into_iter()
                    .filter(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid))
                    .collect();
                let m = util::meta_mut(&mut next);
                if refs.is_empty() {
                    m.remove("ownerReferences");
                } else {
                    m.insert("ownerReferences".into(), Value::Array(refs));
                }
                Ok(Change::Put(next))
            });
    }
}

fn delete_background(shared: &Shared, key: &ResKey, obj: &Value) {
    let info = shared.registry_find_any(&key.0, &key.1);
    if let Some(info) = info {
        let _ = objects::delete(
            shared,
            &info,
            util::namespace(obj),
            util::name(obj),
            &DeleteOpts::background(),
        );
    } else {
        let _ = shared
            .store
            .modify(key, util::namespace(obj), util::name(obj), |_| {
                Ok(Change::Delete)
            });
    }
}

/// Drops the `foregroundDeletion` finalizer of an owner whose dependents are all gone.
fn finish_foreground(shared: &Shared, key: &ResKey, obj: &Value) {
    shared.store.update_same(key, obj, |next| {
        let fins = util::finalizers(next)
            .into_iter()
            .filter(|f| f != "foregroundDeletion")
            .collect();
        util::set_finalizers(next, fins);
    });
}

/// One pass over all objects. Returns whether anything was changed.
fn sweep(shared: &Shared) -> bool {
    let all = shared.store.all();
    let mut by_uid: HashMap<&str, &Value> = HashMap::new();
    for (_, o) in &all {
        by_uid.insert(util::uid(o), o);
    }
    let mut changed = false;
    let mut referenced: HashSet<&str> = HashSet::new();
    for (key, obj) in &all {
        let owners = util::owner_uids(obj);
        if owners.is_empty() {
            continue;
        }
        for u in &owners {
            if let Some((k, _)) = by_uid.get_key_value(u.as_str()) {
                referenced.insert(k);
            }
        }
        if util::is_deleting(obj) {
            continue;
        }
        let alive: Vec<&Value> = owners
            .iter()
            .filter_map(|u| by_uid.get(u.as_str()).copied())
            .collect();
        if alive.is_empty() || alive.iter().all(|o| foreground(o)) {
            delete_background(shared, key, obj);
            changed = true;
        }
    }
    for (key, obj) in &all {
        if foreground(obj) && !referenced.contains(util::uid(obj)) {
            finish_foreground(shared, key, obj);
            changed = true;
        }
    }
    // Namespace termination: delete the content, then drop the namespace's finalizer.
    for (key, ns_obj) in &all {
        if key.0.is_empty() && key.1 == "namespaces" && util::is_deleting(ns_obj) {
            let ns = util::name(ns_obj);
            let content: Vec<&(ResKey, Value)> = all
                .iter()
                .filter(|(k, o)| {
                    !(k.0.is_empty() && k.1 == "namespaces") && util::namespace(o) == ns
                })
                .collect();
            for (k, o) in &content {
                if !util::is_deleting(o) {
                    delete_background(shared, k, o);
                    changed = true;
                }
            }
            if content.is_empty() {
                let _ = shared.store.modify(key, "", ns, |existing| {
                    let Some(cur) = existing else {
                        return Ok(Change::Keep);
                    };
                    let mut next = cur.clone();
                    next["spec"] = json!({});
                    Ok(Change::Put(next))
                });
                changed = true;
            }
        }
    }
    changed
}

/// Whether the object is being deleted in the foreground (waiting for its dependents).
fn foreground(o: &Value) -> bool {
    util::is_deleting(o)
        && util::finalizers(o)
            .iter()
            .any(|f| f == "foregroundDeletion")
}

/// What one store event asks the collector to look at.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Work {
    /// A dependent whose owners may all be gone (or all being deleted in the foreground).
    Dependent(ResKey, String, String),
    /// An owner being deleted in the foreground: delete its dependents, or, once they are
    /// gone, drop its `foregroundDeletion` finalizer. Identified by uid.
    Owner(String),
    /// A terminating namespace: delete its content, then finish it.
    Namespace(String),
    /// A namespace some content of which was removed: finish it if it is terminating and
    /// now empty (without looking at the content again).
    NamespaceEmptied(String),
}

fn is_namespace(key: &ResKey) -> bool {
    key.0.is_empty() && key.1 == "namespaces"
}

/// The work a store event implies: proportional to the object and its direct owners and
/// dependents, never to the size of the store.
fn work_for(shared: &Shared, ev: &StoreEvent, work: &mut BTreeSet<Work>) {
    let obj = &ev.object;
    let uid = util::uid(obj);
    let owners = util::owner_uids(obj);
    if ev.type_ == EventType::Deleted {
        // Its dependents may have lost their last owner.
        for (k, d) in shared.store.dependents(uid, None) {
            work.insert(Work::Dependent(
                k,
                util::namespace(&d).to_string(),
                util::name(&d).to_string(),
            ));
        }
        // Its owners may be waiting for it in the foreground.
        for o in owners {
            work.insert(Work::Owner(o));
        }
        // Its namespace may be waiting for it to be empty.
        if !ev.namespace.is_empty() {
            work.insert(Work::NamespaceEmptied(ev.namespace.clone()));
        }
        return;
    }
    if !owners.is_empty() && !util::is_deleting(obj) {
        work.insert(Work::Dependent(
            ev.key.clone(),
            ev.namespace.clone(),
            ev.name.clone(),
        ));
    }
    // Owners it no longer names may be waiting for it in the foreground.
    if let Some(old) = &ev.old {
        for o in util::owner_uids(old) {
            if !owners.contains(&o) {
                work.insert(Work::Owner(o));
            }
        }
    }
    if foreground(obj) {
        work.insert(Work::Owner(uid.to_string()));
    }
    if is_namespace(&ev.key) && util::is_deleting(obj) {
        work.insert(Work::Namespace(ev.name.clone()));
    }
}

/// Does one piece of work. Returns the dependents that an owner's foreground deletion now
/// makes eligible for deletion (checked as `Work::Dependent` next).
fn process(shared: &Shared, item: &Work, more: &mut BTreeSet<Work>) {
    match item {
        Work::Dependent(key, ns, name) => {
            let Some(obj) = shared.store.get(key, ns, name) else {
                return;
            };
            let owners = util::owner_uids(&obj);
            if owners.is_empty() || util::is_deleting(&obj) {
                return;
            }
            let alive: Vec<Value> = owners
                .iter()
                .filter_map(|u| shared.store.get_by_uid(u).map(|(_, o)| o))
                .collect();
            if alive.is_empty() || alive.iter().all(foreground) {
                delete_background(shared, key, &obj);
            }
        }
        Work::Owner(uid) => {
            let Some((key, obj)) = shared.store.get_by_uid(uid) else {
                return;
            };
            if !foreground(&obj) {
                return;
            }
            let deps = shared.store.dependents(uid, None);
            if deps.is_empty() {
                finish_foreground(shared, &key, &obj);
            } else {
                for (k, d) in deps {
                    if !util::is_deleting(&d) {
                        more.insert(Work::Dependent(
                            k,
                            util::namespace(&d).to_string(),
                            util::name(&d).to_string(),
                        ));
                    }
                }
            }
        }
        Work::Namespace(ns) => {
            if !terminating(shared, ns) {
                return;
            }
            let content = shared.store.namespace_content(ns);
            for (k, o) in &content {
                if !util::is_deleting(o) {
                    delete_background(shared, k, o);
                }
            }
            if content.is_empty() {
                finish_namespace(shared, ns);
            }
        }
        Work::NamespaceEmptied(ns) => {
            if terminating(shared, ns) && shared.store.namespace_is_empty(ns) {
                finish_namespace(shared, ns);
            }
        }
    }
}

fn terminating(shared: &Shared, ns: &str) -> bool {
    shared
        .store
        .get(&(String::new(), "namespaces".into()), "", ns)
        .is_some_and(|n| util::is_deleting(&n))
}

/// Drops the finalizers of an emptied terminating namespace, which removes it.
fn finish_namespace(shared: &Shared, ns: &str) {
    let _ = shared
        .store
        .modify(&(String::new(), "namespaces".into()), "", ns, |existing| {
            let Some(cur) = existing else {
                return Ok(Change::Keep);
            };
            let mut next = cur.clone();
            next["spec"] = json!({});
            Ok(Change::Put(next))
        });
}

/// Full sweeps until nothing changes (bounded), for a start after lost events.
fn resync(shared: &Shared) {
    let mut rounds = 0;
    while sweep(shared) && rounds < 16 {
        rounds += 1;
    }
}

/// The collector task. Like the real garbage collector it works from events: each store
/// change queues checks of the object, its direct owners and dependents (found through the
/// store's owner index) and its namespace. When it falls behind the event stream it cannot
/// know what it missed, so it sweeps everything once (as an informer relists).
pub async fn run(shared: Arc<Shared>) {
    let mut rx = shared.store.subscribe();
    let mut work: BTreeSet<Work> = BTreeSet::new();
    loop {
        if work.is_empty() {
            match rx.recv().await {
                Ok(ev) => work_for(&shared, &ev, &mut work),
                Err(RecvError::Lagged(_)) => {
                    resync(&shared);
                    continue;
                }
                Err(RecvError::Closed) => return,
            }
        }
        // Take every event already queued, so that the checks see the store as it is now.
        let mut lagged = false;
        loop {
            match rx.try_recv() {
                Ok(ev) => work_for(&shared, &ev, &mut work),
                Err(TryRecvError::Lagged(_)) => lagged = true,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => return,
            }
        }
        if lagged {
            work.clear();
            resync(&shared);
            continue;
        }
        // A bounded batch, then back to the events (and to the other tasks).
        let mut more = BTreeSet::new();
        for _ in 0..BATCH {
            let Some(item) = work.pop_first() else { break };
            process(&shared, &item, &mut more);
        }
        work.append(&mut more);
        tokio::task::yield_now().await;
    }
}

/// Work items done between two looks at the event stream.
const BATCH: usize = 256;
