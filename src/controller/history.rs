//! A run's history as Kubernetes Events (`kubectl describe jobrun NAME`): what changed between
//! two recorded statuses, as plain values. Only recorded changes become Events, each once per
//! process, so a run stuck in a retry loop (an API server away, a sink down) adds nothing until
//! something is decided.

use crate::crd::{Delivery, DeliveryState, JobRun, JobRunStatus, RunPhase, TaskPhase, TaskStatus};

/// One Event about a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEvent {
    pub warning: bool,
    /// `PascalCase`, as `kubectl describe` shows it.
    pub reason: &'static str,
    /// What the operator did, `PascalCase`.
    pub action: &'static str,
    pub note: String,
    /// The index of the task the Event is about.
    pub task: Option<usize>,
    /// That task's Job.
    pub job: Option<String>,
}

/// The longest note an Event may carry (the API server refuses more than 1 kB).
const MOST_NOTE_BYTES: usize = 1000;

fn event(warning: bool, reason: &'static str, action: &'static str, note: String) -> RunEvent {
    RunEvent {
        warning,
        reason,
        action,
        note: bounded(note),
        task: None,
        job: None,
    }
}

fn bounded(mut note: String) -> String {
    if note.len() > MOST_NOTE_BYTES {
        let mut cut = MOST_NOTE_BYTES - 3;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push('…');
    }
    note
}

/// The Events of what changed from `before` (the status recorded before) to `after` (the
/// status just recorded), in the order they happened.
pub fn transitions(run: &JobRun, before: &JobRunStatus, after: &JobRunStatus) -> Vec<RunEvent> {
    let mut events = Vec::new();
    if before.phase == RunPhase::Pending && after.phase != RunPhase::Pending {
        events.push(event(
            false,
            "Accepted",
            "Accept",
            format!(
                "event {} ({}) runs action '{}'",
                run.spec.event.attribute("id").unwrap_or_default(),
                run.spec.event.attribute("type").unwrap_or_default(),
                run.spec.action.name
            ),
        ));
    }
    if before.phase != RunPhase::Queued
        && after.phase == RunPhase::Queued
        && let Some(concurrency) = &run.spec.action.concurrency
    {
        events.push(event(
            false,
            "Queued",
            "Queue",
            format!(
                "waits for a place in the concurrency group {:?} (at most {} at a time)",
                concurrency.group, concurrency.limit
            ),
        ));
    }
    if before.started_at.is_none() && after.started_at.is_some() && !after.tasks.is_empty() {
        events.push(event(false, "Started", "Start", "the run started".into()));
    }
    delivery_events(".started", &before.started, &after.started, &mut events);
    for (index, task) in after.tasks.iter().enumerate() {
        let was = before
            .tasks
            .get(index)
            .map_or(TaskPhase::Pending, |t| t.phase);
        if was != task.phase {
            events.extend(task_event(task, was).map(|event| RunEvent {
                task: Some(index),
                ..event
            }));
        }
    }
    if !before.phase.is_finished() && after.phase.is_finished() {
        let headline = after
            .outcome
            .as_ref()
            .and_then(|o| o.message.lines().next())
            .unwrap_or_default()
            .to_string();
        let (warning, reason) = match after.phase {
            RunPhase::Succeeded => (false, "Succeeded"),
            RunPhase::Cancelled => (true, "Cancelled"),
            _ => (true, "Failed"),
        };
        events.push(event(warning, reason, "Finish", headline));
    }
    delivery_events(".finished", &before.finished, &after.finished, &mut events);
    notification_events(before, after, &mut events);
    events
}

/// A task's change of phase.
fn task_event(task: &TaskStatus, was: TaskPhase) -> Option<RunEvent> {
    let name = &task.name;
    let why = task.message.as_deref().unwrap_or_default();
    let mut event = match task.phase {
        TaskPhase::Running => event(
            false,
            "TaskStarted",
            "CreateJob",
            format!(
                "task '{name}' started: Job {}",
                task.job_name.as_deref().unwrap_or_default()
            ),
        ),
        TaskPhase::Succeeded => event(
            false,
            "TaskSucceeded",
            "EndTask",
            format!("task '{name}' succeeded"),
        ),
        // Its pod never started, or its Job made none: stopped by the operator (its
        // never-started timeout), or failed by the Job's own deadline, which passed first.
        TaskPhase::Failed if never_started(why) => {
            let stopped = why.contains(super::decide::NEVER_STARTED)
                || why.contains(super::decide::MADE_NO_POD_WITHIN);
            event(
                true,
                "TaskNeverStarted",
                if stopped { "DeleteJob" } else { "EndTask" },
                format!("task '{name}' failed: {why}"),
            )
        }
        TaskPhase::Failed => event(
            true,
            "TaskFailed",
            "EndTask",
            format!("task '{name}' failed: {why}"),
        ),
        TaskPhase::Cancelled => event(
            true,
            "TaskCancelled",
            "DeleteJob",
            format!("task '{name}' {why}"),
        ),
        // A list of tasks stopped by a failure skips the rest silently, as its report does.
        TaskPhase::Skipped if why.is_empty() => return None,
        TaskPhase::Skipped => event(
            false,
            "TaskSkipped",
            "SkipTask",
            format!("task '{name}' skipped: {why}"),
        ),
        TaskPhase::Pending => return None,
    };
    // A task that never ran made no Job.
    if was != TaskPhase::Pending || task.phase == TaskPhase::Running {
        event.job = task.job_name.clone();
    }
    Some(event)
}

/// Whether a task's failure says its pod never started, or its Job made none.
fn never_started(why: &str) -> bool {
    use super::decide::{JOB_MADE_NO_POD, MADE_NO_POD_WITHIN, NEVER_STARTED, POD_NEVER_STARTED};
    [
        NEVER_STARTED,
        MADE_NO_POD_WITHIN,
        POD_NEVER_STARTED,
        JOB_MADE_NO_POD,
    ]
    .iter()
    .any(|said| why.contains(said))
}

/// A notification delivered or given up (the target's name, never its URL).
fn notification_events(before: &JobRunStatus, after: &JobRunStatus, events: &mut Vec<RunEvent>) {
    for (index, notification) in after.notifications.iter().enumerate() {
        let was = before
            .notifications
            .get(index)
            .map_or(DeliveryState::Pending, |n| n.state);
        if was == notification.state {
            continue;
        }
        let what = format!(
            "{} notification of {:?} ({})",
            notification.kind.as_str(),
            notification.target,
            notification.when.as_str()
        );
        match notification.state {
            DeliveryState::Delivered => {
                events.push(event(false, "Notified", "Notify", format!("{what} sent")));
            }
            DeliveryState::GaveUp => events.push(event(
                true,
                "NotificationGaveUp",
                "Notify",
                format!(
                    "{what} given up after {} attempts: {}",
                    notification.attempts,
                    notification.last_error.as_deref().unwrap_or_default()
                ),
            )),
            DeliveryState::Pending => {}
        }
    }
}

/// A delivery's first failure (it is retried), its success, or its giving up.
fn delivery_events(
    kind: &str,
    before: &Option<Box<Delivery>>,
    after: &Option<Box<Delivery>>,
    events: &mut Vec<RunEvent>,
) {
    let Some(after) = after else {
        return;
    };
    // Distinct actions keep the two deliveries' Events apart (the recorder folds repeats of
    // one action and reason into a series).
    let action = if kind == ".started" {
        "SendStarted"
    } else {
        "SendFinished"
    };
    let dead_was = before
        .as_ref()
        .and_then(|d| d.dead_letter.as_ref())
        .map(|d| d.state);
    if let Some(dead) = &after.dead_letter
        && dead_was != Some(dead.state)
    {
        match dead.state {
            DeliveryState::Delivered => events.push(event(
                true,
                "DeadLettered",
                action,
                format!("{kind} ({}) sent to the dead-letter sink", after.id),
            )),
            DeliveryState::GaveUp => events.push(event(
                true,
                "DeadLetterGaveUp",
                action,
                format!(
                    "{kind} ({}) not taken by the dead-letter sink either after {} attempts: {}",
                    after.id,
                    dead.attempts,
                    dead.last_error.as_deref().unwrap_or_default()
                ),
            )),
            DeliveryState::Pending => {}
        }
    }
    let (was, attempts) = before
        .as_ref()
        .map_or((DeliveryState::Pending, 0), |d| (d.state, d.attempts));
    if was == after.state {
        if after.state == DeliveryState::Pending && attempts == 0 && after.attempts > 0 {
            events.push(event(
                true,
                "DeliveryRetrying",
                action,
                format!(
                    "{kind} ({}) is retried: {}",
                    after.id,
                    after.last_error.as_deref().unwrap_or_default()
                ),
            ));
        }
        return;
    }
    match after.state {
        DeliveryState::Delivered => events.push(event(
            false,
            "Delivered",
            action,
            format!("{kind} ({}) delivered", after.id),
        )),
        DeliveryState::GaveUp => events.push(event(
            true,
            "DeliveryGaveUp",
            action,
            format!(
                "{kind} ({}) not delivered after {} attempts: {}",
                after.id,
                after.attempts,
                after.last_error.as_deref().unwrap_or_default()
            ),
        )),
        DeliveryState::Pending => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::decide::tests::{at, triggered};
    use crate::controller::decide::{initialise, record_job, record_task_end};

    fn reasons(events: &[RunEvent]) -> Vec<&str> {
        events.iter().map(|e| e.reason).collect()
    }

    #[test]
    fn a_run_tells_its_story_once_per_recorded_change() {
        let run = triggered(2);
        let fresh = JobRunStatus::default();
        let mut status = fresh.clone();
        initialise(&run, &mut status, at(0));
        record_job(&mut status, 0, "run-1-0".into(), at(0));
        let first = transitions(&run, &fresh, &status);
        assert_eq!(reasons(&first), ["Accepted", "Started", "TaskStarted"]);
        assert_eq!(
            first[0].note,
            "event e-1 (sh.keptn.event.test.triggered) runs action 'act'"
        );
        assert_eq!(first[2].note, "task 't0' started: Job run-1-0");
        assert_eq!(first[2].job.as_deref(), Some("run-1-0"));
        assert_eq!(first[2].task, Some(0));
        // Nothing changed: nothing to tell.
        assert!(transitions(&run, &status, &status).is_empty());

        let before = status.clone();
        if let Some(started) = status.started.as_mut() {
            started.attempts = 1;
            started.last_error = Some("503 Service Unavailable".into());
        }
        record_task_end(
            &run,
            &mut status,
            0,
            TaskPhase::Succeeded,
            None,
            None,
            at(5),
        );
        record_job(&mut status, 1, "run-1-1".into(), at(5));
        let second = transitions(&run, &before, &status);
        assert_eq!(
            reasons(&second),
            ["DeliveryRetrying", "TaskSucceeded", "TaskStarted"]
        );
        assert!(second[0].warning);
        let started_id = status.started.as_ref().unwrap().id.clone();
        assert_eq!(
            second[0].note,
            format!(".started ({started_id}) is retried: 503 Service Unavailable")
        );
        // A second failed attempt says nothing new.
        let before = status.clone();
        if let Some(started) = status.started.as_mut() {
            started.attempts = 2;
        }
        assert!(transitions(&run, &before, &status).is_empty());

        let before = status.clone();
        if let Some(started) = status.started.as_mut() {
            started.state = DeliveryState::Delivered;
        }
        record_task_end(
            &run,
            &mut status,
            1,
            TaskPhase::Failed,
            Some("BackoffLimitExceeded".into()),
            None,
            at(9),
        );
        let third = transitions(&run, &before, &status);
        assert_eq!(reasons(&third), ["Delivered", "TaskFailed", "Failed"]);
        assert_eq!(third[1].note, "task 't1' failed: BackoffLimitExceeded");
        assert_eq!(third[1].job.as_deref(), Some("run-1-1"));
        assert_eq!(
            third[2].note, "Task 't0' finished",
            "the outcome's first line"
        );
        assert!(third[2].warning);

        let before = status.clone();
        if let Some(finished) = status.finished.as_mut() {
            finished.state = DeliveryState::GaveUp;
            finished.attempts = 7;
            finished.last_error = Some("refused: 400".into());
        }
        let finished_id = status.finished.as_ref().unwrap().id.clone();
        assert_eq!(
            transitions(&run, &before, &status)[0].note,
            format!(".finished ({finished_id}) not delivered after 7 attempts: refused: 400")
        );

        // Given up, then dead-lettered: told once, when the dead-letter sink takes it.
        let before = status.clone();
        if let Some(finished) = status.finished.as_mut() {
            finished.dead_letter = Some(crate::crd::DeadLetter::default());
        }
        assert!(transitions(&run, &before, &status).is_empty());
        let before = status.clone();
        if let Some(dead) = status
            .finished
            .as_mut()
            .and_then(|f| f.dead_letter.as_mut())
        {
            dead.state = DeliveryState::Delivered;
        }
        let letter = transitions(&run, &before, &status);
        assert_eq!(reasons(&letter), ["DeadLettered"]);
        assert_eq!(
            letter[0].note,
            format!(".finished ({finished_id}) sent to the dead-letter sink")
        );
    }

    #[test]
    fn a_task_whose_job_was_stopped_is_told_apart_from_one_that_failed() {
        let told = |message: &str| {
            let task = TaskStatus {
                name: "t".into(),
                phase: TaskPhase::Failed,
                message: Some(message.into()),
                ..Default::default()
            };
            task_event(&task, TaskPhase::Running).map(|e| (e.reason, e.action))
        };
        let stopped = Some(("TaskNeverStarted", "DeleteJob"));
        assert_eq!(
            told("pod run-1-0-abc never started within 300s: ImagePullBackOff: x"),
            stopped
        );
        assert_eq!(
            told("the Job run-1-0 made no pod within 300s: FailedCreate: Error creating: x"),
            stopped
        );
        assert_eq!(
            told(
                "DeadlineExceeded: Job was active longer than specified deadline; its Job made \
                  no pod: FailedCreate: Error creating: x"
            ),
            Some(("TaskNeverStarted", "EndTask")),
            "not deleted by the operator"
        );
        assert_eq!(
            told(
                "DeadlineExceeded: Job was active longer than specified deadline; pod \
                 run-1-0-abc never started: ImagePullBackOff: x"
            ),
            Some(("TaskNeverStarted", "EndTask"))
        );
        assert_eq!(
            told("BackoffLimitExceeded: Job has reached the specified backoff limit"),
            Some(("TaskFailed", "EndTask"))
        );
    }

    #[test]
    fn a_note_is_bounded_to_what_the_api_server_takes() {
        let note = bounded("é".repeat(600));
        assert!(note.len() <= MOST_NOTE_BYTES, "{}", note.len());
        assert!(note.ends_with('…'));
        assert_eq!(bounded("short".into()), "short");
    }
}
