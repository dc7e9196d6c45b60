//! Optional bearer-key authentication of the reports (`ANALYTICS_API_KEY`).

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use service_kit::error::ApiError;
use std::sync::Arc;

/// With a key configured, a request needs `Authorization: Bearer <key>` (compared in
/// constant time); without one, every request passes.
pub async fn require_key(
    State(key): State<Arc<Option<String>>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(key) = key.as_deref() else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), key.as_bytes()) {
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Authorization: Bearer <ANALYTICS_API_KEY> is required",
        )
        .into_response()
    }
}

/// Equal length and bytes, without an early exit that would leak the matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn keys_match_only_when_equal() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
