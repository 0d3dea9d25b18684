//! JobSchedules: the controller that fires their events, on the replica holding the Lease.
//!
//! A firing goes through the same path as an event received over HTTP (plan, then persist the
//! runs), with an id derived from the schedule and the slot: a repeated firing (a restart
//! between firing and recording, a second replica, a stale leader) finds its runs already made.
//! The status records what was handled, so the next look starts where the last one ended.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tokio::sync::watch;

use super::{IngestState, Outcome, take_event};
use crate::controller::history::RunEvent;
use crate::controller::{
    FENCE_MARGIN, Publisher, history_expired, leadership_gained, objects_only,
};
use crate::crd::{Condition, JobSchedule, JobScheduleStatus, SCHEDULE_CRD_NAME};
use crate::leader::{self, Leadership};
use crate::schedule::{self, Clock, Verdict};

/// When a schedule whose firing was refused (the API server, the config source, back-pressure)
/// is looked at again.
const RETRY: Duration = Duration::from_secs(5);
/// Slots are looked at this much after they are due, so the clock shows them passed.
const PAST_THE_SLOT: Duration = Duration::from_millis(20);
/// The condition the status carries.
const READY: &str = "Ready";

/// What the schedules' controller is built from.
pub struct ScheduleParts {
    pub ingest: Arc<IngestState>,
    pub schedules: Api<JobSchedule>,
    /// The same, through the client without a read timeout: for the watch.
    pub watched: Api<JobSchedule>,
    pub leadership: watch::Receiver<Leadership>,
    pub history: Publisher,
    pub clock: Clock,
}

struct Context {
    parts: ScheduleParts,
    /// The newest status this process wrote per schedule (by uid): the watch cache that hands
    /// schedules to `reconcile` can still hold an older one, which would fire a slot again (a
    /// duplicate, harmless) and count its missed slots twice (not).
    written: Mutex<HashMap<String, JobScheduleStatus>>,
    /// The schedules the watch knows: what `written` keeps of a deleted one is dropped.
    store: kube::runtime::reflector::Store<JobSchedule>,
}

#[derive(Debug, thiserror::Error)]
enum ScheduleError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    NotLeader(#[from] leader::NotLeader),
    #[error("the status write took too long")]
    Fenced,
    #[error("the schedule could not be reviewed: {0}")]
    Review(String),
}

/// Runs until `shutdown` resolves. A missing JobSchedule CRD is logged, not fatal: events
/// received over HTTP do not need it.
pub async fn run(
    parts: ScheduleParts,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = futures::FutureExt::shared(shutdown);
    let gained = leadership_gained(parts.leadership.clone());
    let schedules = parts.watched.clone();
    let (store, writer) = kube::runtime::reflector::store();
    let context = Arc::new(Context {
        parts,
        written: Mutex::new(HashMap::new()),
        store: store.clone(),
    });
    let mut last_problem: Option<String> = None;
    let listed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lister = listed.clone();
    let stream = watcher(schedules, watcher::Config::default())
        .modify(|schedule: &mut JobSchedule| schedule.metadata.managed_fields = None)
        .inspect(move |event| {
            if let Ok(watcher::Event::InitDone) = event {
                lister.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            let problem = match event {
                // Not a problem: the watch lists the schedules again.
                Err(error) if history_expired(error) => return,
                Ok(_) => None,
                Err(error) => Some(describe_watch_error(error)),
            };
            if problem != last_problem {
                match &problem {
                    Some(problem) => tracing::error!("JobSchedules do not fire: {problem}"),
                    None if last_problem.is_some() => {
                        tracing::info!("JobSchedules are watched again")
                    }
                    None => {}
                }
                last_problem = problem;
            }
        })
        .default_backoff();
    let stream = objects_only(kube::runtime::reflector(writer, stream).touched_objects());
    let running = Controller::for_stream(stream, store)
        .reconcile_all_on(gained)
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "a schedule's reconcile did not complete");
            }
        });
    // As the runs' controller: the graceful shutdown waits for the store, which never fills
    // while the CRD is missing, so it has a bound (none when nothing was ever listed: then no
    // firing can be in progress).
    let bounded = async {
        shutdown.await;
        if listed.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        }
    };
    tokio::select! {
        () = running => {}
        () = bounded => {}
    }
}

/// Drops what `written` keeps of schedules the watch no longer has (deleted ones), once it
/// holds more than the watch does: bounded by the schedules there are, not those there were.
fn forget_deleted(
    written: &mut HashMap<String, JobScheduleStatus>,
    store: &kube::runtime::reflector::Store<JobSchedule>,
) {
    let live = store.state();
    if written.len() <= live.len() {
        return;
    }
    let uids: std::collections::HashSet<String> =
        live.iter().filter_map(|schedule| schedule.uid()).collect();
    written.retain(|uid, _| uids.contains(uid));
}

/// How long a firing may take to finish once the shutdown began.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

fn describe_watch_error(error: &watcher::Error) -> String {
    let api = match error {
        watcher::Error::InitialListFailed(error)
        | watcher::Error::WatchStartFailed(error)
        | watcher::Error::WatchFailed(error) => error,
        other => return other.to_string(),
    };
    match api {
        kube::Error::Api(status) if status.code == 404 => format!(
            "the CustomResourceDefinition {SCHEDULE_CRD_NAME} is not installed: kubectl apply -f \
             crds/ (events received over HTTP are not affected)"
        ),
        other => crate::health::explain(other),
    }
}

fn error_policy(_: Arc<JobSchedule>, error: &ScheduleError, _: Arc<Context>) -> Action {
    tracing::debug!(%error, "a schedule is looked at again later");
    Action::requeue(RETRY)
}

async fn reconcile(
    schedule: Arc<JobSchedule>,
    context: Arc<Context>,
) -> Result<Action, ScheduleError> {
    let parts = &context.parts;
    // A follower leaves schedules alone; it takes them all up when it becomes leader. A leader
    // whose lease is about to run out looks again shortly: if its renewal comes in late it
    // never stops leading, so nothing else would wake the schedule.
    let leadership = parts.leadership.borrow().clone();
    if leadership.fence(FENCE_MARGIN).is_err() {
        return Ok(if leadership.is_leading() {
            Action::requeue(RETRY)
        } else {
            Action::await_change()
        });
    }
    let uid = schedule.uid().unwrap_or_default();
    let mut schedule = (*schedule).clone();
    let newest = context
        .written
        .lock()
        .ok()
        .and_then(|written| written.get(&uid).cloned());
    if let Some(newest) = newest
        && later(&newest, schedule.status.as_ref())
    {
        schedule.status = Some(newest);
    }
    let now = parts.clock.now();
    let created = schedule
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(now, |time| time.0);
    let before = schedule.status.clone().unwrap_or_default();
    let mut status = before.clone();
    status.observed_generation = schedule.metadata.generation;
    let metrics = &parts.ingest.metrics;
    // On a thread of the blocking pool: after a long outage a frequent schedule walks every
    // slot since it was handled (a year of minutes: half a million), which would hold a worker
    // the rest of the operator (the Lease's renewal among it) runs on.
    let reviewed = {
        let schedule = schedule.clone();
        tokio::task::spawn_blocking(move || schedule::review(&schedule, created, now))
    };
    let verdict = reviewed
        .await
        .map_err(|error| ScheduleError::Review(error.to_string()))?;
    let mut missed = None;
    let action = match verdict {
        Verdict::Invalid(message) => {
            if !has_condition(&before, "False", "InvalidSchedule", &message) {
                metrics.schedule_error("invalid");
                tracing::warn!(schedule = schedule.name_any(), %message, "a JobSchedule cannot fire");
            }
            status.next_fire_time = None;
            set_ready(&mut status, "False", "InvalidSchedule", message, now);
            Action::await_change()
        }
        Verdict::Suspended => {
            // Nothing here changes while it stays suspended (the condition set again is the
            // same): no status write wakes this reconcile again. The condition is set again,
            // not only at the suspension: an invalid spec fixed while suspended said why it
            // could not fire. Resuming starts from the time of the resume.
            status.suspended = true;
            status.next_fire_time = None;
            set_ready(
                &mut status,
                "False",
                "Suspended",
                "spec.suspend is true: nothing fires".into(),
                now,
            );
            Action::await_change()
        }
        Verdict::Fire {
            schedule: parsed,
            plan,
            handled_before,
            handled_until,
        } => {
            status.suspended = false;
            let mut refused = None;
            let mut fired_slots: usize = 0;
            for slot in &plan.fire {
                match fire(&context, &schedule, *slot).await? {
                    Ok(fired) => {
                        status.last_fire_time = Some(slot.to_string());
                        status.last_event_id = Some(fired.event_id);
                        status.last_runs = fired.runs;
                        fired_slots += 1;
                    }
                    Err(message) => {
                        refused = Some(message);
                        break;
                    }
                }
            }
            match refused {
                // Handled up to the slot fired last: the next look plans from there, so a slot
                // fired is neither fired again nor, once older than the look-back, counted as
                // missed. The slots this plan missed lie before every slot it fires: counted
                // once one fired.
                // With none fired, what an edit or a resume left behind stays behind: the
                // generation is recorded as seen, so the next review would not know.
                Some(message) => {
                    if let Some(last) = fired_slots.checked_sub(1).and_then(|i| plan.fire.get(i)) {
                        status.handled_until = Some(last.to_string());
                        if plan.missed > 0 {
                            status.missed += plan.missed;
                            missed = Some(Missed::of(&plan, status.missed));
                        }
                    } else {
                        status.handled_until = Some(handled_before.to_string());
                    }
                    metrics.schedule_error("refused");
                    set_ready(
                        &mut status,
                        "False",
                        "FireFailed",
                        format!("{message} (retried in {}s)", RETRY.as_secs()),
                        now,
                    );
                    status.next_fire_time = plan.fire.get(fired_slots).map(ToString::to_string);
                    write(&context, &schedule, &before, status).await?;
                    report_missed(&context, &schedule, missed);
                    return Ok(Action::requeue(RETRY));
                }
                None => {
                    status.handled_until = Some(handled_until.to_string());
                    status.next_fire_time = plan.next.map(|next| next.to_string());
                    if plan.missed > 0 {
                        status.missed += plan.missed;
                        missed = Some(Missed::of(&plan, status.missed));
                    }
                    let message = match plan.next {
                        Some(next) => format!(
                            "next slot {}",
                            parsed.local(next).strftime("%Y-%m-%d %H:%M %Z")
                        ),
                        None => "the schedule names no future time".to_string(),
                    };
                    set_ready(&mut status, "True", "Scheduled", message, now);
                    match plan.next {
                        Some(next) => Action::requeue(parts.clock.real_wait(next) + PAST_THE_SLOT),
                        None => Action::await_change(),
                    }
                }
            }
        }
    };
    write(&context, &schedule, &before, status).await?;
    report_missed(&context, &schedule, missed);
    Ok(action)
}

/// A slot's event and its runs, persisted.
struct Fired {
    event_id: String,
    runs: Vec<String>,
}

/// Fires one slot: `Ok(Err(why))` when the event could not be taken now (retry later).
async fn fire(
    context: &Context,
    schedule: &JobSchedule,
    slot: Timestamp,
) -> Result<Result<Fired, String>, ScheduleError> {
    let parts = &context.parts;
    let metrics = &parts.ingest.metrics;
    let event = match schedule::scheduled_event(schedule, slot) {
        Ok(event) => event,
        // `review` refused an event that cannot be built.
        Err(message) => return Ok(Err(message)),
    };
    let left = parts.leadership.borrow().fence(FENCE_MARGIN)?;
    let Some(taken) = leader::within(left, take_event(&parts.ingest, &event, None)).await else {
        return Err(ScheduleError::Fenced);
    };
    let taken = match taken {
        Ok(taken) => taken,
        Err(refusal) => {
            tracing::warn!(schedule = schedule.name_any(), slot = %slot, error = %refusal.message, "a slot could not fire now");
            return Ok(Err(refusal.message));
        }
    };
    metrics.schedule_fired(taken.outcome.label());
    let runs = taken.run_names();
    let (warning, reason, note) = match (taken.outcome, taken.explanation()) {
        (Outcome::Accepted, _) => (
            false,
            "Fired",
            format!(
                "slot {slot}: event {} made run(s) {}",
                event.id(),
                runs.join(", ")
            ),
        ),
        (Outcome::Duplicate, _) => (
            false,
            "FiredAgain",
            format!(
                "slot {slot}: event {} had been fired; its run(s) {} exist",
                event.id(),
                runs.join(", ")
            ),
        ),
        (Outcome::NotMatched, why) => (
            true,
            "NothingMatched",
            format!(
                "slot {slot}: event {} runs nothing: {}",
                event.id(),
                why.unwrap_or_default()
            ),
        ),
        (Outcome::Refused, why) => (
            true,
            "Refused",
            format!(
                "slot {slot}: event {} made no run that can run: {}",
                event.id(),
                why.unwrap_or_default()
            ),
        ),
        (Outcome::ConfigError, why) => (
            true,
            "ConfigError",
            format!(
                "slot {slot}: event {}: {}",
                event.id(),
                why.unwrap_or_default()
            ),
        ),
    };
    tracing::info!(schedule = schedule.name_any(), slot = %slot, event = event.id(), outcome = taken.outcome.label(), "a schedule fired");
    publish(context, schedule, warning, reason, note);
    Ok(Ok(Fired {
        event_id: event.id().to_string(),
        runs,
    }))
}

/// Slots a review counted as missed, told once the status that counts them is written (a
/// write that failed is reviewed again, and would count them twice).
struct Missed {
    slots: u64,
    /// The newest of them.
    last: Option<Timestamp>,
    /// The schedule's count with them.
    in_all: u64,
}

impl Missed {
    fn of(plan: &schedule::Plan, in_all: u64) -> Missed {
        Missed {
            slots: plan.missed,
            last: plan.last_missed,
            in_all,
        }
    }
}

fn report_missed(context: &Context, schedule: &JobSchedule, missed: Option<Missed>) {
    let Some(missed) = missed else { return };
    context.parts.ingest.metrics.schedule_missed(missed.slots);
    let policy = schedule.spec.missed_slots.clone().unwrap_or_default();
    let note = format!(
        "{} slot(s) up to {} passed without firing (missedSlots.policy {}, look-back {}s); {} missed in all",
        missed.slots,
        missed.last.map(|last| last.to_string()).unwrap_or_default(),
        policy.policy.as_str(),
        policy
            .lookback_seconds
            .unwrap_or(schedule::DEFAULT_LOOKBACK.as_secs()),
        missed.in_all
    );
    tracing::warn!(
        schedule = schedule.name_any(),
        missed = missed.slots,
        "{note}"
    );
    publish(context, schedule, true, "MissedSlots", note);
}

fn publish(
    context: &Context,
    schedule: &JobSchedule,
    warning: bool,
    reason: &'static str,
    mut note: String,
) {
    // The API server refuses a note of more than 1 kB.
    if note.len() > 1000 {
        let mut end = 997;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push_str("...");
    }
    let mut regarding = schedule.object_ref(&());
    regarding.resource_version = None;
    context.parts.history.publish_about(
        regarding,
        RunEvent {
            warning,
            reason,
            action: "Fire",
            note,
            task: None,
            job: None,
        },
    );
}

/// Whether `newest` (written by this process) is ahead of what the watch handed over.
fn later(newest: &JobScheduleStatus, seen: Option<&JobScheduleStatus>) -> bool {
    let at = |status: &JobScheduleStatus| -> Option<Timestamp> {
        status
            .handled_until
            .as_deref()
            .and_then(|at| at.parse().ok())
    };
    match seen {
        None => true,
        Some(seen) => {
            seen.observed_generation <= newest.observed_generation && at(newest) > at(seen)
        }
    }
}

fn has_condition(status: &JobScheduleStatus, value: &str, reason: &str, message: &str) -> bool {
    status.conditions.iter().any(|c| {
        c.type_ == READY && c.status == value && c.reason == reason && c.message == message
    })
}

fn set_ready(
    status: &mut JobScheduleStatus,
    value: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) {
    let transition = status
        .conditions
        .iter()
        .find(|c| c.type_ == READY && c.status == value)
        .map_or_else(|| now.to_string(), |c| c.last_transition_time.clone());
    status.conditions.retain(|c| c.type_ != READY);
    status.conditions.push(Condition {
        type_: READY.into(),
        status: value.into(),
        reason: reason.into(),
        message,
        last_transition_time: transition,
    });
}

/// Writes the status when it changed (a merge patch of the whole status: absent fields are
/// `null` and removed).
async fn write(
    context: &Context,
    schedule: &JobSchedule,
    before: &JobScheduleStatus,
    status: JobScheduleStatus,
) -> Result<(), ScheduleError> {
    if &status == before {
        return Ok(());
    }
    let parts = &context.parts;
    let left = parts.leadership.borrow().fence(FENCE_MARGIN)?;
    let name = schedule.name_any();
    let patch = Patch::Merge(serde_json::json!({ "status": status }));
    let params = PatchParams::default();
    let written = parts.schedules.patch_status(&name, &params, &patch);
    match leader::within(left, written).await {
        Some(Ok(_)) => {}
        Some(Err(error)) => {
            parts.ingest.metrics.schedule_error("status");
            return Err(error.into());
        }
        None => return Err(ScheduleError::Fenced),
    }
    if let Ok(mut written) = context.written.lock() {
        written.insert(schedule.uid().unwrap_or_default(), status);
        forget_deleted(&mut written, &context.store);
    }
    Ok(())
}
