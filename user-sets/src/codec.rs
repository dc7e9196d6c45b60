//! The byte encodings of the sets' tables: pending lists (`user_sets_pending.facts`),
//! per-user totals (`user_totals.totals`) and bitmaps (`user_sets.users`).

use crate::error::DecodeError;
use crate::profile::{Activity, ActivityRef};
use crate::value::UserTotals;
use roaring::RoaringBitmap;
use rust_decimal::Decimal;
use shared_events::{FunnelStage, Source};
use std::collections::BTreeMap;

/// The `user_sets_pending.facts` encoding: version byte 1, then per event its strings
/// (`u32` length, little-endian, then UTF-8) and options (a 0/1 byte, then the value): source,
/// stage, type, userId, key (`i32`), country, revenue (16 bytes), then the five demographic
/// facts.
pub fn encode_activities<'a>(events: impl IntoIterator<Item = ActivityRef<'a>>) -> Vec<u8> {
    fn text(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    fn option<T>(out: &mut Vec<u8>, v: Option<T>, put: impl FnOnce(&mut Vec<u8>, T)) {
        match v {
            Some(v) => {
                out.push(1);
                put(out, v);
            }
            None => out.push(0),
        }
    }
    let mut out = vec![1u8];
    for a in events {
        for s in [
            a.source.as_str(),
            a.funnel_stage.as_str(),
            a.event_type,
            a.user_id,
        ] {
            text(&mut out, s);
        }
        option(&mut out, a.user_key, |o, k| {
            o.extend_from_slice(&k.to_le_bytes())
        });
        option(&mut out, a.country, text);
        option(&mut out, a.revenue, |o, r| {
            o.extend_from_slice(&r.serialize())
        });
        for d in a.demographics {
            option(&mut out, d, text);
        }
    }
    out
}

/// Appends the events encoded by [`encode_activities`] to `out`.
pub fn decode_activities(bytes: &[u8], out: &mut Vec<Activity>) -> Result<(), DecodeError> {
    let mut r = Reader(bytes);
    match r.take::<1>()? {
        [1] => {}
        [v] => return Err(DecodeError::UnknownVersion(v)),
    }
    while !r.0.is_empty() {
        let source = r.text()?;
        let source =
            Source::parse(&source).ok_or_else(|| DecodeError::unknown("source", &source))?;
        let stage = r.text()?;
        let funnel_stage = FunnelStage::parse(&stage)
            .ok_or_else(|| DecodeError::unknown("funnel_stage", &stage))?;
        let [event_type, user_id] = [r.text()?, r.text()?];
        let user_key = match r.take::<1>()? {
            [0] => None,
            _ => Some(i32::from_le_bytes(r.take::<4>()?)),
        };
        let country = r.option_text()?;
        let revenue = match r.take::<1>()? {
            [0] => None,
            _ => Some(Decimal::deserialize(r.take::<16>()?)),
        };
        out.push(Activity {
            source,
            funnel_stage,
            event_type,
            user_id,
            user_key,
            country,
            revenue,
            age: r.option_text()?,
            gender: r.option_text()?,
            city: r.option_text()?,
            followers: r.option_text()?,
            device: r.option_text()?,
        });
    }
    Ok(())
}

/// The `user_totals.totals` encoding: `n: u32`, n × (`key: u32`, `events: u64`), then
/// `m: u32`, m × (`key: u32`, revenue as `rust_decimal`'s 16 bytes) for the users with
/// revenue; little-endian, keys ascending.
pub fn encode_totals(totals: &BTreeMap<u32, UserTotals>) -> Vec<u8> {
    let with_revenue = totals.values().filter(|t| !t.revenue.is_zero()).count();
    let mut out = Vec::with_capacity(8 + totals.len() * 12 + with_revenue * 20);
    out.extend_from_slice(&(totals.len() as u32).to_le_bytes());
    for (key, t) in totals {
        out.extend_from_slice(&key.to_le_bytes());
        out.extend_from_slice(&t.events.to_le_bytes());
    }
    out.extend_from_slice(&(with_revenue as u32).to_le_bytes());
    for (key, t) in totals.iter().filter(|(_, t)| !t.revenue.is_zero()) {
        out.extend_from_slice(&key.to_le_bytes());
        out.extend_from_slice(&t.revenue.serialize());
    }
    out
}

/// Adds the totals encoded in `bytes` to `into`.
pub fn decode_totals(
    bytes: &[u8],
    into: &mut BTreeMap<u32, UserTotals>,
) -> Result<(), DecodeError> {
    let mut r = Reader(bytes);
    let n = r.u32()?;
    for _ in 0..n {
        let key = r.u32()?;
        let events = u64::from_le_bytes(r.take::<8>()?);
        let total = into.entry(key).or_default();
        let added = UserTotals {
            events,
            revenue: Decimal::ZERO,
        };
        total.add(added).map_err(DecodeError::TotalsOverflow)?;
    }
    let m = r.u32()?;
    for _ in 0..m {
        let key = r.u32()?;
        let revenue = Decimal::deserialize(r.take::<16>()?);
        let total = into.entry(key).or_default();
        let added = UserTotals { events: 0, revenue };
        total.add(added).map_err(DecodeError::TotalsOverflow)?;
    }
    if r.0.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::TrailingBytes)
    }
}

/// A bitmap in the portable roaring format (`user_sets.users`).
pub fn encode_bitmap(bitmap: &RoaringBitmap) -> Vec<u8> {
    let mut out = Vec::with_capacity(bitmap.serialized_size());
    // Writing to a Vec cannot fail.
    let _ = bitmap.serialize_into(&mut out);
    out
}

/// Reads a bitmap written by [`encode_bitmap`].
pub fn decode_bitmap(bytes: &[u8]) -> Result<RoaringBitmap, DecodeError> {
    RoaringBitmap::deserialize_from(bytes).map_err(DecodeError::Bitmap)
}

/// Reads the little-endian fields of an encoding, front to back.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Truncated)?;
        self.0 = rest;
        Ok(*head)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take::<4>()?))
    }

    fn text(&mut self) -> Result<String, DecodeError> {
        let n = self.u32()? as usize;
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(String::from_utf8(head.to_vec())?)
    }

    fn option_text(&mut self) -> Result<Option<String>, DecodeError> {
        Ok(match self.take::<1>()? {
            [0] => None,
            _ => Some(self.text()?),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pending_lists_round_trip() {
        let full = ActivityRef {
            source: Source::Facebook,
            funnel_stage: FunnelStage::Bottom,
            event_type: "checkout.complete",
            user_id: "ü-1",
            user_key: Some(-7),
            country: Some("Brazil"),
            revenue: Some(Decimal::new(1999, 2)),
            demographics: [
                Some("34"),
                Some("female"),
                Some("São Paulo"),
                Some("1200"),
                None,
            ],
        };
        let bare = ActivityRef {
            source: Source::Tiktok,
            funnel_stage: FunnelStage::Top,
            user_key: None,
            country: None,
            revenue: None,
            demographics: [None; 5],
            ..full
        };
        let bytes = encode_activities([full, bare]);
        let mut out = Vec::new();
        decode_activities(&bytes, &mut out).unwrap();
        let seen: Vec<_> = out
            .iter()
            .map(|a| {
                (
                    a.source,
                    a.funnel_stage,
                    a.user_id.as_str(),
                    a.user_key,
                    a.country.as_deref(),
                    a.revenue,
                    a.city.as_deref(),
                    a.device.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (
                    Source::Facebook,
                    FunnelStage::Bottom,
                    "ü-1",
                    Some(-7),
                    Some("Brazil"),
                    Some(Decimal::new(1999, 2)),
                    Some("São Paulo"),
                    None
                ),
                (
                    Source::Tiktok,
                    FunnelStage::Top,
                    "ü-1",
                    None,
                    None,
                    None,
                    None,
                    None
                ),
            ]
        );
        assert!(matches!(
            decode_activities(&bytes[..bytes.len() - 1], &mut Vec::new()),
            Err(DecodeError::Truncated)
        ));
        assert!(matches!(
            decode_activities(&[2], &mut Vec::new()),
            Err(DecodeError::UnknownVersion(2))
        ));
    }

    #[test]
    fn a_pending_list_naming_an_unknown_source_is_refused() {
        let mut bytes = encode_activities([ActivityRef {
            source: Source::Tiktok,
            funnel_stage: FunnelStage::Top,
            event_type: "like",
            user_id: "u",
            user_key: None,
            country: None,
            revenue: None,
            demographics: [None; 5],
        }]);
        // "tiktok" is at bytes 5..11, after the version and its length.
        bytes[5..11].copy_from_slice(b"myspce");
        let error = decode_activities(&bytes, &mut Vec::new()).unwrap_err();
        assert_eq!(error.to_string(), r#"unknown source "myspce""#);
    }

    #[test]
    fn totals_round_trip_and_add_up() {
        let mut a = BTreeMap::new();
        a.insert(
            3,
            UserTotals {
                events: 2,
                revenue: Decimal::new(14999, 2),
            },
        );
        a.insert(
            70_000,
            UserTotals {
                events: 5,
                revenue: Decimal::ZERO,
            },
        );
        let bytes = encode_totals(&a);
        let mut sum = BTreeMap::new();
        decode_totals(&bytes, &mut sum).unwrap();
        assert_eq!(sum, a);
        decode_totals(&bytes, &mut sum).unwrap();
        assert_eq!(sum[&3].events, 4);
        assert_eq!(sum[&3].revenue, Decimal::new(29998, 2));
        assert!(matches!(
            decode_totals(&bytes[..bytes.len() - 1], &mut sum),
            Err(DecodeError::Truncated)
        ));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            decode_totals(&trailing, &mut BTreeMap::new()),
            Err(DecodeError::TrailingBytes)
        ));
    }

    #[test]
    fn bitmaps_round_trip_and_garbage_is_an_error() {
        let users: RoaringBitmap = [1, 5, 70_000].into_iter().collect();
        assert_eq!(decode_bitmap(&encode_bitmap(&users)).unwrap(), users);
        assert!(matches!(
            decode_bitmap(&[0xff, 0, 1]),
            Err(DecodeError::Bitmap(_))
        ));
    }
}
