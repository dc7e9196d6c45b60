//! One pull request, read to its end: up to a number of messages and of bytes, waiting at
//! most the linger for the batch to fill.
//!
//! The request is sent and its inbox read here rather than through async-nats's batch
//! stream, because the server's statuses that end a pull can arrive *before* the last
//! messages it delivered to it. A consumer replicated on a NATS cluster (R3) sends a
//! message only once its delivery is replicated, and a status at once: `409 Batch
//! Completed` (the count reached with bytes to spare), `409 Message Size Exceeds MaxBytes`
//! and `408 Request Timeout` all overtake the pull's last messages. The batch stream ends
//! at the first status, so those messages were never read, redelivered after `ack_wait`,
//! dropped again, and dead-lettered as `max_deliver_exceeded` after enough rounds.
//!
//! Every one of those statuses says how many of the pull's messages were *not* delivered
//! (`Nats-Pending-Messages`), so the pull reads until it holds the rest, whatever the order.

use async_nats::StatusCode;
use async_nats::jetstream::{self, consumer::PullConsumer, consumer::pull::BatchConfig};
use futures::StreamExt;
use service_kit::error::error_text;
use std::time::Duration;

/// Why a pull returned nothing: the consumer is rebuilt and the pull retried.
#[derive(Debug, thiserror::Error)]
pub(super) enum PullError {
    #[error("cannot subscribe to the pull's inbox")]
    Subscribe(#[source] async_nats::SubscribeError),
    #[error("cannot send the pull request")]
    Request(#[source] jetstream::consumer::pull::BatchRequestError),
    #[error("the server ended the pull: {status} {description}")]
    Status {
        status: async_nats::StatusCode,
        description: String,
    },
}

/// How long after a pull's expiry we keep reading what the server already sent.
///
/// nats-server 2.9 sends no `408` when it ends a pull that delivered part of a batch, so
/// without a deadline of our own an idle stretch would wait for nothing. The server sends
/// nothing for this pull after it; anything that would still arrive is redelivered after
/// `ack_wait`.
const PULL_GRACE: Duration = Duration::from_millis(200);

/// How long a pull waits, at most, for messages a status said were delivered but that it
/// overtook (replication on a cluster takes milliseconds; a message not read is redelivered
/// only after `ack_wait`).
const OVERTAKEN_WAIT: Duration = Duration::from_secs(5);

/// The bytes a pull may ask for per event of `WORKER_BATCH_SIZE`: room for events several
/// times the publisher's mean (374 bytes of JSON) with their share of the headers.
const PULL_BYTES_PER_EVENT: usize = 1024;

/// Room above the server's `max_payload` for what the server counts besides a message's
/// headers and payload (its subject, its reply subject).
const PULL_BYTES_SLACK: usize = 64 * 1024;

/// The header of an ending status: the pull's messages the server did not deliver.
const PENDING_MESSAGES: &str = "Nats-Pending-Messages";

/// The most bytes one pull asks for: `batch_size` events' worth, and never less than the
/// largest message the server takes (a message above a pull's byte limit would never be
/// delivered). The count of messages alone bounds nothing when the events per message
/// change: a pull sized by single-event messages, met by 100-event ones, held a hundred
/// batches in memory. `None` (no limit) while the server's `max_payload` is unknown.
pub(super) fn pull_bytes(batch_size: usize, max_payload: usize) -> Option<usize> {
    (max_payload > 0).then(|| {
        batch_size
            .saturating_mul(PULL_BYTES_PER_EVENT)
            .max(max_payload.saturating_add(PULL_BYTES_SLACK))
    })
}

/// What one message on a pull's inbox is.
#[derive(Debug, PartialEq, Eq)]
enum Received {
    /// A message of the stream.
    Message,
    /// An idle heartbeat: nothing to do.
    Heartbeat,
    /// The server ended the pull having delivered `delivered` messages (`None`: as many as
    /// have arrived); `too_large` when the next message exceeded the pull's byte limit.
    End {
        delivered: Option<usize>,
        too_large: bool,
    },
    /// The pull failed (the consumer deleted, a leader change, no responders ...).
    Failed,
}

/// Reads one message of a pull of `max` messages.
fn classify(
    status: Option<StatusCode>,
    description: Option<&str>,
    pending: Option<&str>,
    max: usize,
) -> Received {
    let delivered = pending
        .and_then(|p| p.trim().parse::<usize>().ok())
        .map(|p| max.saturating_sub(p));
    let description = description.unwrap_or_default();
    match status.unwrap_or(StatusCode::OK) {
        StatusCode::OK => Received::Message,
        StatusCode::IDLE_HEARTBEAT => Received::Heartbeat,
        StatusCode::NOT_FOUND | StatusCode::TIMEOUT => Received::End {
            delivered,
            too_large: false,
        },
        StatusCode::REQUEST_TERMINATED if description.contains("Batch Completed") => {
            Received::End {
                delivered: Some(delivered.unwrap_or(max)),
                too_large: false,
            }
        }
        StatusCode::REQUEST_TERMINATED if description.contains("Exceeds MaxBytes") => {
            Received::End {
                delivered,
                too_large: true,
            }
        }
        _ => Received::Failed,
    }
}

/// One pull: up to `max` messages and `max_bytes`, waiting at most `linger` for the batch
/// to fill. A first message larger than `max_bytes` is pulled alone without the limit.
pub(super) async fn fetch(
    js: &jetstream::Context,
    consumer: &PullConsumer,
    max: usize,
    max_bytes: Option<usize>,
    linger: Duration,
) -> Result<Vec<jetstream::Message>, PullError> {
    let client = js.client();
    let inbox = client.new_inbox();
    let mut inbox_messages = client
        .subscribe(inbox.clone())
        .await
        .map_err(PullError::Subscribe)?;
    let request = BatchConfig {
        batch: max,
        expires: Some(linger),
        max_bytes: max_bytes.unwrap_or(0),
        ..Default::default()
    };
    consumer
        .request_batch(request, inbox.into())
        .await
        .map_err(PullError::Request)?;

    let mut deadline = tokio::time::Instant::now() + linger + PULL_GRACE;
    let mut messages = Vec::with_capacity(max.min(1024));
    // The messages this pull gets: `max` until a status says how many were delivered
    // (some of which may still be on their way).
    let mut expected = max;
    while messages.len() < expected {
        let Ok(Some(message)) = tokio::time::timeout_at(deadline, inbox_messages.next()).await
        else {
            break;
        };
        // Only a status carries the count; a stream message's headers are not searched.
        let pending = message
            .status
            .and(message.headers.as_ref())
            .and_then(|h| h.get(PENDING_MESSAGES))
            .map(|v| v.as_str());
        match classify(message.status, message.description.as_deref(), pending, max) {
            Received::Message => messages.push(jetstream::Message {
                message,
                context: js.clone(),
            }),
            Received::Heartbeat => {}
            Received::End {
                delivered,
                too_large,
            } => {
                let delivered = delivered.unwrap_or(messages.len());
                // A message above the limit (the server's max_payload lowered since it was
                // published): taken alone, without a limit, rather than never.
                if too_large && delivered == 0 && max_bytes.is_some() {
                    return Box::pin(fetch(js, consumer, 1, None, linger)).await;
                }
                expected = delivered;
                if expected > messages.len() {
                    // Delivered, and on their way behind the status: worth waiting for.
                    deadline = deadline.max(tokio::time::Instant::now() + OVERTAKEN_WAIT);
                }
            }
            Received::Failed => {
                let failed = PullError::Status {
                    status: message.status.unwrap_or(StatusCode::OK),
                    description: message
                        .description
                        .unwrap_or_else(|| "(no description)".to_owned()),
                };
                if messages.is_empty() {
                    return Err(failed);
                }
                let error = error_text(&failed);
                tracing::warn!(%error, "Pull ended early");
                break;
            }
        }
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pull_asks_for_a_batchs_worth_of_bytes_and_never_less_than_the_largest_message() {
        const MIB: usize = 1024 * 1024;
        // The default batch (1000 events) under the default 1 MiB max_payload: the message
        // limit wins, so that a message of max_payload is still delivered.
        assert_eq!(pull_bytes(1000, MIB), Some(MIB + PULL_BYTES_SLACK));
        assert_eq!(pull_bytes(5000, MIB), Some(5000 * PULL_BYTES_PER_EVENT));
        assert_eq!(pull_bytes(10, 8 * MIB), Some(8 * MIB + PULL_BYTES_SLACK));
        assert_eq!(pull_bytes(1000, 0), None, "max_payload not known yet");
    }

    fn status(code: u16) -> Option<StatusCode> {
        StatusCode::from_u16(code).ok()
    }

    #[test]
    fn the_statuses_that_end_a_pull_say_how_many_messages_it_delivered() {
        // What nats-server sends (`NATS/1.0 <code> <description>` and the header).
        assert_eq!(classify(None, None, None, 10), Received::Message);
        assert_eq!(classify(status(100), None, None, 10), Received::Heartbeat);
        let end = |delivered, too_large| Received::End {
            delivered,
            too_large,
        };
        assert_eq!(
            classify(status(409), Some("Batch Completed"), Some("0"), 10),
            end(Some(10), false)
        );
        assert_eq!(
            classify(
                status(409),
                Some("Message Size Exceeds MaxBytes"),
                Some("7"),
                10
            ),
            end(Some(3), true)
        );
        assert_eq!(
            classify(status(408), Some("Request Timeout"), Some("37"), 50),
            end(Some(13), false)
        );
        // No header (an older server): as many as have arrived.
        assert_eq!(
            classify(status(408), Some("Request Timeout"), None, 50),
            end(None, false)
        );
        assert_eq!(
            classify(status(404), Some("No Messages"), None, 50),
            end(None, false)
        );
        assert_eq!(
            classify(status(409), Some("Consumer Deleted"), None, 50),
            Received::Failed
        );
        assert_eq!(classify(status(503), None, None, 50), Received::Failed);
    }
}
