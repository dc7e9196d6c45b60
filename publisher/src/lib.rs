//! `publisher`: posts realistic Facebook and TikTok events to the ingestion webhook, for
//! demos and load tests (docs/operations.md, "Programs").
//!
//! * [`generator`] makes the events (reproducible from a seed), including deliberate
//!   duplicates, invalid and out-of-order events.
//! * [`sender`] posts them in batches with bounded concurrency, pacing and retries.
//! * [`summary`] counts what happened, draws the live progress line and the final summary.
//!
//! [`run`] ties them together; the binary only parses [`Args`] and prints the [`Summary`].

pub mod generator;
pub mod sender;
pub mod summary;

use anyhow::{Context, bail};
use clap::Parser;
use generator::{EventClock, Generator, GeneratorConfig};
use sender::{Batch, Sender, SenderConfig};
use std::fs::File;
use std::future::Future;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use summary::{Progress, Stats};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::Semaphore;
use tokio::time::Instant;

pub use summary::Summary;

/// Events sent when neither `--count` nor `--duration` is given.
pub const DEFAULT_COUNT: u64 = 10_000;

/// Event time of the first event of a seeded run without `--start-time`: a fixed instant
/// makes `--seed` runs byte-for-byte reproducible.
pub const SEEDED_START: OffsetDateTime = time::macros::datetime!(2026-01-01 00:00 UTC);

/// Command-line options; each can also come from the environment variable shown.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "publisher",
    version,
    about = "Posts realistic Facebook and TikTok events to the ingestion webhook.",
    long_about = "Posts realistic Facebook and TikTok events (docs/events.md in the \
        repository) to the ingestion webhook, for demos and load tests.\n\n\
        Stops after --count events (default 10000) or --duration, whichever comes first. \
        429, 5xx and connection errors are retried with exponential backoff and full jitter \
        (honouring Retry-After); other 4xx count as rejected. When a 422 names some events \
        of a batch, the others are posted again without them. A live progress line is drawn \
        on stderr when it is a terminal; a summary is printed at the end (--json: one JSON \
        object). Exit status: 0 when every event was delivered or rejected, 1 when some \
        could not be delivered, 2 on a usage or setup error."
)]
pub struct Args {
    /// Webhook to POST events to.
    #[arg(
        long,
        env = "EVENT_ENDPOINT",
        default_value = "http://127.0.0.1:3001/webhook/event"
    )]
    pub url: reqwest::Url,

    /// Target events per second; 0 = as fast as the server and --concurrency allow.
    /// The default is gentle enough for a laptop demo.
    #[arg(long, env = "PUBLISHER_RATE", default_value_t = 1000.0, value_parser = parse_rate)]
    pub rate: f64,

    /// Stop after this long: seconds, or with a unit (500ms, 30s, 5m, 1h).
    #[arg(long, env = "PUBLISHER_DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Stop after this many events (duplicates and invalid ones included). Default 10000
    /// when --duration is not given either.
    #[arg(long, env = "PUBLISHER_COUNT")]
    pub count: Option<u64>,

    /// Events per request, 1..=1000 (1 posts a bare object, more a JSON array).
    #[arg(long, env = "PUBLISHER_BATCH", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub batch: u16,

    /// Requests in flight at once (also the number of keep-alive connections).
    #[arg(long, env = "PUBLISHER_CONCURRENCY", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,

    /// Fraction (0..=1) of events that repeat an earlier event with the same eventId:
    /// half within the same request, half in a later one.
    #[arg(long, env = "PUBLISHER_DUPLICATES", default_value_t = 0.0, value_parser = parse_fraction)]
    pub duplicates: f64,

    /// Fraction (0..=1) of events with exactly one field broken so the server rejects them.
    #[arg(long, env = "PUBLISHER_INVALID", default_value_t = 0.0, value_parser = parse_fraction)]
    pub invalid: f64,

    /// Fraction (0..=1) of events whose timestamp lies between 1 minute and 48 hours in the past.
    #[arg(long, env = "PUBLISHER_OUT_OF_ORDER", default_value_t = 0.0, value_parser = parse_fraction)]
    pub out_of_order: f64,

    /// Seed of every random choice. With a seed the event clock is virtual: event n happens
    /// at --start-time + n/rate (1 ms apart with --rate 0), so the same options give
    /// byte-identical events. Without one a random seed is used (shown in the summary) and
    /// timestamps follow the wall clock.
    #[arg(long, env = "PUBLISHER_SEED")]
    pub seed: Option<u64>,

    /// Event time of the first event: an RFC 3339 date-time or "now". Default: now, or
    /// 2026-01-01T00:00:00Z when --seed is given (for reproducibility).
    #[arg(long, env = "PUBLISHER_START_TIME", value_parser = parse_start_time)]
    pub start_time: Option<StartTime>,

    /// Write every generated event to FILE as NDJSON, one per line, in generation order.
    #[arg(long, value_name = "FILE")]
    pub dump: Option<PathBuf>,

    /// Print the final summary as one JSON object (camelCase keys) on stdout.
    #[arg(long)]
    pub json: bool,

    /// Retries of one request after 429, 5xx or a connection error before its events count
    /// as failed.
    #[arg(long, env = "PUBLISHER_MAX_RETRIES", default_value_t = 5)]
    pub max_retries: u32,

    /// Timeout of one request: seconds, or with a unit (500ms, 30s).
    #[arg(long, env = "PUBLISHER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Sign requests with this secret, as the ingestion service requires when it has one: a
    /// plain secret or a Standard Webhooks `whsec_<base64>` key. A comma-separated list
    /// (ingestion's own format) signs with its first secret in the legacy scheme, with
    /// every one in the standard scheme.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    /// How requests are signed: `legacy` (X-Webhook-Timestamp, X-Webhook-Signature:
    /// sha256=<hex>) or `standard` (Standard Webhooks: webhook-id, webhook-timestamp,
    /// webhook-signature: v1,<base64>).
    #[arg(
        long,
        env = "PUBLISHER_SIGNATURE_SCHEME",
        value_enum,
        default_value = "legacy"
    )]
    pub signature_scheme: sender::SignatureScheme,

    /// Generate (and --dump) events without sending them; --rate is ignored. Measures the
    /// generator, or makes fixture files.
    #[arg(long)]
    pub no_send: bool,
}

/// The `--start-time` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartTime {
    /// The current time when the run starts.
    Now,
    /// A fixed instant.
    At(OffsetDateTime),
}

fn parse_start_time(s: &str) -> Result<StartTime, String> {
    if s.eq_ignore_ascii_case("now") {
        return Ok(StartTime::Now);
    }
    OffsetDateTime::parse(s, &Rfc3339)
        .map(StartTime::At)
        .map_err(|e| format!("expected \"now\" or an RFC 3339 date-time: {e}"))
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("expected a fraction between 0 and 1, got {s:?}")),
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!("expected events per second (0 or more), got {s:?}")),
    }
}

/// Seconds (`1.5`) or a number with a unit: `ms`, `s`, `m`, `h`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let seconds_per_unit = match unit {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("unknown unit {unit:?} (use ms, s, m or h)")),
    };
    match number.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => {
            Duration::try_from_secs_f64(n * seconds_per_unit).map_err(|e| format!("{s:?}: {e}"))
        }
        _ => Err(format!(
            "expected a positive duration such as 30s, got {s:?}"
        )),
    }
}

/// Token pacing: batch k may leave once the events before it fit in the rate.
struct Pacer {
    rate: f64,
    next: Instant,
}

impl Pacer {
    /// Falling further behind than this (a stalled server) forgives the debt instead of
    /// bursting to catch up.
    const MAX_LAG: Duration = Duration::from_secs(1);

    async fn wait(&mut self, events: usize) {
        if self.rate <= 0.0 {
            return;
        }
        let now = Instant::now();
        if self.next > now {
            tokio::time::sleep_until(self.next).await;
        } else if now - self.next > Self::MAX_LAG {
            self.next = now;
        }
        self.next += Duration::from_secs_f64(events as f64 / self.rate);
    }
}

/// Runs the publisher until `--count`/`--duration` is reached or `shutdown` completes,
/// waits for the requests in flight, and returns the summary (see
/// [`Summary::exit_code`]). Errors are setup problems (unwritable dump file, ...).
pub async fn run<F>(args: Args, shutdown: F) -> anyhow::Result<Summary>
where
    F: Future<Output = ()> + Send + 'static,
{
    if args.duplicates + args.invalid > 1.0 {
        bail!("--duplicates and --invalid add up to more than 1");
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let start = match (args.start_time, args.seed) {
        (Some(StartTime::At(t)), _) => t,
        (None, Some(_)) => SEEDED_START,
        (Some(StartTime::Now) | None, _) => OffsetDateTime::now_utc(),
    };
    let clock = if args.seed.is_some() {
        let step = if args.rate > 0.0 {
            time::Duration::seconds_f64(1.0 / args.rate)
        } else {
            time::Duration::milliseconds(1)
        };
        EventClock::Virtual { start, step }
    } else {
        EventClock::Wall { start }
    };
    let mut generator = Generator::new(GeneratorConfig {
        seed,
        duplicates: args.duplicates,
        invalid: args.invalid,
        out_of_order: args.out_of_order,
        clock,
    });

    let stats = Arc::new(Stats::new()?);
    let sender = if args.no_send {
        None
    } else {
        let config = SenderConfig {
            url: args.url.clone(),
            max_retries: args.max_retries,
            timeout: args.timeout,
            concurrency: usize::from(args.concurrency),
            secret: args.secret.clone(),
            signature_scheme: args.signature_scheme,
        };
        Some(Arc::new(Sender::new(config, Arc::clone(&stats))?))
    };
    let mut dump = match &args.dump {
        Some(path) => Some(BufWriter::new(
            File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => None,
    };

    let stop = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn({
        let stop = Arc::clone(&stop);
        async move {
            shutdown.await;
            stop.store(true, Ordering::Relaxed);
        }
    });
    let progress = std::io::stderr()
        .is_terminal()
        .then(|| Progress::start(Arc::clone(&stats)));

    let limit = match (args.count, args.duration) {
        (Some(count), _) => count,
        (None, Some(_)) => u64::MAX,
        (None, None) => DEFAULT_COUNT,
    };
    let started = Instant::now();
    let deadline = args.duration.map(|d| started + d);
    let permits = Semaphore::new(usize::from(args.concurrency));
    let permits = Arc::new(permits);
    let mut pacer = Pacer {
        rate: args.rate,
        next: started,
    };
    let mut events = Vec::with_capacity(usize::from(args.batch));
    let mut body_capacity = 512 * usize::from(args.batch);
    let mut generated = 0u64;

    while generated < limit
        && !stop.load(Ordering::Relaxed)
        && deadline.is_none_or(|d| Instant::now() < d)
    {
        let n = usize::try_from(limit - generated)
            .unwrap_or(usize::MAX)
            .min(usize::from(args.batch));
        // Pace and wait for a free slot before generating, so that wall-clock timestamps
        // are taken when the events actually leave.
        let permit = match &sender {
            Some(_) => {
                pacer.wait(n).await;
                Some(Arc::clone(&permits).acquire_owned().await?)
            }
            None => None,
        };
        generator.next_batch(n, &mut events);
        generated += n as u64;
        count_generated(&stats, &events);
        let batch = Batch::encode(&events, body_capacity)?;
        // Next time, allocate what this batch needed plus a margin.
        body_capacity = batch.body().len() + batch.body().len() / 8;
        if let Some(dump) = &mut dump {
            for i in 0..batch.len() {
                dump.write_all(batch.event_json(i))?;
                dump.write_all(b"\n")?;
            }
        }
        if let (Some(sender), Some(permit)) = (&sender, permit) {
            let sender = Arc::clone(sender);
            let stats = Arc::clone(&stats);
            Stats::add(&stats.in_flight, 1);
            tokio::spawn(async move {
                sender.deliver(batch).await;
                stats.in_flight.fetch_sub(1, Ordering::Relaxed);
                drop(permit);
            });
        }
    }

    // Every permit back means every request has finished.
    let _all = permits.acquire_many(u32::from(args.concurrency)).await?;
    let elapsed = started.elapsed();
    watcher.abort();
    if let Some(progress) = progress {
        progress.finish().await;
    }
    if let Some(mut dump) = dump {
        dump.flush().context("writing the dump file")?;
    }
    Ok(stats.summary(seed, elapsed))
}

fn count_generated(stats: &Stats, events: &[generator::GeneratedEvent]) {
    let count =
        |f: fn(&generator::GeneratedEvent) -> bool| events.iter().filter(|e| f(e)).count() as u64;
    Stats::add(&stats.generated, events.len() as u64);
    Stats::add(&stats.generated_duplicates, count(|e| e.duplicate));
    Stats::add(&stats.generated_invalid, count(|e| e.is_invalid()));
    Stats::add(&stats.generated_out_of_order, count(|e| e.out_of_order));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test fails
mod tests {
    use super::*;

    #[test]
    fn durations_take_seconds_or_a_unit() {
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("3d").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn fractions_outside_zero_to_one_are_refused() {
        assert_eq!(parse_fraction("0.25"), Ok(0.25));
        assert!(parse_fraction("1.5").is_err());
        assert!(parse_fraction("-0.1").is_err());
        assert!(parse_fraction("NaN").is_err());
    }

    #[test]
    fn the_command_line_parses_with_documented_defaults() {
        let args = Args::try_parse_from(["publisher", "--batch", "100"]).unwrap();
        assert_eq!(args.batch, 100);
        assert_eq!(args.concurrency, 8);
        assert_eq!(args.max_retries, 5);
        assert!(Args::try_parse_from(["publisher", "--batch", "1001"]).is_err());
        assert!(Args::try_parse_from(["publisher", "--batch", "0"]).is_err());
        let args = Args::try_parse_from(["publisher", "--start-time", "now"]).unwrap();
        assert_eq!(args.start_time, Some(StartTime::Now));
    }
}
