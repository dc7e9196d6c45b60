//! A private platform per test: its own nats-server, PostgreSQL cluster and database,
//! stream and consumer names; the real services started in this process from their
//! typed configurations, or the real `worker` binary when a test must kill or signal it.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let p = testkit::Platform::builder()
//!     .worker_binary(env!("CARGO_MANIFEST_DIR")) // env!("CARGO_BIN_EXE_worker") in a test
//!     .start()
//!     .await?;
//! let ingestion = p.start_ingestion(&[]).await?;
//! let worker = p.start_worker(&[]).await?;
//! p.post(ingestion.port, &serde_json::Value::Array(testkit::events("a", 0..10))).await?;
//! p.wait_rows(10).await?;
//! # Ok(()) }
//! ```

mod database;
mod process;
mod service;
mod stream;

pub use database::rollups;
pub use process::WorkerLog;
pub use service::{Service, parse};
pub use stream::DeadLetter;

use crate::{NatsLogin, NatsServer, Postgres, eventually};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// How long a platform test waits for something that should happen soon.
pub const WAIT: Duration = Duration::from_secs(60);

/// Names that keep this test's streams, subjects and consumer apart.
#[derive(Debug, Clone)]
pub struct Names {
    /// The events stream.
    pub stream: String,
    /// The subject prefix of the events stream (`<name>.events`).
    pub prefix: String,
    /// The dead-letter stream.
    pub dlq: String,
    /// The worker's durable consumer.
    pub consumer: String,
}

impl Names {
    fn new() -> Self {
        let n = crate::unique_name();
        Names {
            stream: format!("{}_EVENTS", n.to_uppercase()),
            prefix: format!("{n}.events"),
            dlq: format!("{}_EVENTS_DLQ", n.to_uppercase()),
            consumer: format!("{n}-worker"),
        }
    }
}

/// The three services of a platform, in this process; dropped, they stop.
#[derive(Debug)]
pub struct Services {
    /// The webhook.
    pub ingestion: Service,
    /// The consumer writing to PostgreSQL.
    pub worker: Service,
    /// The reports.
    pub analytics: Service,
}

/// How a [`Platform`] is started; see [`Platform::builder`].
#[derive(Debug, Default)]
pub struct PlatformBuilder {
    logins: Option<Vec<NatsLogin>>,
    worker_binary: Option<PathBuf>,
}

impl PlatformBuilder {
    /// A nats-server that admits only these logins (see
    /// [`NatsServer::start_with_logins`]); the services get the first password login.
    pub fn nats_logins(mut self, logins: &[NatsLogin]) -> Self {
        self.logins = Some(logins.to_vec());
        self
    }

    /// The `worker` binary, for [`Platform::start_worker_process`] and
    /// [`Platform::rebuild_rollups`]: `env!("CARGO_BIN_EXE_worker")` in the worker's tests.
    pub fn worker_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.worker_binary = Some(path.into());
        self
    }

    /// Starts the servers and creates the database `events`.
    pub async fn start(self) -> anyhow::Result<Platform> {
        service_kit::telemetry::init_for_tests();
        let nats = async {
            match &self.logins {
                Some(logins) => NatsServer::start_with_logins(logins).await,
                None => NatsServer::start().await,
            }
        };
        let (nats, pg) = tokio::try_join!(nats, Postgres::start())?;
        let database_url = pg.create_database("events").await?;
        Ok(Platform {
            nats,
            pg,
            database_url,
            names: Names::new(),
            http: reqwest::Client::new(),
            worker_binary: self.worker_binary,
        })
    }
}

/// A private nats-server and PostgreSQL with the database `events`, and the helpers the
/// suites share. Services started from it run until stopped or dropped.
#[derive(Debug)]
pub struct Platform {
    /// The nats-server (kill and restart it to simulate outages).
    pub nats: NatsServer,
    /// The PostgreSQL cluster.
    pub pg: Postgres,
    /// The URL of the database `events`, as the services get it.
    pub database_url: String,
    /// This test's stream, subject and consumer names.
    pub names: Names,
    /// A client for the services' HTTP APIs.
    pub http: reqwest::Client,
    worker_binary: Option<PathBuf>,
}

impl Platform {
    /// A builder for a platform with other than the default servers.
    pub fn builder() -> PlatformBuilder {
        PlatformBuilder::default()
    }

    /// A platform with an open nats-server and no worker binary.
    pub async fn start() -> anyhow::Result<Platform> {
        Platform::builder().start().await
    }

    pub(crate) fn stream_args(&self) -> Vec<String> {
        [
            "--nats-url",
            &self.nats.url(),
            "--nats-stream",
            &self.names.stream,
            "--nats-subject-prefix",
            &self.names.prefix,
        ]
        .map(String::from)
        .to_vec()
    }

    /// The worker's settings as flags, plus `extra` flags.
    pub fn worker_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args = vec![
            "worker".to_owned(),
            "--host=127.0.0.1".into(),
            "--port=0".into(),
        ];
        args.extend(self.stream_args());
        args.extend(
            [
                "--database-url",
                &self.database_url,
                "--nats-consumer",
                &self.names.consumer,
                "--nats-dlq-stream",
                &self.names.dlq,
            ]
            .map(String::from),
        );
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// The real worker, in this process, with `extra` flags.
    pub async fn start_worker(&self, extra: &[&str]) -> anyhow::Result<Service> {
        Service::worker(parse(self.worker_args(extra))?).await
    }

    /// The real ingestion service, in this process, with `extra` flags; ready when this
    /// returns. The per-producer rate limits are off unless `extra` sets them: these
    /// tests post as fast as one client can, and the limits have their own tests.
    pub async fn start_ingestion(&self, extra: &[&str]) -> anyhow::Result<Service> {
        let mut args = vec![
            "ingestion".to_owned(),
            "--host=127.0.0.1".into(),
            "--port=0".into(),
            "--rate-limit-events-per-sec=0".into(),
            "--rate-limit-bytes-per-sec=0".into(),
        ];
        args.extend(self.stream_args());
        args.extend(extra.iter().map(|s| s.to_string()));
        let service = Service::ingestion(parse(args)?).await?;
        self.wait_ready(service.port).await?;
        Ok(service)
    }

    /// The real analytics service, in this process, on the database `events`, with
    /// `extra` flags (its defaults otherwise, the rate limit included).
    pub async fn start_analytics(&self, extra: &[&str]) -> anyhow::Result<Service> {
        let mut args = vec![
            "analytics".to_owned(),
            "--host=127.0.0.1".into(),
            "--port=0".into(),
            "--database-url".into(),
            self.database_url.clone(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Service::analytics(parse(args)?).await
    }

    /// Ingestion, the worker and analytics, each with its `extra` flags (ingestion with
    /// none); ingestion is ready when this returns.
    pub async fn start_services(
        &self,
        worker: &[&str],
        analytics: &[&str],
    ) -> anyhow::Result<Services> {
        Ok(Services {
            ingestion: self.start_ingestion(&[]).await?,
            worker: self.start_worker(worker).await?,
            analytics: self.start_analytics(analytics).await?,
        })
    }

    /// Waits until the service on `port` answers its readiness probe with success.
    pub async fn wait_ready(&self, port: u16) -> anyhow::Result<()> {
        let url = format!("http://127.0.0.1:{port}/health/readiness");
        eventually("readiness", WAIT, || async {
            let r = self.http.get(&url).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await
    }

    /// POSTs events to ingestion; returns the status and the JSON body (`null` if none).
    pub async fn post(&self, port: u16, events: &Value) -> anyhow::Result<(u16, Value)> {
        let r = self
            .http
            .post(format!("http://127.0.0.1:{port}/webhook/event"))
            .json(events)
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }
}
