//! The operator's metrics, from one prometheus-client registry. Every label value is one of a
//! fixed set (outcomes, phases, categories): never an object name or an error text.

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    events_received: Family<Labels, Counter>,
    runs_started: Counter,
    runs_finished: Family<Labels, Counter>,
    jobs_created: Counter,
    deliveries: Family<Labels, Counter>,
    reconcile_errors: Family<Labels, Counter>,
    runs_in_flight: Gauge,
    leader: Gauge,
    git_fetches: Family<Labels, Counter>,
    git_stale_lookups: Counter,
    in_flight: Mutex<HashSet<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("job_executor");
        let events_received = Family::<Labels, Counter>::default();
        registry.register(
            "events_received",
            "CloudEvents received, by outcome",
            events_received.clone(),
        );
        let runs_started = Counter::default();
        registry.register(
            "runs_started",
            "Runs accepted (JobRuns created)",
            runs_started.clone(),
        );
        let runs_finished = Family::<Labels, Counter>::default();
        registry.register(
            "runs_finished",
            "Runs finished, by phase",
            runs_finished.clone(),
        );
        let jobs_created = Counter::default();
        registry.register("jobs_created", "Jobs created", jobs_created.clone());
        let deliveries = Family::<Labels, Counter>::default();
        registry.register(
            "event_deliveries",
            "Outgoing event delivery attempts, by kind and outcome",
            deliveries.clone(),
        );
        let reconcile_errors = Family::<Labels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconcile errors, by category",
            reconcile_errors.clone(),
        );
        let runs_in_flight = Gauge::default();
        registry.register(
            "runs_in_flight",
            "Runs accepted and not finished",
            runs_in_flight.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the Lease and reconciles runs, else 0",
            leader.clone(),
        );
        let git_fetches = Family::<Labels, Counter>::default();
        registry.register(
            "git_fetches",
            "Fetches of the git config repository, by outcome (ok, failed)",
            git_fetches.clone(),
        );
        let git_stale_lookups = Counter::default();
        registry.register(
            "git_stale_lookups",
            "Config lookups that read the branch heads of the last successful fetch because the git repository could not be fetched",
            git_stale_lookups.clone(),
        );
        Metrics {
            registry,
            events_received,
            runs_started,
            runs_finished,
            jobs_created,
            deliveries,
            reconcile_errors,
            runs_in_flight,
            leader,
            git_fetches,
            git_stale_lookups,
            in_flight: Mutex::new(HashSet::new()),
        }
    }

    pub fn event_received(&self, outcome: &'static str) {
        self.events_received
            .get_or_create(&vec![("outcome", outcome)])
            .inc();
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    pub fn run_started(&self) {
        self.runs_started.inc();
    }

    pub fn run_finished(&self, phase: &'static str) {
        self.runs_finished
            .get_or_create(&vec![("phase", phase)])
            .inc();
    }

    pub fn job_created(&self) {
        self.jobs_created.inc();
    }

    pub fn delivery(&self, kind: &'static str, outcome: &'static str) {
        self.deliveries
            .get_or_create(&vec![("kind", kind), ("outcome", outcome)])
            .inc();
    }

    pub fn reconcile_error(&self, category: &'static str) {
        self.reconcile_errors
            .get_or_create(&vec![("category", category)])
            .inc();
    }

    /// The counter the git config source counts its fetches in.
    pub fn git_fetches(&self) -> Family<Labels, Counter> {
        self.git_fetches.clone()
    }

    /// The counter the git config source counts its stale lookups in.
    pub fn git_stale_lookups(&self) -> Counter {
        self.git_stale_lookups.clone()
    }

    /// Records whether a run is in flight; the gauge counts distinct runs.
    pub fn set_in_flight(&self, run: &str, in_flight: bool) {
        if let Ok(mut set) = self.in_flight.lock() {
            let changed = if in_flight {
                set.insert(run.to_string())
            } else {
                set.remove(run)
            };
            if changed {
                self.runs_in_flight.set(set.len() as i64);
            }
        }
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_bounded_labels() {
        let metrics = Metrics::new();
        metrics.event_received("accepted");
        metrics.event_received("accepted");
        metrics.set_in_flight("a", true);
        metrics.set_in_flight("a", true);
        metrics.set_in_flight("b", true);
        metrics.set_in_flight("a", false);
        let text = metrics.render();
        assert!(
            text.contains("job_executor_events_received_total{outcome=\"accepted\"} 2"),
            "{text}"
        );
        assert!(text.contains("job_executor_runs_in_flight 1"), "{text}");
        // Bounded: the runs in flight are a count; their names are never label values.
        assert!(
            !text.contains("=\"a\"") && !text.contains("=\"b\""),
            "{text}"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            if let Some(labels) = line
                .split_once('{')
                .and_then(|(_, rest)| rest.split_once('}'))
            {
                for pair in labels.0.split(',') {
                    let (name, _) = pair.split_once('=').unwrap();
                    assert!(
                        ["outcome", "kind", "phase", "category", "le"].contains(&name),
                        "label {name} in {line}"
                    );
                }
            }
        }
    }
}
