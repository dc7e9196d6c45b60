//! Writing a batch of rows in one transaction, exactly once, isolating rows the database
//! refuses.
//!
//! A batch's first attempt is the cheapest: its distinct users get their keys
//! ([`user_keys`]: from the [`KeyCache`] of committed keys, the rest from one statement),
//! one binary `COPY` stores every event id in `event_keys` (the dedup: `events` is
//! partitioned by time and cannot hold a unique index on the id), another stores every
//! row, and the rollups (`rollup.rs`) add them, all in one transaction. A duplicate (a
//! redelivery, a resend past JetStream's window) fails the first `COPY`; the second
//! attempt inserts the keys with `ON CONFLICT (event_id) DO NOTHING RETURNING` and only
//! the rows whose key came back, so only those are counted.
//!
//! A row can be refused by any statement of the transaction: its user's key, its own
//! insert, a rollup or the per-user-set lists. The error's SQLSTATE says whose fault it is
//! ([`Fault`]): a lost connection, a shutdown, exhausted resources, a serialization
//! failure or a deadlock may pass, and the whole batch is retried later; a data exception
//! (class 22), an integrity violation (23) or a program limit (54) is about a row, and
//! only that row must stay out. The slow path then bisects the batch under savepoints,
//! each holding every statement of its rows, until each refused row is alone; it goes to
//! the dead-letter queue with the SQLSTATE and the message, and the rest commits.

mod copy;
mod decode;
mod keys;

pub use copy::{copy_keys, copy_rows};
pub use decode::decode;
pub use keys::{KeyCache, UserKeys, user_keys};

use deadpool_postgres::{GenericClient, Pool};
use rust_decimal::Decimal;
use service_kit::telemetry::TARGET;
use shared_events::{FunnelStage, Source};
use std::collections::HashSet;
use std::ops::Range;
use time::OffsetDateTime;
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
    /// Derived facts (docs/events.md), computed once here.
    pub country: Option<String>,
    pub campaign_id: Option<String>,
    /// The amount of a revenue event with a non-null `purchaseAmount` (a purchase).
    pub revenue: Option<Decimal>,
    /// `data.user.age`, `.gender`, `.location.city`, `.followers` and
    /// `data.engagement.device` as text, as PostgreSQL's `#>>` reads them from the stored
    /// JSON (the per-user sets' demographic facts).
    pub demographics: [Option<String>; 5],
}

/// Why a message can never become a row: the dead-letter reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Bounded label (`undecodable`, `invalid_event`, `refused_by_database`,
    /// `max_deliver_exceeded`).
    pub reason: &'static str,
    /// What exactly was wrong, for the operator reading the DLQ.
    pub detail: String,
    /// The PostgreSQL SQLSTATE of a row the database refused.
    pub sqlstate: Option<String>,
}

impl Rejection {
    pub fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
            sqlstate: None,
        }
    }
}

/// The dead-letter reason of a row the database refused.
pub const REFUSED_BY_DATABASE: &str = "refused_by_database";

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

/// A failure that may pass: the batch is retried later, not dead-lettered.
#[derive(Debug, thiserror::Error)]
pub enum Transient {
    #[error("no database connection")]
    Pool(#[source] deadpool_postgres::PoolError),
    #[error("database error")]
    Database(#[source] tokio_postgres::Error),
    #[error("a row refused alone could not be isolated")]
    Unisolated(#[source] WriteError),
}

/// A statement of the insert transaction failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Database(#[from] tokio_postgres::Error),
    /// A rollup's revenue sum past what an exact decimal holds.
    #[error("a revenue sum exceeds the largest exact decimal")]
    Overflow,
}

/// Whose fault a failed statement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The rows' own values: retrying cannot help, the refused rows must stay out.
    Rows,
    /// Anything else (connection, shutdown, resources, locks, a missing table or
    /// permission): it may pass, so good events must never be dead-lettered for it.
    Database,
}

/// Whose fault a failed statement is, by its SQLSTATE (see [`WriteError::fault`]).
pub fn fault_of(e: &tokio_postgres::Error) -> Fault {
    match e.code().map(|c| c.code().get(..2)) {
        Some(Some("22" | "23" | "54")) => Fault::Rows,
        _ => Fault::Database,
    }
}

impl WriteError {
    /// By SQLSTATE class: 22 data exception (a NUL byte, a value out of range), 23
    /// integrity violation (a check; the dedup conflict never reaches here, `ON CONFLICT`
    /// absorbs it), 54 program limit (an index entry too large) are the rows' fault.
    pub fn fault(&self) -> Fault {
        match self {
            WriteError::Overflow => Fault::Rows,
            WriteError::Database(e) => fault_of(e),
        }
    }

    /// The dead letter of the row this error refused.
    fn rejection(&self) -> Rejection {
        match self {
            WriteError::Database(e) => match e.as_db_error() {
                Some(db) => Rejection {
                    reason: REFUSED_BY_DATABASE,
                    detail: format!("{} ({})", db.message(), db.code().code()),
                    sqlstate: Some(db.code().code().to_owned()),
                },
                None => Rejection::new(REFUSED_BY_DATABASE, e.to_string()),
            },
            WriteError::Overflow => Rejection::new(REFUSED_BY_DATABASE, self.to_string()),
        }
    }
}

impl From<tokio_postgres::Error> for Transient {
    fn from(e: tokio_postgres::Error) -> Self {
        Transient::Database(e)
    }
}

impl From<WriteError> for Transient {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Database(e) => Transient::Database(e),
            other => Transient::Unisolated(other),
        }
    }
}

/// The slow path's write: the keys first (`event_keys` is the dedup: a conflict there means
/// the event is stored already, whatever its time), then the rows whose key is new. A
/// repeated id inside the batch counts once, by its first occurrence.
const INSERT_SQL: &str = "\
WITH r AS (
    SELECT DISTINCT ON (id) *
    FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::text[], $8::text[], $9::timestamptz[], $10::text[], $11::text[],
                $12::numeric[], $13::int4[])
         WITH ORDINALITY AS r(id, t, s, f, e, u, d, x, i, c, k, rv, uk, n)
    ORDER BY id, n
), fresh AS (
    INSERT INTO event_keys (event_id, event_time) SELECT id, t FROM r
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
)
INSERT INTO events (event_id, event_time, source, funnel_stage, event_type, user_id, data, extra,
                    ingested_at, country, campaign_id, revenue, user_key)
SELECT id, t, s, f, e, u, d::jsonb, x::jsonb, i, c, k, rv, uk
FROM r JOIN fresh ON fresh.event_id = r.id
RETURNING event_id";

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

/// How an attempt writes the events themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    /// Binary `COPY` of the keys, then of the rows: fails on a stored id.
    Copy,
    /// `INSERT ... ON CONFLICT DO NOTHING RETURNING`.
    Insert,
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
    let mut client = pool.get().await.map_err(Transient::Pool)?;
    // Almost every batch holds only new, valid events: one binary COPY stores them all (it
    // costs PostgreSQL less per row than `INSERT ... ON CONFLICT`).
    for write in [Write::Copy, Write::Insert] {
        let tx = client.transaction().await?;
        match write_rows(&tx, Some(cache), rows, write).await {
            Ok((inserted, fetched)) => {
                tx.commit().await?;
                cache.remember(fetched);
                outcome.inserted = inserted;
                return Ok(outcome);
            }
            Err(e) if e.fault() == Fault::Rows => tx.rollback().await?,
            Err(e) => return Err(e.into()),
        }
    }

    // Slow path, only for batches holding a row the database refuses: every range is
    // written whole (keys, rows, rollups) under its own savepoint, and a range refused
    // is split in two until the refused rows stand alone.
    let mut tx = client.transaction().await?;
    let mut fetched = Vec::new();
    let mut ranges: Vec<Range<usize>> = Vec::new();
    ranges.push(0..rows.len());
    while let Some(range) = ranges.pop() {
        let savepoint = tx.savepoint("isolate").await?;
        match write_rows(&savepoint, Some(cache), &rows[range.clone()], Write::Insert).await {
            Ok((inserted, keys)) => {
                savepoint.commit().await?;
                outcome.inserted[range.clone()].copy_from_slice(&inserted);
                fetched.extend(keys);
            }
            Err(e) if e.fault() == Fault::Rows => {
                savepoint.rollback().await?;
                if range.len() == 1 {
                    outcome.rejected.push((range.start, e.rejection()));
                } else {
                    let mid = range.start + range.len() / 2;
                    ranges.push(mid..range.end);
                    ranges.push(range.start..mid);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    tx.commit().await?;
    cache.remember(fetched);
    outcome.rejected.sort_by_key(|(i, _)| *i);
    Ok(outcome)
}

/// Writes `rows` whole inside the caller's transaction: their users' keys, the rows, and
/// the rollups and per-user-set lists of those newly inserted. Returns, per row, whether
/// it was new, and the keys read from the database (to cache once committed).
async fn write_rows(
    client: &deadpool_postgres::Transaction<'_>,
    cache: Option<&KeyCache>,
    rows: &[Row],
    write: Write,
) -> Result<(Vec<bool>, Vec<(Source, String, i32)>), WriteError> {
    let UserKeys {
        rows: keys,
        fetched,
    } = user_keys(client, cache, rows).await?;
    let inserted = match write {
        Write::Copy => {
            copy_keys(client, "event_keys", rows).await?;
            copy_rows(client, "events", rows, &keys).await?;
            vec![true; rows.len()]
        }
        Write::Insert => mark(rows, insert_rows(client, rows, &keys).await?),
    };
    crate::rollup::add(client, rows, &keys, &inserted).await?;
    Ok((inserted, fetched))
}

/// Which rows' ids came back from `RETURNING` (first occurrence only, so a repeated id
/// inside one batch counts once).
fn mark(rows: &[Row], ids: Vec<String>) -> Vec<bool> {
    let mut new: HashSet<String> = ids.into_iter().collect();
    rows.iter().map(|row| new.remove(&row.event_id)).collect()
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
