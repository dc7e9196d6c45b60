//! Liveness, readiness and the metrics dashboards rely on.

use crate::helpers::{Options, PATIENCE, TestApp, fb_top, spawn_app};

/// The value of the first sample line starting with `prefix` that contains every label.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn liveness_and_readiness_answer_200_when_up() {
    let app = spawn_app(Options::default()).await;
    let response = app.get("/health/liveness").await.expect("liveness answers");
    assert_eq!(response.status(), 200);
    let response = app
        .get("/health/readiness")
        .await
        .expect("readiness answers");
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn metrics_count_requests_accepted_and_rejected_events() {
    let app = spawn_app(Options::default()).await;
    let scrape = || async {
        let response = app.get("/metrics").await.expect("metrics answer");
        assert_eq!(response.status(), 200);
        response.text().await.expect("text")
    };
    let rejected_label = "reason=\"validation_failed\"";
    let before = scrape().await;
    let rejected_before = sample(
        &before,
        "ingestion_events_rejected_total",
        &[rejected_label],
    )
    .unwrap_or(0.0);
    let accepted_before = sample(
        &before,
        "ingestion_events_accepted_total",
        &["source=\"facebook\""],
    )
    .unwrap_or(0.0);

    assert_eq!(app.post_json(&fb_top("metrics-ok")).await.status(), 202);
    let mut bad = fb_top("metrics-bad");
    bad["source"] = "myspace".into();
    assert_eq!(app.post_json(&bad).await.status(), 422);

    let after = scrape().await;
    let requests = sample(
        &after,
        "http_requests_total",
        &[
            "service=\"ingestion\"",
            "route=\"/webhook/event\"",
            "status=\"202\"",
        ],
    );
    assert!(requests.is_some_and(|n| n >= 1.0), "{after}");
    assert!(
        sample(
            &after,
            "http_requests_total",
            &["service=\"ingestion\"", "status=\"422\""]
        )
        .is_some_and(|n| n >= 1.0),
        "{after}"
    );
    let accepted = sample(
        &after,
        "ingestion_events_accepted_total",
        &["source=\"facebook\""],
    );
    assert!(
        accepted.is_some_and(|n| n >= accepted_before + 1.0),
        "{after}"
    );
    let rejected = sample(&after, "ingestion_events_rejected_total", &[rejected_label]);
    assert!(
        rejected.is_some_and(|n| n >= rejected_before + 1.0),
        "{after}"
    );
    assert!(after.contains("http_request_duration_seconds"), "{after}");
}

/// `service_ready` and the `nats` and `stream` checks of `service_readiness_check`, as
/// /metrics shows them now.
async fn readiness_gauges(app: &TestApp) -> Option<[f64; 3]> {
    let text = app.get("/metrics").await.ok()?.text().await.ok()?;
    let service = "service=\"ingestion\"";
    Some([
        sample(&text, "service_ready", &[service])?,
        sample(
            &text,
            "service_readiness_check",
            &[service, "check=\"nats\""],
        )?,
        sample(
            &text,
            "service_readiness_check",
            &[service, "check=\"stream\""],
        )?,
    ])
}

/// Waits until the three gauges all have the value `want`.
async fn wait_gauges(app: &TestApp, want: f64, what: &str) {
    let waited = testkit::eventually(what, PATIENCE, || async {
        (readiness_gauges(app).await? == [want; 3]).then_some(())
    })
    .await;
    if let Err(e) = waited {
        panic!(
            "{e}; [service_ready, nats, stream] now {:?}",
            readiness_gauges(app).await
        );
    }
}

#[tokio::test]
async fn readiness_gauges_go_to_0_while_nats_is_down_and_back_to_1() {
    let mut app = spawn_app(Options::default()).await;
    // Nobody needs to probe /health/readiness: the service evaluates it itself.
    wait_gauges(&app, 1.0, "readiness gauges at 1").await;
    app.nats.kill();
    wait_gauges(&app, 0.0, "readiness gauges at 0 while NATS is down").await;
    app.nats.restart().await.expect("nats-server restarts");
    wait_gauges(&app, 1.0, "readiness gauges at 1 after the restart").await;
}

/// `ingestion healthcheck` run with only these variables: exit code, stdout, stderr.
async fn healthcheck(env: &[(&str, &str)]) -> testkit::HealthcheckAnswer {
    testkit::healthcheck(env!("CARGO_BIN_EXE_ingestion"), env)
        .await
        .expect("the binary runs")
}

#[tokio::test]
async fn the_healthcheck_subcommand_exits_0_while_ready_and_1_naming_nats_once_it_is_down() {
    let mut app = spawn_app(Options::default()).await;
    let port = app.addr.rsplit(':').next().expect("a port").to_owned();
    // HOST as in the container: every interface, so the check asks 127.0.0.1.
    let env = [("HOST", "0.0.0.0"), ("PORT", port.as_str())];

    let (code, stdout, stderr) = healthcheck(&env).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
    assert!(stdout.contains("/health/readiness"), "{stdout}");

    app.nats.kill();
    let stderr = testkit::eventually("the healthcheck failing", PATIENCE, || async {
        let (code, _, stderr) = healthcheck(&env).await;
        (code == Some(1)).then_some(stderr)
    })
    .await
    .unwrap();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("503") && stderr.contains("nats"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_healthcheck_subcommand_exits_1_with_one_line_when_nothing_listens() {
    testkit::assert_healthcheck_fails_when_nothing_listens(env!("CARGO_BIN_EXE_ingestion")).await;
}
