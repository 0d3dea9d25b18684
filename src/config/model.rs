//! The `job/config.yaml` format: Keptn job-executor-service v2, plus a few additive keys.
//!
//! These types are the single source of truth: the JSON Schema (`job-executor schema`) and the
//! strict loader's structural check are both generated from them.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A job config file (`job/config.yaml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "job-executor job config")]
pub struct JobConfig {
    /// The format version. Only `v2` (the format of Keptn's job-executor-service v2) is read.
    #[schemars(extend("enum" = ["v2"]))]
    pub api_version: String,
    /// The actions: each runs its tasks when one of its events matches.
    #[serde(default)]
    pub actions: Vec<Action>,
}

/// An action: a list of tasks run in order when an event matches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Action {
    /// A name for people: used in labels, logs and `kubectl get jobruns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The action runs when any one of these events matches.
    #[serde(default)]
    pub events: Vec<EventFilter>,
    /// The tasks, run one after the other; a failed task stops the action.
    #[serde(default)]
    pub tasks: Vec<Task>,
    /// A silent action sends no `.started` / `.finished` events.
    #[serde(default, skip_serializing_if = "is_false")]
    pub silent: bool,
    /// How long a run of the action may take, across all its tasks (additive key), such as
    /// `90s`, `30m` or `1h30m`, at most a week: past it, the running tasks' Jobs are deleted,
    /// no other task starts, and the run fails.
    // Not JSON Schema's `duration`, ISO 8601's alone: a validator that checks formats would
    // refuse `30m` by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "job-duration"))]
    pub timeout: Option<String>,
    /// How many runs that share a group may run at the same time, and what a run beyond that
    /// does (additive key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    /// Who hears of the action's runs (additive key): a Slack-compatible incoming webhook or a
    /// webhook that receives the CloudEvent, each named by its key in the notifications Secret
    /// mounted into the operator (never a URL here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<Notify>,
}

/// One notification target of an action: exactly one of `slack` and `webhook`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Notify {
    /// A Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat), sent a readable
    /// message: the name of the key that holds its URL in the notifications Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "notify-target"))]
    pub slack: Option<String>,
    /// A webhook that receives the run's `.started` / `.finished` CloudEvent (structured JSON):
    /// the name of the key that holds its URL in the notifications Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "notify-target"))]
    pub webhook: Option<String>,
    /// When: `started`, `succeeded`, `failed` (default: `failed`; a cancelled or timed-out run
    /// has failed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<NotifyWhen>,
}

/// What a notification is sent to.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum NotifyKind {
    /// A Slack-compatible incoming webhook: `{"text": …}`.
    Slack,
    /// Any HTTP endpoint: the CloudEvent, structured.
    Webhook,
}

impl NotifyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyKind::Slack => "slack",
            NotifyKind::Webhook => "webhook",
        }
    }
}

/// When a notification is sent.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum NotifyWhen {
    /// The run started (left its queue).
    Started,
    /// The run's tasks all succeeded.
    Succeeded,
    /// The run failed, was cancelled or timed out, or could not run.
    Failed,
}

impl NotifyWhen {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyWhen::Started => "started",
            NotifyWhen::Succeeded => "succeeded",
            NotifyWhen::Failed => "failed",
        }
    }
}

impl Notify {
    /// The rule as a run keeps it; `None` unless exactly one of `slack` and `webhook` is set
    /// (the config check says so first).
    pub fn rule(&self) -> Option<NotifyRule> {
        let (kind, target) = match (&self.slack, &self.webhook) {
            (Some(target), None) => (NotifyKind::Slack, target),
            (None, Some(target)) => (NotifyKind::Webhook, target),
            _ => return None,
        };
        let mut when = if self.when.is_empty() {
            vec![NotifyWhen::Failed]
        } else {
            self.when.clone()
        };
        when.sort();
        when.dedup();
        Some(NotifyRule {
            kind,
            target: target.clone(),
            when,
        })
    }
}

/// A notification target as a run keeps it: from its action's `notify`, or the installation's
/// `--notify`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotifyRule {
    pub kind: NotifyKind,
    /// The key of the target's URL in the notifications Secret.
    pub target: String,
    pub when: Vec<NotifyWhen>,
}

impl NotifyRule {
    /// Reads `--notify`'s `KIND:TARGET[:WHEN,…]`, e.g. `slack:ops` or
    /// `webhook:audit:started,succeeded,failed`.
    pub fn parse(text: &str) -> Result<NotifyRule, String> {
        let how = "expected KIND:TARGET or KIND:TARGET:WHEN,… (e.g. slack:ops:failed), KIND \
                   being slack or webhook and WHEN started, succeeded or failed";
        let mut parts = text.trim().splitn(3, ':');
        let kind = match parts.next().unwrap_or_default() {
            "slack" => NotifyKind::Slack,
            "webhook" => NotifyKind::Webhook,
            other => return Err(format!("{text:?}: unknown kind {other:?}: {how}")),
        };
        let target = parts.next().unwrap_or_default();
        super::formats::check_notify_target(target).map_err(|e| format!("{text:?}: {e}"))?;
        let mut when = Vec::new();
        for moment in parts.next().unwrap_or_default().split(',') {
            when.push(match moment.trim() {
                "" => continue,
                "started" => NotifyWhen::Started,
                "succeeded" => NotifyWhen::Succeeded,
                "failed" => NotifyWhen::Failed,
                other => return Err(format!("{text:?}: unknown moment {other:?}: {how}")),
            });
        }
        let notify = Notify {
            slack: (kind == NotifyKind::Slack).then(|| target.to_string()),
            webhook: (kind == NotifyKind::Webhook).then(|| target.to_string()),
            when,
        };
        notify.rule().ok_or_else(|| format!("{text:?}: {how}"))
    }
}

/// A concurrency group: runs whose `group` reads the same (of any action) run at most `limit`
/// at a time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Concurrency {
    /// The group's name, filled in from the event: `{$.data.project}` is the value of a
    /// JSONPath into the CloudEvent, and `{project}`, `{stage}` and `{service}` are short for
    /// `{$.data.project}`, `{$.data.stage}` and `{$.data.service}`. For example
    /// `deploy/{project}/{stage}/{service}`.
    #[schemars(extend("format" = "group-template", "minLength" = 1))]
    pub group: String,
    /// How many runs of the group may run at the same time (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<u32>,
    /// What a run does when the group is full: `queue` waits for its turn, in the order the
    /// events arrived (the default); `cancel-in-progress` cancels the older runs, so the newest
    /// wins; `skip` does not run.
    #[serde(default, skip_serializing_if = "ConcurrencyPolicy::is_default")]
    pub policy: ConcurrencyPolicy,
}

impl Concurrency {
    /// The number of runs of the group that may run at the same time.
    pub fn limit(&self) -> u32 {
        self.limit.unwrap_or(1)
    }
}

/// What a run does when its concurrency group is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ConcurrencyPolicy {
    /// Wait for a place, in arrival order.
    #[default]
    Queue,
    /// Cancel the older runs of the group: the newest wins.
    CancelInProgress,
    /// Do not run: the run ends as cancelled, saying which runs held the group.
    Skip,
}

impl ConcurrencyPolicy {
    fn is_default(&self) -> bool {
        *self == ConcurrencyPolicy::Queue
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ConcurrencyPolicy::Queue => "queue",
            ConcurrencyPolicy::CancelInProgress => "cancel-in-progress",
            ConcurrencyPolicy::Skip => "skip",
        }
    }
}

/// Which CloudEvents trigger an action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EventFilter {
    /// The CloudEvent `type`, as an anchored glob: `*` matches any run of characters
    /// (`sh.keptn.event.*.triggered`).
    #[schemars(extend("format" = "event-glob"))]
    pub name: String,
    /// An optional condition on the event's content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jsonpath: Option<JsonPathFilter>,
}

/// A condition: the JSONPath `property`, evaluated on the whole CloudEvent, yields `match`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JsonPathFilter {
    /// A JSONPath (RFC 9535) into the CloudEvent, e.g. `$.data.test.teststrategy`.
    #[schemars(extend("format" = "jsonpath"))]
    pub property: String,
    /// The value the path must yield: strings compare exactly, numbers and booleans by their
    /// JSON text.
    #[serde(rename = "match")]
    pub match_value: String,
}

/// One container run as a Kubernetes Job.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Task {
    /// A name for people: used in the Job's labels and in the `.finished` message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The container image.
    #[schemars(extend("minLength" = 1))]
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-empty-is-unset" = true))]
    pub image_pull_policy: Option<ImagePullPolicy>,
    /// The container's command (replaces the image's entrypoint).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    /// The command's arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Files or directories of the service's repository directory, staged under `/keptn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("items" = {"type": "string", "format": "relative-path"}))]
    pub files: Vec<String>,
    /// Environment variables: from the event, from Secrets, or literal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// How long the task may run, in seconds (default 300); Kubernetes enforces it as the Job's
    /// `activeDeadlineSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_poll_duration: Option<i64>,
    /// The namespace of the Job. It must be the installation's job namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "dns-label", "x-empty-is-unset" = true))]
    pub namespace: Option<String>,
    /// Seconds the finished Job is kept (default 21600; at least 60, so logs can be read: a
    /// value below, a negative one too, is raised to 60, as Keptn's service raised it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    /// The ServiceAccount the pod runs as; its token is mounted only when this is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "dns-subdomain", "x-empty-is-unset" = true))]
    pub service_account: Option<String>,
    /// Annotations for the Job.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Names of Secrets used to pull the image (additive key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("items" = {"type": "string", "format": "dns-subdomain"}))]
    pub image_pull_secrets: Vec<String>,
    /// Size limit of the `/keptn` emptyDir, a Kubernetes quantity (additive key; default 20Mi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-empty-is-unset" = true))]
    pub empty_dir_size_limit: Option<Quantity>,
    /// Retries of a failed pod before the task fails (additive key; default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub backoff_limit: Option<i32>,
    /// Extra labels for the Job (additive key).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The tasks of the same action, by name, this task starts after (additive key). When no
    /// task of an action says `needs`, its tasks run one after the other; when one does, every
    /// task starts as soon as the tasks it needs have succeeded, at the same time as others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// Names of small values the task publishes (additive key): it writes one `name=value` line
    /// for each to `/dev/termination-log` (4096 bytes in all). Tasks that come after it read them
    /// with `valueFrom: output`, and `.finished` reports them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("items" = {"type": "string", "format": "output-name"}))]
    pub outputs: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ImagePullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl ImagePullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Never => "Never",
        }
    }
}

/// An environment variable of the task's container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvVar {
    /// The variable's name; for `valueFrom: secret` without `secretName`, the Secret's name.
    #[schemars(extend("minLength" = 1))]
    pub name: String,
    /// A JSONPath into the event (`valueFrom: event`) or the literal value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Where the value comes from (default: `string`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<ValueFrom>,
    /// With `valueFrom: secret`: the Secret to read one key from (additive key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "dns-subdomain"))]
    pub secret_name: Option<String>,
    /// With `valueFrom: secret` and `secretName`: the key to read (additive key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// With `valueFrom: event`: how to format the value (`json`, `yaml`, or plain `string`;
    /// any case, as Keptn's service read it).
    #[serde(default, rename = "as", skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-ignore-case" = true, "x-empty-is-unset" = true))]
    pub format: Option<EnvFormat>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ValueFrom {
    /// `value` is a JSONPath into the event.
    Event,
    /// Every key of the Secret `name` becomes a variable; or, with `secretName` and `key`,
    /// one key becomes the variable `name`.
    Secret,
    /// `value` is the literal value.
    String,
    /// `value` names a task this task comes after and one of its `outputs`: `build.version`
    /// (additive).
    Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EnvFormat {
    Json,
    Yaml,
    String,
}

/// Compute resources of the task's container.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ResourceList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<ResourceList>,
}

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourceList {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-empty-is-unset" = true))]
    pub cpu: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-empty-is-unset" = true))]
    pub memory: Option<Quantity>,
}

/// A Kubernetes quantity such as `500m`, `1`, `128Mi` or `1e3`, checked when the file loads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Quantity(pub String);

impl JsonSchema for Quantity {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Quantity".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A Kubernetes quantity, such as `500m`, `1`, `128Mi` or `1e3`.",
            "type": ["string", "number"],
            "format": "quantity"
        })
    }
}

/// The container security context fields a task may set; merged field by field over the
/// installation's defaults.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecurityContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub run_as_user: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub run_as_group: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as_non_root: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_root_filesystem: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_privilege_escalation: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proc_mount: Option<ProcMount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_profile: Option<SeccompProfile>,
}

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Capabilities {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop: Option<Vec<String>>,
}

impl Capabilities {
    /// Whether `CAP_SYS_ADMIN` is added, written so: the API server lets such a container
    /// escalate only (it checks that spelling alone; `SYS_ADMIN` it does not).
    pub fn adds_sys_admin(&self) -> bool {
        self.add
            .as_ref()
            .is_some_and(|add| add.iter().any(|capability| capability == "CAP_SYS_ADMIN"))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ProcMount {
    Default,
    Unmasked,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SeccompProfile {
    #[serde(rename = "type")]
    pub profile_type: SeccompProfileType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub localhost_profile: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SeccompProfileType {
    RuntimeDefault,
    Localhost,
    Unconfined,
}

impl SeccompProfileType {
    pub fn as_str(self) -> &'static str {
        match self {
            SeccompProfileType::RuntimeDefault => "RuntimeDefault",
            SeccompProfileType::Localhost => "Localhost",
            SeccompProfileType::Unconfined => "Unconfined",
        }
    }
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl Action {
    /// The action's name, or its position when it has none.
    pub fn display_name(&self, index: usize) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("action-{index}"))
    }
}

impl Task {
    /// The task's name, or its position when it has none.
    pub fn display_name(&self, index: usize) -> String {
        self.name.clone().unwrap_or_else(|| format!("task-{index}"))
    }
}
