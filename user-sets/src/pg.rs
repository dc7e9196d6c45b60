//! Reading events for the sets from PostgreSQL: the raw events of a range ([`RAW_SQL`],
//! [`scan_raw`]) and the events listed for dirty slots ([`scan_pending`]).

use crate::codec::decode_activities;
use crate::error::{DecodeError, Error};
use crate::profile::Activity;
use shared_events::{FunnelStage, Source};
use time::OffsetDateTime;

/// `RAW_SQL`'s columns, with the demographic facts or without (NULL), over the given rows.
macro_rules! raw_sql {
    (demographics, $rows:literal) => {
        raw_sql!(@
            "e.data #>> '{user,age}', e.data #>> '{user,gender}', e.data #>> '{user,location,city}',
       e.data #>> '{user,followers}', e.data #>> '{engagement,device}'",
            $rows)
    };
    (no_demographics, $rows:literal) => {
        raw_sql!(@ "NULL::text, NULL::text, NULL::text, NULL::text, NULL::text", $rows)
    };
    (@ $demographics:literal, $rows:literal) => {
        concat!(
            "SELECT e.source, e.funnel_stage, e.event_type, e.user_id,
       coalesce(e.user_key,
                (SELECT k.user_key FROM user_keys k WHERE k.source = e.source AND k.user_id = e.user_id)),
       e.country, e.revenue, ",
            $demographics,
            "\n",
            $rows
        )
    };
}

/// The raw events of `[$1, $2)` as the sets need them, with the user's key when one has
/// been assigned. Columns: see [`Activity::from_row`]. The key is the row's own (set by
/// the worker at insert); only a row without one looks it up, one index lookup (a join
/// would hash every user for a few raw rows).
pub const RAW_SQL: &str = raw_sql!(
    demographics,
    "FROM events e WHERE e.event_time >= $1 AND e.event_time < $2"
);

/// [`RAW_SQL`] without the demographic facts (NULL), for readers that need none of them
/// (geo, funnel, users/top): reading them from the JSON took about half of a raw row's
/// cost.
pub const RAW_SQL_WITHOUT_DEMOGRAPHICS: &str = raw_sql!(
    no_demographics,
    "FROM events e WHERE e.event_time >= $1 AND e.event_time < $2"
);

impl Activity {
    /// Reads a row of [`RAW_SQL`].
    pub fn from_row(row: &tokio_postgres::Row) -> Result<Activity, DecodeError> {
        let source: &str = row.try_get(0)?;
        let stage: &str = row.try_get(1)?;
        Ok(Activity {
            source: Source::parse(source).ok_or_else(|| DecodeError::unknown("source", source))?,
            funnel_stage: FunnelStage::parse(stage)
                .ok_or_else(|| DecodeError::unknown("funnel_stage", stage))?,
            event_type: row.try_get(2)?,
            user_id: row.try_get(3)?,
            user_key: row.try_get(4)?,
            country: row.try_get(5)?,
            revenue: row.try_get(6)?,
            age: row.try_get(7)?,
            gender: row.try_get(8)?,
            city: row.try_get(9)?,
            followers: row.try_get(10)?,
            device: row.try_get(11)?,
        })
    }
}

/// Rows handed to [`scan_raw`]'s callback at a time: memory stays bounded however many
/// events a slot holds.
const CHUNK: usize = 4096;

/// Streams the raw events `raw` selects to `f`, a chunk at a time. `raw` is [`RAW_SQL`]
/// (or [`RAW_SQL_WITHOUT_DEMOGRAPHICS`]) with its `[lo, hi)`, prepared once by the caller.
pub async fn scan_raw(
    tx: &tokio_postgres::Transaction<'_>,
    raw: &tokio_postgres::Statement,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    mut f: impl FnMut(&[Activity]),
) -> Result<(), Error> {
    use futures::TryStreamExt;
    let rows = tx.query_raw(raw, params.iter().copied()).await?;
    futures::pin_mut!(rows);
    let mut chunk = Vec::with_capacity(CHUNK);
    while let Some(row) = rows.try_next().await? {
        chunk.push(Activity::from_row(&row)?);
        if chunk.len() == CHUNK {
            f(&chunk);
            chunk.clear();
        }
    }
    if !chunk.is_empty() {
        f(&chunk);
    }
    Ok(())
}

/// The facts of the events listed for the slots `$1` (`timestamptz[]`): stored, not yet
/// in their slot's level-0 block.
const PENDING_SQL: &str = "SELECT facts FROM user_sets_pending WHERE slot = ANY($1)";

/// Streams the events listed for the slots starting at `slots` ([`crate::encode_activities`])
/// to `f`, a batch's list at a time.
pub async fn scan_pending(
    tx: &tokio_postgres::Transaction<'_>,
    slots: &[OffsetDateTime],
    mut f: impl FnMut(&[Activity]),
) -> Result<(), Error> {
    use futures::TryStreamExt;
    let rows = tx.query_raw(PENDING_SQL, [&slots]).await?;
    futures::pin_mut!(rows);
    let mut chunk = Vec::new();
    while let Some(row) = rows.try_next().await? {
        chunk.clear();
        decode_activities(row.try_get(0)?, &mut chunk)?;
        f(&chunk);
    }
    Ok(())
}
