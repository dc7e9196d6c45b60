//! `ANALYTICS_API_KEY` fails closed (issue 17): the real binary refuses empty, short and
//! `change-me` keys at start, reads keys from `ANALYTICS_API_KEY_FILE`, accepts any of
//! several keys, and says loudly when it has none.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use testkit::{Postgres, eventually};
use tokio::io::{AsyncBufReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_analytics");

const OLD: &str = "old-analytics-key-0123456789abcdef";
const NEW: &str = "new-analytics-key-0123456789abcdef";

/// A file in a fresh directory, removed with it when dropped.
struct KeyFile {
    dir: PathBuf,
    path: PathBuf,
}

impl KeyFile {
    fn with(content: &str) -> KeyFile {
        let dir = std::env::temp_dir().join(format!("api-keys-{}", testkit::unique_name()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("analytics_api_key");
        std::fs::write(&path, content).unwrap();
        KeyFile { dir, path }
    }

    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The binary with a clean environment plus these variables, run until it exits.
async fn run_to_exit(env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.env_clear().envs(env.iter().copied()).kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(10), cmd.output())
        .await
        .expect("the binary exits by itself")
        .expect("the binary runs")
}

/// Asserts the binary stopped with status 2 and one stderr line that names every one of
/// `variables` and does not repeat `key`.
fn assert_refused(out: &std::process::Output, variables: &[&str], key: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{variables:?}: {stderr}");
    let lines: Vec<&str> = stderr.trim_end().lines().collect();
    assert_eq!(lines.len(), 1, "one line for {variables:?}: {stderr}");
    for variable in variables {
        assert!(lines[0].contains(variable), "names {variable}: {stderr}");
    }
    if !key.is_empty() {
        assert!(
            !stderr.contains(key),
            "the key stays out of the message: {stderr}"
        );
    }
}

#[tokio::test]
async fn an_empty_short_or_placeholder_key_stops_the_binary_with_one_line_naming_it() {
    for value in [
        "",
        "too-short-a-key",
        "change-me-production-analytics-key",
        &format!("{NEW},"),
        &format!("short,{NEW}"),
    ] {
        let out = run_to_exit(&[("ANALYTICS_API_KEY", value)]).await;
        assert_refused(&out, &["ANALYTICS_API_KEY"], value);
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
        let file = KeyFile::with(content);
        let out = run_to_exit(&[("ANALYTICS_API_KEY_FILE", file.path())]).await;
        assert_refused(&out, &["ANALYTICS_API_KEY_FILE"], content.trim());
    }
    let file = KeyFile::with(NEW);
    let both = [
        ("ANALYTICS_API_KEY", OLD),
        ("ANALYTICS_API_KEY_FILE", file.path()),
    ];
    let out = run_to_exit(&both).await;
    assert_refused(&out, &["ANALYTICS_API_KEY", "ANALYTICS_API_KEY_FILE"], OLD);
}

/// The binary on a migrated database, with these extra variables; its logs as lines.
struct Analytics {
    _pg: Postgres,
    _child: tokio::process::Child,
    port: u16,
    logs: tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
}

impl Analytics {
    async fn start(env: &[(&str, &str)]) -> Analytics {
        let pg = Postgres::start().await.unwrap();
        pg.create_database("events").await.unwrap();
        let mut client = pg.connect("events").await.unwrap();
        worker::migrate::run(&mut client).await.unwrap();
        let port = testkit::free_port().unwrap();
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.env_clear()
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("DATABASE_URL", pg.url("events"))
            .env("LOG_FORMAT", "text")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        Analytics {
            _pg: pg,
            _child: child,
            port,
            logs: BufReader::new(stderr).lines(),
        }
    }

    /// Reads log lines until one contains `text`; returns it.
    async fn log_line_with(&mut self, text: &str) -> String {
        let found = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = self.logs.next_line().await {
                if line.contains(text) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        found
            .ok()
            .flatten()
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
    let file = KeyFile::with(&format!("{OLD},{NEW}\n"));
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
