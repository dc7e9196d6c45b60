//! `GET /analytics/timeseries`: counts and revenue per UTC-aligned bucket, zero-filled.

use super::{AppState, Pairs, money, query, timestamp};
use crate::params::Params;
use crate::range::{Grain, split};
use axum::Json;
use axum::extract::State;
use rust_decimal::Decimal;
use serde::Serialize;
use service_kit::error::ApiError;
use std::collections::HashMap;
use time::OffsetDateTime;
use utoipa::ToSchema;

/// The query parameters this report accepts.
pub const PARAMS: &[&str] = &[
    "from",
    "to",
    "interval",
    "source",
    "funnelStage",
    "eventType",
];

/// Counts and revenue per bucket, every bucket present (zero-filled), ascending.
#[derive(Debug, Serialize, ToSchema)]
pub struct Timeseries {
    /// `minute`, `hour` or `day`.
    #[schema(example = "hour")]
    pub interval: &'static str,
    pub points: Vec<Point>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Point {
    /// Start of the bucket, RFC 3339 UTC.
    #[schema(example = "2026-03-01T12:00:00Z")]
    pub bucket: String,
    /// Events in the bucket (and in `[from, to)`).
    pub count: i64,
    /// Revenue in the bucket, a decimal string with two places.
    #[schema(example = "149.99")]
    pub revenue: String,
}

/// Most buckets one answer may hold.
const MAX_BUCKETS: i64 = 10_000;

const SQL: &str = "\
WITH parts AS (
    SELECT date_trunc($9, r.bucket, 'UTC') AS b, r.events AS n, r.revenue AS v
    FROM unnest($1::\"char\"[], $2::timestamptz[], $3::timestamptz[]) AS s(grain, lo, hi)
    JOIN rollup_events r ON r.grain = s.grain AND r.bucket >= s.lo AND r.bucket < s.hi
    WHERE ($6::text IS NULL OR r.source = $6) AND ($7::text IS NULL OR r.funnel_stage = $7)
      AND ($8::text IS NULL OR r.event_type = $8)
    UNION ALL
    SELECT date_trunc($9, e.event_time, 'UTC'), 1, coalesce(e.revenue, 0)
    FROM unnest($4::timestamptz[], $5::timestamptz[]) AS w(lo, hi)
    JOIN events e ON e.event_time >= w.lo AND e.event_time < w.hi
    WHERE ($6::text IS NULL OR e.source = $6) AND ($7::text IS NULL OR e.funnel_stage = $7)
      AND ($8::text IS NULL OR e.event_type = $8)
)
SELECT b, sum(n)::bigint, sum(v) FROM parts GROUP BY b";

/// Counts and revenue per UTC-aligned bucket, zero-filled.
///
/// Points run from the bucket containing `from` to the bucket containing the last instant
/// before `to`; only events in `[from, to)` are counted.
#[utoipa::path(
    get,
    path = "/analytics/timeseries",
    tag = "reports",
    params(
        crate::api_doc::RangeQuery,
        crate::api_doc::IntervalQuery,
        crate::api_doc::SourceQuery,
        crate::api_doc::StageTypeQuery,
    ),
    responses(
        (status = 200, description = "One point per bucket", body = Timeseries),
        crate::api_doc::ReportErrors,
    ),
    security((), ("bearer" = [])),
)]
pub async fn timeseries(
    State(app): State<AppState>,
    pairs: Pairs,
) -> Result<Json<Timeseries>, ApiError> {
    let mut p = Params::new(pairs.0, PARAMS);
    let (from, to) = p.range();
    let interval = p.choice("interval", &["minute", "hour", "day"], "hour");
    let f = p.filters();
    let grain = match interval {
        "minute" => Grain::Minute,
        "day" => Grain::Day,
        _ => Grain::Hour,
    };
    // Points run from the bucket holding `from` to the one holding the last instant
    // before `to`.
    let first = grain.floor(from);
    let last = grain.floor(to - time::Duration::NANOSECOND);
    let buckets = if from < to {
        (last - first).whole_seconds() / grain.length().whole_seconds() + 1
    } else {
        0
    };
    if buckets > MAX_BUCKETS {
        p.reject(
            "interval",
            format!(
                "the range holds {buckets} {interval} buckets; at most {MAX_BUCKETS} are allowed"
            ),
        );
    }
    p.finish()?;

    // Only rollups no coarser than the interval can be placed in its buckets.
    let grains: &[Grain] = match grain {
        Grain::Day => &[Grain::Day, Grain::Hour, Grain::Minute],
        Grain::Hour => &[Grain::Hour, Grain::Minute],
        Grain::Minute => &[Grain::Minute],
    };
    let pieces = split(from, to, grains);
    let (g, starts, ends) = pieces.bucket_columns();
    let (raw_starts, raw_ends) = pieces.raw_columns();
    let rows = query(
        &app.pool,
        "timeseries",
        SQL,
        &[
            &g,
            &starts,
            &ends,
            &raw_starts,
            &raw_ends,
            &f.source,
            &f.funnel_stage,
            &f.event_type,
            &interval,
        ],
    )
    .await?;
    let found: HashMap<OffsetDateTime, (i64, Option<Decimal>)> = rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();

    let mut points = Vec::with_capacity(buckets.max(0) as usize);
    let mut bucket = first;
    for _ in 0..buckets {
        let (count, revenue) = found.get(&bucket).copied().unwrap_or((0, None));
        points.push(Point {
            bucket: timestamp(bucket),
            count,
            revenue: money(revenue),
        });
        bucket += grain.length();
    }
    Ok(Json(Timeseries { interval, points }))
}
