//! Serving a router with graceful shutdown and the shared HTTP middleware.

use axum::Router;
use std::future::Future;
use tokio::net::TcpListener;

mod connection;
pub mod limits;
mod panic;

pub use limits::HttpArgs;

/// Adds the request metrics middleware, labelled with the service name; turns a
/// handler's panic into a 500 `internal_error` counted in `http_panics_total{service}`;
/// answers unknown paths (404 `not_found`) and methods (405 `method_not_allowed`) with the
/// error body.
/// Call it after [`crate::metrics::install`], which the counter registers with.
pub fn instrument(router: Router, service: &'static str) -> Router {
    // Outermost last: the request metrics see the 500 a panic became.
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic::respond,
        ))
        .layer(axum::middleware::from_fn_with_state(
            panic::Panics::register(service),
            panic::report,
        ))
        .layer(axum::middleware::from_fn_with_state(
            service,
            crate::metrics::track_http,
        ))
}

/// An unknown path gets the error body too, not an empty 404.
async fn not_found() -> crate::error::ApiError {
    crate::error::ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; GET /api lists them",
    )
}

/// A known path with another method gets the error body too, not an empty 405.
async fn method_not_allowed() -> crate::error::ApiError {
    crate::error::ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take this method",
    )
}

/// Like [`serve`], but once `shutdown` resolved the requests in flight get at most `drain`
/// to finish, so a stuck client cannot hold the process past the bounded shutdown of
/// `docs/operations.md`.
pub async fn serve_with_drain(
    listener: TcpListener,
    router: Router,
    limits: HttpArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: std::time::Duration,
) -> std::io::Result<()> {
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        let _ = stopping_tx.send(());
    };
    let deadline = async {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(drain).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = serve(listener, router, limits, signal) => result,
        () = deadline => {
            tracing::warn!(?drain, "Requests still in flight after the drain timeout");
            Ok(())
        }
    }
}

/// Serves until `shutdown` resolves, then stops accepting and finishes the requests
/// already received (the lifecycle of `docs/operations.md`), each client held to `limits`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    connection::serve(listener, router, limits, shutdown).await;
    Ok(())
}
