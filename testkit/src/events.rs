//! Valid sample events (docs/events.md), for tests: one of each shape by hand, numbered
//! batches of them, and realistic ones from the publisher's generator.

use publisher::generator::{EventClock, Generator, GeneratorConfig};
use serde_json::{Value, json};
use std::ops::Range;
use time::macros::datetime;

/// Events `range` of a numbered batch: ids `<tag>-<i>`, the four shapes in turn (Facebook
/// top, Facebook purchase of 19.99, TikTok top, TikTok purchase without an amount), user
/// `u<i % 97>`, and event `i` at second `i` after 2026-03-01T00:00:00Z. The same index
/// gives the same event whatever the range, so batches can be split and resent.
pub fn events(tag: &str, range: Range<usize>) -> Vec<Value> {
    range
        .map(|i| {
            let id = format!("{tag}-{i}");
            let ts = format!(
                "2026-03-01T{:02}:{:02}:{:02}Z",
                (i / 3600) % 24,
                (i / 60) % 60,
                i % 60
            );
            let user = format!("u{}", i % 97);
            match i % 4 {
                0 => facebook_top(&id, &ts, &user, "Germany"),
                1 => facebook_bottom(&id, &ts, &user, Some("19.99")),
                2 => tiktok_top(&id, &ts, &user, "Brazil"),
                _ => tiktok_bottom(&id, &ts, &user, None),
            }
        })
        .collect()
}

/// `n` realistic valid events from the publisher's generator (every source, stage and
/// event type; skewed users, countries and prices), the same for the same `seed`: event
/// `i` happens about `i` seconds after 2026-03-01T00:00:00Z. No duplicates, no invalid
/// events; ids are UUIDs.
pub fn generated(seed: u64, n: usize) -> serde_json::Result<Vec<Value>> {
    generated_late(seed, n, 0.0, time::Duration::seconds(1))
}

/// As [`generated`], one event every `step`, and a fraction `late` of them (0..=1) up to
/// 48 hours older than their place in the sequence: late and out of order, as webhooks
/// retried by an ad platform arrive.
pub fn generated_late(
    seed: u64,
    n: usize,
    late: f64,
    step: time::Duration,
) -> serde_json::Result<Vec<Value>> {
    let mut generator = Generator::new(GeneratorConfig {
        seed,
        duplicates: 0.0,
        invalid: 0.0,
        out_of_order: late,
        clock: EventClock::Virtual {
            start: datetime!(2026-03-01 00:00:00 UTC),
            step,
        },
    });
    let mut batch = Vec::with_capacity(n);
    generator.next_batch(n, &mut batch);
    batch
        .iter()
        .map(|e| serde_json::to_value(e.event))
        .collect()
}

/// A Facebook top event (`ad.view`).
pub fn facebook_top(event_id: &str, timestamp: &str, user: &str, country: &str) -> Value {
    json!({"eventId": event_id, "timestamp": timestamp, "source": "facebook",
        "funnelStage": "top", "eventType": "ad.view",
        "data": {"user": {"userId": user, "name": "Ada Park", "age": 31, "gender": "female",
                          "location": {"country": country, "city": "Berlin"}},
                 "engagement": {"actionTime": timestamp, "referrer": "newsfeed", "videoId": null}}})
}

/// A Facebook `checkout.complete` with a purchase amount (or null).
pub fn facebook_bottom(event_id: &str, timestamp: &str, user: &str, amount: Option<&str>) -> Value {
    json!({"eventId": event_id, "timestamp": timestamp, "source": "facebook",
        "funnelStage": "bottom", "eventType": "checkout.complete",
        "data": {"user": {"userId": user, "name": "Ada Park", "age": 31, "gender": "female",
                          "location": {"country": "Germany", "city": "Berlin"}},
                 "engagement": {"adId": "ad-77", "campaignId": "cmp-12", "clickPosition": "center",
                                "device": "mobile", "browser": "Safari", "purchaseAmount": amount}}})
}

/// A TikTok top event (`video.view`).
pub fn tiktok_top(event_id: &str, timestamp: &str, user: &str, country: &str) -> Value {
    json!({"eventId": event_id, "timestamp": timestamp, "source": "tiktok",
        "funnelStage": "top", "eventType": "video.view",
        "data": {"user": {"userId": user, "username": "skater88", "followers": 15230},
                 "engagement": {"watchTime": 42, "percentageWatched": 87.5, "device": "iOS",
                                "country": country, "videoId": "v-9001"}}})
}

/// A TikTok `purchase` with a purchase amount (or null).
pub fn tiktok_bottom(event_id: &str, timestamp: &str, user: &str, amount: Option<&str>) -> Value {
    json!({"eventId": event_id, "timestamp": timestamp, "source": "tiktok",
        "funnelStage": "bottom", "eventType": "purchase",
        "data": {"user": {"userId": user, "username": "skater88", "followers": 15230},
                 "engagement": {"actionTime": timestamp, "profileId": null,
                                "purchasedItem": "hat", "purchaseAmount": amount}}})
}
