//! Splitting a half-open time range into whole rollup buckets and raw edges.
//!
//! `[from, to)` is covered by the coarsest whole buckets that fit (days, then hours,
//! then minutes, as far as a report's rollup has them) and the leftover partial buckets
//! at both ends, which are read from the raw `events` table. Every instant of the range
//! is in exactly one piece, so sums over the pieces are exact for any `from` and `to`.

pub use service_kit::schema::Grain;
use time::OffsetDateTime;
use time::macros::datetime;

/// The earliest `from` or `to` a report accepts: the first instant RFC 3339 can write in
/// UTC. Answers give their range back in UTC, so a range must be writable there.
pub const EARLIEST: OffsetDateTime = datetime!(0000-01-01 0:00 UTC);

/// The latest `from` or `to` a report accepts: the last instant RFC 3339 can write in UTC
/// (also the last one `time` represents).
pub const LATEST: OffsetDateTime = datetime!(9999-12-31 23:59:59.999_999_999 UTC);

/// Whether `t` is within [`EARLIEST`, `LATEST`].
pub fn representable(t: OffsetDateTime) -> bool {
    (EARLIEST..=LATEST).contains(&t)
}

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

    /// How many branches [`Pieces::union_all`] would write.
    pub fn count(&self) -> usize {
        self.buckets.len() + self.raw.len()
    }

    /// [`Pieces::union_all`] for more pieces than a query should list: one branch per
    /// grain, and one for the raw edges, each joining its ranges as two arrays of bounds
    /// `LATERAL`, so every range is still its own index range scan and the statement
    /// stays the same size. The arrays become parameters numbered from `first`, lower
    /// bounds then upper bounds per branch; they are returned in that order.
    pub fn lateral(
        &self,
        rollup: &str,
        raw: &str,
        first: usize,
    ) -> (String, Vec<Vec<OffsetDateTime>>) {
        let mut ranges: Vec<(Option<i8>, Vec<OffsetDateTime>, Vec<OffsetDateTime>)> = Vec::new();
        let pieces = self.buckets.iter().map(|&(g, lo, hi)| (Some(g), lo, hi));
        for (grain, lo, hi) in pieces.chain(self.raw.iter().map(|&(lo, hi)| (None, lo, hi))) {
            match ranges.iter_mut().find(|r| r.0 == grain) {
                Some(r) => {
                    r.1.push(lo);
                    r.2.push(hi);
                }
                None => ranges.push((grain, vec![lo], vec![hi])),
            }
        }
        let mut branches = Vec::new();
        let mut arrays = Vec::new();
        for (grain, los, his) in ranges {
            let select = match grain {
                Some(g) => rollup.replace("{grain}", &format!("'{}'", g as u8 as char)),
                None => raw.to_owned(),
            };
            let (lo, hi) = (first + arrays.len(), first + arrays.len() + 1);
            branches.push(format!(
                "SELECT p.* FROM unnest(${lo}::timestamptz[], ${hi}::timestamptz[]) AS s(lo, hi) \
                 CROSS JOIN LATERAL ({}) AS p",
                select.replace("{lo}", "s.lo").replace("{hi}", "s.hi")
            ));
            arrays.push(los);
            arrays.push(his);
        }
        (branches.join("\nUNION ALL\n"), arrays)
    }
}

/// Covers `[from, to)` with whole buckets of `grains` (coarsest first) and raw edges. A
/// bucket whose bounds `time` cannot represent (past 9999-12-31 in UTC) is left to the
/// finer grains and the raw edges, so the pieces tile any range.
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
    match (grain.checked_ceil(from), grain.checked_floor(to)) {
        (Some(start), Some(end)) if start < end => {
            out.buckets.push((grain.code(), start, end));
            cover(from, start, finer, out);
            cover(end, to, finer, out);
        }
        _ => cover(from, to, finer, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

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
            // The ends of the accepted ranges: the buckets after the last cannot be
            // represented, nor the hour before the first at +01:00.
            (EARLIEST, LATEST),
            (datetime!(9999-12-31 23:59:30 UTC), LATEST),
            (
                datetime!(9999-12-31 12:00 UTC),
                datetime!(9999-12-31 13:00 UTC),
            ),
            (
                datetime!(0001-01-01 0:00 +01:00),
                datetime!(9999-12-31 23:59:59 +01:00),
            ),
            (EARLIEST, datetime!(0000-01-01 0:00:00.000_001 UTC)),
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

    #[test]
    fn the_last_instants_are_covered_by_finer_buckets_and_a_raw_edge() {
        let from = datetime!(9999-12-31 22:59:30 UTC);
        let p = split(from, LATEST, ALL);
        // No day or hour starts in it and ends in range: minutes, then raw edges.
        assert_eq!(
            p.buckets,
            vec![(
                b'm' as i8,
                datetime!(9999-12-31 23:00 UTC),
                datetime!(9999-12-31 23:59 UTC)
            )]
        );
        assert_eq!(
            p.raw,
            vec![
                (from, datetime!(9999-12-31 23:00 UTC)),
                (datetime!(9999-12-31 23:59 UTC), LATEST)
            ]
        );
    }

    #[test]
    fn lateral_has_one_branch_per_grain_and_its_bounds_in_arrays() {
        let p = Pieces {
            buckets: vec![
                (
                    b'h' as i8,
                    datetime!(2026-03-01 0:00 UTC),
                    datetime!(2026-03-01 18:00 UTC),
                ),
                (
                    b'm' as i8,
                    datetime!(2026-03-01 18:00 UTC),
                    datetime!(2026-03-01 19:00 UTC),
                ),
                (
                    b'h' as i8,
                    datetime!(2026-03-01 19:00 UTC),
                    datetime!(2026-03-02 18:00 UTC),
                ),
            ],
            raw: vec![(
                datetime!(2026-03-02 18:00 UTC),
                datetime!(2026-03-02 18:00:30 UTC),
            )],
        };
        let (sql, arrays) = p.lateral(
            "SELECT bucket FROM r WHERE grain = {grain} AND bucket >= {lo} AND bucket < {hi}",
            "SELECT {lo} FROM events WHERE t >= {lo} AND t < {hi}",
            3,
        );
        let branches: Vec<&str> = sql.split("\nUNION ALL\n").collect();
        assert_eq!(branches.len(), 3);
        assert!(branches[0].contains("unnest($3::timestamptz[], $4::timestamptz[])"));
        assert!(branches[0].contains("grain = 'h' AND bucket >= s.lo AND bucket < s.hi"));
        assert!(branches[1].contains("unnest($5::timestamptz[], $6::timestamptz[])"));
        assert!(branches[1].contains("grain = 'm'"));
        assert!(branches[2].contains("SELECT s.lo FROM events WHERE t >= s.lo AND t < s.hi"));
        assert_eq!(
            arrays,
            vec![
                vec![
                    datetime!(2026-03-01 0:00 UTC),
                    datetime!(2026-03-01 19:00 UTC)
                ],
                vec![
                    datetime!(2026-03-01 18:00 UTC),
                    datetime!(2026-03-02 18:00 UTC)
                ],
                vec![datetime!(2026-03-01 18:00 UTC)],
                vec![datetime!(2026-03-01 19:00 UTC)],
                vec![datetime!(2026-03-02 18:00 UTC)],
                vec![datetime!(2026-03-02 18:00:30 UTC)],
            ]
        );
        assert_eq!(p.count(), 4);
    }

    #[test]
    fn only_instants_writable_in_utc_are_representable() {
        use time::macros::offset;
        assert!(representable(EARLIEST) && representable(LATEST));
        assert!(!representable(EARLIEST - Duration::NANOSECOND));
        assert!(!representable(
            datetime!(0000-01-01 0:00 UTC).replace_offset(offset!(+1))
        ));
        assert!(!representable(
            datetime!(9999-12-31 23:59:59 UTC).replace_offset(offset!(-1))
        ));
        assert!(representable(
            datetime!(0001-01-01 0:00 UTC).replace_offset(offset!(+1))
        ));
    }
}
