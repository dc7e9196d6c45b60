//! The fault loop: one fault at a time, chosen by a seeded RNG, each service brought back
//! before the next fault.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::Duration;
use testkit::ChildProcess;
use testkit::Platform;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// The worker SIGKILLed wherever it is (often mid-batch), then started again.
    WorkerKilled,
    /// nats-server SIGKILLed, then started again on its port with its store.
    NatsRestarted,
    /// PostgreSQL stopped in immediate mode (crash recovery at the next start), then
    /// started again.
    PostgresRestarted,
}

impl Fault {
    pub fn describe(self) -> &'static str {
        match self {
            Fault::WorkerKilled => "worker SIGKILLs",
            Fault::NatsRestarted => "nats-server restarts (SIGKILL)",
            Fault::PostgresRestarted => "PostgreSQL immediate restarts",
        }
    }
}

/// The faults injected, by kind.
#[derive(Debug, Default)]
pub struct Injected {
    pub counts: BTreeMap<Fault, u32>,
}

/// The worker's process and how to start another.
pub struct Worker<'a> {
    pub process: ChildProcess,
    pub env: &'a [(&'a str, &'a str)],
}

/// Injects faults until `until`: a pause of 1-4 s, then a fault with the service down for
/// 0-2 s. Kinds come in shuffled rounds of all three, so even a short run has each.
pub async fn inject(
    p: &mut Platform,
    worker: &mut Worker<'_>,
    seed: u64,
    started: Instant,
    until: Instant,
) -> anyhow::Result<Injected> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xfa17);
    let mut injected = Injected::default();
    let mut round: Vec<Fault> = Vec::new();
    loop {
        let pause = Duration::from_millis(rng.random_range(1000..4000));
        let down = Duration::from_millis(rng.random_range(0..2000));
        if Instant::now() + pause + down >= until {
            return Ok(injected);
        }
        tokio::time::sleep(pause).await;
        if round.is_empty() {
            round = vec![
                Fault::WorkerKilled,
                Fault::NatsRestarted,
                Fault::PostgresRestarted,
            ];
            round.shuffle(&mut rng);
        }
        let fault = round.pop().expect("a fault");
        eprintln!(
            "chaos: {:6.1} s  {fault:?}, down {} ms",
            started.elapsed().as_secs_f64(),
            down.as_millis()
        );
        match fault {
            Fault::WorkerKilled => {
                worker.process.kill();
                tokio::time::sleep(down).await;
                worker.process = p.start_worker_process(worker.env)?.0;
            }
            Fault::NatsRestarted => {
                p.nats.kill();
                tokio::time::sleep(down).await;
                p.nats.restart().await?;
            }
            Fault::PostgresRestarted => {
                p.pg.stop_immediate().await?;
                tokio::time::sleep(down).await;
                p.pg.start_again().await?;
            }
        }
        *injected.counts.entry(fault).or_default() += 1;
    }
}
