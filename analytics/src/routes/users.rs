//! `GET /analytics/users/top`: the most active or most valuable users.
//!
//! Summed per user from the raw table over the range (exact; the per-user rollup that
//! keeps this fast at scale is the next step).

use super::{AppState, Pairs, money, query};
use crate::params::Params;
use axum::Json;
use axum::extract::State;
use rust_decimal::Decimal;
use serde::Serialize;
use service_kit::error::ApiError;
use utoipa::ToSchema;

/// The query parameters this report accepts.
pub const PARAMS: &[&str] = &["from", "to", "source", "limit", "by"];

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

fn sql(order: &str) -> String {
    format!(
        "\
SELECT source, user_id, count(*)::bigint AS events, coalesce(sum(revenue), 0) AS revenue
FROM events
WHERE event_time >= $1 AND event_time < $2 AND ($3::text IS NULL OR source = $3)
GROUP BY 1, 2
ORDER BY {order} DESC, source ASC, user_id ASC
LIMIT $4"
    )
}

/// The most active or most valuable users.
#[utoipa::path(
    get,
    path = "/analytics/users/top",
    tag = "reports",
    params(
        crate::api_doc::RangeQuery,
        crate::api_doc::SourceQuery,
        crate::api_doc::LimitQuery,
        crate::api_doc::UserOrderQuery,
    ),
    responses(
        (status = 200, description = "The top users", body = TopUsers),
        crate::api_doc::ReportErrors,
    ),
    security((), ("bearer" = [])),
)]
pub async fn top(State(app): State<AppState>, pairs: Pairs) -> Result<Json<TopUsers>, ApiError> {
    let mut p = Params::new(pairs.0, PARAMS);
    let (from, to) = p.range();
    let source = p.source();
    let limit = p.limit();
    let by = p.choice("by", &["events", "revenue"], "events");
    p.finish()?;

    let sql = sql(if by == "revenue" { "revenue" } else { "events" });
    let rows = query(&app.pool, "users_top", &sql, &[&from, &to, &source, &limit]).await?;
    let users = rows
        .iter()
        .map(|r| User {
            source: r.get::<_, String>(0),
            user_id: r.get::<_, String>(1),
            events: r.get::<_, i64>(2),
            revenue: money(r.get::<_, Option<Decimal>>(3)),
        })
        .collect();
    Ok(Json(TopUsers { users }))
}
