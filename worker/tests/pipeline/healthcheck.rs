//! `worker healthcheck`, the container's health check: the binary asks the worker running
//! with the same environment for its readiness.

use crate::platform;
use testkit::{WAIT, eventually};

/// `worker healthcheck` run with only these variables: exit code, stdout, stderr.
async fn healthcheck(env: &[(&str, &str)]) -> testkit::HealthcheckAnswer {
    testkit::healthcheck(env!("CARGO_BIN_EXE_worker"), env)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_healthcheck_subcommand_exits_0_while_ready_and_1_naming_the_database_once_it_is_down()
{
    let mut p = platform().await.unwrap();
    let worker = p.start_worker(&[]).await.unwrap();
    p.wait_ready(worker.port).await.unwrap();
    let port = worker.port.to_string();
    // HOST as in the container: every interface, so the check asks 127.0.0.1.
    let env = [("HOST", "0.0.0.0"), ("PORT", port.as_str())];

    let (code, stdout, stderr) = healthcheck(&env).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
    assert!(stdout.contains("/health/readiness"), "{stdout}");

    p.pg.kill();
    let stderr = eventually("the healthcheck failing", WAIT, || async {
        let (code, _, stderr) = healthcheck(&env).await;
        (code == Some(1)).then_some(stderr)
    })
    .await
    .unwrap();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("503") && stderr.contains("database"),
        "{stderr}"
    );
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn the_healthcheck_subcommand_exits_1_with_one_line_when_nothing_listens() {
    testkit::assert_healthcheck_fails_when_nothing_listens(env!("CARGO_BIN_EXE_worker")).await;
}
