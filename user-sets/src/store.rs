//! Building blocks in PostgreSQL, for the worker's compactor: a slot's level-0 block from
//! its raw or listed events ([`build_slot`]), a parent from its two children
//! ([`merge_children`]), each written where it changed.

use crate::codec::{decode_totals, encode_bitmap, encode_totals};
use crate::error::{DecodeError, Error};
use crate::fold::Fold;
use crate::key::OwnedSetKey;
use crate::pg::{scan_pending, scan_raw};
use crate::profile::Activity;
use crate::slot::{Block, Slot};
use crate::value::{SetValue, UserTotals};
use rust_decimal::Decimal;
use shared_events::Source;
use std::collections::BTreeMap;
use tokio_postgres::Transaction;

/// A block's sets, by key.
pub type BlockSets = BTreeMap<OwnedSetKey, SetValue>;
/// A block's per-user totals, by source and user key.
pub type BlockTotals = BTreeMap<Source, BTreeMap<u32, UserTotals>>;

/// The listed entries of a slot, once its block includes them (in the caller's snapshot:
/// entries committed after it stay).
const DROP_PENDING_SQL: &str = "DELETE FROM user_sets_pending WHERE slot = $1";

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

/// Builds the level-0 block of `slot`: from every raw event (`full`, with `raw` =
/// [`crate::RAW_SQL`] prepared), or as the built block plus the events listed for it;
/// then the lists it now includes are dropped. The stored block is read once, for the
/// fold and for the diff.
pub async fn build_slot(
    tx: &Transaction<'_>,
    raw: &tokio_postgres::Statement,
    slot: Slot,
    full: bool,
) -> Result<(), Error> {
    let (lo, hi) = (slot.start(), slot.end());
    let block = Block::of(slot, 0);
    let stored = read_blocks(tx, 0, vec![block.index]).await?;
    let (mut sets, mut totals) = if full {
        (BlockSets::new(), BlockTotals::new())
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

/// Rebuilds a parent block as the union of its children, written where it changed.
pub async fn merge_children(tx: &Transaction<'_>, parent: Block) -> Result<(), Error> {
    let [a, b] = parent.children();
    let (sets, totals) = read_blocks(tx, a.level, vec![a.index, b.index]).await?;
    let stored = read_blocks(tx, parent.level, vec![parent.index]).await?;
    write(tx, parent, &stored, &sets, &totals).await
}

/// The union of the given blocks of one level.
async fn read_blocks(
    tx: &Transaction<'_>,
    level: i16,
    indexes: Vec<i64>,
) -> Result<(BlockSets, BlockTotals), Error> {
    let mut sets = BlockSets::new();
    for row in tx.query(SETS_OF_SQL, &[&level, &indexes]).await? {
        let value = SetValue::from_row(&row, 6)?;
        sets.entry(OwnedSetKey::from_row(&row)?)
            .or_default()
            .add(&value)?;
    }
    let mut totals = BlockTotals::new();
    for row in tx.query(TOTALS_OF_SQL, &[&level, &indexes]).await? {
        let source: &str = row.try_get(0)?;
        let source = Source::parse(source).ok_or_else(|| DecodeError::unknown("source", source))?;
        decode_totals(row.try_get(1)?, totals.entry(source).or_default())?;
    }
    Ok((sets, totals))
}

/// Makes the block, `stored` as read in this transaction ([`read_blocks`] of it alone),
/// equal `sets` and `totals`, writing only what differs (upper blocks mostly do not change
/// when a slot is added: the same users again).
async fn write(
    tx: &Transaction<'_>,
    block: Block,
    (old, old_totals): &(BlockSets, BlockTotals),
    sets: &BlockSets,
    totals: &BlockTotals,
) -> Result<(), Error> {
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

    let changed: Vec<(&str, Vec<u8>)> = totals
        .iter()
        .filter(|(s, t)| old_totals.get(*s) != Some(*t))
        .map(|(s, t)| (s.as_str(), encode_totals(t)))
        .collect();
    if !changed.is_empty() {
        let sources: Vec<&str> = changed.iter().map(|(s, _)| *s).collect();
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
        .map(|s| s.as_str())
        .collect();
    if !gone.is_empty() {
        tx.execute(DELETE_TOTALS_SQL, &[&block.level, &block.index, &gone])
            .await?;
    }
    Ok(())
}

/// The six stored key columns as arrays.
fn columns<'a>(keys: impl Iterator<Item = &'a OwnedSetKey>) -> [Vec<&'a str>; 6] {
    let mut cols: [Vec<&str>; 6] = Default::default();
    for k in keys {
        for (col, value) in cols.iter_mut().zip(k.as_key().columns()) {
            col.push(value);
        }
    }
    cols
}
