//! `/health/liveness`, `/health/readiness` and `/metrics`, the same on every service, and
//! their OpenAPI declarations ([`openapi`]).

use axum::Json;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use futures::future::BoxFuture;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

pub mod openapi;
mod probe;
pub use probe::{HealthcheckArgs, PROBE_TIMEOUT, ProbeError, healthcheck, local_address, probe};

/// One dependency's readiness.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is checked (`nats`, `stream`, `database`, `schema`).
    pub name: &'static str,
    pub ready: bool,
    /// Why it is not ready; absent when ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Check {
    pub fn ok(name: &'static str) -> Self {
        Check {
            name,
            ready: true,
            reason: None,
        }
    }

    pub fn failed(name: &'static str, reason: impl Into<String>) -> Self {
        Check {
            name,
            ready: false,
            reason: Some(reason.into()),
        }
    }
}

/// Produces the current checks of a service.
pub type Readiness = Arc<dyn Fn() -> BoxFuture<'static, Vec<Check>> + Send + Sync>;

#[derive(Serialize)]
struct ReadinessBody {
    status: &'static str,
    checks: Vec<Check>,
}

/// The health and metrics routes.
pub fn routes(readiness: Readiness, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route(
            "/health/liveness",
            get(|| async { Json(serde_json::json!({"status": "alive"})) }),
        )
        .route(
            "/health/readiness",
            get(move || {
                let readiness = readiness.clone();
                async move {
                    let checks = readiness().await;
                    let ready = checks.iter().all(|c| c.ready);
                    let status = if ready {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    let body = ReadinessBody {
                        status: if ready { "ready" } else { "not_ready" },
                        checks,
                    };
                    (status, Json(body))
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        metrics.render(),
                    )
                        .into_response()
                }
            }),
        )
}

/// How often [`spawn_readiness_gauges`] evaluates the checks.
pub const READINESS_GAUGE_INTERVAL: Duration = Duration::from_secs(5);

/// An evaluation taking longer than this counts as not ready (every known check 0).
const READINESS_EVALUATION_TIMEOUT: Duration = Duration::from_secs(10);

/// Exports readiness as gauges, so alerts and dashboards need nobody probing
/// `/health/readiness`: every [`READINESS_GAUGE_INTERVAL`] it evaluates the same checks
/// that route answers with and sets
///
/// - `service_ready{service}`: 1 when every check passes, else 0;
/// - `service_readiness_check{service, check}`: 1 when that check passes, else 0.
///
/// A check an earlier evaluation reported and this one omits (the worker's `stream` while
/// NATS is down) is 0; so is every check when an evaluation takes longer than 10 s.
/// Changes of readiness are logged. Abort the task when the service stops.
pub fn spawn_readiness_gauges(
    service: &'static str,
    readiness: Readiness,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut known = BTreeSet::new();
        let mut was_ready: Option<bool> = None;
        let mut tick = tokio::time::interval(READINESS_GAUGE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let checks = tokio::time::timeout(READINESS_EVALUATION_TIMEOUT, readiness())
                .await
                .ok();
            let (ready, values) = gauge_values(&mut known, checks.as_deref());
            metrics::gauge!("service_ready", "service" => service).set(f64::from(u8::from(ready)));
            for (check, ok) in values {
                metrics::gauge!("service_readiness_check", "service" => service, "check" => check)
                    .set(f64::from(u8::from(ok)));
            }
            if was_ready != Some(ready) {
                if ready {
                    tracing::info!(service, "Ready");
                } else {
                    let failing = match &checks {
                        Some(checks) => checks
                            .iter()
                            .filter(|c| !c.ready)
                            .map(|c| format!("{}: {}", c.name, c.reason.as_deref().unwrap_or("")))
                            .collect::<Vec<_>>()
                            .join("; "),
                        None => format!("no answer within {READINESS_EVALUATION_TIMEOUT:?}"),
                    };
                    tracing::warn!(service, %failing, "Not ready");
                }
                was_ready = Some(ready);
            }
        }
    })
}

/// Readiness and the value of every check known so far (`known` grows with each
/// evaluation): `None` (no answer) fails them all, a known check missing fails.
fn gauge_values(
    known: &mut BTreeSet<&'static str>,
    checks: Option<&[Check]>,
) -> (bool, Vec<(&'static str, bool)>) {
    let checks = checks.unwrap_or_default();
    known.extend(checks.iter().map(|c| c.name));
    let values: Vec<(&'static str, bool)> = known
        .iter()
        .map(|name| {
            let mut same = checks.iter().filter(|c| c.name == *name).peekable();
            let ok = same.peek().is_some() && same.all(|c| c.ready);
            (*name, ok)
        })
        .collect();
    // `known` includes every current check, so `values` covers them all.
    let ready = !values.is_empty() && values.iter().all(|(_, ok)| *ok);
    (ready, values)
}

/// The `database` and `schema` checks: the pool answers within 2 s, and the migrations
/// applied are the ones this binary knows (`schema::latest_version`).
pub async fn database_checks(pool: &deadpool_postgres::Pool) -> Vec<Check> {
    let applied = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        // With the causes: a refused TLS handshake says why only there.
        let client = pool.get().await.map_err(|e| crate::error::error_text(&e))?;
        crate::schema::applied_version(&client)
            .await
            .map_err(|e| crate::error::error_text(&e))
    })
    .await
    .unwrap_or_else(|_| Err("no answer within 2 s".into()));
    let latest = crate::schema::latest_version();
    match applied {
        Ok(version) if version == latest => vec![Check::ok("database"), Check::ok("schema")],
        Ok(version) => vec![
            Check::ok("database"),
            Check::failed(
                "schema",
                format!(
                    "version {version}, expected {latest}: migrations pending \
                     (`worker migrate` applies them)"
                ),
            ),
        ],
        Err(e) => vec![
            Check::failed("database", e),
            Check::failed("schema", "unknown while the database is unreachable"),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_follow_the_checks_and_a_vanished_check_fails() {
        let mut known = BTreeSet::new();
        let all = [
            Check::ok("nats"),
            Check::ok("stream"),
            Check::ok("database"),
        ];
        let (ready, values) = gauge_values(&mut known, Some(&all));
        assert!(ready);
        assert_eq!(
            values,
            vec![("database", true), ("nats", true), ("stream", true)]
        );

        // NATS down: the worker reports no `stream` check at all.
        let down = [Check::failed("nats", "disconnected"), Check::ok("database")];
        let (ready, values) = gauge_values(&mut known, Some(&down));
        assert!(!ready);
        assert_eq!(
            values,
            vec![("database", true), ("nats", false), ("stream", false)]
        );

        let (ready, values) = gauge_values(&mut known, Some(&all));
        assert!(ready);
        assert!(values.iter().all(|(_, ok)| *ok));
    }

    #[test]
    fn no_answer_fails_every_known_check() {
        let mut known = BTreeSet::new();
        let (ready, values) = gauge_values(&mut known, None);
        assert!(!ready);
        assert!(values.is_empty());
        gauge_values(
            &mut known,
            Some(&[Check::ok("database"), Check::ok("schema")]),
        );
        let (ready, values) = gauge_values(&mut known, None);
        assert!(!ready);
        assert_eq!(values, vec![("database", false), ("schema", false)]);
    }
}
