//! The rate limit per API key: a key over its quota gets 429 `rate_limited` with
//! `Retry-After`, counted in `analytics_rate_limited_total{key}`, while another key's
//! reports are still answered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;
use testkit::Postgres;

const KEY_A: &str = "analytics-key-a-0123456789abcdef0123";
const KEY_B: &str = "analytics-key-b-0123456789abcdef0123";

/// Analytics in this process on a migrated database, both keys set, one request a second
/// per key.
struct Analytics {
    _pg: Postgres,
    addr: String,
    http: reqwest::Client,
    _server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Analytics {
    async fn start() -> Analytics {
        service_kit::telemetry::init_for_tests();
        let pg = Postgres::start().await.unwrap();
        let url = pg.create_database("events").await.unwrap();
        let mut client = pg.connect("events").await.unwrap();
        worker::migrate::run(&mut client).await.unwrap();
        let args = [
            "analytics".to_owned(),
            "--host=127.0.0.1".into(),
            "--port=0".into(),
            "--database-url".into(),
            url,
            "--analytics-api-key".into(),
            format!("{KEY_A},{KEY_B}"),
            "--analytics-rate-limit-per-sec=1".into(),
        ];
        let config = <analytics::Config as clap::Parser>::try_parse_from(args).unwrap();
        let app = analytics::build(config).await.unwrap();
        let addr = format!("http://127.0.0.1:{}", app.port());
        let server =
            tokio::spawn(app.run_until_stopped(std::future::pending(), Duration::from_secs(1)));
        Analytics {
            _pg: pg,
            addr,
            http: reqwest::Client::new(),
            _server: server,
        }
    }

    async fn stats(&self, key: &str) -> reqwest::Response {
        self.http
            .get(format!("{}/analytics/stats", self.addr))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
    }

    /// `analytics_rate_limited_total{key="<id>"}` now.
    async fn refusals(&self, id: &str) -> Option<f64> {
        let metrics = self
            .http
            .get(format!("{}/metrics", self.addr))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let prefix = format!("analytics_rate_limited_total{{key=\"{id}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|value| value.parse().ok())
    }
}

fn id(key: &str) -> String {
    service_kit::secret::KeyId::of(key.as_bytes()).to_string()
}

#[tokio::test]
async fn a_key_over_its_quota_gets_429_while_another_key_is_answered() {
    let analytics = Analytics::start().await;
    assert_eq!(
        analytics.refusals(&id(KEY_A)).await,
        Some(0.0),
        "from the start"
    );
    assert_eq!(analytics.stats(KEY_A).await.status(), 200);

    // The next request within the second is refused; a slow machine may need a few.
    let mut refused = None;
    for _ in 0..10 {
        let response = analytics.stats(KEY_A).await;
        if response.status() == 429 {
            refused = Some(response);
            break;
        }
        assert_eq!(response.status(), 200);
    }
    let refused = refused.expect("key A is refused once over one request a second");
    let retry_after = refused
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert_eq!(retry_after, Some(1));
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");

    assert_eq!(
        analytics.stats(KEY_B).await.status(),
        200,
        "key B has a bucket of its own"
    );
    assert_eq!(analytics.refusals(&id(KEY_A)).await, Some(1.0));
    assert_eq!(analytics.refusals(&id(KEY_B)).await, Some(0.0));
}
