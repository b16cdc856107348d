//! [`EntraUpstream`]: Microsoft Entra ID (Azure AD), as a preset over [`OidcUpstream`].

use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};
use url::Url;

use super::oauth2::scope_list;
use super::oidc::{OidcUpstream, OidcUpstreamBuilder, Preset};
use super::{AuthorizationRequest, Upstream, UpstreamError, UpstreamFuture, UpstreamGrant, UpstreamTokens};
use crate::clock::Clock;
use crate::error::{ConfigError, ConfigErrorKind};

const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";

/// The OpenID Connect scopes always requested from Entra.
const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// Claims copied into `upstream_claims` by default: the OpenID Connect ones, plus the user's
/// object ID (`oid`, the same in every app of the tenant) and the tenant (`tid`).
const ENTRA_CLAIMS: [&str; 7] = ["sub", "oid", "tid", "email", "email_verified", "name", "preferred_username"];

/// Authorization parameters that cannot be set as extra parameters: the ones every upstream
/// sets, and RFC 8707 `resource`, never forwarded to Entra (v2.0 endpoints select the
/// resource by scope).
const ENTRA_RESERVED: [&str; 9] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "resource",
];

const V1_HINT: &str = "Microsoft Entra issued a v1.0 access token: set \"accessTokenAcceptedVersion\": 2 \
     (\"requestedAccessTokenVersion\" in the Microsoft Graph manifest format) in the manifest of the API's \
     app registration";

/// Microsoft Entra ID: a single-tenant app registration, through the v2.0 endpoints.
///
/// The issuer is `{authority}/{tenant}/v2.0` (authority `https://login.microsoftonline.com`
/// unless [`authority`](EntraUpstreamBuilder::authority) says otherwise), found by discovery
/// like any [`OidcUpstream`]. The tenant must be the directory (tenant) ID: Entra's metadata
/// names it in the issuer, and multi-tenant authorities (`common`, `organizations`,
/// `consumers`) are not supported.
///
/// Scopes: each MCP scope given to [`scopes`](EntraUpstreamBuilder::scopes) is requested on
/// the API's Application ID URI (`mcp:read` → `api://{api_client_id}/mcp:read`), with
/// `openid profile email offline_access` and any
/// [`extra_scopes`](EntraUpstreamBuilder::extra_scopes) (such as `User.Read`) as they are. The
/// access token is then issued for the API and verified like the default mode of
/// [`OidcUpstream`]: signed by the tenant, issuer the v2.0 issuer, audience the API's client
/// ID. Entra issues v1.0 tokens to APIs whose manifest says nothing else; such a token
/// (`ver` `1.0`, or an `https://sts.windows.net/{tenant}/` issuer) is refused with an error
/// that says to set `accessTokenAcceptedVersion` to 2.
///
/// The userinfo endpoint is never called (Entra's belongs to Microsoft Graph and does not
/// accept tokens for your API); claims come from the ID token: by default `sub`, `oid`,
/// `tid`, `email`, `email_verified`, `name` and `preferred_username` when present.
///
/// ```
/// use tower_mcp_auth::upstream::EntraUpstream;
///
/// let entra = EntraUpstream::builder("00000000-0000-0000-0000-0000000000aa", "11111111-2222-3333-4444-555555555555")
///     .client_secret("…")
///     .scopes(["mcp:read"])
///     .build()
///     .unwrap();
/// # drop(entra);
/// ```
pub struct EntraUpstream {
    inner: OidcUpstream,
    tenant: String,
}

impl fmt::Debug for EntraUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntraUpstream").field("tenant", &self.tenant).field("oidc", &self.inner).finish()
    }
}

impl EntraUpstream {
    /// Starts a configuration for the app registration `client_id` in the tenant `tenant_id`
    /// (the directory ID).
    pub fn builder(tenant_id: impl Into<String>, client_id: impl Into<String>) -> EntraUpstreamBuilder {
        let client_id = client_id.into();
        EntraUpstreamBuilder {
            oidc: OidcUpstream::builder(String::new()).client_id(client_id.clone()),
            tenant: tenant_id.into(),
            client_id,
            authority: None,
            api_client_id: None,
            application_id_uri: None,
            scopes: Vec::new(),
            extra_scopes: Vec::new(),
            display_name: None,
        }
    }

    /// The issuer identifier (`{authority}/{tenant}/v2.0`).
    pub fn issuer(&self) -> &str {
        self.inner.issuer()
    }
}

/// Builds an [`EntraUpstream`].
pub struct EntraUpstreamBuilder {
    oidc: OidcUpstreamBuilder,
    tenant: String,
    client_id: String,
    authority: Option<String>,
    api_client_id: Option<String>,
    application_id_uri: Option<String>,
    scopes: Vec<String>,
    extra_scopes: Vec<String>,
    display_name: Option<String>,
}

impl fmt::Debug for EntraUpstreamBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntraUpstreamBuilder")
            .field("tenant", &self.tenant)
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl EntraUpstreamBuilder {
    /// The client secret (HTTP Basic unless [`client_secret_post`](Self::client_secret_post)).
    /// Without one the client is public (PKCE only); the app registration must then allow
    /// public client flows for its redirect URI.
    pub fn client_secret(mut self, secret: impl Into<String>) -> Self {
        self.oidc = self.oidc.client_secret(secret);
        self
    }

    /// Sends the client secret in the form body (`client_secret_post`).
    pub fn client_secret_post(mut self) -> Self {
        self.oidc = self.oidc.client_secret_post();
        self
    }

    /// The login authority (default `https://login.microsoftonline.com`): a national cloud,
    /// or a local mock in tests.
    pub fn authority(mut self, url: impl Into<String>) -> Self {
        self.authority = Some(url.into());
        self
    }

    /// The client ID of the app registration that exposes the API (default: the client ID):
    /// the audience of its v2.0 access tokens.
    pub fn api_client_id(mut self, id: impl Into<String>) -> Self {
        self.api_client_id = Some(id.into());
        self
    }

    /// The API's Application ID URI that MCP scopes are prefixed with (default
    /// `api://{api_client_id}`).
    pub fn application_id_uri(mut self, uri: impl Into<String>) -> Self {
        self.application_id_uri = Some(uri.into());
        self
    }

    /// The API's scopes to request, without the Application ID URI (at least one is
    /// required): `mcp:read` is requested as `api://…/mcp:read`.
    pub fn scopes<I, T>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Further scopes requested as they are, for consent (for example `User.Read`). The
    /// access token remains one for the API.
    pub fn extra_scopes<I, T>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.extra_scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Extra parameters for the authorization request (`prompt`, `domain_hint`, `login_hint`…).
    /// `resource` and the parameters the upstream sets itself are refused.
    pub fn extra_authorize_params<I, K, V>(mut self, params: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.oidc = self.oidc.extra_authorize_params(params);
        self
    }

    /// Turns the verified ID token claims into the `upstream_claims` of issued tokens (the
    /// second argument is always `None`: userinfo is not called). See
    /// [`OidcUpstreamBuilder::map_claims`].
    pub fn map_claims<F>(mut self, f: F) -> Self
    where
        F: Fn(&Map<String, Value>, Option<&Map<String, Value>>) -> Result<Map<String, Value>, UpstreamError>
            + Send
            + Sync
            + 'static,
    {
        self.oidc = self.oidc.map_claims(f);
        self
    }

    /// The name shown on consent pages (default "Microsoft Entra ID").
    pub fn display_name(mut self, name: impl Into<String>) -> Self {
        self.display_name = Some(name.into());
        self
    }

    /// Total deadline of each request to Entra (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.oidc = self.oidc.timeout(timeout);
        self
    }

    /// The clock (default: the system clock).
    pub fn clock<C: Clock>(mut self, clock: C) -> Self {
        self.oidc = self.oidc.clock(clock);
        self
    }

    /// Trusts an extra root certificate (PEM) for requests to the authority.
    pub fn trust_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.oidc = self.oidc.trust_root_certificate(pem);
        self
    }

    /// Allows a plain-`http` authority on a non-loopback host. Never in production.
    pub fn insecure_allow_http(mut self) -> Self {
        self.oidc = self.oidc.insecure_allow_http();
        self
    }

    /// Validates the configuration. Nothing is fetched yet.
    pub fn build(self) -> Result<EntraUpstream, ConfigError> {
        let invalid = |m: String| ConfigError::new(ConfigErrorKind::Invalid, m);
        let tenant = self.tenant;
        if tenant.is_empty() || !tenant.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
            return Err(invalid(format!("tenant {tenant:?} is not a tenant ID")));
        }
        if ["common", "organizations", "consumers"].iter().any(|t| t.eq_ignore_ascii_case(&tenant)) {
            return Err(invalid(format!("multi-tenant authority {tenant:?} is not supported: use the tenant ID")));
        }
        let authority = self.authority.unwrap_or_else(|| DEFAULT_AUTHORITY.to_owned());
        let authority = authority.trim_end_matches('/');
        let parsed = Url::parse(authority)
            .map_err(|e| ConfigError::new(ConfigErrorKind::InvalidUrl, format!("authority: {e}")))?;
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(ConfigError::new(ConfigErrorKind::InvalidUrl, "authority has a query or fragment"));
        }
        let issuer = format!("{authority}/{tenant}/v2.0");

        let api_client_id = self.api_client_id.unwrap_or_else(|| self.client_id.clone());
        if api_client_id.is_empty() {
            return Err(invalid("the API client ID is empty".to_owned()));
        }
        let app_id_uri = self.application_id_uri.unwrap_or_else(|| format!("api://{api_client_id}"));
        let app_id_uri = app_id_uri.trim_end_matches('/');
        if app_id_uri.is_empty() {
            return Err(invalid("the Application ID URI is empty".to_owned()));
        }
        if self.scopes.is_empty() {
            return Err(ConfigError::new(
                ConfigErrorKind::Missing,
                "at least one API scope (for example mcp:read) is required, so that Entra issues the access token for the API",
            ));
        }
        let prefix = format!("{app_id_uri}/");
        let api_scopes: Vec<String> = self
            .scopes
            .iter()
            .map(|s| if s.starts_with(&prefix) { s.clone() } else { format!("{prefix}{s}") })
            .collect();
        let api_scopes = scope_list(api_scopes, &[])?;
        let mut requested = api_scopes.clone();
        requested.extend(OIDC_SCOPES.iter().map(|s| (*s).to_owned()));
        requested.extend(self.extra_scopes);
        // Token requests name only the API and OpenID Connect scopes: one resource per token.
        let mut token_scope = api_scopes;
        token_scope.extend(OIDC_SCOPES.iter().map(|s| (*s).to_owned()));

        let preset = Preset {
            access_token_check: Some(reject_v1),
            claim_keys: &ENTRA_CLAIMS,
            userinfo: false,
            reserved: &ENTRA_RESERVED,
            token_scope: Some(token_scope.join(" ")),
        };
        let inner = self
            .oidc
            .set_issuer(issuer)
            .scopes(requested)
            .access_token_audience(api_client_id)
            .display_name(self.display_name.unwrap_or_else(|| "Microsoft Entra ID".to_owned()))
            .preset(preset)
            .build()?;
        Ok(EntraUpstream { inner, tenant })
    }
}

/// Refuses v1.0 access tokens, with the fix in the message.
fn reject_v1(payload: &Map<String, Value>) -> Result<(), UpstreamError> {
    let v1 = payload.get("ver").and_then(Value::as_str) == Some("1.0")
        || payload.get("iss").and_then(Value::as_str).is_some_and(|i| i.starts_with("https://sts.windows.net/"));
    if v1 {
        tracing::warn!("{V1_HINT}");
        return Err(UpstreamError::invalid(V1_HINT));
    }
    Ok(())
}

impl Upstream for EntraUpstream {
    fn display_name(&self) -> &str {
        self.inner.display_name()
    }

    fn scopes(&self) -> &[String] {
        self.inner.scopes()
    }

    fn authorization_url<'a>(&'a self, request: &'a AuthorizationRequest<'a>) -> UpstreamFuture<'a, Url> {
        self.inner.authorization_url(request)
    }

    fn response_issuer<'a>(&'a self) -> UpstreamFuture<'a, Option<(String, bool)>> {
        self.inner.response_issuer()
    }

    fn exchange<'a>(
        &'a self,
        code: &'a str,
        code_verifier: &'a str,
        redirect_uri: &'a str,
        nonce: &'a str,
    ) -> UpstreamFuture<'a, UpstreamGrant> {
        self.inner.exchange(code, code_verifier, redirect_uri, nonce)
    }

    fn refresh<'a>(&'a self, tokens: &'a UpstreamTokens) -> UpstreamFuture<'a, UpstreamTokens> {
        self.inner.refresh(tokens)
    }

    fn revoke<'a>(&'a self, tokens: &'a UpstreamTokens) -> UpstreamFuture<'a, ()> {
        self.inner.revoke(tokens)
    }
}
