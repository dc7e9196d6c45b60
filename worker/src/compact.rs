//! The compactor: builds the per-user sets and totals (`sql/0003_user_sets.sql`,
//! `service_kit::user_sets`) of the slots the insert path marked dirty.
//!
//! Every stored event is listed in `user_sets_pending` (per batch and slot) until it is in
//! its slot's level-0 block; its slot stays marked dirty until every block that includes
//! it is built. A round ([`Round`]), one worker replica at a time (advisory lock): pick the
//! dirty slots that have ended, and the open ones whose oldest listed events are
//! [`OPEN_FOLD_AFTER`] old; read their marks, with their generations, in one REPEATABLE
//! READ snapshot; build each slot's level-0 block from that snapshot (from all its raw
//! events when the mark asks for a full rebuild, after `rebuild_rollups()` or an upgrade;
//! else as the built block plus the listed events) and drop the entries it now includes;
//! rebuild every ancestor block of the slots that have ended from its two children, and
//! commit. Then [`clear`] removes the marks of ended slots whose generation is unchanged
//! (no batch set them since the snapshot), skipping any a batch holds. An open slot keeps
//! its mark: readers take its level-0 block plus its listed events, never an ancestor.
//! Nothing on the insert path waits for a build.

use rust_decimal::Decimal;
use service_kit::user_sets::{
    Activity, Block, MAX_LEVEL, OwnedSetKey, Profile, RAW_SQL, SetValue, SumOverflow, UserTotals,
    decode_totals, encode_bitmap, encode_totals, scan_pending, scan_raw, slot_of, slot_start,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::time::Duration;
use time::OffsetDateTime;
use tokio_postgres::{Client, IsolationLevel, Transaction};

/// Arbitrary, fixed key of the compaction lock ("usersets" in ASCII).
const LOCK_KEY: i64 = 0x7573_6572_7365_7473;

/// Most slots one round (transaction) takes.
pub const ROUND_SLOTS: i64 = 256;

/// How old the oldest listed event of an open slot is before a round folds the slot's
/// listed events into its block. Readers read the listed events of a dirty slot one by
/// one: this bounds them to about this much of the event rate, while a busy open slot's
/// block (thousands of sets) is rewritten at most this often.
pub const OPEN_FOLD_AFTER: Duration = Duration::from_secs(10);

/// The dirty slots a round takes, oldest first: those that have ended, those whose mark
/// asks for a full rebuild, and open ones with events listed `$2` ms ago or earlier;
/// whether each needs a full rebuild.
const CANDIDATES_SQL: &str = "\
SELECT d.slot, d.full_gen IS NOT NULL FROM user_sets_dirty d
WHERE d.slot <= now() - interval '15 minutes' OR d.full_gen IS NOT NULL
   OR EXISTS (SELECT 1 FROM user_sets_pending p
              WHERE p.slot = d.slot AND p.added_at <= now() - $2 * interval '1 millisecond')
ORDER BY d.slot LIMIT $1";

/// The marks of these slots: slot, generation, `full_gen`, and whether the slot has ended.
const MARKS_SQL: &str = "\
SELECT slot, gen, full_gen, slot <= now() - interval '15 minutes' FROM user_sets_dirty
WHERE slot = ANY($1) ORDER BY slot";

/// The current marks of these slots, locked; one a batch holds is skipped.
const LOCK_MARKS_SQL: &str =
    "SELECT slot, gen, full_gen FROM user_sets_dirty WHERE slot = ANY($1) FOR UPDATE SKIP LOCKED";

const CLEAR_SQL: &str = "DELETE FROM user_sets_dirty WHERE slot = ANY($1)";

/// No one asked for a full rebuild of these slots again since it was done.
const NOT_FULL_SQL: &str = "UPDATE user_sets_dirty SET full_gen = NULL WHERE slot = ANY($1)";

/// The listed entries of a slot, once its block includes them (in the round's snapshot:
/// entries committed after it stay).
const DROP_PENDING_SQL: &str = "DELETE FROM user_sets_pending WHERE slot = $1";

/// Keys for the users of `[$1, $2)` that have none yet: users of rows stored without a
/// key (before the worker assigned keys at insert, or by a bulk load). A batch inserting
/// the same user at this moment makes it a conflict, which is skipped. Sorted, as the
/// insert path inserts new users, so the two never deadlock.
const ASSIGN_KEYS_SQL: &str = "\
INSERT INTO user_keys (source, user_id)
SELECT DISTINCT e.source, e.user_id FROM events e
WHERE e.event_time >= $1 AND e.event_time < $2 AND e.user_key IS NULL
  AND NOT EXISTS (SELECT 1 FROM user_keys k WHERE k.source = e.source AND k.user_id = e.user_id)
ORDER BY 1, 2
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

/// Compacts up to `max_slots` dirty slots: those that have ended, and the open ones with
/// events listed `fold_after` ago or earlier. Returns the slots built (none when another
/// replica holds the lock).
pub async fn round(
    client: &mut Client,
    max_slots: i64,
    fold_after: Duration,
) -> anyhow::Result<Vec<i64>> {
    let Some(mut round) = Round::begin(client, max_slots, fold_after).await? else {
        return Ok(Vec::new());
    };
    round.build().await?;
    let marks = round.commit().await?;
    clear(client, &marks).await?;
    Ok(marks.slots)
}

/// The marks a round read, as of its snapshot.
#[derive(Debug, Clone)]
pub struct Marks {
    /// The slots built, ascending.
    pub slots: Vec<i64>,
    gens: Vec<i64>,
    full: Vec<bool>,
    /// Whether each slot had ended (its ancestors are built, its mark may go).
    ended: Vec<bool>,
}

impl Marks {
    /// Leaves out the slots at these indices (ascending): they are not built.
    fn remove(&mut self, indices: &[usize]) {
        for &i in indices.iter().rev() {
            self.slots.remove(i);
            self.gens.remove(i);
            self.full.remove(i);
            self.ended.remove(i);
        }
    }

    fn get(&self, h: i64) -> Option<(i64, bool, bool)> {
        let i = self.slots.binary_search(&h).ok()?;
        Some((self.gens[i], self.full[i], self.ended[i]))
    }
}

/// One compaction round's transaction: [`begin`](Round::begin) reads the marks,
/// [`build`](Round::build) rebuilds their slots, [`commit`](Round::commit) commits; then
/// [`clear`] clears the marks. It holds no lock an insert needs.
pub struct Round<'a> {
    tx: Transaction<'a>,
    marks: Marks,
}

impl std::fmt::Debug for Round<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Round")
            .field("marks", &self.marks)
            .finish_non_exhaustive()
    }
}

impl<'a> Round<'a> {
    /// Starts a round over up to `max_slots` dirty slots (see [`round`]), or `None` when
    /// another replica is compacting or no such slot is dirty.
    ///
    /// First, outside the round's transaction (an insert into `user_keys` conflicting with
    /// a concurrent batch's would fail it), gives a key to every user of the slots' rows
    /// stored without one (before the worker assigned keys at insert, or bulk-loaded).
    pub async fn begin(
        client: &'a mut Client,
        max_slots: i64,
        fold_after: Duration,
    ) -> anyhow::Result<Option<Self>> {
        let fold_after_ms = fold_after.as_millis() as f64;
        let candidates: Vec<(OffsetDateTime, bool)> = client
            .query(CANDIDATES_SQL, &[&max_slots, &fold_after_ms])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        if candidates.is_empty() {
            return Ok(None);
        }
        for &(lo, full) in &candidates {
            // Listed events carry the keys the insert gave them.
            if full {
                let hi = slot_start(slot_of(lo) + 1);
                client.execute(ASSIGN_KEYS_SQL, &[&lo, &hi]).await?;
            }
        }

        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .start()
            .await?;
        let locked: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&LOCK_KEY])
            .await?
            .get(0);
        if !locked {
            return Ok(None);
        }
        let slots: Vec<OffsetDateTime> = candidates.iter().map(|c| c.0).collect();
        let mut marks = Marks {
            slots: Vec::new(),
            gens: Vec::new(),
            full: Vec::new(),
            ended: Vec::new(),
        };
        for row in tx.query(MARKS_SQL, &[&slots]).await? {
            marks.slots.push(slot_of(row.get::<_, OffsetDateTime>(0)));
            marks.gens.push(row.get(1));
            marks.full.push(row.get::<_, Option<i64>>(2).is_some());
            // As of the snapshot: a slot that ended since the candidates were picked is
            // built as ended (every list it has is in the snapshot).
            marks.ended.push(row.get(3));
        }
        if marks.slots.is_empty() {
            return Ok(None);
        }
        Ok(Some(Round { tx, marks }))
    }

    /// The slots this round builds, ascending.
    pub fn slots(&self) -> &[i64] {
        &self.marks.slots
    }

    /// Builds each slot's level-0 block, then the ancestors of those that have ended, all
    /// from the snapshot the marks were read in.
    ///
    /// A slot whose sets the database refuses (a stored value it cannot index, say:
    /// SQLSTATE 22, 23 or 54) is a fact about that slot's events, not about the others:
    /// it is built under a savepoint, rolled back, logged and counted, and left out of the
    /// round. It stays dirty, so reports read it raw and stay exact, and it is tried again
    /// at the next round; the other slots are compacted.
    pub async fn build(&mut self) -> anyhow::Result<()> {
        let raw = self.tx.prepare(RAW_SQL).await?;
        let mut refused = Vec::new();
        for (i, &h) in self.marks.slots.iter().enumerate() {
            let slot = self.tx.savepoint("slot").await?;
            match build_slot(&slot, &raw, h, self.marks.full[i]).await {
                Ok(()) => slot.commit().await?,
                Err(error) if refused_by_database(&error) => {
                    slot.rollback().await?;
                    metrics::counter!(crate::compactor::ERRORS).increment(1);
                    tracing::error!(
                        slot = %slot_start(h),
                        error = format!("{error:#}"),
                        "The database refuses this slot's per-user sets; it stays dirty and is read raw"
                    );
                    refused.push(i);
                }
                Err(error) => {
                    return Err(error.context(format!("building slot {}", slot_start(h))));
                }
            }
        }
        self.marks.remove(&refused);
        for level in 1..=MAX_LEVEL {
            let parents: BTreeSet<Block> = self
                .marks
                .slots
                .iter()
                .zip(&self.marks.ended)
                .filter(|(_, ended)| **ended)
                .map(|(&h, _)| Block::of(h, level))
                .collect();
            for parent in parents {
                merge_children(&self.tx, parent).await?;
            }
        }
        Ok(())
    }

    /// Commits the blocks (and the listed entries dropped); the marks stay until [`clear`].
    pub async fn commit(self) -> anyhow::Result<Marks> {
        self.tx.commit().await?;
        Ok(self.marks)
    }
}

/// Whether a failed build is the database refusing the slot's data (not an outage).
fn refused_by_database(error: &anyhow::Error) -> bool {
    error
        .chain()
        .find_map(|e| e.downcast_ref::<tokio_postgres::Error>())
        .is_some_and(|e| crate::store::fault_of(e) == crate::store::Fault::Rows)
}

/// What [`clear`] did.
#[derive(Debug)]
pub struct Cleared {
    /// The slots whose marks were removed: their blocks are current. The others are open,
    /// or a batch set them again since the round's snapshot; they stay dirty.
    pub cleared: Vec<i64>,
}

/// Removes the marks of ended slots no batch has set since `marks` were read (generation
/// unchanged) and skips any a batch holds now (it will change it). A mark kept after a
/// full rebuild no longer asks for one unless it was asked for again since.
pub async fn clear(client: &mut Client, marks: &Marks) -> anyhow::Result<Cleared> {
    let tx = client.transaction().await?;
    let slots: Vec<OffsetDateTime> = marks.slots.iter().map(|&h| slot_start(h)).collect();
    let (mut unchanged, mut not_full) = (Vec::new(), Vec::new());
    for row in tx.query(LOCK_MARKS_SQL, &[&slots]).await? {
        let at: OffsetDateTime = row.get(0);
        let (generation, full_gen): (i64, Option<i64>) = (row.get(1), row.get(2));
        let Some((seen, was_full, ended)) = marks.get(slot_of(at)) else {
            continue;
        };
        if ended && generation == seen {
            unchanged.push(at);
        } else if was_full && full_gen.is_some_and(|f| f <= seen) {
            not_full.push(at);
        }
    }
    if !unchanged.is_empty() {
        tx.execute(CLEAR_SQL, &[&unchanged]).await?;
    }
    if !not_full.is_empty() {
        tx.execute(NOT_FULL_SQL, &[&not_full]).await?;
    }
    tx.commit().await?;
    Ok(Cleared {
        cleared: unchanged.into_iter().map(slot_of).collect(),
    })
}

/// Rounds until no dirty slot that has ended is left and every listed event is in its
/// block (the rebuild command, benches).
pub async fn until_clean(client: &mut Client) -> anyhow::Result<usize> {
    let mut total = 0;
    loop {
        let n = round(client, ROUND_SLOTS, Duration::ZERO).await?.len();
        total += n;
        if n == 0 {
            return Ok(total);
        }
    }
}

/// The level-0 block of slot `h`: from every raw event (`full`, with `raw` =
/// [`RAW_SQL`]), or the built block plus the events listed for it; then the lists it now
/// includes are dropped. The stored block is read once, for the fold and for the diff.
async fn build_slot(
    tx: &Transaction<'_>,
    raw: &tokio_postgres::Statement,
    h: i64,
    full: bool,
) -> anyhow::Result<()> {
    let (lo, hi) = (slot_start(h), slot_start(h + 1));
    let block = Block::of(h, 0);
    let stored = read_blocks(tx, 0, vec![block.index]).await?;
    let (mut sets, mut totals) = if full {
        (Sets::new(), Totals::new())
    } else {
        stored.clone()
    };
    let mut fold = Fold::default();
    let mut add = |chunk: &[Activity]| fold.add(chunk, &mut totals);
    if full {
        scan_raw(tx, raw, &[&lo, &hi], &mut add).await?;
    } else {
        scan_pending(tx, &[lo], &mut add).await?;
    }
    fold.finish(&mut sets)?;
    tx.execute(DROP_PENDING_SQL, &[&lo]).await?;
    write(tx, block, &stored, &sets, &totals).await
}

/// Events being added to a block's sets. The sets of each distinct [`Profile`] are
/// looked up once: a busy slot's events share a few thousand profiles, and ~10 set
/// lookups per event (six strings hashed and compared each) were most of a fold's CPU.
#[derive(Debug, Default)]
struct Fold {
    /// The sets the added events belong to, each with what they add to it.
    sets: Vec<(OwnedSetKey, SetValue)>,
    /// Where each set is in `sets`.
    index: HashMap<OwnedSetKey, usize>,
    /// Each profile seen ([`Profile::encode`]) with where its sets' indexes are in
    /// `members`.
    profiles: HashMap<Vec<u8>, Range<usize>>,
    members: Vec<usize>,
    /// The profile being looked up.
    scratch: Vec<u8>,
    /// The user of an event without a key, if any (the event is skipped).
    missing: Option<String>,
    /// A sum that overflowed, reported by `finish`.
    overflow: Option<SumOverflow>,
}

impl Fold {
    /// Adds events to the sets and to `totals`.
    fn add(&mut self, chunk: &[Activity], totals: &mut Totals) {
        for a in chunk {
            let Some(key) = a.user_key else {
                self.missing = Some(format!("user {}/{} has no key", a.source, a.user_id));
                continue;
            };
            let key = key as u32;
            let members = self.sets_of(Profile::of(a));
            for &i in &self.members[members] {
                // `members` holds indexes of `sets` only.
                if let Some((_, value)) = self.sets.get_mut(i)
                    && let Err(overflow) = value.add_event(key, a.revenue)
                {
                    self.overflow = Some(overflow);
                }
            }
            let t = match totals.get_mut(a.source.as_str()) {
                Some(users) => users.entry(key).or_default(),
                None => totals
                    .entry(a.source.clone())
                    .or_default()
                    .entry(key)
                    .or_default(),
            };
            let event = UserTotals {
                events: 1,
                revenue: a.revenue.unwrap_or_default(),
            };
            if let Err(overflow) = t.add(event) {
                self.overflow = Some(overflow);
            }
        }
    }

    /// Where the indexes of the sets of `profile` are in `members`; found once per profile.
    fn sets_of(&mut self, profile: Profile<'_>) -> Range<usize> {
        self.scratch.clear();
        profile.encode(&mut self.scratch);
        if let Some(members) = self.profiles.get(self.scratch.as_slice()) {
            return members.clone();
        }
        let start = self.members.len();
        profile.memberships(|k| {
            let k = k.to_owned_key();
            let i = match self.index.get(&k) {
                Some(&i) => i,
                None => {
                    self.sets.push((k.clone(), SetValue::default()));
                    self.index.insert(k, self.sets.len() - 1);
                    self.sets.len() - 1
                }
            };
            self.members.push(i);
        });
        let members = start..self.members.len();
        self.profiles.insert(self.scratch.clone(), members.clone());
        members
    }

    /// Adds what the events added to `sets`; fails naming a user without a key.
    fn finish(self, sets: &mut Sets) -> anyhow::Result<()> {
        if let Some(missing) = self.missing {
            anyhow::bail!(missing);
        }
        if let Some(overflow) = self.overflow {
            return Err(overflow.into());
        }
        for (k, value) in self.sets {
            sets.entry(k).or_default().add(&value)?;
        }
        Ok(())
    }
}

/// The union of the given blocks of one level.
async fn read_blocks(
    tx: &Transaction<'_>,
    level: i16,
    indexes: Vec<i64>,
) -> anyhow::Result<(Sets, Totals)> {
    let mut sets: Sets = BTreeMap::new();
    for row in tx.query(SETS_OF_SQL, &[&level, &indexes]).await? {
        let value = SetValue::from_row(&row, 6).map_err(anyhow::Error::msg)?;
        sets.entry(OwnedSetKey::from_row(&row)?)
            .or_default()
            .add(&value)?;
    }
    let mut totals: Totals = BTreeMap::new();
    for row in tx.query(TOTALS_OF_SQL, &[&level, &indexes]).await? {
        decode_totals(row.get(1), totals.entry(row.get(0)).or_default())
            .map_err(anyhow::Error::msg)?;
    }
    Ok((sets, totals))
}

/// A parent block as the union of its children, written where it changed.
async fn merge_children(tx: &Transaction<'_>, parent: Block) -> anyhow::Result<()> {
    let [a, b] = parent.children();
    let (sets, totals) = read_blocks(tx, a.level, vec![a.index, b.index]).await?;
    let stored = read_blocks(tx, parent.level, vec![parent.index]).await?;
    write(tx, parent, &stored, &sets, &totals).await
}

/// Makes the block, `stored` as read in this transaction ([`read_blocks`] of it alone),
/// equal `sets` and `totals`, writing only what differs (upper blocks mostly do not change
/// when a slot is added: the same users again).
async fn write(
    tx: &Transaction<'_>,
    block: Block,
    (old, old_totals): &(Sets, Totals),
    sets: &Sets,
    totals: &Totals,
) -> anyhow::Result<()> {
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

    let changed: Vec<(&String, Vec<u8>)> = totals
        .iter()
        .filter(|(s, t)| old_totals.get(*s) != Some(*t))
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
    let gone: Vec<&str> = old_totals
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use service_kit::user_sets::memberships;

    fn activity(i: u32) -> Activity {
        let facebook = !i.is_multiple_of(3);
        let top = i.is_multiple_of(2);
        let (source, event_type) = match (facebook, top) {
            (true, true) => ("facebook", "ad.view"),
            (true, false) => ("facebook", "checkout.complete"),
            (false, true) => ("tiktok", "video.view"),
            (false, false) => ("tiktok", "purchase"),
        };
        let country = ["Germany", "France", "Japan"][(i % 5 % 3) as usize];
        Activity {
            source: source.into(),
            funnel_stage: if top { "top" } else { "bottom" }.into(),
            event_type: event_type.into(),
            user_id: format!("u{}", i % 11),
            user_key: Some((i % 11) as i32),
            country: (facebook || top).then(|| country.into()),
            revenue: (!top).then(|| Decimal::new(i64::from(i), 2)),
            age: facebook.then(|| (15 + i % 60).to_string()),
            gender: (facebook && !i.is_multiple_of(7))
                .then(|| ["female", "male"][(i % 2) as usize].into()),
            city: facebook.then(|| ["Berlin", "Paris", "Osaka", "Lyon"][(i % 4) as usize].into()),
            followers: (!facebook).then(|| (i * 997 % 2_000_000).to_string()),
            device: (!facebook).then(|| ["iOS", "Android"][(i % 2) as usize].into()),
        }
    }

    #[test]
    fn folding_by_profile_gives_the_sets_and_totals_of_each_event_added_alone() {
        let events: Vec<Activity> = (0..600).map(activity).collect();
        let mut expected = Sets::new();
        let mut expected_totals = Totals::new();
        for a in &events {
            let user = a.user_key.unwrap() as u32;
            memberships(a, |k| {
                expected
                    .entry(k.to_owned_key())
                    .or_default()
                    .add_event(user, a.revenue)
                    .unwrap()
            });
            let t = expected_totals
                .entry(a.source.clone())
                .or_default()
                .entry(user)
                .or_default();
            t.events += 1;
            t.revenue += a.revenue.unwrap_or_default();
        }

        // Onto a block that already holds sets, in chunks as the lists are read.
        let stored: Sets = expected
            .keys()
            .step_by(3)
            .map(|k| {
                let mut v = SetValue::default();
                v.add_event(1_000, Some(Decimal::ONE)).unwrap();
                (k.clone(), v)
            })
            .collect();
        let (mut sets, mut totals) = (stored.clone(), Totals::new());
        let mut fold = Fold::default();
        for chunk in events.chunks(64) {
            fold.add(chunk, &mut totals);
        }
        assert!(
            fold.profiles.len() < events.len() / 2,
            "events share profiles"
        );
        fold.finish(&mut sets).unwrap();

        for (k, v) in &stored {
            expected.get_mut(k).unwrap().add(v).unwrap();
        }
        assert_eq!(sets, expected);
        assert_eq!(totals, expected_totals);
    }

    #[test]
    fn an_event_without_a_user_key_fails_the_fold_naming_the_user() {
        let mut fold = Fold::default();
        let mut totals = Totals::new();
        let keyless = Activity {
            user_key: None,
            ..activity(1)
        };
        fold.add(&[activity(2), keyless], &mut totals);
        let error = fold.finish(&mut Sets::new()).unwrap_err();
        assert_eq!(error.to_string(), "user facebook/u1 has no key");
    }
}
