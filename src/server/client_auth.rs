//! Client authentication at the token and revocation endpoints: `none` (public clients with
//! PKCE), `client_secret_basic`, `client_secret_post`, `private_key_jwt`; one method per request.

use base64::Engine;
use http::HeaderMap;
use http::header::AUTHORIZATION;
use http::request::Parts;

use super::Core;
use super::assertion;
use super::records::ClientRecord;
use super::web::Params;
use crate::store::crypto::{secret_hash, secure_eq};

pub(crate) enum AuthError {
    /// 400 `invalid_request` (two methods, duplicated parameters).
    InvalidRequest(&'static str),
    /// 401 `invalid_client`; `basic` when the client tried HTTP Basic (then the answer carries
    /// `WWW-Authenticate: Basic`).
    InvalidClient { basic: bool },
    /// The store failed.
    Unavailable,
}

/// A hash compared when the client is unknown, so unknown and known clients take the same
/// path (no enumeration by timing).
const DUMMY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

fn form_decode(s: &str) -> Option<String> {
    // RFC 6749 §2.3.1: the id and secret are form-encoded inside Basic credentials.
    let decoded: Vec<(String, String)> = url::form_urlencoded::parse(format!("v={s}").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    match decoded.as_slice() {
        [(k, v)] if k == "v" => Some(v.clone()),
        _ => None,
    }
}

pub(crate) fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(AuthError::InvalidRequest("several Authorization headers"));
    }
    let bad = AuthError::InvalidClient { basic: true };
    let value = value.to_str().map_err(|_| AuthError::InvalidClient { basic: true })?;
    let Some((scheme, rest)) = value.split_once(' ') else { return Err(bad) };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(AuthError::InvalidClient { basic: false });
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .map_err(|_| AuthError::InvalidClient { basic: true })?;
    let raw = String::from_utf8(raw).map_err(|_| AuthError::InvalidClient { basic: true })?;
    let Some((id, secret)) = raw.split_once(':') else { return Err(AuthError::InvalidClient { basic: true }) };
    let (Some(id), Some(secret)) = (form_decode(id), form_decode(secret)) else {
        return Err(AuthError::InvalidClient { basic: true });
    };
    if id.is_empty() {
        return Err(AuthError::InvalidClient { basic: true });
    }
    Ok(Some((id, secret)))
}

/// Authenticates (confidential) or identifies (public) the client of a request.
pub(crate) async fn authenticate(core: &Core, parts: &Parts, params: &Params) -> Result<ClientRecord, AuthError> {
    let headers = &parts.headers;
    let dup = |_| AuthError::InvalidRequest("a parameter is repeated");
    let basic = basic_credentials(headers)?;
    let post_secret = params.one("client_secret").map_err(dup)?;
    let assertion = params.has("client_assertion") || params.has("client_assertion_type");
    let methods = usize::from(basic.is_some()) + usize::from(post_secret.is_some()) + usize::from(assertion);
    if methods > 1 {
        return Err(AuthError::InvalidRequest("more than one client authentication method"));
    }
    let form_id = params.one("client_id").map_err(dup)?;
    if assertion {
        return authenticate_assertion(core, parts, params, form_id).await;
    }
    let (client_id, secret, method) = match (&basic, form_id) {
        (Some((id, _)), Some(f)) if f != id => return Err(AuthError::InvalidRequest("client_id differs")),
        (Some((id, s)), _) => (id.as_str(), Some(s.as_str()), "client_secret_basic"),
        (None, Some(id)) => (id, post_secret, if post_secret.is_some() { "client_secret_post" } else { "none" }),
        (None, None) => return Err(AuthError::InvalidClient { basic: false }),
    };
    let is_basic = basic.is_some();
    let record = core.client(&parts.extensions, client_id).await.map_err(|_| AuthError::Unavailable)?;
    let Some(client) = record else {
        // Same work as a secret check, then the same answer as a wrong secret.
        let _ = secure_eq(secret_hash(secret.unwrap_or("")).as_bytes(), DUMMY.as_bytes());
        return Err(AuthError::InvalidClient { basic: is_basic });
    };
    match (&client.secret_hash, secret) {
        (Some(expected), Some(given)) if client.token_endpoint_auth_method == method => {
            if secure_eq(secret_hash(given).as_bytes(), expected.as_bytes()) {
                Ok(client)
            } else {
                Err(AuthError::InvalidClient { basic: is_basic })
            }
        }
        // A client that declared private_key_jwt must always authenticate with it.
        (None, None) if client.is_public() => Ok(client),
        _ => {
            let _ = secure_eq(secret_hash(secret.unwrap_or("")).as_bytes(), DUMMY.as_bytes());
            Err(AuthError::InvalidClient { basic: is_basic })
        }
    }
}

/// `private_key_jwt`: the assertion names the client (`sub`); `client_id`, if given, must
/// agree.
async fn authenticate_assertion(
    core: &Core,
    parts: &Parts,
    params: &Params,
    form_id: Option<&str>,
) -> Result<ClientRecord, AuthError> {
    let dup = |_| AuthError::InvalidRequest("a parameter is repeated");
    match params.one("client_assertion_type").map_err(dup)? {
        Some(assertion::JWT_BEARER) => {}
        _ => return Err(AuthError::InvalidRequest("client_assertion_type must be jwt-bearer")),
    }
    let Some(token) = params.one("client_assertion").map_err(dup)? else {
        return Err(AuthError::InvalidRequest("client_assertion is missing"));
    };
    let Some(claimed) = assertion::claimed_client(token) else { return Err(AuthError::InvalidClient { basic: false }) };
    if form_id.is_some_and(|id| id != claimed) {
        return Err(AuthError::InvalidClient { basic: false });
    }
    let client = core.client(&parts.extensions, &claimed).await.map_err(|_| AuthError::Unavailable)?;
    let Some(client) = client.filter(|c| c.token_endpoint_auth_method == "private_key_jwt") else {
        return Err(AuthError::InvalidClient { basic: false });
    };
    match assertion::verify(core, &client, token).await {
        Ok(()) => Ok(client),
        Err(assertion::Refused::Unavailable) => Err(AuthError::Unavailable),
        Err(assertion::Refused::Invalid(why)) => {
            tracing::info!(client_id = %client.client_id, reason = why, "client assertion refused");
            Err(AuthError::InvalidClient { basic: false })
        }
    }
}
