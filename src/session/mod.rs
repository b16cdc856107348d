//! Binds MCP sessions to the principal that created them (MCP security best practices:
//! session hijacking; catalogue A17).
//!
//! A session id is a routing handle, never authentication. [`SessionBindingLayer`] records,
//! for each `Mcp-Session-Id` a response hands out, who the request was authenticated as
//! (issuer, subject and client, hashed), and answers `404 Not Found` — what MCP servers answer
//! for a session they do not know — when a later request presents that session id with a
//! token of another principal. Put it after [`ClaimsExtractLayer`](crate::ClaimsExtractLayer).
//! Bindings live in memory (bounded, idle entries expire); a request whose session id is not
//! recorded is passed on, and the MCP server decides as usual.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_mcp_auth::AccessToken;
//! use tower_mcp_auth::session::SessionBindingLayer;
//!
//! let svc = ServiceBuilder::new().layer(SessionBindingLayer::new()).service(service_fn(|_req: Request<String>| async {
//!     Ok::<_, Infallible>(Response::builder().header("mcp-session-id", "s-1").body(String::new()).unwrap())
//! }));
//! let as_user = |sub: &str, session: Option<&str>| {
//!     let mut b = Request::post("/mcp");
//!     if let Some(s) = session { b = b.header("mcp-session-id", s); }
//!     let mut req = b.body(String::new()).unwrap();
//!     req.extensions_mut().insert(AccessToken::builder("t").issuer("https://as").subject(sub).build());
//!     req
//! };
//! assert_eq!(svc.clone().oneshot(as_user("alice", None)).await.unwrap().status(), StatusCode::OK);
//! assert_eq!(svc.clone().oneshot(as_user("alice", Some("s-1"))).await.unwrap().status(), StatusCode::OK);
//! assert_eq!(svc.oneshot(as_user("mallory", Some("s-1"))).await.unwrap().status(), StatusCode::NOT_FOUND);
//! # }
//! ```

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::SessionBindingLayer;
pub use service::SessionBinding;

/// The MCP session header.
pub const MCP_SESSION_ID: &str = "mcp-session-id";
