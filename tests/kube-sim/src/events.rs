//! Events are one resource behind two APIs in a real API server: an `events.k8s.io/v1` Event
//! (what kube-runtime's recorder writes) is also a core `v1` Event (what `kubectl describe` and
//! `kubectl get events` read), with fields renamed. kube-sim stores them apart, so every write
//! of an `events.k8s.io` Event is copied, converted as the API server converts it, to the core
//! resource of the same name (and a delete deletes the copy). Core writes are not copied back:
//! nothing the simulator serves writes core Events and reads them as `events.k8s.io`.

use serde_json::{Map, Value, json};

use crate::Shared;
use crate::error::ApiError;
use crate::store::Change;

/// The core `v1` form of an `events.k8s.io/v1` Event, as the API server converts it.
pub fn to_core(event: &Value) -> Value {
    let mut core = Map::new();
    core.insert("apiVersion".into(), json!("v1"));
    core.insert("kind".into(), json!("Event"));
    if let Some(metadata) = event.get("metadata") {
        core.insert("metadata".into(), metadata.clone());
    }
    for (from, to) in [
        ("regarding", "involvedObject"),
        ("related", "related"),
        ("note", "message"),
        ("reason", "reason"),
        ("type", "type"),
        ("action", "action"),
        ("reportingController", "reportingComponent"),
        ("reportingInstance", "reportingInstance"),
        ("eventTime", "eventTime"),
        ("series", "series"),
        ("deprecatedSource", "source"),
        ("deprecatedFirstTimestamp", "firstTimestamp"),
        ("deprecatedLastTimestamp", "lastTimestamp"),
        ("deprecatedCount", "count"),
    ] {
        if let Some(value) = event.get(from).filter(|v| !v.is_null()) {
            core.insert(to.into(), value.clone());
        }
    }
    Value::Object(core)
}

/// Mirrors a write of an `events.k8s.io` Event to its core form: `stored` is the Event as
/// stored now, `None` once it is deleted.
pub fn mirror(shared: &Shared, namespace: &str, name: &str, stored: Option<&Value>) {
    let key = (String::new(), "events".to_string());
    let result: Result<_, ApiError> = shared.store.modify(&key, namespace, name, |_| {
        Ok(match stored {
            Some(event) => Change::Put(to_core(event)),
            None => Change::Delete,
        })
    });
    if let Err(error) = result {
        tracing::warn!(name, ?error, "could not mirror an Event to core/v1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_events_api_event_reads_as_the_core_event_the_api_server_shows() {
        let event = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "run-1.17a", "namespace": "ns", "uid": "u"},
            "regarding": {"kind": "JobRun", "name": "run-1", "namespace": "ns", "uid": "r"},
            "note": "task 'a' started", "reason": "TaskStarted", "type": "Normal",
            "action": "CreateJob", "reportingController": "job-executor",
            "reportingInstance": "job-executor-0", "eventTime": "2026-12-01T10:00:00.000000Z",
            "series": {"count": 2, "lastObservedTime": "2026-12-01T10:01:00.000000Z"},
            "related": null,
        });
        assert_eq!(
            to_core(&event),
            json!({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": "run-1.17a", "namespace": "ns", "uid": "u"},
                "involvedObject": {"kind": "JobRun", "name": "run-1", "namespace": "ns", "uid": "r"},
                "message": "task 'a' started", "reason": "TaskStarted", "type": "Normal",
                "action": "CreateJob", "reportingComponent": "job-executor",
                "reportingInstance": "job-executor-0",
                "eventTime": "2026-12-01T10:00:00.000000Z",
                "series": {"count": 2, "lastObservedTime": "2026-12-01T10:01:00.000000Z"},
            })
        );
    }
}
