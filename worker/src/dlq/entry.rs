//! One dead letter read back from the DLQ stream, its `Dlq-*` headers decoded for listing,
//! showing and replaying.

use super::{
    DELIVERY_COUNT_HEADER, DETAIL_HEADER, EVENT_ID_HEADER, FAILED_AT_HEADER, REASON_HEADER,
    SEQUENCE_HEADER, SUBJECT_HEADER,
};
use async_nats::HeaderMap;
use async_nats::jetstream::message::StreamMessage;
use bytes::Bytes;
use serde::Serialize;
use std::collections::BTreeMap;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The SQLSTATE of a `refused_by_database` dead letter (written by `DeadLetters::publish`).
const SQLSTATE_HEADER: &str = "Dlq-Sqlstate";
const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// The `eventId` of a JSON payload, if it has one (a string, not empty).
pub fn payload_event_id(payload: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        #[serde(rename = "eventId")]
        event_id: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Id>(payload).ok()?.event_id? {
        serde_json::Value::String(id) if !id.is_empty() => Some(id),
        _ => None,
    }
}

/// A message of the DLQ stream.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Its sequence in the DLQ stream: what the commands take.
    pub sequence: u64,
    /// When the DLQ stored it (when it was dead-lettered).
    pub stored_at: OffsetDateTime,
    /// `dlq.<original subject>`.
    pub dlq_subject: String,
    pub headers: HeaderMap,
    pub payload: Bytes,
}

impl From<StreamMessage> for DeadLetter {
    fn from(m: StreamMessage) -> Self {
        DeadLetter {
            sequence: m.sequence,
            stored_at: m.time,
            dlq_subject: m.subject.to_string(),
            headers: m.headers,
            payload: m.payload,
        }
    }
}

/// The listing of one dead letter (`dlq list --json`, one object per line).
#[derive(Debug, Serialize)]
pub struct Summary {
    pub sequence: u64,
    pub dead_lettered_at: String,
    pub reason: Option<String>,
    pub detail: Option<String>,
    pub sqlstate: Option<String>,
    pub event_id: Option<String>,
    pub subject: String,
    pub delivery_count: Option<u64>,
}

/// Everything about one dead letter (`dlq show --json`).
#[derive(Debug, Serialize)]
pub struct Full {
    #[serde(flatten)]
    pub summary: Summary,
    pub original_sequence: Option<u64>,
    pub failed_at: Option<String>,
    pub headers: BTreeMap<String, Vec<String>>,
    /// The payload as UTF-8 (invalid bytes replaced).
    pub payload: String,
}

impl DeadLetter {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.as_str())
    }

    pub fn reason(&self) -> Option<&str> {
        self.header(REASON_HEADER)
    }

    /// The id a replay publishes as `Nats-Msg-Id`: the `Dlq-Event-Id` header, else (dead
    /// letters written before that header existed) the payload's `eventId`.
    pub fn event_id(&self) -> Option<String> {
        self.header(EVENT_ID_HEADER)
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .or_else(|| payload_event_id(&self.payload))
    }

    /// Where the event was published before it was dead-lettered.
    pub fn original_subject(&self) -> String {
        match self.header(SUBJECT_HEADER) {
            Some(subject) if !subject.is_empty() => subject.to_owned(),
            _ => self
                .dlq_subject
                .strip_prefix("dlq.")
                .unwrap_or(&self.dlq_subject)
                .to_owned(),
        }
    }

    /// The headers of the event as first published: every header but the `Dlq-*` ones and
    /// the DLQ's own `Nats-Msg-Id`, which becomes `event_id` again.
    pub fn replay_headers(&self, event_id: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, values) in self.headers.iter() {
            let name_str: &str = name.as_ref();
            if is_dlq_header(name_str) || name_str.eq_ignore_ascii_case(MSG_ID_HEADER) {
                continue;
            }
            for value in values {
                headers.append(name.clone(), value.clone());
            }
        }
        headers.insert(MSG_ID_HEADER, event_id);
        headers
    }

    pub fn summary(&self) -> Summary {
        Summary {
            sequence: self.sequence,
            dead_lettered_at: rfc3339(self.stored_at),
            reason: self.reason().map(str::to_owned),
            detail: self.header(DETAIL_HEADER).map(str::to_owned),
            sqlstate: self.header(SQLSTATE_HEADER).map(str::to_owned),
            event_id: self.event_id(),
            subject: self.original_subject(),
            delivery_count: self
                .header(DELIVERY_COUNT_HEADER)
                .and_then(|v| v.parse().ok()),
        }
    }

    pub fn full(&self) -> Full {
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, values) in self.headers.iter() {
            headers
                .entry(name.to_string())
                .or_default()
                .extend(values.iter().map(|v| v.as_str().to_owned()));
        }
        Full {
            summary: self.summary(),
            original_sequence: self.header(SEQUENCE_HEADER).and_then(|v| v.parse().ok()),
            failed_at: self.header(FAILED_AT_HEADER).map(str::to_owned),
            headers,
            payload: String::from_utf8_lossy(&self.payload).into_owned(),
        }
    }
}

fn is_dlq_header(name: &str) -> bool {
    name.get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("dlq-"))
}

/// RFC 3339 in UTC to the second: sortable, and what `Dlq-Failed-At` uses.
pub fn rfc3339(at: OffsetDateTime) -> String {
    let at = at
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(at);
    at.format(&Rfc3339).unwrap_or_else(|_| at.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(headers: &[(&str, &str)], payload: &str) -> DeadLetter {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(*k, *v);
        }
        DeadLetter {
            sequence: 7,
            stored_at: OffsetDateTime::UNIX_EPOCH,
            dlq_subject: "dlq.events.facebook.ad.view".into(),
            headers: map,
            payload: Bytes::from(payload.to_owned()),
        }
    }

    #[test]
    fn the_event_id_comes_from_the_header_else_from_the_payload() {
        let with_header = letter(&[(EVENT_ID_HEADER, "from-header")], r#"{"eventId":"p"}"#);
        assert_eq!(with_header.event_id().as_deref(), Some("from-header"));
        let older = letter(&[], r#"{"eventId":"from-payload","x":1}"#);
        assert_eq!(older.event_id().as_deref(), Some("from-payload"));
        assert_eq!(letter(&[], "{not json").event_id(), None);
        assert_eq!(letter(&[], r#"{"eventId":42}"#).event_id(), None);
    }

    #[test]
    fn a_replay_keeps_the_original_headers_and_drops_the_dlq_ones() {
        let dead = letter(
            &[
                ("Nats-Msg-Id", "EVENTS:12"),
                ("X-Correlation-ID", "corr-1"),
                (REASON_HEADER, "invalid_event"),
                (SUBJECT_HEADER, "events.tiktok.video.view"),
                (SQLSTATE_HEADER, "23514"),
            ],
            "{}",
        );
        let h = dead.replay_headers("e-1");
        assert_eq!(h.get("Nats-Msg-Id").map(|v| v.as_str()), Some("e-1"));
        assert_eq!(
            h.get("X-Correlation-ID").map(|v| v.as_str()),
            Some("corr-1")
        );
        assert_eq!(h.iter().count(), 2, "{h:?}");
        assert_eq!(dead.original_subject(), "events.tiktok.video.view");
        assert_eq!(
            letter(&[], "{}").original_subject(),
            "events.facebook.ad.view"
        );
    }
}
