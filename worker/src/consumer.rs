//! The consume loop: pull a batch, hand it to a bounded set of insert tasks, ack every
//! stored or duplicate event after the commit, nak transient failures with a delay, and
//! dead-letter what can never be stored.
//!
//! Each batch is one pull request (`expires` = the linger time). A paused worker (database
//! down, shutting down) therefore has no pull outstanding and receives nothing, so an
//! outage costs no delivery attempts and nothing sits in a client buffer until `ack_wait`.

use crate::dlq::DeadLetters;
use crate::gate::DbGate;
use crate::store::{self, Rejection};
use async_nats::header::{HeaderName, NATS_MESSAGE_ID};
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer, consumer::pull};
use deadpool_postgres::Pool;
use futures::{FutureExt, StreamExt};
use service_kit::db::error_text;
use service_kit::stream::{CORRELATION_HEADER, INGESTED_AT_HEADER};
use service_kit::telemetry::{TARGET, propagation};
use shared_events::Source;
use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

/// What the insert tasks share.
#[derive(Debug)]
pub struct Ctx {
    pub pool: Pool,
    pub dlq: DeadLetters,
    pub gate: DbGate,
    /// Deliveries after which a message is dead-lettered instead of retried.
    pub max_deliver: i64,
    /// Users' keys already committed (`store::KeyCache`).
    pub keys: store::KeyCache,
    /// Test failpoint (`WORKER_TEST_PANIC_EVENT_ID`): this message id panics.
    pub panic_event_id: Option<String>,
}

/// The `reason` labels of `worker_events_failed_total` (events not stored this time; they
/// are retried).
pub const FAILURE_REASONS: [&str; 3] = ["database_unavailable", "dlq_unavailable", "panicked"];

/// The `reason` labels of `worker_events_dlq_total`.
pub const DLQ_REASONS: [&str; 4] = [
    "undecodable",
    "invalid_event",
    store::REFUSED_BY_DATABASE,
    MAX_DELIVER_EXCEEDED,
];

const MAX_DELIVER_EXCEEDED: &str = "max_deliver_exceeded";

/// Registers the failure counters at zero, so that `rate()` and alerts see the first
/// failure, and dashboards show 0 rather than "no data" on a healthy system.
pub fn register_metrics() {
    for reason in FAILURE_REASONS {
        metrics::counter!("worker_events_failed_total", "reason" => reason).increment(0);
    }
    for reason in DLQ_REASONS {
        metrics::counter!("worker_events_dlq_total", "reason" => reason).increment(0);
    }
    metrics::counter!(crate::compactor::ERRORS).increment(0);
}

/// The consumer's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub stream: String,
    pub durable: String,
    pub batch_size: usize,
    pub linger: Duration,
    pub max_ack_pending: usize,
    pub ack_wait: Duration,
    pub concurrency: usize,
}

impl Settings {
    /// The durable pull consumer every replica shares. The broker's own `max_deliver` is
    /// unlimited on purpose: the worker counts deliveries itself and dead-letters at
    /// `NATS_MAX_DELIVER`, so an exhausted message always lands in the DLQ instead of
    /// being parked silently by the broker.
    pub fn consumer_config(&self) -> pull::Config {
        pull::Config {
            durable_name: Some(self.durable.clone()),
            description: Some("Stores events in PostgreSQL".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_deliver: -1,
            max_ack_pending: self.max_ack_pending as i64,
            ..Default::default()
        }
    }
}

/// Why the durable consumer is not available (NATS down, the stream missing): the
/// consume loop retries with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("cannot open stream {stream}")]
    Stream {
        stream: String,
        #[source]
        source: jetstream::context::GetStreamError,
    },
    #[error("cannot get or create consumer {durable}")]
    Consumer {
        durable: String,
        #[source]
        source: jetstream::stream::ConsumerError,
    },
}

/// Gets (or creates) the durable consumer.
pub async fn ensure_consumer(
    js: &jetstream::Context,
    settings: &Settings,
) -> Result<PullConsumer, ConsumerError> {
    let stream = js
        .get_stream(&settings.stream)
        .await
        .map_err(|source| ConsumerError::Stream {
            stream: settings.stream.clone(),
            source,
        })?;
    stream
        .get_or_create_consumer(&settings.durable, settings.consumer_config())
        .await
        .map_err(|source| ConsumerError::Consumer {
            durable: settings.durable.clone(),
            source,
        })
}

/// Runs until `stop` turns true, then finishes, commits and acks the batches in flight.
pub async fn run(
    js: jetstream::Context,
    settings: Settings,
    ctx: Arc<Ctx>,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(settings.concurrency));
    let mut tasks = JoinSet::new();
    let mut consumer: Option<PullConsumer> = None;
    let mut backoff = Duration::from_millis(100);
    let mut last_message = Instant::now();
    let mut last_watchdog = Instant::now();

    loop {
        while let Some(done) = tasks.try_join_next() {
            if let Err(error) = done {
                tracing::error!(%error, "Batch task failed");
            }
        }
        if *stop.borrow() {
            break;
        }
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.changed() => break,
        };
        tokio::select! {
            () = ctx.gate.wait_open() => {}
            _ = stop.changed() => break,
        }
        let current = match &consumer {
            Some(c) => c.clone(),
            None => match ensure_consumer(&js, &settings).await {
                Ok(c) => {
                    tracing::info!(consumer = %settings.durable, "Consuming");
                    consumer = Some(c.clone());
                    backoff = Duration::from_millis(100);
                    c
                }
                Err(error) => {
                    let error = error_text(&error);
                    tracing::warn!(%error, retry_in = ?backoff, "Consumer not available");
                    pause(&mut stop, &mut backoff).await;
                    continue;
                }
            },
        };

        match fetch(&current, settings.batch_size, settings.linger).await {
            Ok(batch) if batch.is_empty() => {
                drop(permit);
                // Watchdog: an empty pull while the consumer reports pending messages, for
                // long, means delivery stalled (or the consumer vanished): rebuild it.
                if last_message.elapsed() > Duration::from_secs(10)
                    && last_watchdog.elapsed() > Duration::from_secs(10)
                {
                    last_watchdog = Instant::now();
                    match current.get_info().await {
                        Ok(info)
                            if info.num_pending > 0
                                && info.num_ack_pending < settings.max_ack_pending =>
                        {
                            tracing::warn!(
                                pending = info.num_pending,
                                "Pulls return nothing while messages are pending; rebuilding the consumer"
                            );
                            consumer = None;
                        }
                        Ok(_) => {}
                        Err(error) => {
                            let error = error_text(&error);
                            tracing::warn!(%error, "Consumer info failed; recreating the consumer");
                            consumer = None;
                        }
                    }
                }
            }
            Ok(batch) => {
                last_message = Instant::now();
                backoff = Duration::from_millis(100);
                metrics::counter!("worker_events_received_total").increment(batch.len() as u64);
                tasks.spawn(process(ctx.clone(), batch, permit));
            }
            Err(error) => {
                drop(permit);
                let error = error_text(&error);
                tracing::warn!(%error, retry_in = ?backoff, "Pull failed; recreating the consumer");
                consumer = None;
                pause(&mut stop, &mut backoff).await;
            }
        }
    }

    let in_flight = tasks.len();
    if in_flight > 0 {
        tracing::info!(batches = in_flight, "Finishing batches in flight");
    }
    while let Some(done) = tasks.join_next().await {
        if let Err(error) = done {
            tracing::error!(%error, "Batch task failed");
        }
    }
    tracing::info!("Consumer stopped");
}

async fn pause(stop: &mut watch::Receiver<bool>, backoff: &mut Duration) {
    tokio::select! {
        () = tokio::time::sleep(*backoff) => {}
        _ = stop.changed() => {}
    }
    *backoff = (*backoff * 2).min(Duration::from_secs(5));
}

/// Why a pull returned nothing: the consumer is rebuilt and the pull retried.
#[derive(Debug, thiserror::Error)]
enum PullError {
    #[error("cannot start the pull")]
    Start(#[source] pull::BatchError),
    #[error("the pull failed")]
    Receive(#[source] async_nats::Error),
}

/// How long after a pull's expiry we keep reading what the server already sent.
const PULL_GRACE: Duration = Duration::from_millis(200);

/// One pull: up to `max` messages, waiting at most `linger` for the batch to fill.
///
/// The server ends the pull at `linger`. When it ends one that delivered part of a batch,
/// nats-server 2.9 sends no 408 status, and async-nats's batch stream then waits for its
/// own fallback timer (expires + 5 s): under steady, moderate traffic the worker stored
/// nothing for stretches of 5 s (the end-to-end benchmark showed 46 s idle in 60 s). So
/// reading stops `PULL_GRACE` after the expiry; the server sends nothing for this pull
/// after it, and anything that would still arrive is redelivered after `ack_wait`.
async fn fetch(
    consumer: &PullConsumer,
    max: usize,
    linger: Duration,
) -> Result<Vec<jetstream::Message>, PullError> {
    let mut batch = consumer
        .batch()
        .max_messages(max)
        .expires(linger)
        .messages()
        .await
        .map_err(PullError::Start)?;
    let deadline = tokio::time::Instant::now() + linger + PULL_GRACE;
    let mut messages = Vec::with_capacity(max.min(1024));
    while let Ok(Some(next)) = tokio::time::timeout_at(deadline, batch.next()).await {
        match next {
            Ok(m) => messages.push(m),
            Err(e) if messages.is_empty() => return Err(PullError::Receive(e)),
            Err(error) => {
                let error = error_text(&*error);
                tracing::warn!(%error, "Pull ended early");
                break;
            }
        }
    }
    Ok(messages)
}

fn header(m: &jetstream::Message, name: HeaderName) -> Option<&str> {
    m.headers.as_ref()?.get(name).map(|v| v.as_str())
}

fn delivered(m: &jetstream::Message) -> i64 {
    m.info().map(|i| i.delivered).unwrap_or(1)
}

/// Redelivery delay after a transient failure: 1 s, 2 s, 4 s ... up to 30 s.
fn retry_delay(delivered: i64) -> Duration {
    let exp = delivered.clamp(1, 6) as u32 - 1;
    Duration::from_secs(1 << exp).min(Duration::from_secs(30))
}

/// Decodes, inserts, acks and dead-letters one batch, within its `batch` span.
///
/// Nothing reachable from a message should panic; if something does, the panic is caught
/// here rather than losing the task's messages until `ack_wait`. What the batch did before
/// is unknown, so each message is processed again alone (a row stored or a message acked
/// already is deduplicated): its batch-mates go on, and only a message that panics alone
/// is nak'd, to be dead-lettered after `NATS_MAX_DELIVER` deliveries.
async fn process(ctx: Arc<Ctx>, messages: Vec<jetstream::Message>, _permit: OwnedSemaphorePermit) {
    let span = batch_span(&messages);
    let Err(panic) = caught(process_batch(&ctx, &messages).instrument(span.clone())).await else {
        return;
    };
    tracing::error!(
        panic = %panic.message,
        events = messages.len(),
        "Batch processing panicked; processing its messages one by one"
    );
    for m in &messages {
        let one = std::slice::from_ref(m);
        if let Err(panic) = caught(process_batch(&ctx, one).instrument(span.clone())).await {
            metrics::counter!("worker_events_failed_total", "reason" => "panicked").increment(1);
            tracing::error!(
                panic = %panic.message,
                correlation_id = header(m, CORRELATION_HEADER).unwrap_or(""),
                event_id = header(m, NATS_MESSAGE_ID).unwrap_or(""),
                subject = %m.subject,
                "Event panicked the worker; it will be redelivered"
            );
            let _ = m
                .ack_with(AckKind::Nak(Some(retry_delay(delivered(m)))))
                .await;
        }
    }
}

/// A panic caught while processing messages. A panic's payload is text (or nothing),
/// not an error value, so its message is all there is to keep.
#[derive(Debug, thiserror::Error)]
#[error("panicked: {message}")]
struct Panicked {
    message: String,
}

/// Runs `work`, turning a panic into its message.
async fn caught(work: impl std::future::Future<Output = ()>) -> Result<(), Panicked> {
    AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .map_err(|panic| Panicked {
            message: panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned()),
        })
}

/// The batch's span, for trace export only (disabled, and free, when export is off): the
/// child of the trace its messages carry when they all carry the same one (a batch from
/// one request), else a trace of its own linked to each.
fn batch_span(messages: &[jetstream::Message]) -> tracing::Span {
    let span = tracing::info_span!(
        target: TARGET,
        "batch",
        otel.kind = "consumer",
        messaging.system = "nats",
        messaging.operation.type = "process",
        messaging.batch.message_count = messages.len(),
        otel.status_code = tracing::field::Empty,
    );
    propagation::follow_messages(&span, messages.iter().map(|m| m.headers.as_ref()));
    span
}

async fn process_batch(ctx: &Ctx, messages: &[jetstream::Message]) {
    let started = Instant::now();
    metrics::histogram!("worker_batch_size").record(messages.len() as f64);

    let mut rows = Vec::with_capacity(messages.len());
    let mut row_message = Vec::with_capacity(messages.len());
    let mut dead: Vec<(usize, Rejection)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let attempts = delivered(m);
        if attempts > ctx.max_deliver {
            dead.push((
                i,
                Rejection::new(
                    MAX_DELIVER_EXCEEDED,
                    format!("delivered {attempts} times without being stored"),
                ),
            ));
            continue;
        }
        if let Some(id) = &ctx.panic_event_id
            && header(m, NATS_MESSAGE_ID) == Some(id.as_str())
        {
            panic!("test failpoint: message {id}");
        }
        let ingested_at = header(m, INGESTED_AT_HEADER)
            .and_then(|v| v.parse::<i128>().ok())
            .and_then(|n| time::OffsetDateTime::from_unix_timestamp_nanos(n).ok());
        match store::decode(&m.payload, ingested_at) {
            Ok(row) => {
                rows.push(row);
                row_message.push(i);
            }
            Err(rejection) => dead.push((i, rejection)),
        }
    }

    match store::insert_batch(&ctx.pool, &ctx.keys, &rows).await {
        Ok(outcome) => {
            let committed = time::OffsetDateTime::now_utc();
            let refused: HashSet<usize> = outcome.rejected.iter().map(|(k, _)| *k).collect();
            tracing::debug!(
                events = rows.len() - refused.len(),
                correlation_ids = ?(0..rows.len())
                    .filter(|k| !refused.contains(k))
                    .filter_map(|k| header(&messages[row_message[k]], CORRELATION_HEADER))
                    .collect::<std::collections::BTreeSet<_>>(),
                "Batch committed"
            );
            let mut duplicates = 0u64;
            let mut processed = [0u64; Source::ALL.len()];
            // Looked up once per batch, not once per event.
            let latency = metrics::histogram!("worker_event_latency_seconds");
            for (k, row) in rows.iter().enumerate() {
                if refused.contains(&k) {
                    continue;
                }
                if outcome.inserted[k] {
                    processed[row.source as usize] += 1;
                    if let Some(at) = row.ingested_at {
                        latency.record((committed - at).as_seconds_f64().max(0.0));
                    }
                } else {
                    duplicates += 1;
                }
                // After the commit: a lost ack only means a redelivery, which the
                // unique key turns into a duplicate.
                if let Err(error) = messages[row_message[k]].ack().await {
                    tracing::warn!(error = %error_text(&*error), event_id = %row.event_id, "Ack failed; the event will be redelivered and deduplicated");
                }
            }
            for source in Source::ALL {
                metrics::counter!("worker_events_processed_total", "source" => source.as_str())
                    .increment(processed[source as usize]);
            }
            metrics::counter!("worker_events_duplicate_total").increment(duplicates);
            for (k, rejection) in outcome.rejected {
                dead.push((row_message[k], rejection));
            }
        }
        Err(error) => {
            tracing::Span::current().record("otel.status_code", "ERROR");
            let error = error_text(&error);
            ctx.gate.close(&error);
            metrics::counter!("worker_events_failed_total", "reason" => "database_unavailable")
                .increment(rows.len() as u64);
            tracing::warn!(%error, events = rows.len(), "Batch not stored; will be redelivered");
            for &i in &row_message {
                let m = &messages[i];
                let _ = m
                    .ack_with(AckKind::Nak(Some(retry_delay(delivered(m)))))
                    .await;
            }
        }
    }

    for (i, rejection) in dead {
        dead_letter(ctx, &messages[i], rejection).await;
    }
    metrics::histogram!("worker_batch_duration_seconds").record(started.elapsed().as_secs_f64());
}

async fn dead_letter(ctx: &Ctx, m: &jetstream::Message, rejection: Rejection) {
    let correlation_id = header(m, CORRELATION_HEADER).unwrap_or("");
    let event_id = header(m, NATS_MESSAGE_ID).unwrap_or("");
    // A child of the batch span, linked to the message's own trace. The dead letter keeps
    // the message's headers, `traceparent` included: it stays in the event's trace.
    let span = tracing::info_span!(
        target: TARGET,
        "dlq publish",
        otel.kind = "producer",
        messaging.system = "nats",
        messaging.operation.type = "send",
        reason = rejection.reason,
        otel.status_code = tracing::field::Empty,
    );
    propagation::link_message(&span, m.headers.as_ref());
    let published = ctx
        .dlq
        .publish(m, &rejection)
        .instrument(span.clone())
        .await;
    if published.is_err() {
        span.record("otel.status_code", "ERROR");
    }
    match published {
        Ok(()) => {
            metrics::counter!("worker_events_dlq_total", "reason" => rejection.reason).increment(1);
            tracing::warn!(
                correlation_id,
                event_id,
                subject = %m.subject,
                reason = rejection.reason,
                detail = %rejection.detail,
                "Event dead-lettered"
            );
            if let Err(error) = m.ack_with(AckKind::Term).await {
                tracing::warn!(error = %error_text(&*error), correlation_id, "Term failed; the DLQ deduplicates the redelivery");
            }
        }
        Err(error) => {
            metrics::counter!("worker_events_failed_total", "reason" => "dlq_unavailable")
                .increment(1);
            let error = error_text(&error);
            tracing::error!(%error, correlation_id, event_id, "Cannot dead-letter; will retry");
            let _ = m
                .ack_with(AckKind::Nak(Some(retry_delay(delivered(m)))))
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_up_to_thirty_seconds() {
        let secs: Vec<u64> = (1..=8).map(|d| retry_delay(d).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
    }
}
