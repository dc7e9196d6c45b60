//! One batch of delivered messages: their events decoded, inserted in one transaction,
//! dead-lettered one by one, and each message answered once all its events are accounted
//! for (`ledger`).

use super::ledger::{Disposition, Fate, Ledger};
use super::unpack::{Event, Unpacked};
use super::{Ctx, EXPIRED, MAX_DELIVER_EXCEEDED, delivered, header, retry_delay};
use crate::dlq::EventLetter;
use crate::partitions::Retention;
use crate::store::{self, Rejection, Row};
use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream::{self, AckKind};
use service_kit::error::error_text;
use service_kit::stream::INGESTED_AT_HEADER;
use service_kit::telemetry::{TARGET, propagation};
use shared_events::Source;
use std::collections::{BTreeSet, HashSet};
use std::time::Instant;
use tracing::Instrument;

/// An event (or a whole unreadable message, `event: None`) bound for the DLQ.
struct Dead<'a, 'm> {
    message: usize,
    event: Option<&'a Event<'m>>,
    rejection: Rejection,
}

/// Processes `messages`, whose events `unpacked` holds (aligned with them).
pub(super) async fn process_batch(
    ctx: &Ctx,
    messages: &[jetstream::Message],
    unpacked: &[Unpacked<'_>],
) {
    let started = Instant::now();
    let events: usize = unpacked.iter().map(Unpacked::len).sum();
    // Events, not messages: the size of the insert transaction, as it always was.
    metrics::histogram!("worker_batch_size").record(events as f64);
    let mut ledger = Ledger::new(unpacked.iter().map(Unpacked::len));

    let Decoded {
        rows,
        row_event,
        mut dead,
    } = decode_all(ctx, messages, unpacked, events);

    let correlation_ids = |keep: &dyn Fn(usize) -> bool| {
        row_event
            .iter()
            .enumerate()
            .filter(|(k, _)| keep(*k))
            .map(|(_, (_, e))| e.correlation_id.as_ref())
            .collect::<BTreeSet<_>>()
    };
    match store::insert_batch(&ctx.pool, &ctx.keys, &rows).await {
        Ok(outcome) => {
            let committed = time::OffsetDateTime::now_utc();
            let refused: HashSet<usize> = outcome.rejected.iter().map(|(k, _)| *k).collect();
            tracing::debug!(
                events = rows.len() - refused.len(),
                correlation_ids = ?correlation_ids(&|k| !refused.contains(&k)),
                "Batch committed"
            );
            count_committed(&rows, &outcome.inserted, &refused, committed);
            for (k, (message, _)) in row_event.iter().enumerate() {
                if !refused.contains(&k) {
                    ledger.record(*message, Fate::Stored);
                }
            }
            for (k, rejection) in outcome.rejected {
                if let Some(&(message, event)) = row_event.get(k) {
                    dead.push(Dead {
                        message,
                        event: Some(event),
                        rejection,
                    });
                }
            }
        }
        Err(error) => {
            tracing::Span::current().record("otel.status_code", "ERROR");
            let error = error_text(&error);
            ctx.gate.close(&error);
            metrics::counter!("worker_events_failed_total", "reason" => "database_unavailable")
                .increment(rows.len() as u64);
            tracing::warn!(
                %error,
                events = rows.len(),
                correlation_ids = ?correlation_ids(&|_| true),
                "Batch not stored; will be redelivered"
            );
            for (message, _) in &row_event {
                ledger.record(*message, Fate::Retry);
            }
        }
    }

    for d in dead {
        // Its message is redelivered anyway: the dead letter is written then, once.
        if ledger.doomed(d.message) {
            continue;
        }
        let m = &messages[d.message];
        let fate = dead_letter(ctx, m, d.event, d.rejection).await;
        ledger.record(d.message, fate);
    }
    for (m, disposition) in messages.iter().zip(ledger.dispositions()) {
        answer(m, disposition).await;
    }
    metrics::histogram!("worker_batch_duration_seconds").record(started.elapsed().as_secs_f64());
}

/// A batch's events decoded: the rows to insert, each with its message and event, and
/// what goes to the DLQ without trying.
struct Decoded<'a, 'm> {
    rows: Vec<Row>,
    row_event: Vec<(usize, &'a Event<'m>)>,
    dead: Vec<Dead<'a, 'm>>,
}

/// Decodes every event of `messages` (`events` in all); a message delivered more than
/// `NATS_MAX_DELIVER` times has all its events dead-lettered instead.
fn decode_all<'a, 'm>(
    ctx: &Ctx,
    messages: &[jetstream::Message],
    unpacked: &'a [Unpacked<'m>],
    events: usize,
) -> Decoded<'a, 'm> {
    let mut rows = Vec::with_capacity(events);
    let mut row_event: Vec<(usize, &'a Event<'m>)> = Vec::with_capacity(events);
    let mut dead: Vec<Dead<'a, 'm>> = Vec::new();
    let horizon = ctx
        .retention
        .map(|r| (r, r.horizon(time::OffsetDateTime::now_utc())));
    for (i, (m, holds)) in messages.iter().zip(unpacked).enumerate() {
        let events = match holds {
            Unpacked::Events(events) => events,
            Unpacked::Unreadable(rejection) => {
                dead.push(Dead {
                    message: i,
                    event: None,
                    rejection: rejection.clone(),
                });
                continue;
            }
        };
        let attempts = delivered(m);
        if attempts > ctx.max_deliver {
            let rejection = Rejection::new(
                MAX_DELIVER_EXCEEDED,
                format!("delivered {attempts} times without being stored"),
            );
            dead.extend(events.iter().map(|e| Dead {
                message: i,
                event: Some(e),
                rejection: rejection.clone(),
            }));
            continue;
        }
        if let Some(id) = &ctx.panic_event_id
            && header(m, NATS_MESSAGE_ID) == Some(id.as_str())
        {
            panic!("test failpoint: message {id}");
        }
        let ingested_at = header(m, INGESTED_AT_HEADER)
            .and_then(|v| v.parse::<i128>().ok())
            .and_then(|n| time::OffsetDateTime::from_unix_timestamp_nanos(n).ok());
        for e in events {
            match store::decode(e.json, ingested_at).and_then(|row| unexpired(row, horizon)) {
                Ok(row) => {
                    rows.push(row);
                    row_event.push((i, e));
                }
                Err(rejection) => dead.push(Dead {
                    message: i,
                    event: Some(e),
                    rejection,
                }),
            }
        }
    }
    Decoded {
        rows,
        row_event,
        dead,
    }
}

/// The row, unless its event time is before the retention horizon: its day's partition
/// is dropped or about to be, and storing it would count it in rollups that a resend,
/// after its key left with its day, would count again.
fn unexpired(
    row: Row,
    horizon: Option<(Retention, time::OffsetDateTime)>,
) -> Result<Row, Rejection> {
    match horizon {
        Some((retention, horizon)) if row.event_time < horizon => {
            let rfc3339 = |t: time::OffsetDateTime| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_else(|_| t.to_string())
            };
            Err(Rejection::new(
                EXPIRED,
                format!(
                    "event time {} is before the retention horizon {} \
                     (EVENTS_RETENTION_DAYS={})",
                    rfc3339(row.event_time),
                    rfc3339(horizon),
                    retention.days
                ),
            ))
        }
        _ => Ok(row),
    }
}

/// Counts the committed events: new ones by source (with their ingest-to-commit latency),
/// the rest as duplicates.
fn count_committed(
    rows: &[Row],
    inserted: &[bool],
    refused: &HashSet<usize>,
    committed: time::OffsetDateTime,
) {
    let mut duplicates = 0u64;
    let mut processed = [0u64; Source::ALL.len()];
    // Looked up once per batch, not once per event.
    let latency = metrics::histogram!("worker_event_latency_seconds");
    for (k, row) in rows.iter().enumerate() {
        if refused.contains(&k) {
            continue;
        }
        if inserted.get(k).copied().unwrap_or(false) {
            processed[row.source as usize] += 1;
            if let Some(at) = row.ingested_at {
                latency.record((committed - at).as_seconds_f64().max(0.0));
            }
        } else {
            duplicates += 1;
        }
    }
    for source in Source::ALL {
        metrics::counter!("worker_events_processed_total", "source" => source.as_str())
            .increment(processed[source as usize]);
    }
    metrics::counter!("worker_events_duplicate_total").increment(duplicates);
}

/// Answers the broker for a message whose events are all accounted for (or not).
async fn answer(m: &jetstream::Message, disposition: Disposition) {
    let kind = match disposition {
        // After the commit: a lost ack only means a redelivery, which the unique key
        // turns into duplicates.
        Disposition::Ack => AckKind::Ack,
        Disposition::Term => AckKind::Term,
        Disposition::Nak => AckKind::Nak(Some(retry_delay(delivered(m)))),
    };
    if let Err(error) = m.ack_with(kind).await {
        tracing::warn!(
            error = %error_text(&*error),
            message_id = header(m, NATS_MESSAGE_ID).unwrap_or(""),
            ?disposition,
            "Answering the broker failed; the message will be redelivered and deduplicated"
        );
    }
}

/// Dead-letters one event of `m` (or `m` whole: a single-event message, or one that
/// cannot be read), within a `dlq publish` span linked to the event's own trace.
async fn dead_letter(
    ctx: &Ctx,
    m: &jetstream::Message,
    event: Option<&Event<'_>>,
    rejection: Rejection,
) -> Fate {
    let alone = event.filter(|e| e.index.is_some());
    let correlation_id = match event {
        Some(e) => e.correlation_id.as_ref(),
        None => header(m, service_kit::stream::CORRELATION_HEADER).unwrap_or(""),
    };
    let identity = alone.map(|e| Identity::of(e.json));
    let event_id = match &identity {
        Some(identity) => identity.event_id.as_deref().unwrap_or(""),
        None => header(m, NATS_MESSAGE_ID).unwrap_or(""),
    };
    let subject = match (&identity, alone) {
        (Some(identity), Some(_)) => identity.subject(&ctx.subject_prefix, m.subject.as_str()),
        _ => m.subject.to_string(),
    };
    let trace = alone.and_then(Event::trace_headers);
    // A child of the batch span, linked to the event's own trace. The dead letter keeps
    // the event's `traceparent`: it stays in the event's trace.
    let span = tracing::info_span!(
        target: TARGET,
        "dlq publish",
        otel.kind = "producer",
        messaging.system = "nats",
        messaging.operation.type = "send",
        reason = rejection.reason,
        otel.status_code = tracing::field::Empty,
    );
    match alone {
        Some(_) => propagation::link_message(&span, trace.as_ref()),
        None => propagation::link_message(&span, m.headers.as_ref()),
    }
    let published = match alone {
        Some(e) => {
            let letter = EventLetter {
                index: e.index.unwrap_or(0),
                json: e.json,
                correlation_id,
                trace,
                subject: &subject,
            };
            ctx.dlq
                .publish_event(m, &letter, &rejection)
                .instrument(span.clone())
                .await
        }
        None => {
            ctx.dlq
                .publish(m, &rejection)
                .instrument(span.clone())
                .await
        }
    };
    match published {
        Ok(()) => {
            metrics::counter!("worker_events_dlq_total", "reason" => rejection.reason).increment(1);
            tracing::warn!(
                correlation_id,
                event_id,
                subject = %subject,
                reason = rejection.reason,
                detail = %rejection.detail,
                "Event dead-lettered"
            );
            Fate::DeadLettered
        }
        Err(error) => {
            span.record("otel.status_code", "ERROR");
            metrics::counter!("worker_events_failed_total", "reason" => "dlq_unavailable")
                .increment(1);
            let error = error_text(&error);
            tracing::error!(%error, correlation_id, event_id, "Cannot dead-letter; will retry");
            Fate::Retry
        }
    }
}

/// What a dead letter of one event of a multi-event message needs from its JSON, read
/// leniently: the event may be invalid.
#[derive(Debug, Default, serde::Deserialize)]
struct Identity {
    #[serde(rename = "eventId", default, deserialize_with = "lenient")]
    event_id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    source: Option<String>,
    #[serde(rename = "eventType", default, deserialize_with = "lenient")]
    event_type: Option<String>,
}

/// A string field as a string; anything else as absent.
fn lenient<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let value: serde_json::Value = serde::Deserialize::deserialize(d)?;
    Ok(match value {
        serde_json::Value::String(s) if !s.is_empty() => Some(s),
        _ => None,
    })
}

impl Identity {
    fn of(json: &[u8]) -> Self {
        serde_json::from_slice(json).unwrap_or_default()
    }

    /// `<prefix>.<source>.<eventType>`, the subject ingestion publishes a single event
    /// to; `fallback` (the message's subject) when the event does not name a source and a
    /// type that make a valid subject.
    fn subject(&self, prefix: &str, fallback: &str) -> String {
        match (&self.source, &self.event_type) {
            (Some(source), Some(event_type))
                if source.len() + event_type.len() <= MAX_SUBJECT_TAIL
                    && is_tokens(source)
                    && is_tokens(event_type) =>
            {
                format!("{prefix}.{source}.{event_type}")
            }
            _ => fallback.to_owned(),
        }
    }
}

/// The most a dead letter's subject takes from an event's `source` and `eventType`: valid
/// ones are far shorter, and a subject must fit NATS's control line (4 KiB by default).
const MAX_SUBJECT_TAIL: usize = 256;

/// Dot-separated NATS subject tokens: none empty, no wildcard, nothing but visible ASCII.
fn is_tokens(s: &str) -> bool {
    s.split('.').all(|token| {
        !token.is_empty()
            && token
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'*' && b != b'>')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_event_keeps_the_subject_a_single_event_of_it_would_have() {
        let valid = Identity::of(br#"{"eventId":"e1","source":"tiktok","eventType":"video.view"}"#);
        assert_eq!(valid.event_id.as_deref(), Some("e1"));
        assert_eq!(
            valid.subject("events", "events.batch"),
            "events.tiktok.video.view"
        );
        for unreadable in [
            &br#"{"eventId":7,"source":"tiktok"}"#[..],
            br#"{"source":"a b","eventType":"x"}"#,
            br#"{"source":"tiktok","eventType":"video.*"}"#,
            br#"{"source":"tiktok","eventType":"video..view"}"#,
            format!(r#"{{"source":"tiktok","eventType":"{}"}}"#, "v".repeat(300)).as_bytes(),
            b"[not json",
        ] {
            let identity = Identity::of(unreadable);
            assert_eq!(identity.event_id, None);
            assert_eq!(identity.subject("events", "events.batch"), "events.batch");
        }
    }
}
