//! Failures inside the worker: a panicking batch, a panicking compactor, and the counters
//! that report them from the first scrape on.

use crate::platform;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use testkit::{Platform, WAIT, events, eventually};

/// The worker's `/metrics` text.
async fn metrics(p: &Platform, port: u16) -> String {
    let url = format!("http://127.0.0.1:{port}/metrics");
    match p.http.get(url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The value of one sample (`name{labels}` exactly as rendered), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn the_failure_counters_are_listed_at_zero_from_the_start() {
    let p = platform().await.unwrap();
    let worker = p.start_worker(&[]).await.unwrap();
    let text = metrics(&p, worker.port).await;
    for series in [
        r#"worker_events_failed_total{reason="database_unavailable"}"#,
        r#"worker_events_failed_total{reason="dlq_unavailable"}"#,
        r#"worker_events_failed_total{reason="panicked"}"#,
        r#"worker_events_dlq_total{reason="undecodable"}"#,
        r#"worker_events_dlq_total{reason="invalid_event"}"#,
        r#"worker_events_dlq_total{reason="refused_by_database"}"#,
        r#"worker_events_dlq_total{reason="max_deliver_exceeded"}"#,
        "worker_compactor_errors_total",
    ] {
        assert_eq!(sample(&text, series), Some(0.0), "{series} in:\n{text}");
    }
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn a_batch_that_panics_holds_back_only_the_event_that_panics() {
    let p = platform().await.unwrap();
    p.create_stream().await.unwrap();
    // Everything is in the stream before the worker starts, so it arrives as one batch.
    let all = events("mate", 0..20);
    for (i, e) in all.iter().enumerate() {
        if i == 7 {
            let panics = testkit::facebook_top("panics", "2026-03-01T12:00:00Z", "u", "Chile");
            p.publish_raw(
                "facebook.ad.view",
                serde_json::to_vec(&panics).unwrap(),
                "panics",
            )
            .await
            .unwrap();
        }
        let id = e["eventId"].as_str().unwrap();
        p.publish_raw("facebook.ad.view", serde_json::to_vec(e).unwrap(), id)
            .await
            .unwrap();
    }
    let worker = p
        .start_worker(&[
            "--worker-batch-size",
            "100",
            "--worker-batch-linger",
            "300ms",
            "--nats-max-deliver",
            "3",
            "--test-panic-event-id",
            "panics",
        ])
        .await
        .unwrap();

    p.wait_rows(20).await.unwrap();
    // Nak'd after each panic, then dead-lettered once its deliveries are spent.
    let dead = eventually("the panicking event dead-lettered", WAIT, || async {
        let d = p.dead_letters().await.ok()?;
        (!d.is_empty()).then_some(d)
    })
    .await
    .unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].1["Dlq-Reason"], "max_deliver_exceeded");
    assert_eq!(dead[0].1["X-Correlation-ID"], "corr-panics");
    let text = metrics(&p, worker.port).await;
    assert_eq!(
        sample(&text, r#"worker_events_failed_total{reason="panicked"}"#),
        Some(3.0),
        "one per delivery of the panicking event:\n{text}"
    );

    // The worker goes on.
    for e in events("later", 0..5) {
        let id = e["eventId"].as_str().unwrap().to_owned();
        p.publish_raw("tiktok.video.view", serde_json::to_vec(&e).unwrap(), &id)
            .await
            .unwrap();
    }
    p.wait_rows(25).await.unwrap();
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn a_compactor_that_panics_is_restarted_and_compacts() {
    let p = platform().await.unwrap();
    let ingestion = p.start_ingestion(&[]).await.unwrap();
    // The worker's own compactor makes one pass at start, then waits ten minutes.
    let worker = p
        .start_worker(&["--worker-compact-interval", "10m"])
        .await
        .unwrap();
    let (status, _) = p
        .post(
            ingestion.port,
            &serde_json::Value::Array(events("c", 0..40)),
        )
        .await
        .unwrap();
    assert_eq!(status, 202);
    p.wait_rows(40).await.unwrap();
    let db = p.db().await.unwrap();
    let dirty = || async {
        db.query_one("SELECT count(*) FROM user_sets_dirty", &[])
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(-1)
    };
    assert!(dirty().await > 0, "the events' slots wait for compaction");

    let handle = service_kit::metrics::install();
    let pool = service_kit::db::pool(&p.database_url, 2, &[]).unwrap();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let starts = Arc::new(AtomicUsize::new(0));
    let supervised = {
        let (starts, run_stop) = (starts.clone(), stop_rx.clone());
        tokio::spawn(worker::compactor::supervise(
            move || {
                let first = starts.fetch_add(1, Ordering::SeqCst) == 0;
                let (pool, stop_rx) = (pool.clone(), run_stop.clone());
                async move {
                    assert!(!first, "the compactor's first run dies");
                    worker::compactor::run(pool, Duration::from_millis(50), stop_rx).await;
                }
            },
            stop_rx,
        ))
    };
    eventually("every slot compacted after the restart", WAIT, || async {
        (dirty().await == 0).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(starts.load(Ordering::SeqCst), 2, "restarted once");
    let text = handle.render();
    assert!(
        sample(&text, "worker_compactor_errors_total").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    let last = sample(&text, "worker_compactor_last_success_timestamp_seconds").unwrap_or(0.0);
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
    assert!((now - last).abs() < 60.0, "last success {last}, now {now}");

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), supervised)
        .await
        .unwrap()
        .unwrap();
    worker.stop().await.unwrap();
    ingestion.stop().await.unwrap();
}
