//! Deterministic names. A run's name is derived from the event that caused it, so a redelivered
//! event finds the run it already made; its children's names are derived from the run's.

use sha2::{Digest, Sha256};

use crate::config::formats::sanitize_label_value;
use crate::event::{CloudEvent, split_triggered_type};

/// Longest slug kept from the event type, so names stay readable and short.
const SLUG_MAX: usize = 20;

/// The name of the run of action `action_index` for this event: `<task>-<hash>`, a DNS label of
/// at most 41 characters, the same in every process. The hash covers the event's source and id
/// (the CloudEvents identity of an event) and the action index.
pub fn run_name(event: &CloudEvent, action_index: usize) -> String {
    let digest =
        Sha256::digest(format!("{}\0{}\0{action_index}", event.source(), event.id()).as_bytes());
    let hash: String = digest.iter().take(10).map(|b| format!("{b:02x}")).collect();
    let task = split_triggered_type(event.event_type())
        .map(|(_, task)| task)
        .unwrap_or("run");
    let slug: String = task
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(SLUG_MAX)
        .collect();
    let slug = slug.trim_matches('-');
    if slug.is_empty() || !slug.starts_with(|c: char| c.is_ascii_alphabetic()) {
        format!("run-{hash}")
    } else {
        format!("{slug}-{hash}")
    }
}

/// The run that reports an unusable job config for this event (one per event, whatever the
/// number of actions).
pub fn config_failure_run_name(event: &CloudEvent) -> String {
    let digest = Sha256::digest(format!("{}\0{}\0config", event.source(), event.id()).as_bytes());
    let hash: String = digest.iter().take(10).map(|b| format!("{b:02x}")).collect();
    format!("config-{hash}")
}

/// The Job of task `task_index` of a run.
pub fn job_name(run_name: &str, task_index: usize) -> String {
    format!("{run_name}-{task_index}")
}

/// The ConfigMap holding the files a run stages.
pub fn files_config_map_name(run_name: &str) -> String {
    format!("{run_name}-files")
}

/// A label value for a name people chose (action and task names).
pub fn label_value(text: &str) -> String {
    sanitize_label_value(text)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::formats::check_dns_label;

    fn event(source: &str, id: &str, event_type: &str) -> CloudEvent {
        CloudEvent::from_value(json!({
            "specversion": "1.0", "id": id, "source": source, "type": event_type
        }))
        .unwrap()
    }

    #[test]
    fn run_names_are_stable_and_distinct() {
        let e = event("shipyard", "id-1", "sh.keptn.event.test.triggered");
        let name = run_name(&e, 0);
        // Fixed expectation: the name must not change between releases, or a redelivered
        // event would run again after an upgrade.
        assert_eq!(name, "test-3235b94ad0881412f56c");
        assert_eq!(run_name(&e, 0), name);
        assert_ne!(run_name(&e, 1), name);
        assert_ne!(
            run_name(&event("other", "id-1", "sh.keptn.event.test.triggered"), 0),
            name
        );
        assert_ne!(
            run_name(
                &event("shipyard", "id-2", "sh.keptn.event.test.triggered"),
                0
            ),
            name
        );
    }

    #[test]
    fn names_are_dns_labels_within_limits() {
        let long = format!("sh.keptn.event.{}.triggered", "Very_Long-Task".repeat(10));
        for event_type in [
            long.as_str(),
            "sh.keptn.event.test.triggered",
            "sh.keptn.event.9lives.triggered",
            "sh.keptn.event.deployment.finished",
            "weird",
        ] {
            let run = run_name(&event("s", &"x".repeat(500), event_type), 123);
            check_dns_label(&run).unwrap();
            assert!(run.len() <= 41, "{run}");
            check_dns_label(&job_name(&run, 999)).unwrap();
            check_dns_label(&files_config_map_name(&run)).unwrap();
        }
        assert!(
            run_name(&event("s", "1", "sh.keptn.event.9lives.triggered"), 0).starts_with("run-")
        );
        assert!(
            run_name(&event("s", "1", "sh.keptn.event.deployment.finished"), 0).starts_with("run-")
        );
    }

    #[test]
    fn the_config_failure_run_is_one_stable_name_per_event() {
        let e = event("shipyard", "id-1", "sh.keptn.event.test.triggered");
        let name = config_failure_run_name(&e);
        // Fixed, like run names: a redelivered event must find the run it already made.
        assert_eq!(name, config_failure_run_name(&e));
        check_dns_label(&name).unwrap();
        assert!(
            name.starts_with("config-") && name.len() == "config-".len() + 20,
            "{name}"
        );
        // One per event, and never an action's run of the same event.
        let other = event("shipyard", "id-2", "sh.keptn.event.test.triggered");
        assert_ne!(name, config_failure_run_name(&other));
        assert_ne!(name, run_name(&e, 0));
    }
}
