//! Request parsing and response building shared by the endpoints.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::Value;

/// Response body of every endpoint.
pub type EndpointBody = Full<Bytes>;

/// Largest request body an endpoint reads.
pub(crate) const MAX_BODY: usize = 64 * 1024;

pub(crate) enum BodyError {
    TooLarge,
    Unreadable,
}

pub(crate) async fn read_body<B>(body: B) -> Result<Bytes, BodyError>
where
    B: Body<Data = Bytes> + Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::Unreadable),
    }
}

/// Parameters of a query string or form body, every value of every name kept.
#[derive(Debug, Default)]
pub(crate) struct Params(BTreeMap<String, Vec<String>>);

/// A parameter given twice.
#[derive(Debug)]
pub(crate) struct Duplicate;

impl Params {
    pub(crate) fn parse(input: &[u8]) -> Self {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in url::form_urlencoded::parse(input) {
            map.entry(k.into_owned()).or_default().push(v.into_owned());
        }
        Self(map)
    }

    /// The single value of `name`; an empty value counts as absent (OAuth 2.1 §3.1); a name
    /// given twice is an error.
    pub(crate) fn one(&self, name: &str) -> Result<Option<&str>, Duplicate> {
        match self.0.get(name).map(Vec::as_slice) {
            None | Some([]) => Ok(None),
            Some([v]) => Ok((!v.is_empty()).then_some(v.as_str())),
            Some(_) => Err(Duplicate),
        }
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.0.get(name).is_some_and(|v| v.iter().any(|s| !s.is_empty()))
    }
}

fn no_store(h: &mut HeaderMap) {
    h.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(http::header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// A JSON response; `Cache-Control: no-store` (credentials may be in it).
pub(crate) fn json(status: StatusCode, value: &Value) -> Response<EndpointBody> {
    let mut res = Response::new(Full::new(Bytes::from(value.to_string())));
    *res.status_mut() = status;
    res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    no_store(res.headers_mut());
    res
}

/// An RFC 6749 §5.2 error. `description` is fixed text, never request data.
pub(crate) fn oauth_error(
    status: StatusCode,
    error: &'static str,
    description: &'static str,
) -> Response<EndpointBody> {
    let mut res = json(status, &serde_json::json!({ "error": error, "error_description": description }));
    super::audit::Refusal::attach(&mut res, error, description);
    res
}

/// 503 with a JSON error, for store or upstream outages.
pub(crate) fn unavailable() -> Response<EndpointBody> {
    let mut res = oauth_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "the service is temporarily unavailable",
    );
    res.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from_static("5"));
    res
}

/// 429 with `Retry-After`: an error page for browser endpoints, a JSON error otherwise.
pub(crate) fn too_many_requests(page: bool, retry_after_secs: u64) -> Response<EndpointBody> {
    let mut res = if page {
        super::pages::error(StatusCode::TOO_MANY_REQUESTS, "Too many requests", "Too many requests: try again later.")
    } else {
        oauth_error(StatusCode::TOO_MANY_REQUESTS, "invalid_request", "too many requests")
    };
    if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
        res.headers_mut().insert(http::header::RETRY_AFTER, v);
    }
    super::audit::Refusal::attach(&mut res, "rate_limited", "too many requests");
    res
}

pub(crate) fn status(status: StatusCode) -> Response<EndpointBody> {
    let mut res = Response::new(Full::default());
    *res.status_mut() = status;
    res
}

pub(crate) fn method_not_allowed(allow: &'static str) -> Response<EndpointBody> {
    let mut res = status(StatusCode::METHOD_NOT_ALLOWED);
    res.headers_mut().insert(http::header::ALLOW, HeaderValue::from_static(allow));
    super::audit::Refusal::attach(&mut res, "method_not_allowed", allow);
    res
}

/// A redirect. `303 See Other` after a form POST (never 307, RFC 9700 §4.12), `302` otherwise.
pub(crate) fn redirect(location: &str, after_post: bool) -> Response<EndpointBody> {
    let mut res = status(if after_post { StatusCode::SEE_OTHER } else { StatusCode::FOUND });
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(http::header::LOCATION, v);
    }
    no_store(res.headers_mut());
    res.headers_mut().insert(http::header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    res
}

/// CORS for the endpoints browser-based clients call directly (metadata, JWKS, token,
/// registration, revocation; never the authorization endpoint).
pub(crate) fn allow_cors(res: &mut Response<EndpointBody>) {
    let h = res.headers_mut();
    h.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(http::header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("www-authenticate"));
}

pub(crate) fn preflight(methods: &'static str) -> Response<EndpointBody> {
    let mut res = status(StatusCode::NO_CONTENT);
    allow_cors(&mut res);
    let h = res.headers_mut();
    h.insert(http::header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(methods));
    h.insert(
        http::header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type, mcp-protocol-version"),
    );
    h.insert(http::header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    res
}

pub(crate) fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
}

pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// The value of cookie `name`, if sent exactly once.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut found = None;
    for value in headers.get_all(http::header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for c in cookie::Cookie::split_parse(value).flatten() {
            if c.name() == name {
                if found.is_some() {
                    return None;
                }
                found = Some(c.value().to_owned());
            }
        }
    }
    found
}

/// `__Host-` cookie: `Secure; HttpOnly; SameSite=Lax; Path=/`, no `Domain`.
pub(crate) fn set_cookie(res: &mut Response<EndpointBody>, name: &str, value: &str, max_age: time_like::Secs) {
    let c = cookie::Cookie::build((name.to_owned(), value.to_owned()))
        .secure(true)
        .http_only(true)
        .same_site(cookie::SameSite::Lax)
        .path("/")
        .max_age(cookie::time::Duration::seconds(max_age.0))
        .build();
    if let Ok(v) = HeaderValue::from_str(&c.to_string()) {
        res.headers_mut().append(http::header::SET_COOKIE, v);
    }
}

pub(crate) mod time_like {
    /// Seconds, for cookie lifetimes.
    #[derive(Clone, Copy)]
    pub(crate) struct Secs(pub(crate) i64);
}

/// `Origin` and `Sec-Fetch-Site` say the request came from another site.
pub(crate) fn cross_site(headers: &HeaderMap, own_origin: &str) -> bool {
    if headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("cross-site"))
    {
        return true;
    }
    match headers.get(http::header::ORIGIN).map(|v| v.to_str()) {
        None => false,
        Some(Ok(o)) => !o.eq_ignore_ascii_case(own_origin),
        Some(Err(_)) => true,
    }
}
