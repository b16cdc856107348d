//! [`JwtVerifier`]: JWT access tokens (RFC 9068) verified per RFC 8725.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};
use url::Url;

use super::BoxVerifyFuture;
use super::algorithm::Algorithm;
pub use super::claims::ScopeClaim;
use super::claims::{self, parse_object};
use super::http::{HttpClient, HttpOptions, url_allowed};
use super::jwks::{JwksConfig, KeyState, Reason, RemoteKeys, Source};
use super::keys::{B64, KeySet, Lookup, SharedKeySet, VerifyingKey};
use crate::clock::{Clock, SharedClock};
use crate::error::{ConfigError, ConfigErrorKind, VerifyError};
use crate::resource::ProtectedResource;
use crate::token::{AccessToken, AccessTokenBuilder, BearerToken};
use crate::verify::TokenVerifier;

/// A hook that reads the verified claims and adds to the token being built (upstream claims,
/// typed extensions, other scopes). Returning an error rejects the token.
pub type ClaimsMapper =
    Arc<dyn Fn(&Map<String, Value>, &mut AccessTokenBuilder) -> Result<(), VerifyError> + Send + Sync>;

/// One trusted issuer and where its keys come from.
#[derive(Debug, Clone)]
pub struct Issuer {
    issuer: String,
    keys: IssuerKeys,
}

#[derive(Debug, Clone)]
enum IssuerKeys {
    Discover,
    Jwks(String),
    Static(KeySet),
    Shared(SharedKeySet),
}

impl Issuer {
    /// An issuer whose keys are found by discovery: its RFC 8414 or OpenID Connect metadata
    /// (whose `issuer` must be identical to `issuer`) names the `jwks_uri`.
    pub fn discover(issuer: impl Into<String>) -> Self {
        Self { issuer: issuer.into(), keys: IssuerKeys::Discover }
    }

    /// An issuer whose keys are at a JWKS URL.
    pub fn with_jwks_url(issuer: impl Into<String>, jwks_url: impl Into<String>) -> Self {
        Self { issuer: issuer.into(), keys: IssuerKeys::Jwks(jwks_url.into()) }
    }

    /// An issuer with fixed keys.
    pub fn with_keys(issuer: impl Into<String>, keys: KeySet) -> Self {
        Self { issuer: issuer.into(), keys: IssuerKeys::Static(keys) }
    }

    /// An issuer whose keys can be replaced while the verifier runs (rotation).
    pub fn with_shared_keys(issuer: impl Into<String>, keys: SharedKeySet) -> Self {
        Self { issuer: issuer.into(), keys: IssuerKeys::Shared(keys) }
    }

    /// The issuer identifier.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
}

enum Keys {
    Static(KeySet),
    Shared(SharedKeySet),
    Remote(Arc<RemoteKeys>),
}

struct IssuerEntry {
    issuer: String,
    /// The same name, shared by every token this issuer's keys verify.
    shared_name: Arc<str>,
    keys: Keys,
}

/// Verifies JWT access tokens.
///
/// What a token must satisfy:
///
/// - compact JWS, three base64url segments without padding; no `crit`, `cty`, `b64` or JWE
///   headers; `jku`, `x5u`, `jwk` and `x5c` are never fetched or used;
/// - `alg` in the allow-list (asymmetric algorithms by default), and equal to the algorithm
///   bound to the key named by `kid` (a key without `alg` in its JWK is bound to RS256, ES256,
///   ES384 or EdDSA by its type);
/// - `iss` one of the configured issuers, exactly, and signed by a key of that issuer;
/// - `aud` (string or array) containing the configured audience;
/// - `exp` required, `nbf` and `iat` checked when present, all within the leeway
///   (default 30 s);
/// - `typ` absent, `JWT`, `at+jwt` or `application/at+jwt` (or only the last two with
///   [`require_at_jwt`](JwtVerifierBuilder::require_at_jwt)); no `cnf` (sender-constrained
///   tokens are not bearer tokens).
///
/// Remote keys are fetched on first use, cached for the `Cache-Control` lifetime clamped to
/// [30 s, 24 h] (5 min without one), refreshed once per cooldown (30 s) when a token names an
/// unknown `kid`, and kept for up to 24 h past expiry when the issuer is unreachable. A
/// verifier that holds no key because the issuer is unreachable answers
/// [`VerifyError::unavailable`] (503 with `Retry-After`), never 401.
///
/// ```
/// use tower_mcp_auth::JwtVerifier;
///
/// let verifier = JwtVerifier::from_issuer(
///     "https://login.example.com/realms/acme",
///     "https://mcp.example.com/mcp",
/// )
/// .unwrap();
/// # drop(verifier);
/// ```
#[derive(Clone)]
pub struct JwtVerifier(Arc<Inner>);

struct Inner {
    issuers: Vec<IssuerEntry>,
    audience: String,
    /// `[audience]`, shared by every token whose `aud` is exactly that.
    audience_list: Arc<[String]>,
    algorithms: Vec<Algorithm>,
    leeway: i64,
    require_at_jwt: bool,
    scope_claim: ScopeClaim,
    mapper: Option<ClaimsMapper>,
    clock: SharedClock,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("issuers", &self.0.issuers.iter().map(|i| &i.issuer).collect::<Vec<_>>())
            .field("audience", &self.0.audience)
            .field("algorithms", &self.0.algorithms)
            .field("leeway", &self.0.leeway)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Starts a configuration.
    pub fn builder() -> JwtVerifierBuilder {
        JwtVerifierBuilder::default()
    }

    /// A verifier for tokens from `issuer` (keys found by discovery) whose `aud` contains
    /// `audience`, with the default settings.
    pub fn from_issuer(issuer: impl Into<String>, audience: impl Into<String>) -> Result<Self, ConfigError> {
        Self::builder().issuer(Issuer::discover(issuer)).audience(audience).build()
    }

    /// The audience tokens must carry.
    pub fn audience(&self) -> &str {
        &self.0.audience
    }
}

/// Builds a [`JwtVerifier`].
pub struct JwtVerifierBuilder {
    issuers: Vec<Issuer>,
    audience: Option<String>,
    algorithms: Vec<Algorithm>,
    allow_hmac: bool,
    leeway: Duration,
    require_at_jwt: bool,
    scope_claim: ScopeClaim,
    mapper: Option<ClaimsMapper>,
    clock: Option<SharedClock>,
    jwks: JwksConfig,
    http: HttpOptions,
}

impl Default for JwtVerifierBuilder {
    fn default() -> Self {
        Self {
            issuers: Vec::new(),
            audience: None,
            algorithms: Algorithm::ASYMMETRIC.to_vec(),
            allow_hmac: false,
            leeway: Duration::from_secs(30),
            require_at_jwt: false,
            scope_claim: ScopeClaim::Auto,
            mapper: None,
            clock: None,
            jwks: JwksConfig::default(),
            http: HttpOptions::default(),
        }
    }
}

impl fmt::Debug for JwtVerifierBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifierBuilder")
            .field("issuers", &self.issuers)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl JwtVerifierBuilder {
    /// Adds a trusted issuer. Several issuers may be configured (multi-tenant); a token is
    /// checked only against the keys of the issuer its `iss` names.
    pub fn issuer(mut self, issuer: Issuer) -> Self {
        self.issuers.push(issuer);
        self
    }

    /// The audience tokens must carry: the canonical URL of the protected resource.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Takes the audience from a [`ProtectedResource`].
    pub fn resource(self, resource: &ProtectedResource) -> Self {
        self.audience(resource.resource())
    }

    /// The accepted algorithms (default: all asymmetric ones). HMAC algorithms here need
    /// [`dangerous_allow_hmac`](Self::dangerous_allow_hmac).
    pub fn algorithms<I: IntoIterator<Item = Algorithm>>(mut self, algorithms: I) -> Self {
        self.algorithms = algorithms.into_iter().collect();
        self
    }

    /// Permits HMAC algorithms in the allow-list. Dangerous: shared secrets let every verifier
    /// mint tokens; use only for tokens your own service issues.
    pub fn dangerous_allow_hmac(mut self) -> Self {
        self.allow_hmac = true;
        self
    }

    /// Clock skew tolerated on `exp`, `nbf` and `iat` (default 30 s, at most 5 min).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Requires `typ: at+jwt` (RFC 9068 §4). Off by default because several identity providers
    /// issue access tokens typed `JWT`.
    pub fn require_at_jwt(mut self, yes: bool) -> Self {
        self.require_at_jwt = yes;
        self
    }

    /// Which claim carries the scopes (default [`ScopeClaim::Auto`]).
    pub fn scope_claim(mut self, claim: ScopeClaim) -> Self {
        self.scope_claim = claim;
        self
    }

    /// A hook run on every verified token to fill upstream claims and custom fields.
    pub fn map_claims<F>(mut self, f: F) -> Self
    where
        F: Fn(&Map<String, Value>, &mut AccessTokenBuilder) -> Result<(), VerifyError> + Send + Sync + 'static,
    {
        self.mapper = Some(Arc::new(f));
        self
    }

    /// The clock (default: the system clock).
    pub fn clock<C: Clock>(mut self, clock: C) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Key cache lifetime when the JWKS response has no `Cache-Control` (default 5 min), and
    /// the bounds any `max-age` is clamped to (default 30 s and 24 h).
    pub fn jwks_ttl(mut self, default: Duration, min: Duration, max: Duration) -> Self {
        self.jwks.default_ttl = default;
        self.jwks.min_ttl = min;
        self.jwks.max_ttl = max;
        self
    }

    /// Least time between two refreshes caused by unknown `kid`s (default 30 s).
    pub fn jwks_refresh_cooldown(mut self, cooldown: Duration) -> Self {
        self.jwks.refresh_cooldown = cooldown;
        self
    }

    /// Least time between a failed fetch and the next attempt (default 5 s); also the
    /// `Retry-After` given while no key is available.
    pub fn jwks_failure_backoff(mut self, backoff: Duration) -> Self {
        self.jwks.failure_backoff = backoff;
        self
    }

    /// How long past their lifetime last-good keys are used while the issuer is unreachable
    /// (default 24 h).
    pub fn jwks_max_stale(mut self, max_stale: Duration) -> Self {
        self.jwks.max_stale = max_stale;
        self
    }

    /// Total deadline of one fetch (default 5 s).
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.http.timeout = timeout;
        self
    }

    /// Largest JWKS or metadata response accepted (default 256 KiB).
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.http.max_bytes = bytes;
        self
    }

    /// Trusts an extra root certificate (PEM) for fetches, e.g. a test CA.
    pub fn trust_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.http.extra_roots.push(pem.into());
        self
    }

    /// Allows plain-`http` issuer, metadata and JWKS URLs on non-loopback hosts (loopback is
    /// always allowed). Never in production.
    pub fn insecure_allow_http(mut self) -> Self {
        self.http.allow_http = true;
        self
    }

    /// Validates the configuration.
    pub fn build(self) -> Result<JwtVerifier, ConfigError> {
        let invalid = |m: String| ConfigError::new(ConfigErrorKind::Invalid, m);
        let audience = self
            .audience
            .filter(|a| !a.is_empty())
            .ok_or_else(|| ConfigError::new(ConfigErrorKind::Missing, "an audience (the resource URL) is required"))?;
        if self.issuers.is_empty() {
            return Err(ConfigError::new(ConfigErrorKind::Missing, "at least one issuer is required"));
        }
        if self.algorithms.is_empty() {
            return Err(invalid("the algorithm allow-list is empty".into()));
        }
        if !self.allow_hmac && self.algorithms.iter().any(|a| a.is_symmetric()) {
            return Err(invalid("HMAC algorithms need dangerous_allow_hmac()".into()));
        }
        if self.leeway > Duration::from_secs(300) {
            return Err(invalid("leeway above 5 minutes".into()));
        }
        let clock = self.clock.unwrap_or_else(crate::clock::system);
        let mut http: Option<HttpClient> = None;
        let mut issuers = Vec::with_capacity(self.issuers.len());
        for issuer in self.issuers {
            if issuers.iter().any(|e: &IssuerEntry| e.issuer == issuer.issuer) {
                return Err(invalid(format!("issuer {:?} configured twice", issuer.issuer)));
            }
            let keys = match issuer.keys {
                IssuerKeys::Static(set) => {
                    if let Some(alg) = set.algorithms().find(|a| !self.algorithms.contains(a)) {
                        return Err(invalid(format!("a key of {:?} uses {alg}, which is not allowed", issuer.issuer)));
                    }
                    Keys::Static(set)
                }
                IssuerKeys::Shared(set) => Keys::Shared(set),
                remote => {
                    let client = match &http {
                        Some(c) => c.clone(),
                        None => {
                            let c = HttpClient::new(&self.http)?;
                            http = Some(c.clone());
                            c
                        }
                    };
                    let source = match remote {
                        IssuerKeys::Jwks(url) => {
                            let parsed = Url::parse(&url)
                                .map_err(|e| ConfigError::new(ConfigErrorKind::InvalidUrl, format!("JWKS URL: {e}")))?;
                            if !url_allowed(&parsed, self.http.allow_http) {
                                return Err(ConfigError::new(ConfigErrorKind::InsecureUrl, "JWKS URL must use https"));
                            }
                            Source::Jwks(parsed)
                        }
                        _ => {
                            let parsed = Url::parse(&issuer.issuer)
                                .map_err(|e| ConfigError::new(ConfigErrorKind::InvalidUrl, format!("issuer: {e}")))?;
                            if !url_allowed(&parsed, self.http.allow_http) {
                                return Err(ConfigError::new(ConfigErrorKind::InsecureUrl, "issuer must use https"));
                            }
                            Source::Discover(issuer.issuer.clone())
                        }
                    };
                    Keys::Remote(Arc::new(RemoteKeys::new(
                        source,
                        client,
                        clock.clone(),
                        self.jwks.clone(),
                        self.algorithms.clone(),
                    )))
                }
            };
            issuers.push(IssuerEntry { shared_name: Arc::from(issuer.issuer.as_str()), issuer: issuer.issuer, keys });
        }
        Ok(JwtVerifier(Arc::new(Inner {
            issuers,
            audience_list: Arc::from([audience.clone()]),
            audience,
            algorithms: self.algorithms,
            leeway: i64::try_from(self.leeway.as_secs()).unwrap_or(300),
            require_at_jwt: self.require_at_jwt,
            scope_claim: self.scope_claim,
            mapper: self.mapper,
            clock,
        })))
    }
}

/// The JOSE header fields this verifier reads. Unknown fields are ignored; duplicated known
/// fields fail to parse.
#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    kid: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    typ: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    cty: Option<IgnoredAny>,
    #[serde(default)]
    crit: Option<IgnoredAny>,
    #[serde(default)]
    b64: Option<IgnoredAny>,
    #[serde(default)]
    enc: Option<IgnoredAny>,
    #[serde(default)]
    zip: Option<IgnoredAny>,
}

/// The header fields verification uses, after the checks.
struct CheckedHeader<'a> {
    alg: Algorithm,
    kid: Option<std::borrow::Cow<'a, str>>,
    typ: Option<std::borrow::Cow<'a, str>>,
}

/// The three parts of a compact JWS.
pub(crate) struct Compact<'a> {
    pub(crate) header: &'a str,
    pub(crate) payload: &'a str,
    pub(crate) signature: &'a str,
    pub(crate) signing_input: &'a str,
}

pub(crate) fn split(token: &str) -> Result<Compact<'_>, VerifyError> {
    let bad = || VerifyError::invalid_token("not a compact JWS");
    let (signing_input, signature) = token.rsplit_once('.').ok_or_else(bad)?;
    let (header, payload) = signing_input.split_once('.').ok_or_else(bad)?;
    if header.is_empty() || signature.is_empty() || payload.contains('.') {
        return Err(bad());
    }
    Ok(Compact { header, payload, signature, signing_input })
}

enum Step {
    Done(Result<AccessToken, VerifyError>),
    Refresh(Arc<RemoteKeys>, Reason, u64),
}

impl Inner {
    /// Checks the header of a compact JWS and returns what verification needs from it.
    fn header<'b>(&self, header_bytes: &'b [u8]) -> Result<CheckedHeader<'b>, VerifyError> {
        let header: Header<'b> =
            serde_json::from_slice(header_bytes).map_err(|_| VerifyError::invalid_token("header"))?;
        if header.crit.is_some() || header.b64.is_some() {
            return Err(VerifyError::invalid_token("crit header"));
        }
        if header.cty.is_some() || header.enc.is_some() || header.zip.is_some() {
            return Err(VerifyError::invalid_token("nested or encrypted token"));
        }
        let alg = Algorithm::from_name(&header.alg)
            .filter(|a| self.algorithms.contains(a))
            .ok_or(VerifyError::invalid_token("algorithm not allowed"))?;
        Ok(CheckedHeader { alg, kid: header.kid, typ: header.typ })
    }

    fn typ_ok(&self, typ: Option<&str>) -> bool {
        let at_jwt = |t: &str| t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt");
        match typ {
            Some(t) if at_jwt(t) => true,
            _ if self.require_at_jwt => false,
            None => true,
            Some(t) => t.eq_ignore_ascii_case("JWT") || t.eq_ignore_ascii_case("application/jwt"),
        }
    }

    fn verify_now(&self, token: &BearerToken, may_refresh: bool) -> Step {
        let raw = token.as_str();
        let jws = match split(raw) {
            Ok(j) => j,
            Err(e) => return Step::Done(Err(e)),
        };
        let Ok(header_bytes) = B64.decode(jws.header) else {
            return Step::Done(Err(VerifyError::invalid_token("header encoding")));
        };
        let CheckedHeader { alg, kid, typ } = match self.header(&header_bytes) {
            Ok(h) => h,
            Err(e) => return Step::Done(Err(e)),
        };
        if !self.typ_ok(typ.as_deref()) {
            return Step::Done(Err(VerifyError::invalid_token("typ")));
        }
        let Ok(payload) = B64.decode(jws.payload) else {
            return Step::Done(Err(VerifyError::invalid_token("payload encoding")));
        };
        let claims = match parse_object(&payload) {
            Ok(c) => c,
            Err(e) => return Step::Done(Err(e)),
        };
        let Some(entry) =
            claims.get("iss").and_then(Value::as_str).and_then(|iss| self.issuers.iter().find(|e| e.issuer == iss))
        else {
            return Step::Done(Err(VerifyError::invalid_token("issuer")));
        };
        let kid = kid.as_deref();
        let result = match &entry.keys {
            Keys::Static(set) => self.with_static(set, &jws, kid, alg, token, entry, claims, payload),
            Keys::Shared(set) => self.with_static(&set.load(), &jws, kid, alg, token, entry, claims, payload),
            Keys::Remote(remote) => {
                let snap = remote.snapshot();
                match remote.check(&snap, kid, alg, may_refresh) {
                    KeyState::Ready(key) => self.finish(&jws, key, token, entry, claims, payload),
                    KeyState::Invalid(why) => Err(VerifyError::invalid_token(why)),
                    KeyState::Unavailable(retry) => Err(VerifyError::unavailable("no keys from the issuer", retry)),
                    KeyState::Refresh(reason) => return Step::Refresh(remote.clone(), reason, snap.generation),
                }
            }
        };
        Step::Done(result)
    }

    #[allow(clippy::too_many_arguments)]
    fn with_static(
        &self,
        set: &KeySet,
        jws: &Compact<'_>,
        kid: Option<&str>,
        alg: Algorithm,
        token: &BearerToken,
        entry: &IssuerEntry,
        claims: Map<String, Value>,
        payload: Vec<u8>,
    ) -> Result<AccessToken, VerifyError> {
        match set.lookup(kid, alg) {
            Lookup::Found(key) => self.finish(jws, key, token, entry, claims, payload),
            Lookup::UnknownKid => Err(VerifyError::invalid_token("unknown kid")),
            Lookup::Unusable => Err(VerifyError::invalid_token("no usable key for kid and alg")),
        }
    }

    fn finish(
        &self,
        jws: &Compact<'_>,
        key: &VerifyingKey,
        token: &BearerToken,
        entry: &IssuerEntry,
        claims: Map<String, Value>,
        payload: Vec<u8>,
    ) -> Result<AccessToken, VerifyError> {
        if !key.verify(jws.signing_input.as_bytes(), jws.signature) {
            return Err(VerifyError::invalid_token("signature"));
        }
        self.validate(token, entry, claims, payload)
    }

    fn validate(
        &self,
        token: &BearerToken,
        entry: &IssuerEntry,
        claims: Map<String, Value>,
        payload: Vec<u8>,
    ) -> Result<AccessToken, VerifyError> {
        let now = self.clock.unix_time();
        let exp = claims::optional_date(&claims, "exp")?.ok_or(VerifyError::invalid_token("exp"))?;
        if now >= exp.saturating_add(self.leeway) {
            return Err(VerifyError::invalid_token("expired"));
        }
        if let Some(nbf) = claims::optional_date(&claims, "nbf")?
            && nbf > now.saturating_add(self.leeway)
        {
            return Err(VerifyError::invalid_token("not yet valid"));
        }
        let iat = claims::optional_date(&claims, "iat")?;
        if iat.is_some_and(|iat| iat > now.saturating_add(self.leeway)) {
            return Err(VerifyError::invalid_token("issued in the future"));
        }
        let audience = claims::audience(&claims, &self.audience)?;
        if claims.contains_key("cnf") {
            return Err(VerifyError::invalid_token("sender-constrained token"));
        }
        let scopes = claims::scopes(&claims, &self.scope_claim)?;
        let subject = claims::optional_str(&claims, "sub")?.map(str::to_owned);
        let client_id = match claims::optional_str(&claims, "client_id")? {
            Some(c) => Some(c.to_owned()),
            None => claims::optional_str(&claims, "azp")?.map(str::to_owned),
        };

        let mut builder = AccessToken::builder_for(token).scopes(scopes).expires_at(exp);
        // The issuer was matched exactly against the configuration: share its name.
        builder = builder.shared_issuer(entry.shared_name.clone());
        builder = if audience.len() == 1 && audience[0] == self.audience {
            builder.shared_audience(self.audience_list.clone())
        } else {
            builder.audience(audience)
        };
        if let Some(s) = subject {
            builder = builder.subject(s);
        }
        if let Some(c) = client_id {
            builder = builder.client_id(c);
        }
        if let Some(iat) = iat {
            builder = builder.issued_at(iat);
        }
        if let Some(mapper) = &self.mapper {
            mapper(&claims, &mut builder)?;
        }
        // The claims are kept as their JSON text and parsed again only if a handler asks for
        // them: a cached token then holds ~200 bytes of JSON instead of a ~1 KiB map.
        drop(claims);
        Ok(builder.claims_json(payload.into_boxed_slice()).build())
    }

    /// Signature check only (no claims), with a static key set; returns the payload. For the
    /// Wycheproof vectors.
    #[cfg(test)]
    pub(crate) fn verify_signature_only(&self, raw: &str) -> Result<Vec<u8>, VerifyError> {
        let jws = split(raw)?;
        let header_bytes = B64.decode(jws.header).map_err(|_| VerifyError::invalid_token("header encoding"))?;
        let CheckedHeader { alg, kid, .. } = self.header(&header_bytes)?;
        let payload = B64.decode(jws.payload).map_err(|_| VerifyError::invalid_token("payload encoding"))?;
        let Some(IssuerEntry { keys: Keys::Static(set), .. }) = self.issuers.first() else {
            return Err(VerifyError::invalid_token("no static keys"));
        };
        let Lookup::Found(key) = set.lookup(kid.as_deref(), alg) else {
            return Err(VerifyError::invalid_token("no key"));
        };
        if !key.verify(jws.signing_input.as_bytes(), jws.signature) {
            return Err(VerifyError::invalid_token("signature"));
        }
        Ok(payload)
    }
}

impl JwtVerifier {
    #[cfg(test)]
    pub(crate) fn verify_signature_only(&self, raw: &str) -> Result<Vec<u8>, VerifyError> {
        self.0.verify_signature_only(raw)
    }
}

impl Inner {
    /// Sum of the issuers' key epochs: changes whenever any issuer dropped or changed a key.
    fn epoch(&self) -> u64 {
        self.issuers.iter().fold(0u64, |sum, e| {
            sum.wrapping_add(match &e.keys {
                Keys::Static(_) => 0,
                Keys::Shared(set) => set.epoch(),
                Keys::Remote(remote) => remote.epoch(),
            })
        })
    }
}

impl TokenVerifier for JwtVerifier {
    type Future = JwtFuture;

    /// Verdicts are reused until `exp`; dropping or replacing a key (JWKS refresh,
    /// [`SharedKeySet::replace`]) ends the reuse of every earlier verdict. The result of
    /// [`map_claims`](JwtVerifierBuilder::map_claims) is reused with the verdict.
    fn cache_policy(&self) -> Option<super::CachePolicy> {
        Some(super::CachePolicy::new(self.0.epoch(), self.0.clock.unix_time()))
    }

    fn verify(&self, token: &BearerToken) -> JwtFuture {
        match self.0.verify_now(token, true) {
            Step::Done(result) => JwtFuture(State::Ready(Some(result))),
            Step::Refresh(remote, reason, generation) => {
                let this = self.0.clone();
                let token = token.clone();
                JwtFuture(State::Pending(Box::pin(async move {
                    remote.refresh(reason, generation).await;
                    match this.verify_now(&token, false) {
                        Step::Done(result) => result,
                        Step::Refresh(..) => {
                            Err(VerifyError::unavailable("no keys from the issuer", Duration::from_secs(1)))
                        }
                    }
                })))
            }
        }
    }
}

/// Future of [`JwtVerifier`]: ready at once when the keys are in hand, otherwise waiting for
/// the one key fetch in flight.
pub struct JwtFuture(State);

enum State {
    Ready(Option<Result<AccessToken, VerifyError>>),
    Pending(BoxVerifyFuture),
}

impl fmt::Debug for JwtFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            State::Ready(_) => "JwtFuture::Ready",
            State::Pending(_) => "JwtFuture::Pending",
        })
    }
}

impl Future for JwtFuture {
    type Output = Result<AccessToken, VerifyError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            State::Ready(result) => {
                Poll::Ready(result.take().unwrap_or_else(|| Err(VerifyError::invalid_token("polled after completion"))))
            }
            State::Pending(fut) => fut.as_mut().poll(cx),
        }
    }
}
