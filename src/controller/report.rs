//! What a run reports: the `.finished` message from the tasks' records, and the outgoing events
//! built from the run alone (so a repeated delivery is the same event).

use super::decide;
use crate::config::{NotifyWhen, formats};
use crate::crd::{JobRun, JobRunStatus, OutcomeStatus, RunOutcome, RunPhase, TaskPhase};
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

/// When the first task started and the last one ended (for `test` tasks' `data.test`): the
/// earliest start and the latest end, as tasks of a graph run side by side, in any order.
fn test_window(status: &JobRunStatus) -> Option<(jiff::Timestamp, jiff::Timestamp)> {
    let start = status
        .tasks
        .iter()
        .filter_map(|t| parse_time(t.start_time.as_ref()))
        .min()?;
    let end = status
        .tasks
        .iter()
        .filter_map(|t| parse_time(t.completion_time.as_ref()))
        .max()
        .unwrap_or(start);
    Some((start, end))
}

/// The run's `.started` event, timed by when its first delivery was tried.
pub fn started_event(
    run: &JobRun,
    triggered: &CloudEvent,
    source: &str,
    time: jiff::Timestamp,
) -> Option<CloudEvent> {
    event::build_started(&OutgoingContext {
        triggered,
        run_name: decide::run_name(run),
        run_uid: decide::run_uid(run),
        source,
        time,
    })
}

/// The run's `.finished` event, from its recorded outcome.
pub fn finished_event(
    run: &JobRun,
    triggered: &CloudEvent,
    status: &JobRunStatus,
    outcome: &RunOutcome,
    source: &str,
    time: jiff::Timestamp,
) -> Option<CloudEvent> {
    finished_for(
        &OutgoingContext {
            triggered,
            run_name: decide::run_name(run),
            run_uid: decide::run_uid(run),
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
    event::build_finished(context, &reported_outcome(status, outcome))
}

/// What `.finished` reports of the run: its outcome, test window and outputs.
fn reported_outcome(status: &JobRunStatus, outcome: &RunOutcome) -> Outcome {
    Outcome {
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
    }
}

/// One of each event the operator emits, for the CloudEvents SDK conformance test
/// (src/ingest/conformance.rs): a `.started`, a failed `.finished` with logs outside ASCII, and
/// that `.finished` as a dead letter.
/// The CloudEvent a webhook notification carries: the run's `.started`, or its `.finished`
/// with the recorded outcome (same id as the sink's, so a receiver of both can drop one).
pub fn notice_event(
    run: &JobRun,
    triggered: &CloudEvent,
    status: &JobRunStatus,
    when: NotifyWhen,
    source: &str,
    time: jiff::Timestamp,
) -> CloudEvent {
    let context = OutgoingContext {
        triggered,
        run_name: decide::run_name(run),
        run_uid: decide::run_uid(run),
        source,
        time,
    };
    // The id the sink's event carries: the one recorded for it.
    let recorded = |delivery: &Option<Box<crate::crd::Delivery>>| {
        delivery.as_ref().map(|d| d.id.clone()).unwrap_or_default()
    };
    if when == NotifyWhen::Started {
        return event::build_notice(&context, None).with_id(&recorded(&status.started));
    }
    let outcome = status
        .outcome
        .clone()
        .unwrap_or_else(|| outcome_of_tasks(status));
    event::build_notice(&context, Some(&reported_outcome(status, &outcome)))
        .with_id(&recorded(&status.finished))
}

/// The most log lines a Slack message quotes, and the most bytes of them.
const SLACK_LOG_LINES: usize = 20;
const SLACK_LOG_BYTES: usize = 2000;

/// A Slack-compatible message (Slack's `mrkdwn`, which Mattermost and Rocket.Chat read too):
/// the service, project and stage, the action, what happened and how long it took, and for a
/// failure the task that failed with the tail of its log.
pub fn slack_text(
    run: &JobRun,
    triggered: &CloudEvent,
    status: &JobRunStatus,
    when: NotifyWhen,
) -> String {
    let keptn = triggered.keptn();
    let run_name = run.metadata.name.as_deref().unwrap_or_default();
    let place = match (&keptn.project, &keptn.stage) {
        (Some(project), Some(stage)) => {
            format!(" ({}/{})", slack_escape(project), slack_escape(stage))
        }
        (Some(project), None) => format!(" ({})", slack_escape(project)),
        _ => String::new(),
    };
    let subject = match &keptn.service {
        Some(service) => format!("*{}*{place}", slack_escape(service)),
        None => format!("`{}`{place}", slack_escape(triggered.event_type())),
    };
    let action = slack_escape(&run.spec.action.name);
    let took = match (
        parse_time(status.started_at.as_ref()),
        parse_time(status.finished_at.as_ref()),
    ) {
        (Some(start), Some(end)) => {
            let took: std::time::Duration =
                end.duration_since(start).try_into().unwrap_or_default();
            let whole = std::time::Duration::from_secs(took.as_secs());
            format!(" after {}", formats::format_duration(whole))
        }
        _ => String::new(),
    };
    let mut text = match when {
        NotifyWhen::Started => format!("{subject}: action `{action}` started"),
        NotifyWhen::Succeeded => format!("{subject}: action `{action}` succeeded{took}"),
        NotifyWhen::Failed if status.phase == RunPhase::Cancelled => {
            format!("{subject}: action `{action}` was cancelled{took}")
        }
        NotifyWhen::Failed => format!("{subject}: action `{action}` failed{took}"),
    };
    text.push_str(&format!(
        "\nrun `{}` for event `{}`",
        slack_escape(run_name),
        slack_escape(triggered.event_type())
    ));
    if when != NotifyWhen::Failed {
        return text;
    }
    let failed = status
        .tasks
        .iter()
        .find(|t| matches!(t.phase, TaskPhase::Failed | TaskPhase::Cancelled));
    if let Some(task) = failed {
        let why = task.message.as_deref().unwrap_or("no reason recorded");
        text.push_str(&format!(
            "\ntask `{}`: {}",
            slack_escape(&task.name),
            slack_escape(why)
        ));
        let tail = task.logs.as_deref().map(log_tail).unwrap_or_default();
        if !tail.is_empty() {
            text.push_str(&format!("\n```\n{}\n```", slack_escape(&tail)));
        }
    } else if let Some(headline) = status
        .outcome
        .as_ref()
        .and_then(|o| o.message.lines().next())
    {
        text.push_str(&format!("\n{}", slack_escape(headline)));
    }
    text
}

/// The last lines of a log, at most [`SLACK_LOG_LINES`] and [`SLACK_LOG_BYTES`], without a
/// code fence of its own (it would end the message's).
fn log_tail(logs: &str) -> String {
    let lines: Vec<&str> = logs.trim_end().lines().collect();
    let start = lines.len().saturating_sub(SLACK_LOG_LINES);
    let tail = lines[start..].join("\n").replace("```", "'''");
    if tail.len() <= SLACK_LOG_BYTES {
        return tail;
    }
    let mut cut = tail.len() - SLACK_LOG_BYTES;
    while !tail.is_char_boundary(cut) {
        cut += 1;
    }
    format!("…{}", &tail[cut..])
}

/// Text as Slack shows it literally: `&`, `<` and `>` are its control characters.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

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
    let triggered = run.spec.event.parse().unwrap();
    let started = started_event(&run, &triggered, "job-executor", time);
    let finished = finished_event(&run, &triggered, &status, &outcome, "job-executor", time);
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

    /// Tasks of a graph run side by side: the window is the earliest start to the latest end,
    /// whatever their order in the list.
    #[test]
    fn the_test_window_spans_tasks_that_ran_side_by_side() {
        let timed = |name: &str, start: &str, end: &str| TaskStatus {
            start_time: Some(start.into()),
            completion_time: Some(end.into()),
            ..task(name, TaskPhase::Succeeded, None, None)
        };
        let status = JobRunStatus {
            tasks: vec![
                timed("load", "2026-11-21T10:00:05Z", "2026-11-21T10:10:00Z"),
                timed("smoke", "2026-11-21T10:00:00Z", "2026-11-21T10:01:00Z"),
                timed("report", "2026-11-21T10:01:00Z", "2026-11-21T10:02:00Z"),
            ],
            ..Default::default()
        };
        let at = |text: &str| text.parse::<jiff::Timestamp>().unwrap();
        assert_eq!(
            test_window(&status),
            Some((at("2026-11-21T10:00:00Z"), at("2026-11-21T10:10:00Z")))
        );
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

    fn ended(run: &JobRun, tasks: Vec<TaskStatus>, phase: RunPhase) -> JobRunStatus {
        let mut status = JobRunStatus {
            tasks,
            phase,
            started_at: Some("2026-11-21T10:00:00Z".into()),
            finished_at: Some("2026-11-21T10:02:03.5Z".into()),
            ..Default::default()
        };
        status.outcome = Some(outcome_of_tasks(&status));
        let _ = run;
        status
    }

    #[test]
    fn a_slack_message_says_what_failed_where_and_quotes_the_end_of_the_log() {
        let mut run = crate::controller::decide::tests::triggered(2);
        run.spec.action.name = "Run <locust> & more".into();
        let log: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        let status = ended(
            &run,
            vec![
                task("prepare", TaskPhase::Succeeded, None, Some("ready")),
                task(
                    "smoke",
                    TaskPhase::Failed,
                    Some("BackoffLimitExceeded: exit 1"),
                    Some(&format!("{log}```oops")),
                ),
            ],
            RunPhase::Failed,
        );
        let triggered = run.spec.event.parse().unwrap();
        let text = slack_text(&run, &triggered, &status, NotifyWhen::Failed);
        let expected_head = "*svc* (p/s): action `Run &lt;locust&gt; &amp; more` failed after 2m3s\n\
             run `run-1` for event `sh.keptn.event.test.triggered`\n\
             task `smoke`: BackoffLimitExceeded: exit 1\n```\nline 12\n";
        assert!(text.starts_with(expected_head), "{text}");
        assert!(text.ends_with("line 30\n\'\'\'oops\n```"), "{text}");
        assert!(
            !text.contains("line 11\n"),
            "only the last 20 lines: {text}"
        );

        let started = slack_text(&run, &triggered, &status, NotifyWhen::Started);
        assert_eq!(
            started,
            "*svc* (p/s): action `Run &lt;locust&gt; &amp; more` started\nrun `run-1` for event `sh.keptn.event.test.triggered`"
        );
        let succeeded = ended(
            &run,
            vec![task("t", TaskPhase::Succeeded, None, None)],
            RunPhase::Succeeded,
        );
        let text = slack_text(&run, &triggered, &succeeded, NotifyWhen::Succeeded);
        assert!(text.contains("succeeded after 2m3s"), "{text}");
    }

    #[test]
    fn replies_and_notifications_from_the_fields_the_cache_keeps_are_those_of_the_whole_event() {
        let mut whole = crate::controller::decide::tests::triggered(1);
        whole.spec.event = crate::event::EventText::from(
            &CloudEvent::from_json(
                serde_json::json!({
                    "specversion": "1.0", "id": "e-1", "source": "bridge",
                    "type": "sh.keptn.event.test.triggered", "time": "2026-11-21T09:59:00Z",
                    "datacontenttype": "application/json", "subject": "s",
                    "shkeptncontext": "c-1", "gitcommitid": "abc123",
                    "shkeptnspecversion": "0.2.4", "triggeredid": "t-0", "other": "x",
                    "data": {"project": "p", "stage": "s", "service": "svc",
                             "labels": {"team": "qa", "n": 3}, "result": "pass",
                             "test": {"teststrategy": "performance"},
                             "padding": "x".repeat(1500)}
                })
                .to_string()
                .as_bytes(),
            )
            .unwrap(),
        );
        let mut kept = whole.clone();
        kept.spec.event.keep_reply_fields();
        assert!(
            kept.spec.event.as_str().len() < 300,
            "{}",
            kept.spec.event.as_str()
        );
        let status = ended(
            &whole,
            vec![task("test", TaskPhase::Failed, Some("boom"), Some("log"))],
            RunPhase::Failed,
        );
        let outcome = status.outcome.clone().unwrap();
        let time: jiff::Timestamp = "2026-11-21T10:02:03Z".parse().unwrap();
        let (a, b) = (
            whole.spec.event.parse().unwrap(),
            kept.spec.event.parse().unwrap(),
        );
        assert_eq!(
            started_event(&whole, &a, "je", time),
            started_event(&kept, &b, "je", time)
        );
        assert_eq!(
            finished_event(&whole, &a, &status, &outcome, "je", time),
            finished_event(&kept, &b, &status, &outcome, "je", time)
        );
        for when in [NotifyWhen::Started, NotifyWhen::Failed] {
            assert_eq!(
                notice_event(&whole, &a, &status, when, "je", time),
                notice_event(&kept, &b, &status, when, "je", time)
            );
            assert_eq!(
                slack_text(&whole, &a, &status, when),
                slack_text(&kept, &b, &status, when)
            );
        }
    }

    #[test]
    fn a_webhook_gets_the_runs_event_and_other_events_get_one_named_after_them() {
        let run = crate::controller::decide::tests::triggered(1);
        let status = ended(
            &run,
            vec![task("t", TaskPhase::Succeeded, None, None)],
            RunPhase::Succeeded,
        );
        let time: jiff::Timestamp = "2026-11-21T10:02:03Z".parse().unwrap();
        let triggered = run.spec.event.parse().unwrap();
        let notice = notice_event(&run, &triggered, &status, NotifyWhen::Succeeded, "je", time);
        let outcome = status.outcome.clone().unwrap();
        let finished = finished_event(&run, &triggered, &status, &outcome, "je", time).unwrap();
        assert_eq!(notice, finished, "the same event as the sink's");

        let nightly =
            crate::controller::decide::tests::run_of(1, None, "dev.example.nightly", false);
        let nightly_event = nightly.spec.event.parse().unwrap();
        let started = notice_event(
            &nightly,
            &nightly_event,
            &status,
            NotifyWhen::Started,
            "je",
            time,
        );
        assert_eq!(started.event_type(), "dev.example.nightly.started");
        let finished = notice_event(
            &nightly,
            &nightly_event,
            &status,
            NotifyWhen::Failed,
            "je",
            time,
        );
        assert_eq!(finished.event_type(), "dev.example.nightly.finished");
        assert_eq!(finished.as_value()["data"]["status"], "succeeded");
        assert_eq!(finished.as_value()["data"]["service"], "svc");
    }
}
