//! An OAuth 2.1 authorization server in front of your identity provider, as tower services:
//! it registers MCP clients, runs the browser sign-in against the upstream provider, issues its
//! own audience-bound access tokens and keeps the provider's tokens server-side, encrypted.
//!
//! Endpoints (paths under the issuer):
//!
//! | path | what |
//! | --- | --- |
//! | `/.well-known/oauth-authorization-server` (path-inserted) and `/.well-known/openid-configuration` | RFC 8414 metadata |
//! | `/jwks.json` | the keys that sign issued tokens |
//! | `/register` | RFC 7591 dynamic client registration |
//! | `/authorize` | the authorization endpoint (PKCE S256 only, exact redirect URIs, RFC 8707, RFC 9207) |
//! | `/consent` | the consent form's target (CSRF token, bound to the browser) |
//! | `/callback` | where the upstream provider returns the browser |
//! | `/token` | authorization-code and refresh-token grants (rotation, reuse detection) |
//! | `/revoke` | RFC 7009 |
//! | `/dev-login` | the development login page (with [`DevLogin`](crate::upstream::DevLogin) only) |
//!
//! Each is a leaf service ([`Endpoint`], `Error = Infallible`);
//! [`AuthorizationServer::service`] serves them all at those paths.
//!
//! Clients are registered dynamically, pre-registered ([`StaticClient`]), or, with
//! [`AuthorizationServerBuilder::client_id_metadata_documents`], identified by the https URL of
//! their Client ID Metadata Document (see [`cimd`](crate::cimd)). Client authentication at the
//! token and revocation endpoints: `none` (PKCE), `client_secret_basic`, `client_secret_post`,
//! and `private_key_jwt` for clients with keys.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use tower_mcp_auth::ProtectedResource;
//! use tower_mcp_auth::server::AuthorizationServer;
//! use tower_mcp_auth::store::{MemoryStore, crypto::EncryptionKeys};
//! use tower_mcp_auth::upstream::DevLogin;
//!
//! let resource = ProtectedResource::builder("https://mcp.example.com/mcp")
//!     .authorization_server("https://mcp.example.com")
//!     .scopes_supported(["mcp:read", "mcp:admin"])
//!     .build()?;
//! let server = AuthorizationServer::builder("https://mcp.example.com", resource)
//!     .store(Arc::new(MemoryStore::new()))
//!     .encryption_keys(EncryptionKeys::generate())
//!     .upstream(Arc::new(DevLogin::new("alice")))
//!     .build()
//!     .await?;
//! let verifier = server.verifier(); // for ClaimsExtractLayer
//! let endpoints = server.service(); // mount at the origin root
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use tower_service::Service;
use url::Url;

use crate::clock::{Clock, SharedClock};
use crate::error::{ConfigError, ConfigErrorKind};
use crate::resource::{ProtectedResource, parse_absolute};
use crate::scope::Scope;
use crate::store::crypto::EncryptionKeys;
use crate::store::{Store, StoreError};
use crate::upstream::Upstream;

pub(crate) mod assertion;
pub mod audit;
pub(crate) mod authorize;
mod client_auth;
mod keys;
pub(crate) mod limits;
mod metadata;
pub(crate) mod pages;
pub(crate) mod records;
mod register;
mod revoke;
mod token;
mod verifier;
pub(crate) mod web;

pub use self::web::EndpointBody;
pub(crate) use register::redirect_uri_ok;

/// Whether this server accepts `uri` as a redirect URI (registration and metadata
/// documents): absolute, exactly its own parsed form, no fragment, wildcard or userinfo; `https`,
/// `http` to a loopback host, or a private-use scheme containing a dot (RFC 8252 §7.1).
pub fn redirect_uri_allowed(uri: &str) -> bool {
    register::redirect_uri_ok(uri)
}
pub use audit::{AuditCounters, AuditEvent, AuditKind, AuditReason, AuditSink};
pub use keys::SigningKeys;
pub use limits::{Limit, RateLimits};
pub use verifier::{IssuedTokenVerifier, UpstreamAccess, UpstreamAccessError};

/// The connection's peer address, for the rate limits (see [`RateLimits`]). Insert it into
/// request extensions (for example from axum's `ConnectInfo<SocketAddr>`); without it, all
/// requests share one budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub IpAddr);

/// Lifetimes of what the server issues.
#[derive(Debug, Clone)]
pub(crate) struct Lifetimes {
    pub(crate) access_token: Duration,
    pub(crate) refresh_token: Duration,
    pub(crate) code: Duration,
    pub(crate) request: Duration,
    pub(crate) consent: Duration,
    pub(crate) unused_client: Duration,
}

pub(crate) struct Core {
    pub(crate) issuer: String,
    pub(crate) origin: String,
    pub(crate) paths: Paths,
    pub(crate) resource: ProtectedResource,
    pub(crate) scopes: Vec<Scope>,
    pub(crate) default_scopes: Vec<Scope>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) enc: EncryptionKeys,
    pub(crate) keys: SigningKeys,
    pub(crate) upstream: Arc<dyn Upstream>,
    pub(crate) lifetimes: Lifetimes,
    pub(crate) registration: bool,
    pub(crate) auto_approve: bool,
    pub(crate) revocation_check: bool,
    /// With the revocation check: how long a verdict may be reused from a token cache.
    pub(crate) revocation_check_interval: Duration,
    /// Bumped by every revocation this instance makes (ends cached verdicts at once).
    pub(crate) revocations: std::sync::atomic::AtomicU64,
    pub(crate) clock: SharedClock,
    pub(crate) store_timeout: Duration,
    pub(crate) limits: limits::Limiters,
    pub(crate) trusted_proxies: limits::TrustedProxies,
    pub(crate) audit: audit::Audit,
    /// Verifies issued tokens (for revocation requests; no claims mapping).
    pub(crate) jwt: crate::verify::JwtVerifier,
    /// Client ID metadata documents, when enabled.
    pub(crate) cimd: Option<crate::cimd::Cimd>,
    /// Store-managed signing keys follow the store (`None` for keys given to the builder).
    pub(crate) key_sync: Option<keys::KeySync>,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizationServer")
            .field("issuer", &self.issuer)
            .field("resource", &self.resource.resource())
            .field("upstream", &self.upstream)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// The endpoint paths, under the issuer's path.
#[derive(Debug, Clone)]
pub struct Paths {
    /// RFC 8414 metadata (path-inserted form).
    pub metadata: String,
    /// OpenID Connect discovery aliases of the metadata.
    pub openid_configuration: Vec<String>,
    /// The JWKS.
    pub jwks: String,
    /// Dynamic client registration.
    pub register: String,
    /// The authorization endpoint.
    pub authorize: String,
    /// The consent form's target.
    pub consent: String,
    /// The upstream provider's return address.
    pub callback: String,
    /// The token endpoint.
    pub token: String,
    /// The revocation endpoint.
    pub revoke: String,
    /// The development login page.
    pub dev_login: String,
}

impl Paths {
    fn new(issuer_path: &str) -> Self {
        let p = issuer_path.trim_end_matches('/');
        let mut openid = vec![format!("/.well-known/openid-configuration{p}")];
        if !p.is_empty() {
            openid.push(format!("{p}/.well-known/openid-configuration"));
        }
        Self {
            metadata: format!("/.well-known/oauth-authorization-server{p}"),
            openid_configuration: openid,
            jwks: format!("{p}/jwks.json"),
            register: format!("{p}/register"),
            authorize: format!("{p}/authorize"),
            consent: format!("{p}/consent"),
            callback: format!("{p}/callback"),
            token: format!("{p}/token"),
            revoke: format!("{p}/revoke"),
            dev_login: format!("{p}{}", crate::upstream::DevLogin::PATH),
        }
    }
}

impl Core {
    pub(crate) fn now(&self) -> i64 {
        self.clock.unix_time()
    }

    /// Records an audit event of the request `parts` (its endpoint was noted by the
    /// dispatcher).
    pub(crate) fn audit(&self, parts: &http::request::Parts, event: audit::Event) {
        let endpoint = parts.extensions.get::<Which>().copied().unwrap_or(Which::Metadata);
        self.audit.emit(endpoint, &parts.headers, self.now(), event);
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.origin, path)
    }

    /// Runs a store operation under the store deadline.
    pub(crate) async fn store<T>(&self, op: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        match tokio::time::timeout(self.store_timeout, op).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::unavailable("store deadline exceeded")),
        }
    }

    /// Brings store-managed signing keys up to date with the store when a check is due (see
    /// [`keys::KeySync`]); `forced` for a token signed with an unknown key. Whether the ring
    /// changed. Store failures leave the current keys in place.
    pub(crate) async fn sync_keys(&self, forced: bool) -> bool {
        let Some(sync) = &self.key_sync else { return false };
        let now = self.now();
        let Some(_guard) = sync.begin(now, forced).await else { return false };
        self.keys.prune(now);
        let sealed = match self.store(self.store.get(records::META, SIGNING_KEYS)).await {
            Ok(Some(sealed)) => sealed,
            Ok(None) => return false,
            Err(e) => {
                tracing::debug!(error = %e, "signing keys not reloaded: store unavailable");
                return false;
            }
        };
        if sync.seen(&sealed) {
            return false;
        }
        match self.keys.reload(&sealed, &self.enc, now) {
            Ok(()) => {
                sync.remember(&sealed);
                tracing::info!(kids = ?self.keys.kids(), "signing keys reloaded from the store");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "stored signing keys not loaded");
                false
            }
        }
    }

    /// The client a request names: a registered one from the store, or, for a URL-shaped
    /// client ID, the one [`CimdClientLayer`](crate::cimd::CimdClientLayer) resolved.
    pub(crate) async fn client(
        &self,
        ext: &::http::Extensions,
        client_id: &str,
    ) -> Result<Option<records::ClientRecord>, StoreError> {
        if crate::cimd::is_url_shaped(client_id) {
            let resolved = ext.get::<crate::cimd::VerifiedClient>().filter(|v| v.client_id() == client_id);
            return Ok(resolved.map(|v| v.record().clone()));
        }
        Ok(self.store(self.store.get(records::CLIENTS, client_id)).await?.as_deref().and_then(records::decode))
    }

    /// Whether the consent page is skipped for this client by the metadata-document trust
    /// policy.
    pub(crate) fn auto_approved(&self, client: &records::ClientRecord) -> bool {
        client.kind == records::ClientKind::Document
            && self.cimd.as_ref().is_some_and(|c| {
                let host = url::Url::parse(&client.client_id).ok().and_then(|u| u.host_str().map(str::to_owned));
                host.is_some_and(|h| c.config.decide_host(&h) == crate::cimd::HostDecision::AutoApproved)
            })
    }
}

/// A configured authorization server. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AuthorizationServer {
    core: Arc<Core>,
    verifier: IssuedTokenVerifier,
}

/// Builds an [`AuthorizationServer`].
pub struct AuthorizationServerBuilder {
    issuer: String,
    resource: ProtectedResource,
    store: Option<Arc<dyn Store>>,
    enc: Option<EncryptionKeys>,
    keys: Option<SigningKeys>,
    upstream: Option<Arc<dyn Upstream>>,
    default_scopes: Option<Vec<String>>,
    lifetimes: Lifetimes,
    registration: bool,
    auto_approve: bool,
    revocation_check: bool,
    revocation_check_interval: Duration,
    clock: Option<SharedClock>,
    store_timeout: Duration,
    insecure_http: bool,
    rate_limits: RateLimits,
    trusted_proxies: Vec<String>,
    clients: Vec<StaticClient>,
    cimd: Option<crate::cimd::CimdConfig>,
    audit_sinks: Vec<Arc<dyn AuditSink>>,
    key_refresh: Duration,
}

/// A client registered by the operator rather than through dynamic registration.
#[derive(Clone)]
pub struct StaticClient {
    client_id: String,
    secret: Option<String>,
    redirect_uris: Vec<String>,
    client_name: Option<String>,
    refresh: bool,
}

impl fmt::Debug for StaticClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticClient")
            .field("client_id", &self.client_id)
            .field("confidential", &self.secret.is_some())
            .field("redirect_uris", &self.redirect_uris)
            .finish_non_exhaustive()
    }
}

impl StaticClient {
    /// A public client (PKCE, no secret) with the given redirect URIs (same rules as
    /// registration: https, loopback http, or a private-use scheme with a dot).
    pub fn public<I, T>(client_id: impl Into<String>, redirect_uris: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        Self {
            client_id: client_id.into(),
            secret: None,
            redirect_uris: redirect_uris.into_iter().map(Into::into).collect(),
            client_name: None,
            refresh: true,
        }
    }

    /// A confidential client authenticating with `client_secret_basic`.
    pub fn confidential<I, T>(client_id: impl Into<String>, secret: impl Into<String>, redirect_uris: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        Self { secret: Some(secret.into()), ..Self::public(client_id, redirect_uris) }
    }

    /// The name shown on the consent page.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.client_name = Some(name.into());
        self
    }

    /// Whether refresh tokens are issued to it (default yes).
    pub fn refresh_tokens(mut self, yes: bool) -> Self {
        self.refresh = yes;
        self
    }

    fn record(&self, now: i64) -> Result<records::ClientRecord, ConfigError> {
        let invalid = |m: &str| ConfigError::new(ConfigErrorKind::Invalid, format!("client {:?}: {m}", self.client_id));
        if self.client_id.is_empty() || self.client_id.starts_with("https://") {
            return Err(invalid("the id must be non-empty and not URL-shaped"));
        }
        if self.redirect_uris.is_empty() || !self.redirect_uris.iter().all(|u| register::redirect_uri_ok(u)) {
            return Err(invalid("redirect URIs must be https, loopback http, or a private-use scheme"));
        }
        if self.secret.as_ref().is_some_and(|s| s.len() < 32) {
            return Err(invalid("a client secret must be at least 32 characters"));
        }
        let mut grant_types = vec!["authorization_code".to_owned()];
        if self.refresh {
            grant_types.push("refresh_token".to_owned());
        }
        Ok(records::ClientRecord {
            client_id: self.client_id.clone(),
            kind: records::ClientKind::Static,
            secret_hash: self.secret.as_deref().map(crate::store::crypto::secret_hash),
            token_endpoint_auth_method: if self.secret.is_some() { "client_secret_basic" } else { "none" }.to_owned(),
            redirect_uris: self.redirect_uris.clone(),
            grant_types,
            response_types: vec!["code".to_owned()],
            client_name: self.client_name.clone(),
            scope: None,
            application_type: None,
            extra: serde_json::Map::new(),
            issued_at: now,
            used: true,
            jwks: None,
            jwks_uri: None,
            version: None,
        })
    }
}

impl fmt::Debug for AuthorizationServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizationServerBuilder").field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

impl AuthorizationServer {
    /// Starts the configuration of the server whose issuer identifier is `issuer` (an https
    /// URL, or http on loopback; written verbatim into metadata and tokens) and which issues
    /// tokens for `resource`.
    pub fn builder(issuer: impl Into<String>, resource: ProtectedResource) -> AuthorizationServerBuilder {
        AuthorizationServerBuilder {
            issuer: issuer.into(),
            resource,
            store: None,
            enc: None,
            keys: None,
            upstream: None,
            default_scopes: None,
            lifetimes: Lifetimes {
                access_token: Duration::from_secs(600),
                refresh_token: Duration::from_secs(30 * 24 * 3600),
                code: Duration::from_secs(60),
                request: Duration::from_secs(600),
                consent: Duration::from_secs(30 * 24 * 3600),
                unused_client: Duration::from_secs(24 * 3600),
            },
            registration: true,
            auto_approve: false,
            revocation_check: false,
            revocation_check_interval: Duration::ZERO,
            clock: None,
            store_timeout: Duration::from_secs(3),
            insecure_http: false,
            rate_limits: RateLimits::default(),
            trusted_proxies: Vec::new(),
            clients: Vec::new(),
            cimd: None,
            audit_sinks: Vec::new(),
            key_refresh: Duration::from_secs(60),
        }
    }

    /// The issuer identifier.
    pub fn issuer(&self) -> &str {
        &self.core.issuer
    }

    /// The endpoint paths.
    pub fn paths(&self) -> &Paths {
        &self.core.paths
    }

    /// The signing keys.
    pub fn signing_keys(&self) -> &SigningKeys {
        &self.core.keys
    }

    /// Makes a new key the signing key and stores the key ring (encrypted), keeping the
    /// previous keys published for `overlap`; keys past their overlap are dropped.
    ///
    /// With several instances on one store, call it on any one of them: the new ring is
    /// written with a compare-and-swap on the stored one (two rotations at once both land),
    /// and the other instances load it within the
    /// [refresh interval](AuthorizationServerBuilder::signing_key_refresh), or at once when a
    /// token signed with the new key reaches them. Until then they keep signing with the
    /// previous key, so choose `overlap` of at least the access-token lifetime plus the
    /// refresh interval plus the verifiers' leeway: no issued token then stops verifying.
    pub async fn rotate_signing_key(&self, overlap: Duration) -> Result<(), ConfigError> {
        let core = &self.core;
        let store_error = |e: StoreError| ConfigError::new(ConfigErrorKind::Invalid, format!("store: {e}"));
        let Some(sync) = &core.key_sync else {
            // Keys given to the builder: rotated here, and stored for reference.
            let now = core.now();
            core.keys.prune(now);
            core.keys.rotate(now, overlap)?;
            let sealed = core.keys.seal(&core.enc)?;
            return core.store(core.store.put(records::META, SIGNING_KEYS, sealed, None)).await.map_err(store_error);
        };
        for _ in 0..8 {
            let now = core.now();
            let stored = core.store(core.store.get(records::META, SIGNING_KEYS)).await.map_err(store_error)?;
            let next = match &stored {
                Some(sealed) => SigningKeys::open(sealed, &core.enc)?,
                None => core.keys.detached()?,
            };
            next.prune(now);
            next.rotate(now, overlap)?;
            let sealed = next.seal(&core.enc)?;
            let written = match &stored {
                Some(old) => core.store(core.store.compare_and_swap(
                    records::META,
                    SIGNING_KEYS,
                    old,
                    Some(sealed.clone()),
                    None,
                )),
                None => core.store(core.store.insert_if_absent(records::META, SIGNING_KEYS, sealed.clone(), None)),
            }
            .await
            .map_err(store_error)?;
            if written {
                core.keys.adopt(&next)?;
                sync.remember(&sealed);
                tracing::info!(kids = ?core.keys.kids(), "signing key rotated");
                return Ok(());
            }
            // Another instance changed the ring meanwhile: rotate on top of its ring.
        }
        Err(ConfigError::new(ConfigErrorKind::Invalid, "signing keys changed concurrently too often; try again"))
    }

    /// One endpoint as a leaf service.
    pub fn endpoint(&self, which: Which) -> Endpoint {
        Endpoint { core: self.core.clone(), which }
    }

    /// The layer that resolves URL-shaped client IDs (client ID metadata documents), for
    /// endpoints mounted one by one: put it in front of the authorization, token and
    /// revocation endpoints. ([`service`](Self::service) includes it.) Without
    /// [`client_id_metadata_documents`](AuthorizationServerBuilder::client_id_metadata_documents)
    /// it passes requests through.
    pub fn cimd_layer(&self) -> crate::cimd::CimdClientLayer {
        crate::cimd::CimdClientLayer::new(self.core.clone())
    }

    /// Every endpoint at its path; other paths get 404.
    pub fn service(&self) -> Endpoints {
        Endpoints { core: self.core.clone() }
    }

    /// The verifier of the tokens this server issues, for
    /// [`ClaimsExtractLayer`](crate::ClaimsExtractLayer): stateless (no store read) unless the
    /// revocation check is on.
    pub fn verifier(&self) -> IssuedTokenVerifier {
        self.verifier.clone()
    }

    /// How many audit events of each kind this instance recorded (see [`audit`]).
    pub fn audit_counters(&self) -> Arc<AuditCounters> {
        self.core.audit.counters.clone()
    }
}

impl AuthorizationServerBuilder {
    /// Where everything is kept. Required.
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The key that encrypts upstream tokens and signing keys at rest. Required. The first
    /// start records a check value; a later start with another key fails.
    pub fn encryption_keys(mut self, keys: EncryptionKeys) -> Self {
        self.enc = Some(keys);
        self
    }

    /// How often store-managed signing keys are compared with the store, so a rotation made
    /// by another instance is picked up (default 60 s; checked when a token is issued or the
    /// JWKS is served, and at once for a token signed with an unknown key). Not used with
    /// [`signing_keys`](Self::signing_keys).
    pub fn signing_key_refresh(mut self, interval: Duration) -> Self {
        self.key_refresh = interval;
        self
    }

    /// The token-signing keys. Default: kept in the store (encrypted), generated on first start,
    /// shared by every instance on the same store.
    pub fn signing_keys(mut self, keys: SigningKeys) -> Self {
        self.keys = Some(keys);
        self
    }

    /// The identity provider users sign in with. Required.
    pub fn upstream(mut self, upstream: Arc<dyn Upstream>) -> Self {
        self.upstream = Some(upstream);
        self
    }

    /// Scopes granted when a request names none (default: the resource's challenge scopes).
    pub fn default_scopes<I, T>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.default_scopes = Some(scopes.into_iter().map(Into::into).collect());
        self
    }

    /// Access-token lifetime (default 10 min).
    pub fn access_token_lifetime(mut self, d: Duration) -> Self {
        self.lifetimes.access_token = d;
        self
    }

    /// Refresh-token lifetime (default 30 days; each rotation starts a new one).
    pub fn refresh_token_lifetime(mut self, d: Duration) -> Self {
        self.lifetimes.refresh_token = d;
        self
    }

    /// How long a remembered consent is reused (default 30 days; zero: always ask).
    pub fn consent_lifetime(mut self, d: Duration) -> Self {
        self.lifetimes.consent = d;
        self
    }

    /// How long a registered client that never obtained a token is kept (default 24 h).
    pub fn unused_client_lifetime(mut self, d: Duration) -> Self {
        self.lifetimes.unused_client = d;
        self
    }

    /// Turns dynamic client registration off (default on).
    pub fn dynamic_registration(mut self, enabled: bool) -> Self {
        self.registration = enabled;
        self
    }

    /// Skips the consent page (and the development login page). For automated tests only:
    /// it removes the protection against confused-deputy attacks.
    pub fn insecure_auto_approve(mut self) -> Self {
        self.auto_approve = true;
        self
    }

    /// Checks every access token against the store's revocations (one store read per
    /// request). Off: a revoked grant's access tokens work until they expire (at most the
    /// access-token lifetime).
    pub fn revocation_check(mut self, enabled: bool) -> Self {
        self.revocation_check = enabled;
        self
    }

    /// With the [revocation check](Self::revocation_check): how long a
    /// [`TokenCache`](crate::claims::TokenCache) may reuse a verdict before the store is read
    /// again (default zero: every request reads the store). Revocations made by this
    /// instance end reuse at once; those made by other instances sharing the store are seen
    /// within this interval.
    pub fn revocation_check_interval(mut self, interval: Duration) -> Self {
        self.revocation_check_interval = interval;
        self
    }

    /// Deadline of each store operation (default 3 s); past it the request gets 503.
    ///
    /// A 503 means nothing was granted, and an operation that timed out before it reached the
    /// store changed nothing: the client can retry. One case is ambiguous: if the store does
    /// consume a refresh token (the last step of a rotation) but its reply comes after the
    /// deadline, the successor is discarded and the client's retry looks like reuse of a
    /// rotated token, so the grant is revoked and the user signs in again. This fails closed;
    /// keep the deadline well above the store's worst healthy latency.
    pub fn store_timeout(mut self, d: Duration) -> Self {
        self.store_timeout = d;
        self
    }

    /// Adds a receiver of the [`audit`] events (client registered, consent, codes and tokens
    /// issued, refresh, reuse detected, revocation, every refusal with its reason). Events
    /// also go to `tracing` and to [`AuthorizationServer::audit_counters`]; sinks are called
    /// in the order added.
    pub fn audit_sink(mut self, sink: impl AuditSink) -> Self {
        self.audit_sinks.push(Arc::new(sink));
        self
    }

    /// The abuse limits of the endpoints (see [`RateLimits`] for the defaults).
    pub fn rate_limits(mut self, limits: RateLimits) -> Self {
        self.rate_limits = limits;
        self
    }

    /// Registrations per minute from one source address (default 30; see [`RateLimits`]).
    pub fn registrations_per_minute(mut self, n: u32) -> Self {
        self.rate_limits.register = Limit::per_minute(n, self.rate_limits.register.per_client());
        self
    }

    /// Revocation requests per minute from one source address (default 120; see
    /// [`RateLimits`]).
    pub fn revocations_per_minute(mut self, n: u32) -> Self {
        self.rate_limits.revoke = Limit::per_minute(n, self.rate_limits.revoke.per_client());
        self
    }

    /// Proxies (addresses or CIDR networks, e.g. `10.0.0.0/8`) whose `X-Forwarded-For` names
    /// the source address that rate limits count. Without any (the default) the header is
    /// ignored and the connection's peer is the source: nobody can pick their own budget by
    /// sending the header. Invalid entries fail [`build`](Self::build).
    pub fn trusted_proxies<I, S>(mut self, proxies: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.trusted_proxies.extend(proxies.into_iter().map(Into::into));
        self
    }

    /// The clock (default: the system clock).
    pub fn clock<C: Clock>(mut self, clock: C) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Allows an `http` issuer on a non-loopback host. Never in production.
    pub fn insecure_allow_http(mut self) -> Self {
        self.insecure_http = true;
        self
    }

    /// Pre-registers a client (stored at start-up, replacing an earlier registration with the
    /// same id). Its name is shown as verified on the consent page.
    pub fn client(mut self, client: StaticClient) -> Self {
        self.clients.push(client);
        self
    }

    /// Accepts client ID metadata documents: https URLs as client IDs, resolved by fetching
    /// the document there (see [`cimd`](crate::cimd)). Metadata then advertises
    /// `client_id_metadata_document_supported` and `private_key_jwt`.
    pub fn client_id_metadata_documents(mut self, config: crate::cimd::CimdConfig) -> Self {
        self.cimd = Some(config);
        self
    }

    /// Validates the configuration, checks the encryption key against the store, and loads
    /// (or creates and stores) the signing keys.
    pub async fn build(self) -> Result<AuthorizationServer, ConfigError> {
        let missing = |what: &str| ConfigError::new(ConfigErrorKind::Missing, format!("{what} is required"));
        let issuer_url: Url = parse_absolute(&self.issuer, "issuer", self.insecure_http)?;
        if issuer_url.query().is_some() {
            return Err(ConfigError::new(ConfigErrorKind::InvalidUrl, "issuer must not have a query"));
        }
        if !self.resource.authorization_servers().iter().any(|a| a == &self.issuer) {
            return Err(ConfigError::new(
                ConfigErrorKind::Invalid,
                "the resource must list this issuer, verbatim, among its authorization servers",
            ));
        }
        let store = self.store.ok_or_else(|| missing("a store"))?;
        let enc = self.enc.ok_or_else(|| missing("an encryption key"))?;
        let upstream = self.upstream.ok_or_else(|| missing("an upstream identity provider"))?;
        let clock = self.clock.unwrap_or_else(crate::clock::system);
        let scopes = self.resource.scopes_supported().to_vec();
        let default_scopes = match self.default_scopes {
            Some(list) => list
                .iter()
                .map(|s| {
                    Scope::new(s).map_err(|_| ConfigError::new(ConfigErrorKind::InvalidScope, format!("scope {s:?}")))
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => self.resource.challenge_scopes().to_vec(),
        };
        if let Some(s) = default_scopes.iter().find(|s| !scopes.contains(s)) {
            return Err(ConfigError::new(ConfigErrorKind::InvalidScope, format!("default scope {s} is not supported")));
        }
        check_encryption_key(&*store, &enc).await?;
        for client in &self.clients {
            let record = client.record(clock.unix_time())?;
            store
                .put(records::CLIENTS, &record.client_id, records::encode(&record), None)
                .await
                .map_err(|e| ConfigError::new(ConfigErrorKind::Invalid, format!("store: {e}")))?;
        }
        let (keys, key_sync) = match self.keys {
            Some(k) => (k, None),
            None => {
                let (keys, sealed) = load_or_create_keys(&*store, &enc).await?;
                (keys, Some(keys::KeySync::new(self.key_refresh, clock.unix_time(), &sealed)))
            }
        };
        let origin = issuer_url.origin().ascii_serialization();
        let paths = Paths::new(issuer_url.path());
        let trusted_proxies = limits::TrustedProxies::parse(&self.trusted_proxies)
            .map_err(|e| ConfigError::new(ConfigErrorKind::Invalid, e))?;
        let limiters = limits::Limiters::new(&self.rate_limits, &clock);
        let mut core = Core {
            issuer: self.issuer,
            origin,
            paths,
            resource: self.resource,
            scopes,
            default_scopes,
            store,
            enc,
            keys,
            upstream,
            lifetimes: self.lifetimes,
            registration: self.registration,
            auto_approve: self.auto_approve,
            revocation_check: self.revocation_check,
            revocation_check_interval: self.revocation_check_interval,
            revocations: std::sync::atomic::AtomicU64::new(0),
            clock,
            store_timeout: self.store_timeout,
            limits: limiters,
            trusted_proxies,
            jwt: placeholder_jwt()?,
            cimd: self.cimd.map(crate::cimd::Cimd::new),
            audit: audit::Audit { counters: Arc::default(), sinks: self.audit_sinks },
            key_sync,
        };
        core.jwt = verifier::jwt_verifier(None, &core)?;
        let core = Arc::new(core);
        let verifier = IssuedTokenVerifier::new(core.clone(), verifier::jwt_verifier(Some(core.clone()), &core)?);
        Ok(AuthorizationServer { core, verifier })
    }
}

/// A verifier that accepts nothing, replaced before the server is used.
fn placeholder_jwt() -> Result<crate::verify::JwtVerifier, ConfigError> {
    crate::verify::JwtVerifier::builder()
        .issuer(crate::verify::Issuer::with_keys("urn:unused", crate::verify::KeySet::default()))
        .audience("urn:unused")
        .build()
}

const KEY_CHECK: &str = "encryption-key-check";
const SIGNING_KEYS: &str = "signing-keys";

async fn check_encryption_key(store: &dyn Store, enc: &EncryptionKeys) -> Result<(), ConfigError> {
    let unavailable = |e: StoreError| ConfigError::new(ConfigErrorKind::Invalid, format!("store: {e}"));
    let sealed = enc
        .seal(b"tower-mcp-auth", KEY_CHECK.as_bytes())
        .map_err(|_| ConfigError::new(ConfigErrorKind::InvalidKey, "cannot encrypt"))?;
    if store.insert_if_absent(records::META, KEY_CHECK, sealed, None).await.map_err(unavailable)? {
        return Ok(());
    }
    let stored = store.get(records::META, KEY_CHECK).await.map_err(unavailable)?.unwrap_or_default();
    match enc.open(&stored, KEY_CHECK.as_bytes()) {
        Ok(v) if v == b"tower-mcp-auth" => {
            reseal_if_previous(store, enc, KEY_CHECK, &stored, b"tower-mcp-auth").await;
            Ok(())
        }
        _ => Err(ConfigError::new(
            ConfigErrorKind::InvalidKey,
            "the encryption key does not match the one this store was created with",
        )),
    }
}

/// A value sealed with a previous encryption key is sealed again with the active one (best
/// effort), so that the previous key can eventually be removed without locking the store.
async fn reseal_if_previous(store: &dyn Store, enc: &EncryptionKeys, name: &str, sealed: &[u8], plain: &[u8]) {
    if sealed.get(..4) == Some(&enc.active_version().to_be_bytes()[..]) {
        return;
    }
    if let Ok(resealed) = enc.seal(plain, name.as_bytes()) {
        let _ = store.compare_and_swap(records::META, name, sealed, Some(resealed), None).await;
    }
}

/// The stored signing keys (created on first start), with the sealed ring as stored.
async fn load_or_create_keys(store: &dyn Store, enc: &EncryptionKeys) -> Result<(SigningKeys, Vec<u8>), ConfigError> {
    let unavailable = |e: StoreError| ConfigError::new(ConfigErrorKind::Invalid, format!("store: {e}"));
    if let Some(sealed) = store.get(records::META, SIGNING_KEYS).await.map_err(unavailable)? {
        let keys = SigningKeys::open(&sealed, enc)?;
        if sealed.get(..4) != Some(&enc.active_version().to_be_bytes()[..]) {
            let resealed = keys.seal(enc)?;
            if let Ok(true) =
                store.compare_and_swap(records::META, SIGNING_KEYS, &sealed, Some(resealed.clone()), None).await
            {
                return Ok((keys, resealed));
            }
        }
        return Ok((keys, sealed));
    }
    let fresh = SigningKeys::generate()?;
    let sealed = fresh.seal(enc)?;
    if store.insert_if_absent(records::META, SIGNING_KEYS, sealed.clone(), None).await.map_err(unavailable)? {
        return Ok((fresh, sealed));
    }
    // Another instance stored its keys first: use those.
    let sealed = store.get(records::META, SIGNING_KEYS).await.map_err(unavailable)?.unwrap_or_default();
    Ok((SigningKeys::open(&sealed, enc)?, sealed))
}

/// Which endpoint an [`Endpoint`] serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Which {
    /// RFC 8414 metadata (and its OpenID Connect alias).
    Metadata,
    /// The JWKS.
    Jwks,
    /// Dynamic client registration.
    Register,
    /// The authorization endpoint.
    Authorize,
    /// The consent form's target.
    Consent,
    /// The upstream callback.
    Callback,
    /// The token endpoint.
    Token,
    /// The revocation endpoint.
    Revoke,
    /// The development login page.
    DevLogin,
}

/// One endpoint of an [`AuthorizationServer`], as a leaf service.
#[derive(Clone, Debug)]
pub struct Endpoint {
    core: Arc<Core>,
    which: Which,
}

/// Every endpoint of an [`AuthorizationServer`] at its path.
#[derive(Clone, Debug)]
pub struct Endpoints {
    core: Arc<Core>,
}

/// The future of the endpoint services.
pub type EndpointFuture = Pin<Box<dyn Future<Output = Result<Response<EndpointBody>, Infallible>> + Send>>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<B> Service<Request<B>> for Endpoint
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<EndpointBody>;
    type Error = Infallible;
    type Future = EndpointFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (core, which) = (self.core.clone(), self.which);
        Box::pin(async move { Ok(dispatch(core, which, req, false).await) })
    }
}

impl<B> Service<Request<B>> for Endpoints
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<EndpointBody>;
    type Error = Infallible;
    type Future = EndpointFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let core = self.core.clone();
        Box::pin(async move {
            let which = route(&core.paths, req.uri().path(), core.upstream.as_dev_login().is_some());
            match which {
                Some(which) => Ok(dispatch(core, which, req, true).await),
                None => Ok(self::web::status(StatusCode::NOT_FOUND)),
            }
        })
    }
}

fn route(paths: &Paths, path: &str, dev_login: bool) -> Option<Which> {
    Some(match path {
        p if p == paths.metadata || paths.openid_configuration.iter().any(|o| o == p) => Which::Metadata,
        p if p == paths.jwks => Which::Jwks,
        p if p == paths.register => Which::Register,
        p if p == paths.authorize => Which::Authorize,
        p if p == paths.consent => Which::Consent,
        p if p == paths.callback => Which::Callback,
        p if p == paths.token => Which::Token,
        p if p == paths.revoke => Which::Revoke,
        p if p == paths.dev_login && dev_login => Which::DevLogin,
        _ => return None,
    })
}

async fn dispatch<B>(core: Arc<Core>, which: Which, req: Request<B>, resolve_clients: bool) -> Response<EndpointBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(which);
    // Credentials in and out (client secrets, browser cookies) never print in a Debug form.
    crate::redact::mark_sensitive(&mut parts.headers);
    let (mut res, body) = answer(&core, which, &mut parts, body, resolve_clients).await;
    audit_refusal(&core, which, &parts, &body, &mut res);
    crate::redact::mark_sensitive(res.headers_mut());
    res
}

/// The answer, and the body read (empty when it could not be).
async fn answer<B>(
    core: &Core,
    which: Which,
    parts: &mut http::request::Parts,
    body: B,
    resolve_clients: bool,
) -> (Response<EndpointBody>, Bytes)
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let cors = matches!(which, Which::Metadata | Which::Jwks | Which::Register | Which::Token | Which::Revoke);
    if cors && parts.method == Method::OPTIONS {
        let allow = if matches!(which, Which::Metadata | Which::Jwks) { "GET, HEAD, OPTIONS" } else { "POST, OPTIONS" };
        return (self::web::preflight(allow), Bytes::new());
    }
    let body = match self::web::read_body(body).await {
        Ok(b) => b,
        Err(self::web::BodyError::TooLarge) => {
            let res =
                self::web::oauth_error(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request", "request body too large");
            return (res, Bytes::new());
        }
        Err(self::web::BodyError::Unreadable) => {
            let res = self::web::oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "request body unreadable");
            return (res, Bytes::new());
        }
    };
    if let Some(res) = check_limits(core, which, parts, &body) {
        return (res, body);
    }
    if resolve_clients
        && matches!(which, Which::Authorize | Which::Token | Which::Revoke)
        && let Err(mut res) = crate::cimd::layer::resolve_request(core, parts, &body).await
    {
        if cors {
            self::web::allow_cors(&mut res);
        }
        return (res, body);
    }
    let parts = &*parts;
    let mut res = match which {
        Which::Metadata => metadata::metadata(core, parts),
        Which::Jwks => {
            core.sync_keys(false).await;
            metadata::jwks(core, parts)
        }
        Which::Register => register::register(core, parts, &body).await,
        Which::Authorize => authorize::authorize(core, parts).await,
        Which::Consent => authorize::consent(core, parts, &body).await,
        Which::Callback => authorize::callback(core, parts).await,
        Which::Token => token::token(core, parts, &body).await,
        Which::Revoke => revoke::revoke(core, parts, &body).await,
        Which::DevLogin => authorize::dev_login(core, parts, &body).await,
    };
    if cors {
        self::web::allow_cors(&mut res);
    }
    (res, body)
}

/// A refused request becomes a [`AuditKind::Rejected`] event: every answer that carries a
/// refusal (error responses, error redirects to the client) or has an error status.
fn audit_refusal(
    core: &Core,
    which: Which,
    parts: &http::request::Parts,
    body: &[u8],
    res: &mut Response<EndpointBody>,
) {
    let refusal = res.extensions_mut().remove::<audit::Refusal>();
    let status = res.status();
    if refusal.is_none() && !status.is_client_error() && !status.is_server_error() {
        return;
    }
    let (error, description) = match refusal {
        Some(r) => (r.error, r.description),
        None => (
            std::borrow::Cow::Borrowed(match status {
                StatusCode::NOT_FOUND => "not_found",
                StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
                s if s.is_server_error() => "server_error",
                _ => "invalid_request",
            }),
            std::borrow::Cow::Borrowed(status.canonical_reason().unwrap_or("")),
        ),
    };
    let client_id = match which {
        Which::Authorize => crate::cimd::layer::requested_client_id(parts, body),
        Which::Token | Which::Revoke => claimed_client(parts, body),
        _ => None,
    };
    let event = audit::Event {
        kind: AuditKind::Rejected,
        client_id,
        subject: None,
        reason: Some(AuditReason { error, description, status: status.as_u16() }),
    };
    core.audit.emit(which, &parts.headers, core.now(), event);
}

/// The abuse limits of `which` (none for metadata, JWKS, consent, callback and dev login).
/// The refusal to send, if any. Leaves the request's source address in its extensions for the metadata document fetch.
fn check_limits(
    core: &Core,
    which: Which,
    parts: &mut http::request::Parts,
    body: &[u8],
) -> Option<Response<EndpointBody>> {
    let source = limits::source_key(&parts.extensions, &parts.headers, &core.trusted_proxies);
    parts.extensions.insert(limits::Source(source));
    let (limiter, client) = match which {
        Which::Register => (&core.limits.register, register::claimed_identity(body)),
        Which::Authorize => (&core.limits.authorize, crate::cimd::layer::requested_client_id(parts, body)),
        Which::Token => (&core.limits.token, claimed_client(parts, body)),
        Which::Revoke => (&core.limits.revoke, claimed_client(parts, body)),
        _ => return None,
    };
    let Err(refused) = limiter.check(source, client.as_deref().unwrap_or("")) else { return None };
    tracing::debug!(endpoint = ?which, "rate limited");
    Some(self::web::too_many_requests(which == Which::Authorize, refused.retry_after_secs))
}

/// The client a token or revocation request names: `client_id` (or the assertion's issuer),
/// else the user of its Basic credentials. Unauthenticated: only a rate-limit key.
fn claimed_client(parts: &http::request::Parts, body: &[u8]) -> Option<String> {
    crate::cimd::layer::requested_client_id(parts, body)
        .or_else(|| client_auth::basic_credentials(&parts.headers).ok().flatten().map(|(id, _)| id))
}
