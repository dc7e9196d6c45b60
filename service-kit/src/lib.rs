//! Plumbing the three services share, written once: configuration errors, telemetry,
//! metrics (recorder, HTTP middleware, pool gauges), health routes, graceful shutdown,
//! secrets (fail-closed, `_FILE`, key ids), the database pool, the schema's migration
//! list, the API error body and per-client rate limits.

pub mod batch;
pub mod config;
pub mod db;
pub mod error;
pub mod health;
pub mod http;
pub mod metrics;
pub mod ratelimit;
pub mod schema;
pub mod secret;
pub mod shutdown;
pub mod stream;
pub mod telemetry;
