//! `GET /analytics/funnel`: per source, events and distinct users at each step, and how
//! many users who had a top event also had a bottom event.
//!
//! Events come from `rollup_events`; distinct users from the per-user sets per source and
//! stage and per step (`crate::activity`), converted users as the intersection of a
//! source's top and bottom sets.

use super::stats::type_counts;
use super::{AppState, Pairs, ratio};
use crate::activity::{self, Selector};
use crate::format::{Accept, Report};
use crate::params::{Filters, Params};
use axum::extract::State;
use serde::Serialize;
use service_kit::error::ApiError;
use shared_events::{FunnelStage, Source, event_types};
use std::collections::HashMap;
use user_sets::{Dim, SetKey};
use utoipa::ToSchema;

/// The query parameters this report accepts.
pub const PARAMS: &[&str] = &["from", "to", "source", "format"];

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

/// Per source: events and distinct users at each step, and how many users who had a top
/// event also had a bottom event.
#[utoipa::path(
    get,
    path = "/analytics/funnel",
    tag = "reports",
    params(
        crate::api_doc::RangeQuery,
        crate::api_doc::SourceQuery,
        crate::api_doc::FormatQuery,
    ),
    responses(
        (
            status = 200,
            description = "The funnel of each source: JSON, or CSV when asked (`format`)",
            content((Funnel = "application/json"), (String = "text/csv")),
            headers(("Data-As-Of" = String, description = "Every event stored before this instant is in the answer (RFC 3339 UTC): the request's time when reading the primary, earlier from a standby that lags; absent when unknown"), ("Content-Disposition" = String, description = "CSV only: `attachment; filename=\"funnel.csv\"`")),
        ),
        crate::api_doc::ReportErrors,
    ),
    security((), ("bearer" = [])),
)]
pub async fn funnel(
    State(app): State<AppState>,
    accept: Accept,
    pairs: Pairs,
) -> Result<Report<Funnel>, ApiError> {
    let mut p = Params::new(pairs.0, PARAMS);
    let format = p.format(accept);
    let (from, to) = p.range();
    let source = p.source();
    p.finish()?;

    let filters = Filters {
        source,
        funnel_stage: None,
        event_type: None,
    };
    let step: HashMap<(String, String, String), i64> =
        type_counts(&app.pool, "funnel", from, to, &filters)
            .await?
            .into_iter()
            .map(|(s, st, t, n)| ((s, st, t), n))
            .collect();
    let wanted: Vec<Source> = Source::ALL
        .into_iter()
        .filter(|s| source.is_none_or(|f| f == s.as_str()))
        .collect();
    // Per source and stage (any type), and per step.
    let mut types = vec![None];
    for s in &wanted {
        for stage in FunnelStage::ALL {
            types.extend(event_types(*s, stage).iter().map(|t| Some(*t)));
        }
    }
    let selector = Selector {
        dims: vec![Dim::All],
        sources: wanted.iter().map(|s| Some(*s)).collect(),
        stages: FunnelStage::ALL.map(Some).to_vec(),
        types,
    };
    let sets = activity::sets(&app.pool, "funnel", from, to, &selector).await?;
    let set = |source: Source, stage: FunnelStage, event_type: Option<&str>| {
        let key = SetKey {
            dim: Dim::All,
            source: Some(source),
            funnel_stage: Some(stage),
            event_type,
            value: "",
            context: None,
        };
        sets.get(&key.to_owned_key()).map(|v| &v.users)
    };

    let mut sources = Vec::new();
    for s in wanted {
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
                    let events = step.get(&key).copied().unwrap_or(0);
                    let users = set(s, stage, Some(t)).map_or(0, |u| u.len() as i64);
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
        let (top_users, converted) = match (
            set(s, FunnelStage::Top, None),
            set(s, FunnelStage::Bottom, None),
        ) {
            (Some(top), Some(bottom)) => (top.len() as i64, top.intersection_len(bottom) as i64),
            (Some(top), None) => (top.len() as i64, 0),
            _ => (0, 0),
        };
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
    Ok(Report::new(
        format,
        Funnel {
            sources: sources.into_iter().map(|s| s.2).collect(),
        },
    ))
}
