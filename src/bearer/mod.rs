//! Bearer credentials from the `Authorization` header (RFC 6750 §2.1), and nothing else.
//!
//! [`BearerAuthLayer`] reads exactly one `Authorization: Bearer <token68>` header, inserts the
//! [`BearerToken`](crate::BearerToken) into the request extensions and, by default, removes the
//! header so the inner service never sees the client's token (MCP forbids token passthrough).
//! Tokens in the query string or a form body are ignored.
//!
//! | request | answer |
//! | --- | --- |
//! | no `Authorization`, or another scheme (`Basic`, `DPoP`) | 401, challenge without `error` |
//! | `Bearer` without token, token not `token68`, tab or NBSP separator, two headers, over the size cap | 400 `invalid_request` |
//! | `bearer`/`BEARER`/`Bearer` + one or more spaces + token | passed on |
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode, header::WWW_AUTHENTICATE};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_mcp_auth::{BearerAuthLayer, BearerToken, ProtectedResource};
//!
//! let resource = ProtectedResource::builder("https://mcp.example.com/mcp")
//!     .authorization_server("https://auth.example.com")
//!     .scopes_supported(["mcp:read"])
//!     .build()
//!     .unwrap();
//! let svc = ServiceBuilder::new().layer(BearerAuthLayer::new(resource)).service(service_fn(
//!     |req: Request<String>| async move {
//!         assert!(req.headers().get("authorization").is_none()); // stripped
//!         let token = req.extensions().get::<BearerToken>().unwrap();
//!         Ok::<_, Infallible>(Response::new(token.as_str().len().to_string()))
//!     },
//! ));
//!
//! let res = svc.clone().oneshot(Request::new(String::new())).await.unwrap();
//! assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
//! assert_eq!(
//!     res.headers()[WWW_AUTHENTICATE],
//!     r#"Bearer scope="mcp:read", resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp""#
//! );
//!
//! let req = Request::builder().header("authorization", "bearer abc.def").body(String::new()).unwrap();
//! assert_eq!(svc.oneshot(req).await.unwrap().into_body(), "7");
//! # }
//! ```

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::BearerAuthLayer;
pub use service::{BearerAuth, DEFAULT_MAX_TOKEN_LEN, ParseError, parse_authorization};
pub(crate) use service::{HeaderRules, parse_rejection};
