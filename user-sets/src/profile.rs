//! Which sets an event makes its user a member of: an event's facts ([`Activity`]), the
//! part of them that decides its sets ([`Profile`]), the demographic buckets, and
//! [`memberships`].

use crate::key::{Dim, SetKey};
use rust_decimal::Decimal;
use shared_events::{FunnelStage, Source};

/// One stored event's facts, as the sets need them (a row of [`crate::RAW_SQL`], or an
/// entry of a pending list).
#[derive(Debug, Clone)]
pub struct Activity {
    pub source: Source,
    pub funnel_stage: FunnelStage,
    pub event_type: String,
    pub user_id: String,
    pub user_key: Option<i32>,
    pub country: Option<String>,
    pub revenue: Option<Decimal>,
    pub age: Option<String>,
    pub gender: Option<String>,
    pub city: Option<String>,
    pub followers: Option<String>,
    pub device: Option<String>,
}

/// An event's facts as [`Activity`] holds them, borrowed (the insert path's rows).
#[derive(Debug, Clone, Copy)]
pub struct ActivityRef<'a> {
    pub source: Source,
    pub funnel_stage: FunnelStage,
    pub event_type: &'a str,
    pub user_id: &'a str,
    pub user_key: Option<i32>,
    pub country: Option<&'a str>,
    pub revenue: Option<Decimal>,
    /// `data.user.age`, `.gender`, `.location.city`, `.followers`, `data.engagement.device`
    /// as text, as PostgreSQL's `#>>` gives them ([`crate::RAW_SQL`]).
    pub demographics: [Option<&'a str>; 5],
}

/// The API's age buckets, in order.
pub const AGE_BUCKETS: &[&str] = &["<18", "18-24", "25-34", "35-44", "45-54", "55-64", "65+"];
/// The API's follower buckets (lower bound inclusive), in order.
pub const FOLLOWER_BUCKETS: &[&str] = &["<1k", "1k-10k", "10k-100k", "100k-1M", "1M+"];

/// The age bucket of `data.user.age` (an integer by validation).
pub fn age_bucket(age: &str) -> Option<&'static str> {
    let age: f64 = age.parse().ok()?;
    let i = match age {
        a if a < 18.0 => 0,
        a if a < 25.0 => 1,
        a if a < 35.0 => 2,
        a if a < 45.0 => 3,
        a if a < 55.0 => 4,
        a if a < 65.0 => 5,
        _ => 6,
    };
    Some(AGE_BUCKETS[i])
}

/// The follower bucket of `data.user.followers` (an integer >= 0 by validation).
pub fn follower_bucket(followers: &str) -> Option<&'static str> {
    let n: f64 = followers.parse().ok()?;
    let i = match n {
        n if n < 1e3 => 0,
        n if n < 1e4 => 1,
        n if n < 1e5 => 2,
        n if n < 1e6 => 3,
        _ => 4,
    };
    Some(FOLLOWER_BUCKETS[i])
}

/// Every set the event's user belongs to because of this event.
pub fn memberships<'a>(a: &'a Activity, add: impl FnMut(SetKey<'a>)) {
    Profile::of(a).memberships(add);
}

/// The facts of an event that decide which sets it belongs to: [`memberships`] reads
/// nothing else, so events with equal profiles belong to the same sets. A busy slot's
/// events have a few thousand distinct profiles; the compactor finds each profile's sets
/// once ([`Profile::encode`] is its key), not ~10 set lookups per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile<'a> {
    pub source: Source,
    pub funnel_stage: FunnelStage,
    pub event_type: &'a str,
    pub country: Option<&'a str>,
    /// The bucket of `data.user.age`.
    pub age: Option<&'static str>,
    pub gender: Option<&'a str>,
    pub city: Option<&'a str>,
    /// The bucket of `data.user.followers`.
    pub followers: Option<&'static str>,
    pub device: Option<&'a str>,
}

impl<'a> Profile<'a> {
    /// The profile of an event.
    pub fn of(a: &'a Activity) -> Profile<'a> {
        Profile {
            source: a.source,
            funnel_stage: a.funnel_stage,
            event_type: &a.event_type,
            country: a.country.as_deref(),
            age: a.age.as_deref().and_then(age_bucket),
            gender: a.gender.as_deref(),
            city: a.city.as_deref(),
            followers: a.followers.as_deref().and_then(follower_bucket),
            device: a.device.as_deref(),
        }
    }

    /// Appends the profile to `out`, each field length-prefixed (`u32::MAX` for none):
    /// two profiles are equal exactly when their encodings are.
    pub fn encode(&self, out: &mut Vec<u8>) {
        // Destructured, so a field added to the profile cannot be left out of its key.
        let Profile {
            source,
            funnel_stage,
            event_type,
            country,
            age,
            gender,
            city,
            followers,
            device,
        } = *self;
        let mut put = |s: Option<&str>| match s {
            Some(s) => {
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
        };
        for s in [source.as_str(), funnel_stage.as_str(), event_type] {
            put(Some(s));
        }
        for s in [country, age, gender, city, followers, device] {
            put(s);
        }
    }

    /// Every set an event of this profile makes its user a member of.
    pub fn memberships(&self, mut add: impl FnMut(SetKey<'a>)) {
        let (s, st) = (Some(self.source), Some(self.funnel_stage));
        // A type is never empty by validation; were it, its step's set would be stored
        // as the stage's (the empty string is "any"), so it is the stage's here too.
        let t = Some(self.event_type).filter(|t| !t.is_empty());
        let filtered = |dim, source, funnel_stage, event_type, value| SetKey {
            dim,
            source,
            funnel_stage,
            event_type,
            value,
            context: None,
        };
        // geo: by country, under every combination of the report's filters
        if let Some(c) = self.country {
            for (source, stage, etype) in [
                (None, None, None),
                (s, None, None),
                (None, st, None),
                (s, st, None),
                (s, st, t),
            ] {
                add(filtered(Dim::Country, source, stage, etype, c));
            }
        }
        // funnel: per source and stage, and per step
        add(filtered(Dim::All, s, st, None, ""));
        add(filtered(Dim::All, s, st, t, ""));
        // demographics, per source
        let demographic = |dim, value| filtered(dim, s, None, None, value);
        match self.source {
            Source::Facebook => {
                if let Some(b) = self.age {
                    add(demographic(Dim::Age, b));
                }
                if let Some(g) = self.gender {
                    add(demographic(Dim::Gender, g));
                }
                if let (Some(city), Some(c)) = (self.city, self.country) {
                    add(SetKey {
                        context: Some(c),
                        ..demographic(Dim::City, city)
                    });
                }
            }
            Source::Tiktok => {
                if let Some(b) = self.followers {
                    add(demographic(Dim::Followers, b));
                }
                if self.funnel_stage == FunnelStage::Top
                    && let Some(d) = self.device
                {
                    add(demographic(Dim::Device, d));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_the_api() {
        assert_eq!(age_bucket("17"), Some("<18"));
        assert_eq!(age_bucket("18"), Some("18-24"));
        assert_eq!(age_bucket("64"), Some("55-64"));
        assert_eq!(age_bucket("65"), Some("65+"));
        assert_eq!(follower_bucket("999"), Some("<1k"));
        assert_eq!(follower_bucket("1000"), Some("1k-10k"));
        assert_eq!(follower_bucket("1000000"), Some("1M+"));
        assert_eq!(follower_bucket("x"), None);
    }

    /// A Facebook top event of user 1 (key 1) in Berlin, with every demographic fact.
    fn berlin_viewer() -> Activity {
        Activity {
            source: Source::Facebook,
            funnel_stage: FunnelStage::Top,
            event_type: "ad.view".into(),
            user_id: "u".into(),
            user_key: Some(1),
            country: Some("Germany".into()),
            revenue: None,
            age: Some("30".into()),
            gender: Some("female".into()),
            city: Some("Berlin".into()),
            followers: None,
            device: None,
        }
    }

    #[test]
    fn profiles_encode_equal_exactly_when_they_are_equal() {
        let base = berlin_viewer();
        let encoded = |a: &Activity| {
            let mut out = Vec::new();
            Profile::of(a).encode(&mut out);
            out
        };
        // Another user, key, revenue and an age in the same bucket: the same sets.
        let same = Activity {
            user_id: "v".into(),
            user_key: Some(2),
            revenue: Some(Decimal::ONE),
            age: Some("34".into()),
            ..base.clone()
        };
        assert_eq!(encoded(&base), encoded(&same));
        let differs = [
            Activity {
                age: Some("35".into()),
                ..base.clone()
            },
            Activity {
                city: None,
                ..base.clone()
            },
            Activity {
                city: Some(String::new()),
                ..base.clone()
            },
            // The same characters split differently between two fields.
            Activity {
                country: Some("GermanyB".into()),
                age: None,
                gender: None,
                city: Some("erlin".into()),
                ..base.clone()
            },
            Activity {
                gender: None,
                ..base.clone()
            },
            Activity {
                device: Some("iOS".into()),
                ..base.clone()
            },
            Activity {
                funnel_stage: FunnelStage::Bottom,
                ..base.clone()
            },
        ];
        for other in &differs {
            assert_ne!(encoded(&base), encoded(other), "{other:?}");
        }
    }

    #[test]
    fn a_tiktok_bottom_event_has_no_country_or_device_sets() {
        let a = Activity {
            source: Source::Tiktok,
            funnel_stage: FunnelStage::Bottom,
            event_type: "purchase".into(),
            user_id: "u".into(),
            user_key: Some(1),
            country: None,
            revenue: None,
            age: None,
            gender: None,
            city: None,
            followers: Some("5000".into()),
            device: Some("iOS".into()),
        };
        let mut keys = Vec::new();
        memberships(&a, |k| keys.push(k.columns().map(str::to_owned)));
        assert_eq!(
            keys,
            [
                ["all", "tiktok", "bottom", "", "", ""],
                ["all", "tiktok", "bottom", "purchase", "", ""],
                ["followers", "tiktok", "", "", "1k-10k", ""],
            ]
            .map(|k| k.map(str::to_owned))
        );
    }

    #[test]
    fn a_facebook_city_set_carries_its_country() {
        let mut cities = Vec::new();
        memberships(&berlin_viewer(), |k| {
            if k.dim == Dim::City {
                cities.push(k.columns().map(str::to_owned));
            }
        });
        assert_eq!(
            cities,
            [["city", "facebook", "", "", "Berlin", "Germany"].map(str::to_owned)]
        );
    }

    #[test]
    fn only_the_dims_needing_demographics_change_without_them() {
        let full = berlin_viewer();
        let lean = Activity {
            age: None,
            gender: None,
            city: None,
            ..full.clone()
        };
        let keys = |a: &Activity, demographic: bool| {
            let mut keys = Vec::new();
            memberships(a, |k| {
                if k.dim.needs_demographics() == demographic {
                    keys.push(k.to_owned_key());
                }
            });
            keys
        };
        assert_eq!(keys(&full, false), keys(&lean, false));
        assert_eq!(
            keys(&full, false).len(),
            7,
            "5 country filter sets, 2 funnel sets"
        );
        assert_eq!(keys(&full, true).len(), 3, "age, gender, city");
        assert!(keys(&lean, true).is_empty());
    }
}
