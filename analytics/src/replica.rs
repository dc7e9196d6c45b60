//! How current the database the reports read is (`docs/operations.md`, "A read replica").
//!
//! A streaming standby answers every report exactly as its primary did at some earlier
//! moment: the reports are exact in every state of the database, and a standby's state is
//! one of its primary's past states. What a reader needs is that moment. A background task
//! asks the read database once a second and keeps the answer, from which come the
//! `Data-As-Of` header of every report, the `analytics_replica_lag_seconds` gauge and the
//! `replica` readiness check.
//!
//! Replay only moves forward, so an observation stays true for every later report: a
//! report started after an observation sees at least what the observation promised.

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use deadpool_postgres::Pool;
use service_kit::health::Check;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::watch;

/// The response header giving [`Observation::as_of`].
pub const DATA_AS_OF: &str = "data-as-of";

/// How often the read database is asked.
const POLL: Duration = Duration::from_secs(1);

/// One answer of the read database.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Observation {
    /// Not asked yet, or the database did not answer the last time.
    Unreachable,
    /// The primary: every report sees everything committed before it started.
    Primary,
    /// A standby whose data holds everything its primary committed before `as_of`.
    Standby {
        as_of: OffsetDateTime,
        lag: Duration,
    },
    /// A standby that neither streams from its primary nor has replayed a transaction
    /// since it started: how far behind it is cannot be known.
    StandbyUnknown,
}

impl Observation {
    /// What a report started now can promise: complete up to this instant. `None` when
    /// nothing can be promised.
    pub fn as_of(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        match self {
            Observation::Primary => Some(now),
            Observation::Standby { as_of, .. } => Some(*as_of),
            Observation::Unreachable | Observation::StandbyUnknown => None,
        }
    }

    /// The readiness check `replica`: fails when a standby is more than `max_lag` behind
    /// (`None`: no limit) or its lag is unknown.
    pub fn check(&self, max_lag: Option<Duration>) -> Check {
        const NAME: &str = "replica";
        match self {
            Observation::Primary => Check::ok(NAME),
            Observation::Standby { lag, .. } => match max_lag {
                Some(max) if *lag > max => Check::failed(
                    NAME,
                    format!(
                        "the standby replays {:.1} s behind its primary (limit {} s, \
                         ANALYTICS_MAX_REPLICA_LAG)",
                        lag.as_secs_f64(),
                        max.as_secs_f64()
                    ),
                ),
                _ => Check::ok(NAME),
            },
            Observation::StandbyUnknown => Check::failed(
                NAME,
                "the standby is not streaming from its primary and has replayed nothing \
                 since it started: how far behind it is is unknown",
            ),
            Observation::Unreachable => {
                Check::failed(NAME, "unknown while the database is unreachable")
            }
        }
    }

    /// The gauge's value: 0 on the primary, infinite when unknown.
    fn lag_seconds(&self) -> f64 {
        match self {
            Observation::Primary => 0.0,
            Observation::Standby { lag, .. } => lag.as_secs_f64(),
            Observation::Unreachable | Observation::StandbyUnknown => f64::INFINITY,
        }
    }
}

/// What the read database says of itself, in one statement. A standby that has applied
/// everything it received while a WAL receiver runs is current (what is still on the wire
/// is a network round trip); otherwise its data ends at the last transaction it replayed.
/// The functions and `pg_stat_wal_receiver`'s row need no privilege (a reader sees the
/// row, without its details).
const OBSERVE: &str = "SELECT now(), pg_is_in_recovery(), \
    EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE pid IS NOT NULL), \
    pg_last_wal_receive_lsn() IS NOT NULL \
      AND pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn(), \
    pg_last_xact_replay_timestamp()";

/// The facts [`OBSERVE`] returns, judged.
fn judge(
    now: OffsetDateTime,
    standby: bool,
    receiving: bool,
    replayed_all: bool,
    last_replayed: Option<OffsetDateTime>,
) -> Observation {
    if !standby {
        return Observation::Primary;
    }
    let as_of = if receiving && replayed_all {
        Some(now)
    } else {
        last_replayed
    };
    match as_of {
        Some(as_of) => Observation::Standby {
            as_of,
            // A replayed commit stamped after the standby's now (clocks apart) is no lag.
            lag: (now - as_of).try_into().unwrap_or(Duration::ZERO),
        },
        None => Observation::StandbyUnknown,
    }
}

async fn observe(pool: &Pool) -> Observation {
    let answer = tokio::time::timeout(POLL * 2, async {
        let client = pool.get().await.ok()?;
        let row = client.query_one(OBSERVE, &[]).await.ok()?;
        Some(judge(
            row.get(0),
            row.get(1),
            row.get(2),
            row.get(3),
            row.get(4),
        ))
    })
    .await;
    answer.ok().flatten().unwrap_or(Observation::Unreachable)
}

/// Asks the read database once a second, for as long as the service runs; the receiver
/// always holds the latest answer.
pub fn spawn_observer(pool: Pool) -> (watch::Receiver<Observation>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(Observation::Unreachable);
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(POLL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let seen = observe(&pool).await;
            metrics::gauge!("analytics_replica_lag_seconds").set(seen.lag_seconds());
            tx.send_replace(seen);
        }
    });
    (rx, task)
}

/// Middleware of the reports: a successful answer carries `Data-As-Of`, what the latest
/// observation before the report started promises (absent when it promises nothing).
pub async fn stamp(
    State(seen): State<watch::Receiver<Observation>>,
    request: Request,
    next: Next,
) -> Response {
    let as_of = seen.borrow().as_of(OffsetDateTime::now_utc());
    let mut response = next.run(request).await;
    if response.status().is_success()
        && let Some(value) = as_of
            .map(crate::routes::timestamp)
            .and_then(|t| HeaderValue::from_str(&t).ok())
    {
        response.headers_mut().insert(DATA_AS_OF, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-03-01 12:00:00 UTC);

    #[test]
    fn a_primary_is_current_and_always_ready() {
        let seen = judge(NOW, false, false, false, None);
        assert_eq!(seen, Observation::Primary);
        assert_eq!(seen.as_of(NOW), Some(NOW));
        assert!(seen.check(Some(Duration::from_secs(1))).ready);
        assert_eq!(seen.lag_seconds(), 0.0);
    }

    #[test]
    fn a_standby_that_replayed_all_it_received_while_streaming_is_current() {
        let seen = judge(NOW, true, true, true, Some(NOW - Duration::from_secs(3600)));
        assert_eq!(
            seen,
            Observation::Standby {
                as_of: NOW,
                lag: Duration::ZERO
            }
        );
    }

    #[test]
    fn a_standby_behind_holds_its_last_replayed_commit_and_fails_past_the_limit() {
        let replayed = NOW - Duration::from_millis(42_500);
        for receiving in [true, false] {
            let seen = judge(NOW, true, receiving, false, Some(replayed));
            assert_eq!(seen.as_of(NOW), Some(replayed));
            assert_eq!(seen.lag_seconds(), 42.5);
            let check = seen.check(Some(Duration::from_secs(30)));
            assert!(!check.ready);
            assert_eq!(
                check.reason.as_deref(),
                Some(
                    "the standby replays 42.5 s behind its primary (limit 30 s, \
                     ANALYTICS_MAX_REPLICA_LAG)"
                )
            );
            assert!(seen.check(Some(Duration::from_secs(60))).ready);
            assert!(seen.check(None).ready, "no limit");
        }
    }

    #[test]
    fn a_disconnected_standby_is_current_only_to_its_last_replayed_commit() {
        // Replay caught up with what was received, but nothing is being received.
        let replayed = NOW - Duration::from_secs(5);
        let seen = judge(NOW, true, false, true, Some(replayed));
        assert_eq!(seen.as_of(NOW), Some(replayed));
    }

    #[test]
    fn a_standby_whose_lag_cannot_be_known_promises_nothing_and_is_not_ready() {
        let seen = judge(NOW, true, false, false, None);
        assert_eq!(seen, Observation::StandbyUnknown);
        assert_eq!(seen.as_of(NOW), None);
        assert!(!seen.check(None).ready);
        assert_eq!(seen.lag_seconds(), f64::INFINITY);
        assert!(!Observation::Unreachable.check(None).ready);
    }

    #[test]
    fn a_commit_stamped_ahead_of_the_standby_clock_is_no_lag() {
        let seen = judge(NOW, true, false, false, Some(NOW + Duration::from_secs(2)));
        assert_eq!(seen.lag_seconds(), 0.0);
    }
}
