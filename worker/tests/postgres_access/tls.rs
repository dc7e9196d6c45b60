//! TLS to a PostgreSQL with a self-signed certificate that refuses plain text to every
//! role the services use.

use crate::harness::{ANALYTICS_USER, OWNER, Platform, WORKER_USER, events};

#[tokio::test]
async fn with_verify_full_and_the_root_certificate_the_platform_runs_over_tls() {
    let p = Platform::start_with_tls().await.unwrap();
    let verify = p.verify_full();
    p.migrate(&p.url(OWNER, &verify)).await.unwrap();
    p.create_login_users().await.unwrap();
    let ingestion = p.start_ingestion().await.unwrap();
    let worker = p
        .start_worker(&p.url(WORKER_USER, &verify), &[])
        .await
        .unwrap();
    p.wait_ready(worker.port).await.unwrap();
    // By name this time: the certificate is for `localhost` and 127.0.0.1.
    let analytics_url = format!(
        "postgres://{ANALYTICS_USER}@localhost:{}/events{verify}",
        p.pg.port()
    );
    let analytics = p.start_analytics(&analytics_url).await.unwrap();
    p.wait_ready(analytics.port).await.unwrap();

    assert_eq!(
        p.post(ingestion.port, &events("tls", 24)).await.unwrap(),
        202
    );
    p.wait_rows(24).await.unwrap();
    p.wait_compacted().await.unwrap();
    assert_eq!(p.stats_total(analytics.port).await.unwrap(), 24);

    for user in [WORKER_USER, ANALYTICS_USER] {
        let (connections, encrypted) = p.tls_connections(user).await.unwrap();
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
    let p = Platform::start_with_tls().await.unwrap();
    p.migrate(&p.url(OWNER, &p.verify_full())).await.unwrap();
    p.create_login_users().await.unwrap();
    let another = testkit::SelfSigned::generate().unwrap();
    let root = p.cert.as_ref().unwrap().cert();

    // Encrypted, with or without checking the certificate.
    for query in [
        "?sslmode=require".to_owned(),
        "?sslmode=prefer".to_owned(),
        format!("?sslmode=verify-ca&sslrootcert={}", root.display()),
    ] {
        let analytics = p
            .start_analytics(&p.url(ANALYTICS_USER, &query))
            .await
            .unwrap();
        p.wait_ready(analytics.port).await.unwrap();
        assert_eq!(p.stats_total(analytics.port).await.unwrap(), 0, "{query}");
        let (connections, encrypted) = p.tls_connections(ANALYTICS_USER).await.unwrap();
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
            .start_analytics(&p.url(ANALYTICS_USER, &query))
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
        .start_worker(&p.url(WORKER_USER, &wrong_root), &[])
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
        .worker_binary(&["migrate"], &[("MIGRATION_DATABASE_URL", &with_password)])
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
