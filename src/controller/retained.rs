//! The runs that are done, kept in the API server until their retention is over and then
//! deleted.
//!
//! The controller's own watch selects the runs it still works on (`status.done!=true`): a run
//! leaves it with the write that records it done. The retained runs have a watch of their own
//! (`status.done=true`) that starts once the controller's watches are synced, so a hundred
//! thousand of them neither delay the operator's readiness nor sit in its cache: of each, only
//! its name, uid and the end of its retention are kept, and its JSON is read without building
//! the event, the tasks or their records.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;

use super::Context;
use super::cached::read_metadata;
use super::decide::{Limits, retained_until};
use crate::crd::{Delivery, JobRun};
use crate::health::Health;

/// The field selector of the controller's watch: the runs not done yet.
pub const NOT_DONE: &str = "status.done!=true";
/// The field selector of the retained runs' watch.
pub const DONE: &str = "status.done=true";

/// A done run as its retention reads it.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RetainedRun {
    #[serde(default, deserialize_with = "read_metadata")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub status: Option<RetainedStatus>,
}

/// Of a done run's status, what its retention depends on.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetainedStatus {
    /// None also when it cannot be read (a state of a newer version, rolled back since): one
    /// such run would fail the list of every retained run, and `/readyz` with it.
    #[serde(default, deserialize_with = "readable_or_none")]
    pub finished: Option<Delivery>,
    #[serde(default)]
    pub finished_at: Option<String>,
}

fn readable_or_none<'de, D: serde::Deserializer<'de>, T: serde::de::DeserializeOwned>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(T::deserialize(&value).ok())
}

impl kube::Resource for RetainedRun {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        JobRun::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        JobRun::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        JobRun::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        JobRun::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl RetainedRun {
    /// When its retention is over; `None` when it is kept for good.
    fn until(&self, limits: &Limits) -> Option<Timestamp> {
        let status = self.status.as_ref();
        retained_until(
            self.metadata.creation_timestamp.as_ref(),
            status.and_then(|s| s.finished.as_ref()),
            status.and_then(|s| s.finished_at.as_deref()),
            limits,
        )
    }
}

/// A run whose retention ends at a known time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    until: Timestamp,
    uid: Option<Box<str>>,
}

/// The retained runs whose retention ends, by name and in the order it ends.
#[derive(Debug, Default)]
pub struct RetainedRuns {
    state: Mutex<State>,
    /// How many there are (`job_executor_runs_retained`).
    count: Gauge,
    /// Woken when the next retention to end is earlier than it was: the sweeper sleeps until
    /// the next end, or until this.
    earlier: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct State {
    by_name: HashMap<Arc<str>, Entry>,
    by_end: BTreeSet<(Timestamp, Arc<str>)>,
    /// The runs of a (re-)list under way, swapped in when it is done.
    listing: Option<Vec<(Arc<str>, Entry)>>,
}

impl State {
    fn set(&mut self, name: Arc<str>, entry: Option<Entry>) {
        if let Some(old) = self.by_name.remove(&name) {
            self.by_end.remove(&(old.until, name.clone()));
        }
        if let Some(entry) = entry {
            self.by_end.insert((entry.until, name.clone()));
            self.by_name.insert(name, entry);
        }
    }
}

/// A run whose retention is over: what deleting it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub name: String,
    pub uid: Option<String>,
}

impl RetainedRuns {
    pub fn new(count: Gauge) -> Self {
        RetainedRuns {
            count,
            ..Default::default()
        }
    }

    /// Counts the runs, and wakes the sweeper if the next end is now earlier than `before`.
    fn changed(&self, state: &State, before: Option<Timestamp>) {
        self.count
            .set(i64::try_from(state.by_name.len()).unwrap_or(i64::MAX));
        let next = Self::next_in(state);
        if next.is_some_and(|next| before.is_none_or(|before| next < before)) {
            self.earlier.notify_one();
        }
    }

    fn next_in(state: &State) -> Option<Timestamp> {
        state.by_end.first().map(|(until, _)| *until)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every change under this lock is whole: a panic elsewhere does not void it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Follows one event of the retained runs' watch.
    pub fn record(&self, event: &watcher::Event<RetainedRun>, limits: &Limits) {
        let entry = |run: &RetainedRun| {
            let name: Arc<str> = run.metadata.name.as_deref()?.into();
            let until = run.until(limits);
            Some((
                name,
                until.map(|until| Entry {
                    until,
                    uid: run.metadata.uid.as_deref().map(Box::from),
                }),
            ))
        };
        let mut state = self.state();
        let before = Self::next_in(&state);
        match event {
            watcher::Event::Init => state.listing = Some(Vec::new()),
            watcher::Event::InitApply(run) => {
                if let (Some(listing), Some((name, Some(entry)))) =
                    (state.listing.as_mut(), entry(run))
                {
                    listing.push((name, entry));
                }
            }
            watcher::Event::InitDone => {
                if let Some(listing) = state.listing.take() {
                    state.by_name.clear();
                    state.by_end.clear();
                    for (name, entry) in listing {
                        state.set(name, Some(entry));
                    }
                }
            }
            watcher::Event::Apply(run) => {
                if let Some((name, entry)) = entry(run) {
                    state.set(name, entry);
                }
            }
            watcher::Event::Delete(run) => {
                if let Some(name) = run.metadata.name.as_deref() {
                    state.set(name.into(), None);
                }
            }
        }
        self.changed(&state, before);
    }

    /// Takes the runs whose retention is over at `now`; a deletion that fails puts its run
    /// back with [`RetainedRuns::retry`].
    pub fn expired(&self, now: Timestamp) -> Vec<Expired> {
        let mut state = self.state();
        let before = Self::next_in(&state);
        let mut expired = Vec::new();
        while let Some((until, name)) = state.by_end.first().cloned() {
            if until > now {
                break;
            }
            state.by_end.pop_first();
            if let Some(entry) = state.by_name.remove(&name) {
                expired.push(Expired {
                    name: name.to_string(),
                    uid: entry.uid.map(String::from),
                });
            }
        }
        self.changed(&state, before);
        expired
    }

    /// A run whose deletion failed is tried again at `at` (unless the watch has news of it).
    pub fn retry(&self, run: Expired, at: Timestamp) {
        let mut state = self.state();
        let before = Self::next_in(&state);
        let name: Arc<str> = run.name.into();
        if state.by_name.contains_key(&name) {
            return;
        }
        state.set(
            name,
            Some(Entry {
                until: at,
                uid: run.uid.map(String::into_boxed_str),
            }),
        );
        self.changed(&state, before);
    }

    /// When the next retention ends.
    pub fn next_end(&self) -> Option<Timestamp> {
        Self::next_in(&self.state())
    }

    /// Waits until the next retention ends (or, with none, until one is known); returns early
    /// when one ending earlier arrives.
    async fn until_next_end(&self) {
        let wait = self.next_end().map(|end| {
            end.duration_since(Timestamp::now())
                .try_into()
                .unwrap_or_default()
        });
        let earlier = self.earlier.notified();
        match wait {
            Some(wait) => {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = earlier => {}
                }
            }
            None => earlier.await,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let len = self.state().by_name.len();
        assert_eq!(self.count.get(), i64::try_from(len).unwrap(), "counted");
        len
    }
}

/// How often a replica that does not lead looks again whether it does, while a retention is
/// over.
const LEAD_RECHECK: Duration = Duration::from_secs(1);
/// When a failed deletion is tried again.
const DELETE_RETRY: Duration = Duration::from_secs(5);

/// Watches the retained runs (`watched`, through the client without a read timeout) and,
/// while this replica leads, deletes each once its retention is over (through the controller's
/// request client). Runs until the process stops (its caller drops it).
pub async fn keep(watched: Api<RetainedRun>, ctx: Arc<Context>, health: Arc<Health>) {
    let runs: Api<RetainedRun> =
        Api::namespaced(ctx.parts.client.clone(), &ctx.parts.settings.job_namespace);
    let retained = Arc::new(RetainedRuns::new(ctx.parts.metrics.runs_retained()));
    let recorder = retained.clone();
    let watch_limits = ctx
        .parts
        .options
        .limits(ctx.parts.dead_letter_sink.is_some());
    let watching = watcher(watched, watcher::Config::default().fields(DONE))
        .inspect(super::watch_health(&health, "retained jobruns"))
        .default_backoff()
        .for_each(move |event| {
            if let Ok(event) = event {
                recorder.record(&event, &watch_limits);
            }
            futures::future::ready(())
        });
    let sweeping = async {
        loop {
            retained.until_next_end().await;
            if retained.next_end().is_none_or(|end| end > Timestamp::now()) {
                // Woken by an earlier end, not due yet.
                continue;
            }
            if !ctx.leading() {
                tokio::time::sleep(LEAD_RECHECK).await;
                continue;
            }
            for run in retained.expired(Timestamp::now()) {
                if let Err(error) = delete(&runs, &ctx, &run).await {
                    tracing::warn!(run = run.name, %error, "could not delete the finished run after its retention; trying again");
                    let again = Timestamp::now()
                        .checked_add(DELETE_RETRY)
                        .unwrap_or_else(|_| Timestamp::now());
                    retained.retry(run, again);
                }
            }
        }
    };
    tokio::join!(watching, sweeping);
}

/// Deletes a run whose retention is over, only if it is still the same run (its uid): a run
/// of the same name created since (an event redelivered after the deletion) is left alone.
async fn delete(
    runs: &Api<RetainedRun>,
    ctx: &Context,
    run: &Expired,
) -> Result<(), super::ReconcileError> {
    let params = DeleteParams {
        preconditions: run.uid.clone().map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match ctx.fenced(runs.delete(&run.name, &params)).await? {
        Ok(_) => {
            tracing::info!(
                run = run.name,
                "deleted the finished run after its retention"
            );
            Ok(())
        }
        // Gone already, or a new run of that name.
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limits() -> Limits {
        Limits {
            retention: Some(Duration::from_secs(60)),
            ..crate::controller::decide::tests::limits()
        }
    }

    fn run(name: &str, finished_at: &str, finished: serde_json::Value) -> RetainedRun {
        serde_json::from_value(json!({
            "apiVersion": "job-executor.dev/v1alpha1", "kind": "JobRun",
            "metadata": {"name": name, "uid": format!("uid-{name}"),
                         "creationTimestamp": "2026-12-02T10:00:00Z",
                         "managedFields": [{"manager": "job-executor"}]},
            "spec": {"event": {"id": "e", "data": {"big": "x".repeat(1000)}},
                     "action": {"name": "a", "tasks": [{"name": "t", "image": "i"}]}},
            "status": {"phase": "Succeeded", "done": true, "finishedAt": finished_at,
                       "finished": finished, "tasks": [{"name": "t", "phase": "Succeeded"}]}
        }))
        .unwrap()
    }

    /// Whether the sweeper was woken since last asked.
    fn woken(retained: &RetainedRuns) -> bool {
        use futures::FutureExt;
        retained.earlier.notified().now_or_never().is_some()
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn delivered() -> serde_json::Value {
        json!({"id": "f", "state": "Delivered", "attempts": 1})
    }

    /// A delivery this version cannot read (a state of a newer version, rolled back since) is
    /// read as none: the run is kept by its end's time, and the list it is in is read.
    #[test]
    fn a_delivery_that_cannot_be_read_is_none() {
        let newer = run(
            "n",
            "2026-12-02T10:01:00Z",
            json!({"id": "f", "state": "Forwarded", "attempts": 1}),
        );
        assert!(newer.status.as_ref().unwrap().finished.is_none());
        assert_eq!(
            newer.status.unwrap().finished_at.as_deref(),
            Some("2026-12-02T10:01:00Z")
        );
        let known = run("k", "2026-12-02T10:01:00Z", delivered());
        assert!(known.status.unwrap().finished.is_some());
    }

    #[test]
    fn runs_expire_in_the_order_their_retention_ends() {
        let retained = RetainedRuns::default();
        let limits = limits();
        retained.record(&watcher::Event::Init, &limits);
        for (name, finished) in [("b", "2026-12-02T10:02:00Z"), ("a", "2026-12-02T10:01:00Z")] {
            retained.record(
                &watcher::Event::InitApply(run(name, finished, delivered())),
                &limits,
            );
        }
        assert_eq!(retained.len(), 0, "swapped in once listed");
        assert!(!woken(&retained));
        retained.record(&watcher::Event::InitDone, &limits);
        assert_eq!(retained.len(), 2);
        assert!(woken(&retained), "the sweeper is woken by a first end");
        assert_eq!(retained.next_end(), Some(at("2026-12-02T10:02:00Z")));
        assert!(retained.expired(at("2026-12-02T10:01:59Z")).is_empty());
        let expired = retained.expired(at("2026-12-02T10:03:00Z"));
        assert_eq!(
            expired,
            [
                Expired {
                    name: "a".into(),
                    uid: Some("uid-a".into())
                },
                Expired {
                    name: "b".into(),
                    uid: Some("uid-b".into())
                }
            ]
        );
        assert_eq!(retained.len(), 0);
        // A deletion that failed is tried again at the time given.
        let mut again = expired;
        retained.retry(again.remove(0), at("2026-12-02T10:05:00Z"));
        assert_eq!(retained.next_end(), Some(at("2026-12-02T10:05:00Z")));
        assert!(woken(&retained));
        // A run whose retention ends later does not wake it; one that ends earlier does.
        retained.record(
            &watcher::Event::Apply(run("c", "2026-12-02T10:09:00Z", delivered())),
            &limits,
        );
        assert!(!woken(&retained));
        retained.record(
            &watcher::Event::Apply(run("d", "2026-12-02T10:03:00Z", delivered())),
            &limits,
        );
        assert!(woken(&retained));
    }

    #[test]
    fn deleted_runs_and_runs_kept_for_good_are_not_swept() {
        let retained = RetainedRuns::default();
        let limits = limits();
        let gave_up = json!({"id": "f", "state": "GaveUp", "attempts": 5});
        retained.record(
            &watcher::Event::Apply(run("kept", "2026-12-02T10:00:00Z", gave_up)),
            &limits,
        );
        retained.record(
            &watcher::Event::Apply(run("gone", "2026-12-02T10:00:00Z", delivered())),
            &limits,
        );
        assert_eq!(retained.len(), 1, "a .finished given up is kept on record");
        retained.record(
            &watcher::Event::Delete(run("gone", "2026-12-02T10:00:00Z", delivered())),
            &limits,
        );
        assert!(retained.expired(at("2027-01-01T00:00:00Z")).is_empty());
        // Retention off: nothing is swept.
        let forever = Limits {
            retention: None,
            ..limits
        };
        retained.record(
            &watcher::Event::Apply(run("old", "2026-12-02T10:00:00Z", delivered())),
            &forever,
        );
        assert_eq!(retained.len(), 0);
    }

    #[test]
    fn a_retained_run_is_read_without_its_event_and_tasks() {
        let run = run("r", "2026-12-02T10:00:00Z", delivered());
        assert_eq!(run.metadata.managed_fields, None);
        assert_eq!(run.until(&limits()), Some(at("2026-12-02T10:01:00Z")));
    }
}
