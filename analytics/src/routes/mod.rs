//! The reports of `docs/api.md`, one file each, and what they share.

pub mod campaigns;
pub mod demographics;
pub mod funnel;
pub mod geo;
pub mod revenue;
pub mod stats;
pub mod timeseries;
pub mod users;

use axum::http::StatusCode;
use deadpool_postgres::Pool;
use rust_decimal::Decimal;
use service_kit::error::ApiError;
use std::time::Instant;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// What every report handler needs.
#[derive(Debug, Clone)]
pub struct AppState {
    pub pool: Pool,
}

/// The raw query pairs of a request (`?a=1&b=2`), kept in order with repeats.
pub type Pairs = axum::extract::Query<Vec<(String, String)>>;

/// An instant as the API writes it: RFC 3339 in UTC (`2026-03-01T12:00:00Z`). Every
/// instant a report gives is within the accepted ranges (`crate::range::LATEST`), so
/// writable; one that is not would be written empty rather than panic.
pub fn timestamp(t: OffsetDateTime) -> String {
    t.checked_to_offset(UtcOffset::UTC)
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// Money as the API writes it: a decimal string with two places.
pub fn money(d: Option<Decimal>) -> String {
    shared_events::format_money(d.unwrap_or_default())
}

/// A ratio in 0..=1 (0 when the denominator is 0).
pub fn ratio(part: i64, whole: i64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Runs a report's query, timing it as `analytics_query_duration_seconds{report}`.
pub async fn query(
    pool: &Pool,
    report: &'static str,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, ApiError> {
    let started = Instant::now();
    let client = pool.get().await.map_err(|e| {
        tracing::warn!(error = %e, report, "No database connection");
        unavailable()
    })?;
    let statement = client
        .prepare_cached(sql)
        .await
        .map_err(|e| database_error(report, e))?;
    let rows = client
        .query(&statement, params)
        .await
        .map_err(|e| database_error(report, e))?;
    metrics::histogram!("analytics_query_duration_seconds", "report" => report)
        .record(started.elapsed().as_secs_f64());
    Ok(rows)
}

pub(crate) fn unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the database is not reachable; retry later",
    )
    .with_retry_after(1)
}

/// Runs a report's query with its own parameters followed by the bounds of
/// [`crate::range::Pieces::union_all`].
pub async fn query_pieces(
    pool: &Pool,
    report: &'static str,
    sql: &str,
    own: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    bounds: &[OffsetDateTime],
) -> Result<Vec<tokio_postgres::Row>, ApiError> {
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = own.to_vec();
    params.extend(
        bounds
            .iter()
            .map(|b| b as &(dyn tokio_postgres::types::ToSql + Sync)),
    );
    query(pool, report, sql, &params).await
}

/// Connection trouble, timeouts and, on a standby, a query cancelled by a conflict with
/// recovery (class 40) may pass (503); anything else is our bug (500).
pub(crate) fn database_error(report: &'static str, e: tokio_postgres::Error) -> ApiError {
    let code = e.code().map(|c| c.code().to_owned());
    tracing::error!(error = %e, report, sqlstate = ?code, "Report query failed");
    match code.as_deref().map(|c| &c[..2]) {
        None | Some("08") | Some("57") | Some("53") | Some("40") => unavailable(),
        _ => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the report could not be computed",
        ),
    }
}

/// Sorts `(name, figure)` rows by figure descending, then name ascending.
pub fn sort_desc<T, K: Ord, N: Ord + Clone>(
    rows: &mut [T],
    figure: impl Fn(&T) -> K,
    name: impl Fn(&T) -> N,
) {
    rows.sort_by(|a, b| {
        figure(b)
            .cmp(&figure(a))
            .then_with(|| name(a).cmp(&name(b)))
    });
}
