//! Insert rate of the worker's batch insert beside a raw binary `COPY` of the same rows.
//!
//! `cargo bench -p worker --bench insert` starts a private PostgreSQL (testkit), applies
//! the schema, builds realistic events of the four shapes (JSON decoded by
//! `worker::store::decode`, so the rows are exactly what the worker inserts) and writes
//! them in batches, `BENCH_CONCURRENCY` at a time through a deadpool pool like the worker:
//!
//! - `copy`: binary COPY straight into `events`, no conflict handling (the ceiling);
//! - `worker`: `worker::store::insert_batch`, the worker's whole write (a binary COPY, or
//!   when it fails on a duplicate UNNEST arrays with ON CONFLICT DO NOTHING RETURNING; the
//!   rollup upserts and the per-user lists; one transaction per batch);
//! - `copy_temp`: binary COPY into a session temporary table (ON COMMIT DELETE ROWS),
//!   then INSERT ... SELECT ... ON CONFLICT DO NOTHING RETURNING, one transaction (the
//!   insert alone, without rollups: the alternative measured when the insert form was
//!   chosen);
//! - `copy_temp_drop`: the same with a temporary table created per batch (ON COMMIT DROP);
//! - `*_dup`: a second pass of the same rows, all duplicates (what redelivery costs).
//!
//! Environment: `BENCH_EVENTS` (200000), `BENCH_BATCH` (1000), `BENCH_CONCURRENCY` (3),
//! `BENCH_ROUNDS` (3; the best round is reported), `BENCH_SPREAD_SECONDS` (60: the events'
//! timestamps fall in the last minute, as live webhook traffic does; 86400 spreads them over
//! a day, as a backfill does, so that each batch touches ~100 quarter-hours and most of its
//! events land in a minute of their own, which multiplies the rollup rows per batch); run by `cargo test` (no `--bench`
//! argument) it defaults to 2000 events and 1 round, a smoke test. Output: a markdown
//! table and one JSON line starting with `{"bench":"insert"`. The test cluster runs with
//! fsync=off, so the absolute figures are optimistic; the ratios are what matters.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use deadpool_postgres::Pool;
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use worker::store::{self, KeyCache, Row};

/// Every column the worker writes (the same as `store::copy_rows`).
const COLUMNS: &str = "event_id, event_time, source, funnel_stage, event_type, user_id, data, \
    extra, ingested_at, country, campaign_id, revenue";

const TEMP_COLUMNS: &str = "(event_id text, event_time timestamptz, source text, \
    funnel_stage text, event_type text, user_id text, data jsonb, extra jsonb, \
    ingested_at timestamptz, country text, campaign_id text, revenue numeric)";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Variant {
    Copy,
    Worker,
    CopyTemp,
    CopyTempDrop,
}

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::Copy => "copy",
            Variant::Worker => "worker",
            Variant::CopyTemp => "copy_temp",
            Variant::CopyTempDrop => "copy_temp_drop",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Variant::Copy => "(a) binary COPY into events, no conflict handling",
            Variant::Worker => {
                "(b) worker insert_batch: COPY (ON CONFLICT INSERT on a duplicate) + rollups"
            }
            Variant::CopyTemp => "(c) COPY into session temp table + INSERT SELECT RETURNING",
            Variant::CopyTempDrop => "(c') COPY into temp table ON COMMIT DROP + INSERT SELECT",
        }
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a positive integer, got {v:?}")),
        Err(_) => default,
    }
}

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }

    fn hex(&mut self, len: usize) -> String {
        let mut s = String::with_capacity(len);
        while s.len() < len {
            s.push_str(&format!("{:016x}", self.next()));
        }
        s.truncate(len);
        s
    }

    fn uuid(&mut self) -> String {
        let h = self.hex(32);
        format!(
            "{}-{}-4{}-a{}-{}",
            &h[..8],
            &h[8..12],
            &h[13..16],
            &h[17..20],
            &h[20..32]
        )
    }
}

const PLACES: &[(&str, &str)] = &[
    ("Germany", "Berlin"),
    ("Germany", "Munich"),
    ("Brazil", "São Paulo"),
    ("Brazil", "Rio de Janeiro"),
    ("United States", "New York"),
    ("United States", "Austin"),
    ("France", "Lyon"),
    ("Japan", "Osaka"),
    ("India", "Bengaluru"),
    ("Poland", "Kraków"),
    ("Nigeria", "Lagos"),
    ("Mexico", "Guadalajara"),
];
const FIRST: &[&str] = &[
    "Ada",
    "Grace",
    "Linus",
    "Mariana",
    "Kenji",
    "Oluwaseun",
    "Zofia",
    "Priya",
    "Lucas",
    "Émile",
];
const LAST: &[&str] = &[
    "Park",
    "Hopper",
    "Okafor",
    "Nakamura",
    "Kowalska",
    "Ramanathan",
    "Silva",
    "Dubois",
];
const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 15; Pixel 9) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.104 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_7) Gecko/20100101 Firefox/133.0",
];

/// One valid event of shape `i % 4`, with producer context as unknown top-level fields.
fn event(rng: &mut Rng, i: usize, base: OffsetDateTime, spread_ms: u64) -> Value {
    let at = base + Duration::from_millis(rng.below(spread_ms));
    let ts = at.format(&Rfc3339).unwrap();
    let user_n = rng.below(50_000);
    let (country, city) = PLACES[rng.below(PLACES.len() as u64) as usize];
    let id = rng.uuid();
    let fb_user = |rng: &mut Rng| {
        json!({"userId": format!("fb-{user_n:06}"),
               "name": format!("{} {}", rng.pick(FIRST), rng.pick(LAST)),
               "age": 16 + rng.below(60), "gender": rng.pick(&["male", "female", "non-binary"]),
               "location": {"country": country, "city": city}})
    };
    let tt_user = |rng: &mut Rng| {
        json!({"userId": format!("tt-{user_n:06}"),
               "username": format!("{}_{}", rng.pick(FIRST).to_lowercase(), user_n),
               "followers": rng.below(2_000_000)})
    };
    let amount = |rng: &mut Rng| {
        (rng.below(4) > 0).then(|| format!("{}.{:02}", 1 + rng.below(400), rng.below(100)))
    };
    let (source, stage, event_type, data) = match i % 4 {
        0 => {
            let user = fb_user(rng);
            let video = (rng.below(2) == 0).then(|| format!("fbv-{}", rng.hex(12)));
            let referrer = rng.pick(&["newsfeed", "marketplace", "groups"]);
            (
                "facebook",
                "top",
                rng.pick(&["ad.view", "page.like", "comment", "video.view"]),
                json!({"user": user, "engagement": {"actionTime": ts,
                    "referrer": referrer, "videoId": video}}),
            )
        }
        1 => {
            let user = fb_user(rng);
            let event_type = rng.pick(&["ad.click", "form.submission", "checkout.complete"]);
            let amount = if event_type == "checkout.complete" {
                amount(rng)
            } else {
                None
            };
            (
                "facebook",
                "bottom",
                event_type,
                json!({"user": user, "engagement": {"adId": format!("ad-{}", rng.below(5000)),
                    "campaignId": format!("cmp-{}", rng.below(300)),
                    "clickPosition": rng.pick(&["top_left", "bottom_right", "center"]),
                    "device": rng.pick(&["mobile", "desktop"]),
                    "browser": rng.pick(&["Chrome", "Firefox", "Safari"]),
                    "purchaseAmount": amount}}),
            )
        }
        2 => {
            let user = tt_user(rng);
            (
                "tiktok",
                "top",
                rng.pick(&["video.view", "like", "share", "comment"]),
                json!({"user": user, "engagement": {"watchTime": rng.below(600),
                    "percentageWatched": (rng.below(1001) as f64) / 10.0,
                    "device": rng.pick(&["Android", "iOS", "Desktop"]),
                    "country": country, "videoId": format!("ttv-{}", rng.hex(16))}}),
            )
        }
        _ => {
            let user = tt_user(rng);
            let event_type = rng.pick(&["profile.visit", "purchase", "follow"]);
            let amount = if event_type == "purchase" {
                amount(rng)
            } else {
                None
            };
            let item = (event_type == "purchase")
                .then(|| rng.pick(&["hat", "sneakers", "phone case", "lipstick"]));
            (
                "tiktok",
                "bottom",
                event_type,
                json!({"user": user, "engagement": {"actionTime": ts,
                    "profileId": format!("p-{}", rng.below(100_000)),
                    "purchasedItem": item,
                    "purchaseAmount": amount}}),
            )
        }
    };
    json!({"eventId": id, "timestamp": ts, "source": source, "funnelStage": stage,
        "eventType": event_type, "data": data,
        "context": {"sdk": {"name": format!("{source}-events-sdk"), "version": "3.4.1"},
            "userAgent": rng.pick(USER_AGENTS),
            "ip": format!("203.0.{}.{}", rng.below(256), rng.below(256)),
            "locale": rng.pick(&["de-DE", "pt-BR", "en-US", "fr-FR", "ja-JP", "hi-IN"]),
            "sessionId": rng.uuid(),
            "page": {"url": format!("https://shop.example.com/p/{}", rng.hex(10)),
                     "referrer": "https://www.example.org/"}}})
}

/// `n` rows exactly as the worker would insert them, and the mean payload size.
/// Timestamps fall in the `spread` before now.
fn rows(n: usize, spread: Duration) -> (Vec<Row>, usize) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let base = OffsetDateTime::now_utc() - spread;
    let spread_ms = (spread.as_millis() as u64).max(1);
    let ingested = OffsetDateTime::now_utc();
    let mut bytes = 0;
    let rows = (0..n)
        .map(|i| {
            let payload = serde_json::to_vec(&event(&mut rng, i, base, spread_ms)).unwrap();
            bytes += payload.len();
            store::decode(&payload, Some(ingested)).unwrap_or_else(|r| panic!("{r:?}"))
        })
        .collect();
    (rows, bytes / n.max(1))
}

/// One batch through one variant, in one transaction; returns how many rows were new.
async fn run_batch(pool: &Pool, cache: &KeyCache, variant: Variant, rows: &[Row]) -> u64 {
    if variant == Variant::Worker {
        let outcome = store::insert_batch(pool, cache, rows).await.unwrap();
        assert!(outcome.rejected.is_empty());
        return outcome.inserted.iter().filter(|&&b| b).count() as u64;
    }
    let mut client = pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let new = match variant {
        Variant::Copy => {
            store::copy_keys(&tx, "event_keys", rows).await.unwrap();
            store::copy_rows(&tx, "events", rows, &[]).await.unwrap()
        }
        Variant::CopyTemp | Variant::CopyTempDrop => {
            let create = if variant == Variant::CopyTemp {
                format!(
                    "CREATE TEMP TABLE IF NOT EXISTS events_load {TEMP_COLUMNS} ON COMMIT DELETE ROWS"
                )
            } else {
                format!("CREATE TEMP TABLE events_load_tx {TEMP_COLUMNS} ON COMMIT DROP")
            };
            let table = if variant == Variant::CopyTemp {
                "events_load"
            } else {
                "events_load_tx"
            };
            tx.batch_execute(&create).await.unwrap();
            store::copy_rows(&tx, table, rows, &[]).await.unwrap();
            // The dedup is `event_keys` (events is partitioned): keys first, then the
            // rows whose key is new.
            let insert = format!(
                "WITH fresh AS (INSERT INTO event_keys (event_id, event_time) \
                 SELECT event_id, event_time FROM {table} ON CONFLICT (event_id) DO NOTHING \
                 RETURNING event_id) \
                 INSERT INTO events ({COLUMNS}) SELECT {COLUMNS} FROM {table} \
                 WHERE event_id IN (SELECT event_id FROM fresh) RETURNING event_id"
            );
            // The per-transaction table is a new relation every time: no cached plan.
            let ids = if variant == Variant::CopyTemp {
                let statement = tx.prepare_cached(&insert).await.unwrap();
                tx.query(&statement, &[]).await.unwrap()
            } else {
                tx.query(&insert, &[]).await.unwrap()
            };
            ids.len() as u64
        }
        Variant::Worker => unreachable!(),
    };
    tx.commit().await.unwrap();
    new
}

/// All rows through one variant: batches of `batch`, `concurrency` at a time.
async fn run(
    url: &str,
    variant: Variant,
    rows: &Arc<Vec<Row>>,
    batch: usize,
    concurrency: usize,
) -> (Duration, u64) {
    let pool = service_kit::db::pool(url, concurrency, &[]).unwrap();
    service_kit::db::warm(&pool, concurrency).await;
    let chunks = rows.len().div_ceil(batch);
    let next = Arc::new(AtomicUsize::new(0));
    // As in the worker: one key cache for the process (user_keys is never reset).
    let cache = Arc::new(KeyCache::default());
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (pool, rows, next, cache) =
                (pool.clone(), rows.clone(), next.clone(), cache.clone());
            tokio::spawn(async move {
                let mut new = 0;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= chunks {
                        return new;
                    }
                    let end = ((i + 1) * batch).min(rows.len());
                    new += run_batch(&pool, &cache, variant, &rows[i * batch..end]).await;
                }
            })
        })
        .collect();
    let mut new = 0;
    for t in tasks {
        new += t.await.unwrap();
    }
    (started.elapsed(), new)
}

async fn reset(client: &tokio_postgres::Client) {
    client
        .batch_execute("TRUNCATE events, event_keys; CHECKPOINT")
        .await
        .unwrap();
}

async fn count(client: &tokio_postgres::Client) -> u64 {
    let n: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    n as u64
}

/// The JSON line (field order kept: it starts with `{"bench":"insert"`).
#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    events: usize,
    batch: usize,
    concurrency: usize,
    rounds: usize,
    spread_seconds: usize,
    avg_event_bytes: usize,
    postgres: String,
    fsync: bool,
    variants: Vec<VariantReport>,
}

#[derive(Debug, Serialize)]
struct VariantReport {
    name: String,
    rows_per_s: u64,
    ratio_to_copy: f64,
    /// Every round, in seconds.
    seconds: Vec<f64>,
}

#[derive(Debug)]
struct Figure {
    name: String,
    describe: &'static str,
    best: Duration,
    rounds: Vec<Duration>,
}

fn main() {
    // `cargo bench` passes `--bench`; filter arguments are ignored.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench());
}

async fn bench() {
    // `cargo test --benches` (or `--all-targets`) runs this binary without `--bench`,
    // unoptimised: then it is a smoke test, with small defaults.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let n = env_usize("BENCH_EVENTS", if smoke { 2000 } else { 200_000 }).max(1);
    let batch = env_usize("BENCH_BATCH", 1000).max(1);
    let concurrency = env_usize("BENCH_CONCURRENCY", 3).max(1);
    let rounds = env_usize("BENCH_ROUNDS", if smoke { 1 } else { 3 }).max(1);
    let spread = env_usize("BENCH_SPREAD_SECONDS", 60).max(1);

    let pg = testkit::Postgres::start().await.expect("start PostgreSQL");
    let url = pg.create_database("insert_bench").await.unwrap();
    let mut admin = pg.connect("insert_bench").await.unwrap();
    worker::migrate::run(&mut admin).await.unwrap();
    let version: String = admin
        .query_one("SHOW server_version", &[])
        .await
        .unwrap()
        .get(0);

    let generated = Instant::now();
    let (rows, avg_bytes) = rows(n, Duration::from_secs(spread as u64));
    let rows = Arc::new(rows);
    eprintln!(
        "insert bench: {n} events (~{avg_bytes} bytes each, generated in {:.1?}), batch {batch}, \
         concurrency {concurrency}, {rounds} round(s), PostgreSQL {version} (fsync=off)",
        generated.elapsed()
    );

    // (variant, then a second pass of the same rows: all duplicates)
    let plan = [
        (Variant::Copy, false),
        (Variant::Worker, true),
        (Variant::CopyTemp, true),
        (Variant::CopyTempDrop, true),
    ];
    let mut figures: Vec<Figure> = Vec::new();
    let mut record = |name: String, describe: &'static str, took: Duration| match figures
        .iter_mut()
        .find(|f| f.name == name)
    {
        Some(f) => {
            f.best = f.best.min(took);
            f.rounds.push(took);
        }
        None => figures.push(Figure {
            name,
            describe,
            best: took,
            rounds: vec![took],
        }),
    };
    for round in 1..=rounds {
        for (variant, dup_pass) in plan {
            reset(&admin).await;
            let (took, new) = run(&url, variant, &rows, batch, concurrency).await;
            assert_eq!(new, n as u64, "{}: rows reported new", variant.label());
            assert_eq!(count(&admin).await, n as u64, "{}", variant.label());
            eprintln!(
                "round {round} {:<22} {:>8.2?} {:>10.0} rows/s",
                variant.label(),
                took,
                n as f64 / took.as_secs_f64()
            );
            record(variant.label().to_owned(), variant.describe(), took);
            if dup_pass {
                admin.batch_execute("CHECKPOINT").await.unwrap();
                let (took, new) = run(&url, variant, &rows, batch, concurrency).await;
                assert_eq!(
                    new,
                    0,
                    "{}: second pass must find only duplicates",
                    variant.label()
                );
                assert_eq!(count(&admin).await, n as u64);
                let name = format!("{}_dup", variant.label());
                eprintln!(
                    "round {round} {:<22} {:>8.2?} {:>10.0} rows/s",
                    name,
                    took,
                    n as f64 / took.as_secs_f64()
                );
                record(name, "    same rows again, all duplicates", took);
            }
        }
    }

    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let ceiling = rate(figures[0].best);
    println!();
    println!(
        "Insert rate, {n} events (~{avg_bytes} B, timestamps over the last {spread} s), batch \
         {batch}, concurrency {concurrency}, best of {rounds}, PostgreSQL {version}, fsync=off"
    );
    println!();
    println!("| variant | what | rows/s | vs COPY |");
    println!("|---|---|---:|---:|");
    for f in &figures {
        println!(
            "| {} | {} | {:.0} | {:.2} |",
            f.name,
            f.describe.trim(),
            rate(f.best),
            rate(f.best) / ceiling
        );
    }
    println!();
    let variants: Vec<VariantReport> = figures
        .iter()
        .map(|f| VariantReport {
            name: f.name.clone(),
            rows_per_s: rate(f.best).round() as u64,
            ratio_to_copy: (rate(f.best) / ceiling * 1000.0).round() / 1000.0,
            seconds: f.rounds.iter().map(Duration::as_secs_f64).collect(),
        })
        .collect();
    let report = Report {
        bench: "insert",
        events: n,
        batch,
        concurrency,
        rounds,
        spread_seconds: spread,
        avg_event_bytes: avg_bytes,
        postgres: version,
        fsync: false,
        variants,
    };
    println!("{}", serde_json::to_string(&report).unwrap());
}
