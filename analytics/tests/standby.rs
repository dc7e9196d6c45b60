//! Analytics reading a real streaming standby (`DATABASE_READ_URL`; docs/operations.md,
//! "A read replica"): once the standby has replayed, every report equals the primary's,
//! the per-user sets' REPEATABLE READ snapshots included; while it lags, its reports are
//! the primary's of an earlier moment, `Data-As-Of` says which, the lag is a metric and
//! readiness fails past `ANALYTICS_MAX_REPLICA_LAG`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use testkit::{EVERY_REPORT, Platform, Postgres, Service, WAIT, eventually};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const RANGE: &str = "from=2026-02-28T00:00:00Z&to=2026-03-02T00:00:00Z";
const MAX_LAG: &str = "2s";

async fn send(platform: &Platform, ingestion: &Service, seed: u64, n: usize) {
    for chunk in testkit::generated(seed, n).unwrap().chunks(100) {
        let (status, body) = platform
            .post(ingestion.port, &Value::Array(chunk.to_vec()))
            .await
            .unwrap();
        assert_eq!(status, 202, "{body}");
    }
}

/// Waits until the standby has replayed everything the primary had written when asked.
async fn wait_replayed(platform: &Platform, standby: &Postgres) {
    let primary = platform.db().await.unwrap();
    let written: String = primary
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let standby = standby.connect("postgres").await.unwrap();
    eventually("the standby replays the primary's WAL", WAIT, || async {
        let row = standby
            .query_one(
                "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                &[&written],
            )
            .await
            .ok()?;
        row.get::<_, bool>(0).then_some(())
    })
    .await
    .unwrap();
}

/// The `Data-As-Of` header of a stats answer.
async fn as_of(platform: &Platform, analytics: &Service) -> OffsetDateTime {
    let url = analytics.url(&format!("/analytics/stats?{RANGE}"));
    let response = platform.http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let header = response.headers()["data-as-of"]
        .to_str()
        .unwrap()
        .to_owned();
    OffsetDateTime::parse(&header, &Rfc3339).unwrap()
}

/// The `analytics_replica_lag_seconds` gauge.
async fn lag_gauge(platform: &Platform, analytics: &Service) -> f64 {
    platform
        .metric(analytics.port, "analytics_replica_lag_seconds")
        .await
        .expect("the replica lag gauge")
}

/// Sets the standby's replay paused or running, and waits until it is.
async fn pause_replay(standby: &Postgres, paused: bool) {
    let client = standby.connect("postgres").await.unwrap();
    let call = if paused {
        "SELECT pg_wal_replay_pause()"
    } else {
        "SELECT pg_wal_replay_resume()"
    };
    client.execute(call, &[]).await.unwrap();
    let want = if paused { "paused" } else { "not paused" };
    eventually(&format!("replay {want}"), WAIT, || async {
        let row = client
            .query_one("SELECT pg_get_wal_replay_pause_state()", &[])
            .await
            .ok()?;
        (row.get::<_, String>(0) == want).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn analytics_on_a_standby_answers_as_the_primary_did_and_says_how_far_behind_it_is() {
    let platform = Platform::start().await.unwrap();
    let no_limit = "--analytics-rate-limit-per-sec=0";
    let services = platform.start_services(&[], &[no_limit]).await.unwrap();
    let standby = platform.pg.start_standby().await.unwrap();
    let read_url = format!("--database-read-url={}", standby.url("events"));
    let max_lag = format!("--analytics-max-replica-lag={MAX_LAG}");
    let on_standby = platform
        .start_analytics(&[no_limit, &read_url, &max_lag])
        .await
        .unwrap();

    // Caught up: the same answers, and current.
    send(&platform, &services.ingestion, 5, 2_000).await;
    platform.wait_rows(2_000).await.unwrap();
    let stored = OffsetDateTime::now_utc();
    wait_replayed(&platform, &standby).await;
    let primary = platform
        .every_report(&services.analytics, RANGE)
        .await
        .unwrap();
    assert_eq!(primary[0]["total"], 2_000);
    let replica = platform.every_report(&on_standby, RANGE).await.unwrap();
    for ((query, p), r) in EVERY_REPORT.iter().zip(&primary).zip(&replica) {
        assert_eq!(r, p, "{query} from the standby");
    }
    eventually("the standby's answers are current", WAIT, || async {
        (as_of(&platform, &on_standby).await >= stored).then_some(())
    })
    .await
    .unwrap();
    platform.wait_ready(on_standby.port).await.unwrap();
    let before = OffsetDateTime::now_utc();
    let on_primary = as_of(&platform, &services.analytics).await;
    assert!(
        before <= on_primary && on_primary <= OffsetDateTime::now_utc(),
        "reading the primary, a report is as of its own time: {on_primary}"
    );

    // The lag gauge is the process's (one analytics per process in a deployment; here
    // both run in the test's): from now on only the standby's analytics sets it.
    services.analytics.stop().await.unwrap();

    // Lagging: replay paused while the primary stores 500 more events.
    pause_replay(&standby, true).await;
    let paused = OffsetDateTime::now_utc();
    send(&platform, &services.ingestion, 6, 500).await;
    platform.wait_rows(2_500).await.unwrap();
    let why = platform
        .wait_not_ready(on_standby.port, "replica", "behind its primary")
        .await
        .unwrap();
    assert!(
        why.contains("limit 2 s, ANALYTICS_MAX_REPLICA_LAG"),
        "{why}"
    );
    let lag = lag_gauge(&platform, &on_standby).await;
    assert!(lag > 2.0, "the lag gauge reads {lag} s");
    let lagging = platform.every_report(&on_standby, RANGE).await.unwrap();
    for ((query, p), r) in EVERY_REPORT.iter().zip(&primary).zip(&lagging) {
        assert_eq!(r, p, "{query} from the lagging standby: the earlier answer");
    }
    let stamped = as_of(&platform, &on_standby).await;
    assert!(stamped <= paused, "as of {stamped}, paused at {paused}");

    // Resumed: ready again, and the new answers.
    pause_replay(&standby, false).await;
    platform.wait_ready(on_standby.port).await.unwrap();
    wait_replayed(&platform, &standby).await;
    let on_primary = platform.start_analytics(&[no_limit]).await.unwrap();
    let primary = platform.every_report(&on_primary, RANGE).await.unwrap();
    assert_eq!(primary[0]["total"], 2_500);
    let replica = platform.every_report(&on_standby, RANGE).await.unwrap();
    for ((query, p), r) in EVERY_REPORT.iter().zip(&primary).zip(&replica) {
        assert_eq!(r, p, "{query} from the standby after it resumed");
    }
}
