//! The fixed world the events happen in: user pools, countries, names, campaigns, and how
//! common each value is.

use super::event::{FacebookUser, FullName, Location, Tagged, TiktokUser};
use super::random::{pick, weighted, weighted_index};
use rand::Rng;
use rand::rngs::StdRng;
use shared_events::Source;

/// A TikTok user of the pool; `home` is where their top events usually come from.
#[derive(Debug, Clone, Copy)]
pub(super) struct TiktokProfile {
    pub(super) user: TiktokUser,
    pub(super) home: &'static str,
}

pub(super) const FACEBOOK_USERS: u32 = 8_000;
pub(super) const TIKTOK_USERS: u32 = 6_000;
pub(super) const CAMPAIGNS: u32 = 20;
pub(super) const ADS_PER_CAMPAIGN: u32 = 5;

/// The Facebook users, with fixed attributes; events pick them with a skew.
pub(super) fn facebook_users(rng: &mut StdRng) -> Vec<FacebookUser> {
    (0..FACEBOOK_USERS)
        .map(|i| {
            let (country, cities) = country(rng);
            let (low, high) = weighted(rng, AGES);
            FacebookUser {
                user_id: Tagged("fb-u-", 1000 + i),
                name: FullName(pick(rng, FIRST_NAMES), pick(rng, LAST_NAMES)),
                age: rng.random_range(low..=high),
                gender: weighted(rng, GENDERS),
                location: Location {
                    country,
                    city: pick(rng, cities),
                },
            }
        })
        .collect()
}

/// The TikTok users, each with a home country.
pub(super) fn tiktok_users(rng: &mut StdRng) -> Vec<TiktokProfile> {
    (0..TIKTOK_USERS)
        .map(|i| {
            // log10(followers + 1) spread over 0..6.8, denser at the low end: most
            // accounts are small, a few have millions.
            let exponent = 6.8 * rng.random::<f64>().powf(1.3);
            TiktokProfile {
                user: TiktokUser {
                    user_id: Tagged("tt-u-", 1000 + i),
                    username: Tagged(pick(rng, HANDLES), rng.random_range(1..10_000)),
                    followers: (10f64.powf(exponent) - 1.0).round() as u64,
                },
                home: country(rng).0,
            }
        })
        .collect()
}

/// A country, weighted by its share of users, and its cities.
pub(super) fn country(rng: &mut StdRng) -> (&'static str, &'static [&'static str]) {
    let (name, _, cities) = COUNTRIES[weighted_index(rng, COUNTRIES.iter().map(|c| c.1))];
    (name, cities)
}

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
pub(super) const ITEMS: &[&str] = &[
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
pub(super) const REFERRERS: &[(&str, u32)] =
    &[("newsfeed", 65), ("marketplace", 20), ("groups", 15)];
pub(super) const CLICK_POSITIONS: &[(&str, u32)] =
    &[("center", 50), ("top_left", 25), ("bottom_right", 25)];
pub(super) const FACEBOOK_DEVICES: &[(&str, u32)] = &[("mobile", 70), ("desktop", 30)];
pub(super) const BROWSERS: &[(&str, u32)] = &[("Chrome", 60), ("Safari", 30), ("Firefox", 10)];
pub(super) const TIKTOK_DEVICES: &[(&str, u32)] = &[("Android", 55), ("iOS", 40), ("Desktop", 5)];

/// How common each event type is within its source and stage.
pub(super) fn type_weight(source: Source, event_type: &str) -> u32 {
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
