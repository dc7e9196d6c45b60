//! A delivered message as the events it holds: one event (no `Events-Encoding` header,
//! the payload is the event's JSON) or many (`batch/1`, `service_kit::batch`), each with
//! its own correlation id and trace context. Both encodings are read, so old and new
//! ingestion can publish to the same stream during a rolling upgrade.

use crate::store::Rejection;
use async_nats::HeaderMap;
use async_nats::header::HeaderName;
use async_nats::jetstream;
use service_kit::batch::{self, BATCH_V1, ENCODING_HEADER};
use service_kit::stream::CORRELATION_HEADER;
use std::borrow::Cow;

/// The `encoding` labels of `worker_messages_received_total`.
pub const ENCODINGS: [&str; 3] = [SINGLE, BATCH_V1, UNKNOWN];
const SINGLE: &str = "single";
const ENCODING: HeaderName = HeaderName::from_static(ENCODING_HEADER);
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// A message naming an encoding this worker does not know.
const UNKNOWN: &str = "unknown";

/// One event of a delivered message, borrowed from it.
#[derive(Debug)]
pub struct Event<'m> {
    /// Its position in a multi-event message; `None` for a single-event message, whose
    /// dead letter is the message itself.
    pub index: Option<usize>,
    /// The event's JSON.
    pub json: &'m [u8],
    pub correlation_id: Cow<'m, str>,
    pub traceparent: Option<Cow<'m, str>>,
    pub tracestate: Option<Cow<'m, str>>,
}

/// What a delivered message holds.
#[derive(Debug)]
pub enum Unpacked<'m> {
    /// Its events, in order (one for a single-event message).
    Events(Vec<Event<'m>>),
    /// A message that cannot be read as events at all: dead-lettered whole.
    Unreadable(Rejection),
}

impl Unpacked<'_> {
    /// The events whose fate decides the message's: an unreadable message counts as one,
    /// its own dead letter.
    pub fn len(&self) -> usize {
        match self {
            Unpacked::Events(events) => events.len(),
            Unpacked::Unreadable(_) => 1,
        }
    }
}

/// The encoding a message names (its `worker_messages_received_total` label).
pub fn encoding(headers: Option<&HeaderMap>) -> &'static str {
    match header(headers, ENCODING) {
        None => SINGLE,
        Some(BATCH_V1) => BATCH_V1,
        Some(_) => UNKNOWN,
    }
}

/// The events of `m`. Never fails: what cannot be read is an [`Unpacked::Unreadable`].
pub fn unpack(m: &jetstream::Message) -> Unpacked<'_> {
    unpack_parts(m.headers.as_ref(), &m.payload)
}

fn unpack_parts<'m>(headers: Option<&'m HeaderMap>, payload: &'m [u8]) -> Unpacked<'m> {
    match encoding(headers) {
        SINGLE => Unpacked::Events(vec![Event {
            index: None,
            json: payload,
            correlation_id: Cow::Borrowed(header(headers, CORRELATION_HEADER).unwrap_or("")),
            traceparent: header(headers, TRACEPARENT).map(Cow::Borrowed),
            tracestate: header(headers, TRACESTATE).map(Cow::Borrowed),
        }]),
        BATCH_V1 => match batch::decode(payload) {
            Ok(envelopes) => Unpacked::Events(
                envelopes
                    .into_iter()
                    .enumerate()
                    .map(|(i, e)| Event {
                        index: Some(i),
                        json: e.event.get().as_bytes(),
                        correlation_id: e.correlation_id,
                        traceparent: e.traceparent,
                        tracestate: e.tracestate,
                    })
                    .collect(),
            ),
            Err(error) => Unpacked::Unreadable(Rejection::new(
                "undecodable",
                service_kit::error::error_text(&error),
            )),
        },
        _ => Unpacked::Unreadable(Rejection::new(
            "undecodable",
            format!(
                "unknown {ENCODING_HEADER} {:?}",
                header(headers, ENCODING).unwrap_or("")
            ),
        )),
    }
}

impl Event<'_> {
    /// The event's trace context as message headers (for the propagation helpers and its
    /// dead letter); `None` when it carries none. A value with a control character (only
    /// a payload, never a header, can hold one) is left out: it is no trace context and
    /// would break a header.
    pub fn trace_headers(&self) -> Option<HeaderMap> {
        let clean = |v: &&str| !v.chars().any(char::is_control);
        let traceparent = self.traceparent.as_deref().filter(clean)?;
        let mut map = HeaderMap::new();
        map.insert(TRACEPARENT, traceparent);
        if let Some(state) = self.tracestate.as_deref().filter(clean) {
            map.insert(TRACESTATE, state);
        }
        Some(map)
    }
}

fn header(headers: Option<&HeaderMap>, name: HeaderName) -> Option<&str> {
    headers?.get(name).map(|v| v.as_str())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use service_kit::batch::Outgoing;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, *v);
        }
        map
    }

    fn events<'m>(unpacked: Unpacked<'m>) -> Vec<Event<'m>> {
        match unpacked {
            Unpacked::Events(events) => events,
            Unpacked::Unreadable(r) => panic!("unreadable: {r:?}"),
        }
    }

    #[test]
    fn a_message_without_the_header_is_one_event_with_the_messages_metadata() {
        let h = headers(&[
            ("X-Correlation-ID", "req-1"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        ]);
        let one = events(unpack_parts(Some(&h), br#"{"eventId":"a"}"#));
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].index, None);
        assert_eq!(one[0].json, br#"{"eventId":"a"}"#);
        assert_eq!(one[0].correlation_id, "req-1");
        assert!(one[0].trace_headers().is_some());
        assert_eq!(encoding(Some(&h)), "single");
        assert_eq!(encoding(None), "single");
    }

    #[test]
    fn a_batch_message_is_its_events_each_with_its_own_metadata() {
        let mut payload = Vec::new();
        let e = |correlation_id, event: &'static str| Outgoing {
            correlation_id,
            traceparent: None,
            tracestate: None,
            event: event.as_bytes(),
        };
        service_kit::batch::encode(
            [
                e("req-1", r#"{"eventId":"a"}"#),
                Outgoing {
                    traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
                    ..e("req-2", r#"{"eventId":"b"}"#)
                },
            ],
            &mut payload,
        );
        let h = headers(&[(ENCODING_HEADER, BATCH_V1), ("X-Correlation-ID", "other")]);
        let two = events(unpack_parts(Some(&h), &payload));
        assert_eq!(two.len(), 2);
        assert_eq!((two[0].index, two[1].index), (Some(0), Some(1)));
        assert_eq!(two[0].json, br#"{"eventId":"a"}"#);
        assert_eq!(two[0].correlation_id, "req-1");
        assert!(two[0].trace_headers().is_none());
        assert_eq!(two[1].correlation_id, "req-2");
        assert!(two[1].trace_headers().is_some());
    }

    #[test]
    fn an_unreadable_batch_or_an_unknown_encoding_is_one_undecodable_message() {
        for (encoding, payload) in [(BATCH_V1, &b"[{\"event\":1"[..]), ("batch/9", b"[]")] {
            let h = headers(&[(ENCODING_HEADER, encoding)]);
            match unpack_parts(Some(&h), payload) {
                Unpacked::Unreadable(r) => assert_eq!(r.reason, "undecodable"),
                Unpacked::Events(e) => panic!("read {} events", e.len()),
            }
        }
    }
}
