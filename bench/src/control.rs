//! The two feedback loops of a sustained phase: the rate controller that holds the
//! JetStream backlog near a small target, and the detector of worker stalls.

use crate::load::Rate;
use std::time::Instant;

/// Keeps the backlog near `max(5000, 0.5 s of drain)`: offered = drain rate + (target -
/// backlog) / 2 s, bounded by 1.5 x what is drained or accepted.
#[derive(Debug)]
pub struct Controller {
    rate: Rate,
    drain: f64,
    accepted: f64,
    last: (Instant, f64, u64),
    offered_sum: f64,
    ticks: u64,
}

impl Controller {
    /// Starts at the rate `rate` holds, from these counters.
    pub fn new(rate: Rate, processed: f64, accepted: u64) -> Controller {
        let initial = rate.get();
        Controller {
            rate,
            drain: initial,
            accepted: initial,
            last: (Instant::now(), processed, accepted),
            offered_sum: 0.0,
            ticks: 0,
        }
    }

    /// Sets the offered rate from the counters now (ignored within 50 ms of the last step).
    pub fn step(&mut self, processed: f64, accepted: u64, backlog: u64) {
        let now = Instant::now();
        let dt = now.duration_since(self.last.0).as_secs_f64();
        if dt < 0.05 {
            return;
        }
        let drained = (processed - self.last.1).max(0.0) / dt;
        let took = accepted.saturating_sub(self.last.2) as f64 / dt;
        self.last = (now, processed, accepted);
        self.drain = 0.7 * self.drain + 0.3 * drained;
        self.accepted = 0.7 * self.accepted + 0.3 * took;
        let target = (0.5 * self.drain).max(5_000.0);
        let want = self.drain + (target - backlog as f64) / 2.0;
        let upper = self.drain.max(self.accepted) * 1.5 + 2_000.0;
        self.rate.set(want.clamp(500.0, upper));
    }

    /// Counts the rate offered now towards the mean.
    pub fn record(&mut self) {
        self.offered_sum += self.rate.get();
        self.ticks += 1;
    }

    /// The mean rate offered over the recorded ticks.
    pub fn mean_offered(&self) -> Option<f64> {
        (self.ticks > 0).then(|| self.offered_sum / self.ticks as f64)
    }
}

/// Stretches of at least 1 s in which the worker stored nothing although the JetStream
/// backlog was not empty.
#[derive(Debug)]
pub struct Stalls {
    last: (Instant, Option<f64>, u64),
    current: f64,
    /// Stretches of 1 s or more.
    pub count: u32,
    /// Their seconds in all.
    pub total: f64,
    /// The longest one, in seconds.
    pub longest: f64,
}

impl Stalls {
    /// Starts watching from this state.
    pub fn new(at: Instant, processed: Option<f64>, backlog: u64) -> Stalls {
        Stalls {
            last: (at, processed, backlog),
            current: 0.0,
            count: 0,
            total: 0.0,
            longest: 0.0,
        }
    }

    /// Extends or ends the current stretch with the counters now.
    pub fn observe(&mut self, processed: f64, backlog: u64) {
        let now = Instant::now();
        let dt = now.duration_since(self.last.0).as_secs_f64();
        let (_, before, backlog_before) = self.last;
        if before.is_some_and(|b| processed <= b) && backlog_before > 0 && backlog > 0 {
            self.current += dt;
        } else {
            self.finish();
        }
        self.last = (now, Some(processed), backlog);
    }

    /// Ends the current stretch, counting it when it lasted 1 s or more.
    pub fn finish(&mut self) {
        if self.current >= 1.0 {
            self.count += 1;
            self.total += self.current;
            self.longest = self.longest.max(self.current);
        }
        self.current = 0.0;
    }
}
