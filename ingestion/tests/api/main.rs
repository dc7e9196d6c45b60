//! Integration tests of the ingestion service: the real service (in process, or the real
//! binary) in front of a private nats-server per test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod coalesce;
mod counters;
mod health;
mod helpers;
mod lifecycle;
mod openapi;
mod outage;
mod oversize;
mod publish;
mod ratelimit;
mod requests;
mod secrets;
mod signature;
mod slow_clients;
mod validation;
