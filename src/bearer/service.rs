use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use http::header::Entry;
use http::{HeaderMap, Request, Response};
use tower_service::Service;

use super::future::ResponseFuture;
use crate::reject::{Reject, Rejection, RejectionKind, respond};
use crate::resource::ProtectedResource;
use crate::token::{BearerToken, is_token68};

/// Default cap on the token length (8 KiB).
pub const DEFAULT_MAX_TOKEN_LEN: usize = 8 * 1024;

/// Why an `Authorization` header did not yield a bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// No bearer credentials at all (no header, or another scheme): answered 401 without
    /// `error`.
    #[error("no bearer credentials")]
    Missing,
    /// Bearer credentials that break the grammar, several headers, or a token over the cap:
    /// answered 400 `invalid_request`.
    #[error("malformed bearer credentials")]
    Malformed,
}

const SCHEME: &[u8] = b"bearer";

/// Reads the one `Authorization: Bearer` credential of a request.
pub fn parse_authorization(headers: &HeaderMap, max_token_len: usize) -> Result<BearerToken, ParseError> {
    let mut all = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = all.next() else { return Err(ParseError::Missing) };
    if all.next().is_some() {
        return Err(ParseError::Malformed);
    }
    let start = locate(value.as_bytes(), max_token_len)?;
    if !is_token68(&value.as_bytes()[start..]) {
        return Err(ParseError::Malformed);
    }
    Ok(BearerToken::from_checked_header(value.clone(), start))
}

/// How a layer reads the `Authorization` header: the token size cap, and whether the header
/// stays on the request. Shared by [`BearerAuth`] and
/// [`ClaimsExtract`](crate::claims::ClaimsExtract).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeaderRules {
    pub(crate) max_token_len: usize,
    pub(crate) forward: bool,
}

impl Default for HeaderRules {
    fn default() -> Self {
        Self { max_token_len: DEFAULT_MAX_TOKEN_LEN, forward: false }
    }
}

impl HeaderRules {
    /// Takes the one bearer credential out of `headers` (leaves it there when `forward`), with
    /// one lookup and no copy of the header.
    ///
    /// Everything of the grammar is checked except that the token is `token68`: the caller
    /// does that (at once in [`BearerAuth`], only when the token is not in the cache in
    /// [`ClaimsExtract`](crate::claims::ClaimsExtract)).
    pub(crate) fn take(self, headers: &mut HeaderMap) -> Result<BearerToken, ParseError> {
        let Entry::Occupied(mut entry) = headers.entry(AUTHORIZATION) else { return Err(ParseError::Missing) };
        if entry.iter().nth(1).is_some() {
            return Err(ParseError::Malformed);
        }
        let start = locate(entry.get().as_bytes(), self.max_token_len)?;
        let value = if self.forward {
            // Left for the inner service: at least never printed by a `Debug` of the headers.
            entry.get_mut().set_sensitive(true);
            entry.get().clone()
        } else {
            entry.remove()
        };
        Ok(BearerToken::from_header_unchecked(value, start))
    }
}

/// `Bearer 1*SP token` with a token of at most `max_token_len` bytes: where the token starts.
/// The token's characters are not looked at.
fn locate(bytes: &[u8], max_token_len: usize) -> Result<usize, ParseError> {
    let Some((scheme, rest)) = bytes.split_first_chunk::<6>() else { return Err(ParseError::Missing) };
    // ASCII case folding of letters only: `| 0x20` maps a byte to a letter of "bearer" only
    // from that letter in either case.
    if u64::from(u32::from_le_bytes([scheme[0], scheme[1], scheme[2], scheme[3]]))
        | u64::from(u16::from_le_bytes([scheme[4], scheme[5]])) << 32
        | 0x2020_2020_2020
        != u64::from(u32::from_le_bytes(*b"bear")) | u64::from(u16::from_le_bytes(*b"er")) << 32
    {
        return Err(ParseError::Missing);
    }
    match rest.first() {
        // "Bearer" alone.
        None => Err(ParseError::Malformed),
        Some(b' ') => {
            let spaces = rest.iter().position(|b| *b != b' ').unwrap_or(rest.len());
            let len = rest.len() - spaces;
            if len == 0 || len > max_token_len {
                return Err(ParseError::Malformed);
            }
            Ok(SCHEME.len() + spaces)
        }
        // Another scheme whose name starts with "bearer" ("Bearerx").
        Some(b) if b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b) => Err(ParseError::Missing),
        // Tab, NBSP or other separators after the scheme.
        Some(_) => Err(ParseError::Malformed),
    }
}

/// The answer to a request without usable bearer credentials.
pub(crate) fn parse_rejection(error: ParseError, resource: &ProtectedResource) -> Rejection {
    let rejection = match error {
        ParseError::Missing => {
            Rejection::new(RejectionKind::MissingToken, Some(resource.missing_token_challenge().clone()))
        }
        ParseError::Malformed => {
            Rejection::new(RejectionKind::InvalidRequest, Some(resource.invalid_request_challenge().clone()))
        }
    };
    tracing::debug!(kind = ?rejection.kind(), "request without usable bearer credentials");
    rejection
}

/// Middleware that extracts the bearer token. Built by
/// [`BearerAuthLayer`](super::BearerAuthLayer).
#[derive(Debug, Clone)]
pub struct BearerAuth<S, R> {
    inner: S,
    resource: ProtectedResource,
    reject: R,
    header: HeaderRules,
}

impl<S, R> BearerAuth<S, R> {
    pub(crate) fn new(inner: S, resource: ProtectedResource, reject: R, header: HeaderRules) -> Self {
        Self { inner, resource, reject, header }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for BearerAuth<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: Reject<ResBody>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let parsed = self.header.take(req.headers_mut());
        match parsed.and_then(|t| if is_token68(t.as_bytes()) { Ok(t) } else { Err(ParseError::Malformed) }) {
            Ok(token) => {
                req.extensions_mut().insert(token);
                ResponseFuture::inner(self.inner.call(req))
            }
            Err(e) => ResponseFuture::rejected(respond(&self.reject, &parse_rejection(e, &self.resource))),
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn parse(values: &[&[u8]]) -> Result<String, ParseError> {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_bytes(v).unwrap());
        }
        parse_authorization(&h, 64).map(|t| t.as_str().to_owned())
    }

    #[test]
    fn grammar() {
        assert_eq!(parse(&[]), Err(ParseError::Missing));
        assert_eq!(parse(&[b"Basic dXNlcjpw"]), Err(ParseError::Missing));
        assert_eq!(parse(&[b"DPoP abc"]), Err(ParseError::Missing));
        assert_eq!(parse(&[b"Bearerx abc"]), Err(ParseError::Missing));
        assert_eq!(parse(&[b"bEaReR abc"]).unwrap(), "abc");
        assert_eq!(parse(&[b"Bearer  abc=="]).unwrap(), "abc==");
        for bad in [
            &b"Bearer"[..],
            b"Bearer ",
            b"Bearer a b",
            b"Bearer a,b",
            b"Bearer a\"b",
            b"Bearer \\",
            b"Bearer a%b",
            b"Bearer\tabc",
            b"Bearer\xc2\xa0abc",
            b"Bearer \xff\xfe",
        ] {
            assert_eq!(parse(&[bad]), Err(ParseError::Malformed), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse(&[b"Bearer a", b"Bearer b"]), Err(ParseError::Malformed));
        let long = format!("Bearer {}", "a".repeat(65));
        assert_eq!(parse(&[long.as_bytes()]), Err(ParseError::Malformed));
        let edge = format!("Bearer {}", "a".repeat(64));
        assert!(parse(&[edge.as_bytes()]).is_ok());
    }

    /// The scheme is matched by folding case with `| 0x20`: every one of the 256 byte values
    /// in every position of "bearer" matches exactly when it is that letter in either case.
    #[test]
    fn scheme_case_folding_matches_only_the_letters() {
        for position in 0..SCHEME.len() {
            for byte in 0..=255u8 {
                let mut value = b"Bearer abc".to_vec();
                value[position] = byte;
                let expected = byte.eq_ignore_ascii_case(&SCHEME[position]);
                assert_eq!(locate(&value, 64).is_ok(), expected, "byte {byte:#04x} at {position}");
            }
        }
        assert_eq!(locate(b"Beare", 64), Err(ParseError::Missing));
        assert_eq!(locate(b"", 64), Err(ParseError::Missing));
    }
}
