//! An optional limit on accepted events per second (`RATE_LIMIT_EVENTS_PER_SEC`): a
//! token bucket counted in events, since events, not requests, load the pipeline.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket refilled at `rate` tokens per second up to `burst`.
#[derive(Debug)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimit {
    /// `burst` is at least one full batch (1000), so any valid request can pass.
    pub fn new(rate: u32, burst: Option<u32>) -> Self {
        let burst = f64::from(burst.unwrap_or(rate).max(1000));
        RateLimit {
            rate: f64::from(rate),
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes `n` tokens, or says how long until they would be there.
    pub fn take(&self, n: usize, now: Instant) -> Result<(), Duration> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (tokens, last) = *state;
        let tokens = (tokens + now.saturating_duration_since(last).as_secs_f64() * self.rate)
            .min(self.burst);
        let n = n as f64;
        if tokens >= n {
            *state = (tokens - n, now);
            Ok(())
        } else {
            *state = (tokens, now);
            Err(Duration::from_secs_f64((n - tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_refills_at_the_rate_up_to_the_burst() {
        let limit = RateLimit::new(100, Some(1000));
        let t0 = Instant::now();
        assert_eq!(limit.take(1000, t0), Ok(()));
        let wait = limit.take(50, t0).err().unwrap_or_default();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9, "{wait:?}");
        assert_eq!(limit.take(50, t0 + Duration::from_millis(500)), Ok(()));
        // Idle for an hour: back to the burst, not more.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(limit.take(1000, later), Ok(()));
        assert!(limit.take(1, later).is_err());
    }
}
