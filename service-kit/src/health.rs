//! `/health/liveness`, `/health/readiness` and `/metrics`, the same on every service.

use axum::Json;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use futures::future::BoxFuture;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use std::sync::Arc;

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

/// The `database` and `schema` checks: the pool answers within 2 s, and the migrations
/// applied are the ones this binary knows (`schema::latest_version`).
pub async fn database_checks(pool: &deadpool_postgres::Pool) -> Vec<Check> {
    let applied = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        let client = pool.get().await.map_err(|e| e.to_string())?;
        crate::schema::applied_version(&client)
            .await
            .map_err(|e| e.to_string())
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
                format!("version {version}, expected {latest} (the worker applies migrations)"),
            ),
        ],
        Err(e) => vec![
            Check::failed("database", e),
            Check::failed("schema", "unknown while the database is unreachable"),
        ],
    }
}
