//! The token endpoint: `authorization_code` with PKCE, and `refresh_token` with rotation and
//! reuse detection (a rotated refresh token presented again revokes the whole grant).

use base64::Engine;
use http::request::Parts;
use http::{HeaderValue, Method, Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::Core;
use super::audit::{AuditKind, Event};
use super::client_auth::{AuthError, authenticate};
use super::records::{
    CLIENTS, CODES, ClientRecord, CodeRecord, GRANTS, GrantRecord, REFRESH, RefreshRecord, UPSTREAM_TOKENS, USED_CODES,
    USED_REFRESH, UsedCodeRecord, decode, encode,
};
use super::web::{EndpointBody, Params, is_form, json as json_response, method_not_allowed, oauth_error, unavailable};
use crate::store::StoreError;
use crate::store::crypto::{random_token, secret_hash, secure_eq};
use crate::verify::claims_resource_eq;

pub(crate) enum Failure {
    Oauth(StatusCode, &'static str, &'static str),
    InvalidClient { basic: bool },
    Unavailable,
}

impl From<StoreError> for Failure {
    fn from(_: StoreError) -> Self {
        Failure::Unavailable
    }
}

fn bad_request(error: &'static str, description: &'static str) -> Failure {
    Failure::Oauth(StatusCode::BAD_REQUEST, error, description)
}

impl From<AuthError> for Failure {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::InvalidRequest(d) => bad_request("invalid_request", d),
            AuthError::InvalidClient { basic } => Failure::InvalidClient { basic },
            AuthError::Unavailable => Failure::Unavailable,
        }
    }
}

pub(crate) fn failure_response(f: Failure) -> Response<EndpointBody> {
    match f {
        Failure::Oauth(status, error, description) => oauth_error(status, error, description),
        Failure::InvalidClient { basic } => {
            let mut res = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed");
            if basic {
                res.headers_mut()
                    .insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"token\""));
            }
            res
        }
        Failure::Unavailable => unavailable(),
    }
}

pub(crate) async fn token(core: &Core, parts: &Parts, body: &[u8]) -> Response<EndpointBody> {
    if parts.method != Method::POST {
        return method_not_allowed("POST, OPTIONS");
    }
    if !is_form(&parts.headers) {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "the body must be a form");
    }
    let params = Params::parse(body);
    match grant(core, parts, &params).await {
        Ok(value) => json_response(StatusCode::OK, &value),
        Err(f) => failure_response(f),
    }
}

async fn grant(core: &Core, parts: &Parts, params: &Params) -> Result<Value, Failure> {
    let dup = |_| bad_request("invalid_request", "a parameter is repeated");
    let grant_type = params.one("grant_type").map_err(dup)?;
    let client = authenticate(core, parts, params).await?;
    match grant_type {
        Some("authorization_code") => code_grant(core, parts, &client, params).await,
        Some("refresh_token") => refresh_grant(core, parts, &client, params).await,
        Some(_) => {
            Err(bad_request("unsupported_grant_type", "only authorization_code and refresh_token are supported"))
        }
        None => Err(bad_request("invalid_request", "grant_type is required")),
    }
}

/// RFC 7636 §4.1: 43 to 128 characters of [A-Za-z0-9-._~].
fn verifier_well_formed(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len()) && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    verifier_well_formed(verifier) && secure_eq(computed.as_bytes(), challenge.as_bytes())
}

fn check_resource(core: &Core, params: &Params, granted: &str) -> Result<(), Failure> {
    let dup = |_| bad_request("invalid_request", "a parameter is repeated");
    match params.one("resource").map_err(dup)? {
        Some(r) if !claims_resource_eq(granted, r) || !claims_resource_eq(core.resource.resource(), r) => {
            Err(bad_request("invalid_target", "the resource is not the one authorized"))
        }
        _ => Ok(()),
    }
}

async fn code_grant(core: &Core, parts: &Parts, client: &ClientRecord, params: &Params) -> Result<Value, Failure> {
    let dup = |_| bad_request("invalid_request", "a parameter is repeated");
    let code = params.one("code").map_err(dup)?.ok_or_else(|| bad_request("invalid_request", "code is required"))?;
    let key = secret_hash(code);
    let invalid_grant = || bad_request("invalid_grant", "the code is invalid, expired or already used");
    let verifier = params.one("code_verifier").map_err(dup)?;
    if verifier.is_some_and(|v| !verifier_well_formed(v)) {
        return Err(bad_request("invalid_request", "code_verifier is malformed"));
    }
    let Some(record) = core.store(core.store.get(CODES, &key)).await?.as_deref().and_then(decode::<CodeRecord>) else {
        // A code redeemed twice by its client (right verifier): revoke what the first
        // redemption issued (RFC 9700 §4.2.4). A replay that is itself invalid revokes
        // nothing, or anyone holding a stolen code could cut the client off (OAuth 2.1 §7.5).
        if let Some(used) =
            core.store(core.store.get(USED_CODES, &key)).await?.as_deref().and_then(decode::<UsedCodeRecord>)
            && secure_eq(used.client_id.as_bytes(), client.client_id.as_bytes())
            && verifier.is_some_and(|v| pkce_matches(v, &used.code_challenge))
        {
            let subject = revoke_grant(core, &used.grant_id).await?;
            core.audit(
                parts,
                with_subject(Event::new(AuditKind::CodeReplayDetected).client(&client.client_id), subject),
            );
        }
        return Err(invalid_grant());
    };
    // Validate before consuming: an invalid request (wrong client, verifier or redirect URI)
    // must not burn the legitimate client's code.
    if !secure_eq(record.client_id.as_bytes(), client.client_id.as_bytes()) {
        return Err(invalid_grant());
    }
    match params.one("redirect_uri").map_err(dup)? {
        Some(r) if r != record.redirect_uri => return Err(invalid_grant()),
        None if record.redirect_uri_given => return Err(invalid_grant()),
        _ => {}
    }
    // Every code carries a challenge (the authorization endpoint requires one), so a missing
    // verifier is a failed PKCE check.
    if !verifier.is_some_and(|v| pkce_matches(v, &record.code_challenge)) {
        return Err(invalid_grant());
    }
    let Some((grant, raw_grant)) = load_grant_raw(core, &record.grant_id).await? else { return Err(invalid_grant()) };
    check_resource(core, params, &grant.resource)?;
    let ttl = Some(core.lifetimes.refresh_token);
    // The replay record first: it only matters once the code is gone, so writing it before
    // the code is consumed guarantees every later replay is recognised.
    let used = UsedCodeRecord {
        grant_id: record.grant_id.clone(),
        client_id: record.client_id.clone(),
        code_challenge: record.code_challenge.clone(),
    };
    core.store(core.store.put(USED_CODES, &key, encode(&used), ttl)).await?;
    // Then the tokens, recorded before the code is consumed: a store failure up to here
    // leaves the code redeemable, and no token reaches the client unrecorded.
    let issued = issue(core, client, &grant, &raw_grant, &grant.scopes).await?;
    // Consume; of racing redemptions exactly one gets the record.
    match core.store(core.store.take(CODES, &key)).await {
        Ok(Some(_)) => {
            core.audit(parts, Event::new(AuditKind::TokenIssued).client(&client.client_id).subject(&grant.subject));
            Ok(issued.response)
        }
        Ok(None) => {
            issued.discard(core).await;
            Err(invalid_grant())
        }
        Err(e) => {
            issued.discard(core).await;
            Err(e.into())
        }
    }
}

async fn refresh_grant(core: &Core, parts: &Parts, client: &ClientRecord, params: &Params) -> Result<Value, Failure> {
    let dup = |_| bad_request("invalid_request", "a parameter is repeated");
    let token = params
        .one("refresh_token")
        .map_err(dup)?
        .ok_or_else(|| bad_request("invalid_request", "refresh_token is required"))?;
    let key = secret_hash(token);
    let invalid_grant = || bad_request("invalid_grant", "the refresh token is invalid, expired or revoked");
    let Some(record) = core.store(core.store.get(REFRESH, &key)).await?.as_deref().and_then(decode::<RefreshRecord>)
    else {
        // A rotated refresh token used again: revoke the whole grant (RFC 9700 §4.14).
        if let Some(grant_id) = core.store(core.store.get(USED_REFRESH, &key)).await?
            && let Ok(grant_id) = String::from_utf8(grant_id)
        {
            let subject = revoke_grant(core, &grant_id).await?;
            core.audit(
                parts,
                with_subject(Event::new(AuditKind::RefreshReuseDetected).client(&client.client_id), subject),
            );
        }
        return Err(invalid_grant());
    };
    // Another client's refresh token: refused, and left as it is.
    if !secure_eq(record.client_id.as_bytes(), client.client_id.as_bytes()) || record.expires_at <= core.now() {
        return Err(invalid_grant());
    }
    let Some((grant, raw_grant)) = load_grant_raw(core, &record.grant_id).await? else { return Err(invalid_grant()) };
    check_resource(core, params, &grant.resource)?;
    let scopes = match params.one("scope").map_err(dup)? {
        None => record.scopes.clone(),
        Some(requested) => {
            let requested: Vec<String> = requested.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect();
            if requested.iter().any(|s| !record.scopes.contains(s)) {
                return Err(bad_request("invalid_scope", "a refresh can only narrow the scope"));
            }
            requested
        }
    };
    // As for codes: the reuse record, then the successor, then the rotation itself. A store
    // failure before the old token is consumed leaves it usable (a retry is not a reuse), and
    // of racing rotations exactly one successor stays alive.
    let ttl = Some(core.lifetimes.refresh_token);
    core.store(core.store.put(USED_REFRESH, &key, record.grant_id.clone().into_bytes(), ttl)).await?;
    let issued = issue_with_refresh_scopes(core, client, &grant, &raw_grant, &scopes, &record.scopes).await?;
    match core.store(core.store.take(REFRESH, &key)).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            // Raced by a concurrent refresh with the same token: that one is the reuse.
            issued.discard(core).await;
            return Err(invalid_grant());
        }
        Err(e) => {
            issued.discard(core).await;
            return Err(e.into());
        }
    }
    core.audit(parts, Event::new(AuditKind::TokenRefreshed).client(&client.client_id).subject(&grant.subject));
    let mut response = issued.response;
    if let Some(obj) = response.as_object_mut() {
        obj.insert("scope".into(), Value::String(scopes.join(" ")));
    }
    Ok(response)
}

/// A live (not revoked) grant, with its stored bytes (for a compare-and-swap).
async fn load_grant_raw(core: &Core, grant_id: &str) -> Result<Option<(GrantRecord, Vec<u8>)>, Failure> {
    let Some(raw) = core.store(core.store.get(GRANTS, grant_id)).await? else { return Ok(None) };
    Ok(decode::<GrantRecord>(&raw).filter(|g| !g.revoked).map(|g| (g, raw)))
}

fn with_subject(event: Event, subject: Option<String>) -> Event {
    match subject {
        Some(s) => event.subject(&s),
        None => event,
    }
}

/// Marks a grant revoked (every refresh token of it stops working; with the revocation check,
/// its access tokens too) and deletes the upstream tokens, revoking them upstream first.
/// Returns the grant's subject (`None`: no such grant).
pub(crate) async fn revoke_grant(core: &Core, grant_id: &str) -> Result<Option<String>, StoreError> {
    let Some(mut grant) =
        core.store(core.store.get(GRANTS, grant_id)).await?.as_deref().and_then(decode::<GrantRecord>)
    else {
        return Ok(None);
    };
    if !grant.revoked {
        grant.revoked = true;
        core.store(core.store.put(GRANTS, grant_id, encode(&grant), Some(core.lifetimes.refresh_token))).await?;
        core.revocations.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
    if let Some(sealed) = core.store(core.store.take(UPSTREAM_TOKENS, grant_id)).await?
        && let Ok(plain) = core.enc.open(&sealed, &super::verifier::upstream_aad(grant_id))
        && let Ok(tokens) = serde_json::from_slice(&plain)
        && let Err(e) = core.upstream.revoke(&tokens).await
    {
        tracing::debug!(error = %e, "upstream revocation failed");
    }
    Ok(Some(grant.subject))
}

/// Tokens minted and recorded, not yet handed out.
struct Issued {
    response: Value,
    /// Storage key of the new refresh token, if one was issued.
    refresh_key: Option<String>,
}

impl Issued {
    /// Forgets tokens that will not be handed out (best effort: an unreachable store keeps a
    /// refresh token nobody knows, which expires).
    async fn discard(self, core: &Core) {
        if let Some(key) = self.refresh_key {
            let _ = core.store(core.store.delete(REFRESH, &key)).await;
        }
    }
}

async fn issue(
    core: &Core,
    client: &ClientRecord,
    grant: &GrantRecord,
    raw_grant: &[u8],
    scopes: &[String],
) -> Result<Issued, Failure> {
    issue_with_refresh_scopes(core, client, grant, raw_grant, scopes, scopes).await
}

/// Signs an access token for `scopes` and, for clients that may refresh, stores a new refresh
/// token carrying `refresh_scopes`. `raw_grant` is the grant as loaded: its lifetime is
/// extended only if it is unchanged (a grant revoked meanwhile stays revoked).
async fn issue_with_refresh_scopes(
    core: &Core,
    client: &ClientRecord,
    grant: &GrantRecord,
    raw_grant: &[u8],
    scopes: &[String],
    refresh_scopes: &[String],
) -> Result<Issued, Failure> {
    let now = core.now();
    let lifetime = i64::try_from(core.lifetimes.access_token.as_secs()).unwrap_or(600);
    let mut claims = json!({
        "iss": core.issuer,
        "sub": grant.subject,
        "aud": core.resource.resource(),
        "client_id": client.client_id,
        "scope": scopes.join(" "),
        "iat": now,
        "exp": now + lifetime,
        "jti": random_token(),
        "gid": grant.grant_id,
    });
    if !grant.upstream_claims.is_empty() {
        claims["upstream_claims"] = Value::Object(grant.upstream_claims.clone());
    }
    core.sync_keys(false).await;
    let access_token = core.keys.sign(&claims).map_err(|_| Failure::Unavailable)?;
    let mut issued = Issued {
        response: json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": lifetime,
            "scope": scopes.join(" "),
        }),
        refresh_key: None,
    };
    if client.allows_refresh() {
        let refresh = random_token();
        let record = RefreshRecord {
            grant_id: grant.grant_id.clone(),
            client_id: client.client_id.clone(),
            scopes: refresh_scopes.to_vec(),
            expires_at: now + i64::try_from(core.lifetimes.refresh_token.as_secs()).unwrap_or(i64::MAX / 2),
        };
        let ttl = Some(core.lifetimes.refresh_token);
        let key = secret_hash(&refresh);
        core.store(core.store.put(REFRESH, &key, encode(&record), ttl)).await?;
        issued.refresh_key = Some(key);
        // The grant lives as long as its newest refresh token.
        match core
            .store(core.store.compare_and_swap(GRANTS, &grant.grant_id, raw_grant, Some(raw_grant.to_vec()), ttl))
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                // Revoked (or ended) meanwhile.
                issued.discard(core).await;
                return Err(bad_request("invalid_grant", "the grant was revoked"));
            }
            Err(e) => {
                issued.discard(core).await;
                return Err(e.into());
            }
        }
        issued.response["refresh_token"] = Value::String(refresh);
    }
    if !client.used {
        let mut used = client.clone();
        used.used = true;
        if let Err(e) = core.store(core.store.put(CLIENTS, &client.client_id, encode(&used), None)).await {
            issued.discard(core).await;
            return Err(e.into());
        }
    }
    Ok(issued)
}
