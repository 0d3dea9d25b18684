//! The controller: reconciles JobRuns, owns their Jobs, watches the Jobs' pods.
//!
//! Jobs and pods are read from reflector stores fed by one watch per kind, never polled; the
//! reconcile of a run is woken by a change of the run, of its Job, or of its Job's pods.

mod cached;
mod decide;
mod group;
pub(crate) mod history;
pub mod known;
mod logs;
mod observe;
mod outputs;
pub mod report;
mod retained;
mod step;
mod written;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as EventsV1;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Resource;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::{mpsc, watch};

use cached::{CachedJob, CachedPod};
use written::WrittenStatuses;

use crate::crd::{DeadLetter, Delivery, JobRun, JobRunStatus, TaskPhase};
use crate::health::Health;
use crate::labels::{self, managed_selector};
use crate::leader::{Leadership, NotLeader};
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::sink::notify::Notifier;
use crate::sink::{RetryPolicy, Sink};
use crate::source::Source;

/// Tunables of the controller.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// Total bytes of log excerpts in one run's `.finished` event.
    pub log_excerpt_bytes: usize,
    /// How long a pod may fail to start (image pull, missing Secret, unschedulable).
    pub never_started_timeout: Duration,
    /// When an outgoing event is retried, and when it is given up.
    pub delivery: RetryPolicy,
    /// When a notification is retried, and when it is given up.
    pub notification: RetryPolicy,
    /// Runs reconciled at the same time.
    pub concurrency: u16,
    /// How long a finished run is kept after its outcome was fixed (and its `.finished`
    /// delivered); `None`: for good.
    pub jobrun_retention: Option<Duration>,
}

/// How long a Job the controller created may be missing from its watch before it asks.
const MISSING_JOB_GRACE: Duration = Duration::from_secs(30);

impl ControllerOptions {
    /// What the controller's decisions depend on.
    fn limits(&self, dead_letter: bool) -> decide::Limits {
        decide::Limits {
            missing_job_grace: MISSING_JOB_GRACE,
            never_started_timeout: self.never_started_timeout,
            delivery: self.delivery,
            dead_letter,
            notification: self.notification,
            retention: self.jobrun_retention,
        }
    }
}

/// What a reconcile needs: the parts the controller was built from, and its caches.
pub struct Context {
    pub parts: Parts,
    runs: Store<JobRun>,
    /// The concurrency groups' runs.
    groups: Arc<group::Groups>,
    /// Where runs' Events go to be published.
    history: Publisher,
    jobs: Store<CachedJob>,
    pods: Store<CachedPod>,
    /// The names of each Job's pods, so finding them does not scan every cached pod.
    pod_index: Arc<PodIndex>,
    /// Consecutive failures per run, for backoff in `error_policy`.
    failures: std::sync::Mutex<HashMap<String, u32>>,
    /// The newest status this process wrote per run, because the watch cache that hands runs
    /// to `reconcile` can still hold an older copy.
    written: Arc<WrittenStatuses>,
    /// True once the Job and pod watches (and the runs') have listed: until then their caches
    /// are partial, and a Job's pods missing from them says nothing.
    listed: tokio::sync::watch::Receiver<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("cannot encode the status: {0}")]
    Encode(#[from] serde_json::Error),
    /// The config source cannot be read now (a git repository that is unreachable).
    #[error("{0}")]
    Source(#[from] crate::source::SourceError),
    /// A side effect was not made: this replica does not hold the Lease (anymore).
    #[error("{0}")]
    NotLeader(#[from] NotLeader),
}

impl ReconcileError {
    /// How long the API server asked to wait (`429` and `503` carry `retryAfterSeconds`).
    pub fn retry_after(&self) -> Duration {
        match self {
            ReconcileError::Kube(kube::Error::Api(status)) => Duration::from_secs(
                status
                    .details
                    .as_ref()
                    .map_or(0, |details| u64::from(details.retry_after_seconds)),
            ),
            _ => Duration::ZERO,
        }
    }

    /// A bounded category for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            ReconcileError::Kube(kube::Error::Api(status)) if status.code == 409 => "conflict",
            ReconcileError::Kube(kube::Error::Api(status)) if status.code == 429 => "throttled",
            ReconcileError::Kube(kube::Error::Api(status)) if status.code >= 500 => "api_server",
            ReconcileError::Kube(kube::Error::Api(_)) => "api_refused",
            ReconcileError::Kube(_) => "api_unreachable",
            ReconcileError::Encode(_) => "encode",
            ReconcileError::Source(_) => "config_source",
            ReconcileError::NotLeader(_) => "not_leader",
        }
    }
}

/// What the controller is built from.
pub struct Parts {
    /// For requests: each answer awaited at most `--kube-api-read-timeout-seconds`.
    pub client: Client,
    /// For watches, which stay quiet while nothing changes: no read timeout.
    pub watch_client: Client,
    pub settings: Arc<Settings>,
    pub source: Arc<Source>,
    pub sink: Arc<Sink>,
    /// Where events the sink did not take go, if anywhere.
    pub dead_letter_sink: Option<Arc<Sink>>,
    /// Sends the runs' notifications.
    pub notifier: Arc<Notifier>,
    pub metrics: Arc<Metrics>,
    pub options: ControllerOptions,
    /// Whether this replica holds the Lease, and until when: runs are reconciled, and side
    /// effects made, only while it does.
    pub leadership: watch::Receiver<Leadership>,
    /// Kept from the JobRun watch, for ingest's bound on runs in flight.
    pub known_runs: Arc<known::KnownRuns>,
    /// This replica's name, as the Events it publishes say.
    pub identity: String,
}

/// Runs the controller until `shutdown` resolves; `health` becomes synced once every watch has
/// listed its objects, and carries what a failing watch says (a missing CRD, refused access).
pub async fn run(
    parts: Parts,
    health: Arc<Health>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = shutdown.shared();
    let namespace = parts.settings.job_namespace.clone();
    let runs: Api<JobRun> = Api::namespaced(parts.watch_client.clone(), &namespace);
    let jobs: Api<CachedJob> = Api::namespaced(parts.watch_client.clone(), &namespace);
    let pods: Api<CachedPod> = Api::namespaced(parts.watch_client.clone(), &namespace);
    let children = watcher::Config::default().labels(&managed_selector());

    // One watch per kind, each feeding a store; the controller reads Jobs and pods from the
    // stores and is woken by their events. Ready once each has listed its objects.
    let synced = Arc::new(Synced::default());
    let (run_store, run_writer) = reflector::store();
    let (groups, woken) = group::Groups::new(&namespace);
    let groups = Arc::new(groups);
    let members = groups.clone();
    let written = Arc::new(WrittenStatuses::default());
    // Only the runs not done yet: a done run leaves this watch (and the cache) with the write
    // that records it done, and is kept apart until its retention is over (`retained`).
    let run_events = reflector(
        run_writer,
        watcher(runs, watcher::Config::default().fields(retained::NOT_DONE)).modify(trim_run),
    )
    .inspect(synced.marker(0))
    .inspect({
        let known = parts.known_runs.clone();
        move |event| known.record(event)
    })
    .inspect(move |event| members.record(event))
    .inspect({
        let written = written.clone();
        move |event| written.record(event)
    })
    .inspect(watch_health(&health, "jobruns"))
    .default_backoff()
    .touched_objects();
    let run_events = objects_only(run_events);
    let (job_store, job_writer) = reflector::store();
    let job_events = reflector(job_writer, watcher(jobs, children.clone()))
        .inspect(synced.marker(1))
        .inspect(watch_health(&health, "jobs"))
        .default_backoff()
        .touched_objects();
    let job_events = objects_only(job_events);
    let (pod_store, pod_writer) = reflector::store();
    let pod_index = Arc::new(PodIndex::default());
    let indexer = pod_index.clone();
    let pod_events = reflector(
        pod_writer,
        watcher(pods, children).inspect(move |event| indexer.record(event)),
    )
    .inspect(synced.marker(2))
    .inspect(watch_health(&health, "pods"))
    .default_backoff()
    .touched_objects();
    let pod_events = objects_only(pod_events);

    let concurrency = parts.options.concurrency;
    let gained = leadership_gained(parts.leadership.clone());
    let history = Publisher::start(
        parts.client.clone(),
        parts.identity.clone(),
        parts.leadership.clone(),
    );
    let context = Arc::new(Context {
        parts,
        runs: run_store.clone(),
        groups,
        history,
        jobs: job_store,
        pods: pod_store,
        pod_index,
        failures: std::sync::Mutex::new(HashMap::new()),
        written,
        listed: synced.all.subscribe(),
    });

    let job_namespace = namespace.clone();
    let controller = Controller::for_stream(run_events, run_store)
        .watches_stream(job_events, move |job: CachedJob| {
            Some(ObjectRef::<JobRun>::new(job.run.as_deref()?).within(&job_namespace))
        })
        .watches_stream(pod_events, move |pod: CachedPod| {
            Some(ObjectRef::<JobRun>::new(pod.run.as_deref()?).within(&namespace))
        })
        // A replica that becomes leader takes every run up (as a follower it left them alone).
        .reconcile_all_on(gained)
        .reconcile_all_on(futures::stream::unfold(
            synced.relisted.subscribe(),
            |mut relisted| async move {
                relisted.changed().await.ok()?;
                Some(((), relisted))
            },
        ))
        // A concurrency group's change wakes its waiting runs.
        .reconcile_on(futures::stream::unfold(woken, |mut woken| async move {
            let run = woken.recv().await?;
            Some((run, woken))
        }))
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown.clone());
    let synced_health = health.clone();
    let retention = context.parts.options.jobrun_retention.is_some().then(|| {
        let runs = Api::namespaced(
            context.parts.watch_client.clone(),
            &context.parts.settings.job_namespace,
        );
        retained::keep(runs, context.clone(), health.clone())
    });
    let mut all_listed = synced.all.subscribe();
    let retaining = tokio::spawn(async move {
        let _ = all_listed.wait_for(|listed| *listed).await;
        synced_health.set_synced();
        tracing::info!("watches synced; ready");
        // The retained runs are listed only now: however many there are, they do not hold up
        // the start.
        if let Some(retention) = retention {
            retention.await;
        }
    });
    let _stop_retaining = AbortOnDrop(retaining);
    let running = controller
        .run(step::reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile did not complete");
            }
        });
    // kube-runtime's graceful shutdown lets running reconciles finish, but its runner waits for
    // the JobRun store first: with the CRD missing (or the API server away) that never happens
    // and the process would never exit. So the shutdown has a bound; everything a reconcile
    // did is recorded in the API server, and the next start resumes from there.
    let bounded = async {
        shutdown.await;
        if health.is_synced() {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
            tracing::warn!(
                "reconciles still running {}s after the shutdown began; stopping anyway",
                SHUTDOWN_GRACE.as_secs()
            );
        }
    };
    tokio::select! {
        () = running => {}
        () = bounded => {}
    }
}

/// Aborts a task when dropped: the retained runs' watch stops with the controller.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How many Events may wait to be published; past it, new ones are dropped (and logged).
const EVENT_QUEUE: usize = 4096;

/// An Event waiting to be published: the object it is about (shared by the Events of one
/// change) and what it says. The `EventsV1` object is built only when it is sent: a whole one
/// is about 1 KB, and thousands can wait while runs start by the hundred a second.
type QueuedEvent = (Arc<ObjectReference>, history::RunEvent);

/// Publishes runs' Events (`events.k8s.io/v1`) from a queue, in order, off the reconciles'
/// path, and only while this replica leads: a follower's or a fenced-off ex-leader's history is
/// not told. Each Event is created once and never updated: a run's history has no repeats to
/// fold into a series (kube-runtime's recorder would keep every Event of the last six minutes in
/// memory to find them, which at a few hundred runs a second is more than the whole operator).
pub struct Publisher {
    queue: mpsc::Sender<QueuedEvent>,
}

impl Publisher {
    pub(crate) fn start(
        client: Client,
        identity: String,
        leadership: watch::Receiver<Leadership>,
    ) -> Self {
        let (queue, mut pending) = mpsc::channel::<QueuedEvent>(EVENT_QUEUE);
        tokio::spawn(async move {
            let mut last = 0i128;
            while let Some((regarding, event)) = pending.recv().await {
                let left = match leadership.borrow().fence(FENCE_MARGIN) {
                    Ok(left) => left,
                    Err(_) => continue,
                };
                // Named `<run>.<time in hex>` as Kubernetes names Events, the time kept
                // increasing so that names never collide and sort in order.
                let now = jiff::Timestamp::now();
                last = now.as_nanosecond().max(last + 1);
                let name = regarding.name.as_deref().unwrap_or_default();
                let namespace = regarding.namespace.as_deref().unwrap_or_default();
                let api: Api<EventsV1> = Api::namespaced(client.clone(), namespace);
                let recorded = EventsV1 {
                    metadata: kube::api::ObjectMeta {
                        name: Some(event_name(name, last)),
                        ..Default::default()
                    },
                    event_time: Some(MicroTime(now)),
                    reporting_instance: Some(identity.clone()),
                    ..recorded_event(&regarding, &event)
                };
                let params = PostParams::default();
                let created = api.create(&params, &recorded);
                match crate::leader::within(left, created).await {
                    Some(Ok(_)) => {}
                    Some(Err(error)) => {
                        tracing::warn!(run = name, reason = event.reason, %error, "could not publish an Event")
                    }
                    None => {
                        tracing::warn!(
                            run = name,
                            reason = event.reason,
                            "publishing an Event took too long"
                        )
                    }
                }
            }
        });
        Publisher { queue }
    }

    fn publish(&self, run: &JobRun, events: Vec<history::RunEvent>) {
        let mut run_ref = run.object_ref(&());
        run_ref.resource_version = None;
        let run_ref = Arc::new(run_ref);
        for event in events {
            self.send(run_ref.clone(), event);
        }
    }

    /// Publishes an Event about any object (a JobSchedule's firing, say).
    pub(crate) fn publish_about(&self, regarding: ObjectReference, event: history::RunEvent) {
        self.send(Arc::new(regarding), event);
    }

    fn send(&self, regarding: Arc<ObjectReference>, event: history::RunEvent) {
        if let Err(error) = self.queue.try_send((regarding, event)) {
            // Full, or closed as the operator stops.
            let why = error.to_string();
            let (regarding, _) = error.into_inner();
            tracing::debug!(object = regarding.name, why, "an Event was dropped");
        }
    }
}

/// The Event `event` about `regarding` says, but for its name, time and reporting instance.
fn recorded_event(regarding: &ObjectReference, event: &history::RunEvent) -> EventsV1 {
    // A task's Events point into the run, as a container's point into its pod.
    let regarding = ObjectReference {
        field_path: event
            .task
            .map(|index| format!("spec.action.tasks[{index}]")),
        ..regarding.clone()
    };
    let related = event.job.clone().map(|job| ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: Some(job),
        namespace: regarding.namespace.clone(),
        ..Default::default()
    });
    EventsV1 {
        type_: Some(if event.warning { "Warning" } else { "Normal" }.into()),
        reason: Some(event.reason.to_string()),
        note: Some(event.note.clone()),
        action: Some(event.action.to_string()),
        reporting_controller: Some(labels::MANAGED_BY.to_string()),
        regarding: Some(regarding),
        related,
        ..Default::default()
    }
}

/// When a run whose step was refused for want of the Lease is looked at again.
const NOT_LEADER_RETRY: Duration = Duration::from_secs(1);

/// How long running reconciles may take to finish after a shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The least lease time left for a side effect to be started: an API request or a delivery
/// should be done well within it.
pub(crate) const FENCE_MARGIN: Duration = Duration::from_secs(1);

/// One item each time this replica becomes leader.
pub(crate) fn leadership_gained(rx: watch::Receiver<Leadership>) -> impl Stream<Item = ()> {
    futures::stream::unfold((rx, false), |(mut rx, mut was_leading)| async move {
        loop {
            let leading = rx.borrow_and_update().is_leading();
            if leading && !was_leading {
                return Some(((), (rx, true)));
            }
            was_leading = leading;
            rx.changed().await.ok()?;
        }
    })
}

/// A watch's objects as a controller's triggers, without its errors. The watch reports them
/// (`watch_health`) and tries again after its own backoff; an error let through would also
/// pause the controller's merged triggers under kube-runtime's trigger backoff (up to 30 s,
/// growing with each error of any watch), so that after an API server restart no run would be
/// reconciled for half a minute after the watches were back.
pub(crate) fn objects_only<K>(
    watch: impl Stream<Item = Result<K, watcher::Error>>,
) -> impl Stream<Item = Result<K, watcher::Error>> {
    watch.filter(|object| futures::future::ready(object.is_ok()))
}

/// An `inspect` callback recording what a watch's failure means in `health` (logged once per
/// new problem, not at every retry), and clearing it when the watch works again.
fn watch_health<K>(
    health: &Arc<Health>,
    source: &'static str,
) -> impl Fn(&Result<watcher::Event<K>, watcher::Error>) + use<K> {
    let health = health.clone();
    move |event| report_watch(&health, source, event)
}

/// Whether a watch was told its history is gone (410 Expired: compacted, or an API server that
/// restarted with a fresh watch cache). Not a problem: the watch lists its objects again.
pub(crate) fn history_expired(error: &watcher::Error) -> bool {
    matches!(error, watcher::Error::WatchError(status) if status.code == 410)
}

/// How long a watch's failure is shown on `/readyz` unless it fails again. A watch that resumes
/// after an error says nothing until an object changes (kube-runtime yields no event for it),
/// while one that still fails says so at each retry: within its backoff (at most 30 s, doubled
/// by jitter) and the time a request takes to fail.
const WATCH_PROBLEM_LASTS: Duration = Duration::from_secs(120);

fn report_watch<K>(
    health: &Health,
    source: &'static str,
    event: &Result<watcher::Event<K>, watcher::Error>,
) {
    if let Err(error) = event
        && history_expired(error)
    {
        tracing::info!(
            watch = source,
            "the API server no longer has the watch's history (410 Expired): listing again"
        );
        return;
    }
    let problem = match event {
        Ok(_) => None,
        Err(
            watcher::Error::InitialListFailed(error)
            | watcher::Error::WatchStartFailed(error)
            | watcher::Error::WatchFailed(error),
        ) => Some(crate::health::explain(error)),
        Err(watcher::Error::WatchError(status)) => {
            Some(crate::health::explain(&kube::Error::Api(status.clone())))
        }
        Err(other) => Some(format!("the watch of {source} failed: {other}")),
    };
    let changed = health.report_for(source, problem.clone(), WATCH_PROBLEM_LASTS);
    match problem {
        Some(problem) if changed => tracing::error!(watch = source, "{problem}"),
        None if changed => tracing::info!(watch = source, "the watch works again"),
        _ => {}
    }
}

/// Which watches have finished their initial list.
struct Synced {
    listed: [AtomicBool; 3],
    /// True once every watch has listed.
    all: tokio::sync::watch::Sender<bool>,
    /// Counts the lists of the watches after their first (the watch was lost): a run
    /// reconciled while one was under way read the caches from before it (they take a list
    /// whole at its end), and no event of the list's end wakes it, so every run is looked at
    /// again then (`RELISTS_WAKE`).
    relisted: tokio::sync::watch::Sender<u64>,
}

impl Default for Synced {
    fn default() -> Self {
        Synced {
            listed: Default::default(),
            all: tokio::sync::watch::channel(false).0,
            relisted: tokio::sync::watch::channel(0).0,
        }
    }
}

/// The watches whose lists after the first wake every run: each of them. A run reconciled
/// while the Jobs or pods are listed again read the caches from before the list; one whose
/// reconcile a re-list of the runs started before the store had it (kube-runtime swaps a list
/// in whole at its end) was dropped as not found, and a group's members are taken anew from
/// the list, which wakes none of them.
const RELISTS_WAKE: [usize; 3] = [0, 1, 2];

impl Synced {
    /// An `inspect` callback marking watch `index` as listed at its first `InitDone`.
    fn marker<K>(
        self: &Arc<Self>,
        index: usize,
    ) -> impl Fn(&Result<watcher::Event<K>, watcher::Error>) + use<K> {
        let synced = self.clone();
        move |event| {
            if !matches!(event, Ok(watcher::Event::InitDone)) {
                return;
            }
            if synced.listed[index].swap(true, Ordering::SeqCst) {
                if RELISTS_WAKE.contains(&index) {
                    synced.relisted.send_modify(|lists| *lists += 1);
                }
            } else if synced.listed.iter().all(|l| l.load(Ordering::SeqCst)) {
                synced.all.send_replace(true);
            }
        }
    }
}

/// The name of an Event about the object `name`: `<name>.<stamp in hex>`, as Kubernetes names
/// Events, with the object's name cut so that the whole is a DNS subdomain of at most 253
/// characters (a JobSchedule's name may have 253 itself).
fn event_name(name: &str, stamp: i128) -> String {
    let stamp = format!("{stamp:x}");
    let room = 253usize.saturating_sub(stamp.len() + 1);
    // Object names are DNS subdomains: ASCII, so any byte is a character boundary.
    let cut = name.get(..room.min(name.len())).unwrap_or(name);
    format!("{}.{stamp}", cut.trim_end_matches(['-', '.']))
}

/// How many runs' failure counts are kept before those of runs no longer watched are dropped.
const FAILURES_KEPT: usize = 256;

/// Transient errors back off per run, exponentially from half a second to five minutes.
///
/// A refused side effect for want of the Lease is not the run's failure but the replica's
/// state, and does not count: a renewal that came late (a busy machine) would otherwise push
/// runs minutes out, while the replica goes on leading and no leadership change wakes them. The
/// run is looked at again a second later: by then the Lease is renewed, or lost (then the run is
/// left alone, and taken up again with every other when this replica leads again).
fn error_policy(run: Arc<JobRun>, error: &ReconcileError, context: Arc<Context>) -> Action {
    context.parts.metrics.reconcile_error(error.category());
    if matches!(error, ReconcileError::NotLeader(_)) {
        tracing::info!(run = %run.name_any(), %error, "a step waits for the Lease");
        return Action::requeue(NOT_LEADER_RETRY);
    }
    let failures = context
        .failures
        .lock()
        .map(|mut map| count_failure(&mut map, &run.name_any(), |name| context.watched(name)))
        .unwrap_or(1);
    let delay = Duration::from_millis(500)
        .saturating_mul(1u32 << failures.min(10))
        .min(Duration::from_secs(300))
        .max(error.retry_after());
    tracing::warn!(run = %run.name_any(), %error, category = error.category(), ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

/// Counts one more failure of `run` and returns its count.
///
/// A run that left the watch (done by another replica, or deleted) while its last reconcile
/// here failed is not reconciled here again: such counts are dropped as the map reaches each
/// power of two from FAILURES_KEPT (a pass now and then, not one for every failure of an
/// outage).
fn count_failure(
    failures: &mut HashMap<String, u32>,
    run: &str,
    watched: impl Fn(&str) -> bool,
) -> u32 {
    if failures.len() >= FAILURES_KEPT && failures.len().is_power_of_two() {
        failures.retain(|name, _| watched(name));
    }
    let count = failures.entry(run.to_string()).or_insert(0);
    *count = count.saturating_add(1);
    *count
}

impl Context {
    fn leading(&self) -> bool {
        self.parts.leadership.borrow().is_leading()
    }

    /// Waits until every watch has listed once (at once after that): a run is decided on
    /// whole caches only (a pod not listed yet is not a pod that does not exist).
    async fn watches_listed(&self) {
        let mut listed = self.listed.clone();
        let _ = listed.wait_for(|listed| *listed).await;
    }

    /// Makes a side effect only while this replica holds the Lease, with at least
    /// `FENCE_MARGIN` to spare, and drops it if it is not done before the lease would lapse
    /// (renewals meanwhile move that on): a paused or partitioned ex-leader sends nothing once
    /// a standby may have taken over, while a leader that keeps renewing lets a slow request
    /// (a sink's whole timeout) end on its own.
    async fn fenced<T>(
        &self,
        effect: impl std::future::Future<Output = T>,
    ) -> Result<T, ReconcileError> {
        Ok(crate::leader::while_leading(&self.parts.leadership, FENCE_MARGIN, effect).await?)
    }

    /// A run of a concurrency group as the cache has it, its phase the newest this process
    /// knows (its own write may be ahead of the cache).
    fn group_member(&self, name: &str) -> Option<group::Member> {
        let namespace = &self.parts.settings.job_namespace;
        let run = self.runs.get(&ObjectRef::new(name).within(namespace))?;
        let cached = run.status.as_ref();
        let uid = run.metadata.uid.as_deref().unwrap_or_default();
        let written = self
            .written
            .phase_ahead_of(name, uid, cached.map_or(0, |s| s.revision));
        let phase = written.unwrap_or_else(|| cached.map(|s| s.phase).unwrap_or_default());
        Some(group::Member::of(&run, phase))
    }

    fn forget_status(&self, run: &str, uid: &str, revision: u64) {
        // A done run leaves the watch; whether it has is asked under the lock its removal
        // takes too.
        self.written
            .forget(run, uid, revision, || self.watched(run));
    }

    /// Whether the run is in the controller's watch (its cache) now.
    fn watched(&self, run: &str) -> bool {
        let namespace = &self.parts.settings.job_namespace;
        self.runs
            .get(&ObjectRef::new(run).within(namespace))
            .is_some()
    }

    fn succeeded(&self, run: &str) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(run);
        }
    }

    fn job(&self, name: &str) -> Option<Arc<CachedJob>> {
        self.jobs
            .get(&ObjectRef::new(name).within(&self.parts.settings.job_namespace))
    }

    /// The cached pods labelled with the Job's name that `keep` takes (by their Job's uid: a
    /// Job of the name made before may leave pods that still stop).
    fn pods_of_job(&self, job: &str, keep: impl Fn(&CachedPod) -> bool) -> Vec<Arc<CachedPod>> {
        let namespace = &self.parts.settings.job_namespace;
        let mut pods: Vec<Arc<CachedPod>> = self
            .pod_index
            .names(job)
            .iter()
            .filter_map(|name| self.pods.get(&ObjectRef::new(name).within(namespace)))
            .filter(|pod| keep(pod))
            .collect();
        pods.sort_by_key(|pod| pod.metadata.creation_timestamp.clone().map(|t| t.0));
        pods
    }
}

/// Pod names by Job name, fed by the pod watch as its store is: names are added on every applied
/// pod and removed on deletes, and a list (the first, or after the watch was lost) is gathered
/// apart and replaces them when it is whole, as the store swaps its content then. So the index
/// never names a pod the store does not have yet, nor keeps one deleted while the watch was away.
#[derive(Default)]
struct PodIndex {
    by_job: std::sync::Mutex<PodNames>,
}

#[derive(Default)]
struct PodNames {
    current: HashMap<String, Vec<String>>,
    /// The list under way, swapped in at `InitDone`.
    listing: Option<HashMap<String, Vec<String>>>,
}

fn add_pod(by_job: &mut HashMap<String, Vec<String>>, pod: &CachedPod) {
    if let (Some(job), Some(name)) = (pod.job.as_deref(), pod.metadata.name.as_ref()) {
        let names = by_job.entry(job.to_string()).or_default();
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
}

impl PodIndex {
    fn record(&self, event: &Result<watcher::Event<CachedPod>, watcher::Error>) {
        let Ok(mut by_job) = self.by_job.lock() else {
            return;
        };
        match event {
            Ok(watcher::Event::Init) => by_job.listing = Some(HashMap::new()),
            Ok(watcher::Event::InitApply(pod)) => {
                add_pod(by_job.listing.get_or_insert_with(HashMap::new), pod);
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(listed) = by_job.listing.take() {
                    by_job.current = listed;
                }
            }
            Ok(watcher::Event::Apply(pod)) => add_pod(&mut by_job.current, pod),
            Ok(watcher::Event::Delete(pod)) => {
                if let (Some(job), Some(name)) = (pod.job.as_deref(), pod.metadata.name.as_ref())
                    && let Some(names) = by_job.current.get_mut(job)
                {
                    names.retain(|n| n != name);
                    if names.is_empty() {
                        by_job.current.remove(job);
                    }
                }
            }
            Err(_) => {}
        }
    }

    fn names(&self, job: &str) -> Vec<String> {
        self.by_job
            .lock()
            .ok()
            .and_then(|by_job| by_job.current.get(job).cloned())
            .unwrap_or_default()
    }
}

/// Keeps of a cached run what the controller reads. Of a run in flight whose Jobs are all
/// created, the event's fields its replies carry. A done run is in the cache only briefly
/// (from the write that records it done until the watch drops it, or until a run an older
/// version ended is marked done): it is not worked on (`Executor::execute` only marks a run an
/// older version ended), but counted and seen by its concurrency group; its retention is the
/// retained runs' watch's (`retained`). Of it, the cache keeps its name, creation and version,
/// its concurrency group and arrival, and of its status the phase, `done`, the state of its
/// `.finished` and notifications, and when it finished; everything else (the event, the tasks
/// and their records, labels and annotations) stays in the API server only.
fn trim_run(run: &mut JobRun) {
    // Of any run: the controller reads no label of it (a Job's are rendered from the event and
    // the action), nor its field managers.
    run.metadata.managed_fields = None;
    run.metadata.labels = None;
    if !run.is_done() {
        // Once no task waits for its Job, no Job is rendered from the event again: only the
        // replies and notifications read it (a task never goes back to waiting).
        let jobs_made = run.status.as_ref().is_some_and(|status| {
            !status.tasks.is_empty()
                && status
                    .tasks
                    .iter()
                    .all(|task| task.phase != TaskPhase::Pending)
        });
        if jobs_made {
            run.spec.event.keep_reply_fields();
        }
        return;
    }
    run.metadata.annotations = None;
    let spec = &mut run.spec;
    spec.event.forget();
    spec.action.tasks = Vec::new();
    spec.action.files = Vec::new();
    spec.action.notify = Vec::new();
    spec.failure = None;
    spec.config_revision = None;
    spec.config_dir = None;
    spec.files_revision = None;
    spec.files_dir = None;
    spec.config_stale = None;
    if let Some(status) = run.status.as_mut() {
        let finished = status.finished.take().map(|delivery| {
            Box::new(Delivery {
                state: delivery.state,
                dead_letter: delivery.dead_letter.map(|letter| DeadLetter {
                    state: letter.state,
                    ..Default::default()
                }),
                ..Default::default()
            })
        });
        *status = JobRunStatus {
            revision: status.revision,
            done: status.done,
            phase: status.phase,
            finished,
            finished_at: status.finished_at.take(),
            notifications: std::mem::take(&mut status.notifications),
            ..Default::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, job: &str) -> CachedPod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"batch.kubernetes.io/job-name": job},
                         "managedFields": [{"manager": "kubelet"}]},
            "spec": {"initContainers": [{"name": "stage", "image": "x", "env": [{"name": "A", "value": "1"}]}],
                     "containers": [{"name": "task", "image": "y", "args": ["long"]}]}
        }))
        .unwrap()
    }

    /// The label values the controller counts are those the metrics start at 0 (the alerts'
    /// series): one added to a kind here and not there would appear only at its first count.
    #[test]
    fn the_counted_label_values_are_those_the_metrics_start_with() {
        use crate::crd::RunPhase;
        use crate::event::TaskEventKind;
        use crate::metrics::{DELIVERY_KINDS, DELIVERY_OUTCOMES, FINISHED_PHASES};
        use decide::Attempt;
        for attempt in [Attempt::Delivered, Attempt::Retry, Attempt::GaveUp] {
            assert!(DELIVERY_OUTCOMES.contains(&attempt.as_str()), "{attempt:?}");
        }
        for kind in [TaskEventKind::Started, TaskEventKind::Finished] {
            assert!(DELIVERY_KINDS.contains(&kind.as_str()), "{kind:?}");
        }
        for phase in [
            RunPhase::Pending,
            RunPhase::Queued,
            RunPhase::Running,
            RunPhase::Succeeded,
            RunPhase::Failed,
            RunPhase::Cancelled,
        ] {
            assert_eq!(
                FINISHED_PHASES.contains(&phase.as_str()),
                phase.is_finished(),
                "{phase:?}"
            );
        }
        let api = |code: u16| {
            ReconcileError::Kube(kube::Error::Api(Box::new(kube::core::Status {
                code,
                ..Default::default()
            })))
        };
        let errors = [
            api(409),
            api(429),
            api(503),
            api(403),
            ReconcileError::Kube(kube::Error::LinesCodecMaxLineLengthExceeded),
            ReconcileError::Encode(serde_json::from_str::<u8>("x").unwrap_err()),
            ReconcileError::NotLeader(NotLeader(String::new())),
        ];
        for error in errors {
            assert!(
                crate::metrics::RECONCILE_ERROR_CATEGORIES.contains(&error.category()),
                "{error}"
            );
        }
    }

    /// Event names stay DNS subdomains of at most 253 characters, whatever the object's name.
    #[test]
    fn event_names_are_cut_to_what_kubernetes_takes() {
        let stamp = 0x1234_5678_9abc_def0_i128;
        assert_eq!(event_name("run-1", stamp), "run-1.123456789abcdef0");
        let long = format!("{}-{}", "a".repeat(234), "b".repeat(18));
        let name = event_name(&long, stamp);
        assert_eq!(name.len(), 253, "{name}");
        assert!(name.starts_with(&"a".repeat(234)) && name.ends_with(".123456789abcdef0"));
        // A cut that would end a label in `-` or `.` ends before it.
        let dashed = format!("{}-{}", "a".repeat(235), "b".repeat(17));
        let name = event_name(&dashed, stamp);
        assert_eq!(name, format!("{}.123456789abcdef0", "a".repeat(235)));
    }

    /// Counts of runs no longer watched go as the map reaches a power of two from
    /// FAILURES_KEPT; a watched run's count stays, and between passes nothing is dropped.
    #[test]
    fn failure_counts_of_runs_no_longer_watched_are_dropped_at_powers_of_two() {
        let watched = |name: &str| name.starts_with("kept-");
        let mut failures = HashMap::new();
        assert_eq!(count_failure(&mut failures, "kept-0", watched), 1);
        assert_eq!(count_failure(&mut failures, "kept-0", watched), 2);
        for index in 1..FAILURES_KEPT {
            count_failure(&mut failures, &format!("gone-{index}"), watched);
        }
        assert_eq!(failures.len(), FAILURES_KEPT, "no pass below FAILURES_KEPT");
        assert_eq!(count_failure(&mut failures, "kept-1", watched), 1);
        assert_eq!(
            failures
                .keys()
                .filter(|name| name.starts_with("gone-"))
                .count(),
            0,
            "the pass at FAILURES_KEPT drops the runs not watched"
        );
        assert_eq!(
            failures.get("kept-0"),
            Some(&2),
            "a watched run's count stays"
        );
        // Past FAILURES_KEPT watched runs: the pass at 256 drops nothing, the next is at 512.
        for index in 2..300 {
            count_failure(&mut failures, &format!("kept-{index}"), watched);
        }
        assert_eq!(failures.len(), 300);
        while failures.len() < 2 * FAILURES_KEPT {
            let index = failures.len();
            count_failure(&mut failures, &format!("gone-again-{index}"), watched);
        }
        assert_eq!(count_failure(&mut failures, "kept-0", watched), 3);
        assert_eq!(
            failures.len(),
            300,
            "the pass at 512 keeps the watched runs only"
        );
    }

    /// Ready once every watch listed; each later list of the Jobs or pods wakes every run.
    #[test]
    fn the_first_lists_make_ready_and_later_ones_of_jobs_and_pods_wake_every_run() {
        let synced = Arc::new(Synced::default());
        let all = synced.all.subscribe();
        let relisted = synced.relisted.subscribe();
        let done = || Ok::<_, watcher::Error>(watcher::Event::<CachedPod>::InitDone);
        synced.marker(0)(&done());
        synced.marker(1)(&done());
        assert!(!*all.borrow(), "the pods are not listed yet");
        synced.marker(2)(&done());
        assert!(*all.borrow());
        assert_eq!(*relisted.borrow(), 0, "first lists wake nobody");
        synced.marker(2)(&done());
        synced.marker(1)(&done());
        synced.marker(0)(&done());
        assert_eq!(*relisted.borrow(), 3, "each re-list wakes every run");
        synced.marker(2)(&Ok::<_, watcher::Error>(watcher::Event::<CachedPod>::Init));
        assert_eq!(*relisted.borrow(), 3);
    }

    #[test]
    fn the_pod_index_follows_applies_and_deletes_and_swaps_in_each_list_as_the_store_does() {
        let index = PodIndex::default();
        index.record(&Ok(watcher::Event::Init));
        index.record(&Ok(watcher::Event::InitApply(pod("a-1", "a"))));
        assert!(
            index.names("a").is_empty(),
            "not before the store has it: the list is whole only at InitDone"
        );
        index.record(&Ok(watcher::Event::InitDone));
        assert_eq!(index.names("a"), ["a-1"]);
        index.record(&Ok(watcher::Event::Apply(pod("a-2", "a"))));
        index.record(&Ok(watcher::Event::Apply(pod("a-2", "a"))));
        index.record(&Ok(watcher::Event::Apply(pod("b-1", "b"))));
        assert_eq!(index.names("a"), ["a-1", "a-2"]);
        index.record(&Ok(watcher::Event::Delete(pod("a-1", "a"))));
        assert_eq!(index.names("a"), ["a-2"]);
        index.record(&Ok(watcher::Event::Delete(pod("b-1", "b"))));
        assert!(index.names("b").is_empty());
        assert!(index.names("c").is_empty());
        // The watch lost and listing again: the old names hold until the list is whole, then a
        // pod deleted meanwhile (no delete event) is gone and one made meanwhile is there.
        index.record(&Ok(watcher::Event::Init));
        index.record(&Ok(watcher::Event::InitApply(pod("a-3", "a"))));
        assert_eq!(index.names("a"), ["a-2"]);
        index.record(&Ok(watcher::Event::InitDone));
        assert_eq!(index.names("a"), ["a-3"]);
    }

    fn done_run(phase: &str, finished: &str) -> JobRun {
        serde_json::from_value(json!({
            "apiVersion": "job-executor.dev/v1alpha1", "kind": "JobRun",
            "metadata": {"name": "r", "managedFields": [{"manager": "job-executor"}]},
            "spec": {
                "event": {"specversion": "1.0", "id": "e", "source": "s",
                          "type": "sh.keptn.event.test.triggered", "data": {"padding": "x"}},
                "action": {"index": 0, "name": "a", "tasks": [{"name": "t", "image": "i"}],
                           "concurrency": {"group": "g", "limit": 1, "policy": "queue"}},
                "arrivedAt": "2026-12-01T10:00:00Z"
            },
            "status": {
                "revision": 4, "phase": phase, "taskSummary": "1/1", "done": finished == "Delivered",
                "tasks": [{"name": "t", "phase": "Succeeded", "logs": "many lines"}],
                "started": {"id": "s", "state": "Delivered"},
                "finished": {"id": "f", "state": finished},
                "outcome": {"status": "succeeded", "message": "ok"},
                "finishedAt": "2026-12-01T10:01:00Z"
            }
        }))
        .unwrap()
    }

    #[test]
    fn cached_done_runs_keep_only_what_their_group_and_count_read() {
        let whole = done_run("Succeeded", "Delivered");
        let mut trimmed = whole.clone();
        trim_run(&mut trimmed);
        assert!(trimmed.is_done());
        // Kept: the controller marks a done run only when it is not marked yet.
        assert!(trimmed.status.as_ref().unwrap().done);
        assert_eq!(trimmed.metadata.managed_fields, None);
        assert_eq!(trimmed.spec.event.as_str(), "null");
        assert!(trimmed.spec.action.tasks.is_empty());
        let status = trimmed.status.as_ref().unwrap();
        assert!(status.tasks.is_empty() && status.outcome.is_none() && status.started.is_none());
        assert_eq!(status.finished.as_ref().unwrap().id, "");
        let phase = crate::crd::RunPhase::Succeeded;
        assert_eq!(
            group::Member::of(&trimmed, phase),
            group::Member::of(&whole, phase)
        );

        // A run whose `.finished` was given up is done, trimmed or not.
        let given_up = done_run("Succeeded", "GaveUp");
        let mut cached = given_up.clone();
        trim_run(&mut cached);
        assert!(cached.is_done());

        // A run not done yet (its `.finished` still being delivered) is kept whole but for
        // the event's fields no reply carries: its Jobs are all made.
        let pending = done_run("Succeeded", "Pending");
        let mut cached = pending.clone();
        trim_run(&mut cached);
        assert_eq!(
            cached.spec.event.as_str(),
            r#"{"data":{},"id":"e","source":"s","specversion":"1.0","type":"sh.keptn.event.test.triggered"}"#
        );
        cached.metadata.managed_fields = pending.metadata.managed_fields.clone();
        cached.spec.event = pending.spec.event.clone();
        assert_eq!(
            serde_json::to_value(&cached).unwrap(),
            serde_json::to_value(&pending).unwrap()
        );
    }

    #[test]
    fn a_tasks_event_points_into_the_run_and_names_its_job() {
        let run = ObjectReference {
            api_version: Some("job-executor.dev/v1alpha1".into()),
            kind: Some("JobRun".into()),
            name: Some("r".into()),
            namespace: Some("ns".into()),
            uid: Some("u".into()),
            ..Default::default()
        };
        let event = history::RunEvent {
            warning: true,
            reason: "TaskFailed",
            action: "EndTask",
            note: "task 'b' failed".into(),
            task: Some(1),
            job: Some("r-1-b".into()),
        };
        let recorded = recorded_event(&run, &event);
        assert_eq!(recorded.type_.as_deref(), Some("Warning"));
        assert_eq!(
            (recorded.reason.as_deref(), recorded.action.as_deref()),
            (Some("TaskFailed"), Some("EndTask"))
        );
        assert_eq!(recorded.note.as_deref(), Some("task 'b' failed"));
        let regarding = recorded.regarding.unwrap();
        assert_eq!(
            regarding.field_path.as_deref(),
            Some("spec.action.tasks[1]")
        );
        assert_eq!(
            (regarding.uid, regarding.name),
            (run.uid.clone(), run.name.clone())
        );
        let related = recorded.related.unwrap();
        assert_eq!(
            (related.kind.as_deref(), related.name.as_deref()),
            (Some("Job"), Some("r-1-b"))
        );
        assert_eq!(related.namespace.as_deref(), Some("ns"));

        // The run's own Events: about the run as a whole, no Job.
        let about_run = history::RunEvent {
            task: None,
            job: None,
            warning: false,
            ..event
        };
        let recorded = recorded_event(&run, &about_run);
        assert_eq!(recorded.type_.as_deref(), Some("Normal"));
        assert_eq!(recorded.regarding.unwrap().field_path, None);
        assert_eq!(recorded.related, None);
    }

    #[test]
    fn a_run_keeps_its_whole_event_while_a_task_waits_for_its_job() {
        let mut run = done_run("Running", "Pending");
        let status = run.status.as_mut().unwrap();
        status.done = false;
        status.tasks[0].phase = crate::crd::TaskPhase::Pending;
        let mut cached = run.clone();
        trim_run(&mut cached);
        assert_eq!(cached.spec.event, run.spec.event);
        // Not initialised yet: no task records at all.
        run.status = None;
        let mut cached = run.clone();
        trim_run(&mut cached);
        assert_eq!(cached.spec.event, run.spec.event);
    }
}
