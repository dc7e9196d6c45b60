//! The real `worker` binary as a child process: for tests that kill it with SIGKILL,
//! signal it, read its log, or run an operator's command.

use super::{Platform, WAIT};
use crate::ChildProcess;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Where a worker process's log (stderr) goes, and how verbose it is.
#[derive(Debug, Clone, Copy)]
pub enum WorkerLog<'a> {
    /// Errors only, discarded; `info`, on the test's stderr, with `TEST_LOG=1`.
    Default,
    /// This `RUST_LOG` filter, written (JSON lines) to this file.
    File {
        /// The `RUST_LOG` filter.
        rust_log: &'a str,
        /// The file stderr is written to (created or truncated).
        path: &'a Path,
    },
}

impl Platform {
    fn worker_binary(&self) -> anyhow::Result<&PathBuf> {
        self.worker_binary.as_ref().ok_or_else(|| {
            anyhow::anyhow!(
                "this platform has no worker binary: start it with \
                 Platform::builder().worker_binary(env!(\"CARGO_BIN_EXE_worker\"))"
            )
        })
    }

    /// The real `worker` binary, configured through its environment variables (plus
    /// `extra_env`), on a free port; returns the process and its port.
    pub fn start_worker_process(
        &self,
        extra_env: &[(&str, &str)],
    ) -> anyhow::Result<(ChildProcess, u16)> {
        self.start_worker_process_logging(extra_env, WorkerLog::Default)
    }

    /// As [`Platform::start_worker_process`], with its log where `log` says.
    pub fn start_worker_process_logging(
        &self,
        extra_env: &[(&str, &str)],
        log: WorkerLog<'_>,
    ) -> anyhow::Result<(ChildProcess, u16)> {
        let port = crate::free_port()?;
        let test_log = std::env::var_os("TEST_LOG").is_some();
        let (rust_log, stderr) = match log {
            WorkerLog::Default if test_log => ("info", Stdio::inherit()),
            WorkerLog::Default => ("error", Stdio::null()),
            WorkerLog::File { rust_log, path } => (rust_log, std::fs::File::create(path)?.into()),
        };
        let mut cmd = Command::new(self.worker_binary()?);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("NATS_URL", self.nats_url())
            .env("NATS_STREAM", &self.names.stream)
            .env("NATS_STREAM_REPLICAS", self.stream_replicas())
            .env("NATS_SUBJECT_PREFIX", &self.names.prefix)
            .env("NATS_CONSUMER", &self.names.consumer)
            .env("NATS_DLQ_STREAM", &self.names.dlq)
            .env("DATABASE_URL", &self.database_url)
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        ChildProcess::spawn("worker", cmd).map(|p| (p, port))
    }

    /// The `worker` binary with these arguments and only these variables (plus `PATH`,
    /// and a text log at `info` unless `env` says otherwise), run until it exits (at most
    /// [`WAIT`]). Awaited, not blocking: a worker this test runs in process may hold the
    /// migration lock the command waits for, and must go on meanwhile.
    pub async fn run_worker(&self, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Output> {
        let mut cmd = tokio::process::Command::new(self.worker_binary()?);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LOG_FORMAT", "text")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .args(args);
        crate::binary::output_within(cmd, WAIT).await
    }

    /// `worker migrate`, the deploy step, connecting by `migration_url` (the owner's);
    /// fails unless it exits 0.
    pub async fn migrate(&self, migration_url: &str) -> anyhow::Result<()> {
        let out = self
            .run_worker(&["migrate"], &[("MIGRATION_DATABASE_URL", migration_url)])
            .await?;
        anyhow::ensure!(
            out.status.success(),
            "worker migrate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// `worker rebuild-rollups`, the operator's command, on this platform's database.
    pub async fn rebuild_rollups(&self) -> anyhow::Result<()> {
        let out = self
            .run_worker(
                &["rebuild-rollups"],
                &[("DATABASE_URL", &self.database_url), ("RUST_LOG", "error")],
            )
            .await?;
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}
