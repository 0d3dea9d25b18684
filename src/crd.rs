//! The JobRun custom resource: the durable record of one action run for one event.
//!
//! The spec is written once, when the event is accepted, and holds everything the run needs
//! (the event, the tasks as resolved then, the files each task stages), so a restarted operator
//! resumes from the API server alone. The status records every step before the next side
//! effect depends on it.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
    ValidationRule,
};
use kube::CustomResource;
use kube::core::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::{ConcurrencyPolicy, NotifyKind, NotifyRule, NotifyWhen, Task};
use crate::event::{EventText, split_triggered_type};
use crate::files::StagedFile;

mod schedule;
pub use schedule::{
    JobSchedule, JobScheduleSpec, JobScheduleStatus, MAX_LOOKBACK_SECONDS, MissedSlots,
    SCHEDULE_CRD_NAME, ScheduledEvent,
};

pub const GROUP: &str = "job-executor.dev";
pub const VERSION: &str = "v1alpha1";
/// The CustomResourceDefinition's name, as `kubectl get crd` shows it.
pub const CRD_NAME: &str = "jobruns.job-executor.dev";

#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "job-executor.dev",
    version = "v1alpha1",
    kind = "JobRun",
    plural = "jobruns",
    singular = "jobrun",
    shortname = "jr",
    namespaced,
    status = "JobRunStatus",
    category = "job-executor",
    printcolumn = r#"{"name":"Action","type":"string","jsonPath":".spec.action.name"}"#,
    printcolumn = r#"{"name":"Service","type":"string","jsonPath":".metadata.labels.keptn\\.sh/service"}"#,
    printcolumn = r#"{"name":"Stage","type":"string","jsonPath":".metadata.labels.keptn\\.sh/stage"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Task","type":"integer","jsonPath":".status.currentTask"}"#,
    printcolumn = r#"{"name":"Tasks","type":"string","jsonPath":".status.taskSummary"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Project","type":"string","priority":1,"jsonPath":".metadata.labels.keptn\\.sh/project"}"#,
    printcolumn = r#"{"name":"Event","type":"string","priority":1,"jsonPath":".spec.event.type"}"#,
    selectable = ".status.done"
)]
#[serde(rename_all = "camelCase")]
pub struct JobRunSpec {
    /// The CloudEvent that caused the run, in structured JSON form.
    #[schemars(schema_with = "any_object")]
    pub event: EventText,
    pub action: RunAction,
    /// The config revision the tasks were resolved at (a git commit for the git source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_revision: Option<String>,
    /// The directory of the config source the tasks' files are relative to (`carts` for a
    /// service-level config, empty for the top of the repository), so the files are re-read
    /// from the same place at the same revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_dir: Option<String>,
    /// The commit the tasks' files are read at when not beside the config (`--git-files-from`,
    /// as Keptn's service read them from the service's own directory on the stage branch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_revision: Option<String>,
    /// The directory the tasks' files are relative to when not beside the config
    /// (`--git-files-from`), relative to the repository's top.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_dir: Option<String>,
    /// Set when the git repository could not be fetched as the event was accepted: the config
    /// was read at the branch head of the last successful fetch (`configRevision`), which may be
    /// behind the branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_stale: Option<ConfigStale>,
    /// Set when the run failed before its first Job (invalid config, forbidden image, missing
    /// file): the `.finished` event reports it and no Job is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// When the event was accepted (RFC 3339, nanoseconds): the order of a concurrency group's
    /// queue, the run's name breaking ties.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrived_at: Option<String>,
    /// The run format an operator must know to take the run's steps, when later than the first:
    /// a version that knows only older formats leaves the run alone for the version that stored
    /// it (during a rolling upgrade, or after a rollback), rather than running it under older
    /// rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires: Option<u32>,
}

/// The newest run format this version knows. A version that stores runs its predecessors would
/// run differently (a field they ignore that changes what a task does) raises it and stores
/// `spec.requires`, and checks, as ingest checks `filesDir` (`older_crd`), that the API server
/// kept it: a CRD from before the field prunes it without a word.
pub const RUN_FORMAT: u32 = 1;

impl JobRunSpec {
    /// Why this version must leave the run alone: stored for a run format it does not know.
    pub fn newer_format(&self) -> Option<String> {
        let required = self.requires?;
        (required > RUN_FORMAT).then(|| {
            format!(
                "spec.requires: the run needs run format {required}, and this version of \
                 job-executor knows formats up to {RUN_FORMAT}"
            )
        })
    }
}

/// Why a run's config may be behind its branch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigStale {
    /// Why the repository could not be fetched.
    pub fetch_error: String,
    /// When the commit that was read was fetched (RFC 3339), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched_at: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", remote = "Self")]
#[schemars(rename = "RunAction")]
pub struct RunAction {
    /// Why the action as stored cannot be read (a key or a value of a newer version of the
    /// operator, a hand's edit): the run is left alone. Never stored.
    #[serde(skip)]
    #[schemars(skip)]
    pub unreadable: Option<String>,
    /// The action's position in the config file.
    pub index: u32,
    pub name: String,
    /// A silent action sends no events.
    #[serde(default)]
    pub silent: bool,
    /// The tasks as the config said when the event was accepted.
    #[schemars(schema_with = "object_list")]
    pub tasks: Vec<Task>,
    /// Per task, the files it stages from the run's ConfigMap.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "object_list_list")]
    pub files: Vec<Vec<StagedFile>>,
    /// The action's `timeout`, in seconds: how long the run may take from its start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// The action's concurrency group, filled in from the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<RunConcurrency>,
    /// Who hears of the run: the action's `notify`, then the installation's `--notify`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<NotifyRule>,
}

/// Reads a stored part of a run as `read` reads it, or, when it cannot (a newer version of the
/// operator stored a key or a value this one does not know, or a hand edited it), `unreadable`
/// built from the path and the error: one run that cannot be read would otherwise fail the
/// watch's every list of runs, and stop the controller for all.
fn read_leniently<'de, D: serde::Deserializer<'de>, T: ReadStored>(
    deserializer: D,
    part: &str,
    unreadable: impl FnOnce(&serde_json::Value, String) -> T,
) -> Result<T, D::Error> {
    let value = serde_json::Value::deserialize(deserializer)?;
    if let Ok(read) = T::read(&value) {
        return Ok(read);
    }
    // Read again, following the path, only to say where it fails.
    let mut track = serde_path_to_error::Track::new();
    let read = T::read(serde_path_to_error::Deserializer::new(&value, &mut track));
    Ok(match read {
        Ok(read) => read,
        Err(error) => {
            let path = track.path().to_string();
            let at = if path == "." {
                part.to_string()
            } else {
                format!("{part}.{path}")
            };
            unreadable(&value, format!("{at}: {error}"))
        }
    })
}

/// A stored part of a run as its derived reading reads it.
trait ReadStored: Sized {
    fn read<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error>;
}

impl ReadStored for RunAction {
    fn read<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        RunAction::deserialize(deserializer)
    }
}

impl ReadStored for JobRunStatus {
    fn read<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        JobRunStatus::deserialize(deserializer)
    }
}

impl<'de> Deserialize<'de> for RunAction {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        read_leniently(deserializer, "spec.action", |value, why| RunAction {
            unreadable: Some(why),
            index: value
                .get("index")
                .and_then(serde_json::Value::as_u64)
                .and_then(|index| u32::try_from(index).ok())
                .unwrap_or(u32::MAX),
            name: value
                .get("name")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_string(),
            silent: false,
            tasks: Vec::new(),
            files: Vec::new(),
            timeout_seconds: None,
            concurrency: None,
            notify: Vec::new(),
        })
    }
}

impl Serialize for RunAction {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RunAction::serialize(self, serializer)
    }
}

/// The concurrency group a run belongs to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunConcurrency {
    /// The group's name, as filled in from the event.
    pub group: String,
    /// How many runs of the group may run at the same time.
    pub limit: u32,
    pub policy: ConcurrencyPolicy,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RunPhase {
    #[default]
    Pending,
    /// Waiting for a place in its concurrency group.
    Queued,
    Running,
    Succeeded,
    Failed,
    /// Stopped by the `job-executor.dev/cancel` annotation, by a newer run of its concurrency
    /// group, or skipped because the group was full.
    Cancelled,
}

impl RunPhase {
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunPhase::Succeeded | RunPhase::Failed | RunPhase::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunPhase::Pending => "Pending",
            RunPhase::Queued => "Queued",
            RunPhase::Running => "Running",
            RunPhase::Succeeded => "Succeeded",
            RunPhase::Failed => "Failed",
            RunPhase::Cancelled => "Cancelled",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TaskPhase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
    /// Never started: a task it needs did not succeed, or the run was stopped first.
    Skipped,
    /// Its Job was deleted when the run was cancelled.
    Cancelled,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", remote = "Self")]
#[schemars(rename = "JobRunStatus")]
pub struct JobRunStatus {
    /// Why the status as stored cannot be read (a phase or a key of a newer version of the
    /// operator, a hand's edit): the run is left alone, counted as done when the status says
    /// so. Never stored.
    #[serde(skip)]
    #[schemars(skip)]
    pub unreadable: Option<String>,
    /// Counts the operator's status writes, so it can tell its latest write from an older copy
    /// still in its watch cache.
    #[serde(default)]
    pub revision: u64,
    #[serde(default)]
    pub phase: RunPhase,
    /// The task that runs (or ran last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_task: Option<u32>,
    #[serde(default)]
    pub tasks: Vec<TaskStatus>,
    /// Each task's name and phase, for `kubectl get jobruns` (`build:Succeeded test:Running`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub task_summary: String,
    /// The `.started` event (absent for silent runs and events that are not `.triggered`).
    // Boxed, as `finished`: the status of every run in flight is cached, and a delivery's record
    // is large while many runs have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Box<Delivery>>,
    /// The `.finished` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Box<Delivery>>,
    /// What the run reports when it is over; fixed before `.finished` is sent, so a repeated
    /// delivery says the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<RunOutcome>,
    /// When the run started (RFC 3339); the action's timeout counts from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When the outcome was fixed (RFC 3339); the retention of finished runs counts from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The notifications of the run, as they became due (when it started, when it ended).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<Notification>,
    /// True once the run is over and nothing of it is left to deliver: it is only kept until
    /// its retention ends. A selectable field (`kubectl get jobruns --field-selector
    /// status.done=true`): the controller watches only the runs without it, so retained runs
    /// are neither listed at its start nor held in its cache.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub done: bool,
}

impl<'de> Deserialize<'de> for JobRunStatus {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        read_leniently(deserializer, "status", |value, why| JobRunStatus {
            unreadable: Some(why),
            revision: value
                .get("revision")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or_default(),
            done: value.get("done") == Some(&serde_json::Value::Bool(true)),
            // Its concurrency group counts it by its phase: a run that holds a place keeps it.
            phase: value
                .get("phase")
                .and_then(|phase| RunPhase::deserialize(phase).ok())
                .unwrap_or_default(),
            finished_at: value
                .get("finishedAt")
                .and_then(serde_json::Value::as_str)
                .map(str::to_string),
            ..JobRunStatus::default()
        })
    }
}

impl Serialize for JobRunStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        JobRunStatus::serialize(self, serializer)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    #[serde(default)]
    pub phase: TaskPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// Why the task failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// A bounded excerpt of the task's container logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<String>,
    /// The values the task published (its declared `outputs`), by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeliveryState {
    #[default]
    Pending,
    Delivered,
    GaveUp,
}

/// The delivery of one outgoing event.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// The event's id (deterministic: a repeated delivery carries the same).
    pub id: String,
    #[serde(default)]
    pub state: DeliveryState,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_attempt: Option<String>,
    /// When the next attempt is due after a failed one; absent when none is.
    // Written as `null` when none is due, so the status write (a merge patch) removes it.
    #[serde(default)]
    pub next_attempt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<String>,
    /// The event's delivery to the dead-letter sink, once it was given up (when one is
    /// configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<DeadLetter>,
}

/// The delivery of a given-up event to the dead-letter sink (the same event, with why it was
/// not delivered), retried like the first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    #[serde(default)]
    pub state: DeliveryState,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_attempt: Option<String>,
    /// When the next attempt is due after a failed one; absent when none is.
    // `null` when none is due, as a delivery's.
    #[serde(default)]
    pub next_attempt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<String>,
}

impl Delivery {
    /// Still being tried: at the sink, or, given up there, at the dead-letter sink.
    pub fn in_progress(&self) -> bool {
        match self.state {
            DeliveryState::Pending => true,
            DeliveryState::GaveUp => self
                .dead_letter
                .as_ref()
                .is_some_and(|d| d.state == DeliveryState::Pending),
            DeliveryState::Delivered => false,
        }
    }

    /// Delivered, to the sink or to the dead-letter sink.
    pub fn reported(&self) -> bool {
        self.state == DeliveryState::Delivered
            || self
                .dead_letter
                .as_ref()
                .is_some_and(|d| d.state == DeliveryState::Delivered)
    }

    /// When the attempt in progress is due (`None`: now), if one is.
    pub fn due(&self) -> Option<Option<&str>> {
        match (self.state, &self.dead_letter) {
            (DeliveryState::Pending, _) => Some(self.next_attempt.as_deref()),
            (DeliveryState::GaveUp, Some(dead)) if dead.state == DeliveryState::Pending => {
                Some(dead.next_attempt.as_deref())
            }
            _ => None,
        }
    }
}

/// One notification of the run to one target, retried like an outgoing event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub kind: NotifyKind,
    /// The key of the target's URL in the notifications Secret (the URL itself is never
    /// recorded).
    pub target: String,
    /// What it tells: the run started, succeeded or failed.
    pub when: NotifyWhen,
    #[serde(default)]
    pub state: DeliveryState,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_attempt: Option<String>,
    /// When the next attempt is due after a failed one; absent when none is.
    // `null` when none is due, as a delivery's.
    #[serde(default)]
    pub next_attempt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<String>,
}

impl Notification {
    pub fn new(rule: &NotifyRule, when: NotifyWhen) -> Notification {
        Notification {
            kind: rule.kind,
            target: rule.target.clone(),
            when,
            state: DeliveryState::Pending,
            attempts: 0,
            first_attempt: None,
            next_attempt: None,
            last_error: None,
            delivered_at: None,
        }
    }

    /// When the attempt in progress is due (`None`: now), if one is.
    pub fn due(&self) -> Option<Option<&str>> {
        (self.state == DeliveryState::Pending).then_some(self.next_attempt.as_deref())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutcomeStatus {
    Succeeded,
    Errored,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunOutcome {
    pub status: OutcomeStatus,
    pub message: String,
}

/// A condition, shaped like `metav1.Condition`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    #[serde(default)]
    pub message: String,
    pub last_transition_time: String,
}

pub(crate) fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

// The tasks and files are written by the operator from a config it has already checked
// strictly; the CRD keeps them as opaque objects rather than repeating that schema.
fn object_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
    })
}

fn object_list_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {
            "type": "array",
            "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
        }
    })
}

/// The custom resources the operator serves, as `job-executor crd KIND` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CrdKind {
    Jobrun,
    Jobschedule,
}

/// The CustomResourceDefinition of `kind`, in the form the API server takes without warnings.
pub fn crd(kind: CrdKind) -> CustomResourceDefinition {
    let mut crd = match kind {
        CrdKind::Jobrun => JobRun::crd(),
        CrdKind::Jobschedule => JobSchedule::crd(),
    };
    for version in &mut crd.spec.versions {
        if let Some(schema) = (version.schema.as_mut()).and_then(|s| s.open_api_v3_schema.as_mut())
        {
            drop_unknown_formats(schema);
            if kind == CrdKind::Jobrun
                && let Some(spec) = schema.properties.as_mut().and_then(|p| p.get_mut("spec"))
            {
                // A run is what its event was accepted as: whoever may annotate it (to cancel
                // it) may not make it run something else, nor reply with another event.
                spec.x_kubernetes_validations = Some(vec![ValidationRule {
                    rule: "self == oldSelf".into(),
                    message: Some(
                        "a run's spec is fixed when its event is accepted (cancel it with its \
                         annotation, or delete it)"
                            .into(),
                    ),
                    ..Default::default()
                }]);
            }
        }
    }
    crd
}

/// schemars gives unsigned integers the formats `uint32` and `uint64`, which the API server
/// does not know: it would warn "unrecognized format" on every apply of the CRD. Their
/// `minimum: 0` and a `maximum` for the narrower ones say what the format did: a count edited
/// past what its field holds would make the run unreadable, and every list of runs with it.
fn drop_unknown_formats(schema: &mut JSONSchemaProps) {
    if schema.type_.as_deref() == Some("integer")
        && !matches!(schema.format.as_deref(), None | Some("int32" | "int64"))
    {
        let most = match schema.format.as_deref() {
            Some("uint8") => Some(u8::MAX.into()),
            Some("uint16") => Some(u16::MAX.into()),
            Some("uint32") => Some(u32::MAX.into()),
            _ => None,
        };
        schema.maximum = schema.maximum.or(most);
        schema.format = None;
    }
    let mut children: Vec<&mut JSONSchemaProps> = Vec::new();
    children.extend(schema.properties.iter_mut().flat_map(|p| p.values_mut()));
    match &mut schema.items {
        Some(JSONSchemaPropsOrArray::Schema(item)) => children.push(item),
        Some(JSONSchemaPropsOrArray::Schemas(items)) => children.extend(items.iter_mut()),
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(values)) = &mut schema.additional_properties {
        children.push(values);
    }
    for list in [&mut schema.all_of, &mut schema.any_of, &mut schema.one_of] {
        children.extend(list.iter_mut().flatten());
    }
    if let Some(not) = &mut schema.not {
        children.push(not);
    }
    for child in children {
        drop_unknown_formats(child);
    }
}

/// A CRD as YAML, as committed in `crds/<kind>.yaml`.
pub fn crd_yaml(kind: CrdKind) -> Result<String, serde_saphyr::SerializeError> {
    let crd = crd(kind);
    Ok(format!(
        "# Generated by `job-executor crd`; do not edit.\n{}",
        serde_saphyr::to_string(&crd)?
    ))
}

impl JobRun {
    /// The run's status, or an empty one.
    pub fn status_or_default(&self) -> JobRunStatus {
        self.status.clone().unwrap_or_default()
    }

    /// Whether the run is over: finished, and its events (if any) and notifications delivered
    /// or given up.
    pub fn is_done(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(|status| self.is_done_with(status))
    }

    /// Whether the run is over with `status` as its status. A run an older version finished,
    /// whose `.finished` it had not recorded yet (it recorded the delivery after its first
    /// attempt), is not: its `.finished` is sent.
    pub fn is_done_with(&self, status: &JobRunStatus) -> bool {
        status.is_done() && !self.finished_unrecorded(status)
    }

    /// Whether the run's outcome is fixed in `status` and its `.finished` (which it sends) was
    /// never recorded: a run an older version ended before it recorded the delivery.
    pub fn finished_unrecorded(&self, status: &JobRunStatus) -> bool {
        status.outcome.is_some() && status.finished.is_none() && !status.done && self.sends_events()
    }

    /// Whether the run reports `.started` and `.finished`: not when silent, and only for
    /// `.triggered` events.
    pub fn sends_events(&self) -> bool {
        !self.spec.action.silent
            && self
                .spec
                .event
                .attribute("type")
                .is_some_and(|event_type| split_triggered_type(&event_type).is_some())
    }

    /// Whether the run is being deleted, kept only until its Jobs are gone
    /// (`--cascade=foreground`), let go (`orphan`), or someone's finalizer is removed. Such a
    /// run takes no step more: a Job it would make, a task end it would record or an event it
    /// would send is as moot as once it is gone; nor does it hold a place in a concurrency group
    /// or count towards `--max-runs-in-flight`.
    pub fn is_being_deleted(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }
}

impl JobRunStatus {
    /// Finished, its `.started` and `.finished` (if any) and its notifications delivered or
    /// given up (`.finished` goes once the sink gave `.started` up, while the dead-letter sink
    /// may still be trying it).
    pub fn is_done(&self) -> bool {
        self.phase.is_finished()
            && self.started.as_ref().is_none_or(|d| !d.in_progress())
            && self.finished.as_ref().is_none_or(|d| !d.in_progress())
            && self.notifications.iter().all(|n| n.due().is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(action: serde_json::Value, status: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "job-executor.dev/v1alpha1",
            "kind": "JobRun",
            "metadata": {"name": "r", "namespace": "n", "uid": "u"},
            "spec": {
                "event": {"specversion": "1.0", "id": "e", "source": "s", "type": "t"},
                "action": action,
            },
            "status": status,
        })
    }

    /// A run this version cannot read (a task key or a phase of a newer version, a hand's
    /// edit) is read as unreadable, saying where and why, and a list holding it is read whole:
    /// one such run failed every list of runs, which stopped the controller for all.
    #[test]
    fn a_run_that_cannot_be_read_is_marked_so_and_its_list_is_read() {
        let good_action = serde_json::json!({
            "index": 0, "name": "a", "silent": true, "tasks": [{"image": "alpine"}],
            "concurrency": {"group": "g", "limit": 1, "policy": "queue"}
        });
        let good_status = serde_json::json!({
            "revision": 3, "phase": "Running", "currentTask": 0,
            "tasks": [{"name": "t", "phase": "Running"}], "conditions": []
        });
        let good = stored(good_action.clone(), good_status.clone());
        let newer = stored(
            serde_json::json!({
                "index": 2, "name": "b",
                "tasks": [{"image": "alpine"}, {"image": "alpine", "futureKey": 1}]
            }),
            serde_json::json!({"phase": "Running", "revision": 7, "done": true,
                               "tasks": [{"name": "t", "phase": "Hibernating"}],
                               "finishedAt": "2026-12-01T10:00:00Z"}),
        );
        let list: kube::core::ObjectList<JobRun> = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "List", "metadata": {}, "items": [good, newer]
        }))
        .unwrap();
        let [good, newer] = &list.items[..] else {
            panic!("{:?}", list.items)
        };
        assert_eq!(good.spec.action.unreadable, None);
        assert_eq!(good.spec.action.tasks.len(), 1);
        assert_eq!(good.status.as_ref().unwrap().unreadable, None);
        let action = &newer.spec.action;
        assert_eq!((action.index, action.name.as_str()), (2, "b"));
        let why = action.unreadable.as_deref().unwrap();
        assert!(
            why.starts_with("spec.action.tasks[1].futureKey: unknown field `futureKey`"),
            "{why}"
        );
        let status = newer.status.as_ref().unwrap();
        assert!(
            status
                .unreadable
                .as_deref()
                .unwrap()
                .starts_with("status.tasks[0].phase: unknown variant `Hibernating`"),
            "{status:?}"
        );
        // Its group counts it by the phase it has.
        assert_eq!(status.phase, RunPhase::Running);
        assert_eq!((status.revision, status.done), (7, true));
        assert_eq!(status.finished_at.as_deref(), Some("2026-12-01T10:00:00Z"));
        // What is read whole is written as it was stored.
        let written = serde_json::to_value(good).unwrap();
        assert_eq!(written["spec"]["action"], good_action);
        assert_eq!(written["status"], good_status);
    }

    /// Every integer of the CRDs as the API server reads it: no format it does not know, and
    /// the unsigned 32-bit counts (attempts, the task that runs, a group's limit) bounded, so
    /// an edit past them is refused instead of making the run unreadable.
    #[test]
    fn unsigned_counts_are_bounded_and_formats_known() {
        fn integers<'s>(
            schema: &'s JSONSchemaProps,
            path: String,
            out: &mut Vec<(String, &'s JSONSchemaProps)>,
        ) {
            if schema.type_.as_deref() == Some("integer") {
                out.push((path.clone(), schema));
            }
            for (name, child) in schema.properties.iter().flatten() {
                integers(child, format!("{path}.{name}"), out);
            }
            if let Some(JSONSchemaPropsOrArray::Schema(item)) = &schema.items {
                integers(item, format!("{path}[]"), out);
            }
            if let Some(JSONSchemaPropsOrBool::Schema(values)) = &schema.additional_properties {
                integers(values, format!("{path}{{}}"), out);
            }
        }
        let mut found = Vec::new();
        let crds = [crd(CrdKind::Jobrun), crd(CrdKind::Jobschedule)];
        for crd in &crds {
            let schema = crd.spec.versions[0].schema.as_ref().unwrap();
            integers(
                schema.open_api_v3_schema.as_ref().unwrap(),
                crd.spec.names.kind.clone(),
                &mut found,
            );
        }
        assert!(
            found.iter().all(|(_, schema)| matches!(
                schema.format.as_deref(),
                None | Some("int32" | "int64")
            )),
            "{found:?}"
        );
        let bounded: Vec<&str> = found
            .iter()
            .filter(|(_, schema)| schema.maximum == Some(f64::from(u32::MAX)))
            .map(|(path, _)| path.as_str())
            .collect();
        for path in [
            "JobRun.status.currentTask",
            "JobRun.spec.action.index",
            "JobRun.spec.action.concurrency.limit",
        ] {
            assert!(bounded.contains(&path), "{path} in {bounded:?}");
        }
        assert!(
            bounded.iter().any(|path| path.ends_with(".attempts")),
            "{bounded:?}"
        );
    }
}
