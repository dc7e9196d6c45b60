//! Realistic, reproducible Facebook and TikTok events, in the four shapes of docs/events.md.
//!
//! Every random choice comes from one RNG seeded with `--seed`, and event time comes from
//! an [`EventClock`]; with a virtual clock the same seed gives byte-identical events.
//! Events are plain `Copy` structs of numbers and `&'static str`: serialising one
//! allocates nothing, which keeps the generator far ahead of the network.
//!
//! The parts: [`Event`] and its pieces (the JSON shapes), [`Corruption`] (the defects of
//! the `--invalid` fraction), the fixed pools of users and the value tables (`fixtures`),
//! the weighted and skewed draws (`random`), and the builders of each source's events
//! (`sources`). This file holds the [`Generator`]: the mix of fresh, duplicate, invalid
//! and out-of-order events, and the clock.

mod corruption;
mod event;
mod fixtures;
mod random;
mod sources;

pub use corruption::Corruption;
pub use event::{
    Amount, Data, Engagement, Event, FacebookUser, FullName, Location, Millis, Tagged, TiktokUser,
    User,
};

use fixtures::TiktokProfile;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Instant;
use time::{Duration, OffsetDateTime};

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

/// How many earlier valid events a later duplicate may repeat.
const HISTORY: usize = 4_096;
/// Out-of-order events lie between one minute and 48 hours in the past.
const OUT_OF_ORDER_MIN_MS: i64 = 60_000;
const OUT_OF_ORDER_MAX_MS: i64 = 48 * 3_600_000;

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
        // The pools come first, in this order: the seed fixes them before any event.
        let facebook_users = fixtures::facebook_users(&mut rng);
        let tiktok_users = fixtures::tiktok_users(&mut rng);
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
}
