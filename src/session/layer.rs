use std::time::Duration;

use tower_layer::Layer;

use super::service::{Bindings, SessionBinding};

/// Applies [`SessionBinding`]. See the [module docs](super).
#[derive(Clone)]
pub struct SessionBindingLayer {
    bindings: Bindings,
}

impl std::fmt::Debug for SessionBindingLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionBindingLayer").field("sessions", &self.bindings.entry_count()).finish()
    }
}

impl Default for SessionBindingLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl SessionBindingLayer {
    /// Up to 100 000 sessions, each forgotten after 24 h without use.
    pub fn new() -> Self {
        Self::with_limits(100_000, Duration::from_secs(24 * 3600))
    }

    /// At most `max_sessions` bindings, each forgotten after `idle` without use.
    pub fn with_limits(max_sessions: u64, idle: Duration) -> Self {
        let cache = moka::sync::Cache::builder().max_capacity(max_sessions).time_to_idle(idle).build();
        Self { bindings: std::sync::Arc::new(cache) }
    }
}

impl<S> Layer<S> for SessionBindingLayer {
    type Service = SessionBinding<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionBinding::new(inner, self.bindings.clone())
    }
}
