//! The reports page (`GET /`) in a real headless Chromium, against the real pipeline
//! holding known events: what a reader sees must be what the API answers for the same
//! range, the page must talk to its own host only, log no error, and explain a missing or
//! wrong API key. The test leaves a screenshot of the page (README's picture).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use testkit::browser::Browser;
use testkit::{Platform, Services};
use time::format_description::well_known::Rfc3339;
use time::macros::datetime;

const KEY: &str = "a-reports-page-key-of-at-least-32-bytes";
const FROM: &str = "2026-03-01T00:00:00Z";
const TO: &str = "2026-03-08T00:00:00Z";
/// Events, one every [`STEP`] seconds from [`FROM`]: a week of them.
const EVENTS: usize = 3_000;
const STEP: i64 = 200;
const WAIT: Duration = Duration::from_secs(60);
/// The browser's time zone, whose hours the chart shows.
const READER_ZONE: &str = "Asia/Kolkata";

/// The generator's realistic events, spread over the week the page shows.
fn week_of_events() -> Vec<Value> {
    let start = datetime!(2026-03-01 00:00 UTC);
    let mut events = testkit::generated(21, EVENTS).unwrap();
    for (i, event) in events.iter_mut().enumerate() {
        let at = start + time::Duration::seconds(STEP * i as i64);
        event["timestamp"] = json!(at.format(&Rfc3339).unwrap());
    }
    events
}

async fn platform_with_events() -> (Platform, Services) {
    let platform = Platform::start().await.unwrap();
    let services = platform
        .start_services(
            &[],
            &[
                &format!("--analytics-api-key={KEY}"),
                "--analytics-rate-limit-per-sec=0",
            ],
        )
        .await
        .unwrap();
    for chunk in week_of_events().chunks(100) {
        let (status, body) = platform
            .post(services.ingestion.port, &Value::Array(chunk.to_vec()))
            .await
            .unwrap();
        assert_eq!(status, 202, "{body}");
    }
    platform.wait_rows(EVENTS as i64).await.unwrap();
    (platform, services)
}

/// Types `key` into the page's API key field, as a reader would.
async fn enter_key(browser: &Browser, key: &str) {
    browser
        .eval(&format!(
            "(() => {{ const k = document.getElementById('key'); k.value = {key}; \
             k.dispatchEvent(new Event('change')); return true; }})()",
            key = json!(key)
        ))
        .await
        .unwrap();
}

/// Waits for the page to finish a refresh in `state` and returns its status line.
async fn settled(browser: &Browser, state: &str) -> String {
    browser
        .wait_for(
            &format!("document.body.dataset.state === {}", json!(state)),
            WAIT,
        )
        .await
        .unwrap();
    let status = browser
        .eval("document.getElementById('status').textContent")
        .await
        .unwrap();
    status.as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reports_page_shows_the_api_figures_and_talks_to_its_host_only() {
    let (platform, services) = platform_with_events().await;
    let browser = Browser::launch(1280, 1000).await.unwrap();
    // A reader at +05:30: the chart's hours are theirs, not UTC's.
    browser
        .call(
            "Emulation.setTimezoneOverride",
            json!({"timezoneId": READER_ZONE}),
        )
        .await
        .unwrap();
    let page = services
        .analytics
        .url(&format!("/?from={FROM}&to={TO}&interval=hour"));

    // No key yet: every report is refused, and the page says why.
    browser.navigate(&page).await.unwrap();
    let status = settled(&browser, "error").await;
    assert!(
        status.contains("API key is missing or wrong (401)"),
        "no key: {status}"
    );
    // The refresh the key starts ends in "error" again: mark the old answer stale first.
    browser
        .eval("document.body.dataset.state = 'stale'")
        .await
        .unwrap();
    enter_key(&browser, "not-the-key-but-as-long-as-a-real-one").await;
    let status = settled(&browser, "error").await;
    assert!(
        status.contains("API key is missing or wrong (401)"),
        "wrong key: {status}"
    );
    let unreadable = browser
        .eval(
            "[...document.querySelectorAll('section[data-state=error] .error')]\
             .filter(e => e.hidden || !e.textContent.includes('(401)')).length",
        )
        .await
        .unwrap();
    assert_eq!(
        unreadable, 0,
        "each refused report explains the 401 in its section"
    );

    // The right key, kept for the session: a reload shows every report.
    enter_key(&browser, KEY).await;
    settled(&browser, "ready").await;
    browser.eval("window.beforeReload = true").await.unwrap();
    browser.take_events();
    browser.reload().await.unwrap();
    browser
        .wait_for(
            "window.beforeReload === undefined && document.body.dataset.state === 'ready'",
            WAIT,
        )
        .await
        .unwrap();
    let events = browser.take_events();

    let origin = services.analytics.url("/");
    let elsewhere: Vec<String> = Browser::requested_urls(&events)
        .into_iter()
        // `data:` URLs are inline content (Chromium's own date-picker icon), not requests.
        .filter(|url| !url.starts_with(&origin) && !url.starts_with("data:"))
        .collect();
    assert!(
        elsewhere.is_empty(),
        "requests outside {origin}: {elsewhere:?}"
    );
    assert!(
        Browser::requested_urls(&events)
            .iter()
            .any(|u| u.contains("/analytics/funnel")),
        "the reload's requests were seen"
    );
    let errors = Browser::errors(&events);
    assert!(errors.is_empty(), "console errors: {errors:#?}");

    let shown = browser.eval(SHOWN).await.unwrap();
    let api = Api {
        platform: &platform,
        services: &services,
    };
    assert_tables_equal_api(&shown, &api).await;
    assert_chart_equals_api(&browser, &shown, &api).await;

    let png = browser.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("reports-page.png");
    std::fs::write(&out, &png).unwrap();
    // `UPDATE_SCREENSHOT=1` refreshes the README's picture from this run.
    if std::env::var_os("UPDATE_SCREENSHOT").is_some() {
        let docs = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/images/reports-page.png"
        );
        std::fs::write(docs, &png).unwrap();
    }
}

/// Everything the page shows, read from its DOM: per section, its state and its table
/// rows (the enclosing source block and list, the row key, each `data-field` cell's text);
/// the summary figures; the chart's data; the widest bar of each table.
const SHOWN: &str = r#"(() => {
  const sections = {};
  for (const s of document.querySelectorAll('section[data-report]')) {
    const rows = [...s.querySelectorAll('tbody tr')].map((tr) => ({
      block: tr.closest('[data-source]')?.dataset.source ?? null,
      list: tr.closest('[data-list]')?.dataset.list ?? null,
      key: tr.dataset.key,
      cells: Object.fromEntries([...tr.querySelectorAll('td[data-field]')]
        .filter((td) => td.dataset.field).map((td) => [td.dataset.field, td.textContent])),
    }));
    sections[s.id] = { state: s.dataset.state, rows };
  }
  const figures = Object.fromEntries([...document.querySelectorAll('[data-figure]')]
    .map((e) => [e.dataset.figure, e.textContent]));
  const plot = window.reportsPage.plot();
  const widest = [...document.querySelectorAll('table')]
    .filter((t) => t.querySelector('td.bar'))
    .map((t) => Math.max(...[...t.querySelectorAll('td.bar span')].map((b) => parseFloat(b.style.width))));
  return { sections, figures, plot: plot ? plot.data : null, widest };
})()"#;

/// The API, asked with the key for the page's range.
struct Api<'a> {
    platform: &'a Platform,
    services: &'a Services,
}

impl Api<'_> {
    async fn get(&self, path: &str, extra: &str) -> Value {
        let url = self
            .services
            .analytics
            .url(&format!("{path}?from={FROM}&to={TO}{extra}"));
        let response = self
            .platform
            .http
            .get(&url)
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{url}");
        response.json().await.unwrap()
    }
}

/// How a column is written on the page.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Integer,
    Money,
}

/// `1234567` as the page writes it (en-US grouping): `1,234,567`.
fn grouped(digits: &str) -> String {
    let (sign, digits) = digits.strip_prefix('-').map_or(("", digits), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

fn written(value: &Value, kind: Kind) -> String {
    match kind {
        Kind::Text => value.as_str().unwrap_or("unknown").to_owned(),
        Kind::Integer => grouped(&value.as_i64().unwrap().to_string()),
        Kind::Money => {
            let text = value.as_str().unwrap();
            let (whole, fraction) = text.split_once('.').unwrap();
            format!("{}.{fraction}", grouped(whole))
        }
    }
}

/// The rows a table should show for `rows` of an answer: each column's text.
fn expected(rows: &Value, columns: &[(&str, Kind)]) -> Vec<BTreeMap<String, String>> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|(field, kind)| ((*field).to_owned(), written(&row[*field], *kind)))
                .collect()
        })
        .collect()
}

/// The rows the page shows in `section`, inside the block of `source` and the list
/// `list` when given.
fn shown_rows(
    shown: &Value,
    section: &str,
    source: Option<&str>,
    list: Option<&str>,
) -> Vec<BTreeMap<String, String>> {
    let s = &shown["sections"][section];
    assert_eq!(s["state"], "ready", "{section} is drawn");
    s["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| source.is_none_or(|src| r["block"] == src))
        .filter(|r| list.is_none_or(|l| r["list"] == l))
        .map(|r| serde_json::from_value(r["cells"].clone()).unwrap())
        .collect()
}

async fn assert_tables_equal_api(shown: &Value, api: &Api<'_>) {
    use Kind::{Integer, Money, Text};
    let stats = api.get("/analytics/stats", "").await;
    let revenue = api.get("/analytics/revenue", "").await;
    assert_eq!(stats["total"], EVENTS, "the API holds every event");
    assert_eq!(shown["figures"]["total"], written(&stats["total"], Integer));
    assert_eq!(
        shown["figures"]["revenue"],
        written(&revenue["total"], Money)
    );
    assert_eq!(
        shown["figures"]["purchases"],
        written(&revenue["purchases"], Integer)
    );
    let columns = [("source", Text), ("revenue", Money), ("purchases", Integer)];
    assert_eq!(
        shown_rows(shown, "revenue", None, None),
        expected(&revenue["bySource"], &columns)
    );

    let funnel = api.get("/analytics/funnel", "").await;
    for source in funnel["sources"].as_array().unwrap() {
        let name = source["source"].as_str().unwrap();
        let columns = [
            ("funnelStage", Text),
            ("eventType", Text),
            ("events", Integer),
            ("users", Integer),
        ];
        assert_eq!(
            shown_rows(shown, "funnel", Some(name), None),
            expected(&source["steps"], &columns),
            "funnel of {name}"
        );
    }

    let campaigns = api.get("/analytics/campaigns/top", "&limit=10").await;
    let columns = [
        ("campaignId", Text),
        ("events", Integer),
        ("purchases", Integer),
        ("revenue", Money),
    ];
    assert_eq!(
        shown_rows(shown, "campaigns", None, None),
        expected(&campaigns["campaigns"], &columns)
    );

    let geo = api.get("/analytics/geo", "&limit=20").await;
    let columns = [
        ("country", Text),
        ("events", Integer),
        ("users", Integer),
        ("revenue", Money),
    ];
    assert_eq!(
        shown_rows(shown, "geo", None, None),
        expected(&geo["countries"], &columns)
    );
    assert_eq!(
        shown["figures"]["unknownCountryEvents"],
        format!(
            "Events without a country: {}",
            written(&geo["unknownCountryEvents"], Integer)
        )
    );

    let users = api.get("/analytics/users/top", "&limit=10").await;
    let columns = [
        ("source", Text),
        ("userId", Text),
        ("events", Integer),
        ("revenue", Money),
    ];
    assert_eq!(
        shown_rows(shown, "users", None, None),
        expected(&users["users"], &columns)
    );

    for (source, lists) in [
        (
            "facebook",
            &[
                ("ageBuckets", "bucket"),
                ("genders", "gender"),
                ("countries", "country"),
                ("cities", "city"),
            ][..],
        ),
        (
            "tiktok",
            &[
                ("followerBuckets", "bucket"),
                ("devices", "device"),
                ("countries", "country"),
            ][..],
        ),
    ] {
        let answer = api
            .get("/analytics/demographics", &format!("&source={source}"))
            .await;
        for (list, field) in lists {
            let rows = shown_rows(shown, "demographics", Some(source), Some(list));
            assert!(!rows.is_empty(), "{source} {list} has rows");
            assert_eq!(
                rows,
                expected(&answer[*list], &[(field, Text), ("users", Integer)]),
                "{source} {list}"
            );
        }
    }

    // Each table's bars are drawn to scale: its largest figure fills the column.
    let widest = shown["widest"].as_array().unwrap();
    assert!(widest.len() >= 10, "bar tables: {widest:?}");
    assert!(
        widest.iter().all(|w| w.as_f64() == Some(100.0)),
        "the largest bar of each table is full width: {widest:?}"
    );
}

async fn assert_chart_equals_api(browser: &Browser, shown: &Value, api: &Api<'_>) {
    let series = api
        .get(
            "/analytics/timeseries",
            &format!("&interval=hour&tz={READER_ZONE}"),
        )
        .await;
    let points = series["points"].as_array().unwrap();
    // A week from midnight UTC in hours starting at :30 UTC: the first one holds 23:30.
    assert_eq!(points.len(), 7 * 24 + 1);
    assert_eq!(points[0]["bucket"], "2026-03-01T05:00:00+05:30");
    let plot = &shown["plot"];
    let times: Vec<i64> = points
        .iter()
        .map(|p| {
            time::OffsetDateTime::parse(p["bucket"].as_str().unwrap(), &Rfc3339)
                .unwrap()
                .unix_timestamp()
        })
        .collect();
    let counts: Vec<i64> = points
        .iter()
        .map(|p| p["count"].as_i64().unwrap())
        .collect();
    let revenue: Vec<f64> = points
        .iter()
        .map(|p| p["revenue"].as_str().unwrap().parse().unwrap())
        .collect();
    let column = |i: usize| plot[i].as_array().cloned().unwrap_or_default();
    assert_eq!(
        column(0).iter().map(|v| v.as_i64()).collect::<Vec<_>>(),
        times.into_iter().map(Some).collect::<Vec<_>>(),
        "chart buckets"
    );
    assert_eq!(
        column(1).iter().map(|v| v.as_i64()).collect::<Vec<_>>(),
        counts.into_iter().map(Some).collect::<Vec<_>>(),
        "chart counts"
    );
    assert_eq!(
        column(2).iter().map(|v| v.as_f64()).collect::<Vec<_>>(),
        revenue.into_iter().map(Some).collect::<Vec<_>>(),
        "chart revenue"
    );
    // Both lines are painted: pixels of each series' colour on the chart's canvas.
    for (name, rgb) in [
        ("events", [0x3b, 0x6f, 0xd8]),
        ("revenue", [0xe0, 0x8a, 0x2c]),
    ] {
        let painted = browser
            .eval(&format!(
                "(() => {{ const c = document.querySelector('#timeseries canvas'); \
                 if (!c || !c.width) return 0; const [r, g, b] = {rgb:?}; \
                 const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; \
                 let n = 0; for (let i = 0; i < d.length; i += 4) \
                 if (d[i + 3] > 200 && Math.abs(d[i] - r) + Math.abs(d[i + 1] - g) \
                 + Math.abs(d[i + 2] - b) < 60) n++; return n; }})()"
            ))
            .await
            .unwrap();
        assert!(
            painted.as_i64().unwrap_or(0) > 200,
            "the {name} line is drawn ({painted} pixels of its colour)"
        );
    }
}
