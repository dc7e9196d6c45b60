//! Counters shared by the sending tasks, the live progress line and the final summary.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Highest latency the histogram tells apart (one hour, in microseconds); slower
/// requests are recorded as this.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Live counters, updated by every sending task without locks (except the histogram).
#[derive(Debug)]
pub struct Stats {
    /// Events generated (sent or not).
    pub generated: AtomicU64,
    /// Generated events that repeat an earlier one.
    pub generated_duplicates: AtomicU64,
    /// Generated events broken on purpose.
    pub generated_invalid: AtomicU64,
    /// Generated events with a timestamp far in the past.
    pub generated_out_of_order: AtomicU64,
    /// Events handed to the sender.
    pub sent: AtomicU64,
    /// Sum of `accepted` over 202 responses.
    pub accepted: AtomicU64,
    /// Sum of `duplicates` over 202 responses.
    pub duplicates: AtomicU64,
    /// Events the server refused (4xx other than 429).
    pub rejected: AtomicU64,
    /// Rejected events that the generator had made valid: a sign of a client/server mismatch.
    pub unexpected_rejections: AtomicU64,
    /// Events not delivered after every retry.
    pub failed: AtomicU64,
    /// Requests repeated after 429, 5xx or a transport error.
    pub retries: AtomicU64,
    /// HTTP requests made, retries and resubmissions included.
    pub requests: AtomicU64,
    /// Requests started and not yet finished.
    pub in_flight: AtomicU64,
    /// Latency of every request that got a response, in microseconds.
    latency_us: Mutex<Histogram<u64>>,
}

impl Stats {
    /// Zeroed counters.
    pub fn new() -> anyhow::Result<Stats> {
        Ok(Stats {
            generated: AtomicU64::new(0),
            generated_duplicates: AtomicU64::new(0),
            generated_invalid: AtomicU64::new(0),
            generated_out_of_order: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            unexpected_rejections: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            latency_us: Mutex::new(Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)?),
        })
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        // Counters are independent tallies read at the end; no ordering is needed.
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Records the latency of one request.
    pub fn record_latency(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        // A poisoned lock only means another task panicked mid-record; the data is fine.
        let mut histogram = self.latency_us.lock().unwrap_or_else(|e| e.into_inner());
        histogram.saturating_record(us.clamp(1, MAX_LATENCY_US));
    }

    /// The final summary, after `elapsed`.
    pub fn summary(&self, seed: u64, elapsed: Duration) -> Summary {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let histogram = self.latency_us.lock().unwrap_or_else(|e| e.into_inner());
        let ms = |us: u64| us as f64 / 1_000.0;
        let latency_ms = if histogram.is_empty() {
            Latency::default()
        } else {
            Latency {
                p50: ms(histogram.value_at_quantile(0.50)),
                p90: ms(histogram.value_at_quantile(0.90)),
                p99: ms(histogram.value_at_quantile(0.99)),
                max: ms(histogram.max()),
            }
        };
        let sent = get(&self.sent);
        let generated = get(&self.generated);
        let seconds = elapsed.as_secs_f64();
        // Without sending (--no-send) the interesting rate is the generator's.
        let per_second = if sent > 0 { sent } else { generated };
        Summary {
            seed,
            generated,
            generated_duplicates: get(&self.generated_duplicates),
            generated_invalid: get(&self.generated_invalid),
            generated_out_of_order: get(&self.generated_out_of_order),
            sent,
            accepted: get(&self.accepted),
            duplicates: get(&self.duplicates),
            rejected: get(&self.rejected),
            unexpected_rejections: get(&self.unexpected_rejections),
            failed: get(&self.failed),
            retries: get(&self.retries),
            requests: get(&self.requests),
            elapsed_seconds: seconds,
            events_per_second: if seconds > 0.0 {
                per_second as f64 / seconds
            } else {
                0.0
            },
            latency_ms,
        }
    }
}

/// Request latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest request.
    pub max: f64,
}

/// What a run did; printed at the end, as text or (`--json`) as one JSON object.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// The seed used; pass it as `--seed` to generate the same events again.
    pub seed: u64,
    /// Events generated.
    pub generated: u64,
    /// Generated events that repeat an earlier event (same `eventId`).
    pub generated_duplicates: u64,
    /// Generated events broken on purpose.
    pub generated_invalid: u64,
    /// Generated events with a timestamp up to 48 hours in the past.
    pub generated_out_of_order: u64,
    /// Events posted.
    pub sent: u64,
    /// Events the server accepted (sum of `accepted` in 202 bodies).
    pub accepted: u64,
    /// Accepted events the server reported as duplicates (sum of `duplicates`).
    pub duplicates: u64,
    /// Events refused with a 4xx other than 429 (each invalid event of a 422 counts once).
    pub rejected: u64,
    /// Rejected events that the publisher had generated valid.
    pub unexpected_rejections: u64,
    /// Events not delivered after `--max-retries` retries.
    pub failed: u64,
    /// Requests repeated after a 429, a 5xx or a transport error.
    pub retries: u64,
    /// HTTP requests made.
    pub requests: u64,
    /// Wall time of the run.
    pub elapsed_seconds: f64,
    /// Events sent per second (events generated per second when nothing was sent).
    pub events_per_second: f64,
    /// Request latency percentiles in milliseconds.
    pub latency_ms: Latency,
}

impl Summary {
    /// The process exit code: 1 when any event could not be delivered, 0 otherwise.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.failed > 0)
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.latency_ms;
        writeln!(
            f,
            "generated   {} (duplicates {}, invalid {}, out of order {}; seed {})",
            self.generated,
            self.generated_duplicates,
            self.generated_invalid,
            self.generated_out_of_order,
            self.seed
        )?;
        writeln!(f, "sent        {}", self.sent)?;
        writeln!(
            f,
            "accepted    {} (of which duplicates {})",
            self.accepted, self.duplicates
        )?;
        writeln!(
            f,
            "rejected    {} (unexpected {})",
            self.rejected, self.unexpected_rejections
        )?;
        writeln!(f, "failed      {}", self.failed)?;
        writeln!(
            f,
            "requests    {} (retries {})",
            self.requests, self.retries
        )?;
        writeln!(
            f,
            "elapsed     {:.2} s, {:.0} events/s",
            self.elapsed_seconds, self.events_per_second
        )?;
        write!(
            f,
            "latency ms  p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            l.p50, l.p90, l.p99, l.max
        )
    }
}

/// A progress line redrawn on stderr about four times a second, until stopped.
#[derive(Debug)]
pub struct Progress {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Starts redrawing the line from `stats`.
    pub fn start(stats: Arc<Stats>) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(draw(stats, Arc::clone(&stop)));
        Progress { stop, task }
    }

    /// Stops and erases the line.
    pub async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        // The task only draws; if it panicked there is nothing to report.
        let _ = self.task.await;
    }
}

async fn draw(stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    let started = Instant::now();
    let period = Duration::from_millis(250);
    // The first line after one period: a rate over a zero-length interval means nothing.
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut last = (Instant::now(), 0u64);
    let mut stderr = std::io::stderr();
    while !stop.load(Ordering::Relaxed) {
        ticker.tick().await;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let sent = get(&stats.sent);
        let now = Instant::now();
        let interval = now.duration_since(last.0).as_secs_f64();
        let rate = if interval > 0.0 {
            sent.saturating_sub(last.1) as f64 / interval
        } else {
            0.0
        };
        last = (now, sent);
        let errors = get(&stats.rejected) + get(&stats.failed);
        // Progress is best effort: a closed stderr must not stop the run.
        let _ = write!(
            stderr,
            "\r\x1b[2K{:>7.1}s  {:>8.0} ev/s  sent {}  accepted {}  errors {}  retries {}  in flight {}",
            started.elapsed().as_secs_f64(),
            rate,
            sent,
            get(&stats.accepted),
            errors,
            get(&stats.retries),
            get(&stats.in_flight),
        );
        let _ = stderr.flush();
    }
    let _ = write!(stderr, "\r\x1b[2K");
    let _ = stderr.flush();
}
