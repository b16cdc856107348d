//! The two token types handlers and verifiers see: the raw [`BearerToken`] taken from the
//! `Authorization` header, and the verified [`AccessToken`].

use std::fmt;
use std::sync::Arc;

use http::HeaderValue;
use serde::ser::SerializeStruct;
use serde_json::{Map, Value};

use crate::scope::ScopeSet;

/// The credential of an `Authorization: Bearer` header, as received.
///
/// Inserted into request extensions by [`BearerAuthLayer`](crate::bearer::BearerAuthLayer)
/// and consumed by [`ClaimsExtractLayer`](crate::claims::ClaimsExtractLayer). Its `Debug`
/// output never shows the token.
#[derive(Clone)]
pub struct BearerToken {
    value: HeaderValue,
    start: usize,
}

impl BearerToken {
    /// Wraps the header value whose token (RFC 6750 `token68`) starts at byte `start`.
    ///
    /// Returns `None` unless the bytes from `start` on are a valid `token68`.
    pub fn from_header(value: HeaderValue, start: usize) -> Option<Self> {
        let bytes = value.as_bytes().get(start..)?;
        is_token68(bytes).then_some(Self { value, start })
    }

    /// Wraps a header value already checked to hold a `token68` from `start` on.
    pub(crate) fn from_checked_header(value: HeaderValue, start: usize) -> Self {
        debug_assert!(is_token68(&value.as_bytes()[start..]));
        Self { value, start }
    }

    /// A token given directly (for tests, or verifiers called outside the layers).
    pub fn new(token: &str) -> Option<Self> {
        Self::from_header(HeaderValue::from_str(token).ok()?, 0)
    }

    /// The token text.
    pub fn as_str(&self) -> &str {
        // `from_header` checked that these bytes are token68, which is ASCII.
        std::str::from_utf8(&self.value.as_bytes()[self.start..]).unwrap_or_default()
    }

    /// Length of the token in bytes.
    pub fn len(&self) -> usize {
        self.value.len() - self.start
    }

    /// Whether the token is empty (never true for a parsed header).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// The `token68` body characters (without the trailing `=`), as a lookup table.
const TOKEN68: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        i += 1;
    }
    t
};

/// RFC 6750 §2.1: `token68 = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
pub(crate) fn is_token68(bytes: &[u8]) -> bool {
    let body = bytes.iter().take_while(|b| TOKEN68[usize::from(**b)]).count();
    body > 0 && bytes[body..].iter().all(|b| *b == b'=')
}

/// A verified access token: who the caller is and what it may do.
///
/// Inserted into request extensions by [`ClaimsExtractLayer`](crate::claims::ClaimsExtractLayer);
/// handlers read it from there (or through the `axum`, `rmcp` and `tonic` integrations).
/// Cloning is cheap (one `Arc`). `Debug` never prints the raw token.
///
/// ```
/// use tower_mcp_auth::AccessToken;
///
/// let token = AccessToken::builder("opaque-token")
///     .subject("user-1")
///     .client_id("client-9")
///     .scopes("mcp:read mcp:write".parse().unwrap())
///     .build();
/// assert_eq!(token.subject(), Some("user-1"));
/// assert!(token.scopes().contains("mcp:write"));
/// assert!(!format!("{token:?}").contains("opaque-token"));
/// ```
#[derive(Clone)]
pub struct AccessToken(Arc<Inner>);

struct Inner {
    raw: Box<str>,
    subject: Option<String>,
    client_id: Option<String>,
    scopes: ScopeSet,
    audience: Vec<String>,
    issuer: Option<String>,
    expires_at: Option<i64>,
    issued_at: Option<i64>,
    claims: Map<String, Value>,
    upstream_claims: Option<Map<String, Value>>,
    extensions: http::Extensions,
}

impl AccessToken {
    /// Starts building a token (for custom [`TokenVerifier`](crate::verify::TokenVerifier)s
    /// and tests).
    pub fn builder(raw: impl Into<Box<str>>) -> AccessTokenBuilder {
        AccessTokenBuilder {
            inner: Inner {
                raw: raw.into(),
                subject: None,
                client_id: None,
                scopes: ScopeSet::new(),
                audience: Vec::new(),
                issuer: None,
                expires_at: None,
                issued_at: None,
                claims: Map::new(),
                upstream_claims: None,
                extensions: http::Extensions::new(),
            },
        }
    }

    /// The subject (`sub`): the user or service the token was issued for.
    pub fn subject(&self) -> Option<&str> {
        self.0.subject.as_deref()
    }

    /// The OAuth client the token was issued to (`client_id`, else `azp`).
    pub fn client_id(&self) -> Option<&str> {
        self.0.client_id.as_deref()
    }

    /// The granted scopes.
    pub fn scopes(&self) -> &ScopeSet {
        &self.0.scopes
    }

    /// The audiences (`aud`).
    pub fn audience(&self) -> &[String] {
        &self.0.audience
    }

    /// The issuer (`iss`).
    pub fn issuer(&self) -> Option<&str> {
        self.0.issuer.as_deref()
    }

    /// Expiry, in seconds since the Unix epoch (`exp`).
    pub fn expires_at(&self) -> Option<i64> {
        self.0.expires_at
    }

    /// Issue time, in seconds since the Unix epoch (`iat`).
    pub fn issued_at(&self) -> Option<i64> {
        self.0.issued_at
    }

    /// Every claim of the token (JWT payload, or the introspection response).
    pub fn claims(&self) -> &Map<String, Value> {
        &self.0.claims
    }

    /// One claim by name.
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.0.claims.get(name)
    }

    /// Claims about the user from the upstream identity provider, when the token carries
    /// them (filled by a verifier's claims mapping).
    pub fn upstream_claims(&self) -> Option<&Map<String, Value>> {
        self.0.upstream_claims.as_ref()
    }

    /// A typed value attached by a claims-mapping hook.
    pub fn extension<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.0.extensions.get::<T>()
    }

    /// The raw token, for the rare handler that must present it again (for example to an
    /// RFC 8693 token exchange). Never forward it to another service as-is: MCP forbids
    /// token passthrough.
    pub fn raw_token(&self) -> &str {
        &self.0.raw
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("subject", &self.0.subject)
            .field("client_id", &self.0.client_id)
            .field("scopes", &self.0.scopes)
            .field("audience", &self.0.audience)
            .field("issuer", &self.0.issuer)
            .field("expires_at", &self.0.expires_at)
            .finish_non_exhaustive()
    }
}

/// Serializes what a handler may show about the caller: `sub`, `client_id`, `scopes`, `aud`,
/// `iss`, `exp`, `upstream_claims`. The raw token and the other claims are left out.
impl serde::Serialize for AccessToken {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("AccessToken", 7)?;
        st.serialize_field("sub", &self.0.subject)?;
        st.serialize_field("client_id", &self.0.client_id)?;
        st.serialize_field("scopes", &self.0.scopes)?;
        st.serialize_field("aud", &self.0.audience)?;
        st.serialize_field("iss", &self.0.issuer)?;
        st.serialize_field("exp", &self.0.expires_at)?;
        st.serialize_field("upstream_claims", &self.0.upstream_claims)?;
        st.end()
    }
}

/// Builds an [`AccessToken`].
pub struct AccessTokenBuilder {
    inner: Inner,
}

impl AccessTokenBuilder {
    /// Sets the subject.
    pub fn subject(mut self, sub: impl Into<String>) -> Self {
        self.inner.subject = Some(sub.into());
        self
    }

    /// Sets the client id.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.inner.client_id = Some(id.into());
        self
    }

    /// Sets the granted scopes.
    pub fn scopes(mut self, scopes: ScopeSet) -> Self {
        self.inner.scopes = scopes;
        self
    }

    /// Sets the audiences.
    pub fn audience<I, T>(mut self, aud: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.inner.audience = aud.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the issuer.
    pub fn issuer(mut self, iss: impl Into<String>) -> Self {
        self.inner.issuer = Some(iss.into());
        self
    }

    /// Sets the expiry (seconds since the Unix epoch).
    pub fn expires_at(mut self, exp: i64) -> Self {
        self.inner.expires_at = Some(exp);
        self
    }

    /// Sets the issue time (seconds since the Unix epoch).
    pub fn issued_at(mut self, iat: i64) -> Self {
        self.inner.issued_at = Some(iat);
        self
    }

    /// Sets all claims.
    pub fn claims(mut self, claims: Map<String, Value>) -> Self {
        self.inner.claims = claims;
        self
    }

    /// Sets the upstream identity provider's claims.
    pub fn upstream_claims(mut self, claims: Map<String, Value>) -> Self {
        self.inner.upstream_claims = Some(claims);
        self
    }

    /// Attaches a typed value that handlers read with [`AccessToken::extension`].
    pub fn extension<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.inner.extensions.insert(value);
        self
    }

    /// Mutable access to what is being built, for claims-mapping hooks.
    pub fn set_upstream_claims(&mut self, claims: Map<String, Value>) -> &mut Self {
        self.inner.upstream_claims = Some(claims);
        self
    }

    /// Attaches a typed value (in-place form of [`extension`](Self::extension)).
    pub fn insert_extension<T: Clone + Send + Sync + 'static>(&mut self, value: T) -> &mut Self {
        self.inner.extensions.insert(value);
        self
    }

    /// Replaces the scopes (in-place form of [`scopes`](Self::scopes)).
    pub fn set_scopes(&mut self, scopes: ScopeSet) -> &mut Self {
        self.inner.scopes = scopes;
        self
    }

    /// Replaces the subject (in-place form of [`subject`](Self::subject)).
    pub fn set_subject(&mut self, sub: impl Into<String>) -> &mut Self {
        self.inner.subject = Some(sub.into());
        self
    }

    /// The claims set so far.
    pub fn claims_ref(&self) -> &Map<String, Value> {
        &self.inner.claims
    }

    /// Finishes the token.
    pub fn build(self) -> AccessToken {
        AccessToken(Arc::new(self.inner))
    }
}

impl fmt::Debug for AccessTokenBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessTokenBuilder").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token68_grammar() {
        for ok in ["abc", "a.b.c", "A-_~+/9", "abc==", "x="] {
            assert!(is_token68(ok.as_bytes()), "{ok}");
        }
        for bad in ["", "=", "a b", "a,b", "a\"b", "a\\b", "a%b", "a=b", "a\tb", "é"] {
            assert!(!is_token68(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn debug_never_shows_tokens() {
        let b = BearerToken::new("secret-token-value").unwrap();
        assert_eq!(format!("{b:?}"), "BearerToken(<redacted>)");
        assert_eq!(b.as_str(), "secret-token-value");
        let t = AccessToken::builder("secret-token-value").subject("u").build();
        assert!(!format!("{t:?}").contains("secret"));
        assert!(!serde_json::to_string(&t).unwrap().contains("secret"));
    }
}
