//! The consume loop: pull a batch, hand it to a bounded set of insert tasks, ack every
//! stored or duplicate event after the commit, nak transient failures with a delay, and
//! dead-letter what can never be stored.
//!
//! Each batch is one pull request (`expires` = the linger time). A paused worker (database
//! down, shutting down) therefore has no pull outstanding and receives nothing, so an
//! outage costs no delivery attempts and nothing sits in a client buffer until `ack_wait`.

mod handle;
mod ledger;
mod pull;
mod unpack;

use crate::dlq::DeadLetters;
use crate::gate::DbGate;
use crate::store;
use async_nats::header::{HeaderName, NATS_MESSAGE_ID};
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use deadpool_postgres::Pool;
use futures::FutureExt;
use service_kit::error::error_text;
use service_kit::telemetry::{TARGET, propagation};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// The events stream's subject prefix: a dead-lettered event of a multi-event message
    /// keeps the subject a single event of it would have had (`<prefix>.<source>.<type>`).
    pub subject_prefix: String,
    /// Test failpoint (`WORKER_TEST_PANIC_EVENT_ID`): this message id panics.
    pub panic_event_id: Option<String>,
    /// Events per message in the latest pull, rounded up (1 until then): a pull asks for
    /// `WORKER_BATCH_SIZE` events' worth of messages, so multi-event messages do not
    /// multiply a transaction's size and the memory it holds.
    pub events_per_message: AtomicUsize,
    /// `EVENTS_RETENTION_DAYS`: an event older than its horizon is dead-lettered as
    /// [`EXPIRED`], since its day is dropped or about to be.
    pub retention: Option<crate::partitions::Retention>,
}

impl Ctx {
    /// How many messages the next pull asks for: `batch_size` events at the latest
    /// pull's events per message, at least one.
    fn pull_size(&self, batch_size: usize) -> usize {
        (batch_size / self.events_per_message.load(Ordering::Relaxed).max(1)).max(1)
    }
}

/// The `reason` labels of `worker_events_failed_total` (events not stored this time; they
/// are retried).
pub const FAILURE_REASONS: [&str; 3] = ["database_unavailable", "dlq_unavailable", "panicked"];

/// The `reason` labels of `worker_events_dlq_total`.
pub const DLQ_REASONS: [&str; 5] = [
    "undecodable",
    "invalid_event",
    EXPIRED,
    store::REFUSED_BY_DATABASE,
    MAX_DELIVER_EXCEEDED,
];

/// The dead-letter reason of an event older than the retention horizon.
pub(crate) const EXPIRED: &str = "expired";

pub(crate) const MAX_DELIVER_EXCEEDED: &str = "max_deliver_exceeded";

/// Registers the failure counters at zero, so that `rate()` and alerts see the first
/// failure, and dashboards show 0 rather than "no data" on a healthy system.
pub fn register_metrics() {
    for reason in FAILURE_REASONS {
        metrics::counter!("worker_events_failed_total", "reason" => reason).increment(0);
    }
    for reason in DLQ_REASONS {
        metrics::counter!("worker_events_dlq_total", "reason" => reason).increment(0);
    }
    for encoding in unpack::ENCODINGS {
        metrics::counter!("worker_messages_received_total", "encoding" => encoding).increment(0);
    }
    metrics::counter!(crate::compactor::ERRORS).increment(0);
    metrics::counter!(crate::partitions::ERRORS).increment(0);
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
    pub fn consumer_config(&self) -> jetstream::consumer::pull::Config {
        jetstream::consumer::pull::Config {
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

        let max_bytes =
            pull::pull_bytes(settings.batch_size, js.client().server_info().max_payload);
        match pull::fetch(
            &js,
            &current,
            ctx.pull_size(settings.batch_size),
            max_bytes,
            settings.linger,
        )
        .await
        {
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
                let bytes: usize = batch.iter().map(|m| m.payload.len()).sum();
                metrics::histogram!("worker_pull_bytes").record(bytes as f64);
                last_message = Instant::now();
                backoff = Duration::from_millis(100);
                tasks.spawn(process(ctx.clone(), batch, settings.batch_size, permit));
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

/// Decodes, inserts, acks and dead-letters one pull, within its `batch` span, in
/// transactions of at most `batch_size` events.
///
/// Nothing reachable from a message should panic; if something does, the panic is caught
/// here rather than losing the task's messages until `ack_wait`. What the batch did before
/// is unknown, so each message is processed again alone (a row stored or a message acked
/// already is deduplicated): its batch-mates go on, and only a message that panics alone
/// is nak'd, to be dead-lettered after `NATS_MAX_DELIVER` deliveries.
async fn process(
    ctx: Arc<Ctx>,
    messages: Vec<jetstream::Message>,
    batch_size: usize,
    _permit: OwnedSemaphorePermit,
) {
    let unpacked: Vec<unpack::Unpacked<'_>> = messages.iter().map(unpack::unpack).collect();
    count_received(&ctx, &messages, &unpacked);
    let span = batch_span(&unpacked);
    let mut start = 0;
    for end in transaction_ends(unpacked.iter().map(unpack::Unpacked::len), batch_size) {
        let (chunk, events) = (&messages[start..end], &unpacked[start..end]);
        process_transaction(&ctx, chunk, events, &span).await;
        start = end;
    }
}

/// Where a pull is cut into transactions of at most `batch_size` events, whole messages
/// each (a message holding more stands alone): the pull before may have held fewer events
/// per message than this one, so it may have asked for too many.
fn transaction_ends(events: impl IntoIterator<Item = usize>, batch_size: usize) -> Vec<usize> {
    let mut ends = Vec::new();
    let (mut i, mut open) = (0, 0);
    for n in events {
        if open > 0 && open + n > batch_size {
            ends.push(i);
            open = 0;
        }
        open += n;
        i += 1;
    }
    if i > 0 {
        ends.push(i);
    }
    ends
}

/// One transaction's messages; a panic is caught and its messages tried one by one.
async fn process_transaction(
    ctx: &Ctx,
    messages: &[jetstream::Message],
    unpacked: &[unpack::Unpacked<'_>],
    span: &tracing::Span,
) {
    let Err(panic) =
        caught(handle::process_batch(ctx, messages, unpacked).instrument(span.clone())).await
    else {
        return;
    };
    tracing::error!(
        panic = %panic.message,
        messages = messages.len(),
        "Batch processing panicked; processing its messages one by one"
    );
    for (m, events) in messages.iter().zip(unpacked) {
        let one = std::slice::from_ref(m);
        let work = handle::process_batch(ctx, one, std::slice::from_ref(events));
        if let Err(panic) = caught(work.instrument(span.clone())).await {
            metrics::counter!("worker_events_failed_total", "reason" => "panicked")
                .increment(events.len() as u64);
            let correlation_ids: std::collections::BTreeSet<&str> = match events {
                unpack::Unpacked::Events(events) => {
                    events.iter().map(|e| e.correlation_id.as_ref()).collect()
                }
                unpack::Unpacked::Unreadable(_) => Default::default(),
            };
            tracing::error!(
                panic = %panic.message,
                ?correlation_ids,
                message_id = header(m, NATS_MESSAGE_ID).unwrap_or(""),
                subject = %m.subject,
                "Message panicked the worker; it will be redelivered"
            );
            let _ = m
                .ack_with(AckKind::Nak(Some(retry_delay(delivered(m)))))
                .await;
        }
    }
}

/// Counts what a pull delivered: messages by encoding, and the events they hold (an
/// unreadable message counts as one, as its dead letter does); sizes the next pull.
fn count_received(ctx: &Ctx, messages: &[jetstream::Message], unpacked: &[unpack::Unpacked<'_>]) {
    let mut by_encoding = [0u64; unpack::ENCODINGS.len()];
    for m in messages {
        let encoding = unpack::encoding(m.headers.as_ref());
        if let Some(i) = unpack::ENCODINGS.iter().position(|e| *e == encoding) {
            by_encoding[i] += 1;
        }
    }
    for (encoding, n) in unpack::ENCODINGS.iter().zip(by_encoding) {
        if n > 0 {
            metrics::counter!("worker_messages_received_total", "encoding" => *encoding)
                .increment(n);
        }
    }
    let events: usize = unpacked.iter().map(unpack::Unpacked::len).sum();
    metrics::counter!("worker_events_received_total").increment(events as u64);
    ctx.events_per_message.store(
        events.div_ceil(messages.len().max(1)).max(1),
        Ordering::Relaxed,
    );
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
/// child of the trace its events carry when they all carry the same one (a batch from
/// one request), else a trace of its own linked to each.
fn batch_span(unpacked: &[unpack::Unpacked<'_>]) -> tracing::Span {
    let span = tracing::info_span!(
        target: TARGET,
        "batch",
        otel.kind = "consumer",
        messaging.system = "nats",
        messaging.operation.type = "process",
        messaging.batch.message_count = unpacked.len(),
        otel.status_code = tracing::field::Empty,
    );
    if !span.is_disabled() {
        let traces: Vec<_> = unpacked
            .iter()
            .filter_map(|u| match u {
                unpack::Unpacked::Events(events) => Some(events),
                unpack::Unpacked::Unreadable(_) => None,
            })
            .flatten()
            .map(unpack::Event::trace_headers)
            .collect();
        propagation::follow_messages(&span, traces.iter().map(Option::as_ref));
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pull_is_cut_into_transactions_of_whole_messages_within_the_batch_size() {
        assert_eq!(transaction_ends([1; 5], 1000), [5]);
        assert_eq!(transaction_ends([100, 100, 100, 1, 1], 250), [2, 5]);
        assert_eq!(transaction_ends([300, 100, 400, 1], 250), [1, 2, 3, 4]);
        assert_eq!(transaction_ends([], 10), Vec::<usize>::new());
    }

    #[test]
    fn retry_delay_doubles_up_to_thirty_seconds() {
        let secs: Vec<u64> = (1..=8).map(|d| retry_delay(d).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
    }
}
