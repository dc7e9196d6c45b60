//! What a set and a user hold for a block or a range, and the checked sums that add them
//! up.

use crate::codec::decode_bitmap;
use crate::error::DecodeError;
use roaring::RoaringBitmap;
use rust_decimal::Decimal;

/// Events and revenue of one user.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UserTotals {
    pub events: u64,
    pub revenue: Decimal,
}

impl UserTotals {
    /// Adds another block's or event's figures.
    pub fn add(&mut self, other: UserTotals) -> Result<(), SumOverflow> {
        self.events = self.events.checked_add(other.events).ok_or(SumOverflow)?;
        self.revenue = self.revenue.checked_add(other.revenue).ok_or(SumOverflow)?;
        Ok(())
    }
}

/// A count or revenue sum past what its type holds. Validation bounds every amount, so
/// only impossible volumes get here; but the sum must fail, not panic or wrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a sum of events or revenue exceeds what its type holds")]
pub struct SumOverflow;

/// What a set holds for a block or a range: its users, and the events that put them there
/// with their revenue (geo's events and revenue by country come from these, so geo reads
/// one set of blocks; counts and sums add up across blocks like the users union).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SetValue {
    pub users: RoaringBitmap,
    pub events: i64,
    pub revenue: Decimal,
}

impl SetValue {
    /// One event of user `user` with its revenue.
    pub fn add_event(&mut self, user: u32, revenue: Option<Decimal>) -> Result<(), SumOverflow> {
        self.users.insert(user);
        self.events = self.events.checked_add(1).ok_or(SumOverflow)?;
        if let Some(r) = revenue {
            self.revenue = self.revenue.checked_add(r).ok_or(SumOverflow)?;
        }
        Ok(())
    }

    /// Adds another block's or range's contents.
    pub fn add(&mut self, other: &SetValue) -> Result<(), SumOverflow> {
        self.users |= &other.users;
        self.events = self.events.checked_add(other.events).ok_or(SumOverflow)?;
        self.revenue = self.revenue.checked_add(other.revenue).ok_or(SumOverflow)?;
        Ok(())
    }

    /// Reads `users, events, revenue` at columns `at`, `at + 1`, `at + 2`.
    pub fn from_row(row: &tokio_postgres::Row, at: usize) -> Result<SetValue, DecodeError> {
        Ok(SetValue {
            users: decode_bitmap(row.try_get(at)?)?,
            events: row.try_get(at + 1)?,
            revenue: row.try_get(at + 2)?,
        })
    }
}
