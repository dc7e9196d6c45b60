//! The analytics service against a private PostgreSQL: readiness follows the database
//! and the schema; SIGTERM exits 0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::time::Duration;
use testkit::{ChildProcess, Postgres, eventually};

/// `service_ready` and the `schema` check of `service_readiness_check`, from /metrics.
async fn readiness_gauges(port: u16) -> Option<(f64, f64)> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let value = |prefix: &str| -> Option<f64> {
        let line = text.lines().find(|l| {
            l.starts_with(prefix)
                && l.contains(r#"service="analytics""#)
                && (prefix == "service_ready{" || l.contains(r#"check="schema""#))
        })?;
        line.rsplit(' ').next()?.parse().ok()
    };
    Some((value("service_ready{")?, value("service_readiness_check{")?))
}

async fn readiness(port: u16) -> Option<(u16, Value)> {
    let r = reqwest::get(format!("http://127.0.0.1:{port}/health/readiness"))
        .await
        .ok()?;
    Some((r.status().as_u16(), r.json().await.ok()?))
}

fn start(pg: &Postgres) -> (ChildProcess, u16) {
    let port = testkit::free_port().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_analytics"));
    cmd.env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("DATABASE_URL", pg.url("events"))
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    (ChildProcess::spawn("analytics", cmd).unwrap(), port)
}

#[tokio::test]
async fn readiness_names_the_schema_until_migrations_ran_then_sigterm_exits_0() {
    let pg = Postgres::start().await.unwrap();
    pg.create_database("events").await.unwrap();
    let (mut analytics, port) = start(&pg);

    let (status, body) = eventually("an answer", Duration::from_secs(30), || readiness(port))
        .await
        .unwrap();
    assert_eq!(status, 503);
    let schema = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "schema")
        .cloned()
        .unwrap();
    assert_eq!(schema["ready"], false, "{body}");
    // The readiness gauges say the same, with nobody probing readiness.
    eventually(
        "gauges: not ready, schema 0",
        Duration::from_secs(30),
        || async { (readiness_gauges(port).await? == (0.0, 0.0)).then_some(()) },
    )
    .await
    .unwrap();

    let mut client = pg.connect("events").await.unwrap();
    worker::migrate::run(&mut client).await.unwrap();
    eventually("readiness", Duration::from_secs(30), || async {
        (readiness(port).await?.0 == 200).then_some(())
    })
    .await
    .unwrap();
    eventually(
        "gauges: ready, schema 1",
        Duration::from_secs(30),
        || async { (readiness_gauges(port).await? == (1.0, 1.0)).then_some(()) },
    )
    .await
    .unwrap();
    let live = reqwest::get(format!("http://127.0.0.1:{port}/health/liveness"))
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"http_requests_total{service="analytics""#),
        "{metrics}"
    );

    analytics.signal("TERM").unwrap();
    let status = analytics.wait_exit(Duration::from_secs(10)).await.unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn readiness_reports_an_unreachable_database() {
    let mut pg = Postgres::start().await.unwrap();
    pg.create_database("events").await.unwrap();
    let (_analytics, port) = start(&pg);
    pg.kill();
    let (status, body) = eventually("an answer", Duration::from_secs(30), || readiness(port))
        .await
        .unwrap();
    assert_eq!(status, 503);
    assert_eq!(body["checks"][0]["name"], "database");
    assert_eq!(body["checks"][0]["ready"], false, "{body}");
}

/// `analytics healthcheck` run with only these variables: exit code, stdout, stderr.
async fn healthcheck(env: &[(&str, &str)]) -> testkit::HealthcheckAnswer {
    testkit::healthcheck(env!("CARGO_BIN_EXE_analytics"), env)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_healthcheck_subcommand_exits_1_naming_the_schema_then_0_once_migrated() {
    let pg = Postgres::start().await.unwrap();
    pg.create_database("events").await.unwrap();
    let (_analytics, port) = start(&pg);
    let port = port.to_string();
    // HOST as in the container: every interface, so the check asks 127.0.0.1.
    let env = [("HOST", "0.0.0.0"), ("PORT", port.as_str())];

    let stderr = eventually(
        "the healthcheck failing",
        Duration::from_secs(30),
        || async {
            let (code, _, stderr) = healthcheck(&env).await;
            (code == Some(1) && stderr.contains("503")).then_some(stderr)
        },
    )
    .await
    .unwrap();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("schema"), "{stderr}");

    let mut client = pg.connect("events").await.unwrap();
    worker::migrate::run(&mut client).await.unwrap();
    let stdout = eventually(
        "the healthcheck passing",
        Duration::from_secs(30),
        || async {
            let (code, stdout, _) = healthcheck(&env).await;
            (code == Some(0)).then_some(stdout)
        },
    )
    .await
    .unwrap();
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
    assert!(stdout.contains("/health/readiness"), "{stdout}");
}

#[tokio::test]
async fn the_healthcheck_subcommand_exits_1_with_one_line_when_nothing_listens() {
    testkit::assert_healthcheck_fails_when_nothing_listens(env!("CARGO_BIN_EXE_analytics")).await;
}
