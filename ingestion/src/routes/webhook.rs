//! `POST /webhook/event` (alias `POST /webhook`): one event or an array of 1..=1000.
//!
//! Checks run cheapest first and nothing is published unless every event is valid:
//! content type (415), size (413), signature (401), JSON (400), batch size (422),
//! every event against the spec (422), then hand the events to the coalescer and await the
//! PubAck of every message holding them (202/503).

use crate::coalesce::{Coalescer, pack::Event};
use crate::correlation::CorrelationId;
use crate::error::{Failure, Malformed, Outcome, Rejection, WebhookError};
use crate::signature;
use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::{MatchedPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt as _;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use service_kit::ratelimit::{Client, PeerIp};
use service_kit::telemetry::{TARGET, propagation};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// Largest number of events in one request.
pub const MAX_BATCH: usize = 1000;

/// Most bytes of a refused request's body read and thrown away before the answer. A
/// client that sends its whole body before reading (Python's urllib, for one) would
/// otherwise get a reset instead of the answer: a socket closed with unread data sends
/// RST, and the client's system discards the answer it had not read yet. A body declared
/// larger is not drained at all (its client would be reset anyway).
pub const DRAIN_MAX_BYTES: usize = 16 * 1024 * 1024;

/// Longest the answer to a refused request waits for its body to be drained.
pub const DRAIN_MAX_TIME: Duration = Duration::from_secs(5);

/// What the handler needs.
#[derive(Debug)]
pub struct WebhookState {
    pub coalescer: Coalescer,
    pub subject_prefix: String,
    pub max_body_bytes: usize,
    /// The signing keys; `None` when `WEBHOOK_SECRET` is unset (no signature check).
    pub signatures: Option<signature::Verifier>,
    /// The per-producer rate limits.
    pub limits: crate::ratelimit::ProducerLimits,
    pub counters: EventCounters,
}

/// The event counters, every label registered at start (exported as 0 before the first
/// event) rather than looked up on every request.
#[derive(Debug)]
pub struct EventCounters {
    /// `ingestion_events_accepted_total{source}`, indexed by `Source as usize`.
    accepted: [metrics::Counter; shared_events::Source::ALL.len()],
    /// `ingestion_events_rejected_total{reason}`, indexed by `Rejection as usize`.
    rejected: [metrics::Counter; Rejection::ALL.len()],
    /// `ingestion_events_failed_total{reason}`, indexed by `Failure as usize`.
    failed: [metrics::Counter; Failure::ALL.len()],
}

impl EventCounters {
    /// Call after `service_kit::metrics::install()`: a counter registered before the
    /// recorder counts into nothing.
    pub fn register() -> Self {
        let registered = |counter: metrics::Counter| {
            counter.increment(0);
            counter
        };
        EventCounters {
            accepted: shared_events::Source::ALL.map(|source| {
                registered(metrics::counter!(
                    "ingestion_events_accepted_total", "source" => source.as_str()))
            }),
            rejected: Rejection::ALL.map(|reason| {
                registered(metrics::counter!(
                    "ingestion_events_rejected_total", "reason" => reason.as_str()))
            }),
            failed: Failure::ALL.map(|reason| {
                registered(metrics::counter!(
                    "ingestion_events_failed_total", "reason" => reason.as_str()))
            }),
        }
    }

    fn count(&self, outcome: Outcome, events: u64) {
        match outcome {
            Outcome::Rejected(reason) => self.rejected[reason as usize].increment(events),
            Outcome::Failed(reason) => self.failed[reason as usize].increment(events),
        }
    }
}

/// Every event of the request is stored in JetStream.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// Events in the request (duplicates included).
    #[schema(example = 1)]
    accepted: usize,
    /// Events ingestion knows are duplicates: repeats of an eventId within the request,
    /// and the events of messages JetStream recognised as re-sent within its duplicate
    /// window (an identical request sent again, usually). Not a way to learn whether an
    /// event was stored before: one stored earlier is counted only when it travels again in
    /// a message identical to its first.
    #[schema(example = 0)]
    duplicates: usize,
}

/// Receives one event or an array of 1 to 1000 events.
///
/// Checks run cheapest first and nothing is published unless every event is valid:
/// content type (415), size (413), signature (401), JSON (400), batch size (422), every
/// event against the spec (422), then publish (concurrent requests' events share messages)
/// and await the PubAck of every message holding the request's events (202, or 503 for
/// the whole request). When `WEBHOOK_SECRET` is set, requests are signed with one of its
/// secrets in either scheme: `X-Webhook-Timestamp: <unix seconds>` and
/// `X-Webhook-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>">`, or
/// Standard Webhooks' `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64
/// HMAC-SHA256 of "<id>.<timestamp>.<raw body>">` (several, space-separated, allowed).
#[utoipa::path(
    post,
    path = "/webhook/event",
    tag = "webhook",
    request_body(
        content = crate::api_doc::EventBody,
        content_type = "application/json",
        description = "One event, or a JSON array of 1 to 1000 events (`Content-Type: application/json`, a charset parameter is fine).",
    ),
    params(
        ("X-Correlation-ID" = Option<String>, Header, description = "Your id for the request (1 to 128 printable ASCII characters); generated when absent. Echoed in the response and carried to the worker's logs and the DLQ."),
        ("X-Webhook-Timestamp" = Option<String>, Header, description = "Unix seconds, within 5 minutes of now; with `X-Webhook-Signature`, one of the two ways to sign a request when the service has `WEBHOOK_SECRET` set."),
        ("X-Webhook-Signature" = Option<String>, Header, description = "`sha256=<hex HMAC-SHA256 of \"<timestamp>.<raw body>\" with a secret>`."),
        ("webhook-id" = Option<String>, Header, description = "Standard Webhooks: the message id (no `.`); with `webhook-timestamp` and `webhook-signature`, the other way to sign a request."),
        ("webhook-timestamp" = Option<String>, Header, description = "Standard Webhooks: unix seconds, within 5 minutes of now."),
        ("webhook-signature" = Option<String>, Header, description = "Standard Webhooks: `v1,<base64 HMAC-SHA256 of \"<webhook-id>.<webhook-timestamp>.<raw body>\" with a secret>`, several separated by spaces; checked instead of `X-Webhook-Signature` when present."),
    ),
    responses(
        (status = 202, description = "Every event validated and durably stored in JetStream (the PubAck of every message holding them received).", body = Accepted,
         headers(("X-Correlation-ID" = String, description = "The request's correlation id"))),
        crate::api_doc::WebhookErrors,
    ),
)]
pub async fn receive(
    State(state): State<Arc<WebhookState>>,
    Extension(correlation): Extension<CorrelationId>,
    route: Option<MatchedPath>,
    PeerIp(peer): PeerIp,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let span = webhook_span(&correlation.0, route.as_ref(), &headers);
    let mut body = Upload {
        body,
        started: false,
    };
    let mut signed_by = None;
    let request = Request {
        correlation_id: &correlation.0,
        peer,
        headers: &headers,
    };
    let mut response = match handle(&state, &request, &mut body, &mut signed_by)
        .instrument(span.clone())
        .await
    {
        Ok(accepted) => (StatusCode::ACCEPTED, Json(accepted)).into_response(),
        Err(error) => {
            state.counters.count(error.outcome(), error.events() as u64);
            if error.refuses_request() {
                drain(&mut body, &headers).await;
                let mut response = error.into_response();
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                response
            } else {
                error.into_response()
            }
        }
    };
    if let Some(key) = signed_by {
        response.extensions_mut().insert(key);
    }
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response
}

/// The request's server span, for trace export only (disabled, and free, when export is
/// off). It continues the producer's trace when the request carries a `traceparent`.
fn webhook_span(
    correlation_id: &str,
    route: Option<&MatchedPath>,
    headers: &HeaderMap,
) -> tracing::Span {
    let span = tracing::info_span!(
        target: TARGET,
        "webhook",
        otel.kind = "server",
        http.request.method = "POST",
        http.route = route.map(MatchedPath::as_str),
        correlation_id,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    propagation::continue_http_trace(&span, headers);
    span
}

/// What the handler knows of a request besides its body.
#[derive(Debug)]
struct Request<'a> {
    correlation_id: &'a str,
    /// The connection's peer: the producer of an unsigned request, unless proxies of our
    /// own stand in front (`TRUSTED_PROXY_HOPS`).
    peer: IpAddr,
    headers: &'a HeaderMap,
}

async fn handle(
    state: &WebhookState,
    request: &Request<'_>,
    body: &mut Upload,
    signed_by: &mut Option<signature::SigningKeyId>,
) -> Result<Accepted, WebhookError> {
    let headers = request.headers;
    if !is_json(headers) {
        return Err(WebhookError::UnsupportedMediaType);
    }
    let limit = state.max_body_bytes;
    if declared_length(headers).is_some_and(|len| len > limit) {
        return Err(WebhookError::PayloadTooLarge { limit });
    }
    // The headers are checked before the body is read, the signature after.
    let signed = match &state.signatures {
        Some(_) => {
            Some(signature::Signed::from_headers(headers).map_err(WebhookError::Unauthorized)?)
        }
        None => None,
    };
    let body = read_body(body, limit).await?;
    if let (Some(verifier), Some(signed)) = (&state.signatures, &signed) {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let key = verifier
            .verify(signed, &body, now)
            .map_err(WebhookError::Unauthorized)?;
        *signed_by = Some(key);
    }

    let events = parse(&body)?;
    let producer = state.limits.producer(*signed_by, request.peer, headers);
    if let Err(refused) = state.limits.take(producer, events.len(), body.len()) {
        // The address only here, at debug: the counter's label says `ip` for all of them.
        tracing::debug!(
            producer = %producer.label(),
            client_ip = ?match producer { Client::Ip(ip) => Some(ip), _ => None },
            quota = refused.quota.as_str(),
            wait = ?refused.wait,
            "Rate limited"
        );
        return Err(WebhookError::RateLimited {
            events: events.len(),
            quota: refused.quota,
            retry_after: service_kit::ratelimit::retry_after_secs(refused.wait),
        });
    }
    let mut details = Vec::new();
    let mut outgoing = Vec::with_capacity(events.len());
    let mut per_source = [0u64; shared_events::Source::ALL.len()];
    for (index, (value, payload)) in events.iter().enumerate() {
        match shared_events::validate(value) {
            Ok(event) => {
                per_source[event.source as usize] += 1;
                outgoing.push(Event {
                    subject: format!("{}.{}", state.subject_prefix, event.subject_suffix()),
                    event_id: event.event_id.to_owned(),
                    payload: payload.clone(),
                });
            }
            Err(errors) => {
                // The id helps the producer find the event, unless it is itself too long
                // to be one: a 10,000-character id is not echoed back a dozen times.
                let event_id = value
                    .get("eventId")
                    .and_then(Value::as_str)
                    .filter(|id| id.chars().count() <= shared_events::MAX_EVENT_ID_CHARS);
                details.extend(errors.into_iter().map(|e| {
                    serde_json::json!({"index": index, "eventId": event_id,
                                       "field": e.field, "reason": e.reason})
                }));
            }
        }
    }
    if !details.is_empty() {
        return Err(WebhookError::Validation {
            events: events.len(),
            details,
        });
    }

    let accepted = outgoing.len();
    let duplicates = state
        .coalescer
        .publish_all(outgoing, request.correlation_id)
        .await?;
    for (counter, events) in state.counters.accepted.iter().zip(per_source) {
        counter.increment(events);
    }
    tracing::debug!(
        accepted,
        duplicates,
        signing_key = signed_by.map(|key| key.to_string()),
        "Events accepted"
    );
    Ok(Accepted {
        accepted,
        duplicates,
    })
}

/// `application/json`, with or without parameters such as `charset`.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// The body's `Content-Length`, when declared.
fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

/// The request body: borrowed by the handler, so that what is left of it can still be
/// drained when the request is refused.
#[derive(Debug)]
struct Upload {
    body: Body,
    /// Whether reading began: for a client that sent `Expect: 100-continue`, that is what
    /// told it to send the body.
    started: bool,
}

/// Reads the body, up to `limit` bytes.
async fn read_body(upload: &mut Upload, limit: usize) -> Result<Bytes, WebhookError> {
    upload.started = true;
    match http_body_util::Limited::new(&mut upload.body, limit)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(WebhookError::PayloadTooLarge { limit })
        }
        Err(e) => Err(WebhookError::MalformedJson(Malformed::Read(e))),
    }
}

/// Reads and discards what is left of a refused request's body, within [`DRAIN_MAX_BYTES`]
/// and [`DRAIN_MAX_TIME`], so that its client can read the answer.
async fn drain(upload: &mut Upload, headers: &HeaderMap) {
    if declared_length(headers).is_some_and(|len| len > DRAIN_MAX_BYTES) {
        return;
    }
    // A client waiting for `100 Continue` has sent nothing yet and reads the answer
    // instead; reading now would ask it for the body.
    let waits_for_continue = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if waits_for_continue && !upload.started {
        return;
    }
    let discard = async {
        let mut read = 0;
        while read <= DRAIN_MAX_BYTES {
            match upload.body.frame().await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
                // The end, or a body that failed (its client went away, or it was late).
                None | Some(Err(_)) => return,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_MAX_TIME, discard).await;
}

/// Parses the body into events, each with its own bytes exactly as sent (published
/// verbatim, so unknown fields and number formats survive untouched).
fn parse(body: &Bytes) -> Result<Vec<(Value, Bytes)>, WebhookError> {
    let malformed = |e: serde_json::Error| WebhookError::MalformedJson(Malformed::Json(e));
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {
            let value: Value = serde_json::from_slice(body).map_err(malformed)?;
            Ok(vec![(value, body.clone())])
        }
        Some(b'[') => {
            let raw: Vec<&RawValue> = serde_json::from_slice(body).map_err(malformed)?;
            if raw.is_empty() || raw.len() > MAX_BATCH {
                return Err(WebhookError::BatchSize(raw.len()));
            }
            raw.into_iter()
                .map(|r| {
                    let value: Value = serde_json::from_str(r.get()).map_err(malformed)?;
                    Ok((value, body.slice_ref(r.get().as_bytes())))
                })
                .collect()
        }
        _ => Err(WebhookError::MalformedJson(Malformed::NotObjectOrArray)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_elements_keep_their_exact_bytes() {
        let body = Bytes::from_static(br#" [ {"a": 1.50, "b":[1]} , {"c":"x"} ] "#);
        let events = parse(&body).unwrap_or_default();
        assert_eq!(events.len(), 2);
        assert_eq!(&events[0].1[..], br#"{"a": 1.50, "b":[1]}"#);
        assert_eq!(&events[1].1[..], br#"{"c":"x"}"#);
    }

    #[test]
    fn scalars_and_broken_json_are_malformed() {
        for body in [&b"42"[..], b"\"x\"", b"", b"{", b"[{}", b"null"] {
            let result = parse(&Bytes::copy_from_slice(body));
            assert!(
                matches!(result, Err(WebhookError::MalformedJson(_))),
                "{body:?}"
            );
        }
    }

    #[test]
    fn empty_and_oversized_batches_are_refused_by_size() {
        assert!(matches!(
            parse(&Bytes::from_static(b"[]")),
            Err(WebhookError::BatchSize(0))
        ));
        let big = format!("[{}]", vec!["{}"; 1001].join(","));
        assert!(matches!(
            parse(&Bytes::from(big)),
            Err(WebhookError::BatchSize(1001))
        ));
    }

    #[test]
    fn json_content_types_with_parameters_are_accepted() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "Application/JSON; charset=utf-8"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        );
        assert!(is_json(&h));
        h.insert(
            header::CONTENT_TYPE,
            "text/plain".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert!(!is_json(&h));
        assert!(!is_json(&HeaderMap::new()));
    }
}
