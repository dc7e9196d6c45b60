//! Adding events to a block's sets and totals ([`Fold`]), by profile.

use crate::error::Error;
use crate::key::OwnedSetKey;
use crate::profile::{Activity, Profile};
use crate::store::{BlockSets, BlockTotals};
use crate::value::{SetValue, SumOverflow, UserTotals};
use shared_events::Source;
use std::collections::HashMap;
use std::ops::Range;

/// Events being added to a block's sets. The sets of each distinct [`Profile`] are
/// looked up once: a busy slot's events share a few thousand profiles, and ~10 set
/// lookups per event (six key fields hashed and compared each) were most of a fold's CPU.
#[derive(Debug, Default)]
pub(crate) struct Fold {
    /// The sets the added events belong to, each with what they add to it.
    sets: Vec<(OwnedSetKey, SetValue)>,
    /// Where each set is in `sets`.
    index: HashMap<OwnedSetKey, usize>,
    /// Each profile seen ([`Profile::encode`]) with where its sets' indexes are in
    /// `members`.
    profiles: HashMap<Vec<u8>, Range<usize>>,
    members: Vec<usize>,
    /// The profile being looked up.
    scratch: Vec<u8>,
    /// The user of an event without a key, if any (the event is skipped).
    missing: Option<(Source, String)>,
    /// A sum that overflowed, reported by `finish`.
    overflow: Option<SumOverflow>,
}

impl Fold {
    /// Adds events to the sets and to `totals`.
    pub(crate) fn add(&mut self, chunk: &[Activity], totals: &mut BlockTotals) {
        for a in chunk {
            let Some(key) = a.user_key else {
                self.missing = Some((a.source, a.user_id.clone()));
                continue;
            };
            let key = key as u32;
            let members = self.sets_of(Profile::of(a));
            for &i in &self.members[members] {
                // `members` holds indexes of `sets` only.
                if let Some((_, value)) = self.sets.get_mut(i)
                    && let Err(overflow) = value.add_event(key, a.revenue)
                {
                    self.overflow = Some(overflow);
                }
            }
            let t = totals.entry(a.source).or_default().entry(key).or_default();
            let event = UserTotals {
                events: 1,
                revenue: a.revenue.unwrap_or_default(),
            };
            if let Err(overflow) = t.add(event) {
                self.overflow = Some(overflow);
            }
        }
    }

    /// Where the indexes of the sets of `profile` are in `members`; found once per profile.
    fn sets_of(&mut self, profile: Profile<'_>) -> Range<usize> {
        self.scratch.clear();
        profile.encode(&mut self.scratch);
        if let Some(members) = self.profiles.get(self.scratch.as_slice()) {
            return members.clone();
        }
        let start = self.members.len();
        profile.memberships(|k| {
            let k = k.to_owned_key();
            let i = match self.index.get(&k) {
                Some(&i) => i,
                None => {
                    self.sets.push((k.clone(), SetValue::default()));
                    self.index.insert(k, self.sets.len() - 1);
                    self.sets.len() - 1
                }
            };
            self.members.push(i);
        });
        let members = start..self.members.len();
        self.profiles.insert(self.scratch.clone(), members.clone());
        members
    }

    /// Adds what the events added to `sets`; fails naming a user without a key.
    pub(crate) fn finish(self, sets: &mut BlockSets) -> Result<(), Error> {
        if let Some((source, user_id)) = self.missing {
            return Err(Error::NoUserKey(source, user_id));
        }
        if let Some(overflow) = self.overflow {
            return Err(overflow.into());
        }
        for (k, value) in self.sets {
            sets.entry(k).or_default().add(&value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::profile::memberships;
    use rust_decimal::Decimal;
    use shared_events::FunnelStage;

    fn activity(i: u32) -> Activity {
        let facebook = !i.is_multiple_of(3);
        let top = i.is_multiple_of(2);
        let (source, event_type) = match (facebook, top) {
            (true, true) => (Source::Facebook, "ad.view"),
            (true, false) => (Source::Facebook, "checkout.complete"),
            (false, true) => (Source::Tiktok, "video.view"),
            (false, false) => (Source::Tiktok, "purchase"),
        };
        let country = ["Germany", "France", "Japan"][(i % 5 % 3) as usize];
        Activity {
            source,
            funnel_stage: if top {
                FunnelStage::Top
            } else {
                FunnelStage::Bottom
            },
            event_type: event_type.into(),
            user_id: format!("u{}", i % 11),
            user_key: Some((i % 11) as i32),
            country: (facebook || top).then(|| country.into()),
            revenue: (!top).then(|| Decimal::new(i64::from(i), 2)),
            age: facebook.then(|| (15 + i % 60).to_string()),
            gender: (facebook && !i.is_multiple_of(7))
                .then(|| ["female", "male"][(i % 2) as usize].into()),
            city: facebook.then(|| ["Berlin", "Paris", "Osaka", "Lyon"][(i % 4) as usize].into()),
            followers: (!facebook).then(|| (i * 997 % 2_000_000).to_string()),
            device: (!facebook).then(|| ["iOS", "Android"][(i % 2) as usize].into()),
        }
    }

    #[test]
    fn folding_by_profile_gives_the_sets_and_totals_of_each_event_added_alone() {
        let events: Vec<Activity> = (0..600).map(activity).collect();
        let mut expected = BlockSets::new();
        let mut expected_totals = BlockTotals::new();
        for a in &events {
            let user = a.user_key.unwrap() as u32;
            memberships(a, |k| {
                expected
                    .entry(k.to_owned_key())
                    .or_default()
                    .add_event(user, a.revenue)
                    .unwrap()
            });
            let t = expected_totals
                .entry(a.source)
                .or_default()
                .entry(user)
                .or_default();
            t.events += 1;
            t.revenue += a.revenue.unwrap_or_default();
        }

        // Onto a block that already holds sets, in chunks as the lists are read.
        let stored: BlockSets = expected
            .keys()
            .step_by(3)
            .map(|k| {
                let mut v = SetValue::default();
                v.add_event(1_000, Some(Decimal::ONE)).unwrap();
                (k.clone(), v)
            })
            .collect();
        let (mut sets, mut totals) = (stored.clone(), BlockTotals::new());
        let mut fold = Fold::default();
        for chunk in events.chunks(64) {
            fold.add(chunk, &mut totals);
        }
        assert!(
            fold.profiles.len() < events.len() / 2,
            "events share profiles"
        );
        fold.finish(&mut sets).unwrap();

        for (k, v) in &stored {
            expected.get_mut(k).unwrap().add(v).unwrap();
        }
        assert_eq!(sets, expected);
        assert_eq!(totals, expected_totals);
    }

    #[test]
    fn an_event_without_a_user_key_fails_the_fold_naming_the_user() {
        let mut fold = Fold::default();
        let mut totals = BlockTotals::new();
        let keyless = Activity {
            user_key: None,
            ..activity(1)
        };
        fold.add(&[activity(2), keyless], &mut totals);
        let error = fold.finish(&mut BlockSets::new()).unwrap_err();
        assert_eq!(error.to_string(), "user facebook/u1 has no key");
    }
}
