//! A valid event: a typed view over the producer's JSON plus the derived facts.

use crate::money::parse_amount;
use crate::spec::{ENVELOPE_FIELDS, FunnelStage, Source, is_revenue_type};
use rust_decimal::Decimal;
use serde_json::{Map, Value};
use time::OffsetDateTime;

/// An event that passed [`crate::validate`]. It borrows the JSON it was validated from,
/// so nothing is copied and every field, known or not, is still there.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// The producer's identity for the event; the deduplication key.
    pub event_id: &'a str,
    /// When the event happened (not when we received it); reports use this time.
    pub timestamp: OffsetDateTime,
    pub source: Source,
    pub funnel_stage: FunnelStage,
    /// One of the source's types for `funnel_stage` (see [`crate::event_types`]).
    pub event_type: &'a str,
    /// The whole event as received.
    pub(crate) json: &'a Value,
}

impl<'a> Event<'a> {
    /// The whole event as received, unknown fields included.
    pub fn json(&self) -> &'a Value {
        self.json
    }

    /// The `data` object as received, unknown fields included.
    pub fn data(&self) -> &'a Value {
        &self.json["data"]
    }

    /// Top-level fields the spec does not define, kept for forward compatibility;
    /// `None` when there are none (the common case).
    pub fn unknown_fields(&self) -> Option<Map<String, Value>> {
        let root = self.json.as_object()?;
        let extra: Map<String, Value> = root
            .iter()
            .filter(|(k, _)| !ENVELOPE_FIELDS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        (!extra.is_empty()).then_some(extra)
    }

    fn user(&self) -> &'a Value {
        &self.json["data"]["user"]
    }

    fn engagement(&self) -> &'a Value {
        &self.json["data"]["engagement"]
    }

    /// The user's id within the source; a user is the pair (`source`, `user_id`).
    pub fn user_id(&self) -> &'a str {
        self.user()["userId"].as_str().unwrap_or_default()
    }

    /// Country of the event: Facebook `data.user.location.country`, TikTok top events
    /// `data.engagement.country`; TikTok bottom events have none.
    pub fn country(&self) -> Option<&'a str> {
        match (self.source, self.funnel_stage) {
            (Source::Facebook, _) => self.user()["location"]["country"].as_str(),
            (Source::Tiktok, FunnelStage::Top) => self.engagement()["country"].as_str(),
            (Source::Tiktok, FunnelStage::Bottom) => None,
        }
    }

    /// City of a Facebook event (`data.user.location.city`); TikTok has none.
    pub fn city(&self) -> Option<&'a str> {
        match self.source {
            Source::Facebook => self.user()["location"]["city"].as_str(),
            Source::Tiktok => None,
        }
    }

    /// Campaign of Facebook bottom events; no other event has one.
    pub fn campaign_id(&self) -> Option<&'a str> {
        match (self.source, self.funnel_stage) {
            (Source::Facebook, FunnelStage::Bottom) => self.engagement()["campaignId"].as_str(),
            _ => None,
        }
    }

    /// Whether this kind of event carries revenue (Facebook `checkout.complete`, TikTok
    /// `purchase`), whatever its amount.
    pub fn is_revenue_event(&self) -> bool {
        is_revenue_type(self.source, self.event_type)
    }

    /// The revenue of the event: its `purchaseAmount` when it is a revenue event with a
    /// non-null amount, exact. `None` for every other event (a purchase it is not).
    pub fn revenue(&self) -> Option<Decimal> {
        if !self.is_revenue_event() {
            return None;
        }
        self.engagement()["purchaseAmount"]
            .as_str()
            .and_then(|s| parse_amount(s).ok())
    }

    /// The subject suffix `<source>.<eventType>` the event is published under.
    pub fn subject_suffix(&self) -> String {
        format!("{}.{}", self.source, self.event_type)
    }
}
