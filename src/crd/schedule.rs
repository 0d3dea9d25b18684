//! The JobSchedule custom resource: a CloudEvent fired on a cron schedule, matched like any
//! received event.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;
use crate::schedule::MissedPolicy;

/// The CustomResourceDefinition's name, as `kubectl get crd` shows it.
pub const SCHEDULE_CRD_NAME: &str = "jobschedules.job-executor.dev";
/// The longest look-back window a schedule may ask for.
pub const MAX_LOOKBACK_SECONDS: u64 = 86_400;

#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "job-executor.dev",
    version = "v1alpha1",
    kind = "JobSchedule",
    plural = "jobschedules",
    singular = "jobschedule",
    shortname = "js",
    namespaced,
    status = "JobScheduleStatus",
    category = "job-executor",
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Time Zone","type":"string","jsonPath":".spec.timeZone"}"#,
    printcolumn = r#"{"name":"Suspend","type":"boolean","jsonPath":".spec.suspend"}"#,
    printcolumn = r#"{"name":"Last Fire","type":"date","jsonPath":".status.lastFireTime"}"#,
    printcolumn = r#"{"name":"Next Fire","type":"string","jsonPath":".status.nextFireTime"}"#,
    printcolumn = r#"{"name":"Missed","type":"integer","jsonPath":".status.missed"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct JobScheduleSpec {
    /// When to fire: five cron fields (minute hour day-of-month month day-of-week) or a macro
    /// (`@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`).
    pub schedule: String,
    /// The IANA time zone the schedule's times are in (`Europe/Berlin`); UTC when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// While true, nothing fires, and the slots that pass are neither fired nor counted as
    /// missed.
    #[serde(default)]
    pub suspend: bool,
    /// The CloudEvent each firing sends through matching.
    pub event: ScheduledEvent,
    /// What to do with slots that passed while the operator was not running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed_slots: Option<MissedSlots>,
}

/// The event a schedule fires. Its `id` is derived from the schedule's uid and the slot, its
/// `time` is the slot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledEvent {
    /// The event's `type`, e.g. `sh.keptn.event.nightly.triggered`.
    #[serde(rename = "type")]
    #[schemars(length(min = 1))]
    pub event_type: String,
    /// The event's `source`; `job-executor/schedule/NAMESPACE/NAME` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The event's `data`. For a Keptn service's job config it names `project`, `stage` and
    /// `service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::any_object")]
    pub data: Option<serde_json::Value>,
    /// Extension attributes, by name (lower-case letters and digits).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extensions: BTreeMap<String, String>,
}

/// The missed-slot policy of a schedule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MissedSlots {
    /// `skip`: fire none; `latest` (the default): fire the most recent one within the
    /// look-back window; `all`: fire each one within it, oldest first.
    #[serde(default)]
    pub policy: MissedPolicy,
    /// How old a missed slot may be and still be fired (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 86400))]
    pub lookback_seconds: Option<u64>,
}

/// What the schedule did. Fields without a value are written as `null`, so the status write (a
/// merge patch) removes them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobScheduleStatus {
    /// The generation of the spec the status is about.
    #[serde(default)]
    pub observed_generation: Option<i64>,
    /// Every slot up to this time (RFC 3339) was handled: fired, counted as missed, or passed
    /// while suspended.
    #[serde(default)]
    pub handled_until: Option<String>,
    /// The slot fired last (RFC 3339).
    #[serde(default)]
    pub last_fire_time: Option<String>,
    /// The id of the event fired last.
    #[serde(default)]
    pub last_event_id: Option<String>,
    /// The runs the last firing made (or found already made).
    #[serde(default)]
    pub last_runs: Vec<String>,
    /// The next slot (RFC 3339).
    #[serde(default)]
    pub next_fire_time: Option<String>,
    /// Slots that passed without firing (the policy, or older than the look-back window).
    #[serde(default)]
    pub missed: u64,
    /// Whether the schedule was suspended when it was last looked at.
    #[serde(default)]
    pub suspended: bool,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
