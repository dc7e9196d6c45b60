//! Observing the running platform: the services' `/metrics`, the JetStream backlog of the
//! worker's consumer, the row count.

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

    /// Events in JetStream not yet stored: undelivered plus delivered-but-unacked.
    pub async fn backlog(&self) -> anyhow::Result<u64> {
        let info = self.stream.consumer_info(&self.consumer).await?;
        Ok(info.num_pending + info.num_ack_pending as u64)
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
