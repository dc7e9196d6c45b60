//! How each phase runs: the load it offers, what it watches during its window, and the
//! typed [`Phase`] it yields; the other steps of a run (ceilings, the worker alone, the
//! burst, the analytics queries, the consistency check) are here too.

use crate::ceilings;
use crate::control::{Controller, Stalls};
use crate::load::{self, Load, Rate};
use crate::perevent;
use crate::procstat::{CpuSnapshot, CpuUse};
use crate::prom::{self, Histogram};
use crate::results::{Burst, Ceilings, Phase};
use crate::setup::Bench;
use publisher::Summary;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a phase reads the backlog and steers the rate.
const TICK: Duration = Duration::from_millis(250);

/// How a phase offers load.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// As fast as the server answers (closed loop, bounded concurrency).
    Unlimited,
    /// A fixed rate (events/s).
    Fixed(f64),
    /// The rate that keeps the JetStream backlog near a small target: what the pipeline
    /// sustains.
    Adaptive { initial: f64, warmup: Duration },
}

impl Mode {
    fn initial_rate(self) -> f64 {
        match self {
            Mode::Unlimited => 0.0,
            Mode::Fixed(r) => r,
            Mode::Adaptive { initial, .. } => initial,
        }
    }

    fn warmup(self) -> Duration {
        match self {
            Mode::Adaptive { warmup, .. } => warmup,
            _ => Duration::ZERO,
        }
    }

    fn describe(self) -> String {
        match self {
            Mode::Unlimited => "as fast as possible".into(),
            Mode::Fixed(r) => format!("fixed {r:.0} events/s"),
            Mode::Adaptive { .. } => "adaptive (backlog held near a small target)".into(),
        }
    }
}

/// One load phase.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    /// Events per request.
    pub batch: usize,
    /// Requests in flight.
    pub concurrency: usize,
    pub mode: Mode,
    /// The measurement window (after the warm-up of an adaptive phase).
    pub window: Duration,
    /// Worker stopped (SIGSTOP): ingestion and NATS alone.
    pub worker_paused: bool,
}

/// The state at one instant of a phase.
#[derive(Debug)]
struct Snap {
    at: Instant,
    cpu: CpuSnapshot,
    worker: Option<String>,
    ingestion: String,
    processed: Option<f64>,
    /// Events accepted and not yet stored.
    backlog: u64,
    /// JetStream messages not yet acked.
    messages: u64,
    accepted: u64,
}

/// What a phase saw: the state at both ends of its window and what happened in between.
struct Window {
    w0: Snap,
    w1: Snap,
    backlog_max: u64,
    messages_max: u64,
    stalls: Stalls,
    /// The mean rate the controller offered (adaptive phases).
    mean_offered: Option<f64>,
    summary: Summary,
    /// Seconds for the backlog to empty after the load stopped.
    drained: Option<f64>,
    /// The worker's metrics once the backlog drained.
    after_worker: Option<String>,
}

impl Bench {
    /// Runs one load phase and measures it.
    pub async fn run_phase(&mut self, spec: Spec) -> anyhow::Result<Phase> {
        eprintln!("-- {} ...", spec.name);
        let window = self.observe(&spec).await?;
        let phase = window.phase(&spec);
        eprintln!("   {}", phase.one_line());
        Ok(phase)
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
        let progress = self.probe.progress().await?;
        Ok(Snap {
            at: Instant::now(),
            cpu,
            worker: worker_text,
            ingestion: self.probe.ingestion_text().await?,
            processed,
            backlog: progress.backlog,
            messages: progress.messages,
            accepted: running.map(load::Running::accepted).unwrap_or(0),
        })
    }

    /// Waits until JetStream holds no unacked message (so no event waits, whatever a
    /// message holds); the seconds it took, or `None` on timeout.
    pub async fn drain(&self, timeout: Duration) -> anyhow::Result<Option<f64>> {
        let started = Instant::now();
        loop {
            if self.probe.backlog_messages().await? == 0 {
                return Ok(Some(started.elapsed().as_secs_f64()));
            }
            if started.elapsed() >= timeout {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Offers the phase's load, warms up an adaptive one, watches the window, then waits
    /// for the backlog to drain.
    async fn observe(&mut self, spec: &Spec) -> anyhow::Result<Window> {
        let rate = Rate::new(spec.mode.initial_rate());
        let warmup = spec.mode.warmup();
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
            let now = self.probe.progress().await?;
            ctl.step(now.stored.unwrap_or(0.0), running.accepted(), now.backlog);
        }
        let w0 = self.snap(Some(&running), watch_worker).await?;
        let (backlog_max, messages_max, stalls) = self.watch(spec, &running, &mut ctl, &w0).await?;
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
        Ok(Window {
            w0,
            w1,
            backlog_max,
            messages_max,
            stalls,
            mean_offered: ctl.mean_offered(),
            summary,
            drained,
            after_worker,
        })
    }

    /// The window of a phase: the highest backlog (events, and JetStream messages), the
    /// worker's stalls, and the rate steered when the phase is adaptive.
    async fn watch(
        &self,
        spec: &Spec,
        running: &load::Running,
        ctl: &mut Controller,
        w0: &Snap,
    ) -> anyhow::Result<(u64, u64, Stalls)> {
        let adaptive = matches!(spec.mode, Mode::Adaptive { .. });
        let (mut backlog_max, mut messages_max) = (w0.backlog, w0.messages);
        let mut stalls = Stalls::new(w0.at, w0.processed, w0.backlog);
        let end = w0.at + spec.window;
        while Instant::now() < end {
            tokio::time::sleep(TICK.min(end.saturating_duration_since(Instant::now()))).await;
            let now = self.probe.progress().await?;
            backlog_max = backlog_max.max(now.backlog);
            messages_max = messages_max.max(now.messages);
            if let Some(p) = now.stored {
                stalls.observe(p, now.backlog);
                if adaptive {
                    ctl.step(p, running.accepted(), now.backlog);
                }
            }
            ctl.record();
        }
        stalls.finish();
        Ok((backlog_max, messages_max, stalls))
    }

    /// Empties `events` and the rollups and checkpoints, so a phase starts on a fresh table.
    pub async fn truncate(&self) -> anyhow::Result<()> {
        let tables: String = self
            .probe
            .db
            .query_one(
                "SELECT string_agg(quote_ident(tablename), ', ') FROM pg_tables \
                 WHERE schemaname = 'public' AND (tablename IN ('events', 'event_keys') OR tablename LIKE 'rollup%')",
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

    /// The burst: `--burst` events offered at once in 100-event batches.
    pub async fn burst(&mut self) -> anyhow::Result<Burst> {
        let n = self.cli.burst;
        eprintln!("-- burst of {n} events ...");
        let before = self.probe.processed().await?;
        let ingestion_before = self.probe.ingestion_text().await?;
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
        let (ingestion_accepted, messages_published) =
            perevent::ingestion_deltas(&ingestion_before, &self.probe.ingestion_text().await?);
        let burst = Burst {
            events: n,
            accepted: summary.accepted,
            failed: summary.failed,
            accepted_after_s: accepted_after,
            stored_after_s: stored_after,
            stored_per_s: stored_after.map(|s| summary.accepted as f64 / s),
            cpu,
            ingestion_accepted,
            messages_published,
            per_event: None,
        };
        eprintln!(
            "   accepted in {:.2} s, stored after {}",
            accepted_after,
            stored_after.map_or("(timeout)".into(), |s| format!("{s:.2} s"))
        );
        Ok(burst)
    }

    /// A few report queries, so analytics' memory is measured doing its job.
    pub async fn analytics_queries(&self) -> anyhow::Result<Option<f64>> {
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

impl Window {
    /// The measures of the phase.
    fn phase(&self, spec: &Spec) -> Phase {
        let (w0, w1) = (&self.w0, &self.w1);
        let watch_worker = !spec.worker_paused;
        let seconds = w1.at.duration_since(w0.at).as_secs_f64().max(1e-3);
        let accepted = w1.accepted.saturating_sub(w0.accepted);
        let route = [("route", "/webhook/event")];
        let server =
            Histogram::parse(&w1.ingestion, "http_request_duration_seconds", &route).since(
                &Histogram::parse(&w0.ingestion, "http_request_duration_seconds", &route),
            );
        let e2e = self.worker_hist("worker_event_latency_seconds");
        let batch_duration = self.worker_hist("worker_batch_duration_seconds");
        let batch_size = self.worker_hist("worker_batch_size");
        let stored = match (w0.processed, w1.processed) {
            (Some(a), Some(b)) => Some((b - a).max(0.0) as u64),
            _ => None,
        };
        let tolerance = (stored.unwrap_or(0) / 50).max(2_000);
        let summary = &self.summary;
        let (ingestion_accepted, messages_published) =
            perevent::ingestion_deltas(&w0.ingestion, &w1.ingestion);
        Phase {
            name: spec.name.clone(),
            batch: spec.batch,
            concurrency: spec.concurrency,
            mode: spec.mode.describe(),
            offered_per_s: match spec.mode {
                Mode::Unlimited => None,
                Mode::Fixed(r) => Some(r),
                Mode::Adaptive { .. } => self.mean_offered,
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
            backlog_max: self.backlog_max.max(w1.backlog),
            backlog_messages_max: self.messages_max.max(w1.messages),
            backlog_stable: watch_worker
                .then_some(w1.backlog <= w0.backlog.saturating_add(tolerance)),
            e2e_p50_s: e2e.as_ref().and_then(|h| h.quantile(0.5)),
            e2e_p99_s: e2e.as_ref().and_then(|h| h.quantile(0.99)),
            e2e_buckets: e2e.as_ref().map(|h| h.buckets.clone()).unwrap_or_default(),
            worker_batch_p99_s: batch_duration.as_ref().and_then(|h| h.quantile(0.99)),
            worker_mean_batch: batch_size.as_ref().and_then(Histogram::mean),
            drained_after_s: self.drained,
            worker_stalls: self.stalls.count,
            worker_stalled_s: self.stalls.total,
            worker_longest_stall_s: self.stalls.longest,
            cpu: CpuUse::between(&w0.cpu, &w1.cpu),
            ingestion_accepted,
            messages_published,
            per_event: None,
            notes: self.notes(spec, accepted as f64 / seconds),
        }
    }

    /// A worker histogram over the phase (window start to drained), when the worker ran.
    fn worker_hist(&self, name: &str) -> Option<Histogram> {
        match (&self.w0.worker, &self.after_worker) {
            (Some(a), Some(b)) => {
                Some(Histogram::parse(b, name, &[]).since(&Histogram::parse(a, name, &[])))
            }
            _ => None,
        }
    }

    /// What went wrong in the phase: a fixed rate not met, failed or rejected events, a
    /// backlog that did not drain.
    fn notes(&self, spec: &Spec, accepted_per_s: f64) -> Vec<String> {
        let mut notes = Vec::new();
        if let Mode::Fixed(r) = spec.mode
            && accepted_per_s < 0.95 * r
        {
            notes.push(format!(
                "offered {r:.0}/s but only {accepted_per_s:.0}/s were accepted"
            ));
        }
        let summary = &self.summary;
        if summary.failed > 0 || summary.rejected > 0 {
            notes.push(format!(
                "{} events failed, {} rejected, {} retries",
                summary.failed, summary.rejected, summary.retries
            ));
        }
        if !spec.worker_paused && self.drained.is_none() {
            notes.push("backlog did not drain in time after the phase".into());
        }
        notes
    }
}

impl Bench {
    /// The raw ceilings of the parts (binary COPY, JetStream publish) with the same payloads.
    pub async fn ceilings(&mut self) -> anyhow::Result<Ceilings> {
        let events = self.cli.ceiling_events;
        eprintln!("-- ceilings: {events} events ...");
        let seed = self.next_seed();
        let payloads = ceilings::payloads(events.max(1), seed, "benchraw")?;
        let rows = Arc::new(ceilings::rows(&payloads)?);
        let s0 = self.watched.snapshot();
        let copy =
            ceilings::copy_ceiling(&self.pg.url("events"), Arc::clone(&rows), 1000, 3).await?;
        let copy_cpu = CpuUse::between(&s0, &self.watched.snapshot());
        let s0 = self.watched.snapshot();
        let js = ceilings::jetstream_ceiling(
            &self.nats.first_url(),
            &payloads,
            4096,
            self.cli.nats_nodes,
        )
        .await?;
        let jetstream_cpu = CpuUse::between(&s0, &self.watched.snapshot());
        let measured = Ceilings {
            events: payloads.json.len(),
            avg_event_bytes: payloads.avg_bytes(),
            copy_rows_per_s: rows.len() as f64 / copy.as_secs_f64(),
            copy_cpu,
            jetstream_msgs_per_s: payloads.json.len() as f64 / js.as_secs_f64(),
            jetstream_cpu,
            copy_per_row: None,
            jetstream_per_message: None,
        };
        eprintln!(
            "   COPY {:.0} rows/s, JetStream {:.0} msgs/s",
            measured.copy_rows_per_s, measured.jetstream_msgs_per_s
        );
        Ok(measured)
    }

    /// Every accepted event is stored exactly once: the rows in `events` against what the
    /// worker reports stored since the table was truncated. The text, and whether they match.
    pub async fn consistency(&self, processed_at_truncate: f64) -> anyhow::Result<(String, bool)> {
        let stored_rows = self.probe.rows().await?;
        let expected = self.probe.processed().await? - processed_at_truncate;
        let mut text = format!(
            "{stored_rows} rows in events; the worker reports {expected:.0} stored since the truncation"
        );
        let consistent = stored_rows as f64 == expected;
        if !consistent {
            text.push_str(" (MISMATCH)");
        }
        Ok((text, consistent))
    }
}
