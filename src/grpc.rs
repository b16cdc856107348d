//! gRPC: rejections as gRPC statuses, and the verified token on tonic requests.
//!
//! [`GrpcReject`] answers like a gRPC server: HTTP 200, `content-type: application/grpc`,
//! `grpc-status` 16 (UNAUTHENTICATED) for missing or invalid tokens, 7 (PERMISSION_DENIED) for
//! insufficient scope, 14 (UNAVAILABLE) when the token cannot be checked, 3
//! (INVALID_ARGUMENT) for malformed requests, and keeps the `www-authenticate` challenge.
//!
//! ```
//! use tower_mcp_auth::grpc::GrpcReject;
//! use tower_mcp_auth::reject::{Reject, Rejection};
//!
//! let res: http::Response<String> = GrpcReject.reject(&Rejection::missing_token_for_tests());
//! assert_eq!(res.status(), 200);
//! assert_eq!(res.headers()["grpc-status"], "16");
//! ```

use http::{HeaderValue, Response, StatusCode};

use crate::reject::{Reject, Rejection, RejectionKind};

/// Rejections as gRPC trailers-only responses. See the [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcReject;

impl<B: Default> Reject<B> for GrpcReject {
    fn reject(&self, rejection: &Rejection) -> Response<B> {
        let (code, message) = match rejection.kind() {
            RejectionKind::MissingToken => ("16", "missing bearer token"),
            RejectionKind::InvalidToken => ("16", "invalid bearer token"),
            RejectionKind::InsufficientScope => ("7", "insufficient scope"),
            RejectionKind::Unavailable => ("14", "token verification unavailable"),
            _ => ("3", "invalid request"),
        };
        let mut res = Response::new(B::default());
        *res.status_mut() = StatusCode::OK;
        let h = res.headers_mut();
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert("grpc-status", HeaderValue::from_static(code));
        h.insert("grpc-message", HeaderValue::from_static(message));
        res
    }
}

/// Reads the verified token from a tonic request.
#[cfg(feature = "tonic")]
pub trait RequestExt {
    /// The token verified by [`ClaimsExtractLayer`](crate::ClaimsExtractLayer), if any.
    fn access_token(&self) -> Option<&crate::AccessToken>;
}

#[cfg(feature = "tonic")]
impl<T> RequestExt for tonic::Request<T> {
    fn access_token(&self) -> Option<&crate::AccessToken> {
        self.extensions().get::<crate::AccessToken>()
    }
}
