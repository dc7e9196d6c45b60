//! `ANALYTICS_API_KEY` fails closed (issue 17): the real binary refuses empty, short and
//! `change-me` keys at start, reads keys from `ANALYTICS_API_KEY_FILE`, accepts any of
//! several keys, and says loudly when it has none.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;
use testkit::{
    LoggingBinary, Postgres, TempFile, assert_refused_at_start, eventually, run_to_exit,
};

const BIN: &str = env!("CARGO_BIN_EXE_analytics");

const OLD: &str = "old-analytics-key-0123456789abcdef";
const NEW: &str = "new-analytics-key-0123456789abcdef";

#[tokio::test]
async fn an_empty_short_or_placeholder_key_stops_the_binary_with_one_line_naming_it() {
    for value in [
        "",
        "too-short-a-key",
        "change-me-production-analytics-key",
        &format!("{NEW},"),
        &format!("short,{NEW}"),
    ] {
        let out = run_to_exit(BIN, &[("ANALYTICS_API_KEY", value)])
            .await
            .unwrap();
        assert_refused_at_start(&out, &["ANALYTICS_API_KEY"], value);
    }
}

#[tokio::test]
async fn a_bad_key_file_or_a_key_with_a_key_file_stops_the_binary_naming_them() {
    for content in [
        "",
        "\n",
        "too-short-a-key\n",
        "change-me-production-analytics-key",
    ] {
        let file = key_file(content);
        let out = run_to_exit(BIN, &[("ANALYTICS_API_KEY_FILE", file.path())])
            .await
            .unwrap();
        assert_refused_at_start(&out, &["ANALYTICS_API_KEY_FILE"], content.trim());
    }
    let file = key_file(NEW);
    let both = [
        ("ANALYTICS_API_KEY", OLD),
        ("ANALYTICS_API_KEY_FILE", file.path()),
    ];
    let out = run_to_exit(BIN, &both).await.unwrap();
    assert_refused_at_start(&out, &["ANALYTICS_API_KEY", "ANALYTICS_API_KEY_FILE"], OLD);
}

/// A file holding keys, as `ANALYTICS_API_KEY_FILE` names it.
fn key_file(content: &str) -> TempFile {
    TempFile::with("analytics_api_key", content).unwrap()
}

/// The binary on a migrated database, with these extra variables; its logs as lines.
struct Analytics {
    _pg: Postgres,
    binary: LoggingBinary,
    port: u16,
}

impl Analytics {
    async fn start(env: &[(&str, &str)]) -> Analytics {
        let pg = Postgres::start().await.unwrap();
        pg.create_database("events").await.unwrap();
        let mut client = pg.connect("events").await.unwrap();
        worker::migrate::run(&mut client).await.unwrap();
        let port = testkit::free_port().unwrap();
        let (port_text, url) = (port.to_string(), pg.url("events"));
        let mut all = vec![
            ("HOST", "127.0.0.1"),
            ("PORT", port_text.as_str()),
            ("DATABASE_URL", url.as_str()),
            ("LOG_FORMAT", "text"),
        ];
        all.extend_from_slice(env);
        let binary = LoggingBinary::spawn(Path::new(BIN), &all).unwrap();
        Analytics {
            _pg: pg,
            binary,
            port,
        }
    }

    /// Reads log lines until one contains `text`; returns it.
    async fn log_line_with(&mut self, text: &str) -> String {
        self.binary
            .log_line_with(text, Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("no log line contains {text:?}"))
    }

    /// The status of `GET /analytics/stats` with this `Authorization` header (none when
    /// `None`), once the service answers.
    async fn stats_status(&self, authorization: Option<&str>) -> u16 {
        let client = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{}/analytics/stats", self.port);
        eventually("an answer", Duration::from_secs(30), || async {
            let mut request = client.get(&url);
            if let Some(value) = authorization {
                request = request.header("authorization", value);
            }
            Some(request.send().await.ok()?.status().as_u16())
        })
        .await
        .unwrap()
    }
}

#[tokio::test]
async fn keys_from_a_file_each_open_the_reports_and_nothing_else_does() {
    // A trailing newline, as `echo` and editors write: not part of the keys.
    let file = key_file(&format!("{OLD},{NEW}\n"));
    let mut analytics = Analytics::start(&[("ANALYTICS_API_KEY_FILE", file.path())]).await;
    let line = analytics
        .log_line_with("Reports require a bearer key")
        .await;
    assert!(
        !line.contains(OLD) && !line.contains(NEW),
        "key ids only: {line}"
    );

    assert_eq!(analytics.stats_status(None).await, 401, "no header");
    for wrong in ["Bearer", "Bearer ", "Bearer wrong", "Basic b2xkOm5ldw=="] {
        assert_eq!(analytics.stats_status(Some(wrong)).await, 401, "{wrong}");
    }
    let prefix = format!("Bearer {}", &OLD[..OLD.len() - 1]);
    assert_eq!(analytics.stats_status(Some(&prefix)).await, 401, "a prefix");
    for key in [OLD, NEW] {
        let status = analytics.stats_status(Some(&format!("Bearer {key}"))).await;
        assert_eq!(status, 200, "{key}");
    }
    let lowercase = analytics.stats_status(Some(&format!("bearer {NEW}"))).await;
    assert_eq!(lowercase, 200, "the scheme is case-insensitive");
}

#[tokio::test]
async fn without_a_key_the_binary_says_loudly_that_anyone_can_read_the_reports() {
    let mut analytics = Analytics::start(&[]).await;
    let line = analytics.log_line_with("ANALYTICS_API_KEY is unset").await;
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("anyone can read the reports"), "{line}");
    assert_eq!(analytics.stats_status(None).await, 200);
}
