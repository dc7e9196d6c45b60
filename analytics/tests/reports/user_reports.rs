//! The user reports (funnel, geo, demographics, users/top) in every state of the
//! per-user sets: raw, compacted, with late events listed, written while read.

use crate::data::{Fact, START, generate_from};
use crate::user_checks::{check_user_reports, check_user_reports_over};
use crate::{Setup, send, setup};
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use user_sets::slot_floor;

/// Compacts every dirty slot that has ended, as the worker does on its interval; returns
/// how many slots were dirty before.
async fn compact(s: &Setup) -> usize {
    let mut client = s.platform.db().await.unwrap();
    let n = worker::compact::until_clean(&mut client).await.unwrap();
    assert_eq!(
        dirty_slots(s).await,
        0,
        "every slot of the data set has ended"
    );
    n
}

/// Quarter-hour slots holding some of these events.
fn slots(facts: &[Fact]) -> usize {
    facts
        .iter()
        .map(|f| f.at.unix_timestamp().div_euclid(900))
        .collect::<HashSet<_>>()
        .len()
}

async fn dirty_slots(s: &Setup) -> usize {
    let client = s.platform.db().await.unwrap();
    client
        .query_one("SELECT count(*) FROM user_sets_dirty", &[])
        .await
        .unwrap()
        .get::<_, i64>(0) as usize
}

#[tokio::test]
async fn every_user_report_matches_the_raw_events_in_every_state_of_the_user_sets() {
    // The worker compacts only when this test says so, to check every state: nothing
    // built (all raw), everything built, built blocks with late events listed for three
    // of their quarter-hours, the same events stored without keys (some of their users
    // without a key yet) and read raw, and rebuilt.
    let mut s = setup(None, Some(3_600_000)).await;
    let all = slots(&s.facts);
    assert!(all > 200, "three days of quarter-hours: {all}");
    assert_eq!(dirty_slots(&s).await, all, "none compacted");
    check_user_reports(&s, "nothing compacted").await;

    assert_eq!(compact(&s).await, all);
    check_user_reports(&s, "every slot compacted").await;

    let mut late = generate_from(0x5DEE_CE66_D1CE_4E5B, "late", 90);
    for (i, e) in late.iter_mut().enumerate() {
        let hour = [5, 30, 50][i % 3];
        let t = OffsetDateTime::from_unix_timestamp(START + 3600 * hour + (i as i64 * 7) % 900)
            .unwrap();
        e["timestamp"] = json!(t.format(&Rfc3339).unwrap());
        if i % 2 == 0 {
            e["data"]["user"]["userId"] = json!(format!("new-{}", i % 6));
        }
    }
    let total = s.facts.len() + late.len();
    let facts = send(&s.platform, s.services.ingestion.port, &late, total).await;
    assert_eq!(slots(&facts), 3);
    s.facts.extend(facts);
    assert_eq!(dirty_slots(&s).await, 3);
    let client = s.platform.db().await.unwrap();
    let unkeyed = "SELECT count(*) FROM events WHERE user_key IS NULL";
    let n: i64 = client.query_one(unkeyed, &[]).await.unwrap().get(0);
    assert_eq!(n, 0, "the worker stores every event with its user's key");
    assert_eq!(
        listed(&s).await,
        late.len(),
        "and lists them for the compactor"
    );
    check_user_reports(&s, "late events listed in three compacted slots").await;

    // The same rows as a bulk load leaves them: without keys (some of their users have
    // none yet) and unlisted, their slots marked for a full rebuild (as `rebuild_rollups()`
    // marks them). Readers read those slots raw, look the keys up, or give a user who has
    // none yet a request-local id; the compactor assigns the keys.
    let ids: Vec<String> = late
        .iter()
        .map(|e| e["eventId"].as_str().unwrap().to_owned())
        .collect();
    client
        .batch_execute(
            "DELETE FROM user_sets_pending;
             UPDATE user_sets_dirty SET full_gen = gen;
             DELETE FROM user_keys WHERE user_id LIKE 'new-%';",
        )
        .await
        .unwrap();
    client
        .execute(
            "UPDATE events SET user_key = NULL WHERE event_id = ANY($1)",
            &[&ids],
        )
        .await
        .unwrap();
    let n: i64 = client.query_one(unkeyed, &[]).await.unwrap().get(0);
    assert_eq!(n, late.len() as i64);
    check_user_reports(&s, "late events without keys in three compacted slots").await;

    assert_eq!(compact(&s).await, 3);
    check_user_reports(&s, "late events compacted").await;
}

/// Events listed for their slots (stored, not yet in their blocks).
async fn listed(s: &Setup) -> usize {
    let client = s.platform.db().await.unwrap();
    let mut events = Vec::new();
    for row in client
        .query("SELECT facts FROM user_sets_pending", &[])
        .await
        .unwrap()
    {
        user_sets::decode_activities(row.get(0), &mut events).unwrap();
    }
    events.len()
}

#[tokio::test]
async fn reports_over_a_range_ending_now_are_exact_while_the_slot_is_written() {
    // Events of the last few minutes, so the range ends inside the quarter-hour being
    // written: readers take it as its block plus the events listed since the compactor
    // last folded them in, whichever state it is in.
    let mut s = setup(None, Some(3_600_000)).await;
    compact(&s).await;
    let now = OffsetDateTime::now_utc();
    let mut recent = generate_from(0x2545_F491_4F6C_DD1D, "now", 120);
    for (i, e) in recent.iter_mut().enumerate() {
        let t = now - Duration::from_millis(200 + 200 * i as u64);
        e["timestamp"] = json!(t.format(&Rfc3339).unwrap());
        if i % 3 == 0 {
            e["data"]["user"]["userId"] = json!(format!("recent-{}", i % 9));
        }
    }
    let from = (now - Duration::from_secs(3600)).format(&Rfc3339).unwrap();
    let to = now.format(&Rfc3339).unwrap();
    let ranges = [(from.as_str(), to.as_str())];

    let total = s.facts.len() + 60;
    let facts = send(&s.platform, s.services.ingestion.port, &recent[60..], total).await;
    s.facts.extend(facts);
    assert_eq!(listed(&s).await, 60, "every stored event is listed");
    check_user_reports_over(&s, "recent events listed, nothing folded", &ranges).await;

    // A round folds them into the blocks: the open slot keeps its mark (no ancestor block
    // holds it yet), nothing stays listed.
    let mut client = s.platform.db().await.unwrap();
    let before = slot_floor(OffsetDateTime::now_utc());
    worker::compact::until_clean(&mut client).await.unwrap();
    assert_eq!(listed(&s).await, 0);
    if slot_floor(OffsetDateTime::now_utc()) == before {
        // (Unless a quarter-hour ended meanwhile.)
        let open = s.facts.iter().any(|f| f.at >= before);
        assert_eq!(
            dirty_slots(&s).await,
            usize::from(open),
            "only the slot being written stays dirty"
        );
    }
    check_user_reports_over(&s, "recent events folded", &ranges).await;

    // More events, some of the same users: block plus listed events.
    let total = s.facts.len() + 60;
    let facts = send(&s.platform, s.services.ingestion.port, &recent[..60], total).await;
    s.facts.extend(facts);
    assert_eq!(listed(&s).await, 60);
    check_user_reports_over(&s, "folded events and listed ones", &ranges).await;
}
