//! Bearer-key authentication of the reports (`ANALYTICS_API_KEY`, several keys allowed so
//! that one can be rotated without downtime).

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use service_kit::error::ApiError;
use service_kit::secret::{KeyId, Keys};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// The configured keys, kept as SHA-256 digests: a presented key is hashed and compared
/// with each digest in constant time, so neither the keys' bytes nor their lengths show
/// in the time an answer takes.
#[derive(Debug)]
pub struct ApiKeys(Vec<([u8; 32], KeyId)>);

/// The key a request presented, by id (safe to log), in the request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApiKeyId(pub KeyId);

impl ApiKeys {
    pub fn new(keys: &Keys) -> ApiKeys {
        ApiKeys(
            keys.iter()
                .map(|key| (Sha256::digest(key.bytes()).into(), key.id()))
                .collect(),
        )
    }

    /// The configured key equal to `presented`. Every key is compared, whichever matches,
    /// so the time taken does not tell which one did.
    pub fn find(&self, presented: &[u8]) -> Option<KeyId> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found = subtle::Choice::from(0);
        let mut index = 0u32;
        for (i, (configured, _)) in self.0.iter().enumerate() {
            let equal = configured.ct_eq(&digest);
            index.conditional_assign(&(i as u32), equal);
            found |= equal;
        }
        bool::from(found)
            .then(|| self.0.get(index as usize).map(|(_, id)| *id))
            .flatten()
    }
}

/// With keys configured, a request needs `Authorization: Bearer <one of them>`; without,
/// every request passes.
pub async fn require_key(
    State(keys): State<Arc<Option<ApiKeys>>>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(keys) = keys.as_ref() else {
        return next.run(req).await;
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    // No header is refused outright: there is nothing to compare.
    match presented.and_then(|key| keys.find(key.as_bytes())) {
        Some(id) => {
            req.extensions_mut().insert(ApiKeyId(id));
            next.run(req).await
        }
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Authorization: Bearer <ANALYTICS_API_KEY> is required",
        )
        .into_response(),
    }
}

/// The credentials of `Bearer <key>` (the scheme is case-insensitive, RFC 9110).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, key) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(key.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: &str = "first-key-of-at-least-thirty-two-bytes";
    const SECOND: &str = "second-key-of-at-least-thirty-two-bytes";

    fn keys() -> ApiKeys {
        let keys = service_kit::secret::keys(&format!("{FIRST},{SECOND}"));
        ApiKeys::new(&keys.unwrap_or_else(|e| panic!("{e}")))
    }

    #[test]
    fn each_configured_key_is_found_and_named_by_its_id() {
        let keys = keys();
        assert_eq!(
            keys.find(FIRST.as_bytes()),
            Some(KeyId::of(FIRST.as_bytes()))
        );
        assert_eq!(
            keys.find(SECOND.as_bytes()),
            Some(KeyId::of(SECOND.as_bytes()))
        );
    }

    #[test]
    fn other_keys_prefixes_and_the_empty_key_are_not_found() {
        let keys = keys();
        for other in ["", "first", &FIRST[..FIRST.len() - 1], &format!("{FIRST}x")] {
            assert_eq!(keys.find(other.as_bytes()), None, "{other:?}");
        }
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
    }
}
