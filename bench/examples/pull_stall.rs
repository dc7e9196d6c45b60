//! Reproduces the worker's pull pattern against a private nats-server, to show how long
//! one pull takes: `consumer.batch().max_messages(1000).expires(50 ms)` (what
//! `worker/src/consumer.rs::fetch` does) while events trickle in at `RATE` per second.
//!
//! `cargo run --release -p bench --example pull_stall` prints the distribution of pull
//! durations. A pull should end after ~50 ms (the server's 408 at expiry); pulls that
//! take ~5 s ended on async-nats's own fallback timer (expires + 5 s) instead, and the
//! worker, which has one pull outstanding at a time, stores nothing meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_nats::jetstream::{self, consumer::pull, stream};
use futures::StreamExt;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let rate: u64 = std::env::var("RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(200);
    let seconds: u64 = std::env::var("SECONDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let nats = testkit::NatsServer::start().await.expect("nats-server");
    let js = nats.jetstream().await.unwrap();
    js.create_stream(stream::Config {
        name: "S".into(),
        subjects: vec!["s.>".into()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap();
    let consumer: jetstream::consumer::PullConsumer = js
        .get_stream("S")
        .await
        .unwrap()
        .get_or_create_consumer(
            "c",
            pull::Config {
                durable_name: Some("c".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                max_ack_pending: 20_000,
                ..Default::default()
            },
        )
        .await
        .unwrap();

    let publisher = js.clone();
    let end = Instant::now() + Duration::from_secs(seconds);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
        while Instant::now() < end {
            tick.tick().await;
            publisher
                .publish("s.x", "{}".into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    });

    let mut durations = Vec::new();
    let mut received = 0;
    while Instant::now() < end {
        let started = Instant::now();
        let mut batch = consumer
            .batch()
            .max_messages(1000)
            .expires(Duration::from_millis(50))
            .messages()
            .await
            .unwrap();
        let mut n = 0;
        while let Some(m) = batch.next().await {
            m.unwrap().ack().await.unwrap();
            n += 1;
        }
        received += n;
        let took = started.elapsed();
        if took > Duration::from_secs(1) {
            println!("pull took {took:.2?} and returned {n} messages");
        }
        durations.push(took);
    }
    durations.sort();
    let q = |p: f64| durations[((durations.len() - 1) as f64 * p) as usize];
    let slow = durations
        .iter()
        .filter(|d| **d > Duration::from_secs(1))
        .count();
    let stalled: Duration = durations
        .iter()
        .filter(|d| **d > Duration::from_secs(1))
        .sum();
    println!(
        "{} pulls, {received} messages at {rate}/s for {seconds} s: p50 {:.1?}, p99 {:.1?}, max {:.1?}; \
         {slow} pulls over 1 s, {stalled:.1?} in total spent in them",
        durations.len(),
        q(0.5),
        q(0.99),
        q(1.0)
    );
}
