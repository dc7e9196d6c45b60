//! `GET /analytics/campaigns/top`: Facebook campaigns by revenue or by events.

use super::{AppState, Pairs, money, query_pieces};
use crate::format::{Accept, Report};
use crate::params::Params;
use crate::range::{Grain, split};
use axum::extract::State;
use rust_decimal::Decimal;
use serde::Serialize;
use service_kit::error::ApiError;
use utoipa::ToSchema;

/// The query parameters this report accepts.
pub const PARAMS: &[&str] = &["from", "to", "limit", "by", "format"];

/// The top campaigns (Facebook bottom events).
#[derive(Debug, Serialize, ToSchema)]
pub struct TopCampaigns {
    /// By the `by` figure descending, then campaignId; at most `limit`.
    pub campaigns: Vec<Campaign>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Campaign {
    #[schema(example = "cmp-12")]
    pub campaign_id: String,
    pub events: i64,
    pub purchases: i64,
    #[schema(example = "149.99")]
    pub revenue: String,
}

const ROLLUP: &str = "SELECT campaign_id, events, purchases, revenue FROM rollup_campaigns \
    WHERE grain = {grain} AND bucket >= {lo} AND bucket < {hi}";
const RAW: &str = "SELECT campaign_id, 1::bigint, (revenue IS NOT NULL)::int::bigint, \
    coalesce(revenue, 0) FROM events \
    WHERE event_time >= {lo} AND event_time < {hi} AND campaign_id IS NOT NULL";

fn sql(parts: &str, order: &str) -> String {
    format!(
        "SELECT c, sum(n)::bigint AS events, sum(p)::bigint AS purchases, sum(v) AS revenue \
         FROM ({parts}) AS x(c, n, p, v) \
         GROUP BY c ORDER BY {order} DESC, c ASC LIMIT $1"
    )
}

/// Facebook campaigns by revenue or by events.
#[utoipa::path(
    get,
    operation_id = "topCampaigns",
    path = "/analytics/campaigns/top",
    tag = "reports",
    params(
        crate::api_doc::RangeQuery,
        crate::api_doc::LimitQuery,
        crate::api_doc::CampaignOrderQuery,
        crate::api_doc::FormatQuery,
    ),
    responses(
        (
            status = 200,
            description = "The top campaigns: JSON, or CSV when asked (`format`)",
            content((TopCampaigns = "application/json"), (String = "text/csv")),
            headers(("Data-As-Of" = String, description = "Every event stored before this instant is in the answer (RFC 3339 UTC): the request's time when reading the primary, earlier from a standby that lags; absent when unknown"), ("Content-Disposition" = String, description = "CSV only: `attachment; filename=\"campaigns-top.csv\"`")),
        ),
        crate::api_doc::ReportErrors,
    ),
    security((), ("bearer" = [])),
)]
pub async fn top(
    State(app): State<AppState>,
    accept: Accept,
    pairs: Pairs,
) -> Result<Report<TopCampaigns>, ApiError> {
    let mut p = Params::new(pairs.0, PARAMS);
    let format = p.format(accept);
    let (from, to) = p.range();
    let limit = p.limit();
    let by = p.choice("by", &["revenue", "events"], "revenue");
    p.finish()?;

    let pieces = split(from, to, &[Grain::Day, Grain::Hour]);
    let (parts, bounds) = pieces.union_all(ROLLUP, RAW, 2);
    let order = if by == "events" { "events" } else { "revenue" };
    let rows = query_pieces(
        &app.pool,
        "campaigns_top",
        &sql(&parts, order),
        &[&limit],
        &bounds,
    )
    .await?;
    let campaigns = rows
        .iter()
        .map(|r| Campaign {
            campaign_id: r.get::<_, String>(0),
            events: r.get::<_, i64>(1),
            purchases: r.get::<_, i64>(2),
            revenue: money(r.get::<_, Option<Decimal>>(3)),
        })
        .collect();
    Ok(Report::new(format, TopCampaigns { campaigns }))
}
