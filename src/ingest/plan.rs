//! What an accepted event becomes: one JobRun per matching action, built as values before
//! anything is written.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use kube::api::ObjectMeta;
use serde::Serialize;

use crate::config::{Notify, NotifyRule};
use crate::crd::{ConfigStale, JobRun, JobRunSpec, RunAction, RunConcurrency};
use crate::event::{self, CloudEvent, EventSketch, split_triggered_type};
use crate::files::StagedFile;
use crate::json_text::{self, Escaping};
use crate::labels::{self, MANAGED_BY, MANAGED_BY_LABEL};
use crate::matching::{Decision, Refusals};
use crate::names;
use crate::render;
use crate::settings::Settings;
use crate::source::{
    FilesPlace, Found, LoadedConfig, Reads, ServiceName, ServiceRef, Source, SourceError, Stale,
};

/// The action's notification targets (checked when the config was loaded), then the
/// installation's; a target of both with the same kind is told at the moments either names.
fn notify_rules(action: &[Notify], installation: &[NotifyRule]) -> Vec<NotifyRule> {
    let mut rules: Vec<NotifyRule> = Vec::new();
    for rule in action
        .iter()
        .filter_map(Notify::rule)
        .chain(installation.iter().cloned())
    {
        match rules
            .iter_mut()
            .find(|r| r.kind == rule.kind && r.target == rule.target)
        {
            Some(known) => {
                known.when.extend(rule.when);
                known.when.sort();
                known.when.dedup();
            }
            None => rules.push(rule),
        }
    }
    rules
}

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
    /// The config cannot be read now (the repository cannot be fetched, and the clone cannot
    /// answer instead): nothing is recorded, and the sender is asked to retry.
    Unavailable { message: String },
}

/// Decides what an event leads to, reading the config from the source (this may block on a
/// git fetch: call it from the blocking pool).
pub fn plan_event(event: &CloudEvent, source: &Source, settings: &Settings) -> EventPlan {
    plan_with_reads(event, source, settings, Reads::Any).unwrap_or_else(|NotInMemory| {
        // A source asked for any reads never answers that it needs more.
        EventPlan::Unavailable {
            message: "the job config cannot be read now".into(),
        }
    })
}

/// The plan, if it can be made from what the source holds in memory (always for a directory;
/// for git, with branch heads fetched within the fetch interval and the config compiled before):
/// fit for an async worker. `None`: make it with [`plan_event`] on the blocking pool.
pub fn plan_event_in_memory(
    event: &CloudEvent,
    source: &Source,
    settings: &Settings,
) -> Option<EventPlan> {
    plan_with_reads(event, source, settings, Reads::Memory).ok()
}

/// The plan needs reads that [`Reads::Memory`] does not allow.
#[derive(Debug)]
struct NotInMemory;

fn plan_with_reads(
    event: &CloudEvent,
    source: &Source,
    settings: &Settings,
    reads: Reads,
) -> Result<EventPlan, NotInMemory> {
    if let Some(reasons) = not_a_task_event(event.event_type()) {
        return Ok(EventPlan::Nothing { reasons });
    }
    let (loaded, files, stale) = match lookup(event, source, reads) {
        Lookup::Config {
            loaded,
            files,
            stale,
        } => (loaded, files, stale),
        Lookup::Nothing(reasons) => return Ok(EventPlan::Nothing { reasons }),
        Lookup::Failed(SourceError::NotInMemory) => return Err(NotInMemory),
        Lookup::Failed(error) if error.is_transient() => {
            return Ok(EventPlan::Unavailable {
                message: format!("the job config cannot be read now:\n{error}"),
            });
        }
        Lookup::Failed(error) => {
            // Every other service's task of a Keptn sequence reaches this one too: an event the
            // config was not written for is not answered with its error (an errored `.finished`
            // would fail that task).
            let replies = match failure_concerns(&error, event, source, reads)? {
                Concern::Not => {
                    return Ok(EventPlan::Nothing {
                        reasons: vec![NotMatched {
                            action: String::new(),
                            reason: format!(
                                "the job config cannot be used, and no action of it runs for \
                                 {} as far as it can be read:\n{error}",
                                event.event_type()
                            ),
                        }],
                    });
                }
                Concern::Silently => false,
                Concern::Replies => split_triggered_type(event.event_type()).is_some(),
            };
            let message = format!("the job config cannot be used:\n{error}");
            let run = replies.then(|| {
                Box::new(job_run(
                    event,
                    &settings.job_namespace,
                    RunAction {
                        unreadable: None,
                        index: u32::MAX,
                        name: "job config".into(),
                        silent: false,
                        tasks: Vec::new(),
                        files: Vec::new(),
                        timeout_seconds: None,
                        concurrency: None,
                        notify: settings.notify.clone(),
                    },
                    names::config_failure_run_name(event),
                    ConfigPlace::default(),
                    Some(message.clone()),
                ))
            });
            return Ok(EventPlan::ConfigError { message, run });
        }
    };
    Ok(
        match plan_with_config(
            event,
            &loaded,
            files.as_ref(),
            stale.as_ref(),
            source,
            settings,
            reads,
        )? {
            EventPlan::Nothing { mut reasons } => {
                note_stale(&mut reasons, stale.as_ref());
                EventPlan::Nothing { reasons }
            }
            plan => plan,
        },
    )
}

/// How far a config that cannot be used concerns an event.
enum Concern {
    /// It names no such event: the event starts nothing.
    Not,
    /// Only silent actions would run: the sender is told, nothing is sent.
    Silently,
    /// The config may have been written for it: a `.triggered` event gets an errored
    /// `.finished`.
    Replies,
}

/// How far a config that cannot be used concerns the event ([`SourceError::concerns`]); of a
/// `gitcommitid` the repository does not have, what the config at the branch heads makes of the
/// event (Keptn sets it on every event of a sequence, for every service: a repository that is
/// not Keptn's, or lags behind it, would otherwise fail them all).
fn failure_concerns(
    error: &SourceError,
    event: &CloudEvent,
    source: &Source,
    reads: Reads,
) -> Result<Concern, NotInMemory> {
    let named = |named: bool| {
        if named {
            Concern::Replies
        } else {
            Concern::Not
        }
    };
    let event_type = event.event_type();
    if !error.is_pin_failure() {
        return Ok(named(error.concerns(event_type)));
    }
    Ok(
        match lookup_service(ServiceRef::of_event(event), None, source, reads) {
            Lookup::Config { loaded, .. } => {
                let compiled = &loaded.compiled;
                let matching = compiled.matcher.matching(event);
                if matching.is_empty() {
                    Concern::Not
                } else if matching.iter().all(|&index| {
                    compiled
                        .config
                        .actions
                        .get(index)
                        .is_some_and(|action| action.silent)
                }) {
                    Concern::Silently
                } else {
                    Concern::Replies
                }
            }
            Lookup::Nothing(_) => Concern::Not,
            Lookup::Failed(SourceError::NotInMemory) => return Err(NotInMemory),
            Lookup::Failed(error) => named(error.concerns(event_type)),
        },
    )
}

/// What looking up an event's config comes to.
enum Lookup {
    /// The service has a config (looked up at `stale` heads if set).
    Config {
        loaded: Arc<LoadedConfig>,
        files: Option<FilesPlace>,
        stale: Option<Stale>,
    },
    /// No config applies: the event starts nothing, for these reasons.
    Nothing(Vec<NotMatched>),
    /// The config cannot be read (or not with the reads allowed) or used.
    Failed(SourceError),
}

fn lookup(event: &CloudEvent, source: &Source, reads: Reads) -> Lookup {
    let pinned = event.extension("gitcommitid");
    lookup_service(
        ServiceRef::of_event(event),
        pinned.as_deref(),
        source,
        reads,
    )
}

/// [`lookup`] of the service an event names (or the field it lacks), at the `gitcommitid` it
/// pins, if any.
fn lookup_service(
    service: Result<ServiceRef, &'static str>,
    pinned: Option<&str>,
    source: &Source,
    reads: Reads,
) -> Lookup {
    let service = match service {
        Ok(service) => service,
        Err(field) => return Lookup::Nothing(no_service(field)),
    };
    match source.load(&service, pinned, reads) {
        Ok(Found {
            config: Some(loaded),
            files,
            stale,
        }) => Lookup::Config {
            loaded,
            files,
            stale,
        },
        Ok(Found {
            config: None,
            stale,
            ..
        }) => Lookup::Nothing(no_config(service.name(), stale.as_ref())),
        Err(error) => Lookup::Failed(error),
    }
}

/// Why an event starts nothing (an [`EventPlan::Nothing`]'s reasons), planned from its
/// sketch and handed to `answer`, which is called while the config is lent; `None` when the
/// event may start something, or its config cannot be read from memory or used: then the
/// whole event is planned ([`plan_event_in_memory`], [`plan_event`]), as it would be without
/// a sketch. What is planned here is what the whole event gets: the lookup reads only Keptn's
/// fields of `data`, which every sketch holds, and the conditions are decided on the sketch's
/// text only when each reads a plain path (an event for a config with a condition that may
/// read anything is not planned here).
pub fn plan_sketch_in_memory<R>(
    sketch: &EventSketch<'_>,
    source: &Source,
    answer: impl FnOnce(SketchReasons<'_>) -> R,
) -> Option<R> {
    // A `gitcommitid` that is not text is read as the whole event reads it.
    if sketch.holds_other_than_text("gitcommitid") {
        return None;
    }
    if let Some(reasons) = not_a_task_event(sketch.event_type()) {
        return Some(answer(SketchReasons::Listed(reasons)));
    }
    let service = match ServiceName::of_fields(|name| sketch.lookup_str(name)) {
        Ok(service) => service,
        Err(field) => return Some(answer(SketchReasons::Listed(no_service(field)))),
    };
    let pinned = sketch.string("gitcommitid");
    // What the lookup found is lent, not taken: see `Source::inspect_in_memory`.
    source.inspect_in_memory(service, pinned, |service, found| {
        let found = found.ok()?;
        let Some(loaded) = &found.config else {
            return Some(answer(SketchReasons::Listed(no_config(
                service,
                found.stale.as_ref(),
            ))));
        };
        // Decided without building the event: none is built when no action listens for the type.
        let refusals = loaded.compiled.matcher.refusals_of_sketch(sketch)?;
        Some(answer(SketchReasons::Refused {
            refusals,
            event_type: sketch.event_type(),
            stale: found.stale.as_ref(),
        }))
    })
}

/// Why an event planned from its sketch starts nothing: listed ([`Self::into_reasons`]), or
/// written straight into an answer's JSON ([`Self::write_json`]) from text the config's
/// compilation escaped once, without composing each reason first.
#[derive(Debug)]
// Made once per event and handed on, never stored: boxing the refusals (which keep their few
// verdicts inline) would allocate for every event what this type exists to avoid.
#[allow(clippy::large_enum_variant)]
pub enum SketchReasons<'a> {
    /// Reasons as they are: the event names no service, or the service has no config.
    Listed(Vec<NotMatched>),
    /// What the actions of the service's config made of the event.
    Refused {
        refusals: Refusals<'a, 'a>,
        event_type: &'a str,
        /// The config was looked up at stale branch heads.
        stale: Option<&'a Stale>,
    },
}

impl SketchReasons<'_> {
    /// The reasons, as [`EventPlan::Nothing`] lists them.
    pub fn into_reasons(self) -> Vec<NotMatched> {
        match self {
            SketchReasons::Listed(reasons) => reasons,
            SketchReasons::Refused {
                refusals,
                event_type,
                stale,
            } => {
                let (_, mut reasons) = explain_decision(event_type, refusals.into_decision());
                note_stale(&mut reasons, stale);
                reasons
            }
        }
    }

    /// Appends the reasons as the JSON array serializing [`Self::into_reasons`] writes, byte
    /// for byte.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'[');
        let mut first = true;
        let mut entry = |out: &mut Vec<u8>, action: &str, reason: &dyn Fn(&mut Vec<u8>)| {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"action\":\"");
            out.extend_from_slice(action.as_bytes());
            out.extend_from_slice(b"\",\"reason\":\"");
            reason(out);
            out.extend_from_slice(b"\"}");
        };
        // Writing into a `Vec` cannot fail.
        fn written(text: &dyn std::fmt::Display) -> impl Fn(&mut Vec<u8>) + '_ {
            move |out: &mut Vec<u8>| {
                let _ = write!(Escaping(out), "{text}");
            }
        }
        match self {
            SketchReasons::Listed(reasons) => {
                for reason in reasons {
                    entry(out, &json_text::escaped(&reason.action), &|out| {
                        json_text::write_escaped(out, &reason.reason);
                    });
                }
            }
            SketchReasons::Refused {
                refusals,
                event_type,
                stale,
            } => {
                refusals.write_each(out, &mut entry);
                if refusals.refused_more() > 0 {
                    let more = MoreRefused {
                        count: refusals.refused_more(),
                        event_type,
                    };
                    entry(out, "", &written(&more));
                } else if refusals.none_listens() {
                    entry(out, "", &written(&NoListener(event_type)));
                }
                if let Some(stale) = stale {
                    entry(out, "", &written(&StaleReason(stale)));
                }
            }
        }
        out.push(b']');
    }
}

/// Why an event of a type no action listens for starts nothing. Listing every action's names
/// here would make each unrelated event cost as much as the config is long; `job-executor
/// render` explains every action.
struct NoListener<'a>(&'a str);

impl std::fmt::Display for NoListener<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no action listens for event type {:?}", self.0)
    }
}

/// That more actions refused an event than are explained.
struct MoreRefused<'a> {
    count: usize,
    event_type: &'a str,
}

impl std::fmt::Display for MoreRefused<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} more actions listen for event type {:?} and refused it (`job-executor render` \
             explains every action)",
            self.count, self.event_type
        )
    }
}

/// That the config was looked up at stale branch heads, and why.
struct StaleReason<'a>(&'a Stale);

impl std::fmt::Display for StaleReason<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", stale_note(self.0), self.0.error)
    }
}

fn no_listener(event_type: &str) -> NotMatched {
    NotMatched {
        action: String::new(),
        reason: NoListener(event_type).to_string(),
    }
}

/// Why an event that is not a Keptn task's starts nothing ([`event::not_a_keptn_task`]).
pub(crate) fn not_a_task_event(event_type: &str) -> Option<Vec<NotMatched>> {
    event::not_a_keptn_task(event_type).map(|reason| {
        vec![NotMatched {
            action: String::new(),
            reason,
        }]
    })
}

/// The events an installation takes, by Keptn's fields of `data` (as a Keptn Uniform
/// subscription's filter chose them): where several installations share Keptn's bus (one per
/// project, or a remote execution plane per stage), each takes its own. Empty lists take all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventScope {
    pub projects: Vec<String>,
    pub stages: Vec<String>,
    pub services: Vec<String>,
}

impl EventScope {
    /// Why an event whose `data` fields `data_str` reads is not one this installation takes;
    /// `None` when it is.
    pub fn refusal<'e>(
        &self,
        data_str: impl Fn(&str) -> Option<&'e str>,
    ) -> Option<Vec<NotMatched>> {
        let lists = [
            ("project", "projects", &self.projects),
            ("stage", "stages", &self.stages),
            ("service", "services", &self.services),
        ];
        for (field, flag, taken) in lists {
            if taken.is_empty() {
                continue;
            }
            let value = data_str(field);
            if value.is_some_and(|value| taken.iter().any(|t| t == value)) {
                continue;
            }
            let about = match value {
                Some(value) => format!("the event is about {field} {value:?}"),
                None => format!("the event has no data.{field}"),
            };
            return Some(vec![NotMatched {
                action: String::new(),
                reason: format!(
                    "{about}, and this installation takes only {flag} {} (--{flag})",
                    taken
                        .iter()
                        .map(|t| format!("{t:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }]);
        }
        None
    }
}

/// Why an event without the Keptn field `field` starts nothing.
pub(crate) fn no_service(field: &str) -> Vec<NotMatched> {
    vec![NotMatched {
        action: String::new(),
        reason: format!("the event has no data.{field}: no job config applies"),
    }]
}

/// Why an event of a service without a config (at `stale` heads, if set) starts nothing.
fn no_config(service: ServiceName<'_>, stale: Option<&Stale>) -> Vec<NotMatched> {
    let mut reasons = vec![NotMatched {
        action: String::new(),
        reason: format!(
            "no job config for service {:?} (project {:?}, stage {:?})",
            service.service, service.project, service.stage
        ),
    }];
    note_stale(&mut reasons, stale);
    reasons
}

/// Why nothing runs says too when the config was looked up at stale branch heads.
fn note_stale(reasons: &mut Vec<NotMatched>, stale: Option<&Stale>) {
    if let Some(stale) = stale {
        reasons.push(NotMatched {
            action: String::new(),
            reason: StaleReason(stale).to_string(),
        });
    }
}

fn stale_note(stale: &Stale) -> String {
    match stale.fetched_at {
        Some(at) => format!(
            "the job config was looked up at the branch heads fetched at {at}, as the repository cannot be fetched now"
        ),
        None => "the job config was looked up at the branch heads of the last successful fetch, as the repository cannot be fetched now".to_string(),
    }
}

/// The runs of the matching actions. With `stale` heads a run that could not start is not
/// recorded: the config or the files may have been fixed since, so the event is retried instead.
#[allow(clippy::too_many_arguments)]
fn plan_with_config(
    event: &CloudEvent,
    loaded: &LoadedConfig,
    files_place: Option<&FilesPlace>,
    stale: Option<&Stale>,
    source: &Source,
    settings: &Settings,
    reads: Reads,
) -> Result<EventPlan, NotInMemory> {
    let (matched, not_matched) =
        explain_decision(event.event_type(), loaded.compiled.matcher.decide(event));
    let mut runs = Vec::new();
    // Where the tasks' files are read from: beside the config, or `--git-files-from`.
    let (files_revision, files_dir) = match files_place {
        Some(place) => (place.revision.as_deref(), place.dir.as_str()),
        None => (loaded.revision.as_deref(), loaded.dir.as_str()),
    };
    for index in matched {
        let Some(action) = loaded.compiled.config.actions.get(index) else {
            continue;
        };
        // A run that cannot start is still recorded, so its `.finished` reports why; unless
        // the reason may pass by itself: the files cannot be read now, or the config is stale.
        let checked = match render::check_action(action, settings)
            .and_then(|()| render::check_event_values(action, event))
        {
            Err(problem) => Err(problem.to_string()),
            Ok(())
                if files_place.is_some_and(|place| place.revision.is_none())
                    && action.tasks.iter().any(|task| !task.files.is_empty()) =>
            {
                let place = files_place.map(|place| (place.dir.as_str(), place.branch.as_str()));
                let (dir, branch) = place.unwrap_or_default();
                Err(format!(
                    "the task files are read from {dir}/ on {branch} (--git-files-from), and the \
                     repository has no such branch"
                ))
            }
            Ok(()) => {
                match source.collect_run_files(files_revision, files_dir, &action.tasks, reads) {
                    Ok(run_files) => match crate::files::check_lists(&run_files) {
                        Ok(()) => Ok(run_files),
                        Err(error) => Err(error.to_string()),
                    },
                    Err(SourceError::NotInMemory) => return Err(NotInMemory),
                    Err(error) if error.is_transient() => {
                        return Ok(EventPlan::Unavailable {
                            message: format!(
                                "the files of action {:?} cannot be read now:\n{error}",
                                action.display_name(index)
                            ),
                        });
                    }
                    Err(error) => Err(error.to_string()),
                }
            }
        };
        let (files, failure) = match (checked, stale) {
            (Ok(run_files), _) => (run_files.per_task, None),
            (Err(message), None) => (Vec::new(), Some(message)),
            (Err(message), Some(stale)) => {
                return Ok(EventPlan::Unavailable {
                    message: format!(
                        "action {:?} cannot run: {message}\n({}: {})",
                        action.display_name(index),
                        stale_note(stale),
                        stale.error
                    ),
                });
            }
        };
        // A group that cannot be filled in from this event fails the run, saying why: it
        // cannot be placed in its queue. A run that cannot run joins no group: it would take a
        // place, or cancel a running run of the group, and then fail at once.
        let (concurrency, failure) = match &action.concurrency {
            None => (None, failure),
            Some(_) if failure.is_some() => (None, failure),
            Some(wanted) => match render::group_name(&wanted.group, event) {
                Ok(group) => (
                    Some(RunConcurrency {
                        group,
                        limit: wanted.limit(),
                        policy: wanted.policy,
                    }),
                    failure,
                ),
                Err(message) => (None, failure.or(Some(message))),
            },
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
                unreadable: None,
                index: index as u32,
                name: action.display_name(index),
                silent: action.silent,
                tasks: action.tasks.clone(),
                files,
                // Checked when the config was loaded.
                timeout_seconds: action
                    .timeout
                    .as_deref()
                    .and_then(|t| crate::config::formats::parse_duration(t).ok())
                    .map(|d| d.as_secs()),
                concurrency,
                notify: notify_rules(&action.notify, &settings.notify),
            },
            names::run_name(event, index),
            ConfigPlace {
                revision: loaded.revision.clone(),
                dir: Some(loaded.dir.clone()),
                files: files_place.cloned(),
                stale: stale.map(|stale| ConfigStale {
                    fetch_error: stale.error.to_string(),
                    fetched_at: stale.fetched_at.map(|at| at.to_string()),
                }),
            },
            failure,
        ));
    }
    Ok(if runs.is_empty() {
        EventPlan::Nothing {
            reasons: not_matched,
        }
    } else {
        EventPlan::Runs { runs, not_matched }
    })
}

/// The actions that run, and why those that listen for the event do not, or that none listens.
fn explain_decision(event_type: &str, decision: Decision) -> (Vec<usize>, Vec<NotMatched>) {
    let mut not_matched: Vec<NotMatched> = decision
        .refused
        .into_iter()
        .map(|verdict| NotMatched {
            action: verdict.name,
            reason: verdict.outcome.err().unwrap_or_default(),
        })
        .collect();
    if decision.refused_more > 0 {
        not_matched.push(NotMatched {
            action: String::new(),
            reason: MoreRefused {
                count: decision.refused_more,
                event_type,
            }
            .to_string(),
        });
    }
    if decision.matched.is_empty() && not_matched.is_empty() {
        not_matched.push(no_listener(event_type));
    }
    (decision.matched, not_matched)
}

/// Where a run's config was read: the revision, the directory its files are relative to, and
/// whether the revision is the branch head of the last successful fetch.
#[derive(Debug, Clone, Default)]
struct ConfigPlace {
    revision: Option<String>,
    dir: Option<String>,
    /// Where the files are read from instead, when not beside the config.
    files: Option<FilesPlace>,
    stale: Option<ConfigStale>,
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
    labels.insert(labels::ACTION_INDEX.to_string(), action.index.to_string());
    let mut set = |key: &str, value: &str| {
        let value = names::label_value(value);
        if !value.is_empty() {
            labels.insert(key.to_string(), value);
        }
    };
    set(labels::EVENT_ID, event.id());
    if let Some(concurrency) = &action.concurrency {
        set(labels::GROUP, &concurrency.group);
    }
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
            event: event.into(),
            action,
            config_revision: place.revision,
            config_dir: place.dir,
            files_revision: place.files.as_ref().and_then(|f| f.revision.clone()),
            files_dir: place.files.map(|f| f.dir),
            config_stale: place.stale,
            failure,
            arrived_at: Some(jiff::Timestamp::now().to_string()),
            requires: None,
        },
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    use crate::config::{NotifyKind, NotifyWhen};

    /// A target named by the action and by the installation (same kind, same name) is one
    /// target, told at the moments either names; another kind of the same name is another.
    #[test]
    fn a_target_of_the_action_and_the_installation_is_told_once() {
        let action = [
            Notify {
                slack: Some("ops".into()),
                webhook: None,
                when: vec![NotifyWhen::Started],
            },
            Notify {
                slack: None,
                webhook: Some("audit".into()),
                when: Vec::new(),
            },
        ];
        let installation = [
            NotifyRule::parse("slack:ops:failed,started").unwrap(),
            NotifyRule::parse("slack:audit:succeeded").unwrap(),
        ];
        let rules = notify_rules(&action, &installation);
        let told: Vec<(NotifyKind, &str, &[NotifyWhen])> = rules
            .iter()
            .map(|r| (r.kind, r.target.as_str(), r.when.as_slice()))
            .collect();
        assert_eq!(
            told,
            [
                (
                    NotifyKind::Slack,
                    "ops",
                    &[NotifyWhen::Started, NotifyWhen::Failed][..]
                ),
                (NotifyKind::Webhook, "audit", &[NotifyWhen::Failed][..]),
                (NotifyKind::Slack, "audit", &[NotifyWhen::Succeeded][..]),
            ]
        );
    }

    /// A directory source with configs for `carts` (plain conditions, and an action that runs
    /// for deployments), `orders` (a condition that may read anything) and `broken` (invalid).
    fn source(root: &std::path::Path) -> Source {
        let action = |name: &str, event: &str, property: Option<&str>| {
            let condition = property.map_or(String::new(), |p| {
                format!("\n        jsonpath: {{property: \"{p}\", match: locust}}")
            });
            format!(
                "  - name: {name}\n    events:\n      - name: {event}{condition}\n    \
                 tasks: [{{name: t, image: alpine}}]\n"
            )
        };
        let test = "sh.keptn.event.test.triggered";
        for (service, config) in [
            (
                "carts",
                [
                    action("gate", test, Some("$.data.test.teststrategy")),
                    // A name and a value that JSON and Rust's `{:?}` escape.
                    format!(
                        "  - name: \"say \\\"hi\\\" \\\\ é\"\n    events:\n      - name: {test}\n        \
                         jsonpath: {{property: \"$.data.test.teststrategy\", match: \"a \\\"b\\\" \\t\"}}\n    \
                         tasks: [{{name: t, image: alpine}}]\n"
                    ),
                    action("typed", test, Some("$.type")),
                    action("result", test, Some("$.data.result")),
                    action("sli", test, Some("$.data['get-sli'].sliProvider")),
                    action("deploy", "sh.keptn.event.deployment.triggered", None),
                ]
                .concat(),
            ),
            ("orders", action("first", test, Some("$.data.tests[0]"))),
            ("any", action("every-task", "sh.keptn.event.*.triggered", None)),
            ("broken", "actions: [".to_string()),
        ] {
            let dir = root.join(service).join("job");
            std::fs::create_dir_all(&dir).unwrap();
            let text = format!("apiVersion: v2\nactions:\n{config}");
            let text = if service == "broken" { config } else { text };
            std::fs::write(dir.join("config.yaml"), text).unwrap();
        }
        Source::directory(root)
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("je-plan-{name}-{}", std::process::id()))
    }

    fn text(event_type: &str, data: Value) -> String {
        json!({
            "specversion": "1.0", "id": "e-1", "source": "s", "type": event_type,
            "shkeptncontext": "c", "data": data,
        })
        .to_string()
    }

    /// The sketch's plan, checked against the whole event's, and its reasons as written into
    /// the answer against them serialized.
    fn planned(source: &Source, text: &str) -> Option<Vec<NotMatched>> {
        let settings = Settings::defaults();
        let Some(sketch) = EventSketch::read(text) else {
            // A sketch is not read of an invalid event; the whole event is refused too
            // (attributes with control characters).
            assert!(CloudEvent::from_json(text.as_bytes()).is_err(), "{text}");
            return None;
        };
        let written = plan_sketch_in_memory(&sketch, source, |reasons| {
            let mut json = Vec::new();
            reasons.write_json(&mut json);
            String::from_utf8(json).unwrap()
        });
        let from_sketch = plan_sketch_in_memory(&sketch, source, |reasons| reasons.into_reasons());
        assert_eq!(
            written,
            from_sketch
                .as_ref()
                .map(|reasons| serde_json::to_string(reasons).unwrap()),
            "{text}"
        );
        let event = CloudEvent::from_json(text.as_bytes()).unwrap();
        match plan_event_in_memory(&event, source, &settings).unwrap() {
            EventPlan::Nothing { reasons } if from_sketch.is_some() => {
                assert_eq!(from_sketch.as_ref(), Some(&reasons), "{text}");
            }
            plan => assert!(from_sketch.is_none(), "{text}: {plan:?}"),
        }
        from_sketch
    }

    /// A run that cannot run (a file its task stages is missing) joins no concurrency group;
    /// the same action's run that can, does.
    #[test]
    fn a_run_that_cannot_run_joins_no_group() {
        let root = scratch("group");
        let dir = root.join("carts/job");
        std::fs::create_dir_all(&dir).unwrap();
        let config = |files: &str| {
            format!(
                "apiVersion: v2\nactions:\n  - name: deploy\n    events: [{{name: \
                 sh.keptn.event.deployment.triggered}}]\n    concurrency: {{group: \
                 \"deploy/{{service}}\", policy: cancel-in-progress}}\n    tasks: [{{name: t, \
                 image: alpine, files: {files}}}]\n"
            )
        };
        let source = Source::directory(&root);
        let event = CloudEvent::from_json(
            text(
                "sh.keptn.event.deployment.triggered",
                json!({"project": "p", "stage": "dev", "service": "carts"}),
            )
            .as_bytes(),
        )
        .unwrap();
        let settings = Settings::defaults();
        let run = |files: &str| {
            std::fs::write(dir.join("config.yaml"), config(files)).unwrap();
            match plan_event(&event, &source, &settings) {
                EventPlan::Runs { runs, .. } => runs.into_iter().next().unwrap(),
                plan => panic!("{plan:?}"),
            }
        };
        let runs = run("[]");
        assert!(runs.spec.failure.is_none());
        assert_eq!(
            runs.spec.action.concurrency.map(|c| c.group).as_deref(),
            Some("deploy/carts")
        );
        let fails = run("[missing.txt]");
        assert!(fails.spec.failure.is_some(), "{:?}", fails.spec);
        assert!(fails.spec.action.concurrency.is_none());
        // A value of the event a task reads that the event does not have: known now, as the
        // event does not change.
        let fails = run("[], env: [{name: HOST, valueFrom: event, value: $.data.deployment.url}]");
        assert_eq!(
            fails.spec.failure.as_deref(),
            Some(
                "task 't': env HOST: JSONPath $.data.deployment.url resolves to nothing in the event"
            )
        );
        assert!(fails.spec.action.concurrency.is_none());
        let _ = std::fs::remove_dir_all(root);
    }

    /// A glob for every task's `.triggered` also matches Keptn's sequence events (`*` crosses
    /// dots): those start nothing, as in Keptn's SDK and its job-executor-service.
    #[test]
    fn keptn_events_that_are_not_a_tasks_start_nothing() {
        let root = scratch("sequence");
        let source = source(&root);
        let data = json!({"project": "p", "stage": "dev", "service": "any"});
        let reasons = |event_type: &str| {
            planned(&source, &text(event_type, data.clone())).map(|r| r[0].reason.clone())
        };
        for event_type in [
            "sh.keptn.event.dev.delivery.triggered",
            "sh.keptn.event.service.create.triggered",
            "sh.keptn.event.triggered",
        ] {
            assert_eq!(
                reasons(event_type),
                Some(format!(
                    "{event_type} is not a Keptn task's event (sh.keptn.event.<task>.<kind>): \
                     Keptn's sequence, project and service events start no action"
                ))
            );
        }
        assert_eq!(reasons("sh.keptn.event.test.triggered"), None, "a task's");
        assert_eq!(
            reasons("sh.keptn.event.get-sli.triggered"),
            None,
            "a task's"
        );
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn events_that_start_nothing_are_planned_from_their_sketch() {
        let root = scratch("sketch");
        let source = source(&root);
        let data = |service: &str, strategy: &str| {
            json!({"project": "p", "stage": "dev", "service": service,
                   "test": {"teststrategy": strategy}, "padding": "x".repeat(500)})
        };
        let test = "sh.keptn.event.test.triggered";
        let reasons = |text: &str| planned(&source, text).map(|r| r[0].reason.clone());
        assert_eq!(
            reasons(&text(
                "sh.keptn.event.other.triggered",
                data("carts", "locust")
            ))
            .as_deref(),
            Some("no action listens for event type \"sh.keptn.event.other.triggered\"")
        );
        assert_eq!(
            reasons(&text(test, data("carts", "jmeter"))).as_deref(),
            Some("$.data.test.teststrategy is \"jmeter\", not \"locust\"")
        );
        assert!(reasons(&text(test, json!({"project": "p"}))).is_some());
        assert!(reasons(&text(test, data("ghost", "locust"))).is_some());
        // Planned whole: a run starts, the config may read anything, or it cannot be used.
        assert_eq!(reasons(&text(test, data("carts", "locust"))), None);
        assert_eq!(
            reasons(&text(
                "sh.keptn.event.deployment.triggered",
                data("carts", "x")
            )),
            None
        );
        assert_eq!(reasons(&text(test, data("orders", "jmeter"))), None);
        // A `gitcommitid` that is not text: the sketch leaves it to the whole event.
        let mut pinned: Value = serde_json::from_str(&text(test, data("carts", "jmeter"))).unwrap();
        pinned["gitcommitid"] = json!(7);
        assert_eq!(reasons(&pinned.to_string()), None);
        pinned["gitcommitid"] = json!("abc");
        assert!(reasons(&pinned.to_string()).is_some());
        assert_eq!(reasons(&text(test, data("broken", "jmeter"))), None);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn a_sketch_is_planned_as_the_whole_event_is() {
        let root = scratch("sketch-any");
        let source = source(&root);
        let events = (
            // Types and values with what JSON escapes, and what Rust's `{:?}` escapes.
            "sh\\.keptn\\.event\\.(test|deployment|other|q\"t|b\\\\s|tab\t|é|\u{7f})\\.triggered",
            "(carts|orders|broken|ghost)",
            proptest::option::of("(locust|jmeter|q\"t|nl\n|\u{1}|é)"),
            proptest::option::of(prop_oneof![Just(json!("locust")), Just(json!(7))]),
            proptest::collection::vec(("[a-z]{1,4}", "[a-z]{0,9}"), 0..4),
        );
        let outcome = proptest::test_runner::TestRunner::default().run(
            &events,
            |(event_type, service, strategy, result, extra)| {
                let mut data = json!({"project": "p", "stage": "dev", "service": service});
                if let Some(strategy) = strategy {
                    data["test"] = json!({"teststrategy": strategy});
                }
                if let Some(result) = result {
                    data["result"] = result;
                }
                for (name, value) in extra {
                    data[name] = json!(value);
                }
                planned(&source, &text(&event_type, data));
                Ok(())
            },
        );
        let _ = std::fs::remove_dir_all(root);
        outcome.unwrap();
    }

    #[test]
    fn an_installation_takes_the_events_of_its_projects_stages_and_services() {
        let data = json!({"project": "sockshop", "stage": "prod", "service": "carts"});
        let refusal = |scope: &EventScope, data: &Value| {
            scope
                .refusal(|name| data[name].as_str())
                .map(|reasons| reasons[0].reason.clone())
        };
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(refusal(&EventScope::default(), &data), None);
        let scope = EventScope {
            projects: names(&["sockshop", "podtato"]),
            stages: names(&["prod"]),
            services: Vec::new(),
        };
        assert_eq!(refusal(&scope, &data), None);
        let dev = json!({"project": "sockshop", "stage": "dev", "service": "carts"});
        assert_eq!(
            refusal(&scope, &dev).unwrap(),
            "the event is about stage \"dev\", and this installation takes only stages \"prod\" \
             (--stages)"
        );
        let other = json!({"project": "other", "stage": "prod", "service": "carts"});
        assert_eq!(
            refusal(&scope, &other).unwrap(),
            "the event is about project \"other\", and this installation takes only projects \
             \"sockshop\", \"podtato\" (--projects)"
        );
        let none = json!({"stage": "prod", "service": "carts"});
        assert_eq!(
            refusal(&scope, &none).unwrap(),
            "the event has no data.project, and this installation takes only projects \
             \"sockshop\", \"podtato\" (--projects)"
        );
    }
}
