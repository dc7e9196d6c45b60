//! Valid sample events of each shape (docs/events.md), for tests.

use serde_json::{Value, json};

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
