//! A private platform per test: nats-server, a PostgreSQL cluster (plain, or TLS-only
//! for every role but the test's own `postgres`), a database `events` owned by
//! `events_owner` (a login that may create roles but is no superuser, like a managed
//! PostgreSQL's admin user), and the real services started in this process.

use serde_json::Value;
use std::process::{Output, Stdio};
use std::time::Duration;
use testkit::{NatsServer, Postgres, SelfSigned, eventually};
use tokio::sync::oneshot;

pub const WAIT: Duration = Duration::from_secs(60);

/// The owner of the schema: `worker migrate` runs as it.
pub const OWNER: &str = "events_owner";
/// The login users `deploy/postgres/login-users.sql` creates by default.
pub const WORKER_USER: &str = "events_worker";
pub const ANALYTICS_USER: &str = "events_analytics";

/// A service running in this process until `stop`.
#[derive(Debug)]
pub struct Service {
    pub port: u16,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Service {
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await?
    }
}

fn spawn<F>(port: u16, run: impl FnOnce(oneshot::Receiver<()>) -> F) -> Service
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    Service {
        port,
        stop: Some(tx),
        task: tokio::spawn(run(rx)),
    }
}

#[derive(Debug)]
pub struct Platform {
    pub nats: NatsServer,
    pub pg: Postgres,
    /// The server's certificate, which is also the root to trust (TLS platforms only).
    pub cert: Option<SelfSigned>,
    name: String,
    pub http: reqwest::Client,
}

impl Platform {
    pub async fn start() -> anyhow::Result<Platform> {
        service_kit::telemetry::init_for_tests();
        let (nats, pg) = tokio::try_join!(NatsServer::start(), Postgres::start())?;
        Platform::with(nats, pg, None).await
    }

    /// PostgreSQL serves TLS with a self-signed certificate and refuses plain-text
    /// connections of every role but `postgres` (`hostssl`).
    pub async fn start_with_tls() -> anyhow::Result<Platform> {
        service_kit::telemetry::init_for_tests();
        let cert = SelfSigned::generate()?;
        let (crt, key) = (cert.cert(), cert.key());
        let (nats, pg) =
            tokio::try_join!(NatsServer::start(), Postgres::start_with_tls(&crt, &key))?;
        Platform::with(nats, pg, Some(cert)).await
    }

    async fn with(
        nats: NatsServer,
        pg: Postgres,
        cert: Option<SelfSigned>,
    ) -> anyhow::Result<Platform> {
        let admin = pg.connect("postgres").await?;
        // Two statements: CREATE DATABASE refuses to run in the implicit transaction of
        // a multi-statement string.
        admin
            .batch_execute(&format!("CREATE ROLE {OWNER} LOGIN CREATEROLE"))
            .await?;
        admin
            .batch_execute(&format!("CREATE DATABASE events OWNER {OWNER}"))
            .await?;
        Ok(Platform {
            nats,
            pg,
            cert,
            name: testkit::unique_name(),
            http: reqwest::Client::new(),
        })
    }

    /// `postgres://<user>@127.0.0.1:<port>/events` and `query` (`?sslmode=...`).
    pub fn url(&self, user: &str, query: &str) -> String {
        format!(
            "postgres://{user}@127.0.0.1:{}/events{query}",
            self.pg.port()
        )
    }

    /// `?sslmode=verify-full&sslrootcert=<the server's certificate>`.
    pub fn verify_full(&self) -> String {
        let cert = self.cert.as_ref().expect("a TLS platform").cert();
        format!("?sslmode=verify-full&sslrootcert={}", cert.display())
    }

    /// The test's own connection (as `postgres`, plain text).
    pub async fn admin(&self) -> anyhow::Result<tokio_postgres::Client> {
        self.pg.connect("events").await
    }

    /// A connection as `user` (plain text: for the plain platform).
    pub async fn connect_as(&self, user: &str) -> anyhow::Result<tokio_postgres::Client> {
        let (client, connection) =
            tokio_postgres::connect(&self.url(user, ""), tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// The real `worker` binary with these arguments and variables (and no others).
    /// Awaited, not blocking: a worker of the test may run on this thread and must go on
    /// (it may hold the migration lock the binary waits for).
    pub async fn worker_binary(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Output> {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_worker"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LOG_FORMAT", "text")
            .env("RUST_LOG", "info")
            .args(args);
        for (name, value) in env {
            cmd.env(name, value);
        }
        Ok(cmd.stdin(Stdio::null()).output().await?)
    }

    /// `worker migrate` as the owner; fails the test unless it exits 0.
    pub async fn migrate(&self, owner_url: &str) -> anyhow::Result<()> {
        let out = self
            .worker_binary(&["migrate"], &[("MIGRATION_DATABASE_URL", owner_url)])
            .await?;
        anyhow::ensure!(
            out.status.success(),
            "worker migrate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// The login users, by the deployment's own script (`deploy/postgres/login-users.sql`).
    pub async fn create_login_users(&self) -> anyhow::Result<()> {
        let bin = testkit::PostgresOptions::default().bin_dir;
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/postgres/login-users.sql"
        );
        let out = tokio::process::Command::new(bin.join("psql"))
            // -w: never prompt for a password (a test must not wait on a terminal).
            .args([
                "-X",
                "-w",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "events",
                "-f",
            ])
            .arg(script)
            .arg("-p")
            .arg(self.pg.port().to_string())
            .stdin(Stdio::null())
            .output()
            .await?;
        anyhow::ensure!(
            out.status.success() && out.stderr.is_empty(),
            "login-users.sql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    fn stream_args(&self) -> Vec<String> {
        vec![
            "--nats-url".into(),
            self.nats.url(),
            "--nats-stream".into(),
            format!("{}_EVENTS", self.name.to_uppercase()),
            "--nats-subject-prefix".into(),
            format!("{}.events", self.name),
        ]
    }

    /// The real worker, in this process, connecting as `database_url`.
    pub async fn start_worker(
        &self,
        database_url: &str,
        extra: &[&str],
    ) -> anyhow::Result<Service> {
        let mut args = vec![
            "worker".to_owned(),
            "--host=127.0.0.1".into(),
            "--port=0".into(),
            "--database-url".into(),
            database_url.into(),
            "--nats-consumer".into(),
            format!("{}-worker", self.name),
            "--nats-dlq-stream".into(),
            format!("{}_DLQ", self.name.to_uppercase()),
            "--worker-compact-interval=200ms".into(),
        ];
        args.extend(self.stream_args());
        args.extend(extra.iter().map(|s| s.to_string()));
        let app = worker::build(<worker::Config as clap::Parser>::try_parse_from(args)?).await?;
        let port = app.port();
        Ok(spawn(port, |rx| {
            app.run_until_stopped(
                async {
                    let _ = rx.await;
                },
                Duration::from_secs(10),
            )
        }))
    }

    pub async fn start_ingestion(&self) -> anyhow::Result<Service> {
        let mut args = vec![
            "ingestion".to_owned(),
            "--host=127.0.0.1".into(),
            "--port=0".into(),
        ];
        args.extend(self.stream_args());
        let app =
            ingestion::build(<ingestion::Config as clap::Parser>::try_parse_from(args)?).await?;
        let port = app.port();
        let service = spawn(port, |rx| {
            app.run_until_stopped(
                async {
                    let _ = rx.await;
                },
                Duration::from_secs(10),
            )
        });
        self.wait_ready(port).await?;
        Ok(service)
    }

    /// The real analytics service, in this process, reading as `database_url`.
    pub async fn start_analytics(&self, database_url: &str) -> anyhow::Result<Service> {
        let args = [
            "analytics",
            "--host=127.0.0.1",
            "--port=0",
            "--database-url",
            database_url,
        ];
        let app =
            analytics::build(<analytics::Config as clap::Parser>::try_parse_from(args)?).await?;
        let port = app.port();
        Ok(spawn(port, |rx| {
            app.run_until_stopped(
                async {
                    let _ = rx.await;
                },
                Duration::from_secs(10),
            )
        }))
    }

    /// `/health/readiness`: its status and body.
    pub async fn readiness(&self, port: u16) -> Option<(u16, Value)> {
        let r = self
            .http
            .get(format!("http://127.0.0.1:{port}/health/readiness"))
            .send()
            .await
            .ok()?;
        Some((r.status().as_u16(), r.json().await.ok()?))
    }

    pub async fn wait_ready(&self, port: u16) -> anyhow::Result<()> {
        eventually("readiness", WAIT, || async {
            (self.readiness(port).await?.0 == 200).then_some(())
        })
        .await
    }

    /// Waits until readiness has failed `check` for a reason containing `reason`; returns
    /// the reason.
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

    pub async fn post(&self, port: u16, events: &[Value]) -> anyhow::Result<u16> {
        let r = self
            .http
            .post(format!("http://127.0.0.1:{port}/webhook/event"))
            .json(events)
            .send()
            .await?;
        Ok(r.status().as_u16())
    }

    /// Waits until `events` holds `n` rows.
    pub async fn wait_rows(&self, n: i64) -> anyhow::Result<()> {
        let db = self.admin().await?;
        eventually(&format!("{n} stored events"), WAIT, || async {
            let rows: i64 = db
                .query_one("SELECT count(*) FROM events", &[])
                .await
                .ok()?
                .get(0);
            (rows == n).then_some(())
        })
        .await
    }

    /// Waits until the compactor (run by the worker) has folded every event into the
    /// per-user sets: no dirty slot left, sets written.
    pub async fn wait_compacted(&self) -> anyhow::Result<()> {
        let db = self.admin().await?;
        eventually("the per-user sets built", WAIT, || async {
            let row = db
                .query_one(
                    "SELECT (SELECT count(*) FROM user_sets_dirty),
                            (SELECT count(*) FROM user_sets_pending),
                            (SELECT count(*) FROM user_sets)",
                    &[],
                )
                .await
                .ok()?;
            let (dirty, pending, sets): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
            (dirty == 0 && pending == 0 && sets > 0).then_some(())
        })
        .await
    }

    /// The `total` of `/analytics/stats` over the day of [`events`].
    pub async fn stats_total(&self, analytics_port: u16) -> anyhow::Result<i64> {
        let body: Value = self
            .http
            .get(format!(
                "http://127.0.0.1:{analytics_port}/analytics/stats\
                 ?from=2025-06-01T00:00:00Z&to=2025-06-02T00:00:00Z"
            ))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        body["total"]
            .as_i64()
            .ok_or_else(|| anyhow::anyhow!("no total in {body}"))
    }

    /// The TLS state of every connection of `user`: (connections, how many use TLS).
    pub async fn tls_connections(&self, user: &str) -> anyhow::Result<(i64, i64)> {
        let row = self
            .admin()
            .await?
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE s.ssl)
                 FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid
                 WHERE a.usename = $1",
                &[&user],
            )
            .await?;
        Ok((row.get(0), row.get(1)))
    }
}

/// `n` valid events of every kind on 2025-06-01 (a day long ended, so the compactor
/// folds them at once), ids `<tag>-<i>`.
pub fn events(tag: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let id = format!("{tag}-{i}");
            let at = format!("2025-06-01T{:02}:{:02}:00Z", 8 + i % 10, i % 60);
            let user = format!("u-{}", i % 7);
            match i % 4 {
                0 => testkit::facebook_top(&id, &at, &user, "Germany"),
                1 => testkit::facebook_bottom(&id, &at, &user, Some("10.50")),
                2 => testkit::tiktok_top(&id, &at, &user, "France"),
                _ => testkit::tiktok_bottom(&id, &at, &user, Some("3.25")),
            }
        })
        .collect()
}
