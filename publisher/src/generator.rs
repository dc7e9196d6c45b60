//! Realistic, reproducible Facebook and TikTok events, in the four shapes of docs/events.md.
//!
//! Every random choice comes from one RNG seeded with `--seed`, and event time comes from
//! an [`EventClock`]; with a virtual clock the same seed gives byte-identical events.
//! Events are plain `Copy` structs of numbers and `&'static str`: serialising one
//! allocates nothing, which keeps the generator far ahead of the network.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Serialize, Serializer};
use serde_json::Value;
use shared_events::{FunnelStage, Source, event_types};
use std::fmt;
use std::time::Instant;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

/// How the generator mixes its events.
#[derive(Debug, Clone, Copy)]
pub struct GeneratorConfig {
    /// Seed of every random choice: same seed (and same clock), same events.
    pub seed: u64,
    /// Fraction (0..=1) of events that repeat an earlier event verbatim, same `eventId`.
    pub duplicates: f64,
    /// Fraction (0..=1) of events with exactly one field corrupted so validation fails.
    pub invalid: f64,
    /// Fraction (0..=1) of new events whose `timestamp` lies up to 48 hours in the past.
    pub out_of_order: f64,
    /// Where event time comes from.
    pub clock: EventClock,
}

/// Where the `timestamp` of the n-th generated event comes from.
#[derive(Debug, Clone, Copy)]
pub enum EventClock {
    /// Event `n` happens at `start + n * step`: reproducible, whatever the machine's speed.
    Virtual {
        /// Time of the first event.
        start: OffsetDateTime,
        /// Time between two consecutive events.
        step: Duration,
    },
    /// Events happen "now": `start` plus the real time elapsed since the generator was built.
    Wall {
        /// Time of the first event (usually the current time).
        start: OffsetDateTime,
    },
}

/// One event as generated, with what the generator did to it.
#[derive(Debug, Clone, Copy)]
pub struct GeneratedEvent {
    /// The event itself (before any corruption).
    pub event: Event,
    /// The field broken on purpose, when this event is one of the `--invalid` fraction.
    pub corruption: Option<Corruption>,
    /// Whether this is a verbatim repeat of an earlier event (same `eventId`).
    pub duplicate: bool,
    /// Whether the timestamp was pushed into the past (one of the `--out-of-order` fraction).
    pub out_of_order: bool,
}

impl GeneratedEvent {
    /// Whether the server must reject this event.
    pub fn is_invalid(&self) -> bool {
        self.corruption.is_some()
    }

    /// Appends the event's JSON to `out` (no trailing newline).
    pub fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        match self.corruption {
            None => serde_json::to_writer(out, &self.event),
            // Invalid events are rare; going through a `Value` keeps corruption simple.
            Some(corruption) => {
                let mut value = serde_json::to_value(self.event)?;
                corruption.apply(&mut value);
                serde_json::to_writer(out, &value)
            }
        }
    }
}

/// A valid event of any of the four shapes; serialises to the JSON of docs/events.md.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// UUID v4 built from the seeded RNG.
    #[serde(serialize_with = "as_display")]
    pub event_id: Uuid,
    /// When the event happened.
    pub timestamp: Millis,
    /// `facebook` or `tiktok`.
    #[serde(serialize_with = "as_display")]
    pub source: Source,
    /// `top` or `bottom`.
    #[serde(serialize_with = "as_display")]
    pub funnel_stage: FunnelStage,
    /// One of the source's types for the stage.
    pub event_type: &'static str,
    /// The user and engagement objects.
    pub data: Data,
}

/// The `data` object.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Data {
    /// The source's user shape.
    pub user: User,
    /// The source's engagement shape for the funnel stage.
    pub engagement: Engagement,
}

/// `data.user` of either source.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(untagged)]
pub enum User {
    /// A Facebook user.
    Facebook(FacebookUser),
    /// A TikTok user.
    Tiktok(TiktokUser),
}

/// `data.user` of a Facebook event.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FacebookUser {
    /// `fb-u-<n>`.
    pub user_id: Tagged,
    /// First and last name.
    pub name: FullName,
    /// 13..=90 years.
    pub age: u8,
    /// `male`, `female` or `non-binary`.
    pub gender: &'static str,
    /// Country and city.
    pub location: Location,
}

/// `data.user.location` of a Facebook event.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Location {
    /// Country name, such as `Germany`.
    pub country: &'static str,
    /// A city of that country.
    pub city: &'static str,
}

/// `data.user` of a TikTok event.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TiktokUser {
    /// `tt-u-<n>`.
    pub user_id: Tagged,
    /// A handle such as `skater88`.
    pub username: Tagged,
    /// Log-distributed from a handful to millions.
    pub followers: u64,
}

/// `data.engagement` of one of the four shapes.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(untagged, rename_all_fields = "camelCase")]
pub enum Engagement {
    /// Facebook top of funnel.
    FacebookTop {
        /// When the action happened.
        action_time: Millis,
        /// `newsfeed`, `marketplace` or `groups`.
        referrer: &'static str,
        /// The video watched, if any.
        video_id: Option<Tagged>,
    },
    /// Facebook bottom of funnel.
    FacebookBottom {
        /// The ad clicked (belongs to the campaign).
        ad_id: Tagged,
        /// `cmp-<n>`.
        campaign_id: Tagged,
        /// `top_left`, `bottom_right` or `center`.
        click_position: &'static str,
        /// `mobile` or `desktop`.
        device: &'static str,
        /// `Chrome`, `Firefox` or `Safari`.
        browser: &'static str,
        /// Set on most `checkout.complete` events, null otherwise.
        purchase_amount: Option<Amount>,
    },
    /// TikTok top of funnel.
    TiktokTop {
        /// Seconds watched, one decimal.
        watch_time: f64,
        /// Share of the video watched, 0..=100, one decimal.
        percentage_watched: f64,
        /// `Android`, `iOS` or `Desktop`.
        device: &'static str,
        /// Where the viewer is.
        country: &'static str,
        /// `v-<n>`.
        video_id: Tagged,
    },
    /// TikTok bottom of funnel.
    TiktokBottom {
        /// When the action happened.
        action_time: Millis,
        /// The profile visited or followed, if any.
        profile_id: Option<Tagged>,
        /// What was bought, on purchases.
        purchased_item: Option<&'static str>,
        /// Set on most `purchase` events, null otherwise.
        purchase_amount: Option<Amount>,
    },
}

/// A prefix and a number (`fb-u-1042`, `cmp-7`, `skater88`), written without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tagged(pub &'static str, pub u32);

impl fmt::Display for Tagged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.0, self.1)
    }
}

/// First and last name, written as `First Last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FullName(pub &'static str, pub &'static str);

impl fmt::Display for FullName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0, self.1)
    }
}

/// Money in cents, written as a decimal string with two places (`"149.99"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount(pub u64);

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

/// A UTC instant written as RFC 3339 with milliseconds (`2026-03-01T12:00:00.000Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Millis(pub OffsetDateTime);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.0.to_offset(time::UtcOffset::UTC);
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        )
    }
}

/// These newtypes are strings on the wire; `collect_str` writes them straight into the
/// output buffer.
macro_rules! serialize_as_string {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    )*};
}
serialize_as_string!(Tagged, FullName, Amount, Millis);

fn as_display<T: fmt::Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

/// A single-field defect that `shared_events::validate` rejects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// `eventId` removed.
    MissingEventId,
    /// `timestamp` without the `T` and offset.
    TimestampNotRfc3339,
    /// `source` not one of the two.
    UnknownSource,
    /// `funnelStage` not top/bottom.
    UnknownFunnelStage,
    /// `eventType` of the other funnel stage.
    StageMismatch,
    /// `data.user.userId` empty.
    EmptyUserId,
    /// `data.engagement` removed.
    MissingEngagement,
    /// Facebook `data.user.age` above 150.
    AgeOutOfRange,
    /// Facebook `data.user.age` as a string.
    AgeAsString,
    /// Facebook `data.user.gender` outside the enum.
    UnknownGender,
    /// Facebook `data.user.location.country` empty.
    EmptyCountry,
    /// Facebook top `data.engagement.referrer` outside the enum.
    UnknownReferrer,
    /// Facebook bottom `data.engagement.purchaseAmount` negative.
    NegativeAmount,
    /// Facebook bottom `data.engagement.purchaseAmount` with a decimal comma.
    AmountWithComma,
    /// Facebook bottom `data.engagement.browser` outside the enum.
    UnknownBrowser,
    /// TikTok `data.user.followers` negative.
    NegativeFollowers,
    /// TikTok top `data.engagement.percentageWatched` above 100.
    PercentageOver100,
    /// TikTok top `data.engagement.device` outside the enum.
    UnknownTiktokDevice,
    /// TikTok bottom `data.engagement.actionTime` not a date-time.
    ActionTimeNotRfc3339,
    /// TikTok bottom `data.engagement.purchaseAmount` as a JSON number.
    AmountAsNumber,
}

impl Corruption {
    /// The defects that apply to any event.
    const COMMON: &'static [Corruption] = &[
        Corruption::MissingEventId,
        Corruption::TimestampNotRfc3339,
        Corruption::UnknownSource,
        Corruption::UnknownFunnelStage,
        Corruption::StageMismatch,
        Corruption::EmptyUserId,
        Corruption::MissingEngagement,
    ];

    /// The defects specific to a shape.
    fn specific(source: Source, stage: FunnelStage) -> &'static [Corruption] {
        use Corruption::*;
        match (source, stage) {
            (Source::Facebook, FunnelStage::Top) => &[
                AgeOutOfRange,
                AgeAsString,
                UnknownGender,
                EmptyCountry,
                UnknownReferrer,
            ],
            (Source::Facebook, FunnelStage::Bottom) => &[
                AgeOutOfRange,
                UnknownGender,
                NegativeAmount,
                AmountWithComma,
                UnknownBrowser,
            ],
            (Source::Tiktok, FunnelStage::Top) => {
                &[NegativeFollowers, PercentageOver100, UnknownTiktokDevice]
            }
            (Source::Tiktok, FunnelStage::Bottom) => {
                &[NegativeFollowers, ActionTimeNotRfc3339, AmountAsNumber]
            }
        }
    }

    /// Every defect that can be applied to an event of this shape.
    pub fn applicable(
        source: Source,
        stage: FunnelStage,
    ) -> impl Iterator<Item = Corruption> + Clone {
        Self::COMMON
            .iter()
            .chain(Self::specific(source, stage))
            .copied()
    }

    /// Breaks the one field of `event` (the JSON of a valid event of an applicable shape).
    pub fn apply(self, event: &mut Value) {
        use Corruption::*;
        let set = |event: &mut Value, pointer: &str, value: Value| {
            if let Some(slot) = event.pointer_mut(pointer) {
                *slot = value;
            }
        };
        match self {
            MissingEventId => remove(event, "", "eventId"),
            TimestampNotRfc3339 => {
                let broken = event["timestamp"]
                    .as_str()
                    .map(|t| t.replacen('T', " ", 1).trim_end_matches('Z').to_owned())
                    .unwrap_or_default();
                set(event, "/timestamp", Value::from(broken));
            }
            UnknownSource => set(event, "/source", Value::from("myspace")),
            UnknownFunnelStage => set(event, "/funnelStage", Value::from("middle")),
            StageMismatch => {
                let other = match (event["source"].as_str(), event["funnelStage"].as_str()) {
                    (Some("facebook"), Some("top")) => (Source::Facebook, FunnelStage::Bottom),
                    (Some("facebook"), _) => (Source::Facebook, FunnelStage::Top),
                    (_, Some("top")) => (Source::Tiktok, FunnelStage::Bottom),
                    _ => (Source::Tiktok, FunnelStage::Top),
                };
                let wrong = event_types(other.0, other.1).first().copied().unwrap_or("");
                set(event, "/eventType", Value::from(wrong));
            }
            EmptyUserId => set(event, "/data/user/userId", Value::from("")),
            MissingEngagement => remove(event, "/data", "engagement"),
            AgeOutOfRange => set(event, "/data/user/age", Value::from(151)),
            AgeAsString => {
                let age = event.pointer("/data/user/age").map(ToString::to_string);
                set(
                    event,
                    "/data/user/age",
                    Value::from(age.unwrap_or_default()),
                );
            }
            UnknownGender => set(event, "/data/user/gender", Value::from("unknown")),
            EmptyCountry => set(event, "/data/user/location/country", Value::from("")),
            UnknownReferrer => set(event, "/data/engagement/referrer", Value::from("search")),
            NegativeAmount => set(
                event,
                "/data/engagement/purchaseAmount",
                Value::from("-19.99"),
            ),
            AmountWithComma => set(
                event,
                "/data/engagement/purchaseAmount",
                Value::from("19,99"),
            ),
            UnknownBrowser => set(event, "/data/engagement/browser", Value::from("Opera")),
            NegativeFollowers => set(event, "/data/user/followers", Value::from(-5)),
            PercentageOver100 => set(
                event,
                "/data/engagement/percentageWatched",
                Value::from(140.5),
            ),
            UnknownTiktokDevice => set(event, "/data/engagement/device", Value::from("Tizen")),
            ActionTimeNotRfc3339 => set(
                event,
                "/data/engagement/actionTime",
                Value::from("yesterday"),
            ),
            AmountAsNumber => set(event, "/data/engagement/purchaseAmount", Value::from(19.99)),
        }
    }
}

fn remove(event: &mut Value, parent: &str, key: &str) {
    if let Some(obj) = event.pointer_mut(parent).and_then(Value::as_object_mut) {
        obj.remove(key);
    }
}

/// A TikTok user of the pool; `home` is where their top events usually come from.
#[derive(Debug, Clone, Copy)]
struct TiktokProfile {
    user: TiktokUser,
    home: &'static str,
}

const FACEBOOK_USERS: u32 = 8_000;
const TIKTOK_USERS: u32 = 6_000;
const CAMPAIGNS: u32 = 20;
const ADS_PER_CAMPAIGN: u32 = 5;
/// How many earlier valid events a later duplicate may repeat.
const HISTORY: usize = 4_096;
/// Out-of-order events lie between one minute and 48 hours in the past.
const OUT_OF_ORDER_MIN_MS: i64 = 60_000;
const OUT_OF_ORDER_MAX_MS: i64 = 48 * 3_600_000;

/// Country, weight (share of users), cities.
const COUNTRIES: &[(&str, u32, &[&str])] = &[
    (
        "United States",
        24,
        &["New York", "Los Angeles", "Chicago", "Houston", "Seattle"],
    ),
    ("India", 14, &["Mumbai", "Delhi", "Bengaluru", "Chennai"]),
    (
        "Brazil",
        10,
        &["São Paulo", "Rio de Janeiro", "Belo Horizonte"],
    ),
    (
        "United Kingdom",
        8,
        &["London", "Manchester", "Birmingham", "Glasgow"],
    ),
    ("Germany", 7, &["Berlin", "Munich", "Hamburg", "Cologne"]),
    ("Indonesia", 6, &["Jakarta", "Surabaya", "Bandung"]),
    ("Mexico", 5, &["Mexico City", "Guadalajara", "Monterrey"]),
    ("France", 5, &["Paris", "Lyon", "Marseille"]),
    ("Philippines", 4, &["Manila", "Cebu City", "Davao City"]),
    ("Japan", 4, &["Tokyo", "Osaka", "Nagoya"]),
    ("Canada", 4, &["Toronto", "Vancouver", "Montreal"]),
    ("Nigeria", 3, &["Lagos", "Abuja", "Kano"]),
    ("Turkey", 2, &["Istanbul", "Ankara", "Izmir"]),
    ("Spain", 2, &["Madrid", "Barcelona", "Valencia"]),
    ("Australia", 2, &["Sydney", "Melbourne", "Brisbane"]),
];

const FIRST_NAMES: &[&str] = &[
    "Ada", "Liam", "Olivia", "Noah", "Emma", "Mateo", "Sofia", "Arjun", "Priya", "Lucas", "Mia",
    "Kenji", "Yuki", "Amara", "Chidi", "Elif", "Jonas", "Lena", "Carlos", "Lucia", "Hannah",
    "Omar", "Fatima", "Wei", "Mei", "Diego", "Ana", "Rahul", "Grace", "Sam",
];
const LAST_NAMES: &[&str] = &[
    "Park", "Smith", "Garcia", "Müller", "Silva", "Sharma", "Tanaka", "Okafor", "Dubois", "Rossi",
    "Kim", "Nguyen", "Santos", "Schmidt", "Patel", "Brown", "Yilmaz", "Lopez", "Wilson", "Reyes",
    "Martin", "Cohen", "Sato", "Adeyemi", "Jones",
];
const HANDLES: &[&str] = &[
    "skater", "foodie", "dancer", "gamer", "traveler", "chef", "runner", "artist", "coder",
    "singer", "baker", "surfer", "reader", "gardener", "cyclist", "maker", "dreamer", "fixer",
    "stylist", "hiker",
];
const ITEMS: &[&str] = &[
    "hoodie",
    "sneakers",
    "phone case",
    "lip gloss",
    "headphones",
    "water bottle",
    "t-shirt",
    "face serum",
    "desk lamp",
    "backpack",
    "sunglasses",
    "yoga mat",
];
/// Age ranges across every reporting bucket, weighted like a social network's audience.
const AGES: &[((u8, u8), u32)] = &[
    ((13, 17), 5),
    ((18, 24), 22),
    ((25, 34), 28),
    ((35, 44), 20),
    ((45, 54), 12),
    ((55, 64), 8),
    ((65, 90), 5),
];
const GENDERS: &[(&str, u32)] = &[("female", 48), ("male", 48), ("non-binary", 4)];
const REFERRERS: &[(&str, u32)] = &[("newsfeed", 65), ("marketplace", 20), ("groups", 15)];
const CLICK_POSITIONS: &[(&str, u32)] = &[("center", 50), ("top_left", 25), ("bottom_right", 25)];
const FACEBOOK_DEVICES: &[(&str, u32)] = &[("mobile", 70), ("desktop", 30)];
const BROWSERS: &[(&str, u32)] = &[("Chrome", 60), ("Safari", 30), ("Firefox", 10)];
const TIKTOK_DEVICES: &[(&str, u32)] = &[("Android", 55), ("iOS", 40), ("Desktop", 5)];

/// How common each event type is within its source and stage.
fn type_weight(source: Source, event_type: &str) -> u32 {
    match (source, event_type) {
        (Source::Facebook, "ad.view") => 45,
        (Source::Facebook, "video.view") => 30,
        (Source::Facebook, "page.like") => 15,
        (Source::Facebook, "ad.click") => 60,
        (Source::Facebook, "form.submission") => 25,
        (Source::Facebook, "checkout.complete") => 15,
        (Source::Tiktok, "video.view") => 60,
        (Source::Tiktok, "like") => 25,
        (Source::Tiktok, "profile.visit") => 55,
        (Source::Tiktok, "follow") => 30,
        (Source::Tiktok, "purchase") => 15,
        _ => 8,
    }
}

/// Picks an item with probability proportional to its weight.
fn weighted<T: Copy>(rng: &mut StdRng, items: &[(T, u32)]) -> T {
    items[weighted_index(rng, items.iter().map(|&(_, w)| w))].0
}

/// The index of a weight, picked with probability proportional to it.
fn weighted_index(rng: &mut StdRng, weights: impl Iterator<Item = u32> + Clone) -> usize {
    let total: u32 = weights.clone().sum();
    let mut ticket = rng.random_range(0..total.max(1));
    let mut last = 0;
    for (i, weight) in weights.enumerate() {
        if ticket < weight {
            return i;
        }
        ticket -= weight;
        last = i;
    }
    last
}

fn pick<T: Copy>(rng: &mut StdRng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

/// An index in `0..n` skewed towards 0: `n * u²` gives the first 1% of users about 10% of
/// the events, a heavy head with a long tail, like real audiences.
fn skewed(rng: &mut StdRng, n: u32) -> u32 {
    let u: f64 = rng.random();
    ((f64::from(n) * u * u) as u32).min(n - 1)
}

fn country(rng: &mut StdRng) -> (&'static str, &'static [&'static str]) {
    let (name, _, cities) = COUNTRIES[weighted_index(rng, COUNTRIES.iter().map(|c| c.1))];
    (name, cities)
}

/// A price between 2 and 500, log-uniform (many cheap, few expensive), often ending in .99.
fn price(rng: &mut StdRng) -> Amount {
    let dollars = (rng.random_range(2f64.ln()..500f64.ln())).exp().floor() as u64;
    let cents = if rng.random_bool(0.4) {
        99
    } else {
        rng.random_range(0..100)
    };
    Amount(dollars * 100 + cents)
}

/// Seconds and percentage of a TikTok video watched, one decimal each.
fn watch(rng: &mut StdRng) -> (f64, f64) {
    let length: f64 = rng.random_range(5.0..180.0);
    // Most viewers drop off early; a third watch to the end.
    let share: f64 = if rng.random_bool(0.33) {
        1.0
    } else {
        rng.random::<f64>().powf(1.5)
    };
    let round = |x: f64| (x * 10.0).round() / 10.0;
    (round(length * share), round(share * 100.0).min(100.0))
}

/// Produces events; see the module documentation.
#[derive(Debug)]
pub struct Generator {
    config: GeneratorConfig,
    rng: StdRng,
    /// Facebook users with fixed attributes; events pick them with a skew.
    facebook_users: Vec<FacebookUser>,
    tiktok_users: Vec<TiktokProfile>,
    /// Recent valid events, a ring a later duplicate is drawn from.
    history: Vec<Event>,
    history_next: usize,
    /// Events generated so far; the virtual clock's tick.
    generated: u64,
    wall_origin: Instant,
}

impl Generator {
    /// Builds the generator and its user pools (deterministic from the seed).
    pub fn new(config: GeneratorConfig) -> Generator {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let facebook_users = (0..FACEBOOK_USERS)
            .map(|i| {
                let (country, cities) = country(&mut rng);
                let (low, high) = weighted(&mut rng, AGES);
                FacebookUser {
                    user_id: Tagged("fb-u-", 1000 + i),
                    name: FullName(pick(&mut rng, FIRST_NAMES), pick(&mut rng, LAST_NAMES)),
                    age: rng.random_range(low..=high),
                    gender: weighted(&mut rng, GENDERS),
                    location: Location {
                        country,
                        city: pick(&mut rng, cities),
                    },
                }
            })
            .collect();
        let tiktok_users = (0..TIKTOK_USERS)
            .map(|i| {
                // log10(followers + 1) spread over 0..6.8, denser at the low end: most
                // accounts are small, a few have millions.
                let exponent = 6.8 * rng.random::<f64>().powf(1.3);
                TiktokProfile {
                    user: TiktokUser {
                        user_id: Tagged("tt-u-", 1000 + i),
                        username: Tagged(pick(&mut rng, HANDLES), rng.random_range(1..10_000)),
                        followers: (10f64.powf(exponent) - 1.0).round() as u64,
                    },
                    home: country(&mut rng).0,
                }
            })
            .collect();
        Generator {
            config,
            rng,
            facebook_users,
            tiktok_users,
            history: Vec::with_capacity(HISTORY),
            history_next: 0,
            generated: 0,
            wall_origin: Instant::now(),
        }
    }

    /// Replaces the contents of `out` with the next `n` events, in generation order.
    /// Half of the duplicates repeat an event of the same batch (same request), the other
    /// half one of the last few thousand events (a later request).
    pub fn next_batch(&mut self, n: usize, out: &mut Vec<GeneratedEvent>) {
        out.clear();
        for _ in 0..n {
            let event = self.next_event(out);
            out.push(event);
        }
    }

    fn next_event(&mut self, batch: &[GeneratedEvent]) -> GeneratedEvent {
        let now = self.now();
        self.generated += 1;
        let roll: f64 = self.rng.random();
        if roll < self.config.duplicates
            && let Some(event) = self.earlier_event(batch)
        {
            return GeneratedEvent {
                event,
                corruption: None,
                duplicate: true,
                out_of_order: false,
            };
        }
        let out_of_order = self
            .rng
            .random_bool(self.config.out_of_order.clamp(0.0, 1.0));
        let back_ms = if out_of_order {
            self.rng
                .random_range(OUT_OF_ORDER_MIN_MS..=OUT_OF_ORDER_MAX_MS)
        } else {
            // Producers report a little after the fact.
            self.rng.random_range(0..2_000)
        };
        let event = self.fresh_event(now - Duration::milliseconds(back_ms));
        let invalid =
            roll >= self.config.duplicates && roll < self.config.duplicates + self.config.invalid;
        let corruption = if invalid {
            let mut options = Corruption::applicable(event.source, event.funnel_stage);
            let k = self.rng.random_range(0..options.clone().count());
            options.nth(k)
        } else {
            self.remember(event);
            None
        };
        GeneratedEvent {
            event,
            corruption,
            duplicate: false,
            out_of_order,
        }
    }

    /// A valid event generated earlier, to repeat; `None` before there is any.
    fn earlier_event(&mut self, batch: &[GeneratedEvent]) -> Option<Event> {
        let in_batch = batch.iter().filter(|e| !e.is_invalid()).count();
        let same_request = in_batch > 0 && (self.history.is_empty() || self.rng.random_bool(0.5));
        if same_request {
            let k = self.rng.random_range(0..in_batch);
            batch
                .iter()
                .filter(|e| !e.is_invalid())
                .nth(k)
                .map(|e| e.event)
        } else if self.history.is_empty() {
            None
        } else {
            Some(self.history[self.rng.random_range(0..self.history.len())])
        }
    }

    fn remember(&mut self, event: Event) {
        if self.history.len() < HISTORY {
            self.history.push(event);
        } else {
            self.history[self.history_next] = event;
            self.history_next = (self.history_next + 1) % HISTORY;
        }
    }

    fn now(&self) -> OffsetDateTime {
        match self.config.clock {
            EventClock::Virtual { start, step } => {
                let nanos = step
                    .whole_nanoseconds()
                    .saturating_mul(i128::from(self.generated));
                // Out of range only after centuries of virtual time; then the clock stops.
                i64::try_from(nanos)
                    .ok()
                    .and_then(|n| start.checked_add(Duration::nanoseconds(n)))
                    .unwrap_or(start)
            }
            EventClock::Wall { start } => start + self.wall_origin.elapsed(),
        }
    }

    fn fresh_event(&mut self, timestamp: OffsetDateTime) -> Event {
        let rng = &mut self.rng;
        let mut uuid_bytes = [0u8; 16];
        rng.fill(&mut uuid_bytes);
        let event_id = uuid::Builder::from_random_bytes(uuid_bytes).into_uuid();
        let source = if rng.random_bool(0.55) {
            Source::Facebook
        } else {
            Source::Tiktok
        };
        let stage = if rng.random_bool(0.8) {
            FunnelStage::Top
        } else {
            FunnelStage::Bottom
        };
        let types = event_types(source, stage);
        let event_type = types[weighted_index(rng, types.iter().map(|t| type_weight(source, t)))];
        let action_time = Millis(timestamp - Duration::milliseconds(rng.random_range(0..500)));
        let (user, engagement) = match (source, stage) {
            (Source::Facebook, _) => {
                let user = self.facebook_users[skewed(rng, FACEBOOK_USERS) as usize];
                let engagement = if stage == FunnelStage::Top {
                    let has_video = event_type == "video.view"
                        || (event_type == "ad.view" && rng.random_bool(0.4));
                    Engagement::FacebookTop {
                        action_time,
                        referrer: weighted(rng, REFERRERS),
                        video_id: has_video.then(|| Tagged("v-", rng.random_range(1..50_000))),
                    }
                } else {
                    let campaign = 1 + skewed(rng, CAMPAIGNS);
                    let paid = event_type == "checkout.complete" && rng.random_bool(0.95);
                    Engagement::FacebookBottom {
                        ad_id: Tagged(
                            "ad-",
                            campaign * 100 + rng.random_range(1..=ADS_PER_CAMPAIGN),
                        ),
                        campaign_id: Tagged("cmp-", campaign),
                        click_position: weighted(rng, CLICK_POSITIONS),
                        device: weighted(rng, FACEBOOK_DEVICES),
                        browser: weighted(rng, BROWSERS),
                        purchase_amount: paid.then(|| price(rng)),
                    }
                };
                (User::Facebook(user), engagement)
            }
            (Source::Tiktok, _) => {
                let profile = self.tiktok_users[skewed(rng, TIKTOK_USERS) as usize];
                let engagement = if stage == FunnelStage::Top {
                    let (watch_time, percentage_watched) = watch(rng);
                    Engagement::TiktokTop {
                        watch_time,
                        percentage_watched,
                        device: weighted(rng, TIKTOK_DEVICES),
                        // Mostly at home, sometimes travelling.
                        country: if rng.random_bool(0.95) {
                            profile.home
                        } else {
                            country(rng).0
                        },
                        video_id: Tagged("v-", rng.random_range(1..50_000)),
                    }
                } else {
                    let purchase = event_type == "purchase";
                    let profile_id = (!purchase || rng.random_bool(0.3))
                        .then(|| Tagged("tt-p-", rng.random_range(1..2_000)));
                    let paid = purchase && rng.random_bool(0.95);
                    Engagement::TiktokBottom {
                        action_time,
                        profile_id,
                        purchased_item: purchase.then(|| pick(rng, ITEMS)),
                        purchase_amount: paid.then(|| price(rng)),
                    }
                };
                (User::Tiktok(profile.user), engagement)
            }
        };
        Event {
            event_id,
            timestamp: Millis(timestamp),
            source,
            funnel_stage: stage,
            event_type,
            data: Data { user, engagement },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test fails
mod tests {
    use super::*;

    fn generator(seed: u64) -> Generator {
        Generator::new(GeneratorConfig {
            seed,
            duplicates: 0.0,
            invalid: 0.0,
            out_of_order: 0.0,
            clock: EventClock::Virtual {
                start: OffsetDateTime::UNIX_EPOCH,
                step: Duration::milliseconds(1),
            },
        })
    }

    #[test]
    fn money_and_times_are_written_as_the_spec_shows() {
        assert_eq!(Amount(14999).to_string(), "149.99");
        assert_eq!(Amount(5).to_string(), "0.05");
        let t = OffsetDateTime::UNIX_EPOCH + Duration::milliseconds(1_234);
        assert_eq!(Millis(t).to_string(), "1970-01-01T00:00:01.234Z");
    }

    #[test]
    fn every_corruption_of_every_shape_is_rejected_by_validation() {
        let mut g = generator(3);
        let mut seen = std::collections::HashSet::new();
        let mut batch = Vec::new();
        while seen.len() < 4 {
            g.next_batch(1, &mut batch);
            let event = batch[0].event;
            if !seen.insert((event.source, event.funnel_stage)) {
                continue;
            }
            for corruption in Corruption::applicable(event.source, event.funnel_stage) {
                let broken = GeneratedEvent {
                    corruption: Some(corruption),
                    ..batch[0]
                };
                let mut json = Vec::new();
                broken.write_json(&mut json).unwrap();
                let value: Value = serde_json::from_slice(&json).unwrap();
                assert!(
                    shared_events::validate(&value).is_err(),
                    "{corruption:?} on {value}"
                );
            }
        }
    }

    #[test]
    fn users_are_skewed_so_a_few_are_heavy() {
        let mut rng = StdRng::seed_from_u64(1);
        let n = 10_000;
        let head = (0..n).filter(|_| skewed(&mut rng, 1_000) < 10).count();
        // The first 1% of users get about 10% of the events.
        assert!((700..1_300).contains(&head), "{head}");
    }
}
