//! The publisher end to end: its generator, and `run` against fake webhooks on 127.0.0.1
//! that answer with canned HTTP/1.1 responses.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is how a test fails

use clap::Parser;
use publisher::Args;
use publisher::generator::{EventClock, GeneratedEvent, Generator, GeneratorConfig};
use serde_json::{Value, json};
use shared_events::{FunnelStage, Source, event_types, validate};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn args(list: &[&str]) -> Args {
    Args::try_parse_from(std::iter::once("publisher").chain(list.iter().copied())).unwrap()
}

fn generator(seed: u64, duplicates: f64, invalid: f64, out_of_order: f64) -> Generator {
    Generator::new(GeneratorConfig {
        seed,
        duplicates,
        invalid,
        out_of_order,
        clock: EventClock::Virtual {
            start: publisher::SEEDED_START,
            step: time::Duration::milliseconds(1),
        },
    })
}

fn batches(g: &mut Generator, count: usize, size: usize) -> Vec<Vec<GeneratedEvent>> {
    (0..count)
        .map(|_| {
            let mut batch = Vec::new();
            g.next_batch(size, &mut batch);
            batch
        })
        .collect()
}

fn to_json(event: &GeneratedEvent) -> Value {
    let mut out = Vec::new();
    event.write_json(&mut out).unwrap();
    serde_json::from_slice(&out).unwrap()
}

/// A webhook answering each request with `respond(request number, body)`, which returns
/// the status line and extra headers and body.
struct FakeWebhook {
    url: String,
    requests: Arc<AtomicUsize>,
}

type Respond = dyn Fn(usize, &[u8]) -> (&'static str, &'static str, String) + Send + Sync;

async fn start_webhook(respond: Arc<Respond>) -> FakeWebhook {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhook/event", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&requests);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, Arc::clone(&respond), Arc::clone(&counter)));
        }
    });
    FakeWebhook { url, requests }
}

/// Serves keep-alive HTTP/1.1 requests on one connection until the client closes it.
async fn serve(mut stream: TcpStream, respond: Arc<Respond>, counter: Arc<AtomicUsize>) {
    let mut buffer = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0);
        while buffer.len() < head_end + length {
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buffer.drain(..head_end + length).skip(head_end).collect();
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let (status, headers, body) = respond(n, &body);
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{headers}\
             content-length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn events_in(body: &[u8]) -> Vec<Value> {
    match serde_json::from_slice(body).unwrap() {
        Value::Array(events) => events,
        event => vec![event],
    }
}

fn accepted(body: &[u8]) -> String {
    json!({"accepted": events_in(body).len(), "duplicates": 0}).to_string()
}

#[tokio::test]
async fn the_same_seed_dumps_byte_identical_events() {
    let dir = tempfile::tempdir().unwrap();
    let dump = |name: &str, seed: &str| {
        let path = dir.path().join(name);
        let path_arg = path.to_str().unwrap().to_owned();
        let a = args(&[
            "--no-send",
            "--count",
            "1000",
            "--seed",
            seed,
            "--batch",
            "7",
            "--duplicates",
            "0.1",
            "--invalid",
            "0.1",
            "--out-of-order",
            "0.1",
            "--dump",
            &path_arg,
        ]);
        async move {
            publisher::run(a, std::future::pending()).await.unwrap();
            std::fs::read(path).unwrap()
        }
    };
    let first = dump("a.ndjson", "1").await;
    let second = dump("b.ndjson", "1").await;
    let other = dump("c.ndjson", "2").await;
    assert_eq!(first.iter().filter(|&&b| b == b'\n').count(), 1000);
    assert!(first == second, "same seed, different dumps");
    assert!(first != other, "different seeds, same dump");
}

#[test]
fn events_flagged_invalid_fail_validation_and_all_others_pass() {
    let mut g = generator(11, 0.1, 0.2, 0.1);
    let events: Vec<GeneratedEvent> = batches(&mut g, 500, 10).concat();
    let mut shapes = HashSet::new();
    let mut types = HashSet::new();
    for event in &events {
        let json = to_json(event);
        match validate(&json) {
            Ok(valid) => {
                assert!(!event.is_invalid(), "{:?} passed: {json}", event.corruption);
                shapes.insert((valid.source, valid.funnel_stage));
                types.insert((valid.source, valid.event_type.to_owned()));
            }
            Err(errors) => assert!(event.is_invalid(), "{errors:?} in {json}"),
        }
    }
    let invalid = events.iter().filter(|e| e.is_invalid()).count();
    assert!((800..1200).contains(&invalid), "{invalid} invalid of 5000");
    assert_eq!(shapes.len(), 4, "every source and stage appears");
    for source in Source::ALL {
        for stage in FunnelStage::ALL {
            for t in event_types(source, stage) {
                assert!(types.contains(&(source, (*t).to_owned())), "{source} {t}");
            }
        }
    }
}

#[test]
fn duplicates_repeat_earlier_event_ids_in_the_same_and_later_requests() {
    let mut g = generator(5, 0.2, 0.0, 0.0);
    let batches = batches(&mut g, 200, 10);
    let mut seen = HashSet::new();
    let (mut same_request, mut later) = (0, 0);
    for batch in &batches {
        let mut in_this = HashSet::new();
        for event in batch {
            let id = event.event.event_id;
            if event.duplicate {
                if in_this.contains(&id) {
                    same_request += 1;
                } else {
                    assert!(seen.contains(&id), "a duplicate of an unseen event");
                    later += 1;
                }
            } else {
                assert!(seen.insert(id), "a fresh event reuses an id");
            }
            in_this.insert(id);
        }
        seen.extend(in_this);
    }
    let duplicates = same_request + later;
    assert!((300..500).contains(&duplicates), "{duplicates} of 2000");
    assert!(same_request > 50 && later > 50, "{same_request} / {later}");
}

#[test]
fn out_of_order_events_lie_up_to_two_days_in_the_past() {
    let mut g = generator(9, 0.0, 0.0, 0.25);
    let events = batches(&mut g, 100, 10).concat();
    let start = publisher::SEEDED_START;
    let mut late = 0;
    for (i, event) in events.iter().enumerate() {
        let clock = start + time::Duration::milliseconds(i as i64);
        let behind = clock - event.event.timestamp.0;
        if event.out_of_order {
            late += 1;
            assert!(behind >= time::Duration::minutes(1), "{behind}");
            assert!(behind <= time::Duration::hours(48), "{behind}");
        } else {
            assert!(behind < time::Duration::seconds(3), "{behind}");
        }
    }
    assert!((150..350).contains(&late), "{late} of 1000");
}

#[tokio::test]
async fn busy_responses_are_retried_until_accepted() {
    let webhook = start_webhook(Arc::new(|n, body| {
        if n < 2 {
            let busy = json!({"error": {"code": "unavailable", "message": "busy"}});
            (
                "503 Service Unavailable",
                "retry-after: 0\r\n",
                busy.to_string(),
            )
        } else {
            ("202 Accepted", "", accepted(body))
        }
    }))
    .await;
    let a = args(&[
        "--url",
        &webhook.url,
        "--count",
        "20",
        "--batch",
        "5",
        "--concurrency",
        "1",
        "--rate",
        "0",
    ]);
    let summary = publisher::run(a, std::future::pending()).await.unwrap();
    assert_eq!(summary.retries, 2);
    assert_eq!(summary.requests, 6);
    assert_eq!(webhook.requests.load(Ordering::SeqCst), 6);
    assert_eq!(
        (summary.sent, summary.accepted, summary.failed),
        (20, 20, 0)
    );
    assert!(summary.latency_ms.max > 0.0);
    assert_eq!(summary.exit_code(), 0);
}

#[tokio::test]
async fn an_unreachable_endpoint_fails_every_event_and_exits_non_zero() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/webhook/event");
    let a = args(&[
        "--url",
        &url,
        "--count",
        "3",
        "--max-retries",
        "2",
        "--timeout",
        "1s",
        "--rate",
        "0",
    ]);
    let summary = publisher::run(a, std::future::pending()).await.unwrap();
    assert_eq!((summary.sent, summary.failed, summary.accepted), (3, 3, 0));
    assert_eq!(summary.retries, 6);
    assert_ne!(summary.exit_code(), 0);
}

#[tokio::test]
async fn invalid_events_are_rejected_and_the_rest_of_their_batch_is_resent() {
    // Like the ingestion service: a batch with any invalid event is refused whole, with
    // every invalid event named by index.
    let webhook = start_webhook(Arc::new(|_, body| {
        let events = events_in(body);
        let details: Vec<Value> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| validate(e).is_err())
            .map(|(i, e)| json!({"index": i, "eventId": e["eventId"], "field": "x", "reason": "y"}))
            .collect();
        if details.is_empty() {
            ("202 Accepted", "", accepted(body))
        } else {
            let error = json!({"error": {"code": "validation_failed", "message": "invalid",
                                         "details": details}});
            ("422 Unprocessable Entity", "", error.to_string())
        }
    }))
    .await;
    let a = args(&[
        "--url",
        &webhook.url,
        "--count",
        "300",
        "--batch",
        "20",
        "--invalid",
        "0.1",
        "--seed",
        "5",
        "--rate",
        "0",
    ]);
    let summary = publisher::run(a, std::future::pending()).await.unwrap();
    assert!(summary.generated_invalid > 0);
    assert_eq!(summary.rejected, summary.generated_invalid);
    assert_eq!(summary.unexpected_rejections, 0);
    assert_eq!(summary.accepted, summary.sent - summary.rejected);
    assert_eq!((summary.failed, summary.retries), (0, 0));
    assert_eq!(summary.exit_code(), 0);
}

#[tokio::test]
async fn a_rate_limit_spreads_the_events_over_time() {
    let webhook = start_webhook(Arc::new(|_, body| ("202 Accepted", "", accepted(body)))).await;
    let a = args(&[
        "--url",
        &webhook.url,
        "--count",
        "200",
        "--rate",
        "400",
        "--batch",
        "10",
    ]);
    let started = Instant::now();
    let summary = publisher::run(a, std::future::pending()).await.unwrap();
    // 200 events at 400/s: the last batch may leave after 190/400 s.
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(summary.accepted, 200);
}

#[tokio::test]
async fn the_summary_is_one_json_object_with_camel_case_keys() {
    let a = args(&["--no-send", "--count", "10", "--seed", "3"]);
    let summary = publisher::run(a, std::future::pending()).await.unwrap();
    let value = serde_json::to_value(&summary).unwrap();
    let keys: HashMap<String, Value> = serde_json::from_value(value.clone()).unwrap();
    for key in [
        "sent",
        "accepted",
        "duplicates",
        "rejected",
        "failed",
        "retries",
        "elapsedSeconds",
        "eventsPerSecond",
        "latencyMs",
    ] {
        assert!(keys.contains_key(key), "{key} missing from {value}");
    }
    assert!(value["latencyMs"]["p99"].is_number());
    assert_eq!(value["generated"], 10);
    assert_eq!(value["seed"], 3);
}

#[tokio::test]
async fn without_a_seed_timestamps_follow_the_wall_clock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("now.ndjson");
    let a = args(&[
        "--no-send",
        "--count",
        "5",
        "--dump",
        path.to_str().unwrap(),
    ]);
    publisher::run(a, std::future::pending()).await.unwrap();
    let text = std::fs::read_to_string(path).unwrap();
    let now = OffsetDateTime::now_utc();
    for line in text.lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        let valid = validate(&event).unwrap();
        assert!((now - valid.timestamp).abs() < time::Duration::minutes(1));
    }
}
