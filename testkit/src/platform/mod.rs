//! A private platform per test: its own nats-server, PostgreSQL cluster (plain, or
//! TLS-only for every role but `postgres`) and database (owned by `postgres`, or by a
//! non-superuser owner as on a managed PostgreSQL), stream and consumer names; the real
//! services started in this process from their typed configurations, or the real
//! `worker` binary when a test must kill or signal it or run an operator's command.
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
mod reports;
mod service;
mod stream;

pub use database::rollups;
pub use process::WorkerLog;
pub use reports::EVERY_REPORT;
pub use service::{Service, parse};
pub use stream::DeadLetter;

use crate::{NatsLogin, NatsServer, Postgres, SelfSigned, eventually};
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
    nats_nodes: usize,
    tls: bool,
    owner: Option<String>,
    owner_password: Option<String>,
    require_passwords: bool,
}

impl PlatformBuilder {
    /// A nats-server that admits only these logins (see
    /// [`NatsServer::start_with_logins`]); the services get the first password login.
    pub fn nats_logins(mut self, logins: &[NatsLogin]) -> Self {
        self.logins = Some(logins.to_vec());
        self
    }

    /// `nodes` nats-servers in one cluster instead of one (see
    /// [`NatsServer::start_cluster`]), the streams at `nodes` replicas: [`Platform::nats`]
    /// is the first, [`Platform::nats_peers`] the others, and the services get them all.
    pub fn nats_cluster(mut self, nodes: usize) -> Self {
        self.nats_nodes = nodes;
        self
    }

    /// The `worker` binary, for [`Platform::start_worker_process`] and
    /// [`Platform::rebuild_rollups`]: `env!("CARGO_BIN_EXE_worker")` in the worker's tests.
    pub fn worker_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.worker_binary = Some(path.into());
        self
    }

    /// PostgreSQL serving TLS with a new self-signed certificate ([`Platform::tls`]) and
    /// refusing plain text to every role but `postgres` (see
    /// [`Postgres::start_with_tls`]).
    pub fn postgres_tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// The database `events` owned by a new login `name` that may create roles but is no
    /// superuser, like a managed PostgreSQL's admin user: the one `worker migrate` runs as
    /// in a deployment. Without it `postgres` owns the database.
    pub fn database_owner(mut self, name: &str) -> Self {
        self.owner = Some(name.to_owned());
        self
    }

    /// The password of the [`database_owner`](Self::database_owner).
    pub fn database_owner_password(mut self, password: &str) -> Self {
        self.owner_password = Some(password.to_owned());
        self
    }

    /// Every role but `postgres` must give its password (see
    /// [`Postgres::require_passwords`]).
    pub fn require_passwords(mut self) -> Self {
        self.require_passwords = true;
        self
    }

    /// Starts the servers and creates the database `events`.
    pub async fn start(self) -> anyhow::Result<Platform> {
        service_kit::telemetry::init_for_tests();
        anyhow::ensure!(
            self.nats_nodes <= 1 || self.logins.is_none(),
            "a NATS cluster with logins is not supported"
        );
        let nats = async {
            match &self.logins {
                Some(logins) => Ok(vec![NatsServer::start_with_logins(logins).await?]),
                None if self.nats_nodes > 1 => NatsServer::start_cluster(self.nats_nodes).await,
                None => Ok(vec![NatsServer::start().await?]),
            }
        };
        let tls = self.tls.then(SelfSigned::generate).transpose()?;
        let pg = async {
            match &tls {
                Some(cert) => Postgres::start_with_tls(&cert.cert(), &cert.key()).await,
                None => Postgres::start().await,
            }
        };
        let (mut nats, pg) = tokio::try_join!(nats, pg)?;
        let nats_peers = nats.split_off(1);
        let nats = nats.remove(0);
        let database_url = match &self.owner {
            Some(owner) => {
                pg.create_owned_database("events", owner, self.owner_password.as_deref())
                    .await?
            }
            None => {
                anyhow::ensure!(
                    self.owner_password.is_none(),
                    "a database owner's password without a database owner"
                );
                pg.create_database("events").await?
            }
        };
        if self.require_passwords {
            pg.require_passwords().await?;
        }
        Ok(Platform {
            nats,
            nats_peers,
            pg,
            tls,
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
    /// The other members of a NATS cluster ([`PlatformBuilder::nats_cluster`]); empty
    /// with one server.
    pub nats_peers: Vec<NatsServer>,
    /// The PostgreSQL cluster.
    pub pg: Postgres,
    /// PostgreSQL's certificate, also the root to trust, when it serves TLS.
    pub tls: Option<SelfSigned>,
    /// The URL of the database `events` as `postgres` (plain text even with TLS), as the
    /// services get it unless told another.
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

    /// The NATS URL the services get: every server's, comma-separated.
    pub fn nats_url(&self) -> String {
        let urls: Vec<String> = std::iter::once(&self.nats)
            .chain(&self.nats_peers)
            .map(NatsServer::url)
            .collect();
        urls.join(",")
    }

    /// The streams' replicas: one per NATS server.
    pub(crate) fn stream_replicas(&self) -> String {
        (1 + self.nats_peers.len()).to_string()
    }

    pub(crate) fn stream_args(&self) -> Vec<String> {
        [
            "--nats-url",
            &self.nats_url(),
            "--nats-stream",
            &self.names.stream,
            "--nats-subject-prefix",
            &self.names.prefix,
            "--nats-stream-replicas",
            &self.stream_replicas(),
        ]
        .map(String::from)
        .to_vec()
    }

    /// The worker's settings as flags, plus `extra` flags.
    pub fn worker_args(&self, extra: &[&str]) -> Vec<String> {
        self.worker_args_on(&self.database_url, extra)
    }

    /// As [`Platform::worker_args`], reaching PostgreSQL by `database_url` (another
    /// login, TLS settings).
    pub fn worker_args_on(&self, database_url: &str, extra: &[&str]) -> Vec<String> {
        let mut args = vec![
            "worker".to_owned(),
            "--host=127.0.0.1".into(),
            "--port=0".into(),
        ];
        args.extend(self.stream_args());
        args.extend(
            [
                "--database-url",
                database_url,
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

    /// The real worker, in this process, reaching PostgreSQL by `database_url`.
    pub async fn start_worker_on(
        &self,
        database_url: &str,
        extra: &[&str],
    ) -> anyhow::Result<Service> {
        Service::worker(parse(self.worker_args_on(database_url, extra))?).await
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
        self.start_analytics_on(&self.database_url, extra).await
    }

    /// The real analytics service, in this process, reaching PostgreSQL by
    /// `database_url` (another login, TLS settings).
    pub async fn start_analytics_on(
        &self,
        database_url: &str,
        extra: &[&str],
    ) -> anyhow::Result<Service> {
        let mut args = vec![
            "analytics".to_owned(),
            "--host=127.0.0.1".into(),
            "--port=0".into(),
            "--database-url".into(),
            database_url.to_owned(),
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

    /// The value of one series (`name`, or `name{labels}` as exposed) on the `/metrics`
    /// page of the service on `port`; `None` while the page or the series is absent.
    pub async fn metric(&self, port: u16, series: &str) -> Option<f64> {
        let url = format!("http://127.0.0.1:{port}/metrics");
        let text = self.http.get(url).send().await.ok()?.text().await.ok()?;
        metric_value(&text, series)
    }

    /// The readiness probe's answer: its status and JSON body; `None` while it gives
    /// none.
    pub async fn readiness(&self, port: u16) -> Option<(u16, Value)> {
        let url = format!("http://127.0.0.1:{port}/health/readiness");
        let r = self.http.get(url).send().await.ok()?;
        Some((r.status().as_u16(), r.json().await.ok()?))
    }

    /// Waits until the service on `port` is unready (503) with its check `check` failing
    /// for a reason containing `reason`; returns the reason.
    pub async fn wait_not_ready(
        &self,
        port: u16,
        check: &str,
        reason: &str,
    ) -> anyhow::Result<String> {
        eventually(&format!("{check} not ready: {reason}"), WAIT, || async {
            let (status, body) = self.readiness(port).await?;
            let found = body["checks"]
                .as_array()?
                .iter()
                .find(|c| c["name"] == check)?;
            let why = found["reason"].as_str().unwrap_or_default();
            (status == 503 && found["ready"] == false && why.contains(reason))
                .then(|| why.to_owned())
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

/// The value of one series (`name`, or `name{labels}` exactly as exposed) in a Prometheus
/// text exposition.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::metric_value;

    #[test]
    fn a_series_value_is_read_by_its_exact_name() {
        let text = "# TYPE a_total counter\na_total_more 7\na_total 3\nb{x=\"1\"} +Inf\n";
        assert_eq!(metric_value(text, "a_total"), Some(3.0));
        assert_eq!(metric_value(text, "b{x=\"1\"}"), Some(f64::INFINITY));
        assert_eq!(metric_value(text, "c"), None);
    }
}
