//! CSV export: every report asked for CSV, by `format=csv` and by `Accept: text/csv`,
//! answers its JSON answer to the same query, flattened as `docs/api.md` ("CSV export")
//! says; text from the events is guarded against spreadsheet formulas; errors stay JSON.

use crate::{RANGES, Setup, enc, send, setup};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// An answer as the client sees it.
struct Answer {
    status: u16,
    content_type: String,
    disposition: Option<String>,
    vary: Option<String>,
    body: String,
}

async fn fetch(s: &Setup, path: &str, accept: Option<&str>) -> Answer {
    let mut request = s.platform.http.get(s.services.analytics.url(path));
    if let Some(accept) = accept {
        request = request.header("Accept", accept);
    }
    let r = request.send().await.unwrap();
    let header = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (content_type, disposition, vary) = (
        header("content-type").unwrap_or_default(),
        header("content-disposition"),
        header("vary"),
    );
    Answer {
        status: r.status().as_u16(),
        content_type,
        disposition,
        vary,
        body: r.text().await.unwrap(),
    }
}

/// Columns holding free text from the events: guarded.
const TEXT: &[&str] = &[
    "campaignId",
    "userId",
    "country",
    "city",
    "gender",
    "device",
];

/// A JSON value as its CSV cell: numbers as JSON writes them, strings as they are, but
/// with a `'` before free text that starts with `=`, `+`, `-`, `@`, TAB, CR or `'`.
fn cell(column: &str, v: &Value) -> String {
    match v {
        Value::String(text) if TEXT.contains(&column) => {
            let guard = text.starts_with(['=', '+', '-', '@', '\t', '\r', '\'']);
            format!("{}{text}", if guard { "'" } else { "" })
        }
        Value::String(text) => text.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("{column}: {other} is not a cell"),
    }
}

/// A row: `section` when the layout has one, then each column from the first of
/// `objects` (the leaf, then its parents) that has that field; empty when none has.
fn row(header: &[&str], section: Option<&str>, objects: &[&Value]) -> Vec<String> {
    header
        .iter()
        .map(|column| match (*column, section) {
            ("section", Some(section)) => section.to_owned(),
            _ => objects
                .iter()
                .find_map(|o| o.get(column).filter(|v| !v.is_array()))
                .map(|v| cell(column, v))
                .unwrap_or_default(),
        })
        .collect()
}

fn items(v: &Value) -> &Vec<Value> {
    v.as_array().unwrap()
}

/// The documented header of a report and the rows its JSON answer `j` flattens into.
fn layout(report: &str, j: &Value) -> (&'static [&'static str], Vec<Vec<String>>) {
    let mut rows = Vec::new();
    let header: &'static [&'static str] = match report {
        "stats" => {
            let h = &[
                "section",
                "from",
                "to",
                "source",
                "funnelStage",
                "eventType",
                "count",
            ];
            rows.push(row(h, Some("total"), &[&json!({"count": j["total"]}), j]));
            for section in ["bySource", "byFunnelStage", "byEventType"] {
                for leaf in items(&j[section]) {
                    rows.push(row(h, Some(section), &[leaf, j]));
                }
            }
            h
        }
        "timeseries" => {
            let h = &["bucket", "count", "revenue"];
            rows.extend(items(&j["points"]).iter().map(|p| row(h, None, &[p])));
            h
        }
        "funnel" => {
            let h = &[
                "source",
                "topEvents",
                "bottomEvents",
                "eventConversion",
                "topUsers",
                "convertedUsers",
                "userConversion",
                "funnelStage",
                "eventType",
                "events",
                "users",
            ];
            for source in items(&j["sources"]) {
                for step in items(&source["steps"]) {
                    rows.push(row(h, None, &[step, source]));
                }
            }
            h
        }
        "geo" => {
            let h = &["section", "country", "events", "users", "revenue"];
            for c in items(&j["countries"]) {
                rows.push(row(h, Some("countries"), &[c]));
            }
            let unknown = json!({"events": j["unknownCountryEvents"]});
            rows.push(row(h, Some("unknownCountryEvents"), &[&unknown]));
            h
        }
        "revenue" => {
            let h = &["section", "source", "revenue", "purchases"];
            let total = json!({"revenue": j["total"], "purchases": j["purchases"]});
            rows.push(row(h, Some("total"), &[&total]));
            for s in items(&j["bySource"]) {
                rows.push(row(h, Some("bySource"), &[s]));
            }
            h
        }
        "campaigns-top" => {
            let h = &["campaignId", "events", "purchases", "revenue"];
            rows.extend(items(&j["campaigns"]).iter().map(|c| row(h, None, &[c])));
            h
        }
        "users-top" => {
            let h = &["source", "userId", "events", "revenue"];
            rows.extend(items(&j["users"]).iter().map(|u| row(h, None, &[u])));
            h
        }
        "demographics" => {
            let h = &[
                "section", "source", "bucket", "gender", "device", "country", "city", "users",
            ];
            let sections: &[&str] = if j["source"] == "facebook" {
                &["ageBuckets", "genders", "countries", "cities"]
            } else {
                &["followerBuckets", "devices", "countries"]
            };
            for section in sections {
                for leaf in items(&j[*section]) {
                    rows.push(row(h, Some(section), &[leaf, j]));
                }
            }
            h
        }
        other => panic!("no report {other}"),
    };
    (header, rows)
}

/// The records of a CSV body, read by the `csv` crate.
fn records(body: &str) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(body.as_bytes())
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect()
}

/// Asks `path` for JSON and for CSV both ways; checks the CSV is the JSON flattened, and
/// returns the JSON and the CSV's data rows.
async fn check(s: &Setup, report: &str, path: &str) -> (Value, Vec<Vec<String>>) {
    let json = fetch(s, path, None).await;
    assert_eq!(json.status, 200, "{path}: {}", json.body);
    assert_eq!(json.content_type, "application/json", "{path}");
    assert_eq!(json.vary.as_deref(), Some("accept"), "{path}");
    let j: Value = serde_json::from_str(&json.body).unwrap();
    let (header, expected) = layout(report, &j);

    let separator = if path.contains('?') { '&' } else { '?' };
    let by_param = fetch(s, &format!("{path}{separator}format=csv"), None).await;
    let by_accept = fetch(s, path, Some("text/csv")).await;
    for (how, csv) in [("format=csv", &by_param), ("Accept", &by_accept)] {
        assert_eq!(csv.status, 200, "{path} {how}: {}", csv.body);
        assert_eq!(csv.content_type, "text/csv; charset=utf-8", "{path} {how}");
        assert_eq!(
            csv.disposition.as_deref(),
            Some(format!("attachment; filename=\"{report}.csv\"").as_str()),
            "{path} {how}"
        );
        assert_eq!(csv.vary.as_deref(), Some("accept"), "{path} {how}");
        assert!(csv.body.ends_with("\r\n"), "{path} {how}: {:?}", csv.body);
        let records = records(&csv.body);
        assert_eq!(records[0], header, "{path} {how}");
        assert_eq!(records[1..], expected, "{path} {how}\n{}", csv.body);
    }
    assert_eq!(by_param.body, by_accept.body, "{path}");
    (j, expected)
}

#[tokio::test]
async fn every_reports_csv_is_its_json_answer_flattened_whichever_way_it_is_asked() {
    let s = setup(None, None).await;
    let mut rows = BTreeMap::new();
    let mut queries = Vec::new();
    for (from, to) in RANGES {
        let range = format!("from={}&to={}", enc(from), enc(to));
        for q in ["", "&source=tiktok&funnelStage=top", "&eventType=comment"] {
            queries.push(("stats", format!("/analytics/stats?{range}{q}")));
        }
        for q in ["", "&source=facebook"] {
            queries.push(("funnel", format!("/analytics/funnel?{range}{q}")));
        }
        for q in ["", "&source=tiktok&funnelStage=bottom", "&limit=2"] {
            queries.push(("geo", format!("/analytics/geo?{range}{q}")));
        }
        for q in ["", "&campaignId=cmp-2", "&campaignId=nope"] {
            queries.push(("revenue", format!("/analytics/revenue?{range}{q}")));
        }
        for q in ["", "&by=events&limit=2"] {
            queries.push((
                "campaigns-top",
                format!("/analytics/campaigns/top?{range}{q}"),
            ));
        }
        for q in ["&by=revenue&limit=5", "&source=tiktok"] {
            queries.push(("users-top", format!("/analytics/users/top?{range}{q}")));
        }
        for source in ["facebook", "tiktok"] {
            queries.push((
                "demographics",
                format!("/analytics/demographics?source={source}&{range}"),
            ));
        }
    }
    for (interval, (from, to)) in ["day", "minute", "hour", "hour"].iter().zip(RANGES) {
        queries.push((
            "timeseries",
            format!(
                "/analytics/timeseries?interval={interval}&from={}&to={}&source=facebook",
                enc(from),
                enc(to)
            ),
        ));
    }
    for (report, path) in &queries {
        *rows.entry(*report).or_insert(0) += check(&s, report, path).await.1.len();
    }
    // Every report was compared over tables the data set fills, not only empty ones.
    assert_eq!(rows.len(), 8);
    for (report, n) in rows {
        assert!(n >= 20, "{report}: {n} rows");
    }

    // A range without events: lists are empty, the totals are rows of zeros.
    let nothing = "from=2025-01-01T00:00:00Z&to=2025-01-02T00:00:00Z";
    for (report, path) in [
        ("stats", "stats?"),
        ("timeseries", "timeseries?"),
        ("funnel", "funnel?"),
        ("geo", "geo?"),
        ("revenue", "revenue?"),
        ("campaigns-top", "campaigns/top?"),
        ("users-top", "users/top?"),
        ("demographics", "demographics?source=tiktok&"),
    ] {
        check(&s, report, &format!("/analytics/{path}{nothing}")).await;
    }
    // With nothing in the range a list is only its header row.
    let path = format!("/analytics/campaigns/top?{nothing}&format=csv");
    let csv = fetch(&s, &path, None).await;
    assert_eq!(csv.body, "campaignId,events,purchases,revenue\r\n");
}

/// A Facebook purchase on 2026-04-01, away from the ranges of the data set.
fn purchase(n: usize, user: &str, campaign: &str, country: &str, city: &str) -> Value {
    json!({"eventId": format!("guard-{n}"), "timestamp": format!("2026-04-01T10:00:{n:02}Z"),
           "source": "facebook", "funnelStage": "bottom", "eventType": "checkout.complete",
           "data": {"user": {"userId": user, "name": "N", "age": 30, "gender": "female",
                             "location": {"country": country, "city": city}},
                    "engagement": {"adId": "a", "campaignId": campaign, "clickPosition": "center",
                                   "device": "mobile", "browser": "Safari", "purchaseAmount": "10.00"}}})
}

#[tokio::test]
async fn text_from_the_events_that_a_spreadsheet_would_run_comes_back_guarded() {
    let s = setup(None, None).await;
    let formula = "=HYPERLINK(\"http://example.com\",\"x\")";
    let events = [
        purchase(1, "=1+1", formula, "=cmd", "-x"),
        purchase(2, "+49", "@cmp", "Germany", "Berlin"),
        purchase(3, "'quoted", "plain", "Germany", "Berlin"),
        purchase(4, "-1", "-cmp", "Germany", "Berlin"),
    ];
    let total = s.facts.len() + events.len();
    send(&s.platform, s.services.ingestion.port, &events, total).await;
    let range = "from=2026-04-01T00:00:00Z&to=2026-04-02T00:00:00Z";

    let (j, rows) = check(
        &s,
        "campaigns-top",
        &format!("/analytics/campaigns/top?{range}"),
    )
    .await;
    let ids: Vec<&str> = items(&j["campaigns"])
        .iter()
        .map(|c| c["campaignId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["-cmp", formula, "@cmp", "plain"]);
    let ids: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        ids,
        [
            "'-cmp",
            "'=HYPERLINK(\"http://example.com\",\"x\")",
            "'@cmp",
            "plain"
        ]
    );
    // RFC 4180 on the wire: the guarded id is quoted, its quotes doubled.
    let csv = fetch(
        &s,
        &format!("/analytics/campaigns/top?{range}&format=csv"),
        None,
    )
    .await;
    assert!(
        csv.body
            .contains("\r\n\"'=HYPERLINK(\"\"http://example.com\"\",\"\"x\"\")\",1,1,10.00\r\n"),
        "{}",
        csv.body
    );

    let (_, rows) = check(&s, "users-top", &format!("/analytics/users/top?{range}")).await;
    let mut ids: Vec<&str> = rows.iter().map(|r| r[1].as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["''quoted", "'+49", "'-1", "'=1+1"]);

    let (_, rows) = check(&s, "geo", &format!("/analytics/geo?{range}")).await;
    assert_eq!(rows[1][..3], ["countries", "'=cmd", "1"]);

    let (_, rows) = check(
        &s,
        "demographics",
        &format!("/analytics/demographics?source=facebook&{range}"),
    )
    .await;
    let city = ["cities", "facebook", "", "", "", "'=cmd", "'-x", "1"];
    assert!(rows.iter().any(|r| *r == city), "{rows:?}");
}

#[tokio::test]
async fn errors_stay_json_and_format_else_accept_chooses_the_answer() {
    let s = setup(None, None).await;
    for (path, accept) in [
        ("/analytics/stats?format=xml", None),
        ("/analytics/stats?format=xml", Some("text/csv")),
        ("/analytics/timeseries?format=CSV", None),
        ("/analytics/geo?format=csv&format=json", None),
    ] {
        let r = fetch(&s, path, accept).await;
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        assert_eq!(r.content_type, "application/json", "{path}");
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["error"]["code"], "invalid_parameter");
        assert_eq!(body["error"]["details"][0]["field"], "format", "{body}");
        assert_eq!(body["error"]["details"].as_array().unwrap().len(), 1);
    }
    // Asked for CSV, a refused parameter is still explained in JSON.
    let r = fetch(&s, "/analytics/campaigns/top?limit=0&format=csv", None).await;
    assert_eq!(
        (r.status, r.content_type.as_str()),
        (400, "application/json")
    );
    let r = fetch(&s, "/analytics/users/top?limit=0", Some("text/csv")).await;
    assert_eq!(
        (r.status, r.content_type.as_str()),
        (400, "application/json")
    );

    // Which format each request gets.
    let csv = "text/csv; charset=utf-8";
    for (path, accept, want) in [
        ("/analytics/revenue", None, "application/json"),
        ("/analytics/revenue", Some("*/*"), "application/json"),
        ("/analytics/revenue", Some("text/html"), "application/json"),
        (
            "/analytics/revenue",
            Some("application/json;q=0.5, text/csv;q=0.9"),
            csv,
        ),
        (
            "/analytics/revenue",
            Some("text/csv;q=0.5, application/json"),
            "application/json",
        ),
        (
            "/analytics/revenue",
            Some("text/csv;q=0, */*"),
            "application/json",
        ),
        ("/analytics/revenue", Some("text/*"), csv),
        (
            "/analytics/revenue?format=json",
            Some("text/csv"),
            "application/json",
        ),
        (
            "/analytics/revenue?format=csv",
            Some("application/json"),
            csv,
        ),
    ] {
        let r = fetch(&s, path, accept).await;
        assert_eq!(
            (r.status, r.content_type.as_str()),
            (200, want),
            "{path} {accept:?}"
        );
    }
}
