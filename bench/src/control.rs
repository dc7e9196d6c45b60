//! The feedback loops of the phases: the rate controller that holds the backlog near a
//! small target, the detector of worker stalls, and the end of the worker-alone window.

use crate::load::Rate;
use serde::Serialize;
use std::time::{Duration, Instant};

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

/// What ended the worker-alone window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DrainEnd {
    /// 99 % of the backlog was stored.
    MostStored,
    /// Nothing was stored for [`DrainWindow`]'s pause (2 s) although events waited: the rest
    /// is in a pull that was in flight when the worker was paused, redelivered only after
    /// `ack_wait`, a tail that says nothing about the worker's speed. With coalescing, one
    /// such pull can hold much of the backlog.
    ProgressPaused,
    /// The drain timeout came first.
    Timeout,
}

/// The window of the worker draining a backlog alone: from the resume to 99 % of the
/// backlog stored, or to the last progress before a pause of `pause` with events waiting.
#[derive(Debug)]
pub struct DrainWindow {
    start: (Instant, f64),
    last: (Instant, f64),
    backlog: u64,
    pause: Duration,
}

impl DrainWindow {
    /// Starts at `start` with the worker's stored-events counter at `stored`, `backlog`
    /// events waiting.
    pub fn new(start: Instant, stored: f64, backlog: u64, pause: Duration) -> DrainWindow {
        DrainWindow {
            start: (start, stored),
            last: (start, stored),
            backlog,
            pause,
        }
    }

    /// Takes the counter at `at`; `Some` when the window ends there. `progressed` says
    /// whether this reading moved the window's end.
    pub fn observe(&mut self, at: Instant, stored: f64) -> (Option<DrainEnd>, bool) {
        let progressed = stored > self.last.1;
        if progressed {
            self.last = (at, stored);
        }
        let done = stored - self.start.1;
        if done >= 0.99 * self.backlog as f64 {
            (Some(DrainEnd::MostStored), progressed)
        } else if done > 0.0 && at.duration_since(self.last.0) >= self.pause {
            (Some(DrainEnd::ProgressPaused), progressed)
        } else {
            (None, progressed)
        }
    }

    /// Seconds from the start to the last progress, and the events stored by then.
    pub fn measured(&self) -> (f64, u64) {
        (
            self.last.0.duration_since(self.start.0).as_secs_f64(),
            (self.last.1 - self.start.1).max(0.0).round() as u64,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{DrainEnd, DrainWindow};
    use std::time::{Duration, Instant};

    #[test]
    fn the_drain_window_ends_at_99_percent_or_at_a_pause_in_progress() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let pause = Duration::from_secs(2);

        let mut w = DrainWindow::new(t0, 1_000.0, 10_000, pause);
        assert_eq!(w.observe(at(500), 6_000.0), (None, true));
        assert_eq!(
            w.observe(at(1_000), 10_900.0),
            (Some(DrainEnd::MostStored), true)
        );
        assert_eq!(w.measured(), (1.0, 9_900));

        // Half stored in 1 s, then nothing for 2 s: the window ends at the last progress.
        let mut w = DrainWindow::new(t0, 0.0, 10_000, pause);
        assert_eq!(w.observe(at(1_000), 5_000.0), (None, true));
        assert_eq!(w.observe(at(2_500), 5_000.0), (None, false));
        assert_eq!(
            w.observe(at(3_000), 5_000.0),
            (Some(DrainEnd::ProgressPaused), false)
        );
        assert_eq!(w.measured(), (1.0, 5_000));

        // Nothing stored yet (the whole backlog in the stalled pull): no pause counts.
        let mut w = DrainWindow::new(t0, 0.0, 10_000, pause);
        assert_eq!(w.observe(at(5_000), 0.0), (None, false));
    }
}
