//! `GET /analytics/revenue`: exact revenue and purchases, by source, optionally for one
//! campaign.

use super::{AppState, Pairs, money, query, sort_desc};
use crate::params::Params;
use crate::range::{Grain, split};
use axum::Json;
use axum::extract::State;
use rust_decimal::Decimal;
use serde::Serialize;
use service_kit::error::ApiError;
use utoipa::ToSchema;

/// The query parameters this report accepts.
pub const PARAMS: &[&str] = &["from", "to", "source", "campaignId"];

/// Exact revenue and purchases (revenue events with a non-null amount).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Revenue {
    /// A decimal string with two places.
    #[schema(example = "10450.25")]
    pub total: String,
    pub purchases: i64,
    /// By revenue descending, then source.
    pub by_source: Vec<SourceRevenue>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SourceRevenue {
    #[schema(example = "facebook")]
    pub source: String,
    #[schema(example = "149.99")]
    pub revenue: String,
    pub purchases: i64,
}

const ALL_SQL: &str = "\
WITH parts AS (
    SELECT r.source, r.purchases AS p, r.revenue AS v
    FROM unnest($1::\"char\"[], $2::timestamptz[], $3::timestamptz[]) AS s(grain, lo, hi)
    JOIN rollup_events r ON r.grain = s.grain AND r.bucket >= s.lo AND r.bucket < s.hi
    WHERE r.purchases > 0 AND ($6::text IS NULL OR r.source = $6)
    UNION ALL
    SELECT e.source, 1, e.revenue
    FROM unnest($4::timestamptz[], $5::timestamptz[]) AS w(lo, hi)
    JOIN events e ON e.event_time >= w.lo AND e.event_time < w.hi
    WHERE e.revenue IS NOT NULL AND ($6::text IS NULL OR e.source = $6)
)
SELECT source, sum(p)::bigint, sum(v) FROM parts GROUP BY 1";

/// Campaigns are Facebook's: the rows are labelled `facebook`.
const CAMPAIGN_SQL: &str = "\
WITH parts AS (
    SELECT r.purchases AS p, r.revenue AS v
    FROM unnest($1::\"char\"[], $2::timestamptz[], $3::timestamptz[]) AS s(grain, lo, hi)
    JOIN rollup_campaigns r ON r.grain = s.grain AND r.bucket >= s.lo AND r.bucket < s.hi
    WHERE r.campaign_id = $7 AND r.purchases > 0
    UNION ALL
    SELECT 1, e.revenue
    FROM unnest($4::timestamptz[], $5::timestamptz[]) AS w(lo, hi)
    JOIN events e ON e.event_time >= w.lo AND e.event_time < w.hi
    WHERE e.campaign_id = $7 AND e.revenue IS NOT NULL
)
SELECT 'facebook', sum(p)::bigint, sum(v) FROM parts
WHERE $6::text IS NULL OR $6 = 'facebook'
HAVING count(*) > 0";

/// Exact revenue and purchases, by source, optionally for one campaign.
#[utoipa::path(
    get,
    path = "/analytics/revenue",
    tag = "reports",
    params(
        crate::api_doc::RangeQuery,
        crate::api_doc::SourceQuery,
        crate::api_doc::CampaignQuery,
    ),
    responses(
        (status = 200, description = "Revenue in the range", body = Revenue),
        crate::api_doc::ReportErrors,
    ),
    security((), ("bearer" = [])),
)]
pub async fn revenue(State(app): State<AppState>, pairs: Pairs) -> Result<Json<Revenue>, ApiError> {
    let mut p = Params::new(pairs.0, PARAMS);
    let (from, to) = p.range();
    let source = p.source();
    let campaign = p.text("campaignId");
    p.finish()?;

    let rows = match &campaign {
        None => {
            let pieces = split(from, to, &[Grain::Day, Grain::Hour, Grain::Minute]);
            let (g, starts, ends) = pieces.bucket_columns();
            let (rs, re) = pieces.raw_columns();
            query(
                &app.pool,
                "revenue",
                ALL_SQL,
                &[&g, &starts, &ends, &rs, &re, &source],
            )
            .await?
        }
        Some(campaign) => {
            let pieces = split(from, to, &[Grain::Day, Grain::Hour]);
            let (g, starts, ends) = pieces.bucket_columns();
            let (rs, re) = pieces.raw_columns();
            query(
                &app.pool,
                "revenue",
                CAMPAIGN_SQL,
                &[&g, &starts, &ends, &rs, &re, &source, campaign],
            )
            .await?
        }
    };
    let mut by_source: Vec<(String, i64, Decimal)> = rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get::<_, Option<i64>>(1).unwrap_or(0),
                r.get::<_, Option<Decimal>>(2).unwrap_or_default(),
            )
        })
        .filter(|r| r.1 > 0)
        .collect();
    sort_desc(&mut by_source, |r| r.2, |r| r.0.clone());
    let total: Decimal = by_source.iter().map(|r| r.2).sum();
    let purchases: i64 = by_source.iter().map(|r| r.1).sum();
    Ok(Json(Revenue {
        total: money(Some(total)),
        purchases,
        by_source: by_source
            .into_iter()
            .map(|(source, purchases, revenue)| SourceRevenue {
                source,
                revenue: money(Some(revenue)),
                purchases,
            })
            .collect(),
    }))
}
