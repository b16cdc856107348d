//! Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document), the way MCP
//! 2026-07-28 prefers clients to identify themselves: the `client_id` is an https URL, and
//! the authorization server fetches the JSON document there instead of keeping a
//! registration.
//!
//! Turn it on with [`AuthorizationServerBuilder::client_id_metadata_documents`]; the
//! convenience service [`AuthorizationServer::service`] then resolves URL-shaped client IDs
//! before its authorization, token and revocation endpoints. When you mount endpoints one by
//! one, put [`CimdClientLayer`] (from [`AuthorizationServer::cimd_layer`]) in front of those
//! three.
//!
//! What happens to a URL-shaped client ID:
//!
//! 1. [`check_client_id`]: the URL rules, before any I/O (https, a path, no query, fragment,
//!    userinfo or dot segments, exactly its own parsed form).
//! 2. The trust policy of [`CimdConfig`]: denied hosts are refused; optionally only allowed
//!    hosts are accepted.
//! 3. The document, from the cache (kept in the [`Store`](crate::store::Store), so many
//!    instances fetch once; `Cache-Control` honoured within [60 s, 24 h]; failures and
//!    invalid documents never cached), or fetched through the hardened
//!    [`SafeFetcher`](crate::net::SafeFetcher), one fetch per URL at a time.
//! 4. [`ClientMetadataDocument::parse`]: the document rules, with the server's own redirect
//!    URI policy.
//!
//! Any failure aborts the authorization request with one generic error page (and
//! `invalid_client` at the token endpoint): the reason goes to the log, never to the client.
//!
//! [`AuthorizationServerBuilder::client_id_metadata_documents`]: crate::server::AuthorizationServerBuilder::client_id_metadata_documents
//! [`AuthorizationServer::service`]: crate::server::AuthorizationServer::service
//! [`AuthorizationServer::cimd_layer`]: crate::server::AuthorizationServer::cimd_layer

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::net::{FetchError, SafeFetcher};
use crate::server::records::{CIMD_DOCUMENTS, ClientKind, ClientRecord, decode, encode};
use crate::store::crypto::secret_hash;

pub mod document;
pub(crate) mod layer;

pub use document::{ClientMetadataDocument, DocumentError, check_client_id, is_url_shaped};
pub use layer::{CimdClientLayer, CimdClientService, VerifiedClient};

/// A host pattern: `example.com` (that host only) or `*.example.com` (any subdomain, not the
/// domain itself). Compared case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostPattern(String);

impl HostPattern {
    fn matches(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        match self.0.strip_prefix("*.") {
            Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
            None => host == self.0,
        }
    }
}

/// What the trust policy says about a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostDecision {
    /// On the deny list, or not on the allow list when only allowed hosts are accepted.
    Refused,
    /// Accepted; the user is asked for consent.
    Accepted,
    /// On the allow list: shown as trusted on the consent page.
    Trusted,
    /// On the allow list, and allowed hosts are auto-approved: no consent page.
    AutoApproved,
}

/// Configuration of client ID metadata document support.
#[derive(Clone)]
pub struct CimdConfig {
    fetcher: SafeFetcher,
    allow: Vec<HostPattern>,
    deny: Vec<HostPattern>,
    only_allowed: bool,
    auto_approve_allowed: bool,
    min_ttl: Duration,
    default_ttl: Duration,
    max_ttl: Duration,
}

impl fmt::Debug for CimdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CimdConfig")
            .field("allow", &self.allow)
            .field("deny", &self.deny)
            .field("only_allowed", &self.only_allowed)
            .field("auto_approve_allowed", &self.auto_approve_allowed)
            .finish_non_exhaustive()
    }
}

impl CimdConfig {
    /// Documents fetched with `fetcher` (which also fetches the `jwks_uri` of
    /// `private_key_jwt` clients). Every host accepted, none trusted; cache lifetimes within
    /// [60 s, 24 h], 5 min when the response does not say.
    pub fn new(fetcher: SafeFetcher) -> Self {
        Self {
            fetcher,
            allow: Vec::new(),
            deny: Vec::new(),
            only_allowed: false,
            auto_approve_allowed: false,
            min_ttl: Duration::from_secs(60),
            default_ttl: Duration::from_secs(300),
            max_ttl: Duration::from_secs(24 * 3600),
        }
    }

    /// Trusted hosts (`example.com` or `*.example.com`): marked as trusted on the consent page.
    pub fn allow_hosts<I, T>(mut self, hosts: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.allow.extend(hosts.into_iter().map(|h| HostPattern(h.into().to_ascii_lowercase())));
        self
    }

    /// Refused hosts (`example.com` or `*.example.com`), before any fetch.
    pub fn deny_hosts<I, T>(mut self, hosts: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.deny.extend(hosts.into_iter().map(|h| HostPattern(h.into().to_ascii_lowercase())));
        self
    }

    /// Accept documents from allowed hosts only (default: any host not denied).
    pub fn only_allowed_hosts(mut self, yes: bool) -> Self {
        self.only_allowed = yes;
        self
    }

    /// Skip the consent page for clients on allowed hosts (default: always ask). The user
    /// still signs in with the identity provider.
    pub fn auto_approve_allowed_hosts(mut self, yes: bool) -> Self {
        self.auto_approve_allowed = yes;
        self
    }

    /// Cache lifetime bounds, and the lifetime used when a response has no `Cache-Control`
    /// `max-age`.
    pub fn cache_lifetime(mut self, min: Duration, default: Duration, max: Duration) -> Self {
        self.min_ttl = min;
        self.max_ttl = max.max(min);
        self.default_ttl = default.clamp(self.min_ttl, self.max_ttl);
        self
    }

    /// The fetcher.
    pub fn fetcher(&self) -> &SafeFetcher {
        &self.fetcher
    }

    /// What the trust policy says about `host`.
    pub fn decide_host(&self, host: &str) -> HostDecision {
        if self.deny.iter().any(|p| p.matches(host)) {
            return HostDecision::Refused;
        }
        let allowed = self.allow.iter().any(|p| p.matches(host));
        match (allowed, self.only_allowed, self.auto_approve_allowed) {
            (true, _, true) => HostDecision::AutoApproved,
            (true, _, false) => HostDecision::Trusted,
            (false, true, _) => HostDecision::Refused,
            (false, false, _) => HostDecision::Accepted,
        }
    }

    /// The cache lifetime for a response's `max-age`.
    pub fn cache_ttl(&self, max_age: Option<Duration>) -> Duration {
        max_age.unwrap_or(self.default_ttl).clamp(self.min_ttl, self.max_ttl)
    }

    /// Everything the authorization server does with `client_id` except caching: the URL
    /// rules, the trust policy, the fetch and the document rules (with `redirect_uri_ok`,
    /// the server's redirect policy unless you pass another). For tools and diagnostics; the
    /// server itself goes through its cache.
    pub async fn fetch_and_validate(&self, client_id: &str) -> Result<Validated, CimdError> {
        let url = check_client_id(client_id, self.fetcher.allows_loopback()).map_err(CimdError::ClientId)?;
        let host = url.host_str().unwrap_or_default();
        let decision = self.decide_host(host);
        if decision == HostDecision::Refused {
            return Err(CimdError::HostRefused);
        }
        let res = self.fetcher.get_json(&url).await.map_err(CimdError::Fetch)?;
        let document = ClientMetadataDocument::parse(client_id, &res.body, crate::server::redirect_uri_ok)
            .map_err(CimdError::Document)?;
        Ok(Validated { document, ttl: self.cache_ttl(res.max_age), decision })
    }
}

/// A document that passed every check (see [`CimdConfig::fetch_and_validate`]).
#[derive(Debug, Clone)]
pub struct Validated {
    /// The document.
    pub document: ClientMetadataDocument,
    /// How long the server would cache it.
    pub ttl: Duration,
    /// What the trust policy says about its host.
    pub decision: HostDecision,
}

/// Why a client ID was not resolved. Logged for operators; clients get one generic answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CimdError {
    /// The URL breaks the client ID rules (no fetch was made).
    ClientId(DocumentError),
    /// The trust policy refuses the host (no fetch was made).
    HostRefused,
    /// The fetch failed.
    Fetch(FetchError),
    /// The document breaks the rules.
    Document(DocumentError),
    /// The store failed.
    Unavailable,
    /// A fetch was needed but the fetch budget (of this document, or of the requesting
    /// address) is spent; see [`RateLimits::cimd_fetch`](crate::server::RateLimits::cimd_fetch).
    RateLimited {
        /// Seconds until a fetch may be tried again.
        retry_after_secs: u64,
    },
}

impl fmt::Display for CimdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClientId(e) => write!(f, "client ID refused: {e}"),
            Self::HostRefused => f.write_str("the trust policy refuses this host"),
            Self::Fetch(e) => write!(f, "fetch failed: {e}"),
            Self::Document(e) => write!(f, "document refused: {e}"),
            Self::Unavailable => f.write_str("the store is unavailable"),
            Self::RateLimited { retry_after_secs } => {
                write!(f, "too many document fetches (retry after {retry_after_secs} s)")
            }
        }
    }
}

impl std::error::Error for CimdError {}

/// A document in the cache: the client record built from it, and until when it is fresh.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Cached {
    pub(crate) record: ClientRecord,
    pub(crate) expires_at: i64,
    pub(crate) decision_trusted: bool,
}

/// CIMD state of an authorization server: the configuration and the in-process caches (the
/// shared cache is the store).
pub(crate) struct Cimd {
    pub(crate) config: CimdConfig,
    /// Single flight and in-process copy of the stored documents; freshness is checked
    /// against the server's clock on every read.
    docs: moka::future::Cache<String, Arc<Cached>>,
    /// Client key sets fetched from `jwks_uri`s.
    keys: moka::future::Cache<String, Arc<crate::verify::KeySet>>,
    /// `jwks_uri`s refetched recently because of an unknown `kid` (one refetch per minute).
    refetched: moka::sync::Cache<String, ()>,
}

impl fmt::Debug for Cimd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.config.fmt(f)
    }
}

fn record_from(doc: &ClientMetadataDocument, now: i64) -> ClientRecord {
    ClientRecord {
        client_id: doc.client_id().to_owned(),
        kind: ClientKind::Document,
        secret_hash: None,
        token_endpoint_auth_method: doc.token_endpoint_auth_method().to_owned(),
        redirect_uris: doc.redirect_uris().to_vec(),
        grant_types: doc.grant_types().to_vec(),
        response_types: vec!["code".to_owned()],
        client_name: Some(doc.client_name().to_owned()),
        scope: doc.scope().map(str::to_owned),
        application_type: None,
        extra: serde_json::Map::new(),
        issued_at: now,
        used: true,
        jwks: doc.jwks().cloned(),
        jwks_uri: doc.jwks_uri().map(str::to_owned),
        version: Some(doc.fingerprint()),
    }
}

impl Cimd {
    pub(crate) fn new(config: CimdConfig) -> Self {
        Self {
            config,
            docs: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(24 * 3600))
                .build(),
            keys: moka::future::Cache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(300)).build(),
            refetched: moka::sync::Cache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(60)).build(),
        }
    }

    /// The client record for a URL-shaped client ID.
    pub(crate) async fn resolve(
        &self,
        core: &crate::server::Core,
        client_id: &str,
        source: std::net::IpAddr,
    ) -> Result<Arc<Cached>, CimdError> {
        let url = check_client_id(client_id, self.config.fetcher.allows_loopback()).map_err(CimdError::ClientId)?;
        let decision = self.config.decide_host(url.host_str().unwrap_or_default());
        if decision == HostDecision::Refused {
            return Err(CimdError::HostRefused);
        }
        for _ in 0..2 {
            if let Some(hit) = self.docs.get(client_id).await {
                if hit.expires_at > core.now() {
                    return Ok(hit);
                }
                self.docs.invalidate(client_id).await;
            }
            let loaded = self
                .docs
                .try_get_with(client_id.to_owned(), self.load(core, &url, decision, source))
                .await
                .map_err(|e| (*e).clone())?;
            if loaded.expires_at > core.now() {
                return Ok(loaded);
            }
            self.docs.invalidate(client_id).await;
        }
        Err(CimdError::Unavailable)
    }

    async fn load(
        &self,
        core: &crate::server::Core,
        url: &url::Url,
        decision: HostDecision,
        source: std::net::IpAddr,
    ) -> Result<Arc<Cached>, CimdError> {
        let client_id = url.as_str();
        let key = secret_hash(client_id);
        let stored = core.store(core.store.get(CIMD_DOCUMENTS, &key)).await.map_err(|_| CimdError::Unavailable)?;
        if let Some(cached) = stored.as_deref().and_then(decode::<Cached>)
            && cached.expires_at > core.now()
            && cached.record.client_id == client_id
        {
            return Ok(Arc::new(cached));
        }
        // Only real fetches count: per document URL (from anywhere) and per asking address.
        if let Err(refused) = core.limits.cimd_fetch.check(source, client_id) {
            return Err(CimdError::RateLimited { retry_after_secs: refused.retry_after_secs });
        }
        let res = self.config.fetcher.get_json(url).await.map_err(CimdError::Fetch)?;
        let doc = ClientMetadataDocument::parse(client_id, &res.body, crate::server::redirect_uri_ok)
            .map_err(CimdError::Document)?;
        let ttl = self.config.cache_ttl(res.max_age);
        let now = core.now();
        let cached = Cached {
            record: record_from(&doc, now),
            expires_at: now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
            decision_trusted: matches!(decision, HostDecision::Trusted | HostDecision::AutoApproved),
        };
        if let Err(e) = core.store(core.store.put(CIMD_DOCUMENTS, &key, encode(&cached), Some(ttl))).await {
            // The document is valid; the next request (or instance) fetches it again.
            tracing::warn!(error = %e, "client ID metadata document not cached");
        }
        Ok(Arc::new(cached))
    }

    /// The key set of a `private_key_jwt` client: inline, or fetched from its `jwks_uri`
    /// (cached; `refresh` asks for one refetch, at most once a minute per URI).
    pub(crate) async fn client_keys(
        &self,
        jwks_uri: &str,
        refresh: bool,
    ) -> Result<Arc<crate::verify::KeySet>, CimdError> {
        if refresh {
            if self.refetched.contains_key(jwks_uri) {
                return Err(CimdError::Fetch(FetchError::RateLimited));
            }
            self.refetched.insert(jwks_uri.to_owned(), ());
            self.keys.invalidate(jwks_uri).await;
        }
        let fetcher = self.config.fetcher.clone();
        let uri = jwks_uri.to_owned();
        self.keys
            .try_get_with(jwks_uri.to_owned(), async move {
                let url = url::Url::parse(&uri).map_err(|_| CimdError::Fetch(FetchError::InvalidUrl))?;
                let res = fetcher.get_json(&url).await.map_err(CimdError::Fetch)?;
                let text = std::str::from_utf8(&res.body)
                    .map_err(|_| CimdError::Document(DocumentError::new("jwks_uri: not UTF-8")))?;
                let set = crate::verify::KeySet::from_jwks_json(text)
                    .map_err(|e| CimdError::Document(DocumentError::new(format!("jwks_uri: {e}"))))?;
                Ok::<_, CimdError>(Arc::new(set))
            })
            .await
            .map_err(|e| (*e).clone())
    }
}
