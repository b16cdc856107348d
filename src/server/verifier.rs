//! Verifying the tokens this server issues, and the handle that loads the upstream provider's
//! access token for a verified token.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use super::Core;
use super::records::{GRANTS, GrantRecord, REVOKED_JTI, UPSTREAM_TOKENS, decode};
use crate::error::VerifyError;
use crate::token::{AccessToken, BearerToken};
use crate::upstream::{UpstreamErrorKind, UpstreamTokens};
use crate::verify::{Algorithm, BoxVerifyFuture, Issuer, JwtVerifier, TokenVerifier};

/// The [`VerifyError::reason`] of a token whose `kid` is not in the key set.
const UNKNOWN_KID: &str = "unknown kid";

pub(crate) fn upstream_aad(grant_id: &str) -> Vec<u8> {
    format!("upstream-tokens:{grant_id}").into_bytes()
}

pub(crate) fn jwt_verifier(core: Option<Arc<Core>>, base: &Core) -> Result<JwtVerifier, crate::ConfigError> {
    let mut builder = JwtVerifier::builder()
        .issuer(Issuer::with_shared_keys(base.issuer.clone(), base.keys.public_keys()))
        .audience(base.resource.resource())
        .algorithms([Algorithm::ES256])
        .require_at_jwt(true)
        .clock(base.clock.clone());
    if let Some(core) = core {
        builder = builder.map_claims(move |claims, token| {
            if let Some(Value::Object(up)) = claims.get("upstream_claims") {
                token.set_upstream_claims(up.clone());
            }
            match claims.get("gid").and_then(Value::as_str) {
                Some(gid) => {
                    token.insert_extension(UpstreamAccess { core: core.clone(), grant_id: gid.to_owned() });
                    Ok(())
                }
                None => Err(VerifyError::invalid_token("no grant")),
            }
        });
    }
    builder.build()
}

/// Verifies the access tokens an [`AuthorizationServer`](super::AuthorizationServer) issues:
/// signature with its current keys, `iss`, `aud` = the resource, `typ: at+jwt`, lifetime.
/// The [`AccessToken`] carries the upstream provider's claims as `upstream_claims` (from the
/// signed token) and an [`UpstreamAccess`] extension.
///
/// Stateless by default; with the server's revocation check on, each verification also reads
/// the store (revoked token ids and grants).
#[derive(Clone)]
pub struct IssuedTokenVerifier {
    core: Arc<Core>,
    jwt: JwtVerifier,
}

impl fmt::Debug for IssuedTokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedTokenVerifier").field("issuer", &self.core.issuer).finish_non_exhaustive()
    }
}

impl IssuedTokenVerifier {
    pub(crate) fn new(core: Arc<Core>, jwt: JwtVerifier) -> Self {
        Self { core, jwt }
    }
}

async fn revoked(core: &Core, token: &AccessToken) -> Result<bool, VerifyError> {
    let unavailable = |_| VerifyError::unavailable("revocation store unavailable", std::time::Duration::from_secs(2));
    if let Some(jti) = token.claim("jti").and_then(Value::as_str)
        && core.store(core.store.get(REVOKED_JTI, jti)).await.map_err(unavailable)?.is_some()
    {
        return Ok(true);
    }
    let gid = token.claim("gid").and_then(Value::as_str).unwrap_or_default();
    let grant = core.store(core.store.get(GRANTS, gid)).await.map_err(unavailable)?;
    Ok(grant.as_deref().and_then(decode::<GrantRecord>).is_none_or(|g| g.revoked))
}

impl TokenVerifier for IssuedTokenVerifier {
    type Future = BoxVerifyFuture;

    /// Without the revocation check, the JWT's terms (reuse until `exp`, ended by a key
    /// change). With it, reuse only within
    /// [`revocation_check_interval`](super::AuthorizationServerBuilder::revocation_check_interval)
    /// (default: none), ended at once by a revocation made here.
    fn cache_policy(&self) -> Option<crate::verify::CachePolicy> {
        let policy = self.jwt.cache_policy()?;
        if !self.core.revocation_check {
            return Some(policy);
        }
        let interval = self.core.revocation_check_interval;
        if interval.is_zero() {
            return None;
        }
        let revocations = self.core.revocations.load(std::sync::atomic::Ordering::Acquire);
        Some(crate::verify::CachePolicy::new(policy.epoch().wrapping_add(revocations), policy.now()).max_age(interval))
    }

    fn verify(&self, token: &BearerToken) -> BoxVerifyFuture {
        let fut = self.jwt.verify(token);
        if self.core.key_sync.is_none() && !self.core.revocation_check {
            // Keys given to the builder, no revocation check: nothing but the JWT.
            return Box::pin(fut);
        }
        let core = self.core.clone();
        let jwt = self.jwt.clone();
        let token = token.clone();
        Box::pin(async move {
            let verified = match fut.await {
                Ok(v) => v,
                // Signed with a key another instance has rotated in since this one last looked.
                Err(e) if e.reason() == UNKNOWN_KID && core.sync_keys(true).await => jwt.verify(&token).await?,
                Err(e) => return Err(e),
            };
            if core.revocation_check && revoked(&core, &verified).await? {
                return Err(VerifyError::invalid_token("revoked"));
            }
            Ok(verified)
        })
    }
}

/// Claims of a token this server issued and that is still valid (for revocation).
pub(crate) async fn verified_claims(core: &Core, token: &str) -> Option<AccessToken> {
    let bearer = BearerToken::new(token)?;
    core.jwt.verify(&bearer).await.ok()
}

/// Loads the upstream provider's access token of the grant a verified token belongs to,
/// refreshing it at the provider when it has expired and the grant is still alive, so
/// handlers can call upstream APIs on the user's behalf. Found as a typed extension of the
/// [`AccessToken`]: `token.extension::<UpstreamAccess>()`.
#[derive(Clone)]
pub struct UpstreamAccess {
    core: Arc<Core>,
    grant_id: String,
}

impl fmt::Debug for UpstreamAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamAccess").finish_non_exhaustive()
    }
}

/// Why the upstream access token is not available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamAccessError {
    /// The grant was revoked or has ended: the user must sign in again.
    #[error("the grant was revoked")]
    Revoked,
    /// No usable upstream token is stored (none was issued, or it cannot be decrypted).
    #[error("no upstream token")]
    NoToken,
    /// The upstream token expired and cannot be refreshed.
    #[error("the upstream token expired")]
    Expired,
    /// The store or the provider cannot be reached: try later.
    #[error("temporarily unavailable")]
    Unavailable,
}

/// Refresh this long before the provider's expiry.
const EARLY_REFRESH: i64 = 30;

impl UpstreamAccess {
    /// The provider's access token, refreshed first if it expired.
    pub async fn access_token(&self) -> Result<String, UpstreamAccessError> {
        let core = &self.core;
        let grant = core
            .store(core.store.get(GRANTS, &self.grant_id))
            .await
            .map_err(|_| UpstreamAccessError::Unavailable)?
            .as_deref()
            .and_then(decode::<GrantRecord>);
        if grant.is_none_or(|g| g.revoked) {
            return Err(UpstreamAccessError::Revoked);
        }
        let sealed = core
            .store(core.store.get(UPSTREAM_TOKENS, &self.grant_id))
            .await
            .map_err(|_| UpstreamAccessError::Unavailable)?
            .ok_or(UpstreamAccessError::NoToken)?;
        let aad = upstream_aad(&self.grant_id);
        let plain = zeroize::Zeroizing::new(core.enc.open(&sealed, &aad).map_err(|_| UpstreamAccessError::NoToken)?);
        let tokens: UpstreamTokens = serde_json::from_slice(&plain).map_err(|_| UpstreamAccessError::NoToken)?;
        let expired = tokens.expires_at.is_some_and(|e| e - EARLY_REFRESH <= core.now());
        if !expired {
            return tokens.access_token.ok_or(UpstreamAccessError::NoToken);
        }
        if tokens.refresh_token.is_none() {
            return Err(UpstreamAccessError::Expired);
        }
        let fresh = core.upstream.refresh(&tokens).await.map_err(|e| match e.kind() {
            UpstreamErrorKind::Unavailable => UpstreamAccessError::Unavailable,
            _ => UpstreamAccessError::Expired,
        })?;
        let merged = tokens.merged(fresh);
        let bytes = zeroize::Zeroizing::new(serde_json::to_vec(&merged).map_err(|_| UpstreamAccessError::NoToken)?);
        let sealed = core.enc.seal(&bytes, &aad).map_err(|_| UpstreamAccessError::Unavailable)?;
        core.store(core.store.put(UPSTREAM_TOKENS, &self.grant_id, sealed, Some(core.lifetimes.refresh_token)))
            .await
            .map_err(|_| UpstreamAccessError::Unavailable)?;
        merged.access_token.ok_or(UpstreamAccessError::NoToken)
    }
}
