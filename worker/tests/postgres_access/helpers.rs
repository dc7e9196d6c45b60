//! What this suite adds to [`testkit::Platform`]: the platform it starts (a database
//! `events` owned by `events_owner`, a login that may create roles but is no superuser,
//! like a managed PostgreSQL's admin user), the deployment's login users, and the checks
//! its tests share.

use serde_json::Value;
use testkit::{Platform, WAIT, eventually};

/// The owner of the schema: `worker migrate` runs as it.
pub const OWNER: &str = "events_owner";
/// The login users `deploy/postgres/login-users.sql` creates by default.
pub const WORKER_USER: &str = "events_worker";
pub const ANALYTICS_USER: &str = "events_analytics";
/// A compaction round every 200 ms, so the per-user sets are built soon after the rows.
pub const COMPACT_SOON: &str = "--worker-compact-interval=200ms";

/// A platform whose database `events` is the owner's; PostgreSQL plain.
pub async fn platform() -> anyhow::Result<Platform> {
    builder().start().await
}

/// As [`platform`], PostgreSQL serving TLS with a self-signed certificate and refusing
/// plain text to every role but the test's own `postgres` (`hostssl`).
pub async fn platform_with_tls() -> anyhow::Result<Platform> {
    builder().postgres_tls().start().await
}

fn builder() -> testkit::PlatformBuilder {
    Platform::builder()
        .worker_binary(env!("CARGO_BIN_EXE_worker"))
        .database_owner(OWNER)
}

/// The login users, by the deployment's own script (`deploy/postgres/login-users.sql`).
pub async fn create_login_users(p: &Platform) -> anyhow::Result<()> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/postgres/login-users.sql"
    );
    p.pg.run_sql_file("events", script.as_ref()).await
}

/// Waits until the compactor (run by the worker) has folded every event into the
/// per-user sets: no dirty slot left, nothing pending, sets written.
pub async fn wait_all_compacted(p: &Platform) -> anyhow::Result<()> {
    let db = p.db().await?;
    eventually("the per-user sets built", WAIT, || async {
        let row = db
            .query_one(
                "SELECT (SELECT count(*) FROM user_sets_dirty),
                        (SELECT count(*) FROM user_sets_pending),
                        (SELECT count(*) FROM user_sets)",
                &[],
            )
            .await
            .ok()?;
        let (dirty, pending, sets): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        (dirty == 0 && pending == 0 && sets > 0).then_some(())
    })
    .await
}

/// POSTs `events` to ingestion on `port`; the status.
pub async fn post(p: &Platform, port: u16, events: Vec<Value>) -> anyhow::Result<u16> {
    Ok(p.post(port, &Value::Array(events)).await?.0)
}

/// The `total` of `/analytics/stats` over the day of [`events`].
pub async fn stats_total(p: &Platform, analytics_port: u16) -> anyhow::Result<i64> {
    let body: Value = p
        .http
        .get(format!(
            "http://127.0.0.1:{analytics_port}/analytics/stats\
             ?from=2025-06-01T00:00:00Z&to=2025-06-02T00:00:00Z"
        ))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    body["total"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("no total in {body}"))
}

/// The TLS state of every connection of `user`: (connections, how many use TLS).
pub async fn tls_connections(p: &Platform, user: &str) -> anyhow::Result<(i64, i64)> {
    let row = p
        .db()
        .await?
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE s.ssl)
             FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid
             WHERE a.usename = $1",
            &[&user],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// `n` valid events of every kind on 2025-06-01 (a day long ended, so the compactor
/// folds them at once), ids `<tag>-<i>`.
pub fn events(tag: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let id = format!("{tag}-{i}");
            let at = format!("2025-06-01T{:02}:{:02}:00Z", 8 + i % 10, i % 60);
            let user = format!("u-{}", i % 7);
            match i % 4 {
                0 => testkit::facebook_top(&id, &at, &user, "Germany"),
                1 => testkit::facebook_bottom(&id, &at, &user, Some("10.50")),
                2 => testkit::tiktok_top(&id, &at, &user, "France"),
                _ => testkit::tiktok_bottom(&id, &at, &user, Some("3.25")),
            }
        })
        .collect()
}
