//! The `EVENTS` stream: its settings (shared by ingestion and worker, which both
//! create-or-verify it at start-up) and the NATS connection.

use async_nats::header::HeaderName;
use async_nats::jetstream::{self, stream};
use std::time::Duration;

/// Message header carrying the request's correlation id from ingestion to the worker's
/// logs and the DLQ. (Constant `HeaderName`s: naming a header by `&str` validates and
/// copies the name on every use.)
pub const CORRELATION_HEADER: HeaderName = HeaderName::from_static("X-Correlation-ID");
/// Message header carrying when ingestion accepted the event (unix nanoseconds), for the
/// worker's ingest-to-commit latency.
pub const INGESTED_AT_HEADER: HeaderName = HeaderName::from_static("Ingested-At");

/// NATS and stream settings, from the environment (`runtime.md`).
#[derive(Debug, Clone, clap::Args)]
pub struct StreamArgs {
    /// NATS server URL(s), comma-separated for a cluster.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222",
          value_parser = crate::config::nats_urls)]
    pub nats_url: String,
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
    /// Seconds within which a re-sent eventId is recognised by the broker (`Nats-Msg-Id`).
    /// Later duplicates are still stored once, by the database's unique key.
    #[arg(long, env = "NATS_DUPLICATE_WINDOW_SECS", default_value = "120",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub nats_duplicate_window_secs: u64,
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
            duplicate_window: Duration::from_secs(self.nats_duplicate_window_secs),
            num_replicas: self.nats_stream_replicas,
            description: Some("Validated marketing events awaiting storage".into()),
            ..Default::default()
        }
    }
}

/// Connects to NATS without failing when it is down: the client keeps retrying in the
/// background (start-up and later drops alike) and readiness reports the state.
pub async fn connect(args: &StreamArgs, name: &str) -> Result<async_nats::Client, String> {
    let urls: Vec<async_nats::ServerAddr> = args
        .nats_url
        .split(',')
        .map(|u| {
            u.trim()
                .parse::<async_nats::ServerAddr>()
                .map_err(|e| format!("NATS_URL {u:?}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(2))
        .ping_interval(Duration::from_secs(10))
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("Connected to NATS"),
                async_nats::Event::Disconnected => tracing::warn!("Disconnected from NATS"),
                other => tracing::info!(event = %other, "NATS event"),
            }
        })
        .connect(urls)
        .await
        .map_err(|e| format!("cannot connect to NATS: {e}"))
}

/// A JetStream context whose API requests and publish acks time out after `timeout`.
pub fn jetstream(client: async_nats::Client, timeout: Duration) -> jetstream::Context {
    jetstream::context::ContextBuilder::new()
        .timeout(timeout)
        .build(client)
}

/// Creates the stream, or verifies an existing one and updates what may change (limits,
/// duplicate window, replicas). Fails when it exists with a retention or storage we cannot
/// run on, since those cannot be changed in place.
pub async fn ensure_stream(js: &jetstream::Context, args: &StreamArgs) -> Result<(), String> {
    let wanted = args.stream_config();
    match js.get_stream(&wanted.name).await {
        Ok(mut existing) => {
            let info = existing
                .info()
                .await
                .map_err(|e| format!("cannot read stream {}: {e}", wanted.name))?;
            let have = &info.config;
            if have.retention != wanted.retention || have.storage != wanted.storage {
                return Err(format!(
                    "stream {} exists with retention {:?} and storage {:?}; \
                     work-queue retention on file storage is required",
                    wanted.name, have.retention, have.storage
                ));
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
                    .map_err(|e| format!("cannot update stream {}: {e}", wanted.name))?;
            }
            Ok(())
        }
        Err(e)
            if matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(ref api)
                    if api.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            js.create_stream(wanted.clone())
                .await
                .map(|_| tracing::info!(stream = %wanted.name, "Created stream"))
                .map_err(|e| format!("cannot create stream {}: {e}", wanted.name))
        }
        Err(e) => Err(format!("cannot look up stream {}: {e}", wanted.name)),
    }
}
