//! `GET /analytics/demographics?source=...`: distinct users by attribute value.
//!
//! Counted from the raw table over the range (exact; the per-user rollup that keeps this
//! fast at scale is the next step). A user is counted under every value their events in
//! the range carry (someone who moved shows under both countries).

use super::{AppState, Pairs, query};
use crate::params::Params;
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use service_kit::error::ApiError;
use std::collections::HashMap;
use utoipa::ToSchema;

/// The query parameters this report accepts.
pub const PARAMS: &[&str] = &["from", "to", "source"];

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

/// The buckets of `api.md`, in order, with their SQL conditions.
const AGE_BUCKETS: &[(&str, &str)] = &[
    ("<18", "v < 18"),
    ("18-24", "v BETWEEN 18 AND 24"),
    ("25-34", "v BETWEEN 25 AND 34"),
    ("35-44", "v BETWEEN 35 AND 44"),
    ("45-54", "v BETWEEN 45 AND 54"),
    ("55-64", "v BETWEEN 55 AND 64"),
    ("65+", "v >= 65"),
];
const FOLLOWER_BUCKETS: &[(&str, &str)] = &[
    ("<1k", "v < 1000"),
    ("1k-10k", "v >= 1000 AND v < 10000"),
    ("10k-100k", "v >= 10000 AND v < 100000"),
    ("100k-1M", "v >= 100000 AND v < 1000000"),
    ("1M+", "v >= 1000000"),
];

/// Distinct users per value of one attribute (a JSON path into `data`), over the range.
fn by_value_sql(expr: &str, extra: &str) -> String {
    format!(
        "\
SELECT {expr} AS value, count(DISTINCT user_id)::bigint
FROM events
WHERE source = $3 AND event_time >= $1 AND event_time < $2 {extra}
GROUP BY 1"
    )
}

/// Distinct users per numeric bucket.
fn buckets_sql(path: &str, buckets: &[(&str, &str)]) -> String {
    let cases: Vec<String> = buckets
        .iter()
        .map(|(label, cond)| format!("WHEN {cond} THEN '{label}'"))
        .collect();
    format!(
        "\
SELECT CASE {} END, count(DISTINCT user_id)::bigint
FROM (SELECT user_id, (data #>> '{path}')::numeric AS v FROM events
      WHERE source = $3 AND event_time >= $1 AND event_time < $2) AS e
GROUP BY 1",
        cases.join(" ")
    )
}

fn country_users(country: String, users: i64) -> CountryUsers {
    CountryUsers { country, users }
}

type Range = (time::OffsetDateTime, time::OffsetDateTime, &'static str);

async fn counts(
    app: &AppState,
    sql: &str,
    r: &Range,
) -> Result<Vec<(Option<String>, i64)>, ApiError> {
    let rows = query(&app.pool, "demographics", sql, &[&r.0, &r.1, &r.2]).await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// Every bucket, in order, zero when absent.
fn fixed(buckets: &[(&'static str, &str)], found: Vec<(Option<String>, i64)>) -> Vec<Bucket> {
    let found: HashMap<Option<String>, i64> = found.into_iter().collect();
    buckets
        .iter()
        .map(|(label, _)| Bucket {
            bucket: label,
            users: found.get(&Some((*label).to_owned())).copied().unwrap_or(0),
        })
        .collect()
}

/// Present values, by users descending then name, at most `limit`.
fn ranked<T>(
    found: Vec<(Option<String>, i64)>,
    limit: usize,
    row: impl Fn(String, i64) -> T,
) -> Vec<T> {
    let mut rows: Vec<(String, i64)> = found
        .into_iter()
        .filter_map(|(v, n)| Some((v?, n)))
        .collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows.truncate(limit);
    rows.into_iter().map(|(v, n)| row(v, n)).collect()
}

/// Distinct users by attribute value: ages, genders, countries and cities for Facebook;
/// follower counts, devices and countries for TikTok.
///
/// `users` = distinct userIds among the events in range having that attribute value.
#[utoipa::path(
    get,
    path = "/analytics/demographics",
    tag = "reports",
    params(crate::api_doc::RangeQuery, crate::api_doc::RequiredSourceQuery),
    responses(
        (status = 200, description = "The users of the source, by attribute", body = Demographics),
        crate::api_doc::ReportErrors,
    ),
    security((), ("bearer" = [])),
)]
pub async fn demographics(
    State(app): State<AppState>,
    pairs: Pairs,
) -> Result<Json<Demographics>, ApiError> {
    let mut p = Params::new(pairs.0, PARAMS);
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
    let r: Range = (from, to, source);

    if source == "facebook" {
        let ages = counts(&app, &buckets_sql("{user,age}", AGE_BUCKETS), &r).await?;
        let genders = counts(&app, &by_value_sql("data #>> '{user,gender}'", ""), &r).await?;
        let countries = counts(&app, &by_value_sql("country", ""), &r).await?;
        let cities = query(
            &app.pool,
            "demographics",
            "SELECT data #>> '{user,location,city}', country, count(DISTINCT user_id)::bigint
             FROM events WHERE source = $3 AND event_time >= $1 AND event_time < $2
             GROUP BY 1, 2",
            &[&r.0, &r.1, &r.2],
        )
        .await?;
        let mut cities: Vec<(String, String, i64)> = cities
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect();
        cities.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| (&a.0, &a.1).cmp(&(&b.0, &b.1))));
        cities.truncate(20);
        Ok(Json(Demographics::Facebook(FacebookDemographics {
            source,
            age_buckets: fixed(AGE_BUCKETS, ages),
            genders: ranked(genders, usize::MAX, |gender, users| GenderUsers {
                gender,
                users,
            }),
            countries: ranked(countries, 20, country_users),
            cities: cities
                .into_iter()
                .map(|(city, country, users)| CityUsers {
                    city,
                    country,
                    users,
                })
                .collect(),
        })))
    } else {
        let followers =
            counts(&app, &buckets_sql("{user,followers}", FOLLOWER_BUCKETS), &r).await?;
        let devices = counts(
            &app,
            &by_value_sql("data #>> '{engagement,device}'", "AND funnel_stage = 'top'"),
            &r,
        )
        .await?;
        let countries = counts(&app, &by_value_sql("country", ""), &r).await?;
        Ok(Json(Demographics::Tiktok(TiktokDemographics {
            source,
            follower_buckets: fixed(FOLLOWER_BUCKETS, followers),
            devices: ranked(devices, usize::MAX, |device, users| DeviceUsers {
                device,
                users,
            }),
            countries: ranked(countries, 20, country_users),
        })))
    }
}
