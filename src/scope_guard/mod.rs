//! Authorization by scope: [`ScopeGuardLayer`] checks the verified
//! [`AccessToken`](crate::AccessToken) against a [`ScopePolicy`] and answers
//! `403 insufficient_scope` naming every scope the operation needs (MCP 2026-07-28), with
//! `resource_metadata` so clients can step up.
//!
//! Rules apply to every request (a base requirement), and, for MCP, to JSON-RPC methods and to
//! the tool, resource or prompt a message names. To decide those, the guard reads the POST
//! body (up to a cap, 4 MiB by default) and hands the same bytes on to the inner service. The
//! `Mcp-Method` / `Mcp-Name` headers of MCP 2026-07-28 must agree with the body (400
//! otherwise), and a body the guard cannot read unambiguously (invalid JSON, a duplicated
//! member) is refused with 400 rather than passed on. In a JSON-RPC batch every message's rule
//! applies. A request without a verified token gets 401, never 403.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode, header::WWW_AUTHENTICATE};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_mcp_auth::scope_guard::{Requirement, ScopeGuardLayer, ScopePolicy};
//! use tower_mcp_auth::{AccessToken, ProtectedResource};
//!
//! let resource = ProtectedResource::builder("https://mcp.example.com/mcp")
//!     .authorization_server("https://auth.example.com")
//!     .build()
//!     .unwrap();
//! let policy = ScopePolicy::builder()
//!     .mcp_tool("admin_ping", Requirement::all(["mcp:admin"]))
//!     .build()
//!     .unwrap();
//! let svc = ServiceBuilder::new()
//!     .layer(ScopeGuardLayer::new(policy, resource))
//!     .service(service_fn(|_req| async { Ok::<_, Infallible>(Response::new(String::from("pong"))) }));
//!
//! let mut req = Request::post("/mcp").body(String::from(
//!     r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"admin_ping"}}"#,
//! )).unwrap();
//! req.extensions_mut().insert(AccessToken::builder("t").scopes("mcp:read".parse().unwrap()).build());
//! let res = svc.oneshot(req).await.unwrap();
//! assert_eq!(res.status(), StatusCode::FORBIDDEN);
//! assert_eq!(
//!     res.headers()[WWW_AUTHENTICATE],
//!     r#"Bearer error="insufficient_scope", scope="mcp:admin", resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp""#
//! );
//! # }
//! ```

mod body;
mod future;
mod layer;
mod mcp;
mod policy;
mod service;

pub use body::GuardBody;
pub use future::ResponseFuture;
pub use layer::ScopeGuardLayer;
pub use mcp::{MCP_METHOD, MCP_NAME};
pub use policy::{DEFAULT_MAX_BODY_BYTES, Requirement, ScopePolicy, ScopePolicyBuilder};
pub use service::ScopeGuard;
