//! `GET /analytics/geo`: events, distinct users and revenue by country.
//!
//! Events and revenue come from `rollup_geo` (hours and days, raw edges); distinct users
//! from the per-user sets by country (`crate::activity`), stored for every combination of
//! the source / funnel stage / event type filters.

use super::{AppState, Pairs, money, query_pieces};
use crate::activity::{self, Selector};
use crate::params::{Filters, Params};
use crate::range::{Grain, split};
use axum::Json;
use axum::extract::State;
use roaring::RoaringBitmap;
use rust_decimal::Decimal;
use serde::Serialize;
use service_kit::error::ApiError;
use shared_events::{Source, stage_of};
use std::collections::HashMap;
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

const ROLLUP: &str = "SELECT country, events, revenue, source, funnel_stage, event_type \
    FROM rollup_geo WHERE grain = {grain} AND bucket >= {lo} AND bucket < {hi}";
const RAW: &str = "SELECT coalesce(country, ''), 1::bigint, revenue, source, funnel_stage, \
    event_type FROM events WHERE event_time >= {lo} AND event_time < {hi}";

/// Events and revenue by country ('' = none).
fn sql(parts: &str) -> String {
    format!(
        "SELECT country, sum(n)::bigint, sum(revenue) \
         FROM ({parts}) AS p(country, n, revenue, source, funnel_stage, event_type) \
         WHERE ($1::text IS NULL OR source = $1) AND ($2::text IS NULL OR funnel_stage = $2) \
           AND ($3::text IS NULL OR event_type = $3) \
         GROUP BY 1"
    )
}

/// The sets by country that hold exactly the users of events passing the filters: one
/// per source when an event type is given (its stage follows from the type), else the
/// set stored for that combination of filters ('' = any).
fn selector(f: &Filters) -> Selector<'_> {
    let (mut sources, mut stages, mut types) = (Vec::new(), Vec::new(), Vec::new());
    match f.event_type.as_deref() {
        Some(t) => {
            for s in Source::ALL {
                let Some(stage) = stage_of(s, t) else {
                    continue;
                };
                if f.source.is_some_and(|x| x != s.as_str())
                    || f.funnel_stage.is_some_and(|x| x != stage.as_str())
                {
                    continue;
                }
                sources.push(s.as_str());
                stages.push(stage.as_str());
                types.push(t);
            }
        }
        None => {
            sources.push(f.source.unwrap_or(""));
            stages.push(f.funnel_stage.unwrap_or(""));
            types.push("");
        }
    }
    // Every stored (source, stage, type) combination is consistent (a type has one stage
    // per source), so the cross product of these lists selects only the wanted sets.
    Selector {
        dims: vec!["country"],
        sources,
        stages,
        types,
    }
}

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

    let pieces = split(from, to, &[Grain::Day, Grain::Hour]);
    let (parts, bounds) = pieces.union_all(ROLLUP, RAW, 4);
    let rows = query_pieces(
        &app.pool,
        "geo",
        &sql(&parts),
        &[&f.source, &f.funnel_stage, &f.event_type],
        &bounds,
    )
    .await?;
    let selector = selector(&f);
    let users = if selector.sources.is_empty() {
        HashMap::new()
    } else {
        let sets = activity::sets(&app.pool, "geo", from, to, &selector).await?;
        let mut by_country: HashMap<String, RoaringBitmap> = HashMap::new();
        for (key, set) in sets {
            *by_country.entry(key.value).or_default() |= set;
        }
        by_country
    };

    let mut unknown = 0i64;
    let mut countries: Vec<(String, i64, Option<Decimal>)> = Vec::with_capacity(rows.len());
    for r in &rows {
        let country: String = r.get(0);
        if country.is_empty() {
            unknown += r.get::<_, i64>(1);
        } else {
            countries.push((country, r.get(1), r.get(2)));
        }
    }
    countries.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    countries.truncate(limit);
    Ok(Json(Geo {
        countries: countries
            .into_iter()
            .map(|(country, events, revenue)| Country {
                users: users.get(&country).map_or(0, |u| u.len() as i64),
                country,
                events,
                revenue: money(revenue),
            })
            .collect(),
        unknown_country_events: unknown,
    }))
}
