//! OAuth 2.1 authorization for MCP servers, and for any HTTP or gRPC service, as composable
//! [tower](https://docs.rs/tower) layers.
//!
//! A protected resource server is three layers in front of your service, outermost first:
//!
//! ```text
//! request ─▶ BearerAuthLayer ─▶ ClaimsExtractLayer<V> ─▶ ScopeGuardLayer ─▶ your service
//!            parse header        verify token (V)          scopes per route   reads AccessToken
//!            401 challenge        AccessToken → extensions   / MCP method+tool  from extensions
//! ```
//!
//! plus the [`ProtectedResourceMetadata`] service (RFC 9728) that MCP clients read first. All
//! of them share one [`ProtectedResource`] describing the resource, so challenges and metadata
//! always agree.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode, header::WWW_AUTHENTICATE};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_mcp_auth::scope_guard::{Requirement, ScopeGuardLayer, ScopePolicy};
//! use tower_mcp_auth::{BearerAuthLayer, ClaimsExtractLayer, JwtVerifier, ProtectedResource};
//!
//! let resource = ProtectedResource::builder("https://mcp.example.com/mcp")
//!     .authorization_server("https://login.example.com/realms/acme")
//!     .scopes_supported(["mcp:read", "mcp:admin"])
//!     .challenge_scopes(["mcp:read"])
//!     .build()
//!     .unwrap();
//! let verifier = JwtVerifier::from_issuer("https://login.example.com/realms/acme", resource.resource()).unwrap();
//! let policy = ScopePolicy::builder()
//!     .mcp_tool("admin_ping", Requirement::all(["mcp:admin"]))
//!     .build()
//!     .unwrap();
//!
//! let mcp = ServiceBuilder::new()
//!     .layer(BearerAuthLayer::new(resource.clone()))
//!     .layer(ClaimsExtractLayer::new(verifier, resource.clone()))
//!     .layer(ScopeGuardLayer::new(policy, resource.clone()))
//!     .service(service_fn(|_req| async { Ok::<_, Infallible>(Response::new(String::new())) }));
//!
//! // No token: 401 with the challenge MCP clients start discovery from.
//! let res = mcp.oneshot(Request::post("/mcp").body(String::new()).unwrap()).await.unwrap();
//! assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
//! assert_eq!(
//!     res.headers()[WWW_AUTHENTICATE],
//!     r#"Bearer scope="mcp:read", resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp""#
//! );
//! # }
//! ```
//!
//! # Features
//!
//! - `aws_lc_rs` (default): JWT signatures verified with aws-lc-rs. `rust_crypto`: with the
//!   RustCrypto crates instead (aws-lc-rs wins when both are on).
//! - `axum`: [`AccessToken`] as an axum extractor (`AccessToken` or `Option<AccessToken>`).
//! - `rmcp`: [`AccessToken`] as an rmcp `#[tool]` parameter.
//! - `tonic`: [`grpc::RequestExt`] to read the token from a `tonic::Request`.
//!   ([`grpc::GrpcReject`] is always available.)

#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod bearer;
pub mod challenge;
pub mod cimd;
pub mod claims;
pub mod clock;
pub mod error;
pub mod extract;
pub mod grpc;
pub mod metadata;
pub mod net;
pub mod redact;
pub mod reject;
pub mod resource;
pub mod scope;
pub mod scope_guard;
pub mod server;
pub mod session;
pub mod store;
pub mod token;
pub mod upstream;
pub mod verify;

pub use bearer::BearerAuthLayer;
pub use claims::ClaimsExtractLayer;
pub use error::{ConfigError, ConfigErrorKind, VerifyError};
pub use metadata::ProtectedResourceMetadata;
pub use resource::ProtectedResource;
pub use scope::{Scope, ScopeHierarchy, ScopeSet};
pub use scope_guard::ScopeGuardLayer;
pub use token::{AccessToken, BearerToken};
pub use verify::{IntrospectionVerifier, JwtVerifier, TokenVerifier};
