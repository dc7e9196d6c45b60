//! `RATE_LIMIT_EVENTS_PER_SEC`: beyond the limit, 429 `rate_limited` with `Retry-After`,
//! and nothing of the refused request is published.

use crate::helpers::{Options, assert_error, events, spawn_app};
use serde_json::Value;

#[tokio::test]
async fn events_beyond_the_rate_limit_get_429_with_retry_after_and_are_not_published() {
    let app = spawn_app(Options {
        rate_limit_events_per_sec: Some(1),
        ..Options::default()
    })
    .await;
    // The burst is one full batch (1000 events); the rate refills 1 event/s.
    let first = app.post_json(&Value::Array(events("rl-a", 1000))).await;
    assert_eq!(first.status(), 202);
    let refused = app.post_json(&Value::Array(events("rl-b", 10))).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!((1..=11).contains(&retry_after), "Retry-After {retry_after}");
    assert_error(refused, 429, "rate_limited").await;
    assert_eq!(app.stream_message_count().await, 1000);
}
