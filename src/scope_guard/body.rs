use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The request body handed to the service behind a
    /// [`ScopeGuard`](super::ScopeGuard): the original body, or the bytes the guard read to
    /// inspect JSON-RPC messages, unchanged.
    pub struct GuardBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Streaming { #[pin] body: B },
        Buffered { data: Option<Bytes> },
    }
}

impl<B> GuardBody<B> {
    pub(crate) fn streaming(body: B) -> Self {
        Self { kind: Kind::Streaming { body } }
    }

    pub(crate) fn buffered(data: Bytes) -> Self {
        Self { kind: Kind::Buffered { data: (!data.is_empty()).then_some(data) } }
    }
}

impl<B> std::fmt::Debug for GuardBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.kind {
            Kind::Streaming { .. } => "GuardBody::Streaming",
            Kind::Buffered { .. } => "GuardBody::Buffered",
        })
    }
}

impl<B> Body for GuardBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Streaming { body } => body.poll_frame(cx),
            KindProj::Buffered { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Streaming { body } => body.is_end_stream(),
            Kind::Buffered { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Streaming { body } => body.size_hint(),
            Kind::Buffered { data } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

/// The body an axum route takes, without boxing the guard's wrapper: the original body as it
/// came, or the bytes the guard read.
///
/// ```
/// use axum_core::body::Body;
/// use tower::ServiceBuilder;
/// use tower_mcp_auth::scope_guard::{GuardBody, ScopeGuardLayer, ScopePolicy};
/// # let resource = tower_mcp_auth::ProtectedResource::builder("https://mcp.example.com/mcp")
/// #     .authorization_server("https://auth.example.com").build().unwrap();
/// # let policy = ScopePolicy::builder().build().unwrap();
/// // In front of an axum router or route, which takes `axum::body::Body`.
/// let layers = ServiceBuilder::new()
///     .layer(ScopeGuardLayer::new(policy, resource))
///     .map_request(|req: http::Request<GuardBody<Body>>| req.map(Body::from));
/// # let _ = layers;
/// ```
#[cfg(feature = "axum")]
impl From<GuardBody<axum_core::body::Body>> for axum_core::body::Body {
    fn from(body: GuardBody<axum_core::body::Body>) -> Self {
        match body.kind {
            Kind::Streaming { body } => body,
            Kind::Buffered { data } => data.map_or_else(Self::empty, Self::from),
        }
    }
}

#[cfg(all(test, feature = "axum"))]
mod tests {
    use axum_core::body::Body;
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn into_an_axum_body_keeps_the_bytes() {
        let streamed = Body::from(GuardBody::streaming(Body::from("streamed")));
        assert_eq!(streamed.collect().await.unwrap().to_bytes(), "streamed");
        let read = Body::from(GuardBody::<Body>::buffered(Bytes::from_static(b"read")));
        assert_eq!(read.collect().await.unwrap().to_bytes(), "read");
        let empty = Body::from(GuardBody::<Body>::buffered(Bytes::new()));
        assert!(http_body::Body::is_end_stream(&empty));
    }
}
