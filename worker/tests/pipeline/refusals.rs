//! Values real data carries, and rows the database refuses: none holds a good event back.

use crate::platform;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::time::Duration;
use testkit::{WAIT, events, eventually, rollups};

/// How long a refused row may take to reach the dead-letter queue. A refusal taken for an
/// outage would be retried after 1, 2, 4 ... s and never get there in time.
const DEAD_LETTERED_WITHIN: Duration = Duration::from_secs(10);

/// Sets the value at a dotted path.
fn set(event: &mut Value, path: &str, value: Value) {
    let mut node = event;
    for key in path.split('.') {
        node = &mut node[key];
    }
    *node = value;
}

/// `n` characters from a fixed pseudo-random sequence over letters, digits, accents,
/// CJK and emoji (one to four bytes each).
fn random_text(seed: u64, n: usize) -> String {
    const ALPHABET: [char; 12] = [
        'a', 'Z', '7', '-', ' ', 'é', 'ß', '中', '文', '😀', '🚀', '"',
    ];
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
        .collect()
}

/// One valid event of each shape, and every string field of that shape.
fn shapes() -> Vec<(Value, Vec<&'static str>)> {
    let t = "2026-03-01T10:00:00Z";
    let mut fb_top = testkit::facebook_top("x", t, "u", "Germany");
    fb_top["data"]["engagement"]["videoId"] = json!("v-1");
    let mut tt_bottom = testkit::tiktok_bottom("x", t, "u", Some("5.00"));
    tt_bottom["data"]["engagement"]["profileId"] = json!("p-1");
    let user_fb = [
        "eventId",
        "timestamp",
        "source",
        "funnelStage",
        "eventType",
        "data.user.userId",
        "data.user.name",
        "data.user.gender",
        "data.user.location.country",
        "data.user.location.city",
    ];
    let user_tt = [
        "eventId",
        "timestamp",
        "source",
        "funnelStage",
        "eventType",
        "data.user.userId",
        "data.user.username",
    ];
    let with = |base: &[&'static str], more: &[&'static str]| {
        base.iter().chain(more).copied().collect::<Vec<_>>()
    };
    vec![
        (
            fb_top,
            with(
                &user_fb,
                &[
                    "data.engagement.actionTime",
                    "data.engagement.referrer",
                    "data.engagement.videoId",
                ],
            ),
        ),
        (
            testkit::facebook_bottom("x", t, "u", Some("19.99")),
            with(
                &user_fb,
                &[
                    "data.engagement.adId",
                    "data.engagement.campaignId",
                    "data.engagement.clickPosition",
                    "data.engagement.device",
                    "data.engagement.browser",
                    "data.engagement.purchaseAmount",
                ],
            ),
        ),
        (
            testkit::tiktok_top("x", t, "u", "Brazil"),
            with(
                &user_tt,
                &[
                    "data.engagement.device",
                    "data.engagement.country",
                    "data.engagement.videoId",
                ],
            ),
        ),
        (
            tt_bottom,
            with(
                &user_tt,
                &[
                    "data.engagement.actionTime",
                    "data.engagement.profileId",
                    "data.engagement.purchasedItem",
                    "data.engagement.purchaseAmount",
                ],
            ),
        ),
    ]
}

/// The fields a 422 names.
fn fields(reply: &Value) -> Vec<&str> {
    reply["error"]["details"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["field"].as_str())
        .collect()
}

#[tokio::test]
async fn every_value_storage_cannot_hold_gets_a_422_naming_its_field_and_good_events_flow_on() {
    let p = platform().await.unwrap();
    let ingestion = p.start_ingestion(&[]).await.unwrap();
    let worker = p.start_worker(&[]).await.unwrap();

    // (pill, field it must be named by): NUL and 10,000 random characters in every string
    // field of every shape, times at years 1 and 9999 with offsets, an amount past the
    // maximum.
    let mut pills: Vec<(Value, String)> = Vec::new();
    for (n, (base, strings)) in shapes().into_iter().enumerate() {
        for (k, field) in strings.iter().enumerate() {
            for (m, value) in [
                json!("a\u{0}b"),
                json!(random_text((n * 100 + k) as u64, 10_000)),
            ]
            .into_iter()
            .enumerate()
            {
                let mut pill = base.clone();
                set(&mut pill, field, value);
                if *field != "eventId" {
                    pill["eventId"] = json!(format!("pill-{n}-{k}-{m}"));
                }
                pills.push((pill, (*field).to_owned()));
            }
        }
        for (m, t) in [
            "0001-01-01T00:00:00+01:00",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59-01:00",
            "9999-12-31T23:59:59+14:00",
        ]
        .into_iter()
        .enumerate()
        {
            let mut pill = base.clone();
            pill["timestamp"] = json!(t);
            pill["eventId"] = json!(format!("pill-{n}-time-{m}"));
            pills.push((pill, "timestamp".into()));
        }
    }
    let mut huge = testkit::tiktok_bottom("pill-amount", "2026-03-01T10:00:00Z", "u", None);
    huge["data"]["engagement"]["purchaseAmount"] = json!("9000000000000000000000000000");
    pills.push((huge, "data.engagement.purchaseAmount".into()));
    assert!(pills.len() > 100, "{} pills", pills.len());

    for (i, (pill, field)) in pills.iter().enumerate() {
        let mut body = events(&format!("mate{i}"), 0..49);
        body.push(pill.clone());
        let (status, reply) = p.post(ingestion.port, &Value::Array(body)).await.unwrap();
        assert_eq!(status, 422, "{field}: {reply}");
        assert!(
            fields(&reply).contains(&field.as_str()),
            "{field} not named: {reply}"
        );
        assert!(
            reply.to_string().len() < 4096,
            "a 10,000-character value is not echoed whole: {} bytes",
            reply.to_string().len()
        );
    }

    // Values that are allowed, however unusual, are stored: a 10,000-character unknown
    // field, strings at their limits in characters of four bytes, and eight maximal
    // amounts in one minute.
    let mut ok = events("fine", 0..42);
    let mut long_unknown = testkit::facebook_top("fine-long", "2026-03-01T10:00:00Z", "u", "Chile");
    long_unknown["note"] = json!(random_text(7, 10_000));
    ok.push(long_unknown);
    let mut at_limits = testkit::facebook_top("fine-limits", "2026-03-01T10:00:00Z", "u", "x");
    set(&mut at_limits, "data.user.userId", json!("😀".repeat(256)));
    set(
        &mut at_limits,
        "data.user.location.country",
        json!("🚀".repeat(128)),
    );
    set(
        &mut at_limits,
        "data.user.location.city",
        json!("中".repeat(128)),
    );
    ok.push(at_limits);
    for i in 0..8 {
        ok.push(testkit::facebook_bottom(
            &format!("fine-max-{i}"),
            &format!("2026-03-01T11:00:{:02}Z", i * 7),
            &format!("rich-{i}"),
            Some("1000000000000"),
        ));
    }
    let (status, reply) = p
        .post(ingestion.port, &Value::Array(ok.clone()))
        .await
        .unwrap();
    assert_eq!(status, 202, "{reply}");
    p.wait_rows(ok.len() as i64).await.unwrap();

    let db = p.db().await.unwrap();
    let minute: String = db
        .query_one(
            "SELECT revenue::text FROM rollup_events WHERE grain = 'm'
             AND bucket = '2026-03-01T11:00:00Z' AND event_type = 'checkout.complete'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(minute, "8000000000000", "eight maximal amounts sum exactly");
    assert!(p.dead_letters().await.unwrap().is_empty());
    worker.stop().await.unwrap();
    ingestion.stop().await.unwrap();
}

#[tokio::test]
async fn a_row_refused_by_any_statement_is_dead_lettered_with_its_sqlstate_while_its_batch_mates_are_stored()
 {
    let p = platform().await.unwrap();
    let ingestion = p.start_ingestion(&[]).await.unwrap();
    let worker = p
        .start_worker(&[
            "--worker-batch-size",
            "100",
            "--worker-batch-linger",
            "300ms",
        ])
        .await
        .unwrap();
    p.wait_ready(worker.port).await.unwrap();

    // Valid events that one statement of the insert transaction each refuses, as a
    // constraint added after the events were accepted would: the user's key, the row, a
    // rollup, the per-user-set lists and the dirty-slot marks.
    let db = p.db().await.unwrap();
    let refusals = [
        ("user_keys", "t_key", "CHECK (user_id <> 'refused-key')"),
        ("events", "t_row", "CHECK (user_id <> 'refused-row')"),
        (
            "rollup_campaigns",
            "t_rollup",
            "CHECK (campaign_id <> 'refused-campaign')",
        ),
        (
            "user_sets_pending",
            "t_list",
            "CHECK (position('refused-list'::bytea IN facts) = 0)",
        ),
        (
            "user_sets_dirty",
            "t_slot",
            "CHECK (slot <> '2026-03-02T06:00:00Z')",
        ),
    ];
    for (table, name, check) in refusals {
        db.batch_execute(&format!(
            "ALTER TABLE {table} ADD CONSTRAINT {name} {check}"
        ))
        .await
        .unwrap();
    }
    let t = "2026-03-01T10:00:00Z";
    let mut poison = [
        testkit::facebook_top("poison-key", t, "refused-key", "Chile"),
        testkit::tiktok_top("poison-row", t, "refused-row", "Chile"),
        testkit::facebook_bottom("poison-rollup", t, "u1", Some("5.00")),
        testkit::tiktok_bottom("poison-list", t, "refused-list", None),
        testkit::facebook_top("poison-slot", "2026-03-02T06:05:00Z", "u2", "Chile"),
    ];
    poison[2]["data"]["engagement"]["campaignId"] = json!("refused-campaign");
    let mut body = events("mate", 0..45);
    for (i, p) in poison.iter().enumerate() {
        body.insert(i * 9 + 4, p.clone());
    }
    let (status, reply) = p
        .post(ingestion.port, &Value::Array(body.clone()))
        .await
        .unwrap();
    assert_eq!(status, 202, "{reply}");

    let dead = eventually("five dead letters", DEAD_LETTERED_WITHIN, || async {
        let d = p.dead_letters().await.ok()?;
        (d.len() >= poison.len()).then_some(d)
    })
    .await
    .unwrap();
    assert_eq!(dead.len(), poison.len(), "{dead:?}");
    for (event, (_, name, _)) in poison.iter().zip(refusals) {
        let id = event["eventId"].as_str().unwrap();
        let (payload, h) = dead
            .iter()
            .find(|(payload, _)| {
                serde_json::from_slice::<Value>(payload).ok().as_ref() == Some(event)
            })
            .unwrap_or_else(|| panic!("no dead letter for {id}: {dead:?}"));
        assert_eq!(serde_json::from_slice::<Value>(payload).unwrap(), *event);
        assert_eq!(h["Dlq-Reason"], "refused_by_database", "{id}");
        assert_eq!(h["Dlq-Sqlstate"], "23514", "{id}: a check violation");
        assert!(h["Dlq-Detail"].contains(name), "{id}: {h:?}");
    }
    p.wait_rows(45).await.unwrap();
    eventually("everything acked or terminated", WAIT, || async {
        (p.stream_messages().await.ok()? == 0).then_some(())
    })
    .await
    .unwrap();
    let poison_rows: i64 = db
        .query_one(
            "SELECT count(*) FROM events WHERE event_id LIKE 'poison%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(poison_rows, 0);

    // The refused rows left nothing behind: the rollups and sets equal a rebuild.
    p.wait_compacted().await.unwrap();
    worker.stop().await.unwrap();
    for (table, name, _) in refusals {
        db.batch_execute(&format!("ALTER TABLE {table} DROP CONSTRAINT {name}"))
            .await
            .unwrap();
    }
    let incremental = rollups(&db).await.unwrap();
    p.rebuild_rollups().await.unwrap();
    assert_eq!(incremental, rollups(&db).await.unwrap());
    ingestion.stop().await.unwrap();
}

#[tokio::test]
async fn a_slot_whose_sets_the_database_refuses_stays_dirty_while_the_others_are_compacted() {
    let p = platform().await.unwrap();
    let ingestion = p.start_ingestion(&[]).await.unwrap();
    let worker = p
        .start_worker(&["--worker-compact-interval", "100ms"])
        .await
        .unwrap();
    p.wait_ready(worker.port).await.unwrap();
    // A stored value the per-user sets cannot hold, as a value stored before today's
    // limits might be.
    let db = p.db().await.unwrap();
    db.batch_execute("ALTER TABLE user_sets ADD CONSTRAINT t_set CHECK (value <> 'Refusedland')")
        .await
        .unwrap();
    let mut body = Vec::new();
    for i in 0..6 {
        let t = format!("2026-03-01T10:0{i}:00Z");
        body.push(testkit::tiktok_top(&format!("a-{i}"), &t, "u", "Chile"));
        let t = format!("2026-03-01T11:0{i}:00Z");
        let country = if i == 3 { "Refusedland" } else { "Chile" };
        body.push(testkit::tiktok_top(&format!("b-{i}"), &t, "u", country));
    }
    let (status, reply) = p.post(ingestion.port, &Value::Array(body)).await.unwrap();
    assert_eq!(status, 202, "{reply}");
    p.wait_rows(12).await.unwrap();

    let dirty = || async {
        db.query("SELECT slot::text FROM user_sets_dirty ORDER BY slot", &[])
            .await
            .map(|rows| {
                rows.iter()
                    .map(|r| r.get::<_, String>(0))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    eventually("only the refused slot left dirty", WAIT, || async {
        (dirty().await == ["2026-03-01 11:00:00+00"]).then_some(())
    })
    .await
    .unwrap();
    let errors = p.metric(worker.port, "worker_compactor_errors_total").await;
    assert!(errors.is_some_and(|n| n >= 1.0), "{errors:?}");

    // Once the cause is gone, the slot is compacted like any other.
    db.batch_execute("ALTER TABLE user_sets DROP CONSTRAINT t_set")
        .await
        .unwrap();
    eventually("every slot compacted", WAIT, || async {
        dirty().await.is_empty().then_some(())
    })
    .await
    .unwrap();
    worker.stop().await.unwrap();
    ingestion.stop().await.unwrap();
}
