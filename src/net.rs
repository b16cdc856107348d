//! The hardened HTTP fetcher for URLs chosen by untrusted parties (Client ID Metadata
//! Documents, client `jwks_uri`s): an address policy applied to every address dialled, no
//! proxies, no redirects, only 200 with JSON, a streaming size cap, a total deadline, bounded
//! concurrency and per-host and global rates.
//!
//! The address policy ([`address_allowed`]) is enforced where addresses are chosen: the
//! fetcher's DNS resolver fails the whole resolution when any answer is refused, so the
//! connector never sees a refused address, and every fetch resolves afresh (no connection
//! reuse), so a rebinding answer is judged like any other. IP-literal hosts, which are never
//! resolved, are judged before anything is sent, and the peer address of every response is
//! checked again.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::net::IpAddr;
//! use std::sync::Arc;
//! use tower_mcp_auth::net::{FetchError, SafeFetcher, StaticResolver};
//!
//! // `metadata.example` resolves to a private address: refused before any connection.
//! let resolver = StaticResolver::new().with("metadata.example", ["10.0.0.7".parse::<IpAddr>().unwrap()]);
//! let fetcher = SafeFetcher::builder().resolver(Arc::new(resolver)).build().unwrap();
//! let url = "https://metadata.example/client.json".parse().unwrap();
//! assert_eq!(fetcher.get_json(&url).await.unwrap_err(), FetchError::AddressRefused);
//!
//! // Only https, without credentials in the URL.
//! let url = "http://metadata.example/client.json".parse().unwrap();
//! assert_eq!(fetcher.get_json(&url).await.unwrap_err(), FetchError::InvalidUrl);
//! # }
//! ```

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderMap, StatusCode};
use tokio::sync::Semaphore;
use url::{Host, Url};

use crate::error::{ConfigError, ConfigErrorKind};

/// Default total deadline of one fetch.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default body cap.
const DEFAULT_MAX_BYTES: usize = 5 * 1024;
/// Default number of fetches in flight.
const DEFAULT_MAX_CONCURRENT: usize = 16;
/// Default fetches per minute to one host.
const DEFAULT_PER_HOST_PER_MINUTE: u32 = 30;
/// Default fetches per minute in total.
const DEFAULT_GLOBAL_PER_MINUTE: u32 = 300;
/// Per-host limiter entries above which idle ones are pruned.
const PRUNE_ABOVE: usize = 1024;
/// Minimum time between two prunings of the per-host limiter.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// Resolves host names to addresses. The fetcher applies its address policy to what this
/// returns, before any connection is made.
pub trait Resolve: Send + Sync + 'static {
    /// The addresses of `host` (a DNS name, never an IP literal).
    fn resolve<'a>(&'a self, host: &'a str) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>>;
}

/// The system's resolver (`getaddrinfo`, through tokio). The default of
/// [`SafeFetcherBuilder::resolver`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>> {
        Box::pin(async move {
            let mut out: Vec<IpAddr> = Vec::new();
            for addr in tokio::net::lookup_host((host, 0)).await? {
                if !out.contains(&addr.ip()) {
                    out.push(addr.ip());
                }
            }
            Ok(out)
        })
    }
}

/// A fixed table of host names and their addresses (tests, or pinning known hosts). Names are
/// compared case-insensitively; an unknown name fails to resolve.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    hosts: HashMap<String, Vec<IpAddr>>,
}

impl StaticResolver {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the addresses of `host`.
    pub fn with(mut self, host: &str, addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        self.hosts.insert(host.to_ascii_lowercase(), addrs.into_iter().collect());
        self
    }
}

impl Resolve for StaticResolver {
    fn resolve<'a>(&'a self, host: &'a str) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>> {
        let found = self.hosts.get(&host.to_ascii_lowercase()).cloned();
        Box::pin(async move { found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "unknown host")) })
    }
}

/// Why a fetch failed. Never shown to the party that chose the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FetchError {
    /// The URL is not an `https` URL this fetcher may use.
    InvalidUrl,
    /// The host resolves (or is) an address the policy refuses.
    AddressRefused,
    /// The per-host or global rate is exhausted.
    RateLimited,
    /// The total deadline passed.
    Timeout,
    /// Connection, TLS or protocol failure.
    Transport,
    /// A redirect, any 3xx but 304 (never followed).
    Redirect,
    /// A status other than 200 (and not a redirect).
    Status(u16),
    /// The response is not JSON.
    NotJson,
    /// The body exceeds the cap.
    TooLarge,
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidUrl => f.write_str("the URL is not an https URL without credentials"),
            Self::AddressRefused => f.write_str("the host is, or resolves to, an address that may not be contacted"),
            Self::RateLimited => f.write_str("too many fetches to this host or in total; try again later"),
            Self::Timeout => f.write_str("the fetch did not complete before the deadline"),
            Self::Transport => f.write_str("the connection, TLS handshake or HTTP exchange failed"),
            Self::Redirect => f.write_str("the server answered with a redirect, which is never followed"),
            Self::Status(s) => write!(f, "the server answered with status {s} instead of 200"),
            Self::NotJson => f.write_str("the response is not a JSON document"),
            Self::TooLarge => f.write_str("the response body exceeds the size limit"),
        }
    }
}

impl std::error::Error for FetchError {}

/// A successful fetch.
#[derive(Debug, Clone)]
pub struct SafeResponse {
    /// The body (at most the cap).
    pub body: Bytes,
    /// `Cache-Control: max-age` (zero for `no-store` / `no-cache`), if given.
    pub max_age: Option<Duration>,
}

/// The hardened fetcher. Cheap to clone.
#[derive(Clone)]
pub struct SafeFetcher {
    inner: Arc<Inner>,
    allow_loopback: bool,
}

struct Inner {
    client: reqwest::Client,
    timeout: Duration,
    max_bytes: usize,
    slots: Semaphore,
    per_host: DefaultKeyedRateLimiter<String>,
    global: DefaultDirectRateLimiter,
    last_prune: Mutex<Instant>,
}

impl fmt::Debug for SafeFetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SafeFetcher")
            .field("allow_loopback", &self.allow_loopback)
            .field("timeout", &self.inner.timeout)
            .field("max_bytes", &self.inner.max_bytes)
            .finish_non_exhaustive()
    }
}

/// Builds a [`SafeFetcher`].
pub struct SafeFetcherBuilder {
    allow_loopback: bool,
    roots: Vec<Vec<u8>>,
    resolver: Arc<dyn Resolve>,
    timeout: Duration,
    max_bytes: usize,
    max_concurrent: usize,
    per_host_per_minute: u32,
    global_per_minute: u32,
}

impl fmt::Debug for SafeFetcherBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SafeFetcherBuilder")
            .field("allow_loopback", &self.allow_loopback)
            .field("timeout", &self.timeout)
            .field("max_bytes", &self.max_bytes)
            .field("max_concurrent", &self.max_concurrent)
            .field("per_host_per_minute", &self.per_host_per_minute)
            .field("global_per_minute", &self.global_per_minute)
            .finish_non_exhaustive()
    }
}

impl SafeFetcher {
    /// A builder with the defaults.
    pub fn builder() -> SafeFetcherBuilder {
        SafeFetcherBuilder {
            allow_loopback: false,
            roots: Vec::new(),
            resolver: Arc::new(SystemResolver),
            timeout: DEFAULT_TIMEOUT,
            max_bytes: DEFAULT_MAX_BYTES,
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            per_host_per_minute: DEFAULT_PER_HOST_PER_MINUTE,
            global_per_minute: DEFAULT_GLOBAL_PER_MINUTE,
        }
    }

    /// GETs `url`, expecting a JSON document.
    pub async fn get_json(&self, url: &Url) -> Result<SafeResponse, FetchError> {
        let host = checked_host(url)?;
        // IP literals are never resolved: judge them here (there is no DNS answer to rebind).
        let literal = match url.host() {
            Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal
            && !address_allowed(ip, self.allow_loopback)
        {
            tracing::debug!(host = %host, "fetch refused: address policy (IP literal)");
            return Err(FetchError::AddressRefused);
        }
        self.inner.admit(&host)?;
        let deadline = tokio::time::Instant::now() + self.inner.timeout;
        let result = self.fetch(url, deadline).await;
        if let Err(e) = &result {
            tracing::debug!(host = %host, error = ?e, "fetch failed");
        }
        result
    }

    /// Whether loopback addresses may be dialled.
    pub fn allows_loopback(&self) -> bool {
        self.allow_loopback
    }

    /// Waits for a slot, then exchanges, all before `deadline`.
    async fn fetch(&self, url: &Url, deadline: tokio::time::Instant) -> Result<SafeResponse, FetchError> {
        let permit = match tokio::time::timeout_at(deadline, self.inner.slots.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(FetchError::Transport),
            Err(_) => return Err(FetchError::Timeout),
        };
        // A slot freed at the deadline is no reason to start any I/O.
        if tokio::time::Instant::now() >= deadline {
            return Err(FetchError::Timeout);
        }
        // The exchange (and with it the connection) is dropped at the end of this statement,
        // before the slot is given back.
        let result = tokio::time::timeout_at(deadline, self.exchange(url)).await.unwrap_or(Err(FetchError::Timeout));
        drop(permit);
        result
    }

    /// One GET: connect (through the policing resolver), check the answer, read the capped body.
    async fn exchange(&self, url: &Url) -> Result<SafeResponse, FetchError> {
        let mut res = self
            .inner
            .client
            .get(url.clone())
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| classify(&e))?;
        // Defence in depth: the peer actually connected to must pass the policy too.
        match res.remote_addr() {
            Some(addr) if address_allowed(addr.ip(), self.allow_loopback) => {}
            Some(_) => return Err(FetchError::AddressRefused),
            None => return Err(FetchError::Transport),
        }
        let status = res.status();
        // 304 is no redirect (and, unasked, no valid answer either).
        if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
            return Err(FetchError::Redirect);
        }
        if status != StatusCode::OK {
            return Err(FetchError::Status(status.as_u16()));
        }
        if !is_json(res.headers()) {
            return Err(FetchError::NotJson);
        }
        let max_age = crate::verify::http::max_age(res.headers());
        let max_bytes = self.inner.max_bytes;
        if res.content_length().is_some_and(|n| n > max_bytes as u64) {
            return Err(FetchError::TooLarge);
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| classify(&e))? {
            if body.len() + chunk.len() > max_bytes {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(SafeResponse { body: body.freeze(), max_age })
    }
}

impl Inner {
    /// Takes one unit of the global and the per-host rate, or refuses. The global rate is
    /// checked first so that the per-host table grows at most at the global rate.
    fn admit(&self, host: &str) -> Result<(), FetchError> {
        if self.global.check().is_err() {
            tracing::debug!(host = %host, "fetch refused: global rate");
            return Err(FetchError::RateLimited);
        }
        self.prune();
        if self.per_host.check_key(&host.to_owned()).is_err() {
            tracing::debug!(host = %host, "fetch refused: per-host rate");
            return Err(FetchError::RateLimited);
        }
        Ok(())
    }

    /// Forgets hosts whose rate state is back to fresh, now and then.
    fn prune(&self) {
        if self.per_host.len() <= PRUNE_ABOVE {
            return;
        }
        let Ok(mut last) = self.last_prune.lock() else { return };
        if last.elapsed() >= PRUNE_EVERY {
            *last = Instant::now();
            self.per_host.retain_recent();
            self.per_host.shrink_to_fit();
        }
    }
}

impl SafeFetcherBuilder {
    /// Lets the fetcher reach loopback addresses (an authorization server on loopback, tests).
    pub fn allow_loopback(mut self, yes: bool) -> Self {
        self.allow_loopback = yes;
        self
    }

    /// An extra trusted root certificate (PEM).
    pub fn trust_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.roots.push(pem.into());
        self
    }

    /// The resolver (default: the system's).
    pub fn resolver(mut self, resolver: Arc<dyn Resolve>) -> Self {
        self.resolver = resolver;
        self
    }

    /// The total deadline of one fetch, waiting for a slot included (default 5 s).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// The body cap (default 5 KiB).
    pub fn max_bytes(mut self, n: usize) -> Self {
        self.max_bytes = n;
        self
    }

    /// Fetches in flight at once (default 16).
    pub fn max_concurrent(mut self, n: usize) -> Self {
        self.max_concurrent = n;
        self
    }

    /// Fetches per minute to one host (default 30).
    pub fn per_host_per_minute(mut self, n: u32) -> Self {
        self.per_host_per_minute = n;
        self
    }

    /// Fetches per minute in total (default 300).
    pub fn global_per_minute(mut self, n: u32) -> Self {
        self.global_per_minute = n;
        self
    }

    /// Builds the fetcher.
    pub fn build(self) -> Result<SafeFetcher, ConfigError> {
        let invalid = |what: &str| ConfigError::new(ConfigErrorKind::Invalid, format!("fetcher: {what}"));
        if self.timeout.is_zero() {
            return Err(invalid("the timeout must not be zero"));
        }
        if self.max_bytes == 0 {
            return Err(invalid("the body cap must not be zero"));
        }
        if self.max_concurrent == 0 || self.max_concurrent > Semaphore::MAX_PERMITS {
            return Err(invalid("the concurrency limit must be at least 1"));
        }
        let per_host = NonZeroU32::new(self.per_host_per_minute).ok_or_else(|| invalid("the per-host rate is zero"))?;
        let global = NonZeroU32::new(self.global_per_minute).ok_or_else(|| invalid("the global rate is zero"))?;

        let mut roots = Vec::new();
        for pem in &self.roots {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| ConfigError::new(ConfigErrorKind::InvalidKey, format!("root certificate: {e}")))?;
            if certs.is_empty() {
                return Err(ConfigError::new(ConfigErrorKind::InvalidKey, "root certificate: no certificate in PEM"));
            }
            roots.extend(certs);
        }
        let resolver = PolicyResolver { inner: self.resolver, allow_loopback: self.allow_loopback };
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
            .https_only(true)
            .dns_resolver(resolver)
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .user_agent(concat!("tower-mcp-auth/", env!("CARGO_PKG_VERSION")))
            .tls_certs_merge(roots)
            .build()
            .map_err(|e| ConfigError::new(ConfigErrorKind::Invalid, format!("HTTP client: {e}")))?;
        let inner = Inner {
            client,
            timeout: self.timeout,
            max_bytes: self.max_bytes,
            slots: Semaphore::new(self.max_concurrent),
            per_host: RateLimiter::keyed(Quota::per_minute(per_host)),
            global: RateLimiter::direct(Quota::per_minute(global)),
            last_prune: Mutex::new(Instant::now()),
        };
        Ok(SafeFetcher { inner: Arc::new(inner), allow_loopback: self.allow_loopback })
    }
}

/// The host of `url` as a rate-limit key, if `url` is one this fetcher may use at all.
fn checked_host(url: &Url) -> Result<String, FetchError> {
    if url.scheme() != "https" || !url.username().is_empty() || url.password().is_some() {
        return Err(FetchError::InvalidUrl);
    }
    match url.host_str() {
        Some(host) if !host.is_empty() => Ok(host.to_ascii_lowercase()),
        _ => Err(FetchError::InvalidUrl),
    }
}

/// Exactly one `Content-Type`, `application/json` or `application/<subtype>+json`.
fn is_json(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else { return false };
    let Ok(value) = value.to_str() else { return false };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let Some(subtype) = essence.strip_prefix("application/") else { return false };
    if subtype == "json" {
        return true;
    }
    subtype.strip_suffix("+json").is_some_and(|prefix| {
        !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    })
}

/// Maps a reqwest error, recognising a resolution refused by the policy.
fn classify(err: &reqwest::Error) -> FetchError {
    let mut source: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = source {
        if e.is::<Refused>() {
            return FetchError::AddressRefused;
        }
        source = e.source();
    }
    if err.is_timeout() { FetchError::Timeout } else { FetchError::Transport }
}

/// The error a resolution refused by the address policy fails with.
#[derive(Debug)]
struct Refused;

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("address refused by policy")
    }
}

impl StdError for Refused {}

/// The resolver reqwest dials through: the configured [`Resolve`], then the address policy
/// on every answer. One refused answer refuses the whole name.
struct PolicyResolver {
    inner: Arc<dyn Resolve>,
    allow_loopback: bool,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let inner = Arc::clone(&self.inner);
        let allow_loopback = self.allow_loopback;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = inner.resolve(&host).await.map_err(|e| {
                tracing::debug!(host = %host, error = %e, "resolution failed");
                Box::new(e) as Box<dyn StdError + Send + Sync>
            })?;
            if addrs.is_empty() || addrs.iter().any(|ip| !address_allowed(*ip, allow_loopback)) {
                tracing::debug!(host = %host, "fetch refused: address policy");
                return Err(Box::new(Refused) as Box<dyn StdError + Send + Sync>);
            }
            // Port 0: reqwest puts in the URL's port (or 443).
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// IPv4 networks never dialled (loopback is handled apart).
const V4_REFUSED: &[(u32, u8)] = &[
    (0x0000_0000, 8),  // 0.0.0.0/8 "this network", unspecified
    (0x0a00_0000, 8),  // 10.0.0.0/8 private
    (0x6440_0000, 10), // 100.64.0.0/10 CGNAT
    (0xa9fe_0000, 16), // 169.254.0.0/16 link-local (cloud metadata)
    (0xac10_0000, 12), // 172.16.0.0/12 private
    (0xc000_0000, 24), // 192.0.0.0/24 IETF protocol assignments
    (0xc000_0200, 24), // 192.0.2.0/24 TEST-NET-1
    (0xc058_6300, 24), // 192.88.99.0/24 6to4 relay anycast
    (0xc0a8_0000, 16), // 192.168.0.0/16 private
    (0xc612_0000, 15), // 198.18.0.0/15 benchmarking
    (0xc633_6400, 24), // 198.51.100.0/24 TEST-NET-2
    (0xcb00_7100, 24), // 203.0.113.0/24 TEST-NET-3
    (0xe000_0000, 4),  // 224.0.0.0/4 multicast
    (0xf000_0000, 4),  // 240.0.0.0/4 reserved, broadcast
];

/// Networks refused inside global unicast 2000::/3 (everything outside it is refused:
/// unique-local fc00::/7, link-local fe80::/10, site-local fec0::/10, multicast ff00::/8,
/// discard 100::/64, NAT64 local-use 64:ff9b:1::/48, ...).
const V6_REFUSED: &[(u128, u8)] = &[
    (0x2001_0000 << 96, 23), // IETF protocol assignments: Teredo, ORCHID, benchmarking, ...
    (0x2001_0db8 << 96, 32), // documentation
    (0x3fff_0000 << 96, 20), // documentation (RFC 9637)
    (0x5f00_0000 << 96, 16), // SRv6 SIDs
];

fn in_net<T>(addr: T, net: T, len: u8, bits: u32) -> bool
where
    T: Copy + std::ops::Shr<u32, Output = T> + PartialEq,
{
    let shift = bits - u32::from(len);
    addr >> shift == net >> shift
}

/// Whether the fetcher may dial `ip`.
///
/// Refused: unspecified, private, link-local, CGNAT, documentation, benchmarking, multicast,
/// reserved and broadcast IPv4; in IPv6 everything outside global unicast 2000::/3 and the
/// special blocks inside it. IPv4 addresses embedded in IPv6 (IPv4-mapped, IPv4-compatible,
/// NAT64 64:ff9b::/96, 6to4 2002::/16) are judged by the IPv4 rules. `allow_loopback` lets
/// through exactly 127.0.0.0/8 and ::1, never their embedded forms.
pub fn address_allowed(ip: IpAddr, allow_loopback: bool) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_allowed(v4, allow_loopback),
        IpAddr::V6(v6) if v6 == Ipv6Addr::LOCALHOST => allow_loopback,
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => v4_allowed(v4, false),
            None => {
                let bits = u128::from(v6);
                in_net(bits, 0x2000 << 112, 3, 128) && !V6_REFUSED.iter().any(|&(net, len)| in_net(bits, net, len, 128))
            }
        },
    }
}

fn v4_allowed(ip: Ipv4Addr, allow_loopback: bool) -> bool {
    if ip.is_loopback() {
        return allow_loopback;
    }
    let bits = u32::from(ip);
    !V4_REFUSED.iter().any(|&(net, len)| in_net(bits, net, len, 32))
}

/// The IPv4 address an IPv6 address stands for, if it is one of the embedding forms.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    let low32 = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    match bits >> 32 {
        // ::a.b.c.d (IPv4-compatible, deprecated; also ::), ::ffff:a.b.c.d (IPv4-mapped)
        0 | 0xffff => return Some(low32),
        // 64:ff9b::a.b.c.d (NAT64 well-known prefix)
        0x0064_ff9b_0000_0000_0000_0000 => return Some(low32),
        _ => {}
    }
    // 2002:aabb:ccdd::/48 (6to4)
    if bits >> 112 == 0x2002 {
        return Some(Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32));
    }
    None
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refused_addresses() {
        let refused = [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a00:1",
            "64:ff9b:1::1",
            "64:ff9b:1::808:808",
            "2002:7f00:1::1",
            "2002:a00:1::",
            "2002:c0a8:101::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "ff0e::1",
            "100::1",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:10::1",
            "2001:20::1",
            "2001:2::1",
            "2001:db8::1",
            "3fff::1",
            "5f00::1",
            "::ffff:0:7f00:1",
            "4000::1",
            "1000::1",
        ];
        for s in refused {
            assert!(!address_allowed(ip(s), false), "{s} must be refused");
            assert!(!address_allowed(ip(s), true), "{s} must be refused even with loopback allowed");
        }
    }

    #[test]
    fn loopback_only_when_allowed_and_only_plain() {
        for s in ["127.0.0.1", "127.1.2.3", "127.255.255.255", "::1"] {
            assert!(!address_allowed(ip(s), false), "{s}");
            assert!(address_allowed(ip(s), true), "{s}");
        }
        for s in ["::ffff:127.0.0.1", "::ffff:7f00:1", "64:ff9b::7f00:1", "::127.0.0.1", "2002:7f00:1::"] {
            assert!(!address_allowed(ip(s), true), "{s}");
        }
    }

    #[test]
    fn public_addresses_allowed() {
        for s in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.215.14",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.1",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "2001:200::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(address_allowed(ip(s), false), "{s} must be allowed");
        }
    }

    #[test]
    fn json_content_types() {
        let check = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_TYPE, HeaderValue::from_str(v).unwrap());
            is_json(&h)
        };
        for ok in
            ["application/json", "Application/JSON; charset=utf-8", "application/jwk-set+json", " application/json "]
        {
            assert!(check(ok), "{ok}");
        }
        for bad in ["text/html", "application/jsonp", "application/+json", "text/json", "application/x+json+xml", ""] {
            assert!(!check(bad), "{bad}");
        }
        assert!(!is_json(&HeaderMap::new()));
        let mut two = HeaderMap::new();
        two.append(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        two.append(CONTENT_TYPE, HeaderValue::from_static("text/html"));
        assert!(!is_json(&two));
    }

    #[test]
    fn urls_checked() {
        let url = |s: &str| Url::parse(s).unwrap();
        assert_eq!(checked_host(&url("https://Client.Example/x")), Ok("client.example".to_owned()));
        for bad in
            ["http://client.example/x", "ftp://client.example/", "https://u@client.example/", "https://u:p@c.example/"]
        {
            assert_eq!(checked_host(&url(bad)), Err(FetchError::InvalidUrl), "{bad}");
        }
    }

    #[test]
    fn builder_fails_closed() {
        assert!(SafeFetcher::builder().timeout(Duration::ZERO).build().is_err());
        assert!(SafeFetcher::builder().max_bytes(0).build().is_err());
        assert!(SafeFetcher::builder().max_concurrent(0).build().is_err());
        assert!(SafeFetcher::builder().per_host_per_minute(0).build().is_err());
        assert!(SafeFetcher::builder().global_per_minute(0).build().is_err());
        assert!(SafeFetcher::builder().trust_root_certificate("not a pem").build().is_err());
        let f = SafeFetcher::builder().build().unwrap();
        assert!(!f.allows_loopback());
    }

    #[test]
    fn display_is_a_sentence() {
        for e in [FetchError::InvalidUrl, FetchError::AddressRefused, FetchError::Status(404), FetchError::TooLarge] {
            let s = e.to_string();
            assert!(s.starts_with("the ") || s.starts_with("too "), "{s}");
        }
        assert!(FetchError::Status(404).to_string().contains("404"));
    }
}
