//! Logging and tracing.
//!
//! Logs: `tracing` events as JSON lines in production (`LOG_FORMAT=json`) or text, filtered
//! by `RUST_LOG`.
//!
//! Traces (optional): with `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are exported to an
//! OpenTelemetry collector over OTLP/gRPC, and [`propagation`] carries the W3C trace context
//! in NATS headers, so one trace runs from the webhook through JetStream to the insert.
//!
//! Spans meant for traces only use the target [`TARGET`]. The log layer never sees them, so
//! log lines keep exactly the fields and current span they always had; the trace layer sees
//! only them (plus warnings and errors, which become events of the span they happen in), so
//! trace export does not depend on `RUST_LOG`. With export off no layer wants them and
//! tracing's callsite cache disables them: such a span costs an atomic load.

pub mod propagation;

use crate::config::LogFormat;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::time::Duration;
use tracing::{Level, Metadata};
use tracing_subscriber::filter::{EnvFilter, FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::{LookupSpan, Registry};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

/// Target of the spans that exist for trace export only (`tracing::info_span!(target:
/// TARGET, "publish")`).
pub const TARGET: &str = "otel";

/// How long [`Telemetry::shutdown`] waits for the last spans to reach the collector.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// OpenTelemetry trace export, from the standard environment variables. Flattened into each
/// service's configuration. The SDK also reads the other standard variables itself:
/// `OTEL_TRACES_SAMPLER` (+ `_ARG`), `OTEL_BSP_*` (batching), `OTEL_EXPORTER_OTLP_TIMEOUT`,
/// `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_RESOURCE_ATTRIBUTES`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TraceArgs {
    /// OpenTelemetry collector receiving traces over OTLP/gRPC (`http://collector:4317`);
    /// unset or empty = no trace export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_parser = crate::config::otlp_endpoint)]
    pub otel_exporter_otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans (unset or empty: the program's name).
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    pub otel_service_name: Option<String>,
}

impl TraceArgs {
    /// The collector to export to; `None` when unset or empty (export off).
    pub fn endpoint(&self) -> Option<&str> {
        self.otel_exporter_otlp_endpoint
            .as_deref()
            .filter(|e| !e.trim().is_empty())
    }

    /// `OTEL_SERVICE_NAME` when set and not empty, else `default`.
    pub fn service_name<'a>(&'a self, default: &'a str) -> &'a str {
        self.otel_service_name
            .as_deref()
            .filter(|name| !name.trim().is_empty())
            .unwrap_or(default)
    }
}

/// The trace exporter could not be built.
#[derive(Debug, thiserror::Error)]
#[error("OTEL_EXPORTER_OTLP_ENDPOINT: cannot build the trace exporter")]
pub struct TelemetryError(#[source] opentelemetry_otlp::ExporterBuildError);

/// What [`init_with_traces`] installed. Call [`Telemetry::shutdown`] on exit: spans are
/// exported in batches, and the last ones are still buffered.
#[derive(Debug)]
#[must_use = "call shutdown() on exit to export the spans still buffered"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported (the endpoint is set and this call installed the
    /// global subscriber).
    pub fn is_exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still buffered (waiting at most 5 s for the collector), then stops
    /// the exporter. Nothing to do when export is off.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The SDK's shutdown blocks the calling thread until its batch thread has sent the
        // last batch, whose gRPC I/O runs on this runtime: keep the runtime's threads free.
        let done =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT))
                .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "Trace export did not shut down cleanly"),
            Err(error) => tracing::warn!(%error, "Trace export shutdown failed"),
        }
    }
}

/// Installs the global subscriber for logs only. `filter` is a `RUST_LOG` directive
/// (`info`, `worker=debug,info`). A second call (tests start several services in one
/// process) is a no-op.
pub fn init(format: LogFormat, filter: &str) {
    install(format, filter, None);
}

/// Installs the global subscriber: logs as [`init`], plus trace export when
/// `traces.otel_exporter_otlp_endpoint` is set (`service` names the spans unless
/// `OTEL_SERVICE_NAME` does). Must run inside the Tokio runtime (the gRPC channel lives
/// on it). When a subscriber is already installed, nothing changes and nothing is
/// exported.
pub fn init_with_traces(
    format: LogFormat,
    filter: &str,
    traces: &TraceArgs,
    service: &str,
) -> Result<Telemetry, TelemetryError> {
    let provider = match traces.endpoint() {
        Some(endpoint) => Some(tracer_provider(endpoint, traces.service_name(service))?),
        None => None,
    };
    let installed = install(format, filter, provider.as_ref());
    Ok(Telemetry {
        // Dropping an unused provider stops its batch thread.
        provider: provider.filter(|_| installed),
    })
}

/// The OTLP/gRPC exporter behind the SDK's batch span processor (a thread of its own, so
/// exporting never delays a request or a batch; when the collector is slow, spans beyond its
/// queue are dropped, never awaited).
fn tracer_provider(endpoint: &str, service: &str) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(TelemetryError)?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .build())
}

/// Builds and installs the subscriber; `false` when one was already installed.
fn install(format: LogFormat, filter: &str, provider: Option<&SdkTracerProvider>) -> bool {
    subscriber(format, filter, provider, std::io::stderr)
        .try_init()
        .is_ok()
}

/// The log layer (`RUST_LOG`, never the trace-only spans) beside the trace layer (only
/// them, when a provider is given).
fn subscriber<W>(
    format: LogFormat,
    filter: &str,
    provider: Option<&SdkTracerProvider>,
    writer: W,
) -> impl tracing::Subscriber + Send + Sync + for<'a> LookupSpan<'a>
where
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let env_filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match format {
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(writer)
            .boxed(),
        LogFormat::Text => fmt::layer().with_writer(writer).boxed(),
    }
    .with_filter(filter_fn(|meta| meta.target() != TARGET).and(env_filter));
    // A `Vec`, not an `Option`: an absent `Option` layer declares interest in every
    // callsite, and the registry would then build every trace-only span (a slab slot, its
    // fields, enter and close) for nothing, on every request.
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = vec![logs.boxed()];
    if let Some(provider) = provider {
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer(env!("CARGO_PKG_NAME")))
                .with_filter(filter_fn(exported))
                .boxed(),
        );
    }
    tracing_subscriber::registry().with(layers)
}

/// What the trace layer sees: the trace-only spans, and warnings and errors (recorded as
/// events of the exported span they happen in; outside one they are ignored).
fn exported(meta: &Metadata<'_>) -> bool {
    meta.target() == TARGET || (meta.is_event() && *meta.level() <= Level::WARN)
}

/// Test logging: silent unless `TEST_LOG=1`, then text to stderr.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        init(LogFormat::Text, "info");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::SpanKind;
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SpanData, SpanExporter};
    use std::sync::{Arc, Mutex};

    /// Spans exported, kept in memory.
    #[derive(Debug, Clone, Default)]
    struct Memory(Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Memory {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            if let Ok(mut spans) = self.0.lock() {
                spans.extend(batch);
            }
            Ok(())
        }
    }

    impl Memory {
        fn spans(&self) -> Vec<SpanData> {
            self.0.lock().map(|s| s.clone()).unwrap_or_default()
        }
    }

    /// Log lines written to memory.
    #[derive(Debug, Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut out) = self.0.lock() {
                out.extend_from_slice(buf);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Lines {
        fn json(&self) -> Vec<serde_json::Value> {
            let text = self.0.lock().map(|b| b.clone()).unwrap_or_default();
            String::from_utf8_lossy(&text)
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        }
    }

    /// A request span (logged), a trace-only `webhook` span and a `publish` span under it,
    /// and a warning inside `publish`; returns the trace headers `publish` yields.
    fn a_request() -> Vec<(async_nats::HeaderName, async_nats::HeaderValue)> {
        let request = tracing::info_span!("request", correlation_id = "c-1");
        let _request = request.enter();
        let webhook = tracing::info_span!(target: TARGET, "webhook", otel.kind = "server");
        let _webhook = webhook.enter();
        let publish = tracing::info_span!(target: TARGET, "publish", otel.kind = "producer");
        let _publish = publish.enter();
        tracing::warn!(reason = "puback_timeout", "Events not stored in JetStream");
        propagation::headers(&publish)
    }

    #[test]
    fn an_empty_endpoint_or_service_name_counts_as_unset() {
        let args = |endpoint: Option<&str>, name: Option<&str>| TraceArgs {
            otel_exporter_otlp_endpoint: endpoint.map(str::to_owned),
            otel_service_name: name.map(str::to_owned),
        };
        assert_eq!(args(None, None).endpoint(), None);
        assert_eq!(args(Some(""), None).endpoint(), None);
        assert_eq!(
            args(Some("http://c:4317"), None).endpoint(),
            Some("http://c:4317")
        );
        assert_eq!(args(None, None).service_name("worker"), "worker");
        assert_eq!(args(None, Some("")).service_name("worker"), "worker");
        assert_eq!(args(None, Some("w-eu")).service_name("worker"), "w-eu");
    }

    #[test]
    fn trace_only_spans_are_disabled_when_export_is_off() {
        let off = subscriber(LogFormat::Json, "trace", None, std::io::sink);
        tracing::subscriber::with_default(off, || {
            let trace_only = tracing::info_span!(target: TARGET, "webhook");
            assert!(trace_only.is_disabled(), "built with no layer wanting it");
            let logged = tracing::info_span!("request");
            assert!(!logged.is_disabled(), "the log layer still gets its spans");
        });
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(Memory::default())
            .build();
        let on = subscriber(LogFormat::Json, "error", Some(&provider), std::io::sink);
        tracing::subscriber::with_default(on, || {
            let trace_only = tracing::info_span!(target: TARGET, "webhook");
            assert!(!trace_only.is_disabled(), "exported when export is on");
        });
    }

    #[test]
    fn log_lines_are_the_same_with_trace_export_on() {
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(Memory::default())
            .build();
        let mut lines = Vec::new();
        for provider in [None, Some(&provider)] {
            let out = Lines::default();
            let writer = out.clone();
            let subscriber = subscriber(LogFormat::Json, "info", provider, move || writer.clone());
            tracing::subscriber::with_default(subscriber, a_request);
            let mut json = out.json();
            assert_eq!(json.len(), 1, "{json:?}");
            json[0].as_object_mut().map(|line| line.remove("timestamp"));
            lines.push(json.remove(0));
        }
        assert_eq!(lines[0], lines[1]);
        // The current span of a log line is still the request, with its correlation id.
        assert_eq!(lines[0]["span"]["name"], "request");
        assert_eq!(lines[0]["span"]["correlation_id"], "c-1");
        assert_eq!(lines[0]["reason"], "puback_timeout");
    }

    #[test]
    fn trace_only_spans_are_exported_and_their_context_is_propagated() {
        let memory = Memory::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(memory.clone())
            .build();
        let subscriber = subscriber(LogFormat::Json, "error", Some(&provider), std::io::sink);
        let headers = tracing::subscriber::with_default(subscriber, a_request);

        let spans = memory.spans();
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
        assert_eq!(
            names,
            ["publish", "webhook"],
            "the request span is logs only"
        );
        let (publish, webhook) = (&spans[0], &spans[1]);
        assert_eq!(
            publish.span_context.trace_id(),
            webhook.span_context.trace_id()
        );
        assert_eq!(publish.parent_span_id, webhook.span_context.span_id());
        assert_eq!(publish.span_kind, SpanKind::Producer);
        assert_eq!(webhook.span_kind, SpanKind::Server);
        // The warning became an event of the span it happened in, whatever RUST_LOG says.
        assert!(
            publish
                .events
                .iter()
                .any(|e| e.name == "Events not stored in JetStream")
        );

        let traceparent = headers
            .iter()
            .find(|(name, _)| AsRef::<str>::as_ref(name) == "traceparent")
            .map(|(_, value)| value.as_str().to_owned());
        assert_eq!(
            traceparent,
            Some(format!(
                "00-{}-{}-01",
                publish.span_context.trace_id(),
                publish.span_context.span_id()
            ))
        );
    }
}
