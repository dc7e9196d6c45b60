//! Ingestion alone (the worker paused), then the worker alone draining the backlog it left.

use crate::control::{DrainEnd, DrainWindow};
use crate::disk::StreamHeld;
use crate::phases::{Mode, Spec};
use crate::procstat::CpuUse;
use crate::results::{Drain, INGEST_BATCH, Phase};
use crate::setup::Bench;
use std::time::{Duration, Instant};

/// How long the worker may store nothing, events waiting, before its window ends.
const PAUSE: Duration = Duration::from_secs(2);

impl Bench {
    /// Ingestion alone (worker paused), single events then 100-event batches; then the
    /// worker alone, draining the backlog they left.
    pub async fn ingestion_then_worker_alone(
        &mut self,
    ) -> anyhow::Result<(Phase, Phase, Option<Drain>, Option<StreamHeld>)> {
        // Nothing is offered meanwhile, so this is what the worker holds when it stops.
        let settled = self.probe.settled().await?;
        let processed_before = self.probe.processed().await?;
        self.worker.signal("STOP")?;
        self.probe.worker_paused_at = Some(settled);
        let paused = self.ingestion_alone().await;
        let backlog = self.probe.backlog().await.unwrap_or(0);
        let held = self
            .probe
            .stream_size()
            .await
            .ok()
            .map(|(bytes, messages)| StreamHeld {
                bytes,
                messages,
                events: backlog,
            });
        // Resume the worker whatever happened, before giving up on an error.
        self.probe.worker_paused_at = None;
        self.worker.signal("CONT")?;
        let (single, batch) = paused?;
        let drain = self.worker_alone(processed_before, backlog).await?;
        Ok((single, batch, drain, held))
    }

    async fn ingestion_alone(&mut self) -> anyhow::Result<(Phase, Phase)> {
        let window = Duration::from_secs(self.cli.ingest_duration);
        let single = self
            .run_phase(Spec {
                name: "ingestion alone, single-event requests".into(),
                batch: 1,
                concurrency: self.cli.single_concurrency,
                mode: Mode::Unlimited,
                window,
                worker_paused: true,
            })
            .await?;
        let batch = self
            .run_phase(Spec {
                name: INGEST_BATCH.into(),
                batch: 100,
                concurrency: self.cli.batch_concurrency,
                mode: Mode::Unlimited,
                window,
                worker_paused: true,
            })
            .await?;
        Ok((single, batch))
    }

    /// The worker draining `backlog` events alone. Its rate is taken up to 99 % of the
    /// backlog stored, or up to the last progress before 2 s with nothing stored (the pull
    /// the worker had in flight when paused is only redelivered after `ack_wait`; with
    /// coalescing it can hold much of the backlog). `None` when nothing was stored within
    /// the drain timeout, or nothing waited.
    async fn worker_alone(
        &mut self,
        processed_before: f64,
        backlog: u64,
    ) -> anyhow::Result<Option<Drain>> {
        eprintln!("-- worker alone: draining {backlog} events ...");
        if backlog == 0 {
            return Ok(None);
        }
        let timeout = self.cli.drain_timeout();
        let s0 = self.watched.snapshot();
        let started = Instant::now();
        let mut window = DrainWindow::new(started, processed_before, backlog, PAUSE);
        let mut s1 = s0.clone();
        let ended = loop {
            let stored = self.probe.processed().await?;
            let (end, progressed) = window.observe(Instant::now(), stored);
            if progressed {
                s1 = self.watched.snapshot();
            }
            if let Some(end) = end {
                break end;
            }
            if started.elapsed() >= timeout {
                break DrainEnd::Timeout;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let drained = self
            .drain(timeout.saturating_sub(started.elapsed()))
            .await?
            .map(|_| started.elapsed().as_secs_f64());
        let (seconds, stored) = window.measured();
        if stored == 0 {
            return Ok(None);
        }
        let drain = Drain {
            events: backlog,
            seconds,
            stored,
            events_per_s: stored as f64 / seconds.max(1e-3),
            ended,
            all_stored_s: drained,
            cpu: CpuUse::between(&s0, &s1),
            per_event: None,
        };
        eprintln!(
            "   stored {} of {} events in {:.1} s ({:?}), all after {}",
            drain.stored,
            drain.events,
            drain.seconds,
            drain.ended,
            drain
                .all_stored_s
                .map_or("(timeout)".into(), |s| format!("{s:.1} s"))
        );
        Ok(Some(drain))
    }
}
