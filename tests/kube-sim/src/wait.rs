//! Polling helpers for tests: wait for a condition with a deadline instead of sleeping.

use std::future::Future;
use std::time::Duration;

/// The condition did not hold before the deadline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("condition not met within {0:?}")]
pub struct TimedOut(pub Duration);

const POLL: Duration = Duration::from_millis(10);

/// Polls `cond` every 10 ms until it returns true or `timeout` passes.
pub async fn wait_until<F>(mut cond: F, timeout: Duration) -> Result<(), TimedOut>
where
    F: FnMut() -> bool,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(TimedOut(timeout));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Like [`wait_until`] for an async condition (e.g. one that queries the API).
pub async fn wait_until_async<F, Fut>(mut cond: F, timeout: Duration) -> Result<(), TimedOut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(TimedOut(timeout));
        }
        tokio::time::sleep(POLL).await;
    }
}
