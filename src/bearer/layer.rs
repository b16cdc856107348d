use tower_layer::Layer;

use super::service::{BearerAuth, HeaderRules};
use crate::reject::DefaultReject;
use crate::resource::ProtectedResource;

/// Applies [`BearerAuth`]: parses the `Authorization` header, answers 401/400 challenges.
///
/// See the [module docs](crate::bearer) for the exact rules.
#[derive(Debug, Clone)]
pub struct BearerAuthLayer<R = DefaultReject> {
    resource: ProtectedResource,
    reject: R,
    header: HeaderRules,
}

impl BearerAuthLayer {
    /// A layer protecting `resource`.
    pub fn new(resource: ProtectedResource) -> Self {
        Self { resource, reject: DefaultReject, header: HeaderRules::default() }
    }
}

impl<R> BearerAuthLayer<R> {
    /// Longest token accepted, in bytes (default 8 KiB). Longer tokens are refused with 400
    /// before any decoding work.
    pub fn max_token_len(mut self, bytes: usize) -> Self {
        self.header.max_token_len = bytes;
        self
    }

    /// Keep the `Authorization` header on the request passed to the inner service. Off by
    /// default: MCP forbids passing the client's token on, and an inner service that never
    /// sees it cannot leak it.
    pub fn forward_authorization_header(mut self, forward: bool) -> Self {
        self.header.forward = forward;
        self
    }

    /// Uses `reject` to build rejection responses.
    pub fn reject_with<R2>(self, reject: R2) -> BearerAuthLayer<R2> {
        BearerAuthLayer { resource: self.resource, reject, header: self.header }
    }
}

impl<S, R: Clone> Layer<S> for BearerAuthLayer<R> {
    type Service = BearerAuth<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        BearerAuth::new(inner, self.resource.clone(), self.reject.clone(), self.header)
    }
}
