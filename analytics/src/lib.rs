//! The analytics service: read-only reports over PostgreSQL. This first slice serves
//! health, readiness (database reachable, schema current) and metrics; the reports of
//! `api.md` follow.

mod config;
mod startup;

pub use config::Config;
pub use startup::{App, build};
