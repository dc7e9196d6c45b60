//! `GET /analytics/demographics?source=...`: distinct users by attribute value.
//!
//! From the per-user sets by attribute value (`crate::activity`). A user is counted under
//! every value their events in the range carry (someone who moved shows under both
//! countries).

use super::AppState;
use super::Pairs;
use crate::activity::{self, Selector, Sets};
use crate::format::{Accept, Report};
use crate::params::Params;
use axum::extract::State;
use serde::Serialize;
use service_kit::error::ApiError;
use shared_events::Source;
use user_sets::{AGE_BUCKETS, Dim, FOLLOWER_BUCKETS};
use utoipa::ToSchema;

/// The query parameters this report accepts.
pub const PARAMS: &[&str] = &["from", "to", "source", "format"];

/// Distinct users by attribute value; the shape depends on `source`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Demographics {
    Facebook(FacebookDemographics),
    Tiktok(TiktokDemographics),
}

/// `source=facebook`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FacebookDemographics {
    #[schema(example = "facebook")]
    pub source: &'static str,
    /// `<18`, `18-24`, `25-34`, `35-44`, `45-54`, `55-64`, `65+`: every bucket, in that order.
    pub age_buckets: Vec<Bucket>,
    /// By users descending, then gender.
    pub genders: Vec<GenderUsers>,
    /// Top 20, by users descending, then country.
    pub countries: Vec<CountryUsers>,
    /// Top 20, by users descending, then city and country.
    pub cities: Vec<CityUsers>,
}

/// `source=tiktok`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TiktokDemographics {
    #[schema(example = "tiktok")]
    pub source: &'static str,
    /// `<1k`, `1k-10k`, `10k-100k`, `100k-1M`, `1M+` (lower bound inclusive): every bucket, in
    /// that order.
    pub follower_buckets: Vec<Bucket>,
    /// Devices of top events, by users descending, then device.
    pub devices: Vec<DeviceUsers>,
    /// Top 20, by users descending, then country.
    pub countries: Vec<CountryUsers>,
}

/// Distinct users in a fixed bucket (0 when none).
#[derive(Debug, Serialize, ToSchema)]
pub struct Bucket {
    #[schema(example = "25-34")]
    pub bucket: &'static str,
    pub users: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GenderUsers {
    #[schema(example = "female")]
    pub gender: String,
    pub users: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceUsers {
    #[schema(example = "iOS")]
    pub device: String,
    pub users: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CountryUsers {
    #[schema(example = "Germany")]
    pub country: String,
    pub users: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CityUsers {
    #[schema(example = "Berlin")]
    pub city: String,
    #[schema(example = "Germany")]
    pub country: String,
    pub users: i64,
}

/// Distinct users per value of one attribute (`context`: the city's country).
fn values(sets: &Sets, dim: Dim) -> Vec<(String, String, i64)> {
    sets.iter()
        .filter(|(k, _)| k.dim == dim)
        .map(|(k, v)| {
            let context = k.context.clone().unwrap_or_default();
            (k.value.clone(), context, v.users.len() as i64)
        })
        .collect()
}

/// Every bucket, in order, zero when absent.
fn fixed(buckets: &[&'static str], found: Vec<(String, String, i64)>) -> Vec<Bucket> {
    buckets
        .iter()
        .map(|label| Bucket {
            bucket: label,
            users: found
                .iter()
                .find(|(v, _, _)| v == label)
                .map_or(0, |(_, _, n)| *n),
        })
        .collect()
}

/// Values by users descending then name, at most `limit`.
fn ranked<T>(
    mut rows: Vec<(String, String, i64)>,
    limit: usize,
    row: impl Fn(String, String, i64) -> T,
) -> Vec<T> {
    rows.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| (&a.0, &a.1).cmp(&(&b.0, &b.1))));
    rows.truncate(limit);
    rows.into_iter().map(|(v, c, n)| row(v, c, n)).collect()
}

/// Distinct users by attribute value: ages, genders, countries and cities for Facebook;
/// follower counts, devices and countries for TikTok.
///
/// `users` = distinct userIds among the events in range having that attribute value.
#[utoipa::path(
    get,
    path = "/analytics/demographics",
    tag = "reports",
    params(
        crate::api_doc::RangeQuery,
        crate::api_doc::RequiredSourceQuery,
        crate::api_doc::FormatQuery,
    ),
    responses(
        (
            status = 200,
            description = "The users of the source, by attribute: JSON, or CSV when asked (`format`)",
            content((Demographics = "application/json"), (String = "text/csv")),
            headers(("Data-As-Of" = String, description = "Every event stored before this instant is in the answer (RFC 3339 UTC): the request's time when reading the primary, earlier from a standby that lags; absent when unknown"), ("Content-Disposition" = String, description = "CSV only: `attachment; filename=\"demographics.csv\"`")),
        ),
        crate::api_doc::ReportErrors,
    ),
    security((), ("bearer" = [])),
)]
pub async fn demographics(
    State(app): State<AppState>,
    accept: Accept,
    pairs: Pairs,
) -> Result<Report<Demographics>, ApiError> {
    let mut p = Params::new(pairs.0, PARAMS);
    let format = p.format(accept);
    let (from, to) = p.range();
    let source = p.required_source();
    p.finish()?;
    let Some(source) = source else {
        return Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "source is required",
        ));
    };
    let dims = if source == "facebook" {
        vec![Dim::Age, Dim::Gender, Dim::City, Dim::Country]
    } else {
        vec![Dim::Followers, Dim::Device, Dim::Country]
    };
    let selector = Selector {
        dims,
        // `Params` gives a source's own wire name, so it parses.
        sources: vec![Source::parse(source)],
        stages: vec![None],
        types: vec![None],
    };
    let sets = activity::sets(&app.pool, "demographics", from, to, &selector).await?;
    let countries = ranked(values(&sets, Dim::Country), 20, |country, _, users| {
        CountryUsers { country, users }
    });
    let answer = if source == "facebook" {
        Demographics::Facebook(FacebookDemographics {
            source,
            age_buckets: fixed(AGE_BUCKETS, values(&sets, Dim::Age)),
            genders: ranked(
                values(&sets, Dim::Gender),
                usize::MAX,
                |gender, _, users| GenderUsers { gender, users },
            ),
            countries,
            cities: ranked(values(&sets, Dim::City), 20, |city, country, users| {
                CityUsers {
                    city,
                    country,
                    users,
                }
            }),
        })
    } else {
        Demographics::Tiktok(TiktokDemographics {
            source,
            follower_buckets: fixed(FOLLOWER_BUCKETS, values(&sets, Dim::Followers)),
            devices: ranked(
                values(&sets, Dim::Device),
                usize::MAX,
                |device, _, users| DeviceUsers { device, users },
            ),
            countries,
        })
    };
    Ok(Report::new(format, answer))
}
