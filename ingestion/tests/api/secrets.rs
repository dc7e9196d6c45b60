//! Secrets fail closed, and signatures producers already know (issue 17): the real binary
//! refuses bad `WEBHOOK_SECRET` / `WEBHOOK_SECRET_FILE` values at start; secrets come from
//! files; two secrets rotate; Standard Webhooks signatures (its published test vector,
//! several signatures in one header) and the replay window of both schemes.

use crate::helpers::{Options, PATIENCE, TestApp, assert_error, fb_top, spawn_app};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::Path;
use testkit::{LoggingBinary, NatsServer, TempFile, assert_refused_at_start, run_to_exit};

const BIN: &str = env!("CARGO_BIN_EXE_ingestion");

/// Two plain secrets of 32 bytes and more.
const OLD: &str = "old-secret-for-tests-0123456789abcdef";
const NEW: &str = "new-secret-for-tests-0123456789abcdef";

/// The two secrets of the rotation test, used by no other test.
const ROTATED_OUT: &str = "rotated-out-secret-0123456789abcdef";
const ROTATED_IN: &str = "rotated-in-secret-0123456789abcdef";

/// Standard Webhooks' published test vector (its libraries' "sign function works" test).
const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const VECTOR_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const VECTOR_TIMESTAMP: &str = "1614265330";
const VECTOR_PAYLOAD: &str = r#"{"test": 2432232314}"#;
const VECTOR_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

/// The HMAC key a secret stands for: a `whsec_` secret's decoded base64, or the bytes of
/// any other (written here independently of the service's code).
fn key_of(secret: &str) -> Vec<u8> {
    match secret.strip_prefix("whsec_") {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .expect("a whsec_ secret is base64"),
        None => secret.as_bytes().to_vec(),
    }
}

fn hmac(secret: &str, content: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(&key_of(secret)).expect("any key length");
    for part in content {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// `X-Webhook-Signature` of the legacy scheme.
fn legacy_signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mac = hmac(secret, &[timestamp.as_bytes(), b".", body]);
    format!("sha256={}", hex::encode(mac))
}

/// One `v1,<base64>` signature of Standard Webhooks.
fn standard_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let mac = hmac(
        secret,
        &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
    );
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac)
    )
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A fresh event body and the current time as a timestamp.
fn event(id: &str) -> (Vec<u8>, String) {
    (
        serde_json::to_vec(&fb_top(id)).expect("json"),
        now().to_string(),
    )
}

async fn post_legacy(app: &TestApp, body: &[u8], timestamp: &str, signature: &str) -> u16 {
    app.post_with(
        body.to_vec(),
        Some("application/json"),
        &[
            ("X-Webhook-Timestamp", timestamp),
            ("X-Webhook-Signature", signature),
        ],
    )
    .await
    .status()
    .as_u16()
}

async fn post_standard(
    app: &TestApp,
    body: &[u8],
    id: &str,
    timestamp: &str,
    signatures: &str,
) -> u16 {
    app.post_with(
        body.to_vec(),
        Some("application/json"),
        &[
            ("webhook-id", id),
            ("webhook-timestamp", timestamp),
            ("webhook-signature", signatures),
        ],
    )
    .await
    .status()
    .as_u16()
}

/// A file holding secrets, as `WEBHOOK_SECRET_FILE` names it.
fn secret_file(content: &str) -> TempFile {
    TempFile::with("webhook_secret", content).expect("the secret file is written")
}

#[tokio::test]
async fn an_empty_short_or_placeholder_secret_stops_the_binary_with_one_line_naming_it() {
    for value in [
        "",
        "   ",
        "too-short-a-secret",
        "change-me-production-webhook-secret",
        &format!("{NEW},"),
        &format!("{NEW},short"),
        // 16 bytes once decoded: Standard Webhooks asks for 24.
        "whsec_AAAAAAAAAAAAAAAAAAAAAA==",
        "whsec_this*is*not*base64*at*all*is*it",
    ] {
        let out = run_to_exit(BIN, &[("WEBHOOK_SECRET", value)])
            .await
            .expect("the binary runs");
        assert_refused_at_start(&out, &["WEBHOOK_SECRET"], value.trim());
    }
}

#[tokio::test]
async fn a_bad_secret_file_stops_the_binary_with_one_line_naming_it() {
    for content in [
        "",
        "\n",
        "too-short-a-secret\n",
        "change-me-production-webhook-secret",
    ] {
        let file = secret_file(content);
        let out = run_to_exit(BIN, &[("WEBHOOK_SECRET_FILE", file.path())])
            .await
            .expect("the binary runs");
        assert_refused_at_start(&out, &["WEBHOOK_SECRET_FILE"], content.trim());
    }
    let out = run_to_exit(
        BIN,
        &[("WEBHOOK_SECRET_FILE", "/nonexistent/webhook_secret")],
    )
    .await
    .expect("the binary runs");
    assert_refused_at_start(&out, &["WEBHOOK_SECRET_FILE"], "");
}

#[tokio::test]
async fn a_secret_and_a_secret_file_together_stop_the_binary_naming_both() {
    let file = secret_file(NEW);
    let out = run_to_exit(
        BIN,
        &[
            ("WEBHOOK_SECRET", OLD),
            ("WEBHOOK_SECRET_FILE", file.path()),
        ],
    )
    .await
    .expect("the binary runs");
    assert_refused_at_start(&out, &["WEBHOOK_SECRET", "WEBHOOK_SECRET_FILE"], OLD);
}

/// The real binary with a private nats-server and these extra variables; its stderr
/// (the logs) is read as lines.
struct Binary {
    _nats: NatsServer,
    binary: LoggingBinary,
    addr: String,
}

impl Binary {
    async fn start(env: &[(&str, &str)]) -> Binary {
        let nats = NatsServer::start().await.expect("nats-server starts");
        let port = testkit::free_port().expect("a free port").to_string();
        let (url, stream) = (nats.url(), format!("EVENTS_{}", testkit::unique_name()));
        let prefix = testkit::unique_name();
        let mut all = vec![
            ("PORT", port.as_str()),
            ("HOST", "127.0.0.1"),
            ("NATS_URL", url.as_str()),
            ("NATS_STREAM", stream.as_str()),
            ("NATS_SUBJECT_PREFIX", prefix.as_str()),
            ("LOG_FORMAT", "text"),
        ];
        all.extend_from_slice(env);
        let binary = LoggingBinary::spawn(Path::new(BIN), &all).expect("the binary starts");
        Binary {
            _nats: nats,
            binary,
            addr: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Reads log lines until one contains `text`; returns it.
    async fn log_line_with(&mut self, text: &str) -> String {
        self.binary
            .log_line_with(text, PATIENCE)
            .await
            .unwrap_or_else(|| panic!("no log line contains {text:?}"))
    }

    async fn post(&self, body: &[u8], headers: &[(&str, &str)]) -> u16 {
        let client = reqwest::Client::new();
        testkit::eventually("the binary answers", PATIENCE, || async {
            let mut request = client
                .post(format!("{}/webhook/event", self.addr))
                .header("content-type", "application/json")
                .body(body.to_vec());
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let status = request.send().await.ok()?.status().as_u16();
            // 503 until the stream is verified.
            (status != 503).then_some(status)
        })
        .await
        .expect("an answer")
    }
}

#[tokio::test]
async fn without_a_secret_the_binary_says_loudly_that_anyone_can_post() {
    let mut binary = Binary::start(&[]).await;
    let line = binary.log_line_with("no signature check").await;
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("anyone can post events"), "{line}");
}

#[tokio::test]
async fn a_secret_file_signs_requests_and_only_its_key_id_is_logged() {
    // A trailing newline, as `echo` and editors write: not part of the secret.
    let file = secret_file(&format!("{NEW}\n"));
    let mut binary = Binary::start(&[("WEBHOOK_SECRET_FILE", file.path())]).await;
    let line = binary.log_line_with("Webhook signatures required").await;
    let key_id = hex::encode(&<Sha256 as sha2::Digest>::digest(NEW.as_bytes())[..4]);
    assert!(line.contains(&key_id), "the key id {key_id}: {line}");
    assert!(!line.contains(NEW), "never the secret: {line}");

    let (body, ts) = event("from-file-1");
    assert_eq!(binary.post(&body, &[]).await, 401);
    let signature = legacy_signature(NEW, &ts, &body);
    let headers = [
        ("X-Webhook-Timestamp", ts.as_str()),
        ("X-Webhook-Signature", signature.as_str()),
    ];
    assert_eq!(binary.post(&body, &headers).await, 202);
}

#[tokio::test]
async fn with_two_secrets_a_request_signed_with_either_passes_and_with_neither_fails() {
    let app = spawn_app(Options {
        webhook_secret: Some(format!("{ROTATED_OUT}, {ROTATED_IN}")),
        ..Options::default()
    })
    .await;
    for (n, secret) in [ROTATED_OUT, ROTATED_IN].into_iter().enumerate() {
        let (body, ts) = event(&format!("rotating-legacy-{n}"));
        let signature = legacy_signature(secret, &ts, &body);
        assert_eq!(post_legacy(&app, &body, &ts, &signature).await, 202);
        let (body, ts) = event(&format!("rotating-standard-{n}"));
        let signature = standard_signature(secret, "msg_1", &ts, &body);
        assert_eq!(
            post_standard(&app, &body, "msg_1", &ts, &signature).await,
            202
        );
    }
    let (body, ts) = event("rotating-neither");
    let stranger = "a-third-secret-nobody-configured-0123456789";
    let signature = legacy_signature(stranger, &ts, &body);
    let response = app
        .post_with(
            body.clone(),
            Some("application/json"),
            &[
                ("X-Webhook-Timestamp", &ts),
                ("X-Webhook-Signature", &signature),
            ],
        )
        .await;
    assert_error(response, 401, "unauthorized").await;
    let signature = standard_signature(stranger, "msg_1", &ts, &body);
    assert_eq!(
        post_standard(&app, &body, "msg_1", &ts, &signature).await,
        401
    );
    assert_eq!(app.stored_event_count().await, 4);

    // Which key verified what is counted by key id, for watching a rotation through (the
    // counters are the process's: these two secrets are this test's alone).
    let metrics = app
        .get("/metrics")
        .await
        .expect("/metrics")
        .text()
        .await
        .expect("text");
    for secret in [ROTATED_OUT, ROTATED_IN] {
        let key_id = hex::encode(&<Sha256 as sha2::Digest>::digest(secret.as_bytes())[..4]);
        for scheme in ["legacy", "standard"] {
            let counted = metrics.lines().any(|l| {
                l.starts_with("ingestion_signatures_verified_total{")
                    && l.contains(&format!("key_id=\"{key_id}\""))
                    && l.contains(&format!("scheme=\"{scheme}\""))
                    && l.ends_with(" 1")
            });
            assert!(counted, "one {scheme} request for key {key_id}:\n{metrics}");
        }
        assert!(!metrics.contains(secret), "never the secret");
    }
}

#[tokio::test]
async fn the_standard_webhooks_test_vector_is_reproduced_and_its_old_timestamp_refused() {
    // The signing used below reproduces the published vector...
    assert_eq!(
        standard_signature(
            VECTOR_SECRET,
            VECTOR_ID,
            VECTOR_TIMESTAMP,
            VECTOR_PAYLOAD.as_bytes()
        ),
        VECTOR_SIGNATURE
    );
    // ...and the service, given the vector's secret, accepts what it signs now.
    let app = spawn_app(Options {
        webhook_secret: Some(VECTOR_SECRET.into()),
        ..Options::default()
    })
    .await;
    let (body, ts) = event("standard-vector-1");
    let signature = standard_signature(VECTOR_SECRET, VECTOR_ID, &ts, &body);
    assert_eq!(
        post_standard(&app, &body, VECTOR_ID, &ts, &signature).await,
        202
    );
    // The legacy scheme with the same (decoded) key passes too.
    let (body, ts) = event("standard-vector-2");
    let signature = legacy_signature(VECTOR_SECRET, &ts, &body);
    assert_eq!(post_legacy(&app, &body, &ts, &signature).await, 202);

    // The vector itself, signed in 2021, is a replay today.
    let response = app
        .post_with(
            VECTOR_PAYLOAD,
            Some("application/json"),
            &[
                ("webhook-id", VECTOR_ID),
                ("webhook-timestamp", VECTOR_TIMESTAMP),
                ("webhook-signature", VECTOR_SIGNATURE),
            ],
        )
        .await;
    assert_error(response, 401, "unauthorized").await;
    assert_eq!(app.stored_event_count().await, 2);
}

#[tokio::test]
async fn one_good_signature_among_several_in_the_header_is_enough() {
    let app = spawn_app(Options {
        webhook_secret: Some(NEW.into()),
        ..Options::default()
    })
    .await;
    let (body, ts) = event("several-1");
    let good = standard_signature(NEW, "msg_several", &ts, &body);
    let by_another_key = standard_signature(OLD, "msg_several", &ts, &body);
    let wrong = [
        "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
        &by_another_key,
        // The right MAC under versions this service does not check.
        &good.replacen("v1,", "v2,", 1),
        &good.replacen("v1,", "v1a,", 1),
        "v1,not-base64",
    ]
    .join(" ");
    assert_eq!(
        post_standard(&app, &body, "msg_several", &ts, &wrong).await,
        401
    );
    let with_good = format!("{wrong} {good}");
    assert_eq!(
        post_standard(&app, &body, "msg_several", &ts, &with_good).await,
        202
    );
    assert_eq!(app.stored_event_count().await, 1);
}

#[tokio::test]
async fn both_schemes_refuse_timestamps_more_than_5_minutes_from_now() {
    let app = spawn_app(Options {
        webhook_secret: Some(NEW.into()),
        ..Options::default()
    })
    .await;
    let body = serde_json::to_vec(&fb_top("replayed-1")).expect("json");
    for skew in [-301, 301, -3600] {
        let ts = (now() + skew).to_string();
        let signature = legacy_signature(NEW, &ts, &body);
        assert_eq!(
            post_legacy(&app, &body, &ts, &signature).await,
            401,
            "{skew}"
        );
        let signature = standard_signature(NEW, "msg_replay", &ts, &body);
        let status = post_standard(&app, &body, "msg_replay", &ts, &signature).await;
        assert_eq!(status, 401, "{skew}");
    }
    assert_eq!(app.stored_event_count().await, 0);
    // Within the window, either way, both pass.
    for (n, skew) in [-240, 240].into_iter().enumerate() {
        let (body, _) = event(&format!("in-window-{n}"));
        let ts = (now() + skew).to_string();
        let signature = legacy_signature(NEW, &ts, &body);
        assert_eq!(post_legacy(&app, &body, &ts, &signature).await, 202);
        let signature = standard_signature(NEW, "msg_window", &ts, &body);
        assert_eq!(
            post_standard(&app, &body, "msg_window", &ts, &signature).await,
            202
        );
    }
}
