//! The event specification (`docs/events.md`), implemented once.
//!
//! * [`validate`] checks a JSON value against the spec and reports *every* problem with
//!   its JSON path, so a producer can fix a whole event in one round trip.
//! * A valid event is an [`Event`], a view over the JSON that keeps every field, unknown
//!   ones included, and exposes the derived facts (revenue, country, campaign, user).
//!
//! This crate does no I/O; the services bring their own transport and storage.

mod event;
mod money;
mod spec;
mod validate;

pub use event::Event;
pub use money::{MAX_AMOUNT, MoneyError, format_money, parse_amount};
pub use spec::{ENVELOPE_FIELDS, FunnelStage, Source, event_types, is_known_event_type, stage_of};
pub use validate::{
    EARLIEST_EVENT_TIME, FieldError, MAX_EVENT_ID_CHARS, MAX_EVENT_TIME_AHEAD, MAX_ID_CHARS,
    MAX_PLACE_CHARS, MAX_TEXT_CHARS, validate,
};
