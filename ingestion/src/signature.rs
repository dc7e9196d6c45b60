//! Webhook signatures (`docs/api.md`, "Signatures"): two schemes, several keys.
//!
//! * Legacy: `X-Webhook-Timestamp: <unix seconds>` and `X-Webhook-Signature:
//!   sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>">`.
//! * [Standard Webhooks](https://www.standardwebhooks.com): `webhook-id`,
//!   `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256 of
//!   "<id>.<timestamp>.<raw body>">`, possibly several signatures separated by spaces.
//!
//! A request passes when any configured key (`WEBHOOK_SECRET`, a comma-separated list, so
//! keys rotate without downtime) verifies any of its signatures, and its timestamp is
//! within [`TOLERANCE_SECS`] of now either way (replay protection, in both schemes).

use axum::http::HeaderMap;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use service_kit::secret::{Key, KeyId, Keys};
use sha2::Sha256;
use std::fmt;
use subtle::ConstantTimeEq;

/// How far a timestamp may be from now (replay protection).
pub const TOLERANCE_SECS: u64 = 300;

/// Bytes of an HMAC-SHA256.
const MAC_BYTES: usize = 32;

/// Which signature headers a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `X-Webhook-Timestamp` + `X-Webhook-Signature: sha256=<hex>`.
    Legacy,
    /// `webhook-id` + `webhook-timestamp` + `webhook-signature: v1,<base64>`.
    Standard,
}

impl Scheme {
    pub const ALL: [Scheme; 2] = [Scheme::Legacy, Scheme::Standard];

    /// The `scheme` label of `ingestion_signatures_verified_total`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scheme::Legacy => "legacy",
            Scheme::Standard => "standard",
        }
    }
}

/// The key that verified a request, safe to log (never the key itself). Put in the
/// response's extensions, so that layers around the handler can tell producers apart; the
/// per-producer rate limit (`crate::ratelimit`) keys on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SigningKeyId(pub KeyId);

impl fmt::Display for SigningKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a signed request is refused; its message is [`SignatureError::message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub enum SignatureError {
    Missing,
    BadTimestamp(Scheme),
    Expired(Scheme),
    BadId,
    Mismatch(Scheme),
}

impl SignatureError {
    pub fn message(&self) -> &'static str {
        match self {
            SignatureError::Missing => {
                "a signature is required: X-Webhook-Timestamp and X-Webhook-Signature, or \
                 webhook-id, webhook-timestamp and webhook-signature (Standard Webhooks)"
            }
            SignatureError::BadTimestamp(Scheme::Legacy) => {
                "X-Webhook-Timestamp must be unix seconds"
            }
            SignatureError::BadTimestamp(Scheme::Standard) => {
                "webhook-timestamp must be unix seconds"
            }
            SignatureError::Expired(Scheme::Legacy) => {
                "X-Webhook-Timestamp is more than 5 minutes from now"
            }
            SignatureError::Expired(Scheme::Standard) => {
                "webhook-timestamp is more than 5 minutes from now"
            }
            SignatureError::BadId => "webhook-id must not be empty or contain '.'",
            SignatureError::Mismatch(Scheme::Legacy) => {
                "X-Webhook-Signature does not match the body"
            }
            SignatureError::Mismatch(Scheme::Standard) => {
                "no v1 signature of webhook-signature matches the body"
            }
        }
    }
}

/// The signature headers of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signed<'a> {
    pub scheme: Scheme,
    /// `webhook-id` (Standard Webhooks only).
    pub id: Option<&'a str>,
    pub timestamp: &'a str,
    /// The signature header, whole.
    pub signatures: &'a str,
}

impl<'a> Signed<'a> {
    /// The request's signature headers: Standard Webhooks when it has `webhook-signature`
    /// (a producer migrating may send both sets; the newer one is checked), else legacy.
    /// Cheap, so it runs before the body is read.
    pub fn from_headers(headers: &'a HeaderMap) -> Result<Signed<'a>, SignatureError> {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(signatures) = text("webhook-signature") {
            let (Some(id), Some(timestamp)) = (text("webhook-id"), text("webhook-timestamp"))
            else {
                return Err(SignatureError::Missing);
            };
            return Ok(Signed {
                scheme: Scheme::Standard,
                id: Some(id),
                timestamp,
                signatures,
            });
        }
        match (text("x-webhook-timestamp"), text("x-webhook-signature")) {
            (Some(timestamp), Some(signatures)) => Ok(Signed {
                scheme: Scheme::Legacy,
                id: None,
                timestamp,
                signatures,
            }),
            _ => Err(SignatureError::Missing),
        }
    }
}

/// Checks a request's signature against its raw body with every key; returns the key that
/// verified it. `now_unix` is the clock (a parameter, so that tests can stand at the time
/// of a published test vector).
pub fn verify(
    keys: &Keys,
    signed: &Signed<'_>,
    body: &[u8],
    now_unix: i64,
) -> Result<KeyId, SignatureError> {
    let scheme = signed.scheme;
    let timestamp = match scheme {
        Scheme::Legacy => signed.timestamp.trim(),
        Scheme::Standard => signed.timestamp,
    };
    let ts: i64 = timestamp
        .parse()
        .map_err(|_| SignatureError::BadTimestamp(scheme))?;
    if now_unix.abs_diff(ts) > TOLERANCE_SECS {
        return Err(SignatureError::Expired(scheme));
    }
    let id = match (scheme, signed.id) {
        // A '.' would let the id and the timestamp trade characters in the signed
        // content (Standard Webhooks, "Signature scheme").
        (Scheme::Standard, Some(id)) if id.is_empty() || id.contains('.') => {
            return Err(SignatureError::BadId);
        }
        (_, id) => id,
    };
    let given = signatures(scheme, signed.signatures);
    // One MAC per key, compared with every signature: the cost does not grow with the
    // number of signatures a request carries.
    for key in keys.iter() {
        let expected = mac(key, id, timestamp, body);
        if given
            .iter()
            .any(|signature| bool::from(expected.ct_eq(signature)))
        {
            return Ok(key.id());
        }
    }
    Err(SignatureError::Mismatch(scheme))
}

/// The well-formed signatures of the header; others (other versions such as Standard
/// Webhooks' asymmetric `v1a`, bad encodings, wrong lengths) cannot match and are skipped.
fn signatures(scheme: Scheme, header: &str) -> Vec<[u8; MAC_BYTES]> {
    let decoded: Vec<Vec<u8>> = match scheme {
        Scheme::Legacy => header
            .trim()
            .strip_prefix("sha256=")
            .and_then(|h| hex::decode(h).ok())
            .into_iter()
            .collect(),
        Scheme::Standard => header
            .split_ascii_whitespace()
            .filter_map(|versioned| versioned.strip_prefix("v1,"))
            .filter_map(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .collect(),
    };
    decoded
        .into_iter()
        .filter_map(|bytes| <[u8; MAC_BYTES]>::try_from(bytes).ok())
        .collect()
}

/// The HMAC-SHA256 of `"<id>.<timestamp>.<body>"` (Standard Webhooks) or
/// `"<timestamp>.<body>"` (legacy, no id).
fn mac(key: &Key, id: Option<&str>, timestamp: &str, body: &[u8]) -> [u8; MAC_BYTES] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    if let Some(id) = id {
        mac.update(id.as_bytes());
        mac.update(b".");
    }
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// The `X-Webhook-Signature` value for `body` (producers and tests).
pub fn sign_legacy(key: &Key, timestamp: &str, body: &[u8]) -> String {
    format!("sha256={}", hex::encode(mac(key, None, timestamp, body)))
}

/// One `v1,<base64>` signature for `webhook-signature` (producers and tests).
pub fn sign_standard(key: &Key, id: &str, timestamp: &str, body: &[u8]) -> String {
    let mac = mac(key, Some(id), timestamp, body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac)
    )
}

/// The configured keys, and a counter of the requests each verified.
#[derive(Debug)]
pub struct Verifier {
    keys: Keys,
    /// `ingestion_signatures_verified_total{key_id, scheme}`, indexed by key then scheme.
    verified: Vec<[metrics::Counter; Scheme::ALL.len()]>,
}

impl Verifier {
    /// Call after `service_kit::metrics::install()`: a counter registered before the
    /// recorder counts into nothing. Every label is registered at 0, so that during a
    /// rotation the old key's counter is there to watch stop growing.
    pub fn new(keys: Keys) -> Verifier {
        let verified = keys
            .iter()
            .map(|key| {
                Scheme::ALL.map(|scheme| {
                    let counter = metrics::counter!("ingestion_signatures_verified_total",
                        "key_id" => key.id().to_string(), "scheme" => scheme.as_str());
                    counter.increment(0);
                    counter
                })
            })
            .collect();
        Verifier { keys, verified }
    }

    /// [`verify`], counted.
    pub fn verify(
        &self,
        signed: &Signed<'_>,
        body: &[u8],
        now_unix: i64,
    ) -> Result<SigningKeyId, SignatureError> {
        let id = verify(&self.keys, signed, body, now_unix)?;
        if let Some(position) = self.keys.iter().position(|key| key.id() == id) {
            self.verified[position][signed.scheme as usize].increment(1);
        }
        Ok(SigningKeyId(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const PLAIN: &str = "a-plain-secret-of-at-least-32-bytes!";
    const OTHER: &str = "another-secret-of-at-least-32-bytes";

    /// The published test vector of Standard Webhooks (its libraries' "sign function
    /// works" test).
    const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const VECTOR_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const VECTOR_TIMESTAMP: i64 = 1614265330;
    const VECTOR_PAYLOAD: &[u8] = br#"{"test": 2432232314}"#;
    const VECTOR_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn keys(list: &str) -> Keys {
        service_kit::secret::signing_keys(list).unwrap_or_else(|e| panic!("{list}: {e}"))
    }

    fn key(secret: &str) -> Key {
        keys(secret)
            .iter()
            .next()
            .cloned()
            .unwrap_or_else(|| unreachable!())
    }

    fn standard<'a>(id: &'a str, timestamp: &'a str, signatures: &'a str) -> Signed<'a> {
        Signed {
            scheme: Scheme::Standard,
            id: Some(id),
            timestamp,
            signatures,
        }
    }

    fn legacy<'a>(timestamp: &'a str, signature: &'a str) -> Signed<'a> {
        Signed {
            scheme: Scheme::Legacy,
            id: None,
            timestamp,
            signatures: signature,
        }
    }

    #[test]
    fn the_standard_webhooks_test_vector_signs_and_verifies_at_its_time() {
        let vector = key(VECTOR_SECRET);
        let ts = VECTOR_TIMESTAMP.to_string();
        assert_eq!(
            sign_standard(&vector, VECTOR_ID, &ts, VECTOR_PAYLOAD),
            VECTOR_SIGNATURE
        );
        let signed = standard(VECTOR_ID, &ts, VECTOR_SIGNATURE);
        let at_its_time = verify(
            &keys(VECTOR_SECRET),
            &signed,
            VECTOR_PAYLOAD,
            VECTOR_TIMESTAMP,
        );
        assert_eq!(at_its_time, Ok(vector.id()));
        // The same request today is a replay.
        let today = time::OffsetDateTime::now_utc().unix_timestamp();
        assert_eq!(
            verify(&keys(VECTOR_SECRET), &signed, VECTOR_PAYLOAD, today),
            Err(SignatureError::Expired(Scheme::Standard))
        );
    }

    #[test]
    fn any_of_several_signatures_may_match_and_other_versions_are_skipped() {
        let ts = VECTOR_TIMESTAMP.to_string();
        let several = format!(
            "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,{sig} v1a,{sig} {VECTOR_SIGNATURE}",
            sig = &VECTOR_SIGNATURE[3..]
        );
        let signed = standard(VECTOR_ID, &ts, &several);
        assert!(
            verify(
                &keys(VECTOR_SECRET),
                &signed,
                VECTOR_PAYLOAD,
                VECTOR_TIMESTAMP
            )
            .is_ok()
        );
        let without = several.replace(VECTOR_SIGNATURE, "");
        let signed = standard(VECTOR_ID, &ts, &without);
        assert_eq!(
            verify(
                &keys(VECTOR_SECRET),
                &signed,
                VECTOR_PAYLOAD,
                VECTOR_TIMESTAMP
            ),
            Err(SignatureError::Mismatch(Scheme::Standard))
        );
    }

    #[test]
    fn any_of_several_keys_may_verify_and_is_the_one_named() {
        let both = keys(&format!("{PLAIN},{OTHER}"));
        let signature = sign_legacy(&key(OTHER), "1000", b"{}");
        assert_eq!(
            verify(&both, &legacy("1000", &signature), b"{}", 1000),
            Ok(key(OTHER).id())
        );
        assert_eq!(
            verify(&keys(PLAIN), &legacy("1000", &signature), b"{}", 1000),
            Err(SignatureError::Mismatch(Scheme::Legacy))
        );
    }

    #[test]
    fn a_signature_over_another_body_id_or_timestamp_fails() {
        let k = key(PLAIN);
        let sig = sign_standard(&k, "msg_1", "1000", b"{}");
        let plain = keys(PLAIN);
        let mismatch = Err(SignatureError::Mismatch(Scheme::Standard));
        assert_eq!(
            verify(&plain, &standard("msg_1", "1000", &sig), b"[]", 1000),
            mismatch
        );
        assert_eq!(
            verify(&plain, &standard("msg_2", "1000", &sig), b"{}", 1000),
            mismatch
        );
        assert_eq!(
            verify(&plain, &standard("msg_1", "1001", &sig), b"{}", 1000),
            mismatch
        );
        assert_eq!(
            verify(&plain, &standard("msg.1", "1000", &sig), b"{}", 1000),
            Err(SignatureError::BadId)
        );
        let legacy_sig = sign_legacy(&k, "1000", b"{}");
        assert_eq!(
            verify(&plain, &legacy("1000", "sha256=zz"), b"{}", 1000),
            Err(SignatureError::Mismatch(Scheme::Legacy))
        );
        assert!(verify(&plain, &legacy("1000", &legacy_sig), b"{}", 1000).is_ok());
    }

    #[test]
    fn old_future_or_unreadable_timestamps_fail_in_both_schemes() {
        let k = key(PLAIN);
        let plain = keys(PLAIN);
        let sig = sign_legacy(&k, "1000", b"{}");
        for now in [1301, 699] {
            assert_eq!(
                verify(&plain, &legacy("1000", &sig), b"{}", now),
                Err(SignatureError::Expired(Scheme::Legacy))
            );
        }
        let sig = sign_standard(&k, "msg_1", "1000", b"{}");
        for now in [1301, 699] {
            assert_eq!(
                verify(&plain, &standard("msg_1", "1000", &sig), b"{}", now),
                Err(SignatureError::Expired(Scheme::Standard))
            );
        }
        assert_eq!(
            verify(&plain, &legacy("soon", &sig), b"{}", 1000),
            Err(SignatureError::BadTimestamp(Scheme::Legacy))
        );
        let extreme = i64::MIN.to_string();
        assert_eq!(
            verify(&plain, &standard("msg_1", &extreme, &sig), b"{}", i64::MAX),
            Err(SignatureError::Expired(Scheme::Standard))
        );
    }

    #[test]
    fn standard_headers_take_precedence_and_half_a_set_is_missing() {
        let mut headers = HeaderMap::new();
        assert_eq!(Signed::from_headers(&headers), Err(SignatureError::Missing));
        headers.insert("x-webhook-timestamp", HeaderValue::from_static("1000"));
        assert_eq!(Signed::from_headers(&headers), Err(SignatureError::Missing));
        headers.insert("x-webhook-signature", HeaderValue::from_static("sha256=00"));
        let found = Signed::from_headers(&headers).map(|s| s.scheme);
        assert_eq!(found, Ok(Scheme::Legacy));
        headers.insert("webhook-signature", HeaderValue::from_static("v1,AA=="));
        assert_eq!(Signed::from_headers(&headers), Err(SignatureError::Missing));
        headers.insert("webhook-id", HeaderValue::from_static("msg_1"));
        headers.insert("webhook-timestamp", HeaderValue::from_static("1000"));
        let found = Signed::from_headers(&headers).map(|s| s.scheme);
        assert_eq!(found, Ok(Scheme::Standard));
    }
}
