//! `GET /analytics/timeseries`: counts and revenue per bucket of the reader's time zone
//! (`tz`, UTC by default), zero-filled.

use super::{AppState, Pairs, money, query, query_pieces};
use crate::format::{Accept, Report};
use crate::params::{Filters, Params, unrepresentable_range};
use crate::range::Grain;
use crate::zone::{self, Buckets, Zone};
use axum::extract::State;
use rust_decimal::Decimal;
use serde::Serialize;
use service_kit::error::ApiError;
use time::OffsetDateTime;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use utoipa::ToSchema;

/// The query parameters this report accepts.
pub const PARAMS: &[&str] = &[
    "from",
    "to",
    "interval",
    "tz",
    "source",
    "funnelStage",
    "eventType",
    "format",
];

/// Counts and revenue per bucket, every bucket present (zero-filled), ascending.
#[derive(Debug, Serialize, ToSchema)]
pub struct Timeseries {
    /// `minute`, `hour` or `day`.
    #[schema(example = "hour")]
    pub interval: &'static str,
    /// The time zone of the buckets, as the IANA database names it (`UTC` by default).
    #[schema(example = "Europe/Berlin")]
    pub tz: String,
    pub points: Vec<Point>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Point {
    /// Start of the bucket: RFC 3339 at the zone's offset at that instant (`Z` at offset
    /// 0), so a DST day's next bucket shows the new offset.
    #[schema(example = "2026-03-29T00:00:00+01:00")]
    pub bucket: String,
    /// Events in the bucket (and in `[from, to)`).
    pub count: i64,
    /// Revenue in the bucket, a decimal string with two places.
    #[schema(example = "149.99")]
    pub revenue: String,
}

/// Most buckets one answer may hold.
const MAX_BUCKETS: usize = 10_000;

/// Most pieces one query lists as branches. More (the days of a zone at +05:30: two
/// ranges a day) are joined from arrays ([`crate::range::Pieces::lateral`]) and summed per
/// bucket in the database, so neither the statement nor the rows grow with the range.
const MAX_BRANCHES: usize = 32;

const ROLLUP: &str = "SELECT bucket, events, revenue, source, funnel_stage, event_type \
    FROM rollup_events WHERE grain = {grain} AND bucket >= {lo} AND bucket < {hi}";
/// A raw piece is an edge shorter than a minute, inside one minute and never across a
/// bucket boundary: one bucket of any interval. So it is summed here, and placed at its
/// start (a row per event made a busy minute cost hundreds of MiB of rows in this process).
const RAW: &str = "SELECT {lo}, count(*), coalesce(sum(revenue), 0), source, funnel_stage, \
    event_type FROM events WHERE event_time >= {lo} AND event_time < {hi} \
    GROUP BY source, funnel_stage, event_type";

/// Without an event-type filter: `rollup_series` holds one row per bucket and filter.
const SERIES_ROLLUP: &str = "SELECT bucket, events, revenue FROM rollup_series \
    WHERE grain = {grain} AND bucket >= {lo} AND bucket < {hi} \
      AND source = coalesce($1, '') AND funnel_stage = coalesce($2, '')";
/// [`RAW`]'s sum with the filters applied.
const SERIES_RAW: &str = "SELECT {lo}, count(*), coalesce(sum(revenue), 0) FROM events \
    WHERE event_time >= {lo} AND event_time < {hi} \
      AND ($1::text IS NULL OR source = $1) AND ($2::text IS NULL OR funnel_stage = $2)";

/// The pieces' rows as they are: `(time, events, revenue)`, placed into buckets here.
/// (Grouping them in SQL by `date_trunc(.., 'UTC')` cost more than reading them: ~5 ms
/// for the 2,160 hours of 90 days.)
fn series_sql(parts: &str) -> String {
    format!("SELECT t, n, v FROM ({parts}) AS p(t, n, v)")
}

fn sql(parts: &str) -> String {
    format!(
        "SELECT t, n, v \
         FROM ({parts}) AS p(t, n, v, source, funnel_stage, event_type) \
         WHERE ($1::text IS NULL OR source = $1) AND ($2::text IS NULL OR funnel_stage = $2) \
           AND ($3::text IS NULL OR event_type = $3)"
    )
}

/// Counts and revenue per bucket of the reader's time zone, zero-filled.
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
        crate::api_doc::TzQuery,
        crate::api_doc::SourceQuery,
        crate::api_doc::StageTypeQuery,
        crate::api_doc::FormatQuery,
    ),
    responses(
        (
            status = 200,
            description = "One point per bucket: JSON, or CSV when asked (`format`)",
            content((Timeseries = "application/json"), (String = "text/csv")),
            headers(("Data-As-Of" = String, description = "Every event stored before this instant is in the answer (RFC 3339 UTC): the request's time when reading the primary, earlier from a standby that lags; absent when unknown"), ("Content-Disposition" = String, description = "CSV only: `attachment; filename=\"timeseries.csv\"`")),
        ),
        crate::api_doc::ReportErrors,
    ),
    security((), ("bearer" = [])),
)]
pub async fn timeseries(
    State(app): State<AppState>,
    accept: Accept,
    pairs: Pairs,
) -> Result<Report<Timeseries>, ApiError> {
    let mut p = Params::new(pairs.0, PARAMS);
    let format = p.format(accept);
    let (from, to) = p.range();
    let interval = p.choice("interval", &["minute", "hour", "day"], "hour");
    let zone = time_zone(&mut p);
    let f = p.filters();
    let grain = match interval {
        "minute" => Grain::Minute,
        "day" => Grain::Day,
        _ => Grain::Hour,
    };
    let plan = zone.and_then(
        |zone| match zone::buckets(&zone, from, to, grain, MAX_BUCKETS) {
            Ok(buckets) => Some((zone, buckets)),
            Err(e) => {
                p.reject(e.field(), e.to_string());
                None
            }
        },
    );
    p.finish()?;
    let Some((zone, plan)) = plan else {
        return Err(unrepresentable_range());
    };

    let rows = rows(&app, &f, &plan).await?;
    let mut sums = vec![(0_i64, Decimal::ZERO); plan.starts().len()];
    for r in &rows {
        // Every row's time is in `[from, to)`, so in one of the buckets.
        let Some(sum) = r
            .get::<_, Option<OffsetDateTime>>(0)
            .and_then(|t| plan.index(t))
            .and_then(|i| sums.get_mut(i))
        else {
            continue;
        };
        sum.0 += r.get::<_, i64>(1);
        sum.1 += r.get::<_, Decimal>(2);
    }
    let points = plan
        .starts()
        .iter()
        .zip(sums)
        .map(|(&start, (count, revenue))| Point {
            bucket: zone::rfc3339(start),
            count,
            revenue: money(Some(revenue)),
        })
        .collect();
    Ok(Report::new(
        format,
        Timeseries {
            interval,
            tz: zone.name().to_owned(),
            points,
        },
    ))
}

/// `tz`, UTC when absent; `None` (and the parameter named) when the database lacks it.
fn time_zone(p: &mut Params) -> Option<Zone> {
    let Some(name) = p.text("tz") else {
        return Some(Zone::utc());
    };
    Zone::get(&name)
        .map_err(|e| p.reject("tz", e.to_string()))
        .ok()
}

/// The pieces' rows: `(time, events, revenue)`, each time inside one bucket.
async fn rows(app: &AppState, f: &Filters, plan: &Buckets) -> Result<Vec<Row>, ApiError> {
    let pieces = plan.pieces();
    let series = f.event_type.is_none();
    let (rollup, raw, mut params): (&str, &str, Vec<&(dyn ToSql + Sync)>) = if series {
        (SERIES_ROLLUP, SERIES_RAW, vec![&f.source, &f.funnel_stage])
    } else {
        let own: Vec<&(dyn ToSql + Sync)> = vec![&f.source, &f.funnel_stage, &f.event_type];
        (ROLLUP, RAW, own)
    };
    let filtered = |parts: &str| {
        if series {
            series_sql(parts)
        } else {
            sql(parts)
        }
    };
    if pieces.count() <= MAX_BRANCHES {
        let (parts, bounds) = pieces.union_all(rollup, raw, params.len() + 1);
        return query_pieces(&app.pool, "timeseries", &filtered(&parts), &params, &bounds).await;
    }
    // The bucket starts, then the pieces' arrays.
    let starts = params.len() + 1;
    let (parts, arrays) = pieces.lateral(rollup, raw, starts + 1);
    let statement = format!(
        "SELECT (${starts}::timestamptz[])[width_bucket(t, ${starts}::timestamptz[])], \
         sum(n)::bigint, sum(v) FROM ({}) AS q(t, n, v) GROUP BY 1",
        filtered(&parts)
    );
    let bucket_starts = plan.starts().to_vec();
    params.push(&bucket_starts);
    params.extend(arrays.iter().map(|a| a as &(dyn ToSql + Sync)));
    query(&app.pool, "timeseries", &statement, &params).await
}
