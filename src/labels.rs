//! The names job-executor marks what it creates with (JobRuns, Jobs and their pods, files
//! ConfigMaps), defined once: ingest, the renderer, the controller and the config checks all
//! read them from here.

/// Kubernetes' recommended label for the tool that manages an object.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Its value on everything job-executor creates.
pub const MANAGED_BY: &str = "job-executor";
/// Labels under this prefix are job-executor's own: a config may not set them.
pub const RESERVED_PREFIX: &str = "job-executor.dev/";

pub const RUN: &str = "job-executor.dev/run";
pub const ACTION: &str = "job-executor.dev/action";
pub const ACTION_INDEX: &str = "job-executor.dev/action-index";
pub const TASK: &str = "job-executor.dev/task";
pub const TASK_INDEX: &str = "job-executor.dev/task-index";
pub const EVENT_ID: &str = "job-executor.dev/event-id";
/// A run's concurrency group, made a label value (the exact name is in the spec).
pub const GROUP: &str = "job-executor.dev/group";

/// The annotation that cancels a JobRun; its value says who cancels it and why
/// (`kubectl annotate jobrun NAME job-executor.dev/cancel="alice: wrong artifact"`).
pub const CANCEL: &str = "job-executor.dev/cancel";

/// The field manager of every write (server-side ownership of the fields it sets).
pub const FIELD_MANAGER: &str = "job-executor";

/// Whether a config may set the label `key` (job-executor's own are refused).
pub fn is_reserved(key: &str) -> bool {
    key.starts_with(RESERVED_PREFIX) || key == MANAGED_BY_LABEL
}

/// The label selector of everything job-executor manages.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_job_executors_own_labels_are_reserved() {
        for key in [
            RUN,
            ACTION,
            ACTION_INDEX,
            TASK,
            TASK_INDEX,
            EVENT_ID,
            MANAGED_BY_LABEL,
        ] {
            assert!(is_reserved(key), "{key}");
        }
        for key in [
            "team",
            "app.kubernetes.io/name",
            "job-executor.dev",
            "example.com/run",
        ] {
            assert!(!is_reserved(key), "{key}");
        }
        assert_eq!(
            managed_selector(),
            "app.kubernetes.io/managed-by=job-executor"
        );
    }
}
