use std::sync::{Arc, LazyLock};
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
#[derive(Debug)]
pub struct ClaimsExtract<S, V, R> {
    inner: S,
    // One reference for everything but the inner service: servers such as `axum::serve`
    // clone the whole stack for every request.
    config: Arc<Config<V, R>>,
}

#[derive(Debug)]
struct Config<V, R> {
    verifier: V,
    resource: ProtectedResource,
    reject: R,
    cache: Option<TokenCache>,
    header: HeaderRules,
}

impl<S: Clone, V, R> Clone for ClaimsExtract<S, V, R> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), config: self.config.clone() }
    }
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
        Self { inner, config: Arc::new(Config { verifier, resource, reject, cache, header }) }
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

    #[inline]
    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let config = &*self.config;
        // A token left by BearerAuthLayer was checked there; one read here is checked below,
        // unless the cache knows it: a hit means these exact bytes were checked and verified.
        let left = if req.extensions().is_empty() { None } else { req.extensions_mut().remove::<BearerToken>() };
        let (token, from_bearer_layer) = match left {
            Some(token) => (token, true),
            None => match config.header.take(req.headers_mut()) {
                Ok(token) => (token, false),
                Err(e) => {
                    return ResponseFuture::rejected(respond(&config.reject, &parse_rejection(e, &config.resource)));
                }
            },
        };
        let mut fill = None;
        if let Some(cache) = &config.cache
            && let Some(policy) = config.verifier.cache_policy()
            && let Some(key) = cache.key(token.as_bytes())
        {
            if let Some(verified) = cache.get(key, &policy) {
                // Verified before: the service polled ready is called at once, no clone.
                insert_token(req.extensions_mut(), AccessToken::from_verified(verified, token));
                return ResponseFuture::calling(self.inner.call(req));
            }
            fill = Some(Fill { cache: cache.clone(), key, policy });
        }
        if !from_bearer_layer && !is_token68(token.as_bytes()) {
            let rejection = parse_rejection(ParseError::Malformed, &config.resource);
            return ResponseFuture::rejected(respond(&config.reject, &rejection));
        }
        let verify = config.verifier.verify(&token);
        // The clone may not be ready; swap so the service that was polled ready is the one called.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::verifying(verify, inner, req, config.resource.clone(), config.reject.clone(), fill)
    }
}

/// Inserts the verified token into the request's extensions.
///
/// A request usually reaches this layer with no extensions at all, and an axum router then adds
/// three of its own (original URI, matched path, path parameters): with ours that is a fourth,
/// which would make the map's table grow (allocate, move, free) inside the router. An empty map
/// is therefore replaced by a clone of one with room for eight entries before the insert. Only
/// the cost changes: the map holds the same entries either way.
pub(crate) fn insert_token(extensions: &mut http::Extensions, token: AccessToken) {
    if extensions.is_empty() {
        *extensions = ROOMY.clone();
    }
    extensions.insert(token);
}

/// An empty extension map whose table has room for 7 entries: cloning keeps the table's size.
static ROOMY: LazyLock<http::Extensions> = LazyLock::new(|| {
    #[derive(Clone, Copy)]
    struct Slot<const N: u8>;
    let mut extensions = http::Extensions::new();
    extensions.insert(Slot::<0>);
    extensions.insert(Slot::<1>);
    extensions.insert(Slot::<2>);
    extensions.insert(Slot::<3>);
    extensions.clear();
    extensions
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_roomy_map_is_empty_and_existing_extensions_are_kept() {
        assert!(ROOMY.is_empty());
        let token = || AccessToken::builder("abc").subject("alice").build();

        let mut empty = http::Extensions::new();
        insert_token(&mut empty, token());
        assert_eq!(empty.len(), 1);
        assert_eq!(empty.get::<AccessToken>().and_then(AccessToken::subject), Some("alice"));

        let mut some = http::Extensions::new();
        some.insert(7u32);
        insert_token(&mut some, token());
        assert_eq!(some.len(), 2);
        assert_eq!(some.get::<u32>(), Some(&7));
        assert!(some.get::<AccessToken>().is_some());
    }
}
