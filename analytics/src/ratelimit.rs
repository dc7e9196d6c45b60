//! Rate limits per client of the reports (`docs/api.md`, "Rate limit"): a client is the
//! API key it presented, or its address when no key is configured. Counted in requests:
//! a report's cost is its query, one per request.

use crate::auth::ApiKeyId;
use crate::config::Config;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use service_kit::error::ApiError;
use service_kit::ratelimit::{Client, Limiter, PeerIp, Quota, RefusalCounter};
use std::net::IpAddr;
use std::sync::Arc;

/// The counter of refused requests, by client.
const REFUSED: &str = "analytics_rate_limited_total";

/// Every client's bucket; `None` when `ANALYTICS_RATE_LIMIT_PER_SEC` is 0.
#[derive(Debug)]
pub struct ClientLimits {
    limiter: Option<Limiter>,
    trusted_proxy_hops: usize,
    refused: RefusalCounter,
}

impl ClientLimits {
    /// Call after `metrics::install()` (it registers the refusal counter).
    pub fn new(config: &Config) -> ClientLimits {
        let quota = Quota::new(
            config.analytics_rate_limit_per_sec,
            config.analytics_rate_limit_burst,
            1,
        );
        ClientLimits {
            limiter: quota.map(Limiter::new),
            trusted_proxy_hops: config.trusted_proxy_hops,
            refused: RefusalCounter::register(REFUSED, config.api_keys()),
        }
    }

    pub fn quota(&self) -> Option<Quota> {
        self.limiter.as_ref().map(Limiter::quota)
    }

    /// Drops the buckets of clients idle long enough (the upkeep task calls this).
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.forget_idle();
        }
    }
}

/// Who a request counts against: the key it presented, else its client's address.
fn client(key: Option<ApiKeyId>, peer: IpAddr, headers: &HeaderMap, trusted_hops: usize) -> Client {
    match key {
        Some(ApiKeyId(id)) => Client::Key(id),
        None => Client::ip(service_kit::ratelimit::client_ip(
            peer,
            headers,
            trusted_hops,
        )),
    }
}

/// Answers 429 `rate_limited` with `Retry-After` to a client over its quota. Runs after
/// the key check, which names the key; a refused request never reaches the database.
pub async fn limit(
    State(limits): State<Arc<ClientLimits>>,
    PeerIp(peer): PeerIp,
    request: Request,
    next: Next,
) -> Response {
    let Some(limiter) = &limits.limiter else {
        return next.run(request).await;
    };
    let key = request.extensions().get::<ApiKeyId>().copied();
    let client = client(key, peer, request.headers(), limits.trusted_proxy_hops);
    match limiter.take(client, 1) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            limits.refused.count(client);
            // The address only here, at debug: the counter's label says `ip` for all.
            tracing::debug!(
                client = %client.label(),
                client_ip = ?match client { Client::Ip(ip) => Some(ip), _ => None },
                ?wait,
                "Rate limited"
            );
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "this client sent more requests per second than its quota; retry after \
                 Retry-After seconds",
            )
            .with_retry_after(service_kit::ratelimit::retry_after_secs(wait))
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use service_kit::secret::KeyId;

    #[test]
    fn a_request_with_a_key_counts_against_the_key_and_one_without_against_its_address() {
        let id = KeyId::of(b"some key");
        let peer: IpAddr = [192, 0, 2, 1].into();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "198.51.100.7".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(
            client(Some(ApiKeyId(id)), peer, &headers, 1),
            Client::Key(id)
        );
        assert_eq!(client(None, peer, &headers, 0), Client::Ip(peer));
        assert_eq!(
            client(None, peer, &headers, 1),
            Client::Ip([198, 51, 100, 7].into())
        );
    }

    #[test]
    fn by_default_a_client_may_make_50_requests_a_second_and_0_turns_the_limit_off() {
        let parse = |args: &[&str]| {
            let mut all = vec!["analytics"];
            all.extend_from_slice(args);
            <Config as clap::Parser>::try_parse_from(all).unwrap_or_else(|e| panic!("{e}"))
        };
        let quota = ClientLimits::new(&parse(&[])).quota();
        assert_eq!(
            quota.map(|q| (q.per_sec.get(), q.burst.get())),
            Some((50, 50))
        );
        let off = parse(&["--analytics-rate-limit-per-sec=0"]);
        assert_eq!(ClientLimits::new(&off).quota(), None);
    }
}
