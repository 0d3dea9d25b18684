//! Pure builders: the `batch/v1` Job of one task of one run, exactly as it will be created.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvFromSource,
    EnvVar, EnvVarSource, KeyToPath, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, SecretEnvSource, SecretKeySelector, SecurityContext,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::Value;

use crate::config::formats::{
    GroupPart, MAX_GROUP_BYTES, parse_group_template, parse_jsonpath, selects_one_value,
};
use crate::config::{Action, EnvFormat, MIN_TTL_SECONDS, Quantity, Task, ValueFrom};
use crate::event::CloudEvent;
use crate::files::{RunFile, StagedFile};
use crate::labels::{self, MANAGED_BY, MANAGED_BY_LABEL};
use crate::names;
use crate::settings::Settings;

/// Where files are staged for the task, in both containers.
pub const KEPTN_DIR: &str = "/keptn";
/// Where the init container sees the run's ConfigMap.
pub const FILES_MOUNT_DIR: &str = "/job-files";
pub const TASK_CONTAINER: &str = "task";
pub const INIT_CONTAINER: &str = "stage-files";
/// The user of the operator's own (distroless nonroot) image.
const INIT_USER: i64 = 65532;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error(
        "task '{task}' uses image \"{image}\", which is not in this installation's allowed \
         images ({}){}", allowed.join(", "),
        if image.contains('@') {
            " (an image pinned by a digest is matched as it is pulled: name@digest, without its \
             tag)"
        } else {
            ""
        }
    )]
    ImageNotAllowed {
        task: String,
        image: String,
        allowed: Vec<String>,
    },
    #[error(
        "task '{task}' asks for a privileged container, which this installation does not allow"
    )]
    PrivilegedNotAllowed { task: String },
    #[error(
        "task '{task}' runs as user 0 (root) with runAsNonRoot: true{}: the kubelet would \
         refuse its container, which would never start; set `runAsNonRoot: false` in its \
         securityContext, or a user other than 0",
        if *installed { " (this installation's default)" } else { "" }
    )]
    RootAsNonRoot { task: String, installed: bool },
    #[error(
        "task '{task}' asks for the ServiceAccount \"{account}\", which this installation keeps \
         from tasks (the operator's own: it may create Jobs and read every task's logs)"
    )]
    ServiceAccountNotAllowed { task: String, account: String },
    #[error(
        "task '{task}' reads the Secret \"{secret}\", which this installation keeps from tasks \
         (--refused-secrets: the operator's own tokens and credentials, image pull secrets, Helm's \
         release records)"
    )]
    SecretNotAllowed { task: String, secret: String },
    #[error(
        "task '{task}' sets the label {key}={value}, which this installation sets to \
         {key}={installed} on every Job and its pods (--job-labels): a task cannot change it"
    )]
    LabelNotAllowed {
        task: String,
        key: String,
        value: String,
        installed: String,
    },
    #[error(
        "task '{task}' asks for namespace \"{namespace}\", but this installation runs Jobs only \
         in namespace \"{job_namespace}\""
    )]
    NamespaceNotAllowed {
        task: String,
        namespace: String,
        job_namespace: String,
    },
    #[error("task '{task}': env {env}: JSONPath {path} resolves to nothing in the event")]
    EnvUnresolved {
        task: String,
        env: String,
        path: String,
    },
    #[error("task '{task}': env {env}: {message}")]
    EnvInvalid {
        task: String,
        env: String,
        message: String,
    },
    #[error("the action has no task {index}")]
    NoSuchTask { index: usize },
    #[error("task '{task}': env {env}: the output {reference} was not published")]
    OutputMissing {
        task: String,
        env: String,
        reference: String,
    },
}

/// Everything one Job is built from.
#[derive(Debug, Clone)]
pub struct JobRequest<'a> {
    pub event: &'a CloudEvent,
    pub run_name: &'a str,
    pub action_index: usize,
    /// The action's name as the run records it (`Action::display_name`).
    pub action_name: &'a str,
    pub tasks: &'a [Task],
    pub task_index: usize,
    /// The files this task stages, from the run's ConfigMap.
    pub files: &'a [StagedFile],
    /// The JobRun that owns the Job, once there is one.
    pub owner: Option<&'a OwnerReference>,
    /// What each task published so far, by task index; `None` in a preview, where an output
    /// reads as a placeholder naming it.
    pub outputs: Option<&'a [BTreeMap<String, String>]>,
    /// The trace context the task's pod continues (`TRACEPARENT`, `TRACESTATE`).
    pub trace: Option<crate::trace::TraceContext>,
}

/// The run's files ConfigMap (`binaryData`, one key per distinct file), owned by the run so it
/// goes when the run goes.
pub fn files_config_map(
    run_name: &str,
    namespace: &str,
    owner: Option<&OwnerReference>,
    files: Vec<RunFile>,
) -> ConfigMap {
    let binary_data: BTreeMap<String, ByteString> = files
        .into_iter()
        .map(|file| (file.staged.key, ByteString(file.content)))
        .collect();
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(names::files_config_map_name(run_name)),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
                (labels::RUN.to_string(), run_name.to_string()),
            ])),
            owner_references: owner.map(|o| vec![o.clone()]),
            ..Default::default()
        },
        binary_data: Some(binary_data),
        ..Default::default()
    }
}

/// Checks every task of an action against the installation before anything is created: a
/// forbidden image, namespace or privilege fails the whole action.
pub fn check_action(action: &Action, settings: &Settings) -> Result<(), RenderError> {
    action
        .tasks
        .iter()
        .enumerate()
        .try_for_each(|(index, task)| check_task(task, index, settings))
}

/// Whether every `valueFrom: event` of the action's tasks finds its value in `event`: the event
/// does not change, so a value missing from it is known before any task starts (and the run,
/// which cannot run, neither takes a place in its concurrency group nor cancels another).
pub fn check_event_values(action: &Action, event: &CloudEvent) -> Result<(), RenderError> {
    for (index, task) in action.tasks.iter().enumerate() {
        let name = task.display_name(index);
        let entries = task.env.iter();
        for entry in entries.filter(|entry| entry.value_from == Some(ValueFrom::Event)) {
            check_env_value(&name, &entry.name, &event_value(event, entry, &name)?)?;
        }
    }
    // Every task gets these: told of the first.
    if let Some(first) = action.tasks.first() {
        let name = first.display_name(0);
        for (env, value) in keptn_env(event) {
            check_env_value(&name, &env, &value)?;
        }
    }
    Ok(())
}

/// The most bytes one variable may take in a process's environment as `NAME=value` (Linux's
/// `MAX_ARG_STRLEN`, 32 pages, with the string's ending NUL): a longer one fails the
/// container's start (`E2BIG`).
const MOST_ENV_BYTES: usize = 32 * 4096 - 1;

/// Whether a process can be given `value` as its variable `env`: the container runtime
/// refuses a NUL in it, and the kernel a variable of more than [`MOST_ENV_BYTES`]. Either would
/// fail the container's start with a message that names neither.
fn check_env_value(task: &str, env: &str, value: &str) -> Result<(), RenderError> {
    let invalid = |message: String| RenderError::EnvInvalid {
        task: task.to_string(),
        env: env.to_string(),
        message,
    };
    if value.contains('\0') {
        return Err(invalid(
            "its value holds a NUL character, which no process's environment can carry".into(),
        ));
    }
    let bytes = env.len() + 1 + value.len();
    if bytes > MOST_ENV_BYTES {
        return Err(invalid(format!(
            "it takes {bytes} bytes as NAME=value, more than the {MOST_ENV_BYTES} one variable \
             may take in a process's environment"
        )));
    }
    Ok(())
}

/// The variables every task gets from the event: Keptn's fields, then `LABELS_<KEY>` sorted by
/// name (so the Job is the same every time).
fn keptn_env(event: &CloudEvent) -> Vec<(String, String)> {
    let keptn = event.keptn();
    let fields = [
        ("KEPTN_PROJECT", keptn.project),
        ("KEPTN_STAGE", keptn.stage),
        ("KEPTN_SERVICE", keptn.service),
    ]
    .map(|(name, value)| (name.to_string(), value.unwrap_or_default()));
    let labels: BTreeMap<String, String> = keptn
        .labels
        .into_iter()
        .map(|(key, value)| (label_env_name(&key), value))
        .collect();
    fields.into_iter().chain(labels).collect()
}

/// The value of a `valueFrom: event` entry of task `task_name`.
fn event_value(
    event: &CloudEvent,
    entry: &crate::config::EnvVar,
    task_name: &str,
) -> Result<String, RenderError> {
    let path = entry.value.as_deref().unwrap_or_default();
    env_from_event(event, path, entry.format).map_err(|error| match error {
        EnvError::Unresolved => RenderError::EnvUnresolved {
            task: task_name.to_string(),
            env: entry.name.clone(),
            path: path.to_string(),
        },
        EnvError::Invalid(message) => RenderError::EnvInvalid {
            task: task_name.to_string(),
            env: entry.name.clone(),
            message,
        },
    })
}

fn check_task(task: &Task, index: usize, settings: &Settings) -> Result<(), RenderError> {
    let name = task.display_name(index);
    if !settings.allowed_images.allows(&task.image) {
        return Err(RenderError::ImageNotAllowed {
            task: name,
            image: task.image.clone(),
            allowed: settings.allowed_images.patterns().to_vec(),
        });
    }
    if let Some(namespace) = &task.namespace
        && namespace != &settings.job_namespace
    {
        return Err(RenderError::NamespaceNotAllowed {
            task: name,
            namespace: namespace.clone(),
            job_namespace: settings.job_namespace.clone(),
        });
    }
    let privileged = task
        .security_context
        .as_ref()
        .is_some_and(|s| s.privileged == Some(true));
    if privileged && !settings.allow_privileged {
        return Err(RenderError::PrivilegedNotAllowed { task: name });
    }
    // The kubelet's check, known before any Job: else the pod would wait, never started, until
    // the never-started timeout.
    let security = container_security(task, settings);
    if security.run_as_non_root == Some(true) && security.run_as_user == Some(0) {
        let asked = task.security_context.as_ref();
        return Err(RenderError::RootAsNonRoot {
            task: name,
            installed: asked.and_then(|s| s.run_as_non_root).is_none(),
        });
    }
    if let Some(account) = task
        .service_account
        .as_ref()
        .filter(|account| settings.refused_service_accounts.contains(account))
    {
        return Err(RenderError::ServiceAccountNotAllowed {
            task: name,
            account: account.clone(),
        });
    }
    // The installation's labels select its tasks' pods (a NetworkPolicy, a mesh's injection,
    // cost attribution): a task may repeat one, not change it.
    let changed = task.labels.iter().find_map(|(key, value)| {
        let installed = settings.job_labels.get(key)?;
        (installed != value).then_some((key, value, installed))
    });
    if let Some((key, value, installed)) = changed {
        return Err(RenderError::LabelNotAllowed {
            task: name,
            key: key.clone(),
            value: value.clone(),
            installed: installed.clone(),
        });
    }
    // `valueFrom: secret` names its Secret in `secretName` with `key` (one key), else in
    // `name` (all keys), as the Job is rendered.
    let mut secrets = task
        .env
        .iter()
        .filter(|entry| entry.value_from == Some(ValueFrom::Secret))
        .map(|entry| match (&entry.secret_name, &entry.key) {
            (Some(secret), Some(_)) => secret,
            _ => &entry.name,
        });
    if let Some(secret) = secrets.find(|secret| settings.refuses_secret(secret)) {
        return Err(RenderError::SecretNotAllowed {
            task: name,
            secret: secret.clone(),
        });
    }
    Ok(())
}

/// Builds the Job of one task.
pub fn render_job(request: &JobRequest<'_>, settings: &Settings) -> Result<Job, RenderError> {
    let task = request
        .tasks
        .get(request.task_index)
        .ok_or(RenderError::NoSuchTask {
            index: request.task_index,
        })?;
    check_task(task, request.task_index, settings)?;
    let task_name = task.display_name(request.task_index);
    let (env, env_from) = render_env(request, task, &task_name)?;

    let mut volumes = vec![Volume {
        name: "keptn".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(quantity(
                task.empty_dir_size_limit
                    .as_ref()
                    .unwrap_or(&settings.empty_dir_size_limit),
            )),
            ..Default::default()
        }),
        ..Default::default()
    }];
    let keptn_mount = VolumeMount {
        name: "keptn".into(),
        mount_path: KEPTN_DIR.into(),
        ..Default::default()
    };
    let security = container_security(task, settings);
    let mut init_containers = Vec::new();
    if !request.files.is_empty() {
        volumes.push(files_volume(request));
        init_containers.push(init_container(settings, &security, keptn_mount.clone()));
    }

    let container = Container {
        name: TASK_CONTAINER.into(),
        image: Some(task.image.clone()),
        image_pull_policy: task.image_pull_policy.map(|p| p.as_str().to_string()),
        command: non_empty(&task.cmd),
        args: non_empty(&task.args),
        working_dir: task.working_dir.clone(),
        env: Some(env),
        env_from,
        resources: Some(resources(task, settings)),
        security_context: Some(security),
        volume_mounts: Some(vec![keptn_mount]),
        ..Default::default()
    };

    let labels = job_labels(request, task, &task_name, settings);
    let pod_labels: BTreeMap<String, String> = labels
        .iter()
        .filter(|(key, _)| {
            [MANAGED_BY_LABEL, labels::RUN, labels::TASK_INDEX].contains(&key.as_str())
                || settings.job_labels.contains_key(key.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let ttl = task
        .ttl_seconds_after_finished
        .unwrap_or(settings.default_ttl_seconds_after_finished)
        .max(MIN_TTL_SECONDS);

    let backoff_limit = task.backoff_limit.unwrap_or(0);
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(names::job_name(request.run_name, request.task_index)),
            namespace: Some(settings.job_namespace.clone()),
            labels: Some(labels),
            annotations: (!task.annotations.is_empty()).then(|| task.annotations.clone()),
            owner_references: request.owner.map(|owner| vec![owner.clone()]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(backoff_limit),
            // With retries, a pod still stopping (a drained node's, within its grace period) is
            // replaced only once it has stopped: Kubernetes' default starts the next try at once,
            // and two tries of one task (a deployment, a migration) would run side by side.
            // Without retries nothing replaces a pod, and the default fails the task as soon as
            // its pod is deleted.
            pod_replacement_policy: (backoff_limit > 0).then(|| "Failed".to_string()),
            active_deadline_seconds: Some(
                task.max_poll_duration
                    .unwrap_or(settings.default_max_poll_duration),
            ),
            ttl_seconds_after_finished: Some(ttl),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    service_account_name: task
                        .service_account
                        .clone()
                        .or_else(|| settings.default_service_account.clone()),
                    // The API token is for tasks that asked for an identity, nobody else.
                    automount_service_account_token: Some(task.service_account.is_some()),
                    security_context: Some(pod_security(settings)),
                    // Kubernetes allows an unmasked /proc only in a user namespace.
                    host_users: task
                        .security_context
                        .as_ref()
                        .is_some_and(|s| s.proc_mount == Some(crate::config::ProcMount::Unmasked))
                        .then_some(false),
                    image_pull_secrets: pull_secrets(task, settings, !init_containers.is_empty()),
                    init_containers: (!init_containers.is_empty()).then_some(init_containers),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    })
}

/// The task's pull Secrets, and the installation's for the init image when the pod stages files.
fn pull_secrets(
    task: &Task,
    settings: &Settings,
    stages_files: bool,
) -> Option<Vec<k8s_openapi::api::core::v1::LocalObjectReference>> {
    let init = settings
        .init_image_pull_secrets
        .iter()
        .filter(|_| stages_files);
    let mut seen = std::collections::HashSet::new();
    let names: Vec<&String> = (task.image_pull_secrets.iter().chain(init))
        .filter(|name| seen.insert(*name))
        .collect();
    (!names.is_empty()).then(|| {
        names
            .into_iter()
            .map(|name| k8s_openapi::api::core::v1::LocalObjectReference { name: name.clone() })
            .collect()
    })
}

fn non_empty(items: &[String]) -> Option<Vec<String>> {
    (!items.is_empty()).then(|| items.to_vec())
}

fn quantity(value: &Quantity) -> K8sQuantity {
    K8sQuantity(value.0.clone())
}

/// The installation's labels, then the task's (which may repeat one, not change it:
/// [`check_action`]), then the operator's own (which always win).
fn job_labels(
    request: &JobRequest<'_>,
    task: &Task,
    task_name: &str,
    settings: &Settings,
) -> BTreeMap<String, String> {
    let keptn = request.event.keptn();
    let mut labels = settings.job_labels.clone();
    labels.extend(task.labels.clone());
    let mut set = |key: &str, value: &str| {
        let value = names::label_value(value);
        if !value.is_empty() {
            labels.insert(key.to_string(), value);
        }
    };
    set(MANAGED_BY_LABEL, MANAGED_BY);
    set(labels::RUN, request.run_name);
    set(labels::ACTION, request.action_name);
    set(labels::ACTION_INDEX, &request.action_index.to_string());
    set(labels::TASK, task_name);
    set(labels::TASK_INDEX, &request.task_index.to_string());
    set(labels::EVENT_ID, request.event.id());
    for (key, value) in [
        (labels::KEPTN_CONTEXT, &keptn.keptn_context),
        (labels::KEPTN_PROJECT, &keptn.project),
        (labels::KEPTN_STAGE, &keptn.stage),
        (labels::KEPTN_SERVICE, &keptn.service),
        (labels::KEPTN_COMMIT_ID, &keptn.git_commit_id),
    ] {
        if let Some(value) = value {
            set(key, value);
        }
    }
    // The labels Keptn's job-executor-service gave its Jobs, for what selects Jobs by them.
    set(labels::KEPTN_EVENT_ID, request.event.id());
    set(labels::KEPTN_ACTION, request.action_name);
    set(labels::KEPTN_TASK, task_name);
    set(
        labels::KEPTN_ACTION_INDEX,
        &request.action_index.to_string(),
    );
    set(labels::KEPTN_TASK_INDEX, &request.task_index.to_string());
    labels
}

/// The container's env: the task's entries in order, then Keptn's fields and labels.
fn render_env(
    request: &JobRequest<'_>,
    task: &Task,
    task_name: &str,
) -> Result<(Vec<EnvVar>, Option<Vec<EnvFromSource>>), RenderError> {
    let event = request.event;
    let mut env = Vec::new();
    let mut env_from = Vec::new();
    // A value from the event or a task, not the config's author: kept from the kubelet's
    // expansion, which would otherwise read `$(API_TOKEN)` in it as another variable. What a
    // process could not be given fails the task here, naming the variable, not its container's
    // start (checked as the process sees it, before `$` is written `$$`).
    let plain = |name: String, value: String| -> Result<EnvVar, RenderError> {
        check_env_value(task_name, &name, &value)?;
        Ok(EnvVar {
            name,
            value: Some(kept_literal(value)),
            value_from: None,
        })
    };
    for entry in &task.env {
        match entry.value_from.unwrap_or(ValueFrom::String) {
            // The author's own value: `$(NAME)` in it refers to a variable before it, as in
            // any pod.
            ValueFrom::String => {
                let value = entry.value.clone().unwrap_or_default();
                check_env_value(task_name, &entry.name, &value)?;
                env.push(EnvVar {
                    name: entry.name.clone(),
                    value: Some(value),
                    value_from: None,
                });
            }
            ValueFrom::Event => env.push(plain(
                entry.name.clone(),
                event_value(event, entry, task_name)?,
            )?),
            ValueFrom::Output => {
                let reference = entry.value.as_deref().unwrap_or_default();
                let value = match request.outputs {
                    None => Some(format!("(the output {reference})")),
                    Some(published) => {
                        crate::config::graph::output_source(request.tasks, reference).and_then(
                            |(source, output)| published.get(source)?.get(output).cloned(),
                        )
                    }
                };
                let value = value.ok_or_else(|| RenderError::OutputMissing {
                    task: task_name.to_string(),
                    env: entry.name.clone(),
                    reference: reference.to_string(),
                })?;
                env.push(plain(entry.name.clone(), value)?);
            }
            ValueFrom::Secret => match (&entry.secret_name, &entry.key) {
                (Some(secret), Some(key)) => env.push(EnvVar {
                    name: entry.name.clone(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: secret.clone(),
                            key: key.clone(),
                            optional: Some(false),
                        }),
                        ..Default::default()
                    }),
                }),
                _ => env_from.push(EnvFromSource {
                    secret_ref: Some(SecretEnvSource {
                        name: entry.name.clone(),
                        optional: Some(false),
                    }),
                    ..Default::default()
                }),
            },
        }
    }
    for (name, value) in keptn_env(event) {
        env.push(plain(name, value)?);
    }
    // The trace context, under OpenTelemetry's names for it in the environment, so a task can
    // continue the trace; a task's own entry of the same name wins.
    if let Some(trace) = &request.trace {
        let contexts = [
            ("TRACEPARENT", Some(&trace.traceparent)),
            ("TRACESTATE", trace.tracestate.as_ref()),
        ];
        for (name, value) in contexts {
            if let Some(value) = value
                && !task.env.iter().any(|e| e.name == name)
            {
                env.push(plain(name.into(), value.clone())?);
            }
        }
    }
    Ok((env, (!env_from.is_empty()).then_some(env_from)))
}

/// A value as the container is to see it: the kubelet reads `$(NAME)` in an env value as the
/// variable `NAME` and `$$` as `$`, so each `$` is written `$$`.
fn kept_literal(value: String) -> String {
    if value.contains('$') {
        value.replace('$', "$$")
    } else {
        value
    }
}

/// `LABELS_<KEY>`: upper-cased, and every character but letters, digits, `_` and `.` becomes
/// `_` (`-` and spaces as in the old service): the labels come from the event, and one odd key
/// must not get the task's Job refused, on Kubernetes 1.31 too, which accepts no other
/// character in a variable's name unless a feature gate is on.
pub fn label_env_name(key: &str) -> String {
    let key: String = key
        .chars()
        .map(|c| match c {
            c if c.is_ascii_alphanumeric() || c == '_' || c == '.' => c.to_ascii_uppercase(),
            _ => '_',
        })
        .collect();
    format!("LABELS_{key}")
}

#[derive(Debug, PartialEq, Eq)]
pub enum EnvError {
    Unresolved,
    Invalid(String),
}

/// The value of an env var taken from the event by JSONPath, formatted as asked.
pub fn env_from_event(
    event: &CloudEvent,
    path: &str,
    format: Option<EnvFormat>,
) -> Result<String, EnvError> {
    value_from_event(event, path, format, KeptnView::Shown)
}

/// What a value from the event is for: an env value (a path that finds nothing is read again
/// in the event as Keptn's service showed it, [`keptn_view`], and one that may select several
/// values reads as their list, as there) or a concurrency group's name (neither: runs whose
/// path finds nothing would all share the group of the empty value, or of `[]`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeptnView {
    Shown,
    NotShown,
}

fn value_from_event(
    event: &CloudEvent,
    path: &str,
    format: Option<EnvFormat>,
    view: KeptnView,
) -> Result<String, EnvError> {
    let compiled = parse_jsonpath(path).map_err(EnvError::Invalid)?;
    // For env, a path that may select several values reads as their list, of one or none too,
    // as the old service read it. A group name (not the old service's) reads one value as
    // itself and fails for none: runs whose path finds nothing would all share one group.
    let singular = view == KeptnView::NotShown || selects_one_value(path);
    let resolve = |event: &Value| {
        let nodes = compiled.query(event).all();
        match nodes.as_slice() {
            [] => None,
            [one] if singular => Some((*one).clone()),
            many => Some(Value::Array(many.iter().map(|v| (*v).clone()).collect())),
        }
    };
    let value = match resolve(event.as_value()) {
        Some(value) => value,
        None => match view {
            KeptnView::Shown => keptn_view(event).as_ref().and_then(resolve),
            KeptnView::NotShown => None,
        }
        .or_else(|| (!singular).then(|| Value::Array(Vec::new())))
        .ok_or(EnvError::Unresolved)?,
    };
    format_env_value(&value, format).map_err(EnvError::Invalid)
}

/// Extensions Keptn's service always showed its JSONPaths, empty when the event had none: a
/// config reading `$.gitcommitid` got `""` from an event without the extension.
const KEPTN_ALWAYS_SET: [&str; 2] = ["gitcommitid", "shkeptncontext"];

/// The event as Keptn's service showed it to JSONPaths, when that differs: with the extensions
/// it always had, empty where the event has none.
fn keptn_view(event: &CloudEvent) -> Option<Value> {
    let Value::Object(object) = event.as_value() else {
        return None;
    };
    if KEPTN_ALWAYS_SET
        .iter()
        .all(|name| object.contains_key(*name))
    {
        return None;
    }
    let mut object = object.clone();
    for name in KEPTN_ALWAYS_SET {
        object
            .entry(name)
            .or_insert_with(|| Value::String(String::new()));
    }
    Some(Value::Object(object))
}

/// A concurrency group's name for this event: its template with each placeholder's value.
pub fn group_name(template: &str, event: &CloudEvent) -> Result<String, String> {
    let parts = parse_group_template(template)
        .map_err(|error| format!("the concurrency group is invalid: {error}"))?;
    let mut name = String::new();
    for part in parts {
        match part {
            GroupPart::Text(text) => name.push_str(text),
            GroupPart::Path(path) => {
                match value_from_event(event, &path, None, KeptnView::NotShown) {
                    // `null` and `""` read as nothing: the runs of every event without the
                    // value would share one group, as those of events without the field.
                    Ok(value) if value.is_empty() => {
                        return Err(format!(
                            "the concurrency group {template:?} cannot be filled in: {path} is \
                             empty (or null) in the event"
                        ));
                    }
                    Ok(value) => name.push_str(&value),
                    Err(EnvError::Unresolved) => {
                        return Err(format!(
                            "the concurrency group {template:?} cannot be filled in: {path} finds \
                         nothing in the event"
                        ));
                    }
                    Err(EnvError::Invalid(message)) => {
                        return Err(format!(
                            "the concurrency group {template:?} cannot be filled in: {message}"
                        ));
                    }
                }
            }
        }
    }
    if name.len() > MAX_GROUP_BYTES {
        return Err(format!(
            "the concurrency group {template:?} is {} bytes long filled in, over the limit of \
             {MAX_GROUP_BYTES}",
            name.len()
        ));
    }
    Ok(name)
}

/// `as: json`: compact JSON; `as: yaml`: YAML; otherwise strings verbatim, `null` empty, and
/// everything else as JSON text.
pub fn format_env_value(value: &Value, format: Option<EnvFormat>) -> Result<String, String> {
    match format {
        Some(EnvFormat::Json) => Ok(value.to_string()),
        Some(EnvFormat::Yaml) => serde_saphyr::to_string(value)
            .map_err(|e| format!("cannot format the value as YAML: {e}")),
        Some(EnvFormat::String) | None => Ok(match value {
            Value::String(text) => text.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        }),
    }
}

/// The task's requests and limits. A task with a `resources` block gets what it sets and
/// nothing else, as Keptn's service did ("present, even if empty, the defaults are ignored"):
/// a limit without its request is the request too (written out as Kubernetes would default it,
/// before any LimitRange's default request), a field not set is left to the namespace's
/// LimitRange. A task without one gets the installation defaults.
fn resources(task: &Task, settings: &Settings) -> ResourceRequirements {
    let list = |cpu: Option<&Quantity>, memory: Option<&Quantity>| {
        let list: BTreeMap<String, K8sQuantity> = [("cpu", cpu), ("memory", memory)]
            .into_iter()
            .filter_map(|(name, value)| Some((name.to_string(), quantity(value?))))
            .collect();
        (!list.is_empty()).then_some(list)
    };
    let Some(asked) = task.resources.as_ref() else {
        let defaults = &settings.resources;
        return ResourceRequirements {
            requests: list(Some(&defaults.cpu_request), Some(&defaults.memory_request)),
            limits: list(Some(&defaults.cpu_limit), Some(&defaults.memory_limit)),
            ..Default::default()
        };
    };
    let requests = asked.requests.as_ref();
    let limits = asked.limits.as_ref();
    ResourceRequirements {
        requests: list(
            requests
                .and_then(|r| r.cpu.as_ref())
                .or(limits.and_then(|l| l.cpu.as_ref())),
            requests
                .and_then(|r| r.memory.as_ref())
                .or(limits.and_then(|l| l.memory.as_ref())),
        ),
        limits: list(
            limits.and_then(|l| l.cpu.as_ref()),
            limits.and_then(|l| l.memory.as_ref()),
        ),
        ..Default::default()
    }
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

fn pod_security(settings: &Settings) -> PodSecurityContext {
    let security = &settings.security;
    PodSecurityContext {
        run_as_non_root: Some(security.run_as_non_root),
        run_as_user: security.run_as_user,
        run_as_group: security.run_as_group,
        fs_group: security.fs_group,
        seccomp_profile: Some(runtime_default_seccomp()),
        ..Default::default()
    }
}

/// The installation's container defaults, overridden field by field by the task's.
fn container_security(task: &Task, settings: &Settings) -> SecurityContext {
    let defaults = &settings.security;
    let asked = task.security_context.clone().unwrap_or_default();
    let capabilities = asked.capabilities.unwrap_or_default();
    // Kubernetes refuses a privileged container, or one with CAP_SYS_ADMIN, that may not
    // escalate.
    let escalates = asked.privileged.unwrap_or(false) || capabilities.adds_sys_admin();
    SecurityContext {
        allow_privilege_escalation: Some(asked.allow_privilege_escalation.unwrap_or(escalates)),
        capabilities: Some(Capabilities {
            add: capabilities.add,
            drop: Some(capabilities.drop.unwrap_or_else(|| vec!["ALL".into()])),
        }),
        privileged: asked.privileged,
        proc_mount: asked.proc_mount.map(|p| format!("{p:?}")),
        read_only_root_filesystem: Some(
            asked
                .read_only_root_filesystem
                .unwrap_or(defaults.read_only_root_filesystem),
        ),
        run_as_group: asked.run_as_group.or(defaults.run_as_group),
        run_as_non_root: Some(asked.run_as_non_root.unwrap_or(defaults.run_as_non_root)),
        run_as_user: asked.run_as_user.or(defaults.run_as_user),
        seccomp_profile: Some(match asked.seccomp_profile {
            Some(profile) => SeccompProfile {
                type_: profile.profile_type.as_str().into(),
                localhost_profile: profile.localhost_profile,
            },
            None => runtime_default_seccomp(),
        }),
        ..Default::default()
    }
}

fn files_volume(request: &JobRequest<'_>) -> Volume {
    Volume {
        name: "job-files".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: names::files_config_map_name(request.run_name),
            items: Some(
                request
                    .files
                    .iter()
                    .map(|file| KeyToPath {
                        key: file.key.clone(),
                        path: file.path.clone(),
                        mode: Some(if file.executable { 0o755 } else { 0o644 }),
                    })
                    .collect(),
            ),
            optional: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The init container: the operator's own image copies the task's files into `/keptn`. It runs
/// as the task's user and group when they are known and not root, so the task owns its files
/// and may change them (as under Keptn's service); otherwise as the image's own non-root user.
fn init_container(
    settings: &Settings,
    task_security: &SecurityContext,
    keptn_mount: VolumeMount,
) -> Container {
    let (user, group) = match task_security.run_as_user {
        Some(user) if user != 0 => (user, task_security.run_as_group.unwrap_or(INIT_USER)),
        _ => (INIT_USER, INIT_USER),
    };
    let small = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_string(), K8sQuantity(cpu.into())),
            ("memory".to_string(), K8sQuantity(memory.into())),
        ])
    };
    Container {
        name: INIT_CONTAINER.into(),
        image: Some(settings.init_image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(vec![
            "stage-files".into(),
            "--from".into(),
            FILES_MOUNT_DIR.into(),
            "--to".into(),
            KEPTN_DIR.into(),
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(small("10m", "16Mi")),
            limits: Some(small("200m", "64Mi")),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                add: None,
                drop: Some(vec!["ALL".into()]),
            }),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(user),
            run_as_group: Some(group),
            seccomp_profile: Some(runtime_default_seccomp()),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "job-files".into(),
                mount_path: FILES_MOUNT_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
            keptn_mount,
        ]),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
