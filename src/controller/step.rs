//! Carrying out a run's steps: ask [`decide`] for the next step, take it through the [`World`]
//! (the Kubernetes API and the sink; [`Cluster`] in the operator), record what came of it with
//! the pure `record_*` functions, and ask again, until the step is to wait.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::events::v1::Event as EventsV1;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::Instrument;

use super::cached::{CachedJob, CachedPod};
use super::decide::{
    Attempt, Facts, JobSeen, Limits, NoPodWarning, Step, complete_for_too_long, decide,
    delivery_mut, explain_no_pod, failing_for_too_long, first_attempt, initialise, job_name,
    ready_for, record_attempt, record_dead_letter_attempt, record_halt, record_halted_task,
    record_job, record_notification_attempt, record_outputs, record_start, record_task_end,
    run_name, update_conditions,
};
use super::group::{Group, Member};
use super::history::{self, RunEvent};
use super::observe::{
    FAILED_CREATE, JobState, failure_causes, job_state, latest_warning, never_started, stuck_pod,
    termination_message,
};
use super::written::StatusAt;
use super::{Context, ReconcileError, logs, report};
use crate::config::{NotifyKind, NotifyWhen};
use crate::crd::{DeliveryState, JobRun, JobRunStatus, TaskPhase};
use crate::event::{CloudEvent, EventError, TaskEventKind};
use crate::labels::FIELD_MANAGER;
use crate::render::{self, JobRequest, RenderError};
use crate::settings::Settings;
use crate::sink::notify::Notice;
use crate::sink::{self, DeliveryError};
use crate::source::{Reads, ServiceRef, SourceError};
use crate::trace::{self, TraceContext};

/// Why a task cannot run: recorded as its failure (and the run's), never retried.
#[derive(Debug, thiserror::Error)]
pub enum CannotRun {
    #[error("the event has no data.{0}")]
    NoService(&'static str),
    #[error("{0}")]
    Files(SourceError),
    #[error("reading the run's files failed: {0}")]
    FilesAborted(String),
    #[error("{0}")]
    Render(#[from] RenderError),
    /// Not for runs the operator made: their events were validated when accepted.
    #[error("the run's event is not a valid CloudEvent: {0}")]
    InvalidEvent(#[from] EventError),
    /// The API server refused the task's Job or files as invalid, or an admission webhook or
    /// policy denied them: trying them again would be refused again.
    #[error("the Kubernetes API refused the task's {what}: {reason}")]
    Denied { what: &'static str, reason: String },
    /// The API server refused the task's Job or files for as long as a task may take to start
    /// (a quota, a permission; see [`StepError::Refused`]).
    #[error("the Kubernetes API refused to create the task's {what} for {seconds}s: {reason}")]
    RefusedFor {
        what: &'static str,
        seconds: u64,
        reason: String,
    },
    /// The files read for the run's ConfigMap are not those recorded when its event was
    /// accepted (the config directory was edited since): the Jobs name them by those keys.
    #[error(
        "the task files changed since the event was accepted (the config directory was edited \
         under the run); send the event again with a new id"
    )]
    FilesChanged,
}

/// A step that was not taken.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The task cannot run; the run fails with this reason.
    #[error("{0}")]
    CannotRun(#[from] CannotRun),
    /// Worth trying again later (the API server or the config source is away).
    #[error("{0}")]
    Retry(#[from] ReconcileError),
    /// The API server refuses the task's Job or files for now: forbidden, as an exceeded
    /// quota or a missing permission are, which someone may fix. Tried again until the task
    /// has been ready to start for the never-started timeout, then the task fails saying so.
    #[error("{reason}")]
    Refused { what: &'static str, reason: String },
}

/// The longest a task whose Job or files the API server refuses for now waits between tries.
const REFUSED_RETRY_MOST: Duration = Duration::from_secs(30);

/// What a refused create of a task's `what` (its Job, its files) means: an admission webhook
/// or policy that denies it would deny it again (the task fails at once); another refusal
/// (`Forbidden`: an exceeded quota, a missing permission) may pass; the rest is retried.
fn refusal(what: &'static str, error: ReconcileError) -> StepError {
    match error {
        // Invalid (422), malformed (400) or too large (413, or etcd's limit, a 500 that says
        // so): the same object would be refused again.
        ReconcileError::Kube(kube::Error::Api(status))
            if matches!(status.code, 400 | 413 | 422)
                || crate::health::too_large_to_store(&status) =>
        {
            CannotRun::Denied {
                what,
                reason: status.message,
            }
            .into()
        }
        ReconcileError::Kube(kube::Error::Api(status)) if status.code == 403 => {
            if crate::health::denied_by_admission(&status) {
                return CannotRun::Denied {
                    what,
                    reason: status.message,
                }
                .into();
            }
            StepError::Refused {
                what,
                reason: status.message,
            }
        }
        error => StepError::Retry(error),
    }
}

/// What steps act on. Reads of the watch's caches are synchronous; everything else is a request.
pub trait World {
    fn now(&self) -> Timestamp;
    /// The named Job as the watch's cache has it.
    fn cached_job(&self, name: &str) -> JobSeen;
    /// The named Job as the API server has it.
    async fn look_up_job(&self, name: &str) -> Result<JobSeen, ReconcileError>;
    /// Creates the run's files ConfigMap, or finds it made before.
    async fn create_files(&self, run: &JobRun) -> Result<(), StepError>;
    /// Creates the Job, or finds it made before (by its name).
    async fn create_job(&self, job: &Job) -> Result<(), StepError>;
    /// Deletes the named Job (gone already is fine).
    async fn delete_job(&self, name: &str) -> Result<(), ReconcileError>;
    /// Whether the watch shows a Job of the name that another run owns (a run of the same name
    /// before this one): neither its logs nor its deletion are this run's.
    fn job_of_another_run(&self, _name: &str) -> bool {
        false
    }
    /// Deletes the run's files ConfigMap, once the run is done: kept until its JobRun is
    /// deleted (a week, or for good), a megabyte of files a run would fill etcd. Best effort:
    /// the JobRun's deletion collects it anyway.
    async fn delete_files(&self, _run: &str) {}
    /// Whether a pod of the Job `name` has not ended (running, or stopping).
    fn pods_running(&self, _name: &str) -> bool {
        false
    }
    /// When the Job `name` of this run was made, as the watch shows it.
    fn job_made_at(&self, _name: &str) -> Option<Timestamp> {
        None
    }
    /// An excerpt of at most `budget` bytes of the named Job's pods' logs.
    async fn task_logs(&self, name: &str, budget: usize) -> String;
    /// Why the named Job made no pod (its latest `FailedCreate` since `since`, as the Job
    /// controller told it); `None` when it made one, or nothing says why.
    async fn why_no_pod(&self, _name: &str, _since: Option<Timestamp>) -> Option<String> {
        None
    }
    /// One attempt to deliver the event to `to`: its answer, or an error if the attempt was
    /// not made.
    async fn deliver(
        &self,
        event: &CloudEvent,
        to: Destination,
    ) -> Result<Result<(), DeliveryError>, ReconcileError>;
    /// The event as the dead-letter sink receives it, after `attempts` at the sink failed
    /// with `reason`.
    fn dead_letter_event(&self, event: &CloudEvent, reason: &str, attempts: u32) -> CloudEvent {
        sink::dead_letter_event(event, reason, "", attempts)
    }
    /// One attempt to send a notification to `target`: its answer, or an error if the attempt
    /// was not made.
    async fn notify(
        &self,
        target: &str,
        _notice: &Notice,
    ) -> Result<Result<(), DeliveryError>, ReconcileError> {
        Ok(Err(DeliveryError::Refused {
            message: format!("no notification target {target:?}"),
        }))
    }
    /// Counts a notification attempt.
    fn notified(&self, _kind: NotifyKind, _target: &str, _attempt: Attempt) {}
    /// Writes the run's status, decided on `before` (its status as last read or written).
    async fn write_status(
        &self,
        run: &str,
        before: &JobRunStatus,
        status: &JobRunStatus,
    ) -> Result<(), ReconcileError>;
    /// Records that a run an older version ended is done (`status.done`, at `revision`),
    /// leaving the rest of its status as it is.
    async fn mark_done(&self, run: &str, revision: u64) -> Result<(), ReconcileError>;
    /// Counts a delivery attempt.
    fn attempted(&self, _kind: TaskEventKind, _to: Destination, _attempt: Attempt) {}
    /// How the run stands in its concurrency group (`None`: it has none); a waiting run that
    /// may start is let start.
    fn group(&self, _run: &JobRun, _status: &JobRunStatus) -> Option<Group> {
        None
    }
    /// Counts how long a step took.
    fn step_took(&self, _step: &'static str, _took: Duration) {}
    /// Tells the run's history (Kubernetes Events), in the background: never fails a step.
    fn publish(&self, _run: &JobRun, _events: Vec<RunEvent>) {}
    /// Counts a run whose outcome was just recorded.
    fn finished(&self, _run: &JobRun, _status: &JobRunStatus) {}
}

/// Where an outgoing event is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// The sink (`--sink-url`).
    Sink,
    /// Where events the sink did not take go (`--dead-letter-sink-url`).
    DeadLetter,
}

/// What the executor needs besides the world.
pub struct Executor<'a, W> {
    pub run: &'a JobRun,
    pub world: &'a W,
    pub settings: &'a Settings,
    pub limits: &'a Limits,
    /// Total bytes of log excerpts in the run's `.finished`.
    pub log_excerpt_bytes: usize,
    /// The trace context the run was accepted in, handed on as it is when spans are not
    /// exported.
    pub trace: Option<TraceContext>,
}

/// More steps than any run takes in one reconcile: each task is made, looked up and ended
/// (with records between), two events are sent, and each notification rule is attempted at
/// the run's start and at its end.
fn most_steps(tasks: usize, notify_rules: usize) -> usize {
    16 + 8 * tasks + 2 * notify_rules
}

impl<W: World> Executor<'_, W> {
    /// Takes the run's steps from `status` (the newest recorded) until the next step is to wait.
    /// Returns the status as last recorded and how long the run waits: until a watch event, or
    /// at most the duration given.
    pub async fn execute(
        &self,
        status: JobRunStatus,
    ) -> Result<(JobRunStatus, Option<Duration>), ReconcileError> {
        let run = self.run;
        let name = run_name(run);
        // A done run is the retained runs' watch's to delete when its retention is over
        // (`retained`); nothing else of it is looked at (the watch cache keeps little else of
        // a done run: `trim_run`).
        if run.is_done_with(&status) {
            if status.done {
                return Ok((status, None));
            }
            // Done before `status.done` was recorded (an older version ended it): recording it
            // moves the run from the controller's watch to the retained runs' one. Only that is
            // written: the copy is the cache's trimmed one, without the tasks' record.
            let mut marked = status;
            marked.done = true;
            marked.revision += 1;
            self.world.mark_done(name, marked.revision).await?;
            // Whether it staged files the trimmed copy does not say: a ConfigMap it has not
            // is a 404.
            self.world.delete_files(name).await;
            return Ok((marked, None));
        }
        let mut persisted = status.clone();
        let mut status = status;
        initialise(run, &mut status, self.world.now());
        let group = self.world.group(run, &status);
        let mut files_made = false;
        // What the API server said of Jobs missing from the watch, by task.
        let mut looked_up: Vec<Option<JobSeen>> = vec![None; status.tasks.len()];
        // Tasks the API server refused for now, with when to try again.
        let mut refused: Vec<(usize, Duration)> = Vec::new();
        for _ in 0..most_steps(status.tasks.len(), run.spec.action.notify.len()) {
            let now = self.world.now();
            update_conditions(&mut status, now);
            let jobs = self.observe(&status, &looked_up);
            let step = decide(&Facts {
                run,
                status: &status,
                persisted: &persisted,
                jobs: &jobs,
                files_made,
                group: group.as_ref(),
                refused: &refused,
                now,
                limits: self.limits,
            });
            tracing::debug!(run = name, ?step, "step");
            let kind = step.kind();
            let began = std::time::Instant::now();
            if let Step::Wait(delay) = step {
                return Ok((status, delay));
            }
            // A span per step: a Job's creation and a delivery reach out (client spans).
            let span_kind = match step {
                Step::CreateJob(_) | Step::Send(_) | Step::Notify(_) => "client",
                _ => "internal",
            };
            let span = tracing::info_span!(
                target: trace::TARGET,
                "step",
                otel.name = kind,
                otel.kind = span_kind,
            );
            let writes = matches!(step, Step::Record(_));
            let taken = self
                .take(
                    step,
                    &mut status,
                    &mut persisted,
                    &mut files_made,
                    &mut looked_up,
                    now,
                )
                .instrument(span)
                .await;
            // Failed steps too: an API server that times out shows in the slow ones.
            self.world.step_took(kind, began.elapsed());
            let waits = match taken {
                Ok(waits) => waits,
                Err(error) => {
                    if !writes {
                        self.keep_progress(&mut status, &mut persisted, &error)
                            .await;
                    }
                    return Err(error);
                }
            };
            refused.extend(waits);
        }
        // Not reached while `decide` moves every run on; if it is, the run is looked at again
        // soon instead of spinning, what this reconcile did recorded (deliveries attempted).
        tracing::error!(
            run = name,
            "more steps than a run takes; looking again in a second"
        );
        if status != persisted {
            self.record(&mut status, &mut persisted).await?;
        }
        Ok((persisted, Some(Duration::from_secs(1))))
    }

    /// Takes one step; `Some((task, delay))` when the task's Job or files were refused for now,
    /// tried again after `delay`.
    async fn take(
        &self,
        step: Step,
        status: &mut JobRunStatus,
        persisted: &mut JobRunStatus,
        files_made: &mut bool,
        looked_up: &mut [Option<JobSeen>],
        now: Timestamp,
    ) -> Result<Option<(usize, Duration)>, ReconcileError> {
        let run = self.run;
        match step {
            Step::Send(kind) => self.send(kind, status, now).await?,
            Step::Notify(index) => self.notify(index, status, now).await?,
            Step::Start => record_start(run, status, now),
            Step::Record(_) => self.record(status, persisted).await?,
            Step::CreateFiles(index) => match self.world.create_files(run).await {
                Ok(()) => *files_made = true,
                Err(error) => {
                    return self.not_created(error, status, persisted, index, now).await;
                }
            },
            Step::CreateJob(index) => match self.render(status, index) {
                Ok(job) => match self.world.create_job(&job).await {
                    Ok(()) => {
                        let created = job.metadata.name.unwrap_or_default();
                        record_job(status, index, created, now);
                        // What a lookup said of it before (gone, while the task was pending)
                        // is not so any more.
                        if let Some(slot) = looked_up.get_mut(index) {
                            *slot = None;
                        }
                    }
                    Err(error) => {
                        return self.not_created(error, status, persisted, index, now).await;
                    }
                },
                Err(reason) => self.cannot_run(status, index, &reason, now),
            },
            Step::AdoptJob(index) => {
                let name = job_name(run, status, index);
                tracing::info!(run = run_name(run), job = %name, "adopting the Job made before a restart");
                // Its task started when the Job was made, not now: the never-started timeout
                // and the task's start count from then.
                let made = self.world.job_made_at(&name).filter(|made| *made <= now);
                record_job(status, index, name, made.unwrap_or(now));
            }
            Step::LookUpJob(index) => {
                let job_name = job_name(run, status, index);
                let seen = self.world.look_up_job(&job_name).await?;
                if let Some(slot) = looked_up.get_mut(index) {
                    *slot = Some(seen);
                }
            }
            Step::EndTask {
                index,
                phase,
                message,
                read_logs,
                outputs,
            } => {
                let logs = if read_logs {
                    Some(self.task_logs(status, index).await)
                } else {
                    None
                };
                let message = match message {
                    // A Job that failed (its deadline passed) without making a pod says why.
                    Some(message) if read_logs && phase == TaskPhase::Failed => {
                        let started = task_started(status, index);
                        let why = self
                            .world
                            .why_no_pod(&job_name(run, status, index), started)
                            .await;
                        Some(explain_no_pod(message, why.as_deref()))
                    }
                    message => message,
                };
                record_outputs(status, index, outputs);
                record_task_end(run, status, index, phase, message, logs, now);
            }
            Step::ReadLogs(index) => {
                let logs = self.task_logs(status, index).await;
                if let Some(task) = status.tasks.get_mut(index) {
                    // Kept even when empty: they were read.
                    task.logs = Some(logs);
                }
            }
            Step::AskWhyNoPod(index) => {
                let started = task_started(status, index);
                let why = self
                    .world
                    .why_no_pod(&job_name(run, status, index), started)
                    .await;
                if let Some(slot) = looked_up.get_mut(index) {
                    *slot = Some(JobSeen::NoPod {
                        warning: why.map_or(NoPodWarning::Nothing, NoPodWarning::Said),
                    });
                }
            }
            Step::StopJob { index, message } => {
                self.world.delete_job(&job_name(run, status, index)).await?;
                let failed = TaskPhase::Failed;
                record_task_end(run, status, index, failed, Some(message), None, now);
            }
            Step::HaltTask {
                index,
                phase,
                message,
            } => {
                // The logs first: the Job's pods go with it. (A task that waited for another
                // run's Job in its way has neither.)
                let name = job_name(run, status, index);
                let logs = if self.world.job_of_another_run(&name) {
                    None
                } else {
                    let logs = self.task_logs(status, index).await;
                    self.world.delete_job(&name).await?;
                    Some(logs)
                };
                record_halted_task(run, status, index, phase, Some(message), logs, now);
            }
            Step::Halt(halt) => record_halt(run, status, &halt, now),
            // Handled by the caller.
            Step::Wait(_) => {}
        }
        Ok(None)
    }

    /// Each running task's Job, by task: from the watch's cache, or as the API server said
    /// when asked; of a task that is over (cancelled or failed), whether its pods still stop;
    /// of a pending task, what the API server said when asked, or else the watch (whether a
    /// restart lost the record of its Job).
    fn observe(&self, status: &JobRunStatus, looked_up: &[Option<JobSeen>]) -> Vec<JobSeen> {
        let seen = |(index, task): (usize, &crate::crd::TaskStatus)| {
            if task.phase == TaskPhase::Pending {
                let asked = looked_up.get(index).cloned().flatten();
                let name = || job_name(self.run, status, index);
                return asked.unwrap_or_else(|| self.world.cached_job(&name()));
            }
            if task.phase != TaskPhase::Running {
                let stopped = matches!(task.phase, TaskPhase::Cancelled | TaskPhase::Failed);
                if stopped
                    && !status.phase.is_finished()
                    && self.world.pods_running(&job_name(self.run, status, index))
                {
                    return JobSeen::Stopping;
                }
                return JobSeen::NotCached;
            }
            let asked = looked_up.get(index).cloned().flatten();
            match self.world.cached_job(&job_name(self.run, status, index)) {
                JobSeen::NotCached => asked.unwrap_or(JobSeen::NotCached),
                // What its Events said, when asked in this reconcile.
                JobSeen::NoPod { warning } => match asked {
                    Some(answer @ JobSeen::NoPod { .. }) => answer,
                    _ => JobSeen::NoPod { warning },
                },
                seen => seen,
            }
        };
        status.tasks.iter().enumerate().map(seen).collect()
    }

    /// Task `index`'s share of the run's log excerpt.
    async fn task_logs(&self, status: &JobRunStatus, index: usize) -> String {
        let budget = self.log_excerpt_bytes / status.tasks.len().max(1);
        let job_name = job_name(self.run, status, index);
        self.world.task_logs(&job_name, budget).await
    }

    fn render(&self, status: &JobRunStatus, index: usize) -> Result<Job, CannotRun> {
        let run = self.run;
        let spec = &run.spec;
        let files = spec
            .action
            .files
            .get(index)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let owner = run.controller_owner_ref(&());
        let outputs: Vec<BTreeMap<String, String>> =
            status.tasks.iter().map(|t| t.outputs.clone()).collect();
        let event = spec.event.parse()?;
        let request = JobRequest {
            event: &event,
            run_name: run_name(run),
            action_index: spec.action.index as usize,
            action_name: &spec.action.name,
            tasks: &spec.action.tasks,
            task_index: index,
            files,
            owner: owner.as_ref(),
            outputs: Some(&outputs),
            // The pod continues the trace from the Job's creation.
            trace: trace::handed_on(&tracing::Span::current(), self.trace.as_ref()),
        };
        Ok(render::render_job(&request, self.settings)?)
    }

    /// A step failed (the API server or the config source is away) after this reconcile moved
    /// the run on: what it did is recorded before the reconcile gives up, as each step changes
    /// the status only once its work is done. An event or a notification sent would be sent
    /// again from the status last written (and Keptn counts each `.started` it gets: a task is
    /// over when as many `.finished` came); a task's end, seen on its finished Job, would be
    /// lost with the Job once its TTL removes it while the failing step is retried (the task,
    /// succeeded, would then fail as gone). Nothing is written when this replica no longer
    /// leads; a write that fails too leaves it to the next try.
    async fn keep_progress(
        &self,
        status: &mut JobRunStatus,
        persisted: &mut JobRunStatus,
        error: &ReconcileError,
    ) {
        if *status == *persisted || matches!(error, ReconcileError::NotLeader(_)) {
            return;
        }
        if let Err(write) = self.record(status, persisted).await {
            tracing::warn!(run = run_name(self.run), error = %write, "what this reconcile did is not recorded; it may be done again");
        }
    }

    /// Writes the status, and publishes the run's transitions since the last write.
    async fn record(
        &self,
        status: &mut JobRunStatus,
        persisted: &mut JobRunStatus,
    ) -> Result<(), ReconcileError> {
        status.revision = persisted.revision + 1;
        status.done = status.is_done();
        self.world
            .write_status(run_name(self.run), persisted, status)
            .await?;
        self.world
            .publish(self.run, history::transitions(self.run, persisted, status));
        // Counted as the outcome is recorded: a later step of the reconcile that fails does not
        // lose it (the next reconcile finds the run finished already).
        if status.phase.is_finished() && !persisted.phase.is_finished() {
            self.world.finished(self.run, status);
        }
        let ended = status.done && !persisted.done;
        *persisted = status.clone();
        if ended
            && self
                .run
                .spec
                .action
                .files
                .iter()
                .any(|files| !files.is_empty())
        {
            self.world.delete_files(run_name(self.run)).await;
        }
        Ok(())
    }

    /// A task's files or Job not created: the task fails, or the run is tried again. A refusal
    /// that may pass is recorded on the task first (why it has not started, and the run's start
    /// and `.started`, so the wait counts from the first refusal), until the task has been ready
    /// for the never-started timeout: then it fails.
    async fn not_created(
        &self,
        error: StepError,
        status: &mut JobRunStatus,
        persisted: &mut JobRunStatus,
        index: usize,
        now: Timestamp,
    ) -> Result<Option<(usize, Duration)>, ReconcileError> {
        match error {
            StepError::CannotRun(reason) => {
                self.cannot_run(status, index, &reason, now);
                Ok(None)
            }
            StepError::Retry(error) => Err(error),
            StepError::Refused { what, reason } => {
                let limit = self.limits.never_started_timeout;
                let waited = ready_for(self.run, status, index, now);
                if waited >= limit {
                    let reason = CannotRun::RefusedFor {
                        what,
                        seconds: limit.as_secs(),
                        reason,
                    };
                    self.cannot_run(status, index, &reason, now);
                    return Ok(None);
                }
                tracing::warn!(run = run_name(self.run), task = index, %reason, "the task's {what} is refused for now");
                if let Some(task) = status.tasks.get_mut(index) {
                    task.message = Some(format!(
                        "not started: the Kubernetes API refuses to create its {what} (tried \
                         again until it has waited {}s): {reason}",
                        limit.as_secs()
                    ));
                }
                if status != persisted {
                    self.record(status, persisted).await?;
                }
                // Tried again sooner at first (a quota freed by a Job that ends), at most every
                // REFUSED_RETRY_MOST, and once more when the wait is over.
                Ok(Some((
                    index,
                    (waited / 2)
                        .clamp(Duration::from_secs(1), REFUSED_RETRY_MOST)
                        .min(limit - waited),
                )))
            }
        }
    }

    fn cannot_run(
        &self,
        status: &mut JobRunStatus,
        index: usize,
        reason: &CannotRun,
        now: Timestamp,
    ) {
        tracing::warn!(run = run_name(self.run), task = index, %reason, "the task cannot run");
        let failed = TaskPhase::Failed;
        record_task_end(
            self.run,
            status,
            index,
            failed,
            Some(reason.to_string()),
            None,
            now,
        );
    }

    /// The event, continuing the run's trace from this step's span.
    fn traced(&self, event: CloudEvent) -> CloudEvent {
        match trace::handed_on(&tracing::Span::current(), self.trace.as_ref()) {
            Some(context) => context.on_event(event),
            None => event,
        }
    }

    /// One attempt at an outgoing event, recorded in `status`.
    async fn send(
        &self,
        kind: TaskEventKind,
        status: &mut JobRunStatus,
        now: Timestamp,
    ) -> Result<(), ReconcileError> {
        let Some(mut delivery) = delivery_mut(status, kind).cloned() else {
            return Ok(());
        };
        let first = first_attempt(&mut delivery, now);
        // `.finished` carries the run's end as its time, recorded before its first attempt:
        // a webhook told of the end gets the same event, whichever of the two goes first.
        let time = match kind {
            TaskEventKind::Started => first,
            TaskEventKind::Finished => status
                .finished_at
                .as_deref()
                .and_then(|at| at.parse().ok())
                .unwrap_or(first),
        };
        let source = &self.settings.event_source;
        let triggered = self.run.spec.event.parse();
        let event = triggered.as_ref().ok().and_then(|triggered| match kind {
            TaskEventKind::Started => report::started_event(self.run, triggered, source, time),
            TaskEventKind::Finished => {
                let outcome = status
                    .outcome
                    .clone()
                    .unwrap_or_else(|| report::outcome_of_tasks(status));
                report::finished_event(self.run, triggered, status, &outcome, source, time)
            }
        });
        let event = event.map(|event| self.traced(event).with_id(&delivery.id));
        let Some(event) = event else {
            // Not reached for runs the operator made: only runs of `.triggered` events send
            // events, and those can be built.
            delivery.state = DeliveryState::GaveUp;
            delivery.last_error = Some(match triggered {
                Err(error) => CannotRun::InvalidEvent(error).to_string(),
                Ok(_) => "the event could not be built".into(),
            });
            if let Some(recorded) = delivery_mut(status, kind) {
                *recorded = delivery;
            }
            return Ok(());
        };
        let policy = &self.limits.delivery;
        if delivery.state == DeliveryState::Pending {
            let result = self.world.deliver(&event, Destination::Sink).await?;
            // The next attempt is counted from this one's end: a sink that takes longer to
            // fail than the backoff (a timeout) is not tried again at once, in this reconcile,
            // while the tasks wait (`decide` looks at deliveries first).
            let attempt = record_attempt(
                &mut delivery,
                result.as_ref().map(|_| ()),
                self.world.now(),
                policy,
                self.limits.dead_letter,
            );
            if attempt == Attempt::GaveUp {
                let error = delivery.last_error.as_deref().unwrap_or_default();
                tracing::warn!(run = run_name(self.run), kind = kind.as_str(), %error, "gave up delivering an event");
            }
            self.world.attempted(kind, Destination::Sink, attempt);
        } else {
            // Given up at the sink: the same event, saying why, to the dead-letter sink.
            let reason = delivery.last_error.clone().unwrap_or_default();
            let event = self
                .world
                .dead_letter_event(&event, &reason, delivery.attempts);
            let result = self.world.deliver(&event, Destination::DeadLetter).await?;
            let attempt = record_dead_letter_attempt(
                &mut delivery,
                result.as_ref().map(|_| ()),
                self.world.now(),
                policy,
            );
            if attempt == Attempt::GaveUp {
                let error = delivery
                    .dead_letter
                    .as_ref()
                    .and_then(|d| d.last_error.as_deref())
                    .unwrap_or_default();
                tracing::warn!(run = run_name(self.run), kind = kind.as_str(), %error, "the dead-letter sink did not take an event either");
            }
            self.world.attempted(kind, Destination::DeadLetter, attempt);
        }
        if let Some(recorded) = delivery_mut(status, kind) {
            *recorded = delivery;
        }
        Ok(())
    }
}

impl<W: World> Executor<'_, W> {
    /// One attempt of notification `index`, recorded in `status`.
    async fn notify(
        &self,
        index: usize,
        status: &mut JobRunStatus,
        now: Timestamp,
    ) -> Result<(), ReconcileError> {
        let run = self.run;
        let Some(notification) = status.notifications.get(index).cloned() else {
            return Ok(());
        };
        let triggered = match run.spec.event.parse() {
            Ok(triggered) => triggered,
            Err(error) => {
                // Not for runs the operator made; the attempt fails as a refused one would.
                let refused = DeliveryError::Refused {
                    message: CannotRun::InvalidEvent(error).to_string(),
                };
                let policy = &self.limits.notification;
                record_notification_attempt(run, status, index, Err(&refused), now, policy);
                return Ok(());
            }
        };
        let notice = match notification.kind {
            NotifyKind::Slack => Notice::Slack(report::slack_text(
                run,
                &triggered,
                status,
                notification.when,
            )),
            NotifyKind::Webhook => {
                // The event's time is the sink's event's (`.started`: its first attempt, made
                // before any notification; `.finished`: the run's end), so every attempt
                // sends the same event, and the same as the sink's.
                let at = match notification.when {
                    NotifyWhen::Started => status
                        .started
                        .as_ref()
                        .and_then(|delivery| delivery.first_attempt.as_deref())
                        .or(status.started_at.as_deref()),
                    NotifyWhen::Succeeded | NotifyWhen::Failed => status.finished_at.as_deref(),
                };
                let time = at.and_then(|t| t.parse().ok()).unwrap_or(now);
                let source = &self.settings.event_source;
                let event = self.traced(report::notice_event(
                    run,
                    &triggered,
                    status,
                    notification.when,
                    source,
                    time,
                ));
                Notice::Event(event.as_value().clone())
            }
        };
        let target = notification.target.as_str();
        let result = self.world.notify(target, &notice).await?;
        let policy = &self.limits.notification;
        let attempt = record_notification_attempt(
            run,
            status,
            index,
            result.as_ref().map(|_| ()),
            self.world.now(),
            policy,
        );
        if let (Attempt::GaveUp, Err(error)) = (attempt, &result) {
            tracing::warn!(
                run = run_name(run),
                target,
                kind = notification.kind.as_str(),
                when = notification.when.as_str(),
                %error,
                "gave up a notification"
            );
        }
        self.world.notified(notification.kind, target, attempt);
        Ok(())
    }
}

/// When task `index` started (its Job was recorded).
fn task_started(status: &JobRunStatus, index: usize) -> Option<Timestamp> {
    status
        .tasks
        .get(index)
        .and_then(|task| task.start_time.as_deref())
        .and_then(|text| text.parse().ok())
}

/// Reconciles one JobRun: takes its steps while this replica leads.
pub async fn reconcile(run: Arc<JobRun>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    if !ctx.leading() {
        // Another replica reconciles runs; this one takes them all up if it becomes leader.
        return Ok(Action::await_change());
    }
    ctx.watches_listed().await;
    let name = run.name_any();
    // Stored by a newer version of the operator (still rolling out, or rolled back since) or
    // edited by hand: this version cannot tell what the run needs, so it takes no step (the
    // version that stored it goes on with it); the other runs go on.
    let newer_format = run.spec.newer_format();
    let unreadable = (run.spec.action.unreadable.as_deref())
        .or_else(|| run.status.as_ref()?.unreadable.as_deref())
        .or(newer_format.as_deref());
    if let Some(why) = unreadable {
        tracing::warn!(run = %name, "this run cannot be read, and is left alone (stored by a newer version of job-executor?): {why}");
        return Ok(Action::await_change());
    }
    if run.is_being_deleted() {
        tracing::info!(run = %name, "the run is being deleted; left alone");
        return Ok(Action::await_change());
    }
    let uid = run.metadata.uid.as_deref().unwrap_or_default();
    let cached = StatusAt {
        status: run.status_or_default(),
        version: run.resource_version().unwrap_or_default(),
    };
    let Some(StatusAt { status, version }) = ctx.written.newest(&name, uid, cached) else {
        // This process already finished the run; the watch cache has not caught up yet.
        return Ok(Action::await_change());
    };
    // The run may have left the watch (done) since the controller took this copy from the
    // cache: what this process wrote of it was forgotten then (after the cache dropped it, so
    // checked in this order), and the copy can be older than that write.
    if !ctx.watched(&name) {
        return Ok(Action::await_change());
    }
    let options = &ctx.parts.options;
    let executor = Executor {
        run: &run,
        world: &Cluster {
            ctx: &ctx,
            api: Api::namespaced(ctx.parts.client.clone(), &ctx.parts.settings.job_namespace),
            version: std::sync::Mutex::new(version),
            generation: run.metadata.generation,
            cancelled: has_cancel(&run.metadata),
            uid: run.metadata.uid.clone(),
            created: run.metadata.creation_timestamp.clone(),
        },
        settings: &ctx.parts.settings,
        limits: &options.limits(ctx.parts.dead_letter_sink.is_some()),
        log_excerpt_bytes: options.log_excerpt_bytes,
        trace: TraceContext::of_run(&run),
    };
    // One span per reconcile, in the trace the run was accepted in.
    let span = tracing::info_span!(
        target: trace::TARGET,
        "reconcile",
        otel.kind = "internal",
        "job_executor.run" = %name,
    );
    trace::continue_trace(&span, executor.trace.as_ref());
    let (status, wait) = executor.execute(status).instrument(span).await?;
    ctx.succeeded(&name);

    let done = status.is_done();
    if done {
        ctx.forget_status(&name, uid, status.revision);
    }
    Ok(match wait {
        Some(delay) => Action::requeue(delay.max(Duration::from_millis(50))),
        None => Action::await_change(),
    })
}

/// How long a run took, from its event's arrival (its creation for runs of older versions) to
/// its outcome.
fn run_duration(run: &JobRun, status: &JobRunStatus) -> Option<Duration> {
    let arrived: Timestamp = match &run.spec.arrived_at {
        Some(at) => at.parse().ok()?,
        None => run.metadata.creation_timestamp.as_ref()?.0,
    };
    let finished: Timestamp = status.finished_at.as_deref()?.parse().ok()?;
    finished.duration_since(arrived).try_into().ok()
}

/// How many times a status write is made on a run whose metadata alone changes meanwhile.
const MOST_WRITE_TRIES: u32 = 3;

/// The operator's world: the watch's caches, the API server (every write fenced by the
/// Lease), the config source and the sink.
struct Cluster<'a> {
    ctx: &'a Context,
    api: Api<JobRun>,
    /// The run's resourceVersion its status was read or last written at: a status write is
    /// made on it only. Another writer in between (a replica that took over while this one was
    /// paused with the write in flight, a user's edit) makes it a conflict, and the run is
    /// decided again from the newer copy instead of being overwritten.
    version: std::sync::Mutex<String>,
    /// The run's generation as decided on: a write refused when only the run's metadata
    /// changed since is made again, not one refused after a change of its spec.
    generation: Option<i64>,
    /// Whether the run as decided on carried the cancel annotation: a write refused once one
    /// was added is not made again (the next step, a Job made, would ignore the cancel).
    cancelled: bool,
    /// The run's uid: a Job of a task's name that another run owns is not the task's.
    uid: Option<String>,
    /// When the run was made: a pod made before it is not of its Jobs.
    created: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

/// Whether a run carries the cancel annotation.
fn has_cancel(metadata: &kube::api::ObjectMeta) -> bool {
    metadata
        .annotations
        .as_ref()
        .is_some_and(|annotations| annotations.contains_key(crate::labels::CANCEL))
}

impl Cluster<'_> {
    fn namespaced<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(
            self.ctx.parts.client.clone(),
            &self.ctx.parts.settings.job_namespace,
        )
    }

    /// Merges `status` into the run's, on the version it was read or last written at only.
    /// When that version is gone but the run's status is still `before` and its spec as it was
    /// (only its metadata changed: a label, the cancel annotation), the write is made again on
    /// the new version; otherwise the conflict is returned and the run is decided again from
    /// the newer copy.
    async fn patch_status(
        &self,
        run: &str,
        status: serde_json::Value,
        before: Option<&JobRunStatus>,
    ) -> Result<JobRun, ReconcileError> {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..Default::default()
        };
        let mut patch = json!({ "status": status });
        let mut tries = 0;
        loop {
            let version = self.version.lock().map(|v| v.clone()).unwrap_or_default();
            // A copy without a version (none is) is written unconditionally.
            if !version.is_empty() {
                patch["metadata"] = json!({ "resourceVersion": version });
            }
            let written = self
                .ctx
                .fenced(self.api.patch_status(run, &params, &Patch::Merge(&patch)))
                .await?;
            let conflict = match written {
                Ok(patched) => {
                    if let (Ok(mut current), Some(version)) = (
                        self.version.lock(),
                        patched.metadata.resource_version.as_ref(),
                    ) {
                        current.clone_from(version);
                    }
                    return Ok(patched);
                }
                Err(kube::Error::Api(answer)) if answer.code == 409 => answer,
                Err(error) => return Err(error.into()),
            };
            tries += 1;
            let unchanged = match before {
                Some(before) if tries < MOST_WRITE_TRIES => {
                    let current = self.ctx.fenced(self.api.get_status(run)).await??;
                    // The spec's edits move the generation, metadata's do not; a cancel added
                    // to a run still going is metadata that decides what comes next (one
                    // removed does not: a halt goes on once it stopped a task).
                    let cancelled_since = !self.cancelled
                        && has_cancel(&current.metadata)
                        && !before.phase.is_finished();
                    let same = current.metadata.generation == self.generation
                        && !cancelled_since
                        && current.status.as_ref().unwrap_or(&JobRunStatus::default()) == before;
                    same.then_some(current.metadata.resource_version).flatten()
                }
                _ => None,
            };
            let Some(version) = unchanged else {
                // What this process wrote of the run last is not its newest record any more.
                self.ctx.written.let_go(run);
                return Err(kube::Error::Api(conflict).into());
            };
            if let Ok(mut held) = self.version.lock() {
                *held = version;
            }
        }
    }

    /// Reads the run's files and creates their ConfigMap (or finds it made before).
    async fn make_files(&self, run: &JobRun) -> Result<(), StepError> {
        let spec = &run.spec;
        // Runs accepted before `configDir` was recorded took files from the service's directory.
        let event = spec.event.parse().map_err(CannotRun::from)?;
        // `--git-files-from` records its own place; else the files are beside the config.
        let (dir, revision) = match (&spec.files_dir, &spec.config_dir) {
            (Some(dir), _) => (dir.clone(), spec.files_revision.clone()),
            (None, Some(dir)) => (dir.clone(), spec.config_revision.clone()),
            (None, None) => match ServiceRef::of_event(&event) {
                Ok(service) => (service.service, spec.config_revision.clone()),
                Err(field) => return Err(CannotRun::NoService(field).into()),
            },
        };
        let source = self.ctx.parts.source.clone();
        let tasks = spec.action.tasks.clone();
        // A git source may fetch: off the async workers.
        let collected = tokio::task::spawn_blocking(move || {
            source.collect_run_files(revision.as_deref(), &dir, &tasks, Reads::Any)
        })
        .await;
        let run_files = match collected {
            Ok(Ok(files)) => files,
            Ok(Err(error)) if error.is_transient() => {
                return Err(ReconcileError::from(error).into());
            }
            Ok(Err(error)) => return Err(CannotRun::Files(error).into()),
            Err(problem) => return Err(CannotRun::FilesAborted(problem.to_string()).into()),
        };
        // The Jobs name each file by the key recorded when the event was accepted; keys follow
        // the files' order, so a file added since gives the others new keys, and a pod whose
        // key is missing never starts. (A git source reads the recorded commit: the same.)
        let none = |files: &[Vec<crate::files::StagedFile>]| files.iter().all(Vec::is_empty);
        let same = (none(&run_files.per_task) && none(&spec.action.files))
            || run_files.per_task == spec.action.files;
        if !same {
            return Err(CannotRun::FilesChanged.into());
        }
        let config_map: ConfigMap = render::files_config_map(
            run_name(run),
            &self.ctx.parts.settings.job_namespace,
            run.controller_owner_ref(&()).as_ref(),
            run_files.files,
        );
        self.create_or_adopt(&config_map)
            .await
            .map_err(|error| refusal("files (their ConfigMap)", error))?;
        Ok(())
    }

    /// Whether the run's files ConfigMap exists: a dry-run create of its name is refused as
    /// `AlreadyExists` (the operator may create ConfigMaps, not read them).
    async fn files_made_before(&self, run: &JobRun) -> Result<bool, ReconcileError> {
        let probe = ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(crate::names::files_config_map_name(run_name(run))),
                ..Default::default()
            },
            ..Default::default()
        };
        let params = PostParams {
            dry_run: true,
            field_manager: Some(FIELD_MANAGER.to_string()),
        };
        match self
            .ctx
            .fenced(self.namespaced::<ConfigMap>().create(&params, &probe))
            .await?
        {
            Ok(_) => Ok(false),
            Err(kube::Error::Api(status)) if status.reason == "AlreadyExists" => Ok(true),
            Err(error) => Err(error.into()),
        }
    }

    /// The cached pods of this Job (not those of a Job of its name made before it).
    fn pods_of(&self, job: &CachedJob) -> Vec<Arc<CachedPod>> {
        self.ctx
            .pods_of_job(&job.name_any(), |pod| pod.is_of_job(job.uid))
    }

    /// The cached pods of the run's Job of this name: when the watch shows the Job, its own;
    /// when it shows another run's Job of the name, every pod but that Job's; else (deleted)
    /// every pod with the name's label made since the run was (not an earlier run's).
    fn own_pods(&self, name: &str) -> Vec<Arc<CachedPod>> {
        match self.ctx.job(name) {
            Some(job) if job.is_of_run(self.uid.as_deref()) => self.pods_of(&job),
            Some(foreign) => self.ctx.pods_of_job(name, |pod| {
                foreign.uid.is_none() || !pod.is_of_job(foreign.uid)
            }),
            None => self.ctx.pods_of_job(name, |pod| {
                let made = pod.metadata.creation_timestamp.as_ref();
                self.created
                    .as_ref()
                    .is_none_or(|run| made.is_none_or(|pod| pod >= run))
            }),
        }
    }

    /// What a Job and its cached pods say.
    fn seen(&self, job: &CachedJob) -> JobSeen {
        match job_state(job) {
            JobState::Succeeded { since } => {
                let pods = self.pods_of(job);
                let message = termination_message(pods.iter().map(AsRef::as_ref));
                let pods_seen = !pods.is_empty();
                JobSeen::Succeeded {
                    succeeded_pod_gone: message.is_none()
                        && pods_seen
                        && complete_for_too_long(since.as_deref(), Timestamp::now()),
                    message,
                    pods_seen,
                }
            }
            JobState::Failed { reason, message } => {
                let pods = self.pods_of(job);
                JobSeen::Failed {
                    reason,
                    message,
                    pods_seen: !pods.is_empty(),
                    stopping: false,
                    never_started: never_started(&pods),
                    causes: failure_causes(&pods),
                }
            }
            JobState::Failing {
                reason,
                message,
                since,
            } => {
                let pods = self.pods_of(job);
                JobSeen::Failed {
                    reason,
                    message,
                    pods_seen: !pods.is_empty(),
                    never_started: never_started(&pods),
                    causes: failure_causes(&pods),
                    // The Job controller sets `Failed` once the pods are gone; a pod on a node
                    // that is gone may never go: past the wait for a stopping pod, the Job
                    // counts as failed.
                    stopping: !failing_for_too_long(since.as_deref(), Timestamp::now()),
                }
            }
            JobState::Running => {
                let pods = self.pods_of(job);
                if pods.is_empty() {
                    return JobSeen::NoPod {
                        warning: NoPodWarning::NotAsked,
                    };
                }
                JobSeen::Running {
                    stuck: stuck_pod(pods.iter().map(AsRef::as_ref)),
                }
            }
        }
    }

    /// Creates the object with the operator's field manager; `false` when it existed (made
    /// before a restart, by this or another replica), which adopts it.
    async fn create_or_adopt<K>(&self, object: &K) -> Result<bool, ReconcileError>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + Serialize
            + DeserializeOwned,
        <K as Resource>::DynamicType: Default,
    {
        let api = self.namespaced::<K>();
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..Default::default()
        };
        match self.ctx.fenced(api.create(&params, object)).await? {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.reason == "AlreadyExists" => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// Deletes in the background (dependents go through the garbage collector); 404 is fine.
    async fn delete<K>(&self, api: &Api<K>, name: &str) -> Result<(), ReconcileError>
    where
        K: Resource + Clone + std::fmt::Debug + DeserializeOwned,
    {
        match self
            .ctx
            .fenced(api.delete(name, &DeleteParams::background()))
            .await?
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

impl World for Cluster<'_> {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn cached_job(&self, name: &str) -> JobSeen {
        self.ctx
            .job(name)
            .filter(|job| job.is_of_run(self.uid.as_deref()))
            .map_or(JobSeen::NotCached, |job| self.seen(&job))
    }

    fn job_made_at(&self, name: &str) -> Option<Timestamp> {
        self.ctx
            .job(name)
            .filter(|job| job.is_of_run(self.uid.as_deref()))
            .and_then(|job| job.metadata.creation_timestamp.as_ref().map(|made| made.0))
    }

    fn job_of_another_run(&self, name: &str) -> bool {
        self.ctx
            .job(name)
            .is_some_and(|job| !job.is_of_run(self.uid.as_deref()))
    }

    fn pods_running(&self, name: &str) -> bool {
        self.own_pods(name).iter().any(|pod| {
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded" | "Failed"))
        })
    }

    async fn look_up_job(&self, name: &str) -> Result<JobSeen, ReconcileError> {
        let job = self.namespaced::<CachedJob>().get_opt(name).await?;
        Ok(job
            .filter(|job| job.is_of_run(self.uid.as_deref()))
            .map_or(JobSeen::Gone, |job| self.seen(&job)))
    }

    async fn create_files(&self, run: &JobRun) -> Result<(), StepError> {
        match self.make_files(run).await {
            // The files read again are not the run's (or cannot be read): made before a status
            // write that failed, its ConfigMap passed the check when it was made, and a task's
            // Job may mount it already.
            Err(StepError::CannotRun(reason @ (CannotRun::FilesChanged | CannotRun::Files(_)))) => {
                match self.files_made_before(run).await {
                    Ok(true) => {
                        tracing::info!(run = run_name(run), %reason, "adopting the files made before");
                        Ok(())
                    }
                    Ok(false) => Err(reason.into()),
                    Err(error) => {
                        tracing::warn!(run = run_name(run), %error, "cannot tell whether the files were made before");
                        Err(reason.into())
                    }
                }
            }
            made => made,
        }
    }

    async fn create_job(&self, job: &Job) -> Result<(), StepError> {
        let run = job.labels().get(crate::labels::RUN).cloned();
        let job_name = job.name_any();
        // A Job that was there and is gone by the time it is looked at is made again, once.
        for _ in 0..2 {
            let created = self
                .create_or_adopt(job)
                .await
                .map_err(|error| refusal("Job", error))?;
            if created {
                self.ctx.parts.metrics.job_created();
                tracing::info!(run, job = %job_name, "created Job");
                return Ok(());
            }
            // Made before a restart, by this or another replica: adopted. A Job of the name
            // made for another run (an earlier run of the same name, deleted, and its event sent
            // again, while the garbage collector has not removed its Job, or ever, when the run
            // was deleted orphaning it) is not this task's: its outcome and logs are another
            // run's.
            let existing = self
                .ctx
                .fenced(self.namespaced::<CachedJob>().get_opt(&job_name))
                .await
                .and_then(|got| Ok(got?))
                .map_err(|error| refusal("Job", error))?;
            match existing {
                Some(existing) if existing.is_of_run(self.uid.as_deref()) => {
                    tracing::info!(run, job = %job_name, "adopting the Job made before a restart");
                    return Ok(());
                }
                Some(_) => {
                    return Err(StepError::Refused {
                        what: "Job",
                        reason: format!(
                            "a Job named {job_name} made for another run of the same name \
                             (deleted, and its event sent again?) is in the way: it goes with \
                             that run by the garbage collector, or when someone deletes it \
                             (left by a run deleted with --cascade=orphan, only then)"
                        ),
                    });
                }
                None => continue,
            }
        }
        Err(StepError::Refused {
            what: "Job",
            reason: format!("a Job named {job_name} came and went while this one was made"),
        })
    }

    async fn delete_job(&self, name: &str) -> Result<(), ReconcileError> {
        self.delete(&self.namespaced::<Job>(), name).await
    }

    async fn delete_files(&self, run: &str) {
        let name = crate::names::files_config_map_name(run);
        if let Err(error) = self.delete(&self.namespaced::<ConfigMap>(), &name).await {
            tracing::warn!(run, %error, "the run's files ConfigMap is left until the run is deleted");
        }
    }

    async fn task_logs(&self, name: &str, budget: usize) -> String {
        let pods = self.own_pods(name);
        let pods: Vec<&CachedPod> = pods.iter().map(AsRef::as_ref).collect();
        logs::collect(&self.namespaced::<Pod>(), &pods, budget).await
    }

    async fn why_no_pod(&self, name: &str, since: Option<Timestamp>) -> Option<String> {
        if !self.own_pods(name).is_empty() || self.ctx.job(name).is_some_and(|job| job.made_a_pod())
        {
            return None;
        }
        let params = ListParams::default().fields(&format!(
            "regarding.kind=Job,regarding.name={name},reason={FAILED_CREATE}"
        ));
        match self.namespaced::<EventsV1>().list(&params).await {
            Ok(events) => latest_warning(&events.items, since),
            Err(error) => {
                tracing::warn!(job = name, %error, "cannot read why the Job made no pod");
                None
            }
        }
    }

    async fn deliver(
        &self,
        event: &CloudEvent,
        to: Destination,
    ) -> Result<Result<(), DeliveryError>, ReconcileError> {
        let parts = &self.ctx.parts;
        let sink = match (to, &parts.dead_letter_sink) {
            (Destination::DeadLetter, Some(dead_letter)) => dead_letter,
            (Destination::DeadLetter, None) => {
                return Ok(Err(DeliveryError::Refused {
                    message: "no dead-letter sink is configured".into(),
                }));
            }
            (Destination::Sink, _) => &parts.sink,
        };
        let began = std::time::Instant::now();
        let result = self.ctx.fenced(sink.deliver(event)).await;
        let kind = if event.event_type().ends_with(".started") {
            "started"
        } else {
            "finished"
        };
        if to == Destination::Sink {
            parts.metrics.delivery_took(kind, began.elapsed());
        }
        result
    }

    fn dead_letter_event(&self, event: &CloudEvent, reason: &str, attempts: u32) -> CloudEvent {
        sink::dead_letter_event(event, reason, &self.ctx.parts.sink.destination(), attempts)
    }

    async fn notify(
        &self,
        target: &str,
        notice: &Notice,
    ) -> Result<Result<(), DeliveryError>, ReconcileError> {
        self.ctx
            .fenced(self.ctx.parts.notifier.send(target, notice))
            .await
    }

    fn notified(&self, kind: NotifyKind, target: &str, attempt: Attempt) {
        // A target the Secret does not name is counted as `unknown`: the names come from the
        // configs, and each would be a series of its own for as long as the process runs.
        let parts = &self.ctx.parts;
        let target = if parts.notifier.has_target(target) {
            target
        } else {
            "unknown"
        };
        parts
            .metrics
            .notification(kind.as_str(), target, attempt.as_str());
    }

    async fn write_status(
        &self,
        run: &str,
        before: &JobRunStatus,
        status: &JobRunStatus,
    ) -> Result<(), ReconcileError> {
        let patched = self
            .patch_status(run, serde_json::to_value(status)?, Some(before))
            .await?;
        let uid = patched.metadata.uid.as_deref().unwrap_or_default();
        let written = StatusAt {
            status: status.clone(),
            version: patched.resource_version().unwrap_or_default(),
        };
        self.ctx.written.remember(run, uid, written);
        Ok(())
    }

    async fn mark_done(&self, run: &str, revision: u64) -> Result<(), ReconcileError> {
        let marked = json!({ "done": true, "revision": revision });
        // The copy is trimmed: not the status to tell a metadata edit by.
        self.patch_status(run, marked, None).await.map(drop)
    }

    fn group(&self, run: &JobRun, status: &JobRunStatus) -> Option<Group> {
        let concurrency = run.spec.action.concurrency.as_ref()?;
        let me = Member::of(run, status.phase);
        let ctx = self.ctx;
        Some(
            ctx.groups
                .admit(concurrency, &me, |name| ctx.group_member(name)),
        )
    }

    fn publish(&self, run: &JobRun, events: Vec<RunEvent>) {
        self.ctx.history.publish(run, events);
    }

    fn finished(&self, run: &JobRun, status: &JobRunStatus) {
        let metrics = &self.ctx.parts.metrics;
        metrics.run_finished(status.phase.as_str());
        if let Some(took) = run_duration(run, status) {
            metrics.run_took(status.phase.as_str(), took);
        }
    }

    fn step_took(&self, step: &'static str, took: Duration) {
        self.ctx.parts.metrics.step_took(step, took);
    }

    fn attempted(&self, kind: TaskEventKind, to: Destination, attempt: Attempt) {
        let metrics = &self.ctx.parts.metrics;
        match to {
            Destination::Sink => metrics.delivery(kind.as_str(), attempt.as_str()),
            Destination::DeadLetter => metrics.dead_letter(kind.as_str(), attempt.as_str()),
        }
    }
}

#[cfg(test)]
mod model;
