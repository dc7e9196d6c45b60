//! A handler's panic, served the way every service serves (`instrument` and `serve` over
//! real TCP): the client reads a 500 in the error body, the panic is counted, and the
//! server goes on answering.

use axum::Router;
use axum::routing::get;
use serde_json::Value;
use service_kit::http::{HttpArgs, instrument, serve};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const SERVICE: &str = "panic_test";

/// The value of the first sample of `name` whose line holds every label.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

struct Server {
    addr: String,
    client: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

impl Server {
    async fn start() -> anyhow::Result<Self> {
        let metrics = service_kit::metrics::install();
        let router = Router::new()
            .route(
                "/explode/{n}",
                get(|| async {
                    if std::hint::black_box(true) {
                        panic!("secret internals: the vault code is 1234");
                    }
                    "unreachable"
                }),
            )
            .route("/fine", get(|| async { "fine" }))
            .route(
                "/metrics",
                get(move || std::future::ready(metrics.render())),
            );
        let router = instrument(router, SERVICE);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(serve(listener, router, HttpArgs::default(), async {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Server {
            addr,
            client,
            _stop: stop,
        })
    }

    async fn get(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .client
            .get(format!("{}{path}", self.addr))
            .send()
            .await?)
    }

    async fn metrics(&self) -> anyhow::Result<String> {
        Ok(self.get("/metrics").await?.text().await?)
    }
}

#[tokio::test]
async fn a_panicking_handler_answers_500_is_counted_and_the_server_keeps_serving()
-> anyhow::Result<()> {
    let server = Server::start().await?;
    let panics = ["service=\"panic_test\""];
    assert_eq!(
        sample(&server.metrics().await?, "http_panics_total", &panics),
        Some(0.0),
        "registered at 0 before any panic"
    );

    let response = server.get("/explode/7").await?;
    assert_eq!(response.status(), 500);
    let body: Value = response.json().await?;
    assert_eq!(body["error"]["code"], "internal_error", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{body}");
    assert!(
        !body.to_string().contains("vault"),
        "the panic message leaked: {body}"
    );

    let metrics = server.metrics().await?;
    assert_eq!(
        sample(&metrics, "http_panics_total", &panics),
        Some(1.0),
        "{metrics}"
    );
    let requests = [
        "service=\"panic_test\"",
        "route=\"/explode/{n}\"",
        "status=\"500\"",
    ];
    assert_eq!(
        sample(&metrics, "http_requests_total", &requests),
        Some(1.0),
        "{metrics}"
    );

    let response = server.get("/fine").await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await?, "fine");
    Ok(())
}

#[tokio::test]
async fn an_unknown_path_or_method_gets_the_error_body() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let response = server.get("/no/such/thing").await?;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await?;
    assert_eq!(body["error"]["code"], "not_found", "{body}");

    let response = server
        .client
        .post(format!("{}/fine", server.addr))
        .send()
        .await?;
    assert_eq!(response.status(), 405);
    let body: Value = response.json().await?;
    assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
    Ok(())
}
