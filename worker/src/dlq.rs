//! The dead-letter stream: messages that can never be stored, kept with the original
//! payload and headers plus why, how often delivered, and where they came from.

use crate::store::Rejection;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage, stream};
use std::time::Duration;

/// Headers added to a dead letter.
pub const REASON_HEADER: &str = "Dlq-Reason";
pub const DETAIL_HEADER: &str = "Dlq-Detail";
pub const DELIVERY_COUNT_HEADER: &str = "Dlq-Delivery-Count";
pub const SUBJECT_HEADER: &str = "Dlq-Original-Subject";
pub const SEQUENCE_HEADER: &str = "Dlq-Original-Sequence";
pub const FAILED_AT_HEADER: &str = "Dlq-Failed-At";

/// Publishes dead letters to the DLQ stream.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    js: jetstream::Context,
    stream: String,
}

impl DeadLetters {
    pub fn new(js: jetstream::Context, stream: String) -> Self {
        DeadLetters { js, stream }
    }

    /// Creates the DLQ stream if missing. Limits retention (kept until an operator purges
    /// it), `DiscardNew` so a full DLQ refuses (and the message stays in the events stream)
    /// rather than silently dropping older dead letters.
    pub async fn ensure_stream(&self, subject_prefix: &str) -> Result<(), String> {
        let config = stream::Config {
            name: self.stream.clone(),
            subjects: vec![format!("dlq.{subject_prefix}.>")],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::New,
            max_bytes: 1 << 30,
            duplicate_window: Duration::from_secs(120),
            description: Some("Events that can never be stored, with the reason".into()),
            ..Default::default()
        };
        self.js
            .get_or_create_stream(config)
            .await
            .map(|_| ())
            .map_err(|e| format!("cannot create DLQ stream {}: {e}", self.stream))
    }

    /// Publishes `message` to the DLQ and waits for the PubAck. Idempotent: a redelivered
    /// message dead-lettered twice is deduplicated by its origin (`<stream>:<sequence>`).
    pub async fn publish(
        &self,
        message: &jetstream::Message,
        rejection: &Rejection,
    ) -> Result<(), String> {
        let info = message.info().map_err(|e| e.to_string())?;
        let mut headers = HeaderMap::new();
        if let Some(original) = &message.headers {
            for (name, values) in original.iter() {
                // The original Nats-Msg-Id (the eventId) would make the DLQ drop a second
                // poison message that reuses an id; the origin identifies it instead.
                if AsRef::<str>::as_ref(name).eq_ignore_ascii_case("Nats-Msg-Id") {
                    continue;
                }
                for value in values {
                    headers.append(name.clone(), value.clone());
                }
            }
        }
        let origin = format!("{}:{}", info.stream, info.stream_sequence);
        headers.insert("Nats-Msg-Id", origin.as_str());
        headers.insert(REASON_HEADER, rejection.reason);
        headers.insert(DETAIL_HEADER, sanitize(&rejection.detail).as_str());
        headers.insert(DELIVERY_COUNT_HEADER, info.delivered.to_string().as_str());
        headers.insert(SUBJECT_HEADER, message.subject.as_str());
        headers.insert(SEQUENCE_HEADER, info.stream_sequence.to_string().as_str());
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        headers.insert(FAILED_AT_HEADER, now.as_str());

        let publish = PublishMessage::build()
            .payload(message.payload.clone())
            .headers(headers);
        self.js
            .send_publish(format!("dlq.{}", message.subject), publish)
            .await
            .map_err(|e| e.to_string())?
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Header values are one line of bounded length.
fn sanitize(detail: &str) -> String {
    let one_line: String = detail
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    one_line.chars().take(1024).collect()
}
