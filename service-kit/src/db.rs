//! The PostgreSQL pool and its gauges.

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::time::Duration;
use tokio_postgres::NoTls;

/// Builds a pool (connections are opened lazily, up to `max`). Connecting and waiting
/// for a free connection are bounded, so a database outage turns into errors the
/// callers classify as transient instead of hanging forever.
/// `settings` are server settings (`name`, `value`) every connection of the pool starts
/// with, e.g. a reader's `statement_timeout`; the server's own apply to the rest.
pub fn pool(url: &str, max: usize, settings: &[(&str, String)]) -> Result<Pool, String> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| format!("{e}"))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    if !settings.is_empty() {
        let mut options = config.get_options().unwrap_or_default().to_owned();
        for (name, value) in settings {
            options.push_str(&format!(" -c {name}={value}"));
        }
        config.options(options.trim());
    }
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| e.to_string())
}

/// Opens `min` connections now, so the first requests do not pay for connecting.
/// Failure is not fatal: the pool reconnects on demand and readiness reports it.
pub async fn warm(pool: &Pool, min: usize) {
    let mut held = Vec::with_capacity(min);
    for _ in 0..min {
        match pool.get().await {
            Ok(conn) => held.push(conn),
            Err(error) => {
                tracing::warn!(%error, "Cannot open database connections yet");
                break;
            }
        }
    }
}

/// Publishes `db_pool_connections{service,state}` every few seconds.
pub fn spawn_pool_gauge(service: &'static str, pool: Pool) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tick.tick().await;
            let status = pool.status();
            let in_use = status.size.saturating_sub(status.available);
            metrics::gauge!("db_pool_connections", "service" => service, "state" => "idle")
                .set(status.available as f64);
            metrics::gauge!("db_pool_connections", "service" => service, "state" => "in_use")
                .set(in_use as f64);
        }
    })
}
