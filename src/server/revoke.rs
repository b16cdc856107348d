//! RFC 7009 token revocation: 200 whether or not the token was known (no existence oracle).

use http::request::Parts;
use http::{Method, Response, StatusCode};

use super::Core;
use super::audit::{AuditKind, Event};
use super::client_auth::authenticate;
use super::records::{REFRESH, REVOKED_JTI, RefreshRecord, decode};
use super::token::{Failure, failure_response, revoke_grant};
use super::web::{EndpointBody, Params, is_form, json, method_not_allowed, oauth_error};
use crate::store::crypto::{secret_hash, secure_eq};

pub(crate) async fn revoke(core: &Core, parts: &Parts, body: &[u8]) -> Response<EndpointBody> {
    if parts.method != Method::POST {
        return method_not_allowed("POST, OPTIONS");
    }
    if !is_form(&parts.headers) {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "the body must be a form");
    }
    let params = Params::parse(body);
    let client = match authenticate(core, parts, &params).await {
        Ok(c) => c,
        Err(e) => return failure_response(e.into()),
    };
    let Ok(Some(token)) = params.one("token") else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "token is required");
    };
    let result = if token.bytes().filter(|b| *b == b'.').count() == 2 {
        revoke_access_token(core, &client.client_id, token).await
    } else {
        revoke_refresh_token(core, &client.client_id, token).await
    };
    match result {
        Ok(revoked) => {
            // Only what was actually revoked (the answer is 200 either way, RFC 7009 §2.2).
            if let Some(subject) = revoked {
                let event = Event::new(AuditKind::TokenRevoked).client(&client.client_id);
                core.audit(parts, if subject.is_empty() { event } else { event.subject(&subject) });
            }
            json(StatusCode::OK, &serde_json::json!({}))
        }
        Err(f) => failure_response(f),
    }
}

/// What was revoked: `Some(subject)` (empty when unknown), `None` when nothing.
type Revoked = Result<Option<String>, Failure>;

async fn revoke_access_token(core: &Core, client_id: &str, token: &str) -> Revoked {
    let Some(claims) = super::verifier::verified_claims(core, token).await else { return Ok(None) };
    if claims.client_id() != Some(client_id) {
        return Ok(None);
    }
    let (Some(jti), Some(exp)) = (claims.claim("jti").and_then(|v| v.as_str()), claims.expires_at()) else {
        return Ok(None);
    };
    let left = u64::try_from(exp.saturating_sub(core.now())).unwrap_or(0);
    core.store(core.store.put(REVOKED_JTI, jti, vec![1], Some(std::time::Duration::from_secs(left + 60)))).await?;
    core.revocations.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    Ok(Some(claims.subject().unwrap_or_default().to_owned()))
}

async fn revoke_refresh_token(core: &Core, client_id: &str, token: &str) -> Revoked {
    let key = secret_hash(token);
    let Some(record) = core.store(core.store.get(REFRESH, &key)).await?.as_deref().and_then(decode::<RefreshRecord>)
    else {
        return Ok(None);
    };
    // Another client's token is left alone, and the answer does not tell.
    if !secure_eq(record.client_id.as_bytes(), client_id.as_bytes()) {
        return Ok(None);
    }
    core.store(core.store.delete(REFRESH, &key)).await?;
    Ok(Some(revoke_grant(core, &record.grant_id).await?.unwrap_or_default()))
}
