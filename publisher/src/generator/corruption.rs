//! The deliberate defects of the `--invalid` fraction: one field broken per event.

use serde_json::Value;
use shared_events::{FunnelStage, Source, event_types};

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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test fails
mod tests {
    use super::Corruption;
    use crate::generator::{EventClock, GeneratedEvent, Generator, GeneratorConfig};
    use serde_json::Value;
    use time::{Duration, OffsetDateTime};

    #[test]
    fn every_corruption_of_every_shape_is_rejected_by_validation() {
        let mut g = Generator::new(GeneratorConfig {
            seed: 3,
            duplicates: 0.0,
            invalid: 0.0,
            out_of_order: 0.0,
            clock: EventClock::Virtual {
                start: OffsetDateTime::UNIX_EPOCH,
                step: Duration::milliseconds(1),
            },
        });
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
}
