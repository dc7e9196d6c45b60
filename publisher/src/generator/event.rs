//! The events themselves: plain `Copy` structs of numbers and `&'static str` that
//! serialise to the JSON of docs/events.md without allocating.

use serde::{Serialize, Serializer};
use shared_events::{FunnelStage, Source};
use std::fmt;
use time::OffsetDateTime;
use uuid::Uuid;

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

#[cfg(test)]
mod tests {
    use super::{Amount, Millis};
    use time::{Duration, OffsetDateTime};

    #[test]
    fn money_and_times_are_written_as_the_spec_shows() {
        assert_eq!(Amount(14999).to_string(), "149.99");
        assert_eq!(Amount(5).to_string(), "0.05");
        let t = OffsetDateTime::UNIX_EPOCH + Duration::milliseconds(1_234);
        assert_eq!(Millis(t).to_string(), "1970-01-01T00:00:01.234Z");
    }
}
