//! Per-client rate limits: ingestion's producers, analytics' API keys (`docs/api.md`,
//! "Rate limit"). One token bucket per client, from `governor` (GCRA: one timestamp per
//! client, no timer), so that one client over its quota is refused while the others are
//! not touched.
//!
//! A client is the key that authenticated its request (a signing key or an API key, by
//! id), else its address. Keys are few (configured); addresses are not, so the buckets
//! of idle clients are dropped every [`UPKEEP_INTERVAL`], and past [`MAX_TRACKED`]
//! buckets every address not yet tracked shares one: memory stays bounded under a flood
//! of addresses, at the price of throttling them together.

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use crate::secret::{KeyId, Keys};

/// Most buckets of one limiter: a few MiB at most. Beyond, new addresses share
/// [`Client::Crowd`]'s bucket until the upkeep drops idle ones.
pub const MAX_TRACKED: usize = 65_536;

/// How often the buckets of clients idle long enough to be full again are dropped.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(10);

/// The `key` label of every address-keyed client: one value, since a value per address
/// would make a time series per client (unbounded; the address goes to the debug log).
pub const IP_LABEL: &str = "ip";

/// Who a request is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client {
    /// A configured key (signing key or API key), by id.
    Key(KeyId),
    /// An address: an IPv4 address, or an IPv6 /64 (what one subscriber gets, so that
    /// one host cannot take a fresh bucket per address of its prefix).
    Ip(IpAddr),
    /// Every address not tracked while [`MAX_TRACKED`] buckets are.
    Crowd,
}

impl Client {
    /// The client at this address (an IPv4-mapped IPv6 address is the IPv4 one).
    pub fn ip(addr: IpAddr) -> Client {
        Client::Ip(match addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(Ipv6Addr::from(
                    u128::from(v6) & 0xffff_ffff_ffff_ffff_0000_0000_0000_0000,
                )),
            },
            v4 => v4,
        })
    }

    /// The `key` label of the refusal counters: the key id, or [`IP_LABEL`].
    pub fn label(&self) -> String {
        match self {
            Client::Key(id) => id.to_string(),
            Client::Ip(_) | Client::Crowd => IP_LABEL.to_owned(),
        }
    }
}

/// The client's address: the connection's peer, or, behind `trusted_hops` proxies of
/// one's own, the address the outermost of them saw, from `X-Forwarded-For`.
///
/// Each proxy appends the address it received the request from, so the client is the
/// `trusted_hops`-th entry from the right (the peer is the innermost proxy). Entries left
/// of it are whatever the client wrote and are ignored. With fewer entries than that the
/// leftmost is taken; an entry that is not an address gives the peer (the proxy's bucket,
/// shared, rather than one the client could pick). Only correct when every request
/// reaches the service through those proxies: a client connecting directly could name any
/// address.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted_hops: usize) -> IpAddr {
    if trusted_hops == 0 {
        return peer;
    }
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    // `forwarded` followed by the peer; the client is `trusted_hops` from its end.
    let Some(from_right) = forwarded.len().checked_sub(trusted_hops) else {
        return forwarded.first().and_then(|e| parse_ip(e)).unwrap_or(peer);
    };
    forwarded
        .get(from_right)
        .and_then(|entry| parse_ip(entry))
        .unwrap_or(peer)
}

/// An `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:80`,
/// `[::1]:80`).
fn parse_ip(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// The connection's peer address, which `service_kit::http` puts in every request's
/// extensions (`ConnectInfo`); `0.0.0.0` when served some other way (every such request
/// then shares one bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for PeerIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<PeerIp, Infallible> {
        Ok(PeerIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip()),
        ))
    }
}

/// A quota: `per_sec` tokens a second, at most `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub per_sec: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Quota {
    /// `per_sec` 0 means no limit (`None`). The burst is one second's worth unless given,
    /// and never below `at_least`: the largest single request must be able to pass, or
    /// its client would be refused forever.
    pub fn new(per_sec: u32, burst: Option<u32>, at_least: u32) -> Option<Quota> {
        let per_sec = NonZeroU32::new(per_sec)?;
        let burst = burst.unwrap_or(per_sec.get()).max(at_least);
        Some(Quota {
            per_sec,
            burst: NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN),
        })
    }
}

type Buckets<C> = governor::RateLimiter<
    Client,
    DefaultKeyedStateStore<Client>,
    C,
    NoOpMiddleware<<C as Clock>::Instant>,
>;

/// A bucket per client, all with the same quota.
#[derive(Debug)]
pub struct Limiter<C: Clock = DefaultClock> {
    buckets: Buckets<C>,
    clock: C,
    quota: Quota,
}

impl Limiter {
    pub fn new(quota: Quota) -> Limiter {
        Limiter::with_clock(quota, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Limiter<C> {
    /// With a clock of one's own (tests use governor's `FakeRelativeClock`).
    pub fn with_clock(quota: Quota, clock: C) -> Limiter<C> {
        let gcra = governor::Quota::per_second(quota.per_sec).allow_burst(quota.burst);
        Limiter {
            buckets: governor::RateLimiter::new(
                gcra,
                DefaultKeyedStateStore::default(),
                clock.clone(),
            ),
            clock,
            quota,
        }
    }

    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// Takes `n` tokens from the client's bucket, all or none; or says how long until
    /// they would be there.
    pub fn take(&self, client: Client, n: u32) -> Result<(), Duration> {
        let Some(n) = NonZeroU32::new(n) else {
            return Ok(());
        };
        let client = match client {
            Client::Ip(_) if self.buckets.len() >= MAX_TRACKED => Client::Crowd,
            client => client,
        };
        match self.buckets.check_key_n(&client, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(self.clock.now())),
            // More than the burst: never possible while `Quota::new` keeps the burst at
            // least the largest request; the time to earn them all, should it happen.
            Err(_) => Err(Duration::from_secs_f64(
                f64::from(n.get()) / f64::from(self.quota.per_sec.get()),
            )),
        }
    }

    /// Drops the buckets of clients idle long enough to be full again (indistinguishable
    /// from a new one), and gives the memory back.
    pub fn forget_idle(&self) {
        self.buckets.retain_recent();
        self.buckets.shrink_to_fit();
    }

    /// How many clients have a bucket.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// `Retry-After` for a wait: whole seconds rounded up, at least 1 (a client retrying
/// sooner would only be refused again).
pub fn retry_after_secs(wait: Duration) -> u32 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    u32::try_from(secs).unwrap_or(u32::MAX).max(1)
}

/// Calls `forget_idle` every [`UPKEEP_INTERVAL`] (a closure over the limiters).
pub fn spawn_upkeep(forget_idle: impl Fn() + Send + 'static) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            forget_idle();
        }
    })
}

/// A counter of refused requests by client, `<name>{key}`: each configured key's id, or
/// [`IP_LABEL`] when requests are keyed by address. The labels a service can count are
/// registered at 0 at start, so that `rate()` and alerts see the first refusal.
#[derive(Debug)]
pub struct RefusalCounter {
    name: &'static str,
    by_key: HashMap<KeyId, metrics::Counter>,
    ip: Option<metrics::Counter>,
}

impl RefusalCounter {
    /// Call after `metrics::install()`. `keys`: the keys requests are keyed by, `None`
    /// when they are keyed by address.
    pub fn register(name: &'static str, keys: Option<&Keys>) -> RefusalCounter {
        let registered = |label: String| {
            let counter = metrics::counter!(name, "key" => label);
            counter.increment(0);
            counter
        };
        RefusalCounter {
            name,
            by_key: keys
                .into_iter()
                .flat_map(Keys::iter)
                .map(|key| (key.id(), registered(key.id().to_string())))
                .collect(),
            ip: keys.is_none().then(|| registered(IP_LABEL.to_owned())),
        }
    }

    pub fn count(&self, client: Client) {
        let known = match client {
            Client::Key(id) => self.by_key.get(&id),
            Client::Ip(_) | Client::Crowd => self.ip.as_ref(),
        };
        match known {
            Some(counter) => counter.increment(1),
            None => metrics::counter!(self.name, "key" => client.label()).increment(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn quota(per_sec: u32, burst: u32) -> Quota {
        Quota::new(per_sec, Some(burst), 1).unwrap_or_else(|| unreachable!())
    }

    fn key(n: u8) -> Client {
        Client::Key(KeyId::of(&[n; 32]))
    }

    fn headers(forwarded: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in forwarded {
            headers.append(
                "x-forwarded-for",
                value.parse().unwrap_or_else(|_| unreachable!()),
            );
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn a_client_over_its_quota_waits_while_another_is_untouched() {
        let clock = FakeRelativeClock::default();
        let limiter = Limiter::with_clock(quota(100, 1000), clock.clone());
        assert_eq!(limiter.take(key(1), 1000), Ok(()));
        let wait = limiter.take(key(1), 50).err().unwrap_or_default();
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(
            limiter.take(key(2), 1000),
            Ok(()),
            "another key has its own"
        );
        clock.advance(Duration::from_millis(500));
        assert_eq!(limiter.take(key(1), 50), Ok(()));
    }

    #[test]
    fn a_refused_request_takes_nothing_and_an_idle_bucket_refills_to_the_burst_only() {
        let clock = FakeRelativeClock::default();
        let limiter = Limiter::with_clock(quota(10, 20), clock.clone());
        assert_eq!(limiter.take(key(1), 15), Ok(()));
        assert!(limiter.take(key(1), 10).is_err());
        assert_eq!(limiter.take(key(1), 5), Ok(()), "the refusal took nothing");
        clock.advance(Duration::from_secs(3600));
        assert_eq!(limiter.take(key(1), 20), Ok(()));
        assert!(limiter.take(key(1), 1).is_err());
    }

    #[test]
    fn idle_clients_are_forgotten_and_busy_ones_kept() {
        let clock = FakeRelativeClock::default();
        let limiter = Limiter::with_clock(quota(10, 10), clock.clone());
        let _ = limiter.take(key(1), 1);
        let _ = limiter.take(key(2), 10);
        clock.advance(Duration::from_millis(500));
        limiter.forget_idle();
        assert_eq!(limiter.tracked(), 1, "key 2 has not refilled yet");
        clock.advance(Duration::from_secs(1));
        limiter.forget_idle();
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn past_the_tracking_cap_new_addresses_share_one_bucket() {
        let limiter = Limiter::with_clock(quota(1, 1), FakeRelativeClock::default());
        for n in 0..MAX_TRACKED as u32 {
            let _ = limiter.take(Client::ip(IpAddr::V4(Ipv4Addr::from(n))), 1);
        }
        let stranger = || Client::ip(ip("203.0.113.7"));
        assert_eq!(limiter.take(stranger(), 1), Ok(()));
        assert!(limiter.take(stranger(), 1).is_err(), "the crowd's bucket");
        assert_eq!(limiter.tracked(), MAX_TRACKED + 1);
        assert_eq!(limiter.take(key(1), 1), Ok(()), "keys are still apart");
    }

    #[test]
    fn no_rate_means_no_limit_and_the_burst_holds_the_largest_request() {
        assert_eq!(Quota::new(0, Some(5), 1), None);
        assert_eq!(Quota::new(5000, None, 1000), Some(quota(5000, 5000)));
        assert_eq!(Quota::new(10, None, 1000), Some(quota(10, 1000)));
        assert_eq!(Quota::new(10, Some(1), 1000), Some(quota(10, 1000)));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_at_least_one() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn ipv6_clients_are_their_64_and_mapped_ipv4_is_ipv4() {
        assert_eq!(
            Client::ip(ip("2001:db8:1:2:aaaa::1")),
            Client::ip(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            Client::ip(ip("2001:db8:1:2::1")),
            Client::ip(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            Client::ip(ip("::ffff:192.0.2.1")),
            Client::Ip(ip("192.0.2.1"))
        );
        assert_eq!(Client::ip(ip("192.0.2.1")).label(), "ip");
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_the_headers_say() {
        let peer = ip("192.0.2.10");
        assert_eq!(client_ip(peer, &headers(&["198.51.100.1"]), 0), peer);
    }

    #[test]
    fn behind_trusted_proxies_the_client_is_counted_from_the_right() {
        let peer = ip("10.0.0.2");
        // The client forged the first entry; the one proxy appended the real address.
        let one = headers(&["6.6.6.6, 198.51.100.1"]);
        assert_eq!(client_ip(peer, &one, 1), ip("198.51.100.1"));
        // Two proxies: the outer one's entry, split over two header lines, with a port.
        let two = headers(&["6.6.6.6, [2001:db8::1]:4711", "10.0.0.1"]);
        assert_eq!(client_ip(peer, &two, 2), ip("2001:db8::1"));
        // Fewer entries than proxies: the leftmost; no header at all: the peer.
        assert_eq!(
            client_ip(peer, &headers(&["198.51.100.1"]), 2),
            ip("198.51.100.1")
        );
        assert_eq!(client_ip(peer, &HeaderMap::new(), 1), peer);
        // Not an address: the proxy's own (shared) bucket.
        assert_eq!(client_ip(peer, &headers(&["unknown"]), 1), peer);
    }
}
