//! A private PostgreSQL cluster (initdb in a temporary directory) on a free loopback port.

mod options;

use crate::process::ChildProcess;
use crate::process::OnFreePort as _;
pub use options::PostgresOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A PostgreSQL cluster of this test. Stopping and starting keeps the port and the data.
#[derive(Debug)]
pub struct Postgres {
    port: u16,
    dir: tempfile::TempDir,
    process: Option<ChildProcess>,
    options: PostgresOptions,
}

/// A command that runs as the `postgres` user when we are root (PostgreSQL refuses root).
/// `setpriv` execs in place, so the PID we hold is the server's own.
fn as_postgres(program: &Path) -> Command {
    if crate::is_root() {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// A temporary directory that the server's user owns.
fn owned_tempdir() -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new().prefix("testkit-pg").tempdir()?;
    if crate::is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()?;
        anyhow::ensure!(
            status.success(),
            "chown of the PostgreSQL test directory failed"
        );
    }
    Ok(dir)
}

impl Postgres {
    /// Creates a cluster and starts it.
    pub async fn start() -> anyhow::Result<Postgres> {
        Postgres::start_with(PostgresOptions::default()).await
    }

    /// Creates a cluster with these binaries, settings and log, and starts it.
    pub async fn start_with(options: PostgresOptions) -> anyhow::Result<Postgres> {
        let mut pg = Postgres::initdb(options)?;
        pg.launch_on_free_port().await?;
        Ok(pg)
    }

    /// Creates a cluster serving TLS with this certificate and key (PEM files, copied
    /// into the data directory), and starts it. Over TCP only the `postgres` superuser
    /// may connect without TLS (the helpers of this crate, which use no TLS); every other
    /// role must use TLS (`hostssl`), so a service connecting in plain text as one is
    /// refused.
    pub async fn start_with_tls(cert: &Path, key: &Path) -> anyhow::Result<Postgres> {
        let mut pg = Postgres::initdb(PostgresOptions::default())?;
        let data = pg.dir.path().join("data");
        std::fs::copy(cert, data.join("server.crt"))?;
        std::fs::copy(key, data.join("server.key"))?;
        // The server refuses a key that others may read.
        std::fs::set_permissions(
            data.join("server.key"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )?;
        if crate::is_root() {
            let status = Command::new("chown")
                .arg("postgres:postgres")
                .arg(data.join("server.crt"))
                .arg(data.join("server.key"))
                .status()?;
            anyhow::ensure!(status.success(), "chown of the TLS files failed");
        }
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))?;
        std::io::Write::write_all(
            &mut conf,
            b"\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
        )?;
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             hostnossl all postgres 127.0.0.1/32 trust\n\
             hostssl all all 127.0.0.1/32 trust\n",
        )?;
        pg.launch_on_free_port().await?;
        Ok(pg)
    }

    /// A hot standby of this cluster, started: a base backup by `pg_basebackup` (`-R`
    /// writes the `primary_conninfo` it streams by) on a port of its own, with this
    /// cluster's options. It replays what the primary writes from then on.
    pub async fn start_standby(&self) -> anyhow::Result<Postgres> {
        let dir = owned_tempdir()?;
        let output = as_postgres(&self.options.bin_dir.join("pg_basebackup"))
            .args(["-w", "-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.port.to_string())
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"])
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "pg_basebackup failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut standby = Postgres {
            port: crate::free_port()?,
            dir,
            process: None,
            options: self.options.clone(),
        };
        standby.launch_on_free_port().await?;
        Ok(standby)
    }

    /// A new cluster in a temporary directory, not started.
    fn initdb(options: PostgresOptions) -> anyhow::Result<Postgres> {
        let dir = owned_tempdir()?;
        let output = as_postgres(&options.bin_dir.join("initdb"))
            .arg("-D")
            .arg(dir.path().join("data"))
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .output()?;
        anyhow::ensure!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(Postgres {
            port: crate::free_port()?,
            dir,
            process: None,
            options,
        })
    }

    /// Starts the server on its port and waits until it accepts connections.
    async fn launch_on_its_port(&mut self) -> anyhow::Result<()> {
        let mut cmd = as_postgres(&self.options.bin_dir.join("postgres"));
        cmd.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"]);
        for setting in &self.options.settings {
            cmd.args(["-c", setting]);
        }
        if self.options.log_to_file {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.log_path())?;
            cmd.stdout(Stdio::null()).stderr(log);
        } else {
            cmd.stdout(crate::child_output())
                .stderr(crate::child_output());
        }
        self.process = Some(ChildProcess::spawn("postgres", cmd)?);
        let url = self.url("postgres");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.process.as_mut().and_then(ChildProcess::try_status) {
                self.process = None;
                return Err(crate::process::Exited {
                    name: "PostgreSQL",
                    port: self.port,
                    status,
                }
                .into());
            }
            match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    anyhow::bail!("PostgreSQL did not start on port {}: {e}", self.port)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// From now on (restarts included), every role but `postgres` must give its password
    /// over TCP (SCRAM-SHA-256), as in a deployment; the helpers of this crate, which
    /// connect as `postgres`, still need none.
    pub async fn require_passwords(&self) -> anyhow::Result<()> {
        std::fs::write(
            self.dir.path().join("data").join("pg_hba.conf"),
            "local all all trust\n\
             host all postgres 127.0.0.1/32 trust\n\
             host all all 127.0.0.1/32 scram-sha-256\n",
        )?;
        let client = self.connect("postgres").await?;
        let reloaded: bool = client
            .query_one("SELECT pg_reload_conf()", &[])
            .await?
            .get(0);
        anyhow::ensure!(reloaded, "PostgreSQL did not reload pg_hba.conf");
        Ok(())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's PID (the postmaster), 0 while it is stopped.
    pub fn pid(&self) -> u32 {
        self.process.as_ref().map_or(0, ChildProcess::pid)
    }

    /// Where the server logs when [`PostgresOptions::log_to_file`] is set.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// A client tool of this cluster's PostgreSQL (`pg_dump`, `pg_restore`, `psql`, ...),
    /// started with `-h 127.0.0.1 -p <port> -U postgres` and no password prompt.
    pub fn tool(&self, name: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(self.options.bin_dir.join(name));
        cmd.args(["-w", "-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(self.port.to_string())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// The URL of a database of this cluster.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a fresh database and returns its URL.
    pub async fn create_database(&self, name: &str) -> anyhow::Result<String> {
        let client = self.connect("postgres").await?;
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await?;
        Ok(self.url(name))
    }

    /// Creates a fresh database owned by a new login `owner` that may create roles but is
    /// no superuser (with `password`, if given); returns its URL as `postgres`.
    pub async fn create_owned_database(
        &self,
        name: &str,
        owner: &str,
        password: Option<&str>,
    ) -> anyhow::Result<String> {
        let client = self.connect("postgres").await?;
        let password = password
            .map(|p| format!(" PASSWORD '{}'", p.replace('\'', "''")))
            .unwrap_or_default();
        // Two statements: CREATE DATABASE refuses to run in the implicit transaction of
        // a multi-statement string.
        client
            .batch_execute(&format!(
                "CREATE ROLE \"{owner}\" LOGIN CREATEROLE{password}"
            ))
            .await?;
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\" OWNER \"{owner}\""))
            .await?;
        Ok(self.url(name))
    }

    /// Runs an SQL script with `psql` as `postgres` on `database` (a deployment's own
    /// script, as an operator runs it); fails if psql fails or writes to stderr.
    pub async fn run_sql_file(&self, database: &str, script: &Path) -> anyhow::Result<()> {
        let out = tokio::process::Command::new(self.options.bin_dir.join("psql"))
            // -w: never prompt for a password (a test must not wait on a terminal).
            .args([
                "-X",
                "-w",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                database,
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-f")
            .arg(script)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await?;
        anyhow::ensure!(
            out.status.success() && out.stderr.is_empty(),
            "psql -f {}: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// A connected client (its connection task runs in the background).
    pub async fn connect(&self, database: &str) -> anyhow::Result<tokio_postgres::Client> {
        let (client, conn) =
            tokio_postgres::connect(&self.url(database), tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        Ok(client)
    }

    /// Stops the server abruptly (SIGKILL); the data directory stays.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Stops the server the way an operator's restart does (fast shutdown: open
    /// connections are terminated), then starts it again on the same port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(mut p) = self.process.take() {
            p.signal("INT")?;
            p.wait_exit(Duration::from_secs(30)).await?;
        }
        self.launch_on_its_port().await
    }

    /// Stops the server in immediate mode, as `pg_ctl stop -m immediate` does (SIGQUIT):
    /// every backend exits at once, with no checkpoint, so the next start recovers from
    /// the WAL as after a crash. The data directory stays; `start_again` restarts it.
    pub async fn stop_immediate(&mut self) -> anyhow::Result<()> {
        if let Some(mut p) = self.process.take() {
            p.signal("QUIT")?;
            p.wait_exit(Duration::from_secs(30)).await?;
        }
        Ok(())
    }

    /// Starts a stopped server again.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.process.is_none(), "PostgreSQL is already running");
        self.launch_on_its_port().await
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(p) = self.process.as_ref() {
            // Immediate shutdown; the ChildProcess drop reaps it or kills it.
            let _ = p.signal("QUIT");
        }
        if let Some(mut p) = self.process.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while p.try_status().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

impl crate::process::OnFreePort for Postgres {
    async fn launch(&mut self) -> anyhow::Result<()> {
        self.launch_on_its_port().await
    }

    fn set_port(&mut self, port: u16) {
        self.port = port;
    }
}
