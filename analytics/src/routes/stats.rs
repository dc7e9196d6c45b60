//! `GET /analytics/stats`: event counts by source, funnel stage and event type.

use super::{AppState, Pairs, query, sort_desc, timestamp};
use crate::params::Params;
use crate::range::{Grain, split};
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use service_kit::error::ApiError;
use std::collections::BTreeMap;

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

pub async fn stats(State(app): State<AppState>, pairs: Pairs) -> Result<Json<Value>, ApiError> {
    let mut p = Params::new(
        pairs.0,
        &["from", "to", "source", "funnelStage", "eventType"],
    );
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

    Ok(Json(json!({
        "from": timestamp(from),
        "to": timestamp(to),
        "total": total,
        "bySource": by_source.iter().map(|(s, n)| json!({"source": s, "count": n})).collect::<Vec<_>>(),
        "byFunnelStage": by_stage.iter().map(|(s, n)| json!({"funnelStage": s, "count": n})).collect::<Vec<_>>(),
        "byEventType": by_type.iter().map(|(s, f, t, n)| json!({"source": s, "funnelStage": f, "eventType": t, "count": n})).collect::<Vec<_>>(),
    })))
}
