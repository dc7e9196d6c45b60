//! The data set: seeded events of both sources and every type, on bucket boundaries, at
//! odd offsets, with null and sub-cent amounts; and each event as the test reads the spec.

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::str::FromStr;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// Seeded draws, so the data set is the same every run.
struct Rng(StdRng);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0.random()
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

pub(crate) const START: i64 = 1_772_323_200; // 2026-03-01T00:00:00Z

pub(crate) fn generate(n: usize) -> Vec<Value> {
    generate_from(0x9E37_79B9_7F4A_7C15, "ev", n)
}

pub(crate) fn generate_from(seed: u64, prefix: &str, n: usize) -> Vec<Value> {
    let mut rng = Rng(StdRng::seed_from_u64(seed));
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
pub(crate) struct Fact {
    pub(crate) at: OffsetDateTime,
    pub(crate) source: String,
    pub(crate) stage: String,
    pub(crate) event_type: String,
    pub(crate) campaign: Option<String>,
    pub(crate) revenue: Option<Decimal>,
    pub(crate) user: String,
    pub(crate) country: Option<String>,
    /// Facebook: age, gender, city; TikTok: followers and (top events) device.
    pub(crate) age: Option<u64>,
    pub(crate) gender: Option<String>,
    pub(crate) city: Option<String>,
    pub(crate) followers: Option<u64>,
    pub(crate) device: Option<String>,
}

pub(crate) fn fact(e: &Value) -> Fact {
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

pub(crate) fn money(d: Decimal) -> String {
    shared_events::format_money(d)
}

pub(crate) fn ts(s: &str) -> OffsetDateTime {
    OffsetDateTime::parse(s, &Rfc3339).unwrap()
}
