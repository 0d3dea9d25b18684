//! CustomResourceDefinition handling: registration of the served resources and the
//! `NamesAccepted`/`Established` status, and cleanup of custom resources on removal.

use serde_json::{Value, json};

use crate::Shared;
use crate::error::ApiError;
use crate::store::Change;
use crate::util;

fn crd_key() -> (String, String) {
    (
        "apiextensions.k8s.io".into(),
        "customresourcedefinitions".into(),
    )
}

/// Registers the CRD's versions and marks it established. Returns the stored CRD.
pub fn established(shared: &Shared, crd: Value) -> Result<Value, ApiError> {
    if util::is_deleting(&crd) {
        return Ok(crd);
    }
    shared.registry_write().register_crd(&crd).map_err(|e| {
        ApiError::invalid(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            util::name(&crd),
            "spec",
            &e,
        )
    })?;
    let name = util::name(&crd).to_string();
    let now = util::now_rfc3339();
    let out = shared.store.modify(&crd_key(), "", &name, |existing| {
        let Some(cur) = existing else {
            return Ok(Change::Keep);
        };
        let mut next = cur.clone();
        let names = cur.pointer("/spec/names").cloned().unwrap_or(json!({}));
        let kind = names.get("kind").and_then(Value::as_str).unwrap_or("").to_string();
        let mut accepted = names.clone();
        if accepted.get("singular").is_none() {
            accepted["singular"] = json!(kind.to_lowercase());
        }
        if accepted.get("listKind").is_none() {
            accepted["listKind"] = json!(format!("{kind}List"));
        }
        let storage: Vec<Value> = cur
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .map(|vs| {
                vs.iter()
                    .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                    .filter_map(|v| v.get("name").cloned())
                    .collect()
            })
            .unwrap_or_default();
        let old_conds = cur.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
        let since = |t: &str| {
            old_conds
                .iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(t))
                .and_then(|c| c.get("lastTransitionTime").cloned())
                .unwrap_or_else(|| json!(now))
        };
        let mut stored_versions: Vec<Value> = cur
            .pointer("/status/storedVersions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for v in storage {
            if !stored_versions.contains(&v) {
                stored_versions.push(v);
            }
        }
        next["status"] = json!({
            "acceptedNames": accepted,
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "lastTransitionTime": since("NamesAccepted"), "reason": "NoConflicts", "message": "no conflicts found"},
                {"type": "Established", "status": "True", "lastTransitionTime": since("Established"), "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"}
            ],
            "storedVersions": stored_versions,
        });
        Ok(Change::Put(next))
    })?;
    match out {
        crate::store::Outcome::Stored(v) => Ok(v),
        _ => Ok(crd),
    }
}

/// Unregisters a removed CRD and deletes all its custom resources.
pub fn removed(shared: &Shared, crd: &Value) {
    let group = crd
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let plural = crd
        .pointer("/spec/names/plural")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    // The objects first, their deletions seen by the open watches; then the resource goes,
    // and the watches of it end (the real server stops its watch cache): a client watches
    // again and is told it is not there.
    let key = (group.clone(), plural.clone());
    let (items, _) = shared.store.list(&key, None);
    for o in items {
        let _ = shared
            .store
            .modify(&key, util::namespace(&o), util::name(&o), |_| {
                Ok(Change::Delete)
            });
    }
    shared.registry_write().unregister(&group, &plural);
    shared
        .resource_removed
        .send_modify(|generation| *generation += 1);
}
