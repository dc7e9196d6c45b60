//! Rate limits per producer: a producer (its signing key, or its address when requests
//! are not signed) over its quota of events or bytes gets 429 `rate_limited` with
//! `Retry-After` and `ingestion_rate_limited_total{key}` counts it, while the others
//! are still accepted.
//!
//! Each test drains one producer's burst (one full batch of 1000 events, the least a
//! burst can be) at a rate of 10 events a second, so that its next request is refused
//! however slowly this machine answers the first, and is let through after a wait of a
//! few seconds.

use crate::helpers::{Options, TestApp, assert_error, body_json, spawn_app};
use reqwest::Response;
use serde_json::Value;
use service_kit::secret::Key;
use std::net::IpAddr;
use std::time::Duration;
use testkit::events;

const KEY_A: &str = "producer-a-secret-of-at-least-32-bytes";
const KEY_B: &str = "producer-b-secret-of-at-least-32-bytes";

/// A rate under which 40 events take 4 s to earn.
const SLOW: u32 = 10;

fn key(secret: &str) -> Key {
    let keys = service_kit::secret::signing_keys(secret).expect("a valid secret");
    keys.iter().next().cloned().expect("one key")
}

fn now() -> String {
    time::OffsetDateTime::now_utc().unix_timestamp().to_string()
}

/// POSTs `body` signed with `key` (the legacy scheme).
async fn post_signed(app: &TestApp, key: &Key, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).expect("serialisable");
    let ts = now();
    let signature = ingestion::signature::sign_legacy(key, &ts, &bytes);
    app.post_with(
        bytes,
        Some("application/json"),
        &[
            ("X-Webhook-Timestamp", &ts),
            ("X-Webhook-Signature", &signature),
        ],
    )
    .await
}

/// POSTs `body` from a client whose connections come from `from`.
async fn post_from(app: &TestApp, from: &str, body: &Value) -> Response {
    let from: IpAddr = from.parse().expect("an address");
    let client = reqwest::Client::builder()
        .local_address(from)
        .timeout(Duration::from_secs(15))
        .build()
        .expect("reqwest client");
    client
        .post(app.url("/webhook/event"))
        .json(body)
        .send()
        .await
        .expect("the request gets a response")
}

/// The `Retry-After` of a 429, after checking it is one.
async fn refused(response: Response) -> u64 {
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert_error(response, 429, "rate_limited").await;
    retry_after
}

/// `ingestion_rate_limited_total{key="<label>"}`, as /metrics shows it now.
async fn refusals(app: &TestApp, label: &str) -> Option<f64> {
    let metrics = app.get("/metrics").await.ok()?.text().await.ok()?;
    let prefix = format!("ingestion_rate_limited_total{{key=\"{label}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.parse().ok())
}

fn batch(tag: &str, n: usize) -> Value {
    Value::Array(events(tag, 0..n))
}

#[tokio::test]
async fn a_producer_over_its_event_quota_gets_429_while_another_key_is_still_accepted() {
    let app = spawn_app(Options {
        webhook_secret: Some(format!("{KEY_A},{KEY_B}")),
        rate_limit_events_per_sec: Some(SLOW),
        ..Options::default()
    })
    .await;
    let (a, b) = (key(KEY_A), key(KEY_B));
    let a_id = a.id().to_string();
    let b_id = b.id().to_string();
    assert_eq!(
        refusals(&app, &a_id).await,
        Some(0.0),
        "listed from the start"
    );

    let first = post_signed(&app, &a, &batch("a-burst", 1000)).await;
    assert_eq!(first.status(), 202);
    let retry_after = refused(post_signed(&app, &a, &batch("a-more", 40)).await).await;
    assert!((1..=4).contains(&retry_after), "Retry-After {retry_after}");

    let other = post_signed(&app, &b, &batch("b-burst", 1000)).await;
    assert_eq!(other.status(), 202, "B has a bucket of its own");

    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let again = post_signed(&app, &a, &batch("a-more", 40)).await;
    assert_eq!(again.status(), 202, "A is accepted once it waited");

    assert_eq!(refusals(&app, &a_id).await, Some(1.0));
    assert_eq!(refusals(&app, &b_id).await, Some(0.0));
    assert_eq!(app.stored_event_count().await, 2040, "nothing of the 429");
}

#[tokio::test]
async fn large_requests_exceed_the_byte_quota_while_the_event_quota_is_far() {
    // Bursts are at least one largest body: 200 kB here, at 20 kB a second.
    let app = spawn_app(Options {
        max_body_bytes: Some(200_000),
        rate_limit_bytes_per_sec: Some(20_000),
        ..Options::default()
    })
    .await;
    let large = |id: &str| {
        let mut event = crate::helpers::fb_top(id);
        event["padding"] = Value::from("x".repeat(90_000));
        event
    };
    for id in ["large-1", "large-2"] {
        assert_eq!(app.post_json(&large(id)).await.status(), 202);
    }
    let response = app.post_json(&large("large-3")).await;
    let retry_after = response.headers().get("retry-after").cloned();
    let body = body_json(response).await;
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("bytes"), "the byte quota refused: {body}");
    assert!(retry_after.is_some(), "with Retry-After");
    assert_eq!(app.stored_event_count().await, 2);
}

#[tokio::test]
async fn unsigned_producers_at_two_addresses_have_separate_buckets() {
    let app = spawn_app(Options {
        rate_limit_events_per_sec: Some(SLOW),
        ..Options::default()
    })
    .await;
    let before = refusals(&app, "ip").await.unwrap_or(0.0);
    let first = post_from(&app, "127.0.0.1", &batch("one-burst", 1000)).await;
    assert_eq!(first.status(), 202);
    refused(post_from(&app, "127.0.0.1", &batch("one-more", 40)).await).await;

    let other = post_from(&app, "127.0.0.2", &batch("two-burst", 1000)).await;
    assert_eq!(
        other.status(),
        202,
        "another address has a bucket of its own"
    );
    // One label for every address: a series per address would grow without bound.
    assert_eq!(refusals(&app, "ip").await, Some(before + 1.0));
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_the_producer() {
    let app = spawn_app(Options {
        rate_limit_events_per_sec: Some(SLOW),
        trusted_proxy_hops: Some(1),
        ..Options::default()
    })
    .await;
    let via_proxy = |client: &'static str, body: Value| {
        let bytes = serde_json::to_vec(&body).expect("serialisable");
        let app = &app;
        async move {
            app.post_with(
                bytes,
                Some("application/json"),
                // What the client wrote first, then what the proxy appended.
                &[("X-Forwarded-For", &format!("6.6.6.6, {client}"))],
            )
            .await
        }
    };
    let first = via_proxy("198.51.100.1", batch("p1-burst", 1000)).await;
    assert_eq!(first.status(), 202);
    refused(via_proxy("198.51.100.1", batch("p1-more", 40)).await).await;
    let other = via_proxy("198.51.100.2", batch("p2-burst", 1000)).await;
    assert_eq!(other.status(), 202, "one connection, two producers");
}
