//! The daily partitions of `events` and their retention (`sql/0012_partitioned_events.sql`).
//!
//! At start-up, before the worker consumes, then every [`INTERVAL`], one worker at a time (the SQL functions take a lock): create the
//! partitions of the days from the retention horizon (or [`DAYS_BEHIND`] ago, without
//! retention) to [`DAYS_AHEAD`] from now, so that an event of those days never lands in
//! the default partition; then, with `EVENTS_RETENTION_DAYS`, drop the days before the
//! horizon. The functions run as the schema's owner (SECURITY DEFINER), so the worker's
//! role still cannot create or drop a table itself.

use std::time::Duration;
use time::{OffsetDateTime, Time};
use tokio::sync::watch;

/// Days after today whose partitions exist ahead of need.
pub const DAYS_AHEAD: i64 = 3;
/// Days before today whose partitions exist when there is no retention (late events of
/// the past week land in their day; older ones in the default partition).
pub const DAYS_BEHIND: i64 = 7;
/// Most days one call prepares (one transaction, a few locks per partition).
const CHUNK_DAYS: i64 = 31;
/// Time between maintenance passes.
pub const INTERVAL: Duration = Duration::from_secs(600);
/// Time before a failed pass is tried again.
pub const RETRY: Duration = Duration::from_secs(30);

/// Failed passes.
pub const ERRORS: &str = "worker_partition_maintenance_errors_total";
/// The oldest event time kept (Unix seconds), once retention has dropped anything.
pub const HORIZON: &str = "worker_events_retention_horizon_timestamp_seconds";

/// How long raw events are kept (`EVENTS_RETENTION_DAYS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub days: u32,
}

impl Retention {
    /// The oldest instant kept at `now`: the UTC midnight `days` days before today's.
    /// Events before it are refused, and their days dropped.
    pub fn horizon(self, now: OffsetDateTime) -> OffsetDateTime {
        now.to_offset(time::UtcOffset::UTC)
            .replace_time(Time::MIDNIGHT)
            .saturating_sub(time::Duration::days(i64::from(self.days)))
    }
}

/// A pass failed.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    #[error("no database connection")]
    Pool(#[source] deadpool_postgres::PoolError),
    #[error("partition maintenance failed")]
    Database(#[from] tokio_postgres::Error),
}

/// The days `[first, last]` whose partitions a pass makes sure of, at `now`.
pub fn window(now: OffsetDateTime, retention: Option<Retention>) -> (time::Date, time::Date) {
    let today = now.to_offset(time::UtcOffset::UTC).date();
    let behind = retention.map_or(DAYS_BEHIND, |r| i64::from(r.days));
    let first = today
        .checked_sub(time::Duration::days(behind))
        .unwrap_or(time::Date::MIN);
    let last = today
        .checked_add(time::Duration::days(DAYS_AHEAD))
        .unwrap_or(time::Date::MAX);
    (first, last)
}

/// One pass: prepare the window's partitions, then apply the retention. Returns how many
/// partitions it created and the horizon applied.
pub async fn maintain(
    pool: &deadpool_postgres::Pool,
    retention: Option<Retention>,
    now: OffsetDateTime,
) -> Result<(i32, Option<OffsetDateTime>), MaintenanceError> {
    let client = pool.get().await.map_err(MaintenanceError::Pool)?;
    let (first, last) = window(now, retention);
    let mut created = 0;
    let mut from = first;
    while from <= last {
        let to = from
            .checked_add(time::Duration::days(CHUNK_DAYS - 1))
            .map_or(last, |d| d.min(last));
        let row = client
            .query_one("SELECT prepare_event_partitions($1, $2)", &[&from, &to])
            .await?;
        created += row.get::<_, i32>(0);
        match to.next_day() {
            Some(next) => from = next,
            None => break,
        }
    }
    let Some(retention) = retention else {
        return Ok((created, None));
    };
    let row = client
        .query_one(
            "SELECT apply_events_retention($1)",
            &[&retention.horizon(now)],
        )
        .await?;
    Ok((created, Some(row.get(0))))
}

/// One pass, logged and measured; whether it succeeded.
pub async fn pass(pool: &deadpool_postgres::Pool, retention: Option<Retention>) -> bool {
    match maintain(pool, retention, OffsetDateTime::now_utc()).await {
        Ok((created, horizon)) => {
            if created > 0 {
                tracing::info!(created, "Event partitions created");
            }
            if let Some(horizon) = horizon {
                metrics::gauge!(HORIZON).set(horizon.unix_timestamp() as f64);
            }
            true
        }
        Err(error) => {
            metrics::counter!(ERRORS).increment(1);
            tracing::warn!(
                error = format!("{:#}", anyhow::Error::from(error)),
                "Partition maintenance failed; retrying later"
            );
            false
        }
    }
}

/// Passes until `stop`: every [`INTERVAL`], or [`RETRY`] after a failed one. The
/// caller runs the first pass before the worker consumes.
pub async fn run(
    pool: deadpool_postgres::Pool,
    retention: Option<Retention>,
    mut last_succeeded: bool,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let pause = if last_succeeded { INTERVAL } else { RETRY };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        last_succeeded = pass(&pool, retention).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    #[test]
    fn the_horizon_is_the_utc_midnight_so_many_days_before_today() {
        let r = Retention { days: 30 };
        assert_eq!(
            r.horizon(datetime!(2026-12-05 23:59:59 +05:00)),
            datetime!(2026-11-05 0:00 UTC)
        );
        assert_eq!(
            r.horizon(datetime!(2026-12-05 0:00 UTC)),
            datetime!(2026-11-05 0:00 UTC)
        );
        assert_eq!(
            Retention { days: 0 }.horizon(datetime!(2026-12-05 13:10 UTC)),
            datetime!(2026-12-05 0:00 UTC)
        );
    }

    #[test]
    fn the_window_reaches_back_to_the_horizon_or_a_week_and_three_days_ahead() {
        let now = datetime!(2026-12-05 13:10 UTC);
        assert_eq!(
            window(now, None),
            (date!(2026 - 11 - 28), date!(2026 - 12 - 08))
        );
        assert_eq!(
            window(now, Some(Retention { days: 90 })),
            (date!(2026 - 09 - 06), date!(2026 - 12 - 08))
        );
    }
}
