//! Every report over the extreme ranges: the widest one accepted, ranges at the first and
//! last instants RFC 3339 can write in UTC (reached through offsets too), and ranges
//! straddling them. Each answer is a 200 with the right figures for four known events or
//! a 400 naming the parameters, never a 5xx or a dropped connection; before and after the
//! worker compacts the events' slots into blocks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use anyhow::Context;
use serde_json::{Value, json};
use std::time::Duration;
use testkit::{Platform, Services, facebook_bottom, facebook_top, tiktok_bottom, tiktok_top};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Which known events a range holds, or which parameters make it refused.
#[derive(Debug, Clone, Copy)]
enum Holds {
    All,
    Nothing,
    Refused(&'static [&'static str]),
}

/// `(from, to, what)`; `None`: the parameter is left out.
const RANGES: &[(Option<&str>, Option<&str>, Holds)] = &[
    // The widest range: the first to the last instant.
    (
        Some("0000-01-01T00:00:00Z"),
        Some("9999-12-31T23:59:59.999999999Z"),
        Holds::All,
    ),
    // Year 1 at +01:00 is still year 0 in UTC, until now.
    (Some("0001-01-01T00:00:00+01:00"), None, Holds::All),
    (
        Some("0001-01-01T00:00:00+01:00"),
        Some("0001-01-01T00:00:00+00:00"),
        Holds::Nothing,
    ),
    (
        Some("0000-01-01T00:00:00Z"),
        Some("0000-01-01T00:00:00.000001Z"),
        Holds::Nothing,
    ),
    // The default from (to - 7 days) stops at the first instant.
    (None, Some("0000-01-02T00:00:00Z"), Holds::Nothing),
    // The hour of the issue, and the last quarter-hour and hour, whose next slot, hour
    // and day are past 9999.
    (
        Some("9999-12-31T12:00:00Z"),
        Some("9999-12-31T13:00:00Z"),
        Holds::Nothing,
    ),
    (
        Some("9999-12-31T23:45:00.5Z"),
        Some("9999-12-31T23:59:59.999999999Z"),
        Holds::Nothing,
    ),
    (
        Some("9999-12-31T22:00:00-01:00"),
        Some("9999-12-31T22:59:59.999999999-01:00"),
        Holds::Nothing,
    ),
    // Past the last instant in UTC (10000-01-01T00:59:59Z), or before the first.
    (
        Some("9999-12-31T23:59:59-01:00"),
        None,
        Holds::Refused(&["from"]),
    ),
    (
        Some("2026-03-01T00:00:00Z"),
        Some("9999-12-31T23:59:59-01:00"),
        Holds::Refused(&["to"]),
    ),
    (
        Some("0000-01-01T00:00:00+01:00"),
        Some("2026-03-01T00:00:00Z"),
        Holds::Refused(&["from"]),
    ),
    // Straddling a bound: one end in, the other a minute out.
    (
        Some("0000-01-01T00:00:00+00:01"),
        Some("0000-01-01T00:01:00Z"),
        Holds::Refused(&["from"]),
    ),
    (
        Some("9999-12-31T23:00:00Z"),
        Some("9999-12-31T23:59:00-00:02"),
        Holds::Refused(&["to"]),
    ),
    (
        Some("0000-01-01T00:00:00+00:01"),
        Some("9999-12-31T23:59:59.999999999-00:01"),
        Holds::Refused(&["from", "to"]),
    ),
    // Empty ranges, at the bounds and across offsets.
    (
        Some("9999-12-31T23:59:59.999999999Z"),
        Some("9999-12-31T23:59:59.999999999Z"),
        Holds::Refused(&["from"]),
    ),
    (
        Some("0000-01-01T00:00:00Z"),
        Some("0000-01-01T00:00:00Z"),
        Holds::Refused(&["from"]),
    ),
    (
        Some("9999-12-31T23:00:00Z"),
        Some("9999-12-31T22:00:00-01:00"),
        Holds::Refused(&["from"]),
    ),
    (None, Some("0000-01-01T00:00:00Z"), Holds::Refused(&["to"])),
];

/// The reports but the time series, with the figures checked of their answers.
const REPORTS: &[&str] = &[
    "/analytics/stats?",
    "/analytics/revenue?",
    "/analytics/revenue?campaignId=cmp-12&",
    "/analytics/campaigns/top?",
    "/analytics/funnel?",
    "/analytics/geo?",
    "/analytics/users/top?",
    "/analytics/demographics?source=facebook&",
    "/analytics/demographics?source=tiktok&",
];

/// Two users with a top and a bottom event each, Facebook's with a campaign and 149.99,
/// TikTok's with 10.00; at odd offsets.
fn known_events() -> Vec<Value> {
    vec![
        facebook_top("fb-top", "2026-03-01T12:00:00Z", "fb-1", "Germany"),
        facebook_bottom(
            "fb-bottom",
            "2026-03-01T12:05:00+02:00",
            "fb-1",
            Some("149.99"),
        ),
        tiktok_top("tt-top", "2026-03-02T00:00:00Z", "tt-1", "Japan"),
        tiktok_bottom(
            "tt-bottom",
            "2026-03-02T00:00:01-05:30",
            "tt-1",
            Some("10.00"),
        ),
    ]
}

/// The figures of a report a user would look at.
fn figures(report: &str, body: &Value) -> Value {
    let path = report.split('?').next().unwrap_or_default();
    match path {
        "/analytics/stats" => json!([body["total"], body["bySource"], body["byFunnelStage"]]),
        "/analytics/revenue" => json!([body["total"], body["purchases"], body["bySource"]]),
        "/analytics/funnel" => {
            let sources = body["sources"].as_array().cloned().unwrap_or_default();
            sources
                .iter()
                .map(|s| {
                    json!([
                        s["source"],
                        s["topEvents"],
                        s["bottomEvents"],
                        s["topUsers"],
                        s["convertedUsers"]
                    ])
                })
                .collect()
        }
        "/analytics/demographics" => {
            // Only the buckets anyone is in.
            let mut out = body.clone();
            for key in ["ageBuckets", "followerBuckets"] {
                if let Some(buckets) = out.get_mut(key).and_then(Value::as_array_mut) {
                    buckets.retain(|b| b["users"] != 0);
                }
            }
            out
        }
        _ => body.clone(),
    }
}

/// What `report` answers over a range holding every known event, or none.
fn expected(report: &str, all: bool) -> Value {
    let n = |x: i64| if all { x } else { 0 };
    let path = report.split('?').next().unwrap_or_default();
    match (path, report.contains("cmp-12"), report.contains("tiktok")) {
        ("/analytics/stats", ..) if all => json!([4, [
            {"source": "facebook", "count": 2}, {"source": "tiktok", "count": 2}],
            [{"funnelStage": "bottom", "count": 2}, {"funnelStage": "top", "count": 2}]]),
        ("/analytics/stats", ..) => json!([0, [], []]),
        ("/analytics/revenue", false, _) if all => json!(["159.99", 2, [
            {"source": "facebook", "revenue": "149.99", "purchases": 1},
            {"source": "tiktok", "revenue": "10.00", "purchases": 1}]]),
        ("/analytics/revenue", true, _) if all => json!(["149.99", 1, [
            {"source": "facebook", "revenue": "149.99", "purchases": 1}]]),
        ("/analytics/revenue", ..) => json!(["0.00", 0, []]),
        ("/analytics/campaigns/top", ..) if all => json!({"campaigns": [
            {"campaignId": "cmp-12", "events": 1, "purchases": 1, "revenue": "149.99"}]}),
        ("/analytics/campaigns/top", ..) => json!({"campaigns": []}),
        ("/analytics/funnel", ..) => json!([
            ["facebook", n(1), n(1), n(1), n(1)],
            ["tiktok", n(1), n(1), n(1), n(1)]
        ]),
        ("/analytics/geo", ..) if all => json!({"countries": [
            {"country": "Germany", "events": 2, "users": 1, "revenue": "149.99"},
            {"country": "Japan", "events": 1, "users": 1, "revenue": "0.00"}],
            "unknownCountryEvents": 1}),
        ("/analytics/geo", ..) => json!({"countries": [], "unknownCountryEvents": 0}),
        ("/analytics/users/top", ..) if all => json!({"users": [
            {"source": "facebook", "userId": "fb-1", "events": 2, "revenue": "149.99"},
            {"source": "tiktok", "userId": "tt-1", "events": 2, "revenue": "10.00"}]}),
        ("/analytics/users/top", ..) => json!({"users": []}),
        ("/analytics/demographics", _, false) if all => json!({"source": "facebook",
            "ageBuckets": [{"bucket": "25-34", "users": 1}],
            "genders": [{"gender": "female", "users": 1}],
            "countries": [{"country": "Germany", "users": 1}],
            "cities": [{"city": "Berlin", "country": "Germany", "users": 1}]}),
        ("/analytics/demographics", _, false) => json!({"source": "facebook",
            "ageBuckets": [], "genders": [], "countries": [], "cities": []}),
        ("/analytics/demographics", _, true) if all => json!({"source": "tiktok",
            "followerBuckets": [{"bucket": "10k-100k", "users": 1}],
            "devices": [{"device": "iOS", "users": 1}],
            "countries": [{"country": "Japan", "users": 1}]}),
        ("/analytics/demographics", _, true) => json!({"source": "tiktok",
            "followerBuckets": [], "devices": [], "countries": []}),
        _ => panic!("no expectation for {report}"),
    }
}

/// `from=..&to=..` as a query, encoded.
fn query(from: Option<&str>, to: Option<&str>) -> String {
    let enc = |s: &str| s.replace('+', "%2B").replace(':', "%3A");
    let mut q = Vec::new();
    if let Some(from) = from {
        q.push(format!("from={}", enc(from)));
    }
    if let Some(to) = to {
        q.push(format!("to={}", enc(to)));
    }
    q.join("&")
}

/// The status and body of a GET; an error when no answer arrives (a dropped connection).
/// The platform and its services.
struct Pipeline {
    platform: Platform,
    services: Services,
}

async fn get(p: &Pipeline, path: &str) -> anyhow::Result<(u16, Value)> {
    let r = p
        .platform
        .http
        .get(p.services.analytics.url(path))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .with_context(|| format!("no answer to {path}"))?;
    let status = r.status().as_u16();
    let body = r
        .json()
        .await
        .with_context(|| format!("{path}: not JSON"))?;
    Ok((status, body))
}

/// A 400 `invalid_parameter` naming exactly `fields`, each with a reason.
fn assert_refused(path: &str, status: u16, body: &Value, fields: &[&str]) {
    assert_eq!(status, 400, "{path}: {body}");
    assert_eq!(body["error"]["code"], "invalid_parameter", "{path}: {body}");
    let details = body["error"]["details"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let named: Vec<&str> = details.iter().filter_map(|d| d["field"].as_str()).collect();
    assert_eq!(named, fields, "{path}: {body}");
    assert!(
        details
            .iter()
            .all(|d| d["reason"].as_str().is_some_and(|r| !r.is_empty())),
        "{path}: {body}"
    );
}

/// The time series over a range: a 400 naming `interval` when it holds over 10,000
/// buckets, else consecutive buckets from `first`, `points` of them, whose counts and
/// revenue add up to the known events in the range.
async fn check_timeseries(
    p: &Pipeline,
    range: &str,
    interval: &str,
    expect: Result<(&str, usize, i64, &str), &[&str]>,
) -> anyhow::Result<()> {
    let path = format!("/analytics/timeseries?interval={interval}&{range}");
    let (status, body) = get(p, &path).await?;
    let (first, points, count, revenue) = match expect {
        Err(fields) => {
            assert_refused(&path, status, &body, fields);
            return Ok(());
        }
        Ok(expect) => expect,
    };
    assert_eq!(status, 200, "{path}: {body}");
    let got = body["points"].as_array().cloned().unwrap_or_default();
    assert_eq!(got.len(), points, "{path}");
    let step = if interval == "hour" { 3600 } else { 86_400 };
    let mut at = OffsetDateTime::parse(first, &Rfc3339)?;
    let (mut total, mut money) = (0, rust_decimal::Decimal::ZERO);
    for point in &got {
        let bucket = point["bucket"].as_str().unwrap_or_default();
        assert_eq!(OffsetDateTime::parse(bucket, &Rfc3339)?, at, "{path}");
        assert!(bucket.ends_with('Z'), "{path}: {bucket} is in UTC");
        at = at.checked_add(time::Duration::seconds(step)).unwrap_or(at);
        total += point["count"].as_i64().unwrap_or(-1);
        money += point["revenue"]
            .as_str()
            .unwrap_or_default()
            .parse::<rust_decimal::Decimal>()?;
    }
    assert_eq!(
        (total, money.to_string()),
        (count, revenue.to_owned()),
        "{path}"
    );
    Ok(())
}

/// Every report over every range of [`RANGES`], and the time series over its own.
async fn check_every_report(p: &Pipeline, state: &str) -> anyhow::Result<()> {
    for &(from, to, holds) in RANGES {
        let range = query(from, to);
        for report in REPORTS {
            let path = format!("{report}{range}");
            let (status, body) = get(p, &path).await?;
            match holds {
                Holds::Refused(fields) => assert_refused(&path, status, &body, fields),
                Holds::All | Holds::Nothing => {
                    assert_eq!(status, 200, "{state}: {path}: {body}");
                    assert_eq!(
                        figures(report, &body),
                        expected(report, matches!(holds, Holds::All)),
                        "{state}: {path}"
                    );
                }
            }
        }
        // The range is given back in UTC, as sent.
        if !matches!(holds, Holds::Refused(_))
            && let (Some(from), Some(to)) = (from, to)
        {
            let (_, body) = get(p, &format!("/analytics/stats?{range}")).await?;
            for (field, sent) in [("from", from), ("to", to)] {
                let given = body[field].as_str().unwrap_or_default();
                assert!(given.ends_with('Z'), "{field}: {given}");
                assert_eq!(
                    OffsetDateTime::parse(given, &Rfc3339)?,
                    OffsetDateTime::parse(sent, &Rfc3339)?,
                    "{range}"
                );
            }
        }
    }

    // More than 10,000 buckets: refused naming the interval, whatever the range.
    let widest = query(
        Some("0000-01-01T00:00:00Z"),
        Some("9999-12-31T23:59:59.999999999Z"),
    );
    let since_year_1 = query(Some("0001-01-01T00:00:00+01:00"), None);
    for range in [&widest, &since_year_1] {
        for interval in ["hour", "day"] {
            check_timeseries(p, range, interval, Err(&["interval"])).await?;
        }
    }
    // 27 years of days at -01:00 hold every event; 9,862 points.
    let years = query(
        Some("1999-12-31T23:00:00-01:00"),
        Some("2026-12-31T23:00:00-01:00"),
    );
    check_timeseries(
        p,
        &years,
        "day",
        Ok(("2000-01-01T00:00:00Z", 9862, 4, "159.99")),
    )
    .await?;
    check_timeseries(p, &years, "hour", Err(&["interval"])).await?;
    // The last day of time: 24 hours, one day, the last hour ending at the last instant.
    let last_day = query(
        Some("9999-12-31T00:00:00Z"),
        Some("9999-12-31T23:59:59.999999999Z"),
    );
    check_timeseries(
        p,
        &last_day,
        "hour",
        Ok(("9999-12-31T00:00:00Z", 24, 0, "0.00")),
    )
    .await?;
    check_timeseries(
        p,
        &last_day,
        "day",
        Ok(("9999-12-31T00:00:00Z", 1, 0, "0.00")),
    )
    .await?;
    // The first instants, reached through an offset.
    let first = query(
        Some("0001-01-01T00:00:00+01:00"),
        Some("0001-01-01T00:00:00+00:00"),
    );
    check_timeseries(
        p,
        &first,
        "hour",
        Ok(("0000-12-31T23:00:00Z", 1, 0, "0.00")),
    )
    .await?;
    check_timeseries(p, &first, "day", Ok(("0000-12-31T00:00:00Z", 1, 0, "0.00"))).await?;
    let default_from = query(None, Some("0000-01-02T00:00:00Z"));
    check_timeseries(
        p,
        &default_from,
        "hour",
        Ok(("0000-01-01T00:00:00Z", 24, 0, "0.00")),
    )
    .await?;
    for &(from, to, holds) in RANGES {
        if let Holds::Refused(fields) = holds {
            check_timeseries(p, &query(from, to), "day", Err(fields)).await?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn every_report_answers_extreme_ranges_with_figures_or_a_400_naming_the_field()
-> anyhow::Result<()> {
    // The worker compacts only when this test says so, to read both the events listed
    // for their slots and the blocks built from them.
    let platform = Platform::start().await?;
    let services = platform
        .start_services(
            &["--worker-batch-size=64", "--worker-compact-interval=1h"],
            &["--analytics-rate-limit-per-sec=0"],
        )
        .await?;
    let p = Pipeline { platform, services };
    let body = Value::Array(known_events());
    let url = p.services.ingestion.url("/webhook/event");
    testkit::eventually("202", Duration::from_secs(30), || async {
        let r = p.platform.http.post(&url).json(&body).send().await.ok()?;
        (r.status() == 202).then_some(())
    })
    .await?;
    let client = p.platform.db().await?;
    testkit::eventually("every event stored", Duration::from_secs(60), || async {
        let row = client
            .query_one("SELECT count(*) FROM events", &[])
            .await
            .ok()?;
        (row.get::<_, i64>(0) == 4).then_some(())
    })
    .await?;

    check_every_report(&p, "events listed, no block built").await?;
    let mut client = p.platform.db().await?;
    worker::compact::until_clean(&mut client).await?;
    check_every_report(&p, "blocks built").await?;
    Ok(())
}
