//! Publishing a request's events to JetStream, pipelined: every publish is sent before
//! any PubAck is awaited, so a batch costs about one round trip, not one per event.

use crate::error::{Unstored, WebhookError};
use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use futures::future::join_all;
use service_kit::stream::{CORRELATION_HEADER, INGESTED_AT_HEADER};
use service_kit::telemetry::{TARGET, propagation};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::Instrument;

/// Bytes kept free for the headers in a NATS message: `Nats-Msg-Id` (eventId, at most
/// 128 characters), the correlation id (at most 128), `Ingested-At`, the trace context
/// (`traceparent`, 55; `tracestate`, at most 512) and the framing.
const HEADER_ALLOWANCE: usize = 2048;

/// One validated event ready to publish.
#[derive(Debug)]
pub struct Outgoing<'a> {
    pub subject: String,
    pub event_id: &'a str,
    /// The event's JSON exactly as the producer sent it.
    pub payload: Bytes,
}

/// Publishes to the events stream.
#[derive(Debug, Clone)]
pub struct Publisher {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    /// Set once the stream was created or verified.
    pub stream_ready: Arc<AtomicBool>,
    pub timeout: Duration,
}

impl Publisher {
    /// Publishes every event and waits for every PubAck. Returns how many JetStream
    /// reported as duplicates. Any failure fails the whole request (the producer
    /// retries it; deduplication makes that safe).
    pub async fn publish_all(
        &self,
        events: Vec<Outgoing<'_>>,
        correlation_id: &str,
    ) -> Result<usize, WebhookError> {
        let span = tracing::info_span!(
            target: TARGET,
            "publish",
            otel.kind = "producer",
            messaging.system = "nats",
            messaging.operation.type = "send",
            messaging.batch.message_count = events.len(),
            duplicates = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let result = self
            .send_and_confirm(events, correlation_id, &span)
            .instrument(span.clone())
            .await;
        match &result {
            Ok(duplicates) => span.record("duplicates", duplicates),
            Err(_) => span.record("otel.status_code", "ERROR"),
        };
        result
    }

    async fn send_and_confirm(
        &self,
        events: Vec<Outgoing<'_>>,
        correlation_id: &str,
        span: &tracing::Span,
    ) -> Result<usize, WebhookError> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(unavailable(Unstored::Disconnected));
        }
        if !self.stream_ready.load(Ordering::Relaxed) {
            return Err(unavailable(Unstored::StreamNotReady));
        }
        // An event the broker can never take must not get a retryable 503 (the producer
        // would retry forever); check them all first so nothing is published partially.
        let limit = self.client.max_payload().saturating_sub(HEADER_ALLOWANCE);
        if let Some(index) = events.iter().position(|e| e.payload.len() > limit) {
            return Err(WebhookError::EventTooLarge { index, limit });
        }
        let ingested_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos().to_string())
            .unwrap_or_default();
        // The publish span's `traceparent` (and `tracestate`), once for every message of
        // the request; empty, and nothing added per event, when trace export is off.
        let trace = propagation::headers(span);
        let mut pending = Vec::with_capacity(events.len());
        for event in events {
            let mut message = PublishMessage::build()
                .payload(event.payload)
                .message_id(event.event_id)
                .header(CORRELATION_HEADER, correlation_id)
                .header(INGESTED_AT_HEADER, ingested_at.as_str());
            for (name, value) in &trace {
                message = message.header(name.clone(), value.clone());
            }
            let ack = self
                .js
                .send_publish(event.subject, message)
                .await
                .map_err(|e| unavailable(Unstored::Send(e)))?;
            pending.push(ack.into_future());
        }
        let acks = tokio::time::timeout(self.timeout, join_all(pending))
            .await
            .map_err(|_| unavailable(Unstored::AckTimeout))?;
        let mut duplicates = 0;
        for ack in acks {
            match ack {
                Ok(ack) => duplicates += usize::from(ack.duplicate),
                Err(e) => return Err(unavailable(Unstored::Refused(e))),
            }
        }
        Ok(duplicates)
    }
}

fn unavailable(cause: Unstored) -> WebhookError {
    tracing::warn!(
        reason = cause.reason().as_str(),
        detail = %service_kit::db::error_text(&cause),
        "Events not stored in JetStream"
    );
    WebhookError::Unavailable(cause)
}
