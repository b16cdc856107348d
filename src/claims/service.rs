use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::cache::TokenCache;
use super::future::{Fill, ResponseFuture};
use crate::bearer::{HeaderRules, ParseError, parse_rejection};
use crate::reject::{Reject, respond};
use crate::resource::ProtectedResource;
use crate::token::{AccessToken, BearerToken, is_token68};
use crate::verify::TokenVerifier;

/// Middleware that verifies the bearer token. Built by
/// [`ClaimsExtractLayer`](super::ClaimsExtractLayer).
#[derive(Debug, Clone)]
pub struct ClaimsExtract<S, V, R> {
    inner: S,
    verifier: V,
    resource: ProtectedResource,
    reject: R,
    cache: Option<TokenCache>,
    header: HeaderRules,
}

impl<S, V, R> ClaimsExtract<S, V, R> {
    pub(crate) fn new(
        inner: S,
        verifier: V,
        resource: ProtectedResource,
        reject: R,
        cache: Option<TokenCache>,
        header: HeaderRules,
    ) -> Self {
        Self { inner, verifier, resource, reject, cache, header }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, V, R, ReqBody, ResBody> Service<Request<ReqBody>> for ClaimsExtract<S, V, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    V: TokenVerifier,
    R: Reject<ResBody> + Clone,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<V::Future, S, ReqBody, ResBody, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // A token left by BearerAuthLayer was checked there; one read here is checked below,
        // unless the cache knows it: a hit means these exact bytes were checked and verified.
        let (token, from_bearer_layer) = match req.extensions_mut().remove::<BearerToken>() {
            Some(token) => (token, true),
            None => match self.header.take(req.headers_mut()) {
                Ok(token) => (token, false),
                Err(e) => return ResponseFuture::rejected(respond(&self.reject, &parse_rejection(e, &self.resource))),
            },
        };
        let mut fill = None;
        if let Some(cache) = &self.cache
            && let Some(policy) = self.verifier.cache_policy()
            && let Some(key) = cache.key(token.as_bytes())
        {
            if let Some(verified) = cache.get(key, &policy) {
                // Verified before: the service polled ready is called at once, no clone.
                req.extensions_mut().insert(AccessToken::from_verified(verified, token));
                return ResponseFuture::calling(self.inner.call(req));
            }
            fill = Some(Fill { cache: cache.clone(), key, policy });
        }
        if !from_bearer_layer && !is_token68(token.as_bytes()) {
            let rejection = parse_rejection(ParseError::Malformed, &self.resource);
            return ResponseFuture::rejected(respond(&self.reject, &rejection));
        }
        let verify = self.verifier.verify(&token);
        // The clone may not be ready; swap so the service that was polled ready is the one called.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::verifying(verify, inner, req, self.resource.clone(), self.reject.clone(), fill)
    }
}
