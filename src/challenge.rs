//! `WWW-Authenticate` challenges: a builder for the Bearer challenges this crate sends
//! (RFC 6750 §3, RFC 9728 §5.1) and a parser for reading them back (RFC 9110 §11.6.1).
//!
//! The builder only accepts values made of the characters RFC 6750 §3 allows inside a quoted
//! attribute (`%x20-21 / %x23-5B / %x5D-7E`), so a value can never close its quotes, inject a
//! parameter or break the header. Nothing taken from a request is ever written into a
//! challenge: scopes come from configuration, descriptions from fixed text.
//!
//! ```
//! use tower_mcp_auth::challenge::{self, BearerError, Challenge};
//! use tower_mcp_auth::scope::Scope;
//!
//! let value = Challenge::bearer()
//!     .error(BearerError::InsufficientScope)
//!     .scope([Scope::new("mcp:admin").unwrap()].iter())
//!     .resource_metadata("https://mcp.example.com/.well-known/oauth-protected-resource/mcp")
//!     .unwrap()
//!     .to_string();
//! assert_eq!(
//!     value,
//!     r#"Bearer error="insufficient_scope", scope="mcp:admin", resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp""#
//! );
//!
//! let parsed = challenge::parse(&value).unwrap();
//! assert_eq!(parsed[0].scheme(), "Bearer");
//! assert_eq!(parsed[0].param("scope"), Some("mcp:admin"));
//! ```

use std::fmt;

use http::HeaderValue;

use crate::scope::Scope;

/// The error codes of RFC 6750 §3.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BearerError {
    /// The request is malformed (HTTP 400).
    InvalidRequest,
    /// The token is expired, revoked, malformed or otherwise invalid (HTTP 401).
    InvalidToken,
    /// The token lacks the scopes the request needs (HTTP 403).
    InsufficientScope,
}

impl BearerError {
    /// The code as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
        }
    }
}

impl fmt::Display for BearerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value that contains characters not allowed in a challenge attribute.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("challenge attribute value contains a character outside %x20-21 / %x23-5B / %x5D-7E")]
pub struct InvalidAttribute(());

pub(crate) fn is_attribute_value(s: &str) -> bool {
    s.bytes().all(|b| b == 0x20 || b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

/// A `Bearer` challenge under construction.
///
/// Parameters are written in a fixed order (`realm`, `error`, `error_description`, `scope`,
/// `resource_metadata`), each at most once, always quoted.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Challenge {
    realm: Option<String>,
    error: Option<BearerError>,
    error_description: Option<String>,
    scope: Option<String>,
    resource_metadata: Option<String>,
}

impl Challenge {
    /// An empty `Bearer` challenge.
    pub fn bearer() -> Self {
        Self::default()
    }

    /// Sets `error`.
    pub fn error(mut self, error: BearerError) -> Self {
        self.error = Some(error);
        self
    }

    /// Sets `error_description` (human-readable; never put request data here).
    pub fn error_description(mut self, text: &str) -> Result<Self, InvalidAttribute> {
        check(text)?;
        self.error_description = Some(text.to_owned());
        Ok(self)
    }

    /// Sets `scope` to the given scopes, space-separated; omitted when empty.
    pub fn scope<'a, I>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = &'a Scope>,
    {
        let mut joined = String::new();
        for s in scopes {
            if !joined.is_empty() {
                joined.push(' ');
            }
            joined.push_str(s.as_str());
        }
        self.scope = (!joined.is_empty()).then_some(joined);
        self
    }

    /// Sets `resource_metadata` (RFC 9728 §5.1): the absolute URL of the protected resource
    /// metadata document.
    pub fn resource_metadata(mut self, url: &str) -> Result<Self, InvalidAttribute> {
        check(url)?;
        self.resource_metadata = Some(url.to_owned());
        Ok(self)
    }

    /// Sets `realm`.
    pub fn realm(mut self, realm: &str) -> Result<Self, InvalidAttribute> {
        check(realm)?;
        self.realm = Some(realm.to_owned());
        Ok(self)
    }

    /// The challenge as a header value.
    pub fn to_header_value(&self) -> HeaderValue {
        // Every part was checked to be visible ASCII or space, which `HeaderValue` accepts.
        HeaderValue::from_str(&self.to_string()).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
    }
}

fn check(value: &str) -> Result<(), InvalidAttribute> {
    if is_attribute_value(value) { Ok(()) } else { Err(InvalidAttribute(())) }
}

impl fmt::Display for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Bearer")?;
        let params = [
            ("realm", self.realm.as_deref()),
            ("error", self.error.map(BearerError::as_str)),
            ("error_description", self.error_description.as_deref()),
            ("scope", self.scope.as_deref()),
            ("resource_metadata", self.resource_metadata.as_deref()),
        ];
        let mut first = true;
        for (name, value) in params {
            if let Some(value) = value {
                f.write_str(if first { " " } else { ", " })?;
                first = false;
                write!(f, "{name}=\"{value}\"")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One challenge read from a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedChallenge {
    scheme: String,
    token68: Option<String>,
    params: Vec<(String, String)>,
}

impl ParsedChallenge {
    /// The authentication scheme, as written.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The token68 form, if the challenge used it instead of parameters.
    pub fn token68(&self) -> Option<&str> {
        self.token68.as_deref()
    }

    /// The parameters in order, names as written, values unquoted.
    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }

    /// The value of the parameter `name` (case-insensitive name match), if present once.
    pub fn param(&self, name: &str) -> Option<&str> {
        let mut found = self.params.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name));
        match (found.next(), found.next()) {
            (Some((_, v)), None) => Some(v),
            _ => None,
        }
    }

    /// How many times the parameter `name` appears.
    pub fn param_count(&self, name: &str) -> usize {
        self.params.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).count()
    }
}

/// A `WWW-Authenticate` value that does not follow RFC 9110 §11.6.1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed WWW-Authenticate value at byte {at}")]
pub struct ParseError {
    at: usize,
}

/// Parses a `WWW-Authenticate` header value into its challenges.
pub fn parse(input: &str) -> Result<Vec<ParsedChallenge>, ParseError> {
    Parser { s: input.as_bytes(), i: 0 }.challenges()
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token68(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~+/".contains(&b)
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn err(&self) -> ParseError {
        ParseError { at: self.i }
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn token(&mut self) -> Option<String> {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn quoted(&mut self) -> Result<String, ParseError> {
        // at '"'
        self.i += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.err()),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(String::from_utf8_lossy(&out).into_owned());
                }
                Some(b'\\') => {
                    self.i += 1;
                    let c = self.peek().ok_or_else(|| self.err())?;
                    out.push(c);
                    self.i += 1;
                }
                Some(c) if c == b'\t' || c >= 0x20 && c != 0x7f => {
                    out.push(c);
                    self.i += 1;
                }
                Some(_) => return Err(self.err()),
            }
        }
    }

    fn try_token68(&mut self) -> Option<String> {
        let start = self.i;
        let mut j = self.i;
        while self.s.get(j).copied().is_some_and(is_token68) {
            j += 1;
        }
        if j == start {
            return None;
        }
        while self.s.get(j) == Some(&b'=') {
            j += 1;
        }
        let mut k = j;
        while matches!(self.s.get(k), Some(b' ' | b'\t')) {
            k += 1;
        }
        if matches!(self.s.get(k), None | Some(b',')) {
            self.i = j;
            return Some(String::from_utf8_lossy(&self.s[start..j]).into_owned());
        }
        None
    }

    fn challenges(mut self) -> Result<Vec<ParsedChallenge>, ParseError> {
        let mut out = Vec::new();
        loop {
            while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
                self.i += 1;
            }
            if self.peek().is_none() {
                break;
            }
            let scheme = self.token().ok_or_else(|| self.err())?;
            let mut challenge = ParsedChallenge { scheme, token68: None, params: Vec::new() };
            if self.peek() == Some(b' ') {
                while self.peek() == Some(b' ') {
                    self.i += 1;
                }
                if let Some(t) = self.try_token68() {
                    challenge.token68 = Some(t);
                } else {
                    self.params(&mut challenge)?;
                }
            }
            out.push(challenge);
        }
        Ok(out)
    }

    fn params(&mut self, challenge: &mut ParsedChallenge) -> Result<(), ParseError> {
        loop {
            while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
                self.i += 1;
            }
            if self.peek().is_none() {
                return Ok(());
            }
            let before_name = self.i;
            let Some(name) = self.token() else { return Err(self.err()) };
            self.skip_ows();
            if self.peek() != Some(b'=') {
                // A token without '=': the next challenge's scheme.
                self.i = before_name;
                return Ok(());
            }
            self.i += 1;
            self.skip_ows();
            let value =
                if self.peek() == Some(b'"') { self.quoted()? } else { self.token().ok_or_else(|| self.err())? };
            challenge.params.push((name, value));
            self.skip_ows();
            match self.peek() {
                None => return Ok(()),
                Some(b',') => self.i += 1,
                Some(_) => return Err(self.err()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_rejects_quote_breaking_values() {
        for bad in ["a\"b", "a\\b", "a\r\nb", "a\u{7f}", "é"] {
            assert!(Challenge::bearer().error_description(bad).is_err(), "{bad:?}");
            assert!(Challenge::bearer().resource_metadata(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn empty_challenge_and_order() {
        assert_eq!(Challenge::bearer().to_string(), "Bearer");
        let c = Challenge::bearer()
            .resource_metadata("https://x/.well-known/oauth-protected-resource")
            .unwrap()
            .error(BearerError::InvalidToken);
        assert_eq!(
            c.to_string(),
            r#"Bearer error="invalid_token", resource_metadata="https://x/.well-known/oauth-protected-resource""#
        );
    }

    #[test]
    fn parses_several_challenges() {
        let p = parse(r#"Bearer realm="a, b", error="invalid_token", DPoP algs="ES256", Basic abc=="#).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].param("realm"), Some("a, b"));
        assert_eq!(p[0].param("error"), Some("invalid_token"));
        assert_eq!(p[1].scheme(), "DPoP");
        assert_eq!(p[1].param("algs"), Some("ES256"));
        assert_eq!(p[2].token68(), Some("abc=="));
    }

    #[test]
    fn parses_escapes_and_bare_scheme() {
        let p = parse(r#"Bearer error_description="say \"hi\"""#).unwrap();
        assert_eq!(p[0].param("error_description"), Some(r#"say "hi""#));
        let p = parse("Bearer").unwrap();
        assert!(p[0].params().is_empty());
        assert!(parse(r#"Bearer a="unterminated"#).is_err());
    }

    #[test]
    fn duplicate_params_are_visible() {
        let p = parse(r#"Bearer scope="a", scope="b""#).unwrap();
        assert_eq!(p[0].param("scope"), None);
        assert_eq!(p[0].param_count("scope"), 2);
    }
}
