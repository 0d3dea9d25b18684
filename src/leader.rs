//! Leader election over a `coordination.k8s.io/v1` Lease, with client-go's protocol: every
//! replica receives events, only the holder of the Lease reconciles runs.
//!
//! - A follower takes the Lease over once its record (holder, renew time, transitions) has not
//!   changed for the lease duration, measured on its own monotonic clock (the timestamps in the
//!   Lease are another machine's and are only compared for change).
//! - Every write carries the `resourceVersion` last read, so of two replicas racing for the
//!   Lease one gets 409.
//! - The leader renews every retry period. It counts itself leader only until `valid_until`:
//!   the instant *before* its last successful renew was sent, plus the renew deadline. The renew
//!   deadline is shorter than the lease duration, so a leader that cannot renew (paused,
//!   partitioned, slow) stops counting itself leader at least `duration - renew_deadline` before
//!   any other replica may take over. Side effects check this first ([`Leadership::fence`]).
//! - On shutdown the leader releases the Lease (an empty holder), so a standby takes over at
//!   its next retry instead of after the lease duration.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;

use crate::health::Health;

/// How leadership is held.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// The Lease's name, in the job namespace.
    pub name: String,
    /// This replica's identity (its pod name in a cluster).
    pub identity: String,
    /// How long a follower waits for a silent leader before taking over.
    pub duration: Duration,
    /// How long the leader keeps leading without a successful renew.
    pub renew_deadline: Duration,
    /// How often the leader renews and a follower looks.
    pub retry_period: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "the lease timings must satisfy duration ({duration:?}) > renew deadline \
         ({renew_deadline:?}) > 1.2 × retry period ({retry_period:?}), and renew deadline > \
         retry period + 1s (a leader acts only with a second of its lease left, and renews \
         every retry period), with a retry period of at least 0.1s (each is a request to the \
         API server, from every replica)"
    )]
    Timings {
        duration: Duration,
        renew_deadline: Duration,
        retry_period: Duration,
    },
}

/// The shortest retry period: a replica looks at the Lease (and a leader writes it) every
/// period, through the request limit the controller's requests share.
pub const MIN_RETRY_PERIOD: Duration = Duration::from_millis(100);

impl LeaseSettings {
    pub fn check(&self) -> Result<(), LeaseError> {
        if self.duration > self.renew_deadline
            && self.renew_deadline > self.retry_period.mul_f32(1.2)
            && self.renew_deadline > self.retry_period + crate::controller::FENCE_MARGIN
            && self.retry_period >= MIN_RETRY_PERIOD
        {
            Ok(())
        } else {
            Err(LeaseError::Timings {
                duration: self.duration,
                renew_deadline: self.renew_deadline,
                retry_period: self.retry_period,
            })
        }
    }
}

/// What this replica knows about who leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership {
    /// Another replica leads (or nobody: `holder` empty).
    Following { holder: Option<String> },
    /// This replica leads until `valid_until`, unless a renew moves it.
    Leading { valid_until: Instant, term: i32 },
}

/// A side effect refused because this replica does not (or no longer) hold the Lease.
#[derive(Debug, Clone, thiserror::Error)]
#[error("this replica does not lead (anymore): {0}")]
pub struct NotLeader(pub String);

/// Runs `effect` if it completes within `left`, and otherwise drops it. Unlike
/// `tokio::time::timeout`, the deadline is looked at *before* the effect is polled: a process
/// paused past its deadline (SIGSTOP, a VM frozen) drops a request still waiting for a
/// connection or the client's rate limit instead of sending it when it resumes.
pub async fn within<T>(left: Duration, effect: impl std::future::Future<Output = T>) -> Option<T> {
    let deadline = Instant::now() + left;
    let mut effect = std::pin::pin!(effect);
    let mut expiry = std::pin::pin!(tokio::time::sleep(left));
    std::future::poll_fn(|cx| {
        if Instant::now() >= deadline {
            return std::task::Poll::Ready(None);
        }
        if let std::task::Poll::Ready(done) = effect.as_mut().poll(cx) {
            return std::task::Poll::Ready(Some(done));
        }
        match expiry.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(None),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    })
    .await
}

/// Runs `effect` while this replica leads: it is started only with more than `margin` of the
/// lease left, and dropped once the lease would lapse. Renewals made meanwhile move that point
/// on, so a slow effect of a leader that keeps renewing (a sink that takes its whole timeout,
/// longer than the renew deadline) runs to its own end, while that of a leader that stops
/// renewing, is paused or loses the Lease (to come back in a later term) is dropped: as in
/// `within`, the lease is looked at before each poll of the effect.
pub async fn while_leading<T>(
    leadership: &watch::Receiver<Leadership>,
    margin: Duration,
    effect: impl std::future::Future<Output = T>,
) -> Result<T, NotLeader> {
    use std::task::Poll;
    let term = {
        let current = leadership.borrow();
        current.fence(margin)?;
        current.term()
    };
    let mut effect = std::pin::pin!(effect);
    let mut expiry = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
    std::future::poll_fn(|cx| {
        loop {
            let left = {
                let current = leadership.borrow();
                current
                    .fence(Duration::ZERO)
                    .ok()
                    .filter(|_| current.term() == term)
            };
            let Some(left) = left else {
                return Poll::Ready(Err(NotLeader(
                    "the lease would lapse before the request was done".into(),
                )));
            };
            if let Poll::Ready(done) = effect.as_mut().poll(cx) {
                return Poll::Ready(Ok(done));
            }
            expiry.as_mut().reset(tokio::time::Instant::now() + left);
            if expiry.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    })
    .await
}

impl Leadership {
    /// The time left to finish a side effect in, if this replica leads for at least `margin`
    /// more: the effect must be sent within it (and is dropped when it is not done by then).
    pub fn fence(&self, margin: Duration) -> Result<Duration, NotLeader> {
        match self {
            Leadership::Leading { valid_until, .. } => valid_until
                .checked_duration_since(Instant::now())
                .filter(|left| *left > margin)
                .ok_or_else(|| NotLeader("the lease was not renewed in time".into())),
            Leadership::Following { holder } => Err(NotLeader(match holder {
                Some(holder) => format!("{holder} holds the lease"),
                None => "nobody holds the lease".into(),
            })),
        }
    }

    /// The term (the Lease's transitions) this replica leads in.
    fn term(&self) -> Option<i32> {
        match self {
            Leadership::Leading { term, .. } => Some(*term),
            Leadership::Following { .. } => None,
        }
    }

    pub fn is_leading(&self) -> bool {
        matches!(self, Leadership::Leading { .. })
    }
}

/// What a follower watches for change: holder, renew time, transitions.
type Record = Option<(Option<String>, Option<MicroTime>, Option<i32>)>;

/// The record a follower watches for change.
fn record(lease: &Lease) -> Record {
    lease.spec.as_ref().map(|spec| {
        (
            spec.holder_identity.clone(),
            spec.renew_time.clone(),
            spec.lease_transitions,
        )
    })
}

fn holder(lease: &Lease) -> Option<String> {
    lease
        .spec
        .as_ref()
        .and_then(|spec| spec.holder_identity.clone())
        .filter(|holder| !holder.is_empty())
}

/// The source under which a problem of the job namespace is known to `/readyz`.
const NAMESPACE_PROBLEM: &str = "job namespace";

/// What a failed Lease request means for a person.
fn lease_problem(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if status.code == 401 || status.code == 403 => format!(
            "the Kubernetes API refuses access to the Lease ({}): the operator's Role must allow \
             `get` and `update` of it and `create` of Leases (docs/install.md)",
            status.message
        ),
        kube::Error::Api(status) => format!(
            "the Kubernetes API answered {} {}: {}",
            status.code, status.reason, status.message
        ),
        other => format!("the Kubernetes API server cannot be reached: {other}"),
    }
}

fn now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

/// Runs the election until `shutdown` resolves, publishing what this replica knows in `tx`;
/// then releases the Lease if this replica holds it.
pub async fn elect(
    api: Api<Lease>,
    settings: LeaseSettings,
    tx: watch::Sender<Leadership>,
    ready: Readiness,
    health: Arc<Health>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut election = Election {
        api,
        settings,
        tx,
        held: None,
        seen: None,
        absent_since: None,
        problem: None,
        ready,
        unready: None,
        health,
    };
    tokio::pin!(shutdown);
    loop {
        let wait = election.step().await;
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(wait) => {}
        }
    }
    election.release().await;
}

/// Whether this replica may take the Lease now: `Err` with why not. A replica whose watches
/// cannot list the runs (a CRD older than it, access refused) would lead and move nothing,
/// while one that can waited: it takes the Lease only once they listed (it keeps one it holds).
pub type Readiness = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

struct Election {
    api: Api<Lease>,
    settings: LeaseSettings,
    tx: watch::Sender<Leadership>,
    ready: Readiness,
    /// Why this replica does not take the Lease, as last logged.
    unready: Option<String>,
    /// The Lease as this replica last wrote it while leading.
    held: Option<Lease>,
    /// The record last seen of another holder, and when it was first seen so.
    seen: Option<(Record, Instant)>,
    /// Since when the Lease has been missing, after another holder was seen: it may have been
    /// deleted under that holder, which leads on until its renewal finds it gone.
    absent_since: Option<Instant>,
    /// Why the Lease cannot be read or taken, as last logged.
    problem: Option<String>,
    /// Where a problem of the job namespace goes (`/readyz`): the Lease is written there every
    /// retry period, so a namespace missing or being deleted, where no run can be stored, is
    /// seen without an event (the watches list an empty namespace without a word).
    health: Arc<Health>,
}

impl Election {
    /// One round: renew when leading, else look and take over when the holder is gone. Returns
    /// how long to wait before the next round.
    async fn step(&mut self) -> Duration {
        let jitter = |period: Duration| period.mul_f64(1.0 + rand_fraction() * 0.2);
        match self.held.take() {
            Some(lease) => {
                self.renew(lease).await;
                self.settings.retry_period
            }
            None => {
                self.try_acquire().await;
                if self.held.is_some() {
                    self.settings.retry_period
                } else {
                    jitter(self.settings.retry_period)
                }
            }
        }
    }

    /// Logs a problem with the Lease when it appears and when it is gone (not at every look):
    /// a replica that cannot use the Lease never leads, and that must not be silent.
    fn report(&mut self, problem: Option<String>) {
        if problem.is_none() {
            self.health.report(NAMESPACE_PROBLEM, None);
        }
        if self.problem == problem {
            return;
        }
        match &problem {
            Some(problem) => tracing::warn!(
                lease = %self.settings.name,
                "this replica cannot take part in the leader election: {problem}"
            ),
            None => tracing::info!(lease = %self.settings.name, "the Lease can be used again"),
        }
        self.problem = problem;
    }

    /// [`Election::report`] of a failed request; one that says the job namespace is missing or
    /// being deleted makes the replica not ready too.
    fn report_error(&mut self, error: &kube::Error) {
        // Another error (a timeout, a 500) says nothing of the namespace: what is known stays.
        if let Some(namespace) = crate::health::namespace_problem(error) {
            self.health.report(NAMESPACE_PROBLEM, Some(namespace));
        }
        self.report(Some(lease_problem(error)));
    }

    /// Whether this replica is ready to lead; says so when that changes.
    fn may_take(&mut self) -> bool {
        let unready = (self.ready)().err();
        if unready != self.unready {
            match &unready {
                Some(why) => tracing::warn!(
                    lease = %self.settings.name,
                    "this replica does not take the lead while it is not ready: {why}"
                ),
                None => tracing::info!(lease = %self.settings.name, "ready to lead"),
            }
            self.unready = unready;
        }
        self.unready.is_none()
    }

    fn leading(&self) -> Option<Instant> {
        match &*self.tx.borrow() {
            Leadership::Leading { valid_until, .. } => Some(*valid_until),
            Leadership::Following { .. } => None,
        }
    }

    fn follow(&mut self, holder: Option<String>) {
        let following = Leadership::Following { holder };
        self.tx.send_if_modified(|current| {
            if *current == following {
                return false;
            }
            if current.is_leading() {
                tracing::warn!("lost the leadership: {following:?}");
            }
            *current = following;
            true
        });
    }

    fn lead(&mut self, lease: Lease, sent: Instant) {
        let term = lease
            .spec
            .as_ref()
            .and_then(|spec| spec.lease_transitions)
            .unwrap_or_default();
        if self.leading().is_none() {
            tracing::info!(identity = %self.settings.identity, term, "leading");
        }
        self.tx.send_replace(Leadership::Leading {
            valid_until: sent + self.settings.renew_deadline,
            term,
        });
        self.held = Some(lease);
    }

    /// Each Lease call is bounded by the retry period: the client's read timeout
    /// (`--kube-api-read-timeout-seconds`) is for the controller's steps, and longer.
    async fn bounded<T>(
        &self,
        limit: Duration,
        call: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Option<Result<T, kube::Error>> {
        tokio::time::timeout(limit, call).await.ok()
    }

    async fn try_acquire(&mut self) {
        let timeout = self.settings.retry_period.max(Duration::from_secs(1));
        let Some(found) = self
            .bounded(timeout, self.api.get_opt(&self.settings.name))
            .await
        else {
            // Said, as any other problem: a standby that never hears back never leads.
            self.report(Some(format!(
                "the Kubernetes API did not answer a read of the Lease within {}s",
                timeout.as_secs_f64()
            )));
            return;
        };
        // A problem is cleared once the Lease is used (written, or a live holder followed), not
        // at every read: a write refused every round (update not allowed) would otherwise be
        // said and cleared at each retry, or, refused after a successful read, never said.
        let found = match found {
            Ok(found) => found,
            Err(error) => {
                self.report_error(&error);
                return;
            }
        };
        let sent = Instant::now();
        if found.is_some() {
            self.absent_since = None;
        }
        let Some(mut lease) = found else {
            // Deleted (by hand, or with its namespace's contents) while another replica held
            // it: that one leads until its next renewal finds it gone, so it is made anew only
            // once the duration passed. A first start, having seen no holder, makes it at once.
            if self.seen.is_some() {
                let since = *self.absent_since.get_or_insert_with(Instant::now);
                if since.elapsed() < self.settings.duration {
                    self.report(None);
                    self.follow(None);
                    return;
                }
            }
            if !self.may_take() {
                self.follow(None);
                return;
            }
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(0)),
            };
            match self
                .bounded(timeout, self.api.create(&PostParams::default(), &lease))
                .await
            {
                Some(Ok(created)) => {
                    self.report(None);
                    self.lead(created, sent);
                }
                Some(Err(kube::Error::Api(status))) if status.code == 409 => {
                    self.report(None);
                    tracing::debug!("another replica created the lease first");
                }
                Some(Err(error)) => self.report_error(&error),
                None => {}
            }
            return;
        };
        let current = holder(&lease);
        let mine = current.as_deref() == Some(self.settings.identity.as_str());
        if !mine && current.is_some() {
            // Another holder: take over only once its record stood still for the duration.
            let record = record(&lease);
            let since = match &self.seen {
                Some((seen, at)) if *seen == record => *at,
                _ => {
                    self.seen = Some((record, Instant::now()));
                    Instant::now()
                }
            };
            // The holder's own duration, as it wrote it, when longer than this replica's (an
            // upgrade changing the timings has replicas of both): the holder counts on it. At
            // most ten times this replica's, should a holder that wrote a wild one be gone.
            let held_for = lease
                .spec
                .as_ref()
                .and_then(|spec| spec.lease_duration_seconds)
                .and_then(|seconds| u64::try_from(seconds).ok())
                .map_or(self.settings.duration, |seconds| {
                    Duration::from_secs(seconds)
                        .clamp(self.settings.duration, self.settings.duration * 10)
                });
            if since.elapsed() < held_for {
                self.report(None);
                self.follow(current);
                return;
            }
            tracing::info!(holder = ?current, "the lease expired; taking it over");
        }
        if !self.may_take() {
            self.follow(current);
            return;
        }
        let transitions = lease
            .spec
            .as_ref()
            .and_then(|spec| spec.lease_transitions)
            .unwrap_or_default();
        // The same identity (a restarted container of the same pod) goes on with its term.
        let spec = if mine {
            let mut spec = self.spec(transitions);
            spec.acquire_time = lease.spec.as_ref().and_then(|s| s.acquire_time.clone());
            spec
        } else {
            self.spec(transitions.saturating_add(1))
        };
        lease.spec = Some(spec);
        match self
            .bounded(
                timeout,
                self.api
                    .replace(&self.settings.name, &PostParams::default(), &lease),
            )
            .await
        {
            Some(Ok(taken)) => {
                self.seen = None;
                self.report(None);
                self.lead(taken, sent);
            }
            Some(Err(kube::Error::Api(status))) if status.code == 409 => {
                self.report(None);
                tracing::debug!("another replica took the lease first");
                self.follow(current);
            }
            Some(Err(error)) => {
                self.report_error(&error);
                self.follow(current);
            }
            None => self.follow(current),
        }
    }

    async fn renew(&mut self, mut lease: Lease) {
        let Some(valid_until) = self.leading() else {
            return;
        };
        let sent = Instant::now();
        let Some(left) = valid_until.checked_duration_since(sent) else {
            self.follow(None);
            return;
        };
        if let Some(spec) = lease.spec.as_mut() {
            spec.renew_time = Some(now());
        }
        match self
            .bounded(
                left,
                self.api
                    .replace(&self.settings.name, &PostParams::default(), &lease),
            )
            .await
        {
            Some(Ok(renewed)) => self.lead(renewed, sent),
            Some(Err(kube::Error::Api(status))) if status.code == 409 => {
                // Written by someone else since, or deleted (the renewal names the Lease's uid,
                // a precondition nothing meets once it is gone: 409 too, where a renewal
                // without it would make the Lease anew): it is not this replica's term anymore.
                tracing::warn!("the lease changed under this replica; following");
                self.follow(None);
            }
            Some(Err(kube::Error::Api(status))) if status.code == 404 => {
                // Deleted, as a server that makes no Lease by a PUT says it: another replica
                // may make it anew and lead (after the duration).
                tracing::warn!("the lease was deleted under this replica; following");
                self.follow(None);
            }
            failed => {
                if let Some(Err(error)) = failed {
                    tracing::warn!(%error, "cannot renew the lease; retrying until the renew deadline");
                }
                if Instant::now() >= valid_until {
                    self.follow(None);
                } else {
                    self.held = Some(lease);
                }
            }
        }
    }

    fn spec(&self, transitions: i32) -> LeaseSpec {
        let now = now();
        LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            // Rounded up: a standby that reads it waits at least as long as this replica
            // counts itself leader (15.9 s written as 15 let a standby take over early).
            lease_duration_seconds: Some(
                i32::try_from(self.settings.duration.as_millis().div_ceil(1000))
                    .unwrap_or(i32::MAX)
                    .max(1),
            ),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Gives the Lease up (an empty holder), so a standby takes over at its next look.
    async fn release(&mut self) {
        let Some(mut lease) = self.held.take() else {
            return;
        };
        self.follow(None);
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(now());
        }
        match self
            .bounded(
                self.settings.retry_period.max(Duration::from_secs(1)),
                self.api
                    .replace(&self.settings.name, &PostParams::default(), &lease),
            )
            .await
        {
            Some(Ok(_)) => tracing::info!("released the lease"),
            Some(Err(error)) => tracing::warn!(%error, "cannot release the lease"),
            None => tracing::warn!("cannot release the lease: no answer"),
        }
    }
}

/// A number in [0, 1) that differs between replicas and rounds (jitter only).
fn rand_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    (hasher.finish() % 1_000_000) as f64 / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_effect_past_its_deadline_is_dropped_without_being_started() {
        assert_eq!(within(Duration::from_secs(5), async { 1 }).await, Some(1));
        let slow = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            1
        };
        assert_eq!(within(Duration::from_millis(20), slow).await, None);
        // A process resumed past the deadline: the effect is not even polled once.
        let started = std::sync::atomic::AtomicBool::new(false);
        let effect = async {
            started.store(true, std::sync::atomic::Ordering::SeqCst);
            1
        };
        assert_eq!(within(Duration::ZERO, effect).await, None);
        assert!(!started.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test]
    async fn an_effect_runs_while_the_lease_is_renewed_and_is_dropped_when_it_would_lapse() {
        let leading = |left_ms: u64, term: i32| Leadership::Leading {
            valid_until: Instant::now() + Duration::from_millis(left_ms),
            term,
        };
        // An effect of a second: ten times the first lease, so a busy machine's stall of a
        // few hundred milliseconds changes nothing below.
        let slow = || async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            1
        };
        let margin = Duration::from_millis(10);

        // Renewed from the first moment the effect waits, then every 50 ms, each time a second
        // ahead: the effect outlives its first lease (100 ms). (On this test's one thread the
        // renewals start once the effect was started under the first lease.)
        let (tx, rx) = watch::channel(leading(100, 1));
        let renewals = tokio::spawn(async move {
            loop {
                tx.send_replace(leading(1000, 1));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        assert_eq!(while_leading(&rx, margin, slow()).await.unwrap(), 1);
        renewals.abort();

        // Not renewed: dropped when the lease would lapse, long before the effect's end.
        let (_tx, rx) = watch::channel(leading(100, 1));
        let began = Instant::now();
        assert!(while_leading(&rx, margin, slow()).await.is_err());
        assert!(
            began.elapsed() < Duration::from_millis(600),
            "{:?}",
            began.elapsed()
        );

        // Lost and won again meanwhile (a later term, leading past the effect's end): dropped.
        let (tx, rx) = watch::channel(leading(100, 1));
        let regained = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            tx.send_replace(Leadership::Following { holder: None });
            tx.send_replace(leading(5000, 2));
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        assert!(while_leading(&rx, margin, slow()).await.is_err());
        regained.abort();

        // Not leading, or not for more than the margin: never started.
        let started = std::sync::atomic::AtomicBool::new(false);
        let effect = || async {
            started.store(true, std::sync::atomic::Ordering::SeqCst);
            1
        };
        let (_tx, rx) = watch::channel(Leadership::Following { holder: None });
        assert!(while_leading(&rx, margin, effect()).await.is_err());
        let (_tx, rx) = watch::channel(leading(5, 1));
        assert!(while_leading(&rx, margin, effect()).await.is_err());
        assert!(!started.load(std::sync::atomic::Ordering::SeqCst));
    }

    fn settings(identity: &str) -> LeaseSettings {
        LeaseSettings {
            name: "job-executor".into(),
            identity: identity.into(),
            duration: Duration::from_millis(1500),
            renew_deadline: Duration::from_millis(1000),
            retry_period: Duration::from_millis(200),
        }
    }

    #[test]
    fn timings_must_leave_a_fencing_margin() {
        let mut fine = settings("a");
        fine.duration = Duration::from_secs(3);
        fine.renew_deadline = Duration::from_secs(2);
        fine.retry_period = Duration::from_millis(500);
        assert!(fine.check().is_ok());
        // A leader acts only with more than a second of its lease left: renewed every 0.5 s
        // with a deadline of 1 s, it never has.
        let mut never_room = fine.clone();
        never_room.renew_deadline = Duration::from_secs(1);
        never_room.duration = Duration::from_secs(2);
        assert!(never_room.check().is_err());
        let mut equal = settings("a");
        equal.renew_deadline = equal.duration;
        assert!(equal.check().is_err());
        let mut slow_retry = settings("a");
        slow_retry.retry_period = Duration::from_millis(900);
        assert!(slow_retry.check().is_err());
        let mut busy = fine.clone();
        busy.retry_period = Duration::from_nanos(1);
        assert!(
            busy.check().is_err(),
            "a look at the Lease every nanosecond"
        );
        busy.retry_period = MIN_RETRY_PERIOD;
        assert!(busy.check().is_ok());
    }

    #[test]
    fn only_a_leader_with_time_left_may_act() {
        let leading = Leadership::Leading {
            valid_until: Instant::now() + Duration::from_secs(5),
            term: 0,
        };
        let left = leading.fence(Duration::from_secs(1)).unwrap();
        assert!(left > Duration::from_secs(4) && left <= Duration::from_secs(5));
        assert!(leading.fence(Duration::from_secs(6)).is_err());
        let lapsed = Leadership::Leading {
            valid_until: Instant::now(),
            term: 0,
        };
        assert!(lapsed.fence(Duration::ZERO).is_err());
        let following = Leadership::Following {
            holder: Some("b".into()),
        };
        assert_eq!(
            following.fence(Duration::ZERO).unwrap_err().to_string(),
            "this replica does not lead (anymore): b holds the lease"
        );
    }

    /// Replica "a"'s election on `api`, stepped by hand, and what it publishes.
    fn election(api: Api<Lease>) -> (Election, watch::Receiver<Leadership>) {
        let (tx, rx) = watch::channel(Leadership::Following { holder: None });
        let election = Election {
            api,
            settings: settings("a"),
            tx,
            held: None,
            seen: None,
            absent_since: None,
            problem: None,
            ready: Box::new(|| Ok(())),
            unready: None,
            health: Arc::default(),
        };
        (election, rx)
    }

    /// A replica whose identity may not use the Lease never leads, and says why.
    #[tokio::test]
    async fn a_replica_refused_the_lease_says_why() {
        let sim = kube_sim::Sim::builder().start().await.unwrap();
        let yaml = sim.kubeconfig_yaml_as("system:serviceaccount:default:nobody");
        let kubeconfig: kube::config::Kubeconfig = serde_saphyr::from_str(&yaml).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        let client = kube::Client::try_from(config).unwrap();
        let (mut election, rx) = election(Api::namespaced(client, "default"));
        election.step().await;
        assert!(!rx.borrow().is_leading());
        let problem = election.problem.clone().unwrap_or_default();
        assert!(
            problem.starts_with("the Kubernetes API refuses access to the Lease")
                && problem.contains("must allow `get` and `update`"),
            "{problem}"
        );
    }

    /// A replica that may read the Lease but not write it (a custom Role, an admission policy)
    /// says so, and goes on saying it: the next read does not clear it.
    #[tokio::test]
    async fn a_replica_refused_a_lease_write_says_why() {
        let sim = kube_sim::Sim::builder().start().await.unwrap();
        let api = Api::<Lease>::namespaced(sim.client(), "default");
        let released = Lease {
            metadata: ObjectMeta {
                name: Some("job-executor".into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec::default()),
        };
        api.create(&PostParams::default(), &released).await.unwrap();
        sim.faults().fail_next(
            kube_sim::FaultRule::new(403)
                .verb("update")
                .resource("leases")
                .times(10),
        );
        let (mut election, rx) = election(api);
        for _ in 0..3 {
            election.step().await;
            assert!(!rx.borrow().is_leading());
            let problem = election.problem.clone().unwrap_or_default();
            assert!(
                problem.starts_with("the Kubernetes API refuses access to the Lease"),
                "{problem}"
            );
        }
    }

    async fn wait_for(rx: &mut watch::Receiver<Leadership>, leading: bool) -> Duration {
        let start = Instant::now();
        tokio::time::timeout(
            Duration::from_secs(10),
            rx.wait_for(|l| l.is_leading() == leading),
        )
        .await
        .expect("the leadership changed in time")
        .expect("the election runs");
        start.elapsed()
    }

    type Candidate = (
        watch::Receiver<Leadership>,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    );

    /// A replica taking part in the election on `api` until it is told to stop.
    fn candidate(api: Api<Lease>, identity: &str) -> Candidate {
        candidate_ready(api, identity, Box::new(|| Ok(())))
    }

    fn candidate_ready(api: Api<Lease>, identity: &str, ready: Readiness) -> Candidate {
        let (tx, rx) = watch::channel(Leadership::Following { holder: None });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let health = Arc::default();
        let task = tokio::spawn(elect(
            api,
            settings(identity),
            tx,
            ready,
            health,
            async move {
                let _ = stopped.await;
            },
        ));
        (rx, stop, task)
    }

    /// A replica that is not ready (its watches cannot list the runs) takes no Lease, a
    /// missing one nor one it held (a restart): a ready one leads; once ready, it leads when
    /// the Lease is free.
    #[tokio::test]
    async fn a_replica_that_is_not_ready_does_not_take_the_lease() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let sim = kube_sim::Sim::builder().start().await.unwrap();
        let api = || Api::<Lease>::namespaced(sim.client(), "default");
        let ready = std::sync::Arc::new(AtomicBool::new(false));
        let flag = ready.clone();
        let (mut a, stop_a, task_a) = candidate_ready(
            api(),
            "a",
            Box::new(move || {
                if flag.load(Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err("the watches of JobRuns, Jobs and pods have not listed yet".into())
                }
            }),
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(!a.borrow().is_leading());
        assert!(api().get_opt("job-executor").await.unwrap().is_none());
        let (mut b, stop_b, task_b) = candidate(api(), "b");
        wait_for(&mut b, true).await;
        // B releases: A, ready now, takes it.
        ready.store(true, Ordering::SeqCst);
        let _ = stop_b.send(());
        task_b.await.unwrap();
        wait_for(&mut a, true).await;
        let _ = stop_a.send(());
        task_a.await.unwrap();
    }

    /// Two candidates on one Lease: one leads, the other waits; a released Lease is taken at
    /// the next look, an abandoned one only after the lease duration.
    #[tokio::test]
    async fn one_leads_a_released_lease_moves_at_once_an_abandoned_one_after_the_duration() {
        let sim = kube_sim::Sim::builder().start().await.unwrap();
        let api = || Api::<Lease>::namespaced(sim.client(), "default");
        let start = |identity: &str| candidate(api(), identity);
        let (mut a, stop_a, task_a) = start("a");
        wait_for(&mut a, true).await;
        let (mut b, stop_b, task_b) = start("b");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            *b.borrow(),
            Leadership::Following {
                holder: Some("a".into())
            }
        );
        // A stops and releases: B leads within a retry period or so.
        let _ = stop_a.send(());
        task_a.await.unwrap();
        assert!(!a.borrow().is_leading());
        let took = wait_for(&mut b, true).await;
        assert!(took < Duration::from_millis(1000), "{took:?}");
        let lease = api().get("job-executor").await.unwrap();
        let spec = lease.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("b"));
        assert_eq!(spec.lease_transitions, Some(1));

        // B vanishes without releasing (its task aborted, as in a crash): C waits the duration.
        task_b.abort();
        drop(stop_b);
        let (mut c, _stop_c, _task_c) = start("c");
        let took = wait_for(&mut c, true).await;
        assert!(took >= Duration::from_millis(1500), "{took:?}");
        assert!(took < Duration::from_secs(4), "{took:?}");
    }

    /// The Lease deleted under its holder (by hand): the holder stops at its next renewal, and
    /// the standby makes it anew only after the duration, not at its next look.
    #[tokio::test]
    async fn a_lease_deleted_under_its_holder_is_made_anew_after_the_duration() {
        let sim = kube_sim::Sim::builder().start().await.unwrap();
        let api = || Api::<Lease>::namespaced(sim.client(), "default");
        let start = |identity: &str| candidate(api(), identity);
        let (mut a, _stop_a, _task_a) = start("a");
        wait_for(&mut a, true).await;
        let (b, _stop_b, _task_b) = start("b");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(!b.borrow().is_leading());
        api()
            .delete("job-executor", &Default::default())
            .await
            .unwrap();
        let deleted = Instant::now();
        // A finds it gone at its next renewal and may make it anew at once (it saw no other
        // holder); B, which saw A hold it, waits the duration: never do both lead.
        while deleted.elapsed() < Duration::from_secs(3) {
            let (a_leads, b_leads) = (a.borrow().is_leading(), b.borrow().is_leading());
            assert!(!(a_leads && b_leads), "two leaders");
            if b_leads {
                let took = deleted.elapsed();
                assert!(took >= Duration::from_millis(1500), "{took:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let holder = api().get("job-executor").await.unwrap().spec.unwrap();
        let leads = |rx: &watch::Receiver<Leadership>| rx.borrow().is_leading();
        match holder.holder_identity.as_deref() {
            Some("a") => assert!(leads(&a) && !leads(&b)),
            Some("b") => assert!(leads(&b) && !leads(&a)),
            other => panic!("held by {other:?}"),
        }
    }

    /// A holder that wrote a longer duration than this replica's own (replicas of two versions
    /// with other timings, during an upgrade) is waited for as long as it counts on.
    #[tokio::test]
    async fn an_abandoned_lease_is_taken_after_its_holders_duration_when_longer() {
        let sim = kube_sim::Sim::builder().start().await.unwrap();
        let api = Api::<Lease>::namespaced(sim.client(), "default");
        let lease = Lease {
            metadata: kube::api::ObjectMeta {
                name: Some("job-executor".into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some("old".into()),
                lease_duration_seconds: Some(3),
                renew_time: Some(now()),
                acquire_time: Some(now()),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        api.create(&PostParams::default(), &lease).await.unwrap();
        let (tx, mut rx) = watch::channel(Leadership::Following { holder: None });
        let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let _task = tokio::spawn(elect(
            api,
            settings("new"),
            tx,
            Box::new(|| Ok(())),
            Arc::default(),
            async move {
                let _ = stopped.await;
            },
        ));
        let took = wait_for(&mut rx, true).await;
        assert!(took >= Duration::from_secs(3), "{took:?}");
        assert!(took < Duration::from_secs(6), "{took:?}");
    }
}
