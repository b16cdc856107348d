//! Token verification as middleware: [`ClaimsExtractLayer`] reads the bearer token, verifies
//! it with a [`TokenVerifier`](crate::verify::TokenVerifier) and inserts the
//! [`AccessToken`](crate::AccessToken) into the request extensions.
//!
//! The token is the [`BearerToken`](crate::BearerToken) left by a
//! [`BearerAuthLayer`](crate::BearerAuthLayer) in front, or else the layer reads the
//! `Authorization` header itself, by the same rules and with the same answers (see
//! [`bearer`](crate::bearer)), and strips it. Read that way, a token found in the
//! [`TokenCache`] is not checked against the `token68` grammar again: the cache holds it only
//! because those exact bytes were checked and verified. This is the shortest path, and the one
//! the examples use; `BearerAuthLayer` is for services that want the raw token without
//! verifying it here.
//!
//! | verifier says | answer |
//! | --- | --- |
//! | valid | request passed on with `AccessToken` in its extensions |
//! | invalid, expired, wrong audience … | 401, `error="invalid_token"` challenge |
//! | cannot decide (JWKS or introspection unreachable) | 503 with `Retry-After` |
//! | no bearer credentials (no header, another scheme) | 401, challenge without `error` |
//! | malformed credentials (not `token68`, two headers, over the size cap) | 400 `invalid_request` |
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode, header::WWW_AUTHENTICATE};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_mcp_auth::verify::verifier_fn;
//! use tower_mcp_auth::{AccessToken, BearerToken, ClaimsExtractLayer, ProtectedResource, VerifyError};
//!
//! let resource = ProtectedResource::builder("https://mcp.example.com/mcp")
//!     .authorization_server("https://auth.example.com")
//!     .build()
//!     .unwrap();
//! let verifier = verifier_fn(|t: &BearerToken| {
//!     let ok = t.as_str() == "good";
//!     async move {
//!         if ok { Ok(AccessToken::builder("good").subject("alice").build()) }
//!         else { Err(VerifyError::invalid_token("unknown")) }
//!     }
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(ClaimsExtractLayer::new(verifier, resource))
//!     .service(service_fn(|req: Request<String>| async move {
//!         let who = req.extensions().get::<AccessToken>().unwrap().subject().unwrap().to_owned();
//!         Ok::<_, Infallible>(Response::new(who))
//!     }));
//!
//! let req = |t: &str| Request::builder().header("authorization", format!("Bearer {t}")).body(String::new()).unwrap();
//! assert_eq!(svc.clone().oneshot(req("good")).await.unwrap().into_body(), "alice");
//! let res = svc.clone().oneshot(req("bad")).await.unwrap();
//! assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
//! assert!(res.headers()[WWW_AUTHENTICATE].to_str().unwrap().starts_with(r#"Bearer error="invalid_token""#));
//! let res = svc.clone().oneshot(req("a,b")).await.unwrap();
//! assert_eq!(res.status(), StatusCode::BAD_REQUEST);
//! let res = svc.oneshot(Request::new(String::new())).await.unwrap();
//! assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
//! # }
//! ```

mod cache;
mod future;
mod layer;
mod service;

pub use cache::{DEFAULT_CACHE_BYTES, TokenCache};
pub use future::ResponseFuture;
pub use layer::ClaimsExtractLayer;
pub use service::ClaimsExtract;
