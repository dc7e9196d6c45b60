//! The load: the publisher's generator, batch encoding and sender (keep-alive HTTP/1.1,
//! bounded concurrency, retries with backoff), driven at a rate the benchmark can change
//! while it runs.

use publisher::Summary;
use publisher::generator::{EventClock, Generator, GeneratorConfig};
use publisher::sender::{Batch, Sender, SenderConfig};
use publisher::summary::Stats;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Events per second, changeable while the load runs; 0 = as fast as possible.
#[derive(Debug, Clone, Default)]
pub struct Rate(Arc<AtomicU64>);

impl Rate {
    pub fn new(rate: f64) -> Rate {
        Rate(Arc::new(AtomicU64::new(rate.to_bits())))
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    pub fn set(&self, rate: f64) {
        self.0.store(rate.max(0.0).to_bits(), Ordering::Relaxed);
    }
}

/// What to send.
#[derive(Debug, Clone)]
pub struct Load {
    pub url: reqwest::Url,
    /// Events per request (1 = a bare object).
    pub batch: usize,
    /// Requests in flight at most (= keep-alive connections).
    pub concurrency: usize,
    pub rate: Rate,
    /// Stop after this many events.
    pub count: Option<u64>,
    /// Stop after this long (also a hard bound when `count` is set).
    pub duration: Duration,
    /// Seed of the generator; every phase uses its own, so event ids never repeat.
    pub seed: u64,
}

/// A load being sent.
#[derive(Debug)]
pub struct Running {
    pub stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<anyhow::Result<Summary>>,
}

impl Running {
    /// Events accepted so far (202s).
    pub fn accepted(&self) -> u64 {
        self.stats.accepted.load(Ordering::Relaxed)
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops generating, waits for the requests in flight, returns the summary.
    pub async fn finish(self) -> anyhow::Result<Summary> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await?
    }
}

/// Starts sending in a background task.
pub fn start(load: Load) -> anyhow::Result<Running> {
    let stats = Arc::new(Stats::new()?);
    let sender = Arc::new(Sender::new(
        SenderConfig {
            url: load.url.clone(),
            max_retries: 10,
            timeout: Duration::from_secs(30),
            concurrency: load.concurrency,
            secret: None,
            signature_scheme: publisher::sender::SignatureScheme::Legacy,
        },
        Arc::clone(&stats),
    )?);
    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(drive(load, sender, Arc::clone(&stats), Arc::clone(&stop)));
    Ok(Running { stats, stop, task })
}

async fn drive(
    load: Load,
    sender: Arc<Sender>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Summary> {
    let mut generator = Generator::new(GeneratorConfig {
        seed: load.seed,
        duplicates: 0.0,
        invalid: 0.0,
        out_of_order: 0.0,
        clock: EventClock::Wall {
            start: time::OffsetDateTime::now_utc(),
        },
    });
    let concurrency = load.concurrency.max(1);
    let permits = Arc::new(Semaphore::new(concurrency));
    let limit = load.count.unwrap_or(u64::MAX);
    let started = Instant::now();
    let deadline = started + load.duration;
    let mut next = started;
    let mut events = Vec::with_capacity(load.batch);
    let mut capacity = 1024 * load.batch;
    let mut generated = 0u64;
    while generated < limit && !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let n = usize::try_from(limit - generated)
            .unwrap_or(usize::MAX)
            .min(load.batch.max(1));
        // Token pacing; a debt older than 1 s (server stalled) is forgiven, not burst.
        let rate = load.rate.get();
        if rate > 0.0 {
            let now = Instant::now();
            if next > now {
                tokio::time::sleep_until(next.min(deadline)).await;
            } else if now - next > Duration::from_secs(1) {
                next = now;
            }
            next += Duration::from_secs_f64(n as f64 / rate);
            if Instant::now() >= deadline || stop.load(Ordering::Relaxed) {
                break;
            }
        }
        let permit = Arc::clone(&permits).acquire_owned().await?;
        generator.next_batch(n, &mut events);
        generated += n as u64;
        Stats::add(&stats.generated, n as u64);
        let batch = Batch::encode(&events, capacity)?;
        capacity = batch.body().len() + batch.body().len() / 8;
        let sender = Arc::clone(&sender);
        let stats = Arc::clone(&stats);
        Stats::add(&stats.in_flight, 1);
        tokio::spawn(async move {
            sender.deliver(batch).await;
            stats.in_flight.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    let _all = permits.acquire_many(concurrency as u32).await?;
    Ok(stats.summary(load.seed, started.elapsed()))
}
