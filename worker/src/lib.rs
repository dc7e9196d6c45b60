//! The worker: a durable JetStream pull consumer that stores events in PostgreSQL
//! exactly once (batch insert, `ON CONFLICT (event_id) DO NOTHING`, ack only after the
//! commit) and dead-letters what can never be stored.

pub mod compact;
pub mod compactor;
mod config;
mod consumer;
pub mod dlq;
mod gate;
pub mod migrate;
mod rollup;
mod startup;
pub mod store;

pub use config::{Command, Config};
pub use startup::{App, build, migrate_schema, rebuild_rollups};
