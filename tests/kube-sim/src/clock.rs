//! Simulated time: durations of the simulated cluster (container run times, Job deadlines,
//! TTLs, retry back-off) are divided by a scale factor. Timestamps stay wall-clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The time scale shared by the simulated controllers.
#[derive(Debug)]
pub struct Clock {
    scale_bits: AtomicU64,
}

impl Clock {
    pub fn new(scale: f64) -> Self {
        let c = Clock {
            scale_bits: AtomicU64::new(1f64.to_bits()),
        };
        c.set_scale(scale);
        c
    }

    /// Sets how many simulated seconds pass per real second (`1.0` = real time).
    /// Non-finite or non-positive values are ignored.
    pub fn set_scale(&self, scale: f64) {
        if scale.is_finite() && scale > 0.0 {
            self.scale_bits.store(scale.to_bits(), Ordering::Relaxed);
        }
    }

    pub fn scale(&self) -> f64 {
        f64::from_bits(self.scale_bits.load(Ordering::Relaxed))
    }

    /// The real duration a simulated duration takes.
    pub fn real(&self, simulated: Duration) -> Duration {
        simulated.div_f64(self.scale())
    }

    /// Sleeps for a simulated duration.
    pub async fn sleep(&self, simulated: Duration) {
        tokio::time::sleep(self.real(simulated)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales() {
        let c = Clock::new(100.0);
        assert_eq!(c.real(Duration::from_secs(300)), Duration::from_secs(3));
        c.set_scale(-1.0);
        assert_eq!(c.scale(), 100.0);
    }
}
