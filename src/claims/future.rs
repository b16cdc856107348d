use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::error::VerifyError;
use crate::reject::{Reject, Rejection, RejectionKind, respond};
use crate::resource::ProtectedResource;
use crate::token::AccessToken;
use crate::verify::CachePolicy;

use super::cache::TokenCache;

/// Where a successful verification is cached.
pub(crate) struct Fill {
    pub(crate) cache: TokenCache,
    pub(crate) key: u128,
    /// Read before verification started, so a key change during it ends the entry.
    pub(crate) policy: CachePolicy,
}

pin_project! {
    /// Response future of [`ClaimsExtract`](super::ClaimsExtract).
    pub struct ResponseFuture<VF, S, ReqBody, ResBody, R>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<VF, S, S::Future, ReqBody, ResBody, R>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<VF, S, F, ReqBody, ResBody, R> {
        // Boxed: a cache hit never builds it, and the future moved on every hit stays small.
        Verifying { verifying: Pin<Box<Verifying<VF, S, ReqBody, R>>> },
        Calling { #[pin] future: F },
        Rejected { response: Option<Response<ResBody>> },
    }
}

pin_project! {
    #[project = VerifyingProj]
    struct Verifying<VF, S, ReqBody, R> {
        #[pin]
        verify: VF,
        inner: Option<S>,
        req: Option<Request<ReqBody>>,
        resource: ProtectedResource,
        reject: R,
        fill: Option<Fill>,
    }
}

impl<VF, S, ReqBody, ResBody, R> ResponseFuture<VF, S, ReqBody, ResBody, R>
where
    S: Service<Request<ReqBody>>,
{
    pub(crate) fn verifying(
        verify: VF,
        inner: S,
        req: Request<ReqBody>,
        resource: ProtectedResource,
        reject: R,
        fill: Option<Fill>,
    ) -> Self {
        let verifying = Box::pin(Verifying { verify, inner: Some(inner), req: Some(req), resource, reject, fill });
        Self { state: State::Verifying { verifying } }
    }

    #[inline(always)]
    pub(crate) fn calling(future: S::Future) -> Self {
        Self { state: State::Calling { future } }
    }

    pub(crate) fn rejected(response: Response<ResBody>) -> Self {
        Self { state: State::Rejected { response: Some(response) } }
    }
}

pub(crate) fn rejection_for(error: &VerifyError, resource: &ProtectedResource) -> Rejection {
    match error.retry_after() {
        Some(after) => Rejection::new(RejectionKind::Unavailable, None)
            .with_retry_after(after.as_secs() + u64::from(after.subsec_nanos() > 0)),
        None => Rejection::new(RejectionKind::InvalidToken, Some(resource.invalid_token_challenge().clone())),
    }
}

impl<VF, S, ReqBody, ResBody, R> Future for ResponseFuture<VF, S, ReqBody, ResBody, R>
where
    VF: Future<Output = Result<AccessToken, VerifyError>>,
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: Reject<ResBody>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Verifying { verifying } => {
                    let VerifyingProj { verify, inner, req, resource, reject, fill } = verifying.as_mut().project();
                    let result = ready!(verify.poll(cx));
                    let (Some(mut inner), Some(mut req)) = (inner.take(), req.take()) else {
                        return Poll::Pending;
                    };
                    match result {
                        Ok(token) => {
                            if let Some(fill) = fill.take() {
                                fill.cache.insert(fill.key, token.verified(), token.expires_at(), &fill.policy);
                            }
                            super::service::insert_token(req.extensions_mut(), token);
                            let future = inner.call(req);
                            this.state.set(State::Calling { future });
                        }
                        Err(error) => {
                            tracing::debug!(
                                reason = error.reason(),
                                unavailable = error.is_unavailable(),
                                "token rejected"
                            );
                            let rejection = rejection_for(&error, resource);
                            return Poll::Ready(Ok(respond(reject, &rejection)));
                        }
                    }
                }
                StateProj::Calling { future } => return future.poll(cx),
                StateProj::Rejected { response } => {
                    return match response.take() {
                        Some(res) => Poll::Ready(Ok(res)),
                        None => Poll::Pending,
                    };
                }
            }
        }
    }
}
