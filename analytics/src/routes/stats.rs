//! `GET /analytics/stats`: event counts by source, funnel stage and event type.

use super::{AppState, Pairs, query_pieces, sort_desc, timestamp};
use crate::format::{Accept, Report};
use crate::params::{Filters, Params};
use crate::range::{Grain, split};
use axum::extract::State;
use serde::Serialize;
use service_kit::error::ApiError;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// The query parameters this report accepts.
pub const PARAMS: &[&str] = &["from", "to", "source", "funnelStage", "eventType", "format"];

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

const ROLLUP: &str = "SELECT source, funnel_stage, event_type, events FROM rollup_events \
    WHERE grain = {grain} AND bucket >= {lo} AND bucket < {hi}";
const RAW: &str = "SELECT source, funnel_stage, event_type, 1::bigint FROM events \
    WHERE event_time >= {lo} AND event_time < {hi}";

fn sql(parts: &str) -> String {
    format!(
        "SELECT source, funnel_stage, event_type, sum(n)::bigint \
         FROM ({parts}) AS p(source, funnel_stage, event_type, n) \
         WHERE ($1::text IS NULL OR source = $1) AND ($2::text IS NULL OR funnel_stage = $2) \
           AND ($3::text IS NULL OR event_type = $3) \
         GROUP BY 1, 2, 3"
    )
}

/// Events per (source, funnel stage, event type) in `[from, to)` passing the filters, from
/// `rollup_events` (days, hours, minutes) and the raw edges.
pub async fn type_counts(
    pool: &deadpool_postgres::Pool,
    report: &'static str,
    from: time::OffsetDateTime,
    to: time::OffsetDateTime,
    f: &Filters,
) -> Result<Vec<(String, String, String, i64)>, ApiError> {
    let pieces = split(from, to, &[Grain::Day, Grain::Hour, Grain::Minute]);
    let (parts, bounds) = pieces.union_all(ROLLUP, RAW, 4);
    let rows = query_pieces(
        pool,
        report,
        &sql(&parts),
        &[&f.source, &f.funnel_stage, &f.event_type],
        &bounds,
    )
    .await?;
    Ok(rows
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
        .collect())
}

/// Event counts by source, funnel stage and event type.
#[utoipa::path(
    get,
    path = "/analytics/stats",
    tag = "reports",
    params(
        crate::api_doc::RangeQuery,
        crate::api_doc::SourceQuery,
        crate::api_doc::StageTypeQuery,
        crate::api_doc::FormatQuery,
    ),
    responses(
        (
            status = 200,
            description = "Counts in the range: JSON, or CSV when asked (`format`)",
            content((Stats = "application/json"), (String = "text/csv")),
            headers(("Data-As-Of" = String, description = "Every event stored before this instant is in the answer (RFC 3339 UTC): the request's time when reading the primary, earlier from a standby that lags; absent when unknown"), ("Content-Disposition" = String, description = "CSV only: `attachment; filename=\"stats.csv\"`")),
        ),
        crate::api_doc::ReportErrors,
    ),
    security((), ("bearer" = [])),
)]
pub async fn stats(
    State(app): State<AppState>,
    accept: Accept,
    pairs: Pairs,
) -> Result<Report<Stats>, ApiError> {
    let mut p = Params::new(pairs.0, PARAMS);
    let format = p.format(accept);
    let (from, to) = p.range();
    let f = p.filters();
    p.finish()?;

    let counts = type_counts(&app.pool, "stats", from, to, &f).await?;
    let mut total = 0i64;
    let mut by_source: BTreeMap<String, i64> = BTreeMap::new();
    let mut by_stage: BTreeMap<String, i64> = BTreeMap::new();
    let mut by_type: Vec<(String, String, String, i64)> = Vec::with_capacity(counts.len());
    for (source, stage, event_type, n) in counts {
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

    Ok(Report::new(
        format,
        Stats {
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
        },
    ))
}
