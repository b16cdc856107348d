//! RFC 8414 authorization server metadata (and its OpenID Connect discovery alias) and the
//! JWKS of the keys that sign issued tokens.

use http::request::Parts;
use http::{HeaderValue, Method, Response, StatusCode};
use serde_json::{Value, json};

use super::Core;
use super::web::{EndpointBody, method_not_allowed};

pub(crate) fn document(core: &Core, openid: bool) -> Value {
    let url = |p: &str| core.url(p);
    let auth_methods = if core.cimd.is_some() {
        json!(["none", "client_secret_basic", "client_secret_post", "private_key_jwt"])
    } else {
        json!(["none", "client_secret_basic", "client_secret_post"])
    };
    let mut doc = json!({
        "issuer": core.issuer,
        "authorization_endpoint": url(&core.paths.authorize),
        "token_endpoint": url(&core.paths.token),
        "revocation_endpoint": url(&core.paths.revoke),
        "jwks_uri": url(&core.paths.jwks),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "scopes_supported": core.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "authorization_response_iss_parameter_supported": true,
        "client_id_metadata_document_supported": core.cimd.is_some(),
    });
    if core.cimd.is_some() {
        let algs: Vec<&str> = super::assertion::ALGORITHMS.iter().map(|a| a.as_str()).collect();
        doc["token_endpoint_auth_signing_alg_values_supported"] = json!(algs);
        doc["revocation_endpoint_auth_signing_alg_values_supported"] = json!(algs);
    }
    if core.registration {
        doc["registration_endpoint"] = Value::String(url(&core.paths.register));
    }
    if openid {
        // Required members of an OpenID Provider document. This server issues no ID tokens;
        // the values describe its signing keys.
        doc["subject_types_supported"] = json!(["public"]);
        doc["id_token_signing_alg_values_supported"] = json!(["ES256"]);
    }
    doc
}

fn json_public(body: String, max_age: &'static str) -> Response<EndpointBody> {
    let mut res = Response::new(EndpointBody::new(body.into()));
    res.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res.headers_mut().insert(http::header::CACHE_CONTROL, HeaderValue::from_static(max_age));
    res
}

pub(crate) fn metadata(core: &Core, parts: &Parts) -> Response<EndpointBody> {
    if parts.method != Method::GET && parts.method != Method::HEAD {
        return method_not_allowed("GET, HEAD, OPTIONS");
    }
    let openid = parts.uri.path().contains("/openid-configuration");
    let mut res = json_public(document(core, openid).to_string(), "public, max-age=300");
    if parts.method == Method::HEAD {
        *res.body_mut() = EndpointBody::default();
    }
    res
}

pub(crate) fn jwks(core: &Core, parts: &Parts) -> Response<EndpointBody> {
    if parts.method != Method::GET && parts.method != Method::HEAD {
        return method_not_allowed("GET, HEAD, OPTIONS");
    }
    let body = String::from_utf8_lossy(&core.keys.jwks()).into_owned();
    let mut res = json_public(body, "public, max-age=300");
    if parts.method == Method::HEAD {
        *res.body_mut() = EndpointBody::default();
    }
    *res.status_mut() = StatusCode::OK;
    res
}
