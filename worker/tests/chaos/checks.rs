//! What a user checks after the chaos: each check gives what it found, or why it failed.

use crate::load::{Facts, Poisoned, Tally};
use rust_decimal::Decimal;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A check's finding (`Ok`, one line or a few) or why it failed.
pub type Outcome = Result<String, CheckFailed>;

/// Why a check failed: what it found wrong, or what it could not read.
#[derive(Debug, thiserror::Error)]
pub enum CheckFailed {
    /// The check read everything and found this wrong (one line or a few).
    #[error("{0}")]
    Found(String),
    /// The database could not be read.
    #[error("cannot read the database")]
    Database(#[from] tokio_postgres::Error),
    /// The broker could not be read.
    #[error("cannot read the stream")]
    Nats(#[source] async_nats::Error),
    /// A range's bound could not be written as RFC 3339.
    #[error("cannot format a range's bound")]
    Time(#[from] time::error::Format),
}

/// The failure with its causes, for the summary: `what: cause: cause`.
pub fn chain(failure: &CheckFailed) -> String {
    let mut text = failure.to_string();
    let mut source = std::error::Error::source(failure);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// At most `n` items of a list, for a failure message.
fn some<T: std::fmt::Debug>(items: impl IntoIterator<Item = T>, n: usize) -> String {
    let items: Vec<T> = items.into_iter().collect();
    let shown: Vec<&T> = items.iter().take(n).collect();
    format!("{} (e.g. {shown:?})", items.len())
}

/// Every producer got a definite answer, and only the answers the API promises.
pub fn answers(tally: &Tally, poisoned: &Poisoned) -> Outcome {
    let mut problems = Vec::new();
    if tally.gave_up > 0 {
        problems.push(format!("{} requests never got an answer", tally.gave_up));
    }
    if !tally.unexpected.is_empty() {
        problems.push(format!("unexpected answers: {:?}", tally.unexpected));
    }
    if poisoned.gave_up > 0 {
        problems.push(format!(
            "{} poison publishes never got a PubAck",
            poisoned.gave_up
        ));
    }
    if problems.is_empty() {
        Ok(format!(
            "{} requests answered 202, {} answered 422; {} attempts answered 503 and {} \
             without an answer were sent again",
            tally.requests_accepted, tally.rejected, tally.retried_503, tally.retried_no_answer
        ))
    } else {
        Err(CheckFailed::Found(problems.join("; ")))
    }
}

/// Every eventId answered 202 is in `events`, once, and nothing else is.
pub async fn stored_exactly_once(db: &tokio_postgres::Client, tally: &Tally) -> Outcome {
    let rows = db.query("SELECT event_id FROM events", &[]).await?;
    let mut stored: HashMap<String, u32> = HashMap::with_capacity(rows.len());
    for r in &rows {
        *stored.entry(r.get(0)).or_default() += 1;
    }
    let doubled: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).collect();
    let missing: Vec<_> = tally
        .accepted
        .keys()
        .filter(|id| !stored.contains_key(*id))
        .collect();
    let extra: Vec<_> = stored
        .keys()
        .filter(|id| !tally.accepted.contains_key(*id))
        .collect();
    if doubled.is_empty() && missing.is_empty() && extra.is_empty() {
        Ok(format!(
            "{} accepted, {} rows",
            tally.accepted.len(),
            rows.len()
        ))
    } else {
        Err(CheckFailed::Found(format!(
            "{} accepted, {} rows; lost {}; stored but never accepted {}; stored more than once {}",
            tally.accepted.len(),
            rows.len(),
            some(missing, 5),
            some(extra, 5),
            some(doubled, 5)
        )))
    }
}

/// Requests with an invalid event were answered 422 and none of their events stored.
pub async fn rejected_not_stored(db: &tokio_postgres::Client, tally: &Tally) -> Outcome {
    let stored: Vec<String> = db
        .query(
            "SELECT event_id FROM events WHERE event_id = ANY($1)",
            &[&tally.rejected_ids],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if stored.is_empty() {
        Ok(format!("{} answered 422, none stored", tally.rejected))
    } else {
        Err(CheckFailed::Found(format!(
            "answered 422 but stored: {}",
            some(stored, 5)
        )))
    }
}

/// The DLQ holds each poison message once, with the reason its kind calls for, and
/// nothing else.
pub fn dead_letters_are_the_poison(
    dead: &[(Vec<u8>, HashMap<String, String>)],
    poisoned: &Poisoned,
) -> Outcome {
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (_, headers) in dead {
        let id = headers.get("Dlq-Event-Id").cloned().unwrap_or_default();
        let reason = headers.get("Dlq-Reason").cloned().unwrap_or_default();
        found.entry(id).or_default().push(reason);
    }
    let mut problems = Vec::new();
    let missing: Vec<_> = poisoned
        .sent
        .keys()
        .filter(|id| !found.contains_key(*id))
        .collect();
    if !missing.is_empty() {
        problems.push(format!("poison not dead-lettered: {}", some(missing, 5)));
    }
    let not_poison: Vec<_> = found
        .iter()
        .filter(|(id, _)| !poisoned.sent.contains_key(*id))
        .collect();
    if !not_poison.is_empty() {
        problems.push(format!(
            "dead letters that are not poison: {}",
            some(not_poison, 5)
        ));
    }
    let wrong: Vec<_> = poisoned
        .sent
        .iter()
        .filter_map(|(id, kind)| {
            let reasons = found.get(id)?;
            (reasons != &[kind.reason()]).then_some((id, kind.reason(), reasons))
        })
        .collect();
    if !wrong.is_empty() {
        problems.push(format!(
            "poison dead-lettered more than once or for another reason (id, expected, found): {}",
            some(wrong, 5)
        ));
    }
    if problems.is_empty() {
        Ok(format!(
            "{} dead letters, one per poison message",
            dead.len()
        ))
    } else {
        Err(CheckFailed::Found(problems.join("; ")))
    }
}

/// The incremental rollups and per-user sets equal those rebuilt from the raw events.
pub fn rollups_equal_a_rebuild(incremental: &[String], rebuilt: &[String]) -> Outcome {
    if incremental == rebuilt {
        return Ok(format!(
            "{} rollup rows and per-user sets, identical",
            incremental.len()
        ));
    }
    let a: BTreeSet<&String> = incremental.iter().collect();
    let b: BTreeSet<&String> = rebuilt.iter().collect();
    let cut = |s: &&String| s.chars().take(200).collect::<String>();
    Err(CheckFailed::Found(format!(
        "{} incremental rows, {} rebuilt; only incremental {}; only rebuilt {}",
        incremental.len(),
        rebuilt.len(),
        some(a.difference(&b).map(cut), 3),
        some(b.difference(&a).map(cut), 3)
    )))
}

/// Events by source, and purchases and revenue by source, in `[from, to)`.
#[derive(Debug, PartialEq, Eq, Default)]
struct Figures {
    total: i64,
    by_source: BTreeMap<String, i64>,
    revenue: String,
    purchases: i64,
    revenue_by_source: BTreeMap<String, (String, i64)>,
}

/// The figures computed from the accepted events alone.
fn expected(
    accepted: &HashMap<String, Facts>,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Figures {
    let mut f = Figures::default();
    let mut revenue: BTreeMap<String, (Decimal, i64)> = BTreeMap::new();
    for facts in accepted.values() {
        if facts.time < from || facts.time >= to {
            continue;
        }
        f.total += 1;
        *f.by_source.entry(facts.source.to_string()).or_default() += 1;
        if let Some(amount) = facts.revenue {
            let r = revenue.entry(facts.source.to_string()).or_default();
            r.0 += amount;
            r.1 += 1;
        }
    }
    let sum: Decimal = revenue.values().map(|r| r.0).sum();
    f.revenue = shared_events::format_money(sum);
    f.purchases = revenue.values().map(|r| r.1).sum();
    f.revenue_by_source = revenue
        .into_iter()
        .map(|(s, (v, n))| (s, (shared_events::format_money(v), n)))
        .collect();
    f
}

/// The figures the analytics reports give.
async fn reported(
    http: &reqwest::Client,
    port: u16,
    from: &str,
    to: &str,
) -> anyhow::Result<Figures> {
    let get = async |report: &str| -> anyhow::Result<Value> {
        let r = http
            // RFC 3339 in UTC ("Z", no "+") needs no escaping in a query.
            .get(format!(
                "http://127.0.0.1:{port}/analytics/{report}?from={from}&to={to}"
            ))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 200, "{report}: {}", r.status());
        Ok(r.json().await?)
    };
    let stats = get("stats").await?;
    let revenue = get("revenue").await?;
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    Ok(Figures {
        total: stats["total"].as_i64().unwrap_or(-1),
        by_source: list(&stats["bySource"])
            .iter()
            .map(|s| (text(&s["source"]), s["count"].as_i64().unwrap_or(-1)))
            .collect(),
        revenue: text(&revenue["total"]),
        purchases: revenue["purchases"].as_i64().unwrap_or(-1),
        revenue_by_source: list(&revenue["bySource"])
            .iter()
            .map(|s| {
                (
                    text(&s["source"]),
                    (text(&s["revenue"]), s["purchases"].as_i64().unwrap_or(-1)),
                )
            })
            .collect(),
    })
}

/// `stats` (total and by source) and `revenue` over each range equal the figures of the
/// accepted events in it.
pub async fn reports_equal_the_accepted_events(
    http: &reqwest::Client,
    port: u16,
    accepted: &HashMap<String, Facts>,
    ranges: &[(OffsetDateTime, OffsetDateTime)],
) -> Outcome {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for &(from, to) in ranges {
        let (f, t) = (from.format(&Rfc3339)?, to.format(&Rfc3339)?);
        let want = expected(accepted, from, to);
        match reported(http, port, &f, &t).await {
            Ok(got) if got == want => found.push(format!(
                "[{f}, {t}): {} events, revenue {}",
                want.total, want.revenue
            )),
            Ok(got) => problems.push(format!("[{f}, {t}): reported {got:?}, expected {want:?}")),
            Err(e) => problems.push(format!("[{f}, {t}): {e}")),
        }
    }
    if problems.is_empty() {
        Ok(found.join("; "))
    } else {
        Err(CheckFailed::Found(problems.join("; ")))
    }
}

/// What the events stream still holds after the drain: nothing, or only messages already
/// processed. A work-queue stream drops a message once it is acked, but nats-server 2.9
/// loses some of those deletions when it is SIGKILLed while its consumer's ack floor,
/// stored apart, survives: such messages stay in the stream, below the ack floor, never
/// delivered again, and use up the stream's limits. Each must be an event already stored
/// or poison already dead-lettered.
pub async fn stream_leftovers(
    stream: &async_nats::jetstream::stream::Stream,
    consumer: &str,
    subjects: &str,
    tally: &Tally,
    poisoned: &Poisoned,
) -> Outcome {
    let floor = stream
        .consumer_info(consumer)
        .await
        .map_err(|e| CheckFailed::Nats(e.into()))?
        .ack_floor
        .stream_sequence;
    let mut left = Vec::new();
    let mut seq = 1;
    // Each get returns the next message at or after `seq`: one call per message left.
    while let Ok(m) = stream
        .raw_message_builder()
        .sequence(seq)
        .next_by_subject(subjects.to_owned())
        .send()
        .await
    {
        let id = m
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        left.push((m.sequence, id));
        seq = m.sequence + 1;
    }
    let unprocessed: Vec<_> = left
        .iter()
        .filter(|(s, id)| {
            *s > floor || !(tally.accepted.contains_key(id) || poisoned.sent.contains_key(id))
        })
        .collect();
    if !unprocessed.is_empty() {
        return Err(CheckFailed::Found(format!(
            "ack floor {floor}; messages left that were never processed: {}",
            some(unprocessed, 5)
        )));
    }
    if left.is_empty() {
        Ok("no message left".to_owned())
    } else {
        Ok(format!(
            "BROKER LEAK: {} messages acked before a nats-server SIGKILL are still in the \
             stream, below the ack floor {floor} (each already stored or dead-lettered)",
            left.len()
        ))
    }
}
