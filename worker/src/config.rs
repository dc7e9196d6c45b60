//! Configuration of the worker (`docs/operations.md`); `worker --help` lists it.

use service_kit::config::{LogFormat, PostgresUrl, positive, postgres_url};
use service_kit::stream::StreamArgs;
use service_kit::telemetry::TraceArgs;
use std::net::IpAddr;
use std::time::Duration;

/// Every setting of the worker, from environment variables.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "worker",
    version,
    about = "JetStream consumer: store events in PostgreSQL exactly once"
)]
pub struct Config {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Address of the health and metrics endpoint.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,
    /// Port of the health and metrics endpoint (0 picks a free one).
    #[arg(long, env = "PORT", default_value_t = 3003)]
    pub port: u16,
    #[command(flatten)]
    pub http: service_kit::http::HttpArgs,
    #[command(flatten)]
    pub stream: StreamArgs,
    /// PostgreSQL the events are stored in, as the role the pipeline runs as (in
    /// production a member of `events_writer`). `sslmode` and `sslrootcert` are honoured.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/events",
          value_parser = postgres_url, hide_env_values = true)]
    pub database_url: PostgresUrl,
    /// The same database as the schema's owner, used only to apply migrations (`worker
    /// migrate`, the start-up migration) and by `worker rebuild-rollups`. Unset:
    /// DATABASE_URL does that too (a local run as the owner).
    #[arg(long, env = "MIGRATION_DATABASE_URL", value_parser = postgres_url, hide_env_values = true)]
    pub migration_database_url: Option<PostgresUrl>,
    /// Apply pending migrations at start-up. `false`: never change the schema; wait, not
    /// ready (`schema` check), until `worker migrate` has applied them.
    #[arg(long, env = "MIGRATE_ON_START", default_value_t = true, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub migrate_on_start: bool,
    /// Durable consumer name, shared by every worker replica.
    #[arg(long, env = "NATS_CONSUMER", default_value = "events-worker")]
    pub nats_consumer: String,
    /// Most events pulled and inserted as one batch (one transaction).
    #[arg(long, env = "NATS_BATCH_SIZE", default_value = "1000", value_parser = positive)]
    pub nats_batch_size: usize,
    /// Most events delivered and not yet acked, across every replica (JetStream's
    /// `max_ack_pending`); bounds memory and redelivery after a crash.
    #[arg(long, env = "NATS_MAX_ACK_PENDING", default_value = "20000", value_parser = positive)]
    pub nats_max_ack_pending: usize,
    /// Deliveries after which a message that keeps failing is dead-lettered. Deliveries
    /// are spent only by failed processing: while the database is down the worker stops
    /// pulling, so an outage does not exhaust them.
    #[arg(long, env = "NATS_MAX_DELIVER", default_value = "10", value_parser = positive)]
    pub nats_max_deliver: usize,
    /// Test failpoint: processing the message whose `Nats-Msg-Id` is this panics, so the
    /// tests can show that a panicking batch holds no other event back. Hidden; never set
    /// in production.
    #[arg(long, env = "WORKER_TEST_PANIC_EVENT_ID", hide = true)]
    pub test_panic_event_id: Option<String>,
    /// Seconds JetStream waits for an ack before redelivering to another worker.
    #[arg(long, env = "NATS_ACK_WAIT_SECS", default_value = "30",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub nats_ack_wait_secs: u64,
    /// The dead-letter stream (subjects `dlq.<original subject>`).
    #[arg(long, env = "NATS_DLQ_STREAM", default_value = "EVENTS_DLQ")]
    pub nats_dlq_stream: String,
    /// How long a dead letter is kept before the broker drops it (`30d`, `12h`, `90m`,
    /// `45s`; `0` keeps it until purged). Applied to an existing DLQ stream at start-up.
    #[arg(long, env = "NATS_DLQ_MAX_AGE", default_value = "30d", value_parser = duration)]
    pub nats_dlq_max_age: Duration,
    /// Milliseconds a pull waits to fill a batch when traffic is light (latency bound).
    #[arg(long, env = "BATCH_LINGER_MS", default_value = "50",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_linger_ms: u64,
    /// Batches inserted concurrently by this process.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value = "3", value_parser = positive)]
    pub worker_concurrency: usize,
    /// Milliseconds between compaction rounds: each builds the per-user sets of the hours
    /// written since, once those hours have ended (reports read them raw until then).
    #[arg(long, env = "COMPACT_INTERVAL_MS", default_value = "2000",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub compact_interval_ms: u64,
    /// Most database connections.
    #[arg(long, env = "DB_POOL_MAX", default_value = "8", value_parser = positive)]
    pub db_pool_max: usize,
    /// Connections opened at start-up.
    #[arg(long, env = "DB_POOL_MIN", default_value = "2")]
    pub db_pool_min: usize,
    /// Seconds a graceful shutdown may take before the process exits anyway.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECS", default_value = "30",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub shutdown_timeout_secs: u64,
    /// Log filter (`info`, `worker=debug,info`).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub rust_log: String,
    /// `json` (production) or `text`.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub traces: TraceArgs,
}

/// One-off maintenance commands (without one, the worker consumes).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Apply pending migrations as MIGRATION_DATABASE_URL (else DATABASE_URL), then exit:
    /// the deploy step before the workers start. Nothing to apply is a success.
    Migrate,
    /// Apply migrations, recompute every rollup and per-user set from the raw `events`
    /// table, then exit. Writers wait while the counts are recomputed. Connects as
    /// MIGRATION_DATABASE_URL (else DATABASE_URL): truncating is the owner's right.
    RebuildRollups,
    /// Inspect, replay and purge dead letters (`NATS_DLQ_STREAM`), then exit.
    #[command(subcommand)]
    Dlq(crate::dlq::admin::DlqCommand),
    /// Exit 0 when the worker running here is ready, else 1 (the container's health check).
    ///
    /// Asks /health/readiness at this environment's HOST and PORT (127.0.0.1 when HOST
    /// is 0.0.0.0) and prints one line; the runtime image has no curl.
    Healthcheck(service_kit::health::HealthcheckArgs),
}

/// A duration as a whole number with a unit: `s`, `m`, `h` or `d` (`0` alone is zero).
pub fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let seconds_per_unit = match unit {
        "s" => Some(1),
        "m" => Some(60),
        "h" => Some(3600),
        "d" => Some(86_400),
        _ => None,
    };
    seconds_per_unit
        .zip(number.parse::<u64>().ok())
        .and_then(|(unit, n)| n.checked_mul(unit))
        .map(Duration::from_secs)
        .ok_or_else(|| format!("expected a duration such as 30d, 12h, 90m or 45s, got {s:?}"))
}

impl Config {
    /// The connection that may change the schema.
    pub fn migration_url(&self) -> &str {
        self.migration_database_url
            .as_deref()
            .unwrap_or(self.database_url.as_str())
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_printed_for_debugging_shows_no_password() {
        let config = <Config as clap::Parser>::try_parse_from([
            "worker",
            "--database-url=postgres://events_worker:writer-pw-1@db/events",
            "--migration-database-url=postgres://owner:owner-pw-2@db/events",
            "--nats-url=nats://app:nats-pw-3@nats:4222",
        ]);
        let shown = format!("{config:?}");
        assert!(shown.contains("events_worker:***@db"), "{shown}");
        for password in ["writer-pw-1", "owner-pw-2", "nats-pw-3"] {
            assert!(!shown.contains(password), "{password} in {shown}");
        }
    }

    #[test]
    fn durations_take_a_whole_number_and_a_unit() {
        assert_eq!(duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(duration("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(duration("90m"), Ok(Duration::from_secs(90 * 60)));
        assert_eq!(duration("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(duration("0"), Ok(Duration::ZERO));
        for bad in ["", "30", "1.5h", "-3d", "7 days", "d"] {
            assert!(duration(bad).is_err(), "{bad:?} is refused");
        }
    }
}
