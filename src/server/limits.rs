//! Abuse limits of the authorization server's endpoints: registration, authorization, token,
//! revocation and client ID metadata document fetches.
//!
//! Every limited request is counted twice, with GCRA token buckets from `governor`:
//!
//! - against its **client** (the `client_id` it names; for a registration, the client name and
//!   the host of its first redirect URI; for a document fetch, the document's URL), from its
//!   source address;
//! - against its **source address** alone, a higher ceiling.
//!
//! The client budget is checked first and a request refused by it does not touch the address
//! budget, so a noisy client behind an egress address shared with other hosted clients uses
//! up its own budget, not theirs. A flood that changes its client on every request meets the
//! address ceiling instead. IPv6 addresses count per /64 (what one host usually holds).
//!
//! The source address is the connection's peer, which the application puts in the request's
//! extensions as [`PeerAddr`](super::PeerAddr) (from axum's `ConnectInfo`, for example).
//! `X-Forwarded-For` is ignored unless the
//! peer is one of the configured trusted proxies; then the rightmost address in it that is not
//! itself a trusted proxy is the source. Without any address all requests share one budget
//! (a warning is logged once).
//!
//! Budgets are per server instance (behind a load balancer with N instances, an address gets
//! up to N times the budget). Refusals are `429 Too Many Requests` with `Retry-After`.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use governor::RateLimiter;
use governor::state::keyed::DefaultKeyedStateStore;
use http::HeaderMap;
use ipnet::IpNet;

use crate::clock::SharedClock;

/// Requests per minute allowed from one source address, and from one client at one address.
/// Each is also the burst: a full budget can be spent at once, then refills evenly over the
/// minute. Zero turns that budget off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    per_address: u32,
    per_client: u32,
}

impl Limit {
    /// At most `per_address` requests a minute from one source address, of which at most
    /// `per_client` for one client.
    pub const fn per_minute(per_address: u32, per_client: u32) -> Self {
        Self { per_address, per_client }
    }

    /// No limit.
    pub const fn unlimited() -> Self {
        Self { per_address: 0, per_client: 0 }
    }

    /// Requests a minute from one source address (0: unlimited).
    pub fn per_address(&self) -> u32 {
        self.per_address
    }

    /// Requests a minute for one client at one source address (0: unlimited).
    pub fn per_client(&self) -> u32 {
        self.per_client
    }
}

/// The abuse limits of each endpoint. The defaults, in requests per minute (per source
/// address / per client at that address):
///
/// | endpoint | per address | per client |
/// | --- | --- | --- |
/// | registration | 30 | 10 (same client name and redirect host) |
/// | authorization | 300 | 60 |
/// | token | 600 | 120 |
/// | revocation | 120 | 60 |
/// | metadata document fetches | 60 | 10 (per document URL, from any address) |
///
/// So, from one address, the 11th registration of the same client within a minute is
/// refused, and the 31st registration of any client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    pub(crate) register: Limit,
    pub(crate) authorize: Limit,
    pub(crate) token: Limit,
    pub(crate) revoke: Limit,
    pub(crate) cimd_fetch: Limit,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            register: Limit::per_minute(30, 10),
            authorize: Limit::per_minute(300, 60),
            token: Limit::per_minute(600, 120),
            revoke: Limit::per_minute(120, 60),
            cimd_fetch: Limit::per_minute(60, 10),
        }
    }
}

impl RateLimits {
    /// No limits at all (tests, or limits enforced in front of the server).
    pub fn unlimited() -> Self {
        Self {
            register: Limit::unlimited(),
            authorize: Limit::unlimited(),
            token: Limit::unlimited(),
            revoke: Limit::unlimited(),
            cimd_fetch: Limit::unlimited(),
        }
    }

    /// Dynamic client registration; the client is its name and the host of its first
    /// redirect URI.
    pub fn register(mut self, limit: Limit) -> Self {
        self.register = limit;
        self
    }

    /// The authorization endpoint.
    pub fn authorize(mut self, limit: Limit) -> Self {
        self.authorize = limit;
        self
    }

    /// The token endpoint.
    pub fn token(mut self, limit: Limit) -> Self {
        self.token = limit;
        self
    }

    /// The revocation endpoint.
    pub fn revoke(mut self, limit: Limit) -> Self {
        self.revoke = limit;
        self
    }

    /// Fetches of client ID metadata documents (only fetches: cached documents are free). The
    /// per-client budget is per document URL, whoever asks, so the server cannot be used to
    /// flood a document's host.
    pub fn cimd_fetch(mut self, limit: Limit) -> Self {
        self.cimd_fetch = limit;
        self
    }

    /// The current limit of registrations.
    pub fn register_limit(&self) -> Limit {
        self.register
    }
}

/// governor's clock, driven by the server's monotonic clock (so tests with a manual clock
/// control the refill).
#[derive(Clone)]
pub(crate) struct MonoClock(pub(crate) SharedClock);

impl governor::clock::Clock for MonoClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.0.monotonic()
    }
}

type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, MonoClock, governor::middleware::NoOpMiddleware<Duration>>;

/// How often the budgets of idle keys are dropped (every this many checks).
const SWEEP_EVERY: u64 = 1024;
/// Longest client text kept as a key; longer ones are cut (they still count, together).
const MAX_CLIENT_KEY: usize = 256;

/// One endpoint's two budgets.
pub(crate) struct Limiter {
    address: Option<Keyed<IpAddr>>,
    client: Option<Keyed<(IpAddr, Box<str>)>>,
    /// The per-client budget ignores the address (document fetches).
    client_only: bool,
    clock: MonoClock,
    checks: AtomicU64,
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter").finish_non_exhaustive()
    }
}

/// A refusal: try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) retry_after_secs: u64,
}

impl Limiter {
    pub(crate) fn new(limit: Limit, clock: &SharedClock, client_only: bool) -> Self {
        let clock = MonoClock(clock.clone());
        Self {
            address: keyed(limit.per_address, &clock),
            client: keyed(limit.per_client, &clock),
            client_only,
            clock,
            checks: AtomicU64::new(0),
        }
    }

    /// Counts one request of `client` from `source`; the client budget first, then the
    /// address budget (a request refused for its client does not use the address's).
    pub(crate) fn check(&self, source: IpAddr, client: &str) -> Result<(), Refused> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep();
        }
        let now = governor::clock::Clock::now(&self.clock);
        let refused = |not_until: governor::NotUntil<Duration>| {
            let wait = not_until.wait_time_from(now);
            Refused { retry_after_secs: (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1) }
        };
        if let Some(limiter) = &self.client {
            let client = prefix(client, MAX_CLIENT_KEY);
            let key = (if self.client_only { IpAddr::V6(Ipv6Addr::UNSPECIFIED) } else { source }, client.into());
            limiter.check_key(&key).map_err(refused)?;
        }
        if let Some(limiter) = &self.address {
            limiter.check_key(&source).map_err(refused)?;
        }
        Ok(())
    }

    /// Forgets keys whose budget is full again: bounded memory under address or client
    /// spraying.
    fn sweep(&self) {
        if let Some(l) = &self.address {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.client {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

fn keyed<K: std::hash::Hash + Eq + Clone>(per_minute: u32, clock: &MonoClock) -> Option<Keyed<K>> {
    let quota = governor::Quota::per_minute(NonZeroU32::new(per_minute)?);
    Some(RateLimiter::new(quota, DefaultKeyedStateStore::default(), clock.clone()))
}

/// `s` cut to at most `max` bytes, at a character boundary.
pub(crate) fn prefix(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Every endpoint's limiter.
#[derive(Debug)]
pub(crate) struct Limiters {
    pub(crate) register: Limiter,
    pub(crate) authorize: Limiter,
    pub(crate) token: Limiter,
    pub(crate) revoke: Limiter,
    pub(crate) cimd_fetch: Limiter,
}

impl Limiters {
    pub(crate) fn new(limits: &RateLimits, clock: &SharedClock) -> Self {
        Self {
            register: Limiter::new(limits.register, clock, false),
            authorize: Limiter::new(limits.authorize, clock, false),
            token: Limiter::new(limits.token, clock, false),
            revoke: Limiter::new(limits.revoke, clock, false),
            cimd_fetch: Limiter::new(limits.cimd_fetch, clock, true),
        }
    }
}

/// The request's source address as the limits count it, in request extensions (set by the
/// server's dispatch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Source(pub(crate) IpAddr);

/// The address a budget is kept for: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by /64.
pub(crate) fn budget_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

/// Proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies(pub(crate) Vec<IpNet>);

impl TrustedProxies {
    /// Parses `10.0.0.0/8`, `2001:db8::/32` or a single address.
    pub(crate) fn parse<I, S>(items: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        items
            .into_iter()
            .map(|s| {
                let s = s.as_ref().trim();
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("trusted proxy {s:?} is not an address or a CIDR network"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The source address of a request from `peer` with these headers.
    pub(crate) fn source(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if self.0.is_empty() || !self.contains(peer) {
            return peer;
        }
        // Right to left: each hop appended the address it received from. Stop at the first
        // one that is not a trusted proxy; anything unparsable ends the walk at the last hop
        // known to be good.
        let mut source = peer;
        let hops = headers.get_all("x-forwarded-for").iter().collect::<Vec<_>>();
        for value in hops.iter().rev() {
            let Ok(text) = value.to_str() else { return source };
            for item in text.rsplit(',') {
                let Some(ip) = parse_hop(item.trim()) else { return source };
                source = ip;
                if !self.contains(ip) {
                    return source;
                }
            }
        }
        source
    }
}

/// `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1` or `[2001:db8::1]:4711`.
fn parse_hop(item: &str) -> Option<IpAddr> {
    item.parse::<IpAddr>().ok().or_else(|| item.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// The connection's peer, from [`PeerAddr`](super::PeerAddr).
pub(crate) fn peer(ext: &http::Extensions) -> Option<IpAddr> {
    ext.get::<super::PeerAddr>().map(|p| p.0)
}

/// The budget key of a request: its source address, or one shared key without one.
pub(crate) fn source_key(ext: &http::Extensions, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    static WARNED: AtomicBool = AtomicBool::new(false);
    match peer(ext) {
        Some(peer) => budget_key(trusted.source(peer, headers)),
        None => {
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "a request reached the authorization server without its peer address (PeerAddr): \
                     every such request shares one rate-limit budget"
                );
            }
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let none = TrustedProxies::default();
        assert_eq!(none.source(ip("10.0.0.5"), &headers(&["203.0.113.9"])), ip("10.0.0.5"));

        let lb = TrustedProxies::parse(["10.0.0.0/8", "2001:db8::1"]).unwrap();
        // From an untrusted peer the header is ignored.
        assert_eq!(lb.source(ip("198.51.100.1"), &headers(&["203.0.113.9"])), ip("198.51.100.1"));
        // The rightmost untrusted hop; spoofed entries to its left are ignored.
        assert_eq!(lb.source(ip("10.0.0.5"), &headers(&["1.1.1.1, 203.0.113.9"])), ip("203.0.113.9"));
        assert_eq!(lb.source(ip("10.0.0.5"), &headers(&["1.1.1.1", "203.0.113.9, 10.0.0.7"])), ip("203.0.113.9"));
        assert_eq!(lb.source(ip("2001:db8::1"), &headers(&["[2001:db8::9]:443"])), ip("2001:db8::9"));
        assert_eq!(lb.source(ip("10.0.0.5"), &headers(&["203.0.113.9:1234"])), ip("203.0.113.9"));
        // Garbage stops the walk at the last good hop.
        assert_eq!(lb.source(ip("10.0.0.5"), &headers(&["203.0.113.9, nonsense"])), ip("10.0.0.5"));
        assert_eq!(lb.source(ip("10.0.0.5"), &headers(&[])), ip("10.0.0.5"));
        // Only trusted hops: the leftmost.
        assert_eq!(lb.source(ip("10.0.0.5"), &headers(&["10.1.1.1"])), ip("10.1.1.1"));
        assert!(TrustedProxies::parse(["10.0.0.0/33"]).is_err());
        assert!(TrustedProxies::parse(["proxy.example"]).is_err());
    }

    #[test]
    fn ipv6_counts_per_64() {
        assert_eq!(budget_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(budget_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(budget_key(ip("192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn client_budget_first_then_address_ceiling() {
        let clock = std::sync::Arc::new(crate::clock::ManualClock::new(0));
        let shared: SharedClock = clock.clone();
        let limiter = Limiter::new(Limit::per_minute(5, 2), &shared, false);
        let a = ip("192.0.2.1");
        assert!(limiter.check(a, "noisy").is_ok());
        assert!(limiter.check(a, "noisy").is_ok());
        // The noisy client is refused for itself, not using the address's budget.
        for _ in 0..100 {
            assert_eq!(limiter.check(a, "noisy"), Err(Refused { retry_after_secs: 30 }));
        }
        assert!(limiter.check(a, "quiet").is_ok());
        assert!(limiter.check(a, "quiet").is_ok());
        assert!(limiter.check(a, "third").is_ok());
        // Five from the address: its ceiling.
        assert_eq!(limiter.check(a, "fourth"), Err(Refused { retry_after_secs: 12 }));
        assert!(limiter.check(ip("192.0.2.2"), "noisy").is_ok());
        clock.advance(Duration::from_secs(30));
        assert!(limiter.check(a, "noisy").is_ok());
    }
}
