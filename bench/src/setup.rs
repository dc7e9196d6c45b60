//! The platform under test: PostgreSQL, nats-server and the three services, started once
//! for the whole run, and what watches them.

use crate::Cli;
use crate::infra::{self, Nats, Service};
use crate::probe::Probe;
use crate::procstat::{self, Kind, Watched};
use crate::results::Resource;
use anyhow::Context;
use std::path::PathBuf;
use std::time::Duration;
use testkit::{Postgres, PostgresOptions};

/// Everything started for the run; dropping it kills whatever still runs.
pub struct Bench {
    pub cli: Cli,
    // Field order is drop order: services first, then the broker and the database.
    pub ingestion: Service,
    pub worker: Service,
    pub analytics: Service,
    pub nats: Nats,
    pub pg: Postgres,
    /// Metrics, backlog and the `events` database.
    pub probe: Probe,
    /// The processes whose CPU each phase reports.
    pub watched: Watched,
    /// Ingestion's webhook.
    pub webhook: reqwest::Url,
    /// The services' and nats-server's logs.
    pub log_dir: PathBuf,
    seed: u64,
}

impl Bench {
    /// A new seed for the next load, different in every phase and every run.
    pub fn next_seed(&mut self) -> u64 {
        self.seed = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.seed
    }
}

/// Starts PostgreSQL, nats-server and the services (the worker first: it migrates).
pub async fn start(cli: Cli) -> anyhow::Result<Bench> {
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
    let pg = Postgres::start_with(PostgresOptions {
        bin_dir: cli.pg_bin_dir.clone(),
        settings: cli.durability.pg_settings(),
        log_to_file: true,
    })
    .await?;
    let admin = pg.connect("postgres").await?;
    admin.batch_execute("CREATE DATABASE events").await?;
    let nats = Nats::start(&log_dir, cli.nats_nodes).await?;
    let db_url = pg.url("events");
    // Tuning variables of the services pass through from our environment; these do not.
    let mut env = vec![
        ("NATS_URL", nats.url()),
        ("DATABASE_URL", db_url.clone()),
        ("NATS_STREAM_REPLICAS", cli.nats_nodes.to_string()),
    ];
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
    let probe = Probe::new(&worker.base(), &ingestion.base(), &nats.first_url(), db).await?;
    // Every node of a NATS cluster under the one name "nats": their CPU is summed.
    let mut items = vec![
        ("ingestion".into(), ingestion.pid(), Kind::Single),
        ("worker".into(), worker.pid(), Kind::Single),
        ("analytics".into(), analytics.pid(), Kind::Single),
    ];
    items.extend(
        nats.pids()
            .into_iter()
            .map(|pid| ("nats".into(), pid, Kind::Single)),
    );
    items.extend([
        ("postgres".into(), pg.pid(), Kind::Tree),
        ("load generator".into(), std::process::id(), Kind::Single),
    ]);
    let watched = Watched { items };
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

impl Bench {
    /// Stops the services (SIGTERM, clean drain) and reads the peak memory and CPU time of
    /// every process of the platform.
    pub async fn stop_and_measure(&mut self) -> Vec<Resource> {
        let timeout = Duration::from_secs(35);
        let mut resources = Vec::new();
        for service in [&mut self.ingestion, &mut self.worker, &mut self.analytics] {
            let clean = service.stop(timeout).await;
            let (rss, cpu) = service.last.unwrap_or((0, 0.0));
            resources.push(Resource {
                name: service.name.into(),
                peak_rss_bytes: rss,
                cpu_seconds: cpu,
                clean_exit: Some(clean),
            });
        }
        // A NATS cluster's nodes are summed into one row, as their CPU is.
        for (name, pid, kind) in self.watched.items.clone() {
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
                match resources.iter_mut().find(|r| r.name == name) {
                    Some(r) => {
                        r.peak_rss_bytes += rss;
                        r.cpu_seconds += cpu;
                    }
                    None => resources.push(Resource {
                        name,
                        peak_rss_bytes: rss,
                        cpu_seconds: cpu,
                        clean_exit: None,
                    }),
                }
            }
        }
        resources
    }
}

/// Where the services' logs are, and their last lines (after a failed run).
pub fn log_hint(log_dir: &std::path::Path) {
    eprintln!("service logs: {}", log_dir.display());
    for name in ["worker", "ingestion", "analytics"] {
        let path = log_dir.join(format!("{name}.log"));
        let tail = infra::tail(&path, 5);
        if !tail.is_empty() {
            eprintln!("--- {name} (last lines)\n{tail}");
        }
    }
}
