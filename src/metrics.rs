//! The operator's metrics, from one prometheus-client registry. Every label value is one of a
//! fixed set (outcomes, phases, categories): never an object name or an error text.

use std::sync::OnceLock;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::source::GitMetrics;

type Labels = Vec<(&'static str, &'static str)>;
/// One label, as an array: counted once per event received, so finding its counter allocates
/// nothing.
type OneLabel = [(&'static str, &'static str); 1];

/// The outcomes of events taken (one per event at any rate), whose counters the receiver keeps
/// at hand; refusals (invalid, too large, …) are counted through the family.
const EVENT_OUTCOMES: [&str; 4] = ["accepted", "duplicate", "not_matched", "config_error"];
/// The phases a run ends in (`job_executor_runs_finished_total{phase}`).
pub const FINISHED_PHASES: [&str; 3] = ["Succeeded", "Failed", "Cancelled"];
/// The outgoing events (`kind` of the delivery counters) and how an attempt went (`outcome`).
pub const DELIVERY_KINDS: [&str; 2] = ["started", "finished"];
pub const DELIVERY_OUTCOMES: [&str; 3] = ["delivered", "retry", "gave_up"];
/// Where a reconcile failed (`job_executor_reconcile_errors_total{category}`).
pub const RECONCILE_ERROR_CATEGORIES: [&str; 8] = [
    "conflict",
    "throttled",
    "api_server",
    "api_refused",
    "api_unreachable",
    "encode",
    "config_source",
    "not_leader",
];
/// Labels with a value from the installation (a notification target's name): a bounded set,
/// the keys of the notifications Secret and the targets the configs name.
type NamedLabels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// Seconds, for what takes about a request: a controller's step, a delivery.
const REQUEST_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Seconds, for a run: from its event's arrival to its outcome.
const RUN_BUCKETS: [f64; 12] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0,
];

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_BUCKETS)
}

fn run_histogram() -> Histogram {
    Histogram::new(RUN_BUCKETS)
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    events_received: Family<OneLabel, Counter>,
    /// `events_received`'s counter of each of [`EVENT_OUTCOMES`], from its first event.
    events_received_by_outcome: [(&'static str, OnceLock<Counter>); EVENT_OUTCOMES.len()],
    runs_started: Counter,
    runs_finished: Family<Labels, Counter>,
    jobs_created: Counter,
    deliveries: Family<Labels, Counter>,
    dead_letters: Family<Labels, Counter>,
    notifications: Family<NamedLabels, Counter>,
    reconcile_errors: Family<Labels, Counter>,
    runs_in_flight: Gauge,
    runs_retained: Gauge,
    leader: Gauge,
    git_fetches: Family<Labels, Counter>,
    git_stale_lookups: Counter,
    git_config_reads: Counter,
    git_config_compiles: Counter,
    schedule_fires: Family<Labels, Counter>,
    schedule_missed: Counter,
    schedule_errors: Family<Labels, Counter>,
    step_durations: Histograms,
    run_durations: Histograms,
    delivery_durations: Histograms,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("job_executor");
        let events_received = Family::<OneLabel, Counter>::default();
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
        let dead_letters = Family::<Labels, Counter>::default();
        registry.register(
            "dead_letter_deliveries",
            "Attempts to send a given-up event to the dead-letter sink, by kind and outcome",
            dead_letters.clone(),
        );
        let notifications = Family::<NamedLabels, Counter>::default();
        registry.register(
            "notifications",
            "Notification attempts, by target, kind (slack, webhook) and outcome",
            notifications.clone(),
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
        let runs_retained = Gauge::default();
        registry.register(
            "runs_retained",
            "Done runs kept until their retention ends, their deletion scheduled (runs kept for \
             good are not counted)",
            runs_retained.clone(),
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
        let git_config_reads = Counter::default();
        registry.register(
            "git_config_reads",
            "Reads of a config path at a commit of the git repository (the config compiled, or found absent or unusable): one per commit and path, however many events need it",
            git_config_reads.clone(),
        );
        let git_config_compiles = Counter::default();
        registry.register(
            "git_config_compiles",
            "Configs compiled from the git repository: reads of a file whose content was not compiled already (a push compiles the configs it changed, not the others)",
            git_config_compiles.clone(),
        );
        let schedule_fires = Family::<Labels, Counter>::default();
        registry.register(
            "schedule_fires",
            "Slots of JobSchedules fired, by outcome (accepted, duplicate, not_matched, config_error)",
            schedule_fires.clone(),
        );
        let schedule_missed = Counter::default();
        registry.register(
            "schedule_missed_slots",
            "Slots of JobSchedules that passed without firing (their missed-slot policy, or older than its look-back window)",
            schedule_missed.clone(),
        );
        let schedule_errors = Family::<Labels, Counter>::default();
        registry.register(
            "schedule_errors",
            "JobSchedules that could not fire or record a slot, by reason (invalid, refused, status)",
            schedule_errors.clone(),
        );
        let step_durations: Histograms = Family::new_with_constructor(request_histogram);
        registry.register(
            "reconcile_step_duration_seconds",
            "How long each step of a run took (an event's delivery, a status write, a Job's creation, ...), by step",
            step_durations.clone(),
        );
        let run_durations: Histograms = Family::new_with_constructor(run_histogram);
        registry.register(
            "run_duration_seconds",
            "How long runs took, from their event's arrival to their outcome, by phase",
            run_durations.clone(),
        );
        let delivery_durations: Histograms = Family::new_with_constructor(request_histogram);
        registry.register(
            "event_delivery_duration_seconds",
            "How long one delivery attempt of an outgoing event took, by kind",
            delivery_durations.clone(),
        );
        // The series the shipped alerts read start at 0. Prometheus' `increase()` takes a series
        // that first appears at 1 for no increase: a run's first failure or a delivery's first
        // give-up after a start (or a change of leader) would raise no alert.
        for phase in FINISHED_PHASES {
            let _ = runs_finished.get_or_create(&vec![("phase", phase)]);
        }
        for kind in DELIVERY_KINDS {
            for outcome in DELIVERY_OUTCOMES {
                let _ = deliveries.get_or_create(&vec![("kind", kind), ("outcome", outcome)]);
                let _ = dead_letters.get_or_create(&vec![("kind", kind), ("outcome", outcome)]);
            }
        }
        for category in RECONCILE_ERROR_CATEGORIES {
            let _ = reconcile_errors.get_or_create(&vec![("category", category)]);
        }
        Metrics {
            registry,
            step_durations,
            run_durations,
            delivery_durations,
            events_received,
            events_received_by_outcome: EVENT_OUTCOMES.map(|label| (label, OnceLock::new())),
            runs_started,
            runs_finished,
            jobs_created,
            deliveries,
            dead_letters,
            notifications,
            reconcile_errors,
            runs_in_flight,
            runs_retained,
            leader,
            git_fetches,
            git_stale_lookups,
            git_config_reads,
            git_config_compiles,
            schedule_fires,
            schedule_missed,
            schedule_errors,
        }
    }

    pub fn event_received(&self, outcome: &'static str) {
        // A family's counter is found under a lock by hashing its labels; the receiver's
        // outcomes keep theirs once counted (a clone shares the count), and still appear
        // in /metrics only from their first event.
        match self
            .events_received_by_outcome
            .iter()
            .find(|(label, _)| *label == outcome)
        {
            Some((_, counter)) => counter
                .get_or_init(|| {
                    self.events_received
                        .get_or_create(&[("outcome", outcome)])
                        .clone()
                })
                .inc(),
            None => self
                .events_received
                .get_or_create(&[("outcome", outcome)])
                .inc(),
        };
    }

    pub fn schedule_fired(&self, outcome: &'static str) {
        self.schedule_fires
            .get_or_create(&vec![("outcome", outcome)])
            .inc();
    }

    pub fn schedule_missed(&self, slots: u64) {
        self.schedule_missed.inc_by(slots);
    }

    pub fn schedule_error(&self, reason: &'static str) {
        self.schedule_errors
            .get_or_create(&vec![("reason", reason)])
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

    pub fn dead_letter(&self, kind: &'static str, outcome: &'static str) {
        self.dead_letters
            .get_or_create(&vec![("kind", kind), ("outcome", outcome)])
            .inc();
    }

    pub fn notification(&self, kind: &'static str, target: &str, outcome: &'static str) {
        self.notifications
            .get_or_create(&vec![
                ("target", target.to_string()),
                ("kind", kind.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
    }

    pub fn step_took(&self, step: &'static str, took: std::time::Duration) {
        self.step_durations
            .get_or_create(&vec![("step", step)])
            .observe(took.as_secs_f64());
    }

    pub fn run_took(&self, phase: &'static str, took: std::time::Duration) {
        self.run_durations
            .get_or_create(&vec![("phase", phase)])
            .observe(took.as_secs_f64());
    }

    pub fn delivery_took(&self, kind: &'static str, took: std::time::Duration) {
        self.delivery_durations
            .get_or_create(&vec![("kind", kind)])
            .observe(took.as_secs_f64());
    }

    pub fn reconcile_error(&self, category: &'static str) {
        self.reconcile_errors
            .get_or_create(&vec![("category", category)])
            .inc();
    }

    /// The counters of the git config source.
    pub fn git(&self) -> GitMetrics {
        GitMetrics {
            fetches: self.git_fetches.clone(),
            stale_lookups: self.git_stale_lookups.clone(),
            config_reads: self.git_config_reads.clone(),
            config_compiles: self.git_config_compiles.clone(),
        }
    }

    /// The gauge of retained runs whose deletion is scheduled.
    pub fn runs_retained(&self) -> Gauge {
        self.runs_retained.clone()
    }

    /// The gauge of runs in flight, which the JobRun watch keeps (`KnownRuns`).
    pub fn runs_in_flight(&self) -> Gauge {
        self.runs_in_flight.clone()
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
    use std::collections::HashSet;

    /// The series names the operator exports: counters end in `_total`, histograms in
    /// `_bucket`, `_sum` and `_count`.
    fn exported() -> HashSet<String> {
        // A family shows once it has a series.
        let metrics = Metrics::new();
        metrics.event_received("accepted");
        metrics.run_finished("Succeeded");
        metrics.delivery("finished", "delivered");
        metrics.reconcile_error("conflict");
        metrics
            .git()
            .fetches
            .get_or_create(&vec![("outcome", "ok")])
            .inc();
        metrics.step_took("record", std::time::Duration::ZERO);
        metrics.run_took("Succeeded", std::time::Duration::ZERO);
        metrics.delivery_took("finished", std::time::Duration::ZERO);
        let text = metrics.render();
        let mut names = HashSet::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("# TYPE ") else {
                continue;
            };
            let (name, kind) = rest.split_once(' ').unwrap();
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            for suffix in suffixes {
                names.insert(format!("{name}{suffix}"));
            }
        }
        names
    }

    /// Every metric the chart's alerts and dashboard read is one the operator exports (a
    /// renamed metric would leave a dashboard blank and an alert silent).
    #[test]
    fn the_chart_reads_only_metrics_the_operator_exports() {
        let exported = exported();
        assert!(
            exported.contains("job_executor_runs_finished_total"),
            "{exported:?}"
        );
        for (file, text) in [
            (
                "prometheusrule.yaml",
                include_str!("../charts/job-executor/templates/prometheusrule.yaml"),
            ),
            (
                "job-executor.json",
                include_str!("../charts/job-executor/dashboards/job-executor.json"),
            ),
        ] {
            let mut read = 0;
            for (at, _) in text.match_indices("job_executor_") {
                let name: String = text[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    exported.contains(&name),
                    "{file} reads {name}, which is not exported"
                );
                read += 1;
            }
            assert!(read >= 5, "{file}: {read}");
        }
    }

    /// The series the shipped alerts read are there, at 0, before anything is counted, so the
    /// first failure or give-up is an increase.
    #[test]
    fn the_series_the_alerts_read_start_at_zero() {
        let text = Metrics::new().render();
        for line in [
            "job_executor_runs_finished_total{phase=\"Failed\"} 0",
            "job_executor_runs_finished_total{phase=\"Succeeded\"} 0",
            "job_executor_event_deliveries_total{kind=\"finished\",outcome=\"gave_up\"} 0",
            "job_executor_event_deliveries_total{kind=\"started\",outcome=\"gave_up\"} 0",
            "job_executor_dead_letter_deliveries_total{kind=\"finished\",outcome=\"gave_up\"} 0",
            "job_executor_reconcile_errors_total{category=\"api_server\"} 0",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn renders_counters_with_bounded_labels() {
        let metrics = Metrics::new();
        metrics.event_received("accepted");
        metrics.event_received("accepted");
        metrics.event_received("invalid");
        metrics.step_took("create_job", std::time::Duration::from_millis(3));
        metrics.run_took("Succeeded", std::time::Duration::from_secs(42));
        metrics.delivery_took("finished", std::time::Duration::from_millis(20));
        let text = metrics.render();
        for line in [
            "job_executor_reconcile_step_duration_seconds_bucket{le=\"0.005\",step=\"create_job\"} 1",
            "job_executor_reconcile_step_duration_seconds_bucket{le=\"0.0025\",step=\"create_job\"} 0",
            "job_executor_run_duration_seconds_bucket{le=\"60.0\",phase=\"Succeeded\"} 1",
            "job_executor_run_duration_seconds_bucket{le=\"30.0\",phase=\"Succeeded\"} 0",
            "job_executor_event_delivery_duration_seconds_count{kind=\"finished\"} 1",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(
            text.contains("job_executor_events_received_total{outcome=\"accepted\"} 2"),
            "{text}"
        );
        // A kept counter and one found in the family each time; an outcome not yet seen is
        // not shown.
        assert!(
            text.contains("job_executor_events_received_total{outcome=\"invalid\"} 1"),
            "{text}"
        );
        assert!(!text.contains("outcome=\"not_matched\""), "{text}");
        assert!(text.contains("job_executor_runs_in_flight 0"), "{text}");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            if let Some(labels) = line
                .split_once('{')
                .and_then(|(_, rest)| rest.split_once('}'))
            {
                for pair in labels.0.split(',') {
                    let (name, _) = pair.split_once('=').unwrap();
                    assert!(
                        ["outcome", "kind", "phase", "category", "step", "le"].contains(&name),
                        "label {name} in {line}"
                    );
                }
            }
        }
    }
}
