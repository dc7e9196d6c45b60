//! `GET /analytics/stats`: event counts by source, funnel stage and event type.

use super::{AppState, Pairs, query, sort_desc, timestamp};
use crate::params::Params;
use crate::range::{Grain, split};
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use service_kit::error::ApiError;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// The query parameters this report accepts.
pub const PARAMS: &[&str] = &["from", "to", "source", "funnelStage", "eventType"];

/// Event counts in `[from, to)`, overall and broken down.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Start of the range (inclusive), RFC 3339 UTC.
    #[schema(example = "2026-03-01T00:00:00Z")]
    pub from: String,
    /// End of the range (exclusive), RFC 3339 UTC.
    #[schema(example = "2026-03-08T00:00:00Z")]
    pub to: String,
    /// Events in the range matching the filters.
    pub total: i64,
    pub by_source: Vec<SourceCount>,
    pub by_funnel_stage: Vec<StageCount>,
    pub by_event_type: Vec<TypeCount>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SourceCount {
    #[schema(example = "facebook")]
    pub source: String,
    pub count: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageCount {
    #[schema(example = "top")]
    pub funnel_stage: String,
    pub count: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TypeCount {
    #[schema(example = "facebook")]
    pub source: String,
    #[schema(example = "top")]
    pub funnel_stage: String,
    #[schema(example = "ad.view")]
    pub event_type: String,
    pub count: i64,
}

const SQL: &str = "\
WITH parts AS (
    SELECT r.source, r.funnel_stage, r.event_type, r.events AS n
    FROM unnest($1::\"char\"[], $2::timestamptz[], $3::timestamptz[]) AS s(grain, lo, hi)
    JOIN rollup_events r ON r.grain = s.grain AND r.bucket >= s.lo AND r.bucket < s.hi
    UNION ALL
    SELECT e.source, e.funnel_stage, e.event_type, 1
    FROM unnest($4::timestamptz[], $5::timestamptz[]) AS w(lo, hi)
    JOIN events e ON e.event_time >= w.lo AND e.event_time < w.hi
)
SELECT source, funnel_stage, event_type, sum(n)::bigint FROM parts
WHERE ($6::text IS NULL OR source = $6) AND ($7::text IS NULL OR funnel_stage = $7)
  AND ($8::text IS NULL OR event_type = $8)
GROUP BY 1, 2, 3";

/// Event counts by source, funnel stage and event type.
#[utoipa::path(
    get,
    path = "/analytics/stats",
    tag = "reports",
    params(crate::api_doc::RangeQuery, crate::api_doc::SourceQuery, crate::api_doc::StageTypeQuery),
    responses(
        (status = 200, description = "Counts in the range", body = Stats),
        crate::api_doc::ReportErrors,
    ),
    security((), ("bearer" = [])),
)]
pub async fn stats(State(app): State<AppState>, pairs: Pairs) -> Result<Json<Stats>, ApiError> {
    let mut p = Params::new(pairs.0, PARAMS);
    let (from, to) = p.range();
    let f = p.filters();
    p.finish()?;

    let pieces = split(from, to, &[Grain::Day, Grain::Hour, Grain::Minute]);
    let (grains, starts, ends) = pieces.bucket_columns();
    let (raw_starts, raw_ends) = pieces.raw_columns();
    let rows = query(
        &app.pool,
        "stats",
        SQL,
        &[
            &grains,
            &starts,
            &ends,
            &raw_starts,
            &raw_ends,
            &f.source,
            &f.funnel_stage,
            &f.event_type,
        ],
    )
    .await?;

    let mut total = 0i64;
    let mut by_source: BTreeMap<String, i64> = BTreeMap::new();
    let mut by_stage: BTreeMap<String, i64> = BTreeMap::new();
    let mut by_type: Vec<(String, String, String, i64)> = Vec::with_capacity(rows.len());
    for row in &rows {
        let (source, stage, event_type, n): (String, String, String, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        total += n;
        *by_source.entry(source.clone()).or_default() += n;
        *by_stage.entry(stage.clone()).or_default() += n;
        by_type.push((source, stage, event_type, n));
    }
    let mut by_source: Vec<(String, i64)> = by_source.into_iter().collect();
    sort_desc(&mut by_source, |r| r.1, |r| r.0.clone());
    let mut by_stage: Vec<(String, i64)> = by_stage.into_iter().collect();
    sort_desc(&mut by_stage, |r| r.1, |r| r.0.clone());
    sort_desc(
        &mut by_type,
        |r| r.3,
        |r| (r.0.clone(), r.1.clone(), r.2.clone()),
    );

    Ok(Json(Stats {
        from: timestamp(from),
        to: timestamp(to),
        total,
        by_source: by_source
            .into_iter()
            .map(|(source, count)| SourceCount { source, count })
            .collect(),
        by_funnel_stage: by_stage
            .into_iter()
            .map(|(funnel_stage, count)| StageCount {
                funnel_stage,
                count,
            })
            .collect(),
        by_event_type: by_type
            .into_iter()
            .map(|(source, funnel_stage, event_type, count)| TypeCount {
                source,
                funnel_stage,
                event_type,
                count,
            })
            .collect(),
    }))
}
