//! The garbage collector: owner-reference cascades (background and foreground), orphaning, and
//! namespace termination.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::Shared;
use crate::objects::{self, DeleteOpts};
use crate::resources::ResKey;
use crate::store::Change;
use crate::util;

/// Removes owner references to `owner_uid` from every object (orphan propagation).
pub fn orphan_dependents(shared: &Shared, owner_uid: &str) {
    if owner_uid.is_empty() {
        return;
    }
    for (key, obj) in shared.store.all() {
        if !util::owner_uids(&obj).iter().any(|u| u == owner_uid) {
            continue;
        }
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

/// One pass over all objects. Returns whether anything was changed.
pub fn sweep(shared: &Shared) -> bool {
    let all = shared.store.all();
    let mut by_uid: HashMap<&str, &Value> = HashMap::new();
    for (_, o) in &all {
        by_uid.insert(util::uid(o), o);
    }
    let foreground = |o: &Value| {
        util::is_deleting(o)
            && util::finalizers(o)
                .iter()
                .any(|f| f == "foregroundDeletion")
    };
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
            let _ = shared
                .store
                .modify(key, util::namespace(obj), util::name(obj), |existing| {
                    let Some(cur) = existing else {
                        return Ok(Change::Keep);
                    };
                    let mut next = cur.clone();
                    let fins = util::finalizers(cur)
                        .into_iter()
                        .filter(|f| f != "foregroundDeletion")
                        .collect();
                    util::set_finalizers(&mut next, fins);
                    Ok(Change::Put(next))
                });
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

/// The collector task: sweeps after every burst of store changes or explicit kicks.
pub async fn run(shared: Arc<Shared>) {
    let mut rx = shared.store.subscribe();
    loop {
        tokio::select! {
            ev = rx.recv() => {
                if let Err(tokio::sync::broadcast::error::RecvError::Closed) = ev {
                    return;
                }
            }
            _ = shared.gc_notify.notified() => {}
        }
        // Coalesce a burst of events into one sweep.
        while rx.try_recv().is_ok() {}
        let mut rounds = 0;
        while sweep(&shared) && rounds < 16 {
            rounds += 1;
            while rx.try_recv().is_ok() {}
        }
    }
}
