//! What an accepted event becomes: one JobRun per matching action, built as values before
//! anything is written.

use std::collections::BTreeMap;

use kube::api::ObjectMeta;
use serde::Serialize;

use crate::config::MANAGED_BY_LABEL;
use crate::crd::{JobRun, JobRunSpec, RunAction};
use crate::event::{CloudEvent, split_triggered_type};
use crate::names;
use crate::render::{self, LABEL_ACTION_INDEX, LABEL_EVENT_ID, MANAGED_BY, StagedFile};
use crate::settings::Settings;
use crate::source::{LoadedConfig, ServiceRef, Source, SourceError};

/// An action that does not run, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotMatched {
    pub action: String,
    pub reason: String,
}

/// What one event leads to.
#[derive(Debug, Clone)]
pub enum EventPlan {
    /// JobRuns to create (possibly failed ones that only report an error).
    Runs {
        runs: Vec<JobRun>,
        not_matched: Vec<NotMatched>,
    },
    /// Nothing to do, and why.
    Nothing { reasons: Vec<NotMatched> },
    /// The service's config cannot be used: the sender gets the message, and a `.triggered`
    /// event gets an errored `.finished` through a failed JobRun.
    ConfigError {
        message: String,
        run: Option<Box<JobRun>>,
    },
}

pub fn service_of(event: &CloudEvent) -> Result<ServiceRef, &'static str> {
    let field = |name: &'static str| event.data_str(name).map(str::to_string).ok_or(name);
    Ok(ServiceRef {
        project: field("project")?,
        stage: field("stage")?,
        service: field("service")?,
    })
}

/// Decides what an event leads to, reading the config from the source (this may block on a
/// git fetch: call it from the blocking pool).
pub fn plan_event(event: &CloudEvent, source: &Source, settings: &Settings) -> EventPlan {
    let service = match service_of(event) {
        Ok(service) => service,
        Err(field) => {
            return EventPlan::Nothing {
                reasons: vec![NotMatched {
                    action: String::new(),
                    reason: format!("the event has no data.{field}: no job config applies"),
                }],
            };
        }
    };
    let pinned = event.extension("gitcommitid");
    let loaded = match source.load(&service, pinned.as_deref()) {
        Ok(Some(loaded)) => loaded,
        Ok(None) => {
            return EventPlan::Nothing {
                reasons: vec![NotMatched {
                    action: String::new(),
                    reason: format!(
                        "no job config for service {:?} (project {:?}, stage {:?})",
                        service.service, service.project, service.stage
                    ),
                }],
            };
        }
        Err(error) => {
            let message = format!("the job config cannot be used:\n{error}");
            let run = split_triggered_type(event.event_type()).map(|_| {
                Box::new(job_run(
                    event,
                    &settings.job_namespace,
                    RunAction {
                        index: u32::MAX,
                        name: "job config".into(),
                        silent: false,
                        tasks: Vec::new(),
                        files: Vec::new(),
                    },
                    names::config_failure_run_name(event),
                    ConfigPlace::default(),
                    Some(message.clone()),
                ))
            });
            return EventPlan::ConfigError { message, run };
        }
    };
    plan_with_config(event, &loaded, source, settings)
}

fn plan_with_config(
    event: &CloudEvent,
    loaded: &LoadedConfig,
    source: &Source,
    settings: &Settings,
) -> EventPlan {
    let decision = loaded.matcher.decide(event);
    let mut not_matched: Vec<NotMatched> = decision
        .refused
        .into_iter()
        .map(|verdict| NotMatched {
            action: verdict.name,
            reason: verdict.outcome.err().unwrap_or_default(),
        })
        .collect();
    if decision.matched.is_empty() && not_matched.is_empty() {
        // Listing every action's names here would make each unrelated event cost as much as
        // the config is long; `job-executor render` explains every action.
        not_matched.push(NotMatched {
            action: String::new(),
            reason: format!("no action listens for event type {:?}", event.event_type()),
        });
    }
    let mut runs = Vec::new();
    for index in decision.matched {
        let Some(action) = loaded.config.actions.get(index) else {
            continue;
        };
        // A run that cannot start is still recorded, so its `.finished` reports why.
        let (files, failure) = match render::check_action(action, settings)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                source
                    .collect_run_files(loaded.revision.as_deref(), &loaded.dir, action)
                    .map_err(|e: SourceError| e.to_string())
            }) {
            Ok(run_files) => (run_files.per_task, None),
            Err(message) => (Vec::new(), Some(message)),
        };
        let files: Vec<Vec<StagedFile>> = if files.iter().all(Vec::is_empty) {
            Vec::new()
        } else {
            files
        };
        runs.push(job_run(
            event,
            &settings.job_namespace,
            RunAction {
                index: index as u32,
                name: action.display_name(index),
                silent: action.silent,
                tasks: action.tasks.clone(),
                files,
            },
            names::run_name(event, index),
            ConfigPlace {
                revision: loaded.revision.clone(),
                dir: Some(loaded.dir.clone()),
            },
            failure,
        ));
    }
    if runs.is_empty() {
        EventPlan::Nothing {
            reasons: not_matched,
        }
    } else {
        EventPlan::Runs { runs, not_matched }
    }
}

/// Where a run's config was read: the revision and the directory its files are relative to.
#[derive(Debug, Clone, Default)]
struct ConfigPlace {
    revision: Option<String>,
    dir: Option<String>,
}

fn job_run(
    event: &CloudEvent,
    namespace: &str,
    action: RunAction,
    name: String,
    place: ConfigPlace,
    failure: Option<String>,
) -> JobRun {
    let mut labels = BTreeMap::new();
    labels.insert(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string());
    labels.insert(LABEL_ACTION_INDEX.to_string(), action.index.to_string());
    let mut set = |key: &str, value: &str| {
        let value = names::label_value(value);
        if !value.is_empty() {
            labels.insert(key.to_string(), value);
        }
    };
    set(LABEL_EVENT_ID, event.id());
    let context = event.extension("shkeptncontext");
    for (key, value) in [
        ("keptn.sh/project", event.data_str("project")),
        ("keptn.sh/stage", event.data_str("stage")),
        ("keptn.sh/service", event.data_str("service")),
        ("keptn.sh/context", context.as_deref()),
    ] {
        if let Some(value) = value {
            set(key, value);
        }
    }
    JobRun {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: JobRunSpec {
            event: event.clone(),
            action,
            config_revision: place.revision,
            config_dir: place.dir,
            failure,
        },
        status: None,
    }
}
