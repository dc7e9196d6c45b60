//! TLS to a PostgreSQL with a self-signed certificate that refuses plain text to every
//! role the services use.

use crate::helpers::{
    ANALYTICS_USER, COMPACT_SOON, OWNER, WORKER_USER, create_login_users, events,
    platform_with_tls, post, stats_total, tls_connections, wait_all_compacted,
};

#[tokio::test]
async fn with_verify_full_and_the_root_certificate_the_platform_runs_over_tls() {
    let p = platform_with_tls().await.unwrap();
    let verify = p.verify_full().unwrap();
    p.migrate(&p.database_url_as(OWNER, &verify)).await.unwrap();
    create_login_users(&p).await.unwrap();
    let ingestion = p.start_ingestion(&[]).await.unwrap();
    let worker = p
        .start_worker_on(&p.database_url_as(WORKER_USER, &verify), &[COMPACT_SOON])
        .await
        .unwrap();
    p.wait_ready(worker.port).await.unwrap();
    // By name this time: the certificate is for `localhost` and 127.0.0.1.
    let analytics_url = format!(
        "postgres://{ANALYTICS_USER}@localhost:{}/events{verify}",
        p.pg.port()
    );
    let analytics = p.start_analytics_on(&analytics_url, &[]).await.unwrap();
    p.wait_ready(analytics.port).await.unwrap();

    assert_eq!(
        post(&p, ingestion.port, events("tls", 24)).await.unwrap(),
        202
    );
    p.wait_rows(24).await.unwrap();
    wait_all_compacted(&p).await.unwrap();
    assert_eq!(stats_total(&p, analytics.port).await.unwrap(), 24);

    for user in [WORKER_USER, ANALYTICS_USER] {
        let (connections, encrypted) = tls_connections(&p, user).await.unwrap();
        assert!(connections > 0, "{user} is connected");
        assert_eq!(
            encrypted, connections,
            "every connection of {user} uses TLS"
        );
    }
    analytics.stop().await.unwrap();
    worker.stop().await.unwrap();
    ingestion.stop().await.unwrap();
}

#[tokio::test]
async fn each_sslmode_connects_or_is_refused_as_libpq_would_and_readiness_says_why() {
    let p = platform_with_tls().await.unwrap();
    p.migrate(&p.database_url_as(OWNER, &p.verify_full().unwrap()))
        .await
        .unwrap();
    create_login_users(&p).await.unwrap();
    let another = testkit::SelfSigned::generate().unwrap();
    let root = p.tls.as_ref().unwrap().cert();

    // Encrypted, with or without checking the certificate.
    for query in [
        "?sslmode=require".to_owned(),
        "?sslmode=prefer".to_owned(),
        format!("?sslmode=verify-ca&sslrootcert={}", root.display()),
    ] {
        let analytics = p
            .start_analytics_on(&p.database_url_as(ANALYTICS_USER, &query), &[])
            .await
            .unwrap();
        p.wait_ready(analytics.port).await.unwrap();
        assert_eq!(stats_total(&p, analytics.port).await.unwrap(), 0, "{query}");
        let (connections, encrypted) = tls_connections(&p, ANALYTICS_USER).await.unwrap();
        assert!(connections > 0 && encrypted == connections, "{query}");
        analytics.stop().await.unwrap();
    }

    // Refused: a certificate no trusted root signed (the system's roots, or another
    // root), or plain text, which the server's `hostssl` rule refuses.
    for (query, reason) in [
        (
            "?sslmode=verify-full".to_owned(),
            "invalid peer certificate",
        ),
        (
            format!(
                "?sslmode=verify-full&sslrootcert={}",
                another.cert().display()
            ),
            "invalid peer certificate",
        ),
        (
            format!(
                "?sslmode=verify-ca&sslrootcert={}",
                another.cert().display()
            ),
            "invalid peer certificate",
        ),
        ("?sslmode=disable".to_owned(), "no encryption"),
    ] {
        let analytics = p
            .start_analytics_on(&p.database_url_as(ANALYTICS_USER, &query), &[])
            .await
            .unwrap();
        p.wait_not_ready(analytics.port, "database", reason)
            .await
            .unwrap();
        analytics.stop().await.unwrap();
    }

    // The worker says so too, and `worker migrate` fails without naming the password.
    let wrong_root = format!(
        "?sslmode=verify-full&sslrootcert={}",
        another.cert().display()
    );
    let worker = p
        .start_worker_on(&p.database_url_as(WORKER_USER, &wrong_root), &[])
        .await
        .unwrap();
    p.wait_not_ready(worker.port, "database", "invalid peer certificate")
        .await
        .unwrap();
    worker.stop().await.unwrap();
    let with_password = format!(
        "postgres://{OWNER}:not-to-be-logged@127.0.0.1:{}/events{wrong_root}",
        p.pg.port()
    );
    let out = p
        .run_worker(&["migrate"], &[("MIGRATION_DATABASE_URL", &with_password)])
        .await
        .unwrap();
    assert!(!out.status.success());
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(output.contains("invalid peer certificate"), "{output}");
    assert!(!output.contains("not-to-be-logged"), "{output}");
}
