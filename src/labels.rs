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

/// The labels Keptn's job-executor-service gave its Jobs, which this one gives them too (for
/// what selects Jobs by them): from the event's Keptn fields, and of the run's action and task.
pub const KEPTN_CONTEXT: &str = "keptn.sh/context";
pub const KEPTN_PROJECT: &str = "keptn.sh/project";
pub const KEPTN_STAGE: &str = "keptn.sh/stage";
pub const KEPTN_SERVICE: &str = "keptn.sh/service";
pub const KEPTN_COMMIT_ID: &str = "keptn.sh/commitid";
pub const KEPTN_EVENT_ID: &str = "keptn.sh/event-id";
pub const KEPTN_ACTION: &str = "keptn.sh/jes-action";
pub const KEPTN_TASK: &str = "keptn.sh/jes-task";
pub const KEPTN_ACTION_INDEX: &str = "keptn.sh/jes-action-index";
pub const KEPTN_TASK_INDEX: &str = "keptn.sh/jes-task-index";
const KEPTN_LABELS: [&str; 10] = [
    KEPTN_CONTEXT,
    KEPTN_PROJECT,
    KEPTN_STAGE,
    KEPTN_SERVICE,
    KEPTN_COMMIT_ID,
    KEPTN_EVENT_ID,
    KEPTN_ACTION,
    KEPTN_TASK,
    KEPTN_ACTION_INDEX,
    KEPTN_TASK_INDEX,
];

/// The labels Kubernetes' Job API puts on a Job's pod template itself: a Job whose template
/// sets one (to anything but its own name or uid) is refused, 422.
const JOB_API_LABELS: [&str; 4] = [
    "job-name",
    "controller-uid",
    "batch.kubernetes.io/job-name",
    "batch.kubernetes.io/controller-uid",
];

/// Whether a config may set the label `key`: job-executor's own and the Keptn labels it sets
/// are refused (a value of the config's would be replaced without a word).
pub fn is_reserved(key: &str) -> bool {
    key.starts_with(RESERVED_PREFIX) || key == MANAGED_BY_LABEL || KEPTN_LABELS.contains(&key)
}

/// Whether the Job API sets the label `key` on a Job's pods itself: a label every pod gets
/// (`--job-labels`) may not be one of them.
pub fn set_by_job_api(key: &str) -> bool {
    JOB_API_LABELS.contains(&key)
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
            KEPTN_TASK,
            KEPTN_COMMIT_ID,
        ] {
            assert!(is_reserved(key), "{key}");
        }
        for key in JOB_API_LABELS {
            assert!(set_by_job_api(key) && !is_reserved(key), "{key}");
        }
        for key in [
            "team",
            "app.kubernetes.io/name",
            "job-executor.dev",
            "example.com/run",
            "keptn.sh/team",
            "batch.kubernetes.io/job-completion-index",
            "job",
        ] {
            assert!(!is_reserved(key) && !set_by_job_api(key), "{key}");
        }
        assert_eq!(
            managed_selector(),
            "app.kubernetes.io/managed-by=job-executor"
        );
    }
}
