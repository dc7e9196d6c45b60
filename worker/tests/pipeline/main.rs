//! End-to-end tests of the write path with a real nats-server and a real PostgreSQL:
//! exactly-once storage through duplicates, crashes, broker and database restarts,
//! poison messages, a full stream and graceful shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod failures;
mod healthcheck;
mod helpers;
mod refusals;

use helpers::{Pipeline, WAIT, events, rollups};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;
use testkit::eventually;

#[tokio::test]
async fn two_thousand_events_with_two_hundred_resent_are_stored_exactly_once() {
    let p = Pipeline::start().await.unwrap();
    let ingestion = p
        .start_ingestion(&["--nats-duplicate-window-secs", "2"])
        .await
        .unwrap();
    let worker = p.start_worker(&[]).await.unwrap();
    let all = events("dup", 0..2000);

    // 20 requests of 100; the first five each repeat 20 of their own events inside the
    // same request (100 in-request duplicates).
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

    // 50 re-sent later, inside the broker's duplicate window.
    let (status, reply) = p
        .post(ingestion.port, &Value::Array(all[..50].to_vec()))
        .await
        .unwrap();
    assert_eq!(
        (status, reply["duplicates"].as_u64()),
        (202, Some(50)),
        "{reply}"
    );

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
    let p = Pipeline::start().await.unwrap();
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
    let p = Pipeline::start().await.unwrap();
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
        .start_worker(&["--nats-batch-size", "100", "--batch-linger-ms", "500"])
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

#[tokio::test]
async fn worker_killed_with_sigkill_mid_stream_stores_every_accepted_event_once() {
    let p = Pipeline::start().await.unwrap();
    let ingestion = p.start_ingestion(&[]).await.unwrap();
    let env = [("NATS_ACK_WAIT_SECS", "2"), ("NATS_BATCH_SIZE", "200")];
    let (mut worker, _) = p.start_worker_process(&env).unwrap();

    let all = events("kill", 0..20_000);
    let sender = {
        let http = p.http.clone();
        let port = ingestion.port;
        let batches: Vec<Value> = all.chunks(100).map(|c| Value::Array(c.to_vec())).collect();
        tokio::spawn(async move {
            let mut accepted = 0u64;
            for body in batches {
                let r = http
                    .post(format!("http://127.0.0.1:{port}/webhook/event"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                accepted += r.json::<Value>().await.unwrap()["accepted"]
                    .as_u64()
                    .unwrap();
            }
            accepted
        })
    };

    eventually("the worker to store some events", WAIT, || async {
        (p.row_count().await > 2000).then_some(())
    })
    .await
    .unwrap();
    worker.signal("KILL").unwrap();
    worker.wait_exit(Duration::from_secs(10)).await.unwrap();
    let at_kill = p.row_count().await;

    let (_worker, _) = p.start_worker_process(&env).unwrap();
    let accepted = sender.await.unwrap();
    assert_eq!(accepted, 20_000);
    assert!(
        at_kill < 20_000,
        "the kill happened mid-stream ({at_kill} rows)"
    );
    p.wait_rows(20_000).await.unwrap();
    eventually("the consumer to drain", WAIT, || async {
        (p.consumer_state().await.ok()? == (0, 0)).then_some(())
    })
    .await
    .unwrap();
    p.wait_rows(20_000).await.unwrap();
    ingestion.stop().await.unwrap();
}

#[tokio::test]
async fn postgres_restarted_mid_stream_is_retried_without_dead_letters() {
    let mut p = Pipeline::start().await.unwrap();
    let ingestion = p.start_ingestion(&[]).await.unwrap();
    let worker = p.start_worker(&["--nats-batch-size", "100"]).await.unwrap();
    let all = events("pgr", 0..6000);
    let mut chunks = all.chunks(100);
    for body in chunks.by_ref().take(20) {
        let (status, _) = p
            .post(ingestion.port, &Value::Array(body.to_vec()))
            .await
            .unwrap();
        assert_eq!(status, 202);
    }
    eventually("some rows", WAIT, || async {
        (p.row_count().await > 0).then_some(())
    })
    .await
    .unwrap();

    p.pg.restart().await.unwrap();
    for body in chunks {
        let (status, _) = p
            .post(ingestion.port, &Value::Array(body.to_vec()))
            .await
            .unwrap();
        assert_eq!(status, 202);
    }
    p.wait_rows(6000).await.unwrap();
    assert!(
        p.dead_letters().await.unwrap().is_empty(),
        "nothing went to the DLQ"
    );
    worker.stop().await.unwrap();
    ingestion.stop().await.unwrap();
}

#[tokio::test]
async fn postgres_down_at_start_up_is_waited_for_and_reported_by_readiness() {
    let mut p = Pipeline::start().await.unwrap();
    p.create_stream().await.unwrap();
    for (i, e) in events("late", 0..50).into_iter().enumerate() {
        p.publish_raw(
            "facebook.ad.view",
            serde_json::to_vec(&e).unwrap(),
            &format!("late-{i}"),
        )
        .await
        .unwrap();
    }
    p.pg.kill();
    let worker = p.start_worker(&[]).await.unwrap();
    let readiness = format!("http://127.0.0.1:{}/health/readiness", worker.port);
    let r = p.http.get(&readiness).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    let database = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "database")
        .cloned();
    assert_eq!(
        database.map(|c| c["ready"].clone()),
        Some(json!(false)),
        "{body}"
    );

    p.pg.start_again().await.unwrap();
    p.wait_ready(worker.port).await.unwrap();
    p.wait_rows(50).await.unwrap();
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn nats_killed_during_ingestion_gives_503_and_everything_acknowledged_is_stored() {
    let mut p = Pipeline::start().await.unwrap();
    let ingestion = p
        .start_ingestion(&["--publish-timeout-ms", "1000"])
        .await
        .unwrap();
    let worker = p.start_worker(&[]).await.unwrap();
    let all = events("nk", 0..3000);
    let batches: Vec<Value> = all.chunks(50).map(|c| Value::Array(c.to_vec())).collect();

    let statuses = std::sync::Mutex::new(Vec::new());
    for (n, body) in batches.iter().enumerate() {
        if n == 20 {
            p.nats.kill();
            // During the outage: 503 with Retry-After, never 202.
            for _ in 0..3 {
                let r = p
                    .http
                    .post(format!("http://127.0.0.1:{}/webhook/event", ingestion.port))
                    .json(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 503);
                assert!(r.headers().contains_key("retry-after"));
                assert_eq!(
                    r.json::<Value>().await.unwrap()["error"]["code"],
                    "unavailable"
                );
            }
            p.nats.restart().await.unwrap();
        }
        // A producer retries 503s (dedup makes that safe) until accepted.
        let status = eventually("the batch to be accepted", WAIT, || async {
            let (status, _) = p.post(ingestion.port, body).await.ok()?;
            statuses.lock().unwrap().push(status);
            (status == 202).then_some(status)
        })
        .await
        .unwrap();
        assert_eq!(status, 202);
    }
    let statuses = statuses.into_inner().unwrap();
    assert!(
        statuses.iter().all(|s| *s == 202 || *s == 503),
        "{statuses:?}"
    );
    p.wait_rows(3000).await.unwrap();
    let ids: HashSet<String> = p
        .db()
        .await
        .unwrap()
        .query("SELECT event_id FROM events", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids.len(), 3000);
    worker.stop().await.unwrap();
    ingestion.stop().await.unwrap();
}

#[tokio::test]
async fn a_full_stream_refuses_new_events_with_503_and_loses_nothing_stored() {
    let p = Pipeline::start().await.unwrap();
    let ingestion = p
        .start_ingestion(&["--nats-stream-max-msgs", "50"])
        .await
        .unwrap();
    let all = events("full", 0..60);
    let (status, _) = p
        .post(ingestion.port, &Value::Array(all[..50].to_vec()))
        .await
        .unwrap();
    assert_eq!(status, 202);
    let (status, body) = p.post(ingestion.port, &all[50]).await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    assert_eq!(
        p.stream_messages().await.unwrap(),
        50,
        "the oldest events were not dropped"
    );

    // Once workers catch up the space is freed and the producer's retry succeeds.
    let worker = p
        .start_worker(&["--nats-stream-max-msgs", "50"])
        .await
        .unwrap();
    p.wait_rows(50).await.unwrap();
    let (status, _) = eventually("the retry to be accepted", WAIT, || async {
        let r = p
            .post(ingestion.port, &Value::Array(all[50..].to_vec()))
            .await
            .ok()?;
        (r.0 == 202).then_some(r)
    })
    .await
    .unwrap();
    assert_eq!(status, 202);
    p.wait_rows(60).await.unwrap();
    worker.stop().await.unwrap();
    ingestion.stop().await.unwrap();
}

#[tokio::test]
async fn sigterm_lets_the_worker_commit_and_ack_its_batches_then_exit_0() {
    let p = Pipeline::start().await.unwrap();
    p.create_stream().await.unwrap();
    let all = events("term", 0..8000);
    let js = p.js().await.unwrap();
    // PubAcks are awaited per 1000: the client allows a bounded number in flight.
    for chunk in all.chunks(1000) {
        let mut acks = Vec::new();
        for e in chunk {
            let msg = async_nats::jetstream::message::PublishMessage::build()
                .payload(serde_json::to_vec(e).unwrap().into())
                .message_id(e["eventId"].as_str().unwrap());
            acks.push(
                js.send_publish(format!("{}.x", p.names.prefix), msg)
                    .await
                    .unwrap(),
            );
        }
        for ack in acks {
            ack.await.unwrap();
        }
    }
    let (mut worker, port) = p
        .start_worker_process(&[("NATS_BATCH_SIZE", "100"), ("WORKER_CONCURRENCY", "2")])
        .unwrap();
    eventually("some rows", WAIT, || async {
        (p.row_count().await > 0).then_some(())
    })
    .await
    .unwrap();
    worker.signal("TERM").unwrap();
    let status = worker.wait_exit(Duration::from_secs(30)).await.unwrap();
    assert!(status.success(), "exit status {status:?}");
    let stored = p.row_count().await;
    let (pending, ack_pending) = p.consumer_state().await.unwrap();
    assert_eq!(
        ack_pending, 0,
        "every delivered batch was committed and acked before exit"
    );
    assert_eq!(stored as u64 + pending, 8000, "nothing in flight was lost");
    assert!(stored < 8000, "the signal arrived mid-stream");
    let _ = port;

    let (_again, _) = p.start_worker_process(&[]).unwrap();
    p.wait_rows(8000).await.unwrap();
}

#[tokio::test]
async fn two_workers_starting_together_share_the_schema_and_the_consumer() {
    let p = Pipeline::start().await.unwrap();
    let ingestion = p.start_ingestion(&[]).await.unwrap();
    let (a, b) = tokio::join!(p.start_worker(&[]), p.start_worker(&[]));
    let (a, b) = (a.unwrap(), b.unwrap());
    p.wait_ready(a.port).await.unwrap();
    p.wait_ready(b.port).await.unwrap();
    let all = events("pair", 0..3000);
    for body in all.chunks(100) {
        let (status, _) = p
            .post(ingestion.port, &Value::Array(body.to_vec()))
            .await
            .unwrap();
        assert_eq!(status, 202);
    }
    p.wait_rows(3000).await.unwrap();
    let versions: i64 = p
        .db()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(versions as usize, service_kit::schema::MIGRATIONS.len());
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    ingestion.stop().await.unwrap();
}

#[tokio::test]
async fn a_consumer_deleted_behind_the_workers_back_is_recreated() {
    let p = Pipeline::start().await.unwrap();
    let ingestion = p.start_ingestion(&[]).await.unwrap();
    let worker = p.start_worker(&[]).await.unwrap();
    let all = events("del", 0..200);
    let (status, _) = p
        .post(ingestion.port, &Value::Array(all[..100].to_vec()))
        .await
        .unwrap();
    assert_eq!(status, 202);
    p.wait_rows(100).await.unwrap();

    let js = p.js().await.unwrap();
    js.get_stream(&p.names.stream)
        .await
        .unwrap()
        .delete_consumer(&p.names.consumer)
        .await
        .unwrap();
    let (status, _) = p
        .post(ingestion.port, &Value::Array(all[100..].to_vec()))
        .await
        .unwrap();
    assert_eq!(status, 202);
    p.wait_rows(200).await.unwrap();
    worker.stop().await.unwrap();
    ingestion.stop().await.unwrap();
}

#[tokio::test]
async fn a_bad_setting_stops_the_worker_with_one_line_naming_it() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_worker"))
        .env("NATS_BATCH_SIZE", "-3")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("NATS_BATCH_SIZE"), "{stderr}");

    let help = std::process::Command::new(env!("CARGO_BIN_EXE_worker"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for var in [
        "DATABASE_URL",
        "NATS_URL",
        "NATS_MAX_DELIVER",
        "NATS_DLQ_STREAM",
        "DB_POOL_MAX",
    ] {
        assert!(help.contains(var), "--help lists {var}");
    }
}

/// Events listed in `user_sets_pending` (not yet in their slot's block).
async fn listed(db: &tokio_postgres::Client) -> i64 {
    let mut events = Vec::new();
    for row in db
        .query("SELECT facts FROM user_sets_pending", &[])
        .await
        .unwrap()
    {
        user_sets::decode_activities(row.get(0), &mut events).unwrap();
    }
    events.len() as i64
}

/// Events and members of the level-0 sets per source and stage (each user here has one
/// event, so it is in one of them), and the listed event ids left.
async fn slot_sets(db: &tokio_postgres::Client) -> (i64, u64, i64) {
    let rows = db
        .query(
            "SELECT events, users FROM user_sets WHERE level = 0 AND dim = 'all' AND event_type = ''",
            &[],
        )
        .await
        .unwrap();
    let events = rows.iter().map(|r| r.get::<_, i64>(0)).sum();
    let members = rows
        .iter()
        .map(|r| user_sets::decode_bitmap(r.get(1)).unwrap().len())
        .sum();
    (events, members, listed(db).await)
}

/// One compaction round of the single dirty slot, run by hand, with `during` run while its
/// transaction is open; then its marks cleared.
async fn round_around(
    compactor: &mut tokio_postgres::Client,
    during: impl std::future::Future<Output = ()>,
) -> worker::compact::Cleared {
    let mut round = worker::compact::Round::begin(compactor, 256, Duration::ZERO)
        .await
        .unwrap()
        .expect("the slot is dirty");
    assert_eq!(round.slots().len(), 1);
    round.build().await.unwrap();
    during.await;
    let marks = round.commit().await.unwrap();
    worker::compact::clear(compactor, &marks).await.unwrap()
}

#[tokio::test]
async fn late_events_are_stored_during_a_compaction_and_added_exactly_once() {
    let p = Pipeline::start().await.unwrap();
    let ingestion = p.start_ingestion(&[]).await.unwrap();
    // The worker's own compaction rounds never come: this test runs them by hand.
    let worker = p
        .start_worker(&["--compact-interval-ms", "3600000"])
        .await
        .unwrap();
    let db = p.db().await.unwrap();
    let dirty = async || -> Vec<(i64, Option<i64>)> {
        db.query("SELECT gen, full_gen FROM user_sets_dirty", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    };
    // 40 events of the quarter-hour 2026-03-01 00:00, long ended, users u0..u39: the
    // slot is marked, its events listed (nothing built to rebuild).
    let post = async |range| {
        let (status, _) = p
            .post(ingestion.port, &Value::Array(events("slot", range)))
            .await
            .unwrap();
        assert_eq!(status, 202);
    };
    post(0..40).await;
    p.wait_rows(40).await.unwrap();
    assert_eq!(dirty().await.len(), 1);
    assert_eq!(dirty().await[0].1, None, "no full rebuild needed");
    assert_eq!(slot_sets(&db).await, (0, 0, 40));

    // A late event (a new user, u40) while a round is open: the worker stores it without
    // waiting for the round.
    let mut compactor = p.db().await.unwrap();
    let cleared = round_around(&mut compactor, async {
        post(40..41).await;
        p.wait_rows(41).await.unwrap();
    })
    .await;
    // The round's snapshot predates that batch: its blocks miss the event, so the mark
    // stays and readers keep reading the slot raw.
    assert!(cleared.cleared.is_empty(), "{cleared:?}");
    assert_eq!(slot_sets(&db).await, (40, 40, 1));
    // The next round adds it, once, and clears the mark.
    assert_eq!(
        worker::compact::until_clean(&mut compactor).await.unwrap(),
        1
    );
    assert!(dirty().await.is_empty());
    assert_eq!(slot_sets(&db).await, (41, 41, 0));

    // A full rebuild (as `rebuild_rollups()` asks) with another late event (u41) during
    // it: the rebuild's raw scan misses it; the next round adds it from its list,
    // once, without another full rebuild.
    db.execute(
        "INSERT INTO user_sets_dirty (slot) VALUES ('2026-03-01 00:00:00+00')",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(dirty().await, vec![(0, Some(0))]);
    let cleared = round_around(&mut compactor, async {
        post(41..42).await;
        p.wait_rows(42).await.unwrap();
    })
    .await;
    assert!(cleared.cleared.is_empty(), "{cleared:?}");
    assert_eq!(dirty().await, vec![(1, None)], "only late events since");
    assert_eq!(slot_sets(&db).await, (41, 41, 1));
    assert_eq!(
        worker::compact::until_clean(&mut compactor).await.unwrap(),
        1
    );
    assert_eq!(slot_sets(&db).await, (42, 42, 0));

    // Built from the lists or from the raw table, the block is the same.
    let incremental = rollups(&db).await.unwrap();
    db.execute(
        "INSERT INTO user_sets_dirty (slot) VALUES ('2026-03-01 00:00:00+00')",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        worker::compact::until_clean(&mut compactor).await.unwrap(),
        1
    );
    assert_eq!(rollups(&db).await.unwrap(), incremental);
    worker.stop().await.unwrap();
    ingestion.stop().await.unwrap();
}

#[tokio::test]
async fn a_late_event_deleted_then_stored_again_is_stored() {
    // An operator deletes some events (say, a bad import), then they arrive again: their
    // lists are still there, and must not block the new insert.
    let p = Pipeline::start().await.unwrap();
    let mut admin = p.db().await.unwrap();
    worker::migrate::run(&mut admin).await.unwrap();
    let pool = service_kit::db::pool(&p.database_url, 2, &[]).unwrap();
    let cache = worker::store::KeyCache::default();
    let rows: Vec<worker::store::Row> = events("again", 0..20)
        .iter()
        .map(|e| worker::store::decode(e.to_string().as_bytes(), None).unwrap())
        .collect();
    let stored = worker::store::insert_batch(&pool, &cache, &rows)
        .await
        .unwrap();
    assert!(stored.inserted.iter().all(|new| *new));
    assert_eq!(listed(&admin).await, 20);

    admin.execute("DELETE FROM events", &[]).await.unwrap();
    let again = worker::store::insert_batch(&pool, &cache, &rows)
        .await
        .unwrap();
    assert!(again.inserted.iter().all(|new| *new), "{again:?}");
    assert_eq!(p.row_count().await, 20);
    assert_eq!(listed(&admin).await, 40);
    // Deleting stored events is an operator's repair: like the rollups' counts, the sets
    // are made exact again by `rebuild_rollups()`.
    admin
        .execute("SELECT rebuild_rollups()", &[])
        .await
        .unwrap();
    assert_eq!(worker::compact::until_clean(&mut admin).await.unwrap(), 1);
    assert_eq!(slot_sets(&admin).await, (20, 20, 0));
}

#[tokio::test]
async fn incremental_rollups_equal_a_rebuild_from_the_raw_events() {
    let p = Pipeline::start().await.unwrap();
    let ingestion = p.start_ingestion(&[]).await.unwrap();
    // Frequent compaction rounds, so hours are compacted, dirtied by later batches and
    // compacted again while the data arrives.
    let worker = p
        .start_worker(&["--nats-batch-size", "37", "--compact-interval-ms", "50"])
        .await
        .unwrap();
    // Both sources, every shape, null amounts, out-of-order times and offsets, bucket
    // boundaries, and duplicates across and within requests.
    let mut all = events("roll", 0..600);
    all[3]["timestamp"] = json!("2026-03-01T23:59:59.999Z");
    all[7]["timestamp"] = json!("2026-03-02T00:00:00Z");
    all[11]["timestamp"] = json!("2026-03-02T01:30:00+02:00");
    all[5]["data"]["engagement"]["purchaseAmount"] = json!("0.005");
    all[9]["data"]["engagement"]["purchaseAmount"] = Value::Null;
    for body in all.chunks(50).rev() {
        let mut body = body.to_vec();
        let repeats = body[..5].to_vec();
        body.extend(repeats);
        let (status, reply) = p.post(ingestion.port, &Value::Array(body)).await.unwrap();
        assert_eq!(status, 202, "{reply}");
    }
    let (status, _) = p
        .post(ingestion.port, &Value::Array(all[100..200].to_vec()))
        .await
        .unwrap();
    assert_eq!(status, 202);
    p.wait_rows(600).await.unwrap();
    // Stored events come again, mixed with new ones, under message ids the broker has not
    // seen (as a redelivery, or a resend past its duplicate window): the worker's batches
    // hold both, and only the new ones may count.
    let mut mixed = events("roll", 600..650);
    for (i, old) in all[200..250].iter().enumerate() {
        mixed.insert(2 * i, old.clone());
    }
    for e in &mixed {
        let id = format!("again-{}", e["eventId"].as_str().unwrap());
        p.publish_raw("facebook.ad.view", serde_json::to_vec(e).unwrap(), &id)
            .await
            .unwrap();
    }
    p.wait_rows(650).await.unwrap();
    eventually("the consumer to drain", WAIT, || async {
        (p.consumer_state().await.ok()? == (0, 0)).then_some(())
    })
    .await
    .unwrap();

    let db = p.db().await.unwrap();
    p.wait_compacted().await.unwrap();
    let incremental = rollups(&db).await.unwrap();
    assert!(
        incremental
            .iter()
            .any(|r| r.starts_with("user_sets 13 ") && r.contains("\"country\"")),
        "the coarsest blocks are built"
    );
    let per_grain: Vec<(i64, String)> = db
        .query(
            "SELECT sum(events)::bigint, sum(revenue)::text FROM rollup_events GROUP BY grain ORDER BY grain",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let raw: (i64, String) = db
        .query_one(
            "SELECT count(*), coalesce(sum(revenue), 0)::text FROM events",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(
        per_grain,
        vec![raw.clone(); 3],
        "each grain counts every event once"
    );
    assert_eq!(raw.0, 650);
    // Users recur across the batches: after the first, their keys come from the worker's
    // cache, and each is the key user_keys holds.
    let wrong: i64 = db
        .query_one(
            "SELECT count(*) FROM events e LEFT JOIN user_keys k USING (source, user_id) \
             WHERE e.user_key IS DISTINCT FROM k.user_key",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(wrong, 0, "every row carries its user's key");

    worker.stop().await.unwrap();
    p.rebuild_rollups().await.unwrap();
    let rebuilt = rollups(&db).await.unwrap();
    assert!(!rebuilt.is_empty());
    assert_eq!(incremental, rebuilt);
    ingestion.stop().await.unwrap();
}
