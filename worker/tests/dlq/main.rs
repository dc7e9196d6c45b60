//! `worker dlq` against real dead letters: a private nats-server and PostgreSQL, the
//! worker dead-letters events it cannot store, and the real binary lists, shows, replays
//! and purges them.

use anyhow::Context as _;
use async_nats::jetstream::{self, message::PublishMessage};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;
use testkit::{Platform, Service, WAIT, eventually};

/// The worker's answer to one `worker dlq ...` command.
#[derive(Debug)]
struct Answer {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Answer {
    /// The `--json` lines, parsed.
    fn json_lines(&self) -> anyhow::Result<Vec<Value>> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}")))
            .collect()
    }
}

/// Runs the real binary with the pipeline's settings (environment, as in production).
async fn dlq(p: &Platform, args: &[&str]) -> anyhow::Result<Answer> {
    dlq_at(p, &p.nats.url(), args).await
}

async fn dlq_at(p: &Platform, nats_url: &str, args: &[&str]) -> anyhow::Result<Answer> {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_worker"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NATS_URL", nats_url)
        .env("NATS_STREAM", &p.names.stream)
        .env("NATS_SUBJECT_PREFIX", &p.names.prefix)
        .env("NATS_DLQ_STREAM", &p.names.dlq)
        .arg("dlq")
        .args(args)
        .output()
        .await?;
    Ok(Answer {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout)?,
        stderr: String::from_utf8(out.stderr)?,
    })
}

/// Runs a command that must succeed; returns its stdout.
async fn dlq_ok(p: &Platform, args: &[&str]) -> anyhow::Result<Answer> {
    let answer = dlq(p, args).await?;
    anyhow::ensure!(answer.code == Some(0), "worker dlq {args:?}: {answer:?}");
    Ok(answer)
}

/// The listing as JSON objects.
async fn listed(p: &Platform, args: &[&str]) -> anyhow::Result<Vec<Value>> {
    let mut all = vec!["list", "--json"];
    all.extend_from_slice(args);
    dlq_ok(p, &all).await?.json_lines()
}

/// The DLQ sequence of the dead letter of `event_id`.
async fn sequence_of(p: &Platform, event_id: &str) -> anyhow::Result<u64> {
    listed(p, &[])
        .await?
        .iter()
        .find(|d| d["event_id"] == event_id)
        .and_then(|d| d["sequence"].as_u64())
        .with_context(|| format!("no dead letter for {event_id}"))
}

fn valid(id: &str) -> Value {
    testkit::facebook_top(id, "2026-03-01T12:00:00Z", "u1", "Germany")
}

fn invalid(id: &str) -> Value {
    let mut e = valid(id);
    e["data"]["user"]["age"] = json!("old");
    e
}

/// Rows stored for `event_id`.
async fn rows_of(p: &Platform, event_id: &str) -> anyhow::Result<i64> {
    let db = p.db().await?;
    Ok(db
        .query_one(
            "SELECT count(*) FROM events WHERE event_id = $1",
            &[&event_id],
        )
        .await?
        .get(0))
}

/// A pipeline whose worker has dead-lettered, for real: two invalid events, one valid
/// event the database refused while a faulty constraint was in place (since removed, so
/// it can be replayed), and a payload that is not JSON, published without any id. The
/// events stream remembers event ids for `duplicate_window_secs` seconds.
async fn with_dead_letters(duplicate_window_secs: u64) -> anyhow::Result<(Platform, Service)> {
    let p = Platform::start().await?;
    p.create_stream().await?;
    let window = format!("{duplicate_window_secs}s");
    let worker = p
        .start_worker(&["--nats-duplicate-window", &window])
        .await?;
    p.wait_ready(worker.port).await?;
    let db = p.db().await?;
    db.batch_execute(
        "ALTER TABLE events ADD CONSTRAINT faulty_release CHECK (event_id <> 'refused-1')",
    )
    .await?;

    let publish = |suffix: &'static str, event: Value| {
        let p = &p;
        async move {
            let id = event["eventId"].as_str().unwrap_or_default().to_owned();
            p.publish_raw(suffix, serde_json::to_vec(&event)?, &id)
                .await
        }
    };
    publish("facebook.ad.view", valid("stored-1")).await?;
    publish("facebook.ad.view", invalid("invalid-1")).await?;
    publish("tiktok.video.view", invalid("invalid-2")).await?;
    publish("facebook.ad.view", valid("refused-1")).await?;
    let js = p.js().await?;
    js.send_publish(
        format!("{}.facebook.ad.view", p.names.prefix),
        PublishMessage::build().payload("{not json".into()),
    )
    .await?
    .await?;

    eventually("four dead letters", WAIT, || async {
        (p.dead_letters().await.ok()?.len() == 4).then_some(())
    })
    .await?;
    p.wait_rows(1).await?;
    db.batch_execute("ALTER TABLE events DROP CONSTRAINT faulty_release")
        .await?;
    Ok((p, worker))
}

/// The short duplicate window of the events stream, and a wait past it: the broker has
/// forgotten the event ids first published (the time an operator takes to get to a DLQ).
const SHORT_WINDOW: u64 = 1;

async fn forget_published_ids() {
    tokio::time::sleep(Duration::from_secs(SHORT_WINDOW + 1)).await;
}

#[tokio::test]
async fn list_shows_each_dead_letter_with_its_reason_event_id_and_subject() -> anyhow::Result<()> {
    let (p, worker) = with_dead_letters(SHORT_WINDOW).await?;
    let subject = |s: &str| format!("{}.{s}", p.names.prefix);

    let all = listed(&p, &[]).await?;
    let seen: BTreeSet<(String, String, String)> = all
        .iter()
        .map(|d| {
            (
                d["reason"].as_str().unwrap_or("?").to_owned(),
                d["event_id"].as_str().unwrap_or("-").to_owned(),
                d["subject"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String, String)> = [
        ("invalid_event", "invalid-1", subject("facebook.ad.view")),
        ("invalid_event", "invalid-2", subject("tiktok.video.view")),
        (
            "refused_by_database",
            "refused-1",
            subject("facebook.ad.view"),
        ),
        ("undecodable", "-", subject("facebook.ad.view")),
    ]
    .into_iter()
    .map(|(r, i, s)| (r.to_owned(), i.to_owned(), s))
    .collect();
    assert_eq!(seen, expected);
    let refused = all.iter().find(|d| d["event_id"] == "refused-1");
    let refused = refused.context("refused-1 listed")?;
    assert_eq!(refused["sqlstate"], "23514", "{refused}");
    assert!(
        refused["detail"]
            .as_str()
            .is_some_and(|d| d.contains("faulty_release")),
        "{refused}"
    );
    let sequences: Vec<u64> = all.iter().filter_map(|d| d["sequence"].as_u64()).collect();
    assert!(sequences.is_sorted(), "oldest first: {sequences:?}");

    let invalid = listed(&p, &["--reason", "invalid_event"]).await?;
    let ids: Vec<&str> = invalid
        .iter()
        .filter_map(|d| d["event_id"].as_str())
        .collect();
    assert_eq!(ids, ["invalid-1", "invalid-2"]);

    let first = dlq_ok(&p, &["list", "--limit", "1"]).await?;
    let lines: Vec<&str> = first.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "a header and one row: {first:?}");
    assert!(lines[0].starts_with("SEQ"), "{first:?}");
    assert!(lines[1].contains("invalid_event") && lines[1].contains("invalid-1"));
    assert!(
        first.stderr.contains("--limit"),
        "says more follow: {first:?}"
    );

    let none = dlq_ok(&p, &["list", "--reason", "max_deliver_exceeded"]).await?;
    assert!(none.stdout.starts_with("No dead letters"), "{none:?}");
    worker.stop().await
}

#[tokio::test]
async fn show_prints_every_header_and_the_payload() -> anyhow::Result<()> {
    let (p, worker) = with_dead_letters(SHORT_WINDOW).await?;
    let seq = sequence_of(&p, "invalid-2").await?;

    let shown = dlq_ok(&p, &["show", &seq.to_string()]).await?.stdout;
    for expected in [
        "Dlq-Reason: invalid_event".to_owned(),
        "Dlq-Event-Id: invalid-2".to_owned(),
        "Dlq-Delivery-Count: 1".to_owned(),
        format!("Dlq-Original-Subject: {}.tiktok.video.view", p.names.prefix),
        "X-Correlation-ID: corr-invalid-2".to_owned(),
        r#""age":"old""#.to_owned(),
    ] {
        assert!(shown.contains(&expected), "{expected:?} in:\n{shown}");
    }
    assert!(shown.contains("Dlq-Detail: data.user.age: "), "{shown}");

    let json: Value = serde_json::from_str(
        &dlq_ok(&p, &["show", &seq.to_string(), "--json"])
            .await?
            .stdout,
    )?;
    let payload: Value = serde_json::from_str(json["payload"].as_str().unwrap_or_default())?;
    assert_eq!(payload, invalid("invalid-2"));
    assert_eq!(json["headers"]["Dlq-Reason"], json!(["invalid_event"]));

    let missing = dlq(&p, &["show", "99999"]).await?;
    assert_eq!(missing.code, Some(1), "{missing:?}");
    assert_eq!(missing.stderr.lines().count(), 1, "{missing:?}");
    assert!(
        missing.stderr.contains("no dead letter 99999"),
        "{missing:?}"
    );
    worker.stop().await
}

#[tokio::test]
async fn a_replayed_event_is_stored_once_and_leaves_the_dlq_even_when_replayed_twice()
-> anyhow::Result<()> {
    let (p, worker) = with_dead_letters(SHORT_WINDOW).await?;
    forget_published_ids().await;
    let seq = sequence_of(&p, "refused-1").await?;
    let js = p.js().await?;
    let dlq_stream = js.get_stream(&p.names.dlq).await?;
    let copy = dlq_stream.get_raw_message(seq).await?;

    let dry = dlq_ok(&p, &["replay", &seq.to_string(), "--dry-run"]).await?;
    assert!(dry.stdout.contains("would replay"), "{dry:?}");
    assert_eq!(
        sequence_of(&p, "refused-1").await?,
        seq,
        "a dry run changes nothing"
    );
    assert_eq!(rows_of(&p, "refused-1").await?, 0);

    let replayed = dlq_ok(&p, &["replay", &seq.to_string()]).await?;
    assert!(
        replayed.stdout.contains(&format!(
            "replayed {seq} refused-1 to {}.facebook.ad.view",
            p.names.prefix
        )),
        "{replayed:?}"
    );
    assert!(
        dlq(&p, &["show", &seq.to_string()]).await?.code == Some(1),
        "gone from the DLQ"
    );
    eventually("the replayed event stored", WAIT, || async {
        (rows_of(&p, "refused-1").await.ok()? == 1).then_some(())
    })
    .await?;

    // The same event dead-lettered a second time (as a replay that crashed between the
    // PubAck and the delete would leave it), replayed once the broker has forgotten it.
    let mut headers = copy.headers.clone();
    headers.insert("Nats-Msg-Id", "second-copy");
    js.send_publish(
        copy.subject.to_string(),
        PublishMessage::build()
            .payload(copy.payload.clone())
            .headers(headers),
    )
    .await?
    .await?;
    // Past the window the broker stores the copy: only the database's unique key can keep
    // the event from being stored twice.
    forget_published_ids().await;
    let again = dlq_ok(&p, &["replay", "--reason", "refused_by_database"]).await?;
    assert!(again.stdout.contains("replayed"), "{again:?}");
    eventually("the second copy consumed", WAIT, || async {
        (p.consumer_state().await.ok()? == (0, 0)).then_some(())
    })
    .await?;
    assert_eq!(rows_of(&p, "refused-1").await?, 1, "stored exactly once");
    assert!(
        listed(&p, &["--reason", "refused_by_database"])
            .await?
            .is_empty()
    );
    assert!(p.dead_letters().await?.len() == 3, "nothing else touched");
    worker.stop().await
}

#[tokio::test]
async fn replay_all_refuses_a_dead_letter_without_an_event_id_and_replays_the_rest()
-> anyhow::Result<()> {
    let (p, worker) = with_dead_letters(SHORT_WINDOW).await?;
    forget_published_ids().await;
    let garbage = listed(&p, &["--reason", "undecodable"]).await?;
    let garbage = garbage
        .first()
        .and_then(|d| d["sequence"].as_u64())
        .context("listed")?;

    let answer = dlq(&p, &["replay", "--all"]).await?;
    assert_eq!(answer.code, Some(1), "{answer:?}");
    assert_eq!(answer.stderr.lines().count(), 1, "{answer:?}");
    assert!(
        answer.stderr.contains(&format!("sequence {garbage}")),
        "{answer:?}"
    );
    assert!(
        answer.stdout.contains("Replayed 3 dead letter(s)."),
        "{answer:?}"
    );
    eventually("refused-1 stored", WAIT, || async {
        (rows_of(&p, "refused-1").await.ok()? == 1).then_some(())
    })
    .await?;

    // Still invalid, the two invalid events come back as new dead letters; the replay read
    // only the dead letters that existed when it started, so it did not loop on them.
    let back = eventually("the invalid events dead-lettered again", WAIT, || async {
        let back = listed(&p, &["--reason", "invalid_event"]).await.ok()?;
        (back.len() == 2).then_some(back)
    })
    .await?;
    assert!(
        back.iter().all(|d| d["sequence"].as_u64() > Some(garbage)),
        "{back:?}"
    );
    let left = listed(&p, &["--reason", "undecodable"]).await?;
    assert_eq!(left.len(), 1, "the refused one stays: {left:?}");
    worker.stop().await
}

#[tokio::test]
async fn a_replay_the_broker_drops_as_a_duplicate_keeps_the_dead_letter() -> anyhow::Result<()> {
    // Replayed within the window of its first publish: the events stream drops the copy.
    let (p, worker) = with_dead_letters(120).await?;
    let seq = sequence_of(&p, "refused-1").await?;

    let answer = dlq(&p, &["replay", &seq.to_string()]).await?;
    assert_eq!(answer.code, Some(1), "{answer:?}");
    assert_eq!(answer.stderr.lines().count(), 1, "{answer:?}");
    assert!(
        answer.stderr.contains("NATS_DUPLICATE_WINDOW"),
        "{answer:?}"
    );
    assert_eq!(sequence_of(&p, "refused-1").await?, seq, "still in the DLQ");
    assert_eq!(
        p.stream_messages().await?,
        0,
        "nothing was added to the events stream"
    );
    assert_eq!(rows_of(&p, "refused-1").await?, 0);
    worker.stop().await
}

#[tokio::test]
async fn purge_removes_exactly_the_dead_letters_it_names() -> anyhow::Result<()> {
    let (p, worker) = with_dead_letters(SHORT_WINDOW).await?;
    let ids = |listing: Vec<Value>| -> BTreeSet<String> {
        listing
            .iter()
            .map(|d| d["event_id"].as_str().unwrap_or("-").to_owned())
            .collect()
    };

    let dry = dlq_ok(&p, &["purge", "--reason", "invalid_event", "--dry-run"]).await?;
    assert!(dry.stdout.contains("Would purge 2"), "{dry:?}");
    assert_eq!(listed(&p, &[]).await?.len(), 4, "a dry run changes nothing");

    dlq_ok(&p, &["purge", "--reason", "invalid_event"]).await?;
    assert_eq!(
        ids(listed(&p, &[]).await?),
        BTreeSet::from(["-".into(), "refused-1".into()])
    );

    let seq = sequence_of(&p, "refused-1").await?;
    dlq_ok(&p, &["purge", &seq.to_string()]).await?;
    assert_eq!(ids(listed(&p, &[]).await?), BTreeSet::from(["-".into()]));

    let missing = dlq(&p, &["purge", &seq.to_string()]).await?;
    assert_eq!(missing.code, Some(1), "already purged: {missing:?}");

    // Dead letters of two ages: those older than the cut go, the recent one stays.
    tokio::time::sleep(Duration::from_secs(4)).await;
    p.publish_raw(
        "facebook.ad.view",
        serde_json::to_vec(&invalid("recent-1"))?,
        "recent-1",
    )
    .await?;
    eventually("recent-1 dead-lettered", WAIT, || async {
        sequence_of(&p, "recent-1").await.ok()
    })
    .await?;
    let purged = dlq_ok(&p, &["purge", "--older-than", "2s"]).await?;
    assert!(
        purged.stdout.contains("Purged 1 dead letter(s)"),
        "{purged:?}"
    );
    assert_eq!(
        ids(listed(&p, &[]).await?),
        BTreeSet::from(["recent-1".into()])
    );

    dlq_ok(&p, &["purge", "--all"]).await?;
    assert!(listed(&p, &[]).await?.is_empty());
    worker.stop().await
}

#[tokio::test]
async fn an_existing_dlq_stream_gets_the_retention_applied() -> anyhow::Result<()> {
    let p = Platform::start().await?;
    let js = p.js().await?;
    let max_age = async |js: &jetstream::Context| -> anyhow::Result<Duration> {
        Ok(js
            .get_stream(&p.names.dlq)
            .await?
            .cached_info()
            .config
            .max_age)
    };
    // A DLQ stream from before the setting: no max age at all.
    js.create_stream(jetstream::stream::Config {
        name: p.names.dlq.clone(),
        subjects: vec![format!("dlq.{}.>", p.names.prefix)],
        discard: jetstream::stream::DiscardPolicy::New,
        max_bytes: 1 << 30,
        ..Default::default()
    })
    .await?;
    assert_eq!(max_age(&js).await?, Duration::ZERO);

    let worker = p.start_worker(&[]).await?;
    p.wait_ready(worker.port).await?;
    assert_eq!(
        max_age(&js).await?,
        Duration::from_secs(30 * 86_400),
        "the default"
    );
    worker.stop().await?;

    let worker = p.start_worker(&["--nats-dlq-max-age", "7d"]).await?;
    p.wait_ready(worker.port).await?;
    assert_eq!(max_age(&js).await?, Duration::from_secs(7 * 86_400));
    worker.stop().await?;
    let info = js
        .get_stream(&p.names.dlq)
        .await?
        .cached_info()
        .config
        .clone();
    assert_eq!(info.max_bytes, 1 << 30, "the other settings kept");
    Ok(())
}

#[tokio::test]
async fn an_unreachable_nats_fails_with_one_line() -> anyhow::Result<()> {
    let p = Platform::start().await?;
    let closed = format!("nats://127.0.0.1:{}", testkit::free_port()?);
    let answer = dlq_at(&p, &closed, &["list"]).await?;
    assert_eq!(answer.code, Some(1), "{answer:?}");
    assert_eq!(answer.stderr.lines().count(), 1, "{answer:?}");
    assert!(
        answer.stderr.contains("cannot connect to NATS"),
        "{answer:?}"
    );

    let no_stream = dlq(&p, &["list"]).await?;
    assert_eq!(no_stream.code, Some(1), "{no_stream:?}");
    assert!(
        no_stream.stderr.contains("NATS_DLQ_STREAM"),
        "{no_stream:?}"
    );
    Ok(())
}
