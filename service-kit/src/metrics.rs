//! The Prometheus recorder (one per process), histogram buckets, HTTP request metrics.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Latency buckets (seconds): sub-millisecond HTTP answers up to multi-second batches.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Ingest-to-commit latency buckets (seconds): the worker's linger (50 ms) up to the
/// minutes a backlog takes to drain after an outage.
pub const END_TO_END_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Batch-size buckets (events per worker batch, events per ingestion message).
pub const SIZE_BUCKETS: &[f64] = &[1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0];

/// Byte buckets (payload bytes per worker pull): 16 KiB to 16 MiB.
pub const BYTE_BUCKETS: &[f64] = &[
    16384.0, 65536.0, 262144.0, 524288.0, 1048576.0, 2097152.0, 4194304.0, 8388608.0, 16777216.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder on first call and returns a handle that renders
/// the text format. Later calls (several services in one test process) share it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("worker_batch_size".into()),
                        SIZE_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("ingestion_message_events".into()),
                        SIZE_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("worker_pull_bytes".into()),
                        BYTE_BUCKETS,
                    )
                })
                // Full matchers are tried before suffix matchers.
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("worker_event_latency_seconds".into()),
                        END_TO_END_BUCKETS,
                    )
                });
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                Err(error) => {
                    tracing::error!(%error, "Histogram buckets refused; using summaries");
                    PrometheusBuilder::new().build_recorder()
                }
            };
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("A metrics recorder was already installed");
            }
            handle
        })
        .clone()
}

/// Keeps histogram storage bounded between scrapes and refreshes the process metrics
/// (`process_resident_memory_bytes`, `process_cpu_seconds_total`, `process_open_fds`,
/// `process_threads`, ... of the `metrics-process` crate) every second; run once per
/// process. The CPU counter is exported with sub-second precision (as a gauge type, which
/// `rate()` accepts) instead of the crate's whole-second counter.
pub fn spawn_upkeep(handle: PrometheusHandle) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let process = metrics_process::Collector::default();
        process.describe();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for n in 0u64.. {
            tick.tick().await;
            process.collect();
            if n % 5 == 0 {
                handle.run_upkeep();
            }
        }
    })
}

/// Axum middleware recording `http_requests_total` and `http_request_duration_seconds`
/// by route template (never the raw path, which would make labels unbounded).
pub async fn track_http(State(service): State<&'static str>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total",
        "service" => service, "route" => route.clone(), "method" => method, "status" => status)
    .increment(1);
    metrics::histogram!("http_request_duration_seconds", "service" => service, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
