//! The client ID URL rules and the document model (draft-ietf-oauth-client-id-metadata-document
//! §3, §4.1, and the MCP authorization specification).

use std::fmt;
use std::net::IpAddr;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use url::{Host, Url};

use crate::verify::KeySet;

/// Longest client ID URL accepted.
pub const MAX_CLIENT_ID_LEN: usize = 2048;
const MAX_REDIRECT_URIS: usize = 20;
const MAX_NAME: usize = 256;

/// The `token_endpoint_auth_method`s a document may declare.
pub const AUTH_METHODS: [&str; 2] = ["none", "private_key_jwt"];

/// Why a client ID or its document was refused. The wording is for operators (logs, the
/// `cimd` command); clients see one generic answer whatever the cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentError(String);

impl DocumentError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }

    /// The reason, in words.
    pub fn reason(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DocumentError {}

/// Whether `client_id` looks like a URL (then it is a client ID metadata document URL, or
/// nothing: registered client IDs never contain `://`).
pub fn is_url_shaped(client_id: &str) -> bool {
    client_id.contains("://")
}

/// Checks a client ID URL before any I/O (§3): `https`, a host, a path other than `/`, no
/// query, fragment, userinfo or dot segments, and the string must be exactly its own parsed
/// serialization (which rules out default ports, upper-case hosts, numeric IP encodings,
/// backslashes, percent-encoded dots and IDN forms). An IP-literal host is accepted only if it
/// is a loopback address and `allow_loopback` is set (tests, an authorization server on
/// loopback).
pub fn check_client_id(raw: &str, allow_loopback: bool) -> Result<Url, DocumentError> {
    if raw.len() > MAX_CLIENT_ID_LEN {
        return Err(DocumentError::new("the client ID is too long"));
    }
    let url = Url::parse(raw).map_err(|_| DocumentError::new("the client ID is not a URL"))?;
    if url.scheme() != "https" {
        return Err(DocumentError::new("the client ID must be an https URL"));
    }
    if url.as_str() != raw {
        return Err(DocumentError::new(
            "the client ID is not in canonical form (default port, case, encoding or dot segments)",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(DocumentError::new("the client ID must not contain user information"));
    }
    if url.fragment().is_some() || raw.contains('#') {
        return Err(DocumentError::new("the client ID must not have a fragment"));
    }
    if url.query().is_some() || raw.contains('?') {
        return Err(DocumentError::new("the client ID must not have a query"));
    }
    let path = url.path();
    if path.is_empty() || path == "/" {
        return Err(DocumentError::new("the client ID must have a path"));
    }
    let dot = |s: &str| {
        let s = s.to_ascii_lowercase().replace("%2e", ".");
        s == "." || s == ".."
    };
    if path.split('/').any(dot) || raw.contains('\\') {
        return Err(DocumentError::new("the client ID must not contain dot segments"));
    }
    match url.host() {
        Some(Host::Domain(d)) if !d.is_empty() && !d.ends_with('.') => {}
        Some(Host::Ipv4(ip)) if allow_loopback && ip.is_loopback() => {}
        Some(Host::Ipv6(ip)) if allow_loopback && IpAddr::V6(ip).is_loopback() => {}
        Some(Host::Ipv4(_) | Host::Ipv6(_)) => {
            return Err(DocumentError::new("the client ID must name a host, not an IP address"));
        }
        _ => return Err(DocumentError::new("the client ID has no usable host")),
    }
    Ok(url)
}

/// A validated client ID metadata document: what the authorization server uses of it.
#[derive(Clone, PartialEq)]
pub struct ClientMetadataDocument {
    client_id: String,
    client_name: String,
    redirect_uris: Vec<String>,
    token_endpoint_auth_method: String,
    grant_types: Vec<String>,
    scope: Option<String>,
    jwks: Option<Value>,
    jwks_uri: Option<String>,
    client_uri: Option<String>,
}

impl fmt::Debug for ClientMetadataDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientMetadataDocument")
            .field("client_id", &self.client_id)
            .field("client_name", &self.client_name)
            .field("redirect_uris", &self.redirect_uris)
            .field("token_endpoint_auth_method", &self.token_endpoint_auth_method)
            .finish_non_exhaustive()
    }
}

fn opt_string(doc: &Map<String, Value>, name: &str) -> Result<Option<String>, DocumentError> {
    match doc.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(DocumentError::new(format!("{name} must be a string"))),
    }
}

fn opt_strings(doc: &Map<String, Value>, name: &str) -> Result<Option<Vec<String>>, DocumentError> {
    let wrong = || DocumentError::new(format!("{name} must be an array of strings"));
    match doc.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => {
            items.iter().map(|i| i.as_str().map(str::to_owned).ok_or_else(wrong)).collect::<Result<_, _>>().map(Some)
        }
        Some(_) => Err(wrong()),
    }
}

impl ClientMetadataDocument {
    /// Parses and validates the document fetched from `url` (§4.1 and MCP): a JSON object with
    /// unique members; `client_id` equal to `url` by simple string comparison; `client_name`
    /// and `redirect_uris` present; every redirect URI allowed by `redirect_uri_ok` (the
    /// server's own redirect policy); `token_endpoint_auth_method` `none` (the default) or
    /// `private_key_jwt`; no `client_secret` or `client_secret_expires_at`; `private_key_jwt`
    /// needs usable keys in `jwks` or an https `jwks_uri` (not both).
    pub fn parse(url: &str, body: &[u8], redirect_uri_ok: impl Fn(&str) -> bool) -> Result<Self, DocumentError> {
        let doc = crate::verify::claims_parse_object(body)
            .map_err(|_| DocumentError::new("the document is not a JSON object with unique members"))?;
        match doc.get("client_id") {
            Some(Value::String(id)) if id == url => {}
            Some(Value::String(_)) => {
                return Err(DocumentError::new("the document's client_id is not exactly the URL it was fetched from"));
            }
            _ => return Err(DocumentError::new("the document has no client_id")),
        }
        if doc.contains_key("client_secret") || doc.contains_key("client_secret_expires_at") {
            return Err(DocumentError::new("a client ID metadata document must not contain a client secret"));
        }
        let method = opt_string(&doc, "token_endpoint_auth_method")?.unwrap_or_else(|| "none".to_owned());
        if !AUTH_METHODS.contains(&method.as_str()) {
            return Err(DocumentError::new(format!(
                "token_endpoint_auth_method {method:?} is not allowed (only none or private_key_jwt)"
            )));
        }
        let client_name = opt_string(&doc, "client_name")?
            .filter(|n| !n.trim().is_empty())
            .ok_or_else(|| DocumentError::new("the document has no client_name"))?;
        if client_name.chars().count() > MAX_NAME {
            return Err(DocumentError::new("client_name is too long"));
        }
        let redirect_uris = opt_strings(&doc, "redirect_uris")?
            .filter(|r| !r.is_empty())
            .ok_or_else(|| DocumentError::new("the document has no redirect_uris"))?;
        if redirect_uris.len() > MAX_REDIRECT_URIS {
            return Err(DocumentError::new("too many redirect_uris"));
        }
        if let Some(bad) = redirect_uris.iter().find(|u| !redirect_uri_ok(u)) {
            return Err(DocumentError::new(format!("redirect URI {bad:?} is not allowed by this server")));
        }
        let grant_types = opt_strings(&doc, "grant_types")?
            .unwrap_or_else(|| vec!["authorization_code".to_owned(), "refresh_token".to_owned()]);
        if !grant_types.iter().any(|g| g == "authorization_code")
            || grant_types.iter().any(|g| g != "authorization_code" && g != "refresh_token")
        {
            return Err(DocumentError::new("grant_types must be authorization_code, optionally with refresh_token"));
        }
        if let Some(types) = opt_strings(&doc, "response_types")?
            && types.iter().any(|t| t != "code")
        {
            return Err(DocumentError::new("response_types must be [\"code\"]"));
        }
        let scope = opt_string(&doc, "scope")?;
        let jwks = match doc.get("jwks") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => Some(v.clone()),
            Some(_) => return Err(DocumentError::new("jwks must be a JSON Web Key Set object")),
        };
        let jwks_uri = opt_string(&doc, "jwks_uri")?;
        if jwks.is_some() && jwks_uri.is_some() {
            return Err(DocumentError::new("jwks and jwks_uri must not both be present"));
        }
        if jwks_uri.as_deref().is_some_and(|u| !crate::server::assertion::jwks_uri_ok(u)) {
            return Err(DocumentError::new("jwks_uri must be an https URL in canonical form"));
        }
        if let Some(set) = &jwks {
            let keys =
                KeySet::from_jwks_json(&set.to_string()).map_err(|e| DocumentError::new(format!("jwks: {e}")))?;
            if keys.is_empty() && method == "private_key_jwt" {
                return Err(DocumentError::new("jwks holds no usable signature key"));
            }
        }
        if method == "private_key_jwt" && jwks.is_none() && jwks_uri.is_none() {
            return Err(DocumentError::new("private_key_jwt needs jwks or jwks_uri"));
        }
        let client_uri = opt_string(&doc, "client_uri")?;
        Ok(Self {
            client_id: url.to_owned(),
            client_name,
            redirect_uris,
            token_endpoint_auth_method: method,
            grant_types,
            scope,
            jwks,
            jwks_uri,
            client_uri,
        })
    }

    /// The client ID (the document's URL).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The name the client gives itself.
    pub fn client_name(&self) -> &str {
        &self.client_name
    }

    /// The redirect URIs.
    pub fn redirect_uris(&self) -> &[String] {
        &self.redirect_uris
    }

    /// `none` or `private_key_jwt`.
    pub fn token_endpoint_auth_method(&self) -> &str {
        &self.token_endpoint_auth_method
    }

    /// The grant types (`authorization_code`, maybe `refresh_token`).
    pub fn grant_types(&self) -> &[String] {
        &self.grant_types
    }

    /// The `scope` the client declares, if any.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// The inline key set, if any.
    pub fn jwks(&self) -> Option<&Value> {
        self.jwks.as_ref()
    }

    /// The key set URL, if any.
    pub fn jwks_uri(&self) -> Option<&str> {
        self.jwks_uri.as_deref()
    }

    /// The client's home page, if declared (shown as text, never fetched).
    pub fn client_uri(&self) -> Option<&str> {
        self.client_uri.as_deref()
    }

    /// The host of the client ID: the domain that vouches for the document.
    pub fn domain(&self) -> &str {
        host_of(&self.client_id)
    }

    /// Whether every redirect URI points at this computer (loopback): then any local program
    /// can claim to be this client.
    pub fn localhost_only(&self) -> bool {
        self.redirect_uris.iter().all(|u| Url::parse(u).is_ok_and(|u| crate::resource::is_loopback(&u)))
    }

    /// A fingerprint of what matters for security (redirect URIs, authentication method,
    /// keys, name): when it changes, remembered consent no longer applies (§6.3).
    pub fn fingerprint(&self) -> String {
        let material = serde_json::json!([
            self.client_id,
            self.client_name,
            self.redirect_uris,
            self.token_endpoint_auth_method,
            self.grant_types,
            self.jwks,
            self.jwks_uri,
        ]);
        let digest = Sha256::digest(material.to_string().as_bytes());
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, digest)
    }

    /// The members the server uses, as JSON.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "client_id": self.client_id,
            "client_name": self.client_name,
            "redirect_uris": self.redirect_uris,
            "token_endpoint_auth_method": self.token_endpoint_auth_method,
            "grant_types": self.grant_types,
            "scope": self.scope,
            "jwks": self.jwks,
            "jwks_uri": self.jwks_uri,
            "client_uri": self.client_uri,
        })
    }
}

fn host_of(url: &str) -> &str {
    let rest = url.strip_prefix("https://").unwrap_or(url);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    &rest[..end]
}

/// A starting point for a document: what `cimd create` writes.
pub fn template(client_id: &str, client_name: &str, redirect_uris: &[String]) -> Value {
    serde_json::json!({
        "client_id": client_id,
        "client_name": client_name,
        "redirect_uris": redirect_uris,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_redirect(u: &str) -> bool {
        crate::server::redirect_uri_ok(u)
    }

    #[test]
    fn i01_i02_client_id_shapes() {
        assert!(check_client_id("https://client.example/app.json", false).is_ok());
        assert!(check_client_id("https://client.example:8443/a/b", false).is_ok());
        for bad in [
            "http://client.example/client.json",
            "https://client.example",
            "https://client.example/",
            "https://client.example/c#frag",
            "https://client.example/c#",
            "https://u:p@client.example/c",
            "https://u@client.example/c",
            "https://client.example/./c",
            "https://client.example/a/../c",
            "https://client.example/a/%2e%2e/c",
            "https://client.example/a/%2E/c",
            "https://client.example/c?q=1",
            "https://client.example/c?",
            "https://Client.Example/c",
            "https://client.example:443/c",
            "https://client.example\\c",
            "https://bücher.example/c",
            "https://xn--bcher-kva.example./c",
            "https://127.0.0.1/c",
            "https://2130706433/c",
            "https://0x7f000001/c",
            "https://0177.0.0.1/c",
            "https://127.1/c",
            "https://[::ffff:7f00:1]/c",
            "https://[::1]/c",
            " https://client.example/c",
            "https:client.example/c",
            "https:///c",
            "ftp://client.example/c",
        ] {
            assert!(check_client_id(bad, false).is_err(), "{bad}");
        }
        assert!(check_client_id("https://127.0.0.1:8443/c", true).is_ok());
        assert!(check_client_id("https://10.0.0.1/c", true).is_err());
        assert!(check_client_id(&format!("https://c.example/{}", "a".repeat(3000)), false).is_err());
    }

    const URL: &str = "https://client.example/app.json";

    fn doc(patch: Value) -> Vec<u8> {
        let mut base = template(URL, "Example", &["http://127.0.0.1:33418/callback".to_owned()]);
        if let (Value::Object(b), Value::Object(p)) = (&mut base, patch) {
            for (k, v) in p {
                if v.is_null() {
                    b.remove(&k);
                } else {
                    b.insert(k, v);
                }
            }
        }
        serde_json::to_vec(&base).unwrap_or_default()
    }

    #[test]
    fn valid_document() {
        let d = ClientMetadataDocument::parse(URL, &doc(serde_json::json!({})), ok_redirect).unwrap();
        assert_eq!(d.client_id(), URL);
        assert_eq!(d.domain(), "client.example");
        assert!(d.localhost_only());
        assert_eq!(d.token_endpoint_auth_method(), "none");
    }

    #[test]
    fn i11_client_id_must_match_exactly() {
        for other in [
            "https://client.example/app.json/",
            "https://CLIENT.example/app.json",
            "https://client.example:443/app.json",
            "https://client.example/other.json",
        ] {
            let body = doc(serde_json::json!({ "client_id": other }));
            assert!(ClientMetadataDocument::parse(URL, &body, ok_redirect).is_err(), "{other}");
        }
        let body = doc(serde_json::json!({ "client_id": null }));
        assert!(ClientMetadataDocument::parse(URL, &body, ok_redirect).is_err());
    }

    #[test]
    fn i12_malformed_json() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let dup = format!(
            r#"{{"client_id":"https://evil.example/x","client_id":"{URL}","client_name":"a","redirect_uris":["https://a.example/cb"]}}"#
        );
        let bom = [&b"\xEF\xBB\xBF"[..], &doc(serde_json::json!({}))].concat();
        for body in [&b"{"[..], b"not json", deep.as_bytes(), dup.as_bytes(), b"[]", b"\"x\"", b"null", &bom] {
            assert!(ClientMetadataDocument::parse(URL, body, ok_redirect).is_err());
        }
        let nested = format!(r#"{{"client_id":"{URL}","x":{}1{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
        assert!(ClientMetadataDocument::parse(URL, nested.as_bytes(), ok_redirect).is_err());
    }

    #[test]
    fn i13_shared_secrets_refused() {
        for patch in [
            serde_json::json!({ "token_endpoint_auth_method": "client_secret_basic" }),
            serde_json::json!({ "token_endpoint_auth_method": "client_secret_post" }),
            serde_json::json!({ "token_endpoint_auth_method": "client_secret_jwt" }),
            serde_json::json!({ "client_secret": "s3cret" }),
            serde_json::json!({ "client_secret_expires_at": 0 }),
        ] {
            assert!(ClientMetadataDocument::parse(URL, &doc(patch.clone()), ok_redirect).is_err(), "{patch}");
        }
    }

    #[test]
    fn i14_required_members() {
        for patch in [
            serde_json::json!({ "redirect_uris": null }),
            serde_json::json!({ "redirect_uris": [] }),
            serde_json::json!({ "client_name": null }),
            serde_json::json!({ "client_name": "  " }),
            serde_json::json!({ "redirect_uris": ["http://evil.example/cb"] }),
            serde_json::json!({ "redirect_uris": ["javascript:alert(1)"] }),
            serde_json::json!({ "grant_types": ["client_credentials"] }),
            serde_json::json!({ "response_types": ["token"] }),
            serde_json::json!({ "token_endpoint_auth_method": "private_key_jwt" }),
            serde_json::json!({ "token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "http://k.example/j" }),
            serde_json::json!({ "token_endpoint_auth_method": "private_key_jwt", "jwks": { "keys": [] } }),
        ] {
            assert!(ClientMetadataDocument::parse(URL, &doc(patch.clone()), ok_redirect).is_err(), "{patch}");
        }
    }

    #[test]
    fn fingerprint_follows_security_relevant_changes() {
        let a = ClientMetadataDocument::parse(URL, &doc(serde_json::json!({})), ok_redirect).unwrap();
        let b = ClientMetadataDocument::parse(
            URL,
            &doc(serde_json::json!({ "redirect_uris": ["https://app.example/cb"] })),
            ok_redirect,
        )
        .unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert!(!b.localhost_only());
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
    }
}
