//! What can go wrong: stored bytes or rows that cannot be read ([`DecodeError`]), and
//! everything a database operation on the sets can meet ([`Error`]).

use crate::value::SumOverflow;
use shared_events::Source;

/// Stored per-user data (a pending list, a block's totals or bitmap, a row) that cannot
/// be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes end inside a field.
    #[error("truncated")]
    Truncated,
    /// A pending list of an encoding this version does not know.
    #[error("unknown version {0} of a pending list")]
    UnknownVersion(u8),
    /// A string field that is not UTF-8.
    #[error("text that is not UTF-8")]
    NotUtf8(#[from] std::string::FromUtf8Error),
    /// Bytes after the last field of a block's totals.
    #[error("trailing bytes in user totals")]
    TrailingBytes,
    /// A user's totals summed past what their types hold.
    #[error("a user's totals overflow")]
    TotalsOverflow(#[source] SumOverflow),
    /// A bitmap not in the portable roaring format.
    #[error("bad user bitmap")]
    Bitmap(#[source] std::io::Error),
    /// A source, stage or dimension outside the closed vocabularies.
    #[error("unknown {column} {value:?}")]
    Unknown { column: &'static str, value: String },
    /// A column of a row that does not convert to its Rust type.
    #[error("a column of an unexpected type")]
    Column(#[from] tokio_postgres::Error),
}

impl DecodeError {
    pub(crate) fn unknown(column: &'static str, value: &str) -> DecodeError {
        DecodeError::Unknown {
            column,
            value: value.to_owned(),
        }
    }
}

/// Why reading or building the sets failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database failed the statement (the source is the `tokio_postgres` error, whose
    /// SQLSTATE says whether it refused the data or is unavailable).
    #[error("database error")]
    Database(#[from] tokio_postgres::Error),
    /// Stored data that cannot be read.
    #[error("unreadable per-user activity")]
    Corrupt(#[from] DecodeError),
    /// A set's or user's sums past what their types hold.
    #[error(transparent)]
    Overflow(#[from] SumOverflow),
    /// An event whose user has no key, which a block cannot hold.
    #[error("user {0}/{1} has no key")]
    NoUserKey(Source, String),
    /// A user key in the blocks that `user_keys` does not name.
    #[error("user key {0} has no name")]
    UnnamedUserKey(u32),
    /// A range some of whose slot bounds are outside the instants `time` represents.
    #[error("the range cannot be divided into slots")]
    Unrepresentable,
}
