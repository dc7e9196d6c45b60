//! Configuration of the ingestion service (`docs/operations.md`); `ingestion --help` lists it.

use service_kit::config::{LogFormat, positive};
use service_kit::secret::{self, Keys};
use service_kit::stream::StreamArgs;
use service_kit::telemetry::TraceArgs;
use std::net::IpAddr;
use std::time::Duration;

/// Every setting of the ingestion service, from environment variables.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "ingestion",
    version,
    about = "HTTP webhook: validate events, publish them to JetStream"
)]
pub struct Config {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "PORT", default_value_t = 3001)]
    pub port: u16,
    #[command(flatten)]
    pub http: service_kit::http::HttpArgs,
    #[command(flatten)]
    pub stream: StreamArgs,
    /// Largest accepted request body, in bytes (413 beyond).
    #[arg(long, env = "MAX_BODY_BYTES", default_value = "2097152", value_parser = positive)]
    pub max_body_bytes: usize,
    /// Secrets that sign requests (docs/api.md, "Signatures"), comma-separated: each plain
    /// (at least 32 bytes) or a Standard Webhooks `whsec_<base64>` key. Unset means no
    /// signature check; empty, short or `change-me` values stop the service at start.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true,
          value_parser = secret::signing_keys, conflicts_with = "webhook_secret_file")]
    pub webhook_secret: Option<Keys>,
    /// A file holding `WEBHOOK_SECRET` (a container secret, `/run/secrets/...`).
    #[arg(long, env = "WEBHOOK_SECRET_FILE", value_parser = secret::signing_keys_from_file)]
    pub webhook_secret_file: Option<Keys>,
    /// Events accepted per second from one producer (its signing key, or its address
    /// when requests are not signed), 429 beyond; 0 = no limit.
    #[arg(long, env = "RATE_LIMIT_EVENTS_PER_SEC", default_value_t = 5000)]
    pub rate_limit_events_per_sec: u32,
    /// Events one producer may send at once above its rate; default: one second's worth.
    /// Never less than 1000 (one full batch), so that any valid request can pass.
    #[arg(long, env = "RATE_LIMIT_BURST", value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_burst: Option<u32>,
    /// Request body bytes accepted per second from one producer, 429 beyond; 0 = no
    /// limit.
    #[arg(long, env = "RATE_LIMIT_BYTES_PER_SEC", default_value_t = 10 * 1024 * 1024)]
    pub rate_limit_bytes_per_sec: u32,
    /// Body bytes one producer may send at once above its rate; default: one second's
    /// worth. Never less than MAX_BODY_BYTES, so that any valid request can pass.
    #[arg(long, env = "RATE_LIMIT_BYTES_BURST",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_bytes_burst: Option<u32>,
    /// Proxies of your own in front of ingestion that append the client's address to
    /// `X-Forwarded-For`: unsigned requests are then limited by that address instead of
    /// the proxy's. 0 (default) trusts no header. Set it only when every request comes
    /// through those proxies, or clients can name any address.
    #[arg(long, env = "TRUSTED_PROXY_HOPS", default_value_t = 0)]
    pub trusted_proxy_hops: usize,
    /// Milliseconds to wait for the PubAcks of one request before answering 503.
    #[arg(long, env = "PUBLISH_TIMEOUT_MS", default_value = "5000",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub publish_timeout_ms: u64,
    /// Seconds a graceful shutdown may take before the process exits anyway.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECS", default_value = "30",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub shutdown_timeout_secs: u64,
    /// Log filter (`info`, `ingestion=debug,info`).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub rust_log: String,
    /// `json` (production) or `text`.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub traces: TraceArgs,
}

/// What the binary does instead of serving (without one, it serves).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Exit 0 when the service running here is ready, else 1 (the container's health check).
    ///
    /// Asks /health/readiness at this environment's HOST and PORT (127.0.0.1 when HOST
    /// is 0.0.0.0) and prints one line; the runtime image has no curl.
    Healthcheck(service_kit::health::HealthcheckArgs),
}

impl Config {
    /// The signing keys, from `WEBHOOK_SECRET` or `WEBHOOK_SECRET_FILE` (never both).
    pub fn webhook_keys(&self) -> Option<&Keys> {
        self.webhook_secret
            .as_ref()
            .or(self.webhook_secret_file.as_ref())
    }

    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_printed_for_debugging_shows_no_password_or_secret() {
        let plain = "a-plain-webhook-secret-of-at-least-32-bytes";
        let standard = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let config = <Config as clap::Parser>::try_parse_from([
            "ingestion",
            "--nats-url=nats://app:nats-pw-1@nats:4222",
            &format!("--webhook-secret={plain},{standard}"),
        ]);
        let shown = format!("{config:?}");
        assert!(shown.contains("app:***@nats"), "{shown}");
        for secret in [
            "nats-pw-1",
            plain,
            standard,
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }
}
