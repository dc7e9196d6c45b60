//! The producers of the chaos test: a steady, seeded load through ingestion that retries
//! like a real producer, and poison published straight to the stream.

use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use futures::StreamExt;
use publisher::generator::{EventClock, GeneratedEvent, Generator, GeneratorConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use shared_events::Source;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::time::Instant;

/// Requests are offered on this beat; each carries about `rate × TICK` events.
const TICK: Duration = Duration::from_millis(50);
/// Requests in flight at once: enough that one stuck in retries does not stall the load.
const CONCURRENCY: usize = 8;
/// An answer slower than this counts as none: the request is sent again.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A producer that gets no definite answer for this long gives up, and the test fails.
const GIVE_UP: Duration = Duration::from_secs(180);

/// What the reports need of an accepted event.
#[derive(Debug, Clone, Copy)]
pub struct Facts {
    pub time: OffsetDateTime,
    pub source: Source,
    pub revenue: Option<Decimal>,
}

/// One request body and the events in it.
#[derive(Debug)]
struct Request {
    body: Bytes,
    /// The valid events it carries (an invalid request carries none).
    events: Vec<(String, Facts)>,
    /// The id of the one event of an invalid request, when it has one.
    invalid_id: Option<String>,
}

/// What the producers saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// eventId → facts, of every event of a request answered 202.
    pub accepted: HashMap<String, Facts>,
    pub requests_accepted: u64,
    /// Events in those requests, repeats included.
    pub events_posted: u64,
    /// Requests with an invalid event answered 422, and the ids they carried.
    pub rejected: u64,
    pub rejected_ids: Vec<String>,
    /// Attempts answered 503 and sent again.
    pub retried_503: u64,
    /// Attempts that got no answer (connection refused or reset, timeout), sent again.
    pub retried_no_answer: u64,
    /// Answers no producer should get, by description.
    pub unexpected: BTreeMap<String, u64>,
    /// Requests that never got a definite answer.
    pub gave_up: u64,
}

/// Offers `rate` events/s to ingestion until `until`, each request retried until it gets
/// a definite answer; returns what was answered. Same seed, same requests.
pub async fn offer(seed: u64, rate: u32, url: String, until: Instant) -> Tally {
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("an HTTP client");
    let mut generator = Generator::new(GeneratorConfig {
        seed,
        duplicates: 0.02,
        invalid: 0.005,
        out_of_order: 0.05,
        // Event times in the past (from 2026-01-01, a second apart): every quarter-hour
        // has ended, so the compactor can finish every slot before the comparison.
        clock: EventClock::Virtual {
            start: publisher::SEEDED_START,
            step: time::Duration::SECOND,
        },
    });
    let mut sizes = StdRng::seed_from_u64(seed ^ 0x5173);
    let per_tick = ((rate as f64 * TICK.as_secs_f64()).round() as u32).max(1);
    let mut ticker = tokio::time::interval(TICK);
    // After a stall the beat resumes; it does not catch up with a burst.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending: VecDeque<Request> = VecDeque::new();
    let mut batch = Vec::new();
    let requests = futures::stream::poll_fn(move |cx| {
        loop {
            if let Some(r) = pending.pop_front() {
                return std::task::Poll::Ready(Some(r));
            }
            if Instant::now() >= until {
                return std::task::Poll::Ready(None);
            }
            std::task::ready!(ticker.poll_tick(cx));
            let n = sizes.random_range(1..=2 * per_tick - 1) as usize;
            generator.next_batch(n, &mut batch);
            pending.extend(requests_of(&batch));
        }
    });
    let tally = Mutex::new(Tally::default());
    requests
        .for_each_concurrent(CONCURRENCY, |r| deliver(&http, &url, r, &tally))
        .await;
    tally.into_inner().expect("no producer panicked")
}

/// The valid events of a generated batch as one request, and each invalid one alone
/// (a request with an invalid event is refused whole).
fn requests_of(batch: &[GeneratedEvent]) -> Vec<Request> {
    let mut out = Vec::new();
    let mut body = b"[".to_vec();
    let mut events = Vec::new();
    for e in batch {
        let mut json = Vec::new();
        e.write_json(&mut json)
            .expect("a generated event serialises");
        if e.is_invalid() {
            let value: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
            out.push(Request {
                body: Bytes::from([b"[".as_slice(), &json, b"]"].concat()),
                events: Vec::new(),
                invalid_id: value["eventId"].as_str().map(str::to_owned),
            });
            continue;
        }
        let value: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
        let event = shared_events::validate(&value).expect("a valid generated event");
        let facts = Facts {
            time: event.timestamp,
            source: event.source,
            revenue: event.revenue(),
        };
        events.push((event.event_id.to_owned(), facts));
        if body.len() > 1 {
            body.push(b',');
        }
        body.extend_from_slice(&json);
    }
    body.push(b']');
    if !events.is_empty() {
        out.push(Request {
            body: Bytes::from(body),
            events,
            invalid_id: None,
        });
    }
    out
}

/// Sends `r` until it gets a definite answer, as a producer would: 503 and no answer are
/// retried with the same body (the same eventIds: deduplication makes that safe).
async fn deliver(http: &reqwest::Client, url: &str, r: Request, tally: &Mutex<Tally>) {
    let deadline = Instant::now() + GIVE_UP;
    let valid = r.invalid_id.is_none() && !r.events.is_empty();
    for attempt in 0u32.. {
        let answer = http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(r.body.clone())
            .send()
            .await;
        // The body is read so that a reset mid-answer counts as no answer.
        let answer = match answer {
            Ok(a) => {
                let status = a.status().as_u16();
                a.bytes().await.map(|_| status)
            }
            Err(e) => Err(e),
        };
        {
            let mut t = tally.lock().expect("tally");
            match answer {
                Ok(202) if valid => {
                    t.requests_accepted += 1;
                    t.events_posted += r.events.len() as u64;
                    t.accepted.extend(r.events.iter().cloned());
                    return;
                }
                Ok(422) if !valid => {
                    t.rejected += 1;
                    t.rejected_ids.extend(r.invalid_id.clone());
                    return;
                }
                Ok(503) => t.retried_503 += 1,
                Ok(status) => {
                    let kind = if valid { "valid" } else { "invalid" };
                    *t.unexpected
                        .entry(format!("{status} to a request of {kind} events"))
                        .or_default() += 1;
                    // A 4xx will not change on a retry; a 5xx might.
                    if status < 500 {
                        return;
                    }
                }
                Err(_) => t.retried_no_answer += 1,
            }
            if Instant::now() >= deadline {
                t.gave_up += 1;
                return;
            }
        }
        tokio::time::sleep(backoff(attempt)).await;
    }
}

/// 100 ms, doubling, at most 1 s: short, so a restart's end is soon noticed.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100 << attempt.min(4)).min(Duration::from_secs(1))
}

/// The kinds of poison: what the worker must call them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Poison {
    /// Not JSON at all (garbage, truncated JSON, bytes that are not UTF-8, nothing).
    Undecodable,
    /// JSON that fails the event spec.
    InvalidEvent,
}

impl Poison {
    /// The `Dlq-Reason` the worker must give it.
    pub fn reason(self) -> &'static str {
        match self {
            Poison::Undecodable => "undecodable",
            Poison::InvalidEvent => "invalid_event",
        }
    }
}

/// Poison published, by message id; and publishes that never got a PubAck.
#[derive(Debug, Default)]
pub struct Poisoned {
    pub sent: BTreeMap<String, Poison>,
    pub retried: u64,
    pub gave_up: u64,
}

/// Publishes a poison message straight to the events stream (as a buggy producer
/// bypassing ingestion would) every 0.5-2.5 s until `until`, each retried under the same
/// message id until the broker acknowledges it.
pub async fn poison(seed: u64, js: jetstream::Context, prefix: String, until: Instant) -> Poisoned {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x9015);
    let mut corrupt = Generator::new(GeneratorConfig {
        seed: seed ^ 0xbad,
        duplicates: 0.0,
        invalid: 1.0,
        out_of_order: 0.0,
        clock: EventClock::Virtual {
            start: publisher::SEEDED_START,
            step: time::Duration::SECOND,
        },
    });
    let mut out = Poisoned::default();
    let mut batch = Vec::new();
    for n in 0u64.. {
        let pause = Duration::from_millis(rng.random_range(500..2500));
        if Instant::now() + pause >= until {
            break;
        }
        tokio::time::sleep(pause).await;
        corrupt.next_batch(1, &mut batch);
        let mut event = Vec::new();
        batch[0]
            .write_json(&mut event)
            .expect("a generated event serialises");
        let (kind, payload) = match rng.random_range(0..5) {
            0 => (Poison::Undecodable, b"{not json".to_vec()),
            1 => (Poison::Undecodable, event[..event.len() / 2].to_vec()),
            2 => (Poison::Undecodable, vec![0xff, 0xfe, b'{', 0x80]),
            3 => (Poison::Undecodable, Vec::new()),
            _ => (Poison::InvalidEvent, event),
        };
        let id = format!("poison-{n}");
        let subject = format!("{prefix}.facebook.ad.view");
        let deadline = Instant::now() + GIVE_UP;
        loop {
            let msg = PublishMessage::build()
                .payload(payload.clone().into())
                .message_id(&id)
                .header("X-Correlation-ID", format!("corr-{id}").as_str());
            let acked = tokio::time::timeout(REQUEST_TIMEOUT, async {
                js.send_publish(subject.clone(), msg).await?.await?;
                anyhow::Ok(())
            })
            .await;
            if matches!(acked, Ok(Ok(()))) {
                out.sent.insert(id, kind);
                break;
            }
            if Instant::now() >= deadline {
                out.gave_up += 1;
                break;
            }
            out.retried += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    out
}
