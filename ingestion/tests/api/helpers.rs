//! `spawn_app`: the real ingestion service on port 0 (started by testkit) in front of a
//! private nats-server, with a stream and subject prefix unique to the test, plus typed
//! request helpers.

use async_nats::jetstream::message::StreamMessage;
use reqwest::Response;
use serde_json::Value;
use std::time::Duration;
use testkit::{NatsServer, Service};

/// How long a test waits for something that should happen soon.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The timestamp every sample event uses.
pub const TS: &str = "2026-03-01T12:00:00.000Z";

/// Settings a test may change; `None` keeps the service default.
#[derive(Debug, Default)]
pub struct Options {
    pub max_body_bytes: Option<usize>,
    pub webhook_secret: Option<String>,
    pub publish_timeout_ms: Option<u64>,
    pub stream_max_msgs: Option<i64>,
    pub rate_limit_events_per_sec: Option<u32>,
    pub rate_limit_bytes_per_sec: Option<u32>,
    pub trusted_proxy_hops: Option<usize>,
    /// `NATS_MESSAGE_LINGER`, written with its unit (`200ms`).
    pub message_linger: Option<&'static str>,
    pub message_max_events: Option<usize>,
    /// The HTTP limits (every `HTTP_*` variable), when not the defaults.
    pub http: Option<service_kit::http::HttpArgs>,
}

/// A running ingestion service and its private nats-server.
#[derive(Debug)]
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub addr: String,
    /// The nats-server behind the service (kill and restart it to simulate outages).
    pub nats: NatsServer,
    pub stream: String,
    pub prefix: String,
    pub client: reqwest::Client,
    /// Stopped when the app drops.
    _service: Service,
}

/// Starts a nats-server and the service, and waits until the service is ready.
pub async fn spawn_app(options: Options) -> TestApp {
    service_kit::telemetry::init_for_tests();
    let nats = NatsServer::start().await.expect("nats-server starts");
    let stream = format!("EVENTS_{}", testkit::unique_name());
    let prefix = testkit::unique_name();
    let url = nats.url();

    let mut args: Vec<String> = [
        "ingestion",
        "--port",
        "0",
        "--host",
        "127.0.0.1",
        "--nats-url",
        &url,
        "--nats-stream",
        &stream,
        "--nats-subject-prefix",
        &prefix,
        "--log-format",
        "text",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut flag = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            args.push(format!("--{name}"));
            args.push(value);
        }
    };
    flag(
        "http-max-body-bytes",
        options.max_body_bytes.map(|v| v.to_string()),
    );
    flag("webhook-secret", options.webhook_secret);
    flag(
        "rate-limit-events-per-sec",
        options.rate_limit_events_per_sec.map(|v| v.to_string()),
    );
    flag(
        "rate-limit-bytes-per-sec",
        options.rate_limit_bytes_per_sec.map(|v| v.to_string()),
    );
    flag(
        "trusted-proxy-hops",
        options.trusted_proxy_hops.map(|v| v.to_string()),
    );
    flag(
        "nats-publish-timeout",
        options.publish_timeout_ms.map(|v| format!("{v}ms")),
    );
    flag(
        "nats-message-linger",
        options.message_linger.map(str::to_owned),
    );
    flag(
        "nats-message-max-events",
        options.message_max_events.map(|v| v.to_string()),
    );
    flag(
        "nats-stream-max-msgs",
        options.stream_max_msgs.map(|v| v.to_string()),
    );
    if let Some(http) = options.http {
        let written = |d| service_kit::config::Written(d).to_string();
        args.extend(
            [
                ("--http-header-timeout", written(http.http_header_timeout)),
                ("--http-body-timeout", written(http.http_body_timeout)),
                ("--http-request-timeout", written(http.http_request_timeout)),
                ("--http-idle-timeout", written(http.http_idle_timeout)),
                (
                    "--http-max-connections",
                    http.http_max_connections.to_string(),
                ),
            ]
            .into_iter()
            .flat_map(|(flag, value)| [flag.to_owned(), value]),
        );
    }
    let config = testkit::parse(args).expect("test configuration parses");
    let service = Service::ingestion(config)
        .await
        .expect("the service builds");
    let addr = service.url("");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("reqwest client");
    let app = TestApp {
        addr,
        nats,
        stream,
        prefix,
        client,
        _service: service,
    };
    app.wait_until_ready().await;
    app
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.addr)
    }

    /// Polls `/health/readiness` until it answers 200.
    pub async fn wait_until_ready(&self) {
        testkit::eventually("readiness 200", PATIENCE, || async {
            let response = self.get("/health/readiness").await.ok()?;
            (response.status() == 200).then_some(())
        })
        .await
        .expect("the service becomes ready");
    }

    pub async fn get(&self, path: &str) -> reqwest::Result<Response> {
        self.client.get(self.url(path)).send().await
    }

    /// POSTs `body` as `application/json` to `/webhook/event`.
    pub async fn post_json(&self, body: &Value) -> Response {
        self.post_raw(
            serde_json::to_vec(body).expect("serialisable"),
            Some("application/json"),
        )
        .await
    }

    /// POSTs exactly these bytes, with this content type (none when `None`).
    pub async fn post_raw(
        &self,
        bytes: impl Into<Vec<u8>>,
        content_type: Option<&str>,
    ) -> Response {
        self.post_with(bytes, content_type, &[]).await
    }

    /// POSTs with extra headers.
    pub async fn post_with(
        &self,
        bytes: impl Into<Vec<u8>>,
        content_type: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Response {
        let mut request = self
            .client
            .post(self.url("/webhook/event"))
            .body(bytes.into());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("the request gets a response")
    }

    async fn jetstream(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        self.nats.jetstream().await
    }

    /// How many messages the test's stream holds now.
    pub async fn stream_message_count(&self) -> u64 {
        let js = self
            .jetstream()
            .await
            .expect("test client connects to NATS");
        let mut stream = js
            .get_stream(&self.stream)
            .await
            .expect("the stream exists");
        stream.info().await.expect("stream info").state.messages
    }

    /// How many events the stream holds now, whatever the messages holding them.
    pub async fn stored_event_count(&self) -> u64 {
        self.stored_events().await.len() as u64
    }

    /// Every message of the stream, in sequence order.
    pub async fn stored_messages(&self) -> Vec<StreamMessage> {
        let js = self
            .jetstream()
            .await
            .expect("test client connects to NATS");
        stored_messages(&js, &self.stream).await
    }

    /// Every event of the stream, in order, whichever the encoding of its message.
    pub async fn stored_events(&self) -> Vec<StoredEvent> {
        self.stored_messages()
            .await
            .iter()
            .flat_map(events_of)
            .collect()
    }

    /// The `eventId`s of every stored event, in order.
    pub async fn stored_event_ids(&self) -> Vec<String> {
        self.stored_events()
            .await
            .into_iter()
            .map(|e| e.event_id)
            .collect()
    }

    /// Stops the service gracefully (the way SIGTERM does) and waits until it has.
    pub async fn stop(self) -> NatsServer {
        self._service
            .stop()
            .await
            .expect("the service stops cleanly");
        self.nats
    }
}

/// Every message of a stream, in sequence order.
pub async fn stored_messages(
    js: &async_nats::jetstream::Context,
    stream: &str,
) -> Vec<StreamMessage> {
    let mut stream = js.get_stream(stream).await.expect("the stream exists");
    let state = stream.info().await.expect("stream info").state.clone();
    let mut messages = Vec::new();
    if state.messages == 0 {
        return messages;
    }
    for sequence in state.first_sequence..=state.last_sequence {
        match stream.get_raw_message(sequence).await {
            Ok(message) => messages.push(message),
            // A gap (deleted message) is not an error.
            Err(e) if e.to_string().contains("not found") => {}
            Err(e) => panic!("cannot read message {sequence}: {e}"),
        }
    }
    messages
}

/// One event as the stream holds it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub event_id: String,
    pub correlation_id: String,
    /// The event's JSON bytes as stored.
    pub json: Vec<u8>,
    /// The stream sequence of the message holding it.
    pub sequence: u64,
}

/// The events of one message: itself, or the envelopes of a `batch/1` message.
pub fn events_of(message: &StreamMessage) -> Vec<StoredEvent> {
    let event_id = |json: &[u8]| {
        let value: Value = serde_json::from_slice(json).expect("an event is JSON");
        value["eventId"]
            .as_str()
            .expect("an event has an eventId")
            .to_owned()
    };
    match header(message, service_kit::batch::ENCODING_HEADER).as_deref() {
        None => vec![StoredEvent {
            event_id: event_id(&message.payload),
            correlation_id: header(message, "X-Correlation-ID").unwrap_or_default(),
            json: message.payload.to_vec(),
            sequence: message.sequence,
        }],
        Some(service_kit::batch::BATCH_V1) => service_kit::batch::decode(&message.payload)
            .expect("a batch/1 payload decodes")
            .into_iter()
            .map(|envelope| StoredEvent {
                event_id: event_id(envelope.event.get().as_bytes()),
                correlation_id: envelope.correlation_id.into_owned(),
                json: envelope.event.get().as_bytes().to_vec(),
                sequence: message.sequence,
            })
            .collect(),
        Some(other) => panic!("unknown encoding {other}"),
    }
}

/// A header of a stored message.
pub fn header(message: &StreamMessage, name: &str) -> Option<String> {
    message.headers.get(name).map(|v| v.to_string())
}

/// The JSON body of a response, which must be JSON.
pub async fn body_json(response: Response) -> Value {
    let text = response.text().await.expect("a body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text}"))
}

/// Asserts the `docs/api.md` error shape `{"error":{"code","message","details"}}` with this code,
/// and returns the details.
pub fn assert_error_body(body: &Value, code: &str) -> Vec<Value> {
    let top = body.as_object().expect("the error body is an object");
    assert_eq!(top.len(), 1, "only `error` at the top level: {body}");
    let error = body["error"].as_object().expect("`error` is an object");
    assert_eq!(error.get("code"), Some(&Value::from(code)), "{body}");
    let message = error.get("message").and_then(Value::as_str).unwrap_or("");
    assert!(!message.is_empty(), "a human message: {body}");
    error
        .get("details")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("`details` is an array: {body}"))
        .clone()
}

/// Asserts status and error code of a response; returns the details.
pub async fn assert_error(response: Response, status: u16, code: &str) -> Vec<Value> {
    let got = response.status().as_u16();
    let body = body_json(response).await;
    assert_eq!(got, status, "status for {code}: {body}");
    assert_error_body(&body, code)
}

/// A valid Facebook `ad.view` with this id.
pub fn fb_top(id: &str) -> Value {
    testkit::facebook_top(id, TS, "fb-u-1", "Germany")
}
