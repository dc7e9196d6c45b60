//! Every report against answers computed independently, in this test, from the raw
//! events: a generated data set (both sources, every event type, duplicates, out-of-order
//! arrival, events on bucket boundaries, odd offsets, null amounts, unknown countries)
//! goes through the real pipeline (ingestion -> JetStream -> worker -> PostgreSQL).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::type_complexity)]

mod common;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;
use std::time::Duration;
use testkit::{NatsServer, Postgres, eventually};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};
use user_sets::slot_floor;

/// A tiny deterministic generator (xorshift), so the data set is the same every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

const START: i64 = 1_772_323_200; // 2026-03-01T00:00:00Z

fn generate(n: usize) -> Vec<Value> {
    generate_from(0x9E37_79B9_7F4A_7C15, "ev", n)
}

fn generate_from(seed: u64, prefix: &str, n: usize) -> Vec<Value> {
    let mut rng = Rng(seed);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        // Three days; some events exactly on or just before bucket boundaries.
        let secs = match i % 10 {
            0 => START + 3600 * (rng.next() % 72) as i64,
            1 => START + 86_400 * (1 + (rng.next() % 2) as i64) - 1,
            _ => START + (rng.next() % (3 * 86_400)) as i64,
        };
        let millis = if i % 10 == 1 {
            999
        } else {
            (rng.next() % 1000) as i64
        };
        let t = OffsetDateTime::from_unix_timestamp(secs).unwrap()
            + time::Duration::milliseconds(millis);
        let offset = match i % 3 {
            0 => UtcOffset::UTC,
            1 => UtcOffset::from_hms(2, 0, 0).unwrap(),
            _ => UtcOffset::from_hms(-5, -30, 0).unwrap(),
        };
        let ts = t.to_offset(offset).format(&Rfc3339).unwrap();
        let user = format!("u{}", rng.next() % 40);
        let amount = match rng.next() % 4 {
            0 => Value::Null,
            1 => json!("0.005"),
            _ => json!(format!("{}.{:02}", rng.next() % 500, rng.next() % 100)),
        };
        let id = format!("{prefix}-{i}");
        let event = if rng.next().is_multiple_of(2) {
            let country = rng.pick(&["Germany", "Brazil", "India", "United States"]);
            let user_obj = json!({"userId": user, "name": "N", "age": rng.next() % 90, "gender": rng.pick(&["female", "male", "non-binary"]),
                                  "location": {"country": country, "city": rng.pick(&["North", "South"])}});
            if rng.next().is_multiple_of(3) {
                let t = rng.pick(&["ad.click", "form.submission", "checkout.complete"]);
                json!({"eventId": id, "timestamp": ts, "source": "facebook", "funnelStage": "bottom", "eventType": t,
                       "data": {"user": user_obj, "engagement": {"adId": "a", "campaignId": rng.pick(&["cmp-1", "cmp-2", "cmp-3"]),
                       "clickPosition": "center", "device": "mobile", "browser": "Safari", "purchaseAmount": amount}}})
            } else {
                let t = rng.pick(&["ad.view", "page.like", "comment", "video.view"]);
                json!({"eventId": id, "timestamp": ts, "source": "facebook", "funnelStage": "top", "eventType": t,
                       "data": {"user": user_obj, "engagement": {"actionTime": ts, "referrer": "groups", "videoId": null}}})
            }
        } else {
            let user_obj =
                json!({"userId": user, "username": "n", "followers": rng.next() % 2_000_000});
            if rng.next().is_multiple_of(3) {
                let t = rng.pick(&["profile.visit", "purchase", "follow"]);
                json!({"eventId": id, "timestamp": ts, "source": "tiktok", "funnelStage": "bottom", "eventType": t,
                       "data": {"user": user_obj, "engagement": {"actionTime": ts, "profileId": null,
                       "purchasedItem": null, "purchaseAmount": amount}}})
            } else {
                let t = rng.pick(&["video.view", "like", "share", "comment"]);
                json!({"eventId": id, "timestamp": ts, "source": "tiktok", "funnelStage": "top", "eventType": t,
                       "data": {"user": user_obj, "engagement": {"watchTime": 3, "percentageWatched": 50,
                       "device": rng.pick(&["iOS", "Android", "Desktop"]), "country": rng.pick(&["Brazil", "Japan"]), "videoId": "v"}}})
            }
        };
        out.push(event);
    }
    out
}

/// One stored event as the test understands the spec, independently of the services.
#[derive(Debug, Clone)]
struct Fact {
    at: OffsetDateTime,
    source: String,
    stage: String,
    event_type: String,
    campaign: Option<String>,
    revenue: Option<Decimal>,
    user: String,
    country: Option<String>,
    /// Facebook: age, gender, city; TikTok: followers and (top events) device.
    age: Option<u64>,
    gender: Option<String>,
    city: Option<String>,
    followers: Option<u64>,
    device: Option<String>,
}

fn fact(e: &Value) -> Fact {
    let s = |v: &Value| v.as_str().unwrap().to_owned();
    let source = s(&e["source"]);
    let event_type = s(&e["eventType"]);
    let is_purchase = matches!(
        (source.as_str(), event_type.as_str()),
        ("facebook", "checkout.complete") | ("tiktok", "purchase")
    );
    let stage = s(&e["funnelStage"]);
    Fact {
        at: OffsetDateTime::parse(e["timestamp"].as_str().unwrap(), &Rfc3339).unwrap(),
        campaign: (source == "facebook" && stage == "bottom")
            .then(|| s(&e["data"]["engagement"]["campaignId"])),
        revenue: if is_purchase {
            e["data"]["engagement"]["purchaseAmount"]
                .as_str()
                .map(|a| Decimal::from_str(a).unwrap())
        } else {
            None
        },
        user: s(&e["data"]["user"]["userId"]),
        country: match (source.as_str(), stage.as_str()) {
            ("facebook", _) => Some(s(&e["data"]["user"]["location"]["country"])),
            ("tiktok", "top") => Some(s(&e["data"]["engagement"]["country"])),
            _ => None,
        },
        age: e["data"]["user"]["age"].as_u64(),
        gender: e["data"]["user"]["gender"].as_str().map(str::to_owned),
        city: e["data"]["user"]["location"]["city"]
            .as_str()
            .map(str::to_owned),
        followers: e["data"]["user"]["followers"].as_u64(),
        device: (source == "tiktok" && stage == "top")
            .then(|| s(&e["data"]["engagement"]["device"])),
        source,
        stage,
        event_type,
    }
}

fn money(d: Decimal) -> String {
    shared_events::format_money(d)
}

fn ts(s: &str) -> OffsetDateTime {
    OffsetDateTime::parse(s, &Rfc3339).unwrap()
}

struct Setup {
    _nats: NatsServer,
    pg: Postgres,
    ingestion: u16,
    analytics: u16,
    http: reqwest::Client,
    facts: Vec<Fact>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Setup {
    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("http://127.0.0.1:{}{path}", self.analytics))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    fn within(&self, from: &str, to: &str) -> Vec<&Fact> {
        let (from, to) = (ts(from), ts(to));
        self.facts
            .iter()
            .filter(|f| f.at >= from && f.at < to)
            .collect()
    }
}

/// The pipeline with the data set stored. `compact_interval_ms`: the worker's compaction
/// interval (`None`: its default).
async fn setup(api_key: Option<&str>, compact_interval_ms: Option<u64>) -> Setup {
    let common::Pipeline {
        _nats: nats,
        pg,
        ingestion,
        analytics,
        http,
        tasks,
    } = common::Pipeline::start(api_key, compact_interval_ms)
        .await
        .unwrap();
    let events = generate(1200);
    let facts = send(&http, ingestion, &pg, &events, events.len()).await;
    Setup {
        _nats: nats,
        pg,
        ingestion,
        analytics,
        http,
        facts,
        tasks,
    }
}

/// Sends `events` out of order and with duplicates, waits until the table holds `total`
/// rows, and returns the facts of the distinct events sent.
async fn send(
    http: &reqwest::Client,
    ingestion_port: u16,
    pg: &Postgres,
    events: &[Value],
    total: usize,
) -> Vec<Fact> {
    // Out of order: later events first; duplicates: every 7th request is sent twice, and
    // a twelfth of the events again at the end.
    let chunks: Vec<&[Value]> = events.chunks(40).rev().collect();
    let post = |body: Value| {
        let http = http.clone();
        async move {
            eventually("202", Duration::from_secs(30), || async {
                let r = http
                    .post(format!("http://127.0.0.1:{ingestion_port}/webhook/event"))
                    .json(&body)
                    .send()
                    .await
                    .ok()?;
                (r.status() == 202).then_some(())
            })
            .await
            .unwrap();
        }
    };
    for (n, chunk) in chunks.iter().enumerate() {
        post(Value::Array(chunk.to_vec())).await;
        if n.is_multiple_of(7) {
            post(Value::Array(chunk.to_vec())).await;
        }
    }
    post(Value::Array(
        events[events.len() * 5 / 12..events.len() / 2].to_vec(),
    ))
    .await;

    let client = pg.connect("events").await.unwrap();
    eventually("every event stored", Duration::from_secs(60), || async {
        let n: i64 = client
            .query_one("SELECT count(*) FROM events", &[])
            .await
            .ok()?
            .get(0);
        (n == total as i64).then_some(())
    })
    .await
    .unwrap();
    let mut seen = HashSet::new();
    events
        .iter()
        .filter(|e| seen.insert(e["eventId"].clone()))
        .map(fact)
        .collect()
}

const RANGES: &[(&str, &str)] = &[
    ("2026-03-01T00:00:00Z", "2026-03-04T00:00:00Z"), // whole days
    ("2026-03-01T10:30:15.500Z", "2026-03-03T04:20:30Z"), // ragged: days, hours, minutes, raw
    ("2026-03-01T23:59:59.999Z", "2026-03-02T00:00:00.001Z"), // two milliseconds on a day boundary
    ("2026-03-02T05:00:00+02:00", "2026-03-02T07:45:00-01:00"),
];

fn enc(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

fn sorted_counts<K: Ord + Clone>(m: BTreeMap<K, i64>) -> Vec<(K, i64)> {
    let mut v: Vec<(K, i64)> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

#[tokio::test]
async fn every_count_report_matches_the_raw_events_for_every_range_and_filter() {
    let s = setup(None, None).await;
    let filters: &[(&str, fn(&Fact) -> bool)] = &[
        ("", |_| true),
        ("&source=tiktok", |f| f.source == "tiktok"),
        ("&funnelStage=bottom", |f| f.stage == "bottom"),
        ("&source=facebook&funnelStage=bottom", |f| {
            f.source == "facebook" && f.stage == "bottom"
        }),
        ("&eventType=comment", |f| f.event_type == "comment"),
        (
            "&source=facebook&funnelStage=top&eventType=video.view",
            |f| f.source == "facebook" && f.stage == "top" && f.event_type == "video.view",
        ),
    ];
    // The data set is not trivial: every event is in the first range, and the
    // two-millisecond range on a day boundary holds events.
    assert_eq!(s.within(RANGES[0].0, RANGES[0].1).len(), 1200);
    assert!(!s.within(RANGES[2].0, RANGES[2].1).is_empty());
    for (from, to) in RANGES {
        let facts = s.within(from, to);
        for (q, keep) in filters {
            let kept: Vec<&Fact> = facts.iter().copied().filter(|f| keep(f)).collect();

            // stats
            let mut by_source = BTreeMap::new();
            let mut by_stage = BTreeMap::new();
            let mut by_type = BTreeMap::new();
            for f in &kept {
                *by_source.entry(f.source.clone()).or_insert(0) += 1;
                *by_stage.entry(f.stage.clone()).or_insert(0) += 1;
                *by_type
                    .entry((f.source.clone(), f.stage.clone(), f.event_type.clone()))
                    .or_insert(0) += 1;
            }
            let expected = json!({
                "from": OffsetDateTime::parse(from, &Rfc3339).unwrap().to_offset(UtcOffset::UTC).format(&Rfc3339).unwrap(),
                "to": OffsetDateTime::parse(to, &Rfc3339).unwrap().to_offset(UtcOffset::UTC).format(&Rfc3339).unwrap(),
                "total": kept.len(),
                "bySource": sorted_counts(by_source).iter().map(|(k, n)| json!({"source": k, "count": n})).collect::<Vec<_>>(),
                "byFunnelStage": sorted_counts(by_stage).iter().map(|(k, n)| json!({"funnelStage": k, "count": n})).collect::<Vec<_>>(),
                "byEventType": sorted_counts(by_type).iter().map(|((a, b, c), n)| json!({"source": a, "funnelStage": b, "eventType": c, "count": n})).collect::<Vec<_>>(),
            });
            let got = s
                .ok(&format!(
                    "/analytics/stats?from={}&to={}{q}",
                    enc(from),
                    enc(to)
                ))
                .await;
            assert_eq!(got, expected, "stats {from} {to} {q}");

            // timeseries, every interval that fits
            for (interval, secs) in [("minute", 60i64), ("hour", 3600), ("day", 86_400)] {
                let (f0, t0) = (ts(from), ts(to));
                let first = f0.unix_timestamp().div_euclid(secs) * secs;
                let last_instant = t0 - time::Duration::NANOSECOND;
                let last = last_instant.unix_timestamp().div_euclid(secs) * secs;
                if (last - first) / secs + 1 > 10_000 {
                    continue;
                }
                let mut points = BTreeMap::new();
                let mut b = first;
                while b <= last {
                    points.insert(b, (0i64, Decimal::ZERO));
                    b += secs;
                }
                for f in &kept {
                    let p = points
                        .get_mut(&(f.at.unix_timestamp().div_euclid(secs) * secs))
                        .unwrap();
                    p.0 += 1;
                    p.1 += f.revenue.unwrap_or_default();
                }
                let expected = json!({"interval": interval, "points": points.iter().map(|(b, (n, v))| json!({
                    "bucket": OffsetDateTime::from_unix_timestamp(*b).unwrap().format(&Rfc3339).unwrap(),
                    "count": n, "revenue": money(*v)})).collect::<Vec<_>>()});
                let got = s
                    .ok(&format!(
                        "/analytics/timeseries?interval={interval}&from={}&to={}{q}",
                        enc(from),
                        enc(to)
                    ))
                    .await;
                assert_eq!(got, expected, "timeseries {interval} {from} {to} {q}");
            }
        }

        // revenue, with and without source and campaign
        for (q, keep) in [
            ("", (|_| true) as fn(&Fact) -> bool),
            ("&source=tiktok", |f| f.source == "tiktok"),
            ("&campaignId=cmp-2", |f| {
                f.campaign.as_deref() == Some("cmp-2")
            }),
            ("&campaignId=cmp-2&source=tiktok", |_| false),
            ("&campaignId=nope", |_| false),
        ] {
            let mut by_source: BTreeMap<String, (Decimal, i64)> = BTreeMap::new();
            for f in facts.iter().filter(|f| keep(f)) {
                if let Some(v) = f.revenue {
                    let e = by_source.entry(f.source.clone()).or_default();
                    e.0 += v;
                    e.1 += 1;
                }
            }
            let mut rows: Vec<(String, (Decimal, i64))> = by_source.into_iter().collect();
            rows.sort_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| a.0.cmp(&b.0)));
            let expected = json!({
                "total": money(rows.iter().map(|r| r.1.0).sum()),
                "purchases": rows.iter().map(|r| r.1.1).sum::<i64>(),
                "bySource": rows.iter().map(|(s, (v, n))| json!({"source": s, "revenue": money(*v), "purchases": n})).collect::<Vec<_>>(),
            });
            let got = s
                .ok(&format!(
                    "/analytics/revenue?from={}&to={}{q}",
                    enc(from),
                    enc(to)
                ))
                .await;
            assert_eq!(got, expected, "revenue {from} {to} {q}");
        }

        // campaigns/top by revenue and by events
        let mut campaigns: BTreeMap<String, (i64, i64, Decimal)> = BTreeMap::new();
        for f in &facts {
            if let Some(c) = &f.campaign {
                let e = campaigns.entry(c.clone()).or_default();
                e.0 += 1;
                e.1 += i64::from(f.revenue.is_some());
                e.2 += f.revenue.unwrap_or_default();
            }
        }
        for by in ["revenue", "events"] {
            let mut rows: Vec<(String, (i64, i64, Decimal))> =
                campaigns.clone().into_iter().collect();
            if by == "events" {
                rows.sort_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| a.0.cmp(&b.0)));
            } else {
                rows.sort_by(|a, b| b.1.2.cmp(&a.1.2).then_with(|| a.0.cmp(&b.0)));
            }
            rows.truncate(2);
            let expected = json!({"campaigns": rows.iter().map(|(c, (n, p, v))| json!({
                "campaignId": c, "events": n, "purchases": p, "revenue": money(*v)})).collect::<Vec<_>>()});
            let got = s
                .ok(&format!(
                    "/analytics/campaigns/top?by={by}&limit=2&from={}&to={}",
                    enc(from),
                    enc(to)
                ))
                .await;
            assert_eq!(got, expected, "campaigns {by} {from} {to}");
        }
    }
    for t in s.tasks {
        t.abort();
    }
}

#[tokio::test]
async fn every_documented_bad_parameter_is_a_400_naming_the_field() {
    let s = setup(None, None).await;
    let cases = [
        ("/analytics/stats?from=yesterday", "from"),
        ("/analytics/stats?to=2026-13-01T00:00:00Z", "to"),
        (
            "/analytics/stats?from=2026-03-02T00:00:00Z&to=2026-03-01T00:00:00Z",
            "from",
        ),
        (
            "/analytics/stats?from=2026-03-01T00:00:00Z&to=2026-03-01T00:00:00Z",
            "from",
        ),
        ("/analytics/stats?source=snapchat", "source"),
        ("/analytics/stats?funnelStage=middle", "funnelStage"),
        ("/analytics/stats?eventType=ad.View", "eventType"),
        ("/analytics/stats?colour=red", "colour"),
        ("/analytics/stats?source=tiktok&source=facebook", "source"),
        ("/analytics/timeseries?interval=week", "interval"),
        (
            "/analytics/timeseries?interval=minute&from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z",
            "interval",
        ),
        ("/analytics/revenue?campaignId=", "campaignId"),
        ("/analytics/revenue?limit=5", "limit"),
        ("/analytics/campaigns/top?limit=0", "limit"),
        ("/analytics/campaigns/top?limit=1001", "limit"),
        ("/analytics/campaigns/top?limit=ten", "limit"),
        ("/analytics/campaigns/top?by=clicks", "by"),
    ];
    for (path, field) in cases {
        let (status, body) = s.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "invalid_parameter", "{path}: {body}");
        let fields: Vec<&str> = body["error"]["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields, [field], "{path}: {body}");
        assert!(
            !body["error"]["details"][0]["reason"]
                .as_str()
                .unwrap()
                .is_empty()
        );
    }
    // Several problems at once are all listed.
    let (status, body) = s
        .get("/analytics/stats?source=x&funnelStage=y&extra=1")
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"]["details"].as_array().unwrap().len(),
        3,
        "{body}"
    );
    for t in s.tasks {
        t.abort();
    }
}

#[tokio::test]
async fn with_api_keys_reports_need_one_of_them_and_health_stays_open() {
    const OLD: &str = "old-analytics-key-0123456789abcdef";
    const NEW: &str = "new-analytics-key-0123456789abcdef";
    let s = setup(Some(&format!("{OLD},{NEW}")), None).await;
    let (status, body) = s.get("/analytics/stats").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    for (key, want) in [
        ("wrong", 401),
        ("", 401),
        (&OLD[1..], 401),
        (OLD, 200),
        (NEW, 200),
    ] {
        let r = s
            .http
            .get(format!("http://127.0.0.1:{}/analytics/stats", s.analytics))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "{key:?}");
    }
    let (status, _) = s.get("/health/readiness").await;
    assert_eq!(status, 200);
    for t in s.tasks {
        t.abort();
    }
}

const AGE_LABELS: [&str; 7] = ["<18", "18-24", "25-34", "35-44", "45-54", "55-64", "65+"];
const FOLLOWER_LABELS: [&str; 5] = ["<1k", "1k-10k", "10k-100k", "100k-1M", "1M+"];

fn ranked(m: BTreeMap<String, HashSet<String>>, key: &str, limit: usize) -> Vec<Value> {
    let mut rows: Vec<(String, usize)> = m.into_iter().map(|(k, u)| (k, u.len())).collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows.truncate(limit);
    rows.into_iter()
        .map(|(k, n)| json!({key: k, "users": n}))
        .collect()
}

/// Compacts every dirty slot that has ended, as the worker does on its interval; returns
/// how many slots were dirty before.
async fn compact(s: &Setup) -> usize {
    let mut client = s.pg.connect("events").await.unwrap();
    let n = worker::compact::until_clean(&mut client).await.unwrap();
    assert_eq!(
        dirty_slots(s).await,
        0,
        "every slot of the data set has ended"
    );
    n
}

/// Quarter-hour slots holding some of these events.
fn slots(facts: &[Fact]) -> usize {
    facts
        .iter()
        .map(|f| f.at.unix_timestamp().div_euclid(900))
        .collect::<HashSet<_>>()
        .len()
}

async fn dirty_slots(s: &Setup) -> usize {
    let client = s.pg.connect("events").await.unwrap();
    client
        .query_one("SELECT count(*) FROM user_sets_dirty", &[])
        .await
        .unwrap()
        .get::<_, i64>(0) as usize
}

#[tokio::test]
async fn every_user_report_matches_the_raw_events_in_every_state_of_the_user_sets() {
    // The worker compacts only when this test says so, to check every state: nothing
    // built (all raw), everything built, built blocks with late events listed for three
    // of their quarter-hours, the same events stored without keys (some of their users
    // without a key yet) and read raw, and rebuilt.
    let mut s = setup(None, Some(3_600_000)).await;
    let all = slots(&s.facts);
    assert!(all > 200, "three days of quarter-hours: {all}");
    assert_eq!(dirty_slots(&s).await, all, "none compacted");
    check_user_reports(&s, "nothing compacted").await;

    assert_eq!(compact(&s).await, all);
    check_user_reports(&s, "every slot compacted").await;

    let mut late = generate_from(0x5DEE_CE66_D1CE_4E5B, "late", 90);
    for (i, e) in late.iter_mut().enumerate() {
        let hour = [5, 30, 50][i % 3];
        let t = OffsetDateTime::from_unix_timestamp(START + 3600 * hour + (i as i64 * 7) % 900)
            .unwrap();
        e["timestamp"] = json!(t.format(&Rfc3339).unwrap());
        if i % 2 == 0 {
            e["data"]["user"]["userId"] = json!(format!("new-{}", i % 6));
        }
    }
    let total = s.facts.len() + late.len();
    let facts = send(&s.http, s.ingestion, &s.pg, &late, total).await;
    assert_eq!(slots(&facts), 3);
    s.facts.extend(facts);
    assert_eq!(dirty_slots(&s).await, 3);
    let client = s.pg.connect("events").await.unwrap();
    let unkeyed = "SELECT count(*) FROM events WHERE user_key IS NULL";
    let n: i64 = client.query_one(unkeyed, &[]).await.unwrap().get(0);
    assert_eq!(n, 0, "the worker stores every event with its user's key");
    assert_eq!(
        listed(&s).await,
        late.len(),
        "and lists them for the compactor"
    );
    check_user_reports(&s, "late events listed in three compacted slots").await;

    // The same rows as a bulk load leaves them: without keys (some of their users have
    // none yet) and unlisted, their slots marked for a full rebuild (as `rebuild_rollups()`
    // marks them). Readers read those slots raw, look the keys up, or give a user who has
    // none yet a request-local id; the compactor assigns the keys.
    let ids: Vec<String> = late
        .iter()
        .map(|e| e["eventId"].as_str().unwrap().to_owned())
        .collect();
    client
        .batch_execute(
            "DELETE FROM user_sets_pending;
             UPDATE user_sets_dirty SET full_gen = gen;
             DELETE FROM user_keys WHERE user_id LIKE 'new-%';",
        )
        .await
        .unwrap();
    client
        .execute(
            "UPDATE events SET user_key = NULL WHERE event_id = ANY($1)",
            &[&ids],
        )
        .await
        .unwrap();
    let n: i64 = client.query_one(unkeyed, &[]).await.unwrap().get(0);
    assert_eq!(n, late.len() as i64);
    check_user_reports(&s, "late events without keys in three compacted slots").await;

    assert_eq!(compact(&s).await, 3);
    check_user_reports(&s, "late events compacted").await;
    for t in s.tasks {
        t.abort();
    }
}

/// Events listed for their slots (stored, not yet in their blocks).
async fn listed(s: &Setup) -> usize {
    let client = s.pg.connect("events").await.unwrap();
    let mut events = Vec::new();
    for row in client
        .query("SELECT facts FROM user_sets_pending", &[])
        .await
        .unwrap()
    {
        user_sets::decode_activities(row.get(0), &mut events).unwrap();
    }
    events.len()
}

#[tokio::test]
async fn reports_over_a_range_ending_now_are_exact_while_the_slot_is_written() {
    // Events of the last few minutes, so the range ends inside the quarter-hour being
    // written: readers take it as its block plus the events listed since the compactor
    // last folded them in, whichever state it is in.
    let mut s = setup(None, Some(3_600_000)).await;
    compact(&s).await;
    let now = OffsetDateTime::now_utc();
    let mut recent = generate_from(0x2545_F491_4F6C_DD1D, "now", 120);
    for (i, e) in recent.iter_mut().enumerate() {
        let t = now - Duration::from_millis(200 + 200 * i as u64);
        e["timestamp"] = json!(t.format(&Rfc3339).unwrap());
        if i % 3 == 0 {
            e["data"]["user"]["userId"] = json!(format!("recent-{}", i % 9));
        }
    }
    let from = (now - Duration::from_secs(3600)).format(&Rfc3339).unwrap();
    let to = now.format(&Rfc3339).unwrap();
    let ranges = [(from.as_str(), to.as_str())];

    let total = s.facts.len() + 60;
    let facts = send(&s.http, s.ingestion, &s.pg, &recent[60..], total).await;
    s.facts.extend(facts);
    assert_eq!(listed(&s).await, 60, "every stored event is listed");
    check_user_reports_over(&s, "recent events listed, nothing folded", &ranges).await;

    // A round folds them into the blocks: the open slot keeps its mark (no ancestor block
    // holds it yet), nothing stays listed.
    let mut client = s.pg.connect("events").await.unwrap();
    let before = slot_floor(OffsetDateTime::now_utc());
    worker::compact::until_clean(&mut client).await.unwrap();
    assert_eq!(listed(&s).await, 0);
    if slot_floor(OffsetDateTime::now_utc()) == before {
        // (Unless a quarter-hour ended meanwhile.)
        let open = s.facts.iter().any(|f| f.at >= before);
        assert_eq!(
            dirty_slots(&s).await,
            usize::from(open),
            "only the slot being written stays dirty"
        );
    }
    check_user_reports_over(&s, "recent events folded", &ranges).await;

    // More events, some of the same users: block plus listed events.
    let total = s.facts.len() + 60;
    let facts = send(&s.http, s.ingestion, &s.pg, &recent[..60], total).await;
    s.facts.extend(facts);
    assert_eq!(listed(&s).await, 60);
    check_user_reports_over(&s, "folded events and listed ones", &ranges).await;
    for t in s.tasks {
        t.abort();
    }
}

async fn check_user_reports(s: &Setup, state: &str) {
    check_user_reports_over(s, state, RANGES).await;
}

/// Funnel, geo and users/top over each range, against the events sent.
async fn check_user_reports_over(s: &Setup, state: &str, ranges: &[(&str, &str)]) {
    for &(from, to) in ranges {
        let facts = s.within(from, to);
        let range = format!("from={}&to={}", enc(from), enc(to));

        // funnel, for both sources and for each
        for only in [None, Some("facebook"), Some("tiktok")] {
            let mut sources = Vec::new();
            for source in ["facebook", "tiktok"]
                .into_iter()
                .filter(|x| only.is_none_or(|o| o == *x))
            {
                let mine: Vec<&&Fact> = facts.iter().filter(|f| f.source == source).collect();
                let types: &[(&str, &[&str])] = if source == "facebook" {
                    &[
                        ("top", &["ad.view", "page.like", "comment", "video.view"]),
                        (
                            "bottom",
                            &["ad.click", "form.submission", "checkout.complete"],
                        ),
                    ]
                } else {
                    &[
                        ("top", &["video.view", "like", "share", "comment"]),
                        ("bottom", &["profile.visit", "purchase", "follow"]),
                    ]
                };
                let mut steps = Vec::new();
                for (stage, names) in types {
                    let mut rows: Vec<(&str, usize, usize)> = names
                        .iter()
                        .map(|t| {
                            let of: Vec<_> = mine
                                .iter()
                                .filter(|f| f.stage == *stage && f.event_type == *t)
                                .collect();
                            let users: HashSet<&str> = of.iter().map(|f| f.user.as_str()).collect();
                            (*t, of.len(), users.len())
                        })
                        .collect();
                    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
                    steps.extend(rows.iter().map(|(t, n, u)| json!({"funnelStage": stage, "eventType": t, "events": n, "users": u})));
                }
                let top: HashSet<&str> = mine
                    .iter()
                    .filter(|f| f.stage == "top")
                    .map(|f| f.user.as_str())
                    .collect();
                let bottom: HashSet<&str> = mine
                    .iter()
                    .filter(|f| f.stage == "bottom")
                    .map(|f| f.user.as_str())
                    .collect();
                let converted = top.intersection(&bottom).count();
                let (te, be) = (
                    mine.iter().filter(|f| f.stage == "top").count(),
                    mine.iter().filter(|f| f.stage == "bottom").count(),
                );
                let r = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
                sources.push((te, source, json!({"source": source, "topEvents": te, "bottomEvents": be, "eventConversion": r(be, te),
                    "topUsers": top.len(), "convertedUsers": converted, "userConversion": r(converted, top.len()), "steps": steps})));
            }
            sources.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
            let expected = json!({"sources": sources.into_iter().map(|x| x.2).collect::<Vec<_>>()});
            let q = only.map(|o| format!("&source={o}")).unwrap_or_default();
            let got = s.ok(&format!("/analytics/funnel?{range}{q}")).await;
            assert_eq!(got, expected, "{state}: funnel {from} {to} {q}");
        }

        // geo, with a filter and a limit
        for (q, keep, limit) in [
            ("", (|_| true) as fn(&Fact) -> bool, 10),
            ("&source=tiktok&limit=1", |f| f.source == "tiktok", 1),
            ("&funnelStage=bottom", |f| f.stage == "bottom", 10),
            ("&eventType=comment", |f| f.event_type == "comment", 10),
            (
                "&source=facebook&funnelStage=top&eventType=video.view",
                |f| f.source == "facebook" && f.stage == "top" && f.event_type == "video.view",
                10,
            ),
            ("&funnelStage=bottom&eventType=like", |_| false, 10),
        ] {
            let mut by_country: BTreeMap<String, (i64, HashSet<(String, String)>, Decimal)> =
                BTreeMap::new();
            let mut unknown = 0;
            for f in facts.iter().filter(|f| keep(f)) {
                match &f.country {
                    Some(c) => {
                        let e = by_country.entry(c.clone()).or_default();
                        e.0 += 1;
                        e.1.insert((f.source.clone(), f.user.clone()));
                        e.2 += f.revenue.unwrap_or_default();
                    }
                    None => unknown += 1,
                }
            }
            let mut rows: Vec<_> = by_country.into_iter().collect();
            rows.sort_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| a.0.cmp(&b.0)));
            rows.truncate(limit);
            let expected = json!({"countries": rows.iter().map(|(c, (n, u, v))| json!({"country": c, "events": n, "users": u.len(), "revenue": money(*v)})).collect::<Vec<_>>(),
                                  "unknownCountryEvents": unknown});
            let got = s.ok(&format!("/analytics/geo?{range}{q}")).await;
            assert_eq!(got, expected, "{state}: geo {from} {to} {q}");
        }

        // users/top by events and by revenue
        for (q, by, only) in [
            ("&by=events&limit=5", "events", None),
            (
                "&by=revenue&limit=3&source=facebook",
                "revenue",
                Some("facebook"),
            ),
        ] {
            let mut per_user: BTreeMap<(String, String), (i64, Decimal)> = BTreeMap::new();
            for f in facts.iter().filter(|f| only.is_none_or(|o| o == f.source)) {
                let e = per_user
                    .entry((f.source.clone(), f.user.clone()))
                    .or_default();
                e.0 += 1;
                e.1 += f.revenue.unwrap_or_default();
            }
            let mut rows: Vec<_> = per_user.into_iter().collect();
            if by == "events" {
                rows.sort_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| a.0.cmp(&b.0)));
                rows.truncate(5);
            } else {
                rows.sort_by(|a, b| b.1.1.cmp(&a.1.1).then_with(|| a.0.cmp(&b.0)));
                rows.truncate(3);
            }
            let expected = json!({"users": rows.iter().map(|((src, u), (n, v))| json!({"source": src, "userId": u, "events": n, "revenue": money(*v)})).collect::<Vec<_>>()});
            let got = s.ok(&format!("/analytics/users/top?{range}{q}")).await;
            assert_eq!(got, expected, "{state}: users/top {from} {to} {q}");
        }

        // demographics, both sources
        let fb: Vec<&&Fact> = facts.iter().filter(|f| f.source == "facebook").collect();
        let age_label = |a: u64| match a {
            0..=17 => "<18",
            18..=24 => "18-24",
            25..=34 => "25-34",
            35..=44 => "35-44",
            45..=54 => "45-54",
            55..=64 => "55-64",
            _ => "65+",
        };
        let mut ages: BTreeMap<&str, HashSet<&str>> = BTreeMap::new();
        let mut genders: BTreeMap<String, HashSet<String>> = BTreeMap::new();
        let mut countries: BTreeMap<String, HashSet<String>> = BTreeMap::new();
        let mut cities: BTreeMap<(String, String), HashSet<&str>> = BTreeMap::new();
        for f in &fb {
            ages.entry(age_label(f.age.unwrap()))
                .or_default()
                .insert(&f.user);
            genders
                .entry(f.gender.clone().unwrap())
                .or_default()
                .insert(f.user.clone());
            countries
                .entry(f.country.clone().unwrap())
                .or_default()
                .insert(f.user.clone());
            cities
                .entry((f.city.clone().unwrap(), f.country.clone().unwrap()))
                .or_default()
                .insert(&f.user);
        }
        let mut city_rows: Vec<_> = cities.into_iter().map(|(k, u)| (k, u.len())).collect();
        city_rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        city_rows.truncate(20);
        let expected = json!({"source": "facebook",
            "ageBuckets": AGE_LABELS.iter().map(|b| json!({"bucket": b, "users": ages.get(b).map_or(0, |u| u.len())})).collect::<Vec<_>>(),
            "genders": ranked(genders, "gender", usize::MAX),
            "countries": ranked(countries, "country", 20),
            "cities": city_rows.iter().map(|((c, k), n)| json!({"city": c, "country": k, "users": n})).collect::<Vec<_>>()});
        let got = s
            .ok(&format!("/analytics/demographics?source=facebook&{range}"))
            .await;
        assert_eq!(got, expected, "{state}: demographics facebook {from} {to}");

        let tt: Vec<&&Fact> = facts.iter().filter(|f| f.source == "tiktok").collect();
        let follower_label = |n: u64| match n {
            0..=999 => "<1k",
            1000..=9999 => "1k-10k",
            10_000..=99_999 => "10k-100k",
            100_000..=999_999 => "100k-1M",
            _ => "1M+",
        };
        let mut followers: BTreeMap<&str, HashSet<&str>> = BTreeMap::new();
        let mut devices: BTreeMap<String, HashSet<String>> = BTreeMap::new();
        let mut countries: BTreeMap<String, HashSet<String>> = BTreeMap::new();
        for f in &tt {
            followers
                .entry(follower_label(f.followers.unwrap()))
                .or_default()
                .insert(&f.user);
            if let Some(d) = &f.device {
                devices.entry(d.clone()).or_default().insert(f.user.clone());
            }
            if let Some(c) = &f.country {
                countries
                    .entry(c.clone())
                    .or_default()
                    .insert(f.user.clone());
            }
        }
        let expected = json!({"source": "tiktok",
            "followerBuckets": FOLLOWER_LABELS.iter().map(|b| json!({"bucket": b, "users": followers.get(b).map_or(0, |u| u.len())})).collect::<Vec<_>>(),
            "devices": ranked(devices, "device", usize::MAX),
            "countries": ranked(countries, "country", 20)});
        let got = s
            .ok(&format!("/analytics/demographics?source=tiktok&{range}"))
            .await;
        assert_eq!(got, expected, "{state}: demographics tiktok {from} {to}");
    }
    let (status, body) = s.get("/analytics/demographics").await;
    assert_eq!(
        (status, body["error"]["details"][0]["field"].as_str()),
        (400, Some("source")),
        "{body}"
    );
}
