//! The W3C trace context (`traceparent`, `tracestate`) carried across NATS and HTTP, so a
//! trace continues from the producer's request through JetStream into the worker.
//!
//! With trace export off there is no span context to carry: [`headers`] returns nothing
//! (without allocating) and nothing is added to a message.

use async_nats::HeaderMap;
use async_nats::header::{HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Writes into NATS message headers (an `opentelemetry` [`Injector`]). A key or value NATS
/// cannot carry is skipped rather than allowed to panic.
#[derive(Debug)]
pub struct HeaderInjector<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (key.parse::<HeaderName>(), value.parse::<HeaderValue>()) {
            self.0.insert(name, value);
        }
    }
}

/// Reads NATS message headers (an `opentelemetry` [`Extractor`]). NATS header names are
/// case-sensitive; a name written in another case by some other producer is found too.
#[derive(Debug)]
pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let exact = key
            .parse::<HeaderName>()
            .ok()
            .and_then(|name| self.0.get(name));
        exact
            .or_else(|| {
                self.0
                    .iter()
                    .find(|(name, _)| AsRef::<str>::as_ref(*name).eq_ignore_ascii_case(key))
                    .and_then(|(_, values)| values.first())
            })
            .map(HeaderValue::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

/// Reads HTTP request headers (a producer may send its own `traceparent`).
#[derive(Debug)]
pub struct HttpHeaderExtractor<'a>(pub &'a axum::http::HeaderMap);

impl Extractor for HttpHeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Longest `tracestate` carried in a message. W3C allows 32 entries of up to 256 bytes, and
/// the span inherits it from the producer's request: bounded, it cannot push a message past
/// the broker's size limit. A longer one is dropped (`traceparent` alone still links).
pub const MAX_TRACESTATE_BYTES: usize = 512;

/// The trace-context headers (`traceparent`, and `tracestate` when there is one) for
/// messages sent within `span`. Empty, without allocating, when `span` is not exported
/// (trace export off): compute it once per request and add the pairs to every message.
pub fn headers(span: &tracing::Span) -> Vec<(HeaderName, HeaderValue)> {
    if span.is_disabled() {
        return Vec::new();
    }
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return Vec::new();
    }
    let mut map = HeaderMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(&mut map));
    map.iter()
        .filter(|(name, values)| {
            !AsRef::<str>::as_ref(*name).eq_ignore_ascii_case("tracestate")
                || values.iter().map(|v| v.as_str().len()).sum::<usize>() <= MAX_TRACESTATE_BYTES
        })
        .flat_map(|(name, values)| values.iter().map(move |v| (name.clone(), v.clone())))
        .collect()
}

/// Adds the trace context of `span` to `map` (nothing when `span` is not exported).
pub fn inject(span: &tracing::Span, map: &mut HeaderMap) {
    for (name, value) in headers(span) {
        map.insert(name, value);
    }
}

/// The span context a message carries; invalid (`!is_valid()`) when it carries none or a
/// malformed one.
pub fn extract(headers: Option<&HeaderMap>) -> SpanContext {
    match headers {
        Some(headers) => TraceContextPropagator::new()
            .extract(&HeaderExtractor(headers))
            .span()
            .span_context()
            .clone(),
        None => SpanContext::empty_context(),
    }
}

/// The context an HTTP request carries, to parent the server span on (an empty context
/// when it carries none).
pub fn extract_http(headers: &axum::http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HttpHeaderExtractor(headers))
}

/// A context whose parent is the remote span `parent` (to continue a trace received in a
/// message).
pub fn remote_parent(parent: SpanContext) -> Context {
    Context::new().with_remote_span_context(parent)
}

/// Makes `span` (not yet entered) a child of the trace the HTTP request carries, if any.
/// Nothing is read when `span` is not exported.
pub fn continue_http_trace(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    if span.is_disabled() {
        return;
    }
    let parent = extract_http(headers);
    if parent.span().span_context().is_valid() {
        // Fails only for a span already started, which a caller's new span is not.
        let _ = span.set_parent(parent);
    }
}

/// Ties `span` (not yet entered), which handles several messages at once, to the traces
/// they carry: when they all carry the same context, `span` continues that trace as its
/// child; when they carry several, `span` starts a trace of its own with a link to each
/// (the SDK keeps at most 128 links a span). Nothing is read when `span` is not exported,
/// so a batch pays nothing per message with export off.
pub fn follow_messages<'m>(
    span: &tracing::Span,
    messages: impl IntoIterator<Item = Option<&'m HeaderMap>>,
) {
    if span.is_disabled() {
        return;
    }
    let mut seen = std::collections::HashSet::new();
    let mut contexts = Vec::new();
    for headers in messages {
        let context = extract(headers);
        if context.is_valid() && seen.insert((context.trace_id(), context.span_id())) {
            contexts.push(context);
        }
    }
    if let [one] = contexts.as_slice() {
        // Fails only for a span already started, which a caller's new span is not.
        let _ = span.set_parent(remote_parent(one.clone()));
    } else {
        for context in contexts {
            span.add_link(context);
        }
    }
}

/// Links `span` to the trace context one message carries (when it carries one and `span`
/// is exported).
pub fn link_message(span: &tracing::Span, headers: Option<&HeaderMap>) {
    if span.is_disabled() {
        return;
    }
    let context = extract(headers);
    if context.is_valid() {
        span.add_link(context);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};

    fn sample() -> SpanContext {
        SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap_or(TraceId::INVALID),
            SpanId::from_hex("00f067aa0ba902b7").unwrap_or(SpanId::INVALID),
            TraceFlags::SAMPLED,
            true,
            TraceState::from_key_value([("vendor", "abc")]).unwrap_or_default(),
        )
    }

    #[test]
    fn trace_context_survives_a_round_trip_through_nats_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("X-Correlation-ID", "c1");
        let context = remote_parent(sample());
        TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(&mut headers));

        assert_eq!(
            headers.get("traceparent").map(HeaderValue::as_str),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        assert_eq!(
            headers.get("tracestate").map(HeaderValue::as_str),
            Some("vendor=abc")
        );
        assert_eq!(
            headers.get("X-Correlation-ID").map(HeaderValue::as_str),
            Some("c1")
        );
        assert_eq!(extract(Some(&headers)), sample());
    }

    #[test]
    fn a_header_name_in_another_case_is_found() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "TraceParent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
        let found = extract(Some(&headers));
        assert!(found.is_valid());
        assert_eq!(found.trace_id(), sample().trace_id());
    }

    #[test]
    fn missing_or_malformed_context_is_invalid() {
        assert!(!extract(None).is_valid());
        assert!(!extract(Some(&HeaderMap::new())).is_valid());
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", "00-not-a-trace-01");
        assert!(!extract(Some(&headers)).is_valid());
    }

    #[test]
    fn a_span_that_is_not_exported_adds_no_header() {
        // No trace layer installed here (as with OTEL_EXPORTER_OTLP_ENDPOINT unset).
        let span = tracing::info_span!(target: super::super::TARGET, "publish");
        assert!(headers(&span).is_empty());
        let mut map = HeaderMap::new();
        inject(&span, &mut map);
        assert!(map.is_empty());
        assert!(headers(&tracing::Span::none()).is_empty());
    }

    #[test]
    fn http_traceparent_is_extracted() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            "traceparent",
            axum::http::HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        );
        let context = extract_http(&headers);
        assert_eq!(
            context.span().span_context().trace_id(),
            sample().trace_id()
        );
        assert!(
            !extract_http(&axum::http::HeaderMap::new())
                .span()
                .span_context()
                .is_valid()
        );
    }
}
