//! End-to-end tests of the write path with a real nats-server and a real PostgreSQL:
//! exactly-once storage through duplicates, crashes, broker and database restarts,
//! poison messages, a full stream and graceful shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;
mod encodings;
mod failures;
mod healthcheck;
mod lifecycle;
mod many_workers;
mod outages;
mod refusals;
mod retention;
mod storage;
mod user_sets;

use testkit::Platform;

/// A private platform that can also run this crate's `worker` binary.
async fn platform() -> anyhow::Result<Platform> {
    Platform::builder()
        .worker_binary(env!("CARGO_BIN_EXE_worker"))
        .start()
        .await
}
