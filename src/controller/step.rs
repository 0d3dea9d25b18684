//! Reconciling one JobRun: look at the run and the world, take the next step, record it.
//!
//! The steps, each recorded in status before anything depends on it:
//! 1. send `.started` (unless silent, or the event is not a `.triggered` one);
//! 2. create the current task's Job (deterministic name; `AlreadyExists` means it was created
//!    before a restart, and it is adopted);
//! 3. wait for the Job to change (woken by the watch);
//! 4. on `Complete`, record the task with its logs in the same write as the next task's Job; on
//!    `Failed`, or a pod that never starts, record the reason and stop;
//! 5. send `.finished` with the outcome fixed in status, and record its delivery.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::observe::{JobState, job_state, stuck_pod};
use super::{Context, ReconcileError, logs, report};

use crate::crd::{
    Condition, Delivery, DeliveryState, JobRun, JobRunStatus, OutcomeStatus, RunPhase, TaskPhase,
    TaskStatus,
};
use crate::event::{TaskEventKind, outgoing_event_id, split_triggered_type};
use crate::labels::FIELD_MANAGER;
use crate::names;
use crate::render::{self, JobRequest};
use crate::sink::{DeliveryError, retry_delay};
use crate::source::ServiceRef;

/// How long a Job the controller created may be missing from its watch before it asks.
const MISSING_JOB_GRACE: Duration = Duration::from_secs(30);

pub async fn reconcile(run: Arc<JobRun>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let name = run.name_any();
    if !ctx.leading() {
        // Another replica reconciles runs; this one takes them all up if it becomes leader.
        return Ok(Action::await_change());
    }
    let Some(mut reconciler) = Reconciler::new(&run, &ctx) else {
        // This process already finished the run; the watch cache has not caught up yet.
        return Ok(Action::await_change());
    };
    let action = reconciler.reconcile().await?;
    ctx.succeeded(&name);
    Ok(action)
}

struct Reconciler<'a> {
    run: &'a JobRun,
    ctx: &'a Context,
    name: String,
    api: Api<JobRun>,
    status: JobRunStatus,
    persisted: JobRunStatus,
    /// When to look again without a watch event (a delivery retry, a start-up deadline).
    wake: Option<Duration>,
}

fn now_text() -> String {
    Timestamp::now().to_string()
}

fn since(text: Option<&String>) -> Duration {
    text.and_then(|t| t.parse::<Timestamp>().ok())
        .and_then(|t| Timestamp::now().duration_since(t).try_into().ok())
        .unwrap_or_default()
}

fn until(text: Option<&String>) -> Duration {
    text.and_then(|t| t.parse::<Timestamp>().ok())
        .and_then(|t| t.duration_since(Timestamp::now()).try_into().ok())
        .unwrap_or_default()
}

impl<'a> Reconciler<'a> {
    fn new(run: &'a JobRun, ctx: &'a Context) -> Option<Self> {
        let name = run.name_any();
        let status = ctx.newest_status(&name, run.status_or_default())?;
        Some(Reconciler {
            run,
            ctx,
            api: Api::namespaced(ctx.parts.client.clone(), &ctx.parts.settings.job_namespace),
            persisted: status.clone(),
            status,
            name,
            wake: None,
        })
    }

    fn sends_events(&self) -> bool {
        !self.run.spec.action.silent
            && split_triggered_type(self.run.spec.event.event_type()).is_some()
    }

    fn wake_within(&mut self, delay: Duration) {
        self.wake = Some(self.wake.map_or(delay, |w| w.min(delay)));
    }

    async fn reconcile(&mut self) -> Result<Action, ReconcileError> {
        let was_finished = self.persisted.phase.is_finished();
        self.initialise();
        if self.sends_events() {
            self.deliver(TaskEventKind::Started).await?;
        }
        self.persist().await?;
        self.advance_tasks().await?;
        if self.status.phase.is_finished() && self.sends_events() {
            let started_open = self
                .status
                .started
                .as_ref()
                .is_some_and(|d| d.state == DeliveryState::Pending);
            if !started_open {
                self.deliver(TaskEventKind::Finished).await?;
            }
        }
        self.update_conditions();
        self.persist().await?;

        let done = self.status.is_done();
        self.ctx.parts.metrics.set_in_flight(&self.name, !done);
        if done {
            self.ctx.forget_status(&self.name, self.status.revision);
        }
        if !was_finished && self.status.phase.is_finished() {
            self.ctx
                .parts
                .metrics
                .run_finished(self.status.phase.as_str());
        }
        if done {
            match self.retention_left() {
                Some(left) if left.is_zero() => {
                    self.delete_run().await?;
                    return Ok(Action::await_change());
                }
                Some(left) => return Ok(Action::requeue(left)),
                None => {}
            }
        }
        Ok(match self.wake {
            Some(delay) if !done => Action::requeue(delay.max(Duration::from_millis(50))),
            _ => Action::await_change(),
        })
    }

    /// How long a finished run is still kept (`--jobrun-retention-seconds`), `None` when it is
    /// kept for good: retention off, or its `.finished` given up (the record of what could not
    /// be delivered stays until someone looks).
    fn retention_left(&self) -> Option<Duration> {
        let retention = self.ctx.parts.options.jobrun_retention?;
        if self
            .status
            .finished
            .as_ref()
            .is_some_and(|d| d.state != DeliveryState::Delivered)
        {
            return None;
        }
        // Runs finished by an older version have no `finishedAt`: their creation counts.
        let finished_at = self.status.finished_at.clone().or_else(|| {
            self.run
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
        });
        Some(retention.saturating_sub(since(finished_at.as_ref())))
    }

    /// Deletes the run past its retention; its Jobs and ConfigMap go with it (owner references).
    async fn delete_run(&self) -> Result<(), ReconcileError> {
        let background = DeleteParams::background();
        match self
            .ctx
            .fenced(self.api.delete(&self.name, &background))
            .await?
        {
            Ok(_) => {
                tracing::info!(run = %self.name, "deleted the finished run after its retention");
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    fn initialise(&mut self) {
        let spec = &self.run.spec;
        if self.status.tasks.len() != spec.action.tasks.len() {
            self.status.tasks = spec
                .action
                .tasks
                .iter()
                .enumerate()
                .map(|(index, task)| TaskStatus {
                    name: task.display_name(index),
                    ..Default::default()
                })
                .collect();
        }
        if self.status.phase == RunPhase::Pending {
            self.status.phase = RunPhase::Running;
            self.status.current_task = (!spec.action.tasks.is_empty()).then_some(0);
        }
        if self.sends_events() && self.status.started.is_none() {
            self.status.started = Some(Delivery {
                id: outgoing_event_id(&self.name, TaskEventKind::Started),
                ..Default::default()
            });
        }
        if self.status.outcome.is_none() {
            if let Some(failure) = &spec.failure {
                self.finish(OutcomeStatus::Errored, failure.clone());
            } else if spec.action.tasks.is_empty() {
                let outcome = report::outcome_of_tasks(&self.status);
                self.finish(outcome.status, outcome.message);
            }
        }
    }

    fn finish(&mut self, status: OutcomeStatus, message: String) {
        self.status.phase = match status {
            OutcomeStatus::Succeeded => RunPhase::Succeeded,
            OutcomeStatus::Errored => RunPhase::Failed,
        };
        self.status.outcome = Some(crate::crd::RunOutcome { status, message });
        self.status.finished_at = Some(now_text());
    }

    /// Writes the status if it changed; the revision counts the writes.
    async fn persist(&mut self) -> Result<(), ReconcileError> {
        if self.status == self.persisted {
            return Ok(());
        }
        self.status.revision = self.persisted.revision + 1;
        let patch = json!({ "status": self.status });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..Default::default()
        };
        self.ctx
            .fenced(
                self.api
                    .patch_status(&self.name, &params, &Patch::Merge(&patch)),
            )
            .await??;
        self.ctx.remember_status(&self.name, self.status.clone());
        self.persisted = self.status.clone();
        Ok(())
    }

    async fn advance_tasks(&mut self) -> Result<(), ReconcileError> {
        // Each pass either waits or records a step; a run has a bounded number of steps.
        for _ in 0..=(self.status.tasks.len() * 2) {
            if self.status.phase.is_finished() {
                return Ok(());
            }
            let Some(index) = self.status.current_task.map(|i| i as usize) else {
                return Ok(());
            };
            let Some(task) = self.status.tasks.get(index) else {
                return Ok(());
            };
            match task.phase {
                TaskPhase::Pending => {
                    match self.create_job(index).await? {
                        Ok(job_name) => {
                            let task = &mut self.status.tasks[index];
                            task.phase = TaskPhase::Running;
                            task.job_name = Some(job_name);
                            task.start_time = Some(now_text());
                        }
                        Err(message) => {
                            self.task_over(index, TaskPhase::Failed, Some(message), None)
                        }
                    }
                    self.persist().await?;
                    if self.status.tasks[index].phase == TaskPhase::Running {
                        // The Job's watch event wakes the next step.
                        return Ok(());
                    }
                }
                TaskPhase::Running => match self.observe(index).await? {
                    None => return Ok(()),
                    Some((phase, message, logs)) => {
                        self.task_over(index, phase, message, logs);
                        // Moving on to the next task is recorded with its Job, one write later:
                        // a restart in between observes the finished Job again and adopts the
                        // next one by its name. The run's outcome is written before `.finished`
                        // reports it.
                        if self.status.phase.is_finished() {
                            self.persist().await?;
                        }
                    }
                },
                TaskPhase::Succeeded | TaskPhase::Failed => return Ok(()),
            }
        }
        Ok(())
    }

    /// Records the end of a task and moves on: to the next task, or to the run's outcome.
    fn task_over(
        &mut self,
        index: usize,
        phase: TaskPhase,
        message: Option<String>,
        logs: Option<String>,
    ) {
        let task = &mut self.status.tasks[index];
        task.phase = phase;
        task.message = message;
        task.logs = logs.filter(|l| !l.is_empty());
        task.completion_time = Some(now_text());
        if phase == TaskPhase::Succeeded && index + 1 < self.status.tasks.len() {
            self.status.current_task = Some(index as u32 + 1);
        } else {
            let outcome = report::outcome_of_tasks(&self.status);
            self.finish(outcome.status, outcome.message);
        }
    }

    /// Creates the task's Job (and, before the first task with files, the run's ConfigMap).
    /// `Ok(Err(message))` is a task that cannot run: the run fails with that message.
    async fn create_job(&self, index: usize) -> Result<Result<String, String>, ReconcileError> {
        let spec = &self.run.spec;
        let files = spec
            .action
            .files
            .get(index)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let first_with_files = spec.action.files.iter().position(|f| !f.is_empty());
        if !files.is_empty()
            && first_with_files == Some(index)
            && let Err(message) = self.ensure_files().await?
        {
            return Ok(Err(message));
        }
        let owner = self.run.controller_owner_ref(&());
        let job = match render::render_job(
            &JobRequest {
                event: &spec.event,
                run_name: &self.name,
                action_index: spec.action.index as usize,
                action_name: &spec.action.name,
                tasks: &spec.action.tasks,
                task_index: index,
                files,
                owner: owner.as_ref(),
            },
            &self.ctx.parts.settings,
        ) {
            Ok(job) => job,
            Err(error) => return Ok(Err(error.to_string())),
        };
        let job_name = names::job_name(&self.name, index);
        let jobs: Api<Job> = Api::namespaced(
            self.ctx.parts.client.clone(),
            &self.ctx.parts.settings.job_namespace,
        );
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..Default::default()
        };
        match self.ctx.fenced(jobs.create(&params, &job)).await? {
            Ok(_) => {
                self.ctx.parts.metrics.job_created();
                tracing::info!(run = %self.name, job = %job_name, "created Job");
            }
            Err(kube::Error::Api(status)) if status.reason == "AlreadyExists" => {
                tracing::info!(run = %self.name, job = %job_name, "adopting the Job made before a restart");
            }
            Err(error) => return Err(error.into()),
        }
        Ok(Ok(job_name))
    }

    /// The ConfigMap of the run's files, owned by the run so it goes when the run goes.
    async fn ensure_files(&self) -> Result<Result<(), String>, ReconcileError> {
        let spec = &self.run.spec;
        // Runs accepted before `configDir` was recorded took files from the service's directory.
        let dir = match (&spec.config_dir, ServiceRef::of_event(&spec.event)) {
            (Some(dir), _) => dir.clone(),
            (None, Ok(service)) => service.service,
            (None, Err(field)) => return Ok(Err(format!("the event has no data.{field}"))),
        };
        let revision = spec.config_revision.clone();
        let source = self.ctx.parts.source.clone();
        let tasks = spec.action.tasks.clone();
        // A git source may fetch: off the async workers.
        let collected = tokio::task::spawn_blocking(move || {
            source.collect_run_files(revision.as_deref(), &dir, &tasks)
        })
        .await;
        let run_files = match collected {
            Ok(Ok(files)) => files,
            Ok(Err(error)) if error.is_transient() => return Err(error.into()),
            Ok(Err(error)) => return Ok(Err(error.to_string())),
            Err(problem) => return Ok(Err(format!("reading the run's files failed: {problem}"))),
        };
        let config_map = render::files_config_map(
            &self.name,
            &self.ctx.parts.settings.job_namespace,
            self.run.controller_owner_ref(&()).as_ref(),
            run_files.files,
        );
        let api: Api<ConfigMap> = Api::namespaced(
            self.ctx.parts.client.clone(),
            &self.ctx.parts.settings.job_namespace,
        );
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..Default::default()
        };
        match self.ctx.fenced(api.create(&params, &config_map)).await? {
            Ok(_) => Ok(Ok(())),
            Err(kube::Error::Api(status)) if status.reason == "AlreadyExists" => Ok(Ok(())),
            Err(error) => Err(error.into()),
        }
    }

    /// Looks at the running task's Job: `None` while it runs, or how it ended.
    async fn observe(
        &mut self,
        index: usize,
    ) -> Result<Option<(TaskPhase, Option<String>, Option<String>)>, ReconcileError> {
        let task = &self.status.tasks[index];
        let job_name = task
            .job_name
            .clone()
            .unwrap_or_else(|| names::job_name(&self.name, index));
        let started = task.start_time.clone();
        let job = match self.ctx.job(&job_name) {
            Some(job) => job,
            None => {
                // Just created and not yet seen by the watch, or deleted behind our back.
                let waited = since(started.as_ref());
                if waited < MISSING_JOB_GRACE {
                    self.wake_within(MISSING_JOB_GRACE - waited);
                    return Ok(None);
                }
                let jobs: Api<Job> = Api::namespaced(
                    self.ctx.parts.client.clone(),
                    &self.ctx.parts.settings.job_namespace,
                );
                match jobs.get_opt(&job_name).await? {
                    Some(job) => Arc::new(job),
                    None => {
                        return Ok(Some((
                            TaskPhase::Failed,
                            Some(format!("the Job {job_name} was deleted before it finished")),
                            None,
                        )));
                    }
                }
            }
        };
        let pods = self.ctx.pods_of_job(&job_name);
        match job_state(&job) {
            JobState::Succeeded => {
                let logs = self.task_logs(&pods).await;
                Ok(Some((TaskPhase::Succeeded, None, Some(logs))))
            }
            JobState::Failed { reason, message } => {
                let logs = self.task_logs(&pods).await;
                let text = if message.is_empty() {
                    reason
                } else {
                    format!("{reason}: {message}")
                };
                Ok(Some((TaskPhase::Failed, Some(text), Some(logs))))
            }
            JobState::Running => {
                let Some(stuck) = stuck_pod(pods.iter().map(AsRef::as_ref)) else {
                    return Ok(None);
                };
                let waited = since(started.as_ref());
                let timeout = self.ctx.parts.options.never_started_timeout;
                if waited < timeout {
                    self.wake_within(timeout - waited);
                    return Ok(None);
                }
                let jobs: Api<Job> = Api::namespaced(
                    self.ctx.parts.client.clone(),
                    &self.ctx.parts.settings.job_namespace,
                );
                let background = DeleteParams::background();
                let deleted = jobs.delete(&job_name, &background);
                match self.ctx.fenced(deleted).await? {
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Err(error) => return Err(error.into()),
                }
                Ok(Some((
                    TaskPhase::Failed,
                    Some(format!(
                        "pod {} never started within {}s: {}: {}",
                        stuck.pod,
                        timeout.as_secs(),
                        stuck.reason,
                        stuck.message
                    )),
                    None,
                )))
            }
        }
    }

    async fn task_logs(&self, pods: &[Arc<Pod>]) -> String {
        let api: Api<Pod> = Api::namespaced(
            self.ctx.parts.client.clone(),
            &self.ctx.parts.settings.job_namespace,
        );
        let tasks = self.status.tasks.len().max(1);
        let budget = self.ctx.parts.options.log_excerpt_bytes / tasks;
        let pods: Vec<&Pod> = pods.iter().map(AsRef::as_ref).collect();
        logs::collect(&api, &pods, budget).await
    }

    /// One attempt at an outgoing event if it is due; records the result in status.
    async fn deliver(&mut self, kind: TaskEventKind) -> Result<(), ReconcileError> {
        let give_up_after = self.ctx.parts.options.delivery_give_up_after;
        let delivery = match kind {
            TaskEventKind::Started => self.status.started.clone(),
            TaskEventKind::Finished => {
                Some(self.status.finished.clone().unwrap_or_else(|| Delivery {
                    id: outgoing_event_id(&self.name, TaskEventKind::Finished),
                    ..Default::default()
                }))
            }
        };
        let Some(mut delivery) = delivery else {
            return Ok(());
        };
        if delivery.state != DeliveryState::Pending {
            return Ok(());
        }
        let wait = until(delivery.next_attempt.as_ref());
        if !wait.is_zero() {
            self.wake_within(wait);
            self.store_delivery(kind, delivery);
            return Ok(());
        }
        let first = delivery.first_attempt.get_or_insert_with(now_text).clone();
        let time = first.parse().unwrap_or_else(|_| Timestamp::now());
        let source = &self.ctx.parts.settings.event_source;
        let event = match kind {
            TaskEventKind::Started => report::started_event(self.run, source, time),
            TaskEventKind::Finished => {
                let outcome = self
                    .status
                    .outcome
                    .clone()
                    .unwrap_or_else(|| report::outcome_of_tasks(&self.status));
                report::finished_event(self.run, &self.status, &outcome, source, time)
            }
        };
        let Some(event) = event else {
            return Ok(());
        };
        delivery.attempts += 1;
        let kind_label = kind.as_str();
        match self.ctx.fenced(self.ctx.parts.sink.deliver(&event)).await? {
            Ok(()) => {
                delivery.state = DeliveryState::Delivered;
                delivery.delivered_at = Some(now_text());
                self.ctx.parts.metrics.delivery(kind_label, "delivered");
            }
            Err(error) => {
                delivery.last_error = Some(error.to_string());
                let retry_after = match &error {
                    DeliveryError::Transient { retry_after, .. } => Some(*retry_after),
                    DeliveryError::Rejected { .. } => None,
                };
                match retry_after {
                    Some(retry_after) if since(Some(&first)) < give_up_after => {
                        let delay = retry_delay(delivery.attempts, &delivery.id, retry_after);
                        let next = Timestamp::now()
                            .checked_add(jiff::SignedDuration::try_from(delay).unwrap_or_default())
                            .unwrap_or_else(|_| Timestamp::now());
                        delivery.next_attempt = Some(next.to_string());
                        self.wake_within(delay);
                        self.ctx.parts.metrics.delivery(kind_label, "retry");
                    }
                    _ => {
                        delivery.state = DeliveryState::GaveUp;
                        self.ctx.parts.metrics.delivery(kind_label, "gave_up");
                        tracing::warn!(run = %self.name, kind = kind_label, %error, "gave up delivering an event");
                    }
                }
            }
        }
        self.store_delivery(kind, delivery);
        Ok(())
    }

    fn store_delivery(&mut self, kind: TaskEventKind, delivery: Delivery) {
        match kind {
            TaskEventKind::Started => self.status.started = Some(delivery),
            TaskEventKind::Finished => self.status.finished = Some(delivery),
        }
    }

    fn update_conditions(&mut self) {
        let gave_up = [&self.status.started, &self.status.finished]
            .into_iter()
            .flatten()
            .find(|d| d.state == DeliveryState::GaveUp)
            .map(|d| d.last_error.clone().unwrap_or_default());
        if let Some(error) = gave_up {
            set_condition(
                &mut self.status,
                "EventsDelivered",
                "False",
                "GaveUp",
                &error,
            );
        } else if self
            .status
            .finished
            .as_ref()
            .is_some_and(|d| d.state == DeliveryState::Delivered)
        {
            set_condition(&mut self.status, "EventsDelivered", "True", "Delivered", "");
        }
        if self.status.phase.is_finished() {
            let reason = self.status.phase.as_str();
            let message = self
                .status
                .outcome
                .as_ref()
                .map(|o| o.message.lines().next().unwrap_or_default().to_string())
                .unwrap_or_default();
            set_condition(&mut self.status, "Finished", "True", reason, &message);
        }
    }
}

/// Sets a condition; its transition time changes only when its status does.
fn set_condition(status: &mut JobRunStatus, type_: &str, value: &str, reason: &str, message: &str) {
    match status.conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(condition) => {
            if condition.status != value {
                condition.last_transition_time = now_text();
            }
            condition.status = value.to_string();
            condition.reason = reason.to_string();
            condition.message = message.to_string();
        }
        None => status.conditions.push(Condition {
            type_: type_.to_string(),
            status: value.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            last_transition_time: now_text(),
        }),
    }
}
