//! The controller's decisions, as pure functions: from what a run records and what the cluster
//! shows, the next step to take ([`decide`]), and what each step's result changes in the run's
//! status (the `record_*` and [`initialise`] functions). No I/O here: `step.rs` carries the steps
//! out, one at a time, and asks again.
//!
//! The rule that keeps a restart safe is visible in [`decide`]: a step that depends on something
//! the run has not recorded yet is preceded by [`Step::Record`]. `.finished` is sent only once
//! the outcome it reports is recorded ([`Record::BeforeFinished`]), and nothing waits with an
//! unrecorded change ([`Record::BeforeWaiting`]). A Job is created before it is recorded: its
//! name is derived from the run and the task, so a restart adopts it instead of creating it again.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::group::Group;
use super::observe::Stuck;
use super::outputs::parse_outputs;
use super::report;
use crate::config::NotifyWhen;
use crate::config::graph;
use crate::config::{ConcurrencyPolicy, formats};
use crate::crd::{
    Condition, DeadLetter, Delivery, DeliveryState, JobRun, JobRunStatus, Notification,
    OutcomeStatus, RunOutcome, RunPhase, TaskPhase, TaskStatus,
};
use crate::event::{TaskEventKind, outgoing_event_id};
use crate::sink::{DeliveryError, RetryPolicy};
use crate::{labels, names};

/// The tunables decisions depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// How long a Job the controller created may be missing from its watch before it asks.
    pub missing_job_grace: Duration,
    /// How long a pod may fail to start (image pull, missing Secret, unschedulable).
    pub never_started_timeout: Duration,
    /// When an outgoing event is retried, and when it is given up.
    pub delivery: RetryPolicy,
    /// Whether a given-up event goes to a dead-letter sink.
    pub dead_letter: bool,
    /// When a notification is retried, and when it is given up.
    pub notification: RetryPolicy,
    /// How long a finished run is kept once its `.finished` is delivered; `None`: for good.
    pub retention: Option<Duration>,
}

/// What the cluster shows of the running task's Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobSeen {
    /// Not in the watch's cache: just created (the watch is behind), or gone.
    NotCached,
    /// The API server, asked, says it does not exist.
    Gone,
    Running {
        stuck: Option<Stuck>,
    },
    /// Not finished, and no pod of it exists: the Job controller could not make one (the
    /// namespace's Pod Security level, a quota, an admission webhook refused it), or has not
    /// yet (it is busy).
    NoPod {
        warning: NoPodWarning,
    },
    Succeeded {
        /// The task container's termination message, where a task writes its outputs; `None`
        /// while the watch shows no pod that succeeded.
        message: Option<String>,
        /// Whether the watch shows any pod of the Job (its logs, its outputs are read there).
        pods_seen: bool,
        /// No pod that succeeded is seen though the Job has been complete for longer than the
        /// pod watch can be behind: it was deleted (other pods of the Job, that failed, stay).
        succeeded_pod_gone: bool,
    },
    Failed {
        reason: String,
        message: String,
        pods_seen: bool,
        /// Not failed yet, but failing (`FailureTarget`): the Job controller stops its pods,
        /// whose logs are read meanwhile.
        stopping: bool,
        /// A pod of it that never started, still seen: why (its deadline, say, passed while
        /// its image could not be pulled).
        never_started: Option<Stuck>,
        /// How its pods ended, where they say more than the Job's reason
        /// ([`super::observe::failure_causes`]).
        causes: Option<String>,
    },
    /// Of a task that is over (cancelled, or failed: its Job deleted by a halt, or by the
    /// operator when its pod never started): a pod of it has not ended yet (SIGTERM and the
    /// grace period it gets; the kubelet removes it once its containers exit). Only a halt
    /// waits for it.
    Stopping,
}

/// The longest a halted run waits for its stopped tasks' pods to be gone before it ends (and
/// a run of its concurrency group takes its place): a pod's default grace period (30 s) and
/// the kubelet's time to notice. A pod on a node that is gone may stay for much longer.
pub const STOPPING_POD_WAIT: Duration = Duration::from_secs(45);

/// Whether a Job failing since `since` (its `FailureTarget`) has been failing for longer than a
/// pod takes to stop: its pods are then taken for gone (a pod on a node that is gone may stay
/// for ever, and the Job controller sets `Failed` only once they are).
pub fn failing_for_too_long(since: Option<&str>, now: Timestamp) -> bool {
    at_least_a_pod_s_stop_ago(since, now)
}

/// Whether a Job complete since `since` has been so for longer than a pod takes to stop: a pod
/// that succeeded and is not seen by then was deleted, not late in the pod watch.
pub fn complete_for_too_long(since: Option<&str>, now: Timestamp) -> bool {
    at_least_a_pod_s_stop_ago(since, now)
}

fn at_least_a_pod_s_stop_ago(since: Option<&str>, now: Timestamp) -> bool {
    parse(since).is_some_and(|since| {
        now.duration_since(since)
            .try_into()
            .is_ok_and(|ago: Duration| ago >= STOPPING_POD_WAIT)
    })
}

/// What the Job's Events say of why it made no pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoPodWarning {
    /// Not asked in this reconcile.
    NotAsked,
    /// Asked: no warning (the Job controller has not come to it yet).
    Nothing,
    /// Asked: the latest warning, `FailedCreate: Error creating: pods "…" is forbidden: …`.
    Said(String),
}

/// How often a Job past the never-started timeout that made no pod, and says nothing of why,
/// is asked again (no watch reads Events).
pub const NO_POD_RECHECK: Duration = Duration::from_secs(30);

/// Everything a decision is made from.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub run: &'a JobRun,
    /// The run's status as this reconcile has it: what was done so far.
    pub status: &'a JobRunStatus,
    /// The status the API server has (the last write).
    pub persisted: &'a JobRunStatus,
    /// What the cluster shows of each task's Job, by index: of a running task, of one that
    /// stopped (whether its pods still stop), and of a pending one (from a lookup or the watch:
    /// whether a restart lost the record of a Job made for it).
    pub jobs: &'a [JobSeen],
    /// Whether the run's files ConfigMap was made (or found) in this reconcile.
    pub files_made: bool,
    /// How the run stands in its concurrency group, if it has one.
    pub group: Option<&'a Group>,
    /// Tasks whose Job or files the API server refused for now in this reconcile, with when
    /// to try again: the run goes on with its other steps meanwhile.
    pub refused: &'a [(usize, Duration)],
    pub now: Timestamp,
    pub limits: &'a Limits,
}

/// Why the status is written now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// `.finished` reports the run's outcome: the outcome is recorded first, so a delivery
    /// repeated after a restart says the same.
    BeforeFinished,
    /// Nothing more happens until something changes: what was done is recorded first.
    BeforeWaiting,
    /// A run of a concurrency group leaves its queue: the other runs of the group count it
    /// as running before its first Job is made.
    LeavingQueue,
    /// A Job was made (or adopted): it is recorded before anything that may take long.
    JobsMade,
}

/// The next thing to do for a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// One delivery attempt of the run's `.started` or `.finished`.
    Send(TaskEventKind),
    /// One attempt of the run's notification `index`.
    Notify(usize),
    /// The queued run takes its place in its concurrency group and starts.
    Start,
    /// Write the status.
    Record(Record),
    /// Create (or adopt) the ConfigMap of the run's files, before task `index`'s Job: the first
    /// task with files.
    CreateFiles(usize),
    /// Create (or adopt, by its derived name) task `index`'s Job.
    CreateJob(usize),
    /// Record task `index`'s Job, which the watch or a lookup shows though the task has not
    /// started: made just before a restart that lost the record of it. Adopted as it was made,
    /// not rendered again (what rendered it then, an output of a task whose Job and record
    /// are gone since, may be lost).
    AdoptJob(usize),
    /// Ask the API server for task `index`'s Job, missing from the watch past the grace period.
    LookUpJob(usize),
    /// Ask the Events of task `index`'s Job, which made no pod within the never-started
    /// timeout, why.
    AskWhyNoPod(usize),
    /// Read the logs of task `index`, whose failing Job's pods are being stopped, before they
    /// are gone; its end is recorded once the Job has failed.
    ReadLogs(usize),
    /// Record how task `index` ended, with its pods' logs when `read_logs`, and its outputs.
    EndTask {
        index: usize,
        phase: TaskPhase,
        message: Option<String>,
        read_logs: bool,
        outputs: BTreeMap<String, String>,
    },
    /// Delete task `index`'s Job, whose pod never started (or was never made), and record the
    /// task's failure; when its Job made no pod, the message says why (the Job's events).
    StopJob { index: usize, message: String },
    /// The run halts: read task `index`'s logs, delete its Job, and record the task as `phase`
    /// (the run's end follows with [`Step::Halt`]).
    HaltTask {
        index: usize,
        phase: TaskPhase,
        message: String,
    },
    /// End the halted run: its tasks that never started are skipped, its outcome fixed.
    Halt(Halt),
    /// Nothing to do until a watch event, or until this long has passed.
    Wait(Option<Duration>),
}

impl Step {
    /// The step's name, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Send(_) => "send",
            Step::Notify(_) => "notify",
            Step::Start => "start",
            Step::Record(_) => "record",
            Step::CreateFiles(_) => "create_files",
            Step::CreateJob(_) => "create_job",
            Step::AdoptJob(_) => "adopt_job",
            Step::LookUpJob(_) => "look_up_job",
            Step::AskWhyNoPod(_) => "ask_why_no_pod",
            Step::ReadLogs(_) => "read_logs",
            Step::EndTask { .. } => "end_task",
            Step::StopJob { .. } => "stop_job",
            Step::HaltTask { .. } => "halt_task",
            Step::Halt(_) => "halt",
            Step::Wait(_) => "wait",
        }
    }
}

/// Why a run stops before its tasks are over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Halt {
    /// The `job-executor.dev/cancel` annotation, whose value says who cancelled it and why.
    Cancelled { by: String },
    /// The action's timeout passed.
    TimedOut { after: Duration },
    /// A newer run of the concurrency group (`cancel-in-progress`).
    Superseded { by: String, group: String },
    /// The concurrency group was full when the run arrived (`skip`).
    Skipped { group: String, running: Vec<String> },
    /// A cancel or a newer run that stopped a task and is gone since (the annotation removed,
    /// the newer run ended or deleted): `cause` is what the stopped task says.
    Continued { cause: String },
}

/// The most of a cancel annotation's value a message repeats.
const MOST_CANCEL_TEXT: usize = 200;

impl Halt {
    /// Whether the run must stop now: cancelled, displaced or skipped by its concurrency group,
    /// stopping already (a task stopped by a halt whose cause is gone since), or past its
    /// action's timeout (a timeout still ahead sets `wake`), in that order. A queued run's
    /// timeout starts when it does.
    pub fn of(
        run: &JobRun,
        status: &JobRunStatus,
        group: Option<&Group>,
        now: Timestamp,
        wake: &mut Wake,
    ) -> Option<Halt> {
        if let Some(by) = run
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(labels::CANCEL))
        {
            return Some(Halt::Cancelled {
                by: who_cancelled(by),
            });
        }
        let queued = status.phase == RunPhase::Queued;
        if let (Some(group), Some(concurrency)) = (group, &run.spec.action.concurrency) {
            // (Superseded stays first: what it says names the newest run.)
            if group.superseded(concurrency) {
                return Some(Halt::Superseded {
                    by: group.newer.last().cloned().unwrap_or_default(),
                    group: concurrency.group.clone(),
                });
            }
            if queued
                && concurrency.policy == ConcurrencyPolicy::Skip
                && !group.has_room(concurrency.limit)
            {
                return Some(Halt::Skipped {
                    group: concurrency.group.clone(),
                    running: group.running.clone(),
                });
            }
        }
        // A halt that stopped a task goes on to the run's end though its cause is gone: the
        // stopped task cannot run again, and the tasks after it wait for it for ever.
        if let Some(stopped) = status
            .tasks
            .iter()
            .find(|task| task.phase == TaskPhase::Cancelled)
        {
            return Some(Halt::Continued {
                cause: stopped
                    .message
                    .clone()
                    .unwrap_or_else(|| "cancelled".into()),
            });
        }
        if queued {
            return None;
        }
        let (after, taken) = timeout_and_taken(run, status, now)?;
        if taken >= after {
            return Some(Halt::TimedOut { after });
        }
        wake.within(after - taken);
        None
    }

    /// Whether a halt stopped a task of the run (a cancel, its timeout): such a run ends as the
    /// halt says once its tasks are over. (A run whose timeout passed while its tasks ended on
    /// their own, seen late, ends as they did.)
    fn stopped_a_task(run: &JobRun, status: &JobRunStatus) -> bool {
        let timed_out = run.spec.action.timeout_seconds.map(|seconds| {
            Halt::TimedOut {
                after: Duration::from_secs(seconds),
            }
            .stopped_task()
        });
        status.tasks.iter().any(|task| {
            task.phase == TaskPhase::Cancelled
                || timed_out.as_ref().is_some_and(|(phase, message)| {
                    task.phase == *phase && task.message.as_ref() == Some(message)
                })
        })
    }

    /// Why the run stops: `cancelled by …`, `the action's timeout of … passed`.
    fn cause(&self) -> String {
        match self {
            Halt::Cancelled { by } => format!("cancelled by {by}"),
            Halt::TimedOut { after } => format!(
                "the action's timeout of {} passed",
                formats::format_duration(*after)
            ),
            Halt::Superseded { by, group } => {
                format!("cancelled by the newer run {by} of the concurrency group {group:?}")
            }
            Halt::Skipped { group, .. } => {
                format!("skipped as {}", group_full(group, self.running()))
            }
            Halt::Continued { cause } => cause.clone(),
        }
    }

    /// The runs that held a full group.
    fn running(&self) -> &[String] {
        match self {
            Halt::Skipped { running, .. } => running,
            _ => &[],
        }
    }

    /// What a task whose Job was deleted for it says, and its phase.
    fn stopped_task(&self) -> (TaskPhase, String) {
        match self {
            Halt::Cancelled { .. }
            | Halt::Superseded { .. }
            | Halt::Skipped { .. }
            | Halt::Continued { .. } => (TaskPhase::Cancelled, self.cause()),
            Halt::TimedOut { .. } => (TaskPhase::Failed, format!("stopped: {}", self.cause())),
        }
    }

    /// What a task that never started says.
    fn skipped_task(&self) -> String {
        match self {
            Halt::Cancelled { .. } | Halt::Superseded { .. } | Halt::Continued { .. } => {
                format!("the run was {} before it started", self.cause())
            }
            Halt::TimedOut { .. } => format!("{} before it started", self.cause()),
            Halt::Skipped { group, running } => group_full(group, running),
        }
    }

    /// The first line of the run's outcome: the cause, capitalised.
    fn headline(&self) -> String {
        let cause = self.cause();
        let mut chars = cause.chars();
        chars
            .next()
            .map(|first| first.to_uppercase().chain(chars).collect())
            .unwrap_or_default()
    }

    fn run_phase(&self) -> RunPhase {
        match self {
            Halt::Cancelled { .. }
            | Halt::Superseded { .. }
            | Halt::Skipped { .. }
            | Halt::Continued { .. } => RunPhase::Cancelled,
            Halt::TimedOut { .. } => RunPhase::Failed,
        }
    }
}

/// `the concurrency group "deploy/carts" was full (running: deploy-1f3a…)`.
fn group_full(group: &str, running: &[String]) -> String {
    if running.is_empty() {
        format!("the concurrency group {group:?} was full")
    } else {
        format!(
            "the concurrency group {group:?} was full (running: {})",
            running.join(", ")
        )
    }
}

/// What the failure of a task whose pod never started says, after the pod's name.
pub const NEVER_STARTED: &str = " never started within ";

/// What the failure of a task whose Job made no pod says, after the Job's name.
pub const MADE_NO_POD_WITHIN: &str = " made no pod within ";

/// What the failure of a task whose Job failed (its deadline) while its pod never started
/// says, after the pod's name.
pub const POD_NEVER_STARTED: &str = " never started: ";

/// What the failure of a task whose Job failed (its deadline) without a pod says.
pub const JOB_MADE_NO_POD: &str = "; its Job made no pod: ";

/// The failure message of a task whose Job failed (its deadline passed) without a pod, with
/// why it made none (`why`, from the Job's Events) after the Job's own reason.
pub fn explain_no_pod(message: String, why: Option<&str>) -> String {
    match why {
        None => message,
        Some(why) => format!("{message}{JOB_MADE_NO_POD}{why}"),
    }
}

/// How long a queued run waits before it looks at its group again, should no change of the
/// group wake it first.
pub const QUEUE_RECHECK: Duration = Duration::from_secs(60);

/// Who cancelled a run, as its annotation says: the first line, bounded.
fn who_cancelled(value: &str) -> String {
    let line = value.lines().next().unwrap_or_default().trim();
    if line.is_empty() {
        return format!(
            "someone who did not say who (the {} annotation is empty)",
            labels::CANCEL
        );
    }
    match line.char_indices().nth(MOST_CANCEL_TEXT) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_string(),
    }
}

/// The run's name (the JobRun's).
pub fn run_name(run: &JobRun) -> &str {
    run.metadata.name.as_deref().unwrap_or_default()
}

/// The run's uid (the JobRun's, given by the API server).
pub fn run_uid(run: &JobRun) -> &str {
    run.metadata.uid.as_deref().unwrap_or_default()
}

/// The next step for the run.
pub fn decide(facts: &Facts<'_>) -> Step {
    let Facts {
        run,
        status,
        persisted,
        now,
        ..
    } = *facts;
    let mut wake = Wake::default();

    // `.started` first; a sink that is down holds neither the tasks nor anything else up.
    if let Some(due) = pending(&status.started) {
        match left_until_attempt(due, now) {
            None => {
                return jobs_recorded_first(facts).unwrap_or(Step::Send(TaskEventKind::Started));
            }
            Some(left) => wake.within(left),
        }
    }

    if !status.phase.is_finished() {
        let step = match Halt::of(run, status, facts.group, now, &mut wake) {
            // A halt that waits (for pods) records what it did first, as any wait does: a
            // task it stopped is not stopped again, nor its logs read again, by the next
            // reconcile.
            Some(halt) => match halt_step(facts, halt) {
                Step::Wait(delay) => {
                    if let Some(delay) = delay {
                        wake.within(delay);
                    }
                    None
                }
                step => Some(step),
            },
            None if status.phase == RunPhase::Queued => queued_step(facts, &mut wake),
            None if started_unrecorded(run, persisted) => Some(Step::Record(Record::LeavingQueue)),
            None => task_step(facts, &mut wake),
        };
        if let Some(step) = step {
            return step;
        }
    } else if let Some(due) = pending(&status.finished) {
        if persisted.outcome.is_none() {
            return Step::Record(Record::BeforeFinished);
        }
        // `.finished` follows `.started`: while `.started` is retried at the sink,
        // `.finished` waits (not while it is retried at the dead-letter sink: the sink is
        // done with it).
        let started_at_sink = status
            .started
            .as_deref()
            .is_some_and(|started| started.state == DeliveryState::Pending);
        if !started_at_sink {
            match left_until_attempt(due, now) {
                None => return Step::Send(TaskEventKind::Finished),
                Some(left) => wake.within(left),
            }
        }
    }

    // Notifications go beside everything else: a target that is down holds nothing up. What
    // one says of the run's end is recorded first, as for `.finished`, and waits while the
    // target's own "started" is retried (a webhook got `.finished` before `.started`).
    for (index, notification) in status.notifications.iter().enumerate() {
        let Some(due) = notification.due() else {
            continue;
        };
        if notification.when != NotifyWhen::Started {
            if persisted.outcome.is_none() {
                return Step::Record(Record::BeforeFinished);
            }
            let started_pending = status.notifications.iter().any(|other| {
                other.when == NotifyWhen::Started
                    && other.kind == notification.kind
                    && other.target == notification.target
                    && other.state == DeliveryState::Pending
            });
            if started_pending {
                continue;
            }
        }
        match left_until_attempt(due, now) {
            None => return jobs_recorded_first(facts).unwrap_or(Step::Notify(index)),
            Some(left) => wake.within(left),
        }
    }

    if status != persisted {
        return Step::Record(Record::BeforeWaiting);
    }
    if status.is_done() {
        // A done run leaves the controller's watch with the write that records it done; the
        // retained runs' watch deletes it when its retention is over (`retained`).
        return Step::Wait(None);
    }
    Step::Wait(wake.0)
}

/// A Job made and not recorded yet is recorded (adopted first, when a restart lost its record)
/// before a delivery or a notification, which may each take their whole timeout: a restart
/// meanwhile would not know the Job was made, and once it is gone (its TTL) would make it again,
/// running its task twice. Jobs made one after another (tasks that start together) are still
/// recorded in one write.
fn jobs_recorded_first(facts: &Facts<'_>) -> Option<Step> {
    let Facts {
        run,
        status,
        persisted,
        ..
    } = *facts;
    if status.phase != RunPhase::Running {
        return None;
    }
    let needs = graph::dependencies(&run.spec.action.tasks);
    let made_before = status.tasks.iter().enumerate().position(|(index, task)| {
        task.phase == TaskPhase::Pending && is_ready(status, needs.get(index)) && made(facts, index)
    });
    if let Some(index) = made_before {
        return Some(Step::AdoptJob(index));
    }
    let unrecorded = status.tasks.iter().enumerate().any(|(index, task)| {
        task.job_name.is_some()
            && persisted.tasks.get(index).and_then(|t| t.job_name.as_ref())
                != task.job_name.as_ref()
    });
    unrecorded.then_some(Step::Record(Record::JobsMade))
}

/// Whether task `index`'s Job is there (the watch or a lookup shows it).
fn made(facts: &Facts<'_>, index: usize) -> bool {
    !matches!(
        facts.jobs.get(index),
        None | Some(JobSeen::NotCached | JobSeen::Gone)
    )
}

/// A queued run starts when its group has a place for it (a run without a group view has
/// nothing to wait for), and otherwise waits to be woken by a change of its group.
fn queued_step(facts: &Facts<'_>, wake: &mut Wake) -> Option<Step> {
    let admitted = match (facts.group, &facts.run.spec.action.concurrency) {
        (Some(group), Some(concurrency)) => group.admits(concurrency),
        _ => true,
    };
    if admitted {
        return Some(Step::Start);
    }
    wake.within(QUEUE_RECHECK);
    None
}

/// Whether a run of a concurrency group started without the API server knowing yet.
fn started_unrecorded(run: &JobRun, persisted: &JobRunStatus) -> bool {
    run.spec.action.concurrency.is_some()
        && matches!(persisted.phase, RunPhase::Pending | RunPhase::Queued)
}

/// The next step of the tasks: a running task's end (or its stop), then a task whose needs all
/// succeeded starting, each in the order of their indexes; `None` while they wait (with `wake`
/// set when a deadline is ahead).
///
/// The running tasks come first: a start that fails and is retried (the git host or an
/// admission webhook down) ends the reconcile, and the other tasks' ends are recorded before it
/// (else a task that ended would wait behind it, its Job perhaps removed by its TTL meanwhile,
/// and be failed as gone).
fn task_step(facts: &Facts<'_>, wake: &mut Wake) -> Option<Step> {
    let Facts { run, status, .. } = *facts;
    let needs = graph::dependencies(&run.spec.action.tasks);
    let mut start = None;
    for (index, task) in status.tasks.iter().enumerate() {
        match task.phase {
            TaskPhase::Running => {
                if let Some(step) = running_step(facts, index, task, wake) {
                    return Some(step);
                }
            }
            TaskPhase::Pending if is_ready(status, needs.get(index)) => {
                if let Some((_, again)) = facts.refused.iter().find(|(i, _)| *i == index) {
                    wake.within(*again);
                } else if start.is_none() {
                    start = Some(if made(facts, index) {
                        Step::AdoptJob(index)
                    } else if stages_files(run, index)
                        && !facts.files_made
                        && no_files_yet(run, status)
                    {
                        Step::CreateFiles(index)
                    } else {
                        Step::CreateJob(index)
                    });
                }
            }
            TaskPhase::Pending
            | TaskPhase::Succeeded
            | TaskPhase::Failed
            | TaskPhase::Skipped
            | TaskPhase::Cancelled => {}
        }
    }
    start
}

/// The next step of a run that halts: first the running tasks that ended on their own are
/// recorded as they ended (when that ends every task, the run ends as they say); then the
/// other running tasks' Jobs are deleted; then the run ends, skipping what never started.
///
/// A task that could have started has its Job deleted too, by its derived name: its Job may
/// have been created just before a restart that lost the record of it.
fn halt_step(facts: &Facts<'_>, halt: Halt) -> Step {
    let tasks = &facts.status.tasks;
    // A queued run made no Job: its start is recorded before its first.
    if facts.status.phase == RunPhase::Queued {
        return Step::Halt(halt);
    }
    let running = || {
        tasks
            .iter()
            .enumerate()
            .filter(|(_, task)| task.phase == TaskPhase::Running)
    };
    // A Job that ended is recorded as it ended, once its pods (its logs, its outputs) are seen:
    // the halt waits for them as the task's own end would (below), rather than take an ended
    // task for one it stopped; the other running tasks are stopped meanwhile.
    let mut wake = Wake::default();
    let mut waiting = Vec::new();
    for (index, task) in running() {
        let seen = facts.jobs.get(index).unwrap_or(&JobSeen::NotCached);
        // A Job missing from the watch is asked for. Of one gone, a task that needs it may have
        // a Job (made just before a restart that lost the record of both, this one removed by
        // its TTL since), which says this task succeeded: it ends so, and the halt then deletes
        // that Job as its task's. Without such a witness the task is stopped as the others.
        match seen {
            JobSeen::NotCached => return Step::LookUpJob(index),
            JobSeen::Gone => match next_job(facts, index) {
                NextJob::Unknown(next) => return Step::LookUpJob(next),
                NextJob::Made(_) => {
                    let mut its_wake = Wake::default();
                    if let Some(step) = running_step(facts, index, task, &mut its_wake) {
                        return step;
                    }
                }
                // Nothing says how it ended: stopped by the halt, as the others.
                NextJob::None => {}
            },
            _ => {}
        }
        // A Job that ended is recorded as `running_step` records it; while that waits (for the
        // pods to show: the logs, the outputs in the succeeded pod's status; for a failing
        // Job's pods to go), so does the halt, for as long and no longer: each of those waits
        // is bounded, ending the task as it ended or as failed. (Stopped instead, a task that
        // completed with outputs would have been recorded cancelled, its outputs lost.)
        if matches!(seen, JobSeen::Succeeded { .. } | JobSeen::Failed { .. }) {
            let mut its_wake = Wake::default();
            if let Some(step) = running_step(facts, index, task, &mut its_wake) {
                return step;
            }
            if let Some(delay) = its_wake.0 {
                wake.within(delay);
            }
            waiting.push(index);
        }
    }
    if let Some((index, _)) = running().find(|(index, _)| !waiting.contains(index)) {
        let (phase, message) = halt.stopped_task();
        return Step::HaltTask {
            index,
            phase,
            message,
        };
    }
    if !waiting.is_empty() {
        return Step::Wait(wake.0);
    }
    // The run ends, and a run of its group takes its place, once the pods of the tasks it
    // stopped are gone: a pod goes on running while it stops (`limit` means runs, not Jobs).
    for (index, task) in tasks.iter().enumerate() {
        let stopped = matches!(task.phase, TaskPhase::Cancelled | TaskPhase::Failed);
        if stopped && facts.jobs.get(index) == Some(&JobSeen::Stopping) {
            let waited = since(task.completion_time.as_deref(), facts.now);
            if waited < STOPPING_POD_WAIT {
                wake.within(STOPPING_POD_WAIT - waited);
            }
        }
    }
    if wake.0.is_some() {
        return Step::Wait(wake.0);
    }
    let needs = graph::dependencies(&facts.run.spec.action.tasks);
    let ready = tasks.iter().enumerate().find(|(index, task)| {
        task.phase == TaskPhase::Pending && is_ready(facts.status, needs.get(*index))
    });
    if let Some((index, _)) = ready {
        // Its Job may have been made before a restart lost the record: adopted, the task is
        // halted as a running one is (its pods waited for, an end it reached on its own kept
        // with its outputs), not said never to have started.
        let made = !matches!(
            facts.jobs.get(index),
            None | Some(JobSeen::NotCached | JobSeen::Gone)
        );
        if made {
            return Step::AdoptJob(index);
        }
        return Step::HaltTask {
            index,
            phase: TaskPhase::Skipped,
            message: halt.skipped_task(),
        };
    }
    Step::Halt(halt)
}

/// Whether every task a task needs has succeeded.
fn is_ready(status: &JobRunStatus, needs: Option<&Vec<usize>>) -> bool {
    needs.into_iter().flatten().all(|&needed| {
        status
            .tasks
            .get(needed)
            .is_some_and(|t| t.phase == TaskPhase::Succeeded)
    })
}

/// Whether task `index` stages files (from the run's ConfigMap).
fn stages_files(run: &JobRun, index: usize) -> bool {
    run.spec
        .action
        .files
        .get(index)
        .is_some_and(|f| !f.is_empty())
}

/// Whether no task that stages files has had a Job: the run's ConfigMap is made before the
/// first. A task that failed before its Job (its files could not be made, or its Job was
/// refused) leaves them to be made, or found made, for the next: else that one's Job would
/// mount a ConfigMap that may not be there, and its pod would never start.
fn no_files_yet(run: &JobRun, status: &JobRunStatus) -> bool {
    status
        .tasks
        .iter()
        .enumerate()
        .all(|(index, task)| !stages_files(run, index) || task.job_name.is_none())
}

/// Whether a task that needs task `index` and has not started has a Job nonetheless.
enum NextJob {
    /// One has: the operator made it, which it does only once every task it needs succeeded.
    Made(usize),
    /// This one's Job is to be looked up first.
    Unknown(usize),
    None,
}

/// Of a running task whose Job is gone: whether a task that needs it has a Job.
fn next_job(facts: &Facts<'_>, index: usize) -> NextJob {
    let needs = graph::dependencies(&facts.run.spec.action.tasks);
    let pending = facts
        .status
        .tasks
        .iter()
        .enumerate()
        .filter(|(next, task)| {
            task.phase == TaskPhase::Pending && needs.get(*next).is_some_and(|n| n.contains(&index))
        });
    let mut unknown = None;
    for (next, _) in pending {
        match facts.jobs.get(next).unwrap_or(&JobSeen::NotCached) {
            JobSeen::NotCached => unknown = unknown.or(Some(next)),
            JobSeen::Gone => {}
            _ => return NextJob::Made(next),
        }
    }
    unknown.map_or(NextJob::None, NextJob::Unknown)
}

/// The end of task `index`, whose Job succeeded but whose outputs cannot be read (`why`): failed,
/// unless a task that needs it has a Job. That Job was made with the outputs, read before a
/// restart that lost the record of both (its pod deleted since): the task succeeded, its outputs
/// not recorded, and the run goes on with the Job it made rather than leave it unwatched.
fn outputs_lost(facts: &Facts<'_>, index: usize, why: String, read_logs: bool) -> Step {
    let (phase, message) = match next_job(facts, index) {
        NextJob::Unknown(next) => return Step::LookUpJob(next),
        NextJob::Made(next) => (
            TaskPhase::Succeeded,
            format!(
                "its outputs cannot be read: {why}; it succeeded, as the Job of task {}, made \
                 only once it had, with its outputs, shows",
                task_name(facts.run, next)
            ),
        ),
        NextJob::None => (
            TaskPhase::Failed,
            format!("its outputs cannot be read: {why}"),
        ),
    };
    Step::EndTask {
        index,
        phase,
        message: Some(message),
        read_logs,
        outputs: BTreeMap::new(),
    }
}

fn task_name(run: &JobRun, index: usize) -> String {
    run.spec
        .action
        .tasks
        .get(index)
        .map_or_else(|| format!("task-{index}"), |task| task.display_name(index))
}

/// The step of running task `index`, or `None` while it runs.
fn running_step(
    facts: &Facts<'_>,
    index: usize,
    task: &TaskStatus,
    wake: &mut Wake,
) -> Option<Step> {
    let Facts {
        run,
        status,
        now,
        limits,
        ..
    } = *facts;
    let waited = since(task.start_time.as_deref(), now);
    match facts.jobs.get(index).unwrap_or(&JobSeen::NotCached) {
        JobSeen::NotCached if waited < limits.missing_job_grace => {
            wake.within(limits.missing_job_grace - waited);
            None
        }
        JobSeen::NotCached => Some(Step::LookUpJob(index)),
        JobSeen::Gone => Some(match next_job(facts, index) {
            NextJob::Unknown(next) => Step::LookUpJob(next),
            // A task's end and the next task's Job are recorded in one write, after the Job is
            // made (unless the create fails: the end is written alone then): a restart in
            // between, and a Job removed by its TTL before the operator was back, leave the
            // next Job as the one witness that this task succeeded.
            NextJob::Made(next) => Step::EndTask {
                index,
                phase: TaskPhase::Succeeded,
                message: Some(format!(
                    "the Job {} is gone and its end was not seen (removed by its \
                     ttlSecondsAfterFinished while no operator watched); it succeeded, as the \
                     Job of task {}, made only once it had, shows; its logs and outputs went \
                     with it",
                    job_name(run, status, index),
                    task_name(run, next)
                )),
                read_logs: false,
                outputs: BTreeMap::new(),
            },
            NextJob::None => Step::EndTask {
                index,
                phase: TaskPhase::Failed,
                message: Some(format!(
                    "the Job {} is gone and its end was not seen (deleted, or removed by its \
                     ttlSecondsAfterFinished while no operator watched)",
                    job_name(run, status, index)
                )),
                read_logs: false,
                outputs: BTreeMap::new(),
            },
        }),
        // Said only of a task that is over.
        JobSeen::Running { stuck: None } | JobSeen::Stopping => None,
        JobSeen::Running { stuck: Some(stuck) } => {
            // Counted from the later of the task's start and the pod's making.
            let waited = stuck
                .created
                .and_then(|created| now.duration_since(created).try_into().ok())
                .map_or(waited, |pod_age: Duration| waited.min(pod_age));
            if waited < limits.never_started_timeout {
                wake.within(limits.never_started_timeout - waited);
                return None;
            }
            Some(Step::StopJob {
                index,
                message: format!(
                    "pod {}{NEVER_STARTED}{}s: {}: {}",
                    stuck.pod,
                    limits.never_started_timeout.as_secs(),
                    stuck.reason,
                    stuck.message
                ),
            })
        }
        JobSeen::NoPod { .. } if waited < limits.never_started_timeout => {
            wake.within(limits.never_started_timeout - waited);
            None
        }
        // Only a Job that says why it makes no pod is stopped: a busy Job controller (it makes
        // pods at its own rate) is waited for, as the Job's own deadline is.
        JobSeen::NoPod { warning } => match warning {
            NoPodWarning::NotAsked => Some(Step::AskWhyNoPod(index)),
            NoPodWarning::Nothing => {
                wake.within(NO_POD_RECHECK);
                None
            }
            NoPodWarning::Said(why) => Some(Step::StopJob {
                index,
                message: format!(
                    "the Job {}{MADE_NO_POD_WITHIN}{}s: {why}",
                    job_name(run, status, index),
                    limits.never_started_timeout.as_secs()
                ),
            }),
        },
        // A Job that failed while its pod never started (its deadline passed first, at the
        // same default as the never-started timeout) says why the pod did not start: the pod
        // runs nothing, so the end is recorded now, while it is still seen.
        JobSeen::Failed {
            reason,
            message,
            never_started: Some(stuck),
            ..
        } => Some(Step::EndTask {
            index,
            phase: TaskPhase::Failed,
            message: Some(format!(
                "{}; pod {}{POD_NEVER_STARTED}{}: {}",
                if message.is_empty() {
                    reason.clone()
                } else {
                    format!("{reason}: {message}")
                },
                stuck.pod,
                stuck.reason,
                stuck.message
            )),
            read_logs: false,
            outputs: BTreeMap::new(),
        }),
        // A failing Job's pods are being stopped: their logs are read now, while they are
        // there; the task's end is recorded once the Job has failed (its pods gone, so a run of
        // its concurrency group never starts beside them), woken by the Job's watch.
        JobSeen::Failed {
            stopping: true,
            pods_seen,
            ..
        } => {
            if *pods_seen && task.logs.is_none() {
                return Some(Step::ReadLogs(index));
            }
            // Looked at again should the pods never go (`failing_for_too_long`).
            wake.within(STOPPING_POD_WAIT);
            None
        }
        // The pod watch is behind the Job watch (a short task under load), or the pods were
        // deleted: the logs and outputs are read from the pods, so they are given the grace a
        // Job missing from its watch gets (counted from the task's start: a pod made long ago
        // is in the watch unless it is gone). A failed task whose logs were read while its
        // pods stopped needs them no more.
        JobSeen::Succeeded {
            pods_seen: false, ..
        }
        | JobSeen::Failed {
            pods_seen: false, ..
        } if waited < limits.missing_job_grace && task.logs.is_none() => {
            wake.within(limits.missing_job_grace - waited);
            None
        }
        JobSeen::Succeeded {
            message,
            pods_seen,
            succeeded_pod_gone,
        } => {
            let declared = run
                .spec
                .action
                .tasks
                .get(index)
                .map(|t| t.outputs.as_slice())
                .unwrap_or_default();
            if !declared.is_empty() && !pods_seen {
                return Some(outputs_lost(
                    facts,
                    index,
                    format!("no pod of the Job {} is left", job_name(run, status, index)),
                    false,
                ));
            }
            // Its outputs are in the pod's status: wait for the watch to show it, unless that pod
            // is gone (then the Job's TTL would end the wait, the task failed as gone).
            if !declared.is_empty() && message.is_none() {
                if *succeeded_pod_gone {
                    return Some(outputs_lost(
                        facts,
                        index,
                        format!(
                            "the pod of the Job {} that succeeded is gone (deleted; only pods of \
                             it that failed are left)",
                            job_name(run, status, index)
                        ),
                        true,
                    ));
                }
                wake.within(STOPPING_POD_WAIT);
                return None;
            }
            let message = message.as_deref().unwrap_or_default();
            Some(match parse_outputs(message, declared) {
                Ok(outputs) => Step::EndTask {
                    index,
                    phase: TaskPhase::Succeeded,
                    message: None,
                    read_logs: true,
                    outputs,
                },
                Err(error) => Step::EndTask {
                    index,
                    phase: TaskPhase::Failed,
                    message: Some(format!("its outputs cannot be read: {error}")),
                    read_logs: true,
                    outputs: BTreeMap::new(),
                },
            })
        }
        JobSeen::Failed {
            reason,
            message,
            causes,
            ..
        } => Some(Step::EndTask {
            index,
            phase: TaskPhase::Failed,
            message: Some({
                let job = if message.is_empty() {
                    reason.clone()
                } else {
                    format!("{reason}: {message}")
                };
                match causes {
                    Some(causes) => format!("{job} ({causes})"),
                    None => job,
                }
            }),
            // Not again when they were read while its pods stopped: they are gone now.
            read_logs: task.logs.is_none(),
            outputs: BTreeMap::new(),
        }),
    }
}

/// The earliest of the deadlines a waiting run has.
#[derive(Debug, Default)]
pub struct Wake(Option<Duration>);

impl Wake {
    fn within(&mut self, delay: Duration) {
        self.0 = Some(self.0.map_or(delay, |w| w.min(delay)));
    }
}

fn pending(delivery: &Option<Box<Delivery>>) -> Option<Option<&str>> {
    delivery.as_deref().and_then(Delivery::due)
}

/// `None` when the next attempt (`next_attempt`, as recorded) is due, or how long until it is.
fn left_until_attempt(next_attempt: Option<&str>, now: Timestamp) -> Option<Duration> {
    let left = until(next_attempt, now);
    (!left.is_zero()).then_some(left)
}

/// The name of task `index`'s Job: as recorded, or as derived.
pub fn job_name(run: &JobRun, status: &JobRunStatus, index: usize) -> String {
    status
        .tasks
        .get(index)
        .and_then(|t| t.job_name.clone())
        .unwrap_or_else(|| names::job_name(run_name(run), index))
}

fn parse(text: Option<&str>) -> Option<Timestamp> {
    text.and_then(|t| t.parse().ok())
}

/// How long ago `text` was (zero when unknown or ahead).
fn since(text: Option<&str>, now: Timestamp) -> Duration {
    parse(text)
        .and_then(|t| now.duration_since(t).try_into().ok())
        .unwrap_or_default()
}

/// How long task `index` has been ready to start: since the last of the tasks it needs ended,
/// or since the run started for a task that needs none.
pub fn ready_for(run: &JobRun, status: &JobRunStatus, index: usize, now: Timestamp) -> Duration {
    let needs = graph::dependencies(&run.spec.action.tasks);
    let ended = needs
        .get(index)
        .into_iter()
        .flatten()
        .filter_map(|&needed| status.tasks.get(needed)?.completion_time.as_deref())
        .filter_map(|text| parse(Some(text)))
        .max();
    match ended {
        Some(ended) => now.duration_since(ended).try_into().unwrap_or_default(),
        // Runs started by an older version have no `startedAt`: their creation counts.
        None => since(
            status.started_at.as_deref().or(run
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .as_deref()),
            now,
        ),
    }
}

/// How long until `text` (zero when unknown or past).
fn until(text: Option<&str>, now: Timestamp) -> Duration {
    parse(text)
        .and_then(|t| t.duration_since(now).try_into().ok())
        .unwrap_or_default()
}

/// When a done run's retention is over, `None` when it is kept for good: retention off, its
/// `.finished` given up (the record of what could not be delivered stays until someone looks),
/// or no time to count from.
pub fn retained_until(
    created: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    finished: Option<&Delivery>,
    finished_at: Option<&str>,
    limits: &Limits,
) -> Option<Timestamp> {
    let retention = limits.retention?;
    // A `.finished` given up is kept on record, unless the dead-letter sink has it.
    if finished.is_some_and(|d| !d.reported()) {
        return None;
    }
    // Runs finished by an older version have no `finishedAt`: their creation counts.
    let finished = match finished_at {
        Some(at) => at.parse().ok()?,
        None => created?.0,
    };
    finished
        .checked_add(SignedDuration::try_from(retention).ok()?)
        .ok()
}

/// The status a run starts from: a record per task, running from the first, the `.started`
/// to send, and the outcome of a run that has nothing to run (a failure found when the event
/// was accepted, or no tasks).
pub fn initialise(run: &JobRun, status: &mut JobRunStatus, now: Timestamp) {
    let tasks = &run.spec.action.tasks;
    if status.tasks.len() != tasks.len() {
        status.tasks = tasks
            .iter()
            .enumerate()
            .map(|(index, task)| TaskStatus {
                name: task.display_name(index),
                ..Default::default()
            })
            .collect();
    }
    if status.phase == RunPhase::Pending {
        let waits = run.spec.action.concurrency.is_some()
            && run.spec.failure.is_none()
            && !tasks.is_empty();
        if waits {
            status.phase = RunPhase::Queued;
        } else {
            record_start(run, status, now);
        }
    }
    if run.sends_events() && status.started.is_none() {
        status.started = Some(Box::new(Delivery {
            id: outgoing_event_id(run_uid(run), run_name(run), TaskEventKind::Started),
            ..Default::default()
        }));
    }
    if status.outcome.is_none() {
        if let Some(failure) = &run.spec.failure {
            finish(run, status, OutcomeStatus::Errored, failure.clone(), now);
        } else if tasks.is_empty() {
            let outcome = report::outcome_of_tasks(status);
            finish(run, status, outcome.status, outcome.message, now);
        }
    }
    // Runs finished by an older version fixed their outcome without the `.finished` delivery;
    // those versions derived an event's id from the run's name alone (the uid came later), so
    // the `.finished` it may have sent before it stopped is sent again under its id.
    if run.finished_unrecorded(status) {
        status.finished = Some(Box::new(Delivery {
            id: outgoing_event_id("", run_name(run), TaskEventKind::Finished),
            ..Default::default()
        }));
    }
}

/// The run starts: from now on its tasks run, and its timeout counts.
pub fn record_start(run: &JobRun, status: &mut JobRunStatus, now: Timestamp) {
    status.phase = RunPhase::Running;
    status.current_task = (!run.spec.action.tasks.is_empty()).then_some(0);
    status.started_at = Some(now.to_string());
    expect_notifications(run, status, NotifyWhen::Started);
}

/// The run's notifications that are due at `when`, once.
fn expect_notifications(run: &JobRun, status: &mut JobRunStatus, when: NotifyWhen) {
    for rule in &run.spec.action.notify {
        let known = status
            .notifications
            .iter()
            .any(|n| n.kind == rule.kind && n.target == rule.target && n.when == when);
        if rule.when.contains(&when) && !known {
            status.notifications.push(Notification::new(rule, when));
        }
    }
}

/// Fixes the run's outcome, and the `.finished` that will report it.
fn finish(
    run: &JobRun,
    status: &mut JobRunStatus,
    outcome: OutcomeStatus,
    message: String,
    now: Timestamp,
) {
    status.phase = match outcome {
        OutcomeStatus::Succeeded => RunPhase::Succeeded,
        OutcomeStatus::Errored => RunPhase::Failed,
    };
    status.outcome = Some(RunOutcome {
        status: outcome,
        message,
    });
    status.finished_at = Some(now.to_string());
    expect_finished(run, status);
    let when = match outcome {
        OutcomeStatus::Succeeded => NotifyWhen::Succeeded,
        OutcomeStatus::Errored => NotifyWhen::Failed,
    };
    expect_notifications(run, status, when);
}

/// The `.finished` to send, recorded with the outcome: a run is not done until it is sent.
fn expect_finished(run: &JobRun, status: &mut JobRunStatus) {
    if run.sends_events() && status.finished.is_none() {
        status.finished = Some(Box::new(Delivery {
            id: outgoing_event_id(run_uid(run), run_name(run), TaskEventKind::Finished),
            ..Default::default()
        }));
    }
}

/// Records that task `index`'s Job exists (created or adopted); it is the current task.
pub fn record_job(status: &mut JobRunStatus, index: usize, job_name: String, now: Timestamp) {
    if let Some(task) = status.tasks.get_mut(index) {
        task.phase = TaskPhase::Running;
        task.job_name = Some(job_name);
        task.start_time = Some(now.to_string());
        // What said why it had not started yet.
        task.message = None;
        status.current_task = Some(index as u32);
    }
}

/// Records the end of task `index`. A task that did not succeed skips every task that needs it
/// (and what needs those); once no task runs or can start, the run's outcome is fixed.
pub fn record_task_end(
    run: &JobRun,
    status: &mut JobRunStatus,
    index: usize,
    phase: TaskPhase,
    message: Option<String>,
    logs: Option<String>,
    now: Timestamp,
) {
    if !record_stopped(status, index, phase, message, logs, now) {
        return;
    }
    if phase != TaskPhase::Succeeded {
        skip_dependents(run, status);
    }
    let over = |t: &TaskStatus| !matches!(t.phase, TaskPhase::Pending | TaskPhase::Running);
    // A run a halt stopped a task of (a cancel, its timeout) ends as the halt says, once its
    // last task is over: the halt's step records it, not the task that happened to end last.
    if status.tasks.iter().all(over) && !Halt::stopped_a_task(run, status) {
        let outcome = report::outcome_of_tasks(status);
        finish(run, status, outcome.status, outcome.message, now);
    }
}

/// The action's timeout and how long the run has taken, when the action has one. Runs started
/// by an older version have no `startedAt`: their creation counts.
fn timeout_and_taken(
    run: &JobRun,
    status: &JobRunStatus,
    now: Timestamp,
) -> Option<(Duration, Duration)> {
    let after = Duration::from_secs(run.spec.action.timeout_seconds?);
    let started = status.started_at.clone().or_else(|| {
        run.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
    });
    Some((after, since(started.as_deref(), now)))
}

/// Records what task `index` published.
pub fn record_outputs(status: &mut JobRunStatus, index: usize, outputs: BTreeMap<String, String>) {
    if let Some(task) = status.tasks.get_mut(index) {
        task.outputs = outputs;
    }
}

/// Records how a halt ended task `index`; the tasks that need a task it skipped are skipped
/// with it. (Recorded part of the way, a halt whose cause went before it was taken up again
/// left the run to go on, and a task needing a skipped one waited for it for ever.)
pub fn record_halted_task(
    run: &JobRun,
    status: &mut JobRunStatus,
    index: usize,
    phase: TaskPhase,
    message: Option<String>,
    logs: Option<String>,
    now: Timestamp,
) {
    let pending: Vec<bool> = (status.tasks.iter())
        .map(|task| task.phase == TaskPhase::Pending)
        .collect();
    let said = message.clone();
    if record_stopped(status, index, phase, message, logs, now) && phase == TaskPhase::Skipped {
        skip_dependents(run, status);
        // They say why the halt skipped them, as the halt's end says it of the rest.
        for (task, was_pending) in status.tasks.iter_mut().zip(pending) {
            if was_pending && task.phase == TaskPhase::Skipped {
                task.message.clone_from(&said);
            }
        }
    }
}

/// Records how task `index` ended, and nothing else: the run's halt decides what follows.
/// `false` when there is no such task.
pub fn record_stopped(
    status: &mut JobRunStatus,
    index: usize,
    phase: TaskPhase,
    message: Option<String>,
    logs: Option<String>,
    now: Timestamp,
) -> bool {
    let Some(task) = status.tasks.get_mut(index) else {
        return false;
    };
    task.phase = phase;
    task.message = message;
    // Logs read before (while a failing Job's pods stopped) stay when none are read now.
    let earlier = task.logs.take();
    task.logs = logs
        .filter(|l| !l.is_empty())
        .or(earlier.filter(|l| !l.is_empty()));
    task.completion_time = Some(now.to_string());
    true
}

/// Ends a halted run whose Jobs are stopped: the tasks that never started are skipped, saying
/// why, and the outcome leads with the reason.
pub fn record_halt(run: &JobRun, status: &mut JobRunStatus, halt: &Halt, now: Timestamp) {
    for task in &mut status.tasks {
        if task.phase == TaskPhase::Pending {
            task.phase = TaskPhase::Skipped;
            task.message = Some(halt.skipped_task());
        }
    }
    let tasks = report::outcome_of_tasks(status);
    let message = if status.tasks.is_empty() {
        halt.headline()
    } else {
        format!("{}\n\n{}", halt.headline(), tasks.message)
    };
    finish(run, status, OutcomeStatus::Errored, message, now);
    status.phase = halt.run_phase();
}

/// Marks every pending task that needs a task that failed or was skipped as skipped. With
/// `needs`, the task's message names what it needed; tasks that run one after the other are
/// skipped silently, as Keptn's service left them.
fn skip_dependents(run: &JobRun, status: &mut JobRunStatus) {
    let tasks = &run.spec.action.tasks;
    let needs = graph::dependencies(tasks);
    let named = graph::uses_needs(tasks);
    loop {
        let mut changed = false;
        for (index, needed) in needs.iter().enumerate() {
            let Some(blocker) = needed.iter().copied().find(|&n| {
                status
                    .tasks
                    .get(n)
                    .is_some_and(|t| matches!(t.phase, TaskPhase::Failed | TaskPhase::Skipped))
            }) else {
                continue;
            };
            let blocker_name = status.tasks[blocker].name.clone();
            let blocker_failed = status.tasks[blocker].phase == TaskPhase::Failed;
            let Some(task) = status.tasks.get_mut(index) else {
                continue;
            };
            if task.phase != TaskPhase::Pending {
                continue;
            }
            task.phase = TaskPhase::Skipped;
            task.message = named.then(|| {
                let what = if blocker_failed {
                    "failed"
                } else {
                    "was skipped"
                };
                format!("it needs '{blocker_name}', which {what}")
            });
            changed = true;
        }
        if !changed {
            return;
        }
    }
}

/// The delivery of `kind`, as recorded.
pub fn delivery_mut(status: &mut JobRunStatus, kind: TaskEventKind) -> Option<&mut Delivery> {
    match kind {
        TaskEventKind::Started => status.started.as_deref_mut(),
        TaskEventKind::Finished => status.finished.as_deref_mut(),
    }
}

/// When an event was first tried: its `time` attribute, the same at every attempt.
pub fn first_attempt(delivery: &mut Delivery, now: Timestamp) -> Timestamp {
    first_try(&mut delivery.first_attempt, now)
}

fn first_try(first: &mut Option<String>, now: Timestamp) -> Timestamp {
    let first = first.get_or_insert_with(|| now.to_string());
    first.parse().unwrap_or(now)
}

/// What came of a delivery attempt, as counted in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    Retry,
    GaveUp,
}

impl Attempt {
    pub fn as_str(self) -> &'static str {
        match self {
            Attempt::Delivered => "delivered",
            Attempt::Retry => "retry",
            Attempt::GaveUp => "gave_up",
        }
    }
}

/// What one series of attempts records: a delivery's, or its dead letter's.
struct Tries<'a> {
    state: &'a mut DeliveryState,
    attempts: &'a mut u32,
    first_attempt: &'a mut Option<String>,
    next_attempt: &'a mut Option<String>,
    last_error: &'a mut Option<String>,
    delivered_at: &'a mut Option<String>,
}

/// Records one delivery attempt: delivered; or retried after a delay that grows with the
/// attempts (at least what the sink asked for) until the policy gives up; or given up (the
/// sink refused the event, the retries are spent or the time is over). A given-up event goes
/// to the dead-letter sink next, when there is one (`dead_letter`).
pub fn record_attempt(
    delivery: &mut Delivery,
    result: Result<(), &DeliveryError>,
    now: Timestamp,
    policy: &RetryPolicy,
    dead_letter: bool,
) -> Attempt {
    let seed = delivery.id.clone();
    let tries = Tries {
        state: &mut delivery.state,
        attempts: &mut delivery.attempts,
        first_attempt: &mut delivery.first_attempt,
        next_attempt: &mut delivery.next_attempt,
        last_error: &mut delivery.last_error,
        delivered_at: &mut delivery.delivered_at,
    };
    let attempt = record_try(tries, &seed, result, now, policy);
    if attempt == Attempt::GaveUp && dead_letter {
        delivery.dead_letter = Some(DeadLetter::default());
    }
    attempt
}

/// Records one attempt at the dead-letter sink, retried by the same policy; a delivery
/// without a dead letter in progress is left as it is.
pub fn record_dead_letter_attempt(
    delivery: &mut Delivery,
    result: Result<(), &DeliveryError>,
    now: Timestamp,
    policy: &RetryPolicy,
) -> Attempt {
    let seed = format!("{}/dead-letter", delivery.id);
    let Some(dead) = delivery.dead_letter.as_mut() else {
        return Attempt::GaveUp;
    };
    let tries = Tries {
        state: &mut dead.state,
        attempts: &mut dead.attempts,
        first_attempt: &mut dead.first_attempt,
        next_attempt: &mut dead.next_attempt,
        last_error: &mut dead.last_error,
        delivered_at: &mut dead.delivered_at,
    };
    record_try(tries, &seed, result, now, policy)
}

/// Records one attempt of the run's notification `index`.
pub fn record_notification_attempt(
    run: &JobRun,
    status: &mut JobRunStatus,
    index: usize,
    result: Result<(), &DeliveryError>,
    now: Timestamp,
    policy: &RetryPolicy,
) -> Attempt {
    let seed = format!("{}/notify/{index}", run_name(run));
    let Some(notification) = status.notifications.get_mut(index) else {
        return Attempt::GaveUp;
    };
    let tries = Tries {
        state: &mut notification.state,
        attempts: &mut notification.attempts,
        first_attempt: &mut notification.first_attempt,
        next_attempt: &mut notification.next_attempt,
        last_error: &mut notification.last_error,
        delivered_at: &mut notification.delivered_at,
    };
    record_try(tries, &seed, result, now, policy)
}

/// How long a delivery whose credentials the sink refuses (401, 403) is retried: a token
/// rotated in its Secret reaches the mounted header file within about a minute (the kubelet's
/// sync), and the sink may take the new token first; a token that is plainly wrong is given
/// up after this, not after the whole retry policy.
pub const CREDENTIALS_GRACE: Duration = Duration::from_secs(150);

fn record_try(
    tries: Tries<'_>,
    seed: &str,
    result: Result<(), &DeliveryError>,
    now: Timestamp,
    policy: &RetryPolicy,
) -> Attempt {
    let first = first_try(tries.first_attempt, now);
    *tries.attempts = tries.attempts.saturating_add(1);
    let error = match result {
        Ok(()) => {
            *tries.state = DeliveryState::Delivered;
            *tries.delivered_at = Some(now.to_string());
            *tries.next_attempt = None;
            return Attempt::Delivered;
        }
        Err(error) => error,
    };
    *tries.last_error = Some(error.to_string());
    let tried_for: Duration = now.duration_since(first).try_into().unwrap_or_default();
    let retry_after = match error {
        DeliveryError::Transient { retry_after, .. } => *retry_after,
        DeliveryError::Unauthorized { .. } if tried_for < CREDENTIALS_GRACE => None,
        DeliveryError::Unauthorized { .. }
        | DeliveryError::Rejected { .. }
        | DeliveryError::Refused { .. } => {
            *tries.state = DeliveryState::GaveUp;
            *tries.next_attempt = None;
            return Attempt::GaveUp;
        }
    };
    if policy.gives_up(*tries.attempts, tried_for) {
        *tries.state = DeliveryState::GaveUp;
        *tries.next_attempt = None;
        return Attempt::GaveUp;
    }
    let delay = policy.delay(*tries.attempts, seed, retry_after);
    let after = |from: Timestamp, wait: Duration| {
        SignedDuration::try_from(wait)
            .ok()
            .and_then(|wait| from.checked_add(wait).ok())
    };
    // Never later than the give-up time: a sink asking for a day (`Retry-After: 86400`) is
    // tried once more then, and given up, as the policy says; a wait past the calendar's end
    // is given up at once.
    // Refused credentials are tried until the grace is over, not past it.
    let give_up_after = match error {
        DeliveryError::Unauthorized { .. } => policy.give_up_after.min(CREDENTIALS_GRACE),
        _ => policy.give_up_after,
    };
    let next = match (after(now, delay), after(first, give_up_after)) {
        (Some(next), Some(deadline)) => next.min(deadline),
        (Some(next), None) => next,
        (None, Some(deadline)) => deadline,
        (None, None) => {
            *tries.state = DeliveryState::GaveUp;
            *tries.next_attempt = None;
            return Attempt::GaveUp;
        }
    };
    *tries.next_attempt = Some(next.to_string());
    Attempt::Retry
}

/// What `kubectl get jobruns` shows of the tasks: `name:Phase` each, in order; after the
/// first ten, how many more there are.
pub fn task_summary(status: &JobRunStatus) -> String {
    const SHOWN: usize = 10;
    let mut parts: Vec<String> = status
        .tasks
        .iter()
        .take(SHOWN)
        .map(|task| format!("{}:{:?}", task.name, task.phase))
        .collect();
    if status.tasks.len() > SHOWN {
        parts.push(format!("(+{} more)", status.tasks.len() - SHOWN));
    }
    parts.join(" ")
}

/// The reason and message of `EventsDelivered` for a given-up delivery: whether the event
/// went to the dead-letter sink after all.
fn gave_up_condition(delivery: &Delivery) -> (&'static str, String) {
    let error = delivery.last_error.as_deref().unwrap_or_default();
    match &delivery.dead_letter {
        None => ("GaveUp", error.to_string()),
        Some(dead) => match dead.state {
            DeliveryState::Delivered => (
                "DeadLettered",
                format!("{error}; the event was sent to the dead-letter sink"),
            ),
            DeliveryState::Pending => (
                "GaveUp",
                format!("{error}; sending the event to the dead-letter sink"),
            ),
            DeliveryState::GaveUp => (
                "GaveUp",
                format!(
                    "{error}; the dead-letter sink did not take it either: {}",
                    dead.last_error.as_deref().unwrap_or_default()
                ),
            ),
        },
    }
}

/// What the status says for people, derived from the rest: the task summary and the
/// conditions — `EventsDelivered` (true once `.finished` is, false with the error when a
/// delivery was given up) and `Finished`.
pub fn update_conditions(status: &mut JobRunStatus, now: Timestamp) {
    status.task_summary = task_summary(status);
    let gave_up = [status.started.as_deref(), status.finished.as_deref()]
        .into_iter()
        .flatten()
        .find(|d| d.state == DeliveryState::GaveUp)
        .map(gave_up_condition);
    if let Some((reason, message)) = gave_up {
        set_condition(status, "EventsDelivered", "False", reason, &message, now);
    } else if status
        .finished
        .as_ref()
        .is_some_and(|d| d.state == DeliveryState::Delivered)
    {
        set_condition(status, "EventsDelivered", "True", "Delivered", "", now);
    }
    if status.phase.is_finished() {
        let reason = status.phase.as_str();
        let message = status
            .outcome
            .as_ref()
            .map(|o| o.message.lines().next().unwrap_or_default().to_string())
            .unwrap_or_default();
        set_condition(status, "Finished", "True", reason, &message, now);
        // What `kubectl wait --for=condition=Succeeded` waits for (and `=False` for a run that
        // failed or was cancelled): `Finished` is True whatever the outcome.
        let succeeded = if status.phase == RunPhase::Succeeded {
            "True"
        } else {
            "False"
        };
        set_condition(status, "Succeeded", succeeded, reason, &message, now);
    }
}

/// Sets a condition; its transition time changes only when its status does.
fn set_condition(
    status: &mut JobRunStatus,
    type_: &str,
    value: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    match status.conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(condition) => {
            if condition.status != value {
                condition.last_transition_time = now.to_string();
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
            last_transition_time: now.to_string(),
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests;
