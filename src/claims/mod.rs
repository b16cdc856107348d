//! Token verification as middleware: [`ClaimsExtractLayer`] takes the
//! [`BearerToken`](crate::BearerToken) left by [`BearerAuthLayer`](crate::BearerAuthLayer),
//! verifies it with a [`TokenVerifier`](crate::verify::TokenVerifier) and inserts the
//! [`AccessToken`](crate::AccessToken) into the request extensions.
//!
//! | verifier says | answer |
//! | --- | --- |
//! | valid | request passed on with `AccessToken` in its extensions |
//! | invalid, expired, wrong audience … | 401, `error="invalid_token"` challenge |
//! | cannot decide (JWKS or introspection unreachable) | 503 with `Retry-After` |
//! | no `BearerToken` in the extensions (layer used alone) | 401, challenge without `error` |
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode, header::WWW_AUTHENTICATE};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_mcp_auth::verify::verifier_fn;
//! use tower_mcp_auth::{AccessToken, BearerAuthLayer, BearerToken, ClaimsExtractLayer, ProtectedResource, VerifyError};
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
//!     .layer(BearerAuthLayer::new(resource.clone()))
//!     .layer(ClaimsExtractLayer::new(verifier, resource))
//!     .service(service_fn(|req: Request<String>| async move {
//!         let who = req.extensions().get::<AccessToken>().unwrap().subject().unwrap().to_owned();
//!         Ok::<_, Infallible>(Response::new(who))
//!     }));
//!
//! let req = |t: &str| Request::builder().header("authorization", format!("Bearer {t}")).body(String::new()).unwrap();
//! assert_eq!(svc.clone().oneshot(req("good")).await.unwrap().into_body(), "alice");
//! let res = svc.oneshot(req("bad")).await.unwrap();
//! assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
//! assert!(res.headers()[WWW_AUTHENTICATE].to_str().unwrap().starts_with(r#"Bearer error="invalid_token""#));
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
