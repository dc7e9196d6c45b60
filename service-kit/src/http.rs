//! Serving a router with graceful shutdown and the shared HTTP middleware.

use axum::Router;
use std::future::Future;
use tokio::net::TcpListener;

/// Adds the request metrics middleware, labelled with the service name.
pub fn instrument(router: Router, service: &'static str) -> Router {
    router.layer(axum::middleware::from_fn_with_state(
        service,
        crate::metrics::track_http,
    ))
}

/// Serves until `shutdown` resolves, then stops accepting and finishes the requests
/// already received (the lifecycle of `runtime.md`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
