//! Ceilings of the parts, with the same event payloads as the load: a raw binary `COPY`
//! into a scratch copy of the `events` table, a raw JetStream publish with pipelined
//! PubAcks into a scratch stream with the `EVENTS` settings, and the bulk preload.

use anyhow::Context;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use publisher::generator::{EventClock, Generator, GeneratorConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use worker::store::{self, Row};

/// Events generated as the load generates them, one JSON document each.
#[derive(Debug)]
pub struct Payloads {
    pub json: Vec<Bytes>,
    pub subjects: Vec<String>,
    pub ids: Vec<String>,
}

impl Payloads {
    pub fn avg_bytes(&self) -> usize {
        self.json.iter().map(Bytes::len).sum::<usize>() / self.json.len().max(1)
    }
}

fn generator(seed: u64, clock: EventClock) -> Generator {
    Generator::new(GeneratorConfig {
        seed,
        duplicates: 0.0,
        invalid: 0.0,
        out_of_order: 0.0,
        clock,
    })
}

/// `n` events of the publisher's generator (seeded), with their subjects under `prefix`.
pub fn payloads(n: usize, seed: u64, prefix: &str) -> anyhow::Result<Payloads> {
    let mut g = generator(
        seed,
        EventClock::Wall {
            start: OffsetDateTime::now_utc(),
        },
    );
    let mut out = Payloads {
        json: Vec::with_capacity(n),
        subjects: Vec::with_capacity(n),
        ids: Vec::with_capacity(n),
    };
    let mut events = Vec::new();
    while out.json.len() < n {
        g.next_batch((n - out.json.len()).min(1000), &mut events);
        for e in &events {
            let mut buf = Vec::with_capacity(1024);
            e.write_json(&mut buf)?;
            out.json.push(Bytes::from(buf));
            out.subjects.push(format!(
                "{prefix}.{}.{}",
                e.event.source.as_str(),
                e.event.event_type
            ));
            out.ids.push(e.event.event_id.to_string());
        }
    }
    Ok(out)
}

/// The rows the worker would insert for these payloads (`worker::store::decode`).
pub fn rows(payloads: &Payloads) -> anyhow::Result<Vec<Row>> {
    let now = Some(OffsetDateTime::now_utc());
    payloads
        .json
        .iter()
        .map(|p| store::decode(p, now).map_err(|r| anyhow::anyhow!("{}: {}", r.reason, r.detail)))
        .collect()
}

/// One binary COPY of `rows`' keys into `keys` (when the schema has them) and of the rows
/// into `table`, in one transaction (the worker's loader, and its first attempt).
async fn copy_rows(
    client: &mut tokio_postgres::Client,
    (table, keys): (&str, Option<&str>),
    rows: &[Row],
) -> anyhow::Result<u64> {
    let tx = client.transaction().await?;
    if let Some(keys) = keys {
        store::copy_keys(&tx, keys, rows).await?;
    }
    let copied = store::copy_rows(&tx, table, rows, &[]).await?;
    tx.commit().await?;
    Ok(copied)
}

/// Whether the schema keeps dedup keys apart (`event_keys`, since migration 12): not so
/// when `--bin-dir` runs an older build, whose worker migrated the database.
async fn has_keys(client: &tokio_postgres::Client) -> anyhow::Result<bool> {
    Ok(client
        .query_one("SELECT to_regclass('event_keys') IS NOT NULL", &[])
        .await?
        .get(0))
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// Raw binary COPY of `rows` into scratch copies of `events` and `event_keys` (same
/// columns, constraints and indexes; the keys are the dedup the worker writes too): batches of `batch` rows, `connections` at once, one transaction per
/// batch, like the worker. Returns the time taken; the scratch table is dropped.
pub async fn copy_ceiling(
    url: &str,
    rows: Arc<Vec<Row>>,
    batch: usize,
    connections: usize,
) -> anyhow::Result<Duration> {
    let admin = connect(url).await?;
    let keys = has_keys(&admin).await?;
    admin
        .batch_execute(
            "DROP TABLE IF EXISTS bench_events_copy, bench_event_keys_copy;
             CREATE TABLE bench_events_copy (LIKE events INCLUDING ALL);",
        )
        .await
        .context("creating the scratch table")?;
    if keys {
        admin
            .batch_execute("CREATE TABLE bench_event_keys_copy (LIKE event_keys INCLUDING ALL)")
            .await?;
    }
    admin.batch_execute("CHECKPOINT").await?;
    let scratch = ("bench_events_copy", keys.then_some("bench_event_keys_copy"));
    let chunks = rows.len().div_ceil(batch.max(1));
    let next = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..connections.max(1) {
        clients.push(connect(url).await?);
    }
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let (rows, next) = (Arc::clone(&rows), Arc::clone(&next));
            tokio::spawn(async move {
                let mut copied = 0;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= chunks {
                        return anyhow::Ok(copied);
                    }
                    let end = ((i + 1) * batch).min(rows.len());
                    copied += copy_rows(&mut client, scratch, &rows[i * batch..end]).await?;
                }
            })
        })
        .collect();
    let mut copied = 0;
    for t in tasks {
        copied += t.await??;
    }
    let took = started.elapsed();
    anyhow::ensure!(
        copied == rows.len() as u64,
        "COPY stored {copied} of {} rows",
        rows.len()
    );
    admin
        .batch_execute("DROP TABLE IF EXISTS bench_events_copy, bench_event_keys_copy")
        .await?;
    Ok(took)
}

/// Raw JetStream publish of `payloads` into a scratch stream with the settings of
/// `EVENTS` (work queue, file storage, duplicate window), with the headers ingestion sets
/// (`Nats-Msg-Id`, `X-Correlation-ID`, `Ingested-At`), PubAcks pipelined in a sliding
/// window of `window`. Returns the time until the last PubAck; the stream is deleted.
pub async fn jetstream_ceiling(
    nats_url: &str,
    payloads: &Payloads,
    window: usize,
    replicas: usize,
) -> anyhow::Result<Duration> {
    use async_nats::jetstream::message::PublishMessage;
    let client = async_nats::connect(nats_url).await?;
    // async-nats refuses (or blocks) more than 5000 PubAcks in flight by default.
    let js = async_nats::jetstream::context::ContextBuilder::new()
        .timeout(Duration::from_secs(30))
        .max_ack_inflight(window * 2 + 16)
        .build(client);
    // The EVENTS settings exactly as the services derive them (same environment).
    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        stream: service_kit::stream::StreamArgs,
    }
    let settings = <Wrap as clap::Parser>::try_parse_from([
        "bench",
        "--nats-url",
        nats_url,
        "--nats-stream",
        "BENCH_RAW",
        "--nats-subject-prefix",
        "benchraw",
        "--nats-stream-replicas",
        &replicas.to_string(),
    ])?
    .stream;
    let _ = js.delete_stream("BENCH_RAW").await;
    js.create_stream(settings.stream_config())
        .await
        .context("creating the scratch stream")?;
    let correlation = uuid::Uuid::new_v4().to_string();
    let started = Instant::now();
    let mut pending = FuturesOrdered::new();
    for i in 0..payloads.json.len() {
        let ingested_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos().to_string())
            .unwrap_or_default();
        let message = PublishMessage::build()
            .payload(payloads.json[i].clone())
            .message_id(payloads.ids[i].as_str())
            .header(
                service_kit::stream::CORRELATION_HEADER,
                correlation.as_str(),
            )
            .header(
                service_kit::stream::INGESTED_AT_HEADER,
                ingested_at.as_str(),
            );
        let ack = js
            .send_publish(payloads.subjects[i].clone(), message)
            .await
            .context("publishing")?;
        pending.push_back(ack.into_future());
        while pending.len() >= window {
            if let Some(ack) = pending.next().await {
                ack.context("PubAck")?;
            }
        }
    }
    while let Some(ack) = pending.next().await {
        ack.context("PubAck")?;
    }
    let took = started.elapsed();
    let info = js
        .get_stream("BENCH_RAW")
        .await?
        .info()
        .await?
        .state
        .messages;
    anyhow::ensure!(
        info == payloads.json.len() as u64,
        "scratch stream holds {info} of {} messages",
        payloads.json.len()
    );
    js.delete_stream("BENCH_RAW").await?;
    Ok(took)
}

/// Bulk-loads `n` events straight into `events` with binary COPY (chunks of 20,000 rows,
/// two connections), event times spread over the past 30 days; then ANALYZE and
/// CHECKPOINT. Rollups are not touched. Returns the time taken.
pub async fn preload(url: &str, n: u64, seed: u64) -> anyhow::Result<Duration> {
    const CHUNK: usize = 20_000;
    let started = Instant::now();
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<Row>>(4);
    let producer = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let span = time::Duration::days(30);
        let mut g = generator(
            seed,
            EventClock::Virtual {
                start: OffsetDateTime::now_utc() - span,
                step: span / (n.max(1) as f64),
            },
        );
        let mut left = n;
        let mut events = Vec::new();
        let mut buf = Vec::with_capacity(1024);
        let now = Some(OffsetDateTime::now_utc());
        while left > 0 {
            let k = (left as usize).min(CHUNK);
            let mut rows = Vec::with_capacity(k);
            for _ in 0..k.div_ceil(1000) {
                g.next_batch((k - rows.len()).min(1000), &mut events);
                for e in &events {
                    buf.clear();
                    e.write_json(&mut buf)?;
                    rows.push(
                        store::decode(&buf, now)
                            .map_err(|r| anyhow::anyhow!("{}: {}", r.reason, r.detail))?,
                    );
                }
            }
            left -= rows.len() as u64;
            if tx.blocking_send(rows).is_err() {
                break;
            }
        }
        Ok(())
    });
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let keys = has_keys(&connect(url).await?)
        .await?
        .then_some("event_keys");
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let mut client = connect(url).await?;
        let rx = Arc::clone(&rx);
        tasks.push(tokio::spawn(async move {
            let mut copied = 0u64;
            loop {
                let next = rx.lock().await.recv().await;
                let Some(rows) = next else {
                    return anyhow::Ok(copied);
                };
                copied += copy_rows(&mut client, ("events", keys), &rows).await?;
            }
        }));
    }
    let mut copied = 0;
    for t in tasks {
        copied += t.await??;
    }
    producer.await??;
    anyhow::ensure!(copied == n, "preload stored {copied} of {n} rows");
    let admin = connect(url).await?;
    admin.batch_execute("ANALYZE events; CHECKPOINT").await?;
    Ok(started.elapsed())
}
