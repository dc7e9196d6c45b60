//! The measured values of a run, typed: one [`Phase`] per load phase, the ceilings, the
//! worker draining alone, the burst, the resources, and the setup they were measured on.
//! [`Results`] is what `<date>.json` holds; [`crate::targets`] judges it and
//! [`crate::markdown`] writes it out.

use crate::control::DrainEnd;
use crate::infra::Durability;
use crate::markdown::secs;
use crate::perevent::PerEvent;
use crate::procstat::CpuUse;
use crate::targets::Target;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What one load phase measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Phase {
    pub name: String,
    /// Events per request.
    pub batch: usize,
    /// Requests in flight.
    pub concurrency: usize,
    /// How the load was offered, in words.
    pub mode: String,
    /// Fixed rate, or the mean rate the controller offered.
    pub offered_per_s: Option<f64>,
    /// The measurement window.
    pub seconds: f64,
    pub accepted: u64,
    pub accepted_per_s: f64,
    pub failed: u64,
    pub rejected: u64,
    pub retries: u64,
    /// Request latency seen by the load generator (whole phase, warm-up included).
    pub client_p50_ms: f64,
    pub client_p99_ms: f64,
    /// Request latency measured by ingestion itself (`http_request_duration_seconds`).
    pub server_p50_ms: Option<f64>,
    pub server_p99_ms: Option<f64>,
    /// Events committed to PostgreSQL in the window.
    pub stored: Option<u64>,
    pub stored_per_s: Option<f64>,
    /// Backlog in events (accepted by ingestion, not yet stored or dead-lettered) at the
    /// window's start and end.
    pub backlog_start: u64,
    pub backlog_end: u64,
    pub backlog_max: u64,
    pub backlog_stable: Option<bool>,
    /// The most JetStream messages (undelivered + unacked) seen waiting in the window.
    pub backlog_messages_max: u64,
    /// `worker_event_latency_seconds`: ingest (PubAck) to commit.
    pub e2e_p50_s: Option<f64>,
    pub e2e_p99_s: Option<f64>,
    /// The phase's `worker_event_latency_seconds` observations: (upper bound, cumulative).
    pub e2e_buckets: Vec<(f64, f64)>,
    pub worker_batch_p99_s: Option<f64>,
    pub worker_mean_batch: Option<f64>,
    /// Time for the backlog to empty after the load stopped.
    pub drained_after_s: Option<f64>,
    /// Stretches of ≥ 1 s in the window when the worker stored nothing although events
    /// were waiting in JetStream.
    pub worker_stalls: u32,
    pub worker_stalled_s: f64,
    pub worker_longest_stall_s: f64,
    pub cpu: CpuUse,
    /// Events ingestion counted accepted in the window (`ingestion_events_accepted_total`).
    pub ingestion_accepted: u64,
    /// JetStream messages ingestion had acknowledged in the window
    /// (`ingestion_messages_published_total`); `None` with binaries older than the metric.
    pub messages_published: Option<u64>,
    /// The cost of one event in this phase ([`crate::perevent::fill`]).
    pub per_event: Option<PerEvent>,
    pub notes: Vec<String>,
}

impl Phase {
    /// When the worker stalled for a noticeable share of the window.
    pub fn stall_note(&self) -> Option<String> {
        (self.worker_stalled_s >= 0.1 * self.seconds).then(|| {
            format!(
                "the worker stored nothing for {:.1} s of the {:.0} s window although events \
                 waited in JetStream ({} stretches of ≥ 1 s, longest {:.1} s; a pull that ends \
                 on async-nats's expires + 5 s fallback timer instead of the server's 408 \
                 looks like this: `cargo run --release -p bench --example pull_stall`)",
                self.worker_stalled_s,
                self.seconds,
                self.worker_stalls,
                self.worker_longest_stall_s
            )
        })
    }

    /// The summary printed on stderr when the phase ends.
    pub fn one_line(&self) -> String {
        format!(
            "accepted {:.0}/s, stored {}, backlog {}→{} (max {}), client p50/p99 {:.2}/{:.2} ms, \
             ingest→commit p99 {}, CPU busy {:.2}/{} ({})",
            self.accepted_per_s,
            self.stored_per_s
                .map_or("-".into(), |s| format!("{s:.0}/s")),
            self.backlog_start,
            self.backlog_end,
            self.backlog_max,
            self.client_p50_ms,
            self.client_p99_ms,
            secs(self.e2e_p99_s),
            self.cpu.machine_busy_cores,
            self.cpu.nproc,
            self.cpu.ranking()
        )
    }
}

/// The raw ceilings of the parts, with the run's event payloads.
#[derive(Debug, Clone, Serialize)]
pub struct Ceilings {
    pub events: usize,
    pub avg_event_bytes: usize,
    pub copy_rows_per_s: f64,
    pub copy_cpu: CpuUse,
    pub jetstream_msgs_per_s: f64,
    pub jetstream_cpu: CpuUse,
    /// CPU per row of the raw COPY and per message of the raw publish.
    pub copy_per_row: Option<PerEvent>,
    pub jetstream_per_message: Option<PerEvent>,
}

#[cfg(test)]
impl Ceilings {
    /// The ceilings of a test: 1,000 events of 374 bytes at these rates, no CPU measured.
    pub fn at(copy_rows_per_s: f64, jetstream_msgs_per_s: f64) -> Ceilings {
        Ceilings {
            events: 1_000,
            avg_event_bytes: 374,
            copy_rows_per_s,
            copy_cpu: CpuUse::default(),
            jetstream_msgs_per_s,
            jetstream_cpu: CpuUse::default(),
            copy_per_row: None,
            jetstream_per_message: None,
        }
    }
}

/// The worker alone, draining the backlog the ingestion-alone phases left.
#[derive(Debug, Clone, Serialize)]
pub struct Drain {
    /// The backlog when the worker resumed, in events.
    pub events: u64,
    /// The rate's window: from the resume to the last progress before it ended.
    pub seconds: f64,
    /// Events stored in the window.
    pub stored: u64,
    pub events_per_s: f64,
    /// What ended the window.
    pub ended: DrainEnd,
    /// Seconds until all of it was stored (`None`: not within the timeout).
    pub all_stored_s: Option<f64>,
    pub cpu: CpuUse,
    pub per_event: Option<PerEvent>,
}

/// The burst: events offered at once, and how long until all were accepted and stored.
#[derive(Debug, Clone, Serialize)]
pub struct Burst {
    pub events: u64,
    pub accepted: u64,
    pub failed: u64,
    pub accepted_after_s: f64,
    pub stored_after_s: Option<f64>,
    pub stored_per_s: Option<f64>,
    pub cpu: CpuUse,
    pub ingestion_accepted: u64,
    pub messages_published: Option<u64>,
    pub per_event: Option<PerEvent>,
}

/// Memory and CPU of one process over the whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Resource {
    pub name: String,
    /// Services: VmHWM. NATS: VmHWM. PostgreSQL: current RSS summed over its processes
    /// (shared buffers counted once per backend: an overstatement).
    pub peak_rss_bytes: u64,
    pub cpu_seconds: f64,
    /// Whether a service exited 0 on SIGTERM; `None` for NATS and PostgreSQL.
    pub clean_exit: Option<bool>,
}

/// A phase not run, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub what: String,
    pub why: String,
}

/// The machine the run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
}

/// Everything a run measured, as written to `<date>.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub date: String,
    pub quick: bool,
    pub machine: Machine,
    pub load_at_start: String,
    pub durability: String,
    pub pg_settings: Vec<(String, String)>,
    pub nats_version: String,
    /// nats-server nodes (1, or 3 clustered with streams at R3).
    pub nats_nodes: usize,
    pub passthrough_env: Vec<(String, String)>,
    pub ceilings: Option<Ceilings>,
    pub worker_alone: Option<Drain>,
    pub phases: Vec<Phase>,
    pub burst: Option<Burst>,
    pub analytics_query_p50_ms: Option<f64>,
    pub preloaded: Option<u64>,
    pub preload_seconds: Option<f64>,
    pub resources: Vec<Resource>,
    pub consistency: String,
    /// Whether the rows in `events` matched what the worker reports stored.
    pub consistent: bool,
    /// Events the worker dead-lettered in the whole run (the bench sends only valid
    /// events, so anything but 0 is a fault).
    pub dead_lettered: f64,
    /// What the stored events take on disk, by part.
    pub disk: Option<crate::disk::Disk>,
    pub skipped: Vec<Skipped>,
    /// The bound of the CPU-per-stored-event target, µs (`--cpu-per-event-us`).
    pub cpu_per_event_bound_us: f64,
    /// The verdicts, from [`crate::targets::evaluate`] once everything is measured.
    pub targets: Vec<Target>,
    pub total_seconds: f64,
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    Machine {
        nproc: crate::procstat::nproc(),
        cpu_model,
        memory_gib: kib / 1024.0 / 1024.0,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}

/// The PostgreSQL settings that decide write throughput, as the server reports them.
pub async fn pg_settings(db: &tokio_postgres::Client) -> anyhow::Result<Vec<(String, String)>> {
    let rows = db
        .query(
            "SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name = ANY($1) \
             ORDER BY name",
            &[&vec![
                "server_version",
                "fsync",
                "synchronous_commit",
                "full_page_writes",
                "wal_level",
                "shared_buffers",
                "max_wal_size",
                "checkpoint_timeout",
                "wal_buffers",
                "work_mem",
            ]],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Service tuning variables set in our environment (they reach the services).
pub fn passthrough_env() -> Vec<(String, String)> {
    const NAMES: &[&str] = &[
        "WORKER_BATCH_SIZE",
        "NATS_MAX_ACK_PENDING",
        "WORKER_BATCH_LINGER",
        "WORKER_CONCURRENCY",
        "DB_POOL_MAX",
        "DB_POOL_MIN",
        "NATS_PUBLISH_TIMEOUT",
        "HTTP_MAX_BODY_BYTES",
        "NATS_STREAM_MAX_BYTES",
        "NATS_STREAM_MAX_MSGS",
        "NATS_DUPLICATE_WINDOW",
        "NATS_ACK_WAIT",
        "RATE_LIMIT_EVENTS_PER_SEC",
        "RATE_LIMIT_BYTES_PER_SEC",
        "ANALYTICS_RATE_LIMIT_PER_SEC",
    ];
    NAMES
        .iter()
        .filter_map(|n| std::env::var(n).ok().map(|v| ((*n).to_owned(), v)))
        .collect()
}

/// The phases the targets and the table refer to by name.
pub const SUSTAINED_BATCH: &str = "e2e sustained, 100-event batches, fresh table";
pub const SUSTAINED_SINGLE: &str = "e2e sustained, single-event requests";
pub const SUSTAINED_PRELOADED: &str = "e2e sustained, 100-event batches, preloaded table";
pub const LATENCY_SINGLE: &str = "latency, 5,000 single-event requests/s";
pub const LATENCY_E2E: &str = "latency, 10,000 events/s in 100-event batches";
/// The ingestion-alone phase after which the worker drains alone.
pub const INGEST_BATCH: &str = "ingestion alone, 100-event batches";

impl Results {
    /// Empty results, stamped with the date and the machine.
    pub fn new(durability: &Durability, quick: bool) -> Results {
        Results {
            date: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            quick,
            machine: machine(),
            load_at_start: String::new(),
            durability: format!("{durability:?}").to_lowercase(),
            pg_settings: Vec::new(),
            nats_version: String::new(),
            nats_nodes: 1,
            passthrough_env: Vec::new(),
            ceilings: None,
            worker_alone: None,
            phases: Vec::new(),
            burst: None,
            analytics_query_p50_ms: None,
            preloaded: None,
            preload_seconds: None,
            resources: Vec::new(),
            consistency: String::new(),
            consistent: true,
            dead_lettered: 0.0,
            disk: None,
            skipped: Vec::new(),
            cpu_per_event_bound_us: crate::perevent::DEFAULT_CPU_BOUND_US,
            targets: Vec::new(),
            total_seconds: 0.0,
        }
    }

    /// The phase of that name, if it ran.
    pub fn phase(&self, name: &str) -> Option<&Phase> {
        self.phases.iter().find(|p| p.name == name)
    }

    /// Rows/s of the raw COPY ceiling (0 when not measured).
    pub fn copy_ceiling(&self) -> f64 {
        self.ceilings.as_ref().map_or(0.0, |c| c.copy_rows_per_s)
    }

    /// Messages/s of the raw JetStream ceiling (0 when not measured).
    pub fn js_ceiling(&self) -> f64 {
        self.ceilings
            .as_ref()
            .map_or(0.0, |c| c.jetstream_msgs_per_s)
    }

    /// Events/s ingestion accepted alone (worker paused) with this batch size.
    pub fn ingest_alone(&self, batch: usize) -> Option<f64> {
        self.phases
            .iter()
            .find(|p| p.name.starts_with("ingestion alone") && p.batch == batch)
            .map(|p| p.accepted_per_s)
    }

    /// Writes `<out>/<name>.json` and `.md`; the name defaults to the date
    /// (`<date>-quick` for --quick).
    pub fn write(
        &self,
        out: &Path,
        name: Option<&str>,
        text: &str,
    ) -> anyhow::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(out)?;
        let day = self.date.get(..10).unwrap_or("results");
        let stem = match name {
            Some(name) => name.to_owned(),
            None if self.quick => format!("{day}-quick"),
            None => day.to_owned(),
        };
        let json = out.join(format!("{stem}.json"));
        let md = out.join(format!("{stem}.md"));
        std::fs::write(&json, serde_json::to_string_pretty(self)? + "\n")?;
        std::fs::write(&md, text)?;
        Ok((json, md))
    }
}
