//! The OpenAPI document: the committed copy (`docs/openapi/analytics.json`) is the one the
//! code generates, and the service serves it and Swagger UI (compiled in, no network) at
//! `/api`, open even when an API key protects the reports.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi/analytics.json")
}

fn generated() -> Value {
    serde_json::to_value(analytics::openapi()).unwrap()
}

/// `UPDATE_OPENAPI=1 cargo test -p analytics --test openapi`
/// rewrites the committed file, and the run still fails, so the change is seen and
/// committed and CI can never pass with the variable set.
#[test]
fn committed_document_matches_the_code() {
    testkit::openapi::assert_committed_document(
        &committed_path(),
        &generated(),
        "UPDATE_OPENAPI=1 cargo test -p analytics --test openapi",
    );
}

/// OpenAPI requires every `operationId` to be unique, and client generators name their
/// methods after them.
#[test]
fn every_operation_has_a_unique_id() {
    testkit::openapi::assert_unique_operation_ids(&generated());
}

#[test]
fn every_report_is_documented() {
    let document = generated();
    let paths = document["paths"].as_object().unwrap();
    for path in [
        "/analytics/stats",
        "/analytics/timeseries",
        "/analytics/funnel",
        "/analytics/geo",
        "/analytics/revenue",
        "/analytics/campaigns/top",
        "/analytics/users/top",
        "/analytics/demographics",
    ] {
        let get = &paths[path]["get"];
        for status in ["200", "400", "401", "500", "503"] {
            assert!(get["responses"][status].is_object(), "{path} {status}");
        }
        // JSON or CSV, chosen by `format` (or `Accept`).
        let ok = &get["responses"]["200"]["content"];
        assert!(ok["application/json"]["schema"].is_object(), "{path}");
        assert_eq!(ok["text/csv"]["schema"]["type"], "string", "{path}");
        let format = get["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "format")
            .unwrap_or_else(|| panic!("{path} takes format"));
        assert_eq!(format["schema"]["enum"], serde_json::json!(["json", "csv"]));
    }
    for path in ["/health/liveness", "/health/readiness", "/metrics"] {
        assert!(paths[path]["get"].is_object(), "{path}");
    }
}

/// Starts the service with the database down (it starts anyway) and an API key set.
async fn start() -> (String, tokio::task::JoinHandle<anyhow::Result<()>>) {
    service_kit::telemetry::init_for_tests();
    let nothing_listens = testkit::free_port().unwrap();
    let args = [
        "analytics".to_owned(),
        "--host=127.0.0.1".into(),
        "--port=0".into(),
        "--database-url".into(),
        format!("postgres://postgres@127.0.0.1:{nothing_listens}/events"),
        "--analytics-api-key".into(),
        "an-analytics-key-of-at-least-32-bytes".into(),
    ];
    let app = analytics::build(<analytics::Config as clap::Parser>::try_parse_from(args).unwrap())
        .await
        .unwrap();
    let addr = format!("http://127.0.0.1:{}", app.port());
    let server =
        tokio::spawn(app.run_until_stopped(std::future::pending(), Duration::from_secs(1)));
    (addr, server)
}

#[tokio::test]
async fn the_service_serves_the_document_and_swagger_ui_without_a_key() {
    let (addr, server) = start().await;
    let client = reqwest::Client::new();

    // The reports need the key; the documentation does not.
    let report = client
        .get(format!("{addr}/analytics/stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(report.status(), 401);

    let response = client
        .get(format!("{addr}/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let served: Value = response.json().await.unwrap();
    assert_eq!(served, generated());
    let paths = served["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 11, "{:?}", paths.keys());

    // `/api` itself leads to the UI (by a redirect to `/api/`).
    let response = client.get(format!("{addr}/api")).send().await.unwrap();
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
        let url = format!("{addr}/api/{}", script.trim_start_matches("./"));
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        let body = response.text().await.unwrap();
        assert!(!body.is_empty(), "{url}");
        // The initializer points the UI at this service's document.
        if script.contains("initializer") {
            assert!(body.contains("/api/openapi.json"), "{body}");
        }
    }
    server.abort();
}
