//! A private nats-server with JetStream, on a free loopback port, with its own store;
//! open to anyone, or requiring a login (user and password, or nkey).

use crate::process::ChildProcess;
use crate::process::OnFreePort as _;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// A nats-server of this test. Killing and restarting keeps the port and the store, as
/// a crashed and restarted server would.
#[derive(Debug)]
pub struct NatsServer {
    port: u16,
    store: tempfile::TempDir,
    process: Option<ChildProcess>,
    /// The user and password of `url()` and `client()`, when a login is required.
    login: Option<(String, String)>,
}

/// Who may log in to a server started with [`NatsServer::start_with_logins`].
#[derive(Debug, Clone)]
pub enum NatsLogin {
    Password {
        user: String,
        password: String,
    },
    /// An nkey user, known to the server by its public key (`U...`).
    Nkey {
        public_key: String,
    },
}

/// A new nkey user: the seed a client logs in with, and the public key the server knows.
#[derive(Debug, Clone)]
pub struct NkeyUser {
    pub seed: String,
    pub public_key: String,
}

impl NkeyUser {
    pub fn generate() -> anyhow::Result<NkeyUser> {
        let pair = nkeys::KeyPair::new_user();
        Ok(NkeyUser {
            seed: pair.seed()?,
            public_key: pair.public_key(),
        })
    }
}

/// A quoted string of the server's configuration format.
fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The binary: `NATS_SERVER_BIN` if set, else Debian's.
fn binary() -> PathBuf {
    std::env::var_os("NATS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/nats-server"))
}

impl NatsServer {
    /// Starts a server and waits until it accepts connections.
    pub async fn start() -> anyhow::Result<NatsServer> {
        let mut server = NatsServer {
            port: crate::free_port()?,
            store: tempfile::tempdir()?,
            process: None,
            login: None,
        };
        server.launch_on_free_port().await?;
        Ok(server)
    }

    /// Starts a server that admits only `logins` (JetStream included). The first password
    /// login is the one `url()` carries and `client()` uses, so there must be one.
    pub async fn start_with_logins(logins: &[NatsLogin]) -> anyhow::Result<NatsServer> {
        let login = logins.iter().find_map(|l| match l {
            NatsLogin::Password { user, password } => Some((user.clone(), password.clone())),
            NatsLogin::Nkey { .. } => None,
        });
        anyhow::ensure!(
            login.is_some(),
            "a password login is needed for url() and client()"
        );
        let users: Vec<String> = logins
            .iter()
            .map(|l| match l {
                NatsLogin::Password { user, password } => {
                    format!("{{user: {}, password: {}}}", quoted(user), quoted(password))
                }
                NatsLogin::Nkey { public_key } => format!("{{nkey: {}}}", quoted(public_key)),
            })
            .collect();
        let mut server = NatsServer {
            port: crate::free_port()?,
            store: tempfile::tempdir()?,
            process: None,
            login,
        };
        std::fs::write(
            server.config_path(),
            format!(
                "authorization {{\n  users: [\n    {}\n  ]\n}}\n",
                users.join("\n    ")
            ),
        )?;
        server.launch_on_free_port().await?;
        Ok(server)
    }

    /// Starts `nodes` servers in one cluster (routes on loopback, each its own store), as a
    /// deployment with R3 streams runs them, and waits until JetStream answers on the
    /// first (a metadata leader is elected).
    pub async fn start_cluster(nodes: usize) -> anyhow::Result<Vec<NatsServer>> {
        let ports: Vec<(u16, u16)> = (0..nodes)
            .map(|_| Ok((crate::free_port()?, crate::free_port()?)))
            .collect::<anyhow::Result<_>>()?;
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, route)| quoted(&format!("nats://127.0.0.1:{route}")))
            .collect();
        let name = crate::unique_name();
        let mut servers = Vec::with_capacity(nodes);
        for (i, &(port, route)) in ports.iter().enumerate() {
            let server = NatsServer {
                port,
                store: tempfile::tempdir()?,
                process: None,
                login: None,
            };
            std::fs::write(
                server.config_path(),
                format!(
                    "server_name: {}\ncluster {{\n  name: {}\n  listen: \"127.0.0.1:{route}\"\n  routes: [{}]\n}}\n",
                    quoted(&format!("{name}-{i}")),
                    quoted(&name),
                    routes.join(", ")
                ),
            )?;
            servers.push(server);
        }
        for server in &mut servers {
            server.launch_on_its_port().await?;
        }
        // The account's JetStream info answers without an error once a metadata leader is
        // elected (read raw: the typed answer differs between server versions).
        let client = servers[0].client().await?;
        crate::eventually(
            "a JetStream metadata leader",
            Duration::from_secs(30),
            || {
                let client = client.clone();
                async move {
                    let reply = client.request("$JS.API.INFO", "".into()).await.ok()?;
                    let info: serde_json::Value = serde_json::from_slice(&reply.payload).ok()?;
                    info.get("error").is_none().then_some(())
                }
            },
        )
        .await?;
        Ok(servers)
    }

    /// The configuration file, beside the store's `jetstream` folder.
    fn config_path(&self) -> PathBuf {
        self.store.path().join("nats-server.conf")
    }

    /// Starts the server on its port and waits until it accepts connections.
    async fn launch_on_its_port(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(binary());
        cmd.args([
            "-a",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-js",
            "-sd",
        ])
        .arg(self.store.path());
        if self.config_path().exists() {
            cmd.arg("-c").arg(self.config_path());
        }
        cmd.stdout(crate::child_output())
            .stderr(crate::child_output());
        self.process = Some(ChildProcess::spawn("nats-server", cmd)?);
        let addr = format!("127.0.0.1:{}", self.port);
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(&addr).is_err() {
            if let Some(status) = self.process.as_mut().and_then(ChildProcess::try_status) {
                self.process = None;
                return Err(crate::process::Exited {
                    name: "nats-server",
                    port: self.port,
                    status,
                }
                .into());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "nats-server did not listen on {addr}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `nats://127.0.0.1:<port>`, with `user:password@` when the server requires a login:
    /// the URL a service is given.
    pub fn url(&self) -> String {
        match &self.login {
            Some((user, password)) => format!("nats://{user}:{password}@127.0.0.1:{}", self.port),
            None => self.address(),
        }
    }

    /// `nats://127.0.0.1:<port>`, without credentials.
    pub fn address(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: the server vanishes as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Starts it again on the same port with the same store.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.launch_on_its_port().await
    }

    /// Starts it again as [`NatsServer::restart`] does, taking messages of at most
    /// `bytes` from then on (`max_payload`; what the stream holds already stays).
    pub async fn restart_with_max_payload(&mut self, bytes: usize) -> anyhow::Result<()> {
        let mut conf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.config_path())?;
        std::io::Write::write_all(&mut conf, format!("\nmax_payload: {bytes}\n").as_bytes())?;
        self.restart().await
    }

    /// A client connected to this server.
    pub async fn client(&self) -> anyhow::Result<async_nats::Client> {
        let options = match &self.login {
            Some((user, password)) => {
                async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
            }
            None => async_nats::ConnectOptions::new(),
        };
        Ok(options.connect(self.address()).await?)
    }

    /// A JetStream context on a new client.
    pub async fn jetstream(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        Ok(async_nats::jetstream::new(self.client().await?))
    }
}

impl crate::process::OnFreePort for NatsServer {
    async fn launch(&mut self) -> anyhow::Result<()> {
        self.launch_on_its_port().await
    }

    fn set_port(&mut self, port: u16) {
        self.port = port;
    }
}
