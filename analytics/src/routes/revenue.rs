//! `GET /analytics/revenue`: exact revenue and purchases, by source, optionally for one
//! campaign.

use super::{AppState, Pairs, money, query_pieces, sort_desc};
use crate::format::{Accept, Report};
use crate::params::Params;
use crate::range::{Grain, split};
use axum::extract::State;
use rust_decimal::Decimal;
use serde::Serialize;
use service_kit::error::ApiError;
use utoipa::ToSchema;

/// The query parameters this report accepts.
pub const PARAMS: &[&str] = &["from", "to", "source", "campaignId", "format"];

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

const ALL_ROLLUP: &str = "SELECT source, purchases, revenue FROM rollup_events \
    WHERE grain = {grain} AND bucket >= {lo} AND bucket < {hi} AND purchases > 0";
const ALL_RAW: &str = "SELECT source, 1::bigint, revenue FROM events \
    WHERE event_time >= {lo} AND event_time < {hi} AND revenue IS NOT NULL";

fn all_sql(parts: &str) -> String {
    format!(
        "SELECT source, sum(p)::bigint, sum(v) FROM ({parts}) AS x(source, p, v) \
         WHERE $1::text IS NULL OR source = $1 GROUP BY 1"
    )
}

/// Campaigns are Facebook's: the rows are labelled `facebook`.
const CAMPAIGN_ROLLUP: &str = "SELECT purchases, revenue FROM rollup_campaigns \
    WHERE grain = {grain} AND bucket >= {lo} AND bucket < {hi} AND campaign_id = $2 \
      AND purchases > 0";
const CAMPAIGN_RAW: &str = "SELECT 1::bigint, revenue FROM events \
    WHERE event_time >= {lo} AND event_time < {hi} AND campaign_id = $2 AND revenue IS NOT NULL";

fn campaign_sql(parts: &str) -> String {
    format!(
        "SELECT 'facebook', sum(p)::bigint, sum(v) FROM ({parts}) AS x(p, v) \
         WHERE $1::text IS NULL OR $1 = 'facebook' HAVING count(*) > 0"
    )
}

/// Exact revenue and purchases, by source, optionally for one campaign.
#[utoipa::path(
    get,
    path = "/analytics/revenue",
    tag = "reports",
    params(
        crate::api_doc::RangeQuery,
        crate::api_doc::SourceQuery,
        crate::api_doc::CampaignQuery,
        crate::api_doc::FormatQuery,
    ),
    responses(
        (
            status = 200,
            description = "Revenue in the range: JSON, or CSV when asked (`format`)",
            content((Revenue = "application/json"), (String = "text/csv")),
            headers(("Data-As-Of" = String, description = "Every event stored before this instant is in the answer (RFC 3339 UTC): the request's time when reading the primary, earlier from a standby that lags; absent when unknown"), ("Content-Disposition" = String, description = "CSV only: `attachment; filename=\"revenue.csv\"`")),
        ),
        crate::api_doc::ReportErrors,
    ),
    security((), ("bearer" = [])),
)]
pub async fn revenue(
    State(app): State<AppState>,
    accept: Accept,
    pairs: Pairs,
) -> Result<Report<Revenue>, ApiError> {
    let mut p = Params::new(pairs.0, PARAMS);
    let format = p.format(accept);
    let (from, to) = p.range();
    let source = p.source();
    let campaign = p.text("campaignId");
    p.finish()?;

    let rows = match &campaign {
        None => {
            let pieces = split(from, to, &[Grain::Day, Grain::Hour, Grain::Minute]);
            let (parts, bounds) = pieces.union_all(ALL_ROLLUP, ALL_RAW, 2);
            query_pieces(&app.pool, "revenue", &all_sql(&parts), &[&source], &bounds).await?
        }
        Some(campaign) => {
            let pieces = split(from, to, &[Grain::Day, Grain::Hour]);
            let (parts, bounds) = pieces.union_all(CAMPAIGN_ROLLUP, CAMPAIGN_RAW, 3);
            query_pieces(
                &app.pool,
                "revenue",
                &campaign_sql(&parts),
                &[&source, campaign],
                &bounds,
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
    // Each figure fits (PostgreSQL summed it); their sum must fit too.
    let total = by_source
        .iter()
        .try_fold(Decimal::ZERO, |sum, r| sum.checked_add(r.2))
        .ok_or_else(overflow)?;
    let purchases = by_source
        .iter()
        .try_fold(0i64, |sum, r| sum.checked_add(r.1))
        .ok_or_else(overflow)?;
    Ok(Report::new(
        format,
        Revenue {
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
        },
    ))
}

/// A total past what an exact decimal holds: amounts are bounded, so only impossible
/// volumes get here.
fn overflow() -> ApiError {
    crate::activity::corrupt("revenue", "the revenue total overflows".to_owned())
}
