//! A set's identity: its [`Dim`], the filters it is stored under (each a value or any)
//! and its value. In the database (`user_sets`' key columns) "any" and "no value" are the
//! empty string; here they are `None`, converted only where rows are read and written
//! ([`OwnedSetKey::from_row`], [`SetKey::columns`]).

use crate::DecodeError;
use shared_events::{FunnelStage, Source};

/// What a set is of (`user_sets.dim`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dim {
    /// The users by country (the value), under every combination of the source, stage
    /// and type filters (geo).
    Country,
    /// The users per source and stage, and per event type (funnel); no value.
    All,
    /// Facebook users by age bucket ([`crate::AGE_BUCKETS`]).
    Age,
    /// Facebook users by gender.
    Gender,
    /// Facebook users by city, its country the context.
    City,
    /// TikTok users by follower bucket ([`crate::FOLLOWER_BUCKETS`]).
    Followers,
    /// TikTok users of top events by device.
    Device,
}

impl Dim {
    /// Every dimension.
    pub const ALL: [Dim; 7] = [
        Dim::Country,
        Dim::All,
        Dim::Age,
        Dim::Gender,
        Dim::City,
        Dim::Followers,
        Dim::Device,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Dim::Country => "country",
            Dim::All => "all",
            Dim::Age => "age",
            Dim::Gender => "gender",
            Dim::City => "city",
            Dim::Followers => "followers",
            Dim::Device => "device",
        }
    }

    /// Parses the stored name; `None` for anything else.
    pub fn parse(s: &str) -> Option<Dim> {
        Dim::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// Whether its sets are made from the demographic facts of an event (so its raw rows
    /// need [`crate::RAW_SQL`], not [`crate::RAW_SQL_WITHOUT_DEMOGRAPHICS`]).
    pub fn needs_demographics(self) -> bool {
        !matches!(self, Dim::Country | Dim::All)
    }
}

/// The stored text of a filter: its value, or `""` for any.
fn stored<T>(filter: Option<T>, name: impl FnOnce(T) -> &'static str) -> &'static str {
    filter.map_or("", name)
}

/// A set's identity, borrowed (as [`crate::Profile::memberships`] gives them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SetKey<'a> {
    pub dim: Dim,
    /// `None`: the set holds the users of every source.
    pub source: Option<Source>,
    /// `None`: of both stages.
    pub funnel_stage: Option<FunnelStage>,
    /// `None`: of every event type.
    pub event_type: Option<&'a str>,
    /// The dimension's value (the country, bucket, gender, city or device); empty for
    /// [`Dim::All`]. A city may be the empty string, so this is not an option.
    pub value: &'a str,
    /// The country of a [`Dim::City`] set; `None` for the others.
    pub context: Option<&'a str>,
}

impl<'a> SetKey<'a> {
    /// The key owning its strings.
    pub fn to_owned_key(&self) -> OwnedSetKey {
        OwnedSetKey {
            dim: self.dim,
            source: self.source,
            funnel_stage: self.funnel_stage,
            event_type: self.event_type.map(str::to_owned),
            value: self.value.to_owned(),
            context: self.context.map(str::to_owned),
        }
    }

    /// The stored key columns `dim, source, funnel_stage, event_type, value, context`.
    pub fn columns(&self) -> [&'a str; 6] {
        [
            self.dim.as_str(),
            stored(self.source, Source::as_str),
            stored(self.funnel_stage, FunnelStage::as_str),
            self.event_type.unwrap_or(""),
            self.value,
            self.context.unwrap_or(""),
        ]
    }
}

/// A [`SetKey`] that owns its strings (as read from the database).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnedSetKey {
    pub dim: Dim,
    pub source: Option<Source>,
    pub funnel_stage: Option<FunnelStage>,
    pub event_type: Option<String>,
    pub value: String,
    pub context: Option<String>,
}

impl OwnedSetKey {
    /// The key columns of a `user_sets` row selected in table order, from `dim` on.
    pub fn from_row(row: &tokio_postgres::Row) -> Result<OwnedSetKey, DecodeError> {
        let text = |i: usize| -> Result<&str, DecodeError> { Ok(row.try_get(i)?) };
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let dim = text(0)?;
        let source = text(1)?;
        let stage = text(2)?;
        Ok(OwnedSetKey {
            dim: Dim::parse(dim).ok_or_else(|| DecodeError::unknown("dim", dim))?,
            source: match source {
                "" => None,
                s => Some(Source::parse(s).ok_or_else(|| DecodeError::unknown("source", s))?),
            },
            funnel_stage: match stage {
                "" => None,
                s => Some(
                    FunnelStage::parse(s).ok_or_else(|| DecodeError::unknown("funnel_stage", s))?,
                ),
            },
            event_type: some(text(3)?),
            value: text(4)?.to_owned(),
            context: some(text(5)?),
        })
    }

    /// The key, borrowed.
    pub fn as_key(&self) -> SetKey<'_> {
        SetKey {
            dim: self.dim,
            source: self.source,
            funnel_stage: self.funnel_stage,
            event_type: self.event_type.as_deref(),
            value: &self.value,
            context: self.context.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dims_round_trip_their_stored_names() {
        for d in Dim::ALL {
            assert_eq!(Dim::parse(d.as_str()), Some(d));
        }
        assert_eq!(Dim::parse(""), None);
        assert_eq!(Dim::parse("Country"), None);
    }

    #[test]
    fn any_and_no_value_are_stored_as_the_empty_string() {
        let key = SetKey {
            dim: Dim::Country,
            source: None,
            funnel_stage: Some(FunnelStage::Top),
            event_type: None,
            value: "Japan",
            context: None,
        };
        assert_eq!(key.columns(), ["country", "", "top", "", "Japan", ""]);
        let city = SetKey {
            dim: Dim::City,
            source: Some(Source::Facebook),
            funnel_stage: None,
            event_type: None,
            value: "",
            context: Some("Germany"),
        };
        assert_eq!(city.columns(), ["city", "facebook", "", "", "", "Germany"]);
        assert_eq!(city.to_owned_key().as_key(), city);
    }
}
