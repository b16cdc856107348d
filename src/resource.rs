//! The protected resource: its canonical URL, where its metadata lives, which authorization
//! servers it trusts and which scopes it knows. One [`ProtectedResource`] is shared by every
//! layer of a stack, so challenges and metadata always agree.
//!
//! All URLs come from configuration, never from the request's `Host` or `X-Forwarded-*`
//! headers (RFC 9728 §7, host-header injection).
//!
//! ```
//! use tower_mcp_auth::ProtectedResource;
//!
//! let resource = ProtectedResource::builder("https://MCP.example.com/mcp/")
//!     .authorization_server("https://auth.example.com")
//!     .scopes_supported(["mcp:read", "mcp:admin"])
//!     .challenge_scopes(["mcp:read"])
//!     .build()
//!     .unwrap();
//! // Scheme and host lower-cased, trailing slash removed.
//! assert_eq!(resource.resource(), "https://mcp.example.com/mcp");
//! assert_eq!(
//!     resource.metadata_url(),
//!     "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
//! );
//! assert_eq!(
//!     resource.missing_token_challenge().to_str().unwrap(),
//!     r#"Bearer scope="mcp:read", resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp""#
//! );
//! ```

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;
use serde_json::{Map, Value, json};
use url::{Host, Url};

use crate::challenge::{BearerError, Challenge};
use crate::error::{ConfigError, ConfigErrorKind};
use crate::scope::Scope;

/// The well-known path prefix of RFC 9728.
pub const WELL_KNOWN_PREFIX: &str = "/.well-known/oauth-protected-resource";

/// A protected resource (RFC 9728), shared by the layers and the metadata service.
#[derive(Clone)]
pub struct ProtectedResource(Arc<Inner>);

struct Inner {
    resource: String,
    metadata_url: String,
    metadata_paths: Vec<String>,
    authorization_servers: Vec<String>,
    scopes_supported: Vec<Scope>,
    challenge_scopes: Vec<Scope>,
    metadata_document: Bytes,
    missing: HeaderValue,
    invalid_token: HeaderValue,
    invalid_request: HeaderValue,
}

impl ProtectedResource {
    /// Starts the configuration of the resource whose canonical URL is `resource` (the MCP
    /// endpoint, e.g. `https://mcp.example.com/mcp`).
    pub fn builder(resource: impl Into<String>) -> ProtectedResourceBuilder {
        ProtectedResourceBuilder {
            resource: resource.into(),
            authorization_servers: Vec::new(),
            scopes_supported: Vec::new(),
            challenge_scopes: None,
            resource_name: None,
            serve_root: None,
            insecure_http: false,
            extra: Map::new(),
        }
    }

    /// The canonical resource URL (the `resource` of the metadata, the audience tokens must
    /// carry).
    pub fn resource(&self) -> &str {
        &self.0.resource
    }

    /// The absolute URL of the metadata document (path-inserted form), as sent in
    /// `resource_metadata`.
    pub fn metadata_url(&self) -> &str {
        &self.0.metadata_url
    }

    /// The paths at which the metadata document is served: the path-inserted form first, and
    /// the root form when the resource sits at `/` or root serving was requested.
    pub fn metadata_paths(&self) -> impl Iterator<Item = &str> {
        self.0.metadata_paths.iter().map(String::as_str)
    }

    /// The trusted authorization servers (issuer identifiers, verbatim).
    pub fn authorization_servers(&self) -> &[String] {
        &self.0.authorization_servers
    }

    /// The scopes listed in the metadata.
    pub fn scopes_supported(&self) -> &[Scope] {
        &self.0.scopes_supported
    }

    /// The scopes named in 401 challenges.
    pub fn challenge_scopes(&self) -> &[Scope] {
        &self.0.challenge_scopes
    }

    /// The metadata document (JSON).
    pub fn metadata_document(&self) -> &Bytes {
        &self.0.metadata_document
    }

    /// `WWW-Authenticate` for a request without credentials: no `error` (RFC 6750 §3.1).
    pub fn missing_token_challenge(&self) -> &HeaderValue {
        &self.0.missing
    }

    /// `WWW-Authenticate` for a rejected token (`error="invalid_token"`).
    pub fn invalid_token_challenge(&self) -> &HeaderValue {
        &self.0.invalid_token
    }

    /// `WWW-Authenticate` for a malformed request (`error="invalid_request"`).
    pub fn invalid_request_challenge(&self) -> &HeaderValue {
        &self.0.invalid_request
    }

    /// A `403 insufficient_scope` challenge naming `scopes`.
    pub fn insufficient_scope_challenge<'a, I>(&self, scopes: I) -> HeaderValue
    where
        I: IntoIterator<Item = &'a Scope>,
    {
        self.challenge().error(BearerError::InsufficientScope).scope(scopes).to_header_value()
    }

    fn challenge(&self) -> Challenge {
        // The metadata URL was checked at build time, so this cannot fail; fall back to a bare
        // challenge rather than panic.
        Challenge::bearer().resource_metadata(&self.0.metadata_url).unwrap_or_else(|_| Challenge::bearer())
    }
}

impl fmt::Debug for ProtectedResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtectedResource")
            .field("resource", &self.0.resource)
            .field("metadata_url", &self.0.metadata_url)
            .field("authorization_servers", &self.0.authorization_servers)
            .field("scopes_supported", &self.0.scopes_supported)
            .finish()
    }
}

/// Builds a [`ProtectedResource`].
#[derive(Debug, Clone)]
pub struct ProtectedResourceBuilder {
    resource: String,
    authorization_servers: Vec<String>,
    scopes_supported: Vec<String>,
    challenge_scopes: Option<Vec<String>>,
    resource_name: Option<String>,
    serve_root: Option<bool>,
    insecure_http: bool,
    extra: Map<String, Value>,
}

impl ProtectedResourceBuilder {
    /// Adds a trusted authorization server by its issuer identifier (written to the metadata
    /// verbatim: it must be byte-identical to the server's own `issuer`). At least one is
    /// required.
    pub fn authorization_server(mut self, issuer: impl Into<String>) -> Self {
        self.authorization_servers.push(issuer.into());
        self
    }

    /// The scopes the resource understands (`scopes_supported`). `offline_access` is refused:
    /// MCP 2026-07-28 says resource servers should not advertise it.
    pub fn scopes_supported<I, T>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.scopes_supported = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// The scopes named in 401 challenges (default: all of `scopes_supported`).
    pub fn challenge_scopes<I, T>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.challenge_scopes = Some(scopes.into_iter().map(Into::into).collect());
        self
    }

    /// A human-readable name (`resource_name`).
    pub fn resource_name(mut self, name: impl Into<String>) -> Self {
        self.resource_name = Some(name.into());
        self
    }

    /// Also serve the metadata at the root well-known path
    /// (`/.well-known/oauth-protected-resource`), for origins that host a single resource.
    /// Always on when the resource itself is at `/`.
    pub fn serve_root_metadata(mut self, yes: bool) -> Self {
        self.serve_root = Some(yes);
        self
    }

    /// Adds another metadata field (e.g. `resource_documentation`). The fields this builder
    /// manages cannot be overridden.
    pub fn metadata_field(mut self, name: impl Into<String>, value: Value) -> Self {
        self.extra.insert(name.into(), value);
        self
    }

    /// Allows plain-`http` URLs on non-loopback hosts. Only for deployments where TLS is
    /// terminated elsewhere and the public URL really is `http`; never in production.
    pub fn insecure_allow_http(mut self) -> Self {
        self.insecure_http = true;
        self
    }

    /// Validates and freezes the configuration.
    pub fn build(self) -> Result<ProtectedResource, ConfigError> {
        let url = parse_absolute(&self.resource, "resource", self.insecure_http)?;
        if url.query().is_some() {
            return Err(ConfigError::new(ConfigErrorKind::InvalidUrl, "resource URL must not have a query"));
        }
        let origin = url.origin().ascii_serialization();
        let path = url.path().trim_end_matches('/');
        let resource = format!("{origin}{path}");
        let metadata_path = format!("{WELL_KNOWN_PREFIX}{path}");
        let metadata_url = format!("{origin}{metadata_path}");
        let mut metadata_paths = vec![metadata_path];
        if !path.is_empty() && self.serve_root.unwrap_or(false) {
            metadata_paths.push(WELL_KNOWN_PREFIX.to_owned());
        }

        if self.authorization_servers.is_empty() {
            return Err(ConfigError::new(
                ConfigErrorKind::Missing,
                "at least one authorization server is required (MCP: authorization_servers must not be empty)",
            ));
        }
        for issuer in &self.authorization_servers {
            parse_absolute(issuer, "authorization server", self.insecure_http)?;
        }

        let scopes_supported = scopes(&self.scopes_supported)?;
        let challenge_scopes = match &self.challenge_scopes {
            Some(s) => scopes(s)?,
            None => scopes_supported.clone(),
        };

        let mut doc = Map::new();
        for (k, v) in self.extra {
            doc.insert(k, v);
        }
        doc.insert("resource".into(), json!(resource));
        doc.insert("authorization_servers".into(), json!(self.authorization_servers));
        if !scopes_supported.is_empty() {
            doc.insert("scopes_supported".into(), json!(scopes_supported));
        }
        doc.insert("bearer_methods_supported".into(), json!(["header"]));
        if let Some(name) = self.resource_name {
            doc.insert("resource_name".into(), json!(name));
        }
        let metadata_document = Bytes::from(
            serde_json::to_vec(&Value::Object(doc))
                .map_err(|e| ConfigError::new(ConfigErrorKind::Invalid, format!("metadata: {e}")))?,
        );

        let base = Challenge::bearer().resource_metadata(&metadata_url).map_err(|_| {
            ConfigError::new(ConfigErrorKind::InvalidUrl, "metadata URL has characters not allowed in a challenge")
        })?;
        let missing = base.clone().scope(challenge_scopes.iter()).to_header_value();
        let invalid_token =
            base.clone().error(BearerError::InvalidToken).scope(challenge_scopes.iter()).to_header_value();
        let invalid_request = base.error(BearerError::InvalidRequest).to_header_value();

        Ok(ProtectedResource(Arc::new(Inner {
            resource,
            metadata_url,
            metadata_paths,
            authorization_servers: self.authorization_servers,
            scopes_supported,
            challenge_scopes,
            metadata_document,
            missing,
            invalid_token,
            invalid_request,
        })))
    }
}

fn scopes(list: &[String]) -> Result<Vec<Scope>, ConfigError> {
    let mut out: Vec<Scope> = Vec::with_capacity(list.len());
    for s in list {
        let scope = Scope::new(s)
            .map_err(|_| ConfigError::new(ConfigErrorKind::InvalidScope, format!("invalid scope {s:?}")))?;
        if scope == "offline_access" {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidScope,
                "offline_access must not be advertised by a resource server (MCP 2026-07-28)",
            ));
        }
        if !out.contains(&scope) {
            out.push(scope);
        }
    }
    Ok(out)
}

/// Parses an absolute http(s) URL without fragment or userinfo; `http` only for loopback
/// hosts unless `insecure_http`.
pub(crate) fn parse_absolute(raw: &str, what: &str, insecure_http: bool) -> Result<Url, ConfigError> {
    let url = Url::parse(raw)
        .map_err(|e| ConfigError::new(ConfigErrorKind::InvalidUrl, format!("{what} URL {raw:?}: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if insecure_http || is_loopback(&url) => {}
        "http" => {
            return Err(ConfigError::new(
                ConfigErrorKind::InsecureUrl,
                format!("{what} URL {raw:?} must use https (http is allowed for loopback hosts only)"),
            ));
        }
        _ => {
            return Err(ConfigError::new(ConfigErrorKind::InvalidUrl, format!("{what} URL {raw:?} must be http(s)")));
        }
    }
    if url.host().is_none() || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::new(
            ConfigErrorKind::InvalidUrl,
            format!("{what} URL {raw:?} must have a host and no fragment or userinfo"),
        ));
    }
    Ok(url)
}

/// Whether the URL's host is a loopback address or `localhost`.
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(url: &str) -> Result<ProtectedResource, ConfigError> {
        ProtectedResource::builder(url).authorization_server("https://as.example").build()
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(build("HTTPS://MCP.Example.COM:443/mcp").unwrap().resource(), "https://mcp.example.com/mcp");
        let root = build("https://mcp.example.com/").unwrap();
        assert_eq!(root.resource(), "https://mcp.example.com");
        assert_eq!(root.metadata_url(), "https://mcp.example.com/.well-known/oauth-protected-resource");
        assert_eq!(root.metadata_paths().collect::<Vec<_>>(), ["/.well-known/oauth-protected-resource"]);
        let port = build("http://127.0.0.1:8080/a/mcp").unwrap();
        assert_eq!(port.metadata_url(), "http://127.0.0.1:8080/.well-known/oauth-protected-resource/a/mcp");
    }

    #[test]
    fn refuses_bad_config() {
        assert_eq!(build("http://mcp.example.com/mcp").unwrap_err().kind(), ConfigErrorKind::InsecureUrl);
        assert!(build("https://mcp.example.com/mcp#x").is_err());
        assert!(build("https://mcp.example.com/mcp?x=1").is_err());
        assert!(build("https://u:p@mcp.example.com/mcp").is_err());
        assert!(build("mcp").is_err());
        assert!(ProtectedResource::builder("https://x/mcp").build().is_err());
        let offline = ProtectedResource::builder("https://x/mcp")
            .authorization_server("https://as")
            .scopes_supported(["mcp:read", "offline_access"])
            .build();
        assert_eq!(offline.unwrap_err().kind(), ConfigErrorKind::InvalidScope);
    }

    #[test]
    fn metadata_document() {
        let r = ProtectedResource::builder("https://x.example/mcp")
            .authorization_server("https://as.example/tenant")
            .scopes_supported(["mcp:read"])
            .metadata_field("resource", json!("https://evil"))
            .serve_root_metadata(true)
            .build()
            .unwrap();
        let doc: Value = serde_json::from_slice(r.metadata_document()).unwrap();
        assert_eq!(doc["resource"], "https://x.example/mcp");
        assert_eq!(doc["authorization_servers"], json!(["https://as.example/tenant"]));
        assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
        assert_eq!(doc["scopes_supported"], json!(["mcp:read"]));
        assert_eq!(r.metadata_paths().count(), 2);
    }
}
