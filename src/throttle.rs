//! A client-side limit on the operator's requests to the API server (kube-rs has none): a token
//! bucket of `qps` tokens a second holding at most `burst`, in front of every request, as
//! client-go's `QPS`/`Burst` are. With 10,000 runs in flight the controller would otherwise send
//! as fast as the API server answers.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tower::{Layer, Service};

/// Tokens that refill at `qps` a second up to `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    qps: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(qps: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            qps,
            burst,
            tokens: burst,
            at: now,
        }
    }

    /// Takes a token, or says how long until one is there.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.qps).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64((1.0 - self.tokens) / self.qps))
    }
}

/// The layer for kube's `ClientBuilder`: every client built with the same layer draws from one
/// bucket (the controller's requests and its watches are two clients, one limit).
#[derive(Debug, Clone)]
pub struct ThrottleLayer {
    bucket: Arc<Mutex<TokenBucket>>,
}

impl ThrottleLayer {
    pub fn new(qps: f64, burst: u32) -> Self {
        ThrottleLayer {
            bucket: Arc::new(Mutex::new(TokenBucket::new(qps, burst, Instant::now()))),
        }
    }
}

impl<S> Layer<S> for ThrottleLayer {
    type Service = Throttle<S>;

    fn layer(&self, inner: S) -> Throttle<S> {
        Throttle {
            inner,
            bucket: self.bucket.clone(),
            wait: None,
            granted: false,
        }
    }
}

/// Waits in `poll_ready` until the bucket has a token (kube's client calls it from one task,
/// its buffer's worker, so requests queue there in order).
pub struct Throttle<S> {
    inner: S,
    bucket: Arc<Mutex<TokenBucket>>,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A token taken for the next `call`.
    granted: bool,
}

impl<S, R> Service<R> for Throttle<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        while !self.granted {
            if let Some(wait) = self.wait.as_mut() {
                ready!(wait.as_mut().poll(cx));
                self.wait = None;
            }
            let taken = self
                .bucket
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take(Instant::now());
            match taken {
                Ok(()) => self.granted = true,
                Err(delay) => self.wait = Some(Box::pin(tokio::time::sleep(delay))),
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.granted = false;
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    /// The controller's request client and its watch client are built with one layer: what
    /// one takes, the other cannot.
    #[tokio::test]
    async fn clients_built_with_one_layer_share_its_bucket() {
        let layer = ThrottleLayer::new(20.0, 2);
        let answer = || tower::service_fn(|(): ()| async { Ok::<_, ()>(()) });
        let mut requests = layer.layer(answer());
        let mut watches = layer.layer(answer());
        requests.ready().await.unwrap().call(()).await.unwrap();
        watches.ready().await.unwrap().call(()).await.unwrap();
        // Both tokens of the burst are taken: the next waits for one (1/20 s).
        let asked = Instant::now();
        requests.ready().await.unwrap().call(()).await.unwrap();
        assert!(
            asked.elapsed() >= Duration::from_millis(40),
            "{:?}",
            asked.elapsed()
        );
    }

    #[test]
    fn a_full_bucket_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 3, start);
        for _ in 0..3 {
            assert_eq!(bucket.take(start), Ok(()));
        }
        let wait = bucket.take(start).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        assert_eq!(bucket.take(start + Duration::from_millis(100)), Ok(()));
        assert!(bucket.take(start + Duration::from_millis(150)).is_err());
        // Idle for long: no more than the burst saved up.
        let later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(bucket.take(later), Ok(()));
        }
        assert!(bucket.take(later).is_err());
    }
}
