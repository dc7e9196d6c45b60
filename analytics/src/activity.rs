//! Reading per-user activity over a range: the sets of users (distinct-user figures) and
//! the per-user totals (users/top), from the blocks the worker's compactor built
//! (`service_kit::user_sets`): blocks holding no dirty slot; for a dirty slot, its level-0
//! block plus the events listed for it (`user_sets_pending`), or its raw events when its
//! mark asks for a full rebuild; and the raw events of the partial slots at the edges
//! (a partial slot whose part outside the range holds no event, such as the slot being
//! written for a range ending now, is taken whole). Everything is read in one REPEATABLE
//! READ snapshot, so a block, the entries listed for it and the marks are seen together.

use crate::params::unrepresentable_range;
use crate::routes::{database_error, unavailable};
use axum::http::StatusCode;
use deadpool_postgres::{Pool, Transaction};
use rust_decimal::Decimal;
use service_kit::error::ApiError;
use service_kit::user_sets::{
    Activity, Block, OwnedSetKey, PendingError, RAW_SQL, RAW_SQL_WITHOUT_DEMOGRAPHICS, SetKey,
    SetValue, UserTotals, checked_slot_ceil, checked_slot_floor, checked_slot_start, cover,
    decode_totals, memberships, needs_demographics, scan_pending, scan_raw, slot_of,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;
use time::OffsetDateTime;
use tokio_postgres::IsolationLevel;

/// Which sets a report wants: every stored key whose columns are each in these lists.
#[derive(Debug, Clone)]
pub struct Selector<'a> {
    pub dims: Vec<&'a str>,
    pub sources: Vec<&'a str>,
    pub stages: Vec<&'a str>,
    pub types: Vec<&'a str>,
}

impl Selector<'_> {
    fn matches(&self, k: &SetKey<'_>) -> bool {
        self.dims.contains(&k.dim)
            && self.sources.contains(&k.source)
            && self.stages.contains(&k.funnel_stage)
            && self.types.contains(&k.event_type)
    }
}

/// Users (and their events and revenue) by set key.
pub type Sets = HashMap<OwnedSetKey, SetValue>;

/// One user's figures over the range, named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankedUser {
    pub source: String,
    pub user_id: String,
    pub events: u64,
    pub revenue: Decimal,
}

/// One primary-key range scan per block: `OFFSET 0` keeps the lateral subquery from being
/// flattened into a join the planner may run as a scan of the whole table.
const SETS_SQL: &str = "\
SELECT s.*
FROM unnest($1::int2[], $2::int8[]) AS b(level, block)
CROSS JOIN LATERAL (
    SELECT dim, source, funnel_stage, event_type, value, context, users, events, revenue
    FROM user_sets
    WHERE level = b.level AND block = b.block AND dim = ANY($3) AND source = ANY($4)
      AND funnel_stage = ANY($5) AND event_type = ANY($6)
    OFFSET 0) AS s";

const TOTALS_SQL: &str = "\
SELECT t.*
FROM unnest($1::int2[], $2::int8[]) AS b(level, block)
CROSS JOIN LATERAL (
    SELECT source, totals FROM user_totals
    WHERE level = b.level AND block = b.block AND source = ANY($3)
    OFFSET 0) AS t";

const NAMES_SQL: &str = "SELECT user_key, source, user_id FROM user_keys WHERE user_key = ANY($1)";

/// Users without a key yet (seen only in raw slots) get request-local ids from here up;
/// keys are positive `integer`s, so the two never meet.
const LOCAL_IDS: u32 = 1 << 31;

/// How `[from, to)` is read: built blocks, raw ranges, and slots whose listed events are
/// added to their level-0 block (in `levels` and `indexes`).
struct Plan {
    levels: Vec<i16>,
    indexes: Vec<i64>,
    raw: Vec<(OffsetDateTime, OffsetDateTime)>,
    pending: Vec<OffsetDateTime>,
}

const DIRTY_SQL: &str =
    "SELECT slot, full_gen IS NOT NULL FROM user_sets_dirty WHERE slot >= $1 AND slot < $2";

const NO_EVENTS_SQL: &str =
    "SELECT NOT EXISTS (SELECT 1 FROM events WHERE event_time >= $1 AND event_time < $2)";

/// Whether `[lo, hi)` holds no event (one probe of the event-time index).
async fn no_events(
    tx: &Transaction<'_>,
    lo: OffsetDateTime,
    hi: OffsetDateTime,
) -> Result<bool, tokio_postgres::Error> {
    let statement = tx.prepare_cached(NO_EVENTS_SQL).await?;
    Ok(tx.query_one(&statement, &[&lo, &hi]).await?.get(0))
}

/// Plans reading `[from, to)`. Every slot bound is checked: the last slot of time has no
/// successor, so a range ending in it is read up to `to` raw.
async fn plan(
    tx: &Transaction<'_>,
    report: &'static str,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<Plan, ApiError> {
    let fail = |e| database_error(report, e);
    let (Some(floor_from), Some(floor_to)) = (checked_slot_floor(from), checked_slot_floor(to))
    else {
        return Err(unrepresentable_range());
    };
    let mut start = checked_slot_ceil(from);
    let mut end = floor_to;
    // A partial slot at an edge is read whole when its part outside the range holds no
    // event: then its blocks hold exactly the range's part of it. That is the slot being
    // written, for a range ending now.
    if floor_from < from && no_events(tx, floor_from, from).await.map_err(fail)? {
        start = Some(floor_from);
    }
    if end < to
        && let Some(ceil_to) = checked_slot_ceil(to)
        && no_events(tx, to, ceil_to).await.map_err(fail)?
    {
        end = ceil_to;
    }
    let mut plan = Plan {
        levels: Vec::new(),
        indexes: Vec::new(),
        raw: Vec::new(),
        pending: Vec::new(),
    };
    let Some(start) = start.filter(|s| *s < end) else {
        plan.raw.push((from, to));
        return Ok(plan);
    };
    let marks: Vec<(i64, bool)> = tx
        .query(
            &tx.prepare_cached(DIRTY_SQL).await.map_err(fail)?,
            &[&start, &end],
        )
        .await
        .map_err(fail)?
        .iter()
        .map(|r| (slot_of(r.get(0)), r.get(1)))
        .collect();
    let dirty: BTreeSet<i64> = marks.iter().map(|m| m.0).collect();
    let full: BTreeSet<i64> = marks.iter().filter(|m| m.1).map(|m| m.0).collect();
    let c = cover(slot_of(start), slot_of(end), &dirty);
    for Block { level, index } in c.blocks {
        plan.levels.push(level);
        plan.indexes.push(index);
    }
    let mut push = |lo: OffsetDateTime, hi: OffsetDateTime| {
        if lo >= hi {
            return;
        }
        match plan.raw.last_mut() {
            Some(last) if last.1 == lo => last.1 = hi,
            _ => plan.raw.push((lo, hi)),
        }
    };
    // The slots of the cover are in `[start, end)`, so they and their ends are in range.
    let slot = |h: i64| checked_slot_start(h).ok_or_else(unrepresentable_range);
    push(from, start);
    let mut listed = Vec::new();
    for h in c.raw_slots {
        if full.contains(&h) {
            let next = h.checked_add(1).ok_or_else(unrepresentable_range)?;
            push(slot(h)?, slot(next)?);
        } else {
            listed.push(h);
        }
    }
    push(end, to);
    for h in listed {
        plan.levels.push(0);
        plan.indexes.push(h);
        plan.pending.push(slot(h)?);
    }
    Ok(plan)
}

impl Plan {
    /// Streams every event the plan reads one by one (raw ranges, with the demographic
    /// facts or without; listed events) to `f`.
    async fn scan(
        &self,
        tx: &Transaction<'_>,
        report: &'static str,
        demographics: bool,
        mut f: impl FnMut(&[Activity]),
    ) -> Result<(), ApiError> {
        let raw = if demographics {
            RAW_SQL
        } else {
            RAW_SQL_WITHOUT_DEMOGRAPHICS
        };
        let fail = |e| database_error(report, e);
        let raw = tx.prepare_cached(raw).await.map_err(fail)?;
        for &(lo, hi) in &self.raw {
            scan_raw(tx, &raw, &[&lo, &hi], &mut f)
                .await
                .map_err(fail)?;
        }
        if !self.pending.is_empty() {
            scan_pending(tx, &self.pending, &mut f)
                .await
                .map_err(|e| match e {
                    PendingError::Database(e) => fail(e),
                    PendingError::Corrupt(detail) => corrupt(report, detail),
                })?;
        }
        Ok(())
    }
}

/// A connection with a read-only snapshot open, timed as the report's query.
async fn snapshot<'c>(
    client: &'c mut deadpool_postgres::Object,
    report: &'static str,
) -> Result<Transaction<'c>, ApiError> {
    client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| database_error(report, e))
}

async fn connection(
    pool: &Pool,
    report: &'static str,
) -> Result<deadpool_postgres::Object, ApiError> {
    pool.get().await.map_err(|e| {
        tracing::warn!(error = %e, report, "No database connection");
        unavailable()
    })
}

pub(crate) fn corrupt(report: &'static str, detail: String) -> ApiError {
    tracing::error!(report, detail, "Unreadable per-user activity");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "the report could not be computed",
    )
}

/// Gives every raw user an id: its key, or a request-local one.
#[derive(Default)]
struct Ids {
    local: HashMap<(String, String), u32>,
}

impl Ids {
    fn of(&mut self, a: &Activity) -> u32 {
        match a.user_key {
            Some(key) => key as u32,
            None => {
                let next = LOCAL_IDS + self.local.len() as u32;
                *self
                    .local
                    .entry((a.source.clone(), a.user_id.clone()))
                    .or_insert(next)
            }
        }
    }
}

/// The users of every selected set over `[from, to)`.
pub async fn sets(
    pool: &Pool,
    report: &'static str,
    from: OffsetDateTime,
    to: OffsetDateTime,
    selector: &Selector<'_>,
) -> Result<Sets, ApiError> {
    let mut all = sets_of(pool, report, from, to, std::slice::from_ref(selector)).await?;
    Ok(all.pop().unwrap_or_default())
}

/// The sets of each selector over `[from, to)`, all from one snapshot (so figures taken
/// from different selections agree with each other), the raw rows read once.
pub async fn sets_of(
    pool: &Pool,
    report: &'static str,
    from: OffsetDateTime,
    to: OffsetDateTime,
    selectors: &[Selector<'_>],
) -> Result<Vec<Sets>, ApiError> {
    let started = Instant::now();
    let mut client = connection(pool, report).await?;
    let tx = snapshot(&mut client, report).await?;
    let fail = |e| database_error(report, e);
    let plan = plan(&tx, report, from, to).await?;

    let mut sets: Vec<Sets> = vec![HashMap::new(); selectors.len()];
    if !plan.levels.is_empty() {
        let statement = tx.prepare_cached(SETS_SQL).await.map_err(fail)?;
        for (selector, sets) in selectors.iter().zip(sets.iter_mut()) {
            let rows = tx
                .query(
                    &statement,
                    &[
                        &plan.levels,
                        &plan.indexes,
                        &selector.dims,
                        &selector.sources,
                        &selector.stages,
                        &selector.types,
                    ],
                )
                .await
                .map_err(fail)?;
            for row in rows {
                let value = SetValue::from_row(&row, 6).map_err(|e| corrupt(report, e))?;
                let key = OwnedSetKey::from_row(&row).map_err(fail)?;
                sets.entry(key)
                    .or_default()
                    .add(&value)
                    .map_err(|e| corrupt(report, e.to_string()))?;
            }
        }
    }

    let mut ids = Ids::default();
    let demographic = selectors
        .iter()
        .any(|s| s.dims.iter().any(|d| needs_demographics(d)));
    let mut overflow = Ok(());
    plan.scan(&tx, report, demographic, |chunk| {
        let mut found: Vec<HashMap<SetKey<'_>, SetValue>> = vec![HashMap::new(); selectors.len()];
        for a in chunk {
            let id = ids.of(a);
            memberships(a, |k| {
                for (selector, found) in selectors.iter().zip(found.iter_mut()) {
                    if selector.matches(&k) {
                        let added = found.entry(k).or_default().add_event(id, a.revenue);
                        overflow = overflow.and(added);
                    }
                }
            });
        }
        for (found, sets) in found.into_iter().zip(sets.iter_mut()) {
            for (k, value) in found {
                let added = sets.entry(k.to_owned_key()).or_default().add(&value);
                overflow = overflow.and(added);
            }
        }
    })
    .await?;
    overflow.map_err(|e| corrupt(report, e.to_string()))?;
    tx.commit().await.map_err(fail)?;
    metrics::histogram!("analytics_query_duration_seconds", "report" => report)
        .record(started.elapsed().as_secs_f64());
    Ok(sets)
}

/// The `limit` users of `sources` with the most events (`by_revenue`: the most revenue)
/// over `[from, to)`, ties by source then userId.
pub async fn top_users(
    pool: &Pool,
    report: &'static str,
    from: OffsetDateTime,
    to: OffsetDateTime,
    sources: &[&str],
    by_revenue: bool,
    limit: usize,
) -> Result<Vec<RankedUser>, ApiError> {
    let started = Instant::now();
    let mut client = connection(pool, report).await?;
    let tx = snapshot(&mut client, report).await?;
    let fail = |e| database_error(report, e);
    let plan = plan(&tx, report, from, to).await?;

    // Keys are unique across sources, so one map holds every user.
    let mut totals: BTreeMap<u32, UserTotals> = BTreeMap::new();
    if !plan.levels.is_empty() {
        let statement = tx.prepare_cached(TOTALS_SQL).await.map_err(fail)?;
        for row in tx
            .query(&statement, &[&plan.levels, &plan.indexes, &sources])
            .await
            .map_err(fail)?
        {
            decode_totals(row.get(1), &mut totals).map_err(|e| corrupt(report, e))?;
        }
    }
    let mut ids = Ids::default();
    let mut overflow = Ok(());
    plan.scan(&tx, report, false, |chunk| {
        for a in chunk {
            if sources.contains(&a.source.as_str()) {
                let event = UserTotals {
                    events: 1,
                    revenue: a.revenue.unwrap_or_default(),
                };
                overflow = overflow.and(totals.entry(ids.of(a)).or_default().add(event));
            }
        }
    })
    .await?;
    overflow.map_err(|e| corrupt(report, e.to_string()))?;

    // Rank by the figure; names are needed only for the users that can make the list:
    // those at least as good as the `limit`-th (ties are broken by name).
    let main = |t: &UserTotals| {
        if by_revenue {
            t.revenue
        } else {
            Decimal::from(t.events)
        }
    };
    let mut ranked: Vec<(u32, UserTotals)> = totals.into_iter().collect();
    ranked.sort_by_key(|r| std::cmp::Reverse(main(&r.1)));
    if let Some(cut) = ranked.get(limit.saturating_sub(1)).map(|r| main(&r.1)) {
        ranked.retain(|r| main(&r.1) >= cut);
    }
    let keys: Vec<i32> = ranked
        .iter()
        .filter(|(id, _)| *id < LOCAL_IDS)
        .map(|(id, _)| *id as i32)
        .collect();
    let mut names: HashMap<u32, (String, String)> =
        ids.local.into_iter().map(|(name, id)| (id, name)).collect();
    if !keys.is_empty() {
        let statement = tx.prepare_cached(NAMES_SQL).await.map_err(fail)?;
        for row in tx.query(&statement, &[&keys]).await.map_err(fail)? {
            names.insert(row.get::<_, i32>(0) as u32, (row.get(1), row.get(2)));
        }
    }
    tx.commit().await.map_err(fail)?;

    let mut users = Vec::with_capacity(ranked.len());
    for (id, t) in ranked {
        let (source, user_id) = names
            .remove(&id)
            .ok_or_else(|| corrupt(report, format!("user key {id} has no name")))?;
        users.push(RankedUser {
            source,
            user_id,
            events: t.events,
            revenue: t.revenue,
        });
    }
    users.sort_by(|a, b| {
        let (fa, fb) = if by_revenue {
            (a.revenue, b.revenue)
        } else {
            (Decimal::from(a.events), Decimal::from(b.events))
        };
        fb.cmp(&fa)
            .then_with(|| (&a.source, &a.user_id).cmp(&(&b.source, &b.user_id)))
    });
    users.truncate(limit);
    metrics::histogram!("analytics_query_duration_seconds", "report" => report)
        .record(started.elapsed().as_secs_f64());
    Ok(users)
}
