//! Splitting a half-open time range into whole rollup buckets and raw edges.
//!
//! `[from, to)` is covered by the coarsest whole buckets that fit (days, then hours,
//! then minutes, as far as a report's rollup has them) and the leftover partial buckets
//! at both ends, which are read from the raw `events` table. Every instant of the range
//! is in exactly one piece, so sums over the pieces are exact for any `from` and `to`.

pub use service_kit::schema::Grain;
use time::OffsetDateTime;

/// The pieces of a range: whole buckets per grain, and raw edges.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pieces {
    /// `(grain code, start, end)`: every bucket of that grain with start in `[start, end)`.
    pub buckets: Vec<(i8, OffsetDateTime, OffsetDateTime)>,
    /// `[start, end)` ranges to read from the raw table.
    pub raw: Vec<(OffsetDateTime, OffsetDateTime)>,
}

impl Pieces {
    /// A `UNION ALL` with one simple range scan per piece, so each uses its index (an
    /// `unnest` join gave the planner no estimate and it scanned whole tables).
    /// `rollup` selects from a rollup table with `{grain}`, `{lo}` and `{hi}` in its
    /// `WHERE`; `raw` selects from `events` with `{lo}` and `{hi}`. Bounds become
    /// parameters numbered from `first`; they are returned in that order.
    pub fn union_all(
        &self,
        rollup: &str,
        raw: &str,
        first: usize,
    ) -> (String, Vec<OffsetDateTime>) {
        let mut branches = Vec::new();
        let mut bounds = Vec::new();
        let param = |t: OffsetDateTime, bounds: &mut Vec<OffsetDateTime>| {
            bounds.push(t);
            format!("${}::timestamptz", first + bounds.len() - 1)
        };
        for &(grain, lo, hi) in &self.buckets {
            let (lo, hi) = (param(lo, &mut bounds), param(hi, &mut bounds));
            let grain = format!("'{}'", grain as u8 as char);
            branches.push(
                rollup
                    .replace("{grain}", &grain)
                    .replace("{lo}", &lo)
                    .replace("{hi}", &hi),
            );
        }
        for &(lo, hi) in &self.raw {
            let (lo, hi) = (param(lo, &mut bounds), param(hi, &mut bounds));
            branches.push(raw.replace("{lo}", &lo).replace("{hi}", &hi));
        }
        (branches.join("\nUNION ALL\n"), bounds)
    }
}

/// Covers `[from, to)` with whole buckets of `grains` (coarsest first) and raw edges.
pub fn split(from: OffsetDateTime, to: OffsetDateTime, grains: &[Grain]) -> Pieces {
    let mut pieces = Pieces::default();
    cover(from, to, grains, &mut pieces);
    pieces
}

fn cover(from: OffsetDateTime, to: OffsetDateTime, grains: &[Grain], out: &mut Pieces) {
    if from >= to {
        return;
    }
    let Some((&grain, finer)) = grains.split_first() else {
        out.raw.push((from, to));
        return;
    };
    let (start, end) = (grain.ceil(from), grain.floor(to));
    if start < end {
        out.buckets.push((grain.code(), start, end));
        cover(from, start, finer, out);
        cover(end, to, finer, out);
    } else {
        cover(from, to, finer, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;
    use time::macros::datetime;

    const ALL: &[Grain] = &[Grain::Day, Grain::Hour, Grain::Minute];

    #[test]
    fn an_aligned_range_of_days_is_only_day_buckets() {
        let p = split(
            datetime!(2026-03-01 0:00 UTC),
            datetime!(2026-03-31 0:00 UTC),
            ALL,
        );
        assert_eq!(
            p.buckets,
            vec![(
                b'd' as i8,
                datetime!(2026-03-01 0:00 UTC),
                datetime!(2026-03-31 0:00 UTC)
            )]
        );
        assert!(p.raw.is_empty());
    }

    #[test]
    fn ragged_edges_go_down_to_minutes_then_raw() {
        let from = datetime!(2026-03-01 10:30:15.5 UTC);
        let to = datetime!(2026-03-03 04:20:30 UTC);
        let p = split(from, to, ALL);
        let d = |g: u8, a, b| (g as i8, a, b);
        assert_eq!(
            p.buckets,
            vec![
                d(
                    b'd',
                    datetime!(2026-03-02 0:00 UTC),
                    datetime!(2026-03-03 0:00 UTC)
                ),
                d(
                    b'h',
                    datetime!(2026-03-01 11:00 UTC),
                    datetime!(2026-03-02 0:00 UTC)
                ),
                d(
                    b'm',
                    datetime!(2026-03-01 10:31 UTC),
                    datetime!(2026-03-01 11:00 UTC)
                ),
                d(
                    b'h',
                    datetime!(2026-03-03 0:00 UTC),
                    datetime!(2026-03-03 4:00 UTC)
                ),
                d(
                    b'm',
                    datetime!(2026-03-03 4:00 UTC),
                    datetime!(2026-03-03 4:20 UTC)
                ),
            ]
        );
        assert_eq!(
            p.raw,
            vec![
                (from, datetime!(2026-03-01 10:31 UTC)),
                (datetime!(2026-03-03 4:20 UTC), to),
            ]
        );
    }

    #[test]
    fn pieces_tile_the_range_exactly() {
        // Every piece is inside [from, to), and their lengths add up to the range.
        let cases = [
            (
                datetime!(2026-03-01 10:30:15 UTC),
                datetime!(2026-03-01 10:30:45 UTC),
            ),
            (
                datetime!(2026-02-27 23:59:59 UTC),
                datetime!(2026-03-02 0:00:01 UTC),
            ),
            (
                datetime!(2026-03-01 0:00 +05:30),
                datetime!(2026-06-01 0:00 UTC),
            ),
        ];
        for (from, to) in cases {
            for grains in [ALL, &[Grain::Hour, Grain::Day][..1], &[]] {
                let p = split(from, to, grains);
                let mut total = Duration::ZERO;
                for &(_, a, b) in &p.buckets {
                    assert!(from <= a && b <= to && a < b);
                    total += b - a;
                }
                for &(a, b) in &p.raw {
                    assert!(from <= a && b <= to && a < b);
                    total += b - a;
                }
                assert_eq!(total, to - from, "{from} {to} {grains:?}");
            }
        }
    }
}
