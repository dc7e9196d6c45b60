//! Running the compactor (`compact.rs`) for the worker's lifetime, so that it never stops
//! silently: a failed pass is counted and retried at the next tick, and a panic restarts
//! the loop with backoff. `worker_compactor_last_success_timestamp_seconds` says when a
//! pass last compacted everything it found; the `CompactionLagging` alert watches it
//! (reports stay exact meanwhile, reading uncompacted slots raw, only slower).

use crate::compact::{OPEN_FOLD_AFTER, ROUND_SLOTS, round};
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;

/// Failed passes and restarts after a panic.
pub const ERRORS: &str = "worker_compactor_errors_total";
/// Unix time of the end of the last pass that compacted every slot it found due.
pub const LAST_SUCCESS: &str = "worker_compactor_last_success_timestamp_seconds";

/// The longest pause before a panicked compactor is started again.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Runs `start()` (the compaction loop) until it returns, which it does once `stop` is
/// set. A panic is logged and counted, and the loop starts again after a backoff that
/// doubles up to [`MAX_BACKOFF`].
pub async fn supervise<F, Fut>(mut start: F, mut stop: watch::Receiver<bool>)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut backoff = Duration::from_secs(1);
    loop {
        match tokio::spawn(start()).await {
            Err(error) if error.is_panic() => {
                metrics::counter!(ERRORS).increment(1);
                tracing::error!(%error, restart_in = ?backoff, "Compactor panicked; restarting it");
            }
            // Returned because `stop` was set, or cancelled at shutdown.
            _ => return,
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Compacts every `interval` until `stop`; publishes `worker_user_sets_dirty_slots` (slots
/// not complete until compacted), counts `worker_user_sets_compacted_slots_total`, and
/// records each pass's success or failure.
pub async fn run(
    pool: deadpool_postgres::Pool,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let mut client = match pool.get().await {
            Ok(client) => client,
            Err(error) => {
                metrics::counter!(ERRORS).increment(1);
                tracing::debug!(%error, "Compactor: no database connection");
                continue;
            }
        };
        if pass(&mut client, &stop).await {
            let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as f64 / 1e9;
            metrics::gauge!(LAST_SUCCESS).set(now);
        } else {
            metrics::counter!(ERRORS).increment(1);
        }
        if let Ok(row) = client
            .query_one("SELECT count(*) FROM user_sets_dirty", &[])
            .await
        {
            metrics::gauge!("worker_user_sets_dirty_slots").set(row.get::<_, i64>(0) as f64);
        }
    }
}

/// Rounds until no full round is left (or `stop`); whether every round succeeded.
async fn pass(client: &mut tokio_postgres::Client, stop: &watch::Receiver<bool>) -> bool {
    loop {
        match round(client, ROUND_SLOTS, OPEN_FOLD_AFTER).await {
            Ok(slots) => {
                metrics::counter!("worker_user_sets_compacted_slots_total")
                    .increment(slots.len() as u64);
                if let (Some(first), Some(last)) = (slots.first(), slots.last()) {
                    tracing::debug!(
                        slots = slots.len(),
                        first = %first.start(),
                        last = %last.start(),
                        "Per-user sets compacted"
                    );
                }
                if (slots.len() as i64) < ROUND_SLOTS || *stop.borrow() {
                    return true;
                }
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "Compaction round failed; retrying later"
                );
                return false;
            }
        }
    }
}
