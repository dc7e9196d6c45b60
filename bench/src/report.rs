//! The results: what was measured, the targets of the issue (met or not, and which
//! component bounds a missed one), the printed table and the files.

use crate::infra::Durability;
use crate::procstat::CpuUse;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, Serialize)]
pub struct Phase {
    pub name: String,
    pub batch: usize,
    pub concurrency: usize,
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
    /// JetStream backlog (undelivered + unacked) at the window's start and end.
    pub backlog_start: u64,
    pub backlog_end: u64,
    pub backlog_max: u64,
    pub backlog_stable: Option<bool>,
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

#[derive(Debug, Clone, Serialize)]
pub struct Ceilings {
    pub events: usize,
    pub avg_event_bytes: usize,
    pub copy_rows_per_s: f64,
    pub copy_cpu: CpuUse,
    pub jetstream_msgs_per_s: f64,
    pub jetstream_cpu: CpuUse,
}

#[derive(Debug, Clone, Serialize)]
pub struct Drain {
    /// The backlog drained.
    pub events: u64,
    /// Seconds until 99 % of it was stored (the rate's window).
    pub seconds: f64,
    pub events_per_s: f64,
    /// Seconds until all of it was stored (`None`: not within the timeout).
    pub all_stored_s: Option<f64>,
    pub cpu: CpuUse,
}

#[derive(Debug, Clone, Serialize)]
pub struct Burst {
    pub events: u64,
    pub accepted: u64,
    pub failed: u64,
    pub accepted_after_s: f64,
    pub stored_after_s: Option<f64>,
    pub stored_per_s: Option<f64>,
    pub cpu: CpuUse,
}

#[derive(Debug, Clone, Serialize)]
pub struct Resource {
    pub name: String,
    /// Services: VmHWM. NATS: VmHWM. PostgreSQL: current RSS summed over its processes
    /// (shared buffers counted once per backend: an overstatement).
    pub peak_rss_bytes: u64,
    pub cpu_seconds: f64,
    pub clean_exit: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub what: String,
    pub why: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub target: String,
    pub measured: String,
    /// `None`: not measured in this run.
    pub met: Option<bool>,
    pub bound_by: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub date: String,
    pub quick: bool,
    pub machine: Machine,
    pub load_at_start: String,
    pub durability: String,
    pub pg_settings: Vec<(String, String)>,
    pub nats_version: String,
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
    pub skipped: Vec<Skipped>,
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
        "NATS_BATCH_SIZE",
        "NATS_MAX_ACK_PENDING",
        "BATCH_LINGER_MS",
        "WORKER_CONCURRENCY",
        "DB_POOL_MAX",
        "DB_POOL_MIN",
        "PUBLISH_TIMEOUT_MS",
        "MAX_BODY_BYTES",
        "NATS_STREAM_MAX_BYTES",
        "NATS_STREAM_MAX_MSGS",
        "NATS_DUPLICATE_WINDOW_SECS",
        "NATS_ACK_WAIT_SECS",
        "RATE_LIMIT_EVENTS_PER_SEC",
        "RATE_LIMIT_BYTES_PER_SEC",
        "ANALYTICS_RATE_LIMIT_PER_SEC",
    ];
    NAMES
        .iter()
        .filter_map(|n| std::env::var(n).ok().map(|v| ((*n).to_owned(), v)))
        .collect()
}

fn secs(v: Option<f64>) -> String {
    match v {
        Some(s) if s < 1.0 => format!("{:.0} ms", s * 1e3),
        Some(s) => format!("{s:.2} s"),
        None => "-".into(),
    }
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |m| format!("{m:.1}"))
}

/// The CPU arithmetic of a sustained phase: each process's CPU time per stored event, the
/// rate the machine's cores allow at that cost, and, for a `goal` (events/s, with the raw
/// JetStream ceiling of the run), the cores that rate would take (NATS's share alone).
/// `None` when nothing was stored.
fn cpu_budget(stored: Option<f64>, cpu: &CpuUse, goal: Option<(f64, f64)>) -> Option<String> {
    let stored = stored.filter(|s| *s > 0.0)?;
    let mut per: Vec<(&str, f64)> = cpu
        .cores
        .iter()
        .map(|(name, cores)| (name.as_str(), cores / stored * 1e6))
        .filter(|(_, us)| *us >= 0.05)
        .collect();
    per.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = per.iter().map(|(_, us)| us).sum();
    let cores = cpu.nproc as f64;
    let listed = per
        .iter()
        .map(|(name, us)| format!("{name} {us:.1}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut out = format!(
        "CPU per stored event: {total:.1} µs ({listed}), so {cores:.0} cores store at most {}/s \
         at this cost",
        n(cores / total * 1e6)
    );
    if let Some((goal, js_ceiling)) = goal {
        let (top, top_us) = per.first().copied().unwrap_or(("-", 0.0));
        let need = goal * total / 1e6;
        let _ = write!(
            out,
            "; {} events/s would take {need:.1} cores, {top}'s share alone {:.1}",
            n(goal),
            goal * top_us / 1e6
        );
        if top == "nats" {
            let _ = write!(
                out,
                " (JetStream publish alone, no consumer, peaked at {} msgs/s in this run)",
                n(js_ceiling)
            );
        }
        let verdict = if goal * top_us / 1e6 >= cores {
            format!(": {top} alone needs more than the machine's {cores:.0} cores")
        } else if need > cores {
            format!(": more than the machine's {cores:.0} cores, {top} the largest share")
        } else {
            String::new()
        };
        out.push_str(&verdict);
    }
    Some(out)
}

/// 12345.6 -> "12,346".
fn n(v: f64) -> String {
    let s = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / 1024.0 / 1024.0)
}

const SUSTAINED_BATCH: &str = "e2e sustained, 100-event batches, fresh table";
const SUSTAINED_SINGLE: &str = "e2e sustained, single-event requests";
const SUSTAINED_PRELOADED: &str = "e2e sustained, 100-event batches, preloaded table";
const LATENCY_SINGLE: &str = "latency, 5,000 single-event requests/s";
const LATENCY_E2E: &str = "latency, 10,000 events/s in 100-event batches";

impl Results {
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
            skipped: Vec::new(),
            targets: Vec::new(),
            total_seconds: 0.0,
        }
    }

    pub fn phase(&self, name: &str) -> Option<&Phase> {
        self.phases.iter().find(|p| p.name == name)
    }

    pub fn copy_ceiling(&self) -> f64 {
        self.ceilings.as_ref().map_or(0.0, |c| c.copy_rows_per_s)
    }

    pub fn js_ceiling(&self) -> f64 {
        self.ceilings
            .as_ref()
            .map_or(0.0, |c| c.jetstream_msgs_per_s)
    }

    fn ingest_alone(&self, batch: usize) -> Option<f64> {
        self.phases
            .iter()
            .find(|p| p.name.starts_with("ingestion alone") && p.batch == batch)
            .map(|p| p.accepted_per_s)
    }

    /// Which component bounds a sustained end-to-end figure.
    fn e2e_bound(&self, p: &Phase) -> String {
        let mut why = self.e2e_diagnosis(p);
        if let Some(budget) = cpu_budget(p.stored_per_s, &p.cpu, None) {
            why.push_str("; ");
            why.push_str(&budget);
        }
        why
    }

    /// Where the events waited in a sustained phase, and whether the CPU was the limit.
    fn e2e_diagnosis(&self, p: &Phase) -> String {
        let mut why = Vec::new();
        let worker_side = p.backlog_max > 2_000 && p.backlog_start > 1_000;
        if let Some(note) = p.stall_note() {
            why.push(format!(
                "worker pull loop: {note}; the same worker stored {}/s while draining a backlog \
                 (every pull full before it expires)",
                self.worker_alone
                    .as_ref()
                    .map_or("-".into(), |d| n(d.events_per_s))
            ));
        } else if worker_side {
            why.push(format!(
                "worker → PostgreSQL: the backlog stayed at {}-{} events, so ingestion offered \
                 more than was stored (worker alone drained {}/s; worker batch p99 {})",
                p.backlog_start,
                p.backlog_max,
                self.worker_alone
                    .as_ref()
                    .map_or("-".into(), |d| n(d.events_per_s)),
                secs(p.worker_batch_p99_s)
            ));
        } else {
            why.push(format!(
                "ingestion (HTTP → validate → publish): the backlog stayed near zero, so the \
                 worker waited for events (ingestion alone: {}/s)",
                self.ingest_alone(p.batch).map_or("-".into(), n)
            ));
        }
        if p.cpu.saturated() {
            why.push(format!(
                "the machine's CPU was saturated ({:.2} of {} cores busy; by process: {})",
                p.cpu.machine_busy_cores,
                p.cpu.nproc,
                p.cpu.ranking()
            ));
        }
        why.join("; ")
    }

    pub fn evaluate(&mut self) {
        let mut t = Vec::new();
        let rate_target =
            |t: &mut Vec<Target>, this: &Results, name: &str, label: &str, goal: f64| match this
                .phase(name)
            {
                Some(p) => {
                    let stored = p.stored_per_s.unwrap_or(0.0);
                    let stable = p.backlog_stable.unwrap_or(false);
                    let met = stored >= goal && stable;
                    t.push(Target {
                        target: format!("{label} ≥ {} events/s", n(goal)),
                        measured: format!(
                            "{}/s (backlog {})",
                            n(stored),
                            if stable { "stable" } else { "GREW" }
                        ),
                        met: Some(met),
                        bound_by: if met {
                            String::new()
                        } else {
                            this.e2e_bound(p)
                        },
                    });
                }
                None => t.push(Target {
                    target: format!("{label} ≥ {} events/s", n(goal)),
                    measured: "not measured".into(),
                    met: None,
                    bound_by: "phase skipped (see Skipped)".into(),
                }),
            };
        rate_target(
            &mut t,
            self,
            SUSTAINED_BATCH,
            "e2e sustained, 100-event batches, fresh table",
            25_000.0,
        );
        rate_target(
            &mut t,
            self,
            SUSTAINED_PRELOADED,
            "e2e sustained, 100-event batches, 10M events in the table",
            15_000.0,
        );
        if let (Some(pre), Some(last)) = (self.preloaded, t.last_mut())
            && pre < 10_000_000
        {
            last.measured
                .push_str(&format!(" (table preloaded with {} only)", n(pre as f64)));
            last.met = None;
        }
        rate_target(
            &mut t,
            self,
            SUSTAINED_SINGLE,
            "e2e sustained, single-event requests",
            10_000.0,
        );

        if let Some(p) = self.phase(LATENCY_SINGLE) {
            let met = p.client_p99_ms <= 10.0 && p.accepted_per_s >= 0.95 * 5_000.0;
            let server = p.server_p99_ms.unwrap_or(f64::NAN);
            t.push(Target {
                target: "ingestion p99 ≤ 10 ms at 5,000 single-event requests/s".into(),
                measured: format!(
                    "p99 {:.1} ms at {}/s (server-side p99 {} ms)",
                    p.client_p99_ms,
                    n(p.accepted_per_s),
                    ms(p.server_p99_ms)
                ),
                met: Some(met),
                bound_by: if met {
                    String::new()
                } else {
                    let mut why = if server <= 10.0 {
                        format!(
                            "ingestion's own histogram puts p99 at {server:.1} ms (interpolated in \
                             its bucket), the load generator sees {:.1} ms: the rest is loopback, \
                             client and scheduling time",
                            p.client_p99_ms
                        )
                    } else {
                        format!(
                            "ingestion (server-side p99 {server:.1} ms: validate + publish + \
                             PubAck wait)"
                        )
                    };
                    if p.cpu.saturated() {
                        why.push_str(&format!(
                            "; the machine's CPU was saturated ({:.2} of {} cores: {})",
                            p.cpu.machine_busy_cores,
                            p.cpu.nproc,
                            p.cpu.ranking()
                        ));
                    }
                    if p.worker_stalls > 0 {
                        why.push_str(&format!(
                            "; the worker stalled {}× in this phase and caught up in bursts \
                             (backlog max {}), which compete for the CPU with ingestion and NATS",
                            p.worker_stalls, p.backlog_max
                        ));
                    }
                    why
                },
            });
        }
        if let Some(p) = self.phase(LATENCY_E2E) {
            let p99 = p.e2e_p99_s.unwrap_or(f64::INFINITY);
            let met = p99 <= 1.0 && p.accepted_per_s >= 0.95 * 10_000.0;
            t.push(Target {
                target: "ingest-to-commit p99 ≤ 1 s at 10,000 events/s".into(),
                measured: format!(
                    "p99 {} (p50 {}) at {}/s",
                    secs(p.e2e_p99_s),
                    secs(p.e2e_p50_s),
                    n(p.accepted_per_s)
                ),
                met: Some(met),
                bound_by: if met {
                    String::new()
                } else if let Some(note) = p.stall_note() {
                    format!("worker pull loop: {note}")
                } else {
                    format!(
                        "worker → PostgreSQL (worker batch p99 {}, mean batch {:.0} events, \
                         backlog max {}); CPU {:.2} of {} cores busy ({})",
                        secs(p.worker_batch_p99_s),
                        p.worker_mean_batch.unwrap_or(0.0),
                        p.backlog_max,
                        p.cpu.machine_busy_cores,
                        p.cpu.nproc,
                        p.cpu.ranking()
                    )
                },
            });
        }
        if let Some(p) = self.phase(SUSTAINED_BATCH) {
            let copy = self.copy_ceiling();
            let ratio = p.stored_per_s.unwrap_or(0.0) / copy.max(1.0);
            let met = ratio >= 0.5;
            t.push(Target {
                target: "e2e ≥ 50% of the raw COPY ceiling (same run)".into(),
                measured: format!(
                    "{:.0}% ({} of {} rows/s)",
                    ratio * 100.0,
                    n(p.stored_per_s.unwrap_or(0.0)),
                    n(copy)
                ),
                met: Some(met),
                bound_by: if met {
                    String::new()
                } else {
                    let mut why = cpu_budget(
                        p.stored_per_s,
                        &p.cpu,
                        Some((0.5 * copy, self.js_ceiling())),
                    )
                    .unwrap_or_else(|| self.e2e_diagnosis(p));
                    if let Some(intake) = self.ingest_alone(p.batch)
                        && intake < 0.5 * copy
                    {
                        let _ = write!(
                            why,
                            "; ingestion alone (worker paused, {}-event batches) accepted \
                             {}/s, already below {}/s",
                            p.batch,
                            n(intake),
                            n(0.5 * copy)
                        );
                    }
                    why
                },
            });
        }
        for (service, limit) in [("ingestion", 64u64), ("worker", 128), ("analytics", 64)] {
            if let Some(r) = self.resources.iter().find(|r| r.name == service) {
                let met = r.peak_rss_bytes <= limit * 1024 * 1024;
                t.push(Target {
                    target: format!("peak RSS {service} ≤ {limit} MiB"),
                    measured: mib(r.peak_rss_bytes),
                    met: Some(met),
                    bound_by: if met {
                        String::new()
                    } else {
                        format!("{service} itself (VmHWM)")
                    },
                });
            }
        }
        self.targets = t;
    }

    pub fn render(&mut self) -> String {
        self.evaluate();
        let mut s = String::new();
        let m = &self.machine;
        let _ = writeln!(
            s,
            "# Event platform: end-to-end benchmark{}",
            if self.quick {
                " (--quick: tiny sizes, figures meaningless)"
            } else {
                ""
            }
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{} · {} × {} · {:.1} GiB RAM · Linux {} · load average at start {} · took {:.0} s",
            self.date,
            m.nproc,
            m.cpu_model,
            m.memory_gib,
            m.kernel,
            self.load_at_start,
            self.total_seconds
        );
        let _ = writeln!(s);
        let settings: Vec<String> = self
            .pg_settings
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(
            s,
            "- PostgreSQL (private cluster, durability `{}`): {}",
            self.durability,
            settings.join(", ")
        );
        let _ = writeln!(
            s,
            "- NATS: {}, JetStream file store (private server)",
            self.nats_version
        );
        let env: Vec<String> = self
            .passthrough_env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(
            s,
            "- Services: release builds, default settings{}; load generator: the publisher's generator and sender in this process, keep-alive HTTP/1.1",
            if env.is_empty() {
                String::new()
            } else {
                format!(" except {}", env.join(", "))
            }
        );
        if let Some(c) = &self.ceilings {
            let _ = writeln!(
                s,
                "- Events: the publisher's four shapes, mean {} bytes of JSON",
                c.avg_event_bytes
            );
        }
        let _ = writeln!(
            s,
            "- All processes share the same {} cores: every figure includes the others' CPU use.",
            m.nproc
        );
        let _ = writeln!(s);

        let _ = writeln!(s, "| measure | events/s | latency p50 / p99 | notes |");
        let _ = writeln!(s, "|---|---:|---|---|");
        if let Some(c) = &self.ceilings {
            let _ = writeln!(
                s,
                "| raw binary COPY into `events` (scratch copy, same indexes) | {} | | {} rows, batches of 1000, 3 connections |",
                n(c.copy_rows_per_s),
                n(c.events as f64)
            );
            let _ = writeln!(
                s,
                "| raw JetStream publish, PubAcks pipelined | {} | | {} msgs, window 4096, `EVENTS` settings and headers |",
                n(c.jetstream_msgs_per_s),
                n(c.events as f64)
            );
        }
        for p in &self.phases {
            let latency = if p.name.starts_with("ingestion") || p.name.starts_with("latency, 5,000")
            {
                format!(
                    "HTTP {:.1} / {:.1} ms (server {} / {} ms)",
                    p.client_p50_ms,
                    p.client_p99_ms,
                    ms(p.server_p50_ms),
                    ms(p.server_p99_ms)
                )
            } else {
                format!(
                    "ingest→commit {} / {}; HTTP p99 {:.1} ms",
                    secs(p.e2e_p50_s),
                    secs(p.e2e_p99_s),
                    p.client_p99_ms
                )
            };
            let figure = match p.stored_per_s {
                Some(st) if !p.name.starts_with("ingestion") => format!("{} stored", n(st)),
                _ => format!("{} accepted", n(p.accepted_per_s)),
            };
            let mut notes = vec![format!(
                "{}, c={}, {:.0} s",
                if p.batch == 1 {
                    "single".to_string()
                } else {
                    format!("batch {}", p.batch)
                },
                p.concurrency,
                p.seconds
            )];
            if p.name.starts_with("ingestion alone") {
                notes.push("worker paused (SIGSTOP)".into());
            } else {
                notes.push(format!(
                    "backlog {}→{} (max {}){}",
                    p.backlog_start,
                    p.backlog_end,
                    p.backlog_max,
                    match p.backlog_stable {
                        Some(true) => ", not growing",
                        Some(false) => ", GREW",
                        None => "",
                    }
                ));
            }
            if let Some(o) = p.offered_per_s
                && p.mode.starts_with("adaptive")
            {
                notes.push(format!("offered {}/s", n(o)));
            }
            if p.worker_stalls > 0 {
                notes.push(format!(
                    "worker stalled {}× ≥ 1 s ({:.1} s in all, longest {:.1} s)",
                    p.worker_stalls, p.worker_stalled_s, p.worker_longest_stall_s
                ));
            }
            notes.extend(p.notes.iter().cloned());
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                p.name,
                figure,
                latency,
                notes.join("; ")
            );
            if p.name == "ingestion alone, 100-event batches"
                && let Some(d) = &self.worker_alone
            {
                let _ = writeln!(
                    s,
                    "| worker alone, draining that backlog | {} stored | | 99% of {} events in {:.1} s; all in {} (the pull in flight when the worker was paused waits for `ack_wait`) |",
                    n(d.events_per_s),
                    n(d.events as f64),
                    d.seconds,
                    d.all_stored_s
                        .map_or("more than the timeout".into(), |t| format!("{t:.1} s"))
                );
            }
        }
        if let Some(b) = &self.burst {
            let _ = writeln!(
                s,
                "| burst: {} events offered at once | {} stored | | all accepted after {:.2} s, all stored after {}{} |",
                n(b.events as f64),
                b.stored_per_s.map_or("-".into(), n),
                b.accepted_after_s,
                b.stored_after_s
                    .map_or("(timeout)".into(), |x| format!("{x:.2} s")),
                if b.failed > 0 {
                    format!("; {} failed", b.failed)
                } else {
                    String::new()
                }
            );
        }
        if let Some(pre) = self.preloaded {
            let _ = writeln!(
                s,
                "| (bulk preload of {} events by COPY) | {} | | {:.0} s |",
                n(pre as f64),
                n(pre as f64 / self.preload_seconds.unwrap_or(1.0).max(1e-3)),
                self.preload_seconds.unwrap_or(0.0)
            );
        }
        for k in &self.skipped {
            let _ = writeln!(s, "| {} | skipped | | {} |", k.what, k.why);
        }
        let _ = writeln!(s);

        if let Some(p) = self.phase(SUSTAINED_BATCH) {
            let e2e = p.stored_per_s.unwrap_or(0.0);
            let _ = writeln!(
                s,
                "Ratios (e2e sustained, 100-event batches): e2e / raw COPY = {:.2}, e2e / raw JetStream = {:.2}",
                e2e / self.copy_ceiling().max(1.0),
                e2e / self.js_ceiling().max(1.0)
            );
            let _ = writeln!(s);
        }

        let _ = writeln!(s, "## Targets");
        let _ = writeln!(s);
        let _ = writeln!(s, "| target | measured | verdict | bound by |");
        let _ = writeln!(s, "|---|---|---|---|");
        for t in &self.targets {
            let verdict = match t.met {
                Some(true) => "met",
                Some(false) => "NOT MET",
                None => "not measured",
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                t.target, t.measured, verdict, t.bound_by
            );
        }
        let _ = writeln!(s);

        let _ = writeln!(s, "## Resources");
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "| process | peak RSS | CPU seconds (whole run) | clean shutdown |"
        );
        let _ = writeln!(s, "|---|---:|---:|---|");
        for r in &self.resources {
            let rss = if r.name == "postgres" {
                format!(
                    "{} (sum of current RSS of its processes)",
                    mib(r.peak_rss_bytes)
                )
            } else {
                mib(r.peak_rss_bytes)
            };
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {} |",
                r.name,
                rss,
                r.cpu_seconds,
                r.clean_exit.map_or("", |c| if c { "yes" } else { "NO" })
            );
        }
        if let Some(q) = self.analytics_query_p50_ms {
            let _ = writeln!(
                s,
                "\nAnalytics answered report queries (stats, timeseries, revenue, campaigns, geo over the default 7 days) in {q:.1} ms (median) after the load."
            );
        }
        let _ = writeln!(s);

        let _ = writeln!(
            s,
            "## CPU by phase (cores used on average; the machine has {})",
            m.nproc
        );
        let _ = writeln!(s);
        let names = [
            "ingestion",
            "worker",
            "nats",
            "postgres",
            "load generator",
            "analytics",
        ];
        let _ = writeln!(s, "| phase | {} | machine busy |", names.join(" | "));
        let _ = writeln!(s, "|---|{}---:|", "---:|".repeat(names.len()));
        let mut rows: Vec<(String, &CpuUse)> = Vec::new();
        if let Some(c) = &self.ceilings {
            rows.push(("raw COPY".into(), &c.copy_cpu));
            rows.push(("raw JetStream".into(), &c.jetstream_cpu));
        }
        for p in &self.phases {
            rows.push((p.name.clone(), &p.cpu));
            if p.name == "ingestion alone, 100-event batches"
                && let Some(d) = &self.worker_alone
            {
                rows.push(("worker alone, draining".into(), &d.cpu));
            }
        }
        if let Some(b) = &self.burst {
            rows.push(("burst".into(), &b.cpu));
        }
        for (name, cpu) in rows {
            let cells: Vec<String> = names
                .iter()
                .map(|k| format!("{:.2}", cpu.cores.get(*k).copied().unwrap_or(0.0)))
                .collect();
            let _ = writeln!(
                s,
                "| {} | {} | {:.2} |",
                name,
                cells.join(" | "),
                cpu.machine_busy_cores
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "Consistency: {}.", self.consistency);
        s
    }

    /// Writes `<out>/<date>.json` and `.md` (`<date>-quick.*` for --quick).
    pub fn write(&self, out: &Path, text: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(out)?;
        let day = self.date.get(..10).unwrap_or("results");
        let stem = if self.quick {
            format!("{day}-quick")
        } else {
            day.to_owned()
        };
        let json = out.join(format!("{stem}.json"));
        let md = out.join(format!("{stem}.md"));
        std::fs::write(&json, serde_json::to_string_pretty(self)? + "\n")?;
        std::fs::write(&md, text)?;
        Ok((json, md))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{Ceilings, CpuUse, Phase, Results, SUSTAINED_BATCH, cpu_budget, n};
    use crate::infra::Durability;

    fn cpu(cores: &[(&str, f64)]) -> CpuUse {
        CpuUse {
            cores: cores.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            machine_busy_cores: cores.iter().map(|(_, v)| v).sum(),
            nproc: 2,
        }
    }

    #[test]
    fn the_cpu_budget_names_the_process_that_cannot_fit() {
        let use_ = cpu(&[
            ("nats", 0.6),
            ("worker", 0.44),
            ("postgres", 0.4),
            ("ingestion", 0.3),
        ]);
        // 20,000 events/s: nats 30 µs, worker 22, postgres 20, ingestion 15 -> 87 µs.
        let text = cpu_budget(Some(20_000.0), &use_, Some((70_000.0, 90_000.0))).unwrap();
        assert!(text.starts_with("CPU per stored event: 87.0 µs (nats 30.0, worker 22.0, postgres 20.0, ingestion 15.0)"), "{text}");
        assert!(text.contains("store at most 22,989/s"), "{text}");
        assert!(
            text.contains("70,000 events/s would take 6.1 cores, nats's share alone 2.1"),
            "{text}"
        );
        assert!(text.contains("peaked at 90,000 msgs/s"), "{text}");
        assert!(
            text.ends_with("nats alone needs more than the machine's 2 cores"),
            "{text}"
        );

        let text = cpu_budget(Some(20_000.0), &use_, Some((30_000.0, 90_000.0))).unwrap();
        assert!(
            text.ends_with("more than the machine's 2 cores, nats the largest share"),
            "{text}"
        );
        let text = cpu_budget(Some(20_000.0), &use_, Some((20_000.0, 90_000.0))).unwrap();
        assert!(text.ends_with("nats's share alone 0.6 (JetStream publish alone, no consumer, peaked at 90,000 msgs/s in this run)"), "{text}");
        assert_eq!(cpu_budget(Some(0.0), &use_, None), None);
        assert_eq!(cpu_budget(None, &use_, None), None);
    }

    #[test]
    fn a_missed_copy_ratio_says_when_the_intake_alone_falls_short_of_it() {
        let mut r = Results::new(&Durability::Full, false);
        r.ceilings = Some(Ceilings {
            events: 1_000,
            avg_event_bytes: 374,
            copy_rows_per_s: 148_000.0,
            copy_cpu: CpuUse::default(),
            jetstream_msgs_per_s: 110_000.0,
            jetstream_cpu: CpuUse::default(),
        });
        let phase = |name: &str, accepted: f64, stored: Option<f64>| Phase {
            name: name.into(),
            batch: 100,
            accepted_per_s: accepted,
            stored_per_s: stored,
            cpu: cpu(&[("nats", 0.67), ("postgres", 0.5), ("worker", 0.34)]),
            ..Phase::default()
        };
        r.phases
            .push(phase("ingestion alone, 100-event batches", 69_000.0, None));
        r.phases
            .push(phase(SUSTAINED_BATCH, 28_000.0, Some(28_000.0)));
        let copy_target = |r: &Results| {
            r.targets
                .iter()
                .find(|t| t.target.starts_with("e2e ≥ 50% of the raw COPY"))
                .cloned()
                .unwrap()
        };

        r.evaluate();
        let t = copy_target(&r);
        assert_eq!(t.met, Some(false));
        assert!(
            t.bound_by.starts_with("CPU per stored event"),
            "{}",
            t.bound_by
        );
        assert!(
            t.bound_by.ends_with(
                "; ingestion alone (worker paused, 100-event batches) accepted 69,000/s, \
                 already below 74,000/s"
            ),
            "{}",
            t.bound_by
        );

        r.phases[0].accepted_per_s = 80_000.0;
        r.evaluate();
        assert!(!copy_target(&r).bound_by.contains("ingestion alone"));
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(n(0.0), "0");
        assert_eq!(n(999.4), "999");
        assert_eq!(n(1234.0), "1,234");
        assert_eq!(n(25_000_000.0), "25,000,000");
    }
}
