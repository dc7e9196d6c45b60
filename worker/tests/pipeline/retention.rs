//! Daily partitions and retention (docs/operations.md, "Retention"): old days leave as
//! whole partitions while every report over them answers as before; older events are
//! refused; the dedup spans partitions.

use crate::platform;
use serde_json::Value;
use service_kit::schema::MIGRATIONS;
use testkit::{
    Platform, WAIT, eventually, facebook_bottom, facebook_top, tiktok_bottom, tiktok_top,
};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime, Time};

const COMPACT_SOON: &str = "--worker-compact-interval=200ms";

fn midnight() -> OffsetDateTime {
    OffsetDateTime::now_utc().replace_time(Time::MIDNIGHT)
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

/// `n` events of the day `days` before today (UTC), 37 minutes apart from 00:05, the
/// four shapes in turn, users shared across days.
fn day(tag: &str, days: i64, n: usize) -> Vec<Value> {
    let start = midnight() - Duration::days(days) + Duration::minutes(5);
    (0..n)
        .map(|i| {
            let id = format!("{tag}-{days}-{i}");
            let ts = rfc3339(start + Duration::minutes(37 * i as i64));
            let user = format!("u{}", i % 11);
            match i % 4 {
                0 => facebook_top(&id, &ts, &user, "Germany"),
                1 => facebook_bottom(&id, &ts, &user, Some("19.99")),
                2 => tiktok_top(&id, &ts, &user, "Brazil"),
                _ => tiktok_bottom(&id, &ts, &user, Some("5.25")),
            }
        })
        .collect()
}

/// `from=...&to=...` from `a` to `b` days before today's UTC midnight, plus `hours`
/// hours at the start: whole hours, as every rollup has them.
fn range(a: i64, hours: i64, b: i64) -> String {
    let from = midnight() - Duration::days(a) + Duration::hours(hours);
    let to = midnight() - Duration::days(b);
    format!("from={}&to={}", rfc3339(from), rfc3339(to))
}

/// The daily partitions of `events` (not the default one).
async fn partitions(p: &Platform) -> Vec<String> {
    let rows = p
        .db()
        .await
        .unwrap()
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'events'::regclass AND c.relname ~ '^events_[0-9]{8}$'
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

async fn count(p: &Platform, sql: &str) -> i64 {
    p.db()
        .await
        .unwrap()
        .query_one(sql, &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_old_days_keeps_every_report_refuses_older_events_and_dedups_across_days() {
    let p = platform().await.unwrap();
    let ingestion = p.start_ingestion(&[]).await.unwrap();
    let worker = p
        .start_worker(&["--events-retention-days=60", COMPACT_SOON])
        .await
        .unwrap();
    p.wait_ready(worker.port).await.unwrap();
    // Four days 34 to 31 days ago, 29 days ago and yesterday, each in its own partition.
    let mut sent = Vec::new();
    for days in [34, 33, 32, 31, 29, 1] {
        sent.extend(day("r", days, 39));
    }
    let (status, _) = p
        .post(ingestion.port, &Value::Array(sent.clone()))
        .await
        .unwrap();
    assert_eq!(status, 202);
    p.wait_rows(sent.len() as i64).await.unwrap();
    p.wait_compacted().await.unwrap();
    assert_eq!(count(&p, "SELECT count(*) FROM events_default").await, 0);
    assert_eq!(partitions(&p).await.len(), 60 + 1 + 3);

    // The days to drop alone; from inside them across the horizon; the last two days.
    // (Minute timeseries allow a week at most.)
    let ranges = [range(35, 0, 29), range(32, 5, 26), range(2, 0, -1)];
    let analytics = p
        .start_analytics(&["--analytics-rate-limit-per-sec=0"])
        .await
        .unwrap();
    let mut before = Vec::new();
    for r in &ranges {
        before.push(p.every_report(&analytics, r).await.unwrap());
    }
    // `stats` first: the four days to drop, then a day and a half of them plus day 29.
    assert_eq!(before[0][0]["total"], 4 * 39);
    assert_eq!(before[1][0]["total"], 39 - 8 + 39 + 39);
    analytics.stop().await.unwrap();

    // Thirty days of retention: the four days before the horizon go, the others stay.
    worker.stop().await.unwrap();
    let worker = p
        .start_worker(&["--events-retention-days=30", COMPACT_SOON])
        .await
        .unwrap();
    p.wait_ready(worker.port).await.unwrap();
    let horizon = rfc3339(midnight() - Duration::days(30));
    eventually("the old days dropped", WAIT, || async {
        (p.row_count().await == 78).then_some(())
    })
    .await
    .unwrap();
    let days = partitions(&p).await;
    assert_eq!(days.len(), 30 + 1 + 3, "{days:?}");
    let oldest = (midnight() - Duration::days(30)).date();
    assert_eq!(
        days.first().map(String::as_str),
        Some(
            format!(
                "events_{:04}{:02}{:02}",
                oldest.year(),
                oldest.month() as u8,
                oldest.day()
            )
            .as_str()
        )
    );
    assert_eq!(
        count(&p, "SELECT count(*) FROM event_keys").await,
        78,
        "the dropped days' keys leave with them"
    );

    let analytics = p
        .start_analytics(&["--analytics-rate-limit-per-sec=0"])
        .await
        .unwrap();
    for (r, expected) in ranges.iter().zip(&before) {
        let after = p.every_report(&analytics, r).await.unwrap();
        assert_eq!(&after, expected, "{r}");
    }

    // An event older than the horizon is dead-lettered, and changes no report.
    let (status, _) = p
        .post(ingestion.port, &Value::Array(day("late", 35, 1)))
        .await
        .unwrap();
    assert_eq!(status, 202);
    let letters = eventually("the expired event dead-lettered", WAIT, || async {
        let letters = p.dead_letters().await.ok()?;
        (!letters.is_empty()).then_some(letters)
    })
    .await
    .unwrap();
    let (_, headers) = &letters[0];
    assert_eq!(
        headers.get("Dlq-Reason").map(String::as_str),
        Some("expired")
    );
    assert!(
        headers
            .get("Dlq-Detail")
            .is_some_and(|d| d.contains(&format!("retention horizon {horizon}"))),
        "{headers:?}"
    );

    // Yesterday's first event again, moved to two days ago (another partition): the
    // dedup spans partitions, so it is not stored a second time.
    let mut moved = sent[sent.len() - 39].clone();
    moved["timestamp"] = Value::String(rfc3339(midnight() - Duration::days(2)));
    let (status, _) = p
        .post(ingestion.port, &Value::Array(vec![moved]))
        .await
        .unwrap();
    assert_eq!(status, 202);
    eventually("the worker has handled it", WAIT, || async {
        (p.consumer_state().await.ok()? == (0, 0)).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(p.row_count().await, 78);
    for (r, expected) in ranges.iter().zip(&before) {
        let after = p.every_report(&analytics, r).await.unwrap();
        assert_eq!(
            &after, expected,
            "{r}, after the refused and the moved event"
        );
    }

    analytics.stop().await.unwrap();
    worker.stop().await.unwrap();
    ingestion.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unpartitioned_table_is_converted_keeping_its_events_and_their_dedup() {
    let p = platform().await.unwrap();
    // A database as the previous release left it: migrations 1 to 11, events stored.
    let db = p.db().await.unwrap();
    db.batch_execute(
        "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
                                         applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .unwrap();
    for m in MIGRATIONS.iter().filter(|m| m.version <= 11) {
        db.batch_execute(m.sql).await.unwrap();
        db.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&m.version, &m.name],
        )
        .await
        .unwrap();
    }
    let old = testkit::events("old", 0..40);
    let literal = Value::Array(old.clone()).to_string().replace('\'', "''");
    db.batch_execute(&format!(
        "INSERT INTO events (event_id, event_time, source, funnel_stage, event_type, user_id, data)
         SELECT e->>'eventId', (e->>'timestamp')::timestamptz, e->>'source', e->>'funnelStage',
                e->>'eventType', e#>>'{{data,user,userId}}', e->'data'
         FROM jsonb_array_elements('{literal}'::jsonb) e;
         SELECT rebuild_rollups();"
    ))
    .await
    .unwrap();

    // The new worker migrates; the old events are all there, in the default partition.
    let ingestion = p.start_ingestion(&[]).await.unwrap();
    let worker = p.start_worker(&[COMPACT_SOON]).await.unwrap();
    p.wait_ready(worker.port).await.unwrap();
    assert_eq!(
        count(
            &p,
            "SELECT count(*) FROM pg_class WHERE relname = 'events' AND relkind = 'p'"
        )
        .await,
        1
    );
    assert_eq!(count(&p, "SELECT count(*) FROM events_default").await, 40);
    assert_eq!(count(&p, "SELECT count(*) FROM event_keys").await, 40);

    // Sent again, half of them with today's time (another partition), with ten new ones:
    // only the new ones are stored.
    let mut again = old.clone();
    for e in again.iter_mut().step_by(2) {
        e["timestamp"] = Value::String(rfc3339(midnight() + Duration::minutes(1)));
    }
    again.extend(testkit::events("new", 40..50));
    let (status, _) = p.post(ingestion.port, &Value::Array(again)).await.unwrap();
    assert_eq!(status, 202);
    p.wait_rows(50).await.unwrap();
    eventually("the worker has handled every event", WAIT, || async {
        (p.consumer_state().await.ok()? == (0, 0)).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(p.row_count().await, 50);
    p.wait_compacted().await.unwrap();
    let analytics = p.start_analytics(&[]).await.unwrap();
    let stats = p
        .report(
            &analytics,
            "stats",
            "from=2026-03-01T00:00:00Z&to=2026-03-02T00:00:00Z",
        )
        .await
        .unwrap();
    assert_eq!(stats["total"], 50);

    analytics.stop().await.unwrap();
    worker.stop().await.unwrap();
    ingestion.stop().await.unwrap();
}
