//! `GET /analytics/geo`: events, distinct users and revenue by country.
//!
//! Distinct users are counted from the raw table over the range (exact; the per-user
//! rollup that keeps this fast at scale is the next step).

use super::{AppState, Pairs, money, query};
use crate::params::Params;
use axum::Json;
use axum::extract::State;
use rust_decimal::Decimal;
use serde::Serialize;
use service_kit::error::ApiError;
use utoipa::ToSchema;

/// The query parameters this report accepts.
pub const PARAMS: &[&str] = &["from", "to", "source", "funnelStage", "eventType", "limit"];

/// Events, distinct users and revenue by country.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Geo {
    /// By events descending, then country; at most `limit`.
    pub countries: Vec<Country>,
    /// Events without a country (TikTok bottom events).
    pub unknown_country_events: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Country {
    #[schema(example = "Germany")]
    pub country: String,
    pub events: i64,
    /// Distinct users (source, userId).
    pub users: i64,
    /// A decimal string with two places.
    #[schema(example = "149.99")]
    pub revenue: String,
}

const SQL: &str = "\
SELECT country, count(*)::bigint AS events, count(DISTINCT (source, user_id))::bigint, sum(revenue)
FROM events
WHERE event_time >= $1 AND event_time < $2
  AND ($3::text IS NULL OR source = $3) AND ($4::text IS NULL OR funnel_stage = $4)
  AND ($5::text IS NULL OR event_type = $5)
GROUP BY country";

/// Events, distinct users and revenue by country.
#[utoipa::path(
    get,
    path = "/analytics/geo",
    tag = "reports",
    params(
        crate::api_doc::RangeQuery,
        crate::api_doc::SourceQuery,
        crate::api_doc::StageTypeQuery,
        crate::api_doc::LimitQuery,
    ),
    responses(
        (status = 200, description = "Countries by events", body = Geo),
        crate::api_doc::ReportErrors,
    ),
    security((), ("bearer" = [])),
)]
pub async fn geo(State(app): State<AppState>, pairs: Pairs) -> Result<Json<Geo>, ApiError> {
    let mut p = Params::new(pairs.0, PARAMS);
    let (from, to) = p.range();
    let f = p.filters();
    let limit = p.limit() as usize;
    p.finish()?;

    let rows = query(
        &app.pool,
        "geo",
        SQL,
        &[&from, &to, &f.source, &f.funnel_stage, &f.event_type],
    )
    .await?;
    let mut unknown = 0i64;
    let mut countries: Vec<(String, i64, i64, Option<Decimal>)> = Vec::with_capacity(rows.len());
    for r in &rows {
        match r.get::<_, Option<String>>(0) {
            Some(country) => countries.push((country, r.get(1), r.get(2), r.get(3))),
            None => unknown += r.get::<_, i64>(1),
        }
    }
    countries.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    countries.truncate(limit);
    Ok(Json(Geo {
        countries: countries
            .into_iter()
            .map(|(country, events, users, revenue)| Country {
                country,
                events,
                users,
                revenue: money(revenue),
            })
            .collect(),
        unknown_country_events: unknown,
    }))
}
