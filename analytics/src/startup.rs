//! Building the analytics service and running it until stopped.

use crate::api_doc;
use crate::auth;
use crate::config::Config;
use crate::ratelimit;
use crate::replica;
use crate::routes::{self, AppState};
use axum::Router;
use axum::routing::get;
use deadpool_postgres::Pool;
use service_kit::health::{self, Readiness};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A built analytics service, listening but not yet serving.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    router: Router,
    http: service_kit::http::HttpArgs,
    background: Vec<tokio::task::JoinHandle<()>>,
}

/// Binds the port and prepares the read pool. The database may be down: the pool
/// connects on demand and readiness reports it.
pub async fn build(config: Config) -> anyhow::Result<App> {
    let metrics = service_kit::metrics::install();
    let pool = service_kit::db::pool(
        config.read_url(),
        config.db_pool_max,
        &[
            (
                "statement_timeout",
                config.db_statement_timeout.as_millis().to_string(),
            ),
            // Report queries read a few thousand rows at most. Starting parallel workers
            // for them (the planner did, from its estimates for the union of pieces) or
            // JIT-compiling them costs more than the query, and under concurrent clients
            // it multiplied p95 by five.
            ("max_parallel_workers_per_gather", "0".to_owned()),
            ("jit", "off".to_owned()),
        ],
    )
    .map_err(|e| anyhow::Error::new(e).context("DATABASE_READ_URL/DATABASE_URL"))?;
    service_kit::db::warm(&pool, config.db_pool_min).await;
    let (freshness, observer) = replica::spawn_observer(pool.clone());
    let readiness = readiness(pool.clone(), freshness.clone(), config.max_replica_lag());
    let limits = Arc::new(client_limits(&config));
    let background = vec![
        observer,
        service_kit::metrics::spawn_upkeep(metrics.clone()),
        service_kit::ratelimit::spawn_upkeep({
            let limits = limits.clone();
            move || limits.forget_idle()
        }),
        service_kit::db::spawn_pool_gauge("analytics", pool.clone()),
        health::spawn_readiness_gauges("analytics", readiness.clone()),
    ];
    let reports = Router::new()
        .route("/analytics/stats", get(routes::stats::stats))
        .route("/analytics/timeseries", get(routes::timeseries::timeseries))
        .route("/analytics/revenue", get(routes::revenue::revenue))
        .route("/analytics/campaigns/top", get(routes::campaigns::top))
        .route("/analytics/funnel", get(routes::funnel::funnel))
        .route("/analytics/geo", get(routes::geo::geo))
        .route("/analytics/users/top", get(routes::users::top))
        .route(
            "/analytics/demographics",
            get(routes::demographics::demographics),
        )
        .with_state(AppState { pool: pool.clone() })
        // Innermost: stamps what the read database promised before the report started.
        .layer(axum::middleware::from_fn_with_state(
            freshness,
            replica::stamp,
        ))
        // Inside the key check (layers added later run first), which names the key.
        .layer(axum::middleware::from_fn_with_state(
            limits,
            ratelimit::limit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(api_keys(&config)),
            auth::require_key,
        ));
    let router = service_kit::http::instrument(
        reports
            .merge(health::routes(readiness, metrics))
            .merge(api_doc::routes())
            .merge(crate::page::routes()),
        "analytics",
    );
    let listener = TcpListener::bind((config.service.host, config.service.port)).await?;
    Ok(App {
        listener,
        router,
        http: config.http,
        background,
    })
}

impl App {
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `shutdown` resolves, then answers the requests already received
    /// (at most `drain` longer).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        drain: Duration,
    ) -> anyhow::Result<()> {
        service_kit::http::serve_with_drain(self.listener, self.router, self.http, shutdown, drain)
            .await?;
        for task in self.background {
            task.abort();
        }
        tracing::info!("Analytics stopped");
        Ok(())
    }
}

/// The bearer keys. Without any the reports are open, and the start says so loudly.
fn api_keys(config: &Config) -> Option<auth::ApiKeys> {
    match config.api_keys() {
        Some(keys) => {
            tracing::info!(key_ids = %keys.ids(), "Reports require a bearer key");
            Some(auth::ApiKeys::new(keys))
        }
        None => {
            tracing::warn!(
                "ANALYTICS_API_KEY is unset: no authentication, anyone can read the reports"
            );
            None
        }
    }
}

/// The rate limit per client, after `metrics::install()` (it registers a counter), keyed
/// by API key when keys are set, else by address. Logged at start, as its absence is.
fn client_limits(config: &Config) -> ratelimit::ClientLimits {
    let limits = ratelimit::ClientLimits::new(config);
    match limits.quota() {
        Some(quota) => tracing::info!(
            per = if config.api_keys().is_some() {
                "API key"
            } else {
                "client address"
            },
            requests_per_sec = quota.per_sec.get(),
            burst = quota.burst.get(),
            trusted_proxy_hops = config.trusted_proxy_hops,
            "Rate limit per client"
        ),
        None => tracing::warn!(
            "ANALYTICS_RATE_LIMIT_PER_SEC is 0: no rate limit, one client can take every \
             database connection"
        ),
    }
    limits
}

/// The database's checks, and `replica`: how far behind a standby is, as last observed.
fn readiness(
    pool: Pool,
    freshness: watch::Receiver<replica::Observation>,
    max_lag: Option<Duration>,
) -> Readiness {
    Arc::new(move || {
        let pool = pool.clone();
        let replica = freshness.borrow().check(max_lag);
        Box::pin(async move {
            let mut checks = health::database_checks(&pool).await;
            checks.push(replica);
            checks
        })
    })
}
