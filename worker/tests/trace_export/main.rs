//! OpenTelemetry trace export end to end: a tiny OTLP/gRPC collector in this process, the
//! real ingestion (in this process) and the real `worker` binary, a private nats-server and
//! PostgreSQL. One trace must run from the webhook through JetStream to the insert, and
//! each event of a multi-event message keeps its own.
//!
//! A binary of its own: trace export installs the process-wide tracing subscriber, which
//! the other test binaries must not get.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use serde_json::Value;
use service_kit::config::LogFormat;
use service_kit::telemetry::{self, TraceArgs};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use testkit::{Platform, events};
use tokio::sync::oneshot;

/// One span as the collector received it (ids in hex, as in `traceparent`).
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    /// `(trace id, span id)` of each link.
    links: Vec<(String, String)>,
    kind: i32,
}

/// An OTLP/gRPC trace receiver on a free loopback port, keeping what it receives.
#[derive(Debug, Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                    AnyValue::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    received.push(Received {
                        service: service.clone(),
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        links: span
                            .links
                            .iter()
                            .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                            .collect(),
                        kind: span.kind,
                    });
                }
            }
        }
        self.spans.lock().unwrap().extend(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Collector {
    /// Starts serving; returns the collector, its endpoint and what stops it.
    async fn start() -> (Collector, String, oneshot::Sender<()>) {
        let collector = Collector::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let service = TraceServiceServer::new(collector.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    async {
                        let _ = stopped.await;
                    },
                ),
        );
        (collector, endpoint, stop)
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }
}

/// The one span named `name` from `service` whose `pick` holds.
fn one<'s>(
    spans: &'s [Received],
    service: &str,
    name: &str,
    pick: impl Fn(&Received) -> bool,
) -> &'s Received {
    let found: Vec<&Received> = spans
        .iter()
        .filter(|s| s.service == service && s.name == name && pick(s))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{service} {name}: {found:#?}\nall: {spans:#?}"
    );
    found[0]
}

// OTLP span kinds.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_the_webhook_through_nats_to_the_insert() {
    let (collector, endpoint, stop_collector) = Collector::start().await;

    // Ingestion runs in this process: the subscriber installed here exports as "ingestion".
    let log_filter = if std::env::var_os("TEST_LOG").is_some() {
        "info"
    } else {
        "off"
    };
    let traces = TraceArgs {
        otel_exporter_otlp_endpoint: Some(endpoint.clone()),
        otel_service_name: None,
    };
    let telemetry =
        telemetry::init_with_traces(LogFormat::Text, log_filter, &traces, "ingestion").unwrap();
    assert!(
        telemetry.is_exporting(),
        "no subscriber may be installed before"
    );

    let p = Platform::builder()
        .worker_binary(env!("CARGO_BIN_EXE_worker"))
        .start()
        .await
        .unwrap();
    let ingestion = p.start_ingestion(&[]).await.unwrap();
    let post = |tag: &str, n: usize| {
        let body = Value::Array(events(tag, 0..n));
        let url = format!("http://127.0.0.1:{}/webhook/event", ingestion.port);
        let http = p.http.clone();
        async move {
            let r = http.post(url).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 202);
        }
    };

    // Two requests waiting in the stream before the worker starts: its first batch holds
    // both, so two traces, and its span must link to each.
    post("trace-a", 1).await;
    post("trace-b", 2).await;
    let (mut worker, worker_port) = p
        .start_worker_process(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("WORKER_CONCURRENCY", "1"),
        ])
        .unwrap();
    p.wait_ready(worker_port).await.unwrap();
    p.wait_rows(3).await.unwrap();
    // Then one request alone: its batch continues its trace.
    post("trace-c", 1).await;
    p.wait_rows(4).await.unwrap();

    // Graceful stops: each service exports what it still buffers before exiting.
    ingestion.stop().await.unwrap();
    telemetry.shutdown().await;
    worker.signal("TERM").unwrap();
    let status = worker.wait_exit(Duration::from_secs(30)).await.unwrap();
    assert!(status.success(), "worker exited with {status}");
    let spans = collector.spans();
    let _ = stop_collector.send(());

    // Ingestion: webhook (server) -> publish (producer), once per request.
    let webhooks: Vec<&Received> = spans
        .iter()
        .filter(|s| s.service == "ingestion" && s.name == "webhook")
        .collect();
    assert_eq!(webhooks.len(), 3, "{spans:#?}");
    let publish_of = |webhook: &Received| {
        one(&spans, "ingestion", "publish", |s| {
            s.parent_span_id == webhook.span_id
        })
    };
    for webhook in &webhooks {
        assert_eq!(webhook.kind, SERVER);
        assert_eq!(
            webhook.parent_span_id, "",
            "no traceparent was sent: a root"
        );
        let publish = publish_of(webhook);
        assert_eq!(publish.trace_id, webhook.trace_id);
        assert_eq!(publish.kind, PRODUCER);
    }

    // The lone request: worker batch (consumer) child of its publish, same trace; the
    // insert (client) inside the batch.
    let batches: Vec<&Received> = spans
        .iter()
        .filter(|s| s.service == "worker" && s.name == "batch")
        .collect();
    assert_eq!(batches.len(), 2, "{spans:#?}");
    let parented = batches
        .iter()
        .find(|b| b.links.is_empty())
        .expect("a batch with a parent");
    let publish_c = spans
        .iter()
        .find(|s| s.name == "publish" && s.span_id == parented.parent_span_id)
        .expect("the batch's parent is an ingestion publish span");
    assert_eq!(
        parented.trace_id, publish_c.trace_id,
        "one trace across NATS"
    );
    assert_eq!(parented.kind, CONSUMER);
    let insert = one(&spans, "worker", "insert", |s| {
        s.parent_span_id == parented.span_id
    });
    assert_eq!(insert.trace_id, publish_c.trace_id);
    assert_eq!(insert.kind, CLIENT);

    // The batch of the two earlier requests: a trace of its own, linked to both publishes.
    let linked = batches
        .iter()
        .find(|b| !b.links.is_empty())
        .expect("a batch with links");
    let mut links = linked.links.clone();
    links.sort();
    let mut expected: Vec<(String, String)> = webhooks
        .iter()
        .map(|w| publish_of(w))
        .filter(|p| p.span_id != publish_c.span_id)
        .map(|p| (p.trace_id.clone(), p.span_id.clone()))
        .collect();
    expected.sort();
    assert_eq!(links, expected);
    assert_eq!(linked.parent_span_id, "");
    one(&spans, "worker", "insert", |s| {
        s.parent_span_id == linked.span_id && s.trace_id == linked.trace_id
    });
}

/// Publishes `events` as one `batch/1` message, each with the trace context of its pair.
async fn publish_batch(p: &Platform, events: &[(Value, &str)]) {
    use service_kit::batch::{self, BATCH_V1, ENCODING_HEADER, Outgoing};
    let jsons: Vec<Vec<u8>> = events
        .iter()
        .map(|(e, _)| serde_json::to_vec(e).unwrap())
        .collect();
    let mut payload = Vec::new();
    batch::encode(
        events
            .iter()
            .zip(&jsons)
            .map(|((_, traceparent), json)| Outgoing {
                correlation_id: "corr",
                traceparent: Some(traceparent),
                tracestate: None,
                event: json,
            }),
        &mut payload,
    );
    let id = batch::message_id(events.iter().map(|(e, _)| e["eventId"].as_str().unwrap()));
    let message = async_nats::jetstream::message::PublishMessage::build()
        .payload(payload.into())
        .message_id(id.as_str())
        .header(ENCODING_HEADER, BATCH_V1);
    let js = p.js().await.unwrap();
    js.send_publish(format!("{}.batch", p.names.prefix), message)
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_of_a_batch_message_keeps_its_own_trace() {
    let (collector, endpoint, stop_collector) = Collector::start().await;
    let p = Platform::builder()
        .worker_binary(env!("CARGO_BIN_EXE_worker"))
        .start()
        .await
        .unwrap();
    p.create_stream().await.unwrap();
    let (t1, s1) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let (t2, s2) = ("1bf7651916cd43dd8448eb211c80319d", "c7ad6b7169203332");
    let (t3, s3) = ("2cf7651916cd43dd8448eb211c80319e", "d7ad6b7169203333");
    let parent = |t: &str, s: &str| format!("00-{t}-{s}-01");
    let (p1, p2, p3) = (parent(t1, s1), parent(t2, s2), parent(t3, s3));

    // A message whose events all come from one request: the batch continues its trace.
    let one_request = events("one", 0..2);
    publish_batch(
        &p,
        &[(one_request[0].clone(), &p1), (one_request[1].clone(), &p1)],
    )
    .await;
    let (mut worker, worker_port) = p
        .start_worker_process(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("WORKER_CONCURRENCY", "1"),
        ])
        .unwrap();
    p.wait_ready(worker_port).await.unwrap();
    p.wait_rows(2).await.unwrap();
    // Then one of two requests, the second's event poison: the batch links to both, the
    // dead letter's span to the poison event's own trace.
    let mut poison = testkit::facebook_top("poison", "2026-03-01T10:00:00Z", "u", "Chile");
    poison["data"]["user"]["age"] = serde_json::json!("old");
    publish_batch(&p, &[(events("two", 0..1)[0].clone(), &p2), (poison, &p3)]).await;
    p.wait_rows(3).await.unwrap();
    testkit::eventually("the dead letter", testkit::WAIT, || async {
        (p.dead_letters().await.ok()?.len() == 1).then_some(())
    })
    .await
    .unwrap();

    worker.signal("TERM").unwrap();
    let status = worker.wait_exit(Duration::from_secs(30)).await.unwrap();
    assert!(status.success(), "worker exited with {status}");
    let spans = collector.spans();
    let _ = stop_collector.send(());

    let first = one(&spans, "worker", "batch", |s| s.trace_id == t1);
    assert_eq!(first.parent_span_id, s1, "a child of the request's span");
    assert!(first.links.is_empty(), "{first:?}");
    let second = one(&spans, "worker", "batch", |s| !s.links.is_empty());
    let mut links = second.links.clone();
    links.sort();
    assert_eq!(
        links,
        [
            (t2.to_owned(), s2.to_owned()),
            (t3.to_owned(), s3.to_owned())
        ]
    );
    let dlq = one(&spans, "worker", "dlq publish", |_| true);
    assert_eq!(dlq.parent_span_id, second.span_id);
    assert_eq!(dlq.links, [(t3.to_owned(), s3.to_owned())]);
}
