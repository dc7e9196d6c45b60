//! Packing events into messages: when the open message must close before an event, and
//! when it is full after one. Pure, so the limits are tested without a broker.

use bytes::Bytes;
use service_kit::batch;
use std::sync::Arc;

/// What one request's events share in a multi-event message: each envelope carries them.
#[derive(Debug)]
pub struct RequestMeta {
    pub correlation_id: String,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl RequestMeta {
    /// The trace headers of a single-event message, the same pairs the request's span gave.
    pub fn trace_headers(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("traceparent", self.traceparent.as_deref()),
            ("tracestate", self.tracestate.as_deref()),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name, v)))
    }
}

/// One validated event ready to publish.
#[derive(Debug)]
pub struct Event {
    /// `<prefix>.<source>.<eventType>`: its subject when it travels alone.
    pub subject: String,
    pub event_id: String,
    /// The event's JSON exactly as the producer sent it.
    pub payload: Bytes,
}

/// An event placed in a message, with the request it came from.
#[derive(Debug)]
pub struct Packed {
    pub request: Arc<RequestMeta>,
    pub event: Event,
}

impl Packed {
    /// What the event is in a [`batch::BATCH_V1`] payload.
    pub fn outgoing(&self) -> batch::Outgoing<'_> {
        batch::Outgoing {
            correlation_id: &self.request.correlation_id,
            traceparent: self.request.traceparent.as_deref(),
            tracestate: self.request.tracestate.as_deref(),
            event: &self.event.payload,
        }
    }

    /// Bytes the event adds to a multi-event payload: its JSON, its envelope and the
    /// escapes of the envelope's strings (only `"` and `\` can occur: correlation ids and
    /// trace headers are printable ASCII).
    pub fn cost(&self) -> usize {
        let outgoing = self.outgoing();
        let escapes = [
            Some(outgoing.correlation_id),
            outgoing.traceparent,
            outgoing.tracestate,
        ]
        .into_iter()
        .flatten()
        .flat_map(str::bytes)
        .filter(|b| matches!(b, b'"' | b'\\'))
        .count();
        outgoing.event.len() + batch::envelope_overhead(&outgoing) + escapes
    }
}

/// When a message closes: at `max_events` events, or before an event that would take its
/// payload past `max_bytes`. An event alone is never refused here: it travels in the
/// single-event encoding, whose limit the request checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_events: usize,
    pub max_bytes: usize,
}

/// The message being filled.
#[derive(Debug, Default)]
pub struct Open {
    pub events: Vec<Packed>,
    /// The payload's size if it were written now as [`batch::BATCH_V1`].
    bytes: usize,
}

impl Open {
    /// Whether `event` must go to a new message: this one is not empty and would pass a
    /// limit with it.
    pub fn must_close_before(&self, event: &Packed, limits: Limits) -> bool {
        !self.events.is_empty()
            && (self.events.len() >= limits.max_events
                // The brackets of the array, minus the last envelope's separator.
                || self.bytes + event.cost() + 1 > limits.max_bytes)
    }

    pub fn push(&mut self, event: Packed) {
        self.bytes += event.cost();
        self.events.push(event);
    }

    /// Whether the message can take no more events.
    pub fn is_full(&self, limits: Limits) -> bool {
        self.events.len() >= limits.max_events
    }

    pub fn take(&mut self) -> Vec<Packed> {
        self.bytes = 0;
        std::mem::take(&mut self.events)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn packed(request: &Arc<RequestMeta>, id: &str, json_len: usize) -> Packed {
        let filler = "x".repeat(json_len.saturating_sub(id.len() + 20));
        let payload = format!(r#"{{"eventId":"{id}","f":"{filler}"}}"#);
        Packed {
            request: request.clone(),
            event: Event {
                subject: "p.facebook.ad.view".into(),
                event_id: id.into(),
                payload: Bytes::from(payload),
            },
        }
    }

    fn request(correlation_id: &str) -> Arc<RequestMeta> {
        Arc::new(RequestMeta {
            correlation_id: correlation_id.into(),
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            tracestate: None,
        })
    }

    /// Packs `events` as the coalescer does; returns the messages' event ids.
    fn pack(events: Vec<Packed>, limits: Limits) -> Vec<Vec<Packed>> {
        let mut open = Open::default();
        let mut closed = Vec::new();
        for event in events {
            if open.must_close_before(&event, limits) {
                closed.push(open.take());
            }
            open.push(event);
            if open.is_full(limits) {
                closed.push(open.take());
            }
        }
        if !open.events.is_empty() {
            closed.push(open.take());
        }
        closed
    }

    fn encoded_len(message: &[Packed]) -> usize {
        let mut out = Vec::new();
        batch::encode(message.iter().map(Packed::outgoing), &mut out);
        out.len()
    }

    #[test]
    fn a_message_closes_at_the_most_events() {
        let r = request("req-1");
        let events = (0..7).map(|i| packed(&r, &format!("e{i}"), 100)).collect();
        let sizes: Vec<usize> = pack(
            events,
            Limits {
                max_events: 3,
                max_bytes: 1 << 20,
            },
        )
        .iter()
        .map(Vec::len)
        .collect();
        assert_eq!(sizes, [3, 3, 1]);
    }

    #[test]
    fn a_message_closes_before_the_event_that_would_pass_the_most_bytes() {
        let (a, b) = (request("req-\"a\""), request("req-b"));
        let events: Vec<Packed> = (0..10)
            .map(|i| packed(if i % 2 == 0 { &a } else { &b }, &format!("e{i}"), 300))
            .collect();
        let one = encoded_len(&events[..1]);
        // Room for three envelopes and not four.
        let max_bytes = encoded_len(&events[..3]) + one / 2;
        let limits = Limits {
            max_events: 100,
            max_bytes,
        };
        let messages = pack(events, limits);
        let sizes: Vec<usize> = messages.iter().map(Vec::len).collect();
        assert_eq!(sizes, [3, 3, 3, 1]);
        for message in &messages {
            // The estimate is the written size exactly: no message passes the limit.
            assert!(encoded_len(message) <= max_bytes);
        }
        assert_eq!(
            encoded_len(&messages[0]),
            messages[0].iter().map(Packed::cost).sum::<usize>() + 1
        );
    }

    #[test]
    fn an_event_larger_than_a_message_travels_alone() {
        let r = request("req-1");
        let events = vec![
            packed(&r, "small-1", 100),
            packed(&r, "big", 5000),
            packed(&r, "small-2", 100),
        ];
        let limits = Limits {
            max_events: 100,
            max_bytes: 1000,
        };
        let ids: Vec<Vec<String>> = pack(events, limits)
            .iter()
            .map(|m| m.iter().map(|p| p.event.event_id.clone()).collect())
            .collect();
        assert_eq!(ids, [vec!["small-1"], vec!["big"], vec!["small-2"]]);
    }
}
