use tower_layer::Layer;

use super::service::ClaimsExtract;
use crate::reject::DefaultReject;
use crate::resource::ProtectedResource;

/// Applies [`ClaimsExtract`]: verifies the bearer token with `V`.
#[derive(Debug, Clone)]
pub struct ClaimsExtractLayer<V, R = DefaultReject> {
    verifier: V,
    resource: ProtectedResource,
    reject: R,
}

impl<V> ClaimsExtractLayer<V> {
    /// Verifies tokens with `verifier`; challenges point at `resource`'s metadata.
    pub fn new(verifier: V, resource: ProtectedResource) -> Self {
        Self { verifier, resource, reject: DefaultReject }
    }
}

impl<V, R> ClaimsExtractLayer<V, R> {
    /// Uses `reject` to build rejection responses.
    pub fn reject_with<R2>(self, reject: R2) -> ClaimsExtractLayer<V, R2> {
        ClaimsExtractLayer { verifier: self.verifier, resource: self.resource, reject }
    }
}

impl<S, V: Clone, R: Clone> Layer<S> for ClaimsExtractLayer<V, R> {
    type Service = ClaimsExtract<S, V, R>;

    fn layer(&self, inner: S) -> Self::Service {
        ClaimsExtract::new(inner, self.verifier.clone(), self.resource.clone(), self.reject.clone())
    }
}
