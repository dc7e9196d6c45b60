//! Observing the running platform: the services' `/metrics`, the backlog (in events, and
//! the JetStream messages of the worker's consumer), the row count.

use anyhow::Context;
use std::time::Duration;

#[derive(Debug)]
pub struct Probe {
    http: reqwest::Client,
    worker_metrics: String,
    ingestion_metrics: String,
    stream: async_nats::jetstream::stream::Stream,
    consumer: String,
    pub db: tokio_postgres::Client,
    /// While the worker is stopped (SIGSTOP, its `/metrics` does not answer): the events it
    /// had stored or dead-lettered when it was stopped.
    pub worker_paused_at: Option<f64>,
}

/// Ingestion's counter of events answered 202.
pub const INGEST_ACCEPTED: &str = "ingestion_events_accepted_total";
/// Ingestion's counter of JetStream messages acknowledged (absent before coalescing).
pub const INGEST_MESSAGES: &str = "ingestion_messages_published_total";

/// The pipeline's progress at one instant.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Events the worker stored (`worker_events_processed_total`); `None` while it is paused.
    pub stored: Option<f64>,
    /// Events accepted and not yet stored or dead-lettered.
    pub backlog: u64,
    /// JetStream messages of the worker's consumer not yet acked.
    pub messages: u64,
}

/// The backlog in events: accepted by ingestion (202) minus stored or dead-lettered by the
/// worker, counted from their metrics, which is exact for the bench's load (no duplicate
/// events). 0 when JetStream holds no unacked message, whatever the counters say (an event
/// accepted twice after a retry is stored once).
pub fn events_backlog(messages: u64, accepted: f64, settled: f64) -> u64 {
    if messages == 0 {
        0
    } else {
        (accepted - settled).max(0.0).round() as u64
    }
}

impl Probe {
    pub async fn new(
        worker_base: &str,
        ingestion_base: &str,
        nats_url: &str,
        db: tokio_postgres::Client,
    ) -> anyhow::Result<Probe> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let client = async_nats::connect(nats_url).await?;
        let js = async_nats::jetstream::new(client);
        let name = std::env::var("NATS_STREAM").unwrap_or_else(|_| "EVENTS".into());
        let stream = js
            .get_stream(&name)
            .await
            .with_context(|| format!("stream {name}"))?;
        Ok(Probe {
            http,
            worker_metrics: format!("{worker_base}/metrics"),
            ingestion_metrics: format!("{ingestion_base}/metrics"),
            stream,
            consumer: std::env::var("NATS_CONSUMER").unwrap_or_else(|_| "events-worker".into()),
            db,
            worker_paused_at: None,
        })
    }

    async fn text(&self, url: &str) -> anyhow::Result<String> {
        Ok(self
            .http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?)
    }

    /// What the events stream holds now: bytes and messages.
    pub async fn stream_size(&self) -> anyhow::Result<(u64, u64)> {
        let mut stream = self.stream.clone();
        let info = stream.info().await?;
        Ok((info.state.bytes, info.state.messages))
    }

    pub async fn worker_text(&self) -> anyhow::Result<String> {
        self.text(&self.worker_metrics).await
    }

    pub async fn ingestion_text(&self) -> anyhow::Result<String> {
        self.text(&self.ingestion_metrics).await
    }

    /// Events the worker stored (new rows committed) since it started.
    pub async fn processed(&self) -> anyhow::Result<f64> {
        let text = self.worker_text().await?;
        Ok(crate::prom::sum(
            &text,
            "worker_events_processed_total",
            &[],
        ))
    }

    /// Events the worker dead-lettered since it started, for any reason.
    pub async fn dead_lettered(&self) -> anyhow::Result<f64> {
        let text = self.worker_text().await?;
        Ok(crate::prom::sum(&text, "worker_events_dlq_total", &[]))
    }

    /// Events stored or dead-lettered by the worker since it started.
    pub async fn settled(&self) -> anyhow::Result<f64> {
        let text = self.worker_text().await?;
        Ok(settled_in(&text))
    }

    /// JetStream messages not yet acked: undelivered plus delivered-but-unacked. A message
    /// holds one event or many (`batch/1`), so this is the backlog in events only for
    /// binaries older than coalescing; 0 means nothing waits.
    pub async fn backlog_messages(&self) -> anyhow::Result<u64> {
        let info = self.stream.consumer_info(&self.consumer).await?;
        Ok(info.num_pending + info.num_ack_pending as u64)
    }

    /// Events accepted and not yet stored: see [`events_backlog`].
    pub async fn backlog(&self) -> anyhow::Result<u64> {
        Ok(self.progress().await?.backlog)
    }

    /// Stored events and the backlog now (the worker's metrics are not read while it is
    /// paused).
    pub async fn progress(&self) -> anyhow::Result<Progress> {
        let messages = self.backlog_messages().await?;
        let accepted = crate::prom::sum(&self.ingestion_text().await?, INGEST_ACCEPTED, &[]);
        let (stored, settled) = match self.worker_paused_at {
            Some(settled) => (None, settled),
            None => {
                let text = self.worker_text().await?;
                let stored = crate::prom::sum(&text, "worker_events_processed_total", &[]);
                (Some(stored), settled_in(&text))
            }
        };
        Ok(Progress {
            stored,
            backlog: events_backlog(messages, accepted, settled),
            messages,
        })
    }

    pub async fn rows(&self) -> anyhow::Result<i64> {
        Ok(self
            .db
            .query_one("SELECT count(*) FROM events", &[])
            .await?
            .get(0))
    }

    pub async fn get(&self, url: &str) -> anyhow::Result<reqwest::StatusCode> {
        Ok(self.http.get(url).send().await?.status())
    }
}

/// Events stored or dead-lettered, from the worker's metrics text.
fn settled_in(text: &str) -> f64 {
    crate::prom::sum(text, "worker_events_processed_total", &[])
        + crate::prom::sum(text, "worker_events_dlq_total", &[])
}

#[cfg(test)]
mod tests {
    use super::events_backlog;

    #[test]
    fn the_backlog_counts_events_not_messages() {
        // 3 batch/1 messages holding 250 events, 40 of them stored.
        assert_eq!(events_backlog(3, 10_250.0, 10_040.0), 210);
        // Nothing in JetStream: nothing waits, even if a retried event was counted twice.
        assert_eq!(events_backlog(0, 10_250.0, 10_200.0), 0);
        // The worker's counter read after ingestion's: never negative.
        assert_eq!(events_backlog(1, 100.0, 130.0), 0);
    }
}
