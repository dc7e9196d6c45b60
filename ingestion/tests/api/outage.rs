//! NATS going away while the service runs: 503 with Retry-After, never a false 202.

use crate::helpers::{Options, PATIENCE, body_json, fb_top, spawn_app};
use std::collections::BTreeSet;

#[tokio::test]
async fn while_nats_is_down_every_request_gets_503_and_after_restart_202_again() {
    let mut app = spawn_app(Options {
        publish_timeout_ms: Some(1000),
        ..Options::default()
    })
    .await;
    let mut accepted = BTreeSet::new();
    let mut sent = BTreeSet::new();

    sent.insert("outage-before".to_owned());
    assert_eq!(app.post_json(&fb_top("outage-before")).await.status(), 202);
    accepted.insert("outage-before".to_owned());

    app.nats.kill();

    // Every request during the outage is refused with a retryable 503, while readiness
    // goes to 503 naming NATS.
    let mut during = 0;
    let check = |status: u16, retry_after: bool, body: &serde_json::Value, n: usize| {
        assert_eq!(status, 503, "request {n} during the outage: {body}");
        assert!(retry_after, "request {n}: 503 carries Retry-After");
        assert_eq!(body["error"]["code"], "unavailable", "{body}");
    };
    let readiness = testkit::eventually("readiness to report NATS down", PATIENCE, || {
        during += 1;
        let id = format!("outage-during-{during}");
        sent.insert(id.clone());
        let (app, n) = (&app, during);
        async move {
            let response = app.post_json(&fb_top(&id)).await;
            let status = response.status().as_u16();
            let retry_after = response.headers().contains_key("retry-after");
            let body = body_json(response).await;
            check(status, retry_after, &body, n);
            let response = app.get("/health/readiness").await.ok()?;
            let status = response.status().as_u16();
            let body = body_json(response).await;
            (status == 503).then_some(body)
        }
    })
    .await
    .expect("readiness reports NATS down");
    let nats = readiness["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == "nats"))
        .unwrap_or_else(|| panic!("readiness names nats: {readiness}"));
    assert_eq!(nats["ready"], false, "{readiness}");
    for n in 0..3 {
        let id = format!("outage-down-{n}");
        sent.insert(id.clone());
        let response = app.post_json(&fb_top(&id)).await;
        let status = response.status().as_u16();
        let retry_after = response.headers().contains_key("retry-after");
        check(status, retry_after, &body_json(response).await, n);
    }

    app.nats.restart().await.expect("nats-server restarts");
    app.wait_until_ready().await;
    for n in 0..3 {
        let id = format!("outage-after-{n}");
        sent.insert(id.clone());
        let response = app.post_json(&fb_top(&id)).await;
        assert_eq!(response.status(), 202, "after the restart");
        accepted.insert(id);
    }

    // Every accepted event survived the restart (file storage). Events of refused
    // requests may be there too (a publish buffered at the moment of the crash), but
    // nothing that was never sent.
    let stored: BTreeSet<String> = app.stored_event_ids().await.into_iter().collect();
    assert!(
        accepted.is_subset(&stored),
        "missing accepted events: {:?}",
        accepted.difference(&stored).collect::<Vec<_>>()
    );
    assert!(stored.is_subset(&sent), "{stored:?}");
}
