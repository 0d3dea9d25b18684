//! What a run reports: the `.finished` message from the tasks' records, and the outgoing events
//! built from the run alone (so a repeated delivery is the same event).

use crate::crd::{JobRun, JobRunStatus, OutcomeStatus, RunOutcome, TaskPhase};
use crate::event::{self, CloudEvent, Outcome, OutgoingContext, Status};

/// The message of a run whose tasks are over: per task, `Task '<name>' finished` or
/// `Task '<name>' failed: <reason>`, each followed by its log excerpt.
pub fn outcome_of_tasks(status: &JobRunStatus) -> RunOutcome {
    let mut sections = Vec::new();
    let mut failed = false;
    for task in &status.tasks {
        let headline = match task.phase {
            TaskPhase::Succeeded => format!("Task '{}' finished", task.name),
            TaskPhase::Failed => {
                failed = true;
                format!(
                    "Task '{}' failed: {}",
                    task.name,
                    task.message.as_deref().unwrap_or("unknown reason")
                )
            }
            // Skipped tasks of a graph say what they needed; the rest of a list of tasks
            // stopped by a failure is left out, as Keptn's service left it out.
            TaskPhase::Skipped => match &task.message {
                Some(why) => format!("Task '{}' skipped: {why}", task.name),
                None => continue,
            },
            TaskPhase::Cancelled => {
                failed = true;
                match &task.message {
                    Some(why) => format!("Task '{}' {why}", task.name),
                    None => format!("Task '{}' cancelled", task.name),
                }
            }
            TaskPhase::Pending | TaskPhase::Running => continue,
        };
        sections.push(match task.logs.as_deref().filter(|l| !l.is_empty()) {
            Some(logs) => format!("{headline}\nLogs:\n{logs}"),
            None => headline,
        });
    }
    if sections.is_empty() {
        sections.push("The action has no tasks".to_string());
    }
    RunOutcome {
        status: if failed {
            OutcomeStatus::Errored
        } else {
            OutcomeStatus::Succeeded
        },
        message: sections.join("\n\n"),
    }
}

fn parse_time(text: Option<&String>) -> Option<jiff::Timestamp> {
    text.and_then(|t| t.parse().ok())
}

/// When the first task started and the last one ended (for `test` tasks' `data.test`).
fn test_window(status: &JobRunStatus) -> Option<(jiff::Timestamp, jiff::Timestamp)> {
    let start = status
        .tasks
        .iter()
        .find_map(|t| parse_time(t.start_time.as_ref()))?;
    let end = status
        .tasks
        .iter()
        .rev()
        .find_map(|t| parse_time(t.completion_time.as_ref()))
        .unwrap_or(start);
    Some((start, end))
}

/// The run's `.started` event, timed by when its first delivery was tried.
pub fn started_event(run: &JobRun, source: &str, time: jiff::Timestamp) -> Option<CloudEvent> {
    let name = run.metadata.name.as_deref().unwrap_or_default();
    event::build_started(&OutgoingContext {
        triggered: &run.spec.event,
        run_name: name,
        source,
        time,
    })
}

/// The run's `.finished` event, from its recorded outcome.
pub fn finished_event(
    run: &JobRun,
    status: &JobRunStatus,
    outcome: &RunOutcome,
    source: &str,
    time: jiff::Timestamp,
) -> Option<CloudEvent> {
    let name = run.metadata.name.as_deref().unwrap_or_default();
    finished_for(
        &OutgoingContext {
            triggered: &run.spec.event,
            run_name: name,
            source,
            time,
        },
        status,
        outcome,
    )
}

/// The `.finished` event of a run whose tasks ended as `status` records: what the operator
/// sends, and what `render` previews (with every task succeeded).
pub fn finished_for(
    context: &OutgoingContext<'_>,
    status: &JobRunStatus,
    outcome: &RunOutcome,
) -> Option<CloudEvent> {
    event::build_finished(
        context,
        &Outcome {
            status: match outcome.status {
                OutcomeStatus::Succeeded => Status::Succeeded,
                OutcomeStatus::Errored => Status::Errored,
            },
            message: outcome.message.clone(),
            test_window: test_window(status),
            outputs: status
                .tasks
                .iter()
                .filter(|task| !task.outputs.is_empty())
                .map(|task| (task.name.clone(), task.outputs.clone()))
                .collect(),
        },
    )
}

/// One of each event the operator emits, for the CloudEvents SDK conformance test
/// (src/ingest/conformance.rs): a `.started`, a failed `.finished` with logs outside ASCII, and
/// that `.finished` as a dead letter.
#[cfg(test)]
pub(crate) fn emitted_for_tests() -> Vec<(String, CloudEvent)> {
    use crate::crd::TaskStatus;

    let run = super::decide::tests::triggered(2);
    let time = super::decide::tests::at(60);
    let status = JobRunStatus {
        tasks: vec![
            TaskStatus {
                name: "prepare".into(),
                phase: TaskPhase::Succeeded,
                logs: Some("ready ✓".into()),
                ..Default::default()
            },
            TaskStatus {
                name: "test".into(),
                phase: TaskPhase::Failed,
                message: Some("BackoffLimitExceeded: 50% of \"tests\" failed".into()),
                logs: Some("ünïcode\n\tboom".into()),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let outcome = outcome_of_tasks(&status);
    let started = started_event(&run, "job-executor", time);
    let finished = finished_event(&run, &status, &outcome, "job-executor", time);
    let mut events = Vec::new();
    if let (Some(started), Some(finished)) = (started, finished) {
        let letter = crate::sink::dead_letter_event(
            &finished,
            "the sink answered 503: “down” ünïcode",
            "https://sink.example/events",
            3,
        );
        events.push((".started".to_string(), started));
        events.push((".finished".to_string(), finished));
        events.push(("dead letter".to_string(), letter));
    }
    assert_eq!(events.len(), 3, "every kind is built");
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::TaskStatus;

    fn task(name: &str, phase: TaskPhase, message: Option<&str>, logs: Option<&str>) -> TaskStatus {
        TaskStatus {
            name: name.into(),
            phase,
            message: message.map(Into::into),
            logs: logs.map(Into::into),
            start_time: Some("2026-11-21T10:00:00Z".into()),
            completion_time: Some("2026-11-21T10:01:00Z".into()),
            ..Default::default()
        }
    }

    #[test]
    fn success_lists_every_task_with_its_logs() {
        let status = JobRunStatus {
            tasks: vec![
                task("prepare", TaskPhase::Succeeded, None, Some("ready")),
                task("test", TaskPhase::Succeeded, None, None),
            ],
            ..Default::default()
        };
        let outcome = outcome_of_tasks(&status);
        assert_eq!(outcome.status, OutcomeStatus::Succeeded);
        assert_eq!(
            outcome.message,
            "Task 'prepare' finished\nLogs:\nready\n\nTask 'test' finished"
        );
    }

    #[test]
    fn failure_names_the_task_and_reason_and_skips_the_rest() {
        let status = JobRunStatus {
            tasks: vec![
                task("prepare", TaskPhase::Succeeded, None, None),
                task(
                    "test",
                    TaskPhase::Failed,
                    Some("BackoffLimitExceeded: Job has reached the specified backoff limit"),
                    Some("boom"),
                ),
                TaskStatus {
                    name: "report".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let outcome = outcome_of_tasks(&status);
        assert_eq!(outcome.status, OutcomeStatus::Errored);
        assert_eq!(
            outcome.message,
            "Task 'prepare' finished\n\nTask 'test' failed: BackoffLimitExceeded: Job has reached the specified backoff limit\nLogs:\nboom"
        );
    }
}
