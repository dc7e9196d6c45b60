//! Coalescing: the events of concurrent requests share JetStream messages, and a request
//! is answered 202 only once every message holding its events has its PubAck.

use crate::helpers::{Options, StoredEvent, TestApp, body_json, spawn_app};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use testkit::events;

/// Posts `body` with this correlation id; returns the status and the JSON body.
async fn post(app: &TestApp, body: &Value, correlation_id: &str) -> (u16, Value) {
    let response = app
        .post_with(
            serde_json::to_vec(body).unwrap(),
            Some("application/json"),
            &[("X-Correlation-ID", correlation_id)],
        )
        .await;
    let status = response.status().as_u16();
    (status, body_json(response).await)
}

/// How many times each eventId is in the stream.
fn occurrences(stored: &[StoredEvent]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for event in stored {
        *counts.entry(event.event_id.clone()).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn concurrent_requests_share_messages_and_each_is_answered_after_its_events_are_stored() {
    // A linger long enough that the concurrent requests meet in the open message.
    let app = spawn_app(Options {
        message_linger: Some("300ms"),
        ..Options::default()
    })
    .await;
    const REQUESTS: usize = 20;
    let answers = futures::future::join_all((0..REQUESTS).map(|r| {
        let app = &app;
        async move {
            let batch = Value::Array(events(&format!("co-{r}"), 0..3));
            let answer = post(app, &batch, &format!("corr-co-{r}")).await;
            // Read the stream the moment the answer is in: a 202 means stored already.
            let stored = app.stored_events().await;
            (r, answer, stored)
        }
    }))
    .await;

    for (r, (status, body), stored_at_answer) in &answers {
        assert_eq!(*status, 202, "request {r}: {body}");
        assert_eq!(
            body,
            &json!({"accepted": 3, "duplicates": 0}),
            "request {r}"
        );
        for i in 0..3 {
            let id = format!("co-{r}-{i}");
            let event = stored_at_answer
                .iter()
                .find(|e| e.event_id == id)
                .unwrap_or_else(|| panic!("{id} is stored when request {r} is answered"));
            assert_eq!(event.correlation_id, format!("corr-co-{r}"), "{id}");
            let sent = &events(&format!("co-{r}"), 0..3)[i];
            assert_eq!(
                event.json,
                serde_json::to_vec(sent).unwrap(),
                "{id}: bytes as sent"
            );
        }
    }

    let stored = app.stored_events().await;
    let expected: BTreeMap<String, usize> = (0..REQUESTS)
        .flat_map(|r| (0..3).map(move |i| (format!("co-{r}-{i}"), 1)))
        .collect();
    assert_eq!(occurrences(&stored), expected, "every event once");
    let messages = app.stream_message_count().await as usize;
    let events = stored.len();
    assert!(
        messages < REQUESTS,
        "{REQUESTS} requests of 3 events share messages: {messages} messages for {events} events"
    );
    let sequences: BTreeSet<u64> = stored.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences.len(), messages);
}

#[tokio::test]
async fn nats_killed_mid_linger_fails_exactly_the_requests_not_yet_acknowledged() {
    let mut app = spawn_app(Options {
        message_linger: Some("3s"),
        publish_timeout_ms: Some(1000),
        ..Options::default()
    })
    .await;
    // Acknowledged before the outage: its message went out at the end of its linger.
    let before = Value::Array(events("kill-before", 0..4));
    let (status, body) = post(&app, &before, "corr-before").await;
    assert_eq!(status, 202, "{body}");

    // These wait in the open message; NATS dies well inside their 3 s linger.
    let lingering: Vec<_> = (0..5)
        .map(|r| {
            let (client, url) = (app.client.clone(), app.url("/webhook/event"));
            let batch = Value::Array(events(&format!("kill-during-{r}"), 0..2));
            tokio::spawn(async move {
                let response = client.post(url).json(&batch).send().await.unwrap();
                (response.status().as_u16(), response.text().await.unwrap())
            })
        })
        .collect();
    // Not a wait for an effect: the time the requests need to reach the open message,
    // far inside the linger. That none is answered yet is checked below.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        lingering.iter().all(|task| !task.is_finished()),
        "the requests are still lingering when NATS is killed"
    );
    app.nats.kill();
    for (r, task) in lingering.into_iter().enumerate() {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 503, "lingering request {r}: {body}");
    }

    app.nats.restart().await.expect("nats-server restarts");
    app.wait_until_ready().await;
    let after = Value::Array(events("kill-after", 0..3));
    let (status, body) = post(&app, &after, "corr-after").await;
    assert_eq!(status, 202, "after the restart: {body}");

    // Everything answered 202 is in the stream once (file storage survived the kill).
    // The lingering requests' events may be there or not (a 503 says "not known to be
    // stored"), but never twice.
    let counts = occurrences(&app.stored_events().await);
    for id in (0..4)
        .map(|i| format!("kill-before-{i}"))
        .chain((0..3).map(|i| format!("kill-after-{i}")))
    {
        assert_eq!(counts.get(&id), Some(&1), "{id} stored once: {counts:?}");
    }
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
}

#[tokio::test]
async fn an_identical_request_sent_again_is_a_broker_duplicate_and_stored_once() {
    let app = spawn_app(Options::default()).await;
    let batch = Value::Array(events("again", 0..5));
    let (status, body) = post(&app, &batch, "corr-first").await;
    assert_eq!(
        (status, body),
        (202, json!({"accepted": 5, "duplicates": 0}))
    );
    let (status, body) = post(&app, &batch, "corr-again").await;
    assert_eq!(
        (status, body),
        (202, json!({"accepted": 5, "duplicates": 5}))
    );

    assert_eq!(app.stream_message_count().await, 1);
    let stored = app.stored_events().await;
    let expected: BTreeMap<String, usize> = (0..5).map(|i| (format!("again-{i}"), 1)).collect();
    assert_eq!(occurrences(&stored), expected);
    assert!(stored.iter().all(|e| e.correlation_id == "corr-first"));
}

#[tokio::test]
async fn repeats_of_an_event_id_within_a_request_count_as_duplicates_and_are_sent_once() {
    let app = spawn_app(Options::default()).await;
    let distinct = events("rep", 0..3);
    let batch = Value::Array(vec![
        distinct[0].clone(),
        distinct[1].clone(),
        distinct[0].clone(),
        distinct[2].clone(),
        distinct[1].clone(),
        distinct[0].clone(),
    ]);
    let (status, body) = post(&app, &batch, "corr-rep").await;
    assert_eq!(
        (status, body),
        (202, json!({"accepted": 6, "duplicates": 3}))
    );

    let ids: Vec<String> = app.stored_event_ids().await;
    assert_eq!(
        ids,
        ["rep-0", "rep-1", "rep-2"],
        "each once, first occurrence order"
    );
}

#[tokio::test]
async fn a_request_lingering_when_the_service_stops_is_answered_202_and_stored() {
    let app = spawn_app(Options {
        message_linger: Some("2s"),
        ..Options::default()
    })
    .await;
    let (client, url) = (app.client.clone(), app.url("/webhook/event"));
    let batch = Value::Array(events("stop", 0..3));
    let request = tokio::spawn(async move {
        let response = client.post(url).json(&batch).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    });
    // The time the request needs to reach the open message, inside the linger.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!request.is_finished(), "the request is still lingering");
    let (stream, nats) = (app.stream.clone(), app.stop().await);

    let (status, body) = request.await.unwrap();
    assert_eq!(status, 202, "{body}");
    let js = nats.jetstream().await.unwrap();
    let ids: Vec<String> = crate::helpers::stored_messages(&js, &stream)
        .await
        .iter()
        .flat_map(crate::helpers::events_of)
        .map(|e| e.event_id)
        .collect();
    assert_eq!(ids, ["stop-0", "stop-1", "stop-2"]);
}

#[tokio::test]
async fn metrics_count_the_messages_published_and_the_events_in_each() {
    // nextest runs each test in a process of its own: the recorder counts this test only.
    let app = spawn_app(Options::default()).await;
    let metric = |metrics: &str, sample: &str| -> Option<f64> {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
    };
    let metrics = app.get("/metrics").await.unwrap().text().await.unwrap();
    for encoding in ["single", "batch"] {
        let sample = format!("ingestion_messages_published_total{{encoding=\"{encoding}\"}}");
        assert_eq!(metric(&metrics, &sample), Some(0.0), "{metrics}");
    }

    let (status, _) = post(&app, &Value::Array(events("m-batch", 0..7)), "corr-m1").await;
    assert_eq!(status, 202);
    let (status, _) = post(&app, &Value::Array(events("m-one", 0..1)), "corr-m2").await;
    assert_eq!(status, 202);

    let metrics = app.get("/metrics").await.unwrap().text().await.unwrap();
    let expect = [
        (
            "ingestion_messages_published_total{encoding=\"batch\"}",
            1.0,
        ),
        (
            "ingestion_messages_published_total{encoding=\"single\"}",
            1.0,
        ),
        ("ingestion_message_events_sum{encoding=\"batch\"}", 7.0),
        ("ingestion_message_events_count{encoding=\"batch\"}", 1.0),
        (
            "ingestion_message_events_bucket{encoding=\"batch\",le=\"1\"}",
            0.0,
        ),
        (
            "ingestion_message_events_bucket{encoding=\"batch\",le=\"10\"}",
            1.0,
        ),
        ("ingestion_message_events_sum{encoding=\"single\"}", 1.0),
    ];
    for (sample, value) in expect {
        assert_eq!(metric(&metrics, sample), Some(value), "{sample}: {metrics}");
    }
}
