//! `private_key_jwt` client authentication (RFC 7523 §2.2 and §3, OpenID Connect Core §9,
//! draft-ietf-oauth-rfc7523bis): a JWT signed with the client's key, single use.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::Core;
use super::records::{ClientRecord, USED_ASSERTIONS};
use crate::store::crypto::secret_hash;
use crate::verify::{Algorithm, KeySet};

/// The only `client_assertion_type` accepted.
pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Longest assertion lifetime accepted (`exp` − now, and `exp` − `iat`).
const MAX_LIFETIME: i64 = 300;
/// Clock skew allowed.
const LEEWAY: i64 = 30;
/// Longest assertion read.
const MAX_ASSERTION: usize = 16 * 1024;
/// Signature algorithms accepted for client keys.
pub(crate) const ALGORITHMS: [Algorithm; 6] =
    [Algorithm::ES256, Algorithm::ES384, Algorithm::EdDSA, Algorithm::RS256, Algorithm::PS256, Algorithm::PS384];

/// Whether `uri` may be a client's `jwks_uri`: an https URL, exactly its own parsed form,
/// without user information.
pub(crate) fn jwks_uri_ok(uri: &str) -> bool {
    url::Url::parse(uri).is_ok_and(|u| u.scheme() == "https" && u.as_str() == uri && u.username().is_empty())
}

/// Why an assertion was refused (logged, never shown: the client gets `invalid_client`).
#[derive(Debug)]
pub(crate) enum Refused {
    Invalid(&'static str),
    Unavailable,
}

fn invalid(why: &'static str) -> Refused {
    Refused::Invalid(why)
}

/// The `sub` (= `iss`) an assertion claims, unverified: which client to look up.
pub(crate) fn claimed_client(assertion: &str) -> Option<String> {
    let payload = assertion.split('.').nth(1)?;
    let bytes = crate::verify::keys_b64_decode(payload)?;
    let claims = crate::verify::claims_parse_object(&bytes).ok()?;
    claims.get("sub")?.as_str().map(str::to_owned)
}

/// Verifies `assertion` as `client`'s authentication at this server and records its `jti`.
pub(crate) async fn verify(core: &Core, client: &ClientRecord, assertion: &str) -> Result<(), Refused> {
    if assertion.len() > MAX_ASSERTION {
        return Err(invalid("assertion too long"));
    }
    let jws = crate::verify::jws_split(assertion).map_err(|_| invalid("not a compact JWS"))?;
    let header_bytes = crate::verify::keys_b64_decode(jws.header).ok_or(invalid("header encoding"))?;
    let header = crate::verify::claims_parse_object(&header_bytes).map_err(|_| invalid("header"))?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(Algorithm::from_name)
        .filter(|a| ALGORITHMS.contains(a))
        .ok_or(invalid("algorithm not allowed"))?;
    if ["crit", "b64", "cty", "enc", "zip", "jku", "x5u", "jwk"].iter().any(|h| header.contains_key(*h)) {
        return Err(invalid("header member not allowed"));
    }
    // Explicit typing: an access token or other typed JWT is not a client assertion.
    match header.get("typ") {
        None => {}
        Some(Value::String(t))
            if t.eq_ignore_ascii_case("JWT")
                || t.eq_ignore_ascii_case("client-authentication+jwt")
                || t.eq_ignore_ascii_case("application/client-authentication+jwt") => {}
        Some(_) => return Err(invalid("typ")),
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.as_str()),
        Some(_) => return Err(invalid("kid")),
    };

    // Keys: inline, or from the jwks_uri (one refetch for an unknown kid).
    let keys = client_keys(core, client, false).await?;
    let found = match keys.lookup(kid, alg) {
        crate::verify::KeyLookup::Found(k) => k.verify(jws.signing_input.as_bytes(), jws.signature),
        crate::verify::KeyLookup::UnknownKid if client.jwks_uri.is_some() => {
            let keys = client_keys(core, client, true).await?;
            match keys.lookup(kid, alg) {
                crate::verify::KeyLookup::Found(k) => k.verify(jws.signing_input.as_bytes(), jws.signature),
                _ => false,
            }
        }
        _ => false,
    };
    if !found {
        return Err(invalid("signature"));
    }

    let payload = crate::verify::keys_b64_decode(jws.payload).ok_or(invalid("payload encoding"))?;
    let claims = crate::verify::claims_parse_object(&payload).map_err(|_| invalid("claims"))?;
    check_claims(core, client, &claims).await
}

async fn client_keys(core: &Core, client: &ClientRecord, refresh: bool) -> Result<Arc<KeySet>, Refused> {
    if let Some(jwks) = &client.jwks {
        return KeySet::from_jwks_json(&jwks.to_string()).map(Arc::new).map_err(|_| invalid("client keys"));
    }
    let (Some(uri), Some(cimd)) = (&client.jwks_uri, &core.cimd) else { return Err(invalid("client has no keys")) };
    cimd.client_keys(uri, refresh).await.map_err(|e| {
        tracing::info!(client_id = %client.client_id, reason = %e, "client keys unavailable");
        invalid("client keys unavailable")
    })
}

fn string<'a>(claims: &'a Map<String, Value>, name: &'static str) -> Result<&'a str, Refused> {
    match claims.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        _ => Err(invalid(name)),
    }
}

fn date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, Refused> {
    crate::verify::claims_optional_date(claims, name).map_err(|_| invalid(name))
}

async fn check_claims(core: &Core, client: &ClientRecord, claims: &Map<String, Value>) -> Result<(), Refused> {
    let now = core.now();
    if string(claims, "iss")? != client.client_id || string(claims, "sub")? != client.client_id {
        return Err(invalid("iss and sub must be the client ID"));
    }
    // The audience is this server: its issuer identifier, or (older practice) its token
    // endpoint; one value only (RFC 7523bis).
    let token_endpoint = core.url(&core.paths.token);
    let aud_ok = |a: &str| a == core.issuer || a == token_endpoint;
    match claims.get("aud") {
        Some(Value::String(a)) if aud_ok(a) => {}
        Some(Value::Array(list)) if list.len() == 1 && list[0].as_str().is_some_and(aud_ok) => {}
        _ => return Err(invalid("aud")),
    }
    let exp = date(claims, "exp")?.ok_or(invalid("exp"))?;
    if exp <= now - LEEWAY {
        return Err(invalid("expired"));
    }
    if exp > now + MAX_LIFETIME + LEEWAY {
        return Err(invalid("lifetime too long"));
    }
    if let Some(iat) = date(claims, "iat")? {
        if iat > now + LEEWAY {
            return Err(invalid("issued in the future"));
        }
        if exp - iat > MAX_LIFETIME + LEEWAY {
            return Err(invalid("lifetime too long"));
        }
    }
    if date(claims, "nbf")?.is_some_and(|nbf| nbf > now + LEEWAY) {
        return Err(invalid("not yet valid"));
    }
    let jti = string(claims, "jti")?;
    if jti.len() > 256 {
        return Err(invalid("jti too long"));
    }
    // Single use, across instances: the first to record the jti wins.
    let ttl = std::time::Duration::from_secs(u64::try_from(exp - now + LEEWAY).unwrap_or(0).max(1));
    let key = secret_hash(&format!("{}\n{}", client.client_id, jti));
    match core.store(core.store.insert_if_absent(USED_ASSERTIONS, &key, b"1".to_vec(), Some(ttl))).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(invalid("assertion replayed")),
        Err(_) => Err(Refused::Unavailable),
    }
}
