//! Building the worker and running it: migrations under the advisory lock, the streams,
//! the consumer, the health/metrics endpoint, and a bounded graceful shutdown.

use crate::config::Config;
use crate::consumer::{self, Ctx, Settings};
use crate::dlq::DeadLetters;
use crate::gate::DbGate;
use crate::migrate;
use crate::{compactor, partitions};
use anyhow::Context;
use axum::Router;
use deadpool_postgres::Pool;
use service_kit::db::Target;
use service_kit::error::error_text;
use service_kit::health::{self, Check, Readiness};
use service_kit::{schema, stream};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A built worker: listening for health checks, its supervisor already starting up.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    router: Router,
    http: service_kit::http::HttpArgs,
    client: async_nats::Client,
    stop: watch::Sender<bool>,
    supervisor: tokio::task::JoinHandle<()>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

/// Start-up progress, for readiness.
#[derive(Debug, Default)]
struct Progress {
    consuming: AtomicBool,
    /// Why this worker waits for someone else to migrate, while it does: readiness adds
    /// it to the failing `schema` check.
    schema_wait: std::sync::Mutex<Option<String>>,
}

impl Progress {
    fn set_schema_wait(&self, why: Option<String>) {
        if let Ok(mut wait) = self.schema_wait.lock() {
            *wait = why;
        }
    }

    fn schema_wait(&self) -> Option<String> {
        self.schema_wait.lock().ok().and_then(|wait| wait.clone())
    }
}

pub async fn build(config: Config) -> anyhow::Result<App> {
    let metrics = service_kit::metrics::install();
    consumer::register_metrics();
    // A hung worker (stopped, swapped out) must not hold its locks for good: the rows of
    // a batch it was inserting block every replica storing the same events again, and the
    // compaction lock the others' compaction. PostgreSQL ends its idle transaction.
    let idle = (
        "idle_in_transaction_session_timeout",
        config
            .worker_idle_transaction_timeout
            .as_millis()
            .to_string(),
    );
    let pool = Target::parse(&config.database_url)
        .and_then(|target| target.pool(config.db_pool_max, &[idle]))
        .context("DATABASE_URL")?;
    let migration = config
        .migration_database_url
        .as_deref()
        .map(Target::parse)
        .transpose()
        .context("MIGRATION_DATABASE_URL")?;
    let nats = stream::connect(&config.stream, "worker").await?;
    let client = nats.client.clone();
    let js = stream::jetstream(client.clone(), Duration::from_secs(10));
    let (gate, probe) = DbGate::new(pool.clone());
    let progress = Arc::new(Progress::default());
    let (stop, stop_rx) = watch::channel(false);

    let settings = Settings {
        stream: config.stream.nats_stream.clone(),
        durable: config.nats_consumer.clone(),
        batch_size: config.worker_batch_size,
        linger: config.worker_batch_linger,
        max_ack_pending: config.nats_max_ack_pending,
        ack_wait: config.nats_ack_wait,
        concurrency: config.worker_concurrency,
    };
    let ctx = Arc::new(Ctx {
        pool: pool.clone(),
        dlq: DeadLetters::new(js.clone(), config.nats_dlq_stream.clone())
            .with_max_age(config.nats_dlq_max_age)
            .with_replicas(config.stream.nats_stream_replicas),
        gate,
        max_deliver: config.nats_max_deliver as i64,
        subject_prefix: config.stream.nats_subject_prefix.clone(),
        panic_event_id: config.test_panic_event_id.clone(),
        keys: Default::default(),
        events_per_message: AtomicUsize::new(1),
        retention: config.retention(),
    });
    let supervisor = tokio::spawn(supervise(
        config.clone(),
        migration,
        js.clone(),
        settings.clone(),
        ctx,
        progress.clone(),
        stop_rx,
    ));
    let mut background = vec![
        probe,
        service_kit::metrics::spawn_upkeep(metrics.clone()),
        service_kit::db::spawn_pool_gauge("worker", pool.clone()),
        tokio::spawn(consumer_gauges(
            js.clone(),
            settings,
            config.nats_dlq_stream.clone(),
        )),
    ];

    let readiness = readiness(nats, js, config.stream.nats_stream.clone(), pool, progress);
    background.push(health::spawn_readiness_gauges("worker", readiness.clone()));
    let router = service_kit::http::instrument(health::routes(readiness, metrics), "worker");
    let listener = TcpListener::bind((config.service.host, config.service.port)).await?;
    Ok(App {
        listener,
        router,
        http: config.http,
        client,
        stop,
        supervisor,
        background,
    })
}

impl App {
    /// The port of the health and metrics endpoint.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Consumes until `shutdown` resolves; then stops pulling, finishes, commits and
    /// acks the batches in flight (at most `drain`), and exits.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        drain: Duration,
    ) -> anyhow::Result<()> {
        let (health_stop_tx, health_stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(service_kit::http::serve(
            self.listener,
            self.router,
            self.http,
            async {
                let _ = health_stop_rx.await;
            },
        ));
        shutdown.await;
        tracing::info!("Stopping: no new pulls; finishing batches in flight");
        let _ = self.stop.send(true);
        match tokio::time::timeout(drain, self.supervisor).await {
            Ok(_) => {}
            Err(_) => tracing::warn!(?drain, "Batches still in flight after the drain timeout"),
        }
        if let Err(error) = tokio::time::timeout(Duration::from_secs(5), self.client.flush()).await
        {
            tracing::warn!(%error, "NATS flush timed out");
        }
        let _ = health_stop_tx.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        for task in self.background {
            task.abort();
        }
        tracing::info!("Worker stopped");
        Ok(())
    }
}

/// `worker migrate`: applies the pending migrations as `url` (the schema's owner), then
/// returns; nothing pending is a success. The deploy step before the workers start.
pub async fn migrate_schema(url: &str) -> anyhow::Result<()> {
    let target = Target::parse(url).context("MIGRATION_DATABASE_URL/DATABASE_URL")?;
    let mut client = target
        .connect()
        .await
        .context("cannot connect to the database")?;
    let version = migrate::run(&mut client)
        .await
        .context("the migrations failed")?;
    tracing::info!(version, "Schema current");
    Ok(())
}

/// Applies migrations, then recomputes every rollup from the raw table (one transaction;
/// writers wait). The operator's repair for rollups suspected wrong. `url` is the
/// schema's owner: truncating the rollups is not the writer's right.
pub async fn rebuild_rollups(url: &str) -> anyhow::Result<()> {
    let target = Target::parse(url).context("MIGRATION_DATABASE_URL/DATABASE_URL")?;
    let mut client = target
        .connect()
        .await
        .context("cannot connect to the database")?;
    migrate::run(&mut client).await?;
    let started = std::time::Instant::now();
    client.execute("SELECT rebuild_rollups()", &[]).await?;
    let hours = crate::compact::until_clean(&mut client).await?;
    let events: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await?
        .get(0);
    tracing::info!(events, hours, elapsed = ?started.elapsed(), "Rollups and per-user sets rebuilt from the raw events");
    Ok(())
}

/// Brings the worker up step by step, retrying each dependency with backoff (never
/// crash-looping), then consumes until told to stop.
async fn supervise(
    config: Config,
    migration: Option<Target>,
    js: async_nats::jetstream::Context,
    settings: Settings,
    ctx: Arc<Ctx>,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
) {
    let may_migrate = AtomicBool::new(config.migrate_on_start);
    let migrated = retry("Database migrations", &mut stop, || {
        current_schema(&ctx.pool, migration.as_ref(), &may_migrate, &progress)
    });
    let Some(version) = migrated.await else {
        return;
    };
    tracing::info!(version, "Schema current");
    // After the migrations: the compactor reads tables they create.
    let (pool, interval) = (ctx.pool.clone(), config.worker_compact_interval);
    let compactor_stop = stop.clone();
    let compactor = tokio::spawn(compactor::supervise(
        move || compactor::run(pool.clone(), interval, compactor_stop.clone()),
        stop.clone(),
    ));
    // Before consuming, so that the days' partitions are there for the first events (a
    // failure is logged and retried; events land in the default partition meanwhile).
    let prepared = partitions::pass(&ctx.pool, config.retention()).await;
    let partitions = tokio::spawn(partitions::run(
        ctx.pool.clone(),
        config.retention(),
        prepared,
        stop.clone(),
    ));

    let streams = retry("Streams", &mut stop, || async {
        stream::ensure_stream(&js, &config.stream).await?;
        ctx.dlq
            .ensure_stream(&config.stream.nats_subject_prefix)
            .await
    });
    if streams.await.is_none() {
        let _ = tokio::join!(compactor, partitions);
        return;
    }
    progress.consuming.store(true, Ordering::Relaxed);
    consumer::run(js, settings, ctx, stop).await;
    let _ = tokio::join!(compactor, partitions);
}

/// Why the schema is not current yet: the supervisor retries, readiness's `schema` check
/// fails meanwhile.
#[derive(Debug, thiserror::Error)]
enum SchemaError {
    #[error("no database connection")]
    Pool(#[source] deadpool_postgres::PoolError),
    #[error("cannot read the schema version")]
    Version(#[source] tokio_postgres::Error),
    #[error("schema version {applied}, this worker needs {latest}: waiting for `worker migrate`")]
    Behind { applied: i32, latest: i32 },
    #[error("MIGRATION_DATABASE_URL: cannot connect")]
    Owner(#[source] tokio_postgres::Error),
    #[error("migrations refused to this role")]
    Refused(#[source] tokio_postgres::Error),
    #[error("the migrations failed")]
    Migrate(#[source] tokio_postgres::Error),
}

/// The schema's version once it is current. Pending migrations are applied when this
/// worker may (`MIGRATE_ON_START`), as MIGRATION_DATABASE_URL when given, else through
/// the pool. Otherwise, or once the database has refused them to this role, it waits for
/// `worker migrate` without trying DDL again: each call is then one read of the
/// version, the error is the supervisor's retry, and readiness's `schema` check is failing.
async fn current_schema(
    pool: &Pool,
    migration: Option<&Target>,
    may_migrate: &AtomicBool,
    progress: &Progress,
) -> Result<i32, SchemaError> {
    let mut client = pool.get().await.map_err(SchemaError::Pool)?;
    let applied = schema::applied_version(&client)
        .await
        .map_err(SchemaError::Version)?;
    let latest = schema::latest_version();
    if applied >= latest {
        progress.set_schema_wait(None);
        return Ok(applied);
    }
    if !may_migrate.load(Ordering::Relaxed) {
        if progress.schema_wait().is_none() {
            progress.set_schema_wait(Some(
                "MIGRATE_ON_START=false: this worker never changes the schema".into(),
            ));
        }
        return Err(SchemaError::Behind { applied, latest });
    }
    let result = match migration {
        Some(target) => match target.connect().await {
            Ok(mut owner) => migrate::run(&mut owner).await,
            Err(e) => return Err(SchemaError::Owner(e)),
        },
        None => migrate::run(&mut client).await,
    };
    match result {
        Ok(version) => Ok(version),
        Err(e) if migrate::is_not_allowed(&e) => {
            may_migrate.store(false, Ordering::Relaxed);
            let text = error_text(&e);
            progress.set_schema_wait(Some(format!(
                "this worker's role may not apply them ({text})"
            )));
            tracing::warn!(error = %text, "This role may not change the schema: waiting for `worker migrate` (or give MIGRATION_DATABASE_URL)");
            Err(SchemaError::Refused(e))
        }
        Err(e) => Err(SchemaError::Migrate(e)),
    }
}

/// Retries `step` with backoff until it succeeds, logging each failure with its causes;
/// `None` if stopped first.
async fn retry<T, E, F, Fut>(what: &str, stop: &mut watch::Receiver<bool>, mut step: F) -> Option<T>
where
    E: std::error::Error,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = Duration::from_millis(200);
    loop {
        if *stop.borrow() {
            return None;
        }
        match step().await {
            Ok(value) => return Some(value),
            Err(error) => {
                let error = error_text(&error);
                tracing::warn!(step = what, %error, retry_in = ?backoff, "Start-up step failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return None,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Publishes the consumer backlog (`worker_consumer_info_stale` is 1 while it cannot be
/// read), the DLQ depth and both streams' size and limits
/// (`worker_stream_{messages,bytes,max_messages,max_bytes}{stream}`) every few seconds.
async fn consumer_gauges(js: async_nats::jetstream::Context, settings: Settings, dlq: String) {
    fn stream_gauges(info: &async_nats::jetstream::stream::Info) {
        let name = info.config.name.clone();
        metrics::gauge!("worker_stream_messages", "stream" => name.clone())
            .set(info.state.messages as f64);
        metrics::gauge!("worker_stream_bytes", "stream" => name.clone())
            .set(info.state.bytes as f64);
        // -1 (unlimited) is left out: a ratio against it would mean nothing.
        if info.config.max_messages > 0 {
            metrics::gauge!("worker_stream_max_messages", "stream" => name.clone())
                .set(info.config.max_messages as f64);
        }
        if info.config.max_bytes > 0 {
            metrics::gauge!("worker_stream_max_bytes", "stream" => name)
                .set(info.config.max_bytes as f64);
        }
    }
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let mut read = false;
        if let Ok(stream) = js.get_stream(&settings.stream).await {
            stream_gauges(stream.cached_info());
            if let Ok(info) = stream.consumer_info(&settings.durable).await {
                metrics::gauge!("worker_consumer_pending_messages").set(info.num_pending as f64);
                metrics::gauge!("worker_consumer_ack_pending_messages")
                    .set(info.num_ack_pending as f64);
                read = true;
            }
        }
        // The backlog gauges keep their last value when the consumer cannot be read (NATS
        // down): this says they are stale, rather than letting a frozen backlog look fine.
        metrics::gauge!("worker_consumer_info_stale").set(if read { 0.0 } else { 1.0 });
        if let Ok(mut stream) = js.get_stream(&dlq).await
            && let Ok(info) = stream.info().await
        {
            metrics::gauge!("worker_dlq_messages").set(info.state.messages as f64);
            stream_gauges(info);
        }
    }
}

fn readiness(
    nats: stream::Nats,
    js: async_nats::jetstream::Context,
    stream_name: String,
    pool: Pool,
    progress: Arc<Progress>,
) -> Readiness {
    Arc::new(move || {
        let (nats, js, stream_name, pool, progress) = (
            nats.clone(),
            js.clone(),
            stream_name.clone(),
            pool.clone(),
            progress.clone(),
        );
        Box::pin(async move {
            let mut checks = Vec::with_capacity(4);
            let connection = nats.check();
            let connected = connection.ready;
            checks.push(connection);
            if connected {
                checks.push(match js.get_stream(&stream_name).await {
                    Ok(_) => Check::ok("stream"),
                    Err(e) => Check::failed("stream", format!("stream {stream_name}: {e}")),
                });
            }
            let mut database = health::database_checks(&pool).await;
            if let Some(why) = progress.schema_wait() {
                for check in database
                    .iter_mut()
                    .filter(|c| c.name == "schema" && !c.ready)
                {
                    if let Some(reason) = check.reason.as_mut() {
                        reason.push_str("; ");
                        reason.push_str(&why);
                    }
                }
            }
            checks.extend(database);
            checks.push(if progress.consuming.load(Ordering::Relaxed) {
                Check::ok("consumer")
            } else {
                Check::failed("consumer", "starting up")
            });
            checks
        })
    })
}
