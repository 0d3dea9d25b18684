//! The runs this replica knows of, from its JobRun watch (the runs not done yet: done ones
//! leave it): which exist and how many are still in flight, so ingest can refuse new work
//! beyond `--max-runs-in-flight` without asking the API server (every replica keeps the watch,
//! leader or not), and `job_executor_runs_in_flight` says the same on every replica.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::runtime::watcher;
use prometheus_client::metrics::gauge::Gauge;

use crate::crd::JobRun;

#[derive(Debug, Default)]
pub struct KnownRuns {
    state: Mutex<State>,
    /// `job_executor_runs_in_flight`: the count, as the watch last showed it.
    gauge: Gauge,
}

#[derive(Debug, Default)]
struct State {
    /// Every run by name: whether it is in flight.
    runs: HashMap<String, bool>,
    in_flight: usize,
    /// The runs of a re-list under way, swapped in when it is done.
    listing: Option<HashMap<String, bool>>,
    /// Whether a list has been done once: before it, `runs` says nothing of the runs there are.
    listed: bool,
    /// Runs this replica stored that the watch has not shown yet, with when: in flight until
    /// it shows them, for `STORED_GRACE` at most. A run done and gone from the watch before its
    /// store's answer came back here (a run that fails at once, on a loaded machine, or stored
    /// by this replica while another leads) would otherwise count for good.
    stored: HashMap<String, Instant>,
    /// The same runs in the order they were stored, for their expiry.
    stored_order: VecDeque<(Instant, String)>,
}

/// How long a run stored here counts in flight without the watch showing it: far beyond the
/// watch's delay, short enough that a run counted by mistake frees its place soon.
const STORED_GRACE: Duration = Duration::from_secs(30);

impl State {
    /// Runs in flight: the watch's, and those stored here it has not shown yet.
    fn counted(&self) -> usize {
        self.in_flight + self.stored.len()
    }

    /// Forgets runs stored here longer than `STORED_GRACE` ago that the watch never showed.
    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.stored_order.front()
            && now.saturating_duration_since(*at) >= STORED_GRACE
        {
            if let Some((at, name)) = self.stored_order.pop_front()
                && self.stored.get(&name) == Some(&at)
            {
                self.stored.remove(&name);
            }
        }
    }

    fn set(&mut self, name: String, in_flight: bool) {
        self.stored.remove(&name);
        if let Some(was) = self.runs.insert(name, in_flight) {
            self.in_flight -= usize::from(was);
        }
        self.in_flight += usize::from(in_flight);
    }

    fn remove(&mut self, name: &str) {
        self.stored.remove(name);
        if let Some(was) = self.runs.remove(name) {
            self.in_flight -= usize::from(was);
        }
    }
}

impl KnownRuns {
    /// Runs known from the watch, their count in flight kept in `gauge`.
    pub fn new(gauge: Gauge) -> Self {
        KnownRuns {
            state: Mutex::default(),
            gauge,
        }
    }

    /// Follows one event of the JobRun watch.
    ///
    /// A run being deleted is not in flight: it takes no step more, though a finalizer may keep
    /// it for long (`step::reconcile`).
    pub fn record(&self, event: &Result<watcher::Event<JobRun>, watcher::Error>) {
        let Ok(event) = event else { return };
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        match event {
            watcher::Event::Apply(run) => state.set(run.name_any(), in_flight(run)),
            watcher::Event::Delete(run) => state.remove(&run.name_any()),
            watcher::Event::Init => state.listing = Some(HashMap::new()),
            watcher::Event::InitApply(run) => {
                if let Some(listing) = state.listing.as_mut() {
                    listing.insert(run.name_any(), in_flight(run));
                }
            }
            watcher::Event::InitDone => {
                if let Some(listing) = state.listing.take() {
                    state.listed = true;
                    state.in_flight = listing.values().filter(|in_flight| **in_flight).count();
                    state.runs = listing;
                    let State { runs, stored, .. } = &mut *state;
                    stored.retain(|name, _| !runs.contains_key(name));
                }
            }
        }
        state.expire(Instant::now());
        self.set_gauge(&state);
    }

    fn set_gauge(&self, state: &State) {
        self.gauge
            .set(i64::try_from(state.counted()).unwrap_or(i64::MAX));
    }

    /// A run this replica has just stored: in flight from now, not from when the watch shows
    /// it (under load a moment later, while the next events are judged without it: a burst,
    /// or a schedule's catch-up, passed the bound by as many).
    pub fn stored(&self, name: &str) {
        self.stored_at(name, Instant::now());
    }

    fn stored_at(&self, name: &str, now: Instant) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        state.expire(now);
        if !state.runs.contains_key(name) && !state.stored.contains_key(name) {
            state.stored.insert(name.to_string(), now);
            state.stored_order.push_back((now, name.to_string()));
        }
        self.set_gauge(&state);
    }

    /// Runs not done yet (tasks running, or `.finished` still being delivered).
    pub fn in_flight(&self) -> usize {
        self.in_flight_at(Instant::now())
    }

    fn in_flight_at(&self, now: Instant) -> usize {
        let Ok(mut state) = self.state.lock() else {
            return 0;
        };
        state.expire(now);
        self.set_gauge(&state);
        state.counted()
    }

    /// Whether the watch has listed the runs once (until then, none is known).
    pub fn listed(&self) -> bool {
        self.state
            .lock()
            .map(|state| state.listed)
            .unwrap_or_default()
    }

    /// Whether a run of that name exists (as far as this replica's watch has seen, or stored
    /// here a moment ago).
    pub fn exists(&self, name: &str) -> bool {
        self.state
            .lock()
            .map(|state| state.runs.contains_key(name) || state.stored.contains_key(name))
            .unwrap_or_default()
    }
}

/// Whether a run still takes steps: not done, and not being deleted.
fn in_flight(run: &JobRun) -> bool {
    !run.is_done() && !run.is_being_deleted()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{JobRunStatus, RunPhase};

    fn run(name: &str, phase: Option<RunPhase>) -> JobRun {
        let mut run: JobRun = serde_json::from_value(serde_json::json!({
            "apiVersion": "job-executor.dev/v1alpha1",
            "kind": "JobRun",
            "metadata": {"name": name},
            "spec": {
                "event": {"specversion": "1.0", "id": "e", "source": "s", "type": "t"},
                "action": {"index": 0, "name": "a", "tasks": []},
                "arrivedAt": "2026-12-01T10:00:00Z",
            }
        }))
        .unwrap();
        run.status = phase.map(|phase| JobRunStatus {
            phase,
            ..Default::default()
        });
        run
    }

    /// The count follows the watch, whoever leads: runs created, done, deleted, and a re-list
    /// that finds fewer (a replica that stopped leading keeps counting what the watch shows).
    #[test]
    fn the_runs_in_flight_follow_the_watch() {
        let gauge = Gauge::default();
        let known = KnownRuns::new(gauge.clone());
        let event = |event| known.record(&Ok(event));
        event(watcher::Event::Init);
        event(watcher::Event::InitApply(run("a", Some(RunPhase::Running))));
        event(watcher::Event::InitApply(run("b", None)));
        event(watcher::Event::InitApply(run(
            "c",
            Some(RunPhase::Succeeded),
        )));
        assert_eq!(gauge.get(), 0, "counted once the list is whole");
        event(watcher::Event::InitDone);
        assert_eq!((known.in_flight(), gauge.get()), (2, 2));
        event(watcher::Event::Apply(run("d", None)));
        event(watcher::Event::Apply(run("a", Some(RunPhase::Succeeded))));
        assert_eq!((known.in_flight(), gauge.get()), (2, 2));
        // Deleted while in flight: never reconciled as done, still not counted.
        event(watcher::Event::Delete(run("b", None)));
        assert_eq!((known.in_flight(), gauge.get()), (1, 1));
        // Being deleted (held by a finalizer): not counted, still known.
        let mut deleting = run("d", None);
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        event(watcher::Event::Apply(deleting));
        assert_eq!((known.in_flight(), gauge.get()), (0, 0));
        assert!(known.exists("d"));
        event(watcher::Event::Apply(run("d", None)));
        event(watcher::Event::Init);
        event(watcher::Event::InitDone);
        assert_eq!((known.in_flight(), gauge.get()), (0, 0));
        assert!(!known.exists("d"));
    }

    /// A run this replica stored counts at once; the watch, when it shows it, counts it once,
    /// and says when it is done. One stored during a re-list is kept through it.
    #[test]
    fn a_run_stored_here_counts_before_the_watch_shows_it() {
        let gauge = Gauge::default();
        let known = KnownRuns::new(gauge.clone());
        let event = |event| known.record(&Ok(event));
        known.stored("e");
        assert_eq!((known.in_flight(), gauge.get()), (1, 1));
        assert!(known.exists("e"));
        event(watcher::Event::Apply(run("e", None)));
        assert_eq!(known.in_flight(), 1);
        event(watcher::Event::Apply(run("e", Some(RunPhase::Succeeded))));
        assert_eq!((known.in_flight(), gauge.get()), (0, 0));
        // Stored again (its redelivery, let in): not counted again as in flight by the store.
        known.stored("e");
        assert_eq!(known.in_flight(), 0);
        event(watcher::Event::Init);
        known.stored("f");
        event(watcher::Event::InitDone);
        assert_eq!(known.in_flight(), 1);
        assert!(known.exists("f"));
        event(watcher::Event::Apply(run("f", None)));
        event(watcher::Event::Delete(run("f", None)));
        assert_eq!((known.in_flight(), gauge.get()), (0, 0));
    }

    /// A run done and gone from the watch (which shows runs not done) before its store's answer
    /// came back counts for a moment only, not for good; one stored here that the watch shows
    /// late still counts until it does, within the grace.
    #[test]
    fn a_run_gone_before_its_store_returned_frees_its_place() {
        let gauge = Gauge::default();
        let known = KnownRuns::new(gauge.clone());
        let event = |event| known.record(&Ok(event));
        let start = Instant::now();
        event(watcher::Event::Apply(run("x", None)));
        event(watcher::Event::Delete(run("x", None)));
        known.stored_at("x", start);
        known.stored_at("y", start + Duration::from_secs(20));
        assert_eq!(known.in_flight_at(start + Duration::from_secs(29)), 2);
        assert_eq!(known.in_flight_at(start + STORED_GRACE), 1);
        assert_eq!(gauge.get(), 1);
        assert!(!known.exists("x") && known.exists("y"));
        // Stored again after it left (a redelivery): counted afresh, and expires afresh.
        known.stored_at("x", start + Duration::from_secs(40));
        assert_eq!(known.in_flight_at(start + Duration::from_secs(49)), 2);
        assert_eq!(known.in_flight_at(start + Duration::from_secs(70)), 0);
        assert_eq!(gauge.get(), 0);
    }
}
