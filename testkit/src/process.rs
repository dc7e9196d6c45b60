//! A child process we started, signalled by its PID and killed when dropped.

use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// A running child process.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    child: Child,
}

impl ChildProcess {
    /// Spawns `command`; `name` appears in errors.
    pub fn spawn(name: &str, mut command: Command) -> anyhow::Result<ChildProcess> {
        let child = command
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {name}: {e}"))?;
        Ok(ChildProcess {
            name: name.to_owned(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`TERM`, `INT`, `KILL`, ...) to this process only.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args(["-s", signal, &self.pid().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -s {signal} {} failed", self.name);
        Ok(())
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The exit status if the process has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits (without blocking the runtime) for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                anyhow::bail!("{} did not exit within {timeout:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            self.kill();
        }
    }
}

/// A server exited while starting, most often because its port was taken between
/// [`crate::free_port`] and its bind.
#[derive(Debug, thiserror::Error)]
#[error("{name} exited ({status}) while starting on port {port}")]
pub(crate) struct Exited {
    pub(crate) name: &'static str,
    pub(crate) port: u16,
    pub(crate) status: std::process::ExitStatus,
}

/// A private server started on a port found free. A port found free can be taken by
/// another process before the server binds it (tests run in parallel, and their
/// connections use the same range); the server then exits at once ([`Exited`]), and
/// [`OnFreePort::launch_on_free_port`] tries another port.
pub(crate) trait OnFreePort {
    /// Starts the server on its current port.
    async fn launch(&mut self) -> anyhow::Result<()>;

    /// Moves the server to another port before the next attempt.
    fn set_port(&mut self, port: u16);

    /// Starts the server, on up to four other free ports when it exits while starting.
    async fn launch_on_free_port(&mut self) -> anyhow::Result<()> {
        let mut attempts = 0;
        loop {
            match self.launch().await {
                Err(e) if attempts < 4 && e.is::<Exited>() => {
                    attempts += 1;
                    self.set_port(crate::free_port()?);
                }
                other => return other,
            }
        }
    }
}
