//! The real binary: configuration from the environment, `--help`, graceful SIGTERM.

use crate::helpers::PATIENCE;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use testkit::events;
use testkit::{ChildProcess, NatsServer};

const BIN: &str = env!("CARGO_BIN_EXE_ingestion");

fn output() -> Stdio {
    if std::env::var_os("TEST_LOG").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}

/// The binary with a clean environment plus these variables; stdout and stderr captured.
async fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.env_clear().args(args).envs(env.iter().copied());
    cmd.kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(10), cmd.output())
        .await
        .expect("the binary exits by itself")
        .expect("the binary runs")
}

#[tokio::test]
async fn a_bad_environment_value_stops_the_binary_with_one_line_naming_the_variable() {
    for (variable, value) in [
        ("PORT", "-5"),
        ("HTTP_MAX_BODY_BYTES", "0"),
        ("NATS_URL", "nats://nowhere"),
        ("NATS_PUBLISH_TIMEOUT", "5000"),
        // A variable under its deprecated name is still checked, and named.
        ("PUBLISH_TIMEOUT_MS", "5s"),
    ] {
        let out = run_to_exit(&[], &[(variable, value)]).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{variable}={value} must fail: {stderr}"
        );
        let lines: Vec<&str> = stderr.trim_end().lines().collect();
        assert_eq!(lines.len(), 1, "one line for {variable}: {stderr}");
        assert!(lines[0].contains(variable), "{stderr}");
    }
}

#[tokio::test]
async fn help_lists_the_environment_variables() {
    let out = run_to_exit(&["--help"], &[]).await;
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for variable in [
        "NATS_URL",
        "HTTP_MAX_BODY_BYTES",
        "WEBHOOK_SECRET",
        "PORT",
        "NATS_STREAM",
    ] {
        assert!(help.contains(variable), "--help names {variable}:\n{help}");
    }
}

#[tokio::test]
async fn variables_under_their_old_names_still_apply_and_each_is_warned_about_once()
-> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let port = testkit::free_port()?;
    let mut child = tokio::process::Command::new(BIN)
        .env_clear()
        .envs([
            ("PORT", port.to_string()),
            ("HOST", "127.0.0.1".into()),
            ("NATS_URL", nats.url()),
            ("NATS_STREAM", format!("EVENTS_{}", testkit::unique_name())),
            ("NATS_SUBJECT_PREFIX", testkit::unique_name()),
            ("LOG_FORMAT", "json".into()),
            // Old name alone: used, in its old unit.
            ("MAX_BODY_BYTES", "1024".into()),
            ("SHUTDOWN_TIMEOUT_SECS", "5".into()),
            // Old and new: the new one wins.
            ("HTTP_IDLE_TIMEOUT_SECS", "1".into()),
            ("HTTP_IDLE_TIMEOUT", "75s".into()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    testkit::eventually("the binary to be ready", PATIENCE, || async {
        let r = client
            .get(format!("{base}/health/readiness"))
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await?;
    let oversize = client
        .post(format!("{base}/webhook/event"))
        .header("content-type", "application/json")
        .body(vec![b' '; 2048])
        .send()
        .await?;
    assert_eq!(oversize.status(), 413, "MAX_BODY_BYTES=1024 applies");
    child.start_kill()?;
    let stderr = String::from_utf8(child.wait_with_output().await?.stderr)?;
    let warnings: Vec<Value> = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line.get("old_variable").is_some())
        .collect();
    let mut named: Vec<(&str, &str, &str)> = warnings
        .iter()
        .map(|w| {
            (
                w["old_variable"].as_str().unwrap_or_default(),
                w["new_variable"].as_str().unwrap_or_default(),
                w["level"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    named.sort();
    assert_eq!(
        named,
        [
            ("HTTP_IDLE_TIMEOUT_SECS", "HTTP_IDLE_TIMEOUT", "WARN"),
            ("MAX_BODY_BYTES", "HTTP_MAX_BODY_BYTES", "WARN"),
            ("SHUTDOWN_TIMEOUT_SECS", "SHUTDOWN_TIMEOUT", "WARN"),
        ],
        "{stderr}"
    );
    let message = |old: &str| {
        warnings
            .iter()
            .find(|w| w["old_variable"] == old)
            .and_then(|w| w["message"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        message("SHUTDOWN_TIMEOUT_SECS").contains("set SHUTDOWN_TIMEOUT=5s instead"),
        "{stderr}"
    );
    assert!(
        message("HTTP_IDLE_TIMEOUT_SECS").contains("ignored because HTTP_IDLE_TIMEOUT is set"),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn sigterm_answers_requests_in_flight_and_exits_0_losing_nothing() {
    service_kit::telemetry::init_for_tests();
    let nats = NatsServer::start().await.expect("nats-server starts");
    let stream = format!("EVENTS_{}", testkit::unique_name());
    let prefix = testkit::unique_name();
    let port = testkit::free_port().expect("a free port");
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .envs([
            ("PORT", port.to_string()),
            ("HOST", "127.0.0.1".into()),
            ("NATS_URL", nats.url()),
            ("NATS_STREAM", stream.clone()),
            ("NATS_SUBJECT_PREFIX", prefix),
            ("LOG_FORMAT", "json".into()),
            // 6,000 events in well under a second from one address: more than the
            // default quota's burst, and quotas are not what this test is about.
            ("RATE_LIMIT_EVENTS_PER_SEC", "0".into()),
        ])
        .stdout(output())
        .stderr(output());
    let mut child = ChildProcess::spawn("ingestion", cmd).expect("the binary starts");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    testkit::eventually("the binary to be ready", PATIENCE, || async {
        let r = client
            .get(format!("{base}/health/readiness"))
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await
    .expect("ready");

    // 50 concurrent batches of 100 events; SIGTERM once the first answer is back, and
    // 10 more batches sent right after the signal.
    let answered = Arc::new(AtomicUsize::new(0));
    let send = |i: usize| {
        let (client, url, answered) = (
            client.clone(),
            format!("{base}/webhook/event"),
            answered.clone(),
        );
        let body = Value::Array(events(&format!("term-{i}"), 0..100));
        tokio::spawn(async move {
            let result = client.post(url).json(&body).send().await;
            let outcome = match result {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    Ok((status, body))
                }
                Err(e) => Err(e.to_string()),
            };
            answered.fetch_add(1, Ordering::SeqCst);
            outcome
        })
    };
    let mut tasks: Vec<_> = (0..50).map(send).collect();
    testkit::eventually("a first answer", PATIENCE, || {
        let answered = answered.clone();
        async move { (answered.load(Ordering::SeqCst) > 0).then_some(()) }
    })
    .await
    .expect("some request is answered");
    child.signal("TERM").expect("SIGTERM sent");
    tasks.extend((50..60).map(send));
    let status = child
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("the binary exits within 10 s of SIGTERM");
    assert!(status.success(), "exit status {status:?}");

    let mut accepted_events = 0;
    let (mut ok, mut refused) = (0, 0);
    for task in tasks {
        match task.await.expect("task") {
            Ok((202, body)) => {
                assert_eq!(body["accepted"], 100, "{body}");
                accepted_events += 100;
                ok += 1;
            }
            Ok((status, body)) => panic!("a request got {status} during shutdown: {body}"),
            Err(_connection_error) => refused += 1,
        }
    }
    tracing::info!(ok, refused, "Requests answered around SIGTERM");
    assert!(
        ok >= 1,
        "at least one request was accepted ({refused} refused)"
    );

    let js = nats.jetstream().await.expect("test client");
    let stored = crate::helpers::stored_messages(&js, &stream)
        .await
        .iter()
        .map(|m| crate::helpers::events_of(m).len() as u64)
        .sum::<u64>();
    assert_eq!(
        stored, accepted_events,
        "the stream holds exactly the accepted events ({ok} requests accepted, {refused} refused)"
    );
}
