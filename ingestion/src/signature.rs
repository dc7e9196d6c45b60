//! Optional webhook signatures (`api.md`): `X-Webhook-Signature: sha256=<hex HMAC-SHA256 of
//! "<timestamp>.<raw body>">` with `X-Webhook-Timestamp` within 5 minutes of now.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// How far a timestamp may be from now (replay protection).
pub const TOLERANCE_SECS: i64 = 300;

/// Why a signed request is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum SignatureError {
    Missing,
    BadTimestamp,
    Expired,
    Mismatch,
}

impl SignatureError {
    pub fn message(&self) -> &'static str {
        match self {
            SignatureError::Missing => {
                "X-Webhook-Timestamp and X-Webhook-Signature headers are required"
            }
            SignatureError::BadTimestamp => "X-Webhook-Timestamp must be unix seconds",
            SignatureError::Expired => "X-Webhook-Timestamp is more than 5 minutes from now",
            SignatureError::Mismatch => "X-Webhook-Signature does not match the body",
        }
    }
}

/// Checks a request's signature headers against its raw body.
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_unix: i64,
) -> Result<(), SignatureError> {
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return Err(SignatureError::Missing);
    };
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    if (now_unix - ts).abs() > TOLERANCE_SECS {
        return Err(SignatureError::Expired);
    }
    let given = signature
        .trim()
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or(SignatureError::Mismatch)?;
    let expected = sign(secret, timestamp.trim(), body);
    if bool::from(expected.as_slice().ct_eq(&given)) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The HMAC-SHA256 of `"<timestamp>.<body>"`.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(secret: &[u8], ts: &str, body: &[u8]) -> String {
        format!("sha256={}", hex::encode(sign(secret, ts, body)))
    }

    #[test]
    fn a_correct_recent_signature_passes() {
        let sig = header(b"s3cret", "1000", b"{}");
        assert_eq!(
            verify(b"s3cret", Some("1000"), Some(&sig), b"{}", 1100),
            Ok(())
        );
    }

    #[test]
    fn a_signature_over_another_body_or_secret_fails() {
        let sig = header(b"s3cret", "1000", b"{}");
        assert_eq!(
            verify(b"s3cret", Some("1000"), Some(&sig), b"[]", 1000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other", Some("1000"), Some(&sig), b"{}", 1000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"s3cret", Some("1000"), Some("sha256=zz"), b"{}", 1000),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn old_future_or_missing_timestamps_fail() {
        let sig = header(b"k", "1000", b"{}");
        assert_eq!(
            verify(b"k", Some("1000"), Some(&sig), b"{}", 1301),
            Err(SignatureError::Expired)
        );
        assert_eq!(
            verify(b"k", Some("1000"), Some(&sig), b"{}", 699),
            Err(SignatureError::Expired)
        );
        assert_eq!(
            verify(b"k", None, Some(&sig), b"{}", 1000),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(b"k", Some("soon"), Some(&sig), b"{}", 1000),
            Err(SignatureError::BadTimestamp)
        );
    }
}
