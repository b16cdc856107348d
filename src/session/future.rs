use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;

use super::service::{Bindings, record};
use crate::token::AccessToken;

pin_project! {
    /// Response future of [`SessionBinding`](super::SessionBinding).
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        Inner { #[pin] future: F, record: Option<(Bindings, AccessToken)> },
        Refused { response: Option<Response<B>> },
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn inner(future: F, record: Option<(Bindings, AccessToken)>) -> Self {
        Self { kind: Kind::Inner { future, record } }
    }

    pub(crate) fn refused(response: Response<B>) -> Self {
        Self { kind: Kind::Refused { response: Some(response) } }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future, record: rec } => {
                let res = ready!(future.poll(cx))?;
                if let Some((bindings, token)) = rec.take() {
                    record(&res, &bindings, &token);
                }
                Poll::Ready(Ok(res))
            }
            KindProj::Refused { response } => match response.take() {
                Some(res) => Poll::Ready(Ok(res)),
                None => Poll::Pending,
            },
        }
    }
}
