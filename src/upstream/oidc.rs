//! [`OidcUpstream`]: any OpenID Connect provider, configured by discovery from its issuer URL.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256, Sha384, Sha512};
use tokio::sync::OnceCell;
use url::Url;
use zeroize::Zeroizing;

use super::oauth2::{
    ClientCredentials, RESERVED_PARAMS, TokenResponse, authorization_url, check_extra_params, endpoint, fetch_error,
    pick_claims, revoke, scope_list, token_request, userinfo,
};
use super::{
    AuthorizationRequest, Upstream, UpstreamError, UpstreamFuture, UpstreamGrant, UpstreamIdentity, UpstreamTokens,
};
use crate::clock::{Clock, SharedClock};
use crate::error::{ConfigError, ConfigErrorKind, VerifyError};
use crate::store::crypto::secure_eq;
use crate::token::{AccessToken, BearerToken};
use crate::verify::http::{HttpClient, HttpOptions};
use crate::verify::{Issuer, JwtVerifier, TokenVerifier};

/// A hook that turns the verified ID token claims (and the userinfo response, when fetched)
/// into the `upstream_claims` of issued tokens.
type ClaimsMapper = Arc<
    dyn Fn(&Map<String, Value>, Option<&Map<String, Value>>) -> Result<Map<String, Value>, UpstreamError> + Send + Sync,
>;

/// A check of the (not yet verified) access token payload, run before anything else looks at
/// the access token. Presets use it to explain provider-specific misconfigurations.
pub(super) type AccessTokenCheck = fn(&Map<String, Value>) -> Result<(), UpstreamError>;

/// Provider-specific adjustments made by presets such as [`EntraUpstream`](super::EntraUpstream).
#[derive(Clone)]
pub(super) struct Preset {
    pub(super) access_token_check: Option<AccessTokenCheck>,
    /// Claims copied into `upstream_claims` when no mapper is set.
    pub(super) claim_keys: &'static [&'static str],
    /// Whether the userinfo endpoint may be called with the access token at all.
    pub(super) userinfo: bool,
    /// Authorization parameters that cannot be set as extra parameters.
    pub(super) reserved: &'static [&'static str],
    /// A `scope` to send with code and refresh token requests.
    pub(super) token_scope: Option<String>,
}

const OIDC_CLAIMS: [&str; 5] = ["sub", "email", "email_verified", "name", "preferred_username"];

impl Default for Preset {
    fn default() -> Self {
        Self {
            access_token_check: None,
            claim_keys: &OIDC_CLAIMS,
            userinfo: true,
            reserved: &RESERVED_PARAMS,
            token_scope: None,
        }
    }
}

/// Any OpenID Connect provider, found by discovery from its issuer URL.
///
/// The provider metadata (`{issuer}/.well-known/openid-configuration`) is fetched on first
/// use and kept; its `issuer` must be identical to the configured one, and it must name the
/// `authorization_endpoint`, `token_endpoint` and `jwks_uri`. A failed fetch is an
/// [`Unavailable`](super::UpstreamErrorKind::Unavailable) error and is tried again on the next
/// use (concurrent callers share one fetch). Keys come from the provider's JWKS through a
/// [`JwtVerifier`], with its caching and key-rotation handling.
///
/// Sign-in is the authorization code flow with PKCE S256 and a `nonce`. The token response
/// must carry an ID token, verified before anything else is believed: signature with the
/// provider's keys (asymmetric algorithms only, `alg: none` never), `iss` exactly the issuer,
/// `aud` containing the client ID (with `azp` equal to it when present, and required when
/// there are several audiences), `exp`, `iat`, `nonce` equal to the one sent, `at_hash`
/// matching the access token when present, and never a token typed `at+jwt`. Its `sub` is the
/// user's subject.
///
/// What happens with the provider's access token depends on the mode:
///
/// - by default, the access token must be a JWT from the same issuer, verified like a resource
///   server would (keys, `iss`, `exp`, `aud` containing the
///   [`access_token_audience`](OidcUpstreamBuilder::access_token_audience), by default the
///   client ID); when the token response names no `scope`, the granted scopes are the token's;
/// - with [`verify_id_token(true)`](OidcUpstreamBuilder::verify_id_token), for providers whose
///   access tokens are opaque (Clerk, Zoho, most social providers), the ID token is the only
///   gate; the access token is kept, never parsed, and the granted scopes are the response's
///   `scope`, else the scopes requested.
///
/// Either way the access token stays the token of record, kept encrypted by the authorization
/// server for calls to the provider's APIs on the user's behalf.
///
/// The userinfo endpoint (when advertised) is called with the access token when
/// [`fetch_userinfo(true)`](OidcUpstreamBuilder::fetch_userinfo) asks for it, or by default
/// when the ID token lacks `email` or `name`; its `sub` must equal the ID token's. In the
/// default case a failing userinfo request is logged and the claims come from the ID token
/// alone.
///
/// ```
/// use tower_mcp_auth::upstream::OidcUpstream;
///
/// let keycloak = OidcUpstream::builder("https://login.example.com/realms/acme")
///     .client_id("mcp-proxy")
///     .client_secret("…")
///     .scopes(["openid", "email", "profile", "offline_access"])
///     .display_name("Acme login")
///     .build()
///     .unwrap();
/// # drop(keycloak);
/// ```
pub struct OidcUpstream {
    issuer: String,
    client: ClientCredentials,
    scopes: Vec<String>,
    extra_params: Vec<(String, String)>,
    mapper: Option<ClaimsMapper>,
    fetch_userinfo: Option<bool>,
    verify_id_token: bool,
    access_token_audience: String,
    display_name: String,
    http: HttpClient,
    http_options: HttpOptions,
    clock: SharedClock,
    preset: Preset,
    provider: OnceCell<Provider>,
}

/// What discovery found, with the verifiers built from it.
struct Provider {
    authorization_endpoint: Url,
    token_endpoint: Url,
    userinfo_endpoint: Option<Url>,
    revocation_endpoint: Option<Url>,
    iss_parameter_supported: bool,
    id_tokens: JwtVerifier,
    /// Default mode only.
    access_tokens: Option<JwtVerifier>,
}

impl fmt::Debug for OidcUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcUpstream")
            .field("issuer", &self.issuer)
            .field("client", &self.client)
            .field("scopes", &self.scopes)
            .field("verify_id_token", &self.verify_id_token)
            .field("discovered", &self.provider.initialized())
            .finish_non_exhaustive()
    }
}

impl OidcUpstream {
    /// Starts a configuration for the provider whose issuer identifier is `issuer`.
    pub fn builder(issuer: impl Into<String>) -> OidcUpstreamBuilder {
        OidcUpstreamBuilder {
            issuer: issuer.into(),
            client_id: None,
            client_secret: None,
            secret_post: false,
            scopes: None,
            extra_params: Vec::new(),
            mapper: None,
            fetch_userinfo: None,
            verify_id_token: false,
            access_token_audience: None,
            display_name: None,
            clock: None,
            http: HttpOptions::default(),
            preset: Preset::default(),
        }
    }

    /// The configured issuer identifier.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
}

/// Builds an [`OidcUpstream`].
pub struct OidcUpstreamBuilder {
    issuer: String,
    client_id: Option<String>,
    client_secret: Option<Zeroizing<String>>,
    secret_post: bool,
    scopes: Option<Vec<String>>,
    extra_params: Vec<(String, String)>,
    mapper: Option<ClaimsMapper>,
    fetch_userinfo: Option<bool>,
    verify_id_token: bool,
    access_token_audience: Option<String>,
    display_name: Option<String>,
    clock: Option<SharedClock>,
    http: HttpOptions,
    preset: Preset,
}

impl fmt::Debug for OidcUpstreamBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcUpstreamBuilder")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "<redacted>"))
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl OidcUpstreamBuilder {
    /// The client identifier registered at the provider (required). ID tokens must be issued
    /// to it.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }

    /// The client secret, sent to the token endpoint with HTTP Basic (`client_secret_basic`)
    /// unless [`client_secret_post`](Self::client_secret_post) is chosen. Without a secret the
    /// client is public and relies on PKCE alone.
    pub fn client_secret(mut self, secret: impl Into<String>) -> Self {
        self.client_secret = Some(Zeroizing::new(secret.into()));
        self
    }

    /// Sends the client secret in the form body (`client_secret_post`).
    pub fn client_secret_post(mut self) -> Self {
        self.secret_post = true;
        self
    }

    /// The scopes to request (default `openid email profile`); `openid` is always included.
    /// Add `offline_access` where the provider needs it for a refresh token.
    pub fn scopes<I, T>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.scopes = Some(scopes.into_iter().map(Into::into).collect());
        self
    }

    /// Extra parameters for the authorization request (`prompt`, `audience`, `hd`…).
    /// Parameters the upstream sets itself are refused by [`build`](Self::build). A fixed
    /// `resource` or `audience` chosen here is the proxy's own request for its access token;
    /// the `resource` an MCP client sends is never forwarded.
    pub fn extra_authorize_params<I, K, V>(mut self, params: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.extra_params.extend(params.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Turns the verified ID token claims, and the userinfo response when it was fetched, into
    /// the `upstream_claims` of issued tokens (keep them small: they travel in every access
    /// token). Default: `sub`, `email`, `email_verified`, `name` and `preferred_username`,
    /// from the ID token, else from userinfo. An error rejects the sign-in.
    pub fn map_claims<F>(mut self, f: F) -> Self
    where
        F: Fn(&Map<String, Value>, Option<&Map<String, Value>>) -> Result<Map<String, Value>, UpstreamError>
            + Send
            + Sync
            + 'static,
    {
        self.mapper = Some(Arc::new(f));
        self
    }

    /// Whether to call the userinfo endpoint at sign-in: `true` always (its failure then fails
    /// the sign-in), `false` never. Default: when the ID token lacks `email` or `name`.
    pub fn fetch_userinfo(mut self, yes: bool) -> Self {
        self.fetch_userinfo = Some(yes);
        self
    }

    /// For providers whose access tokens are opaque: the verified ID token is the only gate,
    /// and the access token is kept without being parsed (default `false`: the access token
    /// must be a JWT that verifies).
    pub fn verify_id_token(mut self, yes: bool) -> Self {
        self.verify_id_token = yes;
        self
    }

    /// The audience the provider's access tokens must carry in the default mode (default: the
    /// client ID).
    pub fn access_token_audience(mut self, audience: impl Into<String>) -> Self {
        self.access_token_audience = Some(audience.into());
        self
    }

    /// The name shown on consent pages (default: the issuer's host).
    pub fn display_name(mut self, name: impl Into<String>) -> Self {
        self.display_name = Some(name.into());
        self
    }

    /// Total deadline of each request to the provider: discovery, keys, token, userinfo,
    /// revocation (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.http.timeout = timeout;
        self
    }

    /// The clock (default: the system clock), for ID token times and token expiry.
    pub fn clock<C: Clock>(mut self, clock: C) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Trusts an extra root certificate (PEM) for requests to the provider, e.g. a test CA.
    pub fn trust_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.http.extra_roots.push(pem.into());
        self
    }

    /// Allows a plain-`http` issuer and endpoints on non-loopback hosts (loopback is always
    /// allowed). Never in production.
    pub fn insecure_allow_http(mut self) -> Self {
        self.http.allow_http = true;
        self
    }

    pub(super) fn preset(mut self, preset: Preset) -> Self {
        self.preset = preset;
        self
    }

    pub(super) fn set_issuer(mut self, issuer: String) -> Self {
        self.issuer = issuer;
        self
    }

    /// Validates the configuration. Nothing is fetched yet.
    pub fn build(self) -> Result<OidcUpstream, ConfigError> {
        let issuer_url = endpoint(&self.issuer, "issuer", self.http.allow_http)?;
        if issuer_url.query().is_some() {
            return Err(ConfigError::new(ConfigErrorKind::InvalidUrl, "issuer has a query"));
        }
        let client = ClientCredentials::new(self.client_id, self.client_secret, self.secret_post)?;
        let requested =
            self.scopes.unwrap_or_else(|| ["openid", "email", "profile"].iter().map(|s| (*s).to_owned()).collect());
        let scopes = scope_list(requested, &["openid"])?;
        check_extra_params(&self.extra_params, self.preset.reserved)?;
        let access_token_audience = match self.access_token_audience {
            Some(a) if a.is_empty() => {
                return Err(ConfigError::new(ConfigErrorKind::Invalid, "the access token audience is empty"));
            }
            Some(a) => a,
            None => client.id.clone(),
        };
        let display_name =
            self.display_name.unwrap_or_else(|| issuer_url.host_str().unwrap_or("OpenID Connect provider").to_owned());
        Ok(OidcUpstream {
            issuer: self.issuer,
            client,
            scopes,
            extra_params: self.extra_params,
            mapper: self.mapper,
            fetch_userinfo: self.fetch_userinfo,
            verify_id_token: self.verify_id_token,
            access_token_audience,
            display_name,
            http: HttpClient::new(&self.http)?,
            http_options: self.http,
            clock: self.clock.unwrap_or_else(crate::clock::system),
            preset: self.preset,
            provider: OnceCell::new(),
        })
    }
}

impl OidcUpstream {
    /// The provider metadata, fetched on first use.
    async fn provider(&self) -> Result<&Provider, UpstreamError> {
        self.provider.get_or_try_init(|| self.discover()).await
    }

    async fn discover(&self) -> Result<Provider, UpstreamError> {
        let url = Url::parse(&format!("{}/.well-known/openid-configuration", self.issuer.trim_end_matches('/')))
            .map_err(|_| UpstreamError::invalid("issuer is not a URL"))?;
        let fetched = self.http.get(&url).await.map_err(|e| {
            tracing::warn!(issuer = %self.issuer, why = e.as_str(), "upstream discovery failed");
            fetch_error("provider metadata", e)
        })?;
        let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(&fetched.body) else {
            return Err(UpstreamError::invalid("provider metadata is not a JSON object"));
        };
        // OpenID Connect Discovery §4.3, RFC 8414 §3.3: identical, no normalization.
        if doc.get("issuer").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            tracing::warn!(issuer = %self.issuer, "upstream metadata names another issuer; not used");
            return Err(UpstreamError::invalid("provider metadata issuer differs from the configured issuer"));
        }
        let allow_http = self.http_options.allow_http;
        let url_member = |name: &str, required: bool| -> Result<Option<Url>, UpstreamError> {
            match doc.get(name) {
                None | Some(Value::Null) if !required => Ok(None),
                Some(Value::String(s)) => endpoint(s, name, allow_http)
                    .map(Some)
                    .map_err(|e| UpstreamError::invalid(format!("provider metadata: {e}"))),
                _ => Err(UpstreamError::invalid(format!("provider metadata has no usable {name}"))),
            }
        };
        let (Some(authorization_endpoint), Some(token_endpoint), Some(jwks_uri)) = (
            url_member("authorization_endpoint", true)?,
            url_member("token_endpoint", true)?,
            url_member("jwks_uri", true)?,
        ) else {
            return Err(UpstreamError::invalid("provider metadata is incomplete"));
        };
        let userinfo_endpoint = url_member("userinfo_endpoint", false)?;
        let revocation_endpoint = url_member("revocation_endpoint", false)?;
        if let Some(methods) = doc.get("code_challenge_methods_supported").and_then(Value::as_array)
            && !methods.iter().any(|m| m.as_str() == Some("S256"))
        {
            return Err(UpstreamError::invalid("the provider does not support PKCE with S256"));
        }
        let iss_parameter_supported =
            doc.get("authorization_response_iss_parameter_supported").and_then(Value::as_bool).unwrap_or(false);
        let id_tokens = self.verifier(jwks_uri.as_str(), &self.client.id)?;
        let access_tokens = if self.verify_id_token {
            None
        } else if self.access_token_audience == self.client.id {
            Some(id_tokens.clone())
        } else {
            Some(self.verifier(jwks_uri.as_str(), &self.access_token_audience)?)
        };
        tracing::info!(issuer = %self.issuer, "upstream provider discovered");
        Ok(Provider {
            authorization_endpoint,
            token_endpoint,
            userinfo_endpoint,
            revocation_endpoint,
            iss_parameter_supported,
            id_tokens,
            access_tokens,
        })
    }

    fn verifier(&self, jwks_uri: &str, audience: &str) -> Result<JwtVerifier, UpstreamError> {
        let mut builder = JwtVerifier::builder()
            .issuer(Issuer::with_jwks_url(self.issuer.clone(), jwks_uri))
            .audience(audience)
            .clock(self.clock.clone())
            .fetch_timeout(self.http_options.timeout)
            .max_response_bytes(self.http_options.max_bytes);
        for pem in &self.http_options.extra_roots {
            builder = builder.trust_root_certificate(pem.clone());
        }
        if self.http_options.allow_http {
            builder = builder.insecure_allow_http();
        }
        builder.build().map_err(|e| UpstreamError::invalid(format!("ID token verifier: {e}")))
    }

    /// Verifies an ID token (OpenID Connect Core §3.1.3.7) and returns its claims. `nonce` is
    /// the one sent (none on refresh); `access_token` is checked against `at_hash`.
    async fn verify_id_token(
        &self,
        provider: &Provider,
        raw: &str,
        nonce: Option<&str>,
        access_token: Option<&str>,
    ) -> Result<Map<String, Value>, UpstreamError> {
        let header = segment(raw, 0).ok_or_else(|| UpstreamError::invalid("ID token is not a JWS"))?;
        if header.get("typ").and_then(Value::as_str).is_some_and(is_at_jwt) {
            return Err(UpstreamError::invalid("an access token was given as the ID token"));
        }
        let bearer = BearerToken::new(raw).ok_or_else(|| UpstreamError::invalid("ID token is not a JWS"))?;
        let token = provider.id_tokens.verify(&bearer).await.map_err(|e| verify_error("ID token", &e))?;
        let claims = token.claims();
        match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => {}
            _ => return Err(UpstreamError::invalid("ID token has no sub")),
        }
        if token.issued_at().is_none() {
            return Err(UpstreamError::invalid("ID token has no iat"));
        }
        match claims.get("azp") {
            Some(Value::String(azp)) if *azp == self.client.id => {}
            Some(_) => return Err(UpstreamError::invalid("ID token azp is another client")),
            None if token.audience().len() > 1 => {
                return Err(UpstreamError::invalid("ID token has several audiences and no azp"));
            }
            None => {}
        }
        if let Some(sent) = nonce {
            if sent.is_empty() {
                return Err(UpstreamError::invalid("no nonce was sent"));
            }
            let got = claims.get("nonce").and_then(Value::as_str).unwrap_or_default();
            if !secure_eq(got.as_bytes(), sent.as_bytes()) {
                return Err(UpstreamError::invalid("ID token nonce does not match"));
            }
        }
        if let (Some(expected), Some(at)) = (claims.get("at_hash"), access_token) {
            let alg = header.get("alg").and_then(Value::as_str).unwrap_or_default();
            let computed = token_hash(alg, at).ok_or_else(|| UpstreamError::invalid("ID token at_hash algorithm"))?;
            if expected.as_str() != Some(computed.as_str()) {
                return Err(UpstreamError::invalid("ID token at_hash does not match the access token"));
            }
        }
        Ok(claims.clone())
    }

    /// Looks at the provider's access token: the preset's check, then (default mode) full
    /// verification as a JWT.
    async fn check_access_token(&self, provider: &Provider, raw: &str) -> Result<Option<AccessToken>, UpstreamError> {
        if let Some(check) = self.preset.access_token_check
            && let Some(payload) = segment(raw, 1)
        {
            check(&payload)?;
        }
        let Some(verifier) = &provider.access_tokens else { return Ok(None) };
        let opaque = || {
            UpstreamError::invalid(
                "the provider's access token is not a JWT; use verify_id_token(true) for providers with opaque access tokens",
            )
        };
        if raw.split('.').count() != 3 {
            return Err(opaque());
        }
        let bearer = BearerToken::new(raw).ok_or_else(opaque)?;
        let token = verifier.verify(&bearer).await.map_err(|e| verify_error("access token", &e))?;
        Ok(Some(token))
    }

    /// Tokens to record from a checked response.
    fn tokens(&self, response: TokenResponse, access: Option<&AccessToken>, requested: bool) -> UpstreamTokens {
        let now = self.clock.unix_time();
        let from_token = access.map(|t| t.scopes().to_string()).filter(|s| !s.is_empty());
        let scope = response
            .scope
            .or(from_token)
            .or_else(|| requested.then(|| self.scopes.join(" ")))
            .filter(|s| !s.is_empty());
        UpstreamTokens {
            access_token: Some(response.access_token),
            refresh_token: response.refresh_token,
            id_token: response.id_token,
            expires_at: response
                .expires_in
                .map(|s| now.saturating_add(s))
                .or_else(|| access.and_then(|t| t.expires_at())),
            scope,
        }
    }

    /// The userinfo response, when wanted and available.
    async fn userinfo_for(
        &self,
        provider: &Provider,
        id_claims: &Map<String, Value>,
        access_token: &str,
    ) -> Result<Option<Map<String, Value>>, UpstreamError> {
        let explicit = self.fetch_userinfo == Some(true);
        let wanted =
            self.fetch_userinfo.unwrap_or_else(|| !(id_claims.contains_key("email") && id_claims.contains_key("name")));
        if !wanted || !self.preset.userinfo {
            return Ok(None);
        }
        let Some(url) = &provider.userinfo_endpoint else {
            return if explicit {
                Err(UpstreamError::invalid("the provider advertises no userinfo_endpoint"))
            } else {
                Ok(None)
            };
        };
        let info = match userinfo(&self.http, url, access_token).await {
            Ok(info) => info,
            Err(e) if explicit => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, "userinfo unavailable; using the ID token claims only");
                return Ok(None);
            }
        };
        // OpenID Connect Core §5.3.4: the userinfo `sub` must be the ID token's.
        if info.get("sub") != id_claims.get("sub") {
            return Err(UpstreamError::invalid("userinfo sub differs from the ID token sub"));
        }
        Ok(Some(info))
    }
}

impl Upstream for OidcUpstream {
    fn display_name(&self) -> &str {
        &self.display_name
    }

    fn scopes(&self) -> &[String] {
        &self.scopes
    }

    fn authorization_url<'a>(&'a self, request: &'a AuthorizationRequest<'a>) -> UpstreamFuture<'a, Url> {
        Box::pin(async move {
            let provider = self.provider().await?;
            Ok(authorization_url(
                &provider.authorization_endpoint,
                &self.client.id,
                &self.scopes,
                request,
                Some(request.nonce),
                &self.extra_params,
            ))
        })
    }

    fn response_issuer<'a>(&'a self) -> UpstreamFuture<'a, Option<(String, bool)>> {
        Box::pin(async move {
            let provider = self.provider().await?;
            Ok(Some((self.issuer.clone(), provider.iss_parameter_supported)))
        })
    }

    fn exchange<'a>(
        &'a self,
        code: &'a str,
        code_verifier: &'a str,
        redirect_uri: &'a str,
        nonce: &'a str,
    ) -> UpstreamFuture<'a, UpstreamGrant> {
        Box::pin(async move {
            let provider = self.provider().await?;
            let mut form = vec![
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", code_verifier),
            ];
            if let Some(scope) = &self.preset.token_scope {
                form.push(("scope", scope.as_str()));
            }
            let response = token_request(&self.http, &provider.token_endpoint, &self.client, form).await?;
            let id_token =
                response.id_token.as_deref().ok_or_else(|| UpstreamError::invalid("token response has no id_token"))?;
            let id_claims = self.verify_id_token(provider, id_token, Some(nonce), Some(&response.access_token)).await?;
            let access = self.check_access_token(provider, &response.access_token).await?;
            let info = self.userinfo_for(provider, &id_claims, &response.access_token).await?;
            let claims = match &self.mapper {
                Some(map) => map(&id_claims, info.as_ref())?,
                None => {
                    let mut sources = vec![&id_claims];
                    sources.extend(info.as_ref());
                    pick_claims(&sources, self.preset.claim_keys)
                }
            };
            let subject = id_claims.get("sub").and_then(Value::as_str).unwrap_or_default().to_owned();
            let tokens = self.tokens(response, access.as_ref(), true);
            Ok(UpstreamGrant::new(UpstreamIdentity::new(subject, claims), tokens))
        })
    }

    fn refresh<'a>(&'a self, tokens: &'a UpstreamTokens) -> UpstreamFuture<'a, UpstreamTokens> {
        Box::pin(async move {
            let refresh_token =
                tokens.refresh_token.as_deref().ok_or_else(|| UpstreamError::refused("no upstream refresh token"))?;
            let provider = self.provider().await?;
            let mut form = vec![("grant_type", "refresh_token"), ("refresh_token", refresh_token)];
            if let Some(scope) = &self.preset.token_scope {
                form.push(("scope", scope.as_str()));
            }
            let response = token_request(&self.http, &provider.token_endpoint, &self.client, form).await?;
            if let Some(id_token) = response.id_token.as_deref() {
                // OpenID Connect Core §12.2: same issuer, subject and audience as at sign-in;
                // a nonce, if any, the original one.
                let fresh = self.verify_id_token(provider, id_token, None, Some(&response.access_token)).await?;
                if let Some(previous) = tokens.id_token.as_deref() {
                    let previous =
                        segment(previous, 1).ok_or_else(|| UpstreamError::invalid("stored ID token is unreadable"))?;
                    if fresh.get("sub") != previous.get("sub") {
                        return Err(UpstreamError::invalid("refreshed ID token names another subject"));
                    }
                    if fresh.contains_key("nonce") && fresh.get("nonce") != previous.get("nonce") {
                        return Err(UpstreamError::invalid("refreshed ID token carries another nonce"));
                    }
                }
            }
            let access = self.check_access_token(provider, &response.access_token).await?;
            Ok(self.tokens(response, access.as_ref(), false))
        })
    }

    fn revoke<'a>(&'a self, tokens: &'a UpstreamTokens) -> UpstreamFuture<'a, ()> {
        Box::pin(async move {
            match self.provider().await {
                Ok(Provider { revocation_endpoint: Some(url), .. }) => {
                    revoke(&self.http, url, &self.client, tokens).await
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "upstream revocation skipped"),
            }
            Ok(())
        })
    }
}

fn is_at_jwt(typ: &str) -> bool {
    typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("application/at+jwt")
}

/// The JSON object in segment `index` of a compact JWS, without any verification.
pub(super) fn segment(raw: &str, index: usize) -> Option<Map<String, Value>> {
    let part = raw.split('.').nth(index)?;
    let bytes = B64.decode(part).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

/// `at_hash` (OpenID Connect Core §3.1.3.6): base64url of the left half of the hash of the
/// token, with the hash of the ID token's signature algorithm.
fn token_hash(alg: &str, token: &str) -> Option<String> {
    let digest: Vec<u8> = match alg {
        "RS256" | "PS256" | "ES256" => Sha256::digest(token).to_vec(),
        "RS384" | "PS384" | "ES384" => Sha384::digest(token).to_vec(),
        "RS512" | "PS512" | "ES512" | "EdDSA" => Sha512::digest(token).to_vec(),
        _ => return None,
    };
    Some(B64.encode(&digest[..digest.len() / 2]))
}

fn verify_error(what: &str, e: &VerifyError) -> UpstreamError {
    if e.is_unavailable() {
        UpstreamError::unavailable(format!("{what}: {}", e.reason()))
    } else {
        UpstreamError::invalid(format!("{what} rejected: {}", e.reason()))
    }
}
