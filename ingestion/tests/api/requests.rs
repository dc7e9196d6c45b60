//! Requests refused before validation: malformed JSON, batch size, body size, content type.

use crate::helpers::{Options, assert_error, assert_error_body, fb_top, spawn_app};
use serde_json::Value;
use testkit::events;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn webhook_returns_400_when_the_body_is_not_json() {
    let app = spawn_app(Options::default()).await;
    for body in [&b"{\"eventId\": "[..], b"not json", b"[{}", b""] {
        let response = app.post_raw(body, Some("application/json")).await;
        assert_error(response, 400, "malformed_json").await;
    }
    assert_eq!(app.stored_event_count().await, 0);
}

#[tokio::test]
async fn webhook_returns_400_when_the_body_is_a_json_scalar() {
    let app = spawn_app(Options::default()).await;
    for body in ["42", "\"an event\"", "null", "true"] {
        let response = app.post_raw(body, Some("application/json")).await;
        assert_error(response, 400, "malformed_json").await;
    }
    assert_eq!(app.stored_event_count().await, 0);
}

#[tokio::test]
async fn webhook_returns_422_batch_size_for_an_empty_array_and_for_1001_events() {
    let app = spawn_app(Options::default()).await;
    assert_error(
        app.post_raw("[]", Some("application/json")).await,
        422,
        "batch_size",
    )
    .await;
    let too_many = Value::Array(events("big", 0..1001));
    assert_error(app.post_json(&too_many).await, 422, "batch_size").await;
    assert_eq!(app.stored_event_count().await, 0);
    // The largest batch allowed goes through.
    let response = app.post_json(&Value::Array(events("max", 0..1000))).await;
    assert_eq!(response.status(), 202);
    assert_eq!(app.stored_event_count().await, 1000);
}

#[tokio::test]
async fn webhook_returns_413_when_a_declared_body_is_larger_than_the_limit() {
    let app = spawn_app(Options {
        max_body_bytes: Some(1024),
        ..Options::default()
    })
    .await;
    let mut event = fb_top("big-1");
    event["padding"] = Value::from("x".repeat(2000));
    let response = app.post_json(&event).await;
    assert_error(response, 413, "payload_too_large").await;
    // A body under the limit is fine.
    assert_eq!(app.post_json(&fb_top("small-1")).await.status(), 202);
    assert_eq!(app.stored_event_count().await, 1);
}

#[tokio::test]
async fn webhook_returns_413_when_a_chunked_body_grows_past_the_limit() {
    let app = spawn_app(Options {
        max_body_bytes: Some(1024),
        ..Options::default()
    })
    .await;
    let mut event = fb_top("chunked-1");
    event["padding"] = Value::from("x".repeat(2000));
    let body = serde_json::to_vec(&event).expect("json");
    // reqwest sends a Content-Length for in-memory bodies, so speak chunked HTTP/1.1 by hand.
    let port = app.addr.rsplit(':').next().expect("port");
    let mut socket = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .expect("connects");
    let mut request = b"POST /webhook/event HTTP/1.1\r\nHost: 127.0.0.1\r\n\
        Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
        Connection: close\r\n\r\n"
        .to_vec();
    for chunk in body.chunks(500) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    socket.write_all(&request).await.expect("request written");
    let mut raw = Vec::new();
    socket.read_to_end(&mut raw).await.expect("response read");
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    let (_, rest) = raw.split_once("\r\n\r\n").expect("headers end");
    // Either a plain body or a single chunk: take the JSON object inside.
    let json = &rest[rest.find('{').expect("a JSON body")..=rest.rfind('}').expect("end")];
    let body: Value = serde_json::from_str(json).expect("JSON error body");
    assert_error_body(&body, "payload_too_large");
    assert_eq!(app.stored_event_count().await, 0);
}

#[tokio::test]
async fn webhook_returns_415_for_a_wrong_or_missing_content_type() {
    let app = spawn_app(Options::default()).await;
    let body = serde_json::to_vec(&fb_top("ct-1")).expect("json");
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let response = app.post_raw(body.clone(), content_type).await;
        assert_error(response, 415, "unsupported_media_type").await;
    }
    assert_eq!(app.stored_event_count().await, 0);
    // A charset parameter is fine.
    let response = app
        .post_raw(body, Some("application/json; charset=utf-8"))
        .await;
    assert_eq!(response.status(), 202);
}

#[tokio::test]
async fn the_alias_route_webhook_accepts_events_too() {
    let app = spawn_app(Options::default()).await;
    let response = app
        .client
        .post(app.url("/webhook"))
        .json(&fb_top("alias-1"))
        .send()
        .await
        .expect("response");
    assert_eq!(response.status(), 202);
    assert_eq!(app.stored_event_count().await, 1);
}

#[tokio::test]
async fn an_event_larger_than_the_broker_takes_gets_413_not_a_retryable_503() {
    // Body limit 2 MiB (default), NATS max_payload 1 MiB: an event of 1.5 MB fits the
    // body limit but can never be stored; retrying it would never help.
    let app = spawn_app(Options::default()).await;
    let mut big = fb_top("huge-1");
    big["padding"] = Value::from("x".repeat(1_500_000));
    let batch = Value::Array(vec![fb_top("small-before"), big]);
    let details = assert_error(app.post_json(&batch).await, 413, "payload_too_large").await;
    assert_eq!(details, vec![serde_json::json!({"index": 1})]);
    assert_eq!(
        app.stored_event_count().await,
        0,
        "nothing published partially"
    );
}
