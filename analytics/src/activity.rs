//! Per-user activity for the reports (`user_sets::read` computes it): a connection, one
//! read-only REPEATABLE READ snapshot per report (so a block, the entries listed for it
//! and the dirty marks are seen together), the query timed, and the sets' errors as API
//! errors.

use crate::params::unrepresentable_range;
use crate::routes::{database_error, unavailable};
use axum::http::StatusCode;
use deadpool_postgres::{Pool, Transaction};
use service_kit::error::ApiError;
use shared_events::Source;
use std::time::Instant;
use time::OffsetDateTime;
use tokio_postgres::IsolationLevel;
use user_sets::read;
pub use user_sets::read::{RankedUser, Selector, Sets};

/// A connection with a read-only snapshot open, timed as the report's query.
async fn snapshot<'c>(
    client: &'c mut deadpool_postgres::Object,
    report: &'static str,
) -> Result<Transaction<'c>, ApiError> {
    client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| database_error(report, e))
}

async fn connection(
    pool: &Pool,
    report: &'static str,
) -> Result<deadpool_postgres::Object, ApiError> {
    pool.get().await.map_err(|e| {
        tracing::warn!(error = %e, report, "No database connection");
        unavailable()
    })
}

/// A 500 for stored data a report cannot use (undecodable, or sums past their types),
/// logged with `detail`.
pub(crate) fn corrupt(report: &'static str, detail: impl std::fmt::Display) -> ApiError {
    tracing::error!(report, detail = %detail, "Unreadable per-user activity");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "the report could not be computed",
    )
}

/// The API error for a failed read of the sets.
fn read_error(report: &'static str, e: user_sets::Error) -> ApiError {
    match e {
        user_sets::Error::Database(e) => database_error(report, e),
        user_sets::Error::Unrepresentable => unrepresentable_range(),
        // The whole chain: "unreadable per-user activity: truncated".
        e => corrupt(report, service_kit::error::error_text(&e)),
    }
}

fn record(report: &'static str, started: Instant) {
    metrics::histogram!("analytics_query_duration_seconds", "report" => report)
        .record(started.elapsed().as_secs_f64());
}

/// The users of every selected set over `[from, to)`.
pub async fn sets(
    pool: &Pool,
    report: &'static str,
    from: OffsetDateTime,
    to: OffsetDateTime,
    selector: &Selector<'_>,
) -> Result<Sets, ApiError> {
    let mut all = sets_of(pool, report, from, to, std::slice::from_ref(selector)).await?;
    Ok(all.pop().unwrap_or_default())
}

/// The sets of each selector over `[from, to)`, all from one snapshot (so figures taken
/// from different selections agree with each other), the raw rows read once.
pub async fn sets_of(
    pool: &Pool,
    report: &'static str,
    from: OffsetDateTime,
    to: OffsetDateTime,
    selectors: &[Selector<'_>],
) -> Result<Vec<Sets>, ApiError> {
    let started = Instant::now();
    let mut client = connection(pool, report).await?;
    let tx = snapshot(&mut client, report).await?;
    let sets = read::sets_of(&tx, from, to, selectors)
        .await
        .map_err(|e| read_error(report, e))?;
    tx.commit().await.map_err(|e| database_error(report, e))?;
    record(report, started);
    Ok(sets)
}

/// The `limit` users of `sources` with the most events (`by_revenue`: the most revenue)
/// over `[from, to)`, ties by source then userId.
pub async fn top_users(
    pool: &Pool,
    report: &'static str,
    from: OffsetDateTime,
    to: OffsetDateTime,
    sources: &[Source],
    by_revenue: bool,
    limit: usize,
) -> Result<Vec<RankedUser>, ApiError> {
    let started = Instant::now();
    let mut client = connection(pool, report).await?;
    let tx = snapshot(&mut client, report).await?;
    let users = read::top_users(&tx, from, to, sources, by_revenue, limit)
        .await
        .map_err(|e| read_error(report, e))?;
    tx.commit().await.map_err(|e| database_error(report, e))?;
    record(report, started);
    Ok(users)
}
