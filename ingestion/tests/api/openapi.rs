//! The OpenAPI document: the committed copy (`docs/openapi/ingestion.json`) is the one the
//! code generates, and the service serves it and Swagger UI (compiled in, no network) at
//! `/api`.

use crate::helpers::{Options, spawn_app};
use serde_json::Value;
use std::path::PathBuf;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi/ingestion.json")
}

fn generated() -> Value {
    serde_json::to_value(ingestion::openapi()).expect("the document serialises")
}

/// `UPDATE_OPENAPI=1 cargo test -p ingestion --test api openapi`
/// rewrites the committed file, and the run still fails, so the change is seen and
/// committed and CI can never pass with the variable set.
#[test]
fn committed_document_matches_the_code() {
    testkit::openapi::assert_committed_document(
        &committed_path(),
        &generated(),
        "UPDATE_OPENAPI=1 cargo test -p ingestion --test api openapi",
    );
}

/// OpenAPI requires every `operationId` to be unique, and client generators name their
/// methods after them (the alias `POST /webhook` included).
#[test]
fn every_operation_has_a_unique_id() {
    testkit::openapi::assert_unique_operation_ids(&generated());
}

#[test]
fn the_webhook_and_its_alias_document_every_outcome() {
    let document = generated();
    for path in ["/webhook/event", "/webhook"] {
        let post = &document["paths"][path]["post"];
        for status in [
            "202", "400", "401", "408", "413", "415", "422", "429", "500", "503",
        ] {
            assert!(post["responses"][status].is_object(), "{path} {status}");
        }
        let headers: Vec<&str> = post["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "header")
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(
            headers,
            [
                "X-Correlation-ID",
                "X-Webhook-Timestamp",
                "X-Webhook-Signature",
                "webhook-id",
                "webhook-timestamp",
                "webhook-signature",
            ]
        );
        assert!(post["requestBody"]["content"]["application/json"].is_object());
    }
    assert!(document["components"]["schemas"]["Event"].is_object());
}

#[tokio::test]
async fn the_service_serves_the_document_and_swagger_ui() {
    let app = spawn_app(Options::default()).await;

    let response = app.get("/api/openapi.json").await.unwrap();
    assert_eq!(response.status(), 200);
    let served: Value = response.json().await.unwrap();
    assert_eq!(served, generated());
    let paths: Vec<&String> = served["paths"].as_object().unwrap().keys().collect();
    for path in [
        "/webhook/event",
        "/webhook",
        "/health/liveness",
        "/health/readiness",
        "/metrics",
    ] {
        assert!(paths.iter().any(|p| *p == path), "{path} in {paths:?}");
    }

    // `/api` itself leads to the UI (by a redirect to `/api/`).
    let response = app.get("/api").await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.url().path(), "/api/");
    let html = response.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");

    // Every script the page loads is served from the binary.
    let scripts: Vec<&str> = html
        .split("<script src=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .collect();
    assert!(!scripts.is_empty(), "{html}");
    for script in scripts {
        let path = format!("/api/{}", script.trim_start_matches("./"));
        let response = app.get(&path).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let body = response.text().await.unwrap();
        assert!(!body.is_empty(), "{path}");
        if script.contains("initializer") {
            assert!(body.contains("/api/openapi.json"), "{body}");
        }
    }
}
