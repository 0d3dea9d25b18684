//! The runs this replica knows of, from its JobRun watch (the runs not done yet: done ones
//! leave it): which exist and how many are still in flight, so ingest can refuse new work
//! beyond `--max-runs-in-flight` without asking the API server (every replica keeps the watch,
//! leader or not).

use std::collections::HashMap;
use std::sync::Mutex;

use kube::ResourceExt;
use kube::runtime::watcher;

use crate::crd::JobRun;

#[derive(Debug, Default)]
pub struct KnownRuns {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Every run by name: whether it is in flight.
    runs: HashMap<String, bool>,
    in_flight: usize,
    /// The runs of a re-list under way, swapped in when it is done.
    listing: Option<HashMap<String, bool>>,
}

impl State {
    fn set(&mut self, name: String, in_flight: bool) {
        if let Some(was) = self.runs.insert(name, in_flight) {
            self.in_flight -= usize::from(was);
        }
        self.in_flight += usize::from(in_flight);
    }

    fn remove(&mut self, name: &str) {
        if let Some(was) = self.runs.remove(name) {
            self.in_flight -= usize::from(was);
        }
    }
}

impl KnownRuns {
    /// Follows one event of the JobRun watch.
    pub fn record(&self, event: &Result<watcher::Event<JobRun>, watcher::Error>) {
        let Ok(event) = event else { return };
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        match event {
            watcher::Event::Apply(run) => state.set(run.name_any(), !run.is_done()),
            watcher::Event::Delete(run) => state.remove(&run.name_any()),
            watcher::Event::Init => state.listing = Some(HashMap::new()),
            watcher::Event::InitApply(run) => {
                if let Some(listing) = state.listing.as_mut() {
                    listing.insert(run.name_any(), !run.is_done());
                }
            }
            watcher::Event::InitDone => {
                if let Some(listing) = state.listing.take() {
                    state.in_flight = listing.values().filter(|in_flight| **in_flight).count();
                    state.runs = listing;
                }
            }
        }
    }

    /// Runs not done yet (tasks running, or `.finished` still being delivered).
    pub fn in_flight(&self) -> usize {
        self.state
            .lock()
            .map(|state| state.in_flight)
            .unwrap_or_default()
    }

    /// Whether a run of that name exists (as far as this replica's watch has seen).
    pub fn exists(&self, name: &str) -> bool {
        self.state
            .lock()
            .map(|state| state.runs.contains_key(name))
            .unwrap_or_default()
    }
}
