//! Coalescing: the events of every request, concurrent requests included, packed into as
//! few JetStream messages as the limits allow, because the broker's cost (publish, PubAck,
//! delivery, ack) is paid per message.
//!
//! One task per process owns the open message. A request hands it its validated events
//! and waits for one answer per *part* (the run of its events in one message): the
//! request is answered 202 only when every part's message has its PubAck, and 503 when
//! any of them failed. A message closes at `NATS_MESSAGE_MAX_EVENTS`, before passing
//! `NATS_MESSAGE_MAX_BYTES`, or when its first event has waited `NATS_MESSAGE_LINGER`;
//! it is then sent at once, several messages in flight, and answered when its PubAck comes.

pub mod pack;

use crate::error::{Unstored, WebhookError};
use crate::publish::{Publisher, unavailable};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use pack::{Event, Limits, Open, Packed, RequestMeta};
use service_kit::telemetry::{TARGET, propagation};
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument;

/// Requests queued for the coalescer at most; a request finding the queue full waits for
/// room (every message in flight ends within `NATS_PUBLISH_TIMEOUT`, so the wait is bounded).
const QUEUE: usize = 1024;

/// Messages sent and not yet acknowledged at most; beyond, no new events are taken.
const MAX_IN_FLIGHT: usize = 256;

/// The coalescer's settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub limits: Limits,
    /// Longest a message waits for more events after its first.
    pub linger: Duration,
}

/// What the request learns of one part: how many of its events the part held, and whether
/// JetStream reported the part's message as a duplicate.
type PartOutcome = Result<PartAck, Arc<Unstored>>;

#[derive(Debug, Clone, Copy)]
struct PartAck {
    events: usize,
    duplicate: bool,
}

/// One request's events, handed to the coalescer.
#[derive(Debug)]
struct Submission {
    request: Arc<RequestMeta>,
    events: Vec<Event>,
    /// Room for one answer per event, so answering never waits.
    reply: mpsc::Sender<PartOutcome>,
}

/// Where a message's answer goes: the request of each part, and the part's size.
#[derive(Debug)]
struct Part {
    reply: mpsc::Sender<PartOutcome>,
    events: usize,
}

/// The requests' side: hands events to the coalescer task.
#[derive(Debug, Clone)]
pub struct Coalescer {
    queue: mpsc::Sender<Submission>,
    publisher: Publisher,
}

/// The coalescer task.
#[derive(Debug)]
pub struct Task {
    handle: tokio::task::JoinHandle<()>,
    stop: oneshot::Sender<()>,
}

impl Task {
    /// Stops taking events, sends what is queued or open, and waits (at most `timeout`)
    /// until every message sent has its answer, so no request that got its events in is
    /// left without one. Requests still trying to queue get 503.
    pub async fn stop(self, timeout: Duration) {
        let Task { mut handle, stop } = self;
        let _ = stop.send(());
        if tokio::time::timeout(timeout, &mut handle).await.is_err() {
            tracing::warn!(?timeout, "Messages still unanswered at shutdown");
            handle.abort();
        }
    }
}

impl Coalescer {
    /// Starts the task. Call after `service_kit::metrics::install()`.
    pub fn start(publisher: Publisher, settings: Settings) -> (Self, Task) {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let (stop, stopped) = oneshot::channel();
        let handle = tokio::spawn(run(receiver, stopped, publisher.clone(), settings));
        (Coalescer { queue, publisher }, Task { handle, stop })
    }

    /// Publishes a request's events (each eventId once) and waits until every message
    /// holding any of them has its PubAck. Returns the duplicates ingestion knows of: the
    /// repeats within the request and the events of messages JetStream reported as
    /// duplicates. Any failure fails the whole request (the producer retries it; the
    /// database's unique eventId makes that safe).
    pub async fn publish_all(
        &self,
        events: Vec<Event>,
        correlation_id: &str,
    ) -> Result<usize, WebhookError> {
        let span = tracing::info_span!(
            target: TARGET,
            "publish",
            otel.kind = "producer",
            messaging.system = "nats",
            messaging.operation.type = "send",
            messaging.batch.message_count = events.len(),
            duplicates = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        // The publish span's trace context, carried by each of the request's events; none
        // when trace export is off.
        let mut request = RequestMeta {
            correlation_id: correlation_id.to_owned(),
            traceparent: None,
            tracestate: None,
        };
        for (name, value) in propagation::headers(&span) {
            let value = Some(value.as_str().to_owned());
            match name.as_ref() {
                "traceparent" => request.traceparent = value,
                "tracestate" => request.tracestate = value,
                _ => {}
            }
        }
        let result = self.submit(events, request).instrument(span.clone()).await;
        match &result {
            Ok(duplicates) => span.record("duplicates", duplicates),
            Err(_) => span.record("otel.status_code", "ERROR"),
        };
        result
    }

    async fn submit(
        &self,
        events: Vec<Event>,
        request: RequestMeta,
    ) -> Result<usize, WebhookError> {
        if let Some(cause) = self.publisher.unready() {
            return Err(unavailable(cause));
        }
        // An event the broker can never take must not get a retryable 503 (the producer
        // would retry forever); check them all first so nothing is published partially.
        let limit = self.publisher.event_limit();
        if let Some(index) = events.iter().position(|e| e.payload.len() > limit) {
            return Err(WebhookError::EventTooLarge { index, limit });
        }
        let (events, repeats) = without_repeats(events);
        let total = events.len();
        if total == 0 {
            return Ok(repeats);
        }
        let (reply, mut answers) = mpsc::channel(total);
        let submission = Submission {
            request: Arc::new(request),
            events,
            reply,
        };
        self.queue
            .send(submission)
            .await
            .map_err(|_| unavailable(Unstored::Stopped))?;
        let (mut acked, mut duplicates) = (0, 0);
        while acked < total {
            match answers.recv().await {
                Some(Ok(part)) => {
                    acked += part.events;
                    duplicates += if part.duplicate { part.events } else { 0 };
                }
                Some(Err(cause)) => return Err(unavailable(Unstored::Shared(cause))),
                None => return Err(unavailable(Unstored::Stopped)),
            }
        }
        Ok(repeats + duplicates)
    }
}

/// The events without the repeats of an eventId earlier in the same request, and how many
/// repeats there were: a repeat is a duplicate ingestion knows of, not worth sending.
fn without_repeats(events: Vec<Event>) -> (Vec<Event>, usize) {
    let mut seen = HashSet::with_capacity(events.len());
    let keep: Vec<bool> = events
        .iter()
        .map(|e| seen.insert(e.event_id.as_str()))
        .collect();
    let repeats = keep.iter().filter(|k| !**k).count();
    if repeats == 0 {
        return (events, 0);
    }
    let kept = events
        .into_iter()
        .zip(keep)
        .filter_map(|(e, keep)| keep.then_some(e))
        .collect();
    (kept, repeats)
}

type InFlight = Pin<Box<dyn Future<Output = (Vec<Part>, usize, PartOutcome)> + Send>>;

/// The coalescer's state between events.
struct Coalescing {
    publisher: Publisher,
    settings: Settings,
    open: Open,
    /// The answers owed for the open message, in order.
    parts: Vec<Part>,
    /// When the open message closes unless a limit closes it first.
    deadline: Option<Instant>,
    in_flight: FuturesUnordered<InFlight>,
    published: [metrics::Counter; 2],
    events_per_message: [metrics::Histogram; 2],
}

async fn run(
    mut queue: mpsc::Receiver<Submission>,
    mut stop: oneshot::Receiver<()>,
    publisher: Publisher,
    settings: Settings,
) {
    let by_encoding = |encoding| {
        let counter =
            metrics::counter!("ingestion_messages_published_total", "encoding" => encoding);
        counter.increment(0);
        counter
    };
    let mut state = Coalescing {
        publisher,
        settings,
        open: Open::default(),
        parts: Vec::new(),
        deadline: None,
        in_flight: FuturesUnordered::new(),
        published: ["single", "batch"].map(by_encoding),
        events_per_message: ["single", "batch"]
            .map(|e| metrics::histogram!("ingestion_message_events", "encoding" => e)),
    };
    let mut receiving = true;
    loop {
        let deadline = state.deadline;
        tokio::select! {
            biased;
            Some((parts, events, outcome)) = state.in_flight.next(),
                if !state.in_flight.is_empty() => state.answer(parts, events, outcome),
            // Stopping (or the service dropped without stopping): take what is queued,
            // refuse the rest, send everything.
            _ = &mut stop, if receiving => {
                receiving = false;
                queue.close();
                while let Ok(submission) = queue.try_recv() {
                    state.add(submission).await;
                }
                state.close().await;
            }
            // Before new events: under a steady stream of requests the linger still ends.
            () = sleep_until(deadline), if deadline.is_some() => state.close().await,
            submission = queue.recv(),
                if receiving && state.in_flight.len() < MAX_IN_FLIGHT => match submission {
                Some(submission) => state.add(submission).await,
                // Every handle is gone: send what is open.
                None => {
                    receiving = false;
                    state.close().await;
                }
            },
            else => break,
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline).await;
    }
}

impl Coalescing {
    /// Adds a request's events, closing messages as the limits say.
    async fn add(&mut self, submission: Submission) {
        let Submission {
            request,
            events,
            reply,
        } = submission;
        let limits = Limits {
            max_bytes: (self.settings.limits.max_bytes).min(self.publisher.event_limit()),
            ..self.settings.limits
        };
        for event in events {
            let event = Packed {
                request: request.clone(),
                event,
            };
            if self.open.must_close_before(&event, limits) {
                self.close().await;
            }
            if self.open.events.is_empty() {
                self.deadline = Some(Instant::now() + self.settings.linger);
            }
            self.open.push(event);
            match self.parts.last_mut() {
                Some(part) if part.reply.same_channel(&reply) => part.events += 1,
                _ => self.parts.push(Part {
                    reply: reply.clone(),
                    events: 1,
                }),
            }
            if self.open.is_full(limits) {
                self.close().await;
            }
        }
        if self.settings.linger.is_zero() {
            self.close().await;
        }
    }

    /// Sends the open message, if any, and puts its PubAck in flight.
    async fn close(&mut self) {
        self.deadline = None;
        let events = self.open.take();
        let parts = std::mem::take(&mut self.parts);
        if events.is_empty() {
            return;
        }
        let count = events.len();
        let sent = self.publisher.send(&events).await;
        let timeout = self.publisher.timeout;
        self.in_flight.push(Box::pin(async move {
            let outcome = match sent {
                Ok(ack) => match tokio::time::timeout(timeout, ack).await {
                    Ok(Ok(ack)) => Ok(PartAck {
                        events: 0,
                        duplicate: ack.duplicate,
                    }),
                    Ok(Err(e)) => Err(Arc::new(Unstored::Refused(e))),
                    Err(_) => Err(Arc::new(Unstored::AckTimeout)),
                },
                Err(cause) => Err(Arc::new(cause)),
            };
            (parts, count, outcome)
        }));
    }

    /// Answers every part of a message whose PubAck came (or failed).
    fn answer(&self, parts: Vec<Part>, events: usize, outcome: PartOutcome) {
        if let Ok(ack) = &outcome {
            let encoding = usize::from(events > 1);
            self.published[encoding].increment(1);
            self.events_per_message[encoding].record(events as f64);
            if ack.duplicate {
                tracing::debug!(events, "JetStream reported a duplicate message");
            }
        }
        for part in parts {
            let answer = outcome.clone().map(|ack| PartAck {
                events: part.events,
                ..ack
            });
            // A request that went away (its client disconnected) needs no answer.
            let _ = part.reply.try_send(answer);
        }
    }
}
