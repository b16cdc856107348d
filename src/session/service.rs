use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use sha2::{Digest, Sha256};
use tower_service::Service;

use super::MCP_SESSION_ID;

/// `mcp-session-id` as a parsed name: a lookup by `&str` parses the name every time.
const SESSION_HEADER: http::HeaderName = http::HeaderName::from_static(MCP_SESSION_ID);
use super::future::ResponseFuture;
use crate::token::AccessToken;

pub(crate) type Principal = [u8; 32];
/// Shared by every clone of the service: one reference count per clone, not moka's several.
pub(crate) type Bindings = std::sync::Arc<moka::sync::Cache<Box<[u8]>, Principal>>;

/// Longest session id recorded.
const MAX_SESSION_ID: usize = 256;

/// Middleware that binds sessions to principals. Built by
/// [`SessionBindingLayer`](super::SessionBindingLayer).
#[derive(Clone)]
pub struct SessionBinding<S> {
    inner: S,
    bindings: Bindings,
}

impl<S: std::fmt::Debug> std::fmt::Debug for SessionBinding<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionBinding").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl<S> SessionBinding<S> {
    pub(crate) fn new(inner: S, bindings: Bindings) -> Self {
        Self { inner, bindings }
    }
}

fn principal(token: &AccessToken) -> Principal {
    let mut h = Sha256::new();
    for part in [token.issuer(), token.subject(), token.client_id()] {
        let part = part.unwrap_or("");
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionBinding<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let token = req.extensions().get::<AccessToken>();
        if let Some(session) = req.headers().get(SESSION_HEADER)
            && let Some(owner) = self.bindings.get(session.as_bytes())
            && token.map(principal) != Some(owner)
        {
            tracing::warn!("MCP session presented by another principal; refused");
            let mut res = Response::new(ResBody::default());
            *res.status_mut() = StatusCode::NOT_FOUND;
            return ResponseFuture::refused(res);
        }
        // The principal is hashed only if the response opens a session (never in stateless
        // mode): the token is kept until then, one reference count.
        let record = token.map(|t| (self.bindings.clone(), t.clone()));
        ResponseFuture::inner(self.inner.call(req), record)
    }
}

pub(crate) fn record<B>(res: &Response<B>, bindings: &Bindings, token: &AccessToken) {
    if let Some(session) = res.headers().get(SESSION_HEADER) {
        let id = session.as_bytes();
        if !id.is_empty() && id.len() <= MAX_SESSION_ID && !bindings.contains_key(id) {
            bindings.insert(id.into(), principal(token));
        }
    }
}
