use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::future::ResponseFuture;
use crate::reject::{Reject, Rejection, RejectionKind, respond};
use crate::resource::ProtectedResource;
use crate::token::BearerToken;
use crate::verify::TokenVerifier;

/// Middleware that verifies the bearer token. Built by
/// [`ClaimsExtractLayer`](super::ClaimsExtractLayer).
#[derive(Debug, Clone)]
pub struct ClaimsExtract<S, V, R> {
    inner: S,
    verifier: V,
    resource: ProtectedResource,
    reject: R,
}

impl<S, V, R> ClaimsExtract<S, V, R> {
    pub(crate) fn new(inner: S, verifier: V, resource: ProtectedResource, reject: R) -> Self {
        Self { inner, verifier, resource, reject }
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
        let Some(token) = req.extensions_mut().remove::<BearerToken>() else {
            let rejection =
                Rejection::new(RejectionKind::MissingToken, Some(self.resource.missing_token_challenge().clone()));
            return ResponseFuture::rejected(respond(&self.reject, &rejection));
        };
        let verify = self.verifier.verify(&token);
        // The clone may not be ready; swap so the service that was polled ready is the one called.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::verifying(verify, inner, req, self.resource.clone(), self.reject.clone())
    }
}
