//! [`OAuth2Upstream`]: a plain OAuth 2 provider whose access tokens are opaque and whose user
//! is found at a userinfo endpoint (GitHub and similar). Also the token-endpoint, userinfo and
//! revocation machinery shared with the OpenID Connect upstreams.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use url::Url;
use zeroize::Zeroizing;

use super::{
    AuthorizationRequest, Upstream, UpstreamError, UpstreamFuture, UpstreamGrant, UpstreamIdentity, UpstreamTokens,
};
use crate::clock::{Clock, SharedClock};
use crate::error::{ConfigError, ConfigErrorKind};
use crate::scope::is_scope_token;
use crate::verify::http::{FetchError, HttpClient, HttpOptions, url_allowed};

/// A hook that turns the userinfo response into the `upstream_claims` of issued tokens.
type UserinfoMapper = Arc<dyn Fn(&Map<String, Value>) -> Result<Map<String, Value>, UpstreamError> + Send + Sync>;

/// A plain OAuth 2 identity provider: authorization code flow with PKCE (S256, always sent),
/// then the user is whoever the userinfo endpoint says the access token belongs to.
///
/// For providers without OpenID Connect, such as GitHub, whose access tokens are opaque and
/// who return no ID token. The identity's subject is the userinfo member named by
/// [`subject_claim`](OAuth2UpstreamBuilder::subject_claim) (default `sub`; GitHub's is the
/// numeric `id`, turned into a string). [`response_issuer`](Upstream::response_issuer) is
/// `None`: such providers have no issuer identifier.
///
/// ```
/// use tower_mcp_auth::upstream::OAuth2Upstream;
///
/// let github = OAuth2Upstream::builder()
///     .authorization_endpoint("https://github.com/login/oauth/authorize")
///     .token_endpoint("https://github.com/login/oauth/access_token")
///     .userinfo_endpoint("https://api.github.com/user")
///     .client_id("Iv1.0123456789abcdef")
///     .client_secret("…")
///     .scopes(["read:user", "user:email"])
///     .subject_claim("id")
///     .display_name("GitHub")
///     .build()
///     .unwrap();
/// # drop(github);
/// ```
pub struct OAuth2Upstream {
    authorization_endpoint: Url,
    token_endpoint: Url,
    userinfo_endpoint: Url,
    revocation_endpoint: Option<Url>,
    client: ClientCredentials,
    scopes: Vec<String>,
    extra_params: Vec<(String, String)>,
    subject_claim: String,
    mapper: Option<UserinfoMapper>,
    display_name: String,
    http: HttpClient,
    clock: SharedClock,
}

impl fmt::Debug for OAuth2Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuth2Upstream")
            .field("authorization_endpoint", &self.authorization_endpoint.as_str())
            .field("token_endpoint", &self.token_endpoint.as_str())
            .field("userinfo_endpoint", &self.userinfo_endpoint.as_str())
            .field("client", &self.client)
            .field("scopes", &self.scopes)
            .field("subject_claim", &self.subject_claim)
            .finish_non_exhaustive()
    }
}

impl OAuth2Upstream {
    /// Starts a configuration.
    pub fn builder() -> OAuth2UpstreamBuilder {
        OAuth2UpstreamBuilder::default()
    }
}

/// Builds an [`OAuth2Upstream`].
#[derive(Default)]
pub struct OAuth2UpstreamBuilder {
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
    userinfo_endpoint: Option<String>,
    revocation_endpoint: Option<String>,
    client_id: Option<String>,
    client_secret: Option<Zeroizing<String>>,
    secret_post: bool,
    scopes: Vec<String>,
    extra_params: Vec<(String, String)>,
    subject_claim: Option<String>,
    mapper: Option<UserinfoMapper>,
    display_name: Option<String>,
    clock: Option<SharedClock>,
    http: HttpOptions,
}

impl fmt::Debug for OAuth2UpstreamBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuth2UpstreamBuilder")
            .field("authorization_endpoint", &self.authorization_endpoint)
            .field("token_endpoint", &self.token_endpoint)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl OAuth2UpstreamBuilder {
    /// The provider's authorization endpoint (required).
    pub fn authorization_endpoint(mut self, url: impl Into<String>) -> Self {
        self.authorization_endpoint = Some(url.into());
        self
    }

    /// The provider's token endpoint (required).
    pub fn token_endpoint(mut self, url: impl Into<String>) -> Self {
        self.token_endpoint = Some(url.into());
        self
    }

    /// The endpoint that says who an access token belongs to (required): called with
    /// `Authorization: Bearer` and `Accept: application/json`, it must answer a JSON object.
    pub fn userinfo_endpoint(mut self, url: impl Into<String>) -> Self {
        self.userinfo_endpoint = Some(url.into());
        self
    }

    /// An RFC 7009 revocation endpoint (optional).
    pub fn revocation_endpoint(mut self, url: impl Into<String>) -> Self {
        self.revocation_endpoint = Some(url.into());
        self
    }

    /// The client identifier registered at the provider (required).
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }

    /// The client secret. Without one the client is public (PKCE only).
    pub fn client_secret(mut self, secret: impl Into<String>) -> Self {
        self.client_secret = Some(Zeroizing::new(secret.into()));
        self
    }

    /// Sends the client secret in the form body (`client_secret_post`) instead of HTTP Basic
    /// (`client_secret_basic`, the default).
    pub fn client_secret_post(mut self) -> Self {
        self.secret_post = true;
        self
    }

    /// The scopes to request (default: none).
    pub fn scopes<I, T>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Extra parameters for the authorization request (for example `allow_signup=false`).
    /// Parameters this upstream sets itself are refused by [`build`](Self::build).
    pub fn extra_authorize_params<I, K, V>(mut self, params: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.extra_params.extend(params.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// The userinfo member that identifies the user (default `sub`). Strings are used as
    /// they are, integers are turned into their decimal string (GitHub's `id`).
    pub fn subject_claim(mut self, name: impl Into<String>) -> Self {
        self.subject_claim = Some(name.into());
        self
    }

    /// Turns the userinfo response into the `upstream_claims` of issued tokens. Default: the
    /// subject as `sub`, and `email`, `email_verified`, `name`, `preferred_username` and
    /// `login` when present. An error rejects the sign-in.
    pub fn map_claims<F>(mut self, f: F) -> Self
    where
        F: Fn(&Map<String, Value>) -> Result<Map<String, Value>, UpstreamError> + Send + Sync + 'static,
    {
        self.mapper = Some(Arc::new(f));
        self
    }

    /// The name shown on consent pages (default: the host of the authorization endpoint).
    pub fn display_name(mut self, name: impl Into<String>) -> Self {
        self.display_name = Some(name.into());
        self
    }

    /// Total deadline of each request to the provider (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.http.timeout = timeout;
        self
    }

    /// The clock (default: the system clock), for token expiry times.
    pub fn clock<C: Clock>(mut self, clock: C) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Trusts an extra root certificate (PEM) for requests to the provider, e.g. a test CA.
    pub fn trust_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.http.extra_roots.push(pem.into());
        self
    }

    /// Allows plain-`http` endpoints on non-loopback hosts (loopback is always allowed).
    /// Never in production.
    pub fn insecure_allow_http(mut self) -> Self {
        self.http.allow_http = true;
        self
    }

    /// Validates the configuration.
    pub fn build(self) -> Result<OAuth2Upstream, ConfigError> {
        let allow_http = self.http.allow_http;
        let required = |v: Option<String>, name: &str| {
            v.ok_or_else(|| ConfigError::new(ConfigErrorKind::Missing, format!("the {name} is required")))
        };
        let authorization_endpoint = endpoint(
            &required(self.authorization_endpoint, "authorization endpoint")?,
            "authorization endpoint",
            allow_http,
        )?;
        let token_endpoint = endpoint(&required(self.token_endpoint, "token endpoint")?, "token endpoint", allow_http)?;
        let userinfo_endpoint =
            endpoint(&required(self.userinfo_endpoint, "userinfo endpoint")?, "userinfo endpoint", allow_http)?;
        let revocation_endpoint =
            self.revocation_endpoint.map(|u| endpoint(&u, "revocation endpoint", allow_http)).transpose()?;
        let client = ClientCredentials::new(self.client_id, self.client_secret, self.secret_post)?;
        let scopes = scope_list(self.scopes, &[])?;
        check_extra_params(&self.extra_params, &RESERVED_PARAMS)?;
        let subject_claim = self.subject_claim.unwrap_or_else(|| "sub".to_owned());
        if subject_claim.is_empty() {
            return Err(ConfigError::new(ConfigErrorKind::Invalid, "the subject claim name is empty"));
        }
        let display_name = self
            .display_name
            .unwrap_or_else(|| authorization_endpoint.host_str().unwrap_or("OAuth 2 provider").to_owned());
        Ok(OAuth2Upstream {
            authorization_endpoint,
            token_endpoint,
            userinfo_endpoint,
            revocation_endpoint,
            client,
            scopes,
            extra_params: self.extra_params,
            subject_claim,
            mapper: self.mapper,
            display_name,
            http: HttpClient::new(&self.http)?,
            clock: self.clock.unwrap_or_else(crate::clock::system),
        })
    }
}

impl Upstream for OAuth2Upstream {
    fn display_name(&self) -> &str {
        &self.display_name
    }

    fn scopes(&self) -> &[String] {
        &self.scopes
    }

    fn authorization_url<'a>(&'a self, request: &'a AuthorizationRequest<'a>) -> UpstreamFuture<'a, Url> {
        Box::pin(async move {
            Ok(authorization_url(
                &self.authorization_endpoint,
                &self.client.id,
                &self.scopes,
                request,
                None,
                &self.extra_params,
            ))
        })
    }

    fn response_issuer<'a>(&'a self) -> UpstreamFuture<'a, Option<(String, bool)>> {
        Box::pin(async { Ok(None) })
    }

    fn exchange<'a>(
        &'a self,
        code: &'a str,
        code_verifier: &'a str,
        redirect_uri: &'a str,
        _nonce: &'a str,
    ) -> UpstreamFuture<'a, UpstreamGrant> {
        Box::pin(async move {
            let form = vec![
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", code_verifier),
            ];
            let response = token_request(&self.http, &self.token_endpoint, &self.client, form).await?;
            let access_token = response.access_token.clone();
            let userinfo = userinfo(&self.http, &self.userinfo_endpoint, &access_token).await?;
            let subject = subject_of(&userinfo, &self.subject_claim)?;
            let claims = match &self.mapper {
                Some(map) => map(&userinfo)?,
                None => {
                    let mut claims = pick_claims(&[&userinfo], &DEFAULT_CLAIMS);
                    claims.insert("sub".to_owned(), Value::String(subject.clone()));
                    claims
                }
            };
            let tokens = response.into_tokens(self.clock.unix_time(), Some(&self.scopes));
            Ok(UpstreamGrant::new(UpstreamIdentity::new(subject, claims), tokens))
        })
    }

    fn refresh<'a>(&'a self, tokens: &'a UpstreamTokens) -> UpstreamFuture<'a, UpstreamTokens> {
        Box::pin(async move {
            let refresh_token =
                tokens.refresh_token.as_deref().ok_or_else(|| UpstreamError::refused("no upstream refresh token"))?;
            let form = vec![("grant_type", "refresh_token"), ("refresh_token", refresh_token)];
            let response = token_request(&self.http, &self.token_endpoint, &self.client, form).await?;
            Ok(response.into_tokens(self.clock.unix_time(), None))
        })
    }

    fn revoke<'a>(&'a self, tokens: &'a UpstreamTokens) -> UpstreamFuture<'a, ()> {
        Box::pin(async move {
            if let Some(url) = &self.revocation_endpoint {
                revoke(&self.http, url, &self.client, tokens).await;
            }
            Ok(())
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Machinery shared with the OpenID Connect upstreams.

/// Claims copied into `upstream_claims` by default, when present.
pub(super) const DEFAULT_CLAIMS: [&str; 6] = ["sub", "email", "email_verified", "name", "preferred_username", "login"];

/// Authorization request parameters the upstreams set themselves.
pub(super) const RESERVED_PARAMS: [&str; 8] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
];

/// The OAuth client the authorization server is at the provider.
pub(super) struct ClientCredentials {
    pub(super) id: String,
    secret: Option<Zeroizing<String>>,
    post: bool,
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let method = match (&self.secret, self.post) {
            (None, _) => "none",
            (Some(_), false) => "client_secret_basic",
            (Some(_), true) => "client_secret_post",
        };
        f.debug_struct("Client").field("id", &self.id).field("auth", &method).finish()
    }
}

impl ClientCredentials {
    pub(super) fn new(id: Option<String>, secret: Option<Zeroizing<String>>, post: bool) -> Result<Self, ConfigError> {
        let id = id
            .filter(|i| !i.is_empty())
            .ok_or_else(|| ConfigError::new(ConfigErrorKind::Missing, "the upstream client_id is required"))?;
        if secret.as_ref().is_some_and(|s| s.is_empty()) {
            return Err(ConfigError::new(ConfigErrorKind::Invalid, "the upstream client secret is empty"));
        }
        if post && secret.is_none() {
            return Err(ConfigError::new(ConfigErrorKind::Missing, "client_secret_post needs a client secret"));
        }
        Ok(Self { id, secret, post })
    }

    /// Adds client authentication to `form`; returns the Basic credentials to send, if any.
    fn authenticate<'a>(&'a self, form: &mut Vec<(&'a str, &'a str)>) -> Option<(&'a str, &'a str)> {
        match &self.secret {
            None => {
                form.push(("client_id", &self.id));
                None
            }
            Some(secret) if self.post => {
                form.push(("client_id", &self.id));
                form.push(("client_secret", secret.as_str()));
                None
            }
            Some(secret) => Some((&self.id, secret.as_str())),
        }
    }
}

/// Parses and checks a configured endpoint URL.
pub(super) fn endpoint(url: &str, name: &str, allow_http: bool) -> Result<Url, ConfigError> {
    let parsed = Url::parse(url).map_err(|e| ConfigError::new(ConfigErrorKind::InvalidUrl, format!("{name}: {e}")))?;
    if parsed.fragment().is_some() {
        return Err(ConfigError::new(ConfigErrorKind::InvalidUrl, format!("{name} has a fragment")));
    }
    if !url_allowed(&parsed, allow_http) {
        return Err(ConfigError::new(ConfigErrorKind::InsecureUrl, format!("{name} must use https")));
    }
    Ok(parsed)
}

/// Validated scopes, duplicates removed, `first` (e.g. `openid`) in front.
pub(super) fn scope_list(scopes: Vec<String>, first: &[&str]) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = first.iter().map(|s| (*s).to_owned()).collect();
    for scope in scopes {
        if !is_scope_token(&scope) {
            return Err(ConfigError::new(ConfigErrorKind::InvalidScope, format!("invalid upstream scope {scope:?}")));
        }
        if !out.contains(&scope) {
            out.push(scope);
        }
    }
    Ok(out)
}

/// Refuses extra authorization parameters that would override what the upstream sets.
pub(super) fn check_extra_params(params: &[(String, String)], reserved: &[&str]) -> Result<(), ConfigError> {
    for (name, _) in params {
        if name.is_empty() || reserved.iter().any(|r| r.eq_ignore_ascii_case(name)) {
            return Err(ConfigError::new(
                ConfigErrorKind::Invalid,
                format!("authorization parameter {name:?} cannot be set as an extra parameter"),
            ));
        }
    }
    Ok(())
}

/// The authorization request URL: code flow with PKCE S256, `nonce` for OpenID Connect.
pub(super) fn authorization_url(
    endpoint: &Url,
    client_id: &str,
    scopes: &[String],
    request: &AuthorizationRequest<'_>,
    nonce: Option<&str>,
    extra: &[(String, String)],
) -> Url {
    let mut url = endpoint.clone();
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", request.redirect_uri);
        if !scopes.is_empty() {
            q.append_pair("scope", &scopes.join(" "));
        }
        q.append_pair("state", request.state);
        if let Some(nonce) = nonce {
            q.append_pair("nonce", nonce);
        }
        q.append_pair("code_challenge", request.code_challenge).append_pair("code_challenge_method", "S256");
        for (k, v) in extra {
            q.append_pair(k, v);
        }
    }
    url
}

/// A successful token endpoint response (RFC 6749 §5.1), checked: an access token is present
/// and the token type, when given, is `Bearer`.
pub(super) struct TokenResponse {
    pub(super) access_token: String,
    pub(super) refresh_token: Option<String>,
    pub(super) id_token: Option<String>,
    pub(super) scope: Option<String>,
    pub(super) expires_in: Option<i64>,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("refresh_token", &self.refresh_token.is_some())
            .field("id_token", &self.id_token.is_some())
            .field("scope", &self.scope)
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

impl TokenResponse {
    fn parse(body: &[u8]) -> Result<Self, UpstreamError> {
        let Ok(Value::Object(mut doc)) = serde_json::from_slice::<Value>(body) else {
            return Err(UpstreamError::invalid("token response is not a JSON object"));
        };
        if let Some(code) = doc.get("error") {
            // Some providers (GitHub) answer errors with 200.
            tracing::debug!(error = %error_code(Some(code)), "upstream token request refused");
            return Err(UpstreamError::refused("the provider refused the token request"));
        }
        let mut string = |name: &str| match doc.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(UpstreamError::invalid(format!("token response member {name} is not a string"))),
        };
        let access_token = string("access_token")?.filter(|t| !t.is_empty());
        let token_type = string("token_type")?;
        let refresh_token = string("refresh_token")?.filter(|t| !t.is_empty());
        let id_token = string("id_token")?.filter(|t| !t.is_empty());
        let scope = string("scope")?;
        if let Some(tt) = token_type
            && !tt.eq_ignore_ascii_case("bearer")
        {
            return Err(UpstreamError::invalid("the provider issued a token that is not a bearer token"));
        }
        let access_token = access_token.ok_or_else(|| UpstreamError::invalid("token response has no access_token"))?;
        // Numbers, and numeric strings as a few providers send; anything else is ignored.
        let expires_in = match doc.get("expires_in") {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.parse::<i64>().ok(),
            _ => None,
        }
        .filter(|n| *n >= 0);
        Ok(Self { access_token, refresh_token, id_token, scope, expires_in })
    }

    /// The tokens, with the expiry made absolute. `requested` are the scopes to record when
    /// the response names none (RFC 6749 §5.1: then the granted scope is the requested one);
    /// `None` leaves the scope out (refresh: the caller keeps the earlier one).
    pub(super) fn into_tokens(self, now: i64, requested: Option<&[String]>) -> UpstreamTokens {
        UpstreamTokens {
            access_token: Some(self.access_token),
            refresh_token: self.refresh_token,
            id_token: self.id_token,
            expires_at: self.expires_in.map(|s| now.saturating_add(s)),
            scope: self.scope.or_else(|| requested.filter(|s| !s.is_empty()).map(|s| s.join(" "))),
        }
    }
}

/// An OAuth error code fit for logs: a short printable token, else a placeholder.
fn error_code(value: Option<&Value>) -> &str {
    match value.and_then(Value::as_str) {
        Some(code) if code.len() <= 64 && is_scope_token(code) => code,
        Some(_) => "<unprintable>",
        None => "<none>",
    }
}

/// POSTs `form` with client authentication to the token endpoint.
///
/// 4xx (and 200 with an `error` member) → refused; 5xx, other statuses, timeouts and transport
/// failures → unavailable; a body that is not a usable token response → invalid. Response
/// bodies never go into error messages.
pub(super) async fn token_request<'a>(
    http: &HttpClient,
    url: &Url,
    client: &'a ClientCredentials,
    mut form: Vec<(&'a str, &'a str)>,
) -> Result<TokenResponse, UpstreamError> {
    let basic = client.authenticate(&mut form);
    let answer = http.post_form_any_status(url, &form, basic).await.map_err(|e| fetch_error("token endpoint", e))?;
    match answer.status {
        200 => TokenResponse::parse(&answer.body),
        status @ 400..=499 => {
            let doc: Option<Value> = serde_json::from_slice(&answer.body).ok();
            let code = error_code(doc.as_ref().and_then(|d| d.get("error")));
            tracing::debug!(status, error = %code, "upstream token request refused");
            Err(UpstreamError::refused(format!("the provider refused the token request ({status})")))
        }
        status => {
            tracing::debug!(status, "upstream token endpoint failed");
            Err(UpstreamError::unavailable(format!("token endpoint answered {status}")))
        }
    }
}

/// Maps a fetch failure: the scheme check failing is a configuration problem, everything
/// else means the provider cannot be used right now.
pub(super) fn fetch_error(what: &str, e: FetchError) -> UpstreamError {
    match e {
        FetchError::Insecure => UpstreamError::invalid(format!("{what}: {}", e.as_str())),
        _ => UpstreamError::unavailable(format!("{what}: {}", e.as_str())),
    }
}

/// Calls a userinfo endpoint with the access token; the answer must be a JSON object.
/// 401/403 → refused (the provider does not accept the token), other failures → unavailable.
pub(super) async fn userinfo(
    http: &HttpClient,
    url: &Url,
    access_token: &str,
) -> Result<Map<String, Value>, UpstreamError> {
    let fetched = match http.get_with_bearer(url, access_token).await {
        Ok(f) => f,
        Err(FetchError::Status(status @ (401 | 403))) => {
            return Err(UpstreamError::refused(format!("userinfo endpoint answered {status}")));
        }
        Err(e) => return Err(fetch_error("userinfo endpoint", e)),
    };
    match serde_json::from_slice::<Value>(&fetched.body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(UpstreamError::invalid("userinfo response is not a JSON object (signed userinfo is not supported)")),
    }
}

/// The subject named by `claim`: a non-empty string, or an integer as a decimal string.
fn subject_of(userinfo: &Map<String, Value>, claim: &str) -> Result<String, UpstreamError> {
    match userinfo.get(claim) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        _ => Err(UpstreamError::invalid(format!("userinfo has no usable {claim:?} member"))),
    }
}

/// For each of `keys`, the first value found in `sources`.
pub(super) fn pick_claims(sources: &[&Map<String, Value>], keys: &[&str]) -> Map<String, Value> {
    let mut out = Map::new();
    for key in keys {
        if let Some(v) = sources.iter().find_map(|s| s.get(*key).filter(|v| !v.is_null())) {
            out.insert((*key).to_owned(), v.clone());
        }
    }
    out
}

/// RFC 7009 revocation of the refresh token (else the access token). Failures are logged and
/// ignored: revocation is best effort, and the grant is deleted on our side regardless.
pub(super) async fn revoke(http: &HttpClient, url: &Url, client: &ClientCredentials, tokens: &UpstreamTokens) {
    let (token, hint) = match (&tokens.refresh_token, &tokens.access_token) {
        (Some(t), _) => (t.as_str(), "refresh_token"),
        (None, Some(t)) => (t.as_str(), "access_token"),
        (None, None) => return,
    };
    let mut form = vec![("token", token), ("token_type_hint", hint)];
    let basic = client.authenticate(&mut form);
    match http.post_form_any_status(url, &form, basic).await {
        Ok(answer) if answer.status == 200 => tracing::debug!(hint, "upstream token revoked"),
        Ok(answer) => tracing::warn!(status = answer.status, hint, "upstream revocation failed; ignored"),
        Err(e) => tracing::warn!(why = e.as_str(), hint, "upstream revocation failed; ignored"),
    }
}
