//! Building the service (bound listener, NATS, routes) and running it until stopped.

use crate::api_doc;
use crate::coalesce::{self, Coalescer, pack::Limits};
use crate::config::Config;
use crate::correlation;
use crate::publish::Publisher;
use crate::routes::webhook::{EventCounters, WebhookState, receive};
use axum::Router;
use axum::routing::post;
use service_kit::health::{self, Check, Readiness};
use service_kit::stream::{self, StreamArgs};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;

/// A built ingestion service, listening but not yet serving.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    router: Router,
    http: service_kit::http::HttpArgs,
    client: async_nats::Client,
    /// Ends once the server has stopped and every message is answered.
    coalescing: coalesce::Task,
    background: Vec<tokio::task::JoinHandle<()>>,
}

/// Binds the port, connects to NATS (retrying in the background if it is down) and
/// starts keeping the stream verified.
pub async fn build(config: Config) -> anyhow::Result<App> {
    let metrics = service_kit::metrics::install();
    let nats = stream::connect(&config.stream, "ingestion").await?;
    let client = nats.client.clone();
    let js = stream::jetstream(client.clone(), config.nats_publish_timeout);
    let stream_ready = Arc::new(AtomicBool::new(false));
    let mut background = vec![
        tokio::spawn(keep_stream(
            js.clone(),
            config.stream.clone(),
            stream_ready.clone(),
        )),
        service_kit::metrics::spawn_upkeep(metrics.clone()),
    ];

    let publisher = Publisher {
        client: client.clone(),
        js: js.clone(),
        stream_ready: stream_ready.clone(),
        timeout: config.nats_publish_timeout,
        batch_subject: format!("{}.batch", config.stream.nats_subject_prefix),
    };
    // After `metrics::install()`: the coalescer registers its metrics.
    let (coalescer, coalescing) = Coalescer::start(publisher, coalescing(&config));
    let state = Arc::new(WebhookState {
        coalescer,
        subject_prefix: config.stream.nats_subject_prefix.clone(),
        max_body_bytes: config.http_max_body_bytes,
        signatures: signature_check(&config),
        limits: producer_limits(&config),
        // After `metrics::install()` above: a handle registered before the recorder
        // would count into nothing.
        counters: EventCounters::register(),
    });
    background.push(service_kit::ratelimit::spawn_upkeep({
        let state = state.clone();
        move || state.limits.forget_idle()
    }));
    let readiness = readiness(nats, js, config.stream.nats_stream.clone(), stream_ready);
    background.push(health::spawn_readiness_gauges(
        "ingestion",
        readiness.clone(),
    ));
    let api = Router::new()
        .route("/webhook/event", post(receive))
        .route("/webhook", post(receive))
        .with_state(state)
        .merge(api_doc::routes());
    let router =
        service_kit::http::instrument(api.merge(health::routes(readiness, metrics)), "ingestion")
            .layer(axum::middleware::from_fn(correlation::middleware));

    let listener = TcpListener::bind((config.service.host, config.service.port)).await?;
    Ok(App {
        listener,
        router,
        http: config.http,
        client,
        coalescing,
        background,
    })
}

impl App {
    /// The port actually bound (useful with `PORT=0`).
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `shutdown` resolves, then answers the requests already received
    /// (at most `drain` longer: their messages are sent and their PubAcks awaited) and
    /// flushes what is buffered for NATS.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        drain: Duration,
    ) -> anyhow::Result<()> {
        service_kit::http::serve_with_drain(self.listener, self.router, self.http, shutdown, drain)
            .await?;
        // No request is received any more: the coalescer sends what it still holds and
        // answers it, so a request that got its events in gets 202 or 503, never nothing.
        self.coalescing
            .stop(drain.max(Duration::from_secs(5)))
            .await;
        if let Err(error) = tokio::time::timeout(Duration::from_secs(5), self.client.flush()).await
        {
            tracing::warn!(%error, "NATS flush timed out");
        }
        for task in self.background {
            task.abort();
        }
        tracing::info!("Ingestion stopped");
        Ok(())
    }
}

/// The coalescer's settings. The size limit is also bounded, message by message, by what
/// the server takes (its `max_payload`, known once connected).
fn coalescing(config: &Config) -> coalesce::Settings {
    coalesce::Settings {
        limits: Limits {
            max_events: config.nats_message_max_events,
            max_bytes: config.nats_message_max_bytes,
        },
        linger: config.nats_message_linger,
    }
}

/// The signature check, after `metrics::install()` (it registers counters). Without keys
/// there is none, and the start says so loudly: anyone who reaches the port can post.
fn signature_check(config: &Config) -> Option<crate::signature::Verifier> {
    match config.webhook_keys() {
        Some(keys) => {
            tracing::info!(key_ids = %keys.ids(), "Webhook signatures required");
            Some(crate::signature::Verifier::new(keys.clone()))
        }
        None => {
            tracing::warn!("WEBHOOK_SECRET is unset: no signature check, anyone can post events");
            None
        }
    }
}

/// The rate limits per producer, after `metrics::install()` (they register a counter),
/// keyed by signing key when requests are signed, else by address. Logged at start, as
/// their absence is.
fn producer_limits(config: &Config) -> crate::ratelimit::ProducerLimits {
    let limits = crate::ratelimit::ProducerLimits::new(config, config.webhook_keys());
    let (events, bytes) = limits.quotas();
    let per_producer = if config.webhook_keys().is_some() {
        "signing key"
    } else {
        "client address"
    };
    if events.is_none() && bytes.is_none() {
        tracing::warn!(
            "RATE_LIMIT_EVENTS_PER_SEC and RATE_LIMIT_BYTES_PER_SEC are 0: no rate limit, \
             one producer can take the whole pipeline"
        );
    } else {
        tracing::info!(
            per = per_producer,
            events_per_sec = events.map(|q| q.per_sec.get()),
            events_burst = events.map(|q| q.burst.get()),
            bytes_per_sec = bytes.map(|q| q.per_sec.get()),
            bytes_burst = bytes.map(|q| q.burst.get()),
            trusted_proxy_hops = config.trusted_proxy_hops,
            "Rate limits per producer"
        );
    }
    limits
}

/// Creates or verifies the stream now and whenever it is found missing, backing off
/// while NATS is unreachable.
async fn keep_stream(js: async_nats::jetstream::Context, args: StreamArgs, ready: Arc<AtomicBool>) {
    let mut backoff = Duration::from_millis(250);
    loop {
        match stream::ensure_stream(&js, &args).await {
            Ok(()) => {
                if !ready.swap(true, Ordering::Relaxed) {
                    tracing::info!(stream = %args.nats_stream, "Stream verified");
                }
                backoff = Duration::from_millis(250);
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            Err(error) => {
                let error = service_kit::error::error_text(&error);
                tracing::warn!(%error, retry_in = ?backoff, "Stream not verified");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

fn readiness(
    nats: stream::Nats,
    js: async_nats::jetstream::Context,
    stream_name: String,
    stream_ready: Arc<AtomicBool>,
) -> Readiness {
    Arc::new(move || {
        let (nats, js, stream_name, stream_ready) = (
            nats.clone(),
            js.clone(),
            stream_name.clone(),
            stream_ready.clone(),
        );
        Box::pin(async move {
            let connection = nats.check();
            if !connection.ready {
                return vec![
                    connection,
                    Check::failed("stream", "unknown while NATS is disconnected"),
                ];
            }
            let stream = match js.get_stream(&stream_name).await {
                Ok(_) if stream_ready.load(Ordering::Relaxed) => Check::ok("stream"),
                Ok(_) => Check::failed("stream", "stream settings not verified yet"),
                Err(e) => Check::failed("stream", format!("stream {stream_name}: {e}")),
            };
            vec![Check::ok("nats"), stream]
        })
    })
}
