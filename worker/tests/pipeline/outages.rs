//! Crashes, outages and shutdown: the worker killed or stopped, PostgreSQL and NATS
//! restarted or down, the stream full; nothing acknowledged is lost or stored twice.

use crate::platform;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;
use testkit::{WAIT, events, eventually};

#[tokio::test]
async fn worker_killed_with_sigkill_mid_stream_stores_every_accepted_event_once() {
    let p = platform().await.unwrap();
    let ingestion = p.start_ingestion(&[]).await.unwrap();
    let env = [("NATS_ACK_WAIT", "2s"), ("WORKER_BATCH_SIZE", "200")];
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
    let mut p = platform().await.unwrap();
    let ingestion = p.start_ingestion(&[]).await.unwrap();
    let worker = p
        .start_worker(&["--worker-batch-size", "100"])
        .await
        .unwrap();
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
    let mut p = platform().await.unwrap();
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
    let mut p = platform().await.unwrap();
    let ingestion = p
        .start_ingestion(&["--nats-publish-timeout", "1s"])
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
    let p = platform().await.unwrap();
    let ingestion = p
        .start_ingestion(&["--nats-stream-max-msgs", "1"])
        .await
        .unwrap();
    // The limit counts messages: 50 events of one request fill the one message allowed.
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
        1,
        "the oldest message was not dropped"
    );

    // Once workers catch up the space is freed and the producer's retry succeeds.
    let worker = p
        .start_worker(&["--nats-stream-max-msgs", "1"])
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
    let p = platform().await.unwrap();
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
        .start_worker_process(&[("WORKER_BATCH_SIZE", "100"), ("WORKER_CONCURRENCY", "2")])
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
