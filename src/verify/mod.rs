//! Token verification, independent of any HTTP framework.
//!
//! A [`TokenVerifier`] turns a [`BearerToken`] into an [`AccessToken`] or a [`VerifyError`].
//! The crate ships:
//!
//! - [`JwtVerifier`]: signed JWT access tokens (RFC 9068, RFC 8725) with keys from PEM/JWK/JWKS,
//!   a remote JWKS URL, or discovery from an issuer URL; several issuers per verifier.
//! - [`IntrospectionVerifier`]: opaque tokens checked at an RFC 7662 introspection endpoint,
//!   with a bounded cache.
//! - [`verifier_fn`]: any async function.

use std::future::Future;
use std::pin::Pin;

use crate::error::VerifyError;
use crate::token::{AccessToken, BearerToken};

mod algorithm;
mod claims;
pub(crate) mod http;
mod introspect;
mod jwks;
mod jwt;
mod keys;

pub use algorithm::Algorithm;
pub(crate) use claims::{
    optional_date as claims_optional_date, parse_object as claims_parse_object, resource_eq as claims_resource_eq,
};
pub(crate) use jwt::split as jws_split;
pub(crate) use keys::Lookup as KeyLookup;

/// Strict base64url (no padding) decoding, as JWS segments use.
pub(crate) fn keys_b64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    keys::B64.decode(s).ok()
}
pub use introspect::{IntrospectionVerifier, IntrospectionVerifierBuilder};
pub use jwt::{ClaimsMapper, Issuer, JwtFuture, JwtVerifier, JwtVerifierBuilder, ScopeClaim};
pub use keys::{KeySet, SharedKeySet};

/// Checks bearer tokens.
///
/// Implementations must be cheap to clone (an `Arc` inside) when used with
/// [`ClaimsExtractLayer`](crate::ClaimsExtractLayer), which keeps one clone per service.
pub trait TokenVerifier: Send + Sync + 'static {
    /// The verification future.
    type Future: Future<Output = Result<AccessToken, VerifyError>> + Send + 'static;

    /// Verifies `token`: `Ok` with the verified token, `Err` with
    /// [`VerifyError::invalid_token`] (401) or [`VerifyError::unavailable`] (503).
    fn verify(&self, token: &BearerToken) -> Self::Future;

    /// Whether [`ClaimsExtractLayer`](crate::ClaimsExtractLayer)'s
    /// [`TokenCache`](crate::claims::TokenCache) may answer for this verifier right now, and
    /// on what terms. Called once per request, so keep it to a few atomic loads.
    ///
    /// `None` (the default) means every request is verified: the right answer for verifiers
    /// whose verdict can change before the token expires for reasons the verifier cannot
    /// announce (a revocation list read on every call, an external policy).
    fn cache_policy(&self) -> Option<CachePolicy> {
        None
    }
}

/// Terms on which a [`TokenCache`](crate::claims::TokenCache) reuses a verifier's earlier
/// verdict: a token verified under one `epoch` is answered from the cache until its `exp`
/// (and, with [`max_age`](Self::max_age), no longer than that after it was verified), as
/// long as the verifier still reports the same epoch.
///
/// A verifier changes its epoch whenever a verdict given earlier may no longer hold: a key
/// dropped from a JWKS, a key replaced, a token revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    epoch: u64,
    now: i64,
    max_age: Option<i64>,
}

impl CachePolicy {
    /// Reuse verdicts given under `epoch`; `now` is the verifier's clock (seconds since the
    /// Unix epoch), against which `exp` is checked.
    pub fn new(epoch: u64, now: i64) -> Self {
        Self { epoch, now, max_age: None }
    }

    /// Reuse a verdict for at most `age` after it was given.
    pub fn max_age(mut self, age: std::time::Duration) -> Self {
        self.max_age = Some(i64::try_from(age.as_secs()).unwrap_or(i64::MAX));
        self
    }

    /// The epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The verifier's current time.
    pub fn now(&self) -> i64 {
        self.now
    }

    /// The longest reuse, in seconds, if bounded.
    pub fn max_age_secs(&self) -> Option<i64> {
        self.max_age
    }
}

/// A boxed verification future, for verifiers written as async functions.
pub type BoxVerifyFuture = Pin<Box<dyn Future<Output = Result<AccessToken, VerifyError>> + Send + 'static>>;

/// A [`TokenVerifier`] from a function returning a future.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use tower_mcp_auth::{AccessToken, BearerToken, VerifyError};
/// use tower_mcp_auth::verify::{TokenVerifier, verifier_fn};
///
/// let v = verifier_fn(|token: &BearerToken| {
///     let ok = token.as_str() == "let-me-in";
///     async move {
///         if ok { Ok(AccessToken::builder("let-me-in").subject("tester").build()) }
///         else { Err(VerifyError::invalid_token("unknown")) }
///     }
/// });
/// assert!(v.verify(&BearerToken::new("nope").unwrap()).await.is_err());
/// # }
/// ```
pub fn verifier_fn<F, Fut>(f: F) -> VerifierFn<F>
where
    F: Fn(&BearerToken) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<AccessToken, VerifyError>> + Send + 'static,
{
    VerifierFn { f: std::sync::Arc::new(f) }
}

/// See [`verifier_fn`].
pub struct VerifierFn<F> {
    f: std::sync::Arc<F>,
}

impl<F> Clone for VerifierFn<F> {
    fn clone(&self) -> Self {
        Self { f: self.f.clone() }
    }
}

impl<F> std::fmt::Debug for VerifierFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerifierFn")
    }
}

impl<F, Fut> TokenVerifier for VerifierFn<F>
where
    F: Fn(&BearerToken) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<AccessToken, VerifyError>> + Send + 'static,
{
    type Future = Fut;

    fn verify(&self, token: &BearerToken) -> Fut {
        (self.f)(token)
    }
}

#[cfg(test)]
mod wycheproof;
