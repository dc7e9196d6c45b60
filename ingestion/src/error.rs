//! Every way a webhook request can fail, mapped to the status codes of `docs/api.md`.

use crate::ratelimit::Exceeded;
use crate::signature::SignatureError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use service_kit::error::ApiError;

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
    /// `ingestion_events_rejected_total`, and the request's `error.code`.
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

/// Why a webhook request was not accepted.
#[derive(Debug)]
pub enum WebhookError {
    UnsupportedMediaType,
    PayloadTooLarge {
        limit: usize,
    },
    /// One event is larger than the broker accepts in a message: permanent, so a 413
    /// rather than a 503 the producer would retry forever.
    EventTooLarge {
        index: usize,
        limit: usize,
    },
    Unauthorized(SignatureError),
    MalformedJson(String),
    BatchSize(usize),
    /// Every problem of every event: `{"index","eventId","field","reason"}`.
    Validation {
        events: usize,
        details: Vec<Value>,
    },
    /// The producer is over its quota of events or bytes per second
    /// (`RATE_LIMIT_EVENTS_PER_SEC`, `RATE_LIMIT_BYTES_PER_SEC`); retry after
    /// `retry_after` s.
    RateLimited {
        events: usize,
        quota: Exceeded,
        retry_after: u32,
    },
    /// JetStream did not confirm every event; the client retries the whole request.
    Unavailable {
        reason: Failure,
        detail: String,
    },
}

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
            WebhookError::Unavailable { reason, .. } => return Outcome::Failed(*reason),
        })
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
        let error = match self {
            WebhookError::UnsupportedMediaType => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Content-Type must be application/json",
            ),
            WebhookError::PayloadTooLarge { limit } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body is larger than {limit} bytes"),
            ),
            WebhookError::EventTooLarge { index, limit } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("event {index} is larger than {limit} bytes, the most one event may take"),
            )
            .with_details(vec![serde_json::json!({"index": index})]),
            WebhookError::Unauthorized(e) => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.message())
            }
            WebhookError::MalformedJson(detail) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the body must be a JSON event object or an array of them: {detail}"),
            ),
            WebhookError::BatchSize(n) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "batch_size",
                format!("a batch must hold 1 to 1000 events (got {n})"),
            ),
            WebhookError::Validation { events, details } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                format!(
                    "{} problem(s) found in {events} event(s); nothing was accepted",
                    details.len()
                ),
            )
            .with_details(details),
            WebhookError::RateLimited {
                quota, retry_after, ..
            } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "this producer sent more {} per second than its quota; retry after \
                     Retry-After seconds",
                    quota.as_str()
                ),
            )
            .with_retry_after(retry_after),
            WebhookError::Unavailable { detail, .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("events could not be stored durably, retry the whole request: {detail}"),
            )
            .with_retry_after(RETRY_AFTER_SECS),
        };
        error.into_response()
    }
}
