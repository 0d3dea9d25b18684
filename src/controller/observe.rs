//! Reading the world: what a Job's status and its pods say, as pure functions.

use k8s_openapi::api::events::v1::Event as EventsV1;

use super::cached::{CachedJob, CachedPod, Condition};

/// Where a task's Job stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Running,
    Succeeded {
        /// When the Job controller set `Complete`.
        since: Option<String>,
    },
    Failed {
        reason: String,
        message: String,
    },
    /// `FailureTarget` without `Failed` yet: the Job controller stops the Job's pods, then
    /// sets `Failed` (with the same reason).
    Failing {
        reason: String,
        message: String,
        /// When the Job controller set `FailureTarget`.
        since: Option<String>,
    },
}

/// Reads the terminal conditions the Job controller sets (`Complete`, `Failed`), and
/// `FailureTarget`: the Job controller sets it (with the reason `Failed` gets), then deletes the
/// Job's running pods, and sets `Failed` only once they are gone. The task's logs are read while
/// it is `Failing` (a task past its `maxPollDuration` still says what it was doing), its end
/// recorded at `Failed` (its pods gone: a run of its concurrency group may start).
pub fn job_state(job: &CachedJob) -> JobState {
    let conditions = job
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let said = |condition: &Condition| {
        (
            condition.reason.clone().unwrap_or_else(|| "Failed".into()),
            condition.message.clone().unwrap_or_default(),
            condition.since.clone(),
        )
    };
    let mut failing = None;
    for condition in conditions.iter().filter(|c| c.status == "True") {
        match condition.type_.as_str() {
            "Complete" => {
                return JobState::Succeeded {
                    since: condition.since.clone(),
                };
            }
            "Failed" => {
                let (reason, message, _) = said(condition);
                return JobState::Failed { reason, message };
            }
            "FailureTarget" => failing = Some(said(condition)),
            _ => {}
        }
    }
    failing.map_or(JobState::Running, |(reason, message, since)| {
        JobState::Failing {
            reason,
            message,
            since,
        }
    })
}

/// Waiting reasons that mean a container will not start without someone changing something.
const STUCK_REASONS: [&str; 6] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "InvalidImageName",
    "ErrImageNeverPull",
];

/// Why a pod cannot start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    pub pod: String,
    pub reason: String,
    pub message: String,
    /// When the pod was made: a Job makes a new pod after one failed (`backoffLimit`), and
    /// that one gets the whole time to start too.
    pub created: Option<jiff::Timestamp>,
}

/// The termination message of the task container of a Job's pod that succeeded (empty when the
/// task wrote none); `None` while no such pod is seen.
pub fn termination_message<'a>(pods: impl IntoIterator<Item = &'a CachedPod>) -> Option<String> {
    pods.into_iter()
        .filter_map(|pod| pod.status.as_ref())
        .filter(|status| status.phase.as_deref() == Some("Succeeded"))
        .flat_map(|status| &status.containers)
        .filter(|container| container.name == crate::render::TASK_CONTAINER)
        .find_map(|container| container.terminated.as_ref())
        .map(|message| message.clone().unwrap_or_default())
}

/// The most pods a failure message names the end of (the latest, when a task retried more).
const MOST_ENDS_TOLD: usize = 3;

/// How a failed Job's pods ended, where they say more than the Job's own reason (which counts
/// tries, or says the deadline passed): `pod NAME: container task: OOMKilled (exit code 137)`,
/// `pod NAME: Evicted: …`, `pod NAME: container task exited with code 2`; the latest
/// [`MOST_ENDS_TOLD`], `None` when no pod says anything.
pub fn failure_causes(pods: &[std::sync::Arc<CachedPod>]) -> Option<String> {
    let mut pods: Vec<&CachedPod> = pods.iter().map(AsRef::as_ref).collect();
    pods.sort_by_key(|pod| pod.metadata.creation_timestamp.as_ref().map(|time| time.0));
    let ends: Vec<String> = pods
        .into_iter()
        .filter_map(|pod| {
            let status = pod.status.as_ref()?;
            let mut said = status.ended_by.clone();
            for container in status.init_containers.iter().chain(&status.containers) {
                match &container.failed {
                    Some((code, Some(reason))) => said.push(format!(
                        "container {}: {reason} (exit code {code})",
                        container.name
                    )),
                    Some((code, None)) => said.push(format!(
                        "container {} exited with code {code}",
                        container.name
                    )),
                    None => {}
                }
            }
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            (!said.is_empty()).then(|| format!("pod {name}: {}", said.join(", ")))
        })
        .collect();
    let skipped = ends.len().saturating_sub(MOST_ENDS_TOLD);
    let told = ends[skipped..].join("; ");
    match skipped {
        0 if told.is_empty() => None,
        0 => Some(told),
        _ => Some(format!("{skipped} earlier pods, then {told}")),
    }
}

/// The first pod of a Job that cannot start: a container waiting for a reason that does not go
/// away by itself, or a pod the scheduler cannot place.
pub fn stuck_pod<'a>(pods: impl IntoIterator<Item = &'a CachedPod>) -> Option<Stuck> {
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let created = pod.metadata.creation_timestamp.as_ref().map(|time| time.0);
        let Some(status) = &pod.status else { continue };
        for container in status.init_containers.iter().chain(&status.containers) {
            if let Some(waiting) = &container.waiting
                && let Some(reason) = &waiting.reason
                && STUCK_REASONS.contains(&reason.as_str())
            {
                return Some(Stuck {
                    created,
                    pod: name,
                    reason: reason.clone(),
                    message: format!(
                        "container {}: {}",
                        container.name,
                        waiting.message.clone().unwrap_or_default()
                    ),
                });
            }
        }
        if let Some(message) = &status.unschedulable {
            return Some(Stuck {
                created,
                pod: name,
                reason: "Unschedulable".into(),
                message: message.clone(),
            });
        }
    }
    None
}

/// Why a failing Job's pods never started, when none of them did: each is stuck (a pod that
/// ran, whose logs tell why the task failed, leaves the Job's own reason, and its logs read).
pub fn never_started(pods: &[std::sync::Arc<CachedPod>]) -> Option<Stuck> {
    let each: Option<Vec<Stuck>> = pods
        .iter()
        .map(|pod| stuck_pod(std::iter::once(pod.as_ref())))
        .collect();
    each?.into_iter().next()
}

/// The most of a warning's note a failure message quotes (the API server caps a note at 1 KiB).
const WARNING_NOTE_BYTES: usize = 1024;

/// The reason the Job controller gives a pod it could not make.
pub const FAILED_CREATE: &str = "FailedCreate";

/// The latest `FailedCreate` warning among a Job's events since `since` (the task's start: a
/// Job of the same name before it is another Job), as `reason: note`: what the Job controller
/// said when it could not make a pod (`FailedCreate: Error creating: pods "…" is forbidden: …`).
pub fn latest_warning(events: &[EventsV1], since: Option<jiff::Timestamp>) -> Option<String> {
    let when = |event: &EventsV1| {
        event
            .event_time
            .as_ref()
            .map(|time| time.0)
            .or_else(|| event.deprecated_last_timestamp.as_ref().map(|time| time.0))
            .or_else(|| {
                event
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|time| time.0)
            })
    };
    // Event times are whole seconds (the Job controller's `lastTimestamp`): one in the second
    // the task started counts.
    let since = since.and_then(|since| jiff::Timestamp::from_second(since.as_second()).ok());
    let latest = events
        .iter()
        .filter(|event| {
            event.type_.as_deref() == Some("Warning")
                && event.reason.as_deref() == Some(FAILED_CREATE)
                && since.is_none_or(|since| when(event).is_some_and(|at| at >= since))
        })
        .max_by_key(|event| when(event))?;
    let mut note = latest.note.clone().unwrap_or_default();
    if note.len() > WARNING_NOTE_BYTES {
        let mut end = WARNING_NOTE_BYTES;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push('…');
    }
    Some(match latest.reason.as_deref() {
        Some(reason) if !reason.is_empty() => format!("{reason}: {note}"),
        _ => note,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn job(conditions: serde_json::Value) -> CachedJob {
        serde_json::from_value(json!({
            "metadata": {"name": "j"},
            "status": {"conditions": conditions}
        }))
        .unwrap()
    }

    #[test]
    fn job_conditions() {
        assert_eq!(job_state(&job(json!([]))), JobState::Running);
        assert_eq!(
            job_state(&job(
                json!([{"type": "SuccessCriteriaMet", "status": "True"}])
            )),
            JobState::Running,
            "the Job is complete only once its pods are gone"
        );
        assert_eq!(
            job_state(&job(json!([{"type": "Complete", "status": "True"}]))),
            JobState::Succeeded { since: None }
        );
        assert_eq!(
            job_state(&job(json!([{"type": "Complete", "status": "True",
                                   "lastTransitionTime": "2026-12-05T10:00:00Z"}]))),
            JobState::Succeeded {
                since: Some("2026-12-05T10:00:00Z".into())
            }
        );
        assert_eq!(
            job_state(&job(json!([
                {"type": "FailureTarget", "status": "True", "reason": "DeadlineExceeded"},
                {"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                 "message": "Job was active longer than specified deadline"}
            ]))),
            JobState::Failed {
                reason: "DeadlineExceeded".into(),
                message: "Job was active longer than specified deadline".into()
            }
        );
        assert_eq!(
            job_state(&job(json!([
                {"type": "FailureTarget", "status": "True", "reason": "DeadlineExceeded",
                 "message": "Job was active longer than specified deadline",
                 "lastTransitionTime": "2026-12-05T10:00:00Z"}
            ]))),
            JobState::Failing {
                reason: "DeadlineExceeded".into(),
                message: "Job was active longer than specified deadline".into(),
                since: Some("2026-12-05T10:00:00Z".into()),
            },
            "a Job that will fail: its pods are still stopping, their logs readable"
        );
        assert_eq!(
            job_state(&job(json!([
                {"type": "FailureTarget", "status": "False", "reason": "DeadlineExceeded"}
            ]))),
            JobState::Running
        );
    }

    #[test]
    fn stuck_pods() {
        let pulling: CachedPod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "status": {"containerStatuses": [{
                "name": "task", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"x\""}}
            }]}
        }))
        .unwrap();
        assert_eq!(
            stuck_pod([&pulling]),
            Some(Stuck {
                pod: "p".into(),
                reason: "ImagePullBackOff".into(),
                message: "container task: Back-off pulling image \"x\"".into(),
                created: None,
            })
        );
        let creating: CachedPod = serde_json::from_value(json!({
            "metadata": {"name": "q"},
            "status": {"containerStatuses": [{
                "name": "task", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}}
            }]}
        }))
        .unwrap();
        assert_eq!(stuck_pod([&creating]), None);
        let unschedulable: CachedPod = serde_json::from_value(json!({
            "metadata": {"name": "u"},
            "status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes are available"}]}
        }))
        .unwrap();
        assert_eq!(stuck_pod([&unschedulable]).unwrap().reason, "Unschedulable");
        // A failing Job's pods never started when each is stuck; one that ran has its logs.
        let ran: CachedPod = serde_json::from_value(json!({
            "metadata": {"name": "r"},
            "status": {"phase": "Failed", "containerStatuses": [{
                "name": "task", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 1}}
            }]}
        }))
        .unwrap();
        let arcs = |pods: &[&CachedPod]| -> Vec<std::sync::Arc<CachedPod>> {
            pods.iter()
                .map(|pod| std::sync::Arc::new((*pod).clone()))
                .collect()
        };
        assert_eq!(
            never_started(&arcs(&[&pulling, &unschedulable])).map(|stuck| stuck.pod),
            Some("p".into())
        );
        assert_eq!(never_started(&arcs(&[&ran, &pulling])), None);
        assert_eq!(never_started(&arcs(&[])), None);
    }

    #[test]
    fn a_failed_jobs_pods_say_how_they_ended() {
        let pod =
            |name: &str, created: &str, status: serde_json::Value| -> std::sync::Arc<CachedPod> {
                std::sync::Arc::new(
                    serde_json::from_value(json!({
                        "metadata": {"name": name, "creationTimestamp": created},
                        "status": status,
                    }))
                    .unwrap(),
                )
            };
        let ended = |exit: i64, reason: &str| {
            json!({"phase": "Failed", "containerStatuses": [{
                "name": "task", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": exit, "reason": reason}}
            }]})
        };
        let oom = pod("a-0-oom", "2026-12-07T10:00:01Z", ended(137, "OOMKilled"));
        let failed = pod("a-0-err", "2026-12-07T10:00:00Z", ended(2, "Error"));
        let succeeded = pod("a-0-ok", "2026-12-07T10:00:02Z", ended(0, "Completed"));
        assert_eq!(
            failure_causes(&[oom.clone(), succeeded.clone(), failed.clone()]).as_deref(),
            Some(
                "pod a-0-err: container task exited with code 2; pod a-0-oom: container task: \
                 OOMKilled (exit code 137)"
            )
        );
        let evicted = pod(
            "a-0-evicted",
            "2026-12-07T10:00:03Z",
            json!({"phase": "Failed", "reason": "Evicted",
                   "message": "Usage of EmptyDir volume \"keptn\" exceeds the limit \"20Mi\".",
                   "conditions": [{"type": "DisruptionTarget", "status": "True",
                                   "reason": "TerminationByKubelet",
                                   "message": "Pod was evicted"}]}),
        );
        assert_eq!(
            failure_causes(&[evicted]).as_deref(),
            Some(
                "pod a-0-evicted: Evicted: Usage of EmptyDir volume \"keptn\" exceeds the limit \
                 \"20Mi\"., TerminationByKubelet: Pod was evicted"
            )
        );
        // Pods that say nothing add nothing; many retries are told by their latest.
        assert_eq!(failure_causes(&[succeeded]), None);
        let many: Vec<_> = (0..5)
            .map(|i| {
                pod(
                    &format!("a-0-{i}"),
                    &format!("2026-12-07T10:00:0{i}Z"),
                    ended(1, "Error"),
                )
            })
            .collect();
        let told = failure_causes(&many).unwrap();
        assert!(
            told.starts_with("2 earlier pods, then pod a-0-2: "),
            "{told}"
        );
        assert!(
            told.ends_with("pod a-0-4: container task exited with code 1"),
            "{told}"
        );
    }

    #[test]
    fn the_termination_message_is_the_task_containers_in_the_pod_that_succeeded() {
        let pod = |name: &str, phase: &str, message: Option<&str>| -> CachedPod {
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "status": {"phase": phase, "containerStatuses": [
                    {"name": "sidecar", "image": "x", "imageID": "", "ready": false,
                     "restartCount": 0,
                     "state": {"terminated": {"exitCode": 0, "message": "not this"}}},
                    {"name": "task", "image": "x", "imageID": "", "ready": false,
                     "restartCount": 0,
                     "state": {"terminated": {"exitCode": 0, "message": message}}}
                ]}
            }))
            .unwrap()
        };
        let failed = pod("a", "Failed", Some("version=0"));
        let succeeded = pod("b", "Succeeded", Some("version=1"));
        assert_eq!(
            termination_message([&failed, &succeeded]),
            Some("version=1".into())
        );
        assert_eq!(termination_message([&failed]), None, "no pod succeeded yet");
        assert_eq!(
            termination_message([&pod("c", "Succeeded", None)]),
            Some(String::new()),
            "succeeded without a message"
        );
    }

    #[test]
    fn the_latest_warning_of_a_job_says_why_it_made_no_pod() {
        let event = |name: &str, kind: &str, at: &str, note: &str| -> EventsV1 {
            serde_json::from_value(json!({
                "metadata": {"name": name, "creationTimestamp": "2026-12-05T12:00:00Z"},
                "eventTime": null,
                "deprecatedLastTimestamp": at,
                "type": kind,
                "reason": "FailedCreate",
                "note": note
            }))
            .unwrap()
        };
        let events = [
            event(
                "a",
                "Warning",
                "2026-12-05T12:00:01Z",
                "Error creating: quota",
            ),
            event(
                "b",
                "Warning",
                "2026-12-05T12:00:09Z",
                "Error creating: forbidden",
            ),
            event("c", "Normal", "2026-12-05T12:00:10Z", "not a warning"),
        ];
        assert_eq!(
            latest_warning(&events, None),
            Some("FailedCreate: Error creating: forbidden".into())
        );
        // The Job controller's other warnings (its deadline passed) say nothing of a pod not made.
        let mut deadline = event(
            "d",
            "Warning",
            "2026-12-05T12:00:30Z",
            "Job was active longer",
        );
        deadline.reason = Some("DeadlineExceeded".into());
        assert_eq!(
            latest_warning(&[events[1].clone(), deadline], None),
            Some("FailedCreate: Error creating: forbidden".into())
        );
        assert_eq!(latest_warning(&events[2..], None), None, "no warning");
        assert_eq!(latest_warning(&[], None), None);
        let since = "2026-12-05T12:00:05Z".parse().ok();
        assert_eq!(
            latest_warning(&events[..1], since),
            None,
            "before the task started: another Job of that name"
        );
        let within_its_second = "2026-12-05T12:00:09.5Z".parse().ok();
        assert_eq!(
            latest_warning(&events[1..2], within_its_second),
            Some("FailedCreate: Error creating: forbidden".into()),
            "in the second the task started (event times are whole seconds)"
        );

        let long = "é".repeat(WARNING_NOTE_BYTES);
        let said = latest_warning(
            &[event("d", "Warning", "2026-12-05T12:00:01Z", &long)],
            None,
        )
        .unwrap();
        assert!(said.len() <= "FailedCreate: ".len() + WARNING_NOTE_BYTES + '…'.len_utf8());
        assert!(said.ends_with("é…"), "cut on a character boundary: {said}");
    }
}
