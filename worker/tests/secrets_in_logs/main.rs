//! No secret in any log line or error message (issue 17, part 9).
//!
//! The three real services (and the demo publisher) run as separate processes, logging
//! JSON at debug level, with
//! every secret a deployment has: a NATS user and password, PostgreSQL logins with
//! passwords (SCRAM required), a plain and a `whsec_` webhook secret, two analytics API
//! keys. They go through a whole run: start, signed posts (valid in both schemes, a bad
//! signature, a secret sent as the signature, 422, 413), reports with right and wrong
//! keys, a NATS restart and a PostgreSQL restart (errors are logged then), SIGTERM; plus
//! the one-shot commands and refused configurations. Every line any of them wrote, on
//! stdout or stderr, is then searched for every secret, in the forms it could take
//! (as is, hex, base64), and for every signature sent.
//!
//! ingestion, analytics and the publisher are the binaries Cargo built next to the
//! worker's, so build every binary first (`cargo nextest run --workspace` or `cargo build --bins` does).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ingestion::signature::{sign_legacy, sign_standard};
use rand::RngCore;
use serde_json::Value;
use service_kit::secret::Key;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};
use testkit::{ChildProcess, NatsLogin, Platform, WAIT};

/// Requests larger than this are refused with 413 (small, so the test sends little).
const MAX_BODY_BYTES: usize = 65_536;

/// A binary Cargo built in the same directory as the worker's.
fn binary(name: &str) -> PathBuf {
    let worker = Path::new(env!("CARGO_BIN_EXE_worker"));
    let path = worker.with_file_name(name);
    assert!(
        path.is_file(),
        "{} is missing: build every binary first (`cargo build --bins`; `cargo nextest run \
         --workspace` does)",
        path.display()
    );
    path
}

/// A value no other text of the test contains, so finding it in a log is a leak.
fn distinctive(tag: &str) -> String {
    format!("{tag}{}{}", testkit::unique_name(), testkit::unique_name())
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0; n];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// Every secret of the run, and what must never be logged.
#[derive(Debug)]
struct Secrets {
    nats_password: String,
    owner_password: String,
    worker_password: String,
    analytics_password: String,
    /// A password that is refused: a wrong one must not be logged either.
    wrong_password: String,
    webhook_plain: String,
    /// `whsec_<base64>`, and the key it decodes to.
    webhook_standard: String,
    webhook_standard_key: Vec<u8>,
    /// A `whsec_` value that is no base64: refused, and not repeated either.
    webhook_undecodable: String,
    api_keys: [String; 2],
    wrong_api_key: String,
    /// (what, text) pairs no output may contain: the above in every form, and every
    /// signature sent.
    forbidden: Vec<(String, String)>,
}

impl Secrets {
    fn new() -> Secrets {
        let webhook_standard_key = random_bytes(32);
        let mut secrets = Secrets {
            nats_password: distinctive("natspw"),
            owner_password: distinctive("ownerpw"),
            worker_password: distinctive("workerpw"),
            analytics_password: distinctive("analyticspw"),
            wrong_password: distinctive("wrongpw"),
            webhook_plain: distinctive("plain-webhook-secret-"),
            webhook_standard: format!("whsec_{}", BASE64.encode(&webhook_standard_key)),
            webhook_standard_key,
            webhook_undecodable: format!("whsec_{}!!", distinctive("undecodable")),
            api_keys: [distinctive("api-key-one-"), distinctive("api-key-two-")],
            wrong_api_key: distinctive("wrong-api-key-"),
            forbidden: Vec::new(),
        };
        let mut forbid = |what: &str, text: String| secrets.forbidden.push((what.into(), text));
        for (what, value) in [
            ("the NATS password", &secrets.nats_password),
            ("the owner's PostgreSQL password", &secrets.owner_password),
            ("the worker's PostgreSQL password", &secrets.worker_password),
            (
                "analytics' PostgreSQL password",
                &secrets.analytics_password,
            ),
            ("a wrong PostgreSQL password", &secrets.wrong_password),
            ("analytics API key 1", &secrets.api_keys[0]),
            ("analytics API key 2", &secrets.api_keys[1]),
            ("a wrong analytics API key", &secrets.wrong_api_key),
        ] {
            forbid(what, value.clone());
        }
        let plain = secrets.webhook_plain.as_bytes();
        forbid("the plain webhook secret", secrets.webhook_plain.clone());
        forbid("the plain webhook secret (hex)", hex::encode(plain));
        forbid("the plain webhook secret (base64)", BASE64.encode(plain));
        let key = &secrets.webhook_standard_key;
        forbid(
            "the whsec_ webhook secret",
            secrets.webhook_standard.clone(),
        );
        forbid("the whsec_ key (base64)", BASE64.encode(key));
        forbid("the whsec_ key (hex)", hex::encode(key));
        let undecodable = &secrets.webhook_undecodable;
        forbid(
            "an undecodable whsec_ secret",
            undecodable["whsec_".len()..].to_owned(),
        );
        secrets
    }

    fn plain_key(&self) -> Key {
        Key::new(self.webhook_plain.as_bytes().to_vec())
    }

    fn standard_key(&self) -> Key {
        Key::new(self.webhook_standard_key.clone())
    }

    /// Remembers a signature header value sent: it must not be logged (the MAC, without
    /// its `sha256=` or `v1,` prefix).
    fn sent_signature(&mut self, header: &str) {
        let mac = header
            .strip_prefix("sha256=")
            .or_else(|| header.strip_prefix("v1,"))
            .unwrap_or(header);
        self.forbidden
            .push(("a signature sent".into(), mac.to_owned()));
    }
}

/// The private platform (NATS and PostgreSQL requiring their passwords, and the names),
/// the processes started, and where their output goes.
struct Run {
    p: Platform,
    secrets: Secrets,
    logs: tempfile::TempDir,
    /// Output of the commands run to completion: (name, text).
    outputs: Vec<(String, String)>,
}

impl Run {
    fn database_url(&self, user: &str, password: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/events",
            self.p.pg.port()
        )
    }

    fn owner_url(&self) -> String {
        self.database_url("leak_owner", &self.secrets.owner_password)
    }

    fn stream_env(&self) -> Vec<(&'static str, String)> {
        // The password login the platform's NATS admits, in the URL.
        vec![
            ("NATS_URL", self.p.nats.url()),
            ("NATS_STREAM", self.p.names.stream.clone()),
            ("NATS_SUBJECT_PREFIX", self.p.names.prefix.clone()),
        ]
    }

    fn worker_env(&self) -> Vec<(&'static str, String)> {
        let mut env = self.stream_env();
        env.extend([
            ("NATS_CONSUMER", self.p.names.consumer.clone()),
            ("NATS_DLQ_STREAM", self.p.names.dlq.clone()),
            (
                "DATABASE_URL",
                self.database_url("leak_worker", &self.secrets.worker_password),
            ),
            ("MIGRATION_DATABASE_URL", self.owner_url()),
            ("WORKER_COMPACT_INTERVAL", "200ms".into()),
        ]);
        env
    }

    /// `binary` with a clean environment plus `env`, logging JSON at debug level.
    fn command(&self, binary: &str, args: &[&str], env: &[(&str, String)]) -> Command {
        let mut cmd = Command::new(self::binary(binary));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "debug")
            .env("LOG_FORMAT", "json")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs a command to completion; keeps its output. Returns its exit code.
    fn run_to_exit(
        &mut self,
        name: &str,
        binary: &str,
        args: &[&str],
        env: &[(&str, String)],
    ) -> Option<i32> {
        let out = self.command(binary, args, env).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.outputs.push((name.to_owned(), text));
        out.status.code()
    }

    /// Starts a service on a free port, its stdout and stderr in files of `logs`.
    fn start(&self, binary: &str, env: &[(&str, String)]) -> (ChildProcess, u16) {
        let port = testkit::free_port().unwrap();
        let mut env = env.to_vec();
        env.extend([("HOST", "127.0.0.1".into()), ("PORT", port.to_string())]);
        let file = |stream: &str| {
            std::fs::File::create(self.logs.path().join(format!("{binary}.{stream}"))).unwrap()
        };
        let mut cmd = self.command(binary, &[], &env);
        cmd.stdout(file("stdout")).stderr(file("stderr"));
        (ChildProcess::spawn(binary, cmd).unwrap(), port)
    }

    /// POSTs `body` with these headers; the status.
    async fn post(&self, port: u16, body: Vec<u8>, headers: &[(&str, String)]) -> u16 {
        let mut request = self
            .p
            .http
            .post(format!("http://127.0.0.1:{port}/webhook/event"))
            .header("Content-Type", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request.send().await.unwrap().status().as_u16()
    }

    /// Legacy headers signing `body` with the plain secret.
    fn legacy_headers(&mut self, body: &[u8]) -> Vec<(&'static str, String)> {
        let timestamp = now().to_string();
        let signature = sign_legacy(&self.secrets.plain_key(), &timestamp, body);
        self.secrets.sent_signature(&signature);
        vec![
            ("X-Webhook-Timestamp", timestamp),
            ("X-Webhook-Signature", signature),
        ]
    }

    /// Standard Webhooks headers signing `body` with the `whsec_` key.
    fn standard_headers(&mut self, body: &[u8]) -> Vec<(&'static str, String)> {
        let id = format!("msg_{}", testkit::unique_name());
        let timestamp = now().to_string();
        let signature = sign_standard(&self.secrets.standard_key(), &id, &timestamp, body);
        self.secrets.sent_signature(&signature);
        vec![
            ("webhook-id", id),
            ("webhook-timestamp", timestamp),
            ("webhook-signature", signature),
        ]
    }

    /// `/analytics/stats` with this `Authorization`; the status.
    async fn stats(&self, port: u16, authorization: &str) -> u16 {
        self.p
            .http
            .get(format!(
                "http://127.0.0.1:{port}/analytics/stats\
                 ?from=2026-03-01T00:00:00Z&to=2026-03-02T00:00:00Z"
            ))
            .header("Authorization", authorization)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Every output: the services' log files and the commands' outputs, as (name, text).
    fn everything_written(&self) -> Vec<(String, String)> {
        let mut all = self.outputs.clone();
        for entry in std::fs::read_dir(self.logs.path()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            all.push((name, std::fs::read_to_string(&path).unwrap()));
        }
        all
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `n` valid events, ids `<tag>-<i>`, as a request body.
fn events(tag: &str, n: usize) -> Vec<u8> {
    serde_json::to_vec(&testkit::events(tag, 0..n)).unwrap()
}

#[tokio::test]
async fn no_password_key_or_signature_appears_in_any_log_line_or_error_message_of_a_full_run() {
    let secrets = Secrets::new();
    // NATS admits only its password login; PostgreSQL's database is owned by a login
    // that may create roles, and every login but `postgres` needs its password (SCRAM).
    let p = Platform::builder()
        .nats_logins(&[NatsLogin::Password {
            user: "app".into(),
            password: secrets.nats_password.clone(),
        }])
        .database_owner("leak_owner")
        .database_owner_password(&secrets.owner_password)
        .require_passwords()
        .start()
        .await
        .unwrap();
    let mut run = Run {
        p,
        secrets,
        logs: tempfile::tempdir().unwrap(),
        outputs: Vec::new(),
    };

    // Refused configurations: the error names the variable, never its value.
    let bad_nats = format!(
        "nats://app:{}@127.0.0.1:notaport",
        run.secrets.nats_password
    );
    let code = run.run_to_exit(
        "ingestion (bad NATS_URL)",
        "ingestion",
        &[],
        &[("NATS_URL", bad_nats)],
    );
    assert_eq!(code, Some(2));
    let bad_database = format!(
        "postgres://leak_owner:{}@127.0.0.1:notaport/events",
        run.secrets.owner_password
    );
    let code = run.run_to_exit(
        "analytics (bad DATABASE_URL)",
        "analytics",
        &[],
        &[("DATABASE_URL", bad_database)],
    );
    assert_eq!(code, Some(2));
    let short = format!("{},short", run.secrets.webhook_plain);
    let code = run.run_to_exit(
        "ingestion (a short WEBHOOK_SECRET)",
        "ingestion",
        &[],
        &[("WEBHOOK_SECRET", short)],
    );
    assert_eq!(code, Some(2));
    let undecodable = format!(
        "{},{}",
        run.secrets.webhook_plain, run.secrets.webhook_undecodable
    );
    let code = run.run_to_exit(
        "ingestion (an undecodable whsec_ WEBHOOK_SECRET)",
        "ingestion",
        &[],
        &[("WEBHOOK_SECRET", undecodable.clone())],
    );
    assert_eq!(code, Some(2));
    let code = run.run_to_exit(
        "publisher (an undecodable whsec_ WEBHOOK_SECRET)",
        "publisher",
        &["--count", "1"],
        &[("WEBHOOK_SECRET", undecodable)],
    );
    assert_eq!(code, Some(2));

    // The deploy steps: a refused login first, then the owner migrates; the services'
    // logins are made in the roles the migration created.
    let wrong = run.database_url("leak_owner", &run.secrets.wrong_password);
    let code = run.run_to_exit(
        "worker migrate (wrong password)",
        "worker",
        &["migrate"],
        &[("MIGRATION_DATABASE_URL", wrong)],
    );
    assert_ne!(code, Some(0), "a wrong password is refused");
    let owner = run.owner_url();
    let code = run.run_to_exit(
        "worker migrate",
        "worker",
        &["migrate"],
        &[("MIGRATION_DATABASE_URL", owner)],
    );
    assert_eq!(code, Some(0), "{:?}", run.outputs.last());
    let admin = run.p.db().await.unwrap();
    admin
        .batch_execute(&format!(
            "CREATE ROLE leak_worker LOGIN PASSWORD '{}' IN ROLE events_writer;
             CREATE ROLE leak_analytics LOGIN PASSWORD '{}' IN ROLE events_reader;",
            run.secrets.worker_password, run.secrets.analytics_password
        ))
        .await
        .unwrap();

    // The services.
    let mut ingestion_env = run.stream_env();
    ingestion_env.extend([
        (
            "WEBHOOK_SECRET",
            format!(
                "{},{}",
                run.secrets.webhook_plain, run.secrets.webhook_standard
            ),
        ),
        ("HTTP_MAX_BODY_BYTES", MAX_BODY_BYTES.to_string()),
    ]);
    let (mut ingestion, ingestion_port) = run.start("ingestion", &ingestion_env);
    let (mut worker, worker_port) = run.start("worker", &run.worker_env());
    let analytics_env = [
        (
            "DATABASE_URL",
            run.database_url("leak_analytics", &run.secrets.analytics_password),
        ),
        ("ANALYTICS_API_KEY", run.secrets.api_keys.join(",")),
    ];
    let (mut analytics, analytics_port) = run.start("analytics", &analytics_env);
    for port in [ingestion_port, worker_port, analytics_port] {
        run.p.wait_ready(port).await.unwrap();
    }

    // Posts: valid in both schemes, then refused ones.
    let body = events("legacy", 8);
    let headers = run.legacy_headers(&body);
    assert_eq!(run.post(ingestion_port, body, &headers).await, 202);
    let body = events("standard", 8);
    let headers = run.standard_headers(&body);
    assert_eq!(run.post(ingestion_port, body, &headers).await, 202);

    let body = events("forged", 2);
    let forged = sign_legacy(&Key::new(random_bytes(32)), &now().to_string(), &body);
    run.secrets.sent_signature(&forged);
    let headers = [
        ("X-Webhook-Timestamp", now().to_string()),
        ("X-Webhook-Signature", forged),
    ];
    assert_eq!(run.post(ingestion_port, body.clone(), &headers).await, 401);
    let forged = format!("v1,{}", BASE64.encode(random_bytes(32)));
    run.secrets.sent_signature(&forged);
    let headers = [
        ("webhook-id", "msg_forged".to_owned()),
        ("webhook-timestamp", now().to_string()),
        ("webhook-signature", forged),
    ];
    assert_eq!(run.post(ingestion_port, body.clone(), &headers).await, 401);
    // A client sending the secret itself as the signature.
    let headers = [
        ("X-Webhook-Timestamp", now().to_string()),
        ("X-Webhook-Signature", run.secrets.webhook_plain.clone()),
    ];
    assert_eq!(run.post(ingestion_port, body.clone(), &headers).await, 401);

    let mut invalid: Value = serde_json::from_slice(&events("invalid", 1)).unwrap();
    invalid[0]["source"] = "myspace".into();
    let invalid = serde_json::to_vec(&invalid).unwrap();
    let headers = run.legacy_headers(&invalid);
    assert_eq!(run.post(ingestion_port, invalid, &headers).await, 422);
    let huge = vec![b' '; MAX_BODY_BYTES + 1];
    let headers = run.standard_headers(&huge);
    assert_eq!(run.post(ingestion_port, huge, &headers).await, 413);
    run.p.wait_rows(16).await.unwrap();

    // Reports: both keys open them, a wrong key does not.
    for key in run.secrets.api_keys.clone() {
        assert_eq!(
            run.stats(analytics_port, &format!("Bearer {key}")).await,
            200
        );
    }
    let wrong_key = format!("Bearer {}", run.secrets.wrong_api_key);
    assert_eq!(run.stats(analytics_port, &wrong_key).await, 401);
    let webhook_as_key = format!("Bearer {}", run.secrets.webhook_plain);
    assert_eq!(run.stats(analytics_port, &webhook_as_key).await, 401);

    // NATS restarts: ingestion and the worker lose it, log it, and log in again.
    run.p.nats.restart().await.unwrap();
    for port in [ingestion_port, worker_port] {
        run.p.wait_ready(port).await.unwrap();
    }
    let body = events("after-nats", 4);
    let headers = run.legacy_headers(&body);
    assert_eq!(run.post(ingestion_port, body, &headers).await, 202);
    run.p.wait_rows(20).await.unwrap();

    // PostgreSQL restarts: the worker's and analytics' connections fail, then log in again.
    run.p.pg.restart().await.unwrap();
    for port in [worker_port, analytics_port] {
        run.p.wait_ready(port).await.unwrap();
    }
    let body = events("after-postgres", 4);
    let headers = run.standard_headers(&body);
    assert_eq!(run.post(ingestion_port, body, &headers).await, 202);
    run.p.wait_rows(24).await.unwrap();
    let key = format!("Bearer {}", run.secrets.api_keys[0]);
    assert_eq!(run.stats(analytics_port, &key).await, 200);

    // The demo publisher signs with both secrets, some of its events invalid (422).
    let publisher_env = [
        (
            "EVENT_ENDPOINT",
            format!("http://127.0.0.1:{ingestion_port}/webhook/event"),
        ),
        (
            "WEBHOOK_SECRET",
            format!(
                "{},{}",
                run.secrets.webhook_plain, run.secrets.webhook_standard
            ),
        ),
        ("PUBLISHER_SIGNATURE_SCHEME", "standard".into()),
    ];
    let args = [
        "--count",
        "40",
        "--batch",
        "10",
        "--rate",
        "0",
        "--invalid",
        "0.1",
    ];
    assert_eq!(
        run.run_to_exit("publisher", "publisher", &args, &publisher_env),
        Some(0),
        "{:?}",
        run.outputs.last()
    );

    // The operator's commands, with the same environment.
    let worker_env = run.worker_env();
    assert_eq!(
        run.run_to_exit("worker dlq list", "worker", &["dlq", "list"], &worker_env),
        Some(0)
    );
    let health_env = [("PORT", worker_port.to_string())];
    assert_eq!(
        run.run_to_exit(
            "worker healthcheck",
            "worker",
            &["healthcheck"],
            &health_env
        ),
        Some(0)
    );

    for service in [&mut ingestion, &mut worker, &mut analytics] {
        service.signal("TERM").unwrap();
    }
    for service in [&mut ingestion, &mut worker, &mut analytics] {
        let status = service.wait_exit(WAIT).await.unwrap();
        assert!(status.success(), "{status:?}");
    }

    // The search. First, that there is something to search: each service logged at
    // debug level, and the outages were logged as warnings or errors.
    let written = run.everything_written();
    for service in ["ingestion", "worker", "analytics"] {
        let files = [format!("{service}.stdout"), format!("{service}.stderr")];
        let lines: usize = written
            .iter()
            .filter(|(name, _)| files.contains(name))
            .map(|(_, log)| log.lines().count())
            .sum();
        assert!(lines > 10, "{service} logged {lines} lines");
    }
    let all_text: String = written.iter().map(|(_, text)| text.as_str()).collect();
    assert!(
        all_text.contains(r#""level":"DEBUG""#),
        "debug lines were logged"
    );
    assert!(
        all_text.contains(r#""level":"WARN""#) || all_text.contains(r#""level":"ERROR""#),
        "the outages were logged"
    );
    let leaks: Vec<String> = written
        .iter()
        .flat_map(|(name, text)| text.lines().map(move |line| (name, line)))
        .flat_map(|(name, line)| {
            run.secrets
                .forbidden
                .iter()
                .filter(|(_, secret)| line.contains(secret.as_str()))
                .map(move |(what, _)| format!("{name}: {what} in: {line}"))
        })
        .collect();
    assert!(
        leaks.is_empty(),
        "{} lines leak a secret:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
}
