//! The identity provider behind the authorization server: an [`Upstream`] authenticates the
//! user in the browser and hands back who they are and the provider's tokens.
//!
//! Implementations: [`OidcUpstream`] (any OpenID Connect provider, by discovery; with a
//! `verify_id_token` mode for providers whose access tokens are opaque), [`EntraUpstream`]
//! (Microsoft Entra ID), [`OAuth2Upstream`] (plain OAuth 2 with a userinfo endpoint, e.g.
//! GitHub) and [`DevLogin`] (a local login page for one configured user, for development).
//!
//! The authorization server never gives the provider's tokens to MCP clients: it keeps them
//! encrypted, issues its own tokens, and lets handlers load the provider's access token on the
//! user's behalf.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use url::Url;

mod dev_login;
mod entra;
mod oauth2;
mod oidc;

pub use dev_login::DevLogin;
pub use entra::{EntraUpstream, EntraUpstreamBuilder};
pub use oauth2::{OAuth2Upstream, OAuth2UpstreamBuilder};
pub use oidc::{OidcUpstream, OidcUpstreamBuilder};

/// The future of an upstream operation.
pub type UpstreamFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, UpstreamError>> + Send + 'a>>;

/// What the authorization server asks the provider for when it sends the browser there.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuthorizationRequest<'a> {
    /// The `state` to send (random, single-use, bound to the browser by the server).
    pub state: &'a str,
    /// The server's callback URL (the provider's `redirect_uri`).
    pub redirect_uri: &'a str,
    /// PKCE S256 challenge towards the provider.
    pub code_challenge: &'a str,
    /// The OpenID Connect `nonce` (ignored by plain OAuth 2 providers).
    pub nonce: &'a str,
    /// The authorization server's own issuer URL (used by [`DevLogin`] to point at itself).
    pub server_issuer: &'a str,
}

impl<'a> AuthorizationRequest<'a> {
    /// A request with the given `state`, callback URL, PKCE S256 challenge, `nonce` and the
    /// authorization server's issuer.
    pub fn new(
        state: &'a str,
        redirect_uri: &'a str,
        code_challenge: &'a str,
        nonce: &'a str,
        server_issuer: &'a str,
    ) -> Self {
        Self { state, redirect_uri, code_challenge, nonce, server_issuer }
    }
}

/// Who signed in, as the provider says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UpstreamIdentity {
    /// The provider's stable subject identifier.
    pub subject: String,
    /// Claims about the user, embedded in issued tokens as `upstream_claims` (keep this small:
    /// it travels in every access token).
    pub claims: Map<String, Value>,
}

impl UpstreamIdentity {
    /// An identity with `subject` and `claims`.
    pub fn new(subject: impl Into<String>, claims: Map<String, Value>) -> Self {
        Self { subject: subject.into(), claims }
    }
}

/// The provider's tokens for one grant. Kept encrypted at rest, never sent to MCP clients.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UpstreamTokens {
    /// The provider's access token.
    pub access_token: Option<String>,
    /// The provider's refresh token.
    pub refresh_token: Option<String>,
    /// The provider's ID token (kept across refreshes that do not return a new one).
    pub id_token: Option<String>,
    /// Expiry of the access token, seconds since the Unix epoch.
    pub expires_at: Option<i64>,
    /// The scopes the provider granted.
    pub scope: Option<String>,
}

impl fmt::Debug for UpstreamTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTokens")
            .field("access_token", &self.access_token.as_ref().map(|_| "<redacted>"))
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "<redacted>"))
            .field("id_token", &self.id_token.as_ref().map(|_| "<redacted>"))
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .finish()
    }
}

impl UpstreamTokens {
    /// Tokens of a refresh response merged over these: what the response omits (typically
    /// the refresh token or the ID token) is kept.
    pub fn merged(&self, newer: UpstreamTokens) -> UpstreamTokens {
        UpstreamTokens {
            access_token: newer.access_token.or_else(|| self.access_token.clone()),
            refresh_token: newer.refresh_token.or_else(|| self.refresh_token.clone()),
            id_token: newer.id_token.or_else(|| self.id_token.clone()),
            expires_at: newer.expires_at.or(self.expires_at),
            scope: newer.scope.or_else(|| self.scope.clone()),
        }
    }
}

/// The result of a completed sign-in at the provider.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct UpstreamGrant {
    /// Who signed in.
    pub identity: UpstreamIdentity,
    /// The provider's tokens.
    pub tokens: UpstreamTokens,
}

impl UpstreamGrant {
    /// A grant for `identity` with `tokens`.
    pub fn new(identity: UpstreamIdentity, tokens: UpstreamTokens) -> Self {
        Self { identity, tokens }
    }
}

/// An identity provider the authorization server delegates sign-in to.
pub trait Upstream: Send + Sync + fmt::Debug + 'static {
    /// A short human-readable name for consent pages ("Keycloak", "Microsoft Entra ID").
    fn display_name(&self) -> &str;

    /// The scopes requested from the provider (shown on the consent page).
    fn scopes(&self) -> &[String];

    /// Where to send the browser to sign in.
    fn authorization_url<'a>(&'a self, request: &'a AuthorizationRequest<'a>) -> UpstreamFuture<'a, Url>;

    /// The `iss` the provider's authorization responses carry (RFC 9207), and whether the
    /// provider promises to send it. `None` when the provider has no issuer identifier.
    fn response_issuer<'a>(&'a self) -> UpstreamFuture<'a, Option<(String, bool)>>;

    /// Exchanges the authorization code from the callback (with the PKCE verifier and the
    /// `nonce` sent) and establishes who signed in.
    fn exchange<'a>(
        &'a self,
        code: &'a str,
        code_verifier: &'a str,
        redirect_uri: &'a str,
        nonce: &'a str,
    ) -> UpstreamFuture<'a, UpstreamGrant>;

    /// Refreshes the provider's tokens; the result is merged over `tokens` by the caller.
    fn refresh<'a>(&'a self, tokens: &'a UpstreamTokens) -> UpstreamFuture<'a, UpstreamTokens>;

    /// Revokes the provider's tokens, where the provider supports it. Default: nothing.
    fn revoke<'a>(&'a self, tokens: &'a UpstreamTokens) -> UpstreamFuture<'a, ()> {
        let _ = tokens;
        Box::pin(async { Ok(()) })
    }

    /// The development login, if this upstream is one (the server then serves its page).
    fn as_dev_login(&self) -> Option<&DevLogin> {
        None
    }
}

/// Why an upstream operation failed. Messages are for logs; clients see a generic error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("upstream {kind:?}: {message}")]
pub struct UpstreamError {
    kind: UpstreamErrorKind,
    message: String,
}

/// What kind of upstream failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpstreamErrorKind {
    /// The provider cannot be reached or answered with a server error: try later.
    Unavailable,
    /// The provider refused (bad code, revoked refresh token, user denied).
    Refused,
    /// The provider's answer failed verification (ID token signature, `aud`, `nonce`, `iss`,
    /// wrong `token_type`), or the configuration is unusable with it.
    Invalid,
}

impl UpstreamError {
    /// A provider that cannot be reached.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self { kind: UpstreamErrorKind::Unavailable, message: message.into() }
    }

    /// A provider that refused.
    pub fn refused(message: impl Into<String>) -> Self {
        Self { kind: UpstreamErrorKind::Refused, message: message.into() }
    }

    /// An answer that failed verification.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self { kind: UpstreamErrorKind::Invalid, message: message.into() }
    }

    /// The kind of failure.
    pub fn kind(&self) -> UpstreamErrorKind {
        self.kind
    }
}
