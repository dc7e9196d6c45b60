//! Time as the sets see it: quarter-hour [`Slot`]s since the Unix epoch, dyadic
//! [`Block`]s of them, and the [`cover`] of a range of slots by the fewest blocks.

use std::collections::BTreeSet;
use time::OffsetDateTime;

/// The coarsest level: blocks of 2^13 slots (~85 days).
pub const MAX_LEVEL: i16 = 13;

/// Seconds in a slot, the finest block: a quarter of an hour, so the raw events a report
/// reads at the edges of its range span at most two quarter-hours.
pub const SLOT_SECONDS: i64 = 900;

/// A quarter-hour slot: the `index`-th since the Unix epoch (negative before it). The
/// database stores a slot as its start (`timestamptz`, [`Slot::start`]) and a block by
/// its index; both conversions are explicit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot(i64);

impl Slot {
    /// The slot with this index.
    pub const fn from_index(index: i64) -> Slot {
        Slot(index)
    }

    /// Its index since the Unix epoch.
    pub const fn index(self) -> i64 {
        self.0
    }

    /// The slot holding `t`. Total: every instant `time` represents has a slot (within
    /// ±2^39).
    pub fn of(t: OffsetDateTime) -> Slot {
        Slot(t.unix_timestamp().div_euclid(SLOT_SECONDS))
    }

    /// The next slot; `None` past `i64`'s range.
    pub fn next(self) -> Option<Slot> {
        self.0.checked_add(1).map(Slot)
    }

    /// Its start, in UTC; `None` when it is outside `time`'s range (years −9999 to 9999
    /// in UTC).
    pub fn checked_start(self) -> Option<OffsetDateTime> {
        OffsetDateTime::from_unix_timestamp(self.0.checked_mul(SLOT_SECONDS)?).ok()
    }

    /// [`Slot::checked_start`] for a slot known to be in range, such as a stored event's
    /// (the worker accepts only years 2000 on). A slot outside the range gives the Unix
    /// epoch rather than a panic.
    pub fn start(self) -> OffsetDateTime {
        self.checked_start().unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// The start of the next slot, as [`Slot::start`].
    pub fn end(self) -> OffsetDateTime {
        self.next().map_or(OffsetDateTime::UNIX_EPOCH, Slot::start)
    }
}

/// The start of the slot holding `t`; `None` only when `t`'s own UTC form is out of range.
pub fn checked_slot_floor(t: OffsetDateTime) -> Option<OffsetDateTime> {
    Slot::of(t).checked_start()
}

/// [`checked_slot_floor`] for an instant known to be in range (see [`Slot::start`]).
pub fn slot_floor(t: OffsetDateTime) -> OffsetDateTime {
    Slot::of(t).start()
}

/// The first slot start at or after `t`; `None` when it is after the last instant `time`
/// represents (9999-12-31T23:59:59.999999999Z).
pub fn checked_slot_ceil(t: OffsetDateTime) -> Option<OffsetDateTime> {
    let floor = checked_slot_floor(t)?;
    if floor == t {
        Some(floor)
    } else {
        Slot::of(t).next()?.checked_start()
    }
}

/// Level `level` block `index`: the slots `[index << level, (index + 1) << level)`.
/// Stored as the columns `level` and `block` (the index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Block {
    pub level: i16,
    pub index: i64,
}

impl Block {
    /// The block of `level` (0 to [`MAX_LEVEL`]) holding `slot`.
    pub fn of(slot: Slot, level: i16) -> Block {
        Block {
            level,
            index: slot.0 >> level,
        }
    }

    /// Slots in a block of this level; `None` outside 0 to 62.
    fn size(self) -> Option<i64> {
        let level = u32::try_from(self.level).ok().filter(|l| *l < 63)?;
        Some(1i64 << level)
    }

    /// Its first slot; `None` when that overflows `i64` (never for the level of a stored
    /// block holding a representable instant).
    pub fn first_slot(self) -> Option<Slot> {
        self.index.checked_mul(self.size()?).map(Slot)
    }

    /// One past its last slot; `None` when that overflows `i64`.
    pub fn end_slot(self) -> Option<Slot> {
        self.index
            .checked_add(1)?
            .checked_mul(self.size()?)
            .map(Slot)
    }

    /// The two halves (level > 0).
    pub fn children(self) -> [Block; 2] {
        let level = self.level - 1;
        [
            Block {
                level,
                index: self.index * 2,
            },
            Block {
                level,
                index: self.index * 2 + 1,
            },
        ]
    }
}

/// How slots `[a, b)` are read: built blocks, and dirty slots (read as their level-0 block
/// plus their listed events, or raw when marked for a full rebuild).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cover {
    pub blocks: Vec<Block>,
    /// Dirty slots (their blocks are not built from all their events), ascending.
    pub raw_slots: Vec<Slot>,
}

/// Covers slots `[a, b)` with the fewest blocks (at most ~2 per level), splitting every
/// block that holds a dirty slot down to the dirty slots themselves. Every step is inside
/// `[a, b]`, so no slot index overflows whatever `a` and `b` are.
pub fn cover(a: Slot, b: Slot, dirty: &BTreeSet<Slot>) -> Cover {
    let (a, b) = (a.0, b.0);
    let mut out = Cover::default();
    let mut h = a;
    while h < b {
        let mut level = 0;
        while level < MAX_LEVEL {
            let size = 1i64 << (level + 1);
            if h.rem_euclid(size) != 0 || h.checked_add(size).is_none_or(|end| end > b) {
                break;
            }
            level += 1;
        }
        // `h` is a multiple of the size, and `h + size <= b` (a level-0 block: `h < b`).
        let end = h + (1i64 << level);
        clean(Block::of(Slot(h), level), h, end, dirty, &mut out);
        h = end;
    }
    out
}

/// Adds `block` (the slots `[first, end)`), or its parts holding no dirty slot.
fn clean(block: Block, first: i64, end: i64, dirty: &BTreeSet<Slot>, out: &mut Cover) {
    if dirty.range(Slot(first)..Slot(end)).next().is_none() {
        out.blocks.push(block);
    } else if block.level == 0 {
        out.raw_slots.push(Slot(block.index));
    } else {
        let middle = first + (end - first) / 2;
        let [low, high] = block.children();
        clean(low, first, middle, dirty, out);
        clean(high, middle, end, dirty, out);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn slots(c: &Cover) -> Vec<i64> {
        let mut all: Vec<i64> = c
            .blocks
            .iter()
            .flat_map(|b| b.first_slot().unwrap().index()..b.end_slot().unwrap().index())
            .chain(c.raw_slots.iter().map(|s| s.index()))
            .collect();
        all.sort();
        all
    }

    fn set(indexes: &[i64]) -> BTreeSet<Slot> {
        indexes.iter().copied().map(Slot::from_index).collect()
    }

    #[test]
    fn slots_are_utc_and_floor_before_the_epoch() {
        let t = datetime!(2026-03-01 10:59:59.9 +02:00);
        assert_eq!(slot_floor(t), datetime!(2026-03-01 08:45 UTC));
        assert_eq!(checked_slot_ceil(t), Some(datetime!(2026-03-01 09:00 UTC)));
        let aligned = datetime!(2026-03-01 08:30 UTC);
        assert_eq!(
            (checked_slot_floor(aligned), checked_slot_ceil(aligned)),
            (Some(aligned), Some(aligned))
        );
        assert_eq!(Slot::of(datetime!(1969-12-31 23:50 UTC)).index(), -1);
        assert_eq!(Slot::of(datetime!(1969-12-31 23:30 UTC)).index(), -2);
        assert_eq!(
            Slot::of(aligned).end(),
            datetime!(2026-03-01 08:45 UTC),
            "a slot ends where the next starts"
        );
    }

    #[test]
    fn slots_at_the_ends_of_time_are_checked_not_panics() {
        use time::macros::offset;
        let last = datetime!(9999-12-31 23:59:59.999_999_999 UTC);
        assert_eq!(
            checked_slot_floor(last),
            Some(datetime!(9999-12-31 23:45 UTC))
        );
        assert_eq!(checked_slot_ceil(last), None, "10000-01-01 is out of range");
        assert_eq!(
            checked_slot_ceil(datetime!(9999-12-31 23:30:01 UTC)),
            Some(datetime!(9999-12-31 23:45 UTC))
        );
        assert_eq!(Slot::of(last).next().unwrap().checked_start(), None);
        let first = datetime!(-9999-01-01 0:00 UTC);
        assert_eq!(checked_slot_ceil(first), Some(first));
        assert_eq!(
            Slot::from_index(Slot::of(first).index() - 1).checked_start(),
            None
        );
        for h in [i64::MIN, i64::MAX] {
            assert_eq!(Slot::from_index(h).checked_start(), None);
            assert_eq!(
                Slot::from_index(h).start(),
                OffsetDateTime::UNIX_EPOCH,
                "no panic"
            );
        }
        assert_eq!(Slot::from_index(i64::MAX).next(), None);
        // 10000-01-01T00:59:59Z in UTC: no slot of it can be represented.
        let beyond = datetime!(9999-12-31 23:59:59 UTC).replace_offset(offset!(-1));
        assert_eq!(checked_slot_floor(beyond), None);
        assert_eq!(checked_slot_ceil(beyond), None);
    }

    #[test]
    fn blocks_at_the_ends_of_i64_are_checked_not_panics() {
        let top = Block::of(Slot::from_index(i64::MAX), MAX_LEVEL);
        assert_eq!(
            top.first_slot(),
            Some(Slot::from_index(i64::MAX >> MAX_LEVEL << MAX_LEVEL))
        );
        assert_eq!(top.end_slot(), None);
        assert_eq!(
            Block::of(Slot::from_index(i64::MIN), 0).first_slot(),
            Some(Slot::from_index(i64::MIN))
        );
        assert_eq!(
            Block {
                level: -1,
                index: 0
            }
            .first_slot(),
            None
        );
        assert_eq!(
            Block {
                level: 63,
                index: 1
            }
            .end_slot(),
            None
        );
        let at = Slot::from_index;
        let c = cover(at(i64::MAX - 5), at(i64::MAX), &set(&[i64::MAX - 2]));
        assert_eq!(slots(&c), (i64::MAX - 5..i64::MAX).collect::<Vec<_>>());
        let c = cover(at(i64::MIN), at(i64::MIN + 5), &BTreeSet::new());
        assert_eq!(slots(&c), (i64::MIN..i64::MIN + 5).collect::<Vec<_>>());
    }

    #[test]
    fn a_cover_tiles_the_slots_exactly_with_few_blocks() {
        let none = BTreeSet::new();
        let at = Slot::from_index;
        for (a, b) in [
            (0, 1),
            (5, 6),
            (3, 8643),
            (-100, 77),
            (1_972_000, 1_980_640),
        ] {
            let c = cover(at(a), at(b), &none);
            assert_eq!(slots(&c), (a..b).collect::<Vec<_>>(), "[{a}, {b})");
            assert!(c.raw_slots.is_empty());
            assert!(c.blocks.len() <= 2 * (MAX_LEVEL as usize + 1) + (b - a) as usize / 8192);
            for b in &c.blocks {
                assert!(b.level <= MAX_LEVEL);
            }
        }
        // 90 days: a couple of dozen blocks, not 8,640 slots.
        assert!(
            cover(at(1_972_000), at(1_980_640), &none).blocks.len() <= 2 * (MAX_LEVEL as usize + 1)
        );
    }

    #[test]
    fn dirty_slots_are_read_raw_and_no_block_holds_one() {
        let dirty = set(&[10, 11, 700, 2000]);
        let c = cover(Slot::from_index(0), Slot::from_index(2048), &dirty);
        assert_eq!(slots(&c), (0..2048).collect::<Vec<_>>());
        assert_eq!(c.raw_slots, dirty.iter().copied().collect::<Vec<_>>());
        for b in &c.blocks {
            assert!(
                dirty
                    .range(b.first_slot().unwrap()..b.end_slot().unwrap())
                    .next()
                    .is_none()
            );
        }
    }
}
