//! Optional webhook signatures: `X-Webhook-Signature: sha256=<HMAC of "<ts>.<body>">`
//! (the Standard Webhooks scheme, several secrets and bad secrets: `secrets.rs`).

use crate::helpers::{Options, assert_error, fb_top, spawn_app};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const SECRET: &str = "s3cret-for-tests-of-at-least-32-bytes";

fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

#[tokio::test]
async fn with_a_secret_only_correctly_signed_fresh_requests_are_accepted() {
    let app = spawn_app(Options {
        webhook_secret: Some(SECRET.into()),
        ..Options::default()
    })
    .await;
    let body = serde_json::to_vec(&fb_top("signed-1")).expect("json");
    let json = Some("application/json");
    let ts = now().to_string();

    // No signature headers at all.
    let response = app.post_raw(body.clone(), json).await;
    assert_error(response, 401, "unauthorized").await;

    // Only one of the two headers.
    let good = sign(SECRET, &ts, &body);
    let response = app
        .post_with(body.clone(), json, &[("X-Webhook-Signature", &good)])
        .await;
    assert_error(response, 401, "unauthorized").await;

    // Signed with another secret.
    let wrong = sign("another-secret", &ts, &body);
    let response = app
        .post_with(
            body.clone(),
            json,
            &[
                ("X-Webhook-Timestamp", &ts),
                ("X-Webhook-Signature", &wrong),
            ],
        )
        .await;
    assert_error(response, 401, "unauthorized").await;

    // Correct signature of another body (the body was tampered with).
    let other = sign(SECRET, &ts, b"{}");
    let response = app
        .post_with(
            body.clone(),
            json,
            &[
                ("X-Webhook-Timestamp", &ts),
                ("X-Webhook-Signature", &other),
            ],
        )
        .await;
    assert_error(response, 401, "unauthorized").await;

    // Correctly signed, but older (and newer) than 5 minutes: a replay.
    for skew in [-301, -3600, 3600] {
        let stale = (now() + skew).to_string();
        let signature = sign(SECRET, &stale, &body);
        let response = app
            .post_with(
                body.clone(),
                json,
                &[
                    ("X-Webhook-Timestamp", &stale),
                    ("X-Webhook-Signature", &signature),
                ],
            )
            .await;
        assert_error(response, 401, "unauthorized").await;
    }
    assert_eq!(app.stored_event_count().await, 0);

    // Correct.
    let response = app
        .post_with(
            body.clone(),
            json,
            &[("X-Webhook-Timestamp", &ts), ("X-Webhook-Signature", &good)],
        )
        .await;
    assert_eq!(response.status(), 202);
    assert_eq!(app.stored_event_count().await, 1);
}

#[tokio::test]
async fn without_a_secret_unsigned_requests_are_accepted() {
    let app = spawn_app(Options::default()).await;
    assert_eq!(app.post_json(&fb_top("unsigned-1")).await.status(), 202);
}
