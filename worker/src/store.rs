//! Turning messages into rows and writing a batch of rows in one transaction.
//!
//! The batch goes in as one `INSERT ... SELECT FROM unnest($1..$9) ON CONFLICT (event_id)
//! DO NOTHING RETURNING event_id`: one round trip, one plan, parameters sent as arrays.
//! `RETURNING` tells which rows were new, so duplicates are counted and rollups updated
//! (`rollup.rs`, same transaction) only for rows really inserted. Before it, the batch's
//! distinct users get their keys ([`user_keys`]: from the [`KeyCache`] of committed keys,
//! the rest from one statement), stored with each row for the per-user sets.
//!
//! Measured (`cargo bench -p worker --bench insert`, 2026-11-22, 2-core Debian, PostgreSQL
//! 15, private cluster with fsync=off, so absolute figures are optimistic; the ratios are
//! what matters): 200,000 events of ~770 bytes, batches of 1000, 3 concurrent batches,
//! best of 3 rounds —
//!
//! | path                                                          |  rows/s | vs COPY |
//! |---------------------------------------------------------------|--------:|--------:|
//! | (a) binary COPY straight into `events` (no conflict check)    | 158,759 |    1.00 |
//! | (b) this UNNEST + ON CONFLICT + RETURNING                     | 132,677 |    0.84 |
//! | (c) binary COPY into a session temp table + INSERT ... SELECT | 115,805 |    0.73 |
//! | (c') the same, temp table per batch (ON COMMIT DROP)          | 107,506 |    0.68 |
//! | (d) UNNEST + ON CONFLICT without RETURNING                    | 135,771 |    0.86 |
//!
//! Redelivery (the same rows again, all duplicates): UNNEST 193,512 rows/s, COPY into a
//! temp table 153,208. UNNEST beats COPY-into-temp by ~15% (the extra write and read of
//! the temporary table costs more than sending arrays), so it stays; RETURNING costs ~2%.

use deadpool_postgres::{GenericClient, Pool};
use rust_decimal::Decimal;
use serde_json::Value;
use serde_json::value::RawValue;
use service_kit::telemetry::TARGET;
use shared_events::{FunnelStage, Source};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use time::OffsetDateTime;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tracing::Instrument;

/// One event ready to insert.
#[derive(Debug, Clone)]
pub struct Row {
    pub event_id: String,
    pub event_time: OffsetDateTime,
    pub source: Source,
    pub funnel_stage: FunnelStage,
    pub event_type: String,
    pub user_id: String,
    /// The `data` object as JSON text (PostgreSQL parses it into JSONB).
    pub data: String,
    /// Unknown top-level fields as a JSON object, if any.
    pub extra: Option<String>,
    /// When ingestion accepted the event.
    pub ingested_at: Option<OffsetDateTime>,
    /// Derived facts (events.md), computed once here.
    pub country: Option<String>,
    pub campaign_id: Option<String>,
    /// The amount of a revenue event with a non-null `purchaseAmount` (a purchase).
    pub revenue: Option<Decimal>,
    /// `data.user.age`, `.gender`, `.location.city`, `.followers` and
    /// `data.engagement.device` as text, as PostgreSQL's `#>>` reads them from the stored
    /// JSON (the per-user sets' demographic facts).
    pub demographics: [Option<String>; 5],
}

/// The paths of [`Row::demographics`] in `data`.
const DEMOGRAPHICS: [&[&str]; 5] = [
    &["user", "age"],
    &["user", "gender"],
    &["user", "location", "city"],
    &["user", "followers"],
    &["engagement", "device"],
];

/// The value at `path` as text, as PostgreSQL's `#>>` gives it: a string as is, a number
/// or boolean as its JSON text, null or absent as `None`.
fn text_at(data: &Value, path: &[&str]) -> Option<String> {
    let value = path.iter().try_fold(data, |v, key| v.get(key))?;
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Why a message can never become a row: the dead-letter reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Bounded label (`undecodable`, `invalid_event`, `rejected_by_database`,
    /// `max_deliver_exceeded`).
    pub reason: &'static str,
    /// What exactly was wrong, for the operator reading the DLQ.
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }
}

/// Decodes and validates a message payload into a row. The same validation as at
/// ingestion runs again: anything published straight to the stream is checked too.
pub fn decode(payload: &[u8], ingested_at: Option<OffsetDateTime>) -> Result<Row, Rejection> {
    let value: Value = serde_json::from_slice(payload)
        .map_err(|e| Rejection::new("undecodable", format!("payload is not JSON: {e}")))?;
    let event = shared_events::validate(&value).map_err(|errors| {
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.reason))
            .collect::<Vec<_>>()
            .join("; ");
        Rejection::new("invalid_event", detail)
    })?;
    Ok(Row {
        event_id: event.event_id.to_owned(),
        event_time: event.timestamp,
        source: event.source,
        funnel_stage: event.funnel_stage,
        event_type: event.event_type.to_owned(),
        user_id: event.user_id().to_owned(),
        data: data_text(payload).unwrap_or_else(|| event.data().to_string()),
        extra: event.unknown_fields().map(|m| Value::Object(m).to_string()),
        ingested_at,
        country: event.country().map(str::to_owned),
        campaign_id: event.campaign_id().map(str::to_owned),
        revenue: event.revenue(),
        demographics: DEMOGRAPHICS.map(|path| text_at(event.data(), path)),
    })
}

/// The `data` object's JSON text exactly as the producer sent it (PostgreSQL parses it
/// into the same JSONB as the parsed value's re-serialisation, and keeps numbers exactly as
/// written), found without building anything: writing the parsed `Value` back out cost
/// about a tenth of the worker's CPU. `None` when serde cannot borrow it (a repeated
/// `data` key, which the parsed value resolves to the last one); the caller then
/// re-serialises.
fn data_text(payload: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        data: &'a RawValue,
    }
    serde_json::from_slice::<Envelope<'_>>(payload)
        .ok()
        .map(|e| e.data.get().to_owned())
}

/// What happened to each row of a batch after the commit.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Per row: newly stored (`true`) or already stored before (`false`). Rows listed
    /// in `rejected` are `false` too.
    pub inserted: Vec<bool>,
    /// Rows the database refused for their own content (index, reason); the rest of
    /// the batch is committed without them.
    pub rejected: Vec<(usize, Rejection)>,
}

/// A failure that may pass: the batch should be retried later, not dead-lettered.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Transient(pub String);

const INSERT_SQL: &str = "\
INSERT INTO events (event_id, event_time, source, funnel_stage, event_type, user_id, data, extra,
                    ingested_at, country, campaign_id, revenue, user_key)
SELECT id, t, s, f, e, u, d::jsonb, x::jsonb, i, c, k, r, uk
FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::text[], $9::timestamptz[], $10::text[], $11::text[], $12::numeric[],
            $13::int4[])
     AS r(id, t, s, f, e, u, d, x, i, c, k, r, uk)
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id";

/// The keys of a batch's distinct users (sorted), inserting those that have none. Only new
/// users take a sequence value (`NOT EXISTS` first); the sorted order keeps concurrent
/// batches that add the same new users from deadlocking. A user another transaction is
/// adding at the same moment comes back from neither branch (the `INSERT` waits for it to
/// commit, then does nothing; the `SELECT` ran on the snapshot from before): those are
/// read again by [`LOOKUP_SQL`], whose snapshot holds them.
const KEYS_SQL: &str = "\
WITH n AS (SELECT * FROM unnest($1::text[], $2::text[]) AS n(source, user_id)),
new AS (
    INSERT INTO user_keys (source, user_id)
    SELECT source, user_id FROM n
    WHERE NOT EXISTS (SELECT 1 FROM user_keys k WHERE k.source = n.source AND k.user_id = n.user_id)
    ORDER BY 1, 2
    ON CONFLICT DO NOTHING
    RETURNING user_key, source, user_id)
SELECT user_key, source, user_id FROM new
UNION ALL
SELECT k.user_key, k.source, k.user_id FROM n JOIN user_keys k USING (source, user_id)";

const LOOKUP_SQL: &str = "\
SELECT k.user_key, k.source, k.user_id
FROM unnest($1::text[], $2::text[]) AS n(source, user_id) JOIN user_keys k USING (source, user_id)";

/// Users' keys the worker has seen committed, so that a batch of known users needs no key
/// statement. A key never changes once assigned (`user_keys` rows are never updated or
/// deleted), so an entry cannot go stale. Filled only after a commit: a key inserted by a
/// transaction that rolled back must not be reused. Bounded: when a source's map is full
/// it starts over.
#[derive(Debug, Default)]
pub struct KeyCache {
    by_source: Mutex<[HashMap<String, i32>; Source::ALL.len()]>,
}

/// Most users a [`KeyCache`] holds per source (~80 bytes each).
const KEY_CACHE_USERS: usize = 200_000;

impl KeyCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, [HashMap<String, i32>; Source::ALL.len()]> {
        // A panic elsewhere while holding the lock leaves the maps valid.
        self.by_source
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remembers keys a committed transaction read or assigned ([`UserKeys::fetched`]).
    pub fn remember(&self, fetched: Vec<(Source, String, i32)>) {
        let mut maps = self.lock();
        for (source, user, key) in fetched {
            let map = &mut maps[source as usize];
            if map.len() >= KEY_CACHE_USERS {
                map.clear();
            }
            map.insert(user, key);
        }
    }
}

/// The keys of a batch's rows.
#[derive(Debug, Default)]
pub struct UserKeys {
    /// Per row, its user's key.
    pub rows: Vec<Option<i32>>,
    /// The keys that came from the database rather than the cache, for
    /// [`KeyCache::remember`] once the transaction has committed.
    pub fetched: Vec<(Source, String, i32)>,
}

/// The user key of every row, creating the missing ones. The per-user sets need a dense
/// integer per user; assigned here, once per batch, the compactor and the reports' raw
/// reads find it in the row instead of looking it up per event. Users in `cache` need no
/// statement; the caller remembers the others ([`UserKeys::fetched`]) there after its
/// commit. (`None` only for a user whose key vanished between the two statements, which
/// nothing does; readers would look it up.)
pub async fn user_keys(
    client: &impl GenericClient,
    cache: Option<&KeyCache>,
    rows: &[Row],
) -> Result<UserKeys, tokio_postgres::Error> {
    let mut users: Vec<(Source, &str)> = rows
        .iter()
        .map(|r| (r.source, r.user_id.as_str()))
        .collect();
    users.sort_unstable();
    users.dedup();
    let mut keys: Vec<Option<i32>> = vec![None; users.len()];
    if let Some(cache) = cache {
        let maps = cache.lock();
        for (key, (source, user)) in keys.iter_mut().zip(&users) {
            *key = maps[*source as usize].get(*user).copied();
        }
    }
    let mut fetched = Vec::new();
    let mut place = |found: Vec<tokio_postgres::Row>, keys: &mut Vec<Option<i32>>| {
        for row in found {
            let Some(source) = Source::parse(row.get(1)) else {
                continue;
            };
            if let Ok(i) = users.binary_search(&(source, row.get(2))) {
                let key = row.get(0);
                keys[i] = Some(key);
                if cache.is_some() {
                    fetched.push((source, users[i].1.to_owned(), key));
                }
            }
        }
    };
    for statement in [KEYS_SQL, LOOKUP_SQL] {
        // First the users not cached; then those a concurrent batch was adding.
        let missing: Vec<usize> = (0..users.len()).filter(|&i| keys[i].is_none()).collect();
        if missing.is_empty() {
            break;
        }
        let sources: Vec<&str> = missing.iter().map(|&i| users[i].0.as_str()).collect();
        let ids: Vec<&str> = missing.iter().map(|&i| users[i].1).collect();
        let statement = client.prepare_cached(statement).await?;
        place(
            client.query(&statement, &[&sources, &ids]).await?,
            &mut keys,
        );
    }
    let rows = rows
        .iter()
        .map(|r| {
            users
                .binary_search(&(r.source, r.user_id.as_str()))
                .ok()
                .and_then(|i| keys[i])
        })
        .collect();
    Ok(UserKeys { rows, fetched })
}

/// Whether a database error is about the rows themselves (class 22 data exception, 23
/// integrity violation, 54 program limit such as a too-large row). Everything else —
/// lost connections, shutdowns, serialization failures, a missing table — may pass, and
/// must never send good events to the dead-letter queue.
fn is_row_problem(e: &tokio_postgres::Error) -> bool {
    e.code()
        .map(|c| matches!(&c.code()[..2], "22" | "23" | "54"))
        .unwrap_or(false)
}

fn transient(e: impl std::fmt::Display) -> Transient {
    Transient(e.to_string())
}

/// Inserts a batch in one transaction. A row the database refuses is isolated by
/// bisection (savepoints), so the rest of its batch still commits. The transaction is the
/// `insert` span (trace export only).
pub async fn insert_batch(
    pool: &Pool,
    cache: &KeyCache,
    rows: &[Row],
) -> Result<Outcome, Transient> {
    let span = tracing::info_span!(
        target: TARGET,
        "insert",
        otel.kind = "client",
        db.system.name = "postgresql",
        db.operation.name = "INSERT",
        db.collection.name = "events",
        rows = rows.len(),
        inserted = tracing::field::Empty,
        rejected = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let result = insert_in_transaction(pool, cache, rows)
        .instrument(span.clone())
        .await;
    if !span.is_disabled() {
        match &result {
            Ok(outcome) => {
                span.record(
                    "inserted",
                    outcome.inserted.iter().filter(|new| **new).count(),
                );
                span.record("rejected", outcome.rejected.len());
            }
            Err(_) => {
                span.record("otel.status_code", "ERROR");
            }
        }
    }
    result
}

async fn insert_in_transaction(
    pool: &Pool,
    cache: &KeyCache,
    rows: &[Row],
) -> Result<Outcome, Transient> {
    let mut outcome = Outcome {
        inserted: vec![false; rows.len()],
        rejected: Vec::new(),
    };
    if rows.is_empty() {
        return Ok(outcome);
    }
    let mut client = pool.get().await.map_err(transient)?;
    // Almost every batch holds only new, valid events: one binary COPY stores them all (it
    // costs PostgreSQL less per row than `INSERT ... ON CONFLICT`). A duplicate (a
    // redelivery, or a repeat outside JetStream's window) or a refused row fails the COPY;
    // then the INSERT skips duplicates, and a refused row is isolated below.
    for copy in [true, false] {
        let tx = client.transaction().await.map_err(transient)?;
        let UserKeys {
            rows: keys,
            fetched,
        } = user_keys(&tx, Some(cache), rows).await.map_err(transient)?;
        let stored = if copy {
            copy_rows(&tx, "events", rows, &keys)
                .await
                .map(|_| outcome.inserted.fill(true))
        } else {
            insert_rows(&tx, rows, &keys)
                .await
                .map(|ids| mark(&mut outcome, rows, 0, ids))
        };
        match stored {
            Ok(()) => {
                crate::rollup::add(&tx, rows, &keys, &outcome.inserted)
                    .await
                    .map_err(transient)?;
                tx.commit().await.map_err(transient)?;
                cache.remember(fetched);
                return Ok(outcome);
            }
            Err(e) if is_row_problem(&e) => {
                tx.rollback().await.map_err(transient)?;
            }
            Err(e) => return Err(transient(e)),
        }
    }

    // Slow path, only for batches holding a row the database refuses.
    let mut tx = client.transaction().await.map_err(transient)?;
    let UserKeys {
        rows: keys,
        fetched,
    } = user_keys(&tx, Some(cache), rows).await.map_err(transient)?;
    let mut ranges = Vec::new();
    ranges.push(0..rows.len());
    while let Some(range) = ranges.pop() {
        let savepoint = tx.savepoint("isolate").await.map_err(transient)?;
        match insert_rows(&savepoint, &rows[range.clone()], &keys[range.clone()]).await {
            Ok(ids) => {
                savepoint.commit().await.map_err(transient)?;
                mark(&mut outcome, &rows[range.clone()], range.start, ids);
            }
            Err(e) if is_row_problem(&e) => {
                savepoint.rollback().await.map_err(transient)?;
                if range.len() == 1 {
                    let detail = e
                        .as_db_error()
                        .map(|d| format!("{} ({})", d.message(), d.code().code()))
                        .unwrap_or_else(|| e.to_string());
                    outcome
                        .rejected
                        .push((range.start, Rejection::new("rejected_by_database", detail)));
                } else {
                    let mid = range.start + range.len() / 2;
                    ranges.push(mid..range.end);
                    ranges.push(range.start..mid);
                }
            }
            Err(e) => return Err(transient(e)),
        }
    }
    crate::rollup::add(&tx, rows, &keys, &outcome.inserted)
        .await
        .map_err(transient)?;
    tx.commit().await.map_err(transient)?;
    cache.remember(fetched);
    outcome.rejected.sort_by_key(|(i, _)| *i);
    Ok(outcome)
}

/// Marks the rows whose ids came back from `RETURNING` (first occurrence only, so a
/// repeated id inside one batch counts once).
fn mark(outcome: &mut Outcome, rows: &[Row], offset: usize, ids: Vec<String>) {
    let mut new: HashSet<String> = ids.into_iter().collect();
    for (i, row) in rows.iter().enumerate() {
        if new.remove(&row.event_id) {
            outcome.inserted[offset + i] = true;
        }
    }
}

async fn insert_rows(
    client: &impl GenericClient,
    rows: &[Row],
    keys: &[Option<i32>],
) -> Result<Vec<String>, tokio_postgres::Error> {
    let statement = client.prepare_cached(INSERT_SQL).await?;
    let ids: Vec<&str> = rows.iter().map(|r| r.event_id.as_str()).collect();
    let times: Vec<OffsetDateTime> = rows.iter().map(|r| r.event_time).collect();
    let sources: Vec<&str> = rows.iter().map(|r| r.source.as_str()).collect();
    let stages: Vec<&str> = rows.iter().map(|r| r.funnel_stage.as_str()).collect();
    let types: Vec<&str> = rows.iter().map(|r| r.event_type.as_str()).collect();
    let users: Vec<&str> = rows.iter().map(|r| r.user_id.as_str()).collect();
    let data: Vec<&str> = rows.iter().map(|r| r.data.as_str()).collect();
    let extra: Vec<Option<&str>> = rows.iter().map(|r| r.extra.as_deref()).collect();
    let ingested: Vec<Option<OffsetDateTime>> = rows.iter().map(|r| r.ingested_at).collect();
    let countries: Vec<Option<&str>> = rows.iter().map(|r| r.country.as_deref()).collect();
    let campaigns: Vec<Option<&str>> = rows.iter().map(|r| r.campaign_id.as_deref()).collect();
    let revenue: Vec<Option<Decimal>> = rows.iter().map(|r| r.revenue).collect();
    let returned = client
        .query(
            &statement,
            &[
                &ids, &times, &sources, &stages, &types, &users, &data, &extra, &ingested,
                &countries, &campaigns, &revenue, &keys,
            ],
        )
        .await?;
    Ok(returned.into_iter().map(|row| row.get(0)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_event_decodes_with_its_unknown_fields() {
        let payload = br#"{"eventId":"e1","timestamp":"2026-03-01T12:00:05Z","source":"tiktok",
            "funnelStage":"top","eventType":"video.view","future":{"x":1},
            "data":{"user":{"userId":"u1","username":"n","followers":3,"badge":"gold"},
                    "engagement":{"watchTime":4,"percentageWatched":50,"device":"iOS",
                                  "country":"Brazil","videoId":"v"}}}"#;
        let row = decode(payload, None).unwrap_or_else(|r| panic!("{r:?}"));
        assert_eq!(row.event_id, "e1");
        assert_eq!(row.user_id, "u1");
        assert_eq!(row.extra.as_deref(), Some(r#"{"future":{"x":1}}"#));
        assert!(row.data.contains(r#""badge":"gold""#));
    }

    #[test]
    fn data_is_stored_as_sent_and_a_repeated_data_key_resolves_to_the_last() {
        let event = |data: &str| {
            format!(
                r#"{{"eventId":"e1","timestamp":"2026-03-01T12:00:05Z","source":"tiktok",
                "funnelStage":"top","eventType":"video.view",{data}}}"#
            )
        };
        let data = r#"{"user":{"userId":"u1","username":"n","followers":3},
            "engagement":{"watchTime":4,"percentageWatched":50,"device":"iOS",
                          "country":"Brazil","videoId":"v","score":1.50,"big":123456789012345678901234}}"#;
        let row = decode(event(&format!(r#""data":{data}"#)).as_bytes(), None)
            .unwrap_or_else(|r| panic!("{r:?}"));
        assert_eq!(
            row.data, data,
            "not re-serialised: numbers keep their digits"
        );

        let repeated = event(&format!(r#""data":{{"user":{{}}}},"data":{data}"#));
        let row = decode(repeated.as_bytes(), None).unwrap_or_else(|r| panic!("{r:?}"));
        assert!(row.data.contains(r#""userId":"u1""#), "{}", row.data);
        assert_eq!(row.user_id, "u1");
    }

    #[test]
    fn garbage_and_invalid_events_are_rejected_with_a_reason() {
        let r = decode(b"not json", None).err();
        assert_eq!(r.map(|r| r.reason), Some("undecodable"));
        let r = decode(br#"{"eventId":"e1"}"#, None).err();
        assert_eq!(r.as_ref().map(|r| r.reason), Some("invalid_event"));
        assert!(r.is_some_and(|r| r.detail.contains("timestamp: is required")));
    }
}

/// The columns [`copy_rows`] fills, in order (then `user_key` when keys are given).
const COPY_COLUMNS: &str = "event_id, event_time, source, funnel_stage, event_type, user_id, \
    data, extra, ingested_at, country, campaign_id, revenue";

const COPY_TYPES: [Type; 13] = [
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::JSONB,
    Type::JSONB,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
    Type::NUMERIC,
    Type::INT4,
];

/// JSON text sent as `jsonb` in binary COPY (version byte 1, then the text).
#[derive(Debug)]
struct Jsonb<'a>(&'a str);

impl ToSql for Jsonb<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == Type::JSONB {
            out.extend_from_slice(&[1]);
        }
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::JSON | Type::JSONB)
    }

    to_sql_checked!();
}

/// Loads rows with binary `COPY` into `table` (`events` or a table like it), with no
/// conflict handling (a duplicate fails it) and no rollup maintenance: the insert path's
/// first attempt, the ceiling the benchmarks compare the worker's path with, and the
/// loader of their large data sets (run `rebuild_rollups()` afterwards). `keys` are the rows' user keys ([`user_keys`]), or empty: the column is
/// then left out (NULL in `events`, which readers look up; a table like it may lack it).
/// Returns the rows copied.
pub async fn copy_rows(
    client: &tokio_postgres::Transaction<'_>,
    table: &str,
    rows: &[Row],
    keys: &[Option<i32>],
) -> Result<u64, tokio_postgres::Error> {
    let (columns, types) = if keys.is_empty() {
        (COPY_COLUMNS.to_owned(), &COPY_TYPES[..12])
    } else {
        (format!("{COPY_COLUMNS}, user_key"), &COPY_TYPES[..])
    };
    let sink = client
        .copy_in(&format!("COPY {table} ({columns}) FROM STDIN BINARY"))
        .await?;
    let writer = BinaryCopyInWriter::new(sink, types);
    let mut writer = std::pin::pin!(writer);
    for (i, r) in rows.iter().enumerate() {
        let key = keys.get(i).copied().flatten();
        let values: [&(dyn ToSql + Sync); 13] = [
            &r.event_id,
            &r.event_time,
            &r.source.as_str(),
            &r.funnel_stage.as_str(),
            &r.event_type,
            &r.user_id,
            &Jsonb(&r.data),
            &r.extra.as_deref().map(Jsonb),
            &r.ingested_at,
            &r.country,
            &r.campaign_id,
            &r.revenue,
            &key,
        ];
        writer.as_mut().write(&values[..types.len()]).await?;
    }
    writer.as_mut().finish().await
}
