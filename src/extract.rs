//! Reading the [`AccessToken`] in handlers: axum extractors (feature `axum`) and an rmcp
//! tool parameter (feature `rmcp`).
//!
//! With axum, take `AccessToken` (required: a route without
//! [`ClaimsExtractLayer`](crate::ClaimsExtractLayer) in front answers 500, a configuration
//! error) or `Option<AccessToken>` as a handler argument.
//!
//! With rmcp, take `AccessToken` as a `#[tool]` parameter: rmcp copies each HTTP request's
//! `http::request::Parts` into the tool's context, and the extractor reads the token verified
//! for that very request.
//!
//! Browser-based clients can read a 401 or 403 challenge only if the protected route answers
//! CORS requests: put a CORS layer (for example tower-http's `CorsLayer`) *outside* the auth
//! layers, so preflights need no token, and expose `WWW-Authenticate` (and, for MCP,
//! `Mcp-Session-Id`). The metadata service answers CORS itself.

#[cfg(feature = "axum")]
mod axum_impl {
    use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
    use axum_core::response::{IntoResponse, Response};
    use http::StatusCode;
    use http::request::Parts;

    use crate::token::AccessToken;

    /// Rejection of the required `AccessToken` extractor: the route is not behind
    /// [`ClaimsExtractLayer`](crate::ClaimsExtractLayer). Answers 500.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct MissingAccessToken;

    impl IntoResponse for MissingAccessToken {
        fn into_response(self) -> Response {
            tracing::error!("AccessToken extractor used on a route without ClaimsExtractLayer");
            (StatusCode::INTERNAL_SERVER_ERROR, "authorization is not configured for this route").into_response()
        }
    }

    impl<S: Send + Sync> FromRequestParts<S> for AccessToken {
        type Rejection = MissingAccessToken;

        async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
            parts.extensions.get::<AccessToken>().cloned().ok_or(MissingAccessToken)
        }
    }

    impl<S: Send + Sync> OptionalFromRequestParts<S> for AccessToken {
        type Rejection = std::convert::Infallible;

        async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Option<Self>, Self::Rejection> {
            Ok(parts.extensions.get::<AccessToken>().cloned())
        }
    }
}

#[cfg(feature = "axum")]
pub use axum_impl::MissingAccessToken;

#[cfg(feature = "rmcp")]
mod rmcp_impl {
    use rmcp::handler::server::common::{AsRequestContext, FromContextPart};

    use crate::token::AccessToken;

    impl<C: AsRequestContext> FromContextPart<C> for AccessToken {
        fn from_context_part(context: &mut C) -> Result<Self, rmcp::ErrorData> {
            context
                .as_request_context()
                .extensions
                .get::<http::request::Parts>()
                .and_then(|parts| parts.extensions.get::<AccessToken>())
                .cloned()
                .ok_or_else(|| {
                    tracing::error!("AccessToken tool parameter used on a server without ClaimsExtractLayer");
                    rmcp::ErrorData::internal_error("authorization is not configured for this server", None)
                })
        }
    }
}
