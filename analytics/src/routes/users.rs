//! `GET /analytics/users/top`: the most active or most valuable users.
//!
//! Summed per user from the raw table over the range (exact; the per-user rollup that
//! keeps this fast at scale is the next step).

use super::{AppState, Pairs, money, query};
use crate::params::Params;
use axum::Json;
use axum::extract::State;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use service_kit::error::ApiError;

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

pub async fn top(State(app): State<AppState>, pairs: Pairs) -> Result<Json<Value>, ApiError> {
    let mut p = Params::new(pairs.0, &["from", "to", "source", "limit", "by"]);
    let (from, to) = p.range();
    let source = p.source();
    let limit = p.limit();
    let by = p.choice("by", &["events", "revenue"], "events");
    p.finish()?;

    let sql = sql(if by == "revenue" { "revenue" } else { "events" });
    let rows = query(&app.pool, "users_top", &sql, &[&from, &to, &source, &limit]).await?;
    let users: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "source": r.get::<_, String>(0),
                "userId": r.get::<_, String>(1),
                "events": r.get::<_, i64>(2),
                "revenue": money(r.get::<_, Option<Decimal>>(3)),
            })
        })
        .collect();
    Ok(Json(json!({"users": users})))
}
