//! What a 202 means: the events are in the stream, verbatim, once each.

use crate::helpers::{Options, assert_error, body_json, fb_top, header, spawn_app};
use serde_json::{Value, json};
use service_kit::batch;
use testkit::events;

#[tokio::test]
async fn a_valid_event_is_stored_verbatim_on_its_subject_with_id_and_correlation_headers() {
    let app = spawn_app(Options::default()).await;
    // Odd spacing, a trailing-zero number and unknown fields must all survive untouched.
    let sent = br#"{ "eventId":"ev-verbatim-1", "timestamp":"2026-03-01T12:00:00.000Z",
      "source":"facebook","funnelStage":"top","eventType":"ad.view", "futureField": {"x": 1.50},
      "data":{"user":{"userId":"fb-u-1","name":"Ada Park","age":31,"gender":"female",
              "location":{"country":"Germany","city":"Berlin"}, "extra": [1, 2]},
              "engagement":{"actionTime":"2026-03-01T12:00:00Z","referrer":"newsfeed","videoId":null}} }"#;
    let response = app
        .post_with(
            &sent[..],
            Some("application/json"),
            &[("X-Correlation-ID", "corr-client-42")],
        )
        .await;
    assert_eq!(response.status(), 202);
    assert_eq!(
        response
            .headers()
            .get("x-correlation-id")
            .and_then(|v| v.to_str().ok()),
        Some("corr-client-42")
    );
    assert_eq!(
        body_json(response).await,
        json!({"accepted": 1, "duplicates": 0})
    );

    let stored = app.stored_messages().await;
    assert_eq!(stored.len(), 1);
    let message = &stored[0];
    assert_eq!(
        message.subject.as_str(),
        format!("{}.facebook.ad.view", app.prefix)
    );
    assert_eq!(
        &message.payload[..],
        &sent[..],
        "payload bytes are the bytes sent"
    );
    assert_eq!(
        header(message, "Nats-Msg-Id").as_deref(),
        Some("ev-verbatim-1")
    );
    assert_eq!(
        header(message, "X-Correlation-ID").as_deref(),
        Some("corr-client-42")
    );
}

#[tokio::test]
async fn without_a_correlation_id_a_generated_one_is_echoed_and_carried() {
    let app = spawn_app(Options::default()).await;
    let response = app.post_json(&fb_top("ev-gen-1")).await;
    assert_eq!(response.status(), 202);
    let echoed = response
        .headers()
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("a generated correlation id is echoed");
    assert!(!echoed.is_empty());
    let stored = app.stored_messages().await;
    assert_eq!(stored.len(), 1);
    assert_eq!(header(&stored[0], "X-Correlation-ID"), Some(echoed));
}

#[tokio::test]
async fn a_batch_is_stored_as_one_message_holding_each_event_verbatim_in_order() {
    let app = spawn_app(Options::default()).await;
    let batch = events("subj", 0..4);
    // Producer formatting (spacing, key order) must survive: the bytes sent are stored.
    let sent: Vec<String> = batch
        .iter()
        .map(|e| serde_json::to_string_pretty(e).unwrap())
        .collect();
    let body = format!("[{}]", sent.join(" ,\n"));
    let response = app
        .post_with(
            body,
            Some("application/json"),
            &[("X-Correlation-ID", "corr-batch-1")],
        )
        .await;
    assert_eq!(response.status(), 202);
    assert_eq!(
        body_json(response).await,
        json!({"accepted": 4, "duplicates": 0})
    );
    let stored = app.stored_messages().await;
    assert_eq!(stored.len(), 1, "one message for the request's 4 events");
    let message = &stored[0];
    assert_eq!(message.subject.as_str(), format!("{}.batch", app.prefix));
    assert_eq!(
        header(message, batch::ENCODING_HEADER).as_deref(),
        Some(batch::BATCH_V1)
    );
    let ids: Vec<String> = (0..4).map(|i| format!("subj-{i}")).collect();
    assert_eq!(
        header(message, "Nats-Msg-Id"),
        Some(batch::message_id(ids.iter().map(String::as_str)))
    );
    let envelopes = batch::decode(&message.payload).expect("a batch/1 payload");
    let got: Vec<&str> = envelopes.iter().map(|e| e.event.get()).collect();
    assert_eq!(got, sent, "each event's bytes as sent, in order");
    for envelope in &envelopes {
        assert_eq!(envelope.correlation_id, "corr-batch-1");
    }
}

#[tokio::test]
async fn duplicates_inside_a_batch_and_across_requests_are_counted_and_stored_once() {
    let app = spawn_app(Options::default()).await;
    let mut batch = events("dup", 0..8);
    // Two repeats of earlier events inside the same batch: 10 events, 8 distinct ids.
    batch.push(batch[1].clone());
    batch.push(batch[5].clone());
    let body = Value::Array(batch);

    let first = app.post_json(&body).await;
    assert_eq!(first.status(), 202);
    // `accepted` counts every event of the request; `duplicates` the repeats within it
    // and the events of messages JetStream reported as re-sent.
    assert_eq!(
        body_json(first).await,
        json!({"accepted": 10, "duplicates": 2})
    );

    let again = app.post_json(&body).await;
    assert_eq!(again.status(), 202);
    assert_eq!(
        body_json(again).await,
        json!({"accepted": 10, "duplicates": 10})
    );

    assert_eq!(app.stream_message_count().await, 1);
    let mut ids = app.stored_event_ids().await;
    ids.sort();
    let mut expected: Vec<String> = (0..8).map(|i| format!("dup-{i}")).collect();
    expected.sort();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn a_full_stream_answers_503_and_keeps_what_it_stored() {
    let app = spawn_app(Options {
        stream_max_msgs: Some(5),
        ..Options::default()
    })
    .await;
    for i in 0..5 {
        let response = app.post_json(&fb_top(&format!("full-{i}"))).await;
        assert_eq!(response.status(), 202, "event {i}");
    }
    let response = app.post_json(&fb_top("full-5")).await;
    assert!(
        response.headers().get("retry-after").is_some(),
        "503 carries Retry-After"
    );
    assert_error(response, 503, "unavailable").await;

    assert_eq!(app.stream_message_count().await, 5);
    let ids = app.stored_event_ids().await;
    assert_eq!(ids, (0..5).map(|i| format!("full-{i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn with_trace_export_off_messages_carry_no_trace_context() {
    // OTEL_EXPORTER_OTLP_ENDPOINT is not set for this service, so no trace layer is
    // installed: even a producer's own `traceparent` is not forwarded into NATS.
    let app = spawn_app(Options::default()).await;
    let response = app
        .post_with(
            serde_json::to_vec(&fb_top("ev-no-trace-1")).unwrap_or_default(),
            Some("application/json"),
            &[
                (
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
                ("tracestate", "vendor=abc"),
            ],
        )
        .await;
    assert_eq!(response.status(), 202);
    let stored = app.stored_messages().await;
    assert_eq!(stored.len(), 1);
    let mut names: Vec<String> = stored[0]
        .headers
        .iter()
        .map(|(name, _)| name.to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["Ingested-At", "Nats-Msg-Id", "X-Correlation-ID"]);
}
