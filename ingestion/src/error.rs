//! Every way a webhook request can fail, mapped to the status codes of `docs/api.md`.

use crate::ratelimit::Exceeded;
use crate::signature::SignatureError;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use service_kit::error::ApiError;
use service_kit::error::error_text;
use std::sync::Arc;

/// An enum of metric labels with `ALL` (in declaration order, so `value as usize` indexes
/// it) and `as_str`, from one list: the labels registered at start and the labels counted
/// cannot drift apart.
macro_rules! labels {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $label:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($variant,)+
        }

        impl $name {
            pub const ALL: [$name; [$($label),+].len()] = [$($name::$variant),+];

            /// The `reason` label.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }
        }
    };
}

labels! {
    /// Why a request was refused, its producer being at fault: the `reason` of
    /// `ingestion_events_rejected_total`, and the request's `error.code` (the one place
    /// each code is spelled).
    Rejection {
        UnsupportedMediaType => "unsupported_media_type",
        PayloadTooLarge => "payload_too_large",
        Unauthorized => "unauthorized",
        MalformedJson => "malformed_json",
        BatchSize => "batch_size",
        ValidationFailed => "validation_failed",
        RateLimited => "rate_limited",
    }
}

impl Rejection {
    /// The status of a request refused for this reason (`docs/api.md`).
    pub const fn status(self) -> StatusCode {
        match self {
            Rejection::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Rejection::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::Unauthorized => StatusCode::UNAUTHORIZED,
            Rejection::MalformedJson => StatusCode::BAD_REQUEST,
            Rejection::BatchSize | Rejection::ValidationFailed => StatusCode::UNPROCESSABLE_ENTITY,
            Rejection::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

labels! {
    /// Why events could not be stored, JetStream or we being at fault (503, the producer
    /// retries): the `reason` of `ingestion_events_failed_total`.
    Failure {
        NatsDisconnected => "nats_disconnected",
        StreamNotReady => "stream_not_ready",
        StreamNotFound => "stream_not_found",
        StreamFull => "stream_full",
        PublishError => "publish_error",
        PubackTimeout => "puback_timeout",
    }
}

/// Which event counter a refused request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Rejected(Rejection),
    Failed(Failure),
}

/// Why a webhook request was not accepted. The answer's `error.message` is the error with
/// its causes ([`error_text`]); its status and `error.code` are [`WebhookError::status_and_code`].
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// One event is larger than the broker accepts in a message: permanent, so a 413
    /// rather than a 503 the producer would retry forever.
    #[error("event {index} is larger than {limit} bytes, the most one event may take")]
    EventTooLarge { index: usize, limit: usize },
    #[error(transparent)]
    Unauthorized(SignatureError),
    #[error("the body must be a JSON event object or an array of them")]
    MalformedJson(#[source] Malformed),
    #[error("a batch must hold 1 to 1000 events (got {0})")]
    BatchSize(usize),
    /// Every problem of every event: `{"index","eventId","field","reason"}`.
    #[error("{} problem(s) found in {events} event(s); nothing was accepted", .details.len())]
    Validation { events: usize, details: Vec<Value> },
    /// The producer is over its quota of events or bytes per second
    /// (`RATE_LIMIT_EVENTS_PER_SEC`, `RATE_LIMIT_BYTES_PER_SEC`); retry after
    /// `retry_after` s.
    #[error(
        "this producer sent more {} per second than its quota; retry after Retry-After seconds",
        .quota.as_str()
    )]
    RateLimited {
        events: usize,
        quota: Exceeded,
        retry_after: u32,
    },
    /// JetStream did not confirm every event; the client retries the whole request.
    #[error("events could not be stored durably, retry the whole request")]
    Unavailable(#[source] Unstored),
}

/// Why a body is not JSON events.
#[derive(Debug, thiserror::Error)]
pub enum Malformed {
    /// The body could not be read to its end (its client went away, or sent it too slowly).
    #[error("cannot read the body")]
    Read(#[source] axum::BoxError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("expected a JSON object or array")]
    NotObjectOrArray,
}

/// Why JetStream did not confirm every event of a request.
#[derive(Debug, thiserror::Error)]
pub enum Unstored {
    #[error("not connected to NATS")]
    Disconnected,
    #[error("the events stream is not verified yet")]
    StreamNotReady,
    #[error("no PubAck in time")]
    AckTimeout,
    /// A publish could not be sent.
    #[error(transparent)]
    Send(PublishError),
    /// JetStream answered a publish with an error.
    #[error(transparent)]
    Refused(PublishError),
    /// The coalescer stopped (the service is stopping) before the events were acknowledged.
    #[error("ingestion is stopping")]
    Stopped,
    /// The message holding some of the request's events failed; every request with events
    /// in it shares the cause.
    #[error(transparent)]
    Shared(Arc<Unstored>),
}

impl Unstored {
    /// The `reason` label it is counted under.
    pub fn reason(&self) -> Failure {
        match self {
            Unstored::Disconnected => Failure::NatsDisconnected,
            Unstored::StreamNotReady => Failure::StreamNotReady,
            Unstored::AckTimeout => Failure::PubackTimeout,
            Unstored::Send(_) | Unstored::Stopped => Failure::PublishError,
            Unstored::Shared(cause) => cause.reason(),
            Unstored::Refused(e) => match e.kind() {
                PublishErrorKind::TimedOut => Failure::PubackTimeout,
                PublishErrorKind::StreamNotFound => Failure::StreamNotFound,
                // No kind of its own: the server's `maximum messages/bytes exceeded`.
                _ if e.to_string().contains("maximum") => Failure::StreamFull,
                _ => Failure::PublishError,
            },
        }
    }
}

/// The `error.code` of a 503: JetStream did not store the events, the producer retries.
const UNAVAILABLE: &str = "unavailable";

/// Seconds we ask a client to wait before retrying after a 503.
const RETRY_AFTER_SECS: u32 = 1;

impl WebhookError {
    /// Whether the producer's input was at fault (rejected) or we were (failed), and why.
    pub fn outcome(&self) -> Outcome {
        Outcome::Rejected(match self {
            WebhookError::UnsupportedMediaType => Rejection::UnsupportedMediaType,
            WebhookError::PayloadTooLarge { .. } | WebhookError::EventTooLarge { .. } => {
                Rejection::PayloadTooLarge
            }
            WebhookError::Unauthorized(_) => Rejection::Unauthorized,
            WebhookError::MalformedJson(_) => Rejection::MalformedJson,
            WebhookError::BatchSize(_) => Rejection::BatchSize,
            WebhookError::Validation { .. } => Rejection::ValidationFailed,
            WebhookError::RateLimited { .. } => Rejection::RateLimited,
            WebhookError::Unavailable(cause) => return Outcome::Failed(cause.reason()),
        })
    }

    /// The answer's status and `error.code`: a refusal's code is its counter's label.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self.outcome() {
            Outcome::Rejected(reason) => (reason.status(), reason.as_str()),
            Outcome::Failed(_) => (StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE),
        }
    }

    /// Whether the request is refused whole, possibly before its body was read (413, 415,
    /// 401, 429): the answer closes the connection, and the body is drained first so
    /// that a client still sending it can read the answer.
    pub fn refuses_request(&self) -> bool {
        matches!(
            self,
            WebhookError::UnsupportedMediaType
                | WebhookError::PayloadTooLarge { .. }
                | WebhookError::EventTooLarge { .. }
                | WebhookError::Unauthorized(_)
                | WebhookError::RateLimited { .. }
        )
    }

    /// How many events the error concerns, for the event counters (1 when unknown).
    pub fn events(&self) -> usize {
        match self {
            WebhookError::Validation { events, .. } | WebhookError::RateLimited { events, .. } => {
                *events
            }
            WebhookError::BatchSize(n) => (*n).max(1),
            _ => 1,
        }
    }
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let error = ApiError::new(status, code, error_text(&self));
        match self {
            WebhookError::EventTooLarge { index, .. } => {
                error.with_details(vec![serde_json::json!({"index": index})])
            }
            WebhookError::Validation { details, .. } => error.with_details(details),
            WebhookError::RateLimited { retry_after, .. } => error.with_retry_after(retry_after),
            WebhookError::Unavailable(_) => error.with_retry_after(RETRY_AFTER_SECS),
            WebhookError::UnsupportedMediaType
            | WebhookError::PayloadTooLarge { .. }
            | WebhookError::Unauthorized(_)
            | WebhookError::MalformedJson(_)
            | WebhookError::BatchSize(_) => error,
        }
        .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::Scheme;
    use axum::http::header::RETRY_AFTER;

    /// The answer a client sees: status, `error.code`, `error.message`, `Retry-After`.
    fn answer(error: WebhookError) -> (u16, &'static str, String, Option<String>) {
        let (status, code) = error.status_and_code();
        let message = error_text(&error);
        let response = error.into_response();
        assert_eq!(response.status(), status);
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (status.as_u16(), code, message, retry_after)
    }

    #[test]
    fn each_error_answers_with_the_status_and_code_of_docs_api_md() {
        let json = serde_json::from_slice::<Value>(b"{").map_or_else(Malformed::Json, |_| {
            unreachable!("an unterminated object is not JSON")
        });
        let cases = [
            (
                WebhookError::UnsupportedMediaType,
                (
                    415,
                    "unsupported_media_type",
                    "Content-Type must be application/json",
                ),
            ),
            (
                WebhookError::PayloadTooLarge { limit: 10 },
                (
                    413,
                    "payload_too_large",
                    "the request body is larger than 10 bytes",
                ),
            ),
            (
                WebhookError::EventTooLarge { index: 2, limit: 5 },
                (
                    413,
                    "payload_too_large",
                    "event 2 is larger than 5 bytes, the most one event may take",
                ),
            ),
            (
                WebhookError::Unauthorized(SignatureError::Mismatch(Scheme::Legacy)),
                (
                    401,
                    "unauthorized",
                    "X-Webhook-Signature does not match the body",
                ),
            ),
            (
                WebhookError::MalformedJson(Malformed::NotObjectOrArray),
                (
                    400,
                    "malformed_json",
                    "the body must be a JSON event object or an array of them: expected a \
                     JSON object or array",
                ),
            ),
            (
                WebhookError::MalformedJson(json),
                (
                    400,
                    "malformed_json",
                    "the body must be a JSON event object or an array of them: EOF while \
                     parsing an object at line 1 column 1",
                ),
            ),
            (
                WebhookError::BatchSize(0),
                (
                    422,
                    "batch_size",
                    "a batch must hold 1 to 1000 events (got 0)",
                ),
            ),
            (
                WebhookError::Validation {
                    events: 3,
                    details: vec![Value::Null, Value::Null],
                },
                (
                    422,
                    "validation_failed",
                    "2 problem(s) found in 3 event(s); nothing was accepted",
                ),
            ),
        ];
        for (error, (status, code, message)) in cases {
            let (got_status, got_code, got_message, retry_after) = answer(error);
            assert_eq!((got_status, got_code), (status, code), "{message}");
            assert_eq!(got_message, message);
            assert_eq!(retry_after, None, "{message}");
        }
    }

    #[test]
    fn jetstream_failures_are_a_503_to_retry_after_a_second() {
        let (status, code, message, retry_after) =
            answer(WebhookError::Unavailable(Unstored::Disconnected));
        assert_eq!((status, code), (503, "unavailable"));
        assert_eq!(
            message,
            "events could not be stored durably, retry the whole request: not connected to NATS"
        );
        assert_eq!(retry_after.as_deref(), Some("1"));
    }

    #[test]
    fn a_producer_over_its_quota_is_told_which_and_when_to_retry() {
        let (status, code, message, retry_after) = answer(WebhookError::RateLimited {
            events: 4,
            quota: Exceeded::Bytes,
            retry_after: 7,
        });
        assert_eq!((status, code), (429, "rate_limited"));
        assert_eq!(
            message,
            "this producer sent more bytes per second than its quota; retry after Retry-After \
             seconds"
        );
        assert_eq!(retry_after.as_deref(), Some("7"));
    }

    #[test]
    fn a_refusal_counts_under_the_label_its_code_is() {
        for reason in Rejection::ALL {
            assert!(!reason.status().is_server_error(), "{}", reason.as_str());
        }
        let error = WebhookError::BatchSize(1001);
        let Outcome::Rejected(reason) = error.outcome() else {
            panic!("a batch size is the producer's fault");
        };
        assert_eq!(error.status_and_code().1, reason.as_str());
    }
}
