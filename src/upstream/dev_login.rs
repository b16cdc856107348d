use std::fmt;
use std::time::Duration;

use base64::Engine;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use url::Url;

use super::{
    AuthorizationRequest, Upstream, UpstreamError, UpstreamFuture, UpstreamGrant, UpstreamIdentity, UpstreamTokens,
};
use crate::store::crypto::{random_token, secret_hash, secure_eq};

/// A local sign-in page for one configured user, for development: the "provider" is the
/// authorization server itself, which serves a page at `{issuer}/dev-login` with one button.
///
/// Never use it where anyone else can reach the server: whoever opens the page signs in as
/// that user.
pub struct DevLogin {
    user: String,
    claims: Map<String, Value>,
    /// One-time codes: hash(code) → (nonce, PKCE challenge), 60 s.
    codes: moka::sync::Cache<String, (String, String)>,
}

impl fmt::Debug for DevLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevLogin").field("user", &self.user).finish_non_exhaustive()
    }
}

impl DevLogin {
    /// A development login for `user` (also its subject identifier).
    pub fn new(user: impl Into<String>) -> Self {
        let user = user.into();
        let claims = json!({ "preferred_username": user, "name": user });
        Self {
            claims: claims.as_object().cloned().unwrap_or_default(),
            user,
            codes: moka::sync::Cache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(60)).build(),
        }
    }

    /// Extra claims about the user (merged into `upstream_claims`).
    pub fn claims(mut self, claims: Map<String, Value>) -> Self {
        self.claims.extend(claims);
        self
    }

    /// The user.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Called when the user presses "sign in": a one-time code for the callback.
    pub(crate) fn issue_code(&self, nonce: &str, code_challenge: &str) -> String {
        let code = random_token();
        self.codes.insert(secret_hash(&code), (nonce.to_owned(), code_challenge.to_owned()));
        code
    }

    /// The path of the login page under the issuer.
    pub const PATH: &'static str = "/dev-login";
}

impl Upstream for DevLogin {
    fn display_name(&self) -> &str {
        "development login"
    }

    fn scopes(&self) -> &[String] {
        &[]
    }

    fn authorization_url<'a>(&'a self, request: &'a AuthorizationRequest<'a>) -> UpstreamFuture<'a, Url> {
        Box::pin(async move {
            let mut url = Url::parse(&format!("{}{}", request.server_issuer.trim_end_matches('/'), Self::PATH))
                .map_err(|_| UpstreamError::invalid("issuer is not a URL"))?;
            url.query_pairs_mut()
                .append_pair("state", request.state)
                .append_pair("nonce", request.nonce)
                .append_pair("code_challenge", request.code_challenge);
            Ok(url)
        })
    }

    fn response_issuer<'a>(&'a self) -> UpstreamFuture<'a, Option<(String, bool)>> {
        Box::pin(async { Ok(None) })
    }

    fn exchange<'a>(
        &'a self,
        code: &'a str,
        code_verifier: &'a str,
        _redirect_uri: &'a str,
        nonce: &'a str,
    ) -> UpstreamFuture<'a, UpstreamGrant> {
        Box::pin(async move {
            let (sent_nonce, challenge) =
                self.codes.remove(&secret_hash(code)).ok_or_else(|| UpstreamError::refused("unknown login code"))?;
            let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(code_verifier));
            if !secure_eq(sent_nonce.as_bytes(), nonce.as_bytes())
                || !secure_eq(computed.as_bytes(), challenge.as_bytes())
            {
                return Err(UpstreamError::invalid("login code does not match this sign-in"));
            }
            let mut claims = self.claims.clone();
            claims.insert("sub".into(), Value::String(self.user.clone()));
            Ok(UpstreamGrant::new(UpstreamIdentity::new(self.user.clone(), claims), UpstreamTokens::default()))
        })
    }

    fn refresh<'a>(&'a self, tokens: &'a UpstreamTokens) -> UpstreamFuture<'a, UpstreamTokens> {
        Box::pin(async move { Ok(tokens.clone()) })
    }

    fn as_dev_login(&self) -> Option<&DevLogin> {
        Some(self)
    }
}
