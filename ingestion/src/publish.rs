//! Writing one closed message to JetStream: its encoding (one event as itself, several as
//! `batch/1`), its headers and its `Nats-Msg-Id`. The coalescer decides what goes in a
//! message and awaits the PubAck this returns.

use crate::coalesce::pack::Packed;
use crate::error::{Unstored, WebhookError};
use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};
use bytes::Bytes;
use service_kit::batch;
use service_kit::stream::{CORRELATION_HEADER, INGESTED_AT_HEADER};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Bytes kept free for the headers in a NATS message: `Nats-Msg-Id` (eventId, at most
/// 128 characters), the correlation id (at most 128), `Ingested-At`, the trace context
/// (`traceparent`, 55; `tracestate`, at most 512), `Events-Encoding` and the framing.
pub const HEADER_ALLOWANCE: usize = 2048;

/// Publishes to the events stream.
#[derive(Debug, Clone)]
pub struct Publisher {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    /// Set once the stream was created or verified.
    pub stream_ready: Arc<AtomicBool>,
    /// How long a message's PubAck may take.
    pub timeout: Duration,
    /// The subject of multi-event messages, `<prefix>.batch` (within the stream's
    /// `<prefix>.>`, and never an event's: those have three tokens or more).
    pub batch_subject: String,
}

impl Publisher {
    /// Why nothing can be published now, if so: checked before a request's events are
    /// queued (a 503 at once rather than after a linger) and before each message is sent.
    pub fn unready(&self) -> Option<Unstored> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Some(Unstored::Disconnected);
        }
        if !self.stream_ready.load(Ordering::Relaxed) {
            return Some(Unstored::StreamNotReady);
        }
        None
    }

    /// The largest event the broker takes in a message of its own.
    pub fn event_limit(&self) -> usize {
        self.client.max_payload().saturating_sub(HEADER_ALLOWANCE)
    }

    /// Sends one message holding `events` (at least one) and returns its PubAck to await.
    /// One event travels in the single-event encoding (its own subject, `Nats-Msg-Id` =
    /// its eventId: the broker still deduplicates a re-sent single event), several as one
    /// `batch/1` message whose id follows their ids.
    pub async fn send(&self, events: &[Packed]) -> Result<PublishAckFuture, Unstored> {
        if let Some(cause) = self.unready() {
            return Err(cause);
        }
        let ingested_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos().to_string())
            .unwrap_or_default();
        let (subject, message) = match events {
            [one] => {
                let mut message = PublishMessage::build()
                    .payload(one.event.payload.clone())
                    .message_id(one.event.event_id.as_str())
                    .header(CORRELATION_HEADER, one.request.correlation_id.as_str());
                for (name, value) in one.request.trace_headers() {
                    message = message.header(name, value);
                }
                (one.event.subject.clone(), message)
            }
            _ => {
                let mut payload =
                    Vec::with_capacity(events.iter().map(Packed::cost).sum::<usize>() + 1);
                batch::encode(events.iter().map(Packed::outgoing), &mut payload);
                let id = batch::message_id(events.iter().map(|e| e.event.event_id.as_str()));
                let message = PublishMessage::build()
                    .payload(Bytes::from(payload))
                    .message_id(id)
                    .header(batch::ENCODING_HEADER, batch::BATCH_V1);
                (self.batch_subject.clone(), message)
            }
        };
        let message = message.header(INGESTED_AT_HEADER, ingested_at.as_str());
        self.js
            .send_publish(subject, message)
            .await
            .map_err(Unstored::Send)
    }
}

/// The 503 of a request whose events were not all stored, logged once per request.
pub fn unavailable(cause: Unstored) -> WebhookError {
    tracing::warn!(
        reason = cause.reason().as_str(),
        detail = %service_kit::error::error_text(&cause),
        "Events not stored in JetStream"
    );
    WebhookError::Unavailable(cause)
}
