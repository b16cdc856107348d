//! Keeping credentials out of logs (SECURITY-CATALOGUE L01).
//!
//! - [`redact_uri`]: a request URI fit for a log line. OAuth puts secrets in query strings
//!   (`code`, `state`, and worse when clients misbehave), so every query value is replaced by
//!   `[redacted]` except those of a short list of names known to be harmless (`client_id`,
//!   `redirect_uri`, `scope`, …): an unknown parameter is redacted, not printed.
//! - [`mark_sensitive`]: marks `Authorization`, `Proxy-Authorization`, `Cookie` and
//!   `Set-Cookie` values sensitive, so that a `Debug` print of the headers (by this crate, a
//!   tracing layer or an error report) shows `Sensitive` instead of the value. The
//!   authorization server's endpoints do this to every request and response they see, and
//!   the bearer layers to a header they forward.
//!
//! With tower-http's `TraceLayer`, log the redacted URI instead of the raw one:
//!
//! ```
//! use tower_mcp_auth::redact::redact_uri;
//!
//! let uri: http::Uri = "/callback?code=SplxlOBeZQQYbYS6WxSbIA&state=af0ifjsldkj&iss=https%3A%2F%2Fidp.example".parse().unwrap();
//! assert_eq!(redact_uri(&uri), "/callback?code=[redacted]&state=[redacted]&iss=https%3A%2F%2Fidp.example");
//!
//! // let trace = tower_http::trace::TraceLayer::new_for_http().make_span_with(|req: &http::Request<_>| {
//! //     tracing::debug_span!("request", method = %req.method(), uri = %redact_uri(req.uri()))
//! // });
//! ```

use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION, SET_COOKIE};

/// Query parameters whose values [`redact_uri`] keeps: identifiers and protocol choices, never
/// credentials.
pub const KEPT_PARAMETERS: [&str; 14] = [
    "client_id",
    "redirect_uri",
    "response_type",
    "response_mode",
    "scope",
    "resource",
    "code_challenge_method",
    "prompt",
    "grant_type",
    "token_type_hint",
    "error",
    "error_description",
    "iss",
    "audience",
];

/// What replaces a redacted value.
pub const REDACTED: &str = "[redacted]";

/// The path and query of `uri` with every query value redacted except those of
/// [`KEPT_PARAMETERS`] (names compared after percent-decoding, so `co%64e` is `code`). Scheme
/// and authority are left out: no userinfo either.
pub fn redact_uri(uri: &http::Uri) -> String {
    let path = uri.path();
    let Some(query) = uri.query() else { return path.to_owned() };
    let mut out = String::with_capacity(path.len() + query.len() + 1);
    out.push_str(path);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let (raw_name, value) = match pair.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (pair, None),
        };
        let name: String = url::form_urlencoded::parse(raw_name.as_bytes()).map(|(k, _)| k).collect();
        // A name that decodes to something else than it reads is printed redacted too.
        let kept = KEPT_PARAMETERS.contains(&name.as_str()) && name == raw_name;
        out.push_str(if kept || is_plain(raw_name) { raw_name } else { REDACTED });
        match value {
            Some(v) if kept => {
                out.push('=');
                out.push_str(v);
            }
            Some(_) => {
                out.push('=');
                out.push_str(REDACTED);
            }
            None => {}
        }
    }
    out
}

/// Letters, digits, `_`, `-`, `.`: a name that cannot hide anything.
fn is_plain(name: &str) -> bool {
    name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// Marks the credential headers of `headers` sensitive (their `Debug` form hides the value).
pub fn mark_sensitive(headers: &mut HeaderMap) {
    for name in [AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE, SET_COOKIE] {
        if let http::header::Entry::Occupied(mut entry) = headers.entry(name) {
            for value in entry.iter_mut() {
                value.set_sensitive(true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> String {
        redact_uri(&s.parse().unwrap())
    }

    #[test]
    fn l01_secrets_in_queries_are_redacted_and_unknown_names_too() {
        assert_eq!(r("/authorize"), "/authorize");
        assert_eq!(
            r("/authorize?response_type=code&client_id=abc&state=xyz&code_challenge=ch&scope=mcp%3Aread"),
            "/authorize?response_type=code&client_id=abc&state=[redacted]&code_challenge=[redacted]&scope=mcp%3Aread"
        );
        assert_eq!(
            r("/callback?code=c0de&state=s&iss=https%3A%2F%2Fi"),
            "/callback?code=[redacted]&state=[redacted]&iss=https%3A%2F%2Fi"
        );
        // Encoded names are decoded before the check, and not printed as they came.
        assert_eq!(r("/cb?co%64e=secret&client%5Fid=x"), "/cb?[redacted]=[redacted]&[redacted]=[redacted]");
        // Unknown or misplaced credentials.
        assert_eq!(
            r("/x?access_token=t&refresh_token=r&client_secret=s&foo=bar&novalue&=v&a=1=2"),
            "/x?access_token=[redacted]&refresh_token=[redacted]&client_secret=[redacted]&foo=[redacted]&novalue&=[redacted]&a=[redacted]"
        );
        assert_eq!(r("https://user:pw@host.example/p?code=1"), "/p?code=[redacted]");
    }

    #[test]
    fn credential_headers_become_sensitive() {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, "Bearer secret-token".parse().unwrap());
        h.append(COOKIE, "a=secret-cookie".parse().unwrap());
        h.append(COOKIE, "b=another".parse().unwrap());
        h.insert("x-other", "visible".parse().unwrap());
        mark_sensitive(&mut h);
        let printed = format!("{h:?}");
        assert!(
            !printed.contains("secret-token") && !printed.contains("secret-cookie") && !printed.contains("another")
        );
        assert!(printed.contains("visible"));
        assert!(h.get_all(COOKIE).iter().all(http::HeaderValue::is_sensitive));
    }
}
