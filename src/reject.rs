//! How requests are turned away: the [`Rejection`] every layer produces and the [`Reject`]
//! trait that turns it into a response.
//!
//! The status and `WWW-Authenticate` challenge are decided by the layers; a [`Reject`] only
//! chooses the body (and may change the status, e.g. [`GrpcReject`](crate::grpc::GrpcReject)
//! answers gRPC's HTTP 200). Whatever a custom [`Reject`] returns, the layers set the
//! `WWW-Authenticate` and `Retry-After` headers of the rejection on it afterwards.
//!
//! ```
//! use bytes::Bytes;
//! use http::{Response, StatusCode};
//! use http_body_util::Full;
//! use tower_mcp_auth::reject::{Reject, Rejection};
//!
//! // A closure is a `Reject`: here, a plain-text body.
//! let reject = |r: &Rejection| {
//!     Response::builder()
//!         .status(r.status())
//!         .body(Full::new(Bytes::from(format!("denied: {}", r.error_code().unwrap_or("no token")))))
//!         .unwrap()
//! };
//! let res: Response<Full<Bytes>> = reject.reject(&Rejection::missing_token_for_tests());
//! assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
//! ```

use std::fmt;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};

/// What kind of rejection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectionKind {
    /// No bearer credentials (401, challenge without `error`).
    MissingToken,
    /// Malformed credentials or request (400 `invalid_request`).
    InvalidRequest,
    /// The token was rejected (401 `invalid_token`).
    InvalidToken,
    /// The token lacks scopes (403 `insufficient_scope`).
    InsufficientScope,
    /// The token could not be checked now (503 with `Retry-After`).
    Unavailable,
    /// The request body is larger than the configured limit (413).
    PayloadTooLarge,
    /// `Mcp-Method` / `Mcp-Name` headers disagree with the JSON-RPC body (400).
    HeaderMismatch,
}

/// A request turned away, with the status and headers the protocol requires.
#[derive(Clone, PartialEq, Eq)]
pub struct Rejection {
    kind: RejectionKind,
    status: StatusCode,
    www_authenticate: Option<HeaderValue>,
    retry_after: Option<u64>,
}

impl Rejection {
    pub(crate) fn new(kind: RejectionKind, www_authenticate: Option<HeaderValue>) -> Self {
        let status = match kind {
            RejectionKind::MissingToken | RejectionKind::InvalidToken => StatusCode::UNAUTHORIZED,
            RejectionKind::InvalidRequest | RejectionKind::HeaderMismatch => StatusCode::BAD_REQUEST,
            RejectionKind::InsufficientScope => StatusCode::FORBIDDEN,
            RejectionKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            RejectionKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        };
        Self { kind, status, www_authenticate, retry_after: None }
    }

    pub(crate) fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// A missing-token rejection without a challenge, for examples and tests of custom
    /// [`Reject`] implementations.
    #[doc(hidden)]
    pub fn missing_token_for_tests() -> Self {
        Self::new(RejectionKind::MissingToken, Some(HeaderValue::from_static("Bearer")))
    }

    /// The kind of rejection.
    pub fn kind(&self) -> RejectionKind {
        self.kind
    }

    /// The HTTP status the protocol prescribes.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `WWW-Authenticate` challenge, for 400, 401 and 403 rejections.
    pub fn www_authenticate(&self) -> Option<&HeaderValue> {
        self.www_authenticate.as_ref()
    }

    /// Seconds after which to retry, for 503 rejections.
    pub fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }

    /// The RFC 6750 error code, if the challenge carries one.
    pub fn error_code(&self) -> Option<&'static str> {
        match self.kind {
            RejectionKind::InvalidRequest | RejectionKind::HeaderMismatch => Some("invalid_request"),
            RejectionKind::InvalidToken => Some("invalid_token"),
            RejectionKind::InsufficientScope => Some("insufficient_scope"),
            RejectionKind::Unavailable => Some("temporarily_unavailable"),
            RejectionKind::PayloadTooLarge => Some("invalid_request"),
            RejectionKind::MissingToken => None,
        }
    }

    /// Writes the rejection's protocol headers onto `res` (replacing any set by a custom
    /// [`Reject`]).
    pub fn apply_headers<B>(&self, res: &mut Response<B>) {
        let headers = res.headers_mut();
        if let Some(challenge) = &self.www_authenticate {
            headers.insert(WWW_AUTHENTICATE, challenge.clone());
        }
        if let Some(secs) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
    }

    /// The default response: the status, the headers and an empty body.
    pub fn to_response<B: Default>(&self) -> Response<B> {
        let mut res = Response::new(B::default());
        *res.status_mut() = self.status;
        self.apply_headers(&mut res);
        res
    }
}

impl fmt::Debug for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejection")
            .field("kind", &self.kind)
            .field("status", &self.status)
            .field("www_authenticate", &self.www_authenticate)
            .field("retry_after", &self.retry_after)
            .finish()
    }
}

/// Turns a [`Rejection`] into a response with body type `B`.
pub trait Reject<B> {
    /// Builds the response. The layers set the rejection's headers on it afterwards.
    fn reject(&self, rejection: &Rejection) -> Response<B>;
}

impl<F, B> Reject<B> for F
where
    F: Fn(&Rejection) -> Response<B>,
{
    fn reject(&self, rejection: &Rejection) -> Response<B> {
        self(rejection)
    }
}

/// The status, the challenge and an empty body. Works with any body type that has a
/// `Default` (axum's `Body`, `Full`, `Empty`, boxed bodies, tonic's `Body`).
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultReject;

impl<B: Default> Reject<B> for DefaultReject {
    fn reject(&self, rejection: &Rejection) -> Response<B> {
        rejection.to_response()
    }
}

/// The status, the challenge and an RFC 6750-style JSON body `{"error": "…"}` for body types
/// that can be built from bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonReject;

impl<B: From<Bytes>> Reject<B> for JsonReject {
    fn reject(&self, rejection: &Rejection) -> Response<B> {
        let body = match rejection.error_code() {
            Some(code) => format!("{{\"error\":\"{code}\"}}"),
            None => "{\"error\":\"unauthorized\"}".to_owned(),
        };
        let mut res = Response::new(B::from(Bytes::from(body)));
        *res.status_mut() = rejection.status();
        res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        res
    }
}

/// Builds the response for `rejection` with `reject`, then enforces the protocol headers.
pub(crate) fn respond<B, R: Reject<B>>(reject: &R, rejection: &Rejection) -> Response<B> {
    let mut res = reject.reject(rejection);
    rejection.apply_headers(&mut res);
    res
}
