//! The analytics service: read-only reports over PostgreSQL, answered from the rollups
//! the worker maintains (whole buckets) plus the raw table (partial buckets at a range's
//! edges), so figures are exact for any range and the work does not grow with the number
//! of stored events.

mod activity;
mod api_doc;
mod auth;
mod config;
mod format;
mod page;
mod params;
mod range;
mod ratelimit;
mod replica;
mod routes;
mod startup;
mod zone;

pub use api_doc::openapi;
pub use config::{Command, Config};
pub use startup::{App, build};
