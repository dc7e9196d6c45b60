//! Liveness, readiness and the metrics dashboards rely on.

use crate::helpers::{Options, fb_top, spawn_app};

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
