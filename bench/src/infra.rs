//! What the benchmark runs on: a private PostgreSQL (testkit's, with the settings chosen
//! here and printed), a private nats-server, and the three services started from the
//! release binaries. Everything is killed when dropped.

use anyhow::bail;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::ChildProcess;

/// How durable PostgreSQL is during the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// PostgreSQL's defaults: fsync=on, synchronous_commit=on, full_page_writes=on
    /// (what production runs).
    Full,
    /// fsync=on, synchronous_commit=off (commits return before the WAL flush; a crash
    /// loses the last few hundred ms, never corrupts).
    Async,
    /// fsync=off, full_page_writes=off, synchronous_commit=off (the test clusters'
    /// setting; optimistic figures).
    Off,
}

impl Durability {
    /// The PostgreSQL settings of the run: modest, commonly applied tuning (PostgreSQL's
    /// own defaults are 128MB and 1GB, with which bulk loads checkpoint every few seconds),
    /// then this durability's.
    pub fn pg_settings(self) -> Vec<String> {
        let mut settings: Vec<String> = [
            "max_connections=100",
            "shared_buffers=512MB",
            "max_wal_size=4GB",
        ]
        .map(String::from)
        .to_vec();
        match self {
            Durability::Full => {}
            Durability::Async => settings.push("synchronous_commit=off".into()),
            Durability::Off => settings.extend(
                [
                    "fsync=off",
                    "full_page_writes=off",
                    "synchronous_commit=off",
                ]
                .map(String::from),
            ),
        }
        settings
    }
}

/// One of our services, started from its release binary.
#[derive(Debug)]
pub struct Service {
    pub name: &'static str,
    pub port: u16,
    pub log: PathBuf,
    process: Option<ChildProcess>,
    /// Peak RSS and CPU seconds read just before it was stopped.
    pub last: Option<(u64, f64)>,
}

impl Service {
    pub fn spawn(
        name: &'static str,
        bin_dir: &Path,
        log_dir: &Path,
        env: &[(&str, String)],
    ) -> anyhow::Result<Service> {
        let port = testkit::free_port()?;
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let mut cmd = Command::new(bin_dir.join(name));
        cmd.env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(file.try_clone()?)
            .stderr(file)
            .stdin(Stdio::null());
        let process = ChildProcess::spawn(name, cmd)?;
        Ok(Service {
            name,
            port,
            log,
            process: Some(process),
            last: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.process.as_ref().map(ChildProcess::pid).unwrap_or(0)
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until `/health/readiness` answers 200.
    pub async fn wait_ready(
        &mut self,
        http: &reqwest::Client,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let url = format!("{}/health/readiness", self.base());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(p) = self.process.as_mut()
                && let Some(status) = p.try_status()
            {
                bail!(
                    "{} exited ({status}) before it was ready; log: {}\n{}",
                    self.name,
                    self.log.display(),
                    tail(&self.log, 20)
                );
            }
            if let Ok(r) = http.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} not ready after {timeout:?}; log: {}\n{}",
                    self.name,
                    self.log.display(),
                    tail(&self.log, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGSTOP / SIGCONT (pausing the worker isolates ingestion).
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        match &self.process {
            Some(p) => p.signal(signal),
            None => bail!("{} is not running", self.name),
        }
    }

    /// Peak RSS (bytes) and CPU seconds so far.
    pub fn usage(&self) -> (u64, f64) {
        let pid = self.pid();
        (
            crate::procstat::status_bytes(pid, "VmHWM").unwrap_or(0),
            crate::procstat::cpu_seconds(pid, false),
        )
    }

    /// Records the final usage, then SIGTERM and waits for a clean exit (SIGKILL after
    /// `timeout`). Returns whether it exited 0.
    pub async fn stop(&mut self, timeout: Duration) -> bool {
        self.last = Some(self.usage());
        let Some(mut p) = self.process.take() else {
            return false;
        };
        // A paused process would never see SIGTERM.
        let _ = p.signal("CONT");
        if p.signal("TERM").is_err() {
            return false;
        }
        match p.wait_exit(timeout).await {
            Ok(status) => status.success(),
            Err(_) => {
                p.kill();
                false
            }
        }
    }
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Version line of a program (`nats-server --version`).
pub fn version_of(program: &Path, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            if s.is_empty() {
                s = String::from_utf8_lossy(&o.stderr).trim().to_owned();
            }
            s
        })
        .unwrap_or_else(|_| "unknown".into())
}

/// The nats-server binary (`NATS_SERVER_BIN` as testkit reads it).
pub fn nats_server_bin() -> PathBuf {
    std::env::var_os("NATS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/nats-server"))
}

/// Private nats-servers with JetStream (file stores in temporary directories): one, or
/// three in one cluster (routes on loopback), as a deployment would run them.
#[derive(Debug)]
pub struct Nats {
    nodes: Vec<NatsNode>,
}

#[derive(Debug)]
struct NatsNode {
    port: u16,
    _store: tempfile::TempDir,
    process: ChildProcess,
}

impl Nats {
    /// Starts `nodes` servers (1, or 3 clustered) and waits until each listens.
    pub async fn start(log_dir: &Path, nodes: usize) -> anyhow::Result<Nats> {
        let ports: Vec<(u16, u16)> = (0..nodes)
            .map(|_| Ok((testkit::free_port()?, testkit::free_port()?)))
            .collect::<anyhow::Result<_>>()?;
        let routes = ports
            .iter()
            .map(|(_, route)| format!("nats://127.0.0.1:{route}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut started = Vec::with_capacity(nodes);
        for (i, &(port, route)) in ports.iter().enumerate() {
            let store = tempfile::Builder::new().prefix("bench-nats").tempdir()?;
            let log = std::fs::File::create(log_dir.join(format!("nats-server-{i}.log")))?;
            let mut cmd = Command::new(nats_server_bin());
            cmd.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
                .arg(store.path())
                .args(["-n", &format!("bench-{i}")]);
            if nodes > 1 {
                cmd.args(["--cluster_name", "bench", "--cluster"])
                    .arg(format!("nats://127.0.0.1:{route}"))
                    .args(["--routes", &routes]);
            }
            cmd.stdout(log.try_clone()?).stderr(log);
            let process = ChildProcess::spawn("nats-server", cmd)?;
            started.push(NatsNode {
                port,
                _store: store,
                process,
            });
        }
        for node in &started {
            let addr = format!("127.0.0.1:{}", node.port);
            let deadline = Instant::now() + Duration::from_secs(15);
            while std::net::TcpStream::connect(&addr).is_err() {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "nats-server did not listen on {addr}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(Nats { nodes: started })
    }

    /// The servers' URLs, comma-separated (`NATS_URL`'s form for a cluster).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The first server's URL: for this process's own clients (async-nats takes one
    /// address per string; a cluster's server tells the client about the others).
    pub fn first_url(&self) -> String {
        self.nodes
            .first()
            .map_or_else(String::new, |n| format!("nats://127.0.0.1:{}", n.port))
    }

    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.process.pid()).collect()
    }
}
