//! RFC 7591 dynamic client registration (deprecated by MCP 2026-07-28 in favour of client ID
//! metadata documents, but what every SDK client still uses).

use http::request::Parts;
use http::{Method, Response, StatusCode};
use serde_json::{Map, Value, json};
use url::Url;

use super::Core;
use super::audit::{AuditKind, Event};
use super::records::{CLIENTS, ClientKind, ClientRecord, encode};
use super::web::{EndpointBody, is_json, json as json_response, method_not_allowed, oauth_error};
use crate::store::crypto::{random_token, secret_hash};
use crate::verify::claims_parse_object;

const MAX_REDIRECT_URIS: usize = 10;
const MAX_URI: usize = 2048;
const MAX_NAME: usize = 256;
const ECHOED: [&str; 8] =
    ["client_uri", "logo_uri", "tos_uri", "policy_uri", "software_id", "software_version", "contacts", "jwks_uri"];

fn metadata_error(description: &'static str) -> Response<EndpointBody> {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_client_metadata", description)
}

fn redirect_error(description: &'static str) -> Response<EndpointBody> {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_redirect_uri", description)
}

/// Whether a redirect URI may be registered: absolute, no fragment or wildcard, exactly its
/// own parsed form; `https`, `http` to a loopback host, or a private-use scheme with a dot
/// (RFC 8252 §7.1).
pub(crate) fn redirect_uri_ok(raw: &str) -> bool {
    if raw.len() > MAX_URI || raw.contains('*') {
        return false;
    }
    let Ok(url) = Url::parse(raw) else { return false };
    if url.as_str() != raw || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return false;
    }
    match url.scheme() {
        "https" => url.host().is_some(),
        "http" => crate::resource::is_loopback(&url),
        "javascript" | "data" | "file" | "ftp" | "ws" | "wss" | "blob" | "about" | "vbscript" => false,
        scheme => scheme.contains('.'),
    }
}

fn string_list(v: Option<&Value>) -> Result<Option<Vec<String>>, ()> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => {
            items.iter().map(|i| i.as_str().map(str::to_owned).ok_or(())).collect::<Result<_, _>>().map(Some)
        }
        Some(_) => Err(()),
    }
}

fn opt_str(v: Option<&Value>) -> Result<Option<String>, ()> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(()),
    }
}

/// Who a registration is from, for its rate limit: the client name and the host of the first
/// redirect URI (`None` when the body has neither).
pub(crate) fn claimed_identity(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Claimed {
        client_name: Option<String>,
        redirect_uris: Option<Vec<String>>,
    }
    let claimed: Claimed = serde_json::from_slice(body).ok()?;
    let host = claimed
        .redirect_uris
        .as_deref()
        .and_then(<[String]>::first)
        .and_then(|u| Url::parse(u).ok())
        .map(|u| format!("{}://{}", u.scheme(), u.host_str().unwrap_or_default()));
    if claimed.client_name.is_none() && host.is_none() {
        return None;
    }
    Some(format!("{}\n{}", claimed.client_name.unwrap_or_default(), host.unwrap_or_default()))
}

pub(crate) async fn register(core: &Core, parts: &Parts, body: &[u8]) -> Response<EndpointBody> {
    if !core.registration {
        return super::web::status(StatusCode::NOT_FOUND);
    }
    if parts.method != Method::POST {
        return method_not_allowed("POST, OPTIONS");
    }
    if !is_json(&parts.headers) {
        return metadata_error("the body must be JSON");
    }
    let Ok(meta) = claims_parse_object(body) else {
        return metadata_error("the body is not a JSON object with unique members");
    };

    let Ok(Some(redirect_uris)) = string_list(meta.get("redirect_uris")) else {
        return redirect_error("redirect_uris is required");
    };
    if redirect_uris.is_empty() || redirect_uris.len() > MAX_REDIRECT_URIS {
        return metadata_error("between 1 and 10 redirect_uris are required");
    }
    if redirect_uris.iter().any(|u| u.len() > MAX_URI) {
        return metadata_error("a redirect URI is too long");
    }
    if !redirect_uris.iter().all(|u| redirect_uri_ok(u)) {
        return redirect_error(
            "a redirect URI is not allowed (https, loopback http, or a private-use scheme with a dot)",
        );
    }
    let auth_method = match opt_str(meta.get("token_endpoint_auth_method")) {
        Ok(None) => "client_secret_basic".to_owned(),
        Ok(Some(m)) if ["none", "client_secret_basic", "client_secret_post"].contains(&m.as_str()) => m,
        // Offered (and advertised) with the fetcher that client key sets need.
        Ok(Some(m)) if m == "private_key_jwt" && core.cimd.is_some() => m,
        _ => {
            return metadata_error(
                "token_endpoint_auth_method must be none, client_secret_basic, client_secret_post or \
                 private_key_jwt (when offered)",
            );
        }
    };
    let (jwks, jwks_uri) = match client_keys(&meta, &auth_method) {
        Ok(k) => k,
        Err(description) => return metadata_error(description),
    };
    let grant_types = match string_list(meta.get("grant_types")) {
        Ok(None) => vec!["authorization_code".to_owned()],
        Ok(Some(g))
            if g.iter().all(|t| t == "authorization_code" || t == "refresh_token")
                && g.iter().any(|t| t == "authorization_code") =>
        {
            g
        }
        _ => return metadata_error("grant_types may only be authorization_code and refresh_token"),
    };
    let response_types = match string_list(meta.get("response_types")) {
        Ok(None) => vec!["code".to_owned()],
        Ok(Some(r)) if r.iter().all(|t| t == "code") && !r.is_empty() => r,
        _ => return metadata_error("response_types may only be code"),
    };
    let Ok(client_name) = opt_str(meta.get("client_name")) else {
        return metadata_error("client_name must be a string");
    };
    if client_name.as_ref().is_some_and(|n| n.chars().count() > MAX_NAME) {
        return metadata_error("client_name is too long");
    }
    let Ok(scope) = opt_str(meta.get("scope")) else { return metadata_error("scope must be a string") };
    let application_type = match opt_str(meta.get("application_type")) {
        Ok(None) => None,
        Ok(Some(t)) if t == "native" || t == "web" => Some(t),
        _ => return metadata_error("application_type must be native or web"),
    };
    let mut extra = Map::new();
    for name in ECHOED {
        if let Some(v) = meta.get(name) {
            if v.to_string().len() > MAX_URI {
                return metadata_error("a metadata value is too long");
            }
            extra.insert(name.to_owned(), v.clone());
        }
    }

    // Server-generated identifiers only (RFC 9700 §2.6); never URL-shaped (CIMD coexistence).
    let client_id = random_token();
    let secret = auth_method.starts_with("client_secret").then(random_token);
    let now = core.now();
    let record = ClientRecord {
        client_id: client_id.clone(),
        kind: ClientKind::Dynamic,
        secret_hash: secret.as_deref().map(secret_hash),
        token_endpoint_auth_method: auth_method.clone(),
        redirect_uris: redirect_uris.clone(),
        grant_types: grant_types.clone(),
        response_types: response_types.clone(),
        client_name: client_name.clone(),
        scope: scope.clone(),
        application_type: application_type.clone(),
        extra: extra.clone(),
        issued_at: now,
        used: false,
        jwks: jwks.clone(),
        jwks_uri,
        version: None,
    };
    if core
        .store(core.store.put(CLIENTS, &client_id, encode(&record), Some(core.lifetimes.unused_client)))
        .await
        .is_err()
    {
        return super::web::unavailable();
    }
    core.audit(parts, Event::new(AuditKind::ClientRegistered).client(&client_id));
    let mut response = json!({
        "client_id": client_id,
        "client_id_issued_at": now,
        "redirect_uris": redirect_uris,
        "token_endpoint_auth_method": auth_method,
        "grant_types": grant_types,
        "response_types": response_types,
    });
    if let Some(obj) = response.as_object_mut() {
        if let Some(s) = secret {
            obj.insert("client_secret".into(), Value::String(s));
            obj.insert("client_secret_expires_at".into(), json!(0));
        }
        for (k, v) in [("client_name", client_name), ("scope", scope), ("application_type", application_type)] {
            if let Some(v) = v {
                obj.insert(k.into(), Value::String(v));
            }
        }
        obj.extend(extra);
        if let Some(jwks) = jwks {
            obj.insert("jwks".into(), jwks);
        }
    }
    json_response(StatusCode::CREATED, &response)
}

/// The public keys of a `private_key_jwt` client: `jwks` (usable signature keys) or an https
/// `jwks_uri`, exactly one; other clients may not register keys.
fn client_keys(meta: &Map<String, Value>, method: &str) -> Result<(Option<Value>, Option<String>), &'static str> {
    let jwks = meta.get("jwks").filter(|v| !v.is_null());
    let Ok(jwks_uri) = opt_str(meta.get("jwks_uri")) else { return Err("jwks_uri must be a string") };
    if method != "private_key_jwt" {
        return if jwks.is_some() { Err("jwks is only for private_key_jwt clients") } else { Ok((None, None)) };
    }
    match (jwks, jwks_uri) {
        (Some(set @ Value::Object(_)), None) => match crate::verify::KeySet::from_jwks_json(&set.to_string()) {
            Ok(keys) if !keys.is_empty() && set.to_string().len() <= 16 * 1024 => Ok((Some(set.clone()), None)),
            _ => Err("jwks must hold usable public signature keys"),
        },
        (None, Some(uri)) if uri.len() <= MAX_URI && super::assertion::jwks_uri_ok(&uri) => Ok((None, Some(uri))),
        (None, Some(_)) => Err("jwks_uri must be an https URL"),
        _ => Err("private_key_jwt needs exactly one of jwks and jwks_uri"),
    }
}

#[cfg(test)]
mod tests {
    use super::redirect_uri_ok;

    #[test]
    fn h01_redirect_uri_policy() {
        for ok in [
            "https://app.example/cb",
            "http://127.0.0.1:3000/cb",
            "http://localhost:8080/callback",
            "http://[::1]:9/cb",
            "com.example.app:/oauth",
        ] {
            assert!(redirect_uri_ok(ok), "{ok}");
        }
        for bad in [
            "javascript:alert(1)",
            "data:text/html,x",
            "file:///etc/passwd",
            "http://evil.example/cb",
            "https://*.example/cb",
            "https://app.example/cb#frag",
            "/relative/cb",
            "myapp:cb",
            "https://app.example/a/../cb",
            "https://u:p@app.example/cb",
        ] {
            assert!(!redirect_uri_ok(bad), "{bad}");
        }
    }
}
