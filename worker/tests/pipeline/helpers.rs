//! A private pipeline per test: its own nats-server, PostgreSQL cluster and database,
//! stream and consumer names; the real services started on port 0 (in process) or as
//! the real `worker` binary when a test must kill or signal it.

use async_nats::jetstream::{self, consumer::pull, message::PublishMessage};
use futures::StreamExt;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;
use testkit::{ChildProcess, NatsServer, Postgres, eventually};
use tokio::sync::oneshot;

pub const WAIT: Duration = Duration::from_secs(60);

/// Names that keep this test's streams, subjects and consumer apart.
#[derive(Debug, Clone)]
pub struct Names {
    pub stream: String,
    pub prefix: String,
    pub dlq: String,
    pub consumer: String,
}

impl Names {
    fn new() -> Self {
        let n = testkit::unique_name();
        Names {
            stream: format!("{}_EVENTS", n.to_uppercase()),
            prefix: format!("{n}.events"),
            dlq: format!("{}_EVENTS_DLQ", n.to_uppercase()),
            consumer: format!("{n}-worker"),
        }
    }
}

/// A service running in this process, stopped gracefully by `stop`.
#[derive(Debug)]
pub struct Running {
    pub port: u16,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await?
    }
}

/// Runs a service in this process; `run` gets the signal that asks it to stop.
pub fn spawn<F>(port: u16, run: impl FnOnce(oneshot::Receiver<()>) -> F) -> Running
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    Running {
        port,
        stop: Some(tx),
        task: tokio::spawn(run(rx)),
    }
}

#[derive(Debug)]
pub struct Pipeline {
    pub nats: NatsServer,
    pub pg: Postgres,
    pub database_url: String,
    pub names: Names,
    pub http: reqwest::Client,
}

impl Pipeline {
    pub async fn start() -> anyhow::Result<Pipeline> {
        Self::start_with(NatsServer::start()).await
    }

    /// A pipeline on the nats-server `nats` starts (one requiring a login, say).
    pub async fn start_with(
        nats: impl std::future::Future<Output = anyhow::Result<NatsServer>>,
    ) -> anyhow::Result<Pipeline> {
        service_kit::telemetry::init_for_tests();
        let (nats, pg) = tokio::try_join!(nats, Postgres::start())?;
        let database_url = pg.create_database("events").await?;
        Ok(Pipeline {
            nats,
            pg,
            database_url,
            names: Names::new(),
            http: reqwest::Client::new(),
        })
    }

    fn stream_args(&self) -> Vec<String> {
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

    /// The real worker, in this process.
    pub async fn start_worker(&self, extra: &[&str]) -> anyhow::Result<Running> {
        let config = <worker::Config as clap::Parser>::try_parse_from(self.worker_args(extra))?;
        let app = worker::build(config).await?;
        let port = app.port();
        Ok(spawn(port, |rx| async move {
            app.run_until_stopped(
                async {
                    let _ = rx.await;
                },
                Duration::from_secs(30),
            )
            .await
        }))
    }

    /// The real `worker` binary, configured through its environment variables.
    pub fn start_worker_process(
        &self,
        extra_env: &[(&str, &str)],
    ) -> anyhow::Result<(ChildProcess, u16)> {
        let port = testkit::free_port()?;
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_worker"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("NATS_URL", self.nats.url())
            .env("NATS_STREAM", &self.names.stream)
            .env("NATS_SUBJECT_PREFIX", &self.names.prefix)
            .env("NATS_CONSUMER", &self.names.consumer)
            .env("NATS_DLQ_STREAM", &self.names.dlq)
            .env("DATABASE_URL", &self.database_url)
            .env("LOG_FORMAT", "json")
            .env(
                "RUST_LOG",
                if std::env::var_os("TEST_LOG").is_some() {
                    "info"
                } else {
                    "error"
                },
            )
            .stdout(std::process::Stdio::null());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        if std::env::var_os("TEST_LOG").is_none() {
            cmd.stderr(std::process::Stdio::null());
        }
        Ok((ChildProcess::spawn("worker", cmd)?, port))
    }

    /// The real ingestion service, in this process.
    pub async fn start_ingestion(&self, extra: &[&str]) -> anyhow::Result<Running> {
        let mut args = vec![
            "ingestion".to_owned(),
            "--host=127.0.0.1".into(),
            "--port=0".into(),
            // These tests post tens of thousands of events as fast as one client can; the
            // per-producer limits have their own tests (ingestion/tests/api/ratelimit.rs).
            "--rate-limit-events-per-sec=0".into(),
            "--rate-limit-bytes-per-sec=0".into(),
        ];
        args.extend(self.stream_args());
        args.extend(extra.iter().map(|s| s.to_string()));
        let config = <ingestion::Config as clap::Parser>::try_parse_from(args)?;
        let app = ingestion::build(config).await?;
        let port = app.port();
        let running = spawn(port, |rx| async move {
            app.run_until_stopped(
                async {
                    let _ = rx.await;
                },
                Duration::from_secs(30),
            )
            .await
        });
        self.wait_ready(port).await?;
        Ok(running)
    }

    pub async fn wait_ready(&self, port: u16) -> anyhow::Result<()> {
        let url = format!("http://127.0.0.1:{port}/health/readiness");
        eventually("readiness", WAIT, || async {
            let r = self.http.get(&url).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await
    }

    /// POSTs events to ingestion; returns the status and the JSON body.
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

    pub async fn db(&self) -> anyhow::Result<tokio_postgres::Client> {
        self.pg.connect("events").await
    }

    /// Rows in `events`, or 0 before the table exists.
    pub async fn row_count(&self) -> i64 {
        match self.db().await {
            Ok(db) => db
                .query_one("SELECT count(*) FROM events", &[])
                .await
                .map(|r| r.get::<_, i64>(0))
                .unwrap_or(0),
            Err(_) => 0,
        }
    }

    /// Waits until `events` holds exactly `n` rows (failing early if it holds more).
    pub async fn wait_rows(&self, n: i64) -> anyhow::Result<()> {
        let last = std::sync::atomic::AtomicI64::new(-1);
        let r = eventually(&format!("{n} rows"), WAIT, || async {
            let c = self.row_count().await;
            last.store(c, std::sync::atomic::Ordering::Relaxed);
            (c >= n).then_some(c)
        })
        .await;
        match r {
            Ok(c) => {
                anyhow::ensure!(c == n, "expected exactly {n} rows, found {c}");
                Ok(())
            }
            Err(e) => Err(e.context(format!(
                "found {} rows",
                last.load(std::sync::atomic::Ordering::Relaxed)
            ))),
        }
    }

    pub async fn js(&self) -> anyhow::Result<jetstream::Context> {
        self.nats.jetstream().await
    }

    /// Publishes a payload straight to the events stream (bypassing ingestion).
    pub async fn publish_raw(
        &self,
        subject_suffix: &str,
        payload: Vec<u8>,
        msg_id: &str,
    ) -> anyhow::Result<()> {
        let js = self.js().await?;
        let msg = PublishMessage::build()
            .payload(payload.into())
            .message_id(msg_id)
            .header("X-Correlation-ID", format!("corr-{msg_id}").as_str());
        js.send_publish(format!("{}.{subject_suffix}", self.names.prefix), msg)
            .await?
            .await?;
        Ok(())
    }

    /// Creates the events stream as ingestion would (for tests that publish before any
    /// service runs).
    pub async fn create_stream(&self) -> anyhow::Result<()> {
        let args = service_kit::stream::StreamArgs {
            nats_url: self.nats.url(),
            nats_creds_file: None,
            nats_nkey_seed_file: None,
            nats_stream: self.names.stream.clone(),
            nats_subject_prefix: self.names.prefix.clone(),
            nats_stream_replicas: 1,
            nats_stream_max_bytes: 1 << 30,
            nats_stream_max_msgs: 1_000_000,
            nats_duplicate_window_secs: 120,
        };
        service_kit::stream::ensure_stream(&self.js().await?, &args)
            .await
            .map_err(anyhow::Error::msg)
    }

    /// Every message of the DLQ stream with its headers (`None` if the stream is absent).
    pub async fn dead_letters(&self) -> anyhow::Result<Vec<(Vec<u8>, HashMap<String, String>)>> {
        let js = self.js().await?;
        let Ok(stream) = js.get_stream(&self.names.dlq).await else {
            return Ok(Vec::new());
        };
        let consumer = stream
            .create_consumer(pull::Config {
                ack_policy: jetstream::consumer::AckPolicy::None,
                ..Default::default()
            })
            .await?;
        let mut out = Vec::new();
        let mut batch = consumer.fetch().max_messages(10_000).messages().await?;
        while let Some(m) = batch.next().await {
            let m = m.map_err(|e| anyhow::anyhow!("{e}"))?;
            let headers = m
                .headers
                .iter()
                .flat_map(|h| h.iter())
                .filter_map(|(k, v)| Some((k.to_string(), v.first()?.to_string())))
                .collect();
            out.push((m.payload.to_vec(), headers));
        }
        Ok(out)
    }

    /// The consumer's (pending, ack-pending) counts.
    pub async fn consumer_state(&self) -> anyhow::Result<(u64, usize)> {
        let js = self.js().await?;
        let stream = js.get_stream(&self.names.stream).await?;
        let info = stream.consumer_info(&self.names.consumer).await?;
        Ok((info.num_pending, info.num_ack_pending))
    }

    /// Waits until no slot is marked dirty: every per-user block is built.
    pub async fn wait_compacted(&self) -> anyhow::Result<()> {
        let db = self.db().await?;
        eventually("every slot compacted", WAIT, || async {
            let dirty: i64 = db
                .query_one("SELECT count(*) FROM user_sets_dirty", &[])
                .await
                .ok()?
                .get(0);
            (dirty == 0).then_some(())
        })
        .await
    }

    /// `worker rebuild-rollups`, the operator's command, on this pipeline's database.
    pub async fn rebuild_rollups(&self) -> anyhow::Result<()> {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_worker"))
            .arg("rebuild-rollups")
            .env("DATABASE_URL", &self.database_url)
            .env("RUST_LOG", "error")
            .output()
            .await?;
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Messages still held by the events stream.
    pub async fn stream_messages(&self) -> anyhow::Result<u64> {
        let js = self.js().await?;
        let mut stream = js.get_stream(&self.names.stream).await?;
        Ok(stream.info().await?.state.messages)
    }
}

/// Every rollup row, in a stable order, as text (exact decimals).
pub async fn rollups(db: &tokio_postgres::Client) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for table in ["rollup_events", "rollup_series", "rollup_campaigns"] {
        let rows = db
            .query(
                &format!("SELECT t::text FROM {table} t ORDER BY t::text"),
                &[],
            )
            .await?;
        out.extend(
            rows.iter()
                .map(|r| format!("{table} {}", r.get::<_, String>(0))),
        );
    }
    // Per-user sets and totals, decoded (equal content, whatever the byte layout).
    let rows = db
        .query(
            "SELECT level, block, dim, source, funnel_stage, event_type, value, context, users,
                    events, revenue::text
             FROM user_sets ORDER BY 1, 2, 3, 4, 5, 6, 7, 8",
            &[],
        )
        .await?;
    for r in rows {
        let users: Vec<u32> = user_sets::decode_bitmap(r.get(8))
            .map_err(anyhow::Error::msg)?
            .iter()
            .collect();
        let key: Vec<String> = (2..8).map(|i| r.get::<_, String>(i)).collect();
        out.push(format!(
            "user_sets {} {} {key:?} {users:?} {} {}",
            r.get::<_, i16>(0),
            r.get::<_, i64>(1),
            r.get::<_, i64>(9),
            r.get::<_, String>(10)
        ));
    }
    let rows = db
        .query(
            "SELECT level, block, source, totals FROM user_totals ORDER BY 1, 2, 3",
            &[],
        )
        .await?;
    for r in rows {
        let mut totals = std::collections::BTreeMap::new();
        user_sets::decode_totals(r.get(3), &mut totals).map_err(anyhow::Error::msg)?;
        out.push(format!(
            "user_totals {} {} {} {totals:?}",
            r.get::<_, i16>(0),
            r.get::<_, i64>(1),
            r.get::<_, String>(2)
        ));
    }
    Ok(out)
}

/// `n` valid events with ids `<tag>-<i>`, a mix of every shape.
pub fn events(tag: &str, range: std::ops::Range<usize>) -> Vec<Value> {
    range
        .map(|i| {
            let id = format!("{tag}-{i}");
            let ts = format!(
                "2026-03-01T{:02}:{:02}:{:02}Z",
                (i / 3600) % 24,
                (i / 60) % 60,
                i % 60
            );
            let user = format!("u{}", i % 97);
            match i % 4 {
                0 => testkit::facebook_top(&id, &ts, &user, "Germany"),
                1 => testkit::facebook_bottom(&id, &ts, &user, Some("19.99")),
                2 => testkit::tiktok_top(&id, &ts, &user, "Brazil"),
                _ => testkit::tiktok_bottom(&id, &ts, &user, None),
            }
        })
        .collect()
}
