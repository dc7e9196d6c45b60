//! The rollups and per-user sets: late events during compaction, events deleted and
//! stored again, incremental rollups equal to a rebuild.

use crate::platform;
use serde_json::{Value, json};
use std::time::Duration;
use testkit::{WAIT, events, eventually, rollups};

/// Events listed in `user_sets_pending` (not yet in their slot's block).
async fn listed(db: &tokio_postgres::Client) -> i64 {
    let mut events = Vec::new();
    for row in db
        .query("SELECT facts FROM user_sets_pending", &[])
        .await
        .unwrap()
    {
        user_sets::decode_activities(row.get(0), &mut events).unwrap();
    }
    events.len() as i64
}

/// Events and members of the level-0 sets per source and stage (each user here has one
/// event, so it is in one of them), and the listed event ids left.
async fn slot_sets(db: &tokio_postgres::Client) -> (i64, u64, i64) {
    let rows = db
        .query(
            "SELECT events, users FROM user_sets WHERE level = 0 AND dim = 'all' AND event_type = ''",
            &[],
        )
        .await
        .unwrap();
    let events = rows.iter().map(|r| r.get::<_, i64>(0)).sum();
    let members = rows
        .iter()
        .map(|r| user_sets::decode_bitmap(r.get(1)).unwrap().len())
        .sum();
    (events, members, listed(db).await)
}

/// One compaction round of the single dirty slot, run by hand, with `during` run while its
/// transaction is open; then its marks cleared.
async fn round_around(
    compactor: &mut tokio_postgres::Client,
    during: impl std::future::Future<Output = ()>,
) -> worker::compact::Cleared {
    let mut round = worker::compact::Round::begin(compactor, 256, Duration::ZERO)
        .await
        .unwrap()
        .expect("the slot is dirty");
    assert_eq!(round.slots().len(), 1);
    round.build().await.unwrap();
    during.await;
    let marks = round.commit().await.unwrap();
    worker::compact::clear(compactor, &marks).await.unwrap()
}

#[tokio::test]
async fn late_events_are_stored_during_a_compaction_and_added_exactly_once() {
    let p = platform().await.unwrap();
    let ingestion = p.start_ingestion(&[]).await.unwrap();
    // The worker's own compaction rounds never come: this test runs them by hand.
    let worker = p
        .start_worker(&["--worker-compact-interval", "1h"])
        .await
        .unwrap();
    let db = p.db().await.unwrap();
    let dirty = async || -> Vec<(i64, Option<i64>)> {
        db.query("SELECT gen, full_gen FROM user_sets_dirty", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    };
    // 40 events of the quarter-hour 2026-03-01 00:00, long ended, users u0..u39: the
    // slot is marked, its events listed (nothing built to rebuild).
    let post = async |range| {
        let (status, _) = p
            .post(ingestion.port, &Value::Array(events("slot", range)))
            .await
            .unwrap();
        assert_eq!(status, 202);
    };
    post(0..40).await;
    p.wait_rows(40).await.unwrap();
    assert_eq!(dirty().await.len(), 1);
    assert_eq!(dirty().await[0].1, None, "no full rebuild needed");
    assert_eq!(slot_sets(&db).await, (0, 0, 40));

    // A late event (a new user, u40) while a round is open: the worker stores it without
    // waiting for the round.
    let mut compactor = p.db().await.unwrap();
    let cleared = round_around(&mut compactor, async {
        post(40..41).await;
        p.wait_rows(41).await.unwrap();
    })
    .await;
    // The round's snapshot predates that batch: its blocks miss the event, so the mark
    // stays and readers keep reading the slot raw.
    assert!(cleared.cleared.is_empty(), "{cleared:?}");
    assert_eq!(slot_sets(&db).await, (40, 40, 1));
    // The next round adds it, once, and clears the mark.
    assert_eq!(
        worker::compact::until_clean(&mut compactor).await.unwrap(),
        1
    );
    assert!(dirty().await.is_empty());
    assert_eq!(slot_sets(&db).await, (41, 41, 0));

    // A full rebuild (as `rebuild_rollups()` asks) with another late event (u41) during
    // it: the rebuild's raw scan misses it; the next round adds it from its list,
    // once, without another full rebuild.
    db.execute(
        "INSERT INTO user_sets_dirty (slot) VALUES ('2026-03-01 00:00:00+00')",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(dirty().await, vec![(0, Some(0))]);
    let cleared = round_around(&mut compactor, async {
        post(41..42).await;
        p.wait_rows(42).await.unwrap();
    })
    .await;
    assert!(cleared.cleared.is_empty(), "{cleared:?}");
    assert_eq!(dirty().await, vec![(1, None)], "only late events since");
    assert_eq!(slot_sets(&db).await, (41, 41, 1));
    assert_eq!(
        worker::compact::until_clean(&mut compactor).await.unwrap(),
        1
    );
    assert_eq!(slot_sets(&db).await, (42, 42, 0));

    // Built from the lists or from the raw table, the block is the same.
    let incremental = rollups(&db).await.unwrap();
    db.execute(
        "INSERT INTO user_sets_dirty (slot) VALUES ('2026-03-01 00:00:00+00')",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        worker::compact::until_clean(&mut compactor).await.unwrap(),
        1
    );
    assert_eq!(rollups(&db).await.unwrap(), incremental);
    worker.stop().await.unwrap();
    ingestion.stop().await.unwrap();
}

#[tokio::test]
async fn a_late_event_deleted_then_stored_again_is_stored() {
    // An operator deletes some events (say, a bad import) with their dedup keys
    // (docs/operations.md), then they arrive again: their lists are still there, and must
    // not block the new insert.
    let p = platform().await.unwrap();
    let mut admin = p.db().await.unwrap();
    worker::migrate::run(&mut admin).await.unwrap();
    let pool = service_kit::db::pool(&p.database_url, 2, &[]).unwrap();
    let cache = worker::store::KeyCache::default();
    let rows: Vec<worker::store::Row> = events("again", 0..20)
        .iter()
        .map(|e| worker::store::decode(e.to_string().as_bytes(), None).unwrap())
        .collect();
    let stored = worker::store::insert_batch(&pool, &cache, &rows)
        .await
        .unwrap();
    assert!(stored.inserted.iter().all(|new| *new));
    assert_eq!(listed(&admin).await, 20);

    admin
        .batch_execute("DELETE FROM events; DELETE FROM event_keys")
        .await
        .unwrap();
    let again = worker::store::insert_batch(&pool, &cache, &rows)
        .await
        .unwrap();
    assert!(again.inserted.iter().all(|new| *new), "{again:?}");
    assert_eq!(p.row_count().await, 20);
    assert_eq!(listed(&admin).await, 40);
    // Deleting stored events is an operator's repair: like the rollups' counts, the sets
    // are made exact again by `rebuild_rollups()`.
    admin
        .execute("SELECT rebuild_rollups()", &[])
        .await
        .unwrap();
    assert_eq!(worker::compact::until_clean(&mut admin).await.unwrap(), 1);
    assert_eq!(slot_sets(&admin).await, (20, 20, 0));
}

#[tokio::test]
async fn incremental_rollups_equal_a_rebuild_from_the_raw_events() {
    let p = platform().await.unwrap();
    let ingestion = p.start_ingestion(&[]).await.unwrap();
    // Frequent compaction rounds, so hours are compacted, dirtied by later batches and
    // compacted again while the data arrives.
    let worker = p
        .start_worker(&[
            "--worker-batch-size",
            "37",
            "--worker-compact-interval",
            "50ms",
        ])
        .await
        .unwrap();
    // Both sources, every shape, null amounts, out-of-order times and offsets, bucket
    // boundaries, and duplicates across and within requests.
    let mut all = events("roll", 0..600);
    all[3]["timestamp"] = json!("2026-03-01T23:59:59.999Z");
    all[7]["timestamp"] = json!("2026-03-02T00:00:00Z");
    all[11]["timestamp"] = json!("2026-03-02T01:30:00+02:00");
    all[5]["data"]["engagement"]["purchaseAmount"] = json!("0.005");
    all[9]["data"]["engagement"]["purchaseAmount"] = Value::Null;
    for body in all.chunks(50).rev() {
        let mut body = body.to_vec();
        let repeats = body[..5].to_vec();
        body.extend(repeats);
        let (status, reply) = p.post(ingestion.port, &Value::Array(body)).await.unwrap();
        assert_eq!(status, 202, "{reply}");
    }
    let (status, _) = p
        .post(ingestion.port, &Value::Array(all[100..200].to_vec()))
        .await
        .unwrap();
    assert_eq!(status, 202);
    p.wait_rows(600).await.unwrap();
    // Stored events come again, mixed with new ones, under message ids the broker has not
    // seen (as a redelivery, or a resend past its duplicate window): the worker's batches
    // hold both, and only the new ones may count.
    let mut mixed = events("roll", 600..650);
    for (i, old) in all[200..250].iter().enumerate() {
        mixed.insert(2 * i, old.clone());
    }
    for e in &mixed {
        let id = format!("again-{}", e["eventId"].as_str().unwrap());
        p.publish_raw("facebook.ad.view", serde_json::to_vec(e).unwrap(), &id)
            .await
            .unwrap();
    }
    p.wait_rows(650).await.unwrap();
    eventually("the consumer to drain", WAIT, || async {
        (p.consumer_state().await.ok()? == (0, 0)).then_some(())
    })
    .await
    .unwrap();

    let db = p.db().await.unwrap();
    p.wait_compacted().await.unwrap();
    let incremental = rollups(&db).await.unwrap();
    assert!(
        incremental
            .iter()
            .any(|r| r.starts_with("user_sets 13 ") && r.contains("\"country\"")),
        "the coarsest blocks are built"
    );
    let per_grain: Vec<(i64, String)> = db
        .query(
            "SELECT sum(events)::bigint, sum(revenue)::text FROM rollup_events GROUP BY grain ORDER BY grain",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let raw: (i64, String) = db
        .query_one(
            "SELECT count(*), coalesce(sum(revenue), 0)::text FROM events",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(
        per_grain,
        vec![raw.clone(); 3],
        "each grain counts every event once"
    );
    assert_eq!(raw.0, 650);
    // Users recur across the batches: after the first, their keys come from the worker's
    // cache, and each is the key user_keys holds.
    let wrong: i64 = db
        .query_one(
            "SELECT count(*) FROM events e LEFT JOIN user_keys k USING (source, user_id) \
             WHERE e.user_key IS DISTINCT FROM k.user_key",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(wrong, 0, "every row carries its user's key");

    worker.stop().await.unwrap();
    p.rebuild_rollups().await.unwrap();
    let rebuilt = rollups(&db).await.unwrap();
    assert!(!rebuilt.is_empty());
    assert_eq!(incremental, rebuilt);
    ingestion.stop().await.unwrap();
}
