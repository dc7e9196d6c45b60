//! The dead-letter stream: messages that can never be stored, kept with the original
//! payload and headers plus why, how often delivered, and where they came from; and the
//! operator's commands over it (`worker dlq ...`, in `admin`).

mod act;
pub mod admin;
mod entry;
mod inspect;
mod queue;

use crate::store::Rejection;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage, stream};
use bytes::Bytes;
use service_kit::stream::{
    CORRELATION_HEADER, INGESTED_AT_HEADER, StreamError, is_stream_not_found,
};
use std::time::Duration;

/// Headers added to a dead letter.
pub const REASON_HEADER: &str = "Dlq-Reason";
pub const DETAIL_HEADER: &str = "Dlq-Detail";
pub const DELIVERY_COUNT_HEADER: &str = "Dlq-Delivery-Count";
pub const SUBJECT_HEADER: &str = "Dlq-Original-Subject";
pub const SEQUENCE_HEADER: &str = "Dlq-Original-Sequence";
pub const FAILED_AT_HEADER: &str = "Dlq-Failed-At";
/// The PostgreSQL SQLSTATE of a row the database refused (`refused_by_database`).
pub const SQLSTATE_HEADER: &str = "Dlq-Sqlstate";
/// The original `Nats-Msg-Id` (ingestion sets it to the eventId), else the payload's
/// `eventId`: what a replay publishes as `Nats-Msg-Id` again. Absent when neither exists.
pub const EVENT_ID_HEADER: &str = "Dlq-Event-Id";
/// The position of a dead-lettered event in its multi-event message (absent for a
/// single-event message).
pub const INDEX_HEADER: &str = "Dlq-Original-Index";

/// How long a dead letter is kept unless `NATS_DLQ_MAX_AGE` says otherwise: a month covers
/// an incident, its review and a holiday in between, while the payloads (user data) do not
/// stay in the broker indefinitely.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Publishes dead letters to the DLQ stream.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    js: jetstream::Context,
    stream: String,
    max_age: Duration,
    replicas: usize,
}

impl DeadLetters {
    pub fn new(js: jetstream::Context, stream: String) -> Self {
        DeadLetters {
            js,
            stream,
            max_age: DEFAULT_MAX_AGE,
            replicas: 1,
        }
    }

    /// Replicas of the DLQ stream (`NATS_STREAM_REPLICAS`: a cluster keeps its dead
    /// letters through the loss of a node, as it keeps the events).
    pub fn with_replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// How long the broker keeps a dead letter (`NATS_DLQ_MAX_AGE`; zero keeps it until
    /// an operator purges it).
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Creates the DLQ stream if missing, or applies the configured max age and replicas
    /// to an existing one. Limits retention (kept until it expires or an operator purges it), `DiscardNew`
    /// so a full DLQ refuses (and the message stays in the events stream) rather than
    /// silently dropping older dead letters.
    pub async fn ensure_stream(&self, subject_prefix: &str) -> Result<(), StreamError> {
        let wanted = stream::Config {
            name: self.stream.clone(),
            subjects: vec![format!("dlq.{subject_prefix}.>")],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::New,
            max_bytes: 1 << 30,
            duplicate_window: Duration::from_secs(120),
            max_age: self.max_age,
            num_replicas: self.replicas,
            description: Some("Events that can never be stored, with the reason".into()),
            ..Default::default()
        };
        match self.js.get_stream(&self.stream).await {
            Ok(existing) => {
                let have = &existing.cached_info().config;
                if have.max_age == wanted.max_age && have.num_replicas == wanted.num_replicas {
                    return Ok(());
                }
                // Only the retention and the replicas change: the other settings may have
                // been tuned by hand.
                let updated = stream::Config {
                    max_age: wanted.max_age,
                    num_replicas: wanted.num_replicas,
                    ..have.clone()
                };
                tracing::info!(
                    stream = %self.stream,
                    max_age = ?wanted.max_age,
                    replicas = wanted.num_replicas,
                    "Applying the DLQ max age and replicas"
                );
                self.js
                    .update_stream(&updated)
                    .await
                    .map(|_| ())
                    .map_err(|source| StreamError::Update {
                        stream: self.stream.clone(),
                        source,
                    })
            }
            Err(e) if is_stream_not_found(&e) => self
                .js
                .create_stream(wanted)
                .await
                .map(|_| ())
                .map_err(|source| StreamError::Create {
                    stream: self.stream.clone(),
                    source,
                }),
            Err(source) => Err(StreamError::Lookup {
                stream: self.stream.clone(),
                source,
            }),
        }
    }

    /// Publishes `message` to the DLQ and waits for the PubAck. Idempotent: a redelivered
    /// message dead-lettered twice is deduplicated by its origin (`<stream>:<sequence>`).
    pub async fn publish(
        &self,
        message: &jetstream::Message,
        rejection: &Rejection,
    ) -> Result<(), PublishError> {
        let info = message.info().map_err(PublishError::NotJetStream)?;
        let mut headers = HeaderMap::new();
        let mut event_id = None;
        if let Some(original) = &message.headers {
            for (name, values) in original.iter() {
                // The original Nats-Msg-Id (the eventId) would make the DLQ drop a second
                // poison message that reuses an id; the origin identifies it instead.
                if AsRef::<str>::as_ref(name).eq_ignore_ascii_case("Nats-Msg-Id") {
                    event_id = values.first().map(|v| v.as_str().to_owned());
                    continue;
                }
                for value in values {
                    headers.append(name.clone(), value.clone());
                }
            }
        }
        let origin = format!("{}:{}", info.stream, info.stream_sequence);
        headers.insert("Nats-Msg-Id", origin.as_str());
        add_dlq_headers(&mut headers, &info, message.subject.as_str(), rejection);
        let event_id = event_id.filter(|id| !id.is_empty());
        if let Some(id) = event_id.or_else(|| entry::payload_event_id(&message.payload)) {
            headers.insert(EVENT_ID_HEADER, sanitize(&id).as_str());
        }
        self.send(
            format!("dlq.{}", message.subject),
            message.payload.clone(),
            headers,
        )
        .await
    }

    /// Publishes one event of a multi-event message alone, as the dead letter of the
    /// single-event message it would have been: its own JSON as the payload, its own
    /// correlation id and trace context, the message's `Ingested-At`, and the subject a
    /// single event of it is published to (so `worker dlq replay` sends it back as one).
    /// Idempotent: its `Nats-Msg-Id` is `<stream>:<sequence>:<index>`.
    pub async fn publish_event(
        &self,
        message: &jetstream::Message,
        event: &EventLetter<'_>,
        rejection: &Rejection,
    ) -> Result<(), PublishError> {
        let info = message.info().map_err(PublishError::NotJetStream)?;
        let mut headers = event.trace.clone().unwrap_or_default();
        // From the payload, not a header: a control character would break the message.
        headers.insert(CORRELATION_HEADER, sanitize(event.correlation_id).as_str());
        if let Some(at) = message
            .headers
            .as_ref()
            .and_then(|h| h.get(INGESTED_AT_HEADER))
        {
            headers.insert(INGESTED_AT_HEADER, at.clone());
        }
        let origin = format!("{}:{}:{}", info.stream, info.stream_sequence, event.index);
        headers.insert("Nats-Msg-Id", origin.as_str());
        add_dlq_headers(&mut headers, &info, event.subject, rejection);
        headers.insert(INDEX_HEADER, event.index.to_string().as_str());
        if let Some(id) = entry::payload_event_id(event.json) {
            headers.insert(EVENT_ID_HEADER, sanitize(&id).as_str());
        }
        self.send(
            format!("dlq.{}", event.subject),
            Bytes::copy_from_slice(event.json),
            headers,
        )
        .await
    }

    async fn send(
        &self,
        subject: String,
        payload: Bytes,
        headers: HeaderMap,
    ) -> Result<(), PublishError> {
        let publish = PublishMessage::build().payload(payload).headers(headers);
        self.js
            .send_publish(subject, publish)
            .await?
            .await
            .map(|_| ())
            .map_err(PublishError::from)
    }
}

/// One event of a multi-event message, as its dead letter needs it.
#[derive(Debug)]
pub struct EventLetter<'a> {
    /// Its position in the message.
    pub index: usize,
    /// Its JSON: the dead letter's payload.
    pub json: &'a [u8],
    pub correlation_id: &'a str,
    /// Its `traceparent` and `tracestate`, if any.
    pub trace: Option<HeaderMap>,
    /// The subject a single-event message of it would have had.
    pub subject: &'a str,
}

/// The `Dlq-*` headers every dead letter has.
fn add_dlq_headers(
    headers: &mut HeaderMap,
    info: &jetstream::message::Info<'_>,
    subject: &str,
    rejection: &Rejection,
) {
    headers.insert(REASON_HEADER, rejection.reason);
    headers.insert(DETAIL_HEADER, sanitize(&rejection.detail).as_str());
    if let Some(code) = &rejection.sqlstate {
        headers.insert(SQLSTATE_HEADER, code.as_str());
    }
    headers.insert(DELIVERY_COUNT_HEADER, info.delivered.to_string().as_str());
    headers.insert(SUBJECT_HEADER, subject);
    headers.insert(SEQUENCE_HEADER, info.stream_sequence.to_string().as_str());
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    headers.insert(FAILED_AT_HEADER, now.as_str());
}

/// Why a dead letter was not published; the message stays unacknowledged and is retried.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The message carries no JetStream metadata (its origin): never the case for a
    /// message delivered by a JetStream consumer.
    #[error("the message has no JetStream metadata")]
    NotJetStream(#[source] async_nats::Error),
    #[error("cannot publish to the DLQ stream")]
    Publish(#[from] jetstream::context::PublishError),
}

/// Header values are one line of bounded length.
fn sanitize(detail: &str) -> String {
    let one_line: String = detail
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    one_line.chars().take(1024).collect()
}
