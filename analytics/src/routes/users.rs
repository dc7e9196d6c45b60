//! `GET /analytics/users/top`: the most active or most valuable users.
//!
//! Summed per user from the per-user totals of the blocks covering the range plus the
//! raw edges (`crate::activity`).

use super::{AppState, Pairs, money};
use crate::activity;
use crate::format::{Accept, Report};
use crate::params::Params;
use axum::extract::State;
use serde::Serialize;
use service_kit::error::ApiError;
use shared_events::Source;
use utoipa::ToSchema;

/// The query parameters this report accepts.
pub const PARAMS: &[&str] = &["from", "to", "source", "limit", "by", "format"];

/// The top users.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopUsers {
    /// By the `by` figure descending, then source and userId; at most `limit`.
    pub users: Vec<User>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    #[schema(example = "facebook")]
    pub source: String,
    #[schema(example = "fb-u-1042")]
    pub user_id: String,
    pub events: i64,
    #[schema(example = "149.99")]
    pub revenue: String,
}

/// The most active or most valuable users.
#[utoipa::path(
    get,
    operation_id = "topUsers",
    path = "/analytics/users/top",
    tag = "reports",
    params(
        crate::api_doc::RangeQuery,
        crate::api_doc::SourceQuery,
        crate::api_doc::LimitQuery,
        crate::api_doc::UserOrderQuery,
        crate::api_doc::FormatQuery,
    ),
    responses(
        (
            status = 200,
            description = "The top users: JSON, or CSV when asked (`format`)",
            content((TopUsers = "application/json"), (String = "text/csv")),
            headers(("Data-As-Of" = String, description = "Every event stored before this instant is in the answer (RFC 3339 UTC): the request's time when reading the primary, earlier from a standby that lags; absent when unknown"), ("Content-Disposition" = String, description = "CSV only: `attachment; filename=\"users-top.csv\"`")),
        ),
        crate::api_doc::ReportErrors,
    ),
    security((), ("bearer" = [])),
)]
pub async fn top(
    State(app): State<AppState>,
    accept: Accept,
    pairs: Pairs,
) -> Result<Report<TopUsers>, ApiError> {
    let mut p = Params::new(pairs.0, PARAMS);
    let format = p.format(accept);
    let (from, to) = p.range();
    let source = p.source();
    let limit = p.limit();
    let by = p.choice("by", &["events", "revenue"], "events");
    p.finish()?;

    let sources: Vec<Source> = Source::ALL
        .into_iter()
        .filter(|s| source.is_none_or(|x| x == s.as_str()))
        .collect();
    let ranked = activity::top_users(
        &app.pool,
        "users_top",
        from,
        to,
        &sources,
        by == "revenue",
        limit as usize,
    )
    .await?;
    let users = ranked
        .into_iter()
        .map(|u| User {
            source: u.source.as_str().to_owned(),
            user_id: u.user_id,
            events: u.events as i64,
            revenue: money(Some(u.revenue)),
        })
        .collect();
    Ok(Report::new(format, TopUsers { users }))
}
