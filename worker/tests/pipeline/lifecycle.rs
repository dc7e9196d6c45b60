//! Start-up: two workers at once, a consumer deleted behind their back, a bad setting.

use crate::platform;
use serde_json::Value;
use testkit::events;

#[tokio::test]
async fn two_workers_starting_together_share_the_schema_and_the_consumer() {
    let p = platform().await.unwrap();
    let ingestion = p.start_ingestion(&[]).await.unwrap();
    let (a, b) = tokio::join!(p.start_worker(&[]), p.start_worker(&[]));
    let (a, b) = (a.unwrap(), b.unwrap());
    p.wait_ready(a.port).await.unwrap();
    p.wait_ready(b.port).await.unwrap();
    let all = events("pair", 0..3000);
    for body in all.chunks(100) {
        let (status, _) = p
            .post(ingestion.port, &Value::Array(body.to_vec()))
            .await
            .unwrap();
        assert_eq!(status, 202);
    }
    p.wait_rows(3000).await.unwrap();
    let versions: i64 = p
        .db()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(versions as usize, service_kit::schema::MIGRATIONS.len());
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    ingestion.stop().await.unwrap();
}

#[tokio::test]
async fn a_consumer_deleted_behind_the_workers_back_is_recreated() {
    let p = platform().await.unwrap();
    let ingestion = p.start_ingestion(&[]).await.unwrap();
    let worker = p.start_worker(&[]).await.unwrap();
    let all = events("del", 0..200);
    let (status, _) = p
        .post(ingestion.port, &Value::Array(all[..100].to_vec()))
        .await
        .unwrap();
    assert_eq!(status, 202);
    p.wait_rows(100).await.unwrap();

    let js = p.js().await.unwrap();
    js.get_stream(&p.names.stream)
        .await
        .unwrap()
        .delete_consumer(&p.names.consumer)
        .await
        .unwrap();
    let (status, _) = p
        .post(ingestion.port, &Value::Array(all[100..].to_vec()))
        .await
        .unwrap();
    assert_eq!(status, 202);
    p.wait_rows(200).await.unwrap();
    worker.stop().await.unwrap();
    ingestion.stop().await.unwrap();
}

#[tokio::test]
async fn a_bad_setting_stops_the_worker_with_one_line_naming_it() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_worker"))
        .env("WORKER_BATCH_SIZE", "-3")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("WORKER_BATCH_SIZE"), "{stderr}");

    let help = std::process::Command::new(env!("CARGO_BIN_EXE_worker"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for var in [
        "DATABASE_URL",
        "NATS_URL",
        "NATS_MAX_DELIVER",
        "NATS_DLQ_STREAM",
        "DB_POOL_MAX",
    ] {
        assert!(help.contains(var), "--help lists {var}");
    }
}
