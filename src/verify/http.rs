//! The HTTP client behind JWKS, discovery and introspection fetches: total deadline, response
//! size cap enforced while streaming, no redirects, no proxy from the environment.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http::header::CACHE_CONTROL;
use url::Url;

use crate::error::{ConfigError, ConfigErrorKind};
use crate::resource::is_loopback;

/// Options for outbound fetches.
#[derive(Debug, Clone)]
pub(crate) struct HttpOptions {
    pub(crate) timeout: Duration,
    pub(crate) max_bytes: usize,
    pub(crate) extra_roots: Vec<Vec<u8>>,
    pub(crate) allow_http: bool,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(5), max_bytes: 256 * 1024, extra_roots: Vec::new(), allow_http: false }
    }
}

#[derive(Clone)]
pub(crate) struct HttpClient {
    client: reqwest::Client,
    max_bytes: usize,
    allow_http: bool,
}

/// Why a fetch failed. Never shown to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FetchError {
    /// The server answered with a status other than 200 (redirects included).
    Status(u16),
    /// The body was larger than the cap.
    TooLarge,
    /// Timeout, connection or TLS failure.
    Transport,
    /// The URL's scheme is not allowed.
    Insecure,
}

impl FetchError {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Status(s) if (300..400).contains(&s) => "redirect refused",
            Self::Status(_) => "unexpected status",
            Self::TooLarge => "response too large",
            Self::Transport => "transport error or timeout",
            Self::Insecure => "URL scheme not allowed",
        }
    }
}

pub(crate) struct Fetched {
    pub(crate) body: Bytes,
    pub(crate) headers: HeaderMap,
}

/// An answer of any status (see [`HttpClient::post_form_any_status`]).
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Bytes,
}

impl HttpClient {
    pub(crate) fn new(opts: &HttpOptions) -> Result<Self, ConfigError> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(opts.timeout)
            .connect_timeout(opts.timeout)
            .user_agent(concat!("tower-mcp-auth/", env!("CARGO_PKG_VERSION")));
        for pem in &opts.extra_roots {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| ConfigError::new(ConfigErrorKind::InvalidKey, format!("root certificate: {e}")))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client =
            builder.build().map_err(|e| ConfigError::new(ConfigErrorKind::Invalid, format!("HTTP client: {e}")))?;
        Ok(Self { client, max_bytes: opts.max_bytes, allow_http: opts.allow_http })
    }

    /// Whether fetching `url` is allowed: https, or http to a loopback host (or any host when
    /// explicitly allowed).
    pub(crate) fn url_allowed(&self, url: &Url) -> bool {
        url_allowed(url, self.allow_http)
    }

    pub(crate) async fn get(&self, url: &Url) -> Result<Fetched, FetchError> {
        if !self.url_allowed(url) {
            return Err(FetchError::Insecure);
        }
        let req = self.client.get(url.clone()).header(http::header::ACCEPT, "application/json");
        self.send(req).await
    }

    /// A GET with `Authorization: Bearer` (e.g. an OpenID Connect userinfo request), JSON
    /// accepted. Only a 200 answer is a success.
    pub(crate) async fn get_with_bearer(&self, url: &Url, token: &str) -> Result<Fetched, FetchError> {
        if !self.url_allowed(url) {
            return Err(FetchError::Insecure);
        }
        // `bearer_auth` marks the header value sensitive.
        let req = self.client.get(url.clone()).header(http::header::ACCEPT, "application/json").bearer_auth(token);
        self.send(req).await
    }

    pub(crate) async fn post_form(
        &self,
        url: &Url,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Result<Fetched, FetchError> {
        let req = self.form_request(url, form, basic)?;
        self.send(req).await
    }

    /// Like [`post_form`](Self::post_form), but any status is an answer (with its capped
    /// body), so that callers can read OAuth error responses. Redirects are still not
    /// followed: a 3xx is returned as such.
    pub(crate) async fn post_form_any_status(
        &self,
        url: &Url,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Result<Answer, FetchError> {
        let req = self.form_request(url, form, basic)?;
        let res = req.send().await.map_err(|_| FetchError::Transport)?;
        let status = res.status().as_u16();
        let body = self.read_capped(res).await?;
        Ok(Answer { status, body })
    }

    fn form_request(
        &self,
        url: &Url,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Result<reqwest::RequestBuilder, FetchError> {
        if !self.url_allowed(url) {
            return Err(FetchError::Insecure);
        }
        let body = serde_urlencoded::to_string(form).map_err(|_| FetchError::Transport)?;
        let mut req = self
            .client
            .post(url.clone())
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        if let Some((user, pass)) = basic {
            // RFC 6749 §2.3.1: form-urlencode the id and secret before Basic encoding.
            let enc = |s: &str| serde_urlencoded::to_string([("", s)]).map(|v| v[1..].to_owned());
            let (Ok(u), Ok(p)) = (enc(user), enc(pass)) else { return Err(FetchError::Transport) };
            req = req.basic_auth(u, Some(p));
        }
        Ok(req)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Fetched, FetchError> {
        let res = req.send().await.map_err(|_| FetchError::Transport)?;
        let status = res.status().as_u16();
        if status != 200 {
            return Err(FetchError::Status(status));
        }
        let headers = res.headers().clone();
        let body = self.read_capped(res).await?;
        Ok(Fetched { body, headers })
    }

    /// Reads the body, failing as soon as it exceeds the cap.
    async fn read_capped(&self, mut res: reqwest::Response) -> Result<Bytes, FetchError> {
        if res.content_length().is_some_and(|n| n > self.max_bytes as u64) {
            return Err(FetchError::TooLarge);
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = res.chunk().await.map_err(|_| FetchError::Transport)? {
            if body.len() + chunk.len() > self.max_bytes {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }
}

pub(crate) fn url_allowed(url: &Url, allow_http: bool) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => allow_http || is_loopback(url),
        _ => false,
    }
}

/// `max-age` of a `Cache-Control` header; `no-store` / `no-cache` count as zero.
pub(crate) fn max_age(headers: &HeaderMap) -> Option<Duration> {
    let mut out = None;
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',') {
            let directive = directive.trim();
            let (name, arg) = directive.split_once('=').map_or((directive, None), |(n, a)| (n.trim(), Some(a.trim())));
            if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
                return Some(Duration::ZERO);
            }
            if name.eq_ignore_ascii_case("max-age")
                && let Some(secs) = arg.map(|a| a.trim_matches('"')).and_then(|a| a.parse::<u64>().ok())
            {
                out = Some(Duration::from_secs(secs));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn cache_control() {
        let mut h = HeaderMap::new();
        assert_eq!(max_age(&h), None);
        h.insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=600"));
        assert_eq!(max_age(&h), Some(Duration::from_secs(600)));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=600, no-store"));
        assert_eq!(max_age(&h), Some(Duration::ZERO));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=x"));
        assert_eq!(max_age(&h), None);
    }
}
