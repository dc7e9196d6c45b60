//! The worker: a durable JetStream pull consumer that stores events in PostgreSQL
//! exactly once (batch insert deduplicated by event id, ack only after the commit),
//! dead-letters what can never be stored, and keeps the daily partitions of `events`.

pub mod compact;
pub mod compactor;
mod config;
mod consumer;
pub mod dlq;
mod gate;
pub mod migrate;
pub mod partitions;
mod rollup;
mod startup;
pub mod store;

pub use config::{Command, Config};
pub use startup::{App, build, migrate_schema, rebuild_rollups};
