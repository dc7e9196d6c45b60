//! Every event counter is on /metrics from the start, at 0, so that dashboards and
//! `rate()` see a series before its first event rather than none.
//!
//! The recorder is per process and nextest runs each test in a process of its own, so
//! "right after start" means 0.

use crate::helpers::{Options, spawn_app};

/// The `reason` labels of `docs/operations.md`.
const REJECTED: [&str; 7] = [
    "unsupported_media_type",
    "payload_too_large",
    "unauthorized",
    "malformed_json",
    "batch_size",
    "validation_failed",
    "rate_limited",
];
const FAILED: [&str; 6] = [
    "nats_disconnected",
    "stream_not_ready",
    "stream_not_found",
    "stream_full",
    "publish_error",
    "puback_timeout",
];

/// Every `(reason, value)` sample of the counter `name`.
fn samples(metrics: &str, name: &str) -> Vec<(String, f64)> {
    let prefix = format!("{name}{{reason=\"");
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .filter_map(|rest| rest.split_once("\"} "))
        .map(|(reason, value)| (reason.to_owned(), value.parse().unwrap_or(f64::NAN)))
        .collect()
}

fn at_zero(reasons: &[&str]) -> Vec<(String, f64)> {
    let mut expected: Vec<_> = reasons.iter().map(|r| (r.to_string(), 0.0)).collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    expected
}

#[tokio::test]
async fn every_rejection_and_failure_reason_is_listed_at_0_right_after_start() -> anyhow::Result<()>
{
    let app = spawn_app(Options::default()).await;
    let metrics = app.get("/metrics").await?.text().await?;

    let mut rejected = samples(&metrics, "ingestion_events_rejected_total");
    rejected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(rejected, at_zero(&REJECTED), "{metrics}");

    let mut failed = samples(&metrics, "ingestion_events_failed_total");
    failed.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(failed, at_zero(&FAILED), "{metrics}");

    let http_panics = "http_panics_total{service=\"ingestion\"} 0";
    assert!(metrics.lines().any(|l| l == http_panics), "{metrics}");
    Ok(())
}
