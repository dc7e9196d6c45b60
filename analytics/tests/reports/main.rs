//! Every report against answers computed independently, in this test, from the raw
//! events: a generated data set (both sources, every event type, duplicates, out-of-order
//! arrival, events on bucket boundaries, odd offsets, null amounts, unknown countries)
//! goes through the real pipeline (ingestion -> JetStream -> worker -> PostgreSQL).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::type_complexity)]

mod counts;
mod csv;
mod data;
mod requests;
mod user_checks;
mod user_reports;

use data::{Fact, fact, generate, ts};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use testkit::{Platform, Services, eventually};

struct Setup {
    platform: Platform,
    /// Stopped when the setup drops.
    services: Services,
    facts: Vec<Fact>,
}

impl Setup {
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
    let platform = Platform::start().await.unwrap();
    let mut worker = vec!["--worker-batch-size=64".to_owned()];
    worker.extend(compact_interval_ms.map(|ms| format!("--worker-compact-interval={ms}ms")));
    // The report tests ask as fast as they can from one client; the limit has its own
    // test (tests/ratelimit.rs).
    let mut analytics = vec!["--analytics-rate-limit-per-sec=0".to_owned()];
    analytics.extend(api_key.map(|key| format!("--analytics-api-key={key}")));
    let services = platform
        .start_services(&flags(&worker), &flags(&analytics))
        .await
        .unwrap();
    let events = generate(1200);
    let facts = send(&platform, services.ingestion.port, &events, events.len()).await;
    Setup {
        platform,
        services,
        facts,
    }
}

fn flags(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Sends `events` out of order and with duplicates, waits until the table holds `total`
/// rows, and returns the facts of the distinct events sent.
async fn send(
    platform: &Platform,
    ingestion_port: u16,
    events: &[Value],
    total: usize,
) -> Vec<Fact> {
    // Out of order: later events first; duplicates: every 7th request is sent twice, and
    // a twelfth of the events again at the end.
    let chunks: Vec<&[Value]> = events.chunks(40).rev().collect();
    let post = |body: Value| {
        let http = platform.http.clone();
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

    let client = platform.db().await.unwrap();
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
