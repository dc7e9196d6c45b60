//! The DLQ stream as the operator's commands see it: dead letters read one at a time in
//! sequence order, deleted one at a time or purged by sequence, and events republished to
//! the events stream. Every scan stops at the last dead letter that existed when the
//! command started, so what a replay sends back to the DLQ is not read again.

use super::entry::DeadLetter;
use async_nats::HeaderMap;
use async_nats::jetstream::{
    self, ErrorCode,
    context::{GetStreamErrorKind, PublishError},
    message::PublishMessage,
    publish::PublishAck,
    stream::{DeleteMessageErrorKind, RawMessageErrorKind},
};
use bytes::Bytes;
use service_kit::stream::StreamArgs;
use std::time::Duration;

/// What can go wrong in a `worker dlq` command (one line each, the source kept).
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error(transparent)]
    Settings(#[from] service_kit::stream::NatsConfigError),
    #[error("cannot connect to NATS at {url}")]
    Connect {
        /// Redacted.
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error(
        "there is no DLQ stream {stream}: check NATS_DLQ_STREAM (the worker creates it at start-up)"
    )]
    NoStream { stream: String },
    #[error("cannot open the DLQ stream {stream}")]
    Stream {
        stream: String,
        #[source]
        source: async_nats::jetstream::context::GetStreamError,
    },
    #[error("there is no dead letter {sequence} in {stream}")]
    NoSuchSequence { stream: String, sequence: u64 },
    #[error("cannot read dead letter {sequence}")]
    Read {
        sequence: u64,
        #[source]
        source: async_nats::jetstream::stream::RawMessageError,
    },
    #[error("cannot republish dead letter {sequence} to {subject}; it stays in the DLQ")]
    Publish {
        sequence: u64,
        subject: String,
        #[source]
        source: PublishError,
    },
    #[error("dead letter {sequence} was republished but cannot be deleted from the DLQ")]
    Delete {
        sequence: u64,
        #[source]
        source: async_nats::jetstream::stream::DeleteMessageError,
    },
    #[error("cannot purge the DLQ")]
    Purge {
        #[source]
        source: async_nats::jetstream::stream::PurgeError,
    },
    #[error("{}", not_replayed(.without_id, .remembered))]
    NotReplayed {
        /// Dead letters without an event id: no worker could ever store them.
        without_id: Vec<u64>,
        /// Dead letters whose event id the events stream still remembers (its duplicate
        /// window), so the republished copy was dropped.
        remembered: Vec<u64>,
    },
    #[error("cannot write the output")]
    Output(#[source] std::io::Error),
}

fn not_replayed(without_id: &[u64], remembered: &[u64]) -> String {
    let join = |sequences: &[u64]| {
        sequences
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut parts = Vec::new();
    if !without_id.is_empty() {
        parts.push(format!(
            "{} without an event id (sequence {}): purge them",
            without_id.len(),
            join(without_id)
        ));
    }
    if !remembered.is_empty() {
        parts.push(format!(
            "{} whose event id the events stream still remembers (sequence {}): \
             replay them after NATS_DUPLICATE_WINDOW",
            remembered.len(),
            join(remembered)
        ));
    }
    format!("dead letters not replayed: {}", parts.join("; "))
}

/// An open DLQ stream.
#[derive(Debug)]
pub struct Queue {
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    name: String,
    first: u64,
    last: u64,
}

impl Queue {
    /// Connects (once, failing fast: an operator is waiting) with the worker's login and
    /// opens `name`.
    pub async fn open(nats: &StreamArgs, name: &str) -> Result<Queue, DlqError> {
        let (servers, options) = service_kit::stream::login(nats).await?;
        let client = options
            .name("worker dlq")
            .connection_timeout(Duration::from_secs(5))
            .connect(servers)
            .await
            .map_err(|source| DlqError::Connect {
                url: service_kit::stream::redacted(&nats.nats_url),
                source,
            })?;
        let js = service_kit::stream::jetstream(client, Duration::from_secs(10));
        let stream = js.get_stream(name).await.map_err(|source| {
            let missing = matches!(source.kind(), GetStreamErrorKind::JetStream(ref api)
                if api.error_code() == ErrorCode::STREAM_NOT_FOUND);
            if missing {
                DlqError::NoStream {
                    stream: name.to_owned(),
                }
            } else {
                DlqError::Stream {
                    stream: name.to_owned(),
                    source,
                }
            }
        })?;
        let state = &stream.cached_info().state;
        let (first, last) = (state.first_sequence, state.last_sequence);
        Ok(Queue {
            js,
            stream,
            name: name.to_owned(),
            first,
            last,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Dead letters held when the command started.
    pub fn count(&self) -> u64 {
        self.stream.cached_info().state.messages
    }

    /// The dead letter at `sequence`.
    pub async fn get(&self, sequence: u64) -> Result<DeadLetter, DlqError> {
        match self.stream.get_raw_message(sequence).await {
            Ok(message) => Ok(message.into()),
            Err(e) if matches!(e.kind(), RawMessageErrorKind::NoMessageFound) => {
                Err(DlqError::NoSuchSequence {
                    stream: self.name.clone(),
                    sequence,
                })
            }
            Err(source) => Err(DlqError::Read { sequence, source }),
        }
    }

    /// The first dead letter at or after `from`, up to the last one the command started with.
    pub async fn next(&self, from: u64) -> Result<Option<DeadLetter>, DlqError> {
        let from = from.max(self.first);
        if from > self.last {
            return Ok(None);
        }
        let found = self
            .stream
            .raw_message_builder()
            .sequence(from)
            .next_by_subject(">")
            .send()
            .await;
        match found {
            Ok(message) if message.sequence <= self.last => Ok(Some(message.into())),
            Ok(_) => Ok(None),
            Err(e) if matches!(e.kind(), RawMessageErrorKind::NoMessageFound) => Ok(None),
            Err(source) => Err(DlqError::Read {
                sequence: from,
                source,
            }),
        }
    }

    /// The next dead letter at or after `*from` with `reason` (any if `None`); moves
    /// `*from` past it.
    pub async fn next_with_reason(
        &self,
        from: &mut u64,
        reason: Option<&str>,
    ) -> Result<Option<DeadLetter>, DlqError> {
        while let Some(dead) = self.next(*from).await? {
            *from = dead.sequence + 1;
            if reason.is_none_or(|r| dead.reason() == Some(r)) {
                return Ok(Some(dead));
            }
        }
        Ok(None)
    }

    /// Deletes one dead letter; one already gone (a concurrent purge) is not an error.
    pub async fn delete(&self, sequence: u64) -> Result<(), DlqError> {
        match self.stream.delete_message(sequence).await {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(e.kind(), DeleteMessageErrorKind::JetStream(ref api)
                if api.error_code() == ErrorCode::NO_MESSAGE_FOUND) =>
            {
                Ok(())
            }
            Err(source) => Err(DlqError::Delete { sequence, source }),
        }
    }

    /// Purges every dead letter below `sequence`; returns how many.
    pub async fn purge_below(&self, sequence: u64) -> Result<u64, DlqError> {
        self.stream
            .purge()
            .sequence(sequence)
            .await
            .map(|r| r.purged)
            .map_err(|source| DlqError::Purge { source })
    }

    /// The sequence after the last dead letter the command started with.
    pub fn end(&self) -> u64 {
        self.last + 1
    }

    /// Publishes to the events stream and waits for its PubAck.
    pub async fn republish(
        &self,
        sequence: u64,
        subject: &str,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<PublishAck, DlqError> {
        let failed = |source| DlqError::Publish {
            sequence,
            subject: subject.to_owned(),
            source,
        };
        let message = PublishMessage::build().payload(payload).headers(headers);
        self.js
            .send_publish(subject.to_owned(), message)
            .await
            .map_err(failed)?
            .await
            .map_err(failed)
    }
}
