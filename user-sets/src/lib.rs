//! Per-user activity (`sql/0003_user_sets.sql`): what the worker's compactor writes and
//! the analytics reports read, defined once so both agree on every key.
//!
//! An event makes its user a member of a handful of *sets* (by country and filters, by
//! funnel step, by demographic value: [`memberships`]) and adds to the user's *totals*
//! (events, revenue). Sets and totals are kept per dyadic [`Block`] of quarter-hour
//! [`Slot`]s; a report unions the sets of the blocks that cover its range ([`cover`]) with
//! the sets of the raw events at the edges, computed by the same [`memberships`] from the
//! same [`RAW_SQL`] rows.
//!
//! - [`slot`]: slots, blocks and covers;
//! - [`key`]: set keys and their dimensions;
//! - [`profile`]: an event's facts, its profile and its memberships, the buckets;
//! - [`codec`]: the byte encodings of pending lists, totals and bitmaps;
//! - [`pg`]: raw and listed events from PostgreSQL;
//! - [`store`]: building blocks (the worker's compactor);
//! - [`read`]: reading sets and totals over a range (the reports).

pub mod codec;
pub mod error;
mod fold;
pub mod key;
pub mod pg;
pub mod profile;
pub mod read;
pub mod slot;
pub mod store;
pub mod value;

pub use codec::{decode_activities, decode_bitmap, decode_totals, encode_activities};
pub use error::{DecodeError, Error};
pub use key::{Dim, OwnedSetKey, SetKey};
pub use pg::{RAW_SQL, RAW_SQL_WITHOUT_DEMOGRAPHICS};
pub use profile::{AGE_BUCKETS, Activity, ActivityRef, FOLLOWER_BUCKETS, Profile, memberships};
pub use slot::{
    Block, Cover, MAX_LEVEL, SLOT_SECONDS, Slot, checked_slot_ceil, checked_slot_floor, cover,
    slot_floor,
};
pub use value::{SetValue, SumOverflow, UserTotals};
