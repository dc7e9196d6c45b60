//! `GET /analytics/funnel`: per source, events and distinct users at each step, and how
//! many users who had a top event also had a bottom event.
//!
//! Distinct users are counted from the raw table over the range (exact; a per-user
//! rollup that keeps this fast at tens of millions of events is the next step).

use super::{AppState, Pairs, query, ratio};
use crate::params::Params;
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use service_kit::error::ApiError;
use shared_events::{FunnelStage, Source, event_types};
use std::collections::HashMap;
use utoipa::ToSchema;

/// The query parameters this report accepts.
pub const PARAMS: &[&str] = &["from", "to", "source"];

/// The funnel of each source, by top events descending.
#[derive(Debug, Serialize, ToSchema)]
pub struct Funnel {
    pub sources: Vec<SourceFunnel>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceFunnel {
    #[schema(example = "facebook")]
    pub source: &'static str,
    pub top_events: i64,
    pub bottom_events: i64,
    /// bottomEvents / topEvents (0 when there are no top events).
    #[schema(minimum = 0, maximum = 1)]
    pub event_conversion: f64,
    /// Distinct users with at least one top event in the range.
    pub top_users: i64,
    /// Those of them with at least one bottom event in the range.
    pub converted_users: i64,
    /// convertedUsers / topUsers (0 when there are no top users).
    #[schema(minimum = 0, maximum = 1)]
    pub user_conversion: f64,
    /// Every event type of the source: top stage first, each stage by events descending.
    pub steps: Vec<Step>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    #[schema(example = "top")]
    pub funnel_stage: &'static str,
    #[schema(example = "ad.view")]
    pub event_type: &'static str,
    pub events: i64,
    /// Distinct users with an event of this type.
    pub users: i64,
}

const STEPS_SQL: &str = "\
SELECT source, funnel_stage, event_type, count(*)::bigint, count(DISTINCT user_id)::bigint
FROM events
WHERE event_time >= $1 AND event_time < $2 AND ($3::text IS NULL OR source = $3)
GROUP BY 1, 2, 3";

const USERS_SQL: &str = "\
SELECT source, count(*) FILTER (WHERE top)::bigint, count(*) FILTER (WHERE top AND bottom)::bigint
FROM (SELECT source, user_id, bool_or(funnel_stage = 'top') AS top, bool_or(funnel_stage = 'bottom') AS bottom
      FROM events
      WHERE event_time >= $1 AND event_time < $2 AND ($3::text IS NULL OR source = $3)
      GROUP BY 1, 2) AS u
GROUP BY 1";

/// Per source: events and distinct users at each step, and how many users who had a top
/// event also had a bottom event.
#[utoipa::path(
    get,
    path = "/analytics/funnel",
    tag = "reports",
    params(crate::api_doc::RangeQuery, crate::api_doc::SourceQuery),
    responses(
        (status = 200, description = "The funnel of each source", body = Funnel),
        crate::api_doc::ReportErrors,
    ),
    security((), ("bearer" = [])),
)]
pub async fn funnel(State(app): State<AppState>, pairs: Pairs) -> Result<Json<Funnel>, ApiError> {
    let mut p = Params::new(pairs.0, PARAMS);
    let (from, to) = p.range();
    let source = p.source();
    p.finish()?;

    let steps = query(&app.pool, "funnel", STEPS_SQL, &[&from, &to, &source]).await?;
    let users = query(&app.pool, "funnel", USERS_SQL, &[&from, &to, &source]).await?;
    let step: HashMap<(String, String, String), (i64, i64)> = steps
        .iter()
        .map(|r| ((r.get(0), r.get(1), r.get(2)), (r.get(3), r.get(4))))
        .collect();
    let users: HashMap<String, (i64, i64)> = users
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();

    let mut sources = Vec::new();
    for s in Source::ALL
        .into_iter()
        .filter(|s| source.is_none_or(|f| f == s.as_str()))
    {
        let mut rows = Vec::new();
        let (mut top, mut bottom) = (0i64, 0i64);
        for stage in FunnelStage::ALL {
            let mut of_stage: Vec<(&str, i64, i64)> = event_types(s, stage)
                .iter()
                .map(|t| {
                    let key = (
                        s.as_str().to_owned(),
                        stage.as_str().to_owned(),
                        (*t).to_owned(),
                    );
                    let (events, users) = step.get(&key).copied().unwrap_or((0, 0));
                    (*t, events, users)
                })
                .collect();
            of_stage.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
            for (t, events, users) in of_stage {
                match stage {
                    FunnelStage::Top => top += events,
                    FunnelStage::Bottom => bottom += events,
                }
                rows.push(Step {
                    funnel_stage: stage.as_str(),
                    event_type: t,
                    events,
                    users,
                });
            }
        }
        let (top_users, converted) = users.get(s.as_str()).copied().unwrap_or((0, 0));
        sources.push((
            top,
            s.as_str(),
            SourceFunnel {
                source: s.as_str(),
                top_events: top,
                bottom_events: bottom,
                event_conversion: ratio(bottom, top),
                top_users,
                converted_users: converted,
                user_conversion: ratio(converted, top_users),
                steps: rows,
            },
        ));
    }
    sources.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    Ok(Json(Funnel {
        sources: sources.into_iter().map(|s| s.2).collect(),
    }))
}
