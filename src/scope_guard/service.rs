use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::Body;
use tower_service::Service;

use super::body::GuardBody;
use super::future::ResponseFuture;
use super::policy::ScopePolicy;
use crate::reject::{Reject, Rejection, RejectionKind, respond};
use crate::resource::ProtectedResource;
use crate::token::AccessToken;

pub(crate) struct Shared {
    pub(crate) policy: ScopePolicy,
    pub(crate) resource: ProtectedResource,
}

/// Middleware that enforces a [`ScopePolicy`]. Built by
/// [`ScopeGuardLayer`](super::ScopeGuardLayer).
pub struct ScopeGuard<S, R> {
    inner: S,
    shared: Arc<Shared>,
    reject: R,
}

impl<S: Clone, R: Clone> Clone for ScopeGuard<S, R> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), shared: self.shared.clone(), reject: self.reject.clone() }
    }
}

impl<S: std::fmt::Debug, R> std::fmt::Debug for ScopeGuard<S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopeGuard")
            .field("inner", &self.inner)
            .field("policy", &self.shared.policy)
            .finish_non_exhaustive()
    }
}

impl<S, R> ScopeGuard<S, R> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>, reject: R) -> Self {
        Self { inner, shared, reject }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for ScopeGuard<S, R>
where
    S: Service<Request<GuardBody<ReqBody>>, Response = Response<ResBody>> + Clone,
    ReqBody: Body<Data = Bytes>,
    R: Reject<ResBody> + Clone,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, ResBody, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let shared = &self.shared;
        let Some(token) = req.extensions().get::<AccessToken>() else {
            // Authentication comes before authorization: no verified token is a 401.
            let rejection =
                Rejection::new(RejectionKind::MissingToken, Some(shared.resource.missing_token_challenge().clone()));
            return ResponseFuture::rejected(respond(&self.reject, &rejection));
        };
        if shared.policy.inspects_body() && req.method() == Method::POST {
            let clone = self.inner.clone();
            let inner = std::mem::replace(&mut self.inner, clone);
            let (parts, body) = req.into_parts();
            return ResponseFuture::reading(body, parts, inner, shared.clone(), self.reject.clone());
        }
        match shared.policy.check(token.scopes(), &[], &shared.resource) {
            Ok(()) => ResponseFuture::calling(self.inner.call(req.map(|body| GuardBody::streaming(body)))),
            Err(challenge) => {
                let rejection = Rejection::new(RejectionKind::InsufficientScope, Some(challenge));
                ResponseFuture::rejected(respond(&self.reject, &rejection))
            }
        }
    }
}
