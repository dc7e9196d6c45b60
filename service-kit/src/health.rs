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
