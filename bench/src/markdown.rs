//! The report in Markdown: the setup, the table of measures, the targets, the resources,
//! the CPU by phase and per stored event. Printed at the end of a run and written to
//! `<date>.md`.

use crate::control::DrainEnd;
use crate::procstat::CpuUse;
use crate::results::{Drain, INGEST_BATCH, Phase, Results, SUSTAINED_BATCH};
use std::fmt::Write as _;

impl Results {
    /// The whole report. The targets are the ones in `self.targets`
    /// ([`crate::targets::evaluate`] fills them once everything is measured).
    pub fn render(&self) -> String {
        let mut s = String::new();
        self.setup(&mut s);
        self.measures(&mut s);
        self.ratios(&mut s);
        self.targets_table(&mut s);
        self.resources_table(&mut s);
        self.cpu_table(&mut s);
        self.per_event_table(&mut s);
        if let Some(disk) = &self.disk {
            disk.render(&mut s);
        }
        let _ = writeln!(
            s,
            "Consistency: {}; {:.0} events dead-lettered in the whole run.",
            self.consistency, self.dead_lettered
        );
        s
    }

    /// The title and what the run ran on.
    fn setup(&self, s: &mut String) {
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
            "- NATS: {}, JetStream file store ({})",
            self.nats_version,
            if self.nats_nodes > 1 {
                format!(
                    "{} private servers in one cluster on this machine, streams at R{}",
                    self.nats_nodes, self.nats_nodes
                )
            } else {
                "private server".to_owned()
            }
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
    }

    /// The table of measures: ceilings, phases, the worker alone, burst, preload, skipped.
    fn measures(&self, s: &mut String) {
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
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                p.name,
                figure(p),
                latency(p),
                notes(p).join("; ")
            );
            if p.name == INGEST_BATCH
                && let Some(d) = &self.worker_alone
            {
                let _ = writeln!(
                    s,
                    "| worker alone, draining that backlog | {} stored | | {}; all in {} (the pull in flight when the worker was paused waits for `ack_wait`) |",
                    n(d.events_per_s),
                    drain_window(d),
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
    }

    /// How the sustained rate compares with the raw ceilings.
    fn ratios(&self, s: &mut String) {
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
    }

    /// The targets, met or not, and what bounds a missed one.
    fn targets_table(&self, s: &mut String) {
        let _ = writeln!(s, "## Targets");
        let _ = writeln!(s);
        let _ = writeln!(s, "| issue | target | measured | verdict | bound by |");
        let _ = writeln!(s, "|---|---|---|---|---|");
        for t in &self.targets {
            let verdict = match t.met {
                Some(true) => "met",
                Some(false) => "NOT MET",
                None => "not measured",
            };
            let issues: Vec<String> = t.issues.iter().map(u32::to_string).collect();
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                issues.join(", "),
                t.target,
                t.measured,
                verdict,
                t.bound_by
            );
        }
        let _ = writeln!(s);
    }

    /// Memory and CPU of each process, and the analytics queries after the load.
    fn resources_table(&self, s: &mut String) {
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
    }

    /// The cores each process used in each phase.
    fn cpu_table(&self, s: &mut String) {
        let m = &self.machine;

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
    }
}

/// The worker-alone window: how much of the backlog, how long, and what ended it.
fn drain_window(d: &Drain) -> String {
    let events = n(d.events as f64);
    match d.ended {
        DrainEnd::MostStored => format!(
            "{} of {events} events (≥ 99%) in {:.1} s",
            n(d.stored as f64),
            d.seconds
        ),
        DrainEnd::ProgressPaused => format!(
            "{} of {events} events in {:.1} s, then nothing stored for 2 s",
            n(d.stored as f64),
            d.seconds
        ),
        DrainEnd::Timeout => format!(
            "{} of {events} events in {:.1} s, then the timeout",
            n(d.stored as f64),
            d.seconds
        ),
    }
}

/// The phase's headline rate: stored, or accepted when nothing was stored.
fn figure(p: &Phase) -> String {
    match p.stored_per_s {
        Some(st) if !p.name.starts_with("ingestion") => format!("{} stored", n(st)),
        _ => format!("{} accepted", n(p.accepted_per_s)),
    }
}

/// HTTP latency for ingestion phases, ingest-to-commit latency for the others.
fn latency(p: &Phase) -> String {
    if p.name.starts_with("ingestion") || p.name.starts_with("latency, 5,000") {
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
    }
}

/// How the phase ran and what stood out.
fn notes(p: &Phase) -> Vec<String> {
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
            "backlog {}→{} events (max {}){}",
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
    notes
}

/// Seconds, or milliseconds below one second; `-` when unknown.
pub fn secs(v: Option<f64>) -> String {
    match v {
        Some(s) if s < 1.0 => format!("{:.0} ms", s * 1e3),
        Some(s) => format!("{s:.2} s"),
        None => "-".into(),
    }
}

/// Milliseconds with one decimal, `-` when unknown.
pub fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |m| format!("{m:.1}"))
}

/// 12345.6 -> "12,346".
pub fn n(v: f64) -> String {
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

/// Bytes in MiB with one decimal.
pub fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / 1024.0 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::n;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(n(0.0), "0");
        assert_eq!(n(999.4), "999");
        assert_eq!(n(1234.0), "1,234");
        assert_eq!(n(25_000_000.0), "25,000,000");
    }
}
