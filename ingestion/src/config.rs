//! Configuration of the ingestion service (`docs/operations.md`); `ingestion --help` lists it.

use service_kit::config::{ServiceArgs, default_port, duration, positive, positive_duration};
use service_kit::secret::{self, Keys};
use service_kit::stream::StreamArgs;
use service_kit::telemetry::TraceArgs;
use std::time::Duration;

/// Every setting of the ingestion service, from environment variables.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "ingestion",
    version,
    about = "HTTP webhook: validate events, publish them to JetStream",
    mut_arg("port", default_port("3001"))
)]
pub struct Config {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub service: ServiceArgs,
    #[command(flatten)]
    pub http: service_kit::http::HttpArgs,
    #[command(flatten)]
    pub stream: StreamArgs,
    /// Largest accepted request body, in bytes (413 beyond).
    #[arg(long, env = "HTTP_MAX_BODY_BYTES", default_value = "2097152", value_parser = positive)]
    pub http_max_body_bytes: usize,
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
    /// worth. Never less than HTTP_MAX_BODY_BYTES, so that any valid request can pass.
    #[arg(long, env = "RATE_LIMIT_BYTES_BURST",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_bytes_burst: Option<u32>,
    /// Proxies of your own in front of ingestion that append the client's address to
    /// `X-Forwarded-For`: unsigned requests are then limited by that address instead of
    /// the proxy's. 0 (default) trusts no header. Set it only when every request comes
    /// through those proxies, or clients can name any address.
    #[arg(long, env = "TRUSTED_PROXY_HOPS", default_value_t = 0)]
    pub trusted_proxy_hops: usize,
    /// How long to wait for the PubAcks of one request before answering 503 (`5s`).
    #[arg(long, env = "NATS_PUBLISH_TIMEOUT", default_value = "5s",
          value_parser = positive_duration)]
    pub nats_publish_timeout: Duration,
    /// Most events in one JetStream message: the events of one request and of concurrent
    /// requests share messages (docs/operations.md, "Coalescing").
    #[arg(long, env = "NATS_MESSAGE_MAX_EVENTS", default_value = "100", value_parser = positive)]
    pub nats_message_max_events: usize,
    /// Most bytes in one multi-event message's payload; never more than the server's
    /// `max_payload` less the headers' allowance, whichever is less.
    #[arg(long, env = "NATS_MESSAGE_MAX_BYTES", default_value = "262144",
          value_parser = positive)]
    pub nats_message_max_bytes: usize,
    /// Longest a message waits for more events after its first (`0`: send what has
    /// arrived at once, without waiting).
    #[arg(long, env = "NATS_MESSAGE_LINGER", default_value = "1ms", value_parser = duration)]
    pub nats_message_linger: Duration,
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
