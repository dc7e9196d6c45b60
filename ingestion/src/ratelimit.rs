//! Rate limits per producer (`docs/api.md`, "Rate limit"): a producer is the signing key
//! that verified its request, or its address when requests are not signed. Each has two
//! token buckets: one counted in events (they load the pipeline) and one in body bytes
//! (large events load it too, and cost no more events).

use crate::config::Config;
use crate::routes::webhook::MAX_BATCH;
use crate::signature::SigningKeyId;
use axum::http::HeaderMap;
use governor::clock::{Clock, DefaultClock};
use service_kit::ratelimit::{Client, Limiter, Quota, RefusalCounter};
use service_kit::secret::Keys;
use std::net::IpAddr;
use std::time::Duration;

/// The counter of refused requests, by producer.
const REFUSED: &str = "ingestion_rate_limited_total";

/// Which quota refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    Events,
    Bytes,
}

impl Exceeded {
    pub const fn as_str(self) -> &'static str {
        match self {
            Exceeded::Events => "events",
            Exceeded::Bytes => "bytes",
        }
    }
}

/// A refusal: which quota, and how long until the request would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub quota: Exceeded,
    pub wait: Duration,
}

/// The buckets of every producer; a quota set to 0 is not enforced.
#[derive(Debug)]
pub struct ProducerLimits<C: Clock + Clone = DefaultClock> {
    events: Option<Limiter<C>>,
    bytes: Option<Limiter<C>>,
    trusted_proxy_hops: usize,
    refused: RefusalCounter,
}

impl ProducerLimits {
    /// Call after `metrics::install()` (it registers the refusal counter). `keys`: the
    /// signing keys, when requests are signed.
    pub fn new(config: &Config, keys: Option<&Keys>) -> ProducerLimits {
        ProducerLimits::with_clock(config, keys, DefaultClock::default())
    }
}

impl<C: Clock + Clone> ProducerLimits<C> {
    pub fn with_clock(config: &Config, keys: Option<&Keys>, clock: C) -> ProducerLimits<C> {
        let largest_body = u32::try_from(config.http_max_body_bytes).unwrap_or(u32::MAX);
        let events = Quota::new(
            config.rate_limit_events_per_sec,
            config.rate_limit_burst,
            MAX_BATCH as u32,
        );
        let bytes = Quota::new(
            config.rate_limit_bytes_per_sec,
            config.rate_limit_bytes_burst,
            largest_body,
        );
        ProducerLimits {
            events: events.map(|quota| Limiter::with_clock(quota, clock.clone())),
            bytes: bytes.map(|quota| Limiter::with_clock(quota, clock)),
            trusted_proxy_hops: config.trusted_proxy_hops,
            refused: RefusalCounter::register(REFUSED, keys),
        }
    }

    /// The quotas in force, for the start-up log: `(events, bytes)`.
    pub fn quotas(&self) -> (Option<Quota>, Option<Quota>) {
        (
            self.events.as_ref().map(Limiter::quota),
            self.bytes.as_ref().map(Limiter::quota),
        )
    }

    /// Who a request counts against: the key that verified it, else its client's address.
    pub fn producer(
        &self,
        signed_by: Option<SigningKeyId>,
        peer: IpAddr,
        headers: &HeaderMap,
    ) -> Client {
        match signed_by {
            Some(SigningKeyId(id)) => Client::Key(id),
            None => Client::ip(service_kit::ratelimit::client_ip(
                peer,
                headers,
                self.trusted_proxy_hops,
            )),
        }
    }

    /// Takes the request's events, then its body bytes, from the producer's buckets.
    ///
    /// Each bucket takes all or nothing, but the two are separate: a request refused for
    /// its bytes has already taken its events (the buckets have no refund). That costs a
    /// producer at the edge of its byte quota at most one request's events, which refill
    /// while it waits the `Retry-After` it is told anyway.
    pub fn take(&self, producer: Client, events: usize, body_bytes: usize) -> Result<(), Refused> {
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let checks = [
            (Exceeded::Events, &self.events, count(events)),
            (Exceeded::Bytes, &self.bytes, count(body_bytes)),
        ];
        for (quota, limiter, n) in checks {
            if let Some(limiter) = limiter
                && let Err(wait) = limiter.take(producer, n)
            {
                self.refused.count(producer);
                return Err(Refused { quota, wait });
            }
        }
        Ok(())
    }

    /// Drops the buckets of producers idle long enough (the upkeep task calls this).
    pub fn forget_idle(&self) {
        for limiter in [&self.events, &self.bytes].into_iter().flatten() {
            limiter.forget_idle();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use service_kit::secret::KeyId;

    fn config(args: &[&str]) -> Config {
        let mut all = vec!["ingestion"];
        all.extend_from_slice(args);
        <Config as clap::Parser>::try_parse_from(all).unwrap_or_else(|e| panic!("{e}"))
    }

    fn limits(args: &[&str], clock: &FakeRelativeClock) -> ProducerLimits<FakeRelativeClock> {
        ProducerLimits::with_clock(&config(args), None, clock.clone())
    }

    fn producer(n: u8) -> Client {
        Client::Key(KeyId::of(&[n; 32]))
    }

    #[test]
    fn by_default_a_producer_may_send_a_second_of_events_at_once_and_no_more() {
        let clock = FakeRelativeClock::default();
        let limits = limits(&[], &clock);
        for _ in 0..5 {
            assert_eq!(limits.take(producer(1), 1000, 1000), Ok(()));
        }
        let refused = limits.take(producer(1), 1000, 1000);
        assert_eq!(
            refused,
            Err(Refused {
                quota: Exceeded::Events,
                wait: Duration::from_millis(200)
            })
        );
        assert_eq!(limits.take(producer(2), 1000, 1000), Ok(()));
    }

    #[test]
    fn large_bodies_hit_the_byte_quota_before_the_event_quota() {
        let clock = FakeRelativeClock::default();
        let limits = limits(
            &[
                "--http-max-body-bytes=1000",
                "--rate-limit-bytes-per-sec=1000",
                "--rate-limit-bytes-burst=2000",
            ],
            &clock,
        );
        assert_eq!(limits.take(producer(1), 1, 1000), Ok(()));
        assert_eq!(limits.take(producer(1), 1, 1000), Ok(()));
        let refused = limits.take(producer(1), 1, 1000);
        assert_eq!(
            refused.map_err(|r| (r.quota, r.wait)),
            Err((Exceeded::Bytes, Duration::from_secs(1)))
        );
        clock.advance(Duration::from_secs(1));
        assert_eq!(limits.take(producer(1), 1, 1000), Ok(()));
    }

    #[test]
    fn zero_turns_a_quota_off() {
        let clock = FakeRelativeClock::default();
        let limits = limits(
            &[
                "--rate-limit-events-per-sec=0",
                "--rate-limit-bytes-per-sec=0",
            ],
            &clock,
        );
        assert_eq!(limits.quotas(), (None, None));
        for _ in 0..100 {
            assert_eq!(limits.take(producer(1), 1000, 2_000_000), Ok(()));
        }
    }

    #[test]
    fn a_burst_below_one_full_request_is_raised_to_it() {
        let limits = limits(
            &["--rate-limit-burst=10", "--rate-limit-bytes-burst=10"],
            &FakeRelativeClock::default(),
        );
        let (events, bytes) = limits.quotas();
        assert_eq!(events.map(|q| q.burst.get()), Some(1000));
        assert_eq!(bytes.map(|q| q.burst.get()), Some(2_097_152));
    }

    #[test]
    fn a_signed_request_counts_against_its_key_and_an_unsigned_one_against_its_address() {
        let clock = FakeRelativeClock::default();
        let direct = limits(&[], &clock);
        let id = KeyId::of(b"some key");
        let peer: IpAddr = [192, 0, 2, 1].into();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "198.51.100.7".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(
            direct.producer(Some(SigningKeyId(id)), peer, &headers),
            Client::Key(id)
        );
        assert_eq!(direct.producer(None, peer, &headers), Client::Ip(peer));
        let proxied = limits(&["--trusted-proxy-hops=1"], &clock);
        assert_eq!(
            proxied.producer(None, peer, &headers),
            Client::Ip([198, 51, 100, 7].into())
        );
    }
}
