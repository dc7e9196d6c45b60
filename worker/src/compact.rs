//! The compactor: builds the per-user sets and totals (`sql/0003_user_sets.sql`,
//! `service_kit::user_sets`) of the slots the insert path marked dirty.
//!
//! One round is one transaction, under an advisory lock so that one worker replica
//! compacts at a time ([`Round`]): read up to N marks of dirty slots that have ended, with
//! their generations; rebuild each slot's level-0 block from its raw events, then every
//! ancestor block from its two children; clear the marks whose generation is unchanged
//! (no batch set them since), and commit. Readers see either the mark and the old blocks,
//! or no mark and the new blocks; a batch committed after the marks were read has bumped
//! its slot's generation, so the slot stays dirty. Off the insert path: a batch never
//! waits for a rebuild, and the write rate does not pay for it; the slot being written
//! stays dirty (read raw) until it ends.

use anyhow::Context as _;
use rust_decimal::Decimal;
use service_kit::user_sets::{
    Block, MAX_LEVEL, OwnedSetKey, RAW_SQL, SetKey, SetValue, UserTotals, decode_totals,
    encode_bitmap, encode_totals, memberships, scan_raw, slot_of, slot_start,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio_postgres::{Client, Transaction};

/// Arbitrary, fixed key of the compaction lock ("usersets" in ASCII).
const LOCK_KEY: i64 = 0x7573_6572_7365_7473;

/// Most slots one round (transaction) takes.
pub const ROUND_SLOTS: i64 = 256;

/// The marks of the dirty slots that have ended, oldest first: slot and generation.
const MARKS_SQL: &str = "\
SELECT slot, gen FROM user_sets_dirty WHERE slot <= now() - interval '15 minutes'
ORDER BY slot LIMIT $1";

/// The current marks of these slots, locked; one a batch holds is skipped.
const LOCK_MARKS_SQL: &str =
    "SELECT slot, gen FROM user_sets_dirty WHERE slot = ANY($1) FOR UPDATE SKIP LOCKED";

const CLEAR_SQL: &str = "DELETE FROM user_sets_dirty WHERE slot = ANY($1)";

/// Keys for the users of `[$1, $2)` that have none yet: users of rows stored without a
/// key (before the worker assigned keys at insert, or by a bulk load). A batch inserting
/// the same user at this moment makes it a conflict, which is skipped.
const ASSIGN_KEYS_SQL: &str = "\
INSERT INTO user_keys (source, user_id)
SELECT DISTINCT e.source, e.user_id FROM events e
WHERE e.event_time >= $1 AND e.event_time < $2 AND e.user_key IS NULL
  AND NOT EXISTS (SELECT 1 FROM user_keys k WHERE k.source = e.source AND k.user_id = e.user_id)
ON CONFLICT DO NOTHING";

const SETS_OF_SQL: &str = "\
SELECT dim, source, funnel_stage, event_type, value, context, users, events, revenue
FROM user_sets WHERE level = $1 AND block = ANY($2)";

const TOTALS_OF_SQL: &str =
    "SELECT source, totals FROM user_totals WHERE level = $1 AND block = ANY($2)";

const UPSERT_SETS_SQL: &str = "\
INSERT INTO user_sets (level, block, dim, source, funnel_stage, event_type, value, context, users,
                       events, revenue)
SELECT $1, $2, * FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                             $9::bytea[], $10::int8[], $11::numeric[])
ON CONFLICT (level, block, dim, source, funnel_stage, event_type, value, context)
DO UPDATE SET users = excluded.users, events = excluded.events, revenue = excluded.revenue";

const DELETE_SETS_SQL: &str = "\
DELETE FROM user_sets WHERE level = $1 AND block = $2
  AND (dim, source, funnel_stage, event_type, value, context) IN (
      SELECT * FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[]))";

const UPSERT_TOTALS_SQL: &str = "\
INSERT INTO user_totals (level, block, source, totals)
SELECT $1, $2, * FROM unnest($3::text[], $4::bytea[])
ON CONFLICT (level, block, source) DO UPDATE SET totals = excluded.totals";

const DELETE_TOTALS_SQL: &str =
    "DELETE FROM user_totals WHERE level = $1 AND block = $2 AND source = ANY($3)";

type Sets = BTreeMap<OwnedSetKey, SetValue>;
type Totals = BTreeMap<String, BTreeMap<u32, UserTotals>>;

/// Compacts up to `max_slots` dirty slots that have ended. Returns the slots rebuilt
/// (none when another replica holds the lock).
pub async fn round(client: &mut Client, max_slots: i64) -> anyhow::Result<Vec<i64>> {
    let Some(round) = Round::begin(client, max_slots).await? else {
        return Ok(Vec::new());
    };
    round.build().await?;
    Ok(round.finish().await?.rebuilt)
}

/// What [`Round::finish`] did.
#[derive(Debug)]
pub struct Finished {
    /// Every slot rebuilt.
    pub rebuilt: Vec<i64>,
    /// The slots whose marks were cleared: the rest were set again by a batch meanwhile
    /// and stay dirty for a later round.
    pub cleared: Vec<i64>,
}

/// One compaction round, one transaction: [`begin`](Round::begin) reads the marks,
/// [`build`](Round::build) rebuilds their slots, [`finish`](Round::finish) clears the marks
/// still as they were read and commits. Nothing on the insert path waits for a round but
/// its last statement: a batch marking a slot whose mark is being cleared waits for the
/// commit that follows.
pub struct Round<'a> {
    tx: Transaction<'a>,
    slots: Vec<i64>,
    gens: Vec<i64>,
}

impl std::fmt::Debug for Round<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Round")
            .field("slots", &self.slots)
            .field("gens", &self.gens)
            .finish_non_exhaustive()
    }
}

impl<'a> Round<'a> {
    /// Starts a round over up to `max_slots` dirty slots that have ended, or `None` when
    /// another replica is compacting or no such slot is dirty.
    pub async fn begin(client: &'a mut Client, max_slots: i64) -> anyhow::Result<Option<Self>> {
        let tx = client.transaction().await?;
        let locked: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&LOCK_KEY])
            .await?
            .get(0);
        if !locked {
            return Ok(None);
        }
        let (mut slots, mut gens) = (Vec::new(), Vec::new());
        for row in tx.query(MARKS_SQL, &[&max_slots]).await? {
            slots.push(slot_of(row.get::<_, OffsetDateTime>(0)));
            gens.push(row.get::<_, i64>(1));
        }
        if slots.is_empty() {
            return Ok(None);
        }
        Ok(Some(Round { tx, slots, gens }))
    }

    /// The slots this round rebuilds, ascending.
    pub fn slots(&self) -> &[i64] {
        &self.slots
    }

    /// Rebuilds each slot's level-0 block from its raw events, then their ancestors. Each
    /// statement reads what was committed when it started, so every batch behind a mark
    /// as read by [`begin`](Round::begin) is included.
    pub async fn build(&self) -> anyhow::Result<()> {
        let raw = self.tx.prepare(RAW_SQL).await?;
        for &h in &self.slots {
            build_slot(&self.tx, &raw, h)
                .await
                .with_context(|| format!("building slot {}", slot_start(h)))?;
        }
        for level in 1..=MAX_LEVEL {
            let parents: BTreeSet<Block> =
                self.slots.iter().map(|&h| Block::of(h, level)).collect();
            for parent in parents {
                merge_children(&self.tx, parent).await?;
            }
        }
        Ok(())
    }

    /// Clears the marks no batch has set since [`begin`](Round::begin) read them (their
    /// generation unchanged; a mark a batch holds right now is skipped, not waited for),
    /// then commits the blocks and the cleared marks together.
    pub async fn finish(self) -> anyhow::Result<Finished> {
        let slots: Vec<OffsetDateTime> = self.slots.iter().map(|&h| slot_start(h)).collect();
        let unchanged: Vec<OffsetDateTime> = self
            .tx
            .query(LOCK_MARKS_SQL, &[&slots])
            .await?
            .iter()
            .filter(|row| {
                let h = slot_of(row.get::<_, OffsetDateTime>(0));
                let seen = self.slots.binary_search(&h).ok().map(|i| self.gens[i]);
                seen == Some(row.get::<_, i64>(1))
            })
            .map(|row| row.get(0))
            .collect();
        if !unchanged.is_empty() {
            self.tx.execute(CLEAR_SQL, &[&unchanged]).await?;
        }
        self.tx.commit().await?;
        Ok(Finished {
            cleared: unchanged.into_iter().map(slot_of).collect(),
            rebuilt: self.slots,
        })
    }
}

/// Rounds until no dirty slot that has ended is left (the rebuild command, benches).
pub async fn until_clean(client: &mut Client) -> anyhow::Result<usize> {
    let mut total = 0;
    loop {
        let n = round(client, ROUND_SLOTS).await?.len();
        total += n;
        if n == 0 {
            return Ok(total);
        }
    }
}

/// The level-0 block of slot `h`, from its raw events.
async fn build_slot(
    tx: &Transaction<'_>,
    raw: &tokio_postgres::Statement,
    h: i64,
) -> anyhow::Result<()> {
    let (lo, hi) = (slot_start(h), slot_start(h + 1));
    tx.execute(ASSIGN_KEYS_SQL, &[&lo, &hi]).await?;
    let mut sets: Sets = BTreeMap::new();
    let mut totals: Totals = BTreeMap::new();
    let mut missing = None;
    scan_raw(tx, raw, lo, hi, |chunk| {
        // Borrowed keys within a chunk; owned ones only once per key and chunk.
        let mut found: HashMap<SetKey<'_>, SetValue> = HashMap::new();
        for a in chunk {
            let Some(key) = a.user_key else {
                missing = Some(format!("user {}/{} has no key", a.source, a.user_id));
                continue;
            };
            let key = key as u32;
            memberships(a, |k| {
                found.entry(k).or_default().add_event(key, a.revenue);
            });
            let t = match totals.get_mut(a.source.as_str()) {
                Some(users) => users.entry(key).or_default(),
                None => totals
                    .entry(a.source.clone())
                    .or_default()
                    .entry(key)
                    .or_default(),
            };
            t.events += 1;
            if let Some(r) = a.revenue {
                t.revenue += r;
            }
        }
        for (k, value) in found {
            sets.entry(k.to_owned_key()).or_default().add(&value);
        }
    })
    .await?;
    if let Some(missing) = missing {
        anyhow::bail!(missing);
    }
    write(tx, Block::of(h, 0), &sets, &totals).await
}

/// A parent block as the union of its children, written where it changed.
async fn merge_children(tx: &Transaction<'_>, parent: Block) -> anyhow::Result<()> {
    let [a, b] = parent.children();
    let children = vec![a.index, b.index];
    let mut sets: Sets = BTreeMap::new();
    for row in tx.query(SETS_OF_SQL, &[&a.level, &children]).await? {
        let value = SetValue::from_row(&row, 6).map_err(anyhow::Error::msg)?;
        sets.entry(OwnedSetKey::from_row(&row)?)
            .or_default()
            .add(&value);
    }
    let mut totals: Totals = BTreeMap::new();
    for row in tx.query(TOTALS_OF_SQL, &[&a.level, &children]).await? {
        decode_totals(row.get(1), totals.entry(row.get(0)).or_default())
            .map_err(anyhow::Error::msg)?;
    }
    write(tx, parent, &sets, &totals).await
}

/// Makes the stored block equal `sets` and `totals`, writing only what differs (upper
/// blocks mostly do not change when a slot is added: the same users again).
async fn write(
    tx: &Transaction<'_>,
    block: Block,
    sets: &Sets,
    totals: &Totals,
) -> anyhow::Result<()> {
    let index = vec![block.index];
    let mut old: Sets = BTreeMap::new();
    for row in tx.query(SETS_OF_SQL, &[&block.level, &index]).await? {
        old.insert(
            OwnedSetKey::from_row(&row)?,
            SetValue::from_row(&row, 6).map_err(anyhow::Error::msg)?,
        );
    }
    let changed: Vec<(&OwnedSetKey, &SetValue)> = sets
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .collect();
    let gone: Vec<&OwnedSetKey> = old.keys().filter(|k| !sets.contains_key(*k)).collect();
    if !changed.is_empty() {
        let cols = columns(changed.iter().map(|(k, _)| *k));
        let users: Vec<Vec<u8>> = changed
            .iter()
            .map(|(_, v)| encode_bitmap(&v.users))
            .collect();
        let events: Vec<i64> = changed.iter().map(|(_, v)| v.events).collect();
        let revenue: Vec<Decimal> = changed.iter().map(|(_, v)| v.revenue).collect();
        tx.execute(
            UPSERT_SETS_SQL,
            &[
                &block.level,
                &block.index,
                &cols[0],
                &cols[1],
                &cols[2],
                &cols[3],
                &cols[4],
                &cols[5],
                &users,
                &events,
                &revenue,
            ],
        )
        .await?;
    }
    if !gone.is_empty() {
        let cols = columns(gone.into_iter());
        tx.execute(
            DELETE_SETS_SQL,
            &[
                &block.level,
                &block.index,
                &cols[0],
                &cols[1],
                &cols[2],
                &cols[3],
                &cols[4],
                &cols[5],
            ],
        )
        .await?;
    }

    let mut old: Totals = BTreeMap::new();
    for row in tx.query(TOTALS_OF_SQL, &[&block.level, &index]).await? {
        decode_totals(row.get(1), old.entry(row.get(0)).or_default())
            .map_err(anyhow::Error::msg)?;
    }
    let changed: Vec<(&String, Vec<u8>)> = totals
        .iter()
        .filter(|(s, t)| old.get(*s) != Some(*t))
        .map(|(s, t)| (s, encode_totals(t)))
        .collect();
    if !changed.is_empty() {
        let sources: Vec<&str> = changed.iter().map(|(s, _)| s.as_str()).collect();
        let bytes: Vec<&[u8]> = changed.iter().map(|(_, b)| b.as_slice()).collect();
        tx.execute(
            UPSERT_TOTALS_SQL,
            &[&block.level, &block.index, &sources, &bytes],
        )
        .await?;
    }
    let gone: Vec<&str> = old
        .keys()
        .filter(|s| !totals.contains_key(*s))
        .map(String::as_str)
        .collect();
    if !gone.is_empty() {
        tx.execute(DELETE_TOTALS_SQL, &[&block.level, &block.index, &gone])
            .await?;
    }
    Ok(())
}

/// The six key columns as arrays.
fn columns<'a>(keys: impl Iterator<Item = &'a OwnedSetKey>) -> [Vec<&'a str>; 6] {
    let mut cols: [Vec<&str>; 6] = Default::default();
    for k in keys {
        cols[0].push(&k.dim);
        cols[1].push(&k.source);
        cols[2].push(&k.funnel_stage);
        cols[3].push(&k.event_type);
        cols[4].push(&k.value);
        cols[5].push(&k.context);
    }
    cols
}

/// Compacts every `interval` until `stop`; publishes `worker_user_sets_dirty_slots` (slots
/// read raw by reports until compacted) and counts `worker_user_sets_compacted_slots_total`.
pub async fn run(
    pool: deadpool_postgres::Pool,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let mut client = match pool.get().await {
            Ok(client) => client,
            Err(error) => {
                tracing::debug!(%error, "Compactor: no database connection");
                continue;
            }
        };
        loop {
            match round(&mut client, ROUND_SLOTS).await {
                Ok(slots) => {
                    metrics::counter!("worker_user_sets_compacted_slots_total")
                        .increment(slots.len() as u64);
                    if let (Some(first), Some(last)) = (slots.first(), slots.last()) {
                        tracing::debug!(
                            slots = slots.len(),
                            first = %slot_start(*first),
                            last = %slot_start(*last),
                            "Per-user sets compacted"
                        );
                    }
                    if (slots.len() as i64) < ROUND_SLOTS || *stop.borrow() {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "Compaction round failed; retrying later"
                    );
                    break;
                }
            }
        }
        if let Ok(row) = client
            .query_one("SELECT count(*) FROM user_sets_dirty", &[])
            .await
        {
            metrics::gauge!("worker_user_sets_dirty_slots").set(row.get::<_, i64>(0) as f64);
        }
    }
}
