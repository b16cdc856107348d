//! Error types: [`ConfigError`] when building a configuration, [`VerifyError`] when a token
//! is not accepted.
//!
//! RFC error codes are kept apart from internal causes: a [`VerifyError`] becomes
//! `invalid_token` (401) or a 503, and its [`reason`](VerifyError::reason) is for logs and
//! metrics only, never written into a response.

use std::fmt;
use std::time::Duration;

/// A configuration that cannot be used. Builders fail closed with this error rather than
/// falling back to something weaker.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    kind: ConfigErrorKind,
    message: String,
}

/// What kind of configuration problem a [`ConfigError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// A URL that does not parse or has the wrong shape.
    InvalidUrl,
    /// A plain-`http` URL where `https` is required.
    InsecureUrl,
    /// A required setting is missing.
    Missing,
    /// A key that cannot be used.
    InvalidKey,
    /// A scope that is not a valid scope token, or not allowed here.
    InvalidScope,
    /// Any other invalid value.
    Invalid,
}

impl ConfigError {
    pub(crate) fn new(kind: ConfigErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }

    /// The kind of problem.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }
}

/// Why a token was not accepted.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyError {
    kind: Kind,
    reason: &'static str,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Invalid,
    Unavailable(Duration),
}

impl VerifyError {
    /// The token is not acceptable (answered `401 invalid_token`). `reason` is a short,
    /// fixed description for logs (for example `"expired"`), never request data.
    pub fn invalid_token(reason: &'static str) -> Self {
        Self { kind: Kind::Invalid, reason }
    }

    /// The token cannot be checked now because a dependency (JWKS, introspection endpoint) is
    /// unreachable (answered `503` with `Retry-After`).
    pub fn unavailable(reason: &'static str, retry_after: Duration) -> Self {
        Self { kind: Kind::Unavailable(retry_after), reason }
    }

    /// Whether the token was judged invalid.
    pub fn is_invalid_token(&self) -> bool {
        matches!(self.kind, Kind::Invalid)
    }

    /// Whether validity could not be decided.
    pub fn is_unavailable(&self) -> bool {
        matches!(self.kind, Kind::Unavailable(_))
    }

    /// When to try again, for [`is_unavailable`](Self::is_unavailable) errors.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.kind {
            Kind::Unavailable(d) => Some(d),
            Kind::Invalid => None,
        }
    }

    /// A short fixed description of the cause, for logs and metrics.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Debug for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Invalid => write!(f, "VerifyError::InvalidToken({})", self.reason),
            Kind::Unavailable(d) => write!(f, "VerifyError::Unavailable({}, retry after {d:?})", self.reason),
        }
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Invalid => write!(f, "invalid token: {}", self.reason),
            Kind::Unavailable(_) => write!(f, "token verification unavailable: {}", self.reason),
        }
    }
}

impl std::error::Error for VerifyError {}
