//! The closed vocabularies of the spec: sources, funnel stages and event types.

use std::fmt;

/// The ad platform an event comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    Facebook,
    Tiktok,
}

impl Source {
    /// Every source, in the order reports list them.
    pub const ALL: [Source; 2] = [Source::Facebook, Source::Tiktok];

    /// The wire name (`facebook`, `tiktok`).
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Facebook => "facebook",
            Source::Tiktok => "tiktok",
        }
    }

    /// Parses the wire name; `None` for anything else.
    pub fn parse(s: &str) -> Option<Source> {
        match s {
            "facebook" => Some(Source::Facebook),
            "tiktok" => Some(Source::Tiktok),
            _ => None,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where in the marketing funnel an event sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FunnelStage {
    Top,
    Bottom,
}

impl FunnelStage {
    /// Every stage, top first.
    pub const ALL: [FunnelStage; 2] = [FunnelStage::Top, FunnelStage::Bottom];

    /// The wire name (`top`, `bottom`).
    pub fn as_str(self) -> &'static str {
        match self {
            FunnelStage::Top => "top",
            FunnelStage::Bottom => "bottom",
        }
    }

    /// Parses the wire name; `None` for anything else.
    pub fn parse(s: &str) -> Option<FunnelStage> {
        match s {
            "top" => Some(FunnelStage::Top),
            "bottom" => Some(FunnelStage::Bottom),
            _ => None,
        }
    }
}

impl fmt::Display for FunnelStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const FACEBOOK_TOP: &[&str] = &["ad.view", "page.like", "comment", "video.view"];
const FACEBOOK_BOTTOM: &[&str] = &["ad.click", "form.submission", "checkout.complete"];
const TIKTOK_TOP: &[&str] = &["video.view", "like", "share", "comment"];
const TIKTOK_BOTTOM: &[&str] = &["profile.visit", "purchase", "follow"];

/// The event types a source emits at a funnel stage, in the order of the spec.
pub fn event_types(source: Source, stage: FunnelStage) -> &'static [&'static str] {
    match (source, stage) {
        (Source::Facebook, FunnelStage::Top) => FACEBOOK_TOP,
        (Source::Facebook, FunnelStage::Bottom) => FACEBOOK_BOTTOM,
        (Source::Tiktok, FunnelStage::Top) => TIKTOK_TOP,
        (Source::Tiktok, FunnelStage::Bottom) => TIKTOK_BOTTOM,
    }
}

/// Whether `name` is an event type of any source (the analytics `eventType` filter).
pub fn is_known_event_type(name: &str) -> bool {
    [FACEBOOK_TOP, FACEBOOK_BOTTOM, TIKTOK_TOP, TIKTOK_BOTTOM]
        .iter()
        .any(|types| types.contains(&name))
}

/// The stage an event type belongs to for a source, if the source has that type.
pub fn stage_of(source: Source, event_type: &str) -> Option<FunnelStage> {
    FunnelStage::ALL
        .into_iter()
        .find(|&stage| event_types(source, stage).contains(&event_type))
}

/// Whether an event of this kind carries revenue (`purchaseAmount` counts).
pub(crate) fn is_revenue_type(source: Source, event_type: &str) -> bool {
    matches!(
        (source, event_type),
        (Source::Facebook, "checkout.complete") | (Source::Tiktok, "purchase")
    )
}

/// The top-level fields the spec defines; anything else is an unknown field kept verbatim.
pub const ENVELOPE_FIELDS: [&str; 6] = [
    "eventId",
    "timestamp",
    "source",
    "funnelStage",
    "eventType",
    "data",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_belongs_to_exactly_one_stage_of_its_source() {
        for source in Source::ALL {
            for stage in FunnelStage::ALL {
                for t in event_types(source, stage) {
                    assert_eq!(stage_of(source, t), Some(stage), "{source} {t}");
                    assert!(is_known_event_type(t));
                }
            }
        }
        assert!(!is_known_event_type("ad.View"));
        assert_eq!(stage_of(Source::Tiktok, "ad.view"), None);
    }

    #[test]
    fn wire_names_round_trip() {
        for s in Source::ALL {
            assert_eq!(Source::parse(s.as_str()), Some(s));
        }
        for s in FunnelStage::ALL {
            assert_eq!(FunnelStage::parse(s.as_str()), Some(s));
        }
        assert_eq!(Source::parse("Facebook"), None);
    }
}
