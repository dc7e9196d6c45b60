//! What a client may cost an HTTP service: how long it may take to send its headers and its
//! body, how long a request may run, how long a connection may sit idle, and how many
//! connections may be open at once (`docs/operations.md`, "HTTP limits"). The same
//! variables in every service.

use crate::config::Written;
use crate::error::ApiError;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::{Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Seconds we ask a client to wait before retrying after a 503 of these limits.
const RETRY_AFTER_SECS: u32 = 1;

/// The timeouts and the connection cap of an HTTP service, from the environment.
///
/// The bounds (at most a day) keep every deadline representable; a value outside them
/// stops the program at start, naming the variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct HttpArgs {
    /// How long a client has to send a request's line and headers, counted from the moment
    /// its connection opened or, on a kept-alive connection, from the request's first
    /// byte. A client that is late is disconnected without an answer (slow-header guard).
    #[arg(long, env = "HTTP_HEADER_TIMEOUT", default_value = "10s",
          value_parser = crate::config::duration_up_to_a_day)]
    pub http_header_timeout: Duration,
    /// How long a client has to send the whole request body once its headers arrived,
    /// however it trickles; late: 408 `request_timeout` and the connection is closed.
    #[arg(long, env = "HTTP_BODY_TIMEOUT", default_value = "30s",
          value_parser = crate::config::duration_up_to_a_day)]
    pub http_body_timeout: Duration,
    /// How long from a request's headers to its response (body upload included); late: 503
    /// `unavailable` with `Retry-After`. Keep it above HTTP_BODY_TIMEOUT.
    #[arg(long, env = "HTTP_REQUEST_TIMEOUT", default_value = "60s",
          value_parser = crate::config::duration_up_to_a_day)]
    pub http_request_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request before it is closed.
    #[arg(long, env = "HTTP_IDLE_TIMEOUT", default_value = "75s",
          value_parser = crate::config::duration_up_to_a_day)]
    pub http_idle_timeout: Duration,
    /// Most connections open at once. A connection beyond is answered 503 `unavailable`
    /// with `Retry-After` and closed, instead of waiting in a queue.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", default_value = "1024",
          value_parser = crate::config::positive)]
    pub http_max_connections: usize,
}

impl Default for HttpArgs {
    /// The defaults of the variables.
    fn default() -> Self {
        HttpArgs {
            http_header_timeout: Duration::from_secs(10),
            http_body_timeout: Duration::from_secs(30),
            http_request_timeout: Duration::from_secs(60),
            http_idle_timeout: Duration::from_secs(75),
            http_max_connections: 1024,
        }
    }
}

/// Middleware over a whole router: the body deadline and the request timeout.
///
/// tower-http's `RequestBodyTimeoutLayer` restarts its clock at every chunk, so a client
/// sending a byte now and then would never be cut off, and its `TimeoutLayer` answers with
/// an empty body; hence one deadline for the whole body here, and the services' JSON errors.
pub(crate) async fn limit_request(
    State(args): State<HttpArgs>,
    request: Request,
    next: Next,
) -> Response {
    // A request without a body (every GET) needs no deadline, nor its allocation.
    let late = (!request.body().is_end_stream()).then(|| Arc::new(AtomicBool::new(false)));
    let request = match &late {
        Some(late) => {
            let deadline = Instant::now() + args.http_body_timeout;
            request.map(|body| Body::new(DeadlineBody::new(body, deadline, late.clone())))
        }
        None => request,
    };
    match tokio::time::timeout(args.http_request_timeout, next.run(request)).await {
        // The handler saw the body fail, and answered for that; the client is told why.
        Ok(_) if late.is_some_and(|late| late.load(Ordering::Relaxed)) => {
            metrics::counter!("http_timeouts_total", "kind" => "body").increment(1);
            closing(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {}; send the request again",
                    Written(args.http_body_timeout)
                ),
            ))
        }
        Ok(response) => response,
        Err(_elapsed) => {
            metrics::counter!("http_timeouts_total", "kind" => "request").increment(1);
            tracing::warn!(
                timeout = %Written(args.http_request_timeout),
                "A request outlasted the request timeout"
            );
            closing(
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    format!(
                        "the request was not answered within {}; retry after Retry-After seconds",
                        Written(args.http_request_timeout)
                    ),
                )
                .with_retry_after(RETRY_AFTER_SECS),
            )
        }
    }
}

/// The answer to a connection beyond `HTTP_MAX_CONNECTIONS`.
pub(crate) fn over_capacity() -> Response {
    closing(
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the server is at its connection limit; retry after Retry-After seconds",
        )
        .with_retry_after(RETRY_AFTER_SECS),
    )
}

/// The error, and the connection closed after it: what is left of the request (an unread
/// body, an abandoned handler) must not be taken for the next request.
fn closing(error: ApiError) -> Response {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The body did not arrive within `HTTP_BODY_TIMEOUT`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within the body timeout")]
struct BodyTimedOut;

/// A request body that fails once its deadline passed before its end arrived, and says so
/// in `late` (the handler reading it sees only an error reading the body).
struct DeadlineBody {
    inner: Body,
    deadline: Instant,
    /// Created on the first wait, so a body already received costs no timer.
    sleep: Option<Pin<Box<Sleep>>>,
    late: Arc<AtomicBool>,
}

impl DeadlineBody {
    fn new(inner: Body, deadline: Instant, late: Arc<AtomicBool>) -> Self {
        DeadlineBody {
            inner,
            deadline,
            sleep: None,
            late,
        }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        ready!(sleep.as_mut().poll(cx));
        this.late.store(true, Ordering::Relaxed);
        Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::{get, post};
    use tower::ServiceExt as _;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn limits(body_secs: u64, request_secs: u64) -> HttpArgs {
        HttpArgs {
            http_body_timeout: Duration::from_secs(body_secs),
            http_request_timeout: Duration::from_secs(request_secs),
            ..HttpArgs::default()
        }
    }

    fn app(args: HttpArgs) -> Router {
        Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    "done"
                }),
            )
            .route(
                "/echo",
                post(|body: Bytes| async move {
                    // As the services do: a body that cannot be read is the client's fault.
                    (StatusCode::OK, body)
                }),
            )
            .layer(axum::middleware::from_fn_with_state(args, limit_request))
    }

    async fn error_code(response: Response) -> (StatusCode, Option<String>, String) {
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap_or_default();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
        (status, retry_after, code)
    }

    #[tokio::test(start_paused = true)]
    async fn a_handler_outlasting_the_request_timeout_gets_503_unavailable_with_retry_after()
    -> TestResult {
        let request = Request::get("/slow").body(Body::empty())?;
        let response = app(limits(30, 60)).oneshot(request).await?;
        assert_eq!(
            response
                .headers()
                .get(header::CONNECTION)
                .map(HeaderValue::as_bytes),
            Some(&b"close"[..])
        );
        let (status, retry_after, code) = error_code(response).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert_eq!(code, "unavailable");
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_still_arriving_at_the_body_timeout_gets_408() -> TestResult {
        let body = Body::new(Trickle {
            next: Box::pin(tokio::time::sleep(Duration::ZERO)),
        });
        let started = Instant::now();
        let request = Request::post("/echo").body(body)?;
        let response = app(limits(5, 60)).oneshot(request).await?;
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        let (status, retry_after, code) = error_code(response).await;
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
        assert_eq!(retry_after, None);
        assert_eq!(code, "request_timeout");
        Ok(())
    }

    #[test]
    fn the_default_is_what_an_empty_environment_gives() -> TestResult {
        #[derive(Debug, clap::Parser)]
        struct Service {
            #[command(flatten)]
            http: HttpArgs,
        }
        let parsed = <Service as clap::Parser>::try_parse_from(["service"])?;
        assert_eq!(parsed.http, HttpArgs::default());
        Ok(())
    }

    /// A client that sends a byte every second and never finishes.
    struct Trickle {
        next: Pin<Box<Sleep>>,
    }

    impl HttpBody for Trickle {
        type Data = Bytes;
        type Error = axum::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
            ready!(self.next.as_mut().poll(cx));
            self.next
                .as_mut()
                .reset(Instant::now() + Duration::from_secs(1));
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_arriving_in_time_reaches_the_handler() -> TestResult {
        let request = Request::post("/echo").body(Body::from("hello"))?;
        let response = app(limits(5, 60)).oneshot(request).await?;
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(response.into_body(), 64).await?;
        assert_eq!(&bytes[..], b"hello");
        Ok(())
    }
}
