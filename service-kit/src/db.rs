//! Connecting to PostgreSQL as the URL says, the pool and its gauges.
//!
//! Every production connection (the services' pools, the worker's migrations and
//! rebuild) goes through a [`Target`], which honours the URL's `sslmode` and
//! `sslrootcert` with libpq's meanings, over rustls:
//!
//! | `sslmode` | TLS | server certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | when the server offers it | not verified (chain verified if `sslrootcert` is a file, as libpq does) |
//! | `require` | always | not verified (chain verified if `sslrootcert` is a file, as libpq does) |
//! | `verify-ca` | always | chain to a trusted root |
//! | `verify-full` | always | chain to a trusted root, and issued for the host connected to |
//!
//! Trusted roots: the PEM file `sslrootcert=<path>`; without it (or with
//! `sslrootcert=system`) the system's store. tokio-postgres itself knows neither
//! `verify-*` nor `sslrootcert`, so they are taken out of the URL here and turned into the
//! rustls configuration. They need the URL form (`postgres://...?sslmode=verify-full`).

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`, as far as this platform supports it (`allow` is refused: it would
/// try plain text first, which nobody should want).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, SettingsError> {
        match value {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            other => Err(SettingsError::SslMode(other.to_owned())),
        }
    }

    fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres is told: whether TLS is attempted, and whether it is a must.
    /// The verification itself is the rustls configuration's.
    fn negotiation(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => "require",
        }
    }
}

/// Why a connection URL or the pool built on it cannot be used. Never holds the URL (it
/// may carry a password).
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("not a valid PostgreSQL connection URL")]
    Parse(#[source] tokio_postgres::Error),
    #[error(
        "sslmode={0:?} is not supported: use disable, prefer, require, verify-ca or verify-full"
    )]
    SslMode(String),
    #[error("sslrootcert={path} cannot be read")]
    RootCertRead {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sslrootcert={path} is not a PEM file of certificates")]
    RootCertPem {
        path: String,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("sslrootcert={path} holds no usable certificate")]
    RootCertEmpty { path: String },
    #[error("sslrootcert=system needs sslmode=verify-full, not {0} (as libpq)")]
    WeakSystemRoots(&'static str),
    #[error("cannot configure TLS")]
    Tls(#[source] rustls::Error),
    #[error("cannot build the connection pool")]
    Pool(#[source] deadpool_postgres::BuildError),
}

/// A database to connect to: the URL's settings and the TLS its `sslmode` asks for.
#[derive(Clone)]
pub struct Target {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    ssl_mode: SslMode,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // tokio-postgres' own Debug redacts the password.
        f.debug_struct("Target")
            .field("config", &self.config)
            .field("ssl_mode", &self.ssl_mode)
            .finish()
    }
}

impl Target {
    /// Reads a connection URL (or a libpq `key=value` string, which supports `sslmode`
    /// disable/prefer/require only). A root certificate file is read now, so a wrong path
    /// stops the program at start rather than failing every connection.
    pub fn parse(url: &str) -> Result<Target, SettingsError> {
        let (url, ssl_mode, root_cert) = split_tls_params(url)?;
        let mut config: tokio_postgres::Config = url.parse().map_err(SettingsError::Parse)?;
        let ssl_mode = match ssl_mode {
            Some(mode) => mode,
            None if root_cert.as_deref() == Some("system") => SslMode::VerifyFull,
            None => match config.get_ssl_mode() {
                tokio_postgres::config::SslMode::Disable => SslMode::Disable,
                tokio_postgres::config::SslMode::Require => SslMode::Require,
                _ => SslMode::Prefer,
            },
        };
        config.ssl_mode(match ssl_mode.negotiation() {
            "disable" => tokio_postgres::config::SslMode::Disable,
            "require" => tokio_postgres::config::SslMode::Require,
            _ => tokio_postgres::config::SslMode::Prefer,
        });
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        let tls = tls_connector(ssl_mode, root_cert.as_deref())?;
        Ok(Target {
            config,
            tls,
            ssl_mode,
        })
    }

    pub fn ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }

    /// One connection; its connection task runs in the background until the client drops.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = self.config.connect(self.tls.clone()).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "Database connection closed");
            }
        });
        Ok(client)
    }

    /// A pool (connections are opened lazily, up to `max`). Connecting and waiting for a
    /// free connection are bounded, so a database outage turns into errors the callers
    /// classify as transient instead of hanging forever. `settings` are server settings
    /// (`name`, `value`) every connection of the pool starts with, e.g. a reader's
    /// `statement_timeout`; the server's own apply to the rest.
    pub fn pool(&self, max: usize, settings: &[(&str, String)]) -> Result<Pool, SettingsError> {
        let mut config = self.config.clone();
        if !settings.is_empty() {
            let mut options = config.get_options().unwrap_or_default().to_owned();
            for (name, value) in settings {
                options.push_str(&format!(" -c {name}={value}"));
            }
            config.options(options.trim());
        }
        let manager = Manager::from_config(
            config,
            self.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Pool::builder(manager)
            .max_size(max)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(SettingsError::Pool)
    }
}

/// [`Target::parse`] then [`Target::pool`].
pub fn pool(url: &str, max: usize, settings: &[(&str, String)]) -> Result<Pool, SettingsError> {
    Target::parse(url)?.pool(max, settings)
}

/// Takes `sslmode` and `sslrootcert` out of a `postgres://` URL's query (tokio-postgres
/// refuses `verify-*` and does not know `sslrootcert`); other strings pass unchanged.
fn split_tls_params(url: &str) -> Result<(String, Option<SslMode>, Option<String>), SettingsError> {
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let Some((base, query)) = url.split_once('?').filter(|_| is_url) else {
        return Ok((url.to_owned(), None, None));
    };
    let (mut ssl_mode, mut root_cert, mut kept) = (None, None, Vec::new());
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        match key {
            "sslmode" => ssl_mode = Some(SslMode::parse(&percent_decode(value))?),
            "sslrootcert" => root_cert = Some(percent_decode(value)),
            _ => kept.push(param),
        }
    }
    if let Some(mode) = ssl_mode {
        kept.push(match mode.negotiation() {
            "disable" => "sslmode=disable",
            "require" => "sslmode=require",
            _ => "sslmode=prefer",
        });
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, ssl_mode, root_cert))
}

/// `%XX` escapes of a URL query value; anything malformed is kept as written.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let (h, l) = (hex(h).unwrap_or(0), hex(l).unwrap_or(0));
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The rustls connector for `mode`, trusting `root_cert` (a PEM file, or `system`).
fn tls_connector(
    mode: SslMode,
    root_cert: Option<&str>,
) -> Result<MakeRustlsConnect, SettingsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let system = root_cert.is_none_or(|path| path == "system");
    if root_cert == Some("system") && mode != SslMode::VerifyFull {
        return Err(SettingsError::WeakSystemRoots(mode.name()));
    }
    let check = match mode {
        SslMode::VerifyFull => Check::ChainAndName,
        SslMode::VerifyCa => Check::Chain,
        // libpq verifies the chain under prefer and require too when given a root file.
        SslMode::Prefer | SslMode::Require if !system => Check::Chain,
        _ => Check::Nothing,
    };
    let roots = match (check, root_cert) {
        (Check::Nothing, _) => Arc::new(RootCertStore::empty()),
        (_, Some(path)) if path != "system" => Arc::new(read_roots(path)?),
        _ => system_roots(),
    };
    let verifier = Verifier {
        check,
        roots,
        algorithms: provider.signature_verification_algorithms,
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(SettingsError::Tls)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

fn read_roots(path: &str) -> Result<RootCertStore, SettingsError> {
    let pem = std::fs::read(path).map_err(|source| SettingsError::RootCertRead {
        path: path.to_owned(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| SettingsError::RootCertPem {
            path: path.to_owned(),
            source,
        })?;
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(certs);
    if roots.is_empty() {
        return Err(SettingsError::RootCertEmpty {
            path: path.to_owned(),
        });
    }
    Ok(roots)
}

/// The system's trusted roots (`SSL_CERT_FILE`, `SSL_CERT_DIR` or the distribution's
/// bundle), read once per process. An empty store is not an error here: every verified
/// connection then fails with an unknown issuer, which readiness reports.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                tracing::warn!(
                    errors = ?found.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "No system root certificates: verified PostgreSQL connections will fail; \
                     install ca-certificates or give sslrootcert"
                );
            }
            Arc::new(roots)
        })
        .clone()
}

#[derive(Debug, Clone, Copy)]
enum Check {
    Nothing,
    Chain,
    ChainAndName,
}

/// The server certificate check of an `sslmode`. The handshake's signatures are always
/// verified (the server proves it holds the certificate's key); what is or is not trusted
/// is the certificate itself.
#[derive(Debug)]
struct Verifier {
    check: Check,
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Check::Nothing = self.check {
            return Ok(ServerCertVerified::assertion());
        }
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        if let Check::ChainAndName = self.check {
            rustls::client::verify_server_name(&cert, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Opens `min` connections now, so the first requests do not pay for connecting.
/// Failure is not fatal: the pool reconnects on demand and readiness reports it.
pub async fn warm(pool: &Pool, min: usize) {
    let mut held = Vec::with_capacity(min);
    for _ in 0..min {
        match pool.get().await {
            Ok(conn) => held.push(conn),
            Err(error) => {
                let error = crate::error::error_text(&error);
                tracing::warn!(%error, "Cannot open database connections yet");
                break;
            }
        }
    }
}

/// Publishes `db_pool_connections{service,state}` every few seconds.
pub fn spawn_pool_gauge(service: &'static str, pool: Pool) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tick.tick().await;
            let status = pool.status();
            let in_use = status.size.saturating_sub(status.available);
            metrics::gauge!("db_pool_connections", "service" => service, "state" => "idle")
                .set(status.available as f64);
            metrics::gauge!("db_pool_connections", "service" => service, "state" => "in_use")
                .set(in_use as f64);
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_the_url() {
        let (url, mode, root) = split_tls_params(
            "postgres://u:p%3Fw@db:5432/events?application_name=w&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(
            url,
            "postgres://u:p%3Fw@db:5432/events?application_name=w&sslmode=require"
        );
        assert_eq!(mode, Some(SslMode::VerifyFull));
        assert_eq!(root.as_deref(), Some("/etc/ca.pem"));

        let (url, mode, root) = split_tls_params("postgres://u@db/events").unwrap();
        assert_eq!(
            (url.as_str(), mode, root),
            ("postgres://u@db/events", None, None)
        );
        let (url, _, _) = split_tls_params("postgres://u@db/events?sslmode=disable").unwrap();
        assert_eq!(url, "postgres://u@db/events?sslmode=disable");
        let kv = "host=db user=u sslmode=require";
        assert_eq!(split_tls_params(kv).unwrap().0, kv);
    }

    #[test]
    fn every_libpq_mode_but_allow_is_understood() {
        for (url, mode) in [
            ("postgres://u@db/e", SslMode::Prefer),
            ("postgres://u@db/e?sslmode=disable", SslMode::Disable),
            ("postgres://u@db/e?sslmode=prefer", SslMode::Prefer),
            ("postgres://u@db/e?sslmode=require", SslMode::Require),
            ("postgres://u@db/e?sslmode=verify-ca", SslMode::VerifyCa),
            ("postgres://u@db/e?sslmode=verify-full", SslMode::VerifyFull),
            ("postgres://u@db/e?sslrootcert=system", SslMode::VerifyFull),
            ("host=db user=u sslmode=require", SslMode::Require),
        ] {
            assert_eq!(Target::parse(url).unwrap().ssl_mode(), mode, "{url}");
        }
        let refused = Target::parse("postgres://u@db/e?sslmode=allow").unwrap_err();
        assert!(matches!(refused, SettingsError::SslMode(_)), "{refused:?}");
        let weak = Target::parse("postgres://u@db/e?sslmode=require&sslrootcert=system");
        assert!(matches!(weak, Err(SettingsError::WeakSystemRoots(_))));
        // Client certificates are not implemented: refused, not ignored.
        for unsupported in ["sslcert=/c.pem", "sslkey=/k.pem", "sslcrl=/r.pem"] {
            let url = format!("postgres://u@db/e?sslmode=verify-full&{unsupported}");
            assert!(Target::parse(&url).is_err(), "{url}");
        }
    }

    #[test]
    fn a_missing_root_certificate_is_named_without_the_password() {
        let error = Target::parse(
            "postgres://u:secret@db/e?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        )
        .unwrap_err();
        assert!(matches!(error, SettingsError::RootCertRead { .. }));
        assert_eq!(
            error.to_string(),
            "sslrootcert=/nonexistent/ca.pem cannot be read"
        );
        let debug = format!(
            "{:?}",
            Target::parse("postgres://u:secret@db/e?sslmode=require").unwrap()
        );
        assert!(!debug.contains("secret"), "{debug}");
    }
}
