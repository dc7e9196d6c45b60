//! NATS with authentication, against a real nats-server requiring a login: a password in
//! NATS_URL or an nkey seed file lets ingestion and the worker in and events are stored;
//! a wrong password leaves both running and unready, with readiness saying why, and no
//! log line ever shows the password.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use testkit::{
    ChildProcess, NatsLogin, NkeyUser, Platform, Service, WAIT, WorkerLog, events, generated,
};

/// A password no other text of a test contains, so finding it in a log means a leak.
fn distinctive_password(tag: &str) -> String {
    format!("{tag}{}", testkit::unique_name())
}

fn password_login(user: &str, password: &str) -> NatsLogin {
    NatsLogin::Password {
        user: user.to_owned(),
        password: password.to_owned(),
    }
}

/// Ingestion in this process on `nats_url` (plus `extra` flags), without waiting for it
/// to be ready.
async fn start_ingestion_at(p: &Platform, nats_url: &str, extra: &[&str]) -> Service {
    let mut args = vec![
        "ingestion",
        "--host=127.0.0.1",
        "--port=0",
        "--nats-url",
        nats_url,
        "--nats-stream",
        &p.names.stream,
        "--nats-subject-prefix",
        &p.names.prefix,
    ];
    args.extend_from_slice(extra);
    let args = args.into_iter().map(String::from);
    Service::ingestion(testkit::parse(args).unwrap())
        .await
        .unwrap()
}

/// Asks ingestion to stop and waits: it must not have ended by itself before.
async fn stop(ingestion: Service) {
    assert!(!ingestion.is_finished(), "ingestion ended by itself");
    ingestion.stop().await.unwrap();
}

/// The real worker binary on `nats_url` (plus `env`), logging JSON at info level into
/// `log`.
fn start_worker_binary(
    p: &Platform,
    nats_url: &str,
    env: &[(&str, &str)],
    log: &Path,
) -> (ChildProcess, u16) {
    let mut env = env.to_vec();
    env.push(("NATS_URL", nats_url));
    p.start_worker_process_logging(
        &env,
        WorkerLog::File {
            rust_log: "info",
            path: log,
        },
    )
    .unwrap()
}

/// The reason of the failing `nats` check, once readiness shows one about authorization.
async fn nats_failure(p: &Platform, port: u16) -> String {
    p.wait_not_ready(port, "nats", "authorization")
        .await
        .unwrap()
}

#[tokio::test]
async fn a_password_in_nats_url_logs_ingestion_and_the_worker_in_and_events_are_stored() {
    let password = distinctive_password("right");
    let p = Platform::builder()
        .worker_binary(env!("CARGO_BIN_EXE_worker"))
        .nats_logins(&[password_login("app", &password)])
        .start()
        .await
        .unwrap();
    assert!(
        p.nats.url().contains(&password),
        "the services get the login in NATS_URL"
    );

    let ingestion = p.start_ingestion(&[]).await.unwrap();
    let worker = p.start_worker(&[]).await.unwrap();
    p.wait_ready(worker.port).await.unwrap();
    let (status, reply) = p
        .post(ingestion.port, &Value::Array(generated(1, 50).unwrap()))
        .await
        .unwrap();
    assert_eq!(status, 202, "{reply}");
    p.wait_rows(50).await.unwrap();

    // The operator's `worker dlq` logs in the same way.
    let listed = dlq_list(&p, &p.nats.url()).await;
    assert_eq!(listed.status.code(), Some(0), "{listed:?}");
    let wrong = p.nats.url().replace(&password, "not-the-password");
    let refused = dlq_list(&p, &wrong).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("authorization violation"), "{stderr}");
    assert!(!stderr.contains("not-the-password"), "{stderr}");

    worker.stop().await.unwrap();
    ingestion.stop().await.unwrap();
}

async fn dlq_list(p: &Platform, nats_url: &str) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_worker"))
        .env_clear()
        .env("NATS_URL", nats_url)
        .env("NATS_STREAM", &p.names.stream)
        .env("NATS_SUBJECT_PREFIX", &p.names.prefix)
        .env("NATS_DLQ_STREAM", &p.names.dlq)
        .args(["dlq", "list"])
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_nkey_seed_file_logs_ingestion_and_the_worker_in_and_events_are_stored() {
    let user = NkeyUser::generate().unwrap();
    let p = Platform::builder()
        .worker_binary(env!("CARGO_BIN_EXE_worker"))
        .nats_logins(&[
            password_login("testkit", &distinctive_password("admin")),
            NatsLogin::Nkey {
                public_key: user.public_key.clone(),
            },
        ])
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("worker.nk");
    std::fs::write(&seed, format!("{}\n", user.seed)).unwrap();
    let seed = seed.to_str().unwrap();

    let ingestion =
        start_ingestion_at(&p, &p.nats.address(), &["--nats-nkey-seed-file", seed]).await;
    p.wait_ready(ingestion.port).await.unwrap();
    let log = dir.path().join("worker.log");
    let (_worker, port) = start_worker_binary(
        &p,
        &p.nats.address(),
        &[("NATS_NKEY_SEED_FILE", seed)],
        &log,
    );
    p.wait_ready(port).await.unwrap();
    let (status, reply) = p
        .post(ingestion.port, &Value::Array(events("nkey", 0..30)))
        .await
        .unwrap();
    assert_eq!(status, 202, "{reply}");
    p.wait_rows(30).await.unwrap();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        !logged.contains(&user.seed),
        "the seed leaked into a log:\n{logged}"
    );
    stop(ingestion).await;
}

#[tokio::test]
async fn a_worker_with_a_wrong_password_keeps_running_unready_and_never_logs_a_password() {
    let right = distinctive_password("right");
    let wrong = distinctive_password("wrong");
    let p = Platform::builder()
        .worker_binary(env!("CARGO_BIN_EXE_worker"))
        .nats_logins(&[password_login("app", &right)])
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = p.nats.port();

    let refused_log = dir.path().join("refused.log");
    let wrong_url = format!("nats://app:{wrong}@127.0.0.1:{port}");
    let (mut refused, refused_port) = start_worker_binary(&p, &wrong_url, &[], &refused_log);
    let reason = nats_failure(&p, refused_port).await;
    assert!(reason.contains("authorization violation"), "{reason}");
    // Still there after several retries: the client keeps trying, the process stays.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(refused.try_status().is_none(), "the worker exited");
    let (status, _) = p.readiness(refused_port).await.unwrap();
    assert_eq!(status, 503);
    refused.signal("TERM").unwrap();
    let exit = refused.wait_exit(WAIT).await.unwrap();
    assert!(exit.success(), "a stop asked for is a clean exit: {exit}");

    let accepted_log = dir.path().join("accepted.log");
    let (_accepted, accepted_port) = start_worker_binary(&p, &p.nats.url(), &[], &accepted_log);
    p.wait_ready(accepted_port).await.unwrap();

    let refused_lines = std::fs::read_to_string(&refused_log).unwrap();
    let accepted_lines = std::fs::read_to_string(&accepted_log).unwrap();
    assert!(
        refused_lines.contains("authorization violation"),
        "the refusal is logged:\n{refused_lines}"
    );
    for (name, lines) in [("refused", &refused_lines), ("accepted", &accepted_lines)] {
        assert!(!lines.is_empty(), "the {name} worker logged nothing");
        for password in [&right, &wrong] {
            assert!(
                !lines.contains(password.as_str()),
                "the {name} worker logged a password:\n{lines}"
            );
        }
    }
}

#[tokio::test]
async fn ingestion_with_a_wrong_password_stays_up_unready_and_answers_posts_503() {
    let p = Platform::builder()
        .worker_binary(env!("CARGO_BIN_EXE_worker"))
        .nats_logins(&[password_login("app", &distinctive_password("right"))])
        .start()
        .await
        .unwrap();
    let wrong_url = format!("nats://app:wrong-password@127.0.0.1:{}", p.nats.port());
    let ingestion = start_ingestion_at(&p, &wrong_url, &[]).await;

    let reason = nats_failure(&p, ingestion.port).await;
    assert!(reason.contains("authorization violation"), "{reason}");
    let (status, reply) = p
        .post(ingestion.port, &Value::Array(events("refused", 0..3)))
        .await
        .unwrap();
    assert_eq!(status, 503, "{reply}");
    assert!(
        !reply.to_string().contains("wrong-password"),
        "the password leaked into the answer: {reply}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, _) = p.readiness(ingestion.port).await.unwrap();
    assert_eq!(status, 503, "still up, still unready");
    stop(ingestion).await;
}
