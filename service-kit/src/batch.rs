//! The multi-event message encoding of the events stream (`docs/events.md`, "Messages"):
//! many events in one JetStream message, each with its own correlation id and trace
//! context, so that the broker's cost (publish, PubAck, delivery, ack) is paid per message
//! rather than per event.
//!
//! A message with the [`ENCODING_HEADER`] set to [`BATCH_V1`] holds a JSON array of
//! [`Envelope`]s; a message without the header is one event, its payload the event's JSON
//! (the encoding every version reads). The worker reads both, so a rolling upgrade can
//! run old and new ingestion side by side.

use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use std::borrow::Cow;

/// The header that names a message's encoding; absent on single-event messages.
pub const ENCODING_HEADER: &str = "Events-Encoding";
/// Version 1 of the multi-event encoding: a JSON array of [`Envelope`]s.
pub const BATCH_V1: &str = "batch/1";

/// One event of a multi-event message, borrowed from the payload.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Envelope<'a> {
    /// The correlation id of the request that brought the event.
    #[serde(borrow)]
    pub correlation_id: Cow<'a, str>,
    /// That request's W3C trace context, when trace export is on.
    #[serde(borrow, default)]
    pub traceparent: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub tracestate: Option<Cow<'a, str>>,
    /// The event's JSON exactly as the producer sent it.
    #[serde(borrow)]
    pub event: &'a RawValue,
}

/// A multi-event payload that cannot be read: a fault of its producer, never of one event.
#[derive(Debug, thiserror::Error)]
#[error("unreadable {BATCH_V1} message")]
pub struct DecodeError(#[source] serde_json::Error);

/// The envelopes of a [`BATCH_V1`] payload, borrowing from it.
pub fn decode(payload: &[u8]) -> Result<Vec<Envelope<'_>>, DecodeError> {
    serde_json::from_slice(payload).map_err(DecodeError)
}

/// What ingestion knows of one event when it writes a message.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub correlation_id: &'a str,
    pub traceparent: Option<&'a str>,
    pub tracestate: Option<&'a str>,
    /// The event's JSON: must be one valid JSON value (ingestion has validated it).
    pub event: &'a [u8],
}

/// Appends the [`BATCH_V1`] payload of `events` to `out`.
pub fn encode<'a>(events: impl IntoIterator<Item = Outgoing<'a>>, out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, e) in events.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"correlationId\":");
        string(e.correlation_id, out);
        for (name, value) in [("traceparent", e.traceparent), ("tracestate", e.tracestate)] {
            if let Some(value) = value {
                out.extend_from_slice(b",\"");
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b"\":");
                string(value, out);
            }
        }
        out.extend_from_slice(b",\"event\":");
        out.extend_from_slice(e.event);
        out.push(b'}');
    }
    out.push(b']');
}

/// Bytes an event adds to a payload besides its JSON and its strings' escapes: the
/// envelope's names, quotes, braces and separators. For sizing a message before writing it.
pub fn envelope_overhead(e: &Outgoing<'_>) -> usize {
    const FIXED: usize = r#"{"correlationId":"","event":},"#.len();
    let trace = |name: &str, value: Option<&str>| value.map_or(0, |v| name.len() + v.len() + 6);
    FIXED
        + e.correlation_id.len()
        + trace("traceparent", e.traceparent)
        + trace("tracestate", e.tracestate)
}

/// A JSON string; writing to a `Vec` cannot fail.
fn string(value: &str, out: &mut Vec<u8>) {
    let _ = serde_json::to_writer(&mut *out, value);
}

/// The `Nats-Msg-Id` of a multi-event message: derived from its events' ids in order, so
/// that the same events sent again are a duplicate to JetStream, as a single event's id is.
pub fn message_id<'a>(event_ids: impl IntoIterator<Item = &'a str>) -> String {
    let mut hash = Sha256::new();
    for id in event_ids {
        hash.update(id.as_bytes());
        // Ids never hold a NUL (docs/events.md), so the join is unambiguous.
        hash.update([0u8]);
    }
    let digest = hash.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{BATCH_V1}:{hex}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn outgoing<'a>(correlation_id: &'a str, event: &'a str) -> Outgoing<'a> {
        Outgoing {
            correlation_id,
            traceparent: None,
            tracestate: None,
            event: event.as_bytes(),
        }
    }

    #[test]
    fn a_payload_reads_back_as_written_with_each_events_own_metadata() {
        let events = [
            outgoing("req-1", r#"{"eventId":"a","n":1}"#),
            Outgoing {
                traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
                tracestate: Some("k=v"),
                ..outgoing("req-\"2\"", "{\n  \"eventId\": \"b\"\n}")
            },
        ];
        let mut payload = Vec::new();
        encode(events, &mut payload);
        let read = decode(&payload).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].correlation_id, "req-1");
        assert_eq!(read[0].event.get(), r#"{"eventId":"a","n":1}"#);
        assert_eq!(read[0].traceparent, None);
        assert_eq!(read[1].correlation_id, "req-\"2\"");
        assert_eq!(read[1].event.get(), "{\n  \"eventId\": \"b\"\n}");
        assert_eq!(read[1].tracestate.as_deref(), Some("k=v"));
    }

    #[test]
    fn the_overhead_is_what_the_envelope_adds() {
        let e = Outgoing {
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            tracestate: Some("k=v"),
            ..outgoing("req-1", r#"{"eventId":"a"}"#)
        };
        let mut payload = Vec::new();
        encode([e, e], &mut payload);
        // Two envelopes, their separator counted in each, and the array's brackets.
        assert_eq!(
            payload.len(),
            2 * (envelope_overhead(&e) + e.event.len()) + 1
        );
    }

    #[test]
    fn message_ids_follow_the_events_and_their_order() {
        let id = message_id(["a", "b"]);
        assert_eq!(id, message_id(["a", "b"]));
        assert_ne!(id, message_id(["b", "a"]));
        assert_ne!(message_id(["ab"]), message_id(["a", "b"]));
        assert!(id.starts_with("batch/1:") && id.len() <= 128, "{id}");
    }

    #[test]
    fn an_unreadable_payload_is_an_error_not_a_panic() {
        for payload in [&b""[..], b"[", b"{}", b"[{\"event\":1}]", b"[1]"] {
            assert!(decode(payload).is_err(), "{payload:?}");
        }
    }
}
