//! A handler that panics answers 500 `internal_error` in the error body of `docs/api.md`
//! instead of dropping the connection, and is counted in `http_panics_total{service}` and
//! logged with its route. The panic message goes to the log only: it may hold internals
//! a client has no business seeing.

use crate::error::ApiError;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::any::Any;
use std::sync::Arc;

/// What the client is told (the same for every panic).
const MESSAGE: &str = "the request could not be completed because of a fault in the service";

/// The panic's message, carried on the 500 from tower-http's panic handler (which sees
/// only the panic payload) to [`report`] (which sees the request's route).
#[derive(Debug, Clone)]
struct Panicked(Arc<str>);

/// The response to a panic, for `CatchPanicLayer::custom`.
pub(super) fn respond(payload: Box<dyn Any + Send + 'static>) -> Response {
    let message: Arc<str> = if let Some(text) = payload.downcast_ref::<&str>() {
        Arc::from(*text)
    } else if let Some(text) = payload.downcast_ref::<String>() {
        Arc::from(text.as_str())
    } else {
        Arc::from("(the panic payload is not text)")
    };
    let mut response =
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", MESSAGE).into_response();
    response.extensions_mut().insert(Panicked(message));
    response
}

/// The state of [`report`]: the service label and its `http_panics_total` counter.
#[derive(Debug, Clone)]
pub(super) struct Panics {
    service: &'static str,
    total: metrics::Counter,
}

impl Panics {
    /// Registers `http_panics_total{service}`, so it is exported as 0 before any panic.
    pub(super) fn register(service: &'static str) -> Self {
        let total = metrics::counter!("http_panics_total", "service" => service);
        total.increment(0);
        Panics { service, total }
    }
}

/// Middleware just outside the panic layer: counts and logs the 500s it made of panics.
pub(super) async fn report(State(panics): State<Panics>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let response = next.run(request).await;
    if let Some(Panicked(message)) = response.extensions().get::<Panicked>() {
        panics.total.increment(1);
        tracing::error!(
            service = panics.service,
            route = route.as_ref().map_or("unmatched", MatchedPath::as_str),
            %method,
            panic = %message,
            "A request handler panicked; answered 500"
        );
    }
    response
}
