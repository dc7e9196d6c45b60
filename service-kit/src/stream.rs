//! The `EVENTS` stream: its settings (shared by ingestion and worker, which both
//! create-or-verify it at start-up) and the NATS connection, with its login.

use crate::health::Check;
use async_nats::header::HeaderName;
use async_nats::jetstream::{self, stream};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Message header carrying the request's correlation id from ingestion to the worker's
/// logs and the DLQ. (Constant `HeaderName`s: naming a header by `&str` validates and
/// copies the name on every use.)
pub const CORRELATION_HEADER: HeaderName = HeaderName::from_static("X-Correlation-ID");
/// Message header carrying when ingestion accepted the event (unix nanoseconds), for the
/// worker's ingest-to-commit latency.
pub const INGESTED_AT_HEADER: HeaderName = HeaderName::from_static("Ingested-At");

/// NATS and stream settings, from the environment (`docs/operations.md`).
#[derive(Clone, clap::Args)]
pub struct StreamArgs {
    /// NATS server URL(s), comma-separated for a cluster. `nats://user:password@host:4222`
    /// logs in with that user and password (percent-encoded like any URL's), the same on
    /// every server of the list. Never shown with its password.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222",
          value_parser = crate::config::nats_urls, hide_env_values = true)]
    pub nats_url: String,
    /// A NATS `.creds` file (user JWT and nkey seed) to log in with, instead of a password
    /// in NATS_URL.
    #[arg(long, env = "NATS_CREDS_FILE", conflicts_with = "nats_nkey_seed_file")]
    pub nats_creds_file: Option<PathBuf>,
    /// A file holding an nkey seed (`SU...`) to log in with, instead of a password in
    /// NATS_URL.
    #[arg(long, env = "NATS_NKEY_SEED_FILE")]
    pub nats_nkey_seed_file: Option<PathBuf>,
    /// The stream events are published to.
    #[arg(long, env = "NATS_STREAM", default_value = "EVENTS")]
    pub nats_stream: String,
    /// Subjects are `<prefix>.<source>.<eventType>`; the stream holds `<prefix>.>`.
    #[arg(long, env = "NATS_SUBJECT_PREFIX", default_value = "events")]
    pub nats_subject_prefix: String,
    /// Stream replicas (3 on a NATS cluster).
    #[arg(long, env = "NATS_STREAM_REPLICAS", default_value = "1", value_parser = crate::config::positive)]
    pub nats_stream_replicas: usize,
    /// Bytes the stream may hold before producers get 503 (unconsumed backlog; acked events
    /// are removed, so this bounds only how far workers may fall behind). Default 4 GiB.
    #[arg(long, env = "NATS_STREAM_MAX_BYTES", default_value = "4294967296",
          value_parser = clap::value_parser!(i64).range(1..))]
    pub nats_stream_max_bytes: i64,
    /// Messages the stream may hold before producers get 503. Default 20 million.
    #[arg(long, env = "NATS_STREAM_MAX_MSGS", default_value = "20000000",
          value_parser = clap::value_parser!(i64).range(1..))]
    pub nats_stream_max_msgs: i64,
    /// How long a re-sent eventId is recognised by the broker (`Nats-Msg-Id`), as `2m`.
    /// Later duplicates are still stored once, by the database's unique key.
    #[arg(long, env = "NATS_DUPLICATE_WINDOW", default_value = "2m",
          value_parser = crate::config::positive_duration)]
    pub nats_duplicate_window: Duration,
}

/// Written by hand so that a password in NATS_URL never reaches a `{:?}`.
impl fmt::Debug for StreamArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamArgs")
            .field("nats_url", &redacted(&self.nats_url))
            .field("nats_creds_file", &self.nats_creds_file)
            .field("nats_nkey_seed_file", &self.nats_nkey_seed_file)
            .field("nats_stream", &self.nats_stream)
            .field("nats_subject_prefix", &self.nats_subject_prefix)
            .field("nats_stream_replicas", &self.nats_stream_replicas)
            .field("nats_stream_max_bytes", &self.nats_stream_max_bytes)
            .field("nats_stream_max_msgs", &self.nats_stream_max_msgs)
            .field("nats_duplicate_window", &self.nats_duplicate_window)
            .finish()
    }
}

impl StreamArgs {
    /// The subject filter of the stream (`events.>`).
    pub fn subjects(&self) -> String {
        format!("{}.>", self.nats_subject_prefix)
    }

    /// The stream configuration we require.
    ///
    /// Work-queue retention: an event leaves the stream once a worker acked it (after the
    /// database commit), so the size limits bound only the backlog. `DiscardNew`: a full
    /// stream refuses new events (the producer gets 503 and retries) instead of silently
    /// dropping the oldest unconsumed ones.
    pub fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.nats_stream.clone(),
            subjects: vec![self.subjects()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            discard: stream::DiscardPolicy::New,
            max_bytes: self.nats_stream_max_bytes,
            max_messages: self.nats_stream_max_msgs,
            duplicate_window: self.nats_duplicate_window,
            num_replicas: self.nats_stream_replicas,
            description: Some("Validated marketing events awaiting storage".into()),
            ..Default::default()
        }
    }
}

/// Why the NATS settings cannot be used. No message holds a password or a seed.
#[derive(Debug, thiserror::Error)]
pub enum NatsConfigError {
    #[error("NATS_URL {url} is not a server address")]
    Url {
        /// Redacted.
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("NATS_URL {url} names a user without a password")]
    NoPassword { url: String },
    #[error(
        "NATS_URL gives different logins for its servers: one user and password serves them all"
    )]
    MixedLogins,
    #[error("NATS_URL holds a password and {variable} is set: set only one way to log in")]
    TwoLogins { variable: &'static str },
    #[error("NATS_CREDS_FILE {}", path.display())]
    CredsFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("NATS_NKEY_SEED_FILE {} cannot be read", path.display())]
    SeedFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("NATS_NKEY_SEED_FILE {} does not hold an nkey seed", path.display())]
    NotASeed {
        path: PathBuf,
        #[source]
        source: nkeys::error::Error,
    },
}

/// NATS_URL (one URL or a comma-separated list) with every password replaced by `***`,
/// for messages. A user alone is hidden too: `nats://token@host` is how NATS URLs carry
/// a token.
pub fn redacted(nats_url: &str) -> String {
    nats_url
        .split(',')
        .map(|url| {
            let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            let Some((userinfo, host)) = authority.rsplit_once('@') else {
                return url.to_owned();
            };
            let shown = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***"),
                None => "***".to_owned(),
            };
            let scheme = if scheme.is_empty() {
                String::new()
            } else {
                format!("{scheme}://")
            };
            format!("{scheme}{shown}@{host}{path}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The servers of NATS_URL without the credentials it may carry, and options that log in
/// as configured: the URL's user and password, a creds file or an nkey seed file.
///
/// The credentials leave the URLs because async-nats does not read them there, and so
/// that no address the client logs or reports carries a password; given as options, they
/// also serve the servers a cluster announces.
pub async fn login(
    args: &StreamArgs,
) -> Result<(Vec<async_nats::ServerAddr>, async_nats::ConnectOptions), NatsConfigError> {
    let mut servers = Vec::new();
    let mut password: Option<(String, String)> = None;
    for url in args.nats_url.split(',').map(str::trim) {
        let bad_url = |source| NatsConfigError::Url {
            url: redacted(url),
            source,
        };
        let mut parsed = url
            .parse::<async_nats::ServerAddr>()
            .map_err(bad_url)?
            .into_inner();
        if !parsed.username().is_empty() || parsed.password().is_some() {
            let Some(pass) = parsed.password() else {
                return Err(NatsConfigError::NoPassword { url: redacted(url) });
            };
            let this = (percent_decoded(parsed.username()), percent_decoded(pass));
            if password.as_ref().is_some_and(|first| *first != this) {
                return Err(NatsConfigError::MixedLogins);
            }
            password = Some(this);
            // Neither fails on a nats:// URL with a host, which `parse` has ensured.
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
        }
        servers.push(async_nats::ServerAddr::from_url(parsed).map_err(bad_url)?);
    }
    let options = async_nats::ConnectOptions::new();
    let options =
        match (password, &args.nats_creds_file, &args.nats_nkey_seed_file) {
            (Some(_), Some(_), _) => {
                return Err(NatsConfigError::TwoLogins {
                    variable: "NATS_CREDS_FILE",
                });
            }
            (Some(_), _, Some(_)) => {
                return Err(NatsConfigError::TwoLogins {
                    variable: "NATS_NKEY_SEED_FILE",
                });
            }
            (Some((user, pass)), None, None) => options.user_and_password(user, pass),
            (None, Some(path), _) => options.credentials_file(path).await.map_err(|source| {
                NatsConfigError::CredsFile {
                    path: path.clone(),
                    source,
                }
            })?,
            (None, None, Some(path)) => options.nkey(nkey_seed(path)?),
            (None, None, None) => options,
        };
    Ok((servers, options))
}

/// The seed of an nkey seed file, checked now: async-nats would only find a bad one at
/// each connection attempt, as "failed signing nonce".
fn nkey_seed(path: &Path) -> Result<String, NatsConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| NatsConfigError::SeedFile {
        path: path.to_owned(),
        source,
    })?;
    let seed = text.trim().to_owned();
    nkeys::KeyPair::from_seed(&seed).map_err(|source| NatsConfigError::NotASeed {
        path: path.to_owned(),
        source,
    })?;
    Ok(seed)
}

/// `%XX` escapes decoded, as a URL's user and password are written.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Why the NATS connection cannot be made at all (a bad setting); a server that is down
/// or refuses the login is not one of these: the client keeps retrying.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Config(#[from] NatsConfigError),
    #[error("cannot connect to NATS")]
    Connect(#[source] async_nats::ConnectError),
}

/// A NATS client and the reason its last connection attempt failed. The client retries
/// on its own, forever, so a refused login shows nowhere but here: readiness reports it.
#[derive(Debug, Clone)]
pub struct Nats {
    pub client: async_nats::Client,
    last_error: Arc<Mutex<Option<String>>>,
}

impl Nats {
    /// The `nats` readiness check: ready when connected; else the connection's state and
    /// why the last attempt failed (`authorization violation` for a refused login).
    pub fn check(&self) -> Check {
        let state = self.client.connection_state();
        if state == async_nats::connection::State::Connected {
            return Check::ok("nats");
        }
        let last = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match last {
            Some(error) if is_refused_login(&error) => Check::failed(
                "nats",
                format!("NATS connection is {state}: {error}: {REFUSED_LOGIN_HINT}"),
            ),
            Some(error) => Check::failed("nats", format!("NATS connection is {state}: {error}")),
            None => Check::failed("nats", format!("NATS connection is {state}")),
        }
    }
}

/// Connects to NATS without failing when it is down or refuses the login: the client
/// keeps retrying in the background (start-up and later drops alike) and readiness
/// reports the state and the last failure ([`Nats::check`]).
pub async fn connect(args: &StreamArgs, name: &str) -> Result<Nats, ConnectError> {
    let (servers, options) = login(args).await?;
    let last_error = Arc::new(Mutex::new(None));
    let noted = last_error.clone();
    let client = options
        .name(name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        .ping_interval(Duration::from_secs(10))
        .event_callback(move |event| {
            let noted = noted.clone();
            async move { note_event(&noted, event) }
        })
        .connect(servers)
        .await
        .map_err(ConnectError::Connect)?;
    Ok(Nats { client, last_error })
}

/// What an operator must fix when the server refuses the login.
const REFUSED_LOGIN_HINT: &str = "NATS refused the login: check NATS_URL's user and \
     password, NATS_CREDS_FILE or NATS_NKEY_SEED_FILE";

/// async-nats reports a refused login only as text: the server's `-ERR 'Authorization
/// Violation'`, or a connection attempt's `authorization violation`.
fn is_refused_login(failure: &str) -> bool {
    failure
        .to_ascii_lowercase()
        .contains("authorization violation")
}

/// Logs a connection event and keeps the last failure for readiness. A refused login is
/// a warning of its own: retrying will not fix it, an operator must.
fn note_event(last_error: &Mutex<Option<String>>, event: async_nats::Event) {
    let failure = match &event {
        async_nats::Event::Connected => {
            tracing::info!("Connected to NATS");
            None
        }
        async_nats::Event::Disconnected => {
            tracing::warn!("Disconnected from NATS");
            return;
        }
        async_nats::Event::ClientError(error) => Some(error.to_string()),
        async_nats::Event::ServerError(error) => Some(error.to_string()),
        other => {
            tracing::info!(event = %other, "NATS event");
            return;
        }
    };
    if let Some(failure) = &failure {
        if is_refused_login(failure) {
            tracing::warn!(error = %failure, "{REFUSED_LOGIN_HINT}");
        } else {
            tracing::info!(error = %failure, "NATS connection attempt failed");
        }
    }
    *last_error.lock().unwrap_or_else(PoisonError::into_inner) = failure;
}

/// A JetStream context whose API requests and publish acks time out after `timeout`.
pub fn jetstream(client: async_nats::Client, timeout: Duration) -> jetstream::Context {
    jetstream::context::ContextBuilder::new()
        .timeout(timeout)
        .build(client)
}

/// Why a stream could not be created or verified. The JetStream error is kept as the
/// source: log it with [`crate::error::error_text`] to show the whole chain.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("cannot look up stream {stream}")]
    Lookup {
        stream: String,
        #[source]
        source: jetstream::context::GetStreamError,
    },
    #[error("cannot read stream {stream}")]
    Info {
        stream: String,
        #[source]
        source: jetstream::context::RequestError,
    },
    #[error(
        "stream {stream} exists with retention {retention:?} and storage {storage:?}; \
         work-queue retention on file storage is required"
    )]
    Unsuitable {
        stream: String,
        retention: stream::RetentionPolicy,
        storage: stream::StorageType,
    },
    #[error("cannot create stream {stream}")]
    Create {
        stream: String,
        #[source]
        source: jetstream::context::CreateStreamError,
    },
    #[error("cannot update stream {stream}")]
    Update {
        stream: String,
        #[source]
        source: jetstream::context::UpdateStreamError,
    },
}

/// Whether looking a stream up failed only because it does not exist.
pub fn is_stream_not_found(error: &jetstream::context::GetStreamError) -> bool {
    matches!(
        error.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(ref api)
            if api.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// Creates the stream, or verifies an existing one and updates what may change (limits,
/// duplicate window, replicas). Fails when it exists with a retention or storage we cannot
/// run on, since those cannot be changed in place.
pub async fn ensure_stream(js: &jetstream::Context, args: &StreamArgs) -> Result<(), StreamError> {
    let wanted = args.stream_config();
    let name = || wanted.name.clone();
    match js.get_stream(&wanted.name).await {
        Ok(mut existing) => {
            let info = existing.info().await.map_err(|source| StreamError::Info {
                stream: name(),
                source,
            })?;
            let have = &info.config;
            if have.retention != wanted.retention || have.storage != wanted.storage {
                return Err(StreamError::Unsuitable {
                    stream: name(),
                    retention: have.retention,
                    storage: have.storage,
                });
            }
            let differs = have.subjects != wanted.subjects
                || have.discard != wanted.discard
                || have.max_bytes != wanted.max_bytes
                || have.max_messages != wanted.max_messages
                || have.duplicate_window != wanted.duplicate_window
                || have.num_replicas != wanted.num_replicas;
            if differs {
                tracing::info!(stream = %wanted.name, "Updating stream settings to the configured ones");
                js.update_stream(&wanted)
                    .await
                    .map_err(|source| StreamError::Update {
                        stream: name(),
                        source,
                    })?;
            }
            Ok(())
        }
        Err(e) if is_stream_not_found(&e) => js
            .create_stream(wanted.clone())
            .await
            .map(|_| tracing::info!(stream = %wanted.name, "Created stream"))
            .map_err(|source| StreamError::Create {
                stream: name(),
                source,
            }),
        Err(source) => Err(StreamError::Lookup {
            stream: name(),
            source,
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Sample {
        #[command(flatten)]
        stream: StreamArgs,
    }

    fn args(extra: &[&str]) -> StreamArgs {
        let mut argv = vec!["sample"];
        argv.extend_from_slice(extra);
        match Sample::try_parse_from(argv) {
            Ok(sample) => sample.stream,
            Err(e) => panic!("{e}"),
        }
    }

    async fn refusal(extra: &[&str]) -> String {
        match login(&args(extra)).await {
            Ok((servers, _)) => panic!("accepted {servers:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_password_is_redacted_in_every_url_of_a_list() {
        assert_eq!(
            redacted("nats://app:s3cret@a:4222, tls://app:s3cret@b:4222/x,nats://c:4222"),
            "nats://app:***@a:4222, tls://app:***@b:4222/x,nats://c:4222"
        );
        assert_eq!(redacted("nats://tok3n@a:4222"), "nats://***@a:4222");
        assert_eq!(redacted("app:p@ss@a:4222"), "app:***@a:4222");
        assert!(!format!("{:?}", args(&["--nats-url", "nats://u:s3cret@h:1"])).contains("s3cret"));
    }

    #[test]
    fn a_bad_url_is_refused_without_its_password() {
        let refused = crate::config::nats_urls("nats://u:s3cret@h");
        assert!(
            refused.as_ref().is_err_and(|e| !e.contains("s3cret")),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn the_urls_lose_their_credentials_which_become_the_login() {
        let stream = args(&[
            "--nats-url",
            "nats://app:p%40ss%3Aw0rd@a:4222,nats://b:4223",
        ]);
        let (servers, _) = login(&stream).await.map_err(|e| e.to_string()).unwrap();
        let shown: Vec<&str> = servers.iter().map(|s| s.as_url_str()).collect();
        assert_eq!(shown, ["nats://a:4222", "nats://b:4223"]);
        assert_eq!(percent_decoded("p%40ss%3Aw0rd%"), "p@ss:w0rd%");
    }

    #[tokio::test]
    async fn conflicting_logins_are_refused() {
        let two = refusal(&["--nats-url", "nats://a:x@h:1,nats://b:y@h:2"]).await;
        assert!(two.contains("different logins"), "{two}");
        let no_password = refusal(&["--nats-url", "nats://a@h:1"]).await;
        assert!(no_password.contains("without a password"), "{no_password}");
        let both = refusal(&[
            "--nats-url",
            "nats://a:x@h:1",
            "--nats-nkey-seed-file",
            "/x",
        ])
        .await;
        assert!(both.contains("NATS_NKEY_SEED_FILE"), "{both}");
    }

    #[tokio::test]
    async fn a_seed_file_must_hold_a_seed() {
        let missing = refusal(&["--nats-nkey-seed-file", "/nonexistent/seed"]).await;
        assert!(missing.contains("cannot be read"), "{missing}");
        let dir = tempfile_dir();
        let path = dir.join("seed");
        std::fs::write(&path, "SUnotaseed\n").unwrap();
        let path = path.to_string_lossy().into_owned();
        let bad = refusal(&["--nats-nkey-seed-file", &path]).await;
        assert!(
            bad.contains("does not hold an nkey seed") && !bad.contains("SUnotaseed"),
            "{bad}"
        );
        let missing = refusal(&["--nats-creds-file", "/nonexistent/creds"]).await;
        assert!(missing.contains("NATS_CREDS_FILE"), "{missing}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("stream-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
