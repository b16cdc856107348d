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
use crate::store::{Namespace, Store, StoreError};

/// Login codes of authorization servers (shared by their instances).
const SHARED_CODES: Namespace = Namespace::new("dev_login_codes");
const CODE_LIFETIME: Duration = Duration::from_secs(60);

/// A local sign-in page for one configured user, for development: the "provider" is the
/// authorization server itself, which serves a page at `{issuer}/dev-login` with one button.
///
/// Never use it where anyone else can reach the server: whoever opens the page signs in as
/// that user.
pub struct DevLogin {
    user: String,
    claims: Map<String, Value>,
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
        Self { claims: claims.as_object().cloned().unwrap_or_default(), user }
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

    /// Called when the user presses "sign in": a one-time code for the callback (60 s), kept
    /// in the authorization server's store so that any instance sharing it can complete the
    /// sign-in. Only its hash is stored.
    pub(crate) async fn issue_shared_code(
        &self,
        store: &dyn Store,
        nonce: &str,
        code_challenge: &str,
    ) -> Result<String, StoreError> {
        let code = random_token();
        let record = serde_json::to_vec(&(nonce, code_challenge)).map_err(|_| StoreError::unavailable("encode"))?;
        store.put(SHARED_CODES, &secret_hash(&code), record, Some(CODE_LIFETIME)).await?;
        Ok(code)
    }

    /// Redeems a code made by [`issue_shared_code`](Self::issue_shared_code), once.
    pub(crate) async fn exchange_shared(
        &self,
        store: &dyn Store,
        code: &str,
        code_verifier: &str,
        nonce: &str,
    ) -> Result<UpstreamGrant, UpstreamError> {
        let record = store
            .take(SHARED_CODES, &secret_hash(code))
            .await
            .map_err(|_| UpstreamError::unavailable("store unavailable"))?
            .ok_or_else(|| UpstreamError::refused("unknown login code"))?;
        let (sent_nonce, challenge): (String, String) =
            serde_json::from_slice(&record).map_err(|_| UpstreamError::refused("unknown login code"))?;
        self.grant(&sent_nonce, &challenge, code_verifier, nonce)
    }

    fn grant(
        &self,
        sent_nonce: &str,
        challenge: &str,
        code_verifier: &str,
        nonce: &str,
    ) -> Result<UpstreamGrant, UpstreamError> {
        let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(code_verifier));
        if !secure_eq(sent_nonce.as_bytes(), nonce.as_bytes()) || !secure_eq(computed.as_bytes(), challenge.as_bytes())
        {
            return Err(UpstreamError::invalid("login code does not match this sign-in"));
        }
        let mut claims = self.claims.clone();
        claims.insert("sub".into(), Value::String(self.user.clone()));
        Ok(UpstreamGrant::new(UpstreamIdentity::new(self.user.clone(), claims), UpstreamTokens::default()))
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
        _code: &'a str,
        _code_verifier: &'a str,
        _redirect_uri: &'a str,
        _nonce: &'a str,
    ) -> UpstreamFuture<'a, UpstreamGrant> {
        // The authorization server redeems development login codes itself (`exchange_shared`),
        // with its store.
        Box::pin(async {
            Err(UpstreamError::refused("the development login completes inside the authorization server"))
        })
    }

    fn refresh<'a>(&'a self, tokens: &'a UpstreamTokens) -> UpstreamFuture<'a, UpstreamTokens> {
        Box::pin(async move { Ok(tokens.clone()) })
    }

    fn as_dev_login(&self) -> Option<&DevLogin> {
        Some(self)
    }
}
