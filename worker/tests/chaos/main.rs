//! The chaos test: steady load through ingestion for a bounded time while a seeded loop
//! SIGKILLs and restarts the worker, restarts nats-server and restarts PostgreSQL in
//! immediate mode, and poison is published straight to the stream; then a drain and what a
//! user would check: every event answered 202 stored exactly once, the rollups and
//! per-user sets equal to a rebuild, the reports equal to the accepted events, the DLQ
//! holding exactly the poison.
//!
//! `CHAOS_SECS` (default 40) sets how long the load and the faults last, `CHAOS_RATE`
//! (default 300) the events offered per second, `CHAOS_SEED` the seed of every random
//! choice (printed at the start: the same seed gives the same events, poison and fault
//! sequence). It prints a summary; `bench/chaos.sh` runs it for 10 minutes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod checks;
mod faults;
mod load;

use checks::{CheckFailed, Outcome};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;
use testkit::{Platform, eventually, rollups};
use time::OffsetDateTime;
use time::macros::datetime;
use tokio::time::Instant;

/// Worker settings: the defaults, but for a shorter `ack_wait`, so that the messages a
/// killed worker held come back within the drain of a short run.
const WORKER_ENV: &[(&str, &str)] = &[("NATS_ACK_WAIT", "10s")];
/// Longest wait for the backlog to drain after the faults (redeliveries after `ack_wait`,
/// nak delays of up to 30 s after the database was down).
const DRAIN: Duration = Duration::from_secs(180);

#[derive(Debug)]
struct Settings {
    secs: u64,
    rate: u32,
    seed: u64,
}

impl Settings {
    fn from_env() -> Settings {
        let var = |name: &str| {
            std::env::var(name).ok().map(|v| {
                v.parse::<u64>()
                    .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
            })
        };
        Settings {
            secs: var("CHAOS_SECS").unwrap_or(40),
            rate: var("CHAOS_RATE").unwrap_or(300) as u32,
            seed: var("CHAOS_SEED").unwrap_or_else(rand::random),
        }
    }
}

/// The events stream's and the consumer's state, to tell a stuck drain's cause.
async fn stream_state(p: &Platform) -> String {
    let state = async {
        let js = p.js().await?;
        let mut stream = js.get_stream(&p.names.stream).await?;
        let s = stream.info().await?.state.clone();
        let c = stream.consumer_info(&p.names.consumer).await?.clone();
        anyhow::Ok(format!(
            "stream: messages {} first {} last {} deleted {}; consumer: delivered {:?}, \
             ack floor {:?}, pending {}, ack pending {}, redelivered {}",
            s.messages,
            s.first_sequence,
            s.last_sequence,
            s.deleted_count.unwrap_or_default(),
            c.delivered,
            c.ack_floor,
            c.num_pending,
            c.num_ack_pending,
            c.num_redelivered
        ))
    };
    state
        .await
        .unwrap_or_else(|e| format!("no stream state: {e}"))
}

/// The whole range of the data, and two ranges cut at random instants (so that their
/// edges are read from the raw table, their middles from rollups).
fn ranges(seed: u64, last: OffsetDateTime) -> Vec<(OffsetDateTime, OffsetDateTime)> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x7a9e);
    let lo = publisher::SEEDED_START - time::Duration::days(2);
    let span = (last - lo).whole_milliseconds().max(1) as i64;
    let mut out = vec![(
        datetime!(2025-01-01 0:00 UTC),
        datetime!(2027-01-01 0:00 UTC),
    )];
    for _ in 0..2 {
        let a = lo + time::Duration::milliseconds(rng.random_range(0..span));
        let b = lo + time::Duration::milliseconds(rng.random_range(0..span));
        out.push((a.min(b), a.max(b)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_crashes_of_worker_nats_and_postgres_every_accepted_event_is_stored_once() {
    let settings = Settings::from_env();
    eprintln!(
        "chaos: {} s at {} events/s, seed {} (replay with CHAOS_SEED={} CHAOS_SECS={})",
        settings.secs, settings.rate, settings.seed, settings.seed, settings.secs
    );
    let mut p = Platform::builder()
        .worker_binary(env!("CARGO_BIN_EXE_worker"))
        .start()
        .await
        .unwrap();
    let ingestion = p.start_ingestion(&[]).await.unwrap();
    let (process, port) = p.start_worker_process(WORKER_ENV).unwrap();
    p.wait_ready(port).await.unwrap();
    let mut worker = faults::Worker {
        process,
        env: WORKER_ENV,
    };

    let started = Instant::now();
    let until = started + Duration::from_secs(settings.secs);
    let load = tokio::spawn(load::offer(
        settings.seed,
        settings.rate,
        format!("http://127.0.0.1:{}/webhook/event", ingestion.port),
        until,
    ));
    let poison = tokio::spawn(load::poison(
        settings.seed,
        p.js().await.unwrap(),
        p.names.prefix.clone(),
        until,
    ));
    let injected = faults::inject(&mut p, &mut worker, settings.seed, started, until)
        .await
        .unwrap();
    let tally = load.await.unwrap();
    let poisoned = poison.await.unwrap();
    let loaded = started.elapsed();

    // Every service is up again: the backlog drains.
    let drain_started = Instant::now();
    let last = std::sync::Mutex::new(None);
    let drained = eventually("the consumer to drain", DRAIN, || async {
        let state = p.consumer_state().await.ok()?;
        *last.lock().unwrap() = Some(state);
        (state == (0, 0)).then_some(())
    })
    .await
    .map_err(|e| {
        let last = last.lock().unwrap();
        e.context(format!("(pending, ack pending): {last:?}"))
    });
    let drained_in = drain_started.elapsed();
    let db = p.db().await.unwrap();
    let compacted = p.wait_compacted().await;
    // Nothing writes while the rollups are read.
    worker.process.signal("TERM").unwrap();
    let worker_exit = worker
        .process
        .wait_exit(Duration::from_secs(60))
        .await
        .unwrap();

    let mut results: Vec<(&str, Outcome)> = vec![
        (
            "the backlog drained and every slot was compacted",
            match (drained, compacted) {
                (Ok(()), Ok(())) => Ok(format!("in {:.1} s", drained_in.as_secs_f64())),
                (d, c) => Err(CheckFailed::Found(format!(
                    "{}; {}; {}",
                    d.err().map(|e| format!("{e:#}")).unwrap_or_default(),
                    c.err().map(|e| format!("{e:#}")).unwrap_or_default(),
                    stream_state(&p).await
                ))),
            },
        ),
        (
            "every request got a definite answer",
            checks::answers(&tally, &poisoned),
        ),
        (
            "every eventId answered 202 is stored exactly once",
            checks::stored_exactly_once(&db, &tally).await,
        ),
        (
            "events answered 422 are not stored",
            checks::rejected_not_stored(&db, &tally).await,
        ),
    ];
    let stream = p
        .js()
        .await
        .unwrap()
        .get_stream(&p.names.stream)
        .await
        .unwrap();
    results.push((
        "the events stream holds nothing unprocessed",
        checks::stream_leftovers(
            &stream,
            &p.names.consumer,
            &format!("{}.>", p.names.prefix),
            &tally,
            &poisoned,
        )
        .await,
    ));
    let dead = p.dead_letters().await.unwrap();
    results.push((
        "the DLQ holds exactly the poison",
        checks::dead_letters_are_the_poison(&dead, &poisoned),
    ));
    let analytics = p.start_analytics(&[]).await.unwrap();
    p.wait_ready(analytics.port).await.unwrap();
    let last = tally
        .accepted
        .values()
        .map(|f| f.time)
        .max()
        .unwrap_or(publisher::SEEDED_START);
    results.push((
        "stats and revenue equal the accepted events'",
        checks::reports_equal_the_accepted_events(
            &p.http,
            analytics.port,
            &tally.accepted,
            &ranges(settings.seed, last),
        )
        .await,
    ));
    analytics.stop().await.unwrap();
    let incremental = rollups(&db).await.unwrap();
    p.rebuild_rollups().await.unwrap();
    let rebuilt = rollups(&db).await.unwrap();
    results.push((
        "rollups and per-user sets equal a rebuild",
        checks::rollups_equal_a_rebuild(&incremental, &rebuilt),
    ));

    let mut summary = vec![
        "| | |".to_owned(),
        "|---|---|".to_owned(),
        format!("| seed | `CHAOS_SEED={}` |", settings.seed),
        format!(
            "| load and faults | {:.0} s at {} events/s offered (drain {:.1} s) |",
            loaded.as_secs_f64(),
            settings.rate,
            drained_in.as_secs_f64()
        ),
        format!(
            "| events accepted (202) | {} distinct eventIds in {} requests ({} events with repeats) |",
            tally.accepted.len(),
            tally.requests_accepted,
            tally.events_posted
        ),
        format!(
            "| retried | {} attempts answered 503, {} without an answer |",
            tally.retried_503, tally.retried_no_answer
        ),
        format!("| invalid events answered 422 | {} |", tally.rejected),
    ];
    for fault in [
        faults::Fault::WorkerKilled,
        faults::Fault::NatsRestarted,
        faults::Fault::PostgresRestarted,
    ] {
        summary.push(format!(
            "| {} | {} |",
            fault.describe(),
            injected.counts.get(&fault).copied().unwrap_or(0)
        ));
    }
    let undecodable = poisoned
        .sent
        .values()
        .filter(|k| **k == load::Poison::Undecodable)
        .count();
    summary.push(format!(
        "| poison published | {} ({} undecodable, {} failing the spec; {} publishes retried) |",
        poisoned.sent.len(),
        undecodable,
        poisoned.sent.len() - undecodable,
        poisoned.retried
    ));
    summary.push(format!("| dead letters | {} |", dead.len()));
    summary.push(format!("| last worker's exit on SIGTERM | {worker_exit} |"));
    summary.push(String::new());
    for (check, outcome) in &results {
        summary.push(match outcome {
            Ok(found) => format!("- PASS {check}: {found}"),
            Err(problem) => format!("- FAIL {check}: {}", checks::chain(problem)),
        });
    }
    eprintln!(
        "==== chaos summary ====\n{}\n==== end of chaos summary ====",
        summary.join("\n")
    );

    let failed: Vec<String> = results
        .iter()
        .filter_map(|(check, o)| {
            o.as_ref()
                .err()
                .map(|e| format!("{check}: {}", checks::chain(e)))
        })
        .collect();
    assert!(
        failed.is_empty(),
        "seed {}:\n{}",
        settings.seed,
        failed.join("\n")
    );
    ingestion.stop().await.unwrap();
}
