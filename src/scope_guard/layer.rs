use std::sync::Arc;

use tower_layer::Layer;

use super::policy::ScopePolicy;
use super::service::{ScopeGuard, Shared};
use crate::reject::DefaultReject;
use crate::resource::ProtectedResource;

/// Applies [`ScopeGuard`]: enforces a [`ScopePolicy`] on the verified
/// [`AccessToken`](crate::AccessToken).
#[derive(Clone)]
pub struct ScopeGuardLayer<R = DefaultReject> {
    shared: Arc<Shared>,
    reject: R,
}

impl<R> std::fmt::Debug for ScopeGuardLayer<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopeGuardLayer").field("policy", &self.shared.policy).finish_non_exhaustive()
    }
}

impl ScopeGuardLayer {
    /// Enforces `policy`; challenges point at `resource`'s metadata.
    pub fn new(policy: ScopePolicy, resource: ProtectedResource) -> Self {
        Self { shared: Arc::new(Shared { policy, resource }), reject: DefaultReject }
    }
}

impl<R> ScopeGuardLayer<R> {
    /// Uses `reject` to build rejection responses.
    pub fn reject_with<R2>(self, reject: R2) -> ScopeGuardLayer<R2> {
        ScopeGuardLayer { shared: self.shared, reject }
    }
}

impl<S, R: Clone> Layer<S> for ScopeGuardLayer<R> {
    type Service = ScopeGuard<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        ScopeGuard::new(inner, self.shared.clone(), self.reject.clone())
    }
}
