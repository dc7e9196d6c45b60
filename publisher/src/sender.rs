//! Posting batches to the webhook: retries with backoff, and counting what the server said.

use crate::generator::GeneratedEvent;
use crate::summary::Stats;
use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use rand::Rng;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use sha2::Sha256;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// First backoff ceiling; doubled on every retry (full jitter picks a delay below it).
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest wait between two attempts, `Retry-After` included.
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// The events of one request, serialised once: the body and where each event sits in it.
#[derive(Debug, Clone)]
pub struct Batch {
    body: Bytes,
    spans: Vec<Range<usize>>,
    invalid: Vec<bool>,
}

impl Batch {
    /// Serialises `events`: one event as a bare object (the common webhook shape), more as
    /// a JSON array. `capacity` is a hint for the body size.
    pub fn encode(events: &[GeneratedEvent], capacity: usize) -> serde_json::Result<Batch> {
        let mut body = Vec::with_capacity(capacity);
        let mut spans = Vec::with_capacity(events.len());
        let array = events.len() != 1;
        if array {
            body.push(b'[');
        }
        for (i, event) in events.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            let start = body.len();
            event.write_json(&mut body)?;
            spans.push(start..body.len());
        }
        if array {
            body.push(b']');
        }
        Ok(Batch {
            body: Bytes::from(body),
            spans,
            invalid: events.iter().map(GeneratedEvent::is_invalid).collect(),
        })
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether the batch has no event.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The request body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The JSON of event `i`.
    pub fn event_json(&self, i: usize) -> &[u8] {
        &self.body[self.spans[i].clone()]
    }

    fn valid_count(&self, mask: impl Fn(usize) -> bool) -> u64 {
        (0..self.len())
            .filter(|&i| mask(i) && !self.invalid[i])
            .count() as u64
    }

    /// The events not marked in `drop`, as a new array body.
    fn without(&self, drop: &[bool]) -> Batch {
        let mut body = Vec::with_capacity(self.body.len());
        let mut spans = Vec::new();
        let mut invalid = Vec::new();
        body.push(b'[');
        for i in (0..self.len()).filter(|&i| !drop[i]) {
            if !spans.is_empty() {
                body.push(b',');
            }
            let start = body.len();
            body.extend_from_slice(self.event_json(i));
            spans.push(start..body.len());
            invalid.push(self.invalid[i]);
        }
        body.push(b']');
        Batch {
            body: Bytes::from(body),
            spans,
            invalid,
        }
    }
}

/// How to reach the webhook.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// The endpoint (`POST`).
    pub url: Url,
    /// Retries of one request after 429, 5xx or a transport error, before giving up.
    pub max_retries: u32,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Connections kept open; the number of requests in flight.
    pub concurrency: usize,
    /// `WEBHOOK_SECRET`: sign each request (docs/api.md, "Signatures") when set.
    pub secret: Option<String>,
    /// Which signature headers to send.
    pub signature_scheme: SignatureScheme,
}

/// The two signature schemes ingestion accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SignatureScheme {
    /// `X-Webhook-Timestamp` and `X-Webhook-Signature: sha256=<hex>`.
    Legacy,
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>`.
    Standard,
}

/// HMACs keyed with the secrets (cloned for each request), and how to send them.
#[derive(Debug)]
struct Signer {
    scheme: SignatureScheme,
    /// At least one; the legacy scheme signs with the first only (one signature a header).
    keys: Vec<Hmac<Sha256>>,
}

/// Posts batches over one pooled keep-alive HTTP/1.1 client and tallies the outcome.
#[derive(Debug)]
pub struct Sender {
    client: reqwest::Client,
    config: SenderConfig,
    signer: Option<Signer>,
    stats: Arc<Stats>,
}

/// The 202 body.
#[derive(Deserialize)]
struct Accepted {
    accepted: u64,
    #[serde(default)]
    duplicates: u64,
}

/// The parts of an error body the sender uses.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    #[serde(default)]
    details: Vec<Detail>,
}

#[derive(Deserialize)]
struct Detail {
    index: Option<usize>,
}

/// What one attempt came to.
enum Attempt {
    /// Done with these events (counted).
    Done,
    /// Some events were refused; post the rest.
    Resubmit(Batch),
    /// Worth retrying, after at least this long if the server said so.
    Retry(Option<Duration>),
}

impl Sender {
    /// Builds the HTTP client.
    pub fn new(config: SenderConfig, stats: Arc<Stats>) -> anyhow::Result<Sender> {
        // This build has no TLS (the webhook is reached over a private network or loopback).
        if config.url.scheme() != "http" {
            anyhow::bail!("{}: only http:// URLs are supported", config.url);
        }
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(config.concurrency)
            // Small request bodies must not wait for Nagle.
            .tcp_nodelay(true)
            .user_agent(concat!("publisher/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let signer = match &config.secret {
            Some(secret) => Some(Signer {
                scheme: config.signature_scheme,
                keys: signing_keys(secret)?
                    .iter()
                    .map(|key| {
                        <Hmac<Sha256> as Mac>::new_from_slice(key)
                            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
                    })
                    .collect(),
            }),
            None => None,
        };
        Ok(Sender {
            client,
            config,
            signer,
            stats,
        })
    }

    /// Delivers one batch: retries transient failures with exponential backoff and full
    /// jitter (never sooner than the server's `Retry-After`), resubmits the valid rest of a batch that was
    /// refused for some invalid events, and counts everything in the stats.
    pub async fn deliver(&self, batch: Batch) {
        let stats = &self.stats;
        Stats::add(&stats.sent, batch.len() as u64);
        let mut batch = batch;
        let mut retries = 0;
        // Bounded: each resubmission drops at least one event, each retry counts.
        loop {
            match self.attempt(&batch).await {
                Attempt::Done => return,
                Attempt::Resubmit(rest) => batch = rest,
                Attempt::Retry(_) if retries >= self.config.max_retries => {
                    Stats::add(&stats.failed, batch.len() as u64);
                    return;
                }
                Attempt::Retry(retry_after) => {
                    retries += 1;
                    Stats::add(&stats.retries, 1);
                    // At least what the server asked for, but jittered like any other retry
                    // so that clients told the same `Retry-After` do not return in lockstep.
                    let wait = backoff(retries).max(retry_after.unwrap_or_default());
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn attempt(&self, batch: &Batch) -> Attempt {
        let stats = &self.stats;
        Stats::add(&stats.requests, 1);
        let started = Instant::now();
        let mut request = self
            .client
            .post(self.config.url.clone())
            .header(CONTENT_TYPE, "application/json");
        if let Some(signer) = &self.signer {
            for (name, value) in signer.headers(batch.body(), unix_now()) {
                request = request.header(name, value);
            }
        }
        let response = request.body(batch.body().clone()).send().await;
        let (status, retry_after, body) = match response {
            Ok(response) => {
                let status = response.status();
                let retry_after = retry_after(response.headers());
                match response.bytes().await {
                    Ok(body) => (status, retry_after, body),
                    Err(_) => return Attempt::Retry(None),
                }
            }
            // Connection refused or reset, timeout: the server may not have seen the
            // request, and dedup makes sending it again safe.
            Err(_) => return Attempt::Retry(None),
        };
        stats.record_latency(started.elapsed());

        if status.is_success() {
            match serde_json::from_slice::<Accepted>(&body) {
                Ok(a) => {
                    Stats::add(&stats.accepted, a.accepted);
                    Stats::add(&stats.duplicates, a.duplicates);
                }
                // A 2xx without the documented body still means accepted.
                Err(_) => Stats::add(&stats.accepted, batch.len() as u64),
            }
            return Attempt::Done;
        }
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Attempt::Retry(retry_after);
        }
        if status == StatusCode::UNPROCESSABLE_ENTITY
            && let Some(refused) = refused_events(&body, batch.len())
        {
            let count = refused.iter().filter(|&&r| r).count() as u64;
            Stats::add(&stats.rejected, count);
            Stats::add(
                &stats.unexpected_rejections,
                batch.valid_count(|i| refused[i]),
            );
            // The server published nothing of this request: post the others again.
            let rest = batch.without(&refused);
            return if rest.is_empty() {
                Attempt::Done
            } else {
                Attempt::Resubmit(rest)
            };
        }
        // Any other client error refuses the whole request; repeating it would not help.
        Stats::add(&stats.rejected, batch.len() as u64);
        Stats::add(&stats.unexpected_rejections, batch.valid_count(|_| true));
        Attempt::Done
    }
}

/// Which events a 422 `validation_failed` body names, or `None` when it names none (then
/// the whole request counts as refused).
fn refused_events(body: &[u8], len: usize) -> Option<Vec<bool>> {
    let error = serde_json::from_slice::<ErrorBody>(body).ok()?.error;
    if error.code != "validation_failed" {
        return None;
    }
    let mut refused = vec![false; len];
    for index in error.details.iter().filter_map(|d| d.index) {
        *refused.get_mut(index)? = true;
    }
    refused.contains(&true).then_some(refused)
}

/// `Retry-After` in seconds (the HTTP-date form is not used by our services), capped.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(BACKOFF_CAP))
}

/// Full jitter: a delay uniformly below `base * 2^(retry-1)`, capped. Spreading retries
/// out keeps many clients from hammering a recovering server in lockstep.
pub fn backoff(retry: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1 << retry.saturating_sub(1).min(16))
        .min(BACKOFF_CAP);
    let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(0..=ms))
}

/// The HMAC keys of `WEBHOOK_SECRET`'s comma-separated secrets: a `whsec_<base64>` secret
/// is a Standard Webhooks key (the decoded bytes), any other is its own bytes, as ingestion
/// reads them. Errors never repeat the secret.
fn signing_keys(secret: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    if secret.trim().is_empty() {
        anyhow::bail!("WEBHOOK_SECRET (--secret) is set but empty: unset it to send unsigned");
    }
    secret
        .split(',')
        .map(str::trim)
        .enumerate()
        .map(|(i, text)| match text.strip_prefix("whsec_") {
            _ if text.is_empty() => {
                anyhow::bail!("WEBHOOK_SECRET (--secret): secret {} is empty", i + 1)
            }
            Some(encoded) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| {
                    anyhow::anyhow!(
                        "WEBHOOK_SECRET (--secret): secret {} starts with whsec_ but is not \
                         base64: {e}",
                        i + 1
                    )
                }),
            None => Ok(text.as_bytes().to_vec()),
        })
        .collect()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl Signer {
    /// The signature headers (docs/api.md, "Signatures") of a request with this body.
    fn headers(&self, body: &[u8], now: u64) -> Vec<(&'static str, String)> {
        let timestamp = now.to_string();
        match self.scheme {
            SignatureScheme::Legacy => {
                let signature = self
                    .keys
                    .first()
                    .map(|key| legacy_signature(key, &timestamp, body));
                vec![
                    ("X-Webhook-Timestamp", timestamp),
                    ("X-Webhook-Signature", signature.unwrap_or_default()),
                ]
            }
            SignatureScheme::Standard => {
                // Derived from the body, so a retry of the same body keeps its id, as
                // Standard Webhooks asks of a message id.
                let digest = <Sha256 as sha2::Digest>::digest(body);
                let id = format!("msg_{}", hex::encode(&digest[..16]));
                let signatures: Vec<String> = self
                    .keys
                    .iter()
                    .map(|key| standard_signature(key, &id, &timestamp, body))
                    .collect();
                vec![
                    ("webhook-id", id),
                    ("webhook-timestamp", timestamp),
                    ("webhook-signature", signatures.join(" ")),
                ]
            }
        }
    }
}

/// `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
fn legacy_signature(key: &Hmac<Sha256>, timestamp: &str, body: &[u8]) -> String {
    let mut mac = key.clone();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// `v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`.
fn standard_signature(key: &Hmac<Sha256>, id: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = key.clone();
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let encoded = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("v1,{encoded}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic is how a test fails
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_below_a_doubling_ceiling_and_the_cap() {
        for retry in 1..40 {
            let ceiling = (BACKOFF_BASE * 2u32.pow(retry.min(16) - 1)).min(BACKOFF_CAP);
            assert!(backoff(retry) <= ceiling, "retry {retry}");
        }
    }

    #[test]
    fn a_422_body_names_the_refused_events_by_index() {
        let body = br#"{"error":{"code":"validation_failed","message":"m",
            "details":[{"index":2,"eventId":null,"field":"eventId","reason":"is required"},
                       {"index":2,"eventId":null,"field":"timestamp","reason":"x"},
                       {"index":0,"eventId":"a","field":"source","reason":"y"}]}}"#;
        assert_eq!(refused_events(body, 3), Some(vec![true, false, true]));
        assert_eq!(refused_events(body, 2), None, "an index out of range");
        let other = br#"{"error":{"code":"batch_size","message":"m","details":[]}}"#;
        assert_eq!(refused_events(other, 3), None);
    }

    fn signer(secret: &str, scheme: SignatureScheme) -> Signer {
        Signer {
            scheme,
            keys: signing_keys(secret)
                .unwrap()
                .iter()
                .map(|k| <Hmac<Sha256> as Mac>::new_from_slice(k).unwrap())
                .collect(),
        }
    }

    #[test]
    fn legacy_signatures_follow_the_documented_scheme() {
        let headers = signer("secret", SignatureScheme::Legacy).headers(b"{}", 1000);
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"secret").unwrap();
        mac.update(b"1000.{}");
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(
            headers,
            vec![
                ("X-Webhook-Timestamp", "1000".to_owned()),
                ("X-Webhook-Signature", format!("sha256={expected}")),
            ]
        );
    }

    #[test]
    fn standard_signatures_reproduce_the_published_test_vector() {
        let signer = signer(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            SignatureScheme::Standard,
        );
        let signature = standard_signature(
            &signer.keys[0],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let headers = signer.headers(b"{}", 1000);
        assert_eq!(headers[1], ("webhook-timestamp", "1000".to_owned()));
        assert_eq!(
            headers[2].1,
            standard_signature(&signer.keys[0], &headers[0].1, "1000", b"{}")
        );
    }

    #[test]
    fn every_secret_of_a_list_signs_in_the_standard_scheme() {
        let secrets = "first-secret, second-secret";
        let standard = signer(secrets, SignatureScheme::Standard).headers(b"{}", 1000);
        assert_eq!(standard[2].1.split(' ').count(), 2);
        let legacy = signer(secrets, SignatureScheme::Legacy).headers(b"{}", 1000);
        let first_only = signer("first-secret", SignatureScheme::Legacy).headers(b"{}", 1000);
        assert_eq!(legacy, first_only);
    }

    #[test]
    fn an_empty_or_undecodable_secret_is_refused_without_being_repeated() {
        for secret in ["", " ", "a,,b", "whsec_!!not-base64!!"] {
            let error = signing_keys(secret)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(error.starts_with("WEBHOOK_SECRET"), "{secret:?}: {error}");
            assert!(!error.contains("not-base64"), "{error}");
        }
    }
}
