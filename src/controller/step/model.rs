//! A model-based property test of the executor and the decision function together: a run is
//! reconciled in a model of the cluster and the sink, with random interleavings of Job and pod
//! changes, clock jumps, sink outages and refusals, Jobs deleted behind the operator's back, and
//! crashes (the executor dropped at a random request, before or after the request took
//! effect, and started again from what the API server recorded). Whatever happens, no task's
//! Job is created twice, no task starts before the tasks it needs succeeded (or waits once
//! they have), and the run ends with its `.finished` sent under one id (again only after a
//! crash) and saying what happened.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};

use jiff::SignedDuration;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

use super::*;
use crate::config::graph;
use crate::controller::decide::tests::{at, graph_run, limits};
use crate::controller::observe::Stuck;
use crate::crd::RunPhase;
use crate::leader::NotLeader;
use crate::names;

/// The bytes of log excerpts in a run's `.finished`.
const LOG_EXCERPT_BYTES: usize = 1024;

/// The sink's answer to one delivery.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Accept,
    Unavailable,
    Refuse,
    /// No answer until the sink's timeout (longer than the first backoffs), then a failure.
    TimedOut,
}

/// How long a delivery to a sink that does not answer takes ([`Answer::TimedOut`]).
const SINK_TIMEOUT: SignedDuration = SignedDuration::from_secs(10);

/// What happens between (and during) reconciles.
#[derive(Debug, Clone)]
enum Op {
    Reconcile,
    /// The next reconcile dies at its `nth` request, before or after the request took effect.
    Crash {
        nth: u8,
        after: bool,
    },
    /// The API server fails the next reconcile's `nth` request to it (a look-up, a create, a
    /// delete; not a status write) with a 500, the reconcile fails: the request had no effect,
    /// or it had and its answer was lost (`took_effect`).
    ApiError {
        nth: u8,
        took_effect: bool,
    },
    /// The watch shows task `i`'s Job.
    Watch(usize),
    /// Task `i`'s Job ends.
    Complete {
        task: usize,
        succeeded: bool,
    },
    /// Task `i`'s pod cannot start.
    Stuck(usize),
    /// Task `i`'s Job is deleted by someone else.
    DeleteJob(usize),
    /// The pods of task `i`'s Job that stopped are gone: those of a deleted Job, which ran on
    /// while they stopped, or a failing Job's, which has failed then.
    PodsGone(usize),
    Advance(u16),
    /// The sink answers the next deliveries so.
    Sink(Answer),
    /// Someone annotates the run to cancel it.
    Cancel,
    /// Someone removes the cancel annotation (as a cancel-in-progress group's newer run that
    /// ends or is deleted takes its cause away).
    Uncancel,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Reconcile),
        2 => (0u8..8, any::<bool>()).prop_map(|(nth, after)| Op::Crash { nth, after }),
        1 => (0u8..4, any::<bool>())
            .prop_map(|(nth, took_effect)| Op::ApiError { nth, took_effect }),
        3 => (0usize..4).prop_map(Op::Watch),
        3 => (0usize..4, prop::bool::weighted(0.8))
            .prop_map(|(task, succeeded)| Op::Complete { task, succeeded }),
        1 => (0usize..4).prop_map(Op::Stuck),
        1 => (0usize..4).prop_map(Op::DeleteJob),
        2 => (0usize..4).prop_map(Op::PodsGone),
        2 => (0u16..400).prop_map(Op::Advance),
        2 => prop_oneof![
            8 => Just(Answer::Unavailable),
            1 => Just(Answer::Refuse),
            4 => Just(Answer::Accept),
            2 => Just(Answer::TimedOut),
        ]
        .prop_map(Op::Sink),
        1 => Just(Op::Cancel),
        1 => Just(Op::Uncancel),
    ]
}

/// A failing Job once its pods are gone: failed, no pod left in the watch.
fn failed(seen: &JobSeen) -> JobSeen {
    match seen {
        JobSeen::Failed {
            reason,
            message,
            stopping: true,
            ..
        } => JobSeen::Failed {
            reason: reason.clone(),
            message: message.clone(),
            pods_seen: false,
            stopping: false,
            never_started: None,
            causes: None,
        },
        seen => seen.clone(),
    }
}

struct ModelJob {
    seen: JobSeen,
    /// When it was made, as its `creationTimestamp` says.
    made: Timestamp,
    cached: bool,
    /// Deleted (by the operator or someone else); what it showed last is kept for the checks.
    deleted: bool,
    /// Deleted while it ran: its pods run on while they stop, until `PodsGone`.
    stopping: bool,
}

/// The cluster and the sink, as far as the executor can tell.
struct Model {
    run: RefCell<JobRun>,
    now: Cell<Timestamp>,
    jobs: RefCell<BTreeMap<usize, ModelJob>>,
    /// Task indexes in the order their Jobs were created (adoptions not counted).
    created: RefCell<Vec<usize>>,
    files_made: Cell<u32>,
    /// The status as the API server has it.
    recorded: RefCell<JobRunStatus>,
    /// What the sink accepted, in order.
    sent: RefCell<Vec<CloudEvent>>,
    /// Whether there is a dead-letter sink, and what it accepted (it answers from the same
    /// queue of answers as the sink).
    dead_letter: Cell<bool>,
    dead_lettered: RefCell<Vec<CloudEvent>>,
    answers: RefCell<VecDeque<Answer>>,
    /// Requests left before the reconcile dies, and whether the last takes effect first.
    crash: Cell<Option<(u8, bool)>>,
    crashes: Cell<u32>,
    /// Requests to the API server left before one fails.
    api_error: Cell<Option<(u8, bool)>>,
    log_reads: Cell<u32>,
    /// Whether the run was ever annotated to cancel (the annotation may be gone since).
    ever_cancelled: Cell<bool>,
}

impl Model {
    fn new(run: JobRun) -> Self {
        Model {
            run: RefCell::new(run),
            now: Cell::new(at(0)),
            jobs: RefCell::default(),
            created: RefCell::default(),
            files_made: Cell::new(0),
            recorded: RefCell::default(),
            sent: RefCell::default(),
            dead_letter: Cell::new(false),
            dead_lettered: RefCell::default(),
            answers: RefCell::default(),
            crash: Cell::new(None),
            crashes: Cell::new(0),
            api_error: Cell::new(None),
            log_reads: Cell::new(0),
            ever_cancelled: Cell::new(false),
        }
    }

    fn index_of(&self, job_name: &str) -> usize {
        let tasks = self.run.borrow().spec.action.tasks.len();
        (0..tasks)
            .find(|i| names::job_name("run-1", *i) == job_name)
            .expect("a Job of this run")
    }

    /// One request: it takes effect, unless the reconcile dies before it.
    fn request<T>(&self, effect: impl FnOnce() -> T) -> Result<T, ReconcileError> {
        match self.crash.get() {
            Some((0, after)) => {
                self.crash.set(None);
                self.crashes.set(self.crashes.get() + 1);
                if after {
                    effect();
                }
                Err(NotLeader("crashed".into()).into())
            }
            Some((n, after)) => {
                self.crash.set(Some((n - 1, after)));
                Ok(effect())
            }
            None => Ok(effect()),
        }
    }

    /// One request to the API server other than a status write: it fails with a 500 when
    /// `ApiError` says so, else it is a `request`.
    fn api_request<T>(&self, effect: impl FnOnce() -> T) -> Result<T, ReconcileError> {
        match self.api_error.get() {
            Some((0, took_effect)) => {
                self.api_error.set(None);
                if took_effect {
                    self.request(effect)?;
                }
                let mut status =
                    kube::core::Status::failure("etcdserver: leader changed", "InternalError");
                status.code = 500;
                Err(kube::Error::Api(Box::new(status)).into())
            }
            Some((n, took_effect)) => {
                self.api_error.set(Some((n - 1, took_effect)));
                self.request(effect)
            }
            None => self.request(effect),
        }
    }

    /// A reconcile from what the API server recorded, as after a restart.
    fn reconcile(&self) -> Option<Option<Duration>> {
        let settings = Settings::defaults();
        let run = self.run.borrow().clone();
        // The run as the watch cache holds it (a done one trimmed).
        let mut cached = run.clone();
        cached.status = Some(self.recorded.borrow().clone());
        crate::controller::trim_run(&mut cached);
        let executor = Executor {
            run: &cached,
            world: self,
            settings: &settings,
            limits: &Limits {
                dead_letter: self.dead_letter.get(),
                ..limits()
            },
            log_excerpt_bytes: LOG_EXCERPT_BYTES,
            trace: None,
        };
        let recorded = cached.status.clone().unwrap_or_default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let result = runtime.block_on(executor.execute(recorded));
        self.crash.set(None);
        self.api_error.set(None);
        let ending = result.ok().map(|(_, ending)| ending)?;
        // A run that waits has started every task whose needs succeeded: nothing sits idle
        // (but a halting run, waiting for the pods of the tasks it stopped).
        let recorded = self.recorded.borrow();
        let needs = graph::dependencies(&run.spec.action.tasks);
        let timed_out = run.spec.action.timeout_seconds.is_some_and(|timeout| {
            recorded
                .started_at
                .as_deref()
                .and_then(|at| at.parse::<Timestamp>().ok())
                .is_some_and(|at| self.now.get() >= at + SignedDuration::from_secs(timeout as i64))
        });
        let cancelled = run
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(crate::labels::CANCEL));
        if recorded.phase.is_finished() || timed_out || cancelled {
            return Some(ending);
        }
        for (index, task) in recorded.tasks.iter().enumerate() {
            let ready = needs[index]
                .iter()
                .all(|&n| recorded.tasks[n].phase == TaskPhase::Succeeded);
            assert!(
                !(ready && task.phase == TaskPhase::Pending),
                "task {index} could start, yet the run waits: {recorded:?}"
            );
        }
        Some(ending)
    }

    fn finish_job(&self, task: usize, seen: JobSeen) {
        if let Some(job) = self.jobs.borrow_mut().get_mut(&task)
            && matches!(job.seen, JobSeen::Running { .. })
            && !job.deleted
        {
            job.seen = seen;
        }
    }

    fn apply(&self, op: &Op) {
        match op {
            Op::Reconcile => {
                self.reconcile();
            }
            Op::Crash { nth, after } => self.crash.set(Some((*nth, *after))),
            Op::ApiError { nth, took_effect } => self.api_error.set(Some((*nth, *took_effect))),
            Op::Watch(task) => {
                if let Some(job) = self.jobs.borrow_mut().get_mut(task) {
                    job.cached = true;
                }
            }
            Op::Complete { task, succeeded } => self.finish_job(
                *task,
                if *succeeded {
                    JobSeen::Succeeded {
                        message: None,
                        pods_seen: true,
                        succeeded_pod_gone: false,
                    }
                } else {
                    // Failing first: its pods stop, then (`PodsGone`) it has failed.
                    JobSeen::Failed {
                        reason: "BackoffLimitExceeded".into(),
                        message: String::new(),
                        pods_seen: true,
                        stopping: true,
                        never_started: None,
                        causes: None,
                    }
                },
            ),
            Op::Stuck(task) => self.finish_job(
                *task,
                JobSeen::Running {
                    stuck: Some(Stuck {
                        pod: "p".into(),
                        reason: "ErrImagePull".into(),
                        message: "no such image".into(),
                        created: None,
                    }),
                },
            ),
            Op::DeleteJob(task) => self.delete(*task),
            Op::PodsGone(task) => {
                if let Some(job) = self.jobs.borrow_mut().get_mut(task) {
                    job.stopping = false;
                    job.seen = failed(&job.seen);
                }
            }
            Op::Advance(seconds) => self
                .now
                .set(self.now.get() + SignedDuration::from_secs(i64::from(*seconds))),
            Op::Sink(answer) => self.answers.borrow_mut().push_back(*answer),
            Op::Cancel => {
                let mut run = self.run.borrow_mut();
                let annotations = run.metadata.annotations.get_or_insert_default();
                annotations.insert(crate::labels::CANCEL.into(), "model".into());
                self.ever_cancelled.set(true);
            }
            Op::Uncancel => {
                if let Some(annotations) = self.run.borrow_mut().metadata.annotations.as_mut() {
                    annotations.remove(crate::labels::CANCEL);
                }
            }
        }
    }

    fn delete(&self, task: usize) {
        if let Some(job) = self.jobs.borrow_mut().get_mut(&task) {
            job.stopping |= !job.deleted && matches!(job.seen, JobSeen::Running { .. });
            job.deleted = true;
        }
    }

    /// The world settles: the watch catches up, running Jobs succeed, the sink accepts, the
    /// clock moves to each deadline. Returns whether the run ended.
    fn settle(&self) -> bool {
        for _ in 0..100 {
            for job in self.jobs.borrow_mut().values_mut() {
                job.cached = true;
                job.stopping = false;
                job.seen = failed(&job.seen);
                if job.deleted {
                    continue;
                }
                if job.seen == (JobSeen::Running { stuck: None }) {
                    job.seen = JobSeen::Succeeded {
                        message: None,
                        pods_seen: true,
                        succeeded_pod_gone: false,
                    };
                }
            }
            match self.reconcile() {
                Some(None) if self.recorded.borrow().is_done() => return true,
                Some(delay) => {
                    let step = delay.unwrap_or(Duration::from_secs(1));
                    let step = SignedDuration::try_from(step).unwrap_or(SignedDuration::ZERO);
                    self.now.set(self.now.get() + step);
                }
                None => {}
            }
        }
        false
    }
}

impl World for Model {
    fn now(&self) -> Timestamp {
        self.now.get()
    }

    fn cached_job(&self, name: &str) -> JobSeen {
        match self.jobs.borrow().get(&self.index_of(name)) {
            Some(job) if job.cached && !job.deleted => job.seen.clone(),
            _ => JobSeen::NotCached,
        }
    }

    fn job_made_at(&self, name: &str) -> Option<Timestamp> {
        match self.jobs.borrow().get(&self.index_of(name)) {
            Some(job) if job.cached && !job.deleted => Some(job.made),
            _ => None,
        }
    }

    fn pods_running(&self, name: &str) -> bool {
        self.jobs
            .borrow()
            .get(&self.index_of(name))
            .is_some_and(|job| job.stopping)
    }

    async fn look_up_job(&self, name: &str) -> Result<JobSeen, ReconcileError> {
        let index = self.index_of(name);
        self.api_request(|| {
            self.jobs
                .borrow()
                .get(&index)
                .filter(|job| !job.deleted)
                .map_or(JobSeen::Gone, |job| job.seen.clone())
        })
    }

    async fn create_files(&self, _run: &JobRun) -> Result<(), StepError> {
        Ok(self.api_request(|| self.files_made.set(self.files_made.get() + 1))?)
    }

    async fn create_job(&self, job: &Job) -> Result<(), StepError> {
        let index = self.index_of(&job.name_any());
        let run = self.run.borrow().clone();
        Ok(self.api_request(|| {
            let mut jobs = self.jobs.borrow_mut();
            if jobs.contains_key(&index) {
                return;
            }
            assert!(!is_cancelled(&run), "task {index} started after the cancel");
            // No task starts past the action's timeout.
            let started = self.recorded.borrow().started_at.clone();
            if let (Some(timeout), Some(started)) = (run.spec.action.timeout_seconds, started) {
                let deadline = started.parse::<Timestamp>().expect("a time")
                    + SignedDuration::from_secs(timeout as i64);
                assert!(
                    self.now.get() < deadline,
                    "task {index} started after the timeout"
                );
            }
            // No task starts before the tasks it needs succeeded, or before its files exist.
            for needed in &graph::dependencies(&run.spec.action.tasks)[index] {
                assert_eq!(
                    jobs.get(needed).map(|j| &j.seen),
                    Some(&JobSeen::Succeeded {
                        message: None,
                        pods_seen: true,
                        succeeded_pod_gone: false,
                    }),
                    "task {index} started before task {needed} succeeded"
                );
            }
            if run
                .spec
                .action
                .files
                .get(index)
                .is_some_and(|f| !f.is_empty())
            {
                assert!(
                    self.files_made.get() > 0,
                    "task {index} started before its files"
                );
            }
            jobs.insert(
                index,
                ModelJob {
                    seen: JobSeen::Running { stuck: None },
                    made: self.now.get(),
                    cached: false,
                    deleted: false,
                    stopping: false,
                },
            );
            self.created.borrow_mut().push(index);
        })?)
    }

    async fn delete_job(&self, name: &str) -> Result<(), ReconcileError> {
        let index = self.index_of(name);
        self.api_request(|| self.delete(index))
    }

    /// Logs read again can differ (a pod removed, a log rotated): each read says which it is.
    async fn task_logs(&self, name: &str, budget: usize) -> String {
        // Every task gets an equal share of the `.finished` event's log bytes.
        let tasks = self.run.borrow().spec.action.tasks.len();
        assert_eq!(budget, LOG_EXCERPT_BYTES / tasks, "{tasks} tasks");
        self.log_reads.set(self.log_reads.get() + 1);
        format!("logs of {name}, read {}", self.log_reads.get())
    }

    async fn deliver(
        &self,
        event: &CloudEvent,
        to: Destination,
    ) -> Result<Result<(), DeliveryError>, ReconcileError> {
        assert!(
            to == Destination::Sink || self.dead_letter.get(),
            "dead-lettered without a dead-letter sink"
        );
        self.request(|| {
            match self
                .answers
                .borrow_mut()
                .pop_front()
                .unwrap_or(Answer::Accept)
            {
                Answer::Accept => {
                    match to {
                        Destination::Sink => self.sent.borrow_mut().push(event.clone()),
                        Destination::DeadLetter => {
                            self.dead_lettered.borrow_mut().push(event.clone())
                        }
                    }
                    Ok(())
                }
                Answer::Unavailable => Err(DeliveryError::Transient {
                    message: "503 Service Unavailable".into(),
                    retry_after: None,
                }),
                Answer::TimedOut => {
                    self.now.set(self.now.get() + SINK_TIMEOUT);
                    Err(DeliveryError::Transient {
                        message: "no answer within 10 s".into(),
                        retry_after: None,
                    })
                }
                Answer::Refuse => Err(DeliveryError::Rejected {
                    status: 400,
                    message: "no".into(),
                }),
            }
        })
    }

    async fn mark_done(&self, _run: &str, revision: u64) -> Result<(), ReconcileError> {
        self.request(|| {
            let mut recorded = self.recorded.borrow_mut();
            assert_eq!(revision, recorded.revision + 1, "writes are counted");
            assert!(recorded.is_done(), "{recorded:?}");
            recorded.revision = revision;
            recorded.done = true;
        })
    }

    async fn write_status(
        &self,
        _run: &str,
        _before: &JobRunStatus,
        status: &JobRunStatus,
    ) -> Result<(), ReconcileError> {
        self.request(|| {
            let mut recorded = self.recorded.borrow_mut();
            assert_eq!(status.revision, recorded.revision + 1, "writes are counted");
            // The field selector of the controller's watch reads `done`: it is recorded with
            // the write that ends the run, never before.
            assert_eq!(status.done, status.is_done(), "{status:?}");
            *recorded = status.clone();
        })
    }
}

fn is_cancelled(run: &JobRun) -> bool {
    run.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(crate::labels::CANCEL))
}

fn kind_of(event: &CloudEvent) -> &str {
    event.event_type().rsplit('.').next().unwrap_or_default()
}

fn check_run(
    needs: &[Vec<usize>],
    files_on: Option<usize>,
    timeout: Option<u64>,
    dead_letter: bool,
    ops: &[Op],
) {
    let tasks = needs.len();
    let mut run = graph_run(needs, files_on);
    run.spec.action.timeout_seconds = timeout;
    let dependencies = graph::dependencies(&run.spec.action.tasks);
    let model = Model::new(run);
    model.dead_letter.set(dead_letter);
    for op in ops {
        model.apply(op);
    }
    assert!(model.settle(), "the run ends once the world settles");

    let status = model.recorded.borrow().clone();
    let cancelled = model.ever_cancelled.get();
    let message = status
        .outcome
        .as_ref()
        .map(|o| o.message.clone())
        .unwrap_or_default();
    let halted = status.phase == RunPhase::Cancelled || message.starts_with("The action's timeout");
    assert_eq!(
        status.phase == RunPhase::Cancelled,
        message.starts_with("Cancelled by model"),
        "{status:?}"
    );
    assert!(cancelled || status.phase != RunPhase::Cancelled);
    let jobs = model.jobs.borrow();
    let created = model.created.borrow().clone();
    let mut unique = created.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        created.len(),
        "a Job created twice: {created:?}"
    );

    // The run says what happened to its Jobs.
    for (index, task) in status.tasks.iter().enumerate() {
        let job = jobs.get(&index);
        let seen = job.map(|j| &j.seen);
        match task.phase {
            TaskPhase::Succeeded => assert_eq!(
                seen,
                Some(&JobSeen::Succeeded {
                    message: None,
                    pods_seen: true,
                    succeeded_pod_gone: false,
                }),
                "task {index}"
            ),
            // A Job deleted before the operator saw it succeed failed as far as it can tell,
            // unless a task that needs it has a Job, which says it succeeded (after a crash
            // before the record of both, its own Job removed as by its TTL).
            TaskPhase::Failed => {
                let succeeded = JobSeen::Succeeded {
                    message: None,
                    pods_seen: true,
                    succeeded_pod_gone: false,
                };
                assert!(
                    job.is_none_or(|j| j.deleted || j.seen != succeeded),
                    "task {index}"
                );
                let witness = (0..tasks).find(|&next| {
                    dependencies[next].contains(&index)
                        && jobs.get(&next).is_some_and(|j| !j.deleted)
                });
                assert!(
                    halted || job.is_none_or(|j| j.seen != succeeded) || witness.is_none(),
                    "task {index} failed, yet task {witness:?} has a Job: {status:?}"
                );
            }
            // Skipped: never started, and a task it needs did not succeed, or the run halted.
            TaskPhase::Skipped => {
                assert!(
                    !created.contains(&index) || (halted && job.is_some_and(|j| j.deleted)),
                    "task {index}"
                );
                assert!(
                    halted
                        || dependencies[index]
                            .iter()
                            .any(|&n| status.tasks[n].phase != TaskPhase::Succeeded),
                    "task {index} skipped though its needs succeeded"
                );
            }
            // Cancelled: its Job was deleted, by the cancel.
            TaskPhase::Cancelled => {
                assert!(job.is_some_and(|j| j.deleted), "task {index}");
                assert_eq!(status.phase, RunPhase::Cancelled, "task {index}");
            }
            TaskPhase::Pending | TaskPhase::Running => {
                panic!("task {index} not over in a finished run: {status:?}")
            }
        }
    }
    let all_succeeded = (0..tasks).all(|i| status.tasks[i].phase == TaskPhase::Succeeded);
    assert_eq!(
        status.phase == RunPhase::Succeeded,
        all_succeeded,
        "{status:?}"
    );
    assert!(
        status.phase.is_finished() && status.is_done() && status.done,
        "{status:?}"
    );

    // `.finished`: one id and one report, after `.started`, saying the outcome; again only
    // after a crash.
    let sent = model.sent.borrow();
    let finished: Vec<&CloudEvent> = sent.iter().filter(|e| kind_of(e) == "finished").collect();
    let started: Vec<&CloudEvent> = sent.iter().filter(|e| kind_of(e) == "started").collect();
    let crashes = model.crashes.get() as usize;
    let finished_state = status.finished.as_ref().map(|d| d.state);
    if finished_state == Some(DeliveryState::Delivered) {
        assert!(!finished.is_empty(), "delivered as recorded");
    }
    if finished_state == Some(DeliveryState::GaveUp) {
        assert!(finished.len() <= crashes, "given up, yet accepted");
    }
    assert!(
        finished.len() <= 1 + crashes,
        "{} .finished",
        finished.len()
    );
    assert!(started.len() <= 1 + crashes, "{} .started", started.len());
    let ids: Vec<&str> = finished.iter().map(|e| e.id()).collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    let reports: Vec<_> = finished.iter().map(|e| e.data()).collect();
    assert!(reports.windows(2).all(|w| w[0] == w[1]), "{reports:#?}");
    if let (Some(first_finished), Some(first_started)) = (
        sent.iter().position(|e| kind_of(e) == "finished"),
        sent.iter().position(|e| kind_of(e) == "started"),
    ) {
        assert!(first_started < first_finished, "order: {sent:?}");
    }
    check_dead_letters(&model, &status);
    for event in &finished {
        let reported = event.data_str("status").unwrap_or_default();
        let expected = if all_succeeded {
            "succeeded"
        } else {
            "errored"
        };
        assert_eq!(reported, expected);
    }
}

/// A given-up event goes to the dead-letter sink, when there is one, and only then: once
/// (again only after a crash), under its own id, saying why; the status says how it went.
fn check_dead_letters(model: &Model, status: &JobRunStatus) {
    let crashes = model.crashes.get() as usize;
    let dead_lettered = model.dead_lettered.borrow();
    for (kind, delivery) in [("started", &status.started), ("finished", &status.finished)] {
        let letters: Vec<&CloudEvent> = dead_lettered
            .iter()
            .filter(|e| kind_of(e) == kind)
            .collect();
        let Some(delivery) = delivery else {
            assert!(letters.is_empty(), "{kind}: nothing to dead-letter");
            continue;
        };
        match (delivery.state, &delivery.dead_letter) {
            (DeliveryState::GaveUp, Some(dead)) => {
                assert!(model.dead_letter.get(), "{kind}: {delivery:?}");
                assert_ne!(dead.state, DeliveryState::Pending, "{kind}: settled");
                if dead.state == DeliveryState::Delivered {
                    assert!(!letters.is_empty(), "{kind}: dead-lettered as recorded");
                }
            }
            (DeliveryState::GaveUp, None) => {
                assert!(
                    !model.dead_letter.get(),
                    "{kind}: given up, not dead-lettered"
                )
            }
            (_, dead) => assert!(dead.is_none(), "{kind}: {delivery:?}"),
        }
        assert!(
            letters.len() <= 1 + crashes,
            "{kind}: {} letters",
            letters.len()
        );
        for letter in letters {
            assert_eq!(letter.id(), delivery.id, "{kind}");
            let reason = letter.extension(crate::sink::DEAD_LETTER_REASON);
            assert!(reason.is_some_and(|r| !r.is_empty()), "{letter:?}");
        }
    }
}

/// One to four tasks: one after the other (no `needs`), or a graph (each task needs some of
/// the tasks before it).
fn needs() -> impl Strategy<Value = Vec<Vec<usize>>> {
    let list = (1usize..=4).prop_map(|tasks| vec![vec![]; tasks]);
    let graph = (1usize..=4).prop_flat_map(|tasks| {
        (0..tasks)
            .map(|index| prop::sample::subsequence((0..index).collect::<Vec<_>>(), 0..=index))
            .collect::<Vec<_>>()
    });
    prop_oneof![list, graph]
}

fn config() -> Config {
    Config {
        cases: 400,
        rng_seed: RngSeed::Fixed(0x6a6f_6265_7865_6375),
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_interleaving_runs_each_task_once_in_order_and_reports_once(
        needs in needs(),
        files_on in prop::option::of(0usize..4),
        timeout in prop::option::weighted(0.3, 30u64..1500),
        dead_letter in any::<bool>(),
        ops in prop::collection::vec(op(), 0..60),
    ) {
        check_run(&needs, files_on.filter(|f| *f < needs.len()), timeout, dead_letter, &ops);
    }
}

/// The model catches what the properties are about: a create that is not adopted is seen
/// twice, and a run that never ends is caught by `settle`.
#[test]
fn the_model_sees_a_job_created_twice() {
    let model = Model::new(graph_run(&[vec![]], None));
    model.apply(&Op::Reconcile);
    assert_eq!(*model.created.borrow(), [0]);
    model.apply(&Op::DeleteJob(0));
    assert!(model.jobs.borrow()[&0].deleted);
    // Deleted behind the operator's back: after the grace the run fails, nothing is recreated.
    model.apply(&Op::Advance(31));
    model.apply(&Op::Reconcile);
    assert_eq!(*model.created.borrow(), [0]);
    let status = model.recorded.borrow().clone();
    assert_eq!(
        status.tasks[0].message.as_deref(),
        Some(
            "the Job run-1-0 is gone and its end was not seen (deleted, or removed by its \
             ttlSecondsAfterFinished while no operator watched)"
        )
    );
}

/// Task 0 succeeds; the reconcile that sees it makes the next Job (of a task that needs only
/// task 0) and dies before the write that records it and task 0's end; task 0's Job is then
/// removed, as its TTL would while no operator watched.
fn crash_before_the_next_job_is_recorded() -> Vec<Op> {
    vec![
        Op::Reconcile,
        Op::Watch(0),
        Op::Complete {
            task: 0,
            succeeded: true,
        },
        Op::Crash {
            nth: 1,
            after: false,
        },
        Op::Reconcile,
        Op::DeleteJob(0),
    ]
}

/// A task's end and the next task's Job are recorded in one write, after the Job is made. A
/// crash in between, and the first Job removed by its TTL before the operator is back: the
/// next task's Job says the first succeeded, and the run goes on with it (adopted, not made
/// again).
#[test]
fn a_job_removed_while_no_operator_watched_succeeded_if_the_next_task_has_a_job() {
    let mut ops = crash_before_the_next_job_is_recorded();
    ops.extend([Op::Advance(31), Op::Reconcile]);
    let model = Model::new(graph_run(&[vec![], vec![0]], None));
    for op in &ops {
        model.apply(op);
    }
    assert_eq!(model.crashes.get(), 1);
    assert_eq!(*model.created.borrow(), [0, 1]);
    let status = model.recorded.borrow().clone();
    assert_eq!(status.tasks[0].phase, TaskPhase::Succeeded, "{status:?}");
    assert!(
        status.tasks[0]
            .message
            .as_deref()
            .is_some_and(|m| m.contains("as the Job of task t1, made only once it had, shows")),
        "{status:?}"
    );
    assert_eq!(status.tasks[1].phase, TaskPhase::Running, "adopted");
    assert!(model.settle(), "the run ends");
    assert_eq!(model.recorded.borrow().phase, RunPhase::Succeeded);
    // The properties of every interleaving hold for this one.
    check_run(&[vec![], vec![0]], None, None, false, &ops);
}

/// The same, the next task's Job in the watch when the operator is back: its task started when
/// the Job was made, before the crash, not when it is adopted (the never-started timeout and the
/// task's start count from then).
#[test]
fn an_adopted_job_s_task_started_when_the_job_was_made() {
    let mut ops = crash_before_the_next_job_is_recorded();
    ops.extend([Op::Advance(31), Op::Watch(1), Op::Reconcile]);
    let model = Model::new(graph_run(&[vec![], vec![0]], None));
    for op in &ops {
        model.apply(op);
    }
    let status = model.recorded.borrow().clone();
    assert_eq!(status.tasks[1].phase, TaskPhase::Running, "adopted");
    let made = model.jobs.borrow()[&1].made.to_string();
    assert_eq!(status.tasks[1].start_time.as_deref(), Some(made.as_str()));
    assert!(made < model.now().to_string(), "{made}");
}

/// The same, and the run is cancelled before the operator is back: the next task's Job, made
/// before the crash, says the first task succeeded, and the cancel deletes it as that task's
/// rather than leave it running untracked; the task is recorded cancelled (it ran), and the run
/// ends once its pods are gone.
#[test]
fn a_cancel_after_a_restart_that_lost_the_next_job_stops_that_job() {
    let mut ops = crash_before_the_next_job_is_recorded();
    ops.extend([Op::Advance(31), Op::Cancel, Op::Reconcile]);
    let model = Model::new(graph_run(&[vec![], vec![0]], None));
    for op in &ops {
        model.apply(op);
    }
    assert_eq!(*model.created.borrow(), [0, 1]);
    assert!(model.jobs.borrow()[&1].deleted, "task 1's Job is deleted");
    assert!(model.settle(), "the run ends");
    let status = model.recorded.borrow().clone();
    assert_eq!(status.phase, RunPhase::Cancelled, "{status:?}");
    assert_eq!(status.tasks[0].phase, TaskPhase::Succeeded, "{status:?}");
    assert_eq!(status.tasks[1].phase, TaskPhase::Cancelled, "{status:?}");
    // The properties of every interleaving hold for this one.
    check_run(&[vec![], vec![0]], None, None, false, &ops);
}

/// The same, and the next task's Job could not be rendered again now (here a field the event
/// lacks; in life an output of the first task, lost with its Job and its record): the Job made
/// before the crash is adopted, not left running untracked while its task is failed.
#[test]
fn a_job_made_before_a_restart_is_adopted_though_it_cannot_be_rendered_again() {
    let model = Model::new(graph_run(&[vec![], vec![0]], None));
    for op in &crash_before_the_next_job_is_recorded() {
        model.apply(op);
    }
    model.run.borrow_mut().spec.action.tasks[1].env = vec![
        serde_json::from_value(
            serde_json::json!({"name": "HOST", "value": "$.data.missing", "valueFrom": "event"}),
        )
        .expect("an env entry"),
    ];
    for op in [Op::Advance(31), Op::Reconcile] {
        model.apply(&op);
    }
    assert_eq!(*model.created.borrow(), [0, 1]);
    let status = model.recorded.borrow().clone();
    assert_eq!(status.tasks[0].phase, TaskPhase::Succeeded, "{status:?}");
    assert_eq!(
        status.tasks[1].phase,
        TaskPhase::Running,
        "adopted: {status:?}"
    );
}

/// The same, with two tasks that need the first: the one looked up first has no Job (it
/// needs another task too, still running then), the other has. Once it can start, its Job
/// is made in the same reconcile, and is not taken for gone as the lookup had found it.
#[test]
fn a_job_made_after_a_lookup_found_none_is_not_taken_for_gone() {
    let needs = [vec![], vec![], vec![0, 1], vec![0]];
    let mut ops = crash_before_the_next_job_is_recorded();
    ops.extend([
        Op::Watch(1),
        Op::Complete {
            task: 1,
            succeeded: true,
        },
        Op::Advance(31),
        Op::Reconcile,
    ]);
    let model = Model::new(graph_run(&needs, None));
    for op in &ops {
        model.apply(op);
    }
    assert_eq!(*model.created.borrow(), [0, 1, 3, 2]);
    let status = model.recorded.borrow().clone();
    assert_eq!(
        status.tasks.iter().map(|t| t.phase).collect::<Vec<_>>(),
        [
            TaskPhase::Succeeded,
            TaskPhase::Succeeded,
            TaskPhase::Running,
            TaskPhase::Running
        ],
        "{status:?}"
    );
    check_run(&needs, None, None, false, &ops);
}

/// A task whose Job cannot be rendered fails with the reason, and what needs it is skipped.
#[test]
fn a_task_that_cannot_be_rendered_fails_with_the_reason() {
    let mut run = graph_run(&[vec![], vec![0]], None);
    run.spec.action.tasks[0].env = vec![
        serde_json::from_value(
            serde_json::json!({"name": "HOST", "value": "$.data.missing", "valueFrom": "event"}),
        )
        .expect("an env entry"),
    ];
    let model = Model::new(run);
    assert!(model.settle(), "the run ends");
    let status = model.recorded.borrow().clone();
    assert_eq!(status.tasks[0].phase, TaskPhase::Failed);
    let message = status.tasks[0].message.clone().unwrap_or_default();
    assert!(message.contains("HOST"), "{message}");
    assert_eq!(status.tasks[1].phase, TaskPhase::Skipped);
    assert!(model.created.borrow().is_empty(), "no Job");
}

/// A run whose recorded event is not a CloudEvent (a JobRun made by hand: the operator
/// validates every event it accepts) fails its task with the reason, and sends nothing.
#[test]
fn a_run_whose_event_is_not_a_cloudevent_fails_saying_why() {
    let mut run = graph_run(&[vec![]], None);
    run.spec.event =
        serde_json::from_value(serde_json::json!({"id": "e", "type": "x"})).expect("a JSON object");
    let model = Model::new(run);
    assert!(model.settle(), "the run ends");
    let status = model.recorded.borrow().clone();
    assert_eq!(status.tasks[0].phase, TaskPhase::Failed);
    assert_eq!(
        status.tasks[0].message.as_deref(),
        Some(
            "the run's event is not a valid CloudEvent: missing required attribute \"specversion\""
        )
    );
    assert!(model.created.borrow().is_empty(), "no Job");
    assert!(model.sent.borrow().is_empty(), "no event");
}

/// A run an older version ended (no `status.done` recorded) gets it in one write, and nothing
/// else happens to it: no Job, no event again.
#[test]
fn a_run_ended_before_done_was_recorded_is_marked_with_one_write() {
    let model = Model::new(graph_run(&[vec![]], None));
    assert!(model.settle(), "the run ends");
    let sent = model.sent.borrow().len();
    {
        let mut recorded = model.recorded.borrow_mut();
        recorded.done = false;
    }
    let revision = model.recorded.borrow().revision;
    assert_eq!(model.reconcile(), Some(None));
    let status = model.recorded.borrow().clone();
    assert!(status.done, "{status:?}");
    assert_eq!(status.revision, revision + 1, "one write");
    assert_eq!(*model.created.borrow(), [0]);
    assert_eq!(model.sent.borrow().len(), sent);
}

/// `.started` went out, then the API server failed the first Job's create: what was sent is
/// recorded before the reconcile gives up, so the next one does not send `.started` again
/// (Keptn counts each `.started` it gets and waits for as many `.finished`).
#[test]
fn an_event_sent_before_a_failed_request_is_not_sent_again() {
    let model = Model::new(graph_run(&[vec![]], None));
    model.apply(&Op::ApiError {
        nth: 0,
        took_effect: false,
    });
    model.apply(&Op::Reconcile);
    assert!(model.created.borrow().is_empty());
    let recorded = model.recorded.borrow().clone();
    assert_eq!(
        recorded.started.as_ref().map(|started| started.state),
        Some(DeliveryState::Delivered),
        "{recorded:?}"
    );
    assert!(model.settle(), "the run ends");
    let sent = model.sent.borrow();
    let kinds: Vec<&str> = sent.iter().map(kind_of).collect();
    assert_eq!(kinds, ["started", "finished"]);
}

/// An event recorded under an id before (by an earlier version of the operator, whose ids were
/// made otherwise) is sent under that id: a receiver that got it before a crash can drop it.
#[test]
fn an_event_recorded_under_an_id_is_sent_under_it() {
    let model = Model::new(graph_run(&[vec![]], None));
    model.recorded.borrow_mut().started = Some(Box::new(crate::crd::Delivery {
        id: "recorded-before".into(),
        ..Default::default()
    }));
    assert!(model.settle(), "the run ends");
    let sent = model.sent.borrow();
    let started: Vec<&str> = sent
        .iter()
        .filter(|e| kind_of(e) == "started")
        .map(|e| e.id())
        .collect();
    assert_eq!(started, ["recorded-before"]);
}

/// A sink that takes longer to fail than the backoff (no answer until its timeout) is tried
/// once a reconcile: the next attempt is due after the backoff from that attempt's end, and the
/// run's Job is created meanwhile. (Timed from the attempt's start, every attempt was due again
/// at its end: one reconcile tried five times, 50 s, before the Job, its worker held.)
#[test]
fn a_sink_that_times_out_is_tried_once_a_reconcile_and_holds_no_task_up() {
    let model = Model::new(graph_run(&[vec![]], None));
    for _ in 0..6 {
        model.apply(&Op::Sink(Answer::TimedOut));
    }
    let before = model.now.get();
    model.apply(&Op::Reconcile);
    let recorded = model.recorded.borrow().clone();
    let started = recorded.started.clone().unwrap_or_default();
    assert_eq!(started.attempts, 1, "{recorded:?}");
    assert_eq!(started.state, DeliveryState::Pending);
    assert_eq!(
        *model.created.borrow(),
        [0],
        "the Job is not held up by the sink"
    );
    assert_eq!(model.now.get(), before + SINK_TIMEOUT);
    let next: Timestamp = started.next_attempt.unwrap().parse().unwrap();
    assert!(
        next > model.now.get(),
        "due after the attempt's end: {next}"
    );
    assert!(model.settle(), "the run ends");
    let sent = model.sent.borrow();
    let kinds: Vec<&str> = sent.iter().map(kind_of).collect();
    assert_eq!(kinds, ["started", "finished"]);
}

/// A cancel stops task 2 while task 0's failing Job stops on its own; task 0's end then comes
/// last: the run ends as the cancel says (Cancelled, "Cancelled by …"), not as the task that
/// happened to end last (it ended Failed, the cancel never recorded). Found by the property
/// test once its API errors could take effect.
#[test]
fn a_run_cancelled_while_a_task_fails_ends_cancelled() {
    check_run(
        &[vec![], vec![0], vec![]],
        None,
        None,
        false,
        &[
            Op::ApiError {
                nth: 2,
                took_effect: false,
            },
            Op::Reconcile,
            Op::Complete {
                task: 0,
                succeeded: false,
            },
            Op::Watch(0),
            Op::Cancel,
            Op::Reconcile,
        ],
    );
}

/// A Job the API server refuses as too large (413, or etcd's limit: a 500 saying "request is
/// too large") would be refused again: the task fails with the reason, as for an invalid one;
/// another 500 is tried again.
#[test]
fn a_job_too_large_to_store_fails_its_task_and_other_errors_are_tried_again() {
    let api = |code: u16, message: &str| {
        let mut status = kube::core::Status::failure(message, "");
        status.code = code;
        ReconcileError::Kube(kube::Error::Api(Box::new(status)))
    };
    for (code, message) in [
        (413, "Request entity too large: limit is 3145728"),
        (500, "etcdserver: request is too large"),
        (422, "Job.batch \"x\" is invalid"),
    ] {
        match refusal("Job", api(code, message)) {
            StepError::CannotRun(CannotRun::Denied { what, reason }) => {
                assert_eq!((what, reason.as_str()), ("Job", message));
            }
            other => panic!("{code} {message}: {other:?}"),
        }
    }
    assert!(matches!(
        refusal("Job", api(500, "etcdserver: leader changed")),
        StepError::Retry(_)
    ));
}

/// A run an older version ended, its outcome recorded but not its `.finished` (that version
/// recorded the delivery after the first attempt, and stopped in between): the `.finished` is
/// sent under the id that version gave it (derived from the run's name alone, so a receiver
/// that got it before can drop it), and the run is done after.
#[test]
fn a_run_an_older_version_ended_before_recording_its_finished_sends_it() {
    let model = Model::new(graph_run(&[vec![]], None));
    assert!(model.settle(), "the run ends");
    let older_id =
        crate::event::outgoing_event_id("", "run-1", crate::event::TaskEventKind::Finished);
    {
        let mut recorded = model.recorded.borrow_mut();
        recorded.done = false;
        recorded.finished = None;
    }
    let sent = model.sent.borrow().len();
    assert!(model.settle(), "the run ends again");
    let status = model.recorded.borrow().clone();
    assert!(status.done, "{status:?}");
    let sent = model.sent.borrow()[sent..].to_vec();
    assert_eq!(sent.iter().map(kind_of).collect::<Vec<_>>(), ["finished"]);
    assert_eq!(sent[0].id(), older_id);
    assert_eq!(*model.created.borrow(), [0], "no task again");
}
