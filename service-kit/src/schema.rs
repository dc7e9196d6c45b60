//! The schema's numbered migrations (`sql/NNNN_name.sql`), embedded in the binaries.
//! The worker applies them; every service can tell whether the database is current.

/// One numbered migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order. A test checks this list against the files in `sql/`.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "events",
        sql: include_str!("../../sql/0001_events.sql"),
    },
    Migration {
        version: 2,
        name: "rollups",
        sql: include_str!("../../sql/0002_rollups.sql"),
    },
    Migration {
        version: 3,
        name: "user_sets",
        sql: include_str!("../../sql/0003_user_sets.sql"),
    },
    Migration {
        version: 4,
        name: "series",
        sql: include_str!("../../sql/0004_series.sql"),
    },
    Migration {
        version: 5,
        name: "series_index",
        sql: include_str!("../../sql/0005_series_index.sql"),
    },
    Migration {
        version: 6,
        name: "event_user_keys",
        sql: include_str!("../../sql/0006_event_user_keys.sql"),
    },
    Migration {
        version: 7,
        name: "set_counts",
        sql: include_str!("../../sql/0007_set_counts.sql"),
    },
    Migration {
        version: 8,
        name: "drop_rollup_geo",
        sql: include_str!("../../sql/0008_drop_rollup_geo.sql"),
    },
    Migration {
        version: 9,
        name: "dirty_generations",
        sql: include_str!("../../sql/0009_dirty_generations.sql"),
    },
    Migration {
        version: 10,
        name: "pending_batches",
        sql: include_str!("../../sql/0010_pending_batches.sql"),
    },
    Migration {
        version: 11,
        name: "roles",
        sql: include_str!("../../sql/0011_roles.sql"),
    },
    Migration {
        version: 12,
        name: "partitioned_events",
        sql: include_str!("../../sql/0012_partitioned_events.sql"),
    },
];

/// The version a current database has.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// The version applied to the database; 0 when no migration ever ran.
pub async fn applied_version(
    client: &tokio_postgres::Client,
) -> Result<i32, tokio_postgres::Error> {
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// The width of a rollup bucket (`grain` column: `'m'`, `'h'`, `'d'`). The worker files
/// events under it and analytics reads by it, so both use this one definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Grain {
    Minute,
    Hour,
    Day,
}

impl Grain {
    /// The `grain` column's value (PostgreSQL `"char"`).
    pub fn code(self) -> i8 {
        (match self {
            Grain::Minute => b'm',
            Grain::Hour => b'h',
            Grain::Day => b'd',
        }) as i8
    }

    pub fn length(self) -> time::Duration {
        match self {
            Grain::Minute => time::Duration::MINUTE,
            Grain::Hour => time::Duration::HOUR,
            Grain::Day => time::Duration::DAY,
        }
    }

    /// The UTC-aligned start of the bucket holding `t` (what `date_trunc(.., 'UTC')` gives),
    /// in UTC; `None` when that start is outside `time`'s range (years −9999 to 9999 in UTC),
    /// which only an instant whose own UTC form is outside it can give.
    pub fn checked_floor(self, t: time::OffsetDateTime) -> Option<time::OffsetDateTime> {
        // Unix time has no leap seconds, so whole multiples of the length are UTC-aligned.
        let length = self.length().whole_seconds();
        let start = t.unix_timestamp().div_euclid(length).checked_mul(length)?;
        time::OffsetDateTime::from_unix_timestamp(start).ok()
    }

    /// [`Grain::checked_floor`] for an instant known to be in range, such as a stored
    /// event's time (the worker accepts only years 2000 on). An instant whose bucket is
    /// outside `time`'s range comes back unchanged rather than panicking.
    pub fn floor(self, t: time::OffsetDateTime) -> time::OffsetDateTime {
        self.checked_floor(t).unwrap_or(t)
    }

    /// The first bucket start at or after `t`, in UTC; `None` when it is after the last
    /// instant `time` can represent (9999-12-31T23:59:59.999999999Z).
    pub fn checked_ceil(self, t: time::OffsetDateTime) -> Option<time::OffsetDateTime> {
        let floor = self.checked_floor(t)?;
        if floor == t {
            Some(floor)
        } else {
            floor.checked_add(self.length())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_utc_aligned_whatever_the_offset() {
        use time::macros::datetime;
        let t = datetime!(2026-03-01 01:30:45.5 +02:00);
        assert_eq!(Grain::Minute.floor(t), datetime!(2026-02-28 23:30:00 UTC));
        assert_eq!(Grain::Hour.floor(t), datetime!(2026-02-28 23:00:00 UTC));
        assert_eq!(Grain::Day.floor(t), datetime!(2026-02-28 00:00:00 UTC));
        assert_eq!(
            Grain::Hour.checked_ceil(t),
            Some(datetime!(2026-03-01 00:00:00 UTC))
        );
        let aligned = datetime!(2026-03-01 00:00 UTC);
        assert_eq!(Grain::Day.checked_ceil(aligned), Some(aligned));
        assert_eq!(
            Grain::Hour.floor(datetime!(1969-12-31 23:59:59 UTC)),
            datetime!(1969-12-31 23:00 UTC)
        );
    }

    #[test]
    fn buckets_at_the_ends_of_time_are_checked_not_panics() {
        use time::macros::{datetime, offset};
        let last = datetime!(9999-12-31 23:59:59.999_999_999 UTC);
        let first = datetime!(-9999-01-01 0:00 UTC);
        for grain in [Grain::Minute, Grain::Hour, Grain::Day] {
            // The last bucket starts in range; the one after it does not.
            assert!(grain.checked_floor(last).is_some_and(|f| f <= last));
            assert_eq!(grain.checked_ceil(last), None, "{grain:?}");
            assert_eq!(grain.checked_floor(first), Some(first));
            assert_eq!(grain.checked_ceil(first), Some(first));
        }
        assert_eq!(
            Grain::Day.checked_ceil(datetime!(9999-12-30 12:00 UTC)),
            Some(datetime!(9999-12-31 0:00 UTC))
        );
        // 10000-01-01T00:59:59Z in UTC: its bucket cannot be represented.
        let beyond = datetime!(9999-12-31 23:59:59 UTC).replace_offset(offset!(-1));
        for grain in [Grain::Minute, Grain::Hour, Grain::Day] {
            assert_eq!(grain.checked_floor(beyond), None, "{grain:?}");
            assert_eq!(grain.checked_ceil(beyond), None, "{grain:?}");
            assert_eq!(grain.floor(beyond), beyond, "no panic");
        }
        // -9999-01-01T00:00 at +01:00 is the day before time's first one, in UTC.
        let before = first.replace_offset(offset!(+1));
        assert_eq!(Grain::Day.checked_floor(before), None);
    }

    #[test]
    fn every_sql_file_is_listed_once_in_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".sql"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        let listed: Vec<String> = MIGRATIONS
            .iter()
            .map(|m| format!("{:04}_{}.sql", m.version, m.name))
            .collect();
        assert_eq!(files, listed);
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1, "versions are 1, 2, 3, ...");
        }
    }
}
