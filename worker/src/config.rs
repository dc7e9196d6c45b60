//! Configuration of the worker (`docs/operations.md`); `worker --help` lists it.

use service_kit::config::{
    PostgresUrl, ServiceArgs, default_port, duration, positive, positive_duration, postgres_url,
};
use service_kit::stream::StreamArgs;
use service_kit::telemetry::TraceArgs;
use std::time::Duration;

/// Every setting of the worker, from environment variables.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "worker",
    version,
    about = "JetStream consumer: store events in PostgreSQL exactly once",
    mut_arg("port", default_port("3003"))
)]
pub struct Config {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Where the health and metrics endpoint listens, the shutdown timeout, the logs.
    #[command(flatten)]
    pub service: ServiceArgs,
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
    #[arg(long, env = "WORKER_BATCH_SIZE", default_value = "1000", value_parser = positive)]
    pub worker_batch_size: usize,
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
    /// How long JetStream waits for an ack before redelivering to another worker (`30s`).
    #[arg(long, env = "NATS_ACK_WAIT", default_value = "30s", value_parser = positive_duration)]
    pub nats_ack_wait: Duration,
    /// The dead-letter stream (subjects `dlq.<original subject>`).
    #[arg(long, env = "NATS_DLQ_STREAM", default_value = "EVENTS_DLQ")]
    pub nats_dlq_stream: String,
    /// How long a dead letter is kept before the broker drops it (`30d`, `12h`, `90m`;
    /// `0` keeps it until purged). Applied to an existing DLQ stream at start-up.
    #[arg(long, env = "NATS_DLQ_MAX_AGE", default_value = "30d", value_parser = duration)]
    pub nats_dlq_max_age: Duration,
    /// How long a pull waits to fill a batch when traffic is light (latency bound, `50ms`).
    #[arg(long, env = "WORKER_BATCH_LINGER", default_value = "50ms",
          value_parser = positive_duration)]
    pub worker_batch_linger: Duration,
    /// Batches inserted concurrently by this process.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value = "3", value_parser = positive)]
    pub worker_concurrency: usize,
    /// Time between compaction rounds (`2s`): each builds the per-user sets of the hours
    /// written since, once those hours have ended (reports read them raw until then).
    #[arg(long, env = "WORKER_COMPACT_INTERVAL", default_value = "2s",
          value_parser = positive_duration)]
    pub worker_compact_interval: Duration,
    /// How long PostgreSQL keeps a worker's transaction open while it sends nothing (a
    /// worker hung mid-batch or mid-compaction) before ending the session: its locks, the
    /// rows of a batch and the compaction lock, go to the other replicas. As `60s`.
    #[arg(long, env = "WORKER_IDLE_TRANSACTION_TIMEOUT", default_value = "60s",
          value_parser = positive_duration)]
    pub worker_idle_transaction_timeout: Duration,
    /// Days of raw events kept, counted in whole UTC days before today: older days'
    /// partitions are dropped (their figures stay in the rollups and per-user sets), and
    /// an event older than that is dead-lettered as `expired`. Unset or `0`: keep every
    /// event.
    #[arg(long, env = "EVENTS_RETENTION_DAYS", default_value = "0")]
    pub events_retention_days: u32,
    /// Most database connections.
    #[arg(long, env = "DB_POOL_MAX", default_value = "8", value_parser = positive)]
    pub db_pool_max: usize,
    /// Connections opened at start-up.
    #[arg(long, env = "DB_POOL_MIN", default_value = "2")]
    pub db_pool_min: usize,
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

impl Config {
    /// The raw events' retention, if any.
    pub fn retention(&self) -> Option<crate::partitions::Retention> {
        (self.events_retention_days > 0).then_some(crate::partitions::Retention {
            days: self.events_retention_days,
        })
    }

    /// The connection that may change the schema.
    pub fn migration_url(&self) -> &str {
        self.migration_database_url
            .as_deref()
            .unwrap_or(self.database_url.as_str())
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
}
