//! The ingestion service: `POST /webhook/event` validates events and publishes them to
//! JetStream, answering 202 only once every event's PubAck arrived.

mod api_doc;
mod coalesce;
mod config;
mod correlation;
mod error;
mod publish;
mod ratelimit;
mod routes;
/// Public for the signing helpers (producers, tests) and [`signature::SigningKeyId`].
pub mod signature;
mod startup;

pub use api_doc::openapi;
pub use config::{Command, Config};
pub use startup::{App, build};
