//! Latency of every report over a large data set: p50/p95/p99 per endpoint for a 1-day,
//! a 30-day and a 90-day range, under concurrent clients, beside the targets.
//!
//! `cargo bench -p analytics --bench reports` starts a private PostgreSQL (testkit),
//! applies the schema, bulk-loads `BENCH_EVENTS` (10,000,000) realistic events spread
//! over the 90 days before now (the publisher's generator; rows made by the worker's own
//! `decode` and user keys, loaded with binary COPY), rebuilds the rollups from them, starts the analytics
//! service in this process, and runs `BENCH_CLIENTS` (8) concurrent clients per cell until
//! `BENCH_REQUESTS` (80) answers or `BENCH_CELL_SECONDS` (20) have passed. Run without
//! `--bench` (as `cargo test --benches` does) it uses 5,000 events and 8 requests: a smoke
//! test. Output: a markdown table and one JSON line starting with `{"bench":"reports"`.
//! The test cluster runs with fsync=off, which does not matter for reads.
//!
//! Every range ends just after the newest event, as on a live system (the partial slot at
//! the end holds events), whether the data were loaded now or earlier.
//!
//! `BENCH_DATABASE_URL` runs against an existing database instead (migrated, and loaded
//! unless it already holds `BENCH_EVENTS` events): to iterate on queries without
//! reloading; slots a migration left dirty are compacted first. `BENCH_REPORTS`
//! (comma-separated labels, e.g. `geo,stats`) runs only those.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use publisher::generator::{EventClock, Generator, GeneratorConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// (label, path and extra query, p95 target in ms)
const CELLS: &[(&str, &str, f64)] = &[
    ("stats", "/analytics/stats?", 50.0),
    ("timeseries", "/analytics/timeseries?interval=hour&", 50.0),
    ("geo", "/analytics/geo?", 50.0),
    ("revenue", "/analytics/revenue?", 50.0),
    ("campaigns/top", "/analytics/campaigns/top?", 50.0),
    ("funnel", "/analytics/funnel?", 250.0),
    ("users/top", "/analytics/users/top?", 250.0),
    (
        "demographics",
        "/analytics/demographics?source=facebook&",
        250.0,
    ),
];
const RANGES: &[(&str, i64)] = &[("1d", 1), ("30d", 30), ("90d", 90)];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} must be a positive integer, got {v:?}"))
        })
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Loads `events` events spread evenly over the 90 days before now, then rebuilds the
/// rollups and the per-user sets from them.
async fn load(client: &mut tokio_postgres::Client, url: &str, events: usize) -> serde_json::Value {
    // The worker's own key assignment runs on its pool's (deadpool) connections.
    let pool = service_kit::db::pool(url, 1, &[]).unwrap();
    let mut loader = pool.get().await.unwrap();
    let now = OffsetDateTime::now_utc();
    let span = time::Duration::days(90);
    let started = Instant::now();
    let mut generator = Generator::new(GeneratorConfig {
        seed: 42,
        duplicates: 0.0,
        invalid: 0.0,
        out_of_order: 0.0,
        clock: EventClock::Virtual {
            start: now - span,
            step: span / events as f64,
        },
    });
    let mut batch = Vec::new();
    let mut json = Vec::new();
    let mut loaded = 0;
    while loaded < events {
        let n = (events - loaded).min(50_000);
        generator.next_batch(n, &mut batch);
        let rows: Vec<worker::store::Row> = batch
            .iter()
            .map(|e| {
                json.clear();
                e.write_json(&mut json).unwrap();
                worker::store::decode(&json, None).unwrap()
            })
            .collect();
        let tx = loader.transaction().await.unwrap();
        let keys = worker::store::user_keys(&tx, None, &rows)
            .await
            .unwrap()
            .rows;
        worker::store::copy_keys(&tx, "event_keys", &rows)
            .await
            .unwrap();
        worker::store::copy_rows(&tx, "events", &rows, &keys)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        loaded += n;
    }
    let load = started.elapsed();
    let started = Instant::now();
    client
        .batch_execute("SELECT rebuild_rollups()")
        .await
        .unwrap();
    let counts = started.elapsed();
    let started = Instant::now();
    let hours = worker::compact::until_clean(client).await.unwrap();
    let sets = started.elapsed();
    client.batch_execute("VACUUM ANALYZE").await.unwrap();
    let rollup_rows: i64 = client
        .query_one(
            "SELECT (SELECT count(*) FROM rollup_events) + (SELECT count(*) FROM rollup_campaigns)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let (set_rows, set_bytes): (i64, i64) = client
        .query_one(
            "SELECT count(*), coalesce(sum(octet_length(users)), 0)::bigint FROM user_sets",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    eprintln!(
        "loaded {events} events in {load:.1?}; counts rebuilt in {counts:.1?} ({rollup_rows} rollup rows); \
         per-user sets of {hours} quarter-hours compacted in {sets:.1?} ({set_rows} sets, {} MiB)",
        set_bytes / (1 << 20)
    );
    serde_json::json!({"loadSeconds": load.as_secs_f64(), "rollupSeconds": counts.as_secs_f64(),
        "userSetSeconds": sets.as_secs_f64(), "userSets": set_rows, "userSetBytes": set_bytes,
        "rollupRows": rollup_rows})
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let events = env_usize("BENCH_EVENTS", if full { 10_000_000 } else { 5_000 });
    let clients = env_usize("BENCH_CLIENTS", 8);
    let requests = env_usize("BENCH_REQUESTS", if full { 80 } else { 8 });
    let cell_seconds = env_usize("BENCH_CELL_SECONDS", 20) as u64;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(
            events,
            clients,
            requests,
            Duration::from_secs(cell_seconds),
        ));
}

async fn run(events: usize, clients: usize, requests: usize, cell_budget: Duration) {
    let (_pg, url) = match std::env::var("BENCH_DATABASE_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let pg = testkit::Postgres::start().await.unwrap();
            let url = pg.create_database("events").await.unwrap();
            (Some(pg), url)
        }
    };
    let (mut client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    worker::migrate::run(&mut client).await.unwrap();
    let stored: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    let setup = if stored != events as i64 {
        client
            .batch_execute("TRUNCATE events, event_keys; SELECT rebuild_rollups()")
            .await
            .unwrap();
        load(&mut client, &url, events).await
    } else {
        eprintln!("reusing the {stored} events of BENCH_DATABASE_URL");
        // A migration may have reset the per-user sets: build them before measuring.
        let started = Instant::now();
        let slots = worker::compact::until_clean(&mut client).await.unwrap();
        if slots > 0 {
            eprintln!(
                "compacted {slots} quarter-hours in {:.1?}",
                started.elapsed()
            );
            client.batch_execute("VACUUM ANALYZE").await.unwrap();
        }
        serde_json::json!({"reused": true, "compactedSlots": slots,
            "userSetSeconds": started.elapsed().as_secs_f64()})
    };
    // Ranges end one second after the newest event, at a whole second.
    let newest: OffsetDateTime = client
        .query_one("SELECT coalesce(max(event_time), now()) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    let now = newest.replace_nanosecond(0).unwrap() + time::Duration::seconds(1);
    let only: Option<Vec<String>> = std::env::var("BENCH_REPORTS")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect());

    let config = <analytics::Config as clap::Parser>::try_parse_from([
        "analytics",
        "--host=127.0.0.1",
        "--port=0",
        "--database-url",
        &url,
        "--db-pool-max",
        &clients.to_string(),
        "--db-statement-timeout",
        "1m",
        // Concurrent clients as fast as they can: the service's own ceiling, not a quota.
        "--analytics-rate-limit-per-sec=0",
    ])
    .unwrap();
    let app = analytics::build(config).await.unwrap();
    let port = app.port();
    tokio::spawn(app.run_until_stopped(std::future::pending(), Duration::from_secs(1)));
    let http = reqwest::Client::new();

    println!("\n| report | range | requests | p50 ms | p95 ms | p99 ms | p95 target | met |");
    println!("|---|---|---:|---:|---:|---:|---:|---|");
    let mut results = Vec::new();
    for &(label, path, target) in CELLS {
        if only.as_ref().is_some_and(|o| !o.iter().any(|l| l == label)) {
            continue;
        }
        for &(range, days) in RANGES {
            let from = (now - time::Duration::days(days)).format(&Rfc3339).unwrap();
            let to = now.format(&Rfc3339).unwrap();
            let url = format!(
                "http://127.0.0.1:{port}{path}from={}&to={}",
                from.replace(':', "%3A").replace('+', "%2B"),
                to.replace(':', "%3A").replace('+', "%2B")
            );
            // One warm-up request per client, not measured: each pooled connection
            // prepares and plans this range's statements once, as a running service has.
            let mut warm = Vec::new();
            for _ in 0..clients {
                let (http, url) = (http.clone(), url.clone());
                warm.push(tokio::spawn(async move {
                    let r = http.get(&url).send().await.unwrap();
                    assert_eq!(
                        r.status(),
                        200,
                        "{url}: {}",
                        r.text().await.unwrap_or_default()
                    );
                }));
            }
            for w in warm {
                w.await.unwrap();
            }

            let issued = Arc::new(AtomicUsize::new(0));
            let deadline = Instant::now() + cell_budget;
            let mut tasks = Vec::new();
            for _ in 0..clients {
                let (http, url, issued) = (http.clone(), url.clone(), issued.clone());
                tasks.push(tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    while issued.fetch_add(1, Ordering::Relaxed) < requests
                        && Instant::now() < deadline
                    {
                        let t = Instant::now();
                        let r = http.get(&url).send().await.unwrap();
                        assert_eq!(r.status(), 200);
                        let _ = r.bytes().await.unwrap();
                        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    latencies
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            all.sort_by(f64::total_cmp);
            let (p50, p95, p99) = (
                percentile(&all, 50.0),
                percentile(&all, 95.0),
                percentile(&all, 99.0),
            );
            let met = if p95 <= target { "yes" } else { "no" };
            println!(
                "| {label} | {range} | {} | {p50:.1} | {p95:.1} | {p99:.1} | {target:.0} | {met} |",
                all.len()
            );
            results.push(serde_json::json!({"report": label, "range": range, "requests": all.len(),
                "p50Ms": p50, "p95Ms": p95, "p99Ms": p99, "p95TargetMs": target, "met": p95 <= target}));
        }
    }
    println!(
        "{}",
        serde_json::json!({"bench": "reports", "events": events, "clients": clients,
            "setup": setup, "cells": results})
    );
}
