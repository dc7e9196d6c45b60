//! The whole pipeline (ingestion -> JetStream -> worker -> PostgreSQL -> analytics) on
//! private servers, for the report tests.

use std::time::Duration;
use testkit::{NatsServer, Postgres};
use tokio::task::JoinHandle;

/// The running services; the tasks run until aborted.
pub struct Pipeline {
    /// Held so that the server runs as long as the pipeline.
    pub _nats: NatsServer,
    pub pg: Postgres,
    pub ingestion: u16,
    pub analytics: u16,
    pub http: reqwest::Client,
    pub tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl Pipeline {
    /// Starts every service on an empty database. `api_key`: the analytics bearer token;
    /// `compact_interval_ms`: the worker's compaction interval (`None`: its default).
    pub async fn start(
        api_key: Option<&str>,
        compact_interval_ms: Option<u64>,
    ) -> anyhow::Result<Pipeline> {
        service_kit::telemetry::init_for_tests();
        let (nats, pg) = tokio::try_join!(NatsServer::start(), Postgres::start())?;
        let db = pg.create_database("events").await?;
        let name = testkit::unique_name();
        let stream = [
            "--nats-url".to_owned(),
            nats.url(),
            "--nats-stream".into(),
            format!("{}_EVENTS", name.to_uppercase()),
            "--nats-subject-prefix".into(),
            format!("{name}.events"),
        ];
        let mut tasks = Vec::new();

        let mut args = vec![
            "ingestion".to_owned(),
            "--host=127.0.0.1".into(),
            "--port=0".into(),
        ];
        args.extend(stream.clone());
        let ingestion =
            ingestion::build(<ingestion::Config as clap::Parser>::try_parse_from(args)?).await?;
        let ingestion_port = ingestion.port();
        tasks.push(tokio::spawn(
            ingestion.run_until_stopped(std::future::pending(), Duration::from_secs(1)),
        ));

        let mut args = vec![
            "worker".to_owned(),
            "--host=127.0.0.1".into(),
            "--port=0".into(),
            "--database-url".into(),
            db.clone(),
            "--nats-consumer".into(),
            format!("{name}-w"),
            "--nats-dlq-stream".into(),
            format!("{}_DLQ", name.to_uppercase()),
            "--nats-batch-size".into(),
            "64".into(),
        ];
        if let Some(ms) = compact_interval_ms {
            args.push(format!("--compact-interval-ms={ms}"));
        }
        args.extend(stream);
        let worker = worker::build(<worker::Config as clap::Parser>::try_parse_from(args)?).await?;
        tasks.push(tokio::spawn(
            worker.run_until_stopped(std::future::pending(), Duration::from_secs(1)),
        ));

        let mut args = vec![
            "analytics".to_owned(),
            "--host=127.0.0.1".into(),
            "--port=0".into(),
            "--database-url".into(),
            db,
            // The report tests ask as fast as they can from one client; the limit has its
            // own test (tests/ratelimit.rs).
            "--analytics-rate-limit-per-sec=0".into(),
        ];
        if let Some(key) = api_key {
            args.extend(["--analytics-api-key".to_owned(), key.to_owned()]);
        }
        let analytics =
            analytics::build(<analytics::Config as clap::Parser>::try_parse_from(args)?).await?;
        let analytics_port = analytics.port();
        tasks.push(tokio::spawn(
            analytics.run_until_stopped(std::future::pending(), Duration::from_secs(1)),
        ));

        Ok(Pipeline {
            _nats: nats,
            pg,
            ingestion: ingestion_port,
            analytics: analytics_port,
            http: reqwest::Client::new(),
            tasks,
        })
    }
}
