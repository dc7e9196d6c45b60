//! Multi-event messages (`batch/1`, docs/events.md "Messages") published straight to
//! JetStream, as a coalescing ingestion does, beside single-event ones: every event stored
//! once, a poison event dead-lettered alone with its own id and metadata, nothing acked
//! before its events commit.

use crate::platform;
use async_nats::jetstream::message::PublishMessage;
use serde_json::{Value, json};
use service_kit::batch::{self, BATCH_V1, ENCODING_HEADER, Outgoing};
use std::collections::HashMap;
use std::time::Duration;
use testkit::{Platform, WAIT, events, eventually, rollups};

/// The trace context the traced events of [`publish_batch`] carry.
const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

fn id_of(event: &Value) -> &str {
    event["eventId"].as_str().unwrap_or_default()
}

/// Publishes `events` as one `batch/1` message to `<prefix>.batch` under `msg_id` (by
/// default derived from the event ids, as ingestion derives it), each event with the
/// correlation id `corr-<eventId>` and, for the ids in `traced`, [`TRACEPARENT`]. Returns
/// the message's stream sequence.
pub(crate) async fn publish_batch(
    p: &Platform,
    events: &[Value],
    traced: &[&str],
    msg_id: Option<&str>,
) -> u64 {
    let jsons: Vec<Vec<u8>> = events
        .iter()
        .map(|e| serde_json::to_vec(e).unwrap())
        .collect();
    let correlation_ids: Vec<String> = events
        .iter()
        .map(|e| format!("corr-{}", id_of(e)))
        .collect();
    let mut payload = Vec::new();
    batch::encode(
        events
            .iter()
            .zip(&jsons)
            .zip(&correlation_ids)
            .map(|((e, json), corr)| Outgoing {
                correlation_id: corr,
                traceparent: traced.contains(&id_of(e)).then_some(TRACEPARENT),
                tracestate: None,
                event: json,
            }),
        &mut payload,
    );
    let derived = batch::message_id(events.iter().map(id_of));
    let ingested_at = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    let message = PublishMessage::build()
        .payload(payload.into())
        .message_id(msg_id.unwrap_or(&derived))
        .header(ENCODING_HEADER, BATCH_V1)
        .header("Ingested-At", ingested_at.to_string().as_str());
    let js = p.js().await.unwrap();
    js.send_publish(format!("{}.batch", p.names.prefix), message)
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence
}

/// Publishes `event` alone, as today's ingestion does.
pub(crate) async fn publish_single(p: &Platform, event: &Value) {
    let subject = format!(
        "{}.{}",
        event["source"].as_str().unwrap(),
        event["eventType"].as_str().unwrap()
    );
    p.publish_raw(&subject, serde_json::to_vec(event).unwrap(), id_of(event))
        .await
        .unwrap();
}

/// The worker's `/metrics` sample `series` (exactly as rendered), or 0 when absent.
pub(crate) async fn metric(p: &Platform, port: u16, series: &str) -> f64 {
    let url = format!("http://127.0.0.1:{port}/metrics");
    let text = match p.http.get(url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => return 0.0,
    };
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Rows per event id, and the total.
pub(crate) async fn stored(p: &Platform) -> (i64, i64) {
    let db = p.db().await.unwrap();
    let row = db
        .query_one("SELECT count(DISTINCT event_id), count(*) FROM events", &[])
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

pub(crate) async fn wait_drained(p: &Platform) {
    eventually("every message acked or terminated", WAIT, || async {
        (p.stream_messages().await.ok()? == 0).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_poison_event_in_a_batch_message_is_dead_lettered_alone_with_its_own_id_and_metadata() {
    let p = platform().await.unwrap();
    p.create_stream().await.unwrap();
    let worker = p
        .start_worker(&["--worker-batch-linger", "300ms"])
        .await
        .unwrap();
    p.wait_ready(worker.port).await.unwrap();
    let db = p.db().await.unwrap();
    db.batch_execute("ALTER TABLE events ADD CONSTRAINT t_row CHECK (user_id <> 'refused-row')")
        .await
        .unwrap();

    // One message: six good events, one the contract refuses and one PostgreSQL refuses.
    let t = "2026-03-01T10:00:00Z";
    let mut invalid = testkit::facebook_top("poison-invalid", t, "u", "Germany");
    invalid["data"]["user"]["age"] = json!("old");
    let refused = testkit::tiktok_top("poison-row", t, "refused-row", "Chile");
    let mut body = events("mate", 0..6);
    body.insert(2, invalid.clone());
    body.insert(5, refused.clone());
    let sequence = publish_batch(&p, &body, &["poison-row", "mate-0"], None).await;

    p.wait_rows(6).await.unwrap();
    let dead = eventually("two dead letters", WAIT, || async {
        let d = p.dead_letters().await.ok()?;
        (d.len() >= 2).then_some(d)
    })
    .await
    .unwrap();
    assert_eq!(dead.len(), 2, "{dead:?}");
    let letter = |event: &Value| -> (Value, HashMap<String, String>) {
        let (payload, h) = dead
            .iter()
            .find(|(_, h)| h.get("Dlq-Event-Id").map(String::as_str) == Some(id_of(event)))
            .unwrap_or_else(|| panic!("no dead letter for {}: {dead:?}", id_of(event)));
        (serde_json::from_slice(payload).unwrap(), h.clone())
    };
    for (event, index, reason, subject) in [
        (&invalid, 2, "invalid_event", "facebook.ad.view"),
        (&refused, 5, "refused_by_database", "tiktok.video.view"),
    ] {
        let id = id_of(event);
        let (payload, h) = letter(event);
        assert_eq!(payload, *event, "{id}: the event alone is the payload");
        assert_eq!(h["Dlq-Reason"], reason, "{id}");
        assert_eq!(h["X-Correlation-ID"], format!("corr-{id}"), "{id}: its own");
        assert_eq!(
            h["Dlq-Original-Subject"],
            format!("{}.{subject}", p.names.prefix),
            "{id}: the subject it has alone"
        );
        assert_eq!(h["Dlq-Original-Sequence"], sequence.to_string(), "{id}");
        assert_eq!(h["Dlq-Original-Index"], index.to_string(), "{id}");
        assert_eq!(h["Dlq-Delivery-Count"], "1", "{id}");
        assert!(h.contains_key("Dlq-Failed-At"), "{id}: {h:?}");
        assert!(h.contains_key("Ingested-At"), "{id}: {h:?}");
        assert_eq!(
            h["Nats-Msg-Id"],
            format!("{}:{sequence}:{index}", p.names.stream),
            "{id}"
        );
        assert!(
            !h.contains_key(ENCODING_HEADER),
            "{id}: a single event, not a batch: {h:?}"
        );
    }
    let (_, h) = letter(&invalid);
    assert!(h["Dlq-Detail"].contains("data.user.age"), "{h:?}");
    assert!(!h.contains_key("traceparent"), "{h:?}");
    let (_, h) = letter(&refused);
    assert_eq!(h["Dlq-Sqlstate"], "23514", "{h:?}");
    assert_eq!(h["traceparent"], TRACEPARENT, "its own trace: {h:?}");
    wait_drained(&p).await;
    assert_eq!(stored(&p).await, (6, 6));

    // Once the cause is gone, the refused event replays as a single event and is stored.
    db.batch_execute("ALTER TABLE events DROP CONSTRAINT t_row")
        .await
        .unwrap();
    let nats_url = p.nats.url();
    let out = p
        .run_worker(
            &["dlq", "replay", "--reason", "refused_by_database"],
            &[
                ("NATS_URL", nats_url.as_str()),
                ("NATS_STREAM", p.names.stream.as_str()),
                ("NATS_SUBJECT_PREFIX", p.names.prefix.as_str()),
                ("NATS_DLQ_STREAM", p.names.dlq.as_str()),
            ],
        )
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    p.wait_rows(7).await.unwrap();
    let replayed: i64 = db
        .query_one(
            "SELECT count(*) FROM events WHERE event_id = 'poison-row'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(replayed, 1);
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn single_and_batch_messages_mixed_in_one_stream_are_all_stored_once() {
    let p = platform().await.unwrap();
    p.create_stream().await.unwrap();
    let all = events("mix", 0..300);
    // Old ingestion: events 0..120 one by one; new: 100..300 in messages of 25 (so 20
    // events travel both ways), interleaved in the stream.
    let mut batches = all[100..].chunks(25);
    for (i, event) in all[..120].iter().enumerate() {
        publish_single(&p, event).await;
        if i % 15 == 0
            && let Some(chunk) = batches.next()
        {
            publish_batch(&p, chunk, &[], None).await;
        }
    }
    for chunk in batches {
        publish_batch(&p, chunk, &[], None).await;
    }

    let worker = p.start_worker(&["--worker-batch-size", "7"]).await.unwrap();
    p.wait_rows(300).await.unwrap();
    wait_drained(&p).await;
    assert_eq!(stored(&p).await, (300, 300));
    assert!(p.dead_letters().await.unwrap().is_empty());
    let received = |encoding: &str| {
        let series = format!("worker_messages_received_total{{encoding=\"{encoding}\"}}");
        let p = &p;
        async move { metric(p, worker.port, &series).await }
    };
    assert_eq!(received("single").await, 120.0);
    assert_eq!(received("batch/1").await, 8.0);
    assert_eq!(received("unknown").await, 0.0);
    assert_eq!(
        metric(&p, worker.port, "worker_events_received_total").await,
        320.0
    );
    assert_eq!(
        metric(&p, worker.port, "worker_events_duplicate_total").await,
        20.0
    );
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn a_batch_message_sent_twice_and_its_events_in_other_batches_are_stored_once() {
    let p = platform().await.unwrap();
    p.create_stream().await.unwrap();
    let all = events("dup", 0..200);
    // The same message twice (past the broker's duplicate window: another id), then the
    // same events again in messages of another composition and order.
    publish_batch(&p, &all[..100], &[], None).await;
    publish_batch(&p, &all[..100], &[], Some("resent-after-the-window")).await;
    let mut reversed = all.clone();
    reversed.reverse();
    for chunk in reversed.chunks(30) {
        publish_batch(&p, chunk, &[], None).await;
    }
    for chunk in all[50..150].chunks(7) {
        publish_batch(&p, chunk, &[], None).await;
    }

    let worker = p.start_worker(&["--worker-batch-size", "3"]).await.unwrap();
    p.wait_rows(200).await.unwrap();
    wait_drained(&p).await;
    assert_eq!(stored(&p).await, (200, 200));
    assert!(p.dead_letters().await.unwrap().is_empty());

    // Each event counted once in the rollups too: they equal a rebuild from the rows.
    p.wait_compacted().await.unwrap();
    worker.stop().await.unwrap();
    let db = p.db().await.unwrap();
    let incremental = rollups(&db).await.unwrap();
    p.rebuild_rollups().await.unwrap();
    assert_eq!(incremental, rollups(&db).await.unwrap());
}

#[tokio::test]
async fn a_batch_message_is_not_acked_while_the_database_is_down_and_nothing_is_lost() {
    let mut p = platform().await.unwrap();
    p.create_stream().await.unwrap();
    let worker = p.start_worker(&[]).await.unwrap();
    p.wait_ready(worker.port).await.unwrap();

    p.pg.stop_immediate().await.unwrap();
    let all = events("down", 0..1000);
    for chunk in all.chunks(100) {
        publish_batch(&p, chunk, &[], None).await;
    }
    let failed = r#"worker_events_failed_total{reason="database_unavailable"}"#;
    eventually("the worker to fail to store", WAIT, || async {
        (metric(&p, worker.port, failed).await > 0.0).then_some(())
    })
    .await
    .unwrap();
    // Delivered, not stored: still in the stream, none acked.
    assert_eq!(p.stream_messages().await.unwrap(), 10);

    p.pg.start_again().await.unwrap();
    p.wait_rows(1000).await.unwrap();
    wait_drained(&p).await;
    assert_eq!(stored(&p).await, (1000, 1000));
    assert!(p.dead_letters().await.unwrap().is_empty());
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn a_worker_killed_mid_stream_of_batch_messages_stores_every_event_once() {
    let p = platform().await.unwrap();
    p.create_stream().await.unwrap();
    let all = events("kill", 0..20_000);
    for chunk in all.chunks(100) {
        publish_batch(&p, chunk, &[], None).await;
    }
    let env = [("NATS_ACK_WAIT", "2s"), ("WORKER_BATCH_SIZE", "5")];
    let (mut worker, _) = p.start_worker_process(&env).unwrap();
    eventually("the worker to store some events", WAIT, || async {
        (p.row_count().await > 2000).then_some(())
    })
    .await
    .unwrap();
    worker.signal("KILL").unwrap();
    worker.wait_exit(Duration::from_secs(10)).await.unwrap();
    let at_kill = p.row_count().await;
    assert!(at_kill < 20_000, "killed mid-stream ({at_kill} rows)");

    let (_worker, _) = p.start_worker_process(&env).unwrap();
    p.wait_rows(20_000).await.unwrap();
    eventually("the consumer to drain", WAIT, || async {
        (p.consumer_state().await.ok()? == (0, 0)).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(stored(&p).await, (20_000, 20_000));
}

#[tokio::test]
async fn an_unknown_encoding_or_an_unreadable_batch_is_dead_lettered_whole_as_undecodable() {
    let p = platform().await.unwrap();
    p.create_stream().await.unwrap();
    let js = p.js().await.unwrap();
    let good = events("ok", 0..3);
    let mut payload = Vec::new();
    let jsons: Vec<Vec<u8>> = good
        .iter()
        .map(|e| serde_json::to_vec(e).unwrap())
        .collect();
    batch::encode(
        jsons.iter().map(|json| Outgoing {
            correlation_id: "corr-future",
            traceparent: None,
            tracestate: None,
            event: json,
        }),
        &mut payload,
    );
    // A future encoding (its events readable as batch/1 or not, this worker cannot know),
    // and a batch/1 message cut short.
    for (encoding, body, id) in [
        ("batch/2", payload.clone(), "future"),
        (BATCH_V1, payload[..payload.len() - 10].to_vec(), "cut"),
    ] {
        let message = PublishMessage::build()
            .payload(body.into())
            .message_id(id)
            .header(ENCODING_HEADER, encoding)
            .header("X-Correlation-ID", format!("corr-{id}").as_str());
        js.send_publish(format!("{}.batch", p.names.prefix), message)
            .await
            .unwrap()
            .await
            .unwrap();
    }
    publish_batch(&p, &events("ok", 3..6), &[], None).await;

    let worker = p.start_worker(&[]).await.unwrap();
    p.wait_rows(3).await.unwrap();
    let dead = eventually("two dead letters", WAIT, || async {
        let d = p.dead_letters().await.ok()?;
        (d.len() >= 2).then_some(d)
    })
    .await
    .unwrap();
    assert_eq!(dead.len(), 2, "{dead:?}");
    for (id, encoding, detail) in [
        ("future", "batch/2", "unknown Events-Encoding \"batch/2\""),
        ("cut", BATCH_V1, "unreadable batch/1 message"),
    ] {
        let (body, h) = dead
            .iter()
            .find(|(_, h)| h.get("Dlq-Event-Id").map(String::as_str) == Some(id))
            .unwrap_or_else(|| panic!("no dead letter for {id}: {dead:?}"));
        assert_eq!(h["Dlq-Reason"], "undecodable", "{id}");
        assert!(h["Dlq-Detail"].contains(detail), "{id}: {h:?}");
        assert_eq!(h[ENCODING_HEADER], encoding, "{id}: kept whole");
        assert_eq!(h["X-Correlation-ID"], format!("corr-{id}"));
        assert_eq!(
            h["Dlq-Original-Subject"],
            format!("{}.batch", p.names.prefix)
        );
        assert!(!h.contains_key("Dlq-Original-Index"), "{h:?}");
        assert!(body.len() > 100, "the payload kept: {}", body.len());
    }
    wait_drained(&p).await;
    assert_eq!(
        stored(&p).await,
        (3, 3),
        "only the readable message's events"
    );
    let unknown = r#"worker_messages_received_total{encoding="unknown"}"#;
    assert_eq!(metric(&p, worker.port, unknown).await, 1.0);
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn batch_messages_are_stored_in_transactions_of_at_most_the_batch_size() {
    let p = platform().await.unwrap();
    p.create_stream().await.unwrap();
    // Twenty messages of 100 events: the first pull, expecting one event per message,
    // asks for 250 messages and gets them all.
    let all = events("size", 0..2000);
    for chunk in all.chunks(100) {
        publish_batch(&p, chunk, &[], None).await;
    }
    let worker = p
        .start_worker(&["--worker-batch-size", "250"])
        .await
        .unwrap();
    p.wait_rows(2000).await.unwrap();
    wait_drained(&p).await;
    let transactions = metric(&p, worker.port, "worker_batch_size_count").await;
    let within = metric(&p, worker.port, r#"worker_batch_size_bucket{le="250"}"#).await;
    assert_eq!(
        metric(&p, worker.port, "worker_batch_size_sum").await,
        2000.0
    );
    assert!(transactions >= 8.0, "{transactions} transactions");
    assert_eq!(within, transactions, "every transaction within 250 events");
    worker.stop().await.unwrap();
}

/// The worker binary with `env`, its warnings logged to a file, to check that its pulls
/// end without one.
pub(crate) struct QuietPulls {
    process: testkit::ChildProcess,
    pub(crate) port: u16,
    dir: tempfile::TempDir,
}

impl QuietPulls {
    pub(crate) fn start(p: &Platform, env: &[(&str, &str)]) -> QuietPulls {
        let dir = tempfile::tempdir().unwrap();
        let log = testkit::WorkerLog::File {
            rust_log: "warn",
            path: &dir.path().join("worker.log"),
        };
        let (process, port) = p.start_worker_process_logging(env, log).unwrap();
        QuietPulls { process, port, dir }
    }

    /// Kills the worker; its log must hold no "Pull ended early" or "Pull failed".
    pub(crate) fn assert_quiet(mut self, why: &str) {
        self.process.kill();
        let text = std::fs::read_to_string(self.dir.path().join("worker.log")).unwrap();
        assert!(
            !text.contains("Pull ended early") && !text.contains("Pull failed"),
            "{why}: {text}"
        );
    }
}

/// `n` numbered events whose `data.note` holds `padding` bytes, to make messages large.
pub(crate) fn padded_events(tag: &str, n: usize, padding: usize) -> Vec<Value> {
    let note = "x".repeat(padding);
    events(tag, 0..n)
        .into_iter()
        .map(|mut e| {
            e["data"]["note"] = json!(note);
            e
        })
        .collect()
}

#[tokio::test]
async fn a_backlog_larger_than_a_pulls_byte_limit_is_stored_whole_and_quietly() {
    let p = platform().await.unwrap();
    p.create_stream().await.unwrap();
    // 40 messages of 100 events of ~700 bytes: 2.8 MB waiting, more than the most one
    // pull asks for (the server's 1 MiB max_payload plus its slack, at 250 events a
    // batch), so pulls end at their byte limit.
    let all = padded_events("bytes", 4000, 600);
    for chunk in all.chunks(100) {
        publish_batch(&p, chunk, &[], None).await;
    }
    let worker = QuietPulls::start(&p, &[("WORKER_BATCH_SIZE", "250")]);
    let port = worker.port;
    p.wait_rows(4000).await.unwrap();
    wait_drained(&p).await;
    assert_eq!(stored(&p).await, (4000, 4000));
    // Every pull held at most 2 MiB of payload (the bound is 1 MiB + 64 KiB); without a
    // byte limit the first pull, sized for single-event messages, takes all 2.8 MB.
    let pulls = metric(&p, port, "worker_pull_bytes_count").await;
    let within = metric(&p, port, r#"worker_pull_bytes_bucket{le="2097152"}"#).await;
    assert!(pulls >= 3.0, "{pulls} pulls");
    assert_eq!(within, pulls, "every pull within 2 MiB");
    worker.assert_quiet("a pull ending at its byte limit is no failure");
}

#[tokio::test]
async fn a_message_above_what_a_pull_asks_for_is_still_delivered_and_stored() {
    let mut p = platform().await.unwrap();
    p.create_stream().await.unwrap();
    // Three messages of 100 events of ~2 KB (~200 KB each), published under the default
    // 1 MiB max_payload; the server then restarts taking at most 64 KiB. A pull of this
    // worker (10 events a batch) asks for at most 64 + 64 KiB: less than any of them.
    let all = padded_events("huge", 300, 2000);
    for chunk in all.chunks(100) {
        publish_batch(&p, chunk, &[], None).await;
    }
    p.nats.restart_with_max_payload(64 * 1024).await.unwrap();
    let worker = p
        .start_worker(&["--worker-batch-size", "10"])
        .await
        .unwrap();
    p.wait_rows(300).await.unwrap();
    wait_drained(&p).await;
    assert_eq!(stored(&p).await, (300, 300));
    worker.stop().await.unwrap();
}
