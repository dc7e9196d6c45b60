//! A service's real binary run the way an operator runs it: configured only through its
//! environment, refused at start, or running with its log read line by line.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, Command};

/// How long a binary given a bad configuration may take to exit.
const EXIT_WITHIN: Duration = Duration::from_secs(10);

/// A file in a fresh temporary directory (a secret or key file a `_FILE` variable names),
/// removed with the directory when dropped.
#[derive(Debug)]
pub struct TempFile {
    _dir: tempfile::TempDir,
    path: String,
}

impl TempFile {
    /// Writes `content` to a file named `name` in a new directory.
    pub fn with(name: &str, content: &str) -> anyhow::Result<TempFile> {
        let dir = tempfile::Builder::new().prefix("testkit-file").tempdir()?;
        let path = dir.path().join(name);
        std::fs::write(&path, content)?;
        let path = path
            .to_str()
            .ok_or_else(|| anyhow::anyhow!("{} is not UTF-8", path.display()))?
            .to_owned();
        Ok(TempFile { _dir: dir, path })
    }

    /// The file's path, as an environment variable gets it.
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// Runs `binary` with an empty environment plus `env` until it exits; fails if it runs
/// longer than 10 s (a bad configuration must stop it at once).
pub async fn run_to_exit(
    binary: impl AsRef<OsStr>,
    env: &[(&str, &str)],
) -> anyhow::Result<Output> {
    let mut cmd = Command::new(binary);
    cmd.env_clear().envs(env.iter().copied());
    output_within(cmd, EXIT_WITHIN).await
}

/// Runs `cmd` (stdin closed) until it exits and returns its output; kills it and fails if
/// it runs longer than `within`.
pub(crate) async fn output_within(mut cmd: Command, within: Duration) -> anyhow::Result<Output> {
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    match tokio::time::timeout(within, cmd.output()).await {
        Ok(output) => Ok(output?),
        Err(_) => anyhow::bail!("the binary did not exit within {within:?}"),
    }
}

/// Panics unless `out` is a refusal at start: exit status 2 and one line on stderr that
/// names every one of `variables` and does not repeat `secret` (when not empty).
pub fn assert_refused_at_start(out: &Output, variables: &[&str], secret: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{variables:?}: {stderr}");
    let lines: Vec<&str> = stderr.trim_end().lines().collect();
    assert_eq!(lines.len(), 1, "one line for {variables:?}: {stderr}");
    for variable in variables {
        assert!(lines[0].contains(variable), "names {variable}: {stderr}");
    }
    if !secret.is_empty() {
        assert!(
            !stderr.contains(secret),
            "the secret stays out of the message: {stderr}"
        );
    }
}

/// A binary running with an empty environment plus the given variables, its stderr (the
/// log) read line by line; killed when dropped.
#[derive(Debug)]
pub struct LoggingBinary {
    _child: Child,
    logs: Lines<BufReader<ChildStderr>>,
}

impl LoggingBinary {
    /// Starts `binary` with only `env` set (stdout discarded).
    pub fn spawn(binary: &Path, env: &[(&str, &str)]) -> anyhow::Result<LoggingBinary> {
        let mut child = Command::new(binary)
            .env_clear()
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", binary.display()))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow::anyhow!("the binary's stderr is not piped"))?;
        Ok(LoggingBinary {
            _child: child,
            logs: BufReader::new(stderr).lines(),
        })
    }

    /// Reads log lines until one contains `text` and returns it; `None` if the log ends
    /// or `timeout` passes first.
    pub async fn log_line_with(&mut self, text: &str, timeout: Duration) -> Option<String> {
        let found = tokio::time::timeout(timeout, async {
            while let Ok(Some(line)) = self.logs.next_line().await {
                if line.contains(text) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        found.ok().flatten()
    }
}

/// What `<binary> healthcheck`, the container's health check, answered: its exit code,
/// stdout and stderr.
pub type HealthcheckAnswer = (Option<i32>, String, String);

/// Runs `<binary> healthcheck` with only `env` set, until it exits.
pub async fn healthcheck(
    binary: impl AsRef<OsStr>,
    env: &[(&str, &str)],
) -> anyhow::Result<HealthcheckAnswer> {
    let out = Command::new(binary)
        .arg("healthcheck")
        .env_clear()
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .output()
        .await?;
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    Ok((out.status.code(), text(&out.stdout), text(&out.stderr)))
}

/// Panics unless `<binary> healthcheck`, with nothing listening on its `PORT`, exits 1
/// with one line saying it cannot connect.
pub async fn assert_healthcheck_fails_when_nothing_listens(binary: impl AsRef<OsStr>) {
    let port = match crate::free_port() {
        Ok(port) => port.to_string(),
        Err(e) => panic!("no free port: {e}"),
    };
    let (code, stdout, stderr) = match healthcheck(binary, &[("PORT", &port)]).await {
        Ok(answer) => answer,
        Err(e) => panic!("the healthcheck does not run: {e}"),
    };
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("cannot connect"), "{stderr}");
}
