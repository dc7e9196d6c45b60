//! The time series in a reader's time zone (`tz`) against an independent computation.
//! Events around the DST changes of Europe/Berlin and America/New_York (on the local
//! midnights, at the changes, in the hours that happen twice or not at all) and on the
//! boundaries of Asia/Kolkata (+05:30) and Asia/Kathmandu (+05:45) go through the real
//! pipeline; PostgreSQL's own time zone database then buckets the stored events, and
//! every answer must list the same buckets (start instant and offset), counts and revenue.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rust_decimal::Decimal;
use serde_json::Value;
use std::time::Duration;
use testkit::{Platform, Services, facebook_bottom, facebook_top, tiktok_bottom, tiktok_top};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// Instants where something changes, written as a reader in the zone would: local
/// midnights and their last millisecond, the changes themselves, both 02:30 of a
/// fall-back and an 02:30 that does not exist (it is 03:30 after the change).
const EDGES: &[&str] = &[
    // Europe/Berlin, spring: 2026-03-29 02:00 +01:00 becomes 03:00 +02:00 (01:00Z).
    "2026-03-28T23:59:59.999+01:00",
    "2026-03-29T00:00:00+01:00",
    "2026-03-29T01:59:59.999+01:00",
    "2026-03-29T03:00:00+02:00",
    "2026-03-29T02:30:00+01:00",
    "2026-03-29T23:59:59.999+02:00",
    "2026-03-30T00:00:00+02:00",
    // Europe/Berlin, autumn: 2026-10-25 03:00 +02:00 becomes 02:00 +01:00 (01:00Z).
    "2026-10-24T23:59:59.999+02:00",
    "2026-10-25T00:00:00+02:00",
    "2026-10-25T02:30:00+02:00",
    "2026-10-25T02:59:59.999+02:00",
    "2026-10-25T02:00:00+01:00",
    "2026-10-25T02:30:00+01:00",
    "2026-10-25T23:59:59.999+01:00",
    "2026-10-26T00:00:00+01:00",
    // America/New_York, spring: 2026-03-08 02:00 -05:00 becomes 03:00 -04:00 (07:00Z).
    "2026-03-07T23:59:59.999-05:00",
    "2026-03-08T00:00:00-05:00",
    "2026-03-08T01:59:59.999-05:00",
    "2026-03-08T03:00:00-04:00",
    "2026-03-08T02:30:00-05:00",
    "2026-03-09T00:00:00-04:00",
    // America/New_York, autumn: 2026-11-01 02:00 -04:00 becomes 01:00 -05:00 (06:00Z).
    "2026-11-01T00:00:00-04:00",
    "2026-11-01T01:30:00-04:00",
    "2026-11-01T01:00:00-05:00",
    "2026-11-01T01:30:00-05:00",
    "2026-11-01T23:59:59.999-05:00",
    "2026-11-02T00:00:00-05:00",
    // Asia/Kolkata: days begin at 18:30Z; Asia/Kathmandu: hours at a quarter past.
    "2026-03-27T23:59:59.999+05:30",
    "2026-03-28T00:00:00+05:30",
    "2026-03-27T10:14:59.999Z",
    "2026-03-27T10:15:00Z",
];

/// Windows around the changes, where events fall every 47 minutes and 11 seconds.
const WINDOWS: &[(&str, &str)] = &[
    ("2026-03-26T00:00:00Z", "2026-04-01T00:00:00Z"),
    ("2026-10-22T00:00:00Z", "2026-10-28T00:00:00Z"),
    ("2026-03-06T00:00:00Z", "2026-03-10T00:00:00Z"),
    ("2026-10-30T00:00:00Z", "2026-11-03T00:00:00Z"),
];

fn at(s: &str) -> OffsetDateTime {
    OffsetDateTime::parse(s, &Rfc3339).unwrap()
}

/// Every kind of event in turn, bottom ones with varied amounts (some null).
fn events() -> Vec<Value> {
    let mut times: Vec<String> = EDGES.iter().map(|s| s.to_string()).collect();
    for (from, to) in WINDOWS {
        let (mut t, to) = (at(from), at(to));
        while t < to {
            times.push(t.format(&Rfc3339).unwrap());
            t += time::Duration::seconds(47 * 60 + 11);
        }
    }
    times
        .iter()
        .enumerate()
        .map(|(n, t)| {
            let id = format!("tz-{n}");
            let amount = format!("{}.{:02}", 3 + n % 50, n % 100);
            let amount = (n % 9 != 0).then_some(amount.as_str());
            match n % 4 {
                0 => facebook_top(&id, t, "fb-1", "Germany"),
                1 => facebook_bottom(&id, t, "fb-1", amount),
                2 => tiktok_top(&id, t, "tt-1", "Japan"),
                _ => tiktok_bottom(&id, t, "tt-1", amount),
            }
        })
        .collect()
}

struct Pipeline {
    platform: Platform,
    services: Services,
    db: tokio_postgres::Client,
}

impl Pipeline {
    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .platform
            .http
            .get(self.services.analytics.url(path))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

async fn pipeline() -> Pipeline {
    let platform = Platform::start().await.unwrap();
    let services = platform
        .start_services(
            &["--worker-batch-size=64"],
            &["--analytics-rate-limit-per-sec=0"],
        )
        .await
        .unwrap();
    let events = events();
    let url = services.ingestion.url("/webhook/event");
    for chunk in events.chunks(200) {
        let body = Value::Array(chunk.to_vec());
        testkit::eventually("202", Duration::from_secs(30), || async {
            let r = platform.http.post(&url).json(&body).send().await.ok()?;
            (r.status() == 202).then_some(())
        })
        .await
        .unwrap();
    }
    let db = platform.db().await.unwrap();
    testkit::eventually("every event stored", Duration::from_secs(60), || async {
        let row = db
            .query_one("SELECT count(*) FROM events", &[])
            .await
            .ok()?;
        (row.get::<_, i64>(0) == events.len() as i64).then_some(())
    })
    .await
    .unwrap();
    Pipeline {
        platform,
        services,
        db,
    }
}

/// The events passing the filters ($4 source, $5 event type) in `[$2, $3)`.
const EVENTS: &str = "SELECT event_time, revenue FROM events \
    WHERE event_time >= $2 AND event_time < $3 \
      AND ($4::text IS NULL OR source = $4) AND ($5::text IS NULL OR event_type = $5)";

/// Local days by PostgreSQL: every local date from `from`'s to the last instant's, its
/// start the instant of its local midnight, the events grouped by their local date.
const DAYS: &str = "WITH b AS ( \
      SELECT d::date AS day, d AT TIME ZONE $1 AS start \
      FROM generate_series(date_trunc('day', $2::timestamptz AT TIME ZONE $1), \
                           ($3::timestamptz - interval '1 microsecond') AT TIME ZONE $1, \
                           interval '1 day') AS d), \
    e AS (SELECT (event_time AT TIME ZONE $1)::date AS day, count(*) AS n, sum(revenue) AS v \
          FROM (EVENTS) AS x GROUP BY 1) \
    SELECT b.start, \
      extract(epoch FROM (b.start AT TIME ZONE $1) - (b.start AT TIME ZONE 'UTC'))::int, \
      coalesce(e.n, 0), coalesce(e.v, 0) \
    FROM b LEFT JOIN e USING (day) ORDER BY b.start";

/// Local hours by PostgreSQL, for zones whose offset within the range stays the same
/// modulo an hour: an event's hour starts at its local time truncated to the hour, less
/// its own offset (so the two 02:00 of a fall-back stay apart); the buckets are every
/// hour from the one holding `from`.
const HOURS: &str = "WITH e AS ( \
      SELECT (date_trunc('hour', event_time AT TIME ZONE $1) \
              - ((event_time AT TIME ZONE $1) - (event_time AT TIME ZONE 'UTC'))) \
             AT TIME ZONE 'UTC' AS start, count(*) AS n, sum(revenue) AS v \
      FROM (EVENTS) AS x GROUP BY 1), \
    f AS (SELECT (date_trunc('hour', $2::timestamptz AT TIME ZONE $1) \
              - (($2::timestamptz AT TIME ZONE $1) - ($2::timestamptz AT TIME ZONE 'UTC'))) \
             AT TIME ZONE 'UTC' AS first), \
    b AS (SELECT g AS start FROM f, \
          generate_series(f.first, $3::timestamptz - interval '1 microsecond', \
                          interval '1 hour') AS g) \
    SELECT b.start, \
      extract(epoch FROM (b.start AT TIME ZONE $1) - (b.start AT TIME ZONE 'UTC'))::int, \
      coalesce(e.n, 0), coalesce(e.v, 0) \
    FROM b LEFT JOIN e USING (start) ORDER BY b.start";

/// `(bucket as RFC 3339 at its offset, count, revenue)` per bucket, by PostgreSQL.
async fn expected(
    p: &Pipeline,
    tz: &str,
    interval: &str,
    range: (&str, &str),
    filter: (Option<&str>, Option<&str>),
) -> Vec<(String, i64, Decimal)> {
    let template = if interval == "day" { DAYS } else { HOURS };
    let sql = template.replace("EVENTS", EVENTS);
    let (from, to) = (at(range.0), at(range.1));
    let rows =
        p.db.query(&sql, &[&tz, &from, &to, &filter.0, &filter.1])
            .await
            .unwrap();
    rows.iter()
        .map(|r| {
            let offset = UtcOffset::from_whole_seconds(r.get(1)).unwrap();
            let start: OffsetDateTime = r.get(0);
            let bucket = start.to_offset(offset).format(&Rfc3339).unwrap();
            (bucket, r.get(2), r.get(3))
        })
        .collect()
}

/// The same from the service.
async fn answered(
    p: &Pipeline,
    tz: &str,
    interval: &str,
    range: (&str, &str),
    filter: (Option<&str>, Option<&str>),
) -> Vec<(String, i64, Decimal)> {
    let enc = |s: &str| s.replace('+', "%2B").replace(':', "%3A");
    let mut path = format!(
        "/analytics/timeseries?interval={interval}&tz={tz}&from={}&to={}",
        enc(range.0),
        enc(range.1)
    );
    if let Some(source) = filter.0 {
        path.push_str(&format!("&source={source}"));
    }
    if let Some(event_type) = filter.1 {
        path.push_str(&format!("&eventType={event_type}"));
    }
    let (status, body) = p.get(&path).await;
    assert_eq!(status, 200, "{path}: {body}");
    assert_eq!(body["tz"], tz, "{path}");
    assert_eq!(body["interval"], interval, "{path}");
    body["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|point| {
            let revenue = point["revenue"].as_str().unwrap().parse().unwrap();
            let bucket = point["bucket"].as_str().unwrap().to_owned();
            (bucket, point["count"].as_i64().unwrap(), revenue)
        })
        .collect()
}

/// `(tz, interval, from, to)`: ragged and whole ranges over each change.
const CASES: &[(&str, &str, &str, &str)] = &[
    (
        "Europe/Berlin",
        "day",
        "2026-03-26T10:30:15.500Z",
        "2026-04-01T00:00:00Z",
    ),
    (
        "Europe/Berlin",
        "day",
        "2026-10-22T00:00:00Z",
        "2026-10-28T00:00:00Z",
    ),
    (
        "Europe/Berlin",
        "hour",
        "2026-03-28T20:10:00Z",
        "2026-03-29T04:40:30Z",
    ),
    (
        "Europe/Berlin",
        "hour",
        "2026-10-24T21:59:59Z",
        "2026-10-25T04:00:00Z",
    ),
    (
        "America/New_York",
        "day",
        "2026-03-06T00:00:00Z",
        "2026-03-10T00:00:00Z",
    ),
    (
        "America/New_York",
        "day",
        "2026-10-30T13:14:15Z",
        "2026-11-03T00:00:00Z",
    ),
    (
        "America/New_York",
        "hour",
        "2026-03-08T03:00:00Z",
        "2026-03-08T10:00:00Z",
    ),
    (
        "America/New_York",
        "hour",
        "2026-11-01T03:20:00Z",
        "2026-11-01T09:00:00.001Z",
    ),
    (
        "Asia/Kolkata",
        "day",
        "2026-03-26T00:00:00Z",
        "2026-04-01T00:00:00Z",
    ),
    (
        "Asia/Kolkata",
        "hour",
        "2026-03-27T15:00:00Z",
        "2026-03-28T02:00:00Z",
    ),
    (
        "Asia/Kathmandu",
        "day",
        "2026-03-26T00:00:00Z",
        "2026-04-01T00:00:00Z",
    ),
    (
        "Asia/Kathmandu",
        "hour",
        "2026-03-27T05:00:00Z",
        "2026-03-27T15:00:00Z",
    ),
    (
        "UTC",
        "day",
        "2026-03-26T10:30:15.500Z",
        "2026-04-01T00:00:00Z",
    ),
    // Most of a year of Kolkata's days: too many pieces to list, joined from arrays.
    (
        "Asia/Kolkata",
        "day",
        "2026-01-01T00:00:00Z",
        "2026-12-01T00:00:00Z",
    ),
    (
        "Europe/Berlin",
        "day",
        "2026-01-01T00:00:00Z",
        "2026-12-01T00:00:00Z",
    ),
];

#[tokio::test]
async fn local_buckets_equal_postgresqls_own_time_zone_arithmetic() {
    let p = pipeline().await;
    let filters = [
        (None, None),
        (Some("tiktok"), None),
        (None, Some("checkout.complete")),
    ];
    for &(tz, interval, from, to) in CASES {
        for filter in filters {
            let want = expected(&p, tz, interval, (from, to), filter).await;
            let got = answered(&p, tz, interval, (from, to), filter).await;
            assert!(
                want.iter().any(|b| b.1 > 0),
                "{tz} {interval} {from}: no events"
            );
            assert_eq!(got, want, "{tz} {interval} {from} {to} {filter:?}");
        }
    }
}

#[tokio::test]
async fn dst_days_and_hours_read_as_a_reader_in_the_zone_expects() {
    let p = pipeline().await;
    let none = (None, None);
    let days = answered(
        &p,
        "Europe/Berlin",
        "day",
        ("2026-10-24T00:00:00Z", "2026-10-26T00:00:00Z"),
        none,
    )
    .await;
    let buckets: Vec<&str> = days.iter().map(|d| d.0.as_str()).collect();
    assert_eq!(
        buckets,
        [
            "2026-10-24T00:00:00+02:00",
            "2026-10-25T00:00:00+02:00",
            "2026-10-26T00:00:00+01:00"
        ]
    );
    // The two 02:00 of the fall-back are two hours, each with its events.
    let hours = answered(
        &p,
        "Europe/Berlin",
        "hour",
        ("2026-10-25T00:00:00Z", "2026-10-25T02:00:00Z"),
        none,
    )
    .await;
    let buckets: Vec<&str> = hours.iter().map(|h| h.0.as_str()).collect();
    assert_eq!(
        buckets,
        ["2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00"]
    );
    assert!(hours.iter().all(|h| h.1 >= 2), "{hours:?}");
    // Without tz, and with any spelling of it, UTC-aligned buckets written in UTC.
    let (status, body) = p
        .get("/analytics/timeseries?interval=day&from=2026-03-28T00%3A00%3A00Z&to=2026-03-30T00%3A00%3A00Z")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tz"], "UTC");
    assert_eq!(body["points"][1]["bucket"], "2026-03-29T00:00:00Z");
    let (_, spelled) = p
        .get("/analytics/timeseries?interval=day&tz=europe/berlin&from=2026-03-28T00%3A00%3A00Z&to=2026-03-30T00%3A00%3A00Z")
        .await;
    assert_eq!(spelled["tz"], "Europe/Berlin");
}

#[tokio::test]
async fn an_unknown_zone_local_mean_time_and_local_years_past_9999_are_400s() {
    let p = pipeline().await;
    let cases = [
        ("tz=Mars%2FOlympus", "tz"),
        ("tz=", "tz"),
        ("tz=UTC&tz=UTC", "tz"),
        // Liberia kept -00:44:30 until 1972.
        (
            "tz=Africa/Monrovia&from=1971-06-01T00%3A00%3A00Z&to=1971-06-03T00%3A00%3A00Z",
            "tz",
        ),
        (
            "tz=Asia/Kolkata&from=9999-12-31T00%3A00%3A00Z&to=9999-12-31T23%3A59%3A59Z",
            "to",
        ),
        (
            "tz=Asia/Kolkata&interval=hour&from=2025-01-01T00%3A00%3A00Z&to=2026-12-01T00%3A00%3A00Z",
            "interval",
        ),
    ];
    for (query, field) in cases {
        let path = format!("/analytics/timeseries?{query}");
        let (status, body) = p.get(&path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "invalid_parameter", "{path}");
        let details = body["error"]["details"].as_array().unwrap();
        let fields: Vec<&str> = details
            .iter()
            .map(|d| d["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields, [field], "{path}: {body}");
        assert!(!details[0]["reason"].as_str().unwrap().is_empty());
    }
}
