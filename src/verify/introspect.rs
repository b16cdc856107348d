//! [`IntrospectionVerifier`]: opaque tokens checked at an RFC 7662 endpoint, with a bounded
//! cache keyed by a keyed hash of the token.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;
use url::Url;

use super::BoxVerifyFuture;
use super::claims::{self, ScopeClaim, parse_object};
use super::http::{FetchError, HttpClient, HttpOptions, url_allowed};
use crate::clock::{Clock, SharedClock};
use crate::error::{ConfigError, ConfigErrorKind, VerifyError};
use crate::resource::ProtectedResource;
use crate::token::{AccessToken, BearerToken};
use crate::verify::TokenVerifier;

type CacheKey = [u8; 32];

/// Verifies opaque tokens with OAuth 2.0 Token Introspection (RFC 7662).
///
/// The resource server authenticates to the introspection endpoint with HTTP Basic
/// (`client_secret_basic`). A token is accepted when the response says `active: true`, its
/// `exp` (if any) has not passed, its `aud` contains the configured audience and, when an
/// issuer is configured, its `iss` matches. Accepted tokens are cached under an HMAC of the
/// token (never the token itself as key) for at most the configured lifetime and never beyond
/// the token's `exp`, which is re-checked on every hit. Concurrent requests with the same
/// uncached token share one introspection call. Rejections are not cached. An endpoint that
/// cannot be reached, or answers anything but 200 JSON, yields a 503.
///
/// ```
/// use std::time::Duration;
/// use tower_mcp_auth::IntrospectionVerifier;
///
/// let verifier = IntrospectionVerifier::builder("https://idp.example.com/oauth2/introspect")
///     .client_credentials("mcp-server", "s3cret")
///     .audience("https://mcp.example.com/mcp")
///     .cache_ttl(Duration::from_secs(60))
///     .build()
///     .unwrap();
/// # drop(verifier);
/// ```
#[derive(Clone)]
pub struct IntrospectionVerifier(Arc<Inner>);

struct Inner {
    endpoint: Url,
    client_id: String,
    client_secret: String,
    audience: Option<String>,
    issuer: Option<String>,
    scope_claim: ScopeClaim,
    http: HttpClient,
    cache: moka::future::Cache<CacheKey, AccessToken>,
    clock: SharedClock,
    hash_key: [u8; 64],
    retry_after: Duration,
}

impl fmt::Debug for IntrospectionVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntrospectionVerifier")
            .field("endpoint", &self.0.endpoint.as_str())
            .field("client_id", &self.0.client_id)
            .field("audience", &self.0.audience)
            .finish_non_exhaustive()
    }
}

/// Builds an [`IntrospectionVerifier`].
pub struct IntrospectionVerifierBuilder {
    endpoint: String,
    credentials: Option<(String, String)>,
    audience: Option<String>,
    allow_missing_audience: bool,
    issuer: Option<String>,
    scope_claim: ScopeClaim,
    cache_ttl: Duration,
    cache_capacity: u64,
    clock: Option<SharedClock>,
    http: HttpOptions,
}

impl fmt::Debug for IntrospectionVerifierBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntrospectionVerifierBuilder").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

struct TtlPolicy {
    max: Duration,
}

impl moka::Expiry<CacheKey, AccessToken> for TtlPolicy {
    fn expire_after_create(&self, _key: &CacheKey, token: &AccessToken, _now: Instant) -> Option<Duration> {
        let left = token.expires_at().map(|exp| {
            let now = crate::clock::SystemClock.unix_time();
            Duration::from_secs(u64::try_from(exp.saturating_sub(now)).unwrap_or(0))
        });
        Some(left.map_or(self.max, |l| l.min(self.max)))
    }
}

impl IntrospectionVerifier {
    /// Starts a configuration for the introspection endpoint at `endpoint`.
    pub fn builder(endpoint: impl Into<String>) -> IntrospectionVerifierBuilder {
        IntrospectionVerifierBuilder {
            endpoint: endpoint.into(),
            credentials: None,
            audience: None,
            allow_missing_audience: false,
            issuer: None,
            scope_claim: ScopeClaim::Scope,
            cache_ttl: Duration::from_secs(60),
            cache_capacity: 10_000,
            clock: None,
            http: HttpOptions::default(),
        }
    }

    fn cache_key(&self, token: &str) -> CacheKey {
        // A key of the hash's block size (64 bytes): the infallible constructor.
        let mut mac = <Hmac<Sha256> as hmac::digest::KeyInit>::new(&self.0.hash_key.into());
        mac.update(token.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Drops every cached result (for example after a revocation event).
    pub fn invalidate_all(&self) {
        self.0.cache.invalidate_all();
    }
}

impl IntrospectionVerifierBuilder {
    /// The resource server's own client credentials at the authorization server. Required.
    pub fn client_credentials(mut self, client_id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.credentials = Some((client_id.into(), secret.into()));
        self
    }

    /// The audience an active token must carry in `aud`. Required unless
    /// [`insecure_allow_missing_audience`](Self::insecure_allow_missing_audience).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Takes the audience from a [`ProtectedResource`].
    pub fn resource(self, resource: &ProtectedResource) -> Self {
        self.audience(resource.resource())
    }

    /// Accepts tokens whose introspection response has no `aud`, for servers that do not
    /// report it. The authorization server must then guarantee the audience restriction.
    pub fn insecure_allow_missing_audience(mut self) -> Self {
        self.allow_missing_audience = true;
        self
    }

    /// Requires `iss` in the response to equal `issuer`.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Which member carries the scopes (default `scope`, RFC 7662).
    pub fn scope_claim(mut self, claim: ScopeClaim) -> Self {
        self.scope_claim = claim;
        self
    }

    /// Longest time an accepted token is cached (default 60 s); never beyond its `exp`.
    /// Zero disables the cache.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// Most cached tokens (default 10 000).
    pub fn cache_capacity(mut self, entries: u64) -> Self {
        self.cache_capacity = entries;
        self
    }

    /// The clock (default: the system clock).
    pub fn clock<C: Clock>(mut self, clock: C) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Total deadline of one introspection call (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.http.timeout = timeout;
        self
    }

    /// Trusts an extra root certificate (PEM), e.g. a test CA.
    pub fn trust_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.http.extra_roots.push(pem.into());
        self
    }

    /// Allows a plain-`http` endpoint on a non-loopback host. Never in production.
    pub fn insecure_allow_http(mut self) -> Self {
        self.http.allow_http = true;
        self
    }

    /// Validates the configuration.
    pub fn build(self) -> Result<IntrospectionVerifier, ConfigError> {
        let endpoint = Url::parse(&self.endpoint)
            .map_err(|e| ConfigError::new(ConfigErrorKind::InvalidUrl, format!("introspection endpoint: {e}")))?;
        if !url_allowed(&endpoint, self.http.allow_http) {
            return Err(ConfigError::new(ConfigErrorKind::InsecureUrl, "introspection endpoint must use https"));
        }
        let (client_id, client_secret) = self
            .credentials
            .ok_or_else(|| ConfigError::new(ConfigErrorKind::Missing, "client credentials are required"))?;
        if self.audience.is_none() && !self.allow_missing_audience {
            return Err(ConfigError::new(ConfigErrorKind::Missing, "an audience (the resource URL) is required"));
        }
        let mut hash_key = [0u8; 64];
        getrandom::fill(&mut hash_key)
            .map_err(|_| ConfigError::new(ConfigErrorKind::Invalid, "no randomness for the cache key"))?;
        let cache = moka::future::Cache::builder()
            .max_capacity(if self.cache_ttl.is_zero() { 0 } else { self.cache_capacity })
            .expire_after(TtlPolicy { max: self.cache_ttl })
            .build();
        Ok(IntrospectionVerifier(Arc::new(Inner {
            endpoint,
            client_id,
            client_secret,
            audience: self.audience,
            issuer: self.issuer,
            scope_claim: self.scope_claim,
            http: HttpClient::new(&self.http)?,
            cache,
            clock: self.clock.unwrap_or_else(crate::clock::system),
            hash_key,
            retry_after: Duration::from_secs(2),
        })))
    }
}

impl Inner {
    fn still_valid(&self, token: &AccessToken) -> bool {
        token.expires_at().is_none_or(|exp| self.clock.unix_time() < exp)
    }

    async fn introspect(&self, raw: &str) -> Result<AccessToken, VerifyError> {
        let fetched = self
            .http
            .post_form(
                &self.endpoint,
                &[("token", raw), ("token_type_hint", "access_token")],
                Some((&self.client_id, &self.client_secret)),
            )
            .await
            .map_err(|e| {
                tracing::warn!(why = e.as_str(), status = ?match e { FetchError::Status(s) => Some(s), _ => None }, "introspection failed");
                VerifyError::unavailable("introspection endpoint unavailable", self.retry_after)
            })?;
        let response = parse_object(&fetched.body).map_err(|_| {
            tracing::warn!("introspection response is not a JSON object");
            VerifyError::unavailable("introspection response malformed", self.retry_after)
        })?;
        self.validate(raw, response)
    }

    fn validate(&self, raw: &str, response: Map<String, Value>) -> Result<AccessToken, VerifyError> {
        if response.get("active") != Some(&Value::Bool(true)) {
            return Err(VerifyError::invalid_token("inactive"));
        }
        let now = self.clock.unix_time();
        let exp = claims::optional_date(&response, "exp")?;
        if exp.is_some_and(|exp| now >= exp) {
            return Err(VerifyError::invalid_token("expired"));
        }
        if claims::optional_date(&response, "nbf")?.is_some_and(|nbf| nbf > now) {
            return Err(VerifyError::invalid_token("not yet valid"));
        }
        if let Some(t) = claims::optional_str(&response, "token_type")?
            && t.eq_ignore_ascii_case("refresh_token")
        {
            return Err(VerifyError::invalid_token("not an access token"));
        }
        let audience = match &self.audience {
            Some(aud) => claims::audience(&response, aud)?,
            None => match response.get("aud") {
                None => Vec::new(),
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
                Some(_) => return Err(VerifyError::invalid_token("audience")),
            },
        };
        let issuer = claims::optional_str(&response, "iss")?;
        if let Some(expected) = &self.issuer
            && issuer != Some(expected.as_str())
        {
            return Err(VerifyError::invalid_token("issuer"));
        }
        if response.contains_key("cnf") {
            return Err(VerifyError::invalid_token("sender-constrained token"));
        }
        let mut b = AccessToken::builder(raw).scopes(claims::scopes(&response, &self.scope_claim)?).audience(audience);
        if let Some(i) = issuer {
            b = b.issuer(i);
        }
        if let Some(s) = claims::optional_str(&response, "sub")? {
            b = b.subject(s);
        }
        if let Some(c) = claims::optional_str(&response, "client_id")? {
            b = b.client_id(c);
        }
        if let Some(exp) = exp {
            b = b.expires_at(exp);
        }
        if let Some(iat) = claims::optional_date(&response, "iat")? {
            b = b.issued_at(iat);
        }
        Ok(b.claims(response).build())
    }
}

impl TokenVerifier for IntrospectionVerifier {
    type Future = BoxVerifyFuture;

    fn verify(&self, token: &BearerToken) -> BoxVerifyFuture {
        let this = self.clone();
        let token = token.clone();
        Box::pin(async move {
            let key = this.cache_key(token.as_str());
            if let Some(hit) = this.0.cache.get(&key).await {
                if this.0.still_valid(&hit) {
                    return Ok(hit);
                }
                this.0.cache.invalidate(&key).await;
            }
            let inner = this.0.clone();
            let raw = token.as_str().to_owned();
            let result = this
                .0
                .cache
                .try_get_with(key, async move { inner.introspect(&raw).await })
                .await
                .map_err(|e: Arc<VerifyError>| (*e).clone());
            match result {
                Ok(t) if this.0.still_valid(&t) => Ok(t),
                Ok(_) => {
                    this.0.cache.invalidate(&key).await;
                    Err(VerifyError::invalid_token("expired"))
                }
                Err(e) => Err(e),
            }
        })
    }
}
