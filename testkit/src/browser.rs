//! Headless Chromium driven over the DevTools protocol (CDP), for tests of the pages the
//! services serve: navigate, evaluate JavaScript, and keep every event the page causes
//! (requests, console messages, exceptions) so a test can assert on them.
//!
//! Chromium is Debian's `chromium` (`CHROMIUM` overrides the command); `scripts/test.sh`
//! installs it. A missing browser is an error, not a skipped test.

use crate::process::ChildProcess;
use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// How long one protocol command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// A private headless Chromium (its own profile in a temporary directory) with one page
/// open; killed when dropped.
#[derive(Debug)]
pub struct Browser {
    _process: ChildProcess,
    _profile: tempfile::TempDir,
    commands: mpsc::UnboundedSender<Message>,
    pending: Pending,
    events: Arc<Mutex<Vec<Value>>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Browser {
    /// Starts Chromium with a window of `width` × `height` CSS pixels and attaches to its
    /// page, with the runtime, network and log domains enabled.
    pub async fn launch(width: u32, height: u32) -> anyhow::Result<Browser> {
        let command = chromium_command()?;
        let profile = tempfile::tempdir()?;
        let mut chromium = Command::new(&command);
        chromium
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-extensions",
                "--disable-sync",
                "--hide-scrollbars",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                &format!("--window-size={width},{height}"),
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let process = ChildProcess::spawn("chromium", chromium)?;
        let port = devtools_port(profile.path()).await?;
        let page = page_socket(port).await?;
        let (socket, _) = tokio_tungstenite::connect_async(page.as_str())
            .await
            .with_context(|| format!("connecting to Chromium's page at {page}"))?;
        let (mut sink, mut stream) = socket.split();
        let (commands, mut outgoing) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            while let Some(message) = outgoing.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
        });
        let pending: Pending = Arc::default();
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let (answers, seen) = (pending.clone(), events.clone());
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Ok(text) = message.into_text() else {
                    continue;
                };
                let Ok(value) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                match value.get("id").and_then(Value::as_u64) {
                    Some(id) => {
                        let waiting = lock(&answers).remove(&id);
                        if let Some(waiting) = waiting {
                            let _ = waiting.send(value);
                        }
                    }
                    None => lock(&seen).push(value),
                }
            }
        });
        let browser = Browser {
            _process: process,
            _profile: profile,
            commands,
            pending,
            events,
            next_id: 1.into(),
        };
        for domain in ["Runtime", "Network", "Log", "Page"] {
            browser.call(&format!("{domain}.enable"), json!({})).await?;
        }
        Ok(browser)
    }

    /// Sends one protocol command and returns its `result`; a protocol error fails.
    pub async fn call(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let message = json!({"id": id, "method": method, "params": params}).to_string();
        self.commands
            .send(Message::text(message))
            .map_err(|_| anyhow::anyhow!("Chromium's connection is closed"))?;
        let answer = tokio::time::timeout(COMMAND_TIMEOUT, rx)
            .await
            .with_context(|| format!("{method}: no answer within {COMMAND_TIMEOUT:?}"))?
            .with_context(|| format!("{method}: the connection closed"))?;
        if let Some(error) = answer.get("error") {
            bail!("{method} failed: {error}");
        }
        Ok(answer["result"].clone())
    }

    /// Opens `url` in the page (returns once navigation is committed, not loaded).
    pub async fn navigate(&self, url: &str) -> anyhow::Result<()> {
        let result = self.call("Page.navigate", json!({"url": url})).await?;
        if let Some(error) = result.get("errorText") {
            bail!("navigating to {url}: {error}");
        }
        Ok(())
    }

    /// Reloads the page, bypassing the cache.
    pub async fn reload(&self) -> anyhow::Result<()> {
        self.call("Page.reload", json!({"ignoreCache": true}))
            .await
            .map(drop)
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value as
    /// JSON; an exception thrown by it fails.
    pub async fn eval(&self, expression: &str) -> anyhow::Result<Value> {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await?;
        if let Some(exception) = result.get("exceptionDetails") {
            bail!("{expression} threw: {exception}");
        }
        Ok(result["result"]["value"].clone())
    }

    /// Waits until `expression` evaluates to `true`.
    pub async fn wait_for(&self, expression: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Right after a navigation the old document may answer, or none: retry.
            if let Ok(Value::Bool(true)) = self.eval(expression).await {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{expression} did not become true within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The protocol events seen so far (`{"method", "params"}`), and forgets them.
    pub fn take_events(&self) -> Vec<Value> {
        std::mem::take(&mut *lock(&self.events))
    }

    /// The URL of every request the page sent, among `events`.
    pub fn requested_urls(events: &[Value]) -> Vec<String> {
        events
            .iter()
            .filter(|e| e["method"] == "Network.requestWillBeSent")
            .filter_map(|e| e["params"]["request"]["url"].as_str().map(str::to_owned))
            .collect()
    }

    /// The console errors, uncaught exceptions and error log entries (failed loads,
    /// Content-Security-Policy violations) among `events`, one line each.
    pub fn errors(events: &[Value]) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| {
                let p = &e["params"];
                match e["method"].as_str()? {
                    "Runtime.exceptionThrown" => {
                        Some(format!("exception: {}", p["exceptionDetails"]))
                    }
                    "Runtime.consoleAPICalled" if p["type"] == "error" || p["type"] == "assert" => {
                        Some(format!("console.{}: {}", p["type"], p["args"]))
                    }
                    "Log.entryAdded" if p["entry"]["level"] == "error" => Some(format!(
                        "log ({}): {} {}",
                        p["entry"]["source"], p["entry"]["text"], p["entry"]["url"]
                    )),
                    _ => None,
                }
            })
            .collect()
    }

    /// A PNG of what the window shows.
    pub async fn screenshot(&self) -> anyhow::Result<Vec<u8>> {
        use base64::Engine;
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await?;
        let data = shot["data"].as_str().context("no screenshot data")?;
        Ok(base64::engine::general_purpose::STANDARD.decode(data)?)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn chromium_command() -> anyhow::Result<PathBuf> {
    if let Some(command) = std::env::var_os("CHROMIUM") {
        return Ok(command.into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Some(found) = std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
        {
            return Ok(found);
        }
    }
    bail!("Chromium not found: install Debian's `chromium` (scripts/test.sh does) or set CHROMIUM")
}

/// The port Chromium chose, from the `DevToolsActivePort` file it writes into its profile.
async fn devtools_port(profile: &Path) -> anyhow::Result<u16> {
    let file = profile.join("DevToolsActivePort");
    crate::eventually("Chromium's DevTools port", Duration::from_secs(30), || {
        let file = file.clone();
        async move {
            let text = tokio::fs::read_to_string(&file).await.ok()?;
            text.lines().next()?.trim().parse::<u16>().ok()
        }
    })
    .await
}

/// The WebSocket address of the browser's page (`/json/list`, type "page").
async fn page_socket(port: u16) -> anyhow::Result<String> {
    let targets: Value = reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
        .await?
        .json()
        .await?;
    targets
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["type"] == "page")
        .and_then(|t| t["webSocketDebuggerUrl"].as_str())
        .map(str::to_owned)
        .context("Chromium lists no page")
}
