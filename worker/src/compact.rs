//! The compactor: builds the per-user sets and totals (`sql/0003_user_sets.sql`, the
//! `user-sets` crate) of the slots the insert path marked dirty. This module schedules the
//! work (which slots, in which snapshot, when their marks go); `user_sets::store` builds
//! the blocks.
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

use std::collections::BTreeSet;
use std::time::Duration;
use time::OffsetDateTime;
use tokio_postgres::{Client, IsolationLevel, Transaction};
use user_sets::store::{build_slot, merge_children};
use user_sets::{Block, MAX_LEVEL, RAW_SQL, Slot};

/// Arbitrary, fixed key of the compaction lock ("usersets" in ASCII).
pub const LOCK_KEY: i64 = 0x7573_6572_7365_7473;

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

/// Compacts up to `max_slots` dirty slots: those that have ended, and the open ones with
/// events listed `fold_after` ago or earlier. Returns the slots built (none when another
/// replica holds the lock).
pub async fn round(
    client: &mut Client,
    max_slots: i64,
    fold_after: Duration,
) -> anyhow::Result<Vec<Slot>> {
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
    pub slots: Vec<Slot>,
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

    fn get(&self, slot: Slot) -> Option<(i64, bool, bool)> {
        let i = self.slots.binary_search(&slot).ok()?;
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
                let hi = Slot::of(lo).end();
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
            marks.slots.push(Slot::of(row.get(0)));
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
    pub fn slots(&self) -> &[Slot] {
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
            // As `anyhow`, so the log shows the whole chain down to the database's message.
            let built = build_slot(&slot, &raw, h, self.marks.full[i]).await;
            match built.map_err(anyhow::Error::from) {
                Ok(()) => slot.commit().await?,
                Err(error) if refused_by_database(&error) => {
                    slot.rollback().await?;
                    metrics::counter!(crate::compactor::ERRORS).increment(1);
                    tracing::error!(
                        slot = %h.start(),
                        error = format!("{error:#}"),
                        "The database refuses this slot's per-user sets; it stays dirty and is read raw"
                    );
                    refused.push(i);
                }
                Err(error) => {
                    return Err(error.context(format!("building slot {}", h.start())));
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
    pub cleared: Vec<Slot>,
}

/// Removes the marks of ended slots no batch has set since `marks` were read (generation
/// unchanged) and skips any a batch holds now (it will change it). A mark kept after a
/// full rebuild no longer asks for one unless it was asked for again since.
pub async fn clear(client: &mut Client, marks: &Marks) -> anyhow::Result<Cleared> {
    let tx = client.transaction().await?;
    let slots: Vec<OffsetDateTime> = marks.slots.iter().map(|s| s.start()).collect();
    let (mut unchanged, mut not_full) = (Vec::new(), Vec::new());
    for row in tx.query(LOCK_MARKS_SQL, &[&slots]).await? {
        let at: OffsetDateTime = row.get(0);
        let (generation, full_gen): (i64, Option<i64>) = (row.get(1), row.get(2));
        let Some((seen, was_full, ended)) = marks.get(Slot::of(at)) else {
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
        cleared: unchanged.into_iter().map(Slot::of).collect(),
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
