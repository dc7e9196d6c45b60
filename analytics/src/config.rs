//! Configuration of the analytics service (`docs/operations.md`); `analytics --help` lists it.

use service_kit::config::{
    PostgresUrl, ServiceArgs, default_port, duration, positive, positive_duration, postgres_url,
};
use service_kit::secret::{self, Keys};
use std::time::Duration;

/// Every setting of the analytics service, from environment variables.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "analytics",
    version,
    about = "Read-only reporting API over PostgreSQL",
    mut_arg("port", default_port("3002"))
)]
pub struct Config {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub service: ServiceArgs,
    #[command(flatten)]
    pub http: service_kit::http::HttpArgs,
    /// The primary database (used when no read replica is given).
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/events",
          value_parser = postgres_url, hide_env_values = true)]
    pub database_url: PostgresUrl,
    /// A read replica to query instead of the primary.
    #[arg(long, env = "DATABASE_READ_URL", value_parser = postgres_url, hide_env_values = true)]
    pub database_read_url: Option<PostgresUrl>,
    /// How far a standby at DATABASE_READ_URL may replay behind its primary before
    /// readiness fails (the check `replica`), as `30s`; 0 = no limit.
    #[arg(long, env = "ANALYTICS_MAX_REPLICA_LAG", default_value = "30s", value_parser = duration)]
    pub analytics_max_replica_lag: Duration,
    /// Most database connections.
    #[arg(long, env = "DB_POOL_MAX", default_value = "8", value_parser = positive)]
    pub db_pool_max: usize,
    /// Connections opened at start-up.
    #[arg(long, env = "DB_POOL_MIN", default_value = "1")]
    pub db_pool_min: usize,
    /// How long a report query may run before it is cancelled (503), as `10s`.
    #[arg(long, env = "DB_STATEMENT_TIMEOUT", default_value = "10s",
          value_parser = positive_duration)]
    pub db_statement_timeout: Duration,
    /// Bearer keys, comma-separated (at least 32 bytes each): when set, reports need
    /// `Authorization: Bearer <one of them>`. Unset means open reports; empty, short or
    /// `change-me` values stop the service at start.
    #[arg(long, env = "ANALYTICS_API_KEY", hide_env_values = true,
          value_parser = secret::keys, conflicts_with = "analytics_api_key_file")]
    pub analytics_api_key: Option<Keys>,
    /// A file holding `ANALYTICS_API_KEY` (a container secret, `/run/secrets/...`).
    #[arg(long, env = "ANALYTICS_API_KEY_FILE", value_parser = secret::keys_from_file)]
    pub analytics_api_key_file: Option<Keys>,
    /// Report requests per second from one client (its API key, or its address when no
    /// key is configured), 429 beyond; 0 = no limit.
    #[arg(long, env = "ANALYTICS_RATE_LIMIT_PER_SEC", default_value_t = 50)]
    pub analytics_rate_limit_per_sec: u32,
    /// Requests one client may send at once above its rate; default: one second's worth.
    #[arg(long, env = "ANALYTICS_RATE_LIMIT_BURST",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub analytics_rate_limit_burst: Option<u32>,
    /// Proxies of your own in front of analytics that append the client's address to
    /// `X-Forwarded-For`: without API keys, clients are then limited by that address
    /// instead of the proxy's. 0 (default) trusts no header. Set it only when every request
    /// comes through those proxies, or clients can name any address.
    #[arg(long, env = "TRUSTED_PROXY_HOPS", default_value_t = 0)]
    pub trusted_proxy_hops: usize,
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
    /// The database reports read from: the replica when given, else the primary.
    pub fn read_url(&self) -> &str {
        self.database_read_url
            .as_deref()
            .unwrap_or(self.database_url.as_str())
    }

    /// The replica lag beyond which analytics is not ready; `None`: no limit.
    pub fn max_replica_lag(&self) -> Option<Duration> {
        Some(self.analytics_max_replica_lag).filter(|lag| !lag.is_zero())
    }

    /// The bearer keys, from `ANALYTICS_API_KEY` or `ANALYTICS_API_KEY_FILE` (never both).
    pub fn api_keys(&self) -> Option<&Keys> {
        self.analytics_api_key
            .as_ref()
            .or(self.analytics_api_key_file.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_printed_for_debugging_shows_no_password_or_key() {
        let key = "an-analytics-api-key-of-at-least-32-bytes";
        let config = <Config as clap::Parser>::try_parse_from([
            "analytics",
            "--database-url=postgres://events_analytics:reader-pw-1@db/events",
            "--database-read-url=postgres://events_analytics:replica-pw-2@replica/events",
            &format!("--analytics-api-key={key}"),
        ]);
        let shown = format!("{config:?}");
        assert!(shown.contains("events_analytics:***@db"), "{shown}");
        for secret in ["reader-pw-1", "replica-pw-2", key] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }
}
