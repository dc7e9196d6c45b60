//! `e2e`: the end-to-end benchmark of the event platform.
//!
//! Starts a private PostgreSQL and nats-server and the three services from the release
//! binaries beside this one, then measures, in one run: the ceilings of the parts (raw
//! `COPY` into the events table, raw JetStream publish with pipelined PubAcks, same event
//! payloads), ingestion alone (worker paused), the worker alone (draining that backlog),
//! end-to-end throughput sustained with a bounded JetStream backlog, fixed-rate latency
//! phases, a burst, and the resources of each service. Prints a table, writes
//! `bench/results/<date>.json` and `.md`, and says for every target whether it was met
//! and, when not, which component bounds it. `bench/run.sh --help` lists the options.

mod ceilings;
mod infra;
mod load;
mod probe;
mod procstat;
mod prom;
mod report;

use anyhow::Context;
use clap::Parser;
use infra::{Durability, Nats, Postgres, Service};
use load::{Load, Rate};
use probe::Probe;
use procstat::{CpuSnapshot, CpuUse, Kind, Watched};
use prom::Histogram;
use report::{Burst, Ceilings, Phase, Results, Skipped};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Command-line options.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "e2e",
    about = "End-to-end benchmark: private NATS and PostgreSQL, the three services, ceilings, \
             ingestion, sustained end-to-end, latency, burst, resources.",
    long_about = None
)]
struct Cli {
    /// Tiny sizes (1-2 s phases, 2,000 events) so CI can run it in well under a minute;
    /// the figures mean nothing.
    #[arg(long)]
    quick: bool,
    /// Seconds of each sustained end-to-end phase (measurement window).
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Seconds before the window of a sustained phase, while the rate settles.
    #[arg(long, default_value_t = 10)]
    warmup: u64,
    /// Seconds of each ingestion-only phase (worker paused).
    #[arg(long, default_value_t = 10)]
    ingest_duration: u64,
    /// Seconds of each fixed-rate latency phase.
    #[arg(long, default_value_t = 15)]
    latency_duration: u64,
    /// Events of the burst phase.
    #[arg(long, default_value_t = 100_000)]
    burst: u64,
    /// Events of each raw ceiling (COPY, JetStream).
    #[arg(long, default_value_t = 200_000)]
    ceiling_events: usize,
    /// Bulk-COPY this many events into `events` at the end, then run the sustained
    /// 100-event-batch phase again against the full table (the 10M target; the
    /// load takes ~100 s here, the whole run ~7 min). 0 skips the phase.
    #[arg(long, default_value_t = 10_000_000)]
    preload: u64,
    /// PostgreSQL durability during the run.
    #[arg(long, value_enum, default_value_t = Durability::Full)]
    durability: Durability,
    /// Requests in flight for single-event load.
    #[arg(long, default_value_t = 64)]
    single_concurrency: usize,
    /// Requests in flight for 100-event-batch load.
    #[arg(long, default_value_t = 32)]
    batch_concurrency: usize,
    /// Where the results go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Directory of the ingestion, worker and analytics binaries (default: beside this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// PostgreSQL's binaries (default: the highest installed of 17, 16 and 15).
    #[arg(long, env = "PG_BIN_DIR", default_value_os_t = testkit::PostgresOptions::default().bin_dir)]
    pg_bin_dir: PathBuf,
    /// Keep the services' logs (their directory is printed).
    #[arg(long)]
    keep_logs: bool,
}

impl Cli {
    fn apply_quick(&mut self) {
        if self.quick {
            self.duration = self.duration.min(2);
            self.warmup = self.warmup.min(1);
            self.ingest_duration = self.ingest_duration.min(1);
            self.latency_duration = self.latency_duration.min(1);
            self.burst = self.burst.min(2_000);
            self.ceiling_events = self.ceiling_events.min(2_000);
            self.preload = self.preload.min(2_000);
        }
    }

    /// Longest wait for a backlog to drain.
    fn drain_timeout(&self) -> Duration {
        if self.quick {
            Duration::from_secs(30)
        } else {
            Duration::from_secs(180)
        }
    }
}

/// How a phase offers load.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// As fast as the server answers (closed loop, bounded concurrency).
    Unlimited,
    /// A fixed rate (events/s).
    Fixed(f64),
    /// The rate that keeps the JetStream backlog near a small target: what the pipeline
    /// sustains.
    Adaptive { initial: f64, warmup: Duration },
}

#[derive(Debug, Clone)]
struct Spec {
    name: String,
    batch: usize,
    concurrency: usize,
    mode: Mode,
    window: Duration,
    /// Worker stopped (SIGSTOP): ingestion and NATS alone.
    worker_paused: bool,
}

/// The state at one instant of a phase.
#[derive(Debug)]
struct Snap {
    at: Instant,
    cpu: CpuSnapshot,
    worker: Option<String>,
    ingestion: String,
    processed: Option<f64>,
    backlog: u64,
    accepted: u64,
}

/// Keeps the backlog near `max(5000, 0.5 s of drain)`: offered = drain rate + (target -
/// backlog) / 2 s, bounded by 1.5 x what is drained or accepted.
#[derive(Debug)]
struct Controller {
    rate: Rate,
    drain: f64,
    accepted: f64,
    last: (Instant, f64, u64),
    offered_sum: f64,
    ticks: u64,
}

impl Controller {
    fn new(rate: Rate, processed: f64, accepted: u64) -> Controller {
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

    fn step(&mut self, processed: f64, accepted: u64, backlog: u64) {
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

    fn record(&mut self) {
        self.offered_sum += self.rate.get();
        self.ticks += 1;
    }

    fn mean_offered(&self) -> Option<f64> {
        (self.ticks > 0).then(|| self.offered_sum / self.ticks as f64)
    }
}

/// Stretches of at least 1 s in which the worker stored nothing although the JetStream
/// backlog was not empty.
#[derive(Debug)]
struct Stalls {
    last: (Instant, Option<f64>, u64),
    current: f64,
    count: u32,
    total: f64,
    longest: f64,
}

impl Stalls {
    fn new(at: Instant, processed: Option<f64>, backlog: u64) -> Stalls {
        Stalls {
            last: (at, processed, backlog),
            current: 0.0,
            count: 0,
            total: 0.0,
            longest: 0.0,
        }
    }

    fn observe(&mut self, processed: f64, backlog: u64) {
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

    fn finish(&mut self) {
        if self.current >= 1.0 {
            self.count += 1;
            self.total += self.current;
            self.longest = self.longest.max(self.current);
        }
        self.current = 0.0;
    }
}

/// Everything started for the run; dropping it kills whatever still runs.
struct Bench {
    cli: Cli,
    // Field order is drop order: services first, then the broker and the database.
    ingestion: Service,
    worker: Service,
    analytics: Service,
    nats: Nats,
    pg: Postgres,
    probe: Probe,
    watched: Watched,
    webhook: reqwest::Url,
    log_dir: PathBuf,
    seed: u64,
}

const TICK: Duration = Duration::from_millis(250);

impl Bench {
    fn next_seed(&mut self) -> u64 {
        self.seed = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.seed
    }

    async fn snap(&self, running: Option<&load::Running>, worker: bool) -> anyhow::Result<Snap> {
        let cpu = self.watched.snapshot();
        let worker_text = if worker {
            Some(self.probe.worker_text().await?)
        } else {
            None
        };
        let processed = worker_text
            .as_deref()
            .map(|t| prom::sum(t, "worker_events_processed_total", &[]));
        Ok(Snap {
            at: Instant::now(),
            cpu,
            worker: worker_text,
            ingestion: self.probe.ingestion_text().await?,
            processed,
            backlog: self.probe.backlog().await?,
            accepted: running.map(load::Running::accepted).unwrap_or(0),
        })
    }

    /// Waits until the backlog is empty; the seconds it took, or `None` on timeout.
    async fn drain(&self, timeout: Duration) -> anyhow::Result<Option<f64>> {
        let started = Instant::now();
        loop {
            if self.probe.backlog().await? == 0 {
                return Ok(Some(started.elapsed().as_secs_f64()));
            }
            if started.elapsed() >= timeout {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn run_phase(&mut self, spec: Spec) -> anyhow::Result<Phase> {
        eprintln!("-- {} ...", spec.name);
        let initial = match spec.mode {
            Mode::Unlimited => 0.0,
            Mode::Fixed(r) => r,
            Mode::Adaptive { initial, .. } => initial,
        };
        let warmup = match spec.mode {
            Mode::Adaptive { warmup, .. } => warmup,
            _ => Duration::ZERO,
        };
        let rate = Rate::new(initial);
        let watch_worker = !spec.worker_paused;
        let before = if watch_worker {
            Some(self.probe.processed().await?)
        } else {
            None
        };
        let running = load::start(Load {
            url: self.webhook.clone(),
            batch: spec.batch,
            concurrency: spec.concurrency,
            rate: rate.clone(),
            count: None,
            duration: warmup + spec.window + Duration::from_secs(5),
            seed: self.next_seed(),
        })?;
        let mut ctl = Controller::new(rate.clone(), before.unwrap_or(0.0), 0);
        let adaptive = matches!(spec.mode, Mode::Adaptive { .. });
        let warm_end = Instant::now() + warmup;
        while adaptive && Instant::now() < warm_end {
            tokio::time::sleep(TICK).await;
            let (p, b) = (self.probe.processed().await?, self.probe.backlog().await?);
            ctl.step(p, running.accepted(), b);
        }
        let w0 = self.snap(Some(&running), watch_worker).await?;
        let mut backlog_max = w0.backlog;
        let mut stalls = Stalls::new(w0.at, w0.processed, w0.backlog);
        let end = w0.at + spec.window;
        while Instant::now() < end {
            tokio::time::sleep(TICK.min(end.saturating_duration_since(Instant::now()))).await;
            let b = self.probe.backlog().await?;
            backlog_max = backlog_max.max(b);
            if watch_worker {
                let p = self.probe.processed().await?;
                stalls.observe(p, b);
                if adaptive {
                    ctl.step(p, running.accepted(), b);
                }
            }
            ctl.record();
        }
        stalls.finish();
        let w1 = self.snap(Some(&running), watch_worker).await?;
        let summary = running.finish().await?;
        let drained = if watch_worker {
            self.drain(self.cli.drain_timeout()).await?
        } else {
            None
        };
        let after_worker = if watch_worker {
            Some(self.probe.worker_text().await?)
        } else {
            None
        };

        let seconds = w1.at.duration_since(w0.at).as_secs_f64().max(1e-3);
        let accepted = w1.accepted.saturating_sub(w0.accepted);
        let route = [("route", "/webhook/event")];
        let server =
            Histogram::parse(&w1.ingestion, "http_request_duration_seconds", &route).since(
                &Histogram::parse(&w0.ingestion, "http_request_duration_seconds", &route),
            );
        let worker_hist = |name: &str| match (&w0.worker, &after_worker) {
            (Some(a), Some(b)) => {
                Some(Histogram::parse(b, name, &[]).since(&Histogram::parse(a, name, &[])))
            }
            _ => None,
        };
        let e2e = worker_hist("worker_event_latency_seconds");
        let batch_duration = worker_hist("worker_batch_duration_seconds");
        let batch_size = worker_hist("worker_batch_size");
        let stored = match (w0.processed, w1.processed) {
            (Some(a), Some(b)) => Some((b - a).max(0.0) as u64),
            _ => None,
        };
        let tolerance = (stored.unwrap_or(0) / 50).max(2_000);
        let mut notes = Vec::new();
        if let Mode::Fixed(r) = spec.mode
            && (accepted as f64 / seconds) < 0.95 * r
        {
            notes.push(format!(
                "offered {r:.0}/s but only {:.0}/s were accepted",
                accepted as f64 / seconds
            ));
        }
        if summary.failed > 0 || summary.rejected > 0 {
            notes.push(format!(
                "{} events failed, {} rejected, {} retries",
                summary.failed, summary.rejected, summary.retries
            ));
        }
        if watch_worker && drained.is_none() {
            notes.push("backlog did not drain in time after the phase".into());
        }
        let phase = Phase {
            name: spec.name.clone(),
            batch: spec.batch,
            concurrency: spec.concurrency,
            mode: match spec.mode {
                Mode::Unlimited => "as fast as possible".into(),
                Mode::Fixed(r) => format!("fixed {r:.0} events/s"),
                Mode::Adaptive { .. } => "adaptive (backlog held near a small target)".into(),
            },
            offered_per_s: match spec.mode {
                Mode::Unlimited => None,
                Mode::Fixed(r) => Some(r),
                Mode::Adaptive { .. } => ctl.mean_offered(),
            },
            seconds,
            accepted,
            accepted_per_s: accepted as f64 / seconds,
            failed: summary.failed,
            rejected: summary.rejected,
            retries: summary.retries,
            client_p50_ms: summary.latency_ms.p50,
            client_p99_ms: summary.latency_ms.p99,
            server_p50_ms: server.quantile(0.5).map(|s| s * 1e3),
            server_p99_ms: server.quantile(0.99).map(|s| s * 1e3),
            stored,
            stored_per_s: stored.map(|s| s as f64 / seconds),
            backlog_start: w0.backlog,
            backlog_end: w1.backlog,
            backlog_max,
            backlog_stable: watch_worker
                .then_some(w1.backlog <= w0.backlog.saturating_add(tolerance)),
            e2e_p50_s: e2e.as_ref().and_then(|h| h.quantile(0.5)),
            e2e_p99_s: e2e.as_ref().and_then(|h| h.quantile(0.99)),
            e2e_buckets: e2e.as_ref().map(|h| h.buckets.clone()).unwrap_or_default(),
            worker_batch_p99_s: batch_duration.as_ref().and_then(|h| h.quantile(0.99)),
            worker_mean_batch: batch_size.as_ref().and_then(Histogram::mean),
            drained_after_s: drained,
            worker_stalls: stalls.count,
            worker_stalled_s: stalls.total,
            worker_longest_stall_s: stalls.longest,
            cpu: CpuUse::between(&w0.cpu, &w1.cpu),
            notes,
        };
        eprintln!("   {}", phase.one_line());
        Ok(phase)
    }

    async fn truncate(&self) -> anyhow::Result<()> {
        let tables: String = self
            .probe
            .db
            .query_one(
                "SELECT string_agg(quote_ident(tablename), ', ') FROM pg_tables \
                 WHERE schemaname = 'public' AND (tablename = 'events' OR tablename LIKE 'rollup%')",
                &[],
            )
            .await?
            .get(0);
        self.probe
            .db
            .batch_execute(&format!("TRUNCATE {tables}; CHECKPOINT"))
            .await?;
        Ok(())
    }

    async fn burst(&mut self) -> anyhow::Result<Burst> {
        let n = self.cli.burst;
        eprintln!("-- burst of {n} events ...");
        let before = self.probe.processed().await?;
        let s0 = self.watched.snapshot();
        let started = Instant::now();
        let running = load::start(Load {
            url: self.webhook.clone(),
            batch: 100,
            concurrency: self.cli.batch_concurrency,
            rate: Rate::new(0.0),
            count: Some(n),
            duration: Duration::from_secs(300),
            seed: self.next_seed(),
        })?;
        while !running.is_finished() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let accepted_after = started.elapsed().as_secs_f64();
        let summary = running.finish().await?;
        let target = before + summary.accepted.saturating_sub(summary.duplicates) as f64;
        let deadline = Instant::now() + self.cli.drain_timeout();
        let mut stored_after = None;
        while Instant::now() < deadline {
            if self.probe.processed().await? >= target {
                stored_after = Some(started.elapsed().as_secs_f64());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let cpu = CpuUse::between(&s0, &self.watched.snapshot());
        let burst = Burst {
            events: n,
            accepted: summary.accepted,
            failed: summary.failed,
            accepted_after_s: accepted_after,
            stored_after_s: stored_after,
            stored_per_s: stored_after.map(|s| summary.accepted as f64 / s),
            cpu,
        };
        eprintln!(
            "   accepted in {:.2} s, stored after {}",
            accepted_after,
            stored_after.map_or("(timeout)".into(), |s| format!("{s:.2} s"))
        );
        Ok(burst)
    }

    /// A few report queries, so analytics' memory is measured doing its job.
    async fn analytics_queries(&self) -> anyhow::Result<Option<f64>> {
        let base = self.analytics.base();
        let mut took = Vec::new();
        for path in [
            "/analytics/stats",
            "/analytics/timeseries",
            "/analytics/revenue",
            "/analytics/campaigns/top",
            "/analytics/geo",
            "/analytics/stats",
        ] {
            let t = Instant::now();
            // A side measurement: a slow or failed report is noted, never fatal (the
            // distinct-user reports still scan the raw table and can exceed the timeout).
            match self.probe.get(&format!("{base}{path}")).await {
                Ok(status) if status.is_success() => took.push(t.elapsed().as_secs_f64() * 1e3),
                Ok(status) => eprintln!("   analytics {path}: {status}"),
                Err(error) => eprintln!("   analytics {path}: {error:#}"),
            }
        }
        took.sort_by(f64::total_cmp);
        Ok(took.get(took.len() / 2).copied())
    }
}

async fn start(cli: Cli) -> anyhow::Result<Bench> {
    let bin_dir = match &cli.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory of the e2e binary")?
            .to_path_buf(),
    };
    for b in ["ingestion", "worker", "analytics"] {
        anyhow::ensure!(
            bin_dir.join(b).exists(),
            "{} not found: build the release binaries first (`cargo build --release --bins`, \
             which bench/run.sh does)",
            bin_dir.join(b).display()
        );
    }
    let log_dir = std::env::temp_dir().join(format!("bench-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&log_dir)?;

    eprintln!(
        "-- starting PostgreSQL ({:?}) and nats-server ...",
        cli.durability
    );
    let pg = Postgres::start(&cli.pg_bin_dir, cli.durability).await?;
    let admin = pg.connect("postgres").await?;
    admin.batch_execute("CREATE DATABASE events").await?;
    let nats = Nats::start(&log_dir).await?;
    let db_url = pg.url("events");
    // Tuning variables of the services pass through from our environment; these do not.
    let mut env = vec![("NATS_URL", nats.url()), ("DATABASE_URL", db_url.clone())];
    // The load comes from one unsigned client, far above the per-producer default quotas
    // (and analytics' per-client one): off unless the environment sets them.
    for name in [
        "RATE_LIMIT_EVENTS_PER_SEC",
        "RATE_LIMIT_BYTES_PER_SEC",
        "ANALYTICS_RATE_LIMIT_PER_SEC",
    ] {
        if std::env::var_os(name).is_none() {
            env.push((name, "0".to_owned()));
        }
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    eprintln!("-- starting worker, ingestion, analytics (release builds) ...");
    let mut worker = Service::spawn("worker", &bin_dir, &log_dir, &env)?;
    worker.wait_ready(&http, Duration::from_secs(60)).await?;
    let mut ingestion = Service::spawn("ingestion", &bin_dir, &log_dir, &env)?;
    let mut analytics = Service::spawn("analytics", &bin_dir, &log_dir, &env)?;
    ingestion.wait_ready(&http, Duration::from_secs(60)).await?;
    analytics.wait_ready(&http, Duration::from_secs(60)).await?;
    let db = pg.connect("events").await?;
    let probe = Probe::new(&worker.base(), &ingestion.base(), &nats.url(), db).await?;
    let watched = Watched {
        items: vec![
            ("ingestion".into(), ingestion.pid(), Kind::Single),
            ("worker".into(), worker.pid(), Kind::Single),
            ("analytics".into(), analytics.pid(), Kind::Single),
            ("nats".into(), nats.pid(), Kind::Single),
            ("postgres".into(), pg.pid(), Kind::Tree),
            ("load generator".into(), std::process::id(), Kind::Single),
        ],
    };
    let webhook = format!("{}/webhook/event", ingestion.base()).parse()?;
    Ok(Bench {
        cli,
        ingestion,
        worker,
        analytics,
        nats,
        pg,
        probe,
        watched,
        webhook,
        log_dir,
        seed: 0x5EED_0000_0000_0001 ^ u64::from(std::process::id()),
    })
}

async fn run(mut bench: Bench) -> anyhow::Result<Results> {
    let cli = bench.cli.clone();
    let mut results = Results::new(&cli.durability, cli.quick);
    results.pg_settings = report::pg_settings(&bench.probe.db).await?;
    results.nats_version = infra::version_of(&infra::nats_server_bin(), "--version");
    results.passthrough_env = report::passthrough_env();

    // 1. Ceilings of the parts, same payloads.
    eprintln!("-- ceilings: {} events ...", cli.ceiling_events);
    let seed = bench.next_seed();
    let payloads = ceilings::payloads(cli.ceiling_events.max(1), seed, "benchraw")?;
    let rows = Arc::new(ceilings::rows(&payloads)?);
    let s0 = bench.watched.snapshot();
    let copy = ceilings::copy_ceiling(&bench.pg.url("events"), Arc::clone(&rows), 1000, 3).await?;
    let copy_cpu = CpuUse::between(&s0, &bench.watched.snapshot());
    let s0 = bench.watched.snapshot();
    let js = ceilings::jetstream_ceiling(&bench.nats.url(), &payloads, 4096).await?;
    let js_cpu = CpuUse::between(&s0, &bench.watched.snapshot());
    results.ceilings = Some(Ceilings {
        events: payloads.json.len(),
        avg_event_bytes: payloads.avg_bytes(),
        copy_rows_per_s: rows.len() as f64 / copy.as_secs_f64(),
        copy_cpu,
        jetstream_msgs_per_s: payloads.json.len() as f64 / js.as_secs_f64(),
        jetstream_cpu: js_cpu,
    });
    drop(rows);
    drop(payloads);
    eprintln!(
        "   COPY {:.0} rows/s, JetStream {:.0} msgs/s",
        results.copy_ceiling(),
        results.js_ceiling()
    );

    // 2. Ingestion alone (worker paused), then the worker alone draining that backlog.
    let processed_before = bench.probe.processed().await?;
    bench.worker.signal("STOP")?;
    let ingest_window = Duration::from_secs(cli.ingest_duration);
    let paused = async {
        let single = bench
            .run_phase(Spec {
                name: "ingestion alone, single-event requests".into(),
                batch: 1,
                concurrency: cli.single_concurrency,
                mode: Mode::Unlimited,
                window: ingest_window,
                worker_paused: true,
            })
            .await?;
        let batch = bench
            .run_phase(Spec {
                name: "ingestion alone, 100-event batches".into(),
                batch: 100,
                concurrency: cli.batch_concurrency,
                mode: Mode::Unlimited,
                window: ingest_window,
                worker_paused: true,
            })
            .await?;
        anyhow::Ok((single, batch))
    }
    .await;
    let backlog = bench.probe.backlog().await.unwrap_or(0);
    bench.worker.signal("CONT")?;
    let (single, batch) = paused?;
    eprintln!("-- worker alone: draining {backlog} events ...");
    let s0 = bench.watched.snapshot();
    // The rate is taken at 99 % of the backlog: the pull the worker had in flight when it
    // was paused (longer than async-nats waits for a pull) is only redelivered after
    // `ack_wait`, a tail that says nothing about the worker's speed.
    let started = Instant::now();
    let most = processed_before + 0.99 * backlog as f64;
    let mut at_most = None;
    while at_most.is_none() && started.elapsed() < cli.drain_timeout() {
        if bench.probe.processed().await? >= most {
            at_most = Some((started.elapsed().as_secs_f64(), bench.watched.snapshot()));
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let drained = bench
        .drain(cli.drain_timeout().saturating_sub(started.elapsed()))
        .await?
        .map(|_| started.elapsed().as_secs_f64());
    let drained_events = bench.probe.processed().await? - processed_before;
    results.worker_alone = at_most.map(|(s, s1)| report::Drain {
        events: drained_events as u64,
        seconds: s,
        events_per_s: 0.99 * backlog as f64 / s.max(1e-3),
        all_stored_s: drained,
        cpu: CpuUse::between(&s0, &s1),
    });
    let ingest_single_max = single.accepted_per_s;
    let ingest_batch_max = batch.accepted_per_s;
    results.phases.push(single);
    results.phases.push(batch);
    let worker_max = results
        .worker_alone
        .as_ref()
        .map_or(10_000.0, |d| d.events_per_s);

    // 3. End to end, sustained, fresh table.
    bench.truncate().await?;
    let processed_at_truncate = bench.probe.processed().await?;
    let window = Duration::from_secs(cli.duration);
    let warmup = Duration::from_secs(cli.warmup);
    let phase = bench
        .run_phase(Spec {
            name: "e2e sustained, 100-event batches, fresh table".into(),
            batch: 100,
            concurrency: cli.batch_concurrency,
            mode: Mode::Adaptive {
                initial: (0.7 * ingest_batch_max.min(worker_max)).max(1_000.0),
                warmup,
            },
            window,
            worker_paused: false,
        })
        .await?;
    results.phases.push(phase);
    let phase = bench
        .run_phase(Spec {
            name: "e2e sustained, single-event requests".into(),
            batch: 1,
            concurrency: cli.single_concurrency,
            mode: Mode::Adaptive {
                initial: (0.7 * ingest_single_max.min(worker_max)).max(500.0),
                warmup,
            },
            window,
            worker_paused: false,
        })
        .await?;
    results.phases.push(phase);

    // 4. Fixed-rate latency phases.
    let latency_window = Duration::from_secs(cli.latency_duration);
    let phase = bench
        .run_phase(Spec {
            name: "latency, 5,000 single-event requests/s".into(),
            batch: 1,
            concurrency: cli.single_concurrency,
            mode: Mode::Fixed(5_000.0),
            window: latency_window,
            worker_paused: false,
        })
        .await?;
    results.phases.push(phase);
    let phase = bench
        .run_phase(Spec {
            name: "latency, 10,000 events/s in 100-event batches".into(),
            batch: 100,
            concurrency: cli.batch_concurrency,
            mode: Mode::Fixed(10_000.0),
            window: latency_window,
            worker_paused: false,
        })
        .await?;
    results.phases.push(phase);

    // 5. Burst.
    results.burst = Some(bench.burst().await?);
    results.analytics_query_p50_ms = bench.analytics_queries().await?;

    // Every accepted event is stored exactly once.
    let stored_rows = bench.probe.rows().await?;
    let expected = bench.probe.processed().await? - processed_at_truncate;
    results.consistency = format!(
        "{stored_rows} rows in events; the worker reports {expected:.0} stored since the truncation"
    );
    if stored_rows as f64 != expected {
        results.consistency.push_str(" (MISMATCH)");
    }

    // 6. Optional: the sustained phase again on a table holding `--preload` events.
    if cli.preload > 0 {
        eprintln!("-- preload: COPY {} events into events ...", cli.preload);
        let took =
            ceilings::preload(&bench.pg.url("events"), cli.preload, bench.next_seed()).await?;
        results.preload_seconds = Some(took.as_secs_f64());
        let initial = results
            .phase("e2e sustained, 100-event batches, fresh table")
            .and_then(|p| p.stored_per_s)
            .unwrap_or(5_000.0);
        let mut phase = bench
            .run_phase(Spec {
                name: format!(
                    "e2e sustained, 100-event batches, table preloaded with {} events",
                    cli.preload
                ),
                batch: 100,
                concurrency: cli.batch_concurrency,
                mode: Mode::Adaptive {
                    initial: 0.8 * initial,
                    warmup,
                },
                window,
                worker_paused: false,
            })
            .await?;
        phase.name = "e2e sustained, 100-event batches, preloaded table".into();
        results.preloaded = Some(cli.preload);
        results.phases.push(phase);
    } else {
        results.skipped.push(Skipped {
            what: "e2e sustained with 10,000,000 events already in the table".into(),
            why: "--preload 0 was given".into(),
        });
    }

    // 7. Resources: stop the services (SIGTERM, clean drain) and read their peaks.
    let timeout = Duration::from_secs(35);
    for service in [
        &mut bench.ingestion,
        &mut bench.worker,
        &mut bench.analytics,
    ] {
        let clean = service.stop(timeout).await;
        let (rss, cpu) = service.last.unwrap_or((0, 0.0));
        results.resources.push(report::Resource {
            name: service.name.into(),
            peak_rss_bytes: rss,
            cpu_seconds: cpu,
            clean_exit: Some(clean),
        });
    }
    for (name, pid, kind) in bench.watched.items.clone() {
        if name == "nats" || name == "postgres" {
            let (rss, cpu) = match kind {
                Kind::Single => (
                    procstat::status_bytes(pid, "VmHWM").unwrap_or(0),
                    procstat::cpu_seconds(pid, false),
                ),
                Kind::Tree => (
                    procstat::tree_rss_bytes(pid),
                    procstat::tree_cpu_seconds(pid),
                ),
            };
            results.resources.push(report::Resource {
                name,
                peak_rss_bytes: rss,
                cpu_seconds: cpu,
                clean_exit: None,
            });
        }
    }
    if !cli.keep_logs {
        let _ = std::fs::remove_dir_all(&bench.log_dir);
    }
    Ok(results)
}

fn log_hint(log_dir: &std::path::Path) {
    eprintln!("service logs: {}", log_dir.display());
    for name in ["worker", "ingestion", "analytics"] {
        let path = log_dir.join(format!("{name}.log"));
        let tail = infra::tail(&path, 5);
        if !tail.is_empty() {
            eprintln!("--- {name} (last lines)\n{tail}");
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut cli = Cli::parse();
    cli.apply_quick();
    let started = Instant::now();
    let load_at_start = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let outcome = async {
        let bench = start(cli.clone()).await?;
        let log_dir = bench.log_dir.clone();
        let pg_log = bench.pg.log_path();
        let result = tokio::select! {
            r = run(bench) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        };
        if result.is_err() {
            log_hint(&log_dir);
            eprintln!("--- postgres (last lines)\n{}", infra::tail(&pg_log, 5));
        }
        result
    }
    .await;
    match outcome {
        Ok(mut results) => {
            results.total_seconds = started.elapsed().as_secs_f64();
            results.load_at_start = load_at_start.trim().to_owned();
            let text = results.render();
            println!("{text}");
            match results.write(&cli.out, &text) {
                Ok((json, md)) => {
                    eprintln!("results: {} and {}", json.display(), md.display());
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("e2e: cannot write the results: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("e2e: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
