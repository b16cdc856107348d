use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::body::GuardBody;
use super::mcp::{BodyError, calls};
use super::service::Shared;
use crate::reject::{Reject, Rejection, RejectionKind, respond};
use crate::token::AccessToken;

pin_project! {
    /// Response future of [`ScopeGuard`](super::ScopeGuard).
    pub struct ResponseFuture<S, ReqBody, ResBody, R>
    where
        S: Service<Request<GuardBody<ReqBody>>>,
    {
        #[pin]
        state: State<S, S::Future, ReqBody, ResBody, R>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, F, ReqBody, ResBody, R> {
        // Boxed: only body-inspecting policies build it, and the future moved on every other
        // request stays small.
        Reading { reading: Pin<Box<Reading<S, ReqBody, R>>> },
        Calling { #[pin] future: F },
        Rejected { response: Option<Response<ResBody>> },
    }
}

pin_project! {
    #[project = ReadingProj]
    struct Reading<S, ReqBody, R> {
        #[pin]
        body: ReqBody,
        buf: BytesMut,
        parts: Option<Parts>,
        inner: Option<S>,
        shared: Arc<Shared>,
        reject: R,
    }
}

impl<S, ReqBody, ResBody, R> ResponseFuture<S, ReqBody, ResBody, R>
where
    S: Service<Request<GuardBody<ReqBody>>>,
{
    pub(crate) fn reading(body: ReqBody, parts: Parts, inner: S, shared: Arc<Shared>, reject: R) -> Self {
        let reading =
            Box::pin(Reading { body, buf: BytesMut::new(), parts: Some(parts), inner: Some(inner), shared, reject });
        Self { state: State::Reading { reading } }
    }

    #[inline(always)]
    pub(crate) fn calling(future: S::Future) -> Self {
        Self { state: State::Calling { future } }
    }

    pub(crate) fn rejected(response: Response<ResBody>) -> Self {
        Self { state: State::Rejected { response: Some(response) } }
    }
}

fn decide(parts: &Parts, body: &Bytes, shared: &Shared) -> Result<(), Rejection> {
    let Some(token) = parts.extensions.get::<AccessToken>() else {
        return Err(Rejection::new(
            RejectionKind::MissingToken,
            Some(shared.resource.missing_token_challenge().clone()),
        ));
    };
    let calls = calls(body, &parts.headers).map_err(|e| match e {
        BodyError::Malformed => {
            Rejection::new(RejectionKind::InvalidRequest, Some(shared.resource.invalid_request_challenge().clone()))
        }
        BodyError::HeaderMismatch => {
            Rejection::new(RejectionKind::HeaderMismatch, Some(shared.resource.invalid_request_challenge().clone()))
        }
    })?;
    let mut rules = Vec::new();
    for call in &calls {
        shared.policy.rules_for(call.method.as_deref(), call.name.as_deref(), &mut rules);
    }
    shared
        .policy
        .check(token.scopes(), &rules, &shared.resource)
        .map_err(|challenge| Rejection::new(RejectionKind::InsufficientScope, Some(challenge)))
}

impl<S, ReqBody, ResBody, R> Future for ResponseFuture<S, ReqBody, ResBody, R>
where
    S: Service<Request<GuardBody<ReqBody>>, Response = Response<ResBody>>,
    ReqBody: Body<Data = Bytes>,
    R: Reject<ResBody>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Reading { reading } => {
                    let ReadingProj { mut body, buf, parts, inner, shared, reject } = reading.as_mut().project();
                    // Read the whole body, up to the cap; trailers are not kept.
                    loop {
                        match ready!(body.as_mut().poll_frame(cx)) {
                            Some(Ok(frame)) => {
                                if let Ok(data) = frame.into_data() {
                                    if buf.len() + data.len() > shared.policy.max_body_bytes {
                                        let rejection = Rejection::new(RejectionKind::PayloadTooLarge, None);
                                        return Poll::Ready(Ok(respond(reject, &rejection)));
                                    }
                                    buf.extend_from_slice(&data);
                                }
                            }
                            Some(Err(_)) => {
                                let rejection = Rejection::new(
                                    RejectionKind::InvalidRequest,
                                    Some(shared.resource.invalid_request_challenge().clone()),
                                );
                                return Poll::Ready(Ok(respond(reject, &rejection)));
                            }
                            None => break,
                        }
                    }
                    let (Some(parts), Some(mut inner)) = (parts.take(), inner.take()) else {
                        return Poll::Pending;
                    };
                    let body = std::mem::take(buf).freeze();
                    if let Err(rejection) = decide(&parts, &body, shared) {
                        tracing::debug!(kind = ?rejection.kind(), "MCP request refused by scope policy");
                        return Poll::Ready(Ok(respond(reject, &rejection)));
                    }
                    let future = inner.call(Request::from_parts(parts, GuardBody::buffered(body)));
                    this.state.set(State::Calling { future });
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
