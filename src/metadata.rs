//! The RFC 9728 protected resource metadata document as a leaf service.
//!
//! [`ProtectedResourceMetadata`] answers `GET` / `HEAD` at each of
//! [`ProtectedResource::metadata_paths`] with the document, `OPTIONS` with a CORS preflight
//! (browser-based MCP clients send `MCP-Protocol-Version`), other methods with 405 and other
//! paths with 404. It never redirects, and every URL in the document comes from
//! configuration, not from the request's `Host`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use http::{Request, StatusCode};
//! use http_body_util::BodyExt;
//! use tower::ServiceExt;
//! use tower_mcp_auth::{ProtectedResource, ProtectedResourceMetadata};
//!
//! let resource = ProtectedResource::builder("https://mcp.example.com/mcp")
//!     .authorization_server("https://auth.example.com")
//!     .scopes_supported(["mcp:read"])
//!     .build()
//!     .unwrap();
//! let svc = ProtectedResourceMetadata::new(resource.clone());
//! let req = Request::get("/.well-known/oauth-protected-resource/mcp")
//!     .header("host", "evil.example")
//!     .body(())
//!     .unwrap();
//! let res = svc.oneshot(req).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK);
//! let doc: serde_json::Value = serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
//! assert_eq!(doc["resource"], "https://mcp.example.com/mcp");
//! assert_eq!(doc["authorization_servers"][0], "https://auth.example.com");
//!
//! // With axum: one route per path.
//! // for path in resource.metadata_paths() { router = router.route_service(path, svc.clone()); }
//! # }
//! ```

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE,
    ALLOW, CACHE_CONTROL, CONTENT_TYPE,
};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use tower_service::Service;

use crate::resource::ProtectedResource;

/// Serves the protected resource metadata document. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct ProtectedResourceMetadata {
    resource: ProtectedResource,
}

impl ProtectedResourceMetadata {
    /// The metadata service of `resource`.
    pub fn new(resource: ProtectedResource) -> Self {
        Self { resource }
    }
}

const METHODS: HeaderValue = HeaderValue::from_static("GET, HEAD, OPTIONS");

impl<B> Service<Request<B>> for ProtectedResourceMetadata {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        ready(Ok(self.respond(req.method(), req.uri().path())))
    }
}

impl ProtectedResourceMetadata {
    fn respond(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        let mut res = Response::new(Full::default());
        if !self.resource.metadata_paths().any(|p| p == path) {
            *res.status_mut() = StatusCode::NOT_FOUND;
            return res;
        }
        let h = res.headers_mut();
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        match *method {
            Method::GET | Method::HEAD => {
                h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                h.insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
                if method == Method::GET {
                    *res.body_mut() = Full::new(self.resource.metadata_document().clone());
                }
            }
            Method::OPTIONS => {
                h.insert(ACCESS_CONTROL_ALLOW_METHODS, METHODS);
                h.insert(
                    ACCESS_CONTROL_ALLOW_HEADERS,
                    HeaderValue::from_static("mcp-protocol-version, content-type, authorization"),
                );
                h.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
                *res.status_mut() = StatusCode::NO_CONTENT;
            }
            _ => {
                h.insert(ALLOW, METHODS);
                *res.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            }
        }
        res
    }
}
