//! Remote keys: a JWKS URL, or one found by discovery from an issuer, cached with
//! single-flight refresh, a cooldown for unknown `kid`s, back-off after failures and
//! last-good keys kept through outages.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::Value;
use tokio::sync::Mutex;
use url::Url;

use super::algorithm::Algorithm;
use super::http::{FetchError, HttpClient, max_age};
use super::keys::{KeySet, Lookup, VerifyingKey, parse_jwks};
use crate::clock::SharedClock;

/// Cache and refresh settings for remote keys.
#[derive(Debug, Clone)]
pub(crate) struct JwksConfig {
    pub(crate) default_ttl: Duration,
    pub(crate) min_ttl: Duration,
    pub(crate) max_ttl: Duration,
    pub(crate) refresh_cooldown: Duration,
    pub(crate) failure_backoff: Duration,
    pub(crate) max_stale: Duration,
}

impl Default for JwksConfig {
    fn default() -> Self {
        Self {
            default_ttl: Duration::from_secs(300),
            min_ttl: Duration::from_secs(30),
            max_ttl: Duration::from_secs(24 * 3600),
            refresh_cooldown: Duration::from_secs(30),
            failure_backoff: Duration::from_secs(5),
            max_stale: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Debug)]
pub(crate) enum Source {
    Jwks(Url),
    Discover(String),
}

pub(crate) struct Snapshot {
    pub(crate) keys: KeySet,
    pub(crate) generation: u64,
    /// Monotonic time after which the keys are stale; `None` before the first fetch.
    expires_at: Option<Duration>,
}

/// Why a refresh is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Never fetched, or the keys expired.
    Stale,
    /// A token named a `kid` the current keys do not hold.
    UnknownKid,
}

pub(crate) enum KeyState<'a> {
    Ready(&'a VerifyingKey),
    Invalid(&'static str),
    Refresh(Reason),
    Unavailable(Duration),
}

struct State {
    last_failure: Option<Duration>,
    discovered: Option<Url>,
}

pub(crate) struct RemoteKeys {
    source: Source,
    http: HttpClient,
    clock: SharedClock,
    cfg: JwksConfig,
    allowed: Vec<Algorithm>,
    snapshot: ArcSwap<Snapshot>,
    /// Monotonic nanoseconds of the last fetch attempt, `u64::MAX` if none.
    last_attempt: AtomicU64,
    /// Bumped after a refresh that dropped or changed a key.
    epoch: AtomicU64,
    state: Mutex<State>,
}

impl std::fmt::Debug for RemoteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeys").field("source", &self.source).finish_non_exhaustive()
    }
}

impl RemoteKeys {
    pub(crate) fn new(
        source: Source,
        http: HttpClient,
        clock: SharedClock,
        cfg: JwksConfig,
        allowed: Vec<Algorithm>,
    ) -> Self {
        Self {
            source,
            http,
            clock,
            cfg,
            allowed,
            snapshot: ArcSwap::from_pointee(Snapshot { keys: KeySet::default(), generation: 0, expires_at: None }),
            last_attempt: AtomicU64::new(u64::MAX),
            epoch: AtomicU64::new(0),
            state: Mutex::new(State { last_failure: None, discovered: None }),
        }
    }

    /// Changes whenever a refresh dropped or changed a key.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub(crate) fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    fn since_last_attempt(&self, now: Duration) -> Option<Duration> {
        match self.last_attempt.load(Ordering::Acquire) {
            u64::MAX => None,
            n => Some(now.saturating_sub(Duration::from_nanos(n))),
        }
    }

    /// Decides, without waiting, what the keys in `snap` say about (`kid`, `alg`).
    pub(crate) fn check<'a>(
        &self,
        snap: &'a Snapshot,
        kid: Option<&str>,
        alg: Algorithm,
        may_refresh: bool,
    ) -> KeyState<'a> {
        let now = self.clock.monotonic();
        let Some(expires_at) = snap.expires_at else {
            return if may_refresh {
                KeyState::Refresh(Reason::Stale)
            } else {
                KeyState::Unavailable(self.retry_after(now))
            };
        };
        if now >= expires_at {
            if may_refresh {
                return KeyState::Refresh(Reason::Stale);
            }
            if now >= expires_at + self.cfg.max_stale {
                return KeyState::Unavailable(self.retry_after(now));
            }
        }
        match snap.keys.lookup(kid, alg) {
            Lookup::Found(k) => KeyState::Ready(k),
            Lookup::Unusable => KeyState::Invalid("no usable key for kid and alg"),
            Lookup::UnknownKid => {
                let cooled = self.since_last_attempt(now).is_none_or(|d| d >= self.cfg.refresh_cooldown);
                if may_refresh && cooled {
                    KeyState::Refresh(Reason::UnknownKid)
                } else {
                    KeyState::Invalid("unknown kid")
                }
            }
        }
    }

    fn retry_after(&self, now: Duration) -> Duration {
        let waited = self.since_last_attempt(now).unwrap_or(Duration::ZERO);
        self.cfg.failure_backoff.saturating_sub(waited).max(Duration::from_secs(1))
    }

    /// Fetches new keys unless another task already did since `seen_generation`, the
    /// unknown-`kid` cooldown has not elapsed, or the last failure is too recent. Concurrent
    /// callers wait for the one fetch in flight.
    pub(crate) async fn refresh(&self, reason: Reason, seen_generation: u64) {
        let mut state = self.state.lock().await;
        let current = self.snapshot.load();
        if current.generation != seen_generation {
            return;
        }
        let now = self.clock.monotonic();
        match reason {
            Reason::UnknownKid => {
                if self.since_last_attempt(now).is_some_and(|d| d < self.cfg.refresh_cooldown) {
                    return;
                }
            }
            Reason::Stale => {
                if state.last_failure.is_some_and(|f| now.saturating_sub(f) < self.cfg.failure_backoff) {
                    return;
                }
            }
        }
        self.last_attempt.store(u64::try_from(now.as_nanos()).unwrap_or(u64::MAX - 1), Ordering::Release);
        match self.fetch(&mut state).await {
            Ok((keys, ttl)) => {
                state.last_failure = None;
                tracing::debug!(source = ?self.source, keys = keys.len(), ?ttl, "JWKS refreshed");
                let lost = !keys.holds_all(&current.keys);
                self.snapshot.store(Arc::new(Snapshot {
                    keys,
                    generation: current.generation + 1,
                    expires_at: Some(self.clock.monotonic() + ttl),
                }));
                // After the store (see SharedKeySet::replace).
                if lost {
                    self.epoch.fetch_add(1, Ordering::AcqRel);
                }
            }
            Err(why) => {
                state.last_failure = Some(self.clock.monotonic());
                state.discovered = None;
                tracing::warn!(source = ?self.source, why, "key fetch failed; keeping the last good keys");
            }
        }
    }

    async fn fetch(&self, state: &mut State) -> Result<(KeySet, Duration), &'static str> {
        let url = match &self.source {
            Source::Jwks(url) => url.clone(),
            Source::Discover(issuer) => match &state.discovered {
                Some(url) => url.clone(),
                None => {
                    let url = discover_jwks_uri(&self.http, issuer).await?;
                    state.discovered = Some(url.clone());
                    url
                }
            },
        };
        let fetched = self.http.get(&url).await.map_err(FetchError::as_str)?;
        let keys = parse_jwks(&fetched.body, &self.allowed)?;
        let ttl = max_age(&fetched.headers)
            .unwrap_or(self.cfg.default_ttl)
            .clamp(self.cfg.min_ttl, self.cfg.max_ttl.max(self.cfg.min_ttl));
        Ok((keys, ttl))
    }
}

/// The metadata URLs to try for `issuer`, in the order MCP clients use (RFC 8414 §3.1 path
/// insertion, then OpenID Connect Discovery in both placements).
pub(crate) fn discovery_urls(issuer: &Url) -> Vec<Url> {
    let origin = issuer.origin().ascii_serialization();
    let path = issuer.path().trim_end_matches('/');
    let candidates = if path.is_empty() {
        vec![
            format!("{origin}/.well-known/oauth-authorization-server"),
            format!("{origin}/.well-known/openid-configuration"),
        ]
    } else {
        vec![
            format!("{origin}/.well-known/oauth-authorization-server{path}"),
            format!("{origin}/.well-known/openid-configuration{path}"),
            format!("{origin}{path}/.well-known/openid-configuration"),
        ]
    };
    candidates.iter().filter_map(|c| Url::parse(c).ok()).collect()
}

/// Finds the `jwks_uri` of `issuer` through its metadata; the metadata `issuer` must be
/// identical to the configured one (RFC 8414 §3.3).
pub(crate) async fn discover_jwks_uri(http: &HttpClient, issuer: &str) -> Result<Url, &'static str> {
    let issuer_url = Url::parse(issuer).map_err(|_| "issuer is not a URL")?;
    for url in discovery_urls(&issuer_url) {
        match http.get(&url).await {
            Ok(fetched) => {
                let doc: Value = serde_json::from_slice(&fetched.body).map_err(|_| "metadata is not JSON")?;
                if doc.get("issuer").and_then(Value::as_str) != Some(issuer) {
                    return Err("metadata issuer differs from the configured issuer");
                }
                let jwks = doc.get("jwks_uri").and_then(Value::as_str).ok_or("metadata has no jwks_uri")?;
                let jwks = Url::parse(jwks).map_err(|_| "jwks_uri is not a URL")?;
                if !http.url_allowed(&jwks) {
                    return Err("jwks_uri must use https");
                }
                return Ok(jwks);
            }
            Err(FetchError::Status(s)) if (400..500).contains(&s) => continue,
            Err(e) => return Err(e.as_str()),
        }
    }
    Err("no authorization server metadata found")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_url_order() {
        let root = discovery_urls(&Url::parse("https://as.example").unwrap());
        assert_eq!(
            root.iter().map(Url::as_str).collect::<Vec<_>>(),
            [
                "https://as.example/.well-known/oauth-authorization-server",
                "https://as.example/.well-known/openid-configuration"
            ]
        );
        let tenant = discovery_urls(&Url::parse("https://as.example/tenant1/").unwrap());
        assert_eq!(
            tenant.iter().map(Url::as_str).collect::<Vec<_>>(),
            [
                "https://as.example/.well-known/oauth-authorization-server/tenant1",
                "https://as.example/.well-known/openid-configuration/tenant1",
                "https://as.example/tenant1/.well-known/openid-configuration"
            ]
        );
    }
}
