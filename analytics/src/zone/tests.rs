#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::range::{EARLIEST, LATEST};
use time::macros::datetime;

const MAX: usize = 10_000;

fn zone(name: &str) -> Zone {
    Zone::get(name).unwrap()
}

fn starts(name: &str, from: OffsetDateTime, to: OffsetDateTime, interval: Grain) -> Vec<String> {
    let b = buckets(&zone(name), from, to, interval, MAX).unwrap();
    b.starts().iter().map(|s| rfc3339(*s)).collect()
}

/// Hours between consecutive day starts.
fn day_lengths(name: &str, from: OffsetDateTime, to: OffsetDateTime) -> Vec<i64> {
    let b = buckets(&zone(name), from, to, Grain::Day, MAX).unwrap();
    b.starts()
        .windows(2)
        .map(|w| (w[1] - w[0]).whole_hours())
        .collect()
}

#[test]
fn dst_days_hold_23_and_25_hours() {
    // Berlin: 2026-03-29 and 2026-10-25; New York: 2026-03-08 and 2026-11-01.
    let cases = [
        ("Europe/Berlin", datetime!(2026-03-28 12:00 UTC), 23),
        ("Europe/Berlin", datetime!(2026-10-24 12:00 UTC), 25),
        ("America/New_York", datetime!(2026-03-07 12:00 UTC), 23),
        ("America/New_York", datetime!(2026-10-31 12:00 UTC), 25),
    ];
    for (name, from, dst) in cases {
        let lengths = day_lengths(name, from, from + Duration::days(3));
        assert_eq!(lengths, [24, dst, 24], "{name} {from}");
    }
    assert_eq!(
        starts(
            "Europe/Berlin",
            datetime!(2026-03-28 12:00 UTC),
            datetime!(2026-03-30 12:00 UTC),
            Grain::Day
        ),
        [
            "2026-03-28T00:00:00+01:00",
            "2026-03-29T00:00:00+01:00",
            "2026-03-30T00:00:00+02:00"
        ]
    );
}

#[test]
fn the_repeated_hour_is_two_buckets_and_the_skipped_one_none() {
    let fall = starts(
        "Europe/Berlin",
        datetime!(2026-10-24 23:30 UTC),
        datetime!(2026-10-25 02:30 UTC),
        Grain::Hour,
    );
    assert_eq!(
        fall,
        [
            "2026-10-25T01:00:00+02:00",
            "2026-10-25T02:00:00+02:00",
            "2026-10-25T02:00:00+01:00",
            "2026-10-25T03:00:00+01:00"
        ]
    );
    let spring = starts(
        "America/New_York",
        datetime!(2026-03-08 06:00 UTC),
        datetime!(2026-03-08 08:00 UTC),
        Grain::Hour,
    );
    assert_eq!(
        spring,
        ["2026-03-08T01:00:00-05:00", "2026-03-08T03:00:00-04:00"]
    );
    // A local day of 25 hours has 25 hour buckets.
    let b = buckets(
        &zone("Europe/Berlin"),
        datetime!(2026-10-24 22:00 UTC),
        datetime!(2026-10-25 23:00 UTC),
        Grain::Hour,
        MAX,
    )
    .unwrap();
    assert_eq!(b.starts().len(), 25);
}

#[test]
fn kolkata_days_start_at_18_30_utc_and_kathmandu_hours_at_a_quarter_past() {
    let b = buckets(
        &zone("Asia/Kolkata"),
        datetime!(2026-03-01 00:00 UTC),
        datetime!(2026-03-02 00:00 UTC),
        Grain::Day,
        MAX,
    )
    .unwrap();
    assert_eq!(
        b.starts(),
        [
            datetime!(2026-02-28 18:30 UTC),
            datetime!(2026-03-01 18:30 UTC)
        ]
    );
    assert_eq!(rfc3339(b.starts()[0]), "2026-03-01T00:00:00+05:30");
    let hours = starts(
        "Asia/Kathmandu",
        datetime!(2026-03-01 10:00 UTC),
        datetime!(2026-03-01 11:00 UTC),
        Grain::Hour,
    );
    assert_eq!(
        hours,
        ["2026-03-01T15:00:00+05:45", "2026-03-01T16:00:00+05:45"]
    );
}

#[test]
fn a_half_hour_dst_change_starts_a_bucket_at_the_change() {
    // Lord Howe falls back from +11:00 to +10:30 at 02:00 local (15:00Z): the hour 01:00
    // at +11:00, then 01:30 to 02:00 at +10:30, then whole hours again.
    let hours = starts(
        "Australia/Lord_Howe",
        datetime!(2026-04-04 14:00 UTC),
        datetime!(2026-04-04 16:00 UTC),
        Grain::Hour,
    );
    assert_eq!(
        hours,
        [
            "2026-04-05T01:00:00+11:00",
            "2026-04-05T01:30:00+10:30",
            "2026-04-05T02:00:00+10:30"
        ]
    );
}

#[test]
fn the_first_bucket_holds_from_and_the_last_the_instant_before_to() {
    let zones = [
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "Asia/Kolkata",
        "Asia/Kathmandu",
        "Australia/Lord_Howe",
        "Pacific/Chatham",
    ];
    let ranges = [
        (
            datetime!(2026-03-29 00:59:59.5 UTC),
            datetime!(2026-03-29 01:00:00.5 UTC),
        ),
        (
            datetime!(2026-10-25 00:30 UTC),
            datetime!(2026-10-26 00:00 UTC),
        ),
        (
            datetime!(2026-03-01 10:30:15.5 UTC),
            datetime!(2026-04-03 04:20:30 UTC),
        ),
        (
            datetime!(2026-11-01 05:00 UTC),
            datetime!(2026-11-01 07:00 UTC),
        ),
    ];
    for name in zones {
        for (from, to) in ranges {
            for interval in [Grain::Minute, Grain::Hour, Grain::Day] {
                let b = buckets(&zone(name), from, to, interval, 100_000).unwrap();
                let s = b.starts();
                assert!(s[0] <= from, "{name} {from} {interval:?}");
                assert_eq!(b.index(from), Some(0), "{name} {from} {interval:?}");
                let last = to - Duration::NANOSECOND;
                assert_eq!(b.index(last), Some(s.len() - 1), "{name} {to} {interval:?}");
                assert!(s.windows(2).all(|w| w[0] < w[1]));
            }
        }
    }
}

#[test]
fn pieces_never_straddle_a_bucket_and_tile_the_range() {
    let cases = [
        ("UTC", Grain::Day),
        ("Europe/Berlin", Grain::Day),
        ("Europe/Berlin", Grain::Hour),
        ("Asia/Kolkata", Grain::Day),
        ("Asia/Kolkata", Grain::Hour),
        ("Asia/Kathmandu", Grain::Minute),
        ("America/New_York", Grain::Day),
    ];
    let (from, to) = (
        datetime!(2026-02-27 10:30:15.5 UTC),
        datetime!(2026-04-03 4:20:30 UTC),
    );
    for (name, interval) in cases {
        let b = buckets(&zone(name), from, to, interval, 100_000).unwrap();
        let mut total = Duration::ZERO;
        for &(grain, start, end) in &b.pieces().buckets {
            let length = length_of(grain);
            assert!(from <= start && end <= to && start < end, "{name}");
            total += end - start;
            // Every rollup bucket of the piece lies inside one of ours.
            let mut t = start;
            while t < end {
                let last = t + length - Duration::NANOSECOND;
                assert_eq!(b.index(t), b.index(last), "{name} {interval:?} {t}");
                t += length;
            }
        }
        for &(start, end) in &b.pieces().raw {
            assert_eq!(
                b.index(start),
                b.index(end - Duration::NANOSECOND),
                "{name}"
            );
            total += end - start;
        }
        assert_eq!(total, to - from, "{name} {interval:?}");
    }
}

#[test]
fn the_rollups_read_are_the_coarsest_the_boundaries_allow() {
    let grains = |name: &str, interval, from, to| {
        let b = buckets(&zone(name), from, to, interval, MAX).unwrap();
        let mut codes: Vec<u8> = b.pieces().buckets.iter().map(|p| p.0 as u8).collect();
        codes.dedup();
        (String::from_utf8(codes).unwrap(), b.pieces().buckets.len())
    };
    let (from, to) = (
        datetime!(2026-01-05 0:00 UTC),
        datetime!(2026-02-05 0:00 UTC),
    );
    // UTC and London in winter: days; Berlin: one range of hours (its days run from
    // 23:00Z to 23:00Z); Kolkata: the 23 whole UTC hours of each day and the half hours around
    // 18:30Z in minutes.
    assert_eq!(grains("UTC", Grain::Day, from, to), ("d".into(), 1));
    assert_eq!(
        grains("Europe/London", Grain::Day, from, to),
        ("d".into(), 1)
    );
    assert_eq!(
        grains("Europe/Berlin", Grain::Day, from, to),
        ("h".into(), 1)
    );
    assert_eq!(grains("Asia/Kolkata", Grain::Day, from, to).0, "hm");
    assert!(grains("Asia/Kolkata", Grain::Day, from, to).1 > 60);
    // Kolkata's hours are minutes of one range.
    assert_eq!(
        grains("Asia/Kolkata", Grain::Hour, from, to),
        ("m".into(), 1)
    );
    // London over its spring change: days until it, hours after.
    let (from, to) = (
        datetime!(2026-03-20 0:00 UTC),
        datetime!(2026-04-05 0:00 UTC),
    );
    assert_eq!(grains("Europe/London", Grain::Day, from, to).0, "dh");
}

#[test]
fn names_are_the_databases_and_unknown_ones_are_refused() {
    assert_eq!(zone("europe/berlin").name(), "Europe/Berlin");
    assert_eq!(zone("utc").name(), "UTC");
    assert_eq!(Zone::utc().name(), "UTC");
    for bad in ["Mars/Olympus", "Etc/Unknown", "+05:30", "CET-1CEST", ""] {
        let e = Zone::get(bad).unwrap_err();
        assert!(e.to_string().contains("unknown time zone"), "{bad}: {e}");
    }
}

#[test]
fn local_mean_time_is_refused_naming_tz() {
    // Dublin Mean Time (-00:25:21) until 1916, Liberia's -00:44:30 until 1972.
    for (name, from) in [
        ("Europe/Dublin", datetime!(1910-06-01 0:00 UTC)),
        ("Africa/Monrovia", datetime!(1971-06-01 0:00 UTC)),
    ] {
        for interval in [Grain::Minute, Grain::Hour, Grain::Day] {
            let e =
                buckets(&zone(name), from, from + Duration::days(2), interval, MAX).unwrap_err();
            assert_eq!(e.field(), "tz", "{name}");
            assert!(e.to_string().contains("local mean time"), "{e}");
        }
    }
    // Liberia from 1972 on is in whole minutes.
    let from = datetime!(1972-06-01 0:00 UTC);
    let b = buckets(
        &zone("Africa/Monrovia"),
        from,
        from + Duration::days(2),
        Grain::Day,
        MAX,
    );
    assert_eq!(b.unwrap().starts().len(), 2);
}

#[test]
fn too_many_buckets_are_counted_without_walking_them_all() {
    let e = buckets(&Zone::utc(), EARLIEST, LATEST, Grain::Day, MAX).unwrap_err();
    assert_eq!(e.field(), "interval");
    // Every day of years 0 to 9999, exactly, at a fixed offset.
    assert!(
        e.to_string()
            .starts_with("the range holds 3652425 day buckets;"),
        "{e}"
    );
    let e = buckets(&Zone::utc(), EARLIEST, LATEST, Grain::Minute, MAX).unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("holds {} minute", 3_652_425_i64 * 1440)),
        "{e}"
    );
    // In a zone with DST the calendar's count is approximate, and said so.
    let (from, to) = (
        datetime!(2020-01-01 0:00 UTC),
        datetime!(2026-01-01 0:00 UTC),
    );
    let e = buckets(&zone("Europe/Berlin"), from, to, Grain::Hour, MAX).unwrap_err();
    assert!(
        e.to_string()
            .contains("more than 10000 hour buckets in Europe/Berlin (about"),
        "{e}"
    );
    // Exactly MAX fit.
    let to = datetime!(2020-01-01 0:00 UTC) + Duration::hours(10_000);
    assert_eq!(
        buckets(&Zone::utc(), from, to, Grain::Hour, MAX)
            .unwrap()
            .starts()
            .len(),
        MAX
    );
}

#[test]
fn the_ends_of_time_are_answered_in_utc_and_refused_where_local_time_leaves_rfc_3339() {
    let last_day = datetime!(9999-12-31 0:00 UTC);
    let b = buckets(&Zone::utc(), last_day, LATEST, Grain::Hour, MAX).unwrap();
    assert_eq!(b.starts().len(), 24);
    let b = buckets(&Zone::utc(), last_day, LATEST, Grain::Day, MAX).unwrap();
    assert_eq!(b.starts(), [last_day]);
    // At +05:30 the last hours of 9999 in UTC are year 10000.
    let e = buckets(&zone("Asia/Kolkata"), last_day, LATEST, Grain::Day, MAX).unwrap_err();
    assert_eq!(e.field(), "to");
    // New York's last local day ends in UTC after the database's last instant.
    let e = buckets(&zone("America/New_York"), last_day, LATEST, Grain::Day, MAX).unwrap_err();
    assert_eq!(e.field(), "to", "{e}");
    assert!(e.to_string().contains("9999-12-30T22:00:00Z"), "{e}");
    // West of UTC the first instants are year -1 locally (and local mean time).
    let e = buckets(
        &zone("America/New_York"),
        EARLIEST,
        datetime!(0000-01-02 0:00 UTC),
        Grain::Day,
        MAX,
    )
    .unwrap_err();
    assert_eq!(e.field(), "from", "{e}");
}

#[test]
fn buckets_are_written_with_their_own_offset() {
    assert_eq!(
        rfc3339(datetime!(2026-03-01 12:00 UTC)),
        "2026-03-01T12:00:00Z"
    );
    let s = starts(
        "America/New_York",
        datetime!(2026-11-01 03:00 UTC),
        datetime!(2026-11-02 06:00 UTC),
        Grain::Day,
    );
    assert_eq!(
        s,
        [
            "2026-10-31T00:00:00-04:00",
            "2026-11-01T00:00:00-04:00",
            "2026-11-02T00:00:00-05:00"
        ]
    );
}
