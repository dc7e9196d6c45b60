//! Per-user activity (`sql/0003_user_sets.sql`): what the worker's compactor writes and
//! the analytics reports read, defined once so both agree on every key.
//!
//! An event makes its user a member of a handful of *sets* (by country and filters, by
//! funnel step, by demographic value) and adds to the user's *totals* (events, revenue).
//! Sets and totals are kept per dyadic block of quarter-hour slots ([`Block`]); a report unions the sets
//! of the blocks that cover its range ([`cover`]) with the sets of the raw events at the
//! edges, computed by the same [`memberships`] function from the same [`RAW_SQL`] rows.

use roaring::RoaringBitmap;
use rust_decimal::Decimal;
use std::collections::{BTreeMap, BTreeSet};
use time::OffsetDateTime;

/// The coarsest level: blocks of 2^13 slots (~85 days).
pub const MAX_LEVEL: i16 = 13;

/// Seconds in a slot, the finest block: a quarter of an hour, so the raw events a report
/// reads at the edges of its range span at most two quarter-hours.
pub const SLOT_SECONDS: i64 = 900;

/// The slot (since the Unix epoch) holding `t`. Total: every instant `time` represents
/// has a slot (within ±2^39).
pub fn slot_of(t: OffsetDateTime) -> i64 {
    t.unix_timestamp().div_euclid(SLOT_SECONDS)
}

/// The start of slot `h`, in UTC; `None` when it is outside `time`'s range (years −9999 to
/// 9999 in UTC).
pub fn checked_slot_start(h: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(h.checked_mul(SLOT_SECONDS)?).ok()
}

/// [`checked_slot_start`] for a slot known to be in range, such as a stored event's (the
/// worker accepts only years 2000 on). A slot outside the range gives the Unix epoch
/// rather than a panic.
pub fn slot_start(h: i64) -> OffsetDateTime {
    checked_slot_start(h).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The start of the slot holding `t`; `None` only when `t`'s own UTC form is out of range.
pub fn checked_slot_floor(t: OffsetDateTime) -> Option<OffsetDateTime> {
    checked_slot_start(slot_of(t))
}

/// [`checked_slot_floor`] for an instant known to be in range (see [`slot_start`]).
pub fn slot_floor(t: OffsetDateTime) -> OffsetDateTime {
    slot_start(slot_of(t))
}

/// The first slot start at or after `t`; `None` when it is after the last instant `time`
/// represents (9999-12-31T23:59:59.999999999Z).
pub fn checked_slot_ceil(t: OffsetDateTime) -> Option<OffsetDateTime> {
    let floor = checked_slot_floor(t)?;
    if floor == t {
        Some(floor)
    } else {
        checked_slot_start(slot_of(t).checked_add(1)?)
    }
}

/// Level `level` block `index`: the slots `[index << level, (index + 1) << level)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Block {
    pub level: i16,
    pub index: i64,
}

impl Block {
    /// The block of `level` (0 to [`MAX_LEVEL`]) holding slot `h`.
    pub fn of(h: i64, level: i16) -> Block {
        Block {
            level,
            index: h >> level,
        }
    }

    /// Slots in a block of this level; `None` outside 0 to 62.
    fn size(self) -> Option<i64> {
        let level = u32::try_from(self.level).ok().filter(|l| *l < 63)?;
        Some(1i64 << level)
    }

    /// Its first slot; `None` when that overflows `i64` (never for the level of a stored
    /// block holding a representable instant).
    pub fn first_slot(self) -> Option<i64> {
        self.index.checked_mul(self.size()?)
    }

    /// One past its last slot; `None` when that overflows `i64`.
    pub fn end_slot(self) -> Option<i64> {
        self.index.checked_add(1)?.checked_mul(self.size()?)
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
    pub raw_slots: Vec<i64>,
}

/// Covers slots `[a, b)` with the fewest blocks (at most ~2 per level), splitting every
/// block that holds a dirty slot down to the dirty slots themselves. Every step is inside
/// `[a, b]`, so no slot number overflows whatever `a` and `b` are.
pub fn cover(a: i64, b: i64, dirty: &BTreeSet<i64>) -> Cover {
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
        clean(Block::of(h, level), h, end, dirty, &mut out);
        h = end;
    }
    out
}

/// Adds `block` (the slots `[first, end)`), or its parts holding no dirty slot.
fn clean(block: Block, first: i64, end: i64, dirty: &BTreeSet<i64>, out: &mut Cover) {
    if dirty.range(first..end).next().is_none() {
        out.blocks.push(block);
    } else if block.level == 0 {
        out.raw_slots.push(block.index);
    } else {
        let middle = first + (end - first) / 2;
        let [low, high] = block.children();
        clean(low, first, middle, dirty, out);
        clean(high, middle, end, dirty, out);
    }
}

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

/// One raw event's facts.
#[derive(Debug, Clone)]
pub struct Activity {
    pub source: String,
    pub funnel_stage: String,
    pub event_type: String,
    pub user_id: String,
    pub user_key: Option<i32>,
    pub country: Option<String>,
    pub revenue: Option<Decimal>,
    pub age: Option<String>,
    pub gender: Option<String>,
    pub city: Option<String>,
    pub followers: Option<String>,
    pub device: Option<String>,
}

impl Activity {
    /// Reads a row of [`RAW_SQL`].
    pub fn from_row(row: &tokio_postgres::Row) -> Result<Activity, tokio_postgres::Error> {
        Ok(Activity {
            source: row.try_get(0)?,
            funnel_stage: row.try_get(1)?,
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
) -> Result<(), tokio_postgres::Error> {
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

/// Why [`scan_pending`] failed.
#[derive(Debug, thiserror::Error)]
pub enum PendingError {
    #[error(transparent)]
    Database(#[from] tokio_postgres::Error),
    #[error("unreadable list of pending events: {0}")]
    Corrupt(String),
}

/// Streams the events listed for `slots` ([`encode_activities`]) to `f`, a batch's list at
/// a time.
pub async fn scan_pending(
    tx: &tokio_postgres::Transaction<'_>,
    slots: &[OffsetDateTime],
    mut f: impl FnMut(&[Activity]),
) -> Result<(), PendingError> {
    use futures::TryStreamExt;
    let rows = tx.query_raw(PENDING_SQL, [&slots]).await?;
    futures::pin_mut!(rows);
    let mut chunk = Vec::new();
    while let Some(row) = rows.try_next().await? {
        chunk.clear();
        decode_activities(row.try_get(0)?, &mut chunk).map_err(PendingError::Corrupt)?;
        f(&chunk);
    }
    Ok(())
}

/// An event's facts as [`Activity`] holds them, borrowed (the insert path's rows).
#[derive(Debug, Clone, Copy)]
pub struct ActivityRef<'a> {
    pub source: &'a str,
    pub funnel_stage: &'a str,
    pub event_type: &'a str,
    pub user_id: &'a str,
    pub user_key: Option<i32>,
    pub country: Option<&'a str>,
    pub revenue: Option<Decimal>,
    /// `data.user.age`, `.gender`, `.location.city`, `.followers`, `data.engagement.device`
    /// as text, as PostgreSQL's `#>>` gives them ([`RAW_SQL`]).
    pub demographics: [Option<&'a str>; 5],
}

/// The `user_sets_pending.facts` encoding: version byte 1, then per event its strings
/// (`u32` length, little-endian, then UTF-8) and options (a 0/1 byte, then the value): source,
/// stage, type, userId, key (`i32`), country, revenue (16 bytes), then the five demographic
/// facts.
pub fn encode_activities<'a>(events: impl IntoIterator<Item = ActivityRef<'a>>) -> Vec<u8> {
    fn text(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    fn option<T>(out: &mut Vec<u8>, v: Option<T>, put: impl FnOnce(&mut Vec<u8>, T)) {
        match v {
            Some(v) => {
                out.push(1);
                put(out, v);
            }
            None => out.push(0),
        }
    }
    let mut out = vec![1u8];
    for a in events {
        for s in [a.source, a.funnel_stage, a.event_type, a.user_id] {
            text(&mut out, s);
        }
        option(&mut out, a.user_key, |o, k| {
            o.extend_from_slice(&k.to_le_bytes())
        });
        option(&mut out, a.country, text);
        option(&mut out, a.revenue, |o, r| {
            o.extend_from_slice(&r.serialize())
        });
        for d in a.demographics {
            option(&mut out, d, text);
        }
    }
    out
}

/// Appends the events encoded by [`encode_activities`] to `out`.
pub fn decode_activities(bytes: &[u8], out: &mut Vec<Activity>) -> Result<(), String> {
    let mut r = Reader(bytes);
    if r.take::<1>()? != [1] {
        return Err("unknown version of a pending list".into());
    }
    while !r.0.is_empty() {
        let [source, funnel_stage, event_type, user_id] =
            [r.text()?, r.text()?, r.text()?, r.text()?];
        let user_key = match r.take::<1>()? {
            [0] => None,
            _ => Some(i32::from_le_bytes(r.take::<4>()?)),
        };
        let country = r.option_text()?;
        let revenue = match r.take::<1>()? {
            [0] => None,
            _ => Some(Decimal::deserialize(r.take::<16>()?)),
        };
        out.push(Activity {
            source,
            funnel_stage,
            event_type,
            user_id,
            user_key,
            country,
            revenue,
            age: r.option_text()?,
            gender: r.option_text()?,
            city: r.option_text()?,
            followers: r.option_text()?,
            device: r.option_text()?,
        });
    }
    Ok(())
}

/// A set's identity (the key columns of `user_sets`); `""` means "any" in the filter
/// columns and "none" in `context`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SetKey<'a> {
    pub dim: &'a str,
    pub source: &'a str,
    pub funnel_stage: &'a str,
    pub event_type: &'a str,
    pub value: &'a str,
    pub context: &'a str,
}

impl SetKey<'_> {
    pub fn to_owned_key(&self) -> OwnedSetKey {
        OwnedSetKey {
            dim: self.dim.to_owned(),
            source: self.source.to_owned(),
            funnel_stage: self.funnel_stage.to_owned(),
            event_type: self.event_type.to_owned(),
            value: self.value.to_owned(),
            context: self.context.to_owned(),
        }
    }
}

/// A [`SetKey`] that owns its strings (as read from the database).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnedSetKey {
    pub dim: String,
    pub source: String,
    pub funnel_stage: String,
    pub event_type: String,
    pub value: String,
    pub context: String,
}

impl OwnedSetKey {
    /// The key columns of a `user_sets` row selected in table order, from `dim` on.
    pub fn from_row(row: &tokio_postgres::Row) -> Result<OwnedSetKey, tokio_postgres::Error> {
        Ok(OwnedSetKey {
            dim: row.try_get(0)?,
            source: row.try_get(1)?,
            funnel_stage: row.try_get(2)?,
            event_type: row.try_get(3)?,
            value: row.try_get(4)?,
            context: row.try_get(5)?,
        })
    }

    pub fn as_key(&self) -> SetKey<'_> {
        SetKey {
            dim: &self.dim,
            source: &self.source,
            funnel_stage: &self.funnel_stage,
            event_type: &self.event_type,
            value: &self.value,
            context: &self.context,
        }
    }
}

/// `docs/api.md`'s age buckets, in order.
pub const AGE_BUCKETS: &[&str] = &["<18", "18-24", "25-34", "35-44", "45-54", "55-64", "65+"];
/// `docs/api.md`'s follower buckets (lower bound inclusive), in order.
pub const FOLLOWER_BUCKETS: &[&str] = &["<1k", "1k-10k", "10k-100k", "100k-1M", "1M+"];

/// The age bucket of `data.user.age` (an integer by validation).
pub fn age_bucket(age: &str) -> Option<&'static str> {
    let age: f64 = age.parse().ok()?;
    let i = match age {
        a if a < 18.0 => 0,
        a if a < 25.0 => 1,
        a if a < 35.0 => 2,
        a if a < 45.0 => 3,
        a if a < 55.0 => 4,
        a if a < 65.0 => 5,
        _ => 6,
    };
    Some(AGE_BUCKETS[i])
}

/// The follower bucket of `data.user.followers` (an integer >= 0 by validation).
pub fn follower_bucket(followers: &str) -> Option<&'static str> {
    let n: f64 = followers.parse().ok()?;
    let i = match n {
        n if n < 1e3 => 0,
        n if n < 1e4 => 1,
        n if n < 1e5 => 2,
        n if n < 1e6 => 3,
        _ => 4,
    };
    Some(FOLLOWER_BUCKETS[i])
}

/// Whether the sets of `dim` are made from the demographic facts of an event (so its raw
/// rows need [`RAW_SQL`], not [`RAW_SQL_WITHOUT_DEMOGRAPHICS`]).
pub fn needs_demographics(dim: &str) -> bool {
    !matches!(dim, "country" | "all")
}

/// Every set the event's user belongs to because of this event.
pub fn memberships<'a>(a: &'a Activity, add: impl FnMut(SetKey<'a>)) {
    Profile::of(a).memberships(add);
}

/// The facts of an event that decide which sets it belongs to: [`memberships`] reads
/// nothing else, so events with equal profiles belong to the same sets. A busy slot's
/// events have a few thousand distinct profiles; the compactor finds each profile's sets
/// once ([`Profile::encode`] is its key), not ~10 set lookups per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile<'a> {
    pub source: &'a str,
    pub funnel_stage: &'a str,
    pub event_type: &'a str,
    pub country: Option<&'a str>,
    /// The bucket of `data.user.age`.
    pub age: Option<&'static str>,
    pub gender: Option<&'a str>,
    pub city: Option<&'a str>,
    /// The bucket of `data.user.followers`.
    pub followers: Option<&'static str>,
    pub device: Option<&'a str>,
}

impl<'a> Profile<'a> {
    pub fn of(a: &'a Activity) -> Profile<'a> {
        Profile {
            source: &a.source,
            funnel_stage: &a.funnel_stage,
            event_type: &a.event_type,
            country: a.country.as_deref(),
            age: a.age.as_deref().and_then(age_bucket),
            gender: a.gender.as_deref(),
            city: a.city.as_deref(),
            followers: a.followers.as_deref().and_then(follower_bucket),
            device: a.device.as_deref(),
        }
    }

    /// Appends the profile to `out`, each field length-prefixed (`u32::MAX` for none):
    /// two profiles are equal exactly when their encodings are.
    pub fn encode(&self, out: &mut Vec<u8>) {
        // Destructured, so a field added to the profile cannot be left out of its key.
        let Profile {
            source,
            funnel_stage,
            event_type,
            country,
            age,
            gender,
            city,
            followers,
            device,
        } = *self;
        let mut put = |s: Option<&str>| match s {
            Some(s) => {
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
        };
        for s in [Some(source), Some(funnel_stage), Some(event_type)] {
            put(s);
        }
        for s in [country, age, gender, city, followers, device] {
            put(s);
        }
    }

    /// Every set an event of this profile makes its user a member of.
    pub fn memberships(&self, mut add: impl FnMut(SetKey<'a>)) {
        let (s, st, t) = (self.source, self.funnel_stage, self.event_type);
        let key = |dim, source, funnel_stage, event_type, value, context| SetKey {
            dim,
            source,
            funnel_stage,
            event_type,
            value,
            context,
        };
        // geo: by country, under every combination of the report's filters
        if let Some(c) = self.country {
            for (source, stage, etype) in [
                ("", "", ""),
                (s, "", ""),
                ("", st, ""),
                (s, st, ""),
                (s, st, t),
            ] {
                add(key("country", source, stage, etype, c, ""));
            }
        }
        // funnel: per source and stage, and per step
        add(key("all", s, st, "", "", ""));
        add(key("all", s, st, t, "", ""));
        // demographics
        match s {
            "facebook" => {
                if let Some(b) = self.age {
                    add(key("age", s, "", "", b, ""));
                }
                if let Some(g) = self.gender {
                    add(key("gender", s, "", "", g, ""));
                }
                if let (Some(city), Some(c)) = (self.city, self.country) {
                    add(key("city", s, "", "", city, c));
                }
            }
            "tiktok" => {
                if let Some(b) = self.followers {
                    add(key("followers", s, "", "", b, ""));
                }
                if st == "top"
                    && let Some(d) = self.device
                {
                    add(key("device", s, "", "", d, ""));
                }
            }
            _ => {}
        }
    }
}

/// Events and revenue of one user.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UserTotals {
    pub events: u64,
    pub revenue: Decimal,
}

impl UserTotals {
    pub fn add(&mut self, other: UserTotals) -> Result<(), SumOverflow> {
        self.events = self.events.checked_add(other.events).ok_or(SumOverflow)?;
        self.revenue = self.revenue.checked_add(other.revenue).ok_or(SumOverflow)?;
        Ok(())
    }
}

/// A count or revenue sum past what its type holds. Validation bounds every amount, so
/// only impossible volumes get here; but the sum must fail, not panic or wrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a sum of events or revenue exceeds what its type holds")]
pub struct SumOverflow;

/// The `user_totals.totals` encoding: `n: u32`, n × (`key: u32`, `events: u64`), then
/// `m: u32`, m × (`key: u32`, revenue as `rust_decimal`'s 16 bytes) for the users with
/// revenue; little-endian, keys ascending.
pub fn encode_totals(totals: &BTreeMap<u32, UserTotals>) -> Vec<u8> {
    let with_revenue = totals.values().filter(|t| !t.revenue.is_zero()).count();
    let mut out = Vec::with_capacity(8 + totals.len() * 12 + with_revenue * 20);
    out.extend_from_slice(&(totals.len() as u32).to_le_bytes());
    for (key, t) in totals {
        out.extend_from_slice(&key.to_le_bytes());
        out.extend_from_slice(&t.events.to_le_bytes());
    }
    out.extend_from_slice(&(with_revenue as u32).to_le_bytes());
    for (key, t) in totals.iter().filter(|(_, t)| !t.revenue.is_zero()) {
        out.extend_from_slice(&key.to_le_bytes());
        out.extend_from_slice(&t.revenue.serialize());
    }
    out
}

const OVERFLOW: &str = "a user's totals overflow";

/// Adds the totals encoded in `bytes` to `into`.
pub fn decode_totals(bytes: &[u8], into: &mut BTreeMap<u32, UserTotals>) -> Result<(), String> {
    let mut r = Reader(bytes);
    let n = r.u32()?;
    for _ in 0..n {
        let key = r.u32()?;
        let events = u64::from_le_bytes(r.take::<8>()?);
        let total = into.entry(key).or_default();
        total.events = total.events.checked_add(events).ok_or(OVERFLOW)?;
    }
    let m = r.u32()?;
    for _ in 0..m {
        let key = r.u32()?;
        let revenue = Decimal::deserialize(r.take::<16>()?);
        let total = into.entry(key).or_default();
        total.revenue = total.revenue.checked_add(revenue).ok_or(OVERFLOW)?;
    }
    if r.0.is_empty() {
        Ok(())
    } else {
        Err("trailing bytes in user totals".into())
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or("truncated")?;
        self.0 = rest;
        Ok(*head)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take::<4>()?))
    }

    fn text(&mut self) -> Result<String, String> {
        let n = self.u32()? as usize;
        if self.0.len() < n {
            return Err("truncated".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        String::from_utf8(head.to_vec()).map_err(|e| e.to_string())
    }

    fn option_text(&mut self) -> Result<Option<String>, String> {
        Ok(match self.take::<1>()? {
            [0] => None,
            _ => Some(self.text()?),
        })
    }
}

/// What a set holds for a block or a range: its users, and the events that put them there
/// with their revenue (geo's events and revenue by country come from these, so geo reads
/// one set of blocks; counts and sums add up across blocks like the users union).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SetValue {
    pub users: RoaringBitmap,
    pub events: i64,
    pub revenue: Decimal,
}

impl SetValue {
    /// One event of user `user` with its revenue.
    pub fn add_event(&mut self, user: u32, revenue: Option<Decimal>) -> Result<(), SumOverflow> {
        self.users.insert(user);
        self.events = self.events.checked_add(1).ok_or(SumOverflow)?;
        if let Some(r) = revenue {
            self.revenue = self.revenue.checked_add(r).ok_or(SumOverflow)?;
        }
        Ok(())
    }

    /// Adds another block's or range's contents.
    pub fn add(&mut self, other: &SetValue) -> Result<(), SumOverflow> {
        self.users |= &other.users;
        self.events = self.events.checked_add(other.events).ok_or(SumOverflow)?;
        self.revenue = self.revenue.checked_add(other.revenue).ok_or(SumOverflow)?;
        Ok(())
    }

    /// Reads `users, events, revenue` at columns `at`, `at + 1`, `at + 2`.
    pub fn from_row(row: &tokio_postgres::Row, at: usize) -> Result<SetValue, String> {
        let err = |e: tokio_postgres::Error| e.to_string();
        Ok(SetValue {
            users: decode_bitmap(row.try_get(at).map_err(err)?)?,
            events: row.try_get(at + 1).map_err(err)?,
            revenue: row.try_get(at + 2).map_err(err)?,
        })
    }
}

/// A bitmap in the portable roaring format (`user_sets.users`).
pub fn encode_bitmap(bitmap: &RoaringBitmap) -> Vec<u8> {
    let mut out = Vec::with_capacity(bitmap.serialized_size());
    // Writing to a Vec cannot fail.
    let _ = bitmap.serialize_into(&mut out);
    out
}

pub fn decode_bitmap(bytes: &[u8]) -> Result<RoaringBitmap, String> {
    RoaringBitmap::deserialize_from(bytes).map_err(|e| format!("bad user bitmap: {e}"))
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
            .flat_map(|b| b.first_slot().unwrap()..b.end_slot().unwrap())
            .chain(c.raw_slots.iter().copied())
            .collect();
        all.sort();
        all
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
        assert_eq!(slot_of(datetime!(1969-12-31 23:50 UTC)), -1);
        assert_eq!(slot_of(datetime!(1969-12-31 23:30 UTC)), -2);
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
        assert_eq!(checked_slot_start(slot_of(last) + 1), None);
        let first = datetime!(-9999-01-01 0:00 UTC);
        assert_eq!(checked_slot_ceil(first), Some(first));
        assert_eq!(checked_slot_start(slot_of(first) - 1), None);
        for h in [i64::MIN, i64::MAX] {
            assert_eq!(checked_slot_start(h), None);
            assert_eq!(slot_start(h), OffsetDateTime::UNIX_EPOCH, "no panic");
        }
        // 10000-01-01T00:59:59Z in UTC: no slot of it can be represented.
        let beyond = datetime!(9999-12-31 23:59:59 UTC).replace_offset(offset!(-1));
        assert_eq!(checked_slot_floor(beyond), None);
        assert_eq!(checked_slot_ceil(beyond), None);
    }

    #[test]
    fn blocks_at_the_ends_of_i64_are_checked_not_panics() {
        let top = Block::of(i64::MAX, MAX_LEVEL);
        assert_eq!(top.first_slot(), Some(i64::MAX >> MAX_LEVEL << MAX_LEVEL));
        assert_eq!(top.end_slot(), None);
        assert_eq!(Block::of(i64::MIN, 0).first_slot(), Some(i64::MIN));
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
        let c = cover(i64::MAX - 5, i64::MAX, &[i64::MAX - 2].into());
        assert_eq!(slots(&c), (i64::MAX - 5..i64::MAX).collect::<Vec<_>>());
        let c = cover(i64::MIN, i64::MIN + 5, &BTreeSet::new());
        assert_eq!(slots(&c), (i64::MIN..i64::MIN + 5).collect::<Vec<_>>());
    }

    #[test]
    fn a_cover_tiles_the_slots_exactly_with_few_blocks() {
        let none = BTreeSet::new();
        for (a, b) in [
            (0, 1),
            (5, 6),
            (3, 8643),
            (-100, 77),
            (1_972_000, 1_980_640),
        ] {
            let c = cover(a, b, &none);
            assert_eq!(slots(&c), (a..b).collect::<Vec<_>>(), "[{a}, {b})");
            assert!(c.raw_slots.is_empty());
            assert!(c.blocks.len() <= 2 * (MAX_LEVEL as usize + 1) + (b - a) as usize / 8192);
            for b in &c.blocks {
                assert!(b.level <= MAX_LEVEL);
            }
        }
        // 90 days: a couple of dozen blocks, not 8,640 slots.
        assert!(cover(1_972_000, 1_980_640, &none).blocks.len() <= 2 * (MAX_LEVEL as usize + 1));
    }

    #[test]
    fn dirty_slots_are_read_raw_and_no_block_holds_one() {
        let dirty: BTreeSet<i64> = [10, 11, 700, 2000].into();
        let c = cover(0, 2048, &dirty);
        assert_eq!(slots(&c), (0..2048).collect::<Vec<_>>());
        assert_eq!(c.raw_slots, vec![10, 11, 700, 2000]);
        for b in &c.blocks {
            assert!(
                dirty
                    .range(b.first_slot().unwrap()..b.end_slot().unwrap())
                    .next()
                    .is_none()
            );
        }
    }

    #[test]
    fn pending_lists_round_trip() {
        let full = ActivityRef {
            source: "facebook",
            funnel_stage: "bottom",
            event_type: "checkout.complete",
            user_id: "ü-1",
            user_key: Some(-7),
            country: Some("Brazil"),
            revenue: Some(Decimal::new(1999, 2)),
            demographics: [
                Some("34"),
                Some("female"),
                Some("São Paulo"),
                Some("1200"),
                None,
            ],
        };
        let bare = ActivityRef {
            user_key: None,
            country: None,
            revenue: None,
            demographics: [None; 5],
            ..full
        };
        let bytes = encode_activities([full, bare]);
        let mut out = Vec::new();
        decode_activities(&bytes, &mut out).unwrap();
        let seen: Vec<_> = out
            .iter()
            .map(|a| {
                (
                    a.user_id.as_str(),
                    a.user_key,
                    a.country.as_deref(),
                    a.revenue,
                    a.city.as_deref(),
                    a.device.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (
                    "ü-1",
                    Some(-7),
                    Some("Brazil"),
                    Some(Decimal::new(1999, 2)),
                    Some("São Paulo"),
                    None
                ),
                ("ü-1", None, None, None, None, None),
            ]
        );
        assert!(decode_activities(&bytes[..bytes.len() - 1], &mut Vec::new()).is_err());
        assert!(decode_activities(&[2], &mut Vec::new()).is_err());
    }

    #[test]
    fn totals_round_trip_and_add_up() {
        let mut a = BTreeMap::new();
        a.insert(
            3,
            UserTotals {
                events: 2,
                revenue: Decimal::new(14999, 2),
            },
        );
        a.insert(
            70_000,
            UserTotals {
                events: 5,
                revenue: Decimal::ZERO,
            },
        );
        let bytes = encode_totals(&a);
        let mut sum = BTreeMap::new();
        decode_totals(&bytes, &mut sum).unwrap();
        assert_eq!(sum, a);
        decode_totals(&bytes, &mut sum).unwrap();
        assert_eq!(sum[&3].events, 4);
        assert_eq!(sum[&3].revenue, Decimal::new(29998, 2));
        assert!(decode_totals(&bytes[..bytes.len() - 1], &mut sum).is_err());
    }

    #[test]
    fn buckets_follow_the_api() {
        assert_eq!(age_bucket("17"), Some("<18"));
        assert_eq!(age_bucket("18"), Some("18-24"));
        assert_eq!(age_bucket("64"), Some("55-64"));
        assert_eq!(age_bucket("65"), Some("65+"));
        assert_eq!(follower_bucket("999"), Some("<1k"));
        assert_eq!(follower_bucket("1000"), Some("1k-10k"));
        assert_eq!(follower_bucket("1000000"), Some("1M+"));
        assert_eq!(follower_bucket("x"), None);
    }

    /// A Facebook top event of user 1 (key 1) in Berlin, with every demographic fact.
    fn berlin_viewer() -> Activity {
        Activity {
            source: "facebook".into(),
            funnel_stage: "top".into(),
            event_type: "ad.view".into(),
            user_id: "u".into(),
            user_key: Some(1),
            country: Some("Germany".into()),
            revenue: None,
            age: Some("30".into()),
            gender: Some("female".into()),
            city: Some("Berlin".into()),
            followers: None,
            device: None,
        }
    }

    #[test]
    fn profiles_encode_equal_exactly_when_they_are_equal() {
        let base = berlin_viewer();
        let encoded = |a: &Activity| {
            let mut out = Vec::new();
            Profile::of(a).encode(&mut out);
            out
        };
        // Another user, key, revenue and an age in the same bucket: the same sets.
        let same = Activity {
            user_id: "v".into(),
            user_key: Some(2),
            revenue: Some(Decimal::ONE),
            age: Some("34".into()),
            ..base.clone()
        };
        assert_eq!(encoded(&base), encoded(&same));
        let differs = [
            Activity {
                age: Some("35".into()),
                ..base.clone()
            },
            Activity {
                city: None,
                ..base.clone()
            },
            Activity {
                city: Some(String::new()),
                ..base.clone()
            },
            // The same characters split differently between two fields.
            Activity {
                country: Some("GermanyB".into()),
                age: None,
                gender: None,
                city: Some("erlin".into()),
                ..base.clone()
            },
            Activity {
                gender: None,
                ..base.clone()
            },
            Activity {
                device: Some("iOS".into()),
                ..base.clone()
            },
        ];
        for other in &differs {
            assert_ne!(encoded(&base), encoded(other), "{other:?}");
        }
    }

    #[test]
    fn a_tiktok_bottom_event_has_no_country_or_device_sets() {
        let a = Activity {
            source: "tiktok".into(),
            funnel_stage: "bottom".into(),
            event_type: "purchase".into(),
            user_id: "u".into(),
            user_key: Some(1),
            country: None,
            revenue: None,
            age: None,
            gender: None,
            city: None,
            followers: Some("5000".into()),
            device: Some("iOS".into()),
        };
        let mut keys = Vec::new();
        memberships(&a, |k| keys.push((k.dim, k.event_type, k.value)));
        assert_eq!(
            keys,
            vec![
                ("all", "", ""),
                ("all", "purchase", ""),
                ("followers", "", "1k-10k")
            ]
        );
    }

    #[test]
    fn only_the_dims_needing_demographics_change_without_them() {
        let full = berlin_viewer();
        let lean = Activity {
            age: None,
            gender: None,
            city: None,
            ..full.clone()
        };
        let keys = |a: &Activity, demographic: bool| {
            let mut keys = Vec::new();
            memberships(a, |k| {
                if needs_demographics(k.dim) == demographic {
                    keys.push(k.to_owned_key());
                }
            });
            keys
        };
        assert_eq!(keys(&full, false), keys(&lean, false));
        assert_eq!(
            keys(&full, false).len(),
            7,
            "5 country filter sets, 2 funnel sets"
        );
        assert_eq!(keys(&full, true).len(), 3, "age, gender, city");
        assert!(keys(&lean, true).is_empty());
    }
}
