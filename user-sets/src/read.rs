//! Reading per-user activity over a range, for the reports: the sets of users
//! (distinct-user figures, [`sets_of`]) and the per-user totals ([`top_users`]), from the
//! blocks the worker's compactor built: blocks holding no dirty slot; for a dirty slot,
//! its level-0 block plus the events listed for it (`user_sets_pending`), or its raw
//! events when its mark asks for a full rebuild; and the raw events of the partial slots
//! at the edges (a partial slot whose part outside the range holds no event, such as the
//! slot being written for a range ending now, is taken whole). The caller opens one
//! REPEATABLE READ snapshot for a read, so a block, the entries listed for it and the
//! marks are seen together.

use crate::codec::decode_totals;
use crate::error::{DecodeError, Error};
use crate::key::{Dim, OwnedSetKey, SetKey};
use crate::pg::{RAW_SQL, RAW_SQL_WITHOUT_DEMOGRAPHICS, scan_pending, scan_raw};
use crate::profile::{Activity, memberships};
use crate::slot::{Block, Slot, checked_slot_ceil, checked_slot_floor, cover};
use crate::value::{SetValue, UserTotals};
use deadpool_postgres::Transaction;
use rust_decimal::Decimal;
use shared_events::{FunnelStage, Source};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use time::OffsetDateTime;

/// Which sets a report wants: every stored key whose dimension and filters are each in
/// these lists (`None`: the set stored for any value of that filter).
#[derive(Debug, Clone)]
pub struct Selector<'a> {
    pub dims: Vec<Dim>,
    pub sources: Vec<Option<Source>>,
    pub stages: Vec<Option<FunnelStage>>,
    pub types: Vec<Option<&'a str>>,
}

impl Selector<'_> {
    /// Whether the set `k` is selected.
    pub fn matches(&self, k: &SetKey<'_>) -> bool {
        self.dims.contains(&k.dim)
            && self.sources.contains(&k.source)
            && self.stages.contains(&k.funnel_stage)
            && self.types.contains(&k.event_type)
    }

    /// The lists as the stored text of the columns `dim`, `source`, `funnel_stage` and
    /// `event_type`.
    fn columns(&self) -> [Vec<&str>; 4] {
        [
            self.dims.iter().map(|d| d.as_str()).collect(),
            (self.sources.iter())
                .map(|s| s.map_or("", Source::as_str))
                .collect(),
            (self.stages.iter())
                .map(|s| s.map_or("", FunnelStage::as_str))
                .collect(),
            self.types.iter().map(|t| t.unwrap_or("")).collect(),
        ]
    }
}

/// Users (and their events and revenue) by set key.
pub type Sets = HashMap<OwnedSetKey, SetValue>;

/// One user's figures over the range, named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankedUser {
    pub source: Source,
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
    tx.query_one(&statement, &[&lo, &hi]).await?.try_get(0)
}

/// Plans reading `[from, to)`. Every slot bound is checked: the last slot of time has no
/// successor, so a range ending in it is read up to `to` raw.
async fn plan(
    tx: &Transaction<'_>,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<Plan, Error> {
    let (Some(floor_from), Some(floor_to)) = (checked_slot_floor(from), checked_slot_floor(to))
    else {
        return Err(Error::Unrepresentable);
    };
    let mut start = checked_slot_ceil(from);
    let mut end = floor_to;
    // A partial slot at an edge is read whole when its part outside the range holds no
    // event: then its blocks hold exactly the range's part of it. That is the slot being
    // written, for a range ending now.
    if floor_from < from && no_events(tx, floor_from, from).await? {
        start = Some(floor_from);
    }
    if end < to
        && let Some(ceil_to) = checked_slot_ceil(to)
        && no_events(tx, to, ceil_to).await?
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
    let statement = tx.prepare_cached(DIRTY_SQL).await?;
    let (mut dirty, mut full) = (BTreeSet::new(), BTreeSet::new());
    for row in tx.query(&statement, &[&start, &end]).await? {
        let slot = Slot::of(row.try_get(0)?);
        dirty.insert(slot);
        if row.try_get(1)? {
            full.insert(slot);
        }
    }
    let c = cover(Slot::of(start), Slot::of(end), &dirty);
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
    let start_of = |s: Slot| s.checked_start().ok_or(Error::Unrepresentable);
    push(from, start);
    let mut listed = Vec::new();
    for s in c.raw_slots {
        if full.contains(&s) {
            let next = s.next().ok_or(Error::Unrepresentable)?;
            push(start_of(s)?, start_of(next)?);
        } else {
            listed.push(s);
        }
    }
    push(end, to);
    for s in listed {
        let block = Block::of(s, 0);
        plan.levels.push(block.level);
        plan.indexes.push(block.index);
        plan.pending.push(start_of(s)?);
    }
    Ok(plan)
}

impl Plan {
    /// Streams every event the plan reads one by one (raw ranges, with the demographic
    /// facts or without; listed events) to `f`.
    async fn scan(
        &self,
        tx: &Transaction<'_>,
        demographics: bool,
        mut f: impl FnMut(&[Activity]),
    ) -> Result<(), Error> {
        let raw = if demographics {
            RAW_SQL
        } else {
            RAW_SQL_WITHOUT_DEMOGRAPHICS
        };
        let raw = tx.prepare_cached(raw).await?;
        for &(lo, hi) in &self.raw {
            scan_raw(tx, &raw, &[&lo, &hi], &mut f).await?;
        }
        if !self.pending.is_empty() {
            scan_pending(tx, &self.pending, &mut f).await?;
        }
        Ok(())
    }
}

/// Gives every raw user an id: its key, or a request-local one.
#[derive(Default)]
struct Ids {
    local: HashMap<(Source, String), u32>,
}

impl Ids {
    fn of(&mut self, a: &Activity) -> u32 {
        match a.user_key {
            Some(key) => key as u32,
            None => {
                let next = LOCAL_IDS + self.local.len() as u32;
                *self
                    .local
                    .entry((a.source, a.user_id.clone()))
                    .or_insert(next)
            }
        }
    }
}

/// The sets of each selector over `[from, to)`, all from the snapshot `tx` (so figures
/// taken from different selections agree with each other), the raw rows read once.
pub async fn sets_of(
    tx: &Transaction<'_>,
    from: OffsetDateTime,
    to: OffsetDateTime,
    selectors: &[Selector<'_>],
) -> Result<Vec<Sets>, Error> {
    let plan = plan(tx, from, to).await?;

    let mut sets: Vec<Sets> = vec![HashMap::new(); selectors.len()];
    if !plan.levels.is_empty() {
        let statement = tx.prepare_cached(SETS_SQL).await?;
        for (selector, sets) in selectors.iter().zip(sets.iter_mut()) {
            let [dims, sources, stages, types] = selector.columns();
            let rows = tx
                .query(
                    &statement,
                    &[
                        &plan.levels,
                        &plan.indexes,
                        &dims,
                        &sources,
                        &stages,
                        &types,
                    ],
                )
                .await?;
            for row in rows {
                let value = SetValue::from_row(&row, 6)?;
                let key = OwnedSetKey::from_row(&row)?;
                sets.entry(key).or_default().add(&value)?;
            }
        }
    }

    let mut ids = Ids::default();
    let demographic = selectors
        .iter()
        .any(|s| s.dims.iter().any(|d| d.needs_demographics()));
    let mut overflow = Ok(());
    plan.scan(tx, demographic, |chunk| {
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
    overflow?;
    Ok(sets)
}

/// The `limit` users of `sources` with the most events (`by_revenue`: the most revenue)
/// over `[from, to)`, ties by source then userId, from the snapshot `tx`.
pub async fn top_users(
    tx: &Transaction<'_>,
    from: OffsetDateTime,
    to: OffsetDateTime,
    sources: &[Source],
    by_revenue: bool,
    limit: usize,
) -> Result<Vec<RankedUser>, Error> {
    let plan = plan(tx, from, to).await?;

    // Keys are unique across sources, so one map holds every user.
    let mut totals: BTreeMap<u32, UserTotals> = BTreeMap::new();
    if !plan.levels.is_empty() {
        let statement = tx.prepare_cached(TOTALS_SQL).await?;
        let names: Vec<&str> = sources.iter().map(|s| s.as_str()).collect();
        for row in tx
            .query(&statement, &[&plan.levels, &plan.indexes, &names])
            .await?
        {
            decode_totals(row.try_get(1)?, &mut totals)?;
        }
    }
    let mut ids = Ids::default();
    let mut overflow = Ok(());
    plan.scan(tx, false, |chunk| {
        for a in chunk {
            if sources.contains(&a.source) {
                let event = UserTotals {
                    events: 1,
                    revenue: a.revenue.unwrap_or_default(),
                };
                overflow = overflow.and(totals.entry(ids.of(a)).or_default().add(event));
            }
        }
    })
    .await?;
    overflow?;

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
    let mut names: HashMap<u32, (Source, String)> =
        ids.local.into_iter().map(|(name, id)| (id, name)).collect();
    if !keys.is_empty() {
        let statement = tx.prepare_cached(NAMES_SQL).await?;
        for row in tx.query(&statement, &[&keys]).await? {
            let source: &str = row.try_get(1)?;
            let source =
                Source::parse(source).ok_or_else(|| DecodeError::unknown("source", source))?;
            names.insert(row.try_get::<_, i32>(0)? as u32, (source, row.try_get(2)?));
        }
    }

    let mut users = Vec::with_capacity(ranked.len());
    for (id, t) in ranked {
        let (source, user_id) = names.remove(&id).ok_or(Error::UnnamedUserKey(id))?;
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
    Ok(users)
}
