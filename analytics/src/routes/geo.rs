//! `GET /analytics/geo`: events, distinct users and revenue by country.
//!
//! All three come from the per-user sets by country (`crate::activity`), stored for every
//! combination of the source / funnel stage / event type filters with their events and
//! revenue: one read of the blocks covering the range plus the raw edges. Events without a
//! country are the range's events passing the filters (counted by the funnel sets, in the
//! same snapshot) minus those with one.

use super::{AppState, Pairs, money};
use crate::activity::{self, Selector};
use crate::format::{Accept, Report};
use crate::params::{Filters, Params};
use axum::extract::State;
use serde::Serialize;
use service_kit::error::ApiError;
use shared_events::{FunnelStage, Source, stage_of};
use std::collections::HashMap;
use user_sets::{Dim, SetValue};
use utoipa::ToSchema;

/// The query parameters this report accepts.
pub const PARAMS: &[&str] = &[
    "from",
    "to",
    "source",
    "funnelStage",
    "eventType",
    "limit",
    "format",
];

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

/// The sets by country that hold exactly the users of events passing the filters: one
/// per source when an event type is given (its stage follows from the type), else the
/// set stored for that combination of filters (`None` = any).
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
                sources.push(Some(s));
                stages.push(Some(stage));
                types.push(Some(t));
            }
        }
        None => {
            sources.push(source(f));
            stages.push(stage(f));
            types.push(None);
        }
    }
    // Every stored (source, stage, type) combination is consistent (a type has one stage
    // per source), so the cross product of these lists selects only the wanted sets.
    Selector {
        dims: vec![Dim::Country],
        sources,
        stages,
        types,
    }
}

/// The source filter. `Params` gives a source's own wire name, so it parses.
fn source(f: &Filters) -> Option<Source> {
    f.source.and_then(Source::parse)
}

/// The funnel stage filter. `Params` gives a stage's own wire name, so it parses.
fn stage(f: &Filters) -> Option<FunnelStage> {
    f.funnel_stage.and_then(FunnelStage::parse)
}

/// The funnel sets ('all': per source and stage, or per step when an event type is given)
/// that hold each event passing the filters exactly once: their event counts add up to the
/// range's events, with a country or without.
fn events_selector<'a>(f: &Filters, by_country: &Selector<'a>) -> Selector<'a> {
    match f.event_type {
        Some(_) => Selector {
            dims: vec![Dim::All],
            ..by_country.clone()
        },
        None => Selector {
            dims: vec![Dim::All],
            sources: match source(f) {
                Some(s) => vec![Some(s)],
                None => Source::ALL.map(Some).to_vec(),
            },
            stages: match stage(f) {
                Some(s) => vec![Some(s)],
                None => FunnelStage::ALL.map(Some).to_vec(),
            },
            types: vec![None],
        },
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
        crate::api_doc::FormatQuery,
    ),
    responses(
        (
            status = 200,
            description = "Countries by events: JSON, or CSV when asked (`format`)",
            content((Geo = "application/json"), (String = "text/csv")),
            headers(("Data-As-Of" = String, description = "Every event stored before this instant is in the answer (RFC 3339 UTC): the request's time when reading the primary, earlier from a standby that lags; absent when unknown"), ("Content-Disposition" = String, description = "CSV only: `attachment; filename=\"geo.csv\"`")),
        ),
        crate::api_doc::ReportErrors,
    ),
    security((), ("bearer" = [])),
)]
pub async fn geo(
    State(app): State<AppState>,
    accept: Accept,
    pairs: Pairs,
) -> Result<Report<Geo>, ApiError> {
    let mut p = Params::new(pairs.0, PARAMS);
    let format = p.format(accept);
    let (from, to) = p.range();
    let f = p.filters();
    let limit = p.limit() as usize;
    p.finish()?;

    let countries = selector(&f);
    let mut by_country: HashMap<String, SetValue> = HashMap::new();
    let mut all = 0i64;
    if !countries.sources.is_empty() {
        let events = events_selector(&f, &countries);
        let found = activity::sets_of(&app.pool, "geo", from, to, &[countries, events]).await?;
        let mut found = found.into_iter();
        for (key, value) in found.next().unwrap_or_default() {
            by_country
                .entry(key.value)
                .or_default()
                .add(&value)
                .map_err(|e| activity::corrupt("geo", e.to_string()))?;
        }
        all = found
            .next()
            .unwrap_or_default()
            .values()
            .map(|v| v.events)
            .sum();
    }
    let known: i64 = by_country.values().map(|v| v.events).sum();

    let mut countries: Vec<(String, SetValue)> = by_country.into_iter().collect();
    countries.sort_by(|a, b| b.1.events.cmp(&a.1.events).then_with(|| a.0.cmp(&b.0)));
    countries.truncate(limit);
    Ok(Report::new(
        format,
        Geo {
            countries: countries
                .into_iter()
                .map(|(country, v)| Country {
                    users: v.users.len() as i64,
                    country,
                    events: v.events,
                    revenue: money(Some(v.revenue)),
                })
                .collect(),
            unknown_country_events: all - known,
        },
    ))
}
