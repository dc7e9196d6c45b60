//! Exactly-once storage: duplicates, the stored row, poison messages.

use crate::platform;
use serde_json::{Value, json};
use std::time::Duration;
use testkit::{WAIT, events, eventually};

#[tokio::test]
async fn two_thousand_events_resent_within_a_request_as_a_whole_request_and_after_the_window_are_stored_exactly_once()
 {
    let p = platform().await.unwrap();
    let ingestion = p
        .start_ingestion(&["--nats-duplicate-window", "2s"])
        .await
        .unwrap();
    let worker = p.start_worker(&[]).await.unwrap();
    let all = events("dup", 0..2000);

    // 20 requests of 100; the first five each repeat 20 of their own events inside the
    // same request (100 in-request duplicates, which ingestion knows of).
    let mut broker_duplicates = 0;
    for (n, chunk) in all.chunks(100).enumerate() {
        let mut body = chunk.to_vec();
        if n < 5 {
            body.extend_from_slice(&chunk[..20]);
        }
        let (status, reply) = p
            .post(ingestion.port, &Value::Array(body.clone()))
            .await
            .unwrap();
        assert_eq!(status, 202, "{reply}");
        assert_eq!(reply["accepted"], body.len());
        broker_duplicates += reply["duplicates"].as_u64().unwrap();
    }
    assert_eq!(
        broker_duplicates, 100,
        "in-request repeats are reported as duplicates"
    );

    // The first request sent again, unchanged, inside the broker's duplicate window: the
    // same events in the same message, which JetStream reports as a duplicate whole.
    let mut first = all[..100].to_vec();
    first.extend_from_slice(&all[..20]);
    let (status, reply) = p
        .post(ingestion.port, &Value::Array(first.clone()))
        .await
        .unwrap();
    assert_eq!(
        (status, reply["duplicates"].as_u64()),
        (202, Some(first.len() as u64)),
        "{reply}"
    );
    // 50 of them in another composition: a new message to JetStream, stored once anyway.
    let (status, reply) = p
        .post(ingestion.port, &Value::Array(all[..50].to_vec()))
        .await
        .unwrap();
    assert_eq!(status, 202, "{reply}");

    // 50 re-sent after the window: the broker no longer knows them; the database does.
    p.wait_rows(2000).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, _) = p
        .post(ingestion.port, &Value::Array(all[1000..1050].to_vec()))
        .await
        .unwrap();
    assert_eq!(status, 202);
    eventually("the late duplicates to be consumed", WAIT, || async {
        (p.consumer_state().await.ok()? == (0, 0)).then_some(())
    })
    .await
    .unwrap();
    p.wait_rows(2000).await.unwrap();

    let db = p.db().await.unwrap();
    let distinct: i64 = db
        .query_one(
            "SELECT count(DISTINCT event_id) FROM events WHERE event_id LIKE 'dup-%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(distinct, 2000);
    assert_eq!(
        p.stream_messages().await.unwrap(),
        0,
        "every message was acked"
    );
    worker.stop().await.unwrap();
    ingestion.stop().await.unwrap();
}

#[tokio::test]
async fn stored_rows_keep_the_envelope_the_data_and_unknown_fields() {
    let p = platform().await.unwrap();
    let ingestion = p.start_ingestion(&[]).await.unwrap();
    let worker = p.start_worker(&[]).await.unwrap();
    let mut event = testkit::facebook_bottom(
        "keep-1",
        "2026-03-01T12:00:00.500+02:00",
        "fb-u-1",
        Some("149.99"),
    );
    event["schemaVersion"] = json!(2);
    event["data"]["user"]["loyalty"] = json!({"tier": "gold"});
    let (status, _) = p.post(ingestion.port, &event).await.unwrap();
    assert_eq!(status, 202);
    p.wait_rows(1).await.unwrap();

    let row = p
        .db()
        .await
        .unwrap()
        .query_one(
            "SELECT source, funnel_stage, event_type, user_id, event_time = '2026-03-01T10:00:00.5Z',
                    data, extra, ingested_at IS NOT NULL AND ingested_at <= stored_at
             FROM events WHERE event_id = 'keep-1'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "facebook");
    assert_eq!(row.get::<_, &str>(1), "bottom");
    assert_eq!(row.get::<_, &str>(2), "checkout.complete");
    assert_eq!(row.get::<_, &str>(3), "fb-u-1");
    assert!(
        row.get::<_, bool>(4),
        "event time is the event's own, in UTC"
    );
    assert_eq!(row.get::<_, Value>(5), event["data"]);
    assert_eq!(
        row.get::<_, Option<Value>>(6),
        Some(json!({"schemaVersion": 2}))
    );
    assert!(row.get::<_, bool>(7));
    worker.stop().await.unwrap();
    ingestion.stop().await.unwrap();
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_while_the_rest_of_their_batch_is_stored() {
    let p = platform().await.unwrap();
    p.create_stream().await.unwrap();
    // Everything is in the stream before the worker starts, so it arrives as one batch.
    for (i, e) in events("ok", 0..10).into_iter().enumerate() {
        p.publish_raw(
            "facebook.ad.view",
            serde_json::to_vec(&e).unwrap(),
            &format!("ok-{i}"),
        )
        .await
        .unwrap();
    }
    p.publish_raw("facebook.ad.view", b"{not json".to_vec(), "poison-garbage")
        .await
        .unwrap();
    let mut invalid =
        testkit::facebook_top("poison-invalid", "2026-03-01T12:00:00Z", "u", "Germany");
    invalid["data"]["user"]["age"] = json!("old");
    p.publish_raw(
        "facebook.ad.view",
        serde_json::to_vec(&invalid).unwrap(),
        "poison-invalid",
    )
    .await
    .unwrap();
    // Refused by the spec (PostgreSQL has no \u0000 in jsonb), though ingestion never sent it.
    let mut refused = testkit::facebook_top("poison-nul", "2026-03-01T12:00:00Z", "u", "Germany");
    refused["data"]["user"]["name"] = json!("Ada\u{0}Park");
    p.publish_raw(
        "facebook.ad.view",
        serde_json::to_vec(&refused).unwrap(),
        "poison-nul",
    )
    .await
    .unwrap();
    for (i, e) in events("ok", 10..20).into_iter().enumerate() {
        p.publish_raw(
            "tiktok.video.view",
            serde_json::to_vec(&e).unwrap(),
            &format!("ok-{}", i + 10),
        )
        .await
        .unwrap();
    }

    let worker = p
        .start_worker(&[
            "--worker-batch-size",
            "100",
            "--worker-batch-linger",
            "500ms",
        ])
        .await
        .unwrap();
    p.wait_rows(20).await.unwrap();
    let dead = eventually("three dead letters", WAIT, || async {
        let d = p.dead_letters().await.ok()?;
        (d.len() >= 3).then_some(d)
    })
    .await
    .unwrap();
    assert_eq!(dead.len(), 3);
    let reason_of = |id: &str| {
        dead.iter()
            .find(|(_, h)| {
                h.get("X-Correlation-ID").map(String::as_str) == Some(&format!("corr-{id}"))
            })
            .map(|(payload, h)| (payload.clone(), h.clone()))
            .unwrap_or_else(|| panic!("no dead letter for {id}: {dead:?}"))
    };
    let (payload, h) = reason_of("poison-garbage");
    assert_eq!(payload, b"{not json");
    assert_eq!(h["Dlq-Reason"], "undecodable");
    assert_eq!(h["Dlq-Delivery-Count"], "1");
    assert_eq!(
        h["Dlq-Original-Subject"],
        format!("{}.facebook.ad.view", p.names.prefix)
    );
    let (_, h) = reason_of("poison-invalid");
    assert_eq!(h["Dlq-Reason"], "invalid_event");
    assert!(h["Dlq-Detail"].contains("data.user.age"), "{h:?}");
    let (payload, h) = reason_of("poison-nul");
    assert_eq!(h["Dlq-Reason"], "invalid_event");
    assert!(h["Dlq-Detail"].contains("data.user.name"), "{h:?}");
    assert_eq!(serde_json::from_slice::<Value>(&payload).unwrap(), refused);

    eventually("everything acked or terminated", WAIT, || async {
        (p.stream_messages().await.ok()? == 0).then_some(())
    })
    .await
    .unwrap();
    let db = p.db().await.unwrap();
    let poison_rows: i64 = db
        .query_one(
            "SELECT count(*) FROM events WHERE event_id LIKE 'poison%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(poison_rows, 0);
    worker.stop().await.unwrap();
}
