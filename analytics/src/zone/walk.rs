//! Walking a range bucket by bucket: the first bucket holds `from`, each next one starts
//! where the local clock (or the offset) says, until `to`.

use super::{Buckets, Lookup, Refusal, Zone, clock_floor, day_start, pieces, rollups};
use service_kit::schema::Grain;
use time::{Duration, OffsetDateTime, UtcOffset};

/// The buckets of `interval` in `zone` over `[from, to)`, at most `max` of them, and the
/// rollup pieces that sum into them. Refused ([`Refusal`]) when there are more, when a
/// bucket's local time is outside the years RFC 3339 writes, when the database has no
/// offsets that late, or when an offset in the range is not a whole number of minutes.
pub fn buckets(
    zone: &Zone,
    from: OffsetDateTime,
    to: OffsetDateTime,
    interval: Grain,
    max: usize,
) -> Result<Buckets, Refusal> {
    let grains = rollups(interval);
    let Some(last) = to.checked_sub(Duration::NANOSECOND).filter(|_| from < to) else {
        return Ok(Buckets {
            starts: Vec::new(),
            pieces: Default::default(),
        });
    };
    let failed = |source| Refusal::Lookup {
        zone: zone.name.clone(),
        source,
    };
    // The last instant's local time bounds every bucket's but the first's, which the walk
    // checks.
    let offset = zone.offset_at(last).map_err(failed)?;
    if last
        .checked_to_offset(offset)
        .is_none_or(|local| local.year() > 9999)
    {
        return Err(Refusal::AfterYear9999 {
            zone: zone.name.clone(),
        });
    }
    let starts = walk(zone, from, to, interval, max)?;
    if let Some(&first) = starts.first() {
        whole_minutes(zone, first, to)?;
    }
    let pieces = pieces(&starts, from, to, grains);
    Ok(Buckets { starts, pieces })
}

fn walk(
    zone: &Zone,
    from: OffsetDateTime,
    to: OffsetDateTime,
    interval: Grain,
    max: usize,
) -> Result<Vec<OffsetDateTime>, Refusal> {
    let failed = |source| Refusal::Lookup {
        zone: zone.name.clone(),
        source,
    };
    let after_9999 = || Refusal::AfterYear9999 {
        zone: zone.name.clone(),
    };
    let mut starts: Vec<OffsetDateTime> = Vec::new();
    let mut next = Some(
        first(zone, from, interval)
            .map_err(failed)?
            .ok_or_else(after_9999)?,
    );
    while let Some(start) = next.filter(|s| *s < to) {
        if starts.len() == max {
            return Err(Refusal::TooMany {
                interval: name(interval),
                zone: zone.name.clone(),
                max,
                spans: local_count(zone, from, to, interval),
                exact: zone.fixed.is_some(),
            });
        }
        let offset = zone.offset_at(start).map_err(failed)?;
        match start.checked_to_offset(offset) {
            Some(local) if local.year() < 0 => {
                return Err(Refusal::BeforeYear0 {
                    zone: zone.name.clone(),
                });
            }
            Some(local) if local.year() <= 9999 => starts.push(local),
            _ => return Err(after_9999()),
        }
        // `None`: the next start is past the instants `time` represents, so past `to`.
        next = following(zone, start, interval).map_err(failed)?;
    }
    Ok(starts)
}

/// The start of the bucket holding `from`.
fn first(
    zone: &Zone,
    from: OffsetDateTime,
    interval: Grain,
) -> Result<Option<OffsetDateTime>, Lookup> {
    let offset = zone.offset_at(from)?;
    if interval != Grain::Day {
        let Some(floor) = clock_floor(from, offset, interval) else {
            return Ok(None);
        };
        // An offset that changed since the clock's hour began starts the bucket.
        return Ok(Some(zone.last_change(from, floor)?.unwrap_or(floor)));
    }
    let Some(date) = from.checked_to_offset(offset).map(|l| l.date()) else {
        return Ok(None);
    };
    // No instant more than 26 hours (the largest offset) before midnight in UTC has
    // reached that midnight in local time.
    let Some(anchor) = date
        .midnight()
        .assume_utc()
        .checked_sub(Duration::hours(26))
    else {
        return Ok(None);
    };
    let Some(mut start) = day_start(zone, date, anchor)? else {
        return Ok(None);
    };
    // A fall-back across midnight could let the next day begin before `from`.
    while let Some(next) = following(zone, start, Grain::Day)?.filter(|n| *n <= from) {
        start = next;
    }
    Ok(Some(start))
}

/// The start of the bucket after the one starting at `start`; `None` past the instants
/// `time` represents.
fn following(
    zone: &Zone,
    start: OffsetDateTime,
    interval: Grain,
) -> Result<Option<OffsetDateTime>, Lookup> {
    let offset = zone.offset_at(start)?;
    if interval == Grain::Day {
        let Some(date) = start
            .checked_to_offset(offset)
            .and_then(|l| l.date().next_day())
        else {
            return Ok(None);
        };
        return day_start(zone, date, start);
    }
    let boundary =
        clock_floor(start, offset, interval).and_then(|f| f.checked_add(interval.length()));
    let until = boundary.unwrap_or(crate::range::LATEST);
    Ok(zone.next_change(start, until)?.or(boundary))
}

/// Refuses a range in which the zone's offset is not a whole number of minutes.
fn whole_minutes(zone: &Zone, first: OffsetDateTime, to: OffsetDateTime) -> Result<(), Refusal> {
    let failed = |source| Refusal::Lookup {
        zone: zone.name.clone(),
        source,
    };
    let mut at = first;
    loop {
        let offset = zone.offset_at(at).map_err(failed)?;
        if offset.seconds_past_minute() != 0 {
            return Err(Refusal::OddOffset {
                zone: zone.name.clone(),
                offset,
                at: crate::routes::timestamp(at),
            });
        }
        match zone.next_change(at, to).map_err(failed)? {
            Some(change) if change < to => at = change,
            _ => return Ok(()),
        }
    }
}

/// How many `interval` buckets the range spans by the local calendar and clock.
fn local_count(
    zone: &Zone,
    from: OffsetDateTime,
    to: OffsetDateTime,
    interval: Grain,
) -> Option<i64> {
    let civil = |t: OffsetDateTime| {
        let offset = zone.offset_at(t).ok()?;
        Some(t.checked_to_offset(offset)?.replace_offset(UtcOffset::UTC))
    };
    let first = interval.checked_floor(civil(from)?)?;
    let last = interval.checked_floor(civil(to.checked_sub(Duration::NANOSECOND)?)?)?;
    ((last - first).whole_seconds() / interval.length().whole_seconds()).checked_add(1)
}

/// The interval's name in the API.
pub(super) fn name(interval: Grain) -> &'static str {
    match interval {
        Grain::Minute => "minute",
        Grain::Hour => "hour",
        Grain::Day => "day",
    }
}
