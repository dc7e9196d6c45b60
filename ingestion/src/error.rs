//! Every way a webhook request can fail, mapped to the status codes of `api.md`.

use crate::signature::SignatureError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use service_kit::error::ApiError;

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
    /// More events than `RATE_LIMIT_EVENTS_PER_SEC` allows; retry after `retry_after` s.
    RateLimited {
        events: usize,
        retry_after: u32,
    },
    /// JetStream did not confirm every event; the client retries the whole request.
    Unavailable {
        reason: &'static str,
        detail: String,
    },
}

/// Seconds we ask a client to wait before retrying after a 503.
const RETRY_AFTER_SECS: u32 = 1;

impl WebhookError {
    /// The metric label: the error code for rejections, the cause for failures.
    pub fn reason(&self) -> &'static str {
        match self {
            WebhookError::UnsupportedMediaType => "unsupported_media_type",
            WebhookError::PayloadTooLarge { .. } | WebhookError::EventTooLarge { .. } => {
                "payload_too_large"
            }
            WebhookError::Unauthorized(_) => "unauthorized",
            WebhookError::MalformedJson(_) => "malformed_json",
            WebhookError::BatchSize(_) => "batch_size",
            WebhookError::Validation { .. } => "validation_failed",
            WebhookError::RateLimited { .. } => "rate_limited",
            WebhookError::Unavailable { reason, .. } => reason,
        }
    }

    /// Whether the producer's input was at fault (rejected) or we were (failed).
    pub fn is_rejection(&self) -> bool {
        !matches!(self, WebhookError::Unavailable { .. })
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
            WebhookError::RateLimited { retry_after, .. } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "more events per second than this endpoint accepts; retry after Retry-After seconds",
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
