use serde_json::json;

use super::*;

pub(crate) const T0: &str = "2026-12-01T10:00:00Z";

pub(crate) fn at(seconds: i64) -> Timestamp {
    T0.parse::<Timestamp>().unwrap() + SignedDuration::from_secs(seconds)
}

pub(crate) fn limits() -> Limits {
    Limits {
        missing_job_grace: Duration::from_secs(30),
        never_started_timeout: Duration::from_secs(300),
        delivery: RetryPolicy {
            give_up_after: Duration::from_secs(600),
            ..RetryPolicy::default()
        },
        dead_letter: false,
        notification: RetryPolicy {
            retries: Some(2),
            ..RetryPolicy::default()
        },
        retention: None,
    }
}

/// A run of `tasks` tasks for an event of `event_type`; the task at `files_on` stages a file.
pub(crate) fn run_of(
    tasks: usize,
    files_on: Option<usize>,
    event_type: &str,
    silent: bool,
) -> JobRun {
    let files: Vec<serde_json::Value> = match files_on {
        Some(on) => (0..tasks)
            .map(|i| {
                if i == on {
                    json!([{"key": "f0", "path": "/keptn/a", "executable": false}])
                } else {
                    json!([])
                }
            })
            .collect(),
        None => Vec::new(),
    };
    serde_json::from_value(json!({
        "apiVersion": "job-executor.dev/v1alpha1",
        "kind": "JobRun",
        "metadata": {"name": "run-1", "namespace": "default", "uid": "u-1",
                     "creationTimestamp": T0},
        "spec": {
            "event": {"specversion": "1.0", "id": "e-1", "source": "test", "type": event_type,
                      "shkeptncontext": "c-1",
                      "data": {"project": "p", "stage": "s", "service": "svc"}},
            "action": {"index": 0, "name": "act", "silent": silent,
                       "tasks": (0..tasks).map(|i| json!({"name": format!("t{i}"), "image": "alpine"}))
                           .collect::<Vec<_>>(),
                       "files": files}
        }
    }))
    .unwrap()
}

pub(crate) fn triggered(tasks: usize) -> JobRun {
    run_of(tasks, None, "sh.keptn.event.test.triggered", false)
}

/// The status of `run` as first initialised at T0, recorded.
fn initialised(run: &JobRun) -> JobRunStatus {
    let mut status = JobRunStatus::default();
    initialise(run, &mut status, at(0));
    status
}

fn delivered(delivery: &mut Option<Box<Delivery>>) {
    if let Some(d) = delivery.as_mut() {
        d.state = DeliveryState::Delivered;
    }
}

/// Records the end of task `index` without a message or logs.
fn end(run: &JobRun, status: &mut JobRunStatus, index: usize, phase: TaskPhase, at: Timestamp) {
    record_task_end(run, status, index, phase, None, None, at);
}

/// `decide` with the status recorded as it is.
fn next(run: &JobRun, status: &JobRunStatus, job: JobSeen, now: Timestamp) -> Step {
    next_with(run, status, status, job, false, now, &limits())
}

fn next_with(
    run: &JobRun,
    status: &JobRunStatus,
    persisted: &JobRunStatus,
    job: JobSeen,
    files_made: bool,
    now: Timestamp,
    limits: &Limits,
) -> Step {
    // The same for every task that started; a pending task's Job is not there (gone, when
    // `job` says so: a lookup found none).
    let jobs: Vec<JobSeen> = (status.tasks.iter())
        .map(|task| match (&job, task.phase) {
            (JobSeen::Gone, _) => JobSeen::Gone,
            (_, TaskPhase::Pending) => JobSeen::NotCached,
            _ => job.clone(),
        })
        .collect();
    decide(&Facts {
        run,
        status,
        persisted,
        jobs: &jobs,
        files_made,
        group: None,
        refused: &[],
        now,
        limits,
    })
}

/// `decide` with the status recorded as it is, and each task's Job as `jobs` says.
fn decide_seeing(run: &JobRun, status: &JobRunStatus, jobs: &[JobSeen], now: Timestamp) -> Step {
    decide(&Facts {
        run,
        status,
        persisted: status,
        jobs,
        files_made: false,
        group: None,
        refused: &[],
        now,
        limits: &limits(),
    })
}

/// Task 0 running since T0, `.started` delivered.
fn running(run: &JobRun) -> JobRunStatus {
    let mut status = initialised(run);
    delivered(&mut status.started);
    record_job(&mut status, 0, "run-1-0".into(), at(0));
    status
}

fn stuck() -> Option<Stuck> {
    Some(Stuck {
        pod: "run-1-0-abc".into(),
        reason: "ImagePullBackOff".into(),
        message: "container task: back-off".into(),
        created: None,
    })
}

#[test]
fn a_new_run_sends_started_then_creates_its_first_job() {
    let run = triggered(2);
    let mut status = initialised(&run);
    assert_eq!(status.phase, RunPhase::Running);
    assert_eq!(status.current_task, Some(0));
    assert_eq!(
        status.started.as_ref().map(|d| (d.id.as_str(), d.state)),
        Some((
            &*outgoing_event_id("u-1", "run-1", TaskEventKind::Started),
            DeliveryState::Pending
        )),
        "the .started to send, under the id every attempt carries"
    );
    assert_eq!(
        next(&run, &status, JobSeen::NotCached, at(0)),
        Step::Send(TaskEventKind::Started)
    );
    delivered(&mut status.started);
    assert_eq!(
        next(&run, &status, JobSeen::NotCached, at(0)),
        Step::CreateJob(0)
    );
    // A `.started` that waits for its next attempt does not hold the tasks up.
    let mut retrying = initialised(&run);
    retrying.started.as_mut().unwrap().next_attempt = Some(at(5).to_string());
    assert_eq!(
        next(&run, &retrying, JobSeen::NotCached, at(0)),
        Step::CreateJob(0)
    );
}

#[test]
fn the_first_task_with_files_makes_the_config_map_first() {
    let run = run_of(3, Some(1), "sh.keptn.event.test.triggered", false);
    let mut status = initialised(&run);
    delivered(&mut status.started);
    let persisted = status.clone();
    assert_eq!(
        next(&run, &status, JobSeen::NotCached, at(0)),
        Step::CreateJob(0)
    );
    record_job(&mut status, 0, "run-1-0".into(), at(0));
    end(&run, &mut status, 0, TaskPhase::Succeeded, at(1));
    let step = |files_made| {
        next_with(
            &run,
            &status,
            &persisted,
            JobSeen::NotCached,
            files_made,
            at(1),
            &limits(),
        )
    };
    assert_eq!(step(false), Step::CreateFiles(1));
    assert_eq!(step(true), Step::CreateJob(1));
}

#[test]
fn a_running_task_waits_for_its_job() {
    let run = triggered(1);
    let status = running(&run);
    let before = initialised(&run);
    let cases: Vec<(&str, &JobRunStatus, JobSeen, i64, Step)> = vec![
        (
            "created, not recorded",
            &before,
            JobSeen::NotCached,
            0,
            Step::Record(Record::BeforeWaiting),
        ),
        (
            "not in the watch yet",
            &status,
            JobSeen::NotCached,
            5,
            Step::Wait(Some(Duration::from_secs(25))),
        ),
        (
            "missing past the grace",
            &status,
            JobSeen::NotCached,
            30,
            Step::LookUpJob(0),
        ),
        (
            "deleted behind our back",
            &status,
            JobSeen::Gone,
            31,
            Step::EndTask {
                index: 0,
                phase: TaskPhase::Failed,
                message: Some(
                    "the Job run-1-0 is gone and its end was not seen (deleted, or removed by \
                     its ttlSecondsAfterFinished while no operator watched)"
                        .into(),
                ),
                read_logs: false,
                outputs: BTreeMap::new(),
            },
        ),
        (
            "running",
            &status,
            JobSeen::Running { stuck: None },
            3600,
            Step::Wait(None),
        ),
        (
            "a pod that cannot start, within the timeout",
            &status,
            JobSeen::Running { stuck: stuck() },
            10,
            Step::Wait(Some(Duration::from_secs(290))),
        ),
        (
            "a pod that never started",
            &status,
            JobSeen::Running { stuck: stuck() },
            300,
            Step::StopJob {
                index: 0,
                message: "pod run-1-0-abc never started within 300s: ImagePullBackOff: \
                          container task: back-off"
                    .into(),
            },
        ),
        (
            "a pod made again after one failed, stuck for 10 s of the task's hour",
            &status,
            JobSeen::Running {
                stuck: stuck().map(|stuck| Stuck {
                    created: Some(at(3590)),
                    ..stuck
                }),
            },
            3600,
            Step::Wait(Some(Duration::from_secs(290))),
        ),
        (
            "… and stuck for the whole timeout",
            &status,
            JobSeen::Running {
                stuck: stuck().map(|stuck| Stuck {
                    created: Some(at(3590)),
                    ..stuck
                }),
            },
            3890,
            Step::StopJob {
                index: 0,
                message: "pod run-1-0-abc never started within 300s: ImagePullBackOff: \
                          container task: back-off"
                    .into(),
            },
        ),
        (
            "a Job that made no pod yet",
            &status,
            JobSeen::NoPod {
                warning: NoPodWarning::NotAsked,
            },
            10,
            Step::Wait(Some(Duration::from_secs(290))),
        ),
        (
            "a Job that made no pod within the timeout: its Events are asked why",
            &status,
            JobSeen::NoPod {
                warning: NoPodWarning::NotAsked,
            },
            300,
            Step::AskWhyNoPod(0),
        ),
        (
            "… they say nothing: the Job controller is busy, it is waited for",
            &status,
            JobSeen::NoPod {
                warning: NoPodWarning::Nothing,
            },
            300,
            Step::Wait(Some(NO_POD_RECHECK)),
        ),
        (
            "… they say why: the Job is stopped",
            &status,
            JobSeen::NoPod {
                warning: NoPodWarning::Said("FailedCreate: Error creating: forbidden".into()),
            },
            300,
            Step::StopJob {
                index: 0,
                message: "the Job run-1-0 made no pod within 300s: FailedCreate: Error \
                          creating: forbidden"
                    .into(),
            },
        ),
        (
            "complete",
            &status,
            JobSeen::Succeeded {
                message: None,
                pods_seen: true,
                succeeded_pod_gone: false,
            },
            60,
            Step::EndTask {
                index: 0,
                phase: TaskPhase::Succeeded,
                message: None,
                read_logs: true,
                outputs: BTreeMap::new(),
            },
        ),
        (
            "complete, its pod not in the watch yet",
            &status,
            JobSeen::Succeeded {
                message: None,
                pods_seen: false,
                succeeded_pod_gone: false,
            },
            10,
            Step::Wait(Some(Duration::from_secs(20))),
        ),
        (
            "complete, no pod of it left",
            &status,
            JobSeen::Succeeded {
                message: None,
                pods_seen: false,
                succeeded_pod_gone: false,
            },
            30,
            Step::EndTask {
                index: 0,
                phase: TaskPhase::Succeeded,
                message: None,
                read_logs: true,
                outputs: BTreeMap::new(),
            },
        ),
        (
            "failed, its pod not in the watch yet",
            &status,
            JobSeen::Failed {
                reason: "BackoffLimitExceeded".into(),
                message: String::new(),
                pods_seen: false,
                stopping: false,
                never_started: None,
                causes: None,
            },
            29,
            Step::Wait(Some(Duration::from_secs(1))),
        ),
        (
            "failed without a message",
            &status,
            JobSeen::Failed {
                reason: "BackoffLimitExceeded".into(),
                message: String::new(),
                pods_seen: true,
                stopping: false,
                never_started: None,
                causes: None,
            },
            60,
            Step::EndTask {
                index: 0,
                phase: TaskPhase::Failed,
                message: Some("BackoffLimitExceeded".into()),
                read_logs: true,
                outputs: BTreeMap::new(),
            },
        ),
        (
            "failed",
            &status,
            JobSeen::Failed {
                reason: "DeadlineExceeded".into(),
                message: "Job was active longer than specified deadline".into(),
                pods_seen: true,
                stopping: false,
                never_started: None,
                causes: None,
            },
            60,
            Step::EndTask {
                index: 0,
                phase: TaskPhase::Failed,
                message: Some(
                    "DeadlineExceeded: Job was active longer than specified deadline".into(),
                ),
                read_logs: true,
                outputs: BTreeMap::new(),
            },
        ),
        (
            "failing: its pods stop, their logs are read",
            &status,
            JobSeen::Failed {
                reason: "DeadlineExceeded".into(),
                message: "Job was active longer than specified deadline".into(),
                pods_seen: true,
                stopping: true,
                never_started: None,
                causes: None,
            },
            60,
            Step::ReadLogs(0),
        ),
        (
            "failing, its pods not in the watch: the end is waited for",
            &status,
            JobSeen::Failed {
                reason: "DeadlineExceeded".into(),
                message: String::new(),
                pods_seen: false,
                stopping: true,
                never_started: None,
                causes: None,
            },
            60,
            Step::Wait(Some(STOPPING_POD_WAIT)),
        ),
    ];
    for (case, persisted, job, seconds, expected) in cases {
        let step = next_with(&run, &status, persisted, job, false, at(seconds), &limits());
        assert_eq!(step, expected, "{case}");
    }
}

#[test]
fn a_delivery_retry_and_a_task_deadline_wake_at_the_earlier() {
    let run = triggered(1);
    let mut status = initialised(&run);
    status.started.as_mut().unwrap().next_attempt = Some(at(4).to_string());
    record_job(&mut status, 0, "run-1-0".into(), at(0));
    assert_eq!(
        next(&run, &status, JobSeen::NotCached, at(0)),
        Step::Wait(Some(Duration::from_secs(4)))
    );
    assert_eq!(
        next(&run, &status, JobSeen::NotCached, at(4)),
        Step::Send(TaskEventKind::Started),
        "the retry is due"
    );
    status.started.as_mut().unwrap().next_attempt = Some(at(40).to_string());
    assert_eq!(
        next(&run, &status, JobSeen::NotCached, at(0)),
        Step::Wait(Some(Duration::from_secs(30))),
        "the grace ends first"
    );
}

/// The run after its only task succeeded at T0 + 60 s; `.started` delivered.
fn finished(run: &JobRun) -> JobRunStatus {
    let mut status = running(run);
    record_task_end(
        run,
        &mut status,
        0,
        TaskPhase::Succeeded,
        None,
        Some("ok".into()),
        at(60),
    );
    status
}

#[test]
fn finished_is_sent_only_once_the_outcome_is_recorded() {
    let run = triggered(1);
    let status = finished(&run);
    assert_eq!(status.phase, RunPhase::Succeeded);
    assert_eq!(
        status.finished.as_ref().map(|d| d.state),
        Some(DeliveryState::Pending),
        "a run is not done before its .finished is sent"
    );
    assert!(!status.is_done());
    let before = running(&run);
    assert_eq!(
        next_with(
            &run,
            &status,
            &before,
            JobSeen::Succeeded {
                message: None,
                pods_seen: true,
                succeeded_pod_gone: false,
            },
            false,
            at(60),
            &limits()
        ),
        Step::Record(Record::BeforeFinished)
    );
    assert_eq!(
        next(&run, &status, JobSeen::NotCached, at(60)),
        Step::Send(TaskEventKind::Finished)
    );
}

#[test]
fn finished_follows_started() {
    let run = triggered(1);
    let mut status = finished(&run);
    let started = status.started.as_mut().unwrap();
    started.state = DeliveryState::Pending;
    started.next_attempt = Some(at(70).to_string());
    assert_eq!(
        next(&run, &status, JobSeen::NotCached, at(60)),
        Step::Wait(Some(Duration::from_secs(10)))
    );
    assert_eq!(
        next(&run, &status, JobSeen::NotCached, at(70)),
        Step::Send(TaskEventKind::Started)
    );
    // A `.started` given up does not hold `.finished` back.
    status.started.as_mut().unwrap().state = DeliveryState::GaveUp;
    assert_eq!(
        next(&run, &status, JobSeen::NotCached, at(70)),
        Step::Send(TaskEventKind::Finished)
    );
    status.finished.as_mut().unwrap().next_attempt = Some(at(73).to_string());
    assert_eq!(
        next(&run, &status, JobSeen::NotCached, at(70)),
        Step::Wait(Some(Duration::from_secs(3)))
    );
}

#[test]
fn a_done_run_waits_for_nothing_and_its_retention_ends_as_configured() {
    let run = triggered(1);
    let mut status = finished(&run);
    delivered(&mut status.finished);
    assert!(status.is_done());
    let kept = Limits {
        retention: Some(Duration::from_secs(100)),
        ..limits()
    };
    for limits in [limits(), kept.clone()] {
        // The retained runs' watch deletes it, not the controller (`retained`).
        assert_eq!(
            next_with(
                &run,
                &status,
                &status,
                JobSeen::NotCached,
                false,
                at(1000),
                &limits
            ),
            Step::Wait(None)
        );
    }
    let created = run.metadata.creation_timestamp.as_ref();
    let until = |status: &JobRunStatus, limits: &Limits| {
        retained_until(
            created,
            status.finished.as_deref(),
            status.finished_at.as_deref(),
            limits,
        )
    };
    assert_eq!(
        until(&status, &limits()),
        None,
        "kept for good without retention"
    );
    assert_eq!(until(&status, &kept), Some(at(160)));
    // A run finished by an older version (no `finishedAt`) counts from its creation.
    let mut old = status.clone();
    old.finished_at = None;
    assert_eq!(until(&old, &kept), Some(at(100)));
    // What could not be delivered stays.
    let mut gave_up = status.clone();
    gave_up.finished.as_mut().unwrap().state = DeliveryState::GaveUp;
    assert_eq!(until(&gave_up, &kept), None);
}

#[test]
fn silent_runs_and_other_events_send_nothing() {
    for run in [
        run_of(1, None, "sh.keptn.event.test.triggered", true),
        run_of(1, None, "sh.keptn.event.test.finished", false),
        run_of(1, None, "com.example.build", false),
    ] {
        let status = initialised(&run);
        assert_eq!((&status.started, &status.finished), (&None, &None));
        assert_eq!(
            next(&run, &status, JobSeen::NotCached, at(0)),
            Step::CreateJob(0)
        );
        let mut status = status;
        record_job(&mut status, 0, "run-1-0".into(), at(0));
        let persisted = status.clone();
        end(&run, &mut status, 0, TaskPhase::Succeeded, at(1));
        assert!(status.is_done());
        let step = next_with(
            &run,
            &status,
            &persisted,
            JobSeen::Succeeded {
                message: None,
                pods_seen: true,
                succeeded_pod_gone: false,
            },
            false,
            at(1),
            &limits(),
        );
        assert_eq!(step, Step::Record(Record::BeforeWaiting));
        assert_eq!(
            next(
                &run,
                &status,
                JobSeen::Succeeded {
                    message: None,
                    pods_seen: true,
                    succeeded_pod_gone: false,
                },
                at(1)
            ),
            Step::Wait(None)
        );
    }
}

#[test]
fn runs_with_nothing_to_run_finish_at_once() {
    let mut failing = triggered(2);
    failing.spec.failure = Some("task 'a' uses image \"x\", which is not allowed".into());
    let status = initialised(&failing);
    assert_eq!(status.phase, RunPhase::Failed);
    assert_eq!(
        status
            .outcome
            .as_ref()
            .map(|o| (o.status, o.message.as_str())),
        Some((
            OutcomeStatus::Errored,
            "task 'a' uses image \"x\", which is not allowed"
        ))
    );
    assert_eq!(status.finished_at.as_deref(), Some(T0));
    let empty = triggered(0);
    let status = initialised(&empty);
    assert_eq!(status.current_task, None);
    assert_eq!(status.phase, RunPhase::Succeeded);
    assert_eq!(
        status.outcome.as_ref().map(|o| o.message.as_str()),
        Some("The action has no tasks")
    );
    // `.started` goes first, then the outcome is recorded, then `.finished`.
    let fresh = JobRunStatus::default();
    assert_eq!(
        next_with(
            &empty,
            &status,
            &fresh,
            JobSeen::NotCached,
            false,
            at(0),
            &limits()
        ),
        Step::Send(TaskEventKind::Started)
    );
    let mut sent = status.clone();
    delivered(&mut sent.started);
    assert_eq!(
        next_with(
            &empty,
            &sent,
            &fresh,
            JobSeen::NotCached,
            false,
            at(0),
            &limits()
        ),
        Step::Record(Record::BeforeFinished)
    );
}

/// Under the id that version gave it: derived from the run's name alone (the uid came later).
#[test]
fn a_run_finished_by_an_older_version_still_sends_finished() {
    let run = triggered(1);
    let mut status = finished(&run);
    status.finished = None;
    initialise(&run, &mut status, at(100));
    assert_eq!(
        status.finished.as_ref().map(|d| (d.state, d.id.clone())),
        Some((
            DeliveryState::Pending,
            outgoing_event_id("", "run-1", TaskEventKind::Finished)
        ))
    );
}

#[test]
fn tasks_move_on_only_after_success() {
    let run = triggered(3);
    let mut status = running(&run);
    record_task_end(
        &run,
        &mut status,
        0,
        TaskPhase::Succeeded,
        None,
        Some(String::new()),
        at(5),
    );
    assert_eq!(
        status.current_task,
        Some(0),
        "until the next task's Job is recorded"
    );
    assert_eq!(status.phase, RunPhase::Running);
    assert_eq!(status.tasks[0].logs, None, "empty logs are not kept");
    assert_eq!(
        status.tasks[0].completion_time.as_deref(),
        Some(&*at(5).to_string())
    );
    record_job(&mut status, 1, "run-1-1".into(), at(5));
    record_task_end(
        &run,
        &mut status,
        1,
        TaskPhase::Failed,
        Some("BackoffLimitExceeded".into()),
        Some("boom".into()),
        at(9),
    );
    assert_eq!(
        status.current_task,
        Some(1),
        "the failed task stays current"
    );
    assert_eq!(status.phase, RunPhase::Failed);
    assert_eq!(
        (status.tasks[2].phase, &status.tasks[2].message),
        (TaskPhase::Skipped, &None),
        "never started, and not mentioned (as Keptn's service did)"
    );
    let outcome = status.outcome.clone().unwrap();
    assert_eq!(outcome.status, OutcomeStatus::Errored);
    assert!(
        outcome
            .message
            .contains("Task 't1' failed: BackoffLimitExceeded\nLogs:\nboom"),
        "{}",
        outcome.message
    );
}

/// A restart between the next task's Job and the write that records it (with this task's
/// end), and this task's Job removed by its TTL before an operator was back: the next task's
/// Job, made only once this one succeeded, says it did.
#[test]
fn a_job_gone_unseen_succeeded_when_a_task_that_needs_it_has_a_job() {
    let decide_with =
        |run: &JobRun, jobs: &[JobSeen]| decide_seeing(run, &running(run), jobs, at(31));
    let gone = JobSeen::Gone;
    let unknown = JobSeen::NotCached;
    let made = JobSeen::Running { stuck: None };
    let run = triggered(3);
    assert_eq!(
        decide_with(&run, &[gone.clone(), unknown.clone(), unknown.clone()]),
        Step::LookUpJob(1),
        "the next task's Job is looked up"
    );
    let succeeded = Step::EndTask {
        index: 0,
        phase: TaskPhase::Succeeded,
        message: Some(
            "the Job run-1-0 is gone and its end was not seen (removed by its \
             ttlSecondsAfterFinished while no operator watched); it succeeded, as the Job of \
             task t1, made only once it had, shows; its logs and outputs went with it"
                .into(),
        ),
        read_logs: false,
        outputs: BTreeMap::new(),
    };
    assert_eq!(
        decide_with(&run, &[gone.clone(), made.clone(), unknown.clone()]),
        succeeded
    );
    let Step::EndTask { phase, .. } = decide_with(&run, &[gone.clone(), gone.clone(), unknown])
    else {
        panic!("the task ends");
    };
    assert_eq!(phase, TaskPhase::Failed, "no Job says otherwise");

    // Of the tasks that need it, any one's Job will do; one that needs another task does not.
    let run = diamond();
    let Step::EndTask { phase, message, .. } =
        decide_with(&run, &[gone.clone(), gone.clone(), made.clone(), made])
    else {
        panic!("the task ends");
    };
    assert_eq!(phase, TaskPhase::Succeeded);
    assert!(message.is_some_and(|m| m.contains("task t2")));
    let Step::EndTask { phase, .. } = decide_with(
        &graph_run(&[vec![], vec![], vec![1]], None),
        &[gone, JobSeen::NotCached, JobSeen::Running { stuck: None }],
    ) else {
        panic!("the task ends");
    };
    assert_eq!(phase, TaskPhase::Failed, "t2 needs t1, not t0");
}

/// A task that has not started, whose Job the watch or a lookup shows (made just before a
/// restart that lost the record of it), adopts that Job: it is neither made nor rendered again,
/// nor are its files.
#[test]
fn a_task_whose_job_was_made_before_a_restart_adopts_it() {
    for files_on in [None, Some(1)] {
        let run = run_of(2, files_on, "sh.keptn.event.test.triggered", false);
        let mut status = running(&run);
        end(&run, &mut status, 0, TaskPhase::Succeeded, at(5));
        let step = |jobs: &[JobSeen]| decide_seeing(&run, &status, jobs, at(5));
        let first = if files_on.is_some() {
            Step::CreateFiles(1)
        } else {
            Step::CreateJob(1)
        };
        assert_eq!(step(&[JobSeen::NotCached, JobSeen::NotCached]), first);
        assert_eq!(step(&[JobSeen::NotCached, JobSeen::Gone]), first);
        let made = [JobSeen::NotCached, JobSeen::Running { stuck: None }];
        assert_eq!(step(&made), Step::AdoptJob(1));
    }
}

/// A Job made is recorded before anything that may take a timeout's time (a notification, a
/// delivery): a restart meanwhile would not know it made the Job, and once the Job is gone (its
/// TTL) would make it again. A Job made before a restart is adopted first.
#[test]
fn a_job_made_is_recorded_before_a_notification_or_a_delivery() {
    let recorded_as = |run: &JobRun, status: &JobRunStatus, before: &JobRunStatus| {
        let job = JobSeen::Running { stuck: None };
        next_with(run, status, before, job, false, at(0), &limits())
    };
    let run = notifying(triggered(2), &["slack:team:started"]);
    let mut before = initialised(&run);
    delivered(&mut before.started);
    let made = running(&run);
    assert_eq!(
        recorded_as(&run, &made, &before),
        Step::Record(Record::JobsMade)
    );
    // Recorded, the notification goes.
    assert_eq!(
        next(&run, &made, JobSeen::Running { stuck: None }, at(0)),
        Step::Notify(0)
    );
    // The same before `.started` is tried again.
    let run = triggered(2);
    let before = initialised(&run);
    let mut made = before.clone();
    record_job(&mut made, 0, "run-1-0".into(), at(0));
    assert_eq!(
        recorded_as(&run, &made, &before),
        Step::Record(Record::JobsMade)
    );
    // Made before a restart lost its record: adopted before `.started` is sent.
    let seeing = |jobs: &[JobSeen]| decide_seeing(&run, &before, jobs, at(0));
    assert_eq!(
        seeing(&[JobSeen::NotCached, JobSeen::NotCached]),
        Step::Send(TaskEventKind::Started)
    );
    assert_eq!(
        seeing(&[JobSeen::Running { stuck: None }, JobSeen::NotCached]),
        Step::AdoptJob(0)
    );
    // A task that cannot start yet is not adopted (its Job says the task it needs succeeded,
    // which the task's own end records).
    let mut one_ended = before.clone();
    record_job(&mut one_ended, 0, "run-1-0".into(), at(0));
    let seeing = |jobs: &[JobSeen]| decide_seeing(&run, &one_ended, jobs, at(0));
    assert_eq!(
        seeing(&[
            JobSeen::Running { stuck: None },
            JobSeen::Running { stuck: None }
        ]),
        Step::Send(TaskEventKind::Started)
    );
}

/// A halt asks for a running task's Job missing from the watch, and a Job gone ends its task
/// as it would without the halt: succeeded when a task that needs it has a Job (made before a
/// restart lost the record of both), which the halt then deletes as that task's.
#[test]
fn a_halt_finds_a_job_made_before_a_restart_and_stops_it() {
    let run = cancelled(triggered(2), "ci");
    let mut status = running(&run);
    let step = |status: &JobRunStatus, jobs: &[JobSeen]| decide_seeing(&run, status, jobs, at(5));
    let made = JobSeen::Running { stuck: None };
    assert_eq!(
        step(&status, &[JobSeen::NotCached, JobSeen::NotCached]),
        Step::LookUpJob(0)
    );
    assert_eq!(
        step(&status, &[JobSeen::Gone, JobSeen::NotCached]),
        Step::LookUpJob(1)
    );
    let Step::EndTask {
        index: 0, phase, ..
    } = step(&status, &[JobSeen::Gone, made.clone()])
    else {
        panic!("task 0 ends");
    };
    assert_eq!(phase, TaskPhase::Succeeded, "as task 1's Job says");
    // Without a witness it is stopped by the halt, as a running task: the run ends cancelled.
    assert_eq!(
        step(&status, &[JobSeen::Gone, JobSeen::Gone]),
        Step::HaltTask {
            index: 0,
            phase: TaskPhase::Cancelled,
            message: "cancelled by ci".into(),
        }
    );
    end(&run, &mut status, 0, TaskPhase::Succeeded, at(5));
    // Task 1's Job ran: adopted, to be stopped as a running task is (its pods waited for),
    // not skipped.
    assert_eq!(
        step(&status, &[JobSeen::NotCached, made]),
        Step::AdoptJob(1)
    );
    assert!(matches!(
        step(&status, &[JobSeen::NotCached, JobSeen::NotCached]),
        Step::HaltTask {
            index: 1,
            phase: TaskPhase::Skipped,
            ..
        }
    ));
}

fn transient(retry_after: Option<Duration>) -> DeliveryError {
    DeliveryError::Transient {
        message: "connection refused".into(),
        retry_after,
    }
}

#[test]
fn delivery_attempts_retry_then_give_up() {
    let fresh = || Delivery {
        id: "d-1".into(),
        ..Default::default()
    };
    let give_up = &limits().delivery;

    let mut delivery = fresh();
    assert_eq!(
        record_attempt(&mut delivery, Ok(()), at(0), give_up, false),
        Attempt::Delivered
    );
    assert_eq!(
        (
            delivery.state,
            delivery.attempts,
            delivery.first_attempt.as_deref(),
            delivery.delivered_at.as_deref()
        ),
        (DeliveryState::Delivered, 1, Some(T0), Some(T0))
    );

    let mut delivery = fresh();
    let error = transient(Some(Duration::from_secs(30)));
    assert_eq!(
        record_attempt(&mut delivery, Err(&error), at(0), give_up, false),
        Attempt::Retry
    );
    assert_eq!(delivery.state, DeliveryState::Pending);
    assert_eq!(delivery.last_error.as_deref(), Some("connection refused"));
    let next: Timestamp = delivery.next_attempt.as_deref().unwrap().parse().unwrap();
    assert_eq!(next, at(30), "the sink's Retry-After is honoured");
    // The time attribute stays the first attempt's.
    assert_eq!(first_attempt(&mut delivery, at(30)), at(0));
    assert_eq!(
        record_attempt(
            &mut delivery,
            Err(&transient(None)),
            at(599),
            give_up,
            false
        ),
        Attempt::Retry
    );
    assert_eq!(delivery.attempts, 2);
    assert_eq!(
        record_attempt(
            &mut delivery,
            Err(&transient(None)),
            at(600),
            give_up,
            false
        ),
        Attempt::GaveUp,
        "give up once the time is over"
    );
    assert_eq!(delivery.state, DeliveryState::GaveUp);

    // A sink asking to wait past the give-up time (600 s here) is tried again at that time,
    // and given up then.
    let mut delivery = fresh();
    let a_day = transient(Some(Duration::from_secs(86_400)));
    assert_eq!(
        record_attempt(&mut delivery, Err(&a_day), at(100), give_up, false),
        Attempt::Retry
    );
    let next: Timestamp = delivery.next_attempt.as_deref().unwrap().parse().unwrap();
    assert_eq!(next, at(700), "at the give-up time, not a day later");
    assert_eq!(
        record_attempt(&mut delivery, Err(&a_day), next, give_up, false),
        Attempt::GaveUp
    );
    // A wait no timestamp can hold is not tried at once in a loop either.
    let mut delivery = fresh();
    let never = transient(Some(Duration::from_secs(u64::MAX / 4)));
    assert_eq!(
        record_attempt(&mut delivery, Err(&never), at(0), give_up, false),
        Attempt::Retry
    );
    let next: Timestamp = delivery.next_attempt.as_deref().unwrap().parse().unwrap();
    assert_eq!(next, at(600));

    let mut delivery = fresh();
    let refused = DeliveryError::Rejected {
        status: 400,
        message: "bad event".into(),
    };
    assert_eq!(
        record_attempt(&mut delivery, Err(&refused), at(0), give_up, false),
        Attempt::GaveUp,
        "a refusal is not retried"
    );
    assert_eq!(
        delivery.last_error.as_deref(),
        Some("the sink refused the event: 400 bad event")
    );
}

#[test]
fn refused_credentials_are_retried_while_a_rotated_token_may_still_come() {
    let give_up = &limits().delivery;
    let mut delivery = Delivery {
        id: "d-1".into(),
        ..Default::default()
    };
    let refused = DeliveryError::Unauthorized {
        status: 401,
        message: "token expired".into(),
    };
    assert_eq!(
        record_attempt(&mut delivery, Err(&refused), at(0), give_up, false),
        Attempt::Retry
    );
    let late = CREDENTIALS_GRACE.as_secs() as i64 - 1;
    assert_eq!(
        record_attempt(&mut delivery, Err(&refused), at(late), give_up, false),
        Attempt::Retry
    );
    // The last try comes when the grace ends, not a backoff later.
    assert_eq!(
        delivery.next_attempt.as_deref(),
        Some(at(late + 1).to_string().as_str())
    );
    assert_eq!(
        record_attempt(&mut delivery, Err(&refused), at(late + 1), give_up, false),
        Attempt::GaveUp,
        "a wrong token is given up once a rotation would have come"
    );
    assert_eq!(
        delivery.last_error.as_deref(),
        Some("the sink refused the credentials: 401 token expired")
    );
}

#[test]
fn finished_follows_a_started_given_up_while_its_dead_letter_is_retried() {
    let run = triggered(1);
    let limits = Limits {
        dead_letter: true,
        ..limits()
    };
    let mut status = finished(&run);
    status.outcome = Some(report::outcome_of_tasks(&status));
    let started = status.started.as_mut().unwrap();
    started.state = DeliveryState::GaveUp;
    started.dead_letter = Some(DeadLetter {
        state: DeliveryState::Pending,
        next_attempt: Some(at(3600).to_string()),
        ..DeadLetter::default()
    });
    assert_eq!(
        next_with(
            &run,
            &status,
            &status,
            JobSeen::NotCached,
            false,
            at(61),
            &limits
        ),
        Step::Send(TaskEventKind::Finished)
    );
}

#[test]
fn delivery_retries_are_counted_when_a_number_is_set() {
    let policy = RetryPolicy {
        retries: Some(2),
        ..limits().delivery
    };
    let mut delivery = Delivery {
        id: "d-1".into(),
        ..Default::default()
    };
    let outcomes: Vec<Attempt> = (0..3)
        .map(|i| record_attempt(&mut delivery, Err(&transient(None)), at(i), &policy, false))
        .collect();
    assert_eq!(
        outcomes,
        [Attempt::Retry, Attempt::Retry, Attempt::GaveUp],
        "the first attempt and two retries"
    );
    assert_eq!(delivery.next_attempt, None, "nothing due after giving up");
}

#[test]
fn a_given_up_event_goes_to_the_dead_letter_sink_and_the_status_says_so() {
    let policy = RetryPolicy {
        retries: Some(0),
        ..limits().delivery
    };
    let run = triggered(1);
    let mut status = finished(&run);
    let limits = Limits {
        dead_letter: true,
        delivery: policy,
        ..limits()
    };
    let finished = status.finished.as_mut().unwrap();
    let refused = DeliveryError::Rejected {
        status: 400,
        message: "bad event".into(),
    };
    assert_eq!(
        record_attempt(finished, Err(&refused), at(0), &policy, true),
        Attempt::GaveUp
    );
    assert_eq!(
        finished.dead_letter,
        Some(DeadLetter::default()),
        "the dead letter is due"
    );
    assert!(finished.in_progress(), "not done until it is dead-lettered");
    // The next step sends it again, to the dead-letter sink.
    assert_eq!(
        next_with(
            &run,
            &status,
            &status,
            JobSeen::NotCached,
            false,
            at(0),
            &limits
        ),
        Step::Send(TaskEventKind::Finished)
    );
    update_conditions(&mut status, at(0));
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == "EventsDelivered")
        .unwrap();
    assert_eq!(condition.reason, "GaveUp");
    assert!(
        condition
            .message
            .ends_with("sending the event to the dead-letter sink"),
        "{}",
        condition.message
    );

    // The dead-letter sink is down once, then takes it.
    let finished = status.finished.as_mut().unwrap();
    let down = transient(None);
    let unlimited = limits.delivery;
    assert_eq!(
        record_dead_letter_attempt(
            finished,
            Err(&down),
            at(1),
            &RetryPolicy {
                retries: None,
                ..unlimited
            }
        ),
        Attempt::Retry
    );
    assert!(finished.in_progress());
    assert_eq!(
        record_dead_letter_attempt(finished, Ok(()), at(5), &unlimited),
        Attempt::Delivered
    );
    assert!(!finished.in_progress());
    assert_eq!(
        finished.state,
        DeliveryState::GaveUp,
        "the sink never took it"
    );
    update_conditions(&mut status, at(5));
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == "EventsDelivered")
        .unwrap();
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("False", "DeadLettered")
    );
    assert!(status.is_done());
}

#[test]
fn conditions_follow_the_status_and_keep_their_transition_time() {
    let run = triggered(1);
    let mut status = finished(&run);
    update_conditions(&mut status, at(60));
    assert_eq!(
        status
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
            .collect::<Vec<_>>(),
        [
            ("Finished", "True", "Succeeded"),
            ("Succeeded", "True", "Succeeded")
        ]
    );
    assert_eq!(status.conditions[0].message, "Task 't0' finished");
    status.finished.as_mut().unwrap().state = DeliveryState::GaveUp;
    status.finished.as_mut().unwrap().last_error = Some("refused".into());
    update_conditions(&mut status, at(70));
    let delivered_condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == "EventsDelivered")
        .unwrap()
        .clone();
    assert_eq!(
        (
            delivered_condition.status.as_str(),
            delivered_condition.reason.as_str(),
            delivered_condition.message.as_str()
        ),
        ("False", "GaveUp", "refused")
    );
    update_conditions(&mut status, at(80));
    let finished_condition = &status.conditions[0];
    assert_eq!(
        finished_condition.last_transition_time,
        at(60).to_string(),
        "unchanged status, unchanged time"
    );
    let again = status
        .conditions
        .iter()
        .find(|c| c.type_ == "EventsDelivered")
        .unwrap();
    assert_eq!(again.last_transition_time, at(70).to_string());
    // A run that failed is Finished, and not Succeeded.
    let mut failed = finished(&run);
    failed.phase = RunPhase::Failed;
    update_conditions(&mut failed, at(60));
    let of = |type_: &str| {
        let c = failed.conditions.iter().find(|c| c.type_ == type_).unwrap();
        (c.status.clone(), c.reason.clone())
    };
    assert_eq!(of("Finished"), ("True".into(), "Failed".into()));
    assert_eq!(of("Succeeded"), ("False".into(), "Failed".into()));
}

/// A run whose task `i` (named `t<i>`) needs the tasks `needs[i]`.
pub(crate) fn graph_run(needs: &[Vec<usize>], files_on: Option<usize>) -> JobRun {
    let mut run = run_of(
        needs.len(),
        files_on,
        "sh.keptn.event.test.triggered",
        false,
    );
    for (task, needed) in run.spec.action.tasks.iter_mut().zip(needs) {
        task.needs = needed.iter().map(|i| format!("t{i}")).collect();
    }
    run
}

/// The diamond t0 → (t1, t2) → t3.
fn diamond() -> JobRun {
    graph_run(&[vec![], vec![0], vec![0], vec![1, 2]], None)
}

#[test]
fn independent_tasks_start_together_and_a_join_waits_for_both() {
    let run = diamond();
    let mut status = initialised(&run);
    delivered(&mut status.started);
    assert_eq!(
        next(&run, &status, JobSeen::NotCached, at(0)),
        Step::CreateJob(0)
    );
    record_job(&mut status, 0, "run-1-0".into(), at(0));
    end(&run, &mut status, 0, TaskPhase::Succeeded, at(1));
    let persisted = status.clone();
    let step = |status: &JobRunStatus| {
        next_with(
            &run,
            status,
            &persisted,
            JobSeen::Running { stuck: None },
            false,
            at(1),
            &limits(),
        )
    };
    assert_eq!(step(&status), Step::CreateJob(1));
    record_job(&mut status, 1, "run-1-1".into(), at(1));
    assert_eq!(step(&status), Step::CreateJob(2), "t2 does not wait for t1");
    record_job(&mut status, 2, "run-1-2".into(), at(1));
    assert_eq!(step(&status), Step::Record(Record::BeforeWaiting));
    end(&run, &mut status, 1, TaskPhase::Succeeded, at(2));
    assert_eq!(
        next(&run, &status, JobSeen::Running { stuck: None }, at(2)),
        Step::Wait(None),
        "t3 waits for t2 too"
    );
    end(&run, &mut status, 2, TaskPhase::Succeeded, at(3));
    assert_eq!(
        next(&run, &status, JobSeen::NotCached, at(3)),
        Step::CreateJob(3)
    );
}

#[test]
fn a_task_that_ended_is_recorded_before_another_starts() {
    // t0 and t2 started together; t0 succeeded, and t1, which needs it, is ready; t2's Job
    // has completed. A create of t1's Job that fails and is retried (the git host, an admission
    // webhook down) ends the reconcile: t2's end comes first, so it does not wait behind it
    // (its Job perhaps removed by its TTL meanwhile, and the task failed as gone).
    let run = graph_run(&[vec![], vec![0], vec![]], None);
    let mut status = initialised(&run);
    delivered(&mut status.started);
    record_job(&mut status, 0, "run-1-0".into(), at(0));
    record_job(&mut status, 2, "run-1-2".into(), at(0));
    end(&run, &mut status, 0, TaskPhase::Succeeded, at(1));
    let succeeded = JobSeen::Succeeded {
        message: None,
        pods_seen: true,
        succeeded_pod_gone: false,
    };
    let jobs = [succeeded.clone(), JobSeen::NotCached, succeeded];
    assert_eq!(
        decide_seeing(&run, &status, &jobs, at(2)),
        Step::EndTask {
            index: 2,
            phase: TaskPhase::Succeeded,
            message: None,
            read_logs: true,
            outputs: BTreeMap::new(),
        }
    );
    end(&run, &mut status, 2, TaskPhase::Succeeded, at(2));
    assert_eq!(
        decide_seeing(&run, &status, &jobs, at(2)),
        Step::CreateJob(1)
    );
}

#[test]
fn a_failure_skips_what_needs_it_and_the_rest_finishes() {
    let run = diamond();
    let mut status = initialised(&run);
    delivered(&mut status.started);
    record_job(&mut status, 0, "run-1-0".into(), at(0));
    end(&run, &mut status, 0, TaskPhase::Succeeded, at(1));
    record_job(&mut status, 1, "run-1-1".into(), at(1));
    record_job(&mut status, 2, "run-1-2".into(), at(1));
    let failed = Some("BackoffLimitExceeded".to_string());
    record_task_end(&run, &mut status, 1, TaskPhase::Failed, failed, None, at(2));
    assert_eq!(status.tasks[3].phase, TaskPhase::Skipped);
    assert_eq!(
        status.tasks[3].message.as_deref(),
        Some("it needs 't1', which failed")
    );
    assert_eq!(status.phase, RunPhase::Running, "t2 still runs");
    end(&run, &mut status, 2, TaskPhase::Succeeded, at(3));
    assert_eq!(status.phase, RunPhase::Failed);
    let message = &status.outcome.as_ref().unwrap().message;
    assert_eq!(
        message,
        "Task 't0' finished\n\nTask 't1' failed: BackoffLimitExceeded\n\nTask 't2' finished\n\n\
         Task 't3' skipped: it needs 't1', which failed"
    );
    // What needs a skipped task is skipped too, and says so.
    let chain = graph_run(&[vec![], vec![0], vec![1]], None);
    let mut status = initialised(&chain);
    record_job(&mut status, 0, "run-1-0".into(), at(0));
    end(&chain, &mut status, 0, TaskPhase::Failed, at(1));
    assert_eq!(
        status.tasks[2].message.as_deref(),
        Some("it needs 't1', which was skipped")
    );
}

#[test]
fn the_files_are_made_before_the_first_task_with_files_starts() {
    // t1 and t2 both start at once; t2 stages files.
    let run = graph_run(&[vec![], vec![0], vec![0]], Some(2));
    let mut status = initialised(&run);
    delivered(&mut status.started);
    record_job(&mut status, 0, "run-1-0".into(), at(0));
    end(&run, &mut status, 0, TaskPhase::Succeeded, at(1));
    let persisted = status.clone();
    let step = |status: &JobRunStatus, files_made| {
        next_with(
            &run,
            status,
            &persisted,
            JobSeen::NotCached,
            files_made,
            at(1),
            &limits(),
        )
    };
    assert_eq!(step(&status, false), Step::CreateJob(1));
    record_job(&mut status, 1, "run-1-1".into(), at(1));
    assert_eq!(step(&status, false), Step::CreateFiles(2));
    assert_eq!(step(&status, true), Step::CreateJob(2));
}

#[test]
fn the_summary_shows_every_task_up_to_ten() {
    let run = diamond();
    let mut status = initialised(&run);
    record_job(&mut status, 0, "run-1-0".into(), at(0));
    update_conditions(&mut status, at(0));
    assert_eq!(
        status.task_summary,
        "t0:Running t1:Pending t2:Pending t3:Pending"
    );
    let ten = triggered(10);
    assert!(
        task_summary(&initialised(&ten)).ends_with("t9:Pending"),
        "ten tasks are all shown, with nothing more to say"
    );
    let many = triggered(12);
    let status = initialised(&many);
    assert_eq!(
        task_summary(&status),
        "t0:Pending t1:Pending t2:Pending t3:Pending t4:Pending t5:Pending t6:Pending \
         t7:Pending t8:Pending t9:Pending (+2 more)"
    );
}

#[test]
fn files_that_could_not_be_made_for_one_task_are_tried_for_the_next() {
    // After t0, t1 and t2 start at once and both stage files; t1's could not be made (the
    // config's directory changed since, a ConfigMap refused): t2's Job would mount a ConfigMap
    // that is not there and never start. Tried for t2, they fail it too, saying why.
    let mut run = graph_run(&[vec![], vec![0], vec![0]], Some(1));
    run.spec.action.files[2] = run.spec.action.files[1].clone();
    let mut status = initialised(&run);
    delivered(&mut status.started);
    record_job(&mut status, 0, "run-1-0".into(), at(0));
    end(&run, &mut status, 0, TaskPhase::Succeeded, at(1));
    assert_eq!(
        next(&run, &status, JobSeen::NotCached, at(1)),
        Step::CreateFiles(1)
    );
    let why = Some("the files changed".to_string());
    record_task_end(&run, &mut status, 1, TaskPhase::Failed, why, None, at(1));
    assert_eq!(
        next(&run, &status, JobSeen::NotCached, at(1)),
        Step::CreateFiles(2)
    );
}

#[test]
fn the_files_are_made_once_not_again_for_a_later_task() {
    let mut run = run_of(2, Some(0), "sh.keptn.event.test.triggered", false);
    run.spec.action.files[1] = run.spec.action.files[0].clone();
    let mut status = initialised(&run);
    delivered(&mut status.started);
    assert_eq!(
        next(&run, &status, JobSeen::NotCached, at(0)),
        Step::CreateFiles(0)
    );
    record_job(&mut status, 0, "run-1-0".into(), at(0));
    end(&run, &mut status, 0, TaskPhase::Succeeded, at(1));
    // A later reconcile has not made them itself, but they exist since task 0 started.
    assert_eq!(
        next(&run, &status, JobSeen::NotCached, at(1)),
        Step::CreateJob(1)
    );
}

#[test]
fn attempts_are_counted_under_their_documented_labels() {
    // The values of `job_executor_deliveries_total{outcome}` (docs/operator.md).
    let labels = [Attempt::Delivered, Attempt::Retry, Attempt::GaveUp].map(Attempt::as_str);
    assert_eq!(labels, ["delivered", "retry", "gave_up"]);
}

fn cancelled(mut run: JobRun, value: &str) -> JobRun {
    run.metadata
        .annotations
        .get_or_insert_default()
        .insert(labels::CANCEL.into(), value.into());
    run
}

fn with_timeout(mut run: JobRun, seconds: u64) -> JobRun {
    run.spec.action.timeout_seconds = Some(seconds);
    run
}

#[test]
fn a_cancelled_run_reads_the_logs_and_deletes_the_running_job_then_skips_the_rest() {
    let run = cancelled(triggered(3), "alice: wrong artifact");
    let mut status = running(&run);
    let seen = JobSeen::Running { stuck: None };
    assert_eq!(
        next(&run, &status, seen.clone(), at(5)),
        Step::HaltTask {
            index: 0,
            phase: TaskPhase::Cancelled,
            message: "cancelled by alice: wrong artifact".into(),
        }
    );
    record_stopped(
        &mut status,
        0,
        TaskPhase::Cancelled,
        Some("cancelled by alice: wrong artifact".into()),
        Some("half done".into()),
        at(5),
    );
    assert!(!status.phase.is_finished(), "the run's end is its own step");
    let halt = Halt::Cancelled {
        by: "alice: wrong artifact".into(),
    };
    assert_eq!(next(&run, &status, seen, at(5)), Step::Halt(halt.clone()));
    record_halt(&run, &mut status, &halt, at(5));
    assert_eq!(status.phase, RunPhase::Cancelled);
    let outcome = status.outcome.clone().unwrap();
    assert_eq!(outcome.status, OutcomeStatus::Errored);
    assert_eq!(
        outcome.message,
        "Cancelled by alice: wrong artifact\n\n\
         Task 't0' cancelled by alice: wrong artifact\nLogs:\nhalf done\n\n\
         Task 't1' skipped: the run was cancelled by alice: wrong artifact before it started\n\n\
         Task 't2' skipped: the run was cancelled by alice: wrong artifact before it started"
    );
    assert_eq!(task_summary(&status), "t0:Cancelled t1:Skipped t2:Skipped");
    assert_eq!(
        status.finished.as_ref().map(|d| d.state),
        Some(DeliveryState::Pending),
        "the .finished reports the cancel"
    );
    assert_eq!(
        next(&run, &status, JobSeen::NotCached, at(5)),
        Step::Send(TaskEventKind::Finished)
    );
    update_conditions(&mut status, at(5));
    let finished = status.conditions.iter().find(|c| c.type_ == "Finished");
    assert_eq!(
        finished.map(|c| (c.reason.as_str(), c.message.as_str())),
        Some(("Cancelled", "Cancelled by alice: wrong artifact"))
    );
}

/// A Job that fails by its deadline while its pod never started (the deadline and the
/// never-started timeout are both 300 s by default, and the Job controller's comes first)
/// ends the task at once, saying why the pod did not start; no logs are read (none exist).
#[test]
fn a_job_failed_while_its_pod_never_started_says_why() {
    let run = triggered(1);
    let status = running(&run);
    for stopping in [true, false] {
        let seen = JobSeen::Failed {
            reason: "DeadlineExceeded".into(),
            message: "Job was active longer than specified deadline".into(),
            pods_seen: true,
            stopping,
            never_started: Some(Stuck {
                pod: "p-0".into(),
                reason: "ImagePullBackOff".into(),
                message: "container task: Back-off pulling image \"locustio/locsut\"".into(),
                created: None,
            }),
            causes: None,
        };
        assert_eq!(
            next(&run, &status, seen, at(300)),
            Step::EndTask {
                index: 0,
                phase: TaskPhase::Failed,
                message: Some(
                    "DeadlineExceeded: Job was active longer than specified deadline; pod p-0 \
                     never started: ImagePullBackOff: container task: Back-off pulling image \
                     \"locustio/locsut\""
                        .into()
                ),
                read_logs: false,
                outputs: BTreeMap::new(),
            },
            "stopping: {stopping}"
        );
    }
}

/// A failing Job's logs are read while its pods stop; the task ends once the Job has failed
/// (its pods gone), with the logs read before.
#[test]
fn a_failing_task_is_read_while_its_pods_stop_and_ends_once_they_are_gone() {
    let run = triggered(1);
    let mut status = running(&run);
    let failing = |stopping| JobSeen::Failed {
        reason: "DeadlineExceeded".into(),
        message: "Job was active longer than specified deadline".into(),
        pods_seen: true,
        stopping,
        never_started: None,
        causes: None,
    };
    assert_eq!(
        next(&run, &status, failing(true), at(300)),
        Step::ReadLogs(0)
    );
    status.tasks[0].logs = Some("hung at 99%".into());
    assert_eq!(
        next(&run, &status, failing(true), at(300)),
        Step::Wait(Some(STOPPING_POD_WAIT)),
        "woken when the Job has failed, and looked at again should its pods never go"
    );
    // Failed: its pods are gone (from the watch too), and not waited for.
    let failed = JobSeen::Failed {
        reason: "DeadlineExceeded".into(),
        message: "Job was active longer than specified deadline".into(),
        pods_seen: false,
        stopping: false,
        never_started: None,
        causes: None,
    };
    let mut soon = running(&run);
    soon.tasks[0].logs = Some("hung at 1%".into());
    assert!(matches!(
        next(&run, &soon, failed, at(2)),
        Step::EndTask {
            read_logs: false,
            ..
        }
    ));
    let end = next(&run, &status, failing(false), at(301));
    assert_eq!(
        end,
        Step::EndTask {
            index: 0,
            phase: TaskPhase::Failed,
            message: Some("DeadlineExceeded: Job was active longer than specified deadline".into()),
            read_logs: false,
            outputs: BTreeMap::new(),
        },
        "its pods are gone: not read again"
    );
    record_task_end(
        &run,
        &mut status,
        0,
        TaskPhase::Failed,
        Some("DeadlineExceeded".into()),
        None,
        at(301),
    );
    assert_eq!(status.tasks[0].logs.as_deref(), Some("hung at 99%"));
    assert_eq!(status.phase, RunPhase::Failed);
}

/// A halted run ends (and a run of its group takes its place) once the pods of the tasks it
/// stopped are gone, or at most `STOPPING_POD_WAIT` after it stopped them.
#[test]
fn a_halted_run_ends_once_the_pods_it_stopped_are_gone() {
    let run = cancelled(triggered(2), "alice");
    let mut status = running(&run);
    let before = status.clone();
    record_stopped(
        &mut status,
        0,
        TaskPhase::Cancelled,
        Some("cancelled by alice".into()),
        None,
        at(5),
    );
    assert_eq!(
        next_with(
            &run,
            &status,
            &before,
            JobSeen::Stopping,
            false,
            at(5),
            &limits()
        ),
        Step::Record(Record::BeforeWaiting),
        "the stopped task is recorded before the wait: it is not stopped twice"
    );
    assert_eq!(
        next(&run, &status, JobSeen::Stopping, at(6)),
        Step::Wait(Some(STOPPING_POD_WAIT - Duration::from_secs(1))),
        "its pod is still stopping"
    );
    let halt = Halt::Cancelled { by: "alice".into() };
    assert_eq!(
        next(&run, &status, JobSeen::NotCached, at(6)),
        Step::Halt(halt.clone()),
        "its pod is gone"
    );
    let waited = 5 + STOPPING_POD_WAIT.as_secs() as i64;
    assert_eq!(
        next(&run, &status, JobSeen::Stopping, at(waited)),
        Step::Halt(halt),
        "a pod that does not go does not hold the run for ever"
    );
}

/// A task whose Job the API server refused for now waits to be tried again while the run goes
/// on with its other steps: another ready task of a graph starts, a running one ends.
#[test]
fn a_task_refused_for_now_waits_while_the_others_go_on() {
    let run = graph_run(&[vec![], vec![], vec![0, 1]], None);
    let mut status = initialised(&run);
    delivered(&mut status.started);
    let jobs = vec![JobSeen::NotCached; 3];
    let facts = |status: &JobRunStatus, refused: &[(usize, Duration)]| {
        decide(&Facts {
            run: &run,
            status,
            persisted: status,
            jobs: &jobs,
            files_made: false,
            group: None,
            refused,
            now: at(0),
            limits: &limits(),
        })
    };
    assert_eq!(facts(&status, &[]), Step::CreateJob(0));
    assert_eq!(
        facts(&status, &[(0, Duration::from_secs(3))]),
        Step::CreateJob(1),
        "the other ready task starts"
    );
    record_job(&mut status, 1, "run-1-1".into(), at(0));
    assert_eq!(
        facts(&status, &[(0, Duration::from_secs(3))]),
        Step::Wait(Some(Duration::from_secs(3))),
        "looked at again when the refused task is to be tried"
    );
}

/// How long a task has been ready: since the tasks it needs ended, or since the run started
/// (its creation, for a run an older version started).
#[test]
fn a_task_is_ready_since_what_it_needs_ended() {
    let run = graph_run(&[vec![], vec![], vec![0, 1]], None);
    let mut status = initialised(&run);
    status.started_at = Some(at(0).to_string());
    assert_eq!(ready_for(&run, &status, 0, at(10)), Duration::from_secs(10));
    status.tasks[0].completion_time = Some(at(4).to_string());
    status.tasks[1].completion_time = Some(at(7).to_string());
    assert_eq!(ready_for(&run, &status, 2, at(10)), Duration::from_secs(3));
    status.started_at = None;
    assert_eq!(
        ready_for(&run, &status, 0, at(10)),
        Duration::from_secs(10),
        "no start recorded: its creation (T0) counts"
    );
}

/// A Job failing for longer than a pod takes to stop is taken for failed (its pods on a node
/// that is gone may never go, and the Job controller sets `Failed` only once they are).
#[test]
fn a_job_failing_for_longer_than_a_pod_takes_to_stop_counts_as_failed() {
    let since = at(0).to_string();
    assert!(!failing_for_too_long(Some(&since), at(44)));
    assert!(failing_for_too_long(Some(&since), at(45)));
    assert!(!failing_for_too_long(None, at(4500)), "no time: waited for");
    // The same bound for a pod that succeeded and is not seen: late, or deleted.
    assert!(!complete_for_too_long(Some(&since), at(44)));
    assert!(complete_for_too_long(Some(&since), at(45)));
    assert!(
        !complete_for_too_long(None, at(4500)),
        "no time: waited for"
    );
}

/// A halt that stopped a task goes on to the run's end when its cause goes while the pods stop
/// (the annotation removed, the newer run of the group ended): the stopped task cannot run
/// again, and the run waited for ever on it.
#[test]
fn a_halt_whose_cause_is_gone_still_ends_the_run() {
    let run = triggered(2);
    let mut status = running(&run);
    record_stopped(
        &mut status,
        0,
        TaskPhase::Cancelled,
        Some("cancelled by the newer run n2 of the concurrency group \"g\"".into()),
        None,
        at(5),
    );
    assert_eq!(
        next(&run, &status, JobSeen::Stopping, at(6)),
        Step::Wait(Some(STOPPING_POD_WAIT - Duration::from_secs(1))),
        "its pod is still stopping"
    );
    let halt = Halt::Continued {
        cause: "cancelled by the newer run n2 of the concurrency group \"g\"".into(),
    };
    assert_eq!(
        next(&run, &status, JobSeen::NotCached, at(6)),
        Step::Halt(halt.clone())
    );
    record_halt(&run, &mut status, &halt, at(6));
    assert_eq!(status.phase, RunPhase::Cancelled);
    assert_eq!(
        status.tasks[1].message.as_deref(),
        Some(
            "the run was cancelled by the newer run n2 of the concurrency group \"g\" before it \
             started"
        )
    );
}

/// A halt recorded part of the way (a task skipped, then a Job's deletion failed) whose cause
/// goes before it is taken up again: the run goes on, and a task that needs the skipped one is
/// skipped with it rather than wait for it for ever.
#[test]
fn a_halt_recorded_part_way_leaves_no_task_waiting_for_ever() {
    // t0 → (t1, t2), t3 needs t1.
    let run = graph_run(&[vec![], vec![0], vec![0], vec![1]], None);
    let mut status = running(&run);
    end(&run, &mut status, 0, TaskPhase::Succeeded, at(5));
    let message = Some("the run was cancelled by me before it started".into());
    record_halted_task(
        &run,
        &mut status,
        1,
        TaskPhase::Skipped,
        message,
        None,
        at(6),
    );
    let phases: Vec<TaskPhase> = status.tasks.iter().map(|t| t.phase).collect();
    assert_eq!(
        phases,
        [
            TaskPhase::Succeeded,
            TaskPhase::Skipped,
            TaskPhase::Pending,
            TaskPhase::Skipped
        ]
    );
    assert_eq!(
        status.tasks[3].message.as_deref(),
        Some("the run was cancelled by me before it started"),
        "the halt's reason, as the rest get it"
    );
    // The cause gone: t2 runs, and once it ends the run ends.
    let none = vec![JobSeen::NotCached; 4];
    assert_eq!(
        decide_seeing(&run, &status, &none, at(7)),
        Step::CreateJob(2)
    );
    end(&run, &mut status, 2, TaskPhase::Succeeded, at(8));
    assert!(status.phase.is_finished(), "{status:?}");
}

/// A cancel that comes while a task's Job is failing on its own (past its deadline, its pods
/// stopping) records the task as the Job fails, with its reason, not as cancelled.
#[test]
fn a_cancel_leaves_a_failing_job_to_fail() {
    let run = cancelled(triggered(2), "carol");
    let mut status = running(&run);
    let failing = |logs_read: bool| JobSeen::Failed {
        reason: "DeadlineExceeded".into(),
        message: "Job was active longer than specified deadline".into(),
        pods_seen: !logs_read,
        stopping: true,
        never_started: None,
        causes: None,
    };
    // Long past the grace a Job missing from its watch gets.
    let later = at(600);
    assert_eq!(
        next(&run, &status, failing(false), later),
        Step::ReadLogs(0)
    );
    status.tasks[0].logs = Some("load test output".into());
    assert_eq!(
        next(&run, &status, failing(true), later),
        Step::Wait(Some(STOPPING_POD_WAIT)),
        "its end is waited for"
    );
    assert_eq!(
        next(
            &run,
            &status,
            JobSeen::Failed {
                reason: "DeadlineExceeded".into(),
                message: "Job was active longer than specified deadline".into(),
                pods_seen: false,
                stopping: false,
                never_started: None,
                causes: None,
            },
            later
        ),
        Step::EndTask {
            index: 0,
            phase: TaskPhase::Failed,
            message: Some("DeadlineExceeded: Job was active longer than specified deadline".into()),
            read_logs: false,
            outputs: BTreeMap::new(),
        },
        "it failed: recorded with its reason and the logs read while it stopped"
    );
}

#[test]
fn a_cancel_records_a_task_that_ended_on_its_own_as_it_ended() {
    let run = cancelled(triggered(2), "bob");
    let status = running(&run);
    // Its pods not in the watch yet: the cancel waits for them (the logs are there), rather
    // than take the ended task for one it stopped.
    assert_eq!(
        next(
            &run,
            &status,
            JobSeen::Succeeded {
                message: None,
                pods_seen: false,
                succeeded_pod_gone: false,
            },
            at(5)
        ),
        Step::Wait(Some(Duration::from_secs(25)))
    );
    assert_eq!(
        next(
            &run,
            &status,
            JobSeen::Succeeded {
                message: None,
                pods_seen: true,
                succeeded_pod_gone: false,
            },
            at(5)
        ),
        Step::EndTask {
            index: 0,
            phase: TaskPhase::Succeeded,
            message: None,
            read_logs: true,
            outputs: BTreeMap::new(),
        }
    );
    let mut last = status.clone();
    end(&run, &mut last, 0, TaskPhase::Succeeded, at(5));
    assert_eq!(
        next(&run, &last, JobSeen::NotCached, at(5)),
        Step::HaltTask {
            index: 1,
            phase: TaskPhase::Skipped,
            message: "the run was cancelled by bob before it started".into(),
        },
        "no task starts once the run is cancelled; a Job made before a restart is deleted"
    );
    record_stopped(&mut last, 1, TaskPhase::Skipped, None, None, at(5));
    assert_eq!(
        next(&run, &last, JobSeen::NotCached, at(5)),
        Step::Halt(Halt::Cancelled { by: "bob".into() }),
    );
    // A cancel after the last task ended changes nothing: the run succeeded.
    let run = cancelled(triggered(1), "bob");
    let mut done = running(&run);
    end(&run, &mut done, 0, TaskPhase::Succeeded, at(5));
    assert_eq!(done.phase, RunPhase::Succeeded);
    assert_eq!(
        next(&run, &done, JobSeen::NotCached, at(6)),
        Step::Send(TaskEventKind::Finished)
    );
}

/// A Job that succeeded, its pod seen, with the pod's termination message (its outputs) if the
/// watch shows it yet.
fn pod_succeeded(message: Option<&str>) -> JobSeen {
    JobSeen::Succeeded {
        message: message.map(Into::into),
        pods_seen: true,
        succeeded_pod_gone: false,
    }
}

#[test]
fn a_cancel_waits_for_the_outputs_of_a_task_that_completed_long_after_it_started() {
    let mut run = cancelled(triggered(2), "bob");
    run.spec.action.tasks[0].outputs = vec!["version".into()];
    let status = running(&run);
    let succeeded = pod_succeeded;
    // Its Job completed a minute after it started; the pod's status (the outputs) is not in
    // the watch yet: the halt waits as the task's own end would, not stopping it as cancelled.
    assert_eq!(
        next(&run, &status, succeeded(None), at(60)),
        Step::Wait(Some(STOPPING_POD_WAIT))
    );
    assert_eq!(
        next(&run, &status, succeeded(Some("version=1.2")), at(61)),
        Step::EndTask {
            index: 0,
            phase: TaskPhase::Succeeded,
            message: None,
            read_logs: true,
            outputs: BTreeMap::from([("version".into(), "1.2".into())]),
        }
    );
}

#[test]
fn a_cancel_stops_every_running_task_of_a_graph() {
    let run = cancelled(graph_run(&[vec![], vec![], vec![0, 1]], None), "ci");
    let mut status = initialised(&run);
    delivered(&mut status.started);
    record_job(&mut status, 0, "run-1-0".into(), at(0));
    record_job(&mut status, 1, "run-1-1".into(), at(0));
    let seen = JobSeen::Running { stuck: None };
    let halt_task = |index| Step::HaltTask {
        index,
        phase: TaskPhase::Cancelled,
        message: "cancelled by ci".into(),
    };
    assert_eq!(next(&run, &status, seen.clone(), at(1)), halt_task(0));
    record_stopped(&mut status, 0, TaskPhase::Cancelled, None, None, at(1));
    assert_eq!(next(&run, &status, seen.clone(), at(1)), halt_task(1));
    record_stopped(&mut status, 1, TaskPhase::Cancelled, None, None, at(1));
    assert_eq!(
        next(&run, &status, seen, at(1)),
        Step::Halt(Halt::Cancelled { by: "ci".into() })
    );
}

#[test]
fn who_cancelled_is_the_annotations_first_line_bounded() {
    assert_eq!(who_cancelled("  alice: rollback \nmore"), "alice: rollback");
    assert_eq!(
        who_cancelled(""),
        "someone who did not say who (the job-executor.dev/cancel annotation is empty)"
    );
    let long = "é".repeat(MOST_CANCEL_TEXT + 1);
    assert_eq!(
        who_cancelled(&long),
        format!("{}…", "é".repeat(MOST_CANCEL_TEXT))
    );
    assert_eq!(
        who_cancelled(&"é".repeat(MOST_CANCEL_TEXT)),
        "é".repeat(MOST_CANCEL_TEXT)
    );
}

#[test]
fn a_run_past_its_timeout_stops_its_task_and_fails_saying_so() {
    let run = with_timeout(triggered(2), 90);
    let mut status = running(&run);
    assert_eq!(status.started_at.as_deref(), Some(T0));
    let seen = JobSeen::Running { stuck: None };
    assert_eq!(
        next(&run, &status, seen.clone(), at(30)),
        Step::Wait(Some(Duration::from_secs(60))),
        "woken when the timeout passes"
    );
    let halt = Step::HaltTask {
        index: 0,
        phase: TaskPhase::Failed,
        message: "stopped: the action's timeout of 1m30s passed".into(),
    };
    assert_eq!(
        next(&run, &status, seen.clone(), at(89)),
        Step::Wait(Some(Duration::from_secs(1)))
    );
    assert_eq!(next(&run, &status, seen.clone(), at(90)), halt);
    record_stopped(
        &mut status,
        0,
        TaskPhase::Failed,
        Some("stopped: the action's timeout of 1m30s passed".into()),
        None,
        at(90),
    );
    let timed_out = Halt::TimedOut {
        after: Duration::from_secs(90),
    };
    assert_eq!(
        next(&run, &status, seen, at(90)),
        Step::Halt(timed_out.clone())
    );
    record_halt(&run, &mut status, &timed_out, at(90));
    assert_eq!(status.phase, RunPhase::Failed);
    assert_eq!(
        status.outcome.as_ref().map(|o| o.message.as_str()),
        Some(
            "The action's timeout of 1m30s passed\n\n\
             Task 't0' failed: stopped: the action's timeout of 1m30s passed\n\n\
             Task 't1' skipped: the action's timeout of 1m30s passed before it started"
        )
    );
}

/// Two tasks side by side; the timeout stops one while the other's Job is failing on its own.
/// That task ends last: the run still ends as the timeout says (its message first), by the
/// halt's step, not from the tasks' own outcome.
#[test]
fn a_timed_out_run_whose_other_task_ends_last_ends_as_the_timeout_says() {
    let run = with_timeout(graph_run(&[vec![], vec![]], None), 90);
    let mut status = initialised(&run);
    delivered(&mut status.started);
    record_job(&mut status, 0, "run-1-0".into(), at(0));
    record_job(&mut status, 1, "run-1-1".into(), at(0));
    let stopped = "stopped: the action's timeout of 1m30s passed";
    record_stopped(
        &mut status,
        0,
        TaskPhase::Failed,
        Some(stopped.into()),
        None,
        at(90),
    );
    record_task_end(
        &run,
        &mut status,
        1,
        TaskPhase::Failed,
        Some("BackoffLimitExceeded".into()),
        None,
        at(95),
    );
    assert_eq!(status.phase, RunPhase::Running, "the halt ends it");
    assert!(status.outcome.is_none());
    let timed_out = Halt::TimedOut {
        after: Duration::from_secs(90),
    };
    let seen = JobSeen::Failed {
        reason: "BackoffLimitExceeded".into(),
        message: String::new(),
        pods_seen: false,
        stopping: false,
        never_started: None,
        causes: None,
    };
    assert_eq!(
        next(&run, &status, seen, at(95)),
        Step::Halt(timed_out.clone())
    );
    record_halt(&run, &mut status, &timed_out, at(95));
    assert_eq!(status.phase, RunPhase::Failed);
    let message = status
        .outcome
        .as_ref()
        .map(|o| o.message.clone())
        .unwrap_or_default();
    assert!(
        message.starts_with("The action's timeout of 1m30s passed\n\n"),
        "{message}"
    );
    // Before its timeout, the last task's end ends the run.
    let run = with_timeout(graph_run(&[vec![]], None), 90);
    let mut status = running(&run);
    record_task_end(&run, &mut status, 0, TaskPhase::Failed, None, None, at(30));
    assert_eq!(status.phase, RunPhase::Failed);
}

#[test]
fn a_timeout_counts_from_the_runs_start_or_else_its_creation() {
    let run = with_timeout(triggered(1), 60);
    let mut status = running(&run);
    status.started_at = Some(at(100).to_string());
    let seen = JobSeen::Running { stuck: None };
    assert_eq!(
        next(&run, &status, seen.clone(), at(130)),
        Step::Wait(Some(Duration::from_secs(30)))
    );
    // A run started by an older version: its creation (T0) counts.
    status.started_at = None;
    assert!(matches!(
        next(&run, &status, seen.clone(), at(60)),
        Step::HaltTask { index: 0, .. }
    ));
    // A cancel wins over a timeout.
    let run = cancelled(run, "carol");
    assert!(matches!(
        next(&run, &status, seen, at(60)),
        Step::HaltTask {
            phase: TaskPhase::Cancelled,
            ..
        }
    ));
}

#[test]
fn a_task_whose_outputs_went_with_its_pods_fails_saying_so() {
    let mut run = triggered(2);
    run.spec.action.tasks[0].outputs = vec!["version".into()];
    let status = running(&run);
    let gone = JobSeen::Succeeded {
        message: None,
        pods_seen: false,
        succeeded_pod_gone: false,
    };
    assert_eq!(
        next(&run, &status, gone.clone(), at(5)),
        Step::Wait(Some(Duration::from_secs(25))),
        "the pod watch may be behind"
    );
    // Whether the next task has a Job (made before a restart that lost the record) is asked.
    assert_eq!(
        next(&run, &status, gone.clone(), at(30)),
        Step::LookUpJob(1)
    );
    assert_eq!(
        decide_seeing(&run, &status, &[gone.clone(), JobSeen::Gone], at(30)),
        Step::EndTask {
            index: 0,
            phase: TaskPhase::Failed,
            message: Some("its outputs cannot be read: no pod of the Job run-1-0 is left".into()),
            read_logs: false,
            outputs: BTreeMap::new(),
        }
    );
    // It has one, made with the outputs before the restart: the task succeeded, and the run
    // goes on with that Job (not skipped, its pod unwatched).
    assert_eq!(
        decide_seeing(
            &run,
            &status,
            &[gone, JobSeen::Running { stuck: None }],
            at(30)
        ),
        Step::EndTask {
            index: 0,
            phase: TaskPhase::Succeeded,
            message: Some(
                "its outputs cannot be read: no pod of the Job run-1-0 is left; it succeeded, as \
                 the Job of task t1, made only once it had, with its outputs, shows"
                    .into()
            ),
            read_logs: false,
            outputs: BTreeMap::new(),
        }
    );
}

#[test]
fn a_task_with_outputs_ends_with_them_once_its_pod_is_seen() {
    let mut run = triggered(2);
    run.spec.action.tasks[0].outputs = vec!["version".into()];
    let status = running(&run);
    let succeeded = pod_succeeded;
    assert_eq!(
        next(&run, &status, succeeded(None), at(5)),
        Step::Wait(Some(STOPPING_POD_WAIT)),
        "the outputs are in the pod's status: woken by its watch, or to see whether it is gone"
    );
    // Only pods of it that failed are left, long after it completed: the one that succeeded
    // was deleted, and the outputs cannot be read (waiting would last until the Job's TTL).
    let gone = JobSeen::Succeeded {
        message: None,
        pods_seen: true,
        succeeded_pod_gone: true,
    };
    let job = job_name(&run, &status, 0);
    assert_eq!(
        decide_seeing(&run, &status, &[gone.clone(), JobSeen::Gone], at(500)),
        Step::EndTask {
            index: 0,
            phase: TaskPhase::Failed,
            message: Some(format!(
                "its outputs cannot be read: the pod of the Job {job} that succeeded is gone \
                 (deleted; only pods of it that failed are left)"
            )),
            read_logs: true,
            outputs: BTreeMap::new(),
        }
    );
    assert_eq!(
        next(&run, &status, succeeded(Some("version=1.2.3\n")), at(5)),
        Step::EndTask {
            index: 0,
            phase: TaskPhase::Succeeded,
            message: None,
            read_logs: true,
            outputs: BTreeMap::from([("version".into(), "1.2.3".into())]),
        }
    );
    assert_eq!(
        next(&run, &status, succeeded(Some("")), at(5)),
        Step::EndTask {
            index: 0,
            phase: TaskPhase::Failed,
            message: Some(
                "its outputs cannot be read: it did not write its output \"version\" to \
                 /dev/termination-log"
                    .into()
            ),
            read_logs: true,
            outputs: BTreeMap::new(),
        }
    );
    // A task without outputs ends at once, whatever its message.
    let plain = triggered(1);
    assert!(matches!(
        next(&plain, &running(&plain), succeeded(None), at(5)),
        Step::EndTask {
            phase: TaskPhase::Succeeded,
            ..
        }
    ));
}

/// A run of one task in the concurrency group "g" of `limit` with `policy`.
fn grouped(policy: &str, limit: u32, timeout: Option<u64>) -> JobRun {
    let mut run = triggered(2);
    run.spec.action.concurrency = Some(
        serde_json::from_value(json!({"group": "g", "limit": limit, "policy": policy})).unwrap(),
    );
    run.spec.action.timeout_seconds = timeout;
    run
}

fn group(running: &[&str], ahead: usize, newer: &[&str]) -> Group {
    let names = |list: &[&str]| list.iter().map(|n| n.to_string()).collect();
    Group {
        running: names(running),
        ahead,
        newer: names(newer),
    }
}

fn next_in_group(
    run: &JobRun,
    status: &JobRunStatus,
    persisted: &JobRunStatus,
    group: &Group,
    now: Timestamp,
) -> Step {
    // A started task's Job runs; a pending one's is not there.
    let jobs: Vec<JobSeen> = (status.tasks.iter())
        .map(|task| match task.phase {
            TaskPhase::Pending => JobSeen::NotCached,
            _ => JobSeen::Running { stuck: None },
        })
        .collect();
    decide(&Facts {
        run,
        status,
        persisted,
        jobs: &jobs,
        files_made: false,
        group: Some(group),
        refused: &[],
        now,
        limits: &limits(),
    })
}

#[test]
fn a_run_of_a_full_group_waits_queued_after_its_started_is_sent() {
    let run = grouped("queue", 1, None);
    let mut status = initialised(&run);
    assert_eq!(status.phase, RunPhase::Queued);
    assert_eq!(status.current_task, None);
    assert_eq!(status.started_at, None);
    let full = group(&["older"], 0, &[]);
    let fresh = JobRunStatus::default();
    assert_eq!(
        next_in_group(&run, &status, &fresh, &full, at(0)),
        Step::Send(TaskEventKind::Started)
    );
    delivered(&mut status.started);
    assert_eq!(
        next_in_group(&run, &status, &fresh, &full, at(0)),
        Step::Record(Record::BeforeWaiting)
    );
    assert_eq!(
        next_in_group(&run, &status, &status, &full, at(0)),
        Step::Wait(Some(QUEUE_RECHECK))
    );
    // One ahead of it and none running: still full.
    let behind = group(&[], 1, &[]);
    assert_eq!(
        next_in_group(&run, &status, &status, &behind, at(0)),
        Step::Wait(Some(QUEUE_RECHECK))
    );
    let wide = grouped("queue", 2, None);
    assert_eq!(
        next_in_group(&wide, &status, &status, &full, at(0)),
        Step::Start
    );
}

#[test]
fn a_queued_run_records_its_start_before_its_first_job() {
    let run = grouped("queue", 1, Some(10));
    let mut status = initialised(&run);
    delivered(&mut status.started);
    let queued = status.clone();
    let free = group(&[], 0, &["newer"]);
    // Queued for 100 s: its timeout of 10 s has not begun.
    assert_eq!(
        next_in_group(&run, &status, &queued, &free, at(100)),
        Step::Start
    );
    record_start(&run, &mut status, at(100));
    assert_eq!(status.phase, RunPhase::Running);
    assert_eq!(status.current_task, Some(0));
    assert_eq!(
        status.started_at.as_deref(),
        Some(at(100).to_string().as_str())
    );
    assert_eq!(
        next_in_group(&run, &status, &queued, &free, at(100)),
        Step::Record(Record::LeavingQueue)
    );
    assert_eq!(
        next_in_group(&run, &status, &status, &free, at(100)),
        Step::CreateJob(0)
    );
    record_job(&mut status, 0, "run-1-0".into(), at(100));
    assert_eq!(
        next_in_group(&run, &status, &status, &free, at(105)),
        Step::Wait(Some(Duration::from_secs(5)))
    );
    assert!(matches!(
        next_in_group(&run, &status, &status, &free, at(110)),
        Step::HaltTask { index: 0, .. }
    ));
}

#[test]
fn a_run_of_a_full_group_that_skips_ends_cancelled_saying_who_held_it() {
    let run = grouped("skip", 1, None);
    let mut status = initialised(&run);
    delivered(&mut status.started);
    let full = group(&["deploy-1"], 0, &[]);
    let step = next_in_group(&run, &status, &status, &full, at(0));
    let Step::Halt(halt) = step else {
        panic!("{step:?}");
    };
    record_halt(&run, &mut status, &halt, at(0));
    assert_eq!(status.phase, RunPhase::Cancelled);
    let outcome = status.outcome.as_ref().unwrap();
    assert_eq!(outcome.status, OutcomeStatus::Errored);
    assert!(
        outcome
            .message
            .starts_with("Skipped as the concurrency group \"g\" was full (running: deploy-1)"),
        "{}",
        outcome.message
    );
    assert_eq!(
        status.tasks[0].message.as_deref(),
        Some("the concurrency group \"g\" was full (running: deploy-1)")
    );
    assert_eq!(status.tasks[1].phase, TaskPhase::Skipped);
    // With a place free it runs.
    let mut status = initialised(&run);
    delivered(&mut status.started);
    let free = group(&[], 0, &[]);
    assert_eq!(
        next_in_group(&run, &status, &status, &free, at(0)),
        Step::Start
    );
    // Once running, the group no longer matters to it.
    record_start(&run, &mut status, at(0));
    assert_eq!(
        next_in_group(&run, &status, &status, &full, at(0)),
        Step::CreateJob(0)
    );
}

#[test]
fn a_newer_run_cancels_the_older_ones_of_a_cancel_in_progress_group() {
    let run = grouped("cancel-in-progress", 1, None);
    let mut status = initialised(&run);
    delivered(&mut status.started);
    let newer = group(&[], 0, &["n1", "n2"]);
    // Queued: it made no Job, so it ends at once.
    let step = next_in_group(&run, &status, &status, &newer, at(0));
    assert_eq!(
        step,
        Step::Halt(Halt::Superseded {
            by: "n2".into(),
            group: "g".into()
        })
    );
    // Running: its Job is deleted first.
    record_start(&run, &mut status, at(0));
    record_job(&mut status, 0, "run-1-0".into(), at(0));
    let step = next_in_group(&run, &status, &status, &newer, at(1));
    assert_eq!(
        step,
        Step::HaltTask {
            index: 0,
            phase: TaskPhase::Cancelled,
            message: "cancelled by the newer run n2 of the concurrency group \"g\"".into()
        }
    );
    // A limit of 3 leaves room for it and the two newer ones.
    let wide = grouped("cancel-in-progress", 3, None);
    assert_eq!(
        next_in_group(&wide, &status, &status, &newer, at(1)),
        Step::Wait(None)
    );
    // Older runs do not displace it.
    let older = group(&["o1"], 2, &[]);
    assert_eq!(
        next_in_group(&run, &status, &status, &older, at(1)),
        Step::Wait(None)
    );
}

#[test]
fn a_queued_run_cancelled_by_annotation_ends_without_touching_jobs() {
    let run = cancelled(grouped("queue", 1, None), "bob: not now");
    let mut status = initialised(&run);
    delivered(&mut status.started);
    let full = group(&["older"], 0, &[]);
    let step = next_in_group(&run, &status, &status, &full, at(0));
    assert_eq!(
        step,
        Step::Halt(Halt::Cancelled {
            by: "bob: not now".into()
        })
    );
    let Step::Halt(halt) = step else {
        unreachable!()
    };
    record_halt(&run, &mut status, &halt, at(0));
    assert_eq!(status.phase, RunPhase::Cancelled);
    assert!(
        status.tasks.iter().all(|t| t.phase == TaskPhase::Skipped),
        "{:?}",
        status.tasks
    );
}

/// `run` with notification rules, as `KIND:TARGET:WHEN,…`.
fn notifying(mut run: JobRun, rules: &[&str]) -> JobRun {
    run.spec.action.notify = rules
        .iter()
        .map(|r| crate::config::NotifyRule::parse(r).unwrap())
        .collect();
    run
}

fn notified(status: &JobRunStatus) -> Vec<(String, NotifyWhen, DeliveryState)> {
    status
        .notifications
        .iter()
        .map(|n| (n.target.clone(), n.when, n.state))
        .collect()
}

#[test]
fn notifications_become_due_when_the_run_starts_and_when_it_ends() {
    let run = notifying(
        triggered(1),
        &[
            "slack:team:started,failed",
            "webhook:audit:succeeded,failed",
        ],
    );
    let status = running(&run);
    assert_eq!(
        notified(&status),
        [(
            "team".to_string(),
            NotifyWhen::Started,
            DeliveryState::Pending
        )]
    );
    // The Job runs: the started notification goes while it does.
    assert_eq!(
        next(&run, &status, JobSeen::Running { stuck: None }, at(1)),
        Step::Notify(0)
    );
    let mut status = finished(&run);
    assert_eq!(
        notified(&status),
        [
            (
                "team".to_string(),
                NotifyWhen::Started,
                DeliveryState::Pending
            ),
            (
                "audit".to_string(),
                NotifyWhen::Succeeded,
                DeliveryState::Pending
            ),
        ],
        "a success tells only who asked for successes"
    );
    delivered(&mut status.finished);
    for n in &mut status.notifications {
        n.state = DeliveryState::Delivered;
    }
    assert!(status.is_done());
    status.notifications[1].state = DeliveryState::Pending;
    assert!(
        !status.is_done(),
        "a run is done once its notifications are"
    );
}

#[test]
fn what_a_notification_says_of_the_end_is_recorded_before_it_is_sent() {
    let run = notifying(triggered(1), &["webhook:audit:succeeded"]);
    let mut status = finished(&run);
    delivered(&mut status.finished);
    let before = running(&run);
    let step = next_with(
        &run,
        &status,
        &before,
        JobSeen::NotCached,
        false,
        at(60),
        &limits(),
    );
    assert_eq!(step, Step::Record(Record::BeforeFinished));
    assert_eq!(
        next(&run, &status, JobSeen::NotCached, at(60)),
        Step::Notify(0)
    );
}

#[test]
fn what_a_notification_says_of_the_end_waits_while_its_targets_started_is_retried() {
    let run = notifying(
        triggered(1),
        &["webhook:audit:started,succeeded", "slack:team:succeeded"],
    );
    let mut status = finished(&run);
    delivered(&mut status.finished);
    let whens: Vec<(&str, NotifyWhen)> = (status.notifications.iter())
        .map(|n| (n.target.as_str(), n.when))
        .collect();
    assert_eq!(
        whens,
        [
            ("audit", NotifyWhen::Started),
            ("audit", NotifyWhen::Succeeded),
            ("team", NotifyWhen::Succeeded),
        ]
    );
    // `.started` to the webhook failed and waits for its retry: its `.finished` waits too,
    // another target's notification does not.
    status.notifications[0].next_attempt = Some(at(30).to_string());
    assert_eq!(
        next(&run, &status, JobSeen::NotCached, at(10)),
        Step::Notify(2)
    );
    status.notifications[2].state = DeliveryState::Delivered;
    assert!(matches!(
        next(&run, &status, JobSeen::NotCached, at(10)),
        Step::Wait(Some(_))
    ));
    assert_eq!(
        next(&run, &status, JobSeen::NotCached, at(30)),
        Step::Notify(0)
    );
    // Once it is delivered (or given up), the end goes.
    status.notifications[0].state = DeliveryState::GaveUp;
    assert_eq!(
        next(&run, &status, JobSeen::NotCached, at(10)),
        Step::Notify(1)
    );
}

#[test]
fn a_failed_or_cancelled_run_tells_failed_and_a_failure_before_any_job_too() {
    let run = notifying(triggered(2), &["slack:team"]);
    let mut status = running(&run);
    end(&run, &mut status, 0, TaskPhase::Failed, at(5));
    assert_eq!(
        notified(&status),
        [(
            "team".to_string(),
            NotifyWhen::Failed,
            DeliveryState::Pending
        )]
    );
    let mut status = running(&run);
    record_halt(
        &run,
        &mut status,
        &Halt::Cancelled { by: "me".into() },
        at(5),
    );
    assert_eq!(status.phase, RunPhase::Cancelled);
    assert_eq!(notified(&status).len(), 1);
    let mut broken = notifying(triggered(1), &["slack:team:started,failed"]);
    broken.spec.failure = Some("the config is invalid".into());
    let status = initialised(&broken);
    let whens: Vec<NotifyWhen> = status.notifications.iter().map(|n| n.when).collect();
    assert_eq!(whens, [NotifyWhen::Started, NotifyWhen::Failed]);
}

#[test]
fn a_notification_is_retried_then_given_up_and_never_holds_the_run() {
    let run = notifying(triggered(1), &["slack:team:started"]);
    let mut status = running(&run);
    let down = transient(None);
    let policy = limits().notification;
    let first = record_notification_attempt(&run, &mut status, 0, Err(&down), at(1), &policy);
    assert_eq!(first, Attempt::Retry);
    let due = status.notifications[0].next_attempt.clone().unwrap();
    assert!(due.as_str() > at(1).to_string().as_str(), "{due}");
    // While it waits, the run's Job is ended as usual.
    let step = next(
        &run,
        &status,
        JobSeen::Succeeded {
            message: None,
            pods_seen: true,
            succeeded_pod_gone: false,
        },
        at(1),
    );
    assert!(matches!(step, Step::EndTask { .. }), "{step:?}");
    record_notification_attempt(&run, &mut status, 0, Err(&down), at(3), &policy);
    let last = record_notification_attempt(&run, &mut status, 0, Err(&down), at(9), &policy);
    assert_eq!(last, Attempt::GaveUp, "two retries, then given up");
    let n = &status.notifications[0];
    assert_eq!((n.state, n.attempts), (DeliveryState::GaveUp, 3));
    assert_eq!(n.next_attempt, None);
    assert!(n.last_error.is_some());
    let refused = DeliveryError::Refused {
        message: "no notification target \"x\"".into(),
    };
    let run = notifying(triggered(1), &["slack:x:started"]);
    let mut status = running(&run);
    let once = record_notification_attempt(&run, &mut status, 0, Err(&refused), at(1), &policy);
    assert_eq!(once, Attempt::GaveUp, "a refusal is not retried");
}

#[test]
fn installation_and_action_rules_of_one_target_are_told_once() {
    let run = notifying(
        triggered(1),
        &[
            "slack:team:failed",
            "slack:team:failed",
            "webhook:team:failed",
        ],
    );
    let mut status = running(&run);
    end(&run, &mut status, 0, TaskPhase::Failed, at(5));
    let kinds: Vec<_> = status.notifications.iter().map(|n| n.kind).collect();
    assert_eq!(
        kinds,
        [
            crate::config::NotifyKind::Slack,
            crate::config::NotifyKind::Webhook
        ]
    );
}

#[test]
fn a_job_that_made_no_pod_says_why_after_its_own_reason() {
    let why = Some("FailedCreate: Error creating: pods \"run-1-0-x\" is forbidden");
    assert_eq!(
        explain_no_pod(
            "DeadlineExceeded: Job was active longer than specified deadline".into(),
            why
        ),
        "DeadlineExceeded: Job was active longer than specified deadline; its Job made no pod: \
         FailedCreate: Error creating: pods \"run-1-0-x\" is forbidden"
    );
    assert_eq!(
        explain_no_pod("DeadlineExceeded: x".into(), None),
        "DeadlineExceeded: x",
        "nothing says why"
    );
}
