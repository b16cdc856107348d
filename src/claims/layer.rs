use tower_layer::Layer;

use super::cache::{DEFAULT_CACHE_BYTES, TokenCache};
use super::service::ClaimsExtract;
use crate::bearer::HeaderRules;
use crate::reject::DefaultReject;
use crate::resource::ProtectedResource;

/// Applies [`ClaimsExtract`]: verifies the bearer token with `V`.
///
/// Verified tokens are kept in a [`TokenCache`] of [`DEFAULT_CACHE_BYTES`] shared by every
/// service this layer builds (and its clones), when the verifier allows it (see
/// [`TokenVerifier::cache_policy`](crate::verify::TokenVerifier::cache_policy)).
#[derive(Debug, Clone)]
pub struct ClaimsExtractLayer<V, R = DefaultReject> {
    verifier: V,
    resource: ProtectedResource,
    reject: R,
    cache: Option<TokenCache>,
    header: HeaderRules,
}

impl<V> ClaimsExtractLayer<V> {
    /// Verifies tokens with `verifier`; challenges point at `resource`'s metadata.
    pub fn new(verifier: V, resource: ProtectedResource) -> Self {
        Self {
            verifier,
            resource,
            reject: DefaultReject,
            cache: Some(TokenCache::new(DEFAULT_CACHE_BYTES)),
            header: HeaderRules::default(),
        }
    }
}

impl<V, R> ClaimsExtractLayer<V, R> {
    /// Uses `reject` to build rejection responses.
    pub fn reject_with<R2>(self, reject: R2) -> ClaimsExtractLayer<V, R2> {
        ClaimsExtractLayer {
            verifier: self.verifier,
            resource: self.resource,
            reject,
            cache: self.cache,
            header: self.header,
        }
    }

    /// Longest token accepted from the `Authorization` header, in bytes (default 8 KiB), when
    /// the layer reads the header itself (no [`BearerAuthLayer`] before it). Longer tokens are
    /// refused with 400 before any decoding work.
    ///
    /// [`BearerAuthLayer`]: crate::BearerAuthLayer
    pub fn max_token_len(mut self, bytes: usize) -> Self {
        self.header.max_token_len = bytes;
        self
    }

    /// Keep the `Authorization` header on the request passed to the inner service, when the
    /// layer reads the header itself. Off by default: MCP forbids passing the client's token
    /// on, and an inner service that never sees it cannot leak it.
    pub fn forward_authorization_header(mut self, forward: bool) -> Self {
        self.header.forward = forward;
        self
    }

    /// A new, empty token cache of `bytes` (approximate) instead of the default 64 MiB;
    /// zero turns the cache off.
    pub fn cache_capacity(mut self, bytes: u64) -> Self {
        self.cache = (bytes > 0).then(|| TokenCache::new(bytes));
        self
    }

    /// Verifies every request, without a token cache.
    pub fn without_cache(mut self) -> Self {
        self.cache = None;
        self
    }

    /// The token cache, to forget a token known to be revoked
    /// ([`TokenCache::invalidate`]) or to read its size.
    pub fn token_cache(&self) -> Option<&TokenCache> {
        self.cache.as_ref()
    }
}

impl<S, V: Clone, R: Clone> Layer<S> for ClaimsExtractLayer<V, R> {
    type Service = ClaimsExtract<S, V, R>;

    fn layer(&self, inner: S) -> Self::Service {
        ClaimsExtract::new(
            inner,
            self.verifier.clone(),
            self.resource.clone(),
            self.reject.clone(),
            self.cache.clone(),
            self.header,
        )
    }
}
