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

//!
//! This file holds the options and the order of the run; [`setup`] starts the platform,
//! [`phases`] and [`alone`] run and measure each phase, [`results`] holds the measured
//! values, [`perevent`] works out the cost of one event in each, [`targets`] judges them
//! and [`markdown`] writes the report.

mod alone;
mod ceilings;
mod control;
mod disk;
mod infra;
mod load;
mod markdown;
mod perevent;
mod phases;
mod probe;
mod procstat;
mod prom;
mod results;
mod setup;
mod targets;

use clap::Parser;
use infra::Durability;
use phases::{Mode, Spec};
use results::{Results, SUSTAINED_BATCH, SUSTAINED_PRELOADED, SUSTAINED_SINGLE, Skipped};
use setup::Bench;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Command-line options.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "e2e",
    about = "End-to-end benchmark: private NATS and PostgreSQL, the three services, ceilings, \
             ingestion, sustained end-to-end, latency, burst, resources.",
    long_about = None
)]
pub struct Cli {
    /// Tiny sizes (1-2 s phases, 2,000 events) so CI can run it in a minute or two;
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
    /// nats-server nodes: 1, or 3 in one cluster on this machine with every stream at three
    /// replicas (R3), to set replication's cost beside a run with 1.
    #[arg(long, env = "BENCH_NATS_NODES", default_value_t = 1, value_parser = nats_nodes)]
    nats_nodes: usize,
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
    /// The results files' name, without `.json` or `.md` (default: the date, with
    /// `-quick` for --quick).
    #[arg(long)]
    name: Option<String>,
    /// Directory of the ingestion, worker and analytics binaries (default: beside this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// PostgreSQL's binaries (default: the highest installed of 17, 16 and 15).
    #[arg(long, env = "PG_BIN_DIR", default_value_os_t = testkit::PostgresOptions::default().bin_dir)]
    pg_bin_dir: PathBuf,
    /// Keep the services' logs (their directory is printed).
    #[arg(long)]
    keep_logs: bool,
    /// The bound of the target "CPU per stored event" (µs, every process, sustained
    /// 100-event batches into a fresh table): half of what the code before issue 19
    /// measured on the machine, 47 on the AMD machines, 35 on the Intel ones.
    #[arg(long, env = "BENCH_CPU_PER_EVENT_US", default_value_t = perevent::DEFAULT_CPU_BOUND_US)]
    cpu_per_event_us: f64,
}

/// `--nats-nodes`: 1 or 3 (a JetStream cluster needs an odd number for its quorum; more
/// than three on one 2-core machine measures the machine, not replication).
fn nats_nodes(s: &str) -> Result<usize, String> {
    match s {
        "1" => Ok(1),
        "3" => Ok(3),
        _ => Err("1 or 3".into()),
    }
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

    /// Longest wait for a backlog to drain. Even in a quick run, longer than the default
    /// `ack_wait` (30 s): the pull the worker had in flight when it was paused is only
    /// redelivered then, and with coalescing it can hold tens of thousands of events.
    pub fn drain_timeout(&self) -> Duration {
        if self.quick {
            Duration::from_secs(60)
        } else {
            Duration::from_secs(180)
        }
    }
}

/// The run, phase after phase; the results of every phase measured.
async fn run(mut bench: Bench) -> anyhow::Result<Results> {
    let cli = bench.cli.clone();
    let mut results = Results::new(&cli.durability, cli.quick);
    results.cpu_per_event_bound_us = cli.cpu_per_event_us;
    results.pg_settings = results::pg_settings(&bench.probe.db).await?;
    results.nats_version = infra::version_of(&infra::nats_server_bin(), "--version");
    results.nats_nodes = cli.nats_nodes;
    results.passthrough_env = results::passthrough_env();

    // 1. Ceilings of the parts, same payloads.
    results.ceilings = Some(bench.ceilings().await?);

    // 2. Ingestion alone (worker paused), then the worker alone draining that backlog.
    let (single, batch, worker_alone, held) = bench.ingestion_then_worker_alone().await?;
    let worker_max = worker_alone.as_ref().map_or(10_000.0, |d| d.events_per_s);
    let (ingest_single_max, ingest_batch_max) = (single.accepted_per_s, batch.accepted_per_s);
    results.worker_alone = worker_alone;
    results.phases.extend([single, batch]);

    // 3. End to end, sustained, fresh table. Truncated once nothing is left to store: a
    // batch committed between the TRUNCATE and the count read next would break the
    // consistency check.
    if bench.drain(cli.drain_timeout()).await?.is_none() {
        eprintln!("   (the backlog did not drain before the truncation)");
    }
    bench.truncate().await?;
    let processed_at_truncate = bench.probe.processed().await?;
    let window = Duration::from_secs(cli.duration);
    let warmup = Duration::from_secs(cli.warmup);
    let sustained = |name: &str, batch: usize, concurrency: usize, initial: f64| Spec {
        name: name.into(),
        batch,
        concurrency,
        mode: Mode::Adaptive { initial, warmup },
        window,
        worker_paused: false,
    };
    let initial = (0.7 * ingest_batch_max.min(worker_max)).max(1_000.0);
    let spec = sustained(SUSTAINED_BATCH, 100, cli.batch_concurrency, initial);
    results.phases.push(bench.run_phase(spec).await?);
    let initial = (0.7 * ingest_single_max.min(worker_max)).max(500.0);
    let spec = sustained(SUSTAINED_SINGLE, 1, cli.single_concurrency, initial);
    results.phases.push(bench.run_phase(spec).await?);

    // 4. Fixed-rate latency phases.
    let fixed = |name: &str, batch: usize, concurrency: usize, rate: f64| Spec {
        name: name.into(),
        batch,
        concurrency,
        mode: Mode::Fixed(rate),
        window: Duration::from_secs(cli.latency_duration),
        worker_paused: false,
    };
    let spec = fixed(results::LATENCY_SINGLE, 1, cli.single_concurrency, 5_000.0);
    results.phases.push(bench.run_phase(spec).await?);
    let spec = fixed(results::LATENCY_E2E, 100, cli.batch_concurrency, 10_000.0);
    results.phases.push(bench.run_phase(spec).await?);

    // 5. Burst.
    results.burst = Some(bench.burst().await?);
    results.analytics_query_p50_ms = bench.analytics_queries().await?;
    (results.consistency, results.consistent) = bench.consistency(processed_at_truncate).await?;

    // 6. Optional: the sustained phase again on a table holding `--preload` events.
    if cli.preload > 0 {
        eprintln!("-- preload: COPY {} events into events ...", cli.preload);
        let took =
            ceilings::preload(&bench.pg.url("events"), cli.preload, bench.next_seed()).await?;
        results.preload_seconds = Some(took.as_secs_f64());
        let initial = results
            .phase(SUSTAINED_BATCH)
            .and_then(|p| p.stored_per_s)
            .unwrap_or(5_000.0);
        let name = format!(
            "e2e sustained, 100-event batches, table preloaded with {} events",
            cli.preload
        );
        let spec = sustained(&name, 100, cli.batch_concurrency, 0.8 * initial);
        let mut phase = bench.run_phase(spec).await?;
        phase.name = SUSTAINED_PRELOADED.into();
        results.preloaded = Some(cli.preload);
        results.phases.push(phase);
    } else {
        results.skipped.push(Skipped {
            what: "e2e sustained with 10,000,000 events already in the table".into(),
            why: "--preload 0 was given".into(),
        });
    }

    // 7. Disk, by part, with what the table holds now.
    let mut disk = disk::measure(&bench.probe.db).await?;
    disk.stream = held;
    results.disk = Some(disk);

    results.dead_lettered = bench.probe.dead_lettered().await?;

    // 8. Resources: stop the services (SIGTERM, clean drain) and read their peaks.
    results.resources = bench.stop_and_measure().await;
    if !cli.keep_logs {
        let _ = std::fs::remove_dir_all(&bench.log_dir);
    }
    Ok(results)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let mut cli = Cli::parse();
    cli.apply_quick();
    let started = Instant::now();
    let load_at_start = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let outcome = async {
        let bench = setup::start(cli.clone()).await?;
        let log_dir = bench.log_dir.clone();
        let pg_log = bench.pg.log_path();
        let result = tokio::select! {
            r = run(bench) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        };
        if result.is_err() {
            setup::log_hint(&log_dir);
            eprintln!("--- postgres (last lines)\n{}", infra::tail(&pg_log, 5));
        }
        result
    }
    .await;
    match outcome {
        Ok(mut results) => {
            results.total_seconds = started.elapsed().as_secs_f64();
            results.load_at_start = load_at_start.trim().to_owned();
            perevent::fill(&mut results);
            results.targets = targets::evaluate(&results);
            let text = results.render();
            println!("{text}");
            match results.write(&cli.out, cli.name.as_deref(), &text) {
                Ok((json, md)) => {
                    eprintln!("results: {} and {}", json.display(), md.display());
                    // Figures are never judged here, but a lost or dead-lettered event is
                    // a fault whatever the timings.
                    if results.consistent && results.dead_lettered == 0.0 {
                        std::process::ExitCode::SUCCESS
                    } else {
                        eprintln!(
                            "e2e: events lost or dead-lettered (consistency: {}; {} dead-lettered)",
                            results.consistency, results.dead_lettered
                        );
                        std::process::ExitCode::FAILURE
                    }
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
