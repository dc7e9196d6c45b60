//! The workspace's test harness: a private nats-server and a private PostgreSQL on free
//! loopback ports with throw-away data directories, killable and restartable; the
//! [`Platform`] that starts the services on them (in process from their typed configs,
//! or the `worker` binary as a process or a command such as `worker migrate`), its
//! PostgreSQL plain or TLS-only and its database owned by `postgres` or by a
//! non-superuser owner, reached as any login; a service's binary run by its environment
//! (refused at start, its log read, its `healthcheck`); child processes signalled by PID;
//! a unique name per test; polling with a deadline instead of sleeps; sample events; the
//! OpenAPI snapshot assertion; a headless Chromium for the pages the services serve.
//!
//! Everything a test starts is stopped when the handle drops.

mod binary;
pub mod browser;
mod events;
mod nats;
pub mod openapi;
mod platform;
mod postgres;
mod process;
mod tls;

pub use binary::{
    HealthcheckAnswer, LoggingBinary, TempFile, assert_healthcheck_fails_when_nothing_listens,
    assert_refused_at_start, healthcheck, run_to_exit,
};
pub use events::{
    events, facebook_bottom, facebook_top, generated, generated_late, tiktok_bottom, tiktok_top,
};
pub use nats::{NatsLogin, NatsServer, NkeyUser};
pub use platform::{
    DeadLetter, EVERY_REPORT, Names, Platform, PlatformBuilder, Service, Services, WAIT, WorkerLog,
    metric_value, parse, rollups,
};
pub use postgres::{Postgres, PostgresOptions};
pub use process::ChildProcess;
pub use tls::SelfSigned;

use std::future::Future;
use std::time::{Duration, Instant};

/// A short name unique to this test run (`t3f9a1c`), for streams, consumers and databases.
pub fn unique_name() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("t{}", &id[..10])
}

/// A free TCP port on 127.0.0.1 (bound, then released for the caller to take).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Polls `check` every 50 ms until it yields `Some`, or fails after `timeout` with the
/// description of what was awaited.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where child processes write their logs: inherited with `TEST_LOG=1`, else discarded.
pub(crate) fn child_output() -> std::process::Stdio {
    if std::env::var_os("TEST_LOG").is_some() {
        std::process::Stdio::inherit()
    } else {
        std::process::Stdio::null()
    }
}

/// Whether this process runs as root (PostgreSQL refuses to).
pub(crate) fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}
