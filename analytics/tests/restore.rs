//! Backups (docs/operations.md, "Backups and restore"): the logical backup of a running
//! platform's database, taken and restored into a fresh PostgreSQL cluster exactly as the
//! document says, answers every report as the original does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::path::Path;
use testkit::{EVERY_REPORT, Platform, Postgres};

const EVENTS: usize = 2_000;

const RANGE: &str = "from=2026-02-28T00:00:00Z&to=2026-03-02T00:00:00Z";

/// Runs a PostgreSQL client tool; fails with its standard error unless it succeeds.
async fn run(mut tool: tokio::process::Command, what: &str) -> String {
    let out = tool.output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{what}: {stderr}");
    stderr
}

/// The backup of docs/operations.md: the roles, then the database in custom format.
async fn back_up(pg: &Postgres, dir: &Path) {
    let mut roles = pg.tool("pg_dumpall");
    roles
        .arg("--roles-only")
        .arg("-f")
        .arg(dir.join("roles.sql"));
    run(roles, "pg_dumpall --roles-only").await;
    let mut dump = pg.tool("pg_dump");
    dump.args(["-Fc", "-d", "events", "-f"])
        .arg(dir.join("events.dump"));
    run(dump, "pg_dump").await;
}

/// The restore of docs/operations.md into a fresh cluster: roles, database, dump.
async fn restore(pg: &Postgres, dir: &Path) {
    let mut roles = pg.tool("psql");
    roles
        .args(["-X", "-q", "-d", "postgres", "-f"])
        .arg(dir.join("roles.sql"));
    let stderr = run(roles, "psql -f roles.sql").await;
    // The one error the document tells to expect: the fresh cluster has its own postgres.
    for line in stderr.lines().filter(|l| l.contains("ERROR")) {
        assert!(
            line.contains(r#"role "postgres" already exists"#),
            "restoring the roles: {line}"
        );
    }
    let mut database = pg.tool("createdb");
    database.arg("events");
    run(database, "createdb events").await;
    let mut dump = pg.tool("pg_restore");
    dump.args(["--exit-on-error", "-d", "events"])
        .arg(dir.join("events.dump"));
    run(dump, "pg_restore").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_restored_into_a_fresh_cluster_answers_every_report_the_same() {
    let platform = Platform::start().await.unwrap();
    let no_limit = ["--analytics-rate-limit-per-sec=0"];
    let services = platform.start_services(&[], &no_limit).await.unwrap();
    let events = testkit::generated(5, EVENTS).unwrap();
    for chunk in events.chunks(100) {
        let (status, body) = platform
            .post(services.ingestion.port, &Value::Array(chunk.to_vec()))
            .await
            .unwrap();
        assert_eq!(status, 202, "{body}");
    }
    platform.wait_rows(EVENTS as i64).await.unwrap();

    // Taken while the worker runs (its compaction may be mid-way): pg_dump reads one
    // snapshot, and the reports are exact in every state of the sets.
    let dir = tempfile::tempdir().unwrap();
    back_up(&platform.pg, dir.path()).await;
    let original = platform
        .every_report(&services.analytics, RANGE)
        .await
        .unwrap();
    assert_eq!(
        original[0]["total"], EVENTS,
        "the original holds every event"
    );

    let fresh = Postgres::start().await.unwrap();
    restore(&fresh, dir.path()).await;
    let restored = platform
        .start_analytics_on(&fresh.url("events"), &no_limit)
        .await
        .unwrap();
    let after = platform.every_report(&restored, RANGE).await.unwrap();
    for ((query, original), after) in EVERY_REPORT.iter().zip(&original).zip(&after) {
        assert_eq!(after, original, "{query} after the restore");
    }
}
