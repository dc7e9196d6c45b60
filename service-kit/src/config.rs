//! Configuration from the environment (with `--help` listing every variable).
//!
//! Each service describes its configuration as a `clap::Parser` whose fields are named
//! after the environment variables (`nats_url` <-> `NATS_URL`), so a bad value is reported
//! in one line that names the variable, and the program stops instead of guessing.
//! Variables are prefixed by what they configure and durations carry their unit
//! (`docs/operations.md`, "Naming"); [`RENAMED`] lists the names this replaced.

mod duration;
mod renamed;

pub use duration::{Written, duration, duration_up_to_a_day, positive_duration};
pub use renamed::{Deprecated, Deprecations, NotANumber, OldUnit, RENAMED, Renamed, legacy_args};

use clap::Parser;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use std::ffi::OsString;
use std::net::IpAddr;
use std::time::Duration;

/// What every service is configured with: where it listens, how long it may take to stop,
/// how it logs. Flattened into each service's configuration, which sets its default port
/// with [`default_port`].
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ServiceArgs {
    /// Address to listen on (the worker: its health and metrics endpoint).
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "PORT")]
    pub port: u16,
    /// How long a graceful shutdown may take before the process exits anyway (`30s`).
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = positive_duration)]
    pub shutdown_timeout: Duration,
    /// Log filter (`info`, `worker=debug,info`).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub rust_log: String,
    /// `json` (production) or `text`.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
}

/// Gives `PORT` a service's default: `#[command(mut_arg("port", default_port("3001")))]` on
/// a configuration that flattens [`ServiceArgs`].
pub fn default_port(port: &'static str) -> impl FnOnce(clap::Arg) -> clap::Arg {
    move |arg| arg.required(false).default_value(port)
}

/// Parses the configuration from the environment and command line, or exits: `--help`
/// prints and exits 0; a bad value prints one line naming the variable and exits 2.
/// Variables under their old names ([`RENAMED`]) are read too; the returned
/// [`Deprecations`] are to be logged once logging is set up.
pub fn parse_or_exit<T: Parser>(service: &str) -> (T, Deprecations) {
    let env = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    let (legacy, deprecations) = match legacy_args(&T::command(), RENAMED, env) {
        Ok(legacy) => legacy,
        Err(e) => {
            eprintln!("{service}: {e}");
            std::process::exit(2)
        }
    };
    let mut argv = std::env::args_os();
    let argv: Vec<OsString> = argv.next().into_iter().chain(legacy).chain(argv).collect();
    match try_parse_from::<T>(argv) {
        Ok(config) => (config, deprecations),
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            std::process::exit(0)
        }
        Err(e) => {
            let mut line = describe(&e, &T::command());
            let from_old = deprecations.0.iter().find_map(|d| match d {
                Deprecated::Used { old, new, .. } if line.contains(&format!(" {new}=")) => {
                    Some(*old)
                }
                _ => None,
            });
            if let Some(old) = from_old {
                line.push_str(&format!(" (set as {old}, its deprecated name)"));
            }
            eprintln!("{service}: {line}");
            std::process::exit(2)
        }
    }
}

/// `T::try_parse_from`, except that a later argument overrides an earlier one of the same
/// name: the arguments standing for old variables come first, so any given on the command
/// line win over them.
pub fn try_parse_from<T: Parser>(argv: Vec<OsString>) -> Result<T, clap::Error> {
    let mut command = T::command().args_override_self(true);
    let mut matches = command.try_get_matches_from_mut(argv)?;
    T::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut command))
}

/// One line naming the variable and the value that was refused. The value of an argument
/// marked `hide_env_values` (a secret, a URL with a password) is left out: the line ends
/// up in logs.
pub fn describe(e: &clap::Error, command: &clap::Command) -> String {
    let context = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    let variable = context(ContextKind::InvalidArg).map(|arg| variable_of(&arg));
    let cause = std::error::Error::source(e).map(|s| s.to_string());
    let conflicting = match e.get(ContextKind::PriorArg) {
        Some(ContextValue::String(s)) => Some(variable_of(s)),
        Some(ContextValue::Strings(v)) => v.first().map(|s| variable_of(s)),
        _ => None,
    };
    if let (ErrorKind::ArgumentConflict, Some(var), Some(other)) =
        (e.kind(), variable.as_ref(), conflicting)
    {
        return format!("invalid configuration: {var} and {other} are both set: set only one");
    }
    match (variable, context(ContextKind::InvalidValue)) {
        (Some(var), Some(_)) if is_hidden(command, &var) => format!(
            "invalid configuration: {var} is not valid{}",
            cause.map(|c| format!(": {c}")).unwrap_or_default()
        ),
        (Some(var), Some(value)) => format!(
            "invalid configuration: {var}={value:?} is not valid{}",
            cause.map(|c| format!(": {c}")).unwrap_or_default()
        ),
        _ => format!(
            "invalid configuration: {}",
            e.to_string()
                .lines()
                .next()
                .unwrap_or("unknown error")
                .trim_start_matches("error: ")
        ),
    }
}

/// clap renders an argument as `--nats-url <NATS_URL>`; the value name is the variable.
fn variable_of(arg: &str) -> String {
    arg.split_once('<')
        .and_then(|(_, rest)| rest.strip_suffix('>'))
        .unwrap_or(arg)
        .to_owned()
}

/// Whether the argument named `variable` (its environment variable, or its value name in
/// `describe`'s rendering) keeps its value out of messages.
fn is_hidden(command: &clap::Command, variable: &str) -> bool {
    command.get_arguments().any(|arg| {
        let named = arg.get_env().is_some_and(|env| env == variable)
            || arg
                .get_value_names()
                .is_some_and(|names| names.iter().any(|n| n == variable));
        named && arg.is_hide_env_values_set()
    })
}

/// Log format chosen by `LOG_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (production).
    Json,
    /// Human-readable lines.
    Text,
}

/// Validates a PostgreSQL URL early, so a typo stops the program at start.
/// Its `sslmode` and `sslrootcert` too (`crate::db::Target`): a root certificate that
/// cannot be read stops the program here.
pub fn postgres_url(s: &str) -> Result<PostgresUrl, String> {
    // The causes too: "not a valid URL" alone would not say what is wrong.
    crate::db::Target::parse(s)
        .map(|_| PostgresUrl(s.to_owned()))
        .map_err(|e| crate::error::error_text(&e))
}

/// A PostgreSQL connection string as configured (`DATABASE_URL`, ...). It may hold a
/// password, so `Debug` shows it redacted ([`redacted_postgres_url`]): a configuration
/// printed with `{:?}` cannot leak it. The text itself is `as_str()` (or `Deref`).
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl(String);

impl PostgresUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for PostgresUrl {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", redacted_postgres_url(&self.0))
    }
}

/// A PostgreSQL connection string with its password replaced by `***`: the user
/// information of a URL (`postgres://user:***@host/db`) and its `password` parameter. A
/// `key=value` string naming a password is not shown at all (its quoting rules make a
/// partial redaction easy to get wrong).
pub fn redacted_postgres_url(s: &str) -> String {
    let Some((scheme, rest)) = s.split_once("://") else {
        return if s.contains("password") {
            "<key=value connection string with a password>".to_owned()
        } else {
            s.to_owned()
        };
    };
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{hosts}"),
            None => format!("{userinfo}@{hosts}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some(("password", _)) => "password=***".to_owned(),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", pairs.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// Validates a comma-separated list of NATS URLs (`nats://[user:password@]host:port`).
/// A message names a URL with its password replaced by `***`.
pub fn nats_urls(s: &str) -> Result<String, String> {
    for url in s.split(',') {
        let url = url.trim();
        let shown = crate::stream::redacted(url);
        let rest = url
            .strip_prefix("nats://")
            .or_else(|| url.strip_prefix("tls://"))
            .unwrap_or(url);
        let host_port = rest.rsplit('@').next().unwrap_or(rest);
        let (host, port) = host_port
            .rsplit_once(':')
            .ok_or_else(|| format!("{shown:?} has no port (expected nats://host:port)"))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(format!("{shown:?} is not nats://host:port"));
        }
    }
    Ok(s.to_owned())
}

/// Validates an OTLP/gRPC endpoint: `http://host:port` (a path is refused: gRPC has none).
/// `https` is refused too: no TLS stack is compiled in, so a collector is reached over plain
/// HTTP/2 on a trusted network (a sidecar or the same host). Empty is accepted and means
/// unset, as OpenTelemetry specifies for its variables (`OTEL_X: ${OTEL_X:-}` in compose).
pub fn otlp_endpoint(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Ok(String::new());
    }
    let uri: axum::http::Uri = s.parse().map_err(|e| format!("not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err("https is not supported (no TLS built in); use http://".into()),
        _ => return Err("expected http://host:port".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("has no host (expected http://host:port)".into());
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err("a gRPC endpoint has no path (expected http://host:port)".into());
    }
    Ok(s.to_owned())
}

/// A positive integer (sizes, counts).
pub fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be greater than 0".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Parser)]
    struct Sample {
        #[arg(long, env = "SAMPLE_PORT_X", default_value_t = 1)]
        port: u16,
        #[arg(long, env = "SAMPLE_DB_X", default_value = "postgres://x@h/db", value_parser = postgres_url)]
        database_url: PostgresUrl,
        #[arg(long, env = "SAMPLE_NATS_X", default_value = "nats://127.0.0.1:4222", value_parser = nats_urls)]
        nats_url: String,
        #[arg(long, env = "SAMPLE_SIZE_X", default_value = "1", value_parser = positive)]
        max_body_bytes: usize,
        #[arg(long, env = "SAMPLE_SECRET_X", hide_env_values = true,
              value_parser = crate::secret::keys, conflicts_with = "sample_secret_file")]
        sample_secret: Option<crate::secret::Keys>,
        #[arg(long, env = "SAMPLE_SECRET_FILE_X", value_parser = crate::secret::keys_from_file)]
        sample_secret_file: Option<crate::secret::Keys>,
    }

    fn error_of(args: &[&str]) -> String {
        let mut argv = vec!["sample"];
        argv.extend_from_slice(args);
        match Sample::try_parse_from(argv) {
            Ok(s) => panic!("accepted {s:?}"),
            Err(e) => describe(&e, &<Sample as clap::CommandFactory>::command()),
        }
    }

    #[test]
    fn a_refused_secret_is_named_without_its_value() {
        let msg = error_of(&[
            "--sample-secret",
            "change-me-but-long-enough-to-pass-the-length",
        ]);
        assert_eq!(
            msg,
            "invalid configuration: SAMPLE_SECRET is not valid: the secret is a placeholder \
             (it contains \"change-me\"): set a real secret"
        );
    }

    #[test]
    fn a_secret_and_its_file_together_are_one_line_naming_both() {
        let secret = "0123456789abcdef0123456789abcdef";
        let msg = error_of(&[
            "--sample-secret",
            secret,
            "--sample-secret-file",
            "/nonexistent",
        ]);
        assert!(msg.contains("cannot be read"), "{msg}");
        let dir = std::env::temp_dir().join(format!("config-test-{}", std::process::id()));
        let file = dir.join("secret");
        let written = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&file, secret));
        assert!(written.is_ok(), "{written:?}");
        let file = file.to_string_lossy().into_owned();
        let msg = error_of(&["--sample-secret", secret, "--sample-secret-file", &file]);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            msg == "invalid configuration: SAMPLE_SECRET and SAMPLE_SECRET_FILE are both set: set only one"
                || msg
                    == "invalid configuration: SAMPLE_SECRET_FILE and SAMPLE_SECRET are both set: set only one",
            "{msg}"
        );
        assert!(!msg.contains(secret));
    }

    #[test]
    fn a_bad_value_is_one_line_naming_the_variable() {
        let msg = error_of(&["--port=-5"]);
        assert!(
            msg.starts_with("invalid configuration: PORT=\"-5\""),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
        let msg = error_of(&["--max-body-bytes", "0"]);
        assert!(
            msg.contains("MAX_BODY_BYTES=\"0\"") && msg.contains("greater than 0"),
            "{msg}"
        );
        let msg = error_of(&["--nats-url", "nats://a:1,b"]);
        assert!(
            msg.contains("NATS_URL=") && msg.contains("no port"),
            "{msg}"
        );
        let msg = error_of(&["--database-url", "postgres://u@h:notaport/db"]);
        assert!(msg.contains("DATABASE_URL="), "{msg}");
    }

    #[test]
    fn a_postgres_url_shows_no_password_in_debug() {
        for (url, shown) in [
            (
                "postgres://app:s3cret@db:5432/events?sslmode=require",
                "postgres://app:***@db:5432/events?sslmode=require",
            ),
            (
                "postgresql://app:p@ss@db/events",
                "postgresql://app:***@db/events",
            ),
            (
                "postgres://app@db/events?password=s3cret&sslmode=disable",
                "postgres://app@db/events?password=***&sslmode=disable",
            ),
            ("postgres://app@db/events", "postgres://app@db/events"),
            (
                "host=db user=app password='s3 cret'",
                "<key=value connection string with a password>",
            ),
            ("host=db user=app", "host=db user=app"),
        ] {
            assert_eq!(redacted_postgres_url(url), shown);
        }
        let parsed = postgres_url("postgres://app:s3cret@db/events");
        let debug = format!("{parsed:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert_eq!(
            parsed.as_ref().map(|url| url.as_str()),
            Ok("postgres://app:s3cret@db/events")
        );
    }

    #[test]
    fn otlp_endpoints_must_be_plain_http_without_a_path() {
        for good in [
            "http://127.0.0.1:4317",
            "http://collector:4317/",
            "http://otel",
        ] {
            assert_eq!(otlp_endpoint(good).as_deref(), Ok(good), "{good}");
        }
        assert_eq!(otlp_endpoint("").as_deref(), Ok(""), "empty means unset");
        for (bad, why) in [
            ("https://collector:4317", "no TLS"),
            ("collector:4317", "expected http://"),
            ("http://collector:4318/v1/traces", "no path"),
            ("http://", "not a URL"),
            ("http://:4317", "no host"),
            ("not a url", "not a URL"),
        ] {
            let error = otlp_endpoint(bad).err().unwrap_or_default();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }

    #[test]
    fn good_values_parse() {
        let s = Sample::try_parse_from(["s", "--nats-url", "nats://a:1, nats://b:2"]);
        assert!(s.is_ok(), "{s:?}");
    }

    #[derive(Debug, Parser)]
    #[command(mut_arg("port", default_port("3009")))]
    struct Service {
        #[command(flatten)]
        service: ServiceArgs,
    }

    #[test]
    fn a_service_gives_its_port_default_and_shares_the_rest() -> Result<(), clap::Error> {
        let parsed = Service::try_parse_from(["service"])?;
        assert_eq!(
            parsed.service,
            ServiceArgs {
                host: IpAddr::from([0, 0, 0, 0]),
                port: 3009,
                shutdown_timeout: Duration::from_secs(30),
                rust_log: "info".into(),
                log_format: LogFormat::Json,
            }
        );
        let usage = <Service as clap::CommandFactory>::command()
            .render_usage()
            .to_string();
        assert!(!usage.contains("--port"), "PORT is not required: {usage}");
        let parsed = Service::try_parse_from(["service", "--shutdown-timeout", "1m30s"])?;
        assert_eq!(parsed.service.shutdown_timeout, Duration::from_secs(90));
        Ok(())
    }
}
