//! The HTML pages of the authorization server, rendered with askama (every value escaped),
//! served with headers that forbid framing, caching and referrers, and load nothing from
//! anywhere.

use askama::Template;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::web::EndpointBody;

#[derive(Template)]
#[template(path = "error.html")]
pub(crate) struct ErrorPage<'a> {
    pub(crate) title: &'a str,
    pub(crate) message: &'a str,
}

#[derive(Template)]
#[template(path = "consent.html")]
pub(crate) struct ConsentPage<'a> {
    pub(crate) resource: &'a str,
    pub(crate) client_name: &'a str,
    pub(crate) unverified: bool,
    /// The host that publishes the client's metadata document (empty for registered clients).
    pub(crate) client_domain: &'a str,
    /// Whether that host is on the operator's allow list.
    pub(crate) trusted_domain: bool,
    pub(crate) client_id: &'a str,
    pub(crate) redirect_uri: &'a str,
    pub(crate) redirect_host: &'a str,
    pub(crate) localhost_only: bool,
    pub(crate) scopes: &'a [String],
    pub(crate) upstream_name: &'a str,
    pub(crate) upstream_scopes: &'a [String],
    pub(crate) action: &'a str,
    pub(crate) request: &'a str,
    pub(crate) csrf: &'a str,
}

#[derive(Template)]
#[template(path = "dev_login.html")]
pub(crate) struct DevLoginPage<'a> {
    pub(crate) user: &'a str,
    pub(crate) action: &'a str,
    pub(crate) state: &'a str,
    pub(crate) nonce: &'a str,
    pub(crate) code_challenge: &'a str,
}

#[derive(Template)]
#[template(path = "interstitial.html")]
pub(crate) struct InterstitialPage<'a> {
    pub(crate) message: &'a str,
    pub(crate) redirect_host: &'a str,
    pub(crate) location: &'a str,
}

/// Content-Security-Policy of every page: nothing external, no framing.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'";

/// Renders `page` with the security headers.
pub(crate) fn html<T: Template>(status: StatusCode, page: &T) -> Response<EndpointBody> {
    let body = page.render().unwrap_or_else(|_| String::from("<!doctype html><title>Error</title><p>Error</p>"));
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(http::header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    res
}

/// An error page with fixed text.
pub(crate) fn error(status: StatusCode, title: &str, message: &str) -> Response<EndpointBody> {
    let mut res = html(status, &ErrorPage { title, message });
    let code = match status {
        StatusCode::FORBIDDEN => "access_denied",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        s if s.is_server_error() => "temporarily_unavailable",
        _ => "invalid_request",
    };
    // The page's own fixed text (never request data) is the description.
    super::audit::Refusal::attach(&mut res, code, message.to_owned());
    res
}

/// Adds the page security headers to a non-HTML response of a page endpoint (redirects).
pub(crate) fn page_headers(res: &mut Response<EndpointBody>) {
    let h = res.headers_mut();
    h.insert(http::header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}
