//! The platform's JetStream: publishing past ingestion, the dead letters, the consumer.

use super::{Platform, parse};
use async_nats::jetstream::{self, consumer::pull, message::PublishMessage};
use futures::StreamExt;
use std::collections::HashMap;

/// The stream settings alone, as a command line.
#[derive(Debug, clap::Parser)]
struct StreamFlags {
    #[command(flatten)]
    stream: service_kit::stream::StreamArgs,
}

/// A dead letter: its payload and its headers (first value of each).
pub type DeadLetter = (Vec<u8>, HashMap<String, String>);

impl Platform {
    /// A JetStream context on a new client.
    pub async fn js(&self) -> anyhow::Result<jetstream::Context> {
        self.nats.jetstream().await
    }

    /// Publishes a payload straight to the events stream (bypassing ingestion), under
    /// `<prefix>.<subject_suffix>` with this message id and the correlation id
    /// `corr-<msg_id>`.
    pub async fn publish_raw(
        &self,
        subject_suffix: &str,
        payload: Vec<u8>,
        msg_id: &str,
    ) -> anyhow::Result<()> {
        let js = self.js().await?;
        let msg = PublishMessage::build()
            .payload(payload.into())
            .message_id(msg_id)
            .header("X-Correlation-ID", format!("corr-{msg_id}").as_str());
        js.send_publish(format!("{}.{subject_suffix}", self.names.prefix), msg)
            .await?
            .await?;
        Ok(())
    }

    /// Creates the events stream as ingestion would (for tests that publish before any
    /// service runs).
    pub async fn create_stream(&self) -> anyhow::Result<()> {
        // Parsed as the services parse theirs, so every other setting is the default.
        let args =
            parse::<StreamFlags>(["stream".to_owned()].into_iter().chain(self.stream_args()))?
                .stream;
        Ok(service_kit::stream::ensure_stream(&self.js().await?, &args).await?)
    }

    /// Every message of the DLQ stream with its headers (empty if the stream is absent).
    pub async fn dead_letters(&self) -> anyhow::Result<Vec<DeadLetter>> {
        let js = self.js().await?;
        let Ok(stream) = js.get_stream(&self.names.dlq).await else {
            return Ok(Vec::new());
        };
        let consumer = stream
            .create_consumer(pull::Config {
                ack_policy: jetstream::consumer::AckPolicy::None,
                ..Default::default()
            })
            .await?;
        let mut out = Vec::new();
        let mut batch = consumer.fetch().max_messages(10_000).messages().await?;
        while let Some(m) = batch.next().await {
            let m = m.map_err(|e| anyhow::anyhow!("{e}"))?;
            let headers = m
                .headers
                .iter()
                .flat_map(|h| h.iter())
                .filter_map(|(k, v)| Some((k.to_string(), v.first()?.to_string())))
                .collect();
            out.push((m.payload.to_vec(), headers));
        }
        Ok(out)
    }

    /// The worker consumer's (pending, ack-pending) counts.
    pub async fn consumer_state(&self) -> anyhow::Result<(u64, usize)> {
        let js = self.js().await?;
        let stream = js.get_stream(&self.names.stream).await?;
        let info = stream.consumer_info(&self.names.consumer).await?;
        Ok((info.num_pending, info.num_ack_pending))
    }

    /// Messages still held by the events stream.
    pub async fn stream_messages(&self) -> anyhow::Result<u64> {
        let js = self.js().await?;
        let mut stream = js.get_stream(&self.names.stream).await?;
        Ok(stream.info().await?.state.messages)
    }
}
