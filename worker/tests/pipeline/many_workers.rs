//! Several workers on one stream: the distinct-user reports stay exact whichever replica
//! stores or compacts what, with late and out-of-order events and a replica killed
//! mid-batch; and compaction, one replica at a time (an advisory lock), fails over when
//! its owner hangs.

use crate::platform;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use testkit::{ChildProcess, Platform, Service, WAIT, eventually};

/// Holds every event of both tests: up to 48 h before 2026-03-01 to 56 h after.
const RANGE: &str = "from=2026-02-26T00:00:00Z&to=2026-03-05T00:00:00Z";

/// A user: (source, userId).
type User = (String, String);

/// The distinct-user figures computed from the events themselves, independently of the
/// rollups and the per-user sets the reports read.
#[derive(Debug, Default)]
struct Oracle {
    /// Per source: users with a top event, users with a bottom event, and per event type
    /// its events and users.
    funnel: BTreeMap<String, Funnel>,
    /// Per country: events and users.
    geo: BTreeMap<String, (i64, BTreeSet<User>)>,
    unknown_country: i64,
}

#[derive(Debug, Default)]
struct Funnel {
    top: BTreeSet<String>,
    bottom: BTreeSet<String>,
    steps: BTreeMap<String, (i64, BTreeSet<String>)>,
}

impl Oracle {
    fn of(events: &[Value]) -> Oracle {
        let mut o = Oracle::default();
        for e in events {
            let text = |v: &Value| v.as_str().unwrap().to_owned();
            let (source, stage) = (text(&e["source"]), text(&e["funnelStage"]));
            let user = text(&e["data"]["user"]["userId"]);
            let funnel = o.funnel.entry(source.clone()).or_default();
            match stage.as_str() {
                "top" => funnel.top.insert(user.clone()),
                _ => funnel.bottom.insert(user.clone()),
            };
            let step = funnel.steps.entry(text(&e["eventType"])).or_default();
            step.0 += 1;
            step.1.insert(user.clone());
            // docs/events.md, "Derived facts": Country.
            let country = if source == "facebook" {
                e["data"]["user"]["location"]["country"].as_str()
            } else {
                e["data"]["engagement"]["country"].as_str()
            };
            match country {
                Some(c) => {
                    let g = o.geo.entry(c.to_owned()).or_default();
                    g.0 += 1;
                    g.1.insert((source, user));
                }
                None => o.unknown_country += 1,
            }
        }
        o
    }

    /// Checks the funnel and geo answers against these figures.
    fn check(&self, funnel: &Value, geo: &Value) {
        for s in funnel["sources"].as_array().unwrap() {
            let source = s["source"].as_str().unwrap();
            let want = &self.funnel[source];
            let converted = want.top.intersection(&want.bottom).count();
            assert_eq!(s["topUsers"], want.top.len(), "{source} topUsers");
            assert_eq!(s["convertedUsers"], converted, "{source} convertedUsers");
            for step in s["steps"].as_array().unwrap() {
                let t = step["eventType"].as_str().unwrap();
                let (events, users) = want.steps.get(t).map_or((0, 0), |(n, u)| (*n, u.len()));
                assert_eq!(step["events"], events, "{source} {t} events");
                assert_eq!(step["users"], users, "{source} {t} users");
            }
        }
        let countries = geo["countries"].as_array().unwrap();
        assert_eq!(countries.len(), self.geo.len(), "countries");
        for c in countries {
            let name = c["country"].as_str().unwrap();
            let (events, users) = &self.geo[name];
            assert_eq!(c["events"], *events, "{name} events");
            assert_eq!(c["users"], users.len(), "{name} users");
        }
        assert_eq!(geo["unknownCountryEvents"], self.unknown_country);
    }
}

/// The funnel and geo reports over [`RANGE`] equal the oracle of `events`.
async fn assert_reports(p: &Platform, analytics: &Service, events: &[Value]) {
    let funnel = p.report(analytics, "funnel", RANGE).await.unwrap();
    let geo = p.report(analytics, "geo?limit=1000", RANGE).await.unwrap();
    Oracle::of(events).check(&funnel, &geo);
}

/// Waits until no slot is left to compact.
async fn wait_compacted(p: &Platform) {
    let db = p.db().await.unwrap();
    eventually("every slot compacted", WAIT, || async {
        let row = db
            .query_one("SELECT count(*) FROM user_sets_dirty", &[])
            .await
            .ok()?;
        (row.get::<_, i64>(0) == 0).then_some(())
    })
    .await
    .unwrap();
}

/// Sends `events` through ingestion, 50 per request, each answered 202.
async fn send(http: reqwest::Client, port: u16, events: Vec<Value>) {
    for chunk in events.chunks(50) {
        let r = http
            .post(format!("http://127.0.0.1:{port}/webhook/event"))
            .json(&chunk)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
}

const WORKER_ENV: [(&str, &str); 3] = [
    ("WORKER_BATCH_SIZE", "100"),
    ("NATS_ACK_WAIT", "2s"),
    ("WORKER_COMPACT_INTERVAL", "100ms"),
];

#[tokio::test(flavor = "multi_thread")]
async fn three_workers_one_killed_mid_batch_count_late_events_users_exactly_once() {
    let p = platform().await.unwrap();
    let ingestion = p.start_ingestion(&[]).await.unwrap();
    let analytics = p
        .start_analytics(&["--analytics-rate-limit-per-sec=0"])
        .await
        .unwrap();
    let mut workers: Vec<ChildProcess> = (0..3)
        .map(|_| p.start_worker_process(&WORKER_ENV).unwrap().0)
        .collect();
    // One event every 2 s from 2026-03-01, a third of them up to 48 h late: every slot
    // has ended, so the second half lands in slots already compacted.
    let all = testkit::generated_late(21, 6_000, 0.33, time::Duration::seconds(2)).unwrap();
    let (first, second) = all.split_at(3_000);

    send(p.http.clone(), ingestion.port, first.to_vec()).await;
    p.wait_rows(3_000).await.unwrap();
    wait_compacted(&p).await;
    assert_reports(&p, &analytics, first).await;

    let sender = tokio::spawn(send(p.http.clone(), ingestion.port, second.to_vec()));
    eventually("the second half being stored", WAIT, || async {
        (p.row_count().await > 3_500).then_some(())
    })
    .await
    .unwrap();
    workers[0].signal("KILL").unwrap();
    workers[0].wait_exit(Duration::from_secs(10)).await.unwrap();
    let at_kill = p.row_count().await;
    workers[0] = p.start_worker_process(&WORKER_ENV).unwrap().0;
    sender.await.unwrap();
    assert!(at_kill < 6_000, "killed mid-stream ({at_kill} rows)");
    p.wait_rows(6_000).await.unwrap();
    eventually("the consumer to drain", WAIT, || async {
        (p.consumer_state().await.ok()? == (0, 0)).then_some(())
    })
    .await
    .unwrap();
    wait_compacted(&p).await;

    let stored: i64 = p
        .db()
        .await
        .unwrap()
        .query_one("SELECT count(DISTINCT event_id) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!((p.row_count().await, stored), (6_000, 6_000));
    assert_reports(&p, &analytics, &all).await;
}

/// The application name of the session holding the compaction lock, if one does.
async fn lock_holder(db: &tokio_postgres::Client) -> Option<String> {
    let key = worker::compact::LOCK_KEY;
    let (hi, lo) = (key >> 32, key & 0xffff_ffff);
    db.query_opt(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
           AND l.classid::bigint = $1 AND l.objid::bigint = $2",
        &[&hi, &lo],
    )
    .await
    .ok()
    .flatten()
    .map(|r| r.get(0))
}

/// Stops (SIGSTOP) whichever worker holds the compaction lock while it holds it; returns
/// its index.
async fn stop_the_compacting_worker(
    p: &Platform,
    workers: &[(ChildProcess, u16)],
    names: &[String],
) -> usize {
    let db = p.db().await.unwrap();
    eventually("a worker stopped mid-round", WAIT, || async {
        let holder = lock_holder(&db).await?;
        let i = names.iter().position(|n| *n == holder)?;
        workers[i].0.signal("STOP").ok()?;
        // Stopped between two statements, or just after its round: only the first counts.
        if lock_holder(&db).await.as_deref() == Some(holder.as_str()) {
            return Some(i);
        }
        workers[i].0.signal("CONT").ok()?;
        None
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_passes_to_another_worker_when_its_owner_hangs_mid_round() {
    let p = platform().await.unwrap();
    let ingestion = p.start_ingestion(&[]).await.unwrap();
    let analytics = p
        .start_analytics(&["--analytics-rate-limit-per-sec=0"])
        .await
        .unwrap();
    let names: Vec<String> = ["worker-a", "worker-b"].map(String::from).to_vec();
    let workers: Vec<(ChildProcess, u16)> = names
        .iter()
        .map(|name| {
            let url = format!("{}?application_name={name}", p.database_url);
            let mut env = WORKER_ENV.to_vec();
            env.extend([
                ("DATABASE_URL", url.as_str()),
                ("WORKER_IDLE_TRANSACTION_TIMEOUT", "2s"),
            ]);
            p.start_worker_process(&env).unwrap()
        })
        .collect();
    // Many slots (an event every 10 s over 2 days, late ones up to 2 more) keep rounds
    // going while the events arrive.
    let all = testkit::generated_late(22, 20_000, 0.33, time::Duration::seconds(10)).unwrap();
    let sender = tokio::spawn(send(p.http.clone(), ingestion.port, all.clone()));

    let hung = stop_the_compacting_worker(&p, &workers, &names).await;
    let other = &names[1 - hung];
    // The hung worker's sessions end after WORKER_IDLE_TRANSACTION_TIMEOUT (a batch it
    // was inserting too, which would hold back the same events redelivered to the
    // other); the other worker compacts.
    let db = p.db().await.unwrap();
    eventually("the hung worker's session ended", WAIT, || async {
        let left: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
                   AND state = 'idle in transaction'",
                &[&names[hung]],
            )
            .await
            .ok()?
            .get(0);
        (left == 0).then_some(())
    })
    .await
    .unwrap();
    eventually("the other worker compacting", WAIT, || async {
        (lock_holder(&db).await.as_deref() == Some(other.as_str())).then_some(())
    })
    .await
    .unwrap();
    sender.await.unwrap();
    p.wait_rows(20_000).await.unwrap();
    wait_compacted(&p).await;
    assert_reports(&p, &analytics, &all).await;

    // Resumed, the hung worker finds its session gone (a failed round, counted) and
    // compacts again: a pass succeeds after the resume.
    let (hung_worker, hung_port) = &workers[hung];
    let resumed = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
    hung_worker.signal("CONT").unwrap();
    p.wait_ready(*hung_port).await.unwrap();
    eventually("the resumed worker compacting again", WAIT, || async {
        let errors = p
            .metric(*hung_port, "worker_compactor_errors_total")
            .await?;
        let success = p
            .metric(
                *hung_port,
                "worker_compactor_last_success_timestamp_seconds",
            )
            .await?;
        (errors >= 1.0 && success >= resumed).then_some(())
    })
    .await
    .unwrap();
}
