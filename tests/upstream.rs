//! Upstream identity providers against the loopback mock provider: OpenID Connect by
//! discovery (ID token verification, both access-token modes, userinfo, refresh, revocation),
//! the Microsoft Entra preset and plain OAuth 2 with userinfo.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use tower_mcp_auth::ConfigErrorKind;
use tower_mcp_auth::upstream::{
    AuthorizationRequest, EntraUpstream, OAuth2Upstream, OidcUpstream, OidcUpstreamBuilder, Upstream, UpstreamError,
    UpstreamErrorKind, UpstreamTokens,
};

use support::idp::MockIdp;
use support::{TestKey, now, with};

const CLIENT: &str = "proxy-client";
const SECRET: &str = "s3cret-Value";
const NONCE: &str = "n-0S6_WzA2Mj";
const STATE: &str = "state-xyz";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const REDIRECT: &str = "https://mcp.example.com/oauth/callback";
const SERVER: &str = "https://mcp.example.com";

fn request() -> AuthorizationRequest<'static> {
    AuthorizationRequest::new(STATE, REDIRECT, CHALLENGE, NONCE, SERVER)
}

/// A mock provider with a full OpenID Connect discovery document and key `rs256-a`.
async fn provider() -> (MockIdp, TestKey) {
    let idp = MockIdp::start().await;
    let key = TestKey::rs256_a();
    idp.set_keys(&[&key]);
    let doc = idp.oidc_discovery(&idp.issuer);
    idp.set(|k| k.discovery = Some(doc));
    (idp, key)
}

fn oidc(idp: &MockIdp) -> OidcUpstreamBuilder {
    OidcUpstream::builder(&idp.issuer).client_id(CLIENT).client_secret(SECRET)
}

fn id_claims(iss: &str) -> Value {
    let now = now();
    json!({
        "iss": iss,
        "aud": CLIENT,
        "sub": "user-1",
        "iat": now,
        "exp": now + 300,
        "nonce": NONCE,
        "email": "ada@example.com",
        "email_verified": true,
        "name": "Ada Lovelace",
        "locale": "en",
    })
}

/// An ID token: header `typ: JWT`.
fn id_token(key: &TestKey, claims: &Value) -> String {
    key.sign(&json!({"alg": "RS256", "kid": key.kid, "typ": "JWT"}), claims)
}

/// A JWT access token from `iss` for `aud`.
fn access_token(key: &TestKey, iss: &str, aud: &str) -> String {
    let now = now();
    key.token(&json!({
        "iss": iss, "aud": aud, "sub": "user-1", "client_id": CLIENT,
        "scope": "openid email profile", "iat": now, "exp": now + 600,
    }))
}

fn token_response(access: &str, id: &str) -> Value {
    json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": 3600,
        "refresh_token": "rt-1",
        "id_token": id,
    })
}

/// Sets a token response with a fresh, valid ID token (with `patch`) and JWT access token.
fn answer_with_id_claims(idp: &MockIdp, key: &TestKey, patch: Value) {
    let id = id_token(key, &with(id_claims(&idp.issuer), patch));
    let at = access_token(key, &idp.issuer, CLIENT);
    let res = token_response(&at, &id);
    idp.set(|k| k.token_response = res);
}

fn query(url: &url::Url) -> HashMap<String, String> {
    url.query_pairs().into_owned().collect()
}

fn kind<T>(r: Result<T, UpstreamError>) -> UpstreamErrorKind {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.kind(),
    }
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

// ---------------------------------------------------------------------------------------------
// OpenID Connect: authorization request and discovery

// Authorization code flow with PKCE S256 (OAuth 2.1 §4.1.1, R-MCP-09), nonce (OIDC Core
// §3.1.2.1), `openid` always requested, extra parameters appended; RFC 9207 issuer reported.
#[tokio::test]
async fn oidc_authorization_url_carries_pkce_nonce_state_and_scopes() {
    let (idp, _key) = provider().await;
    let up =
        oidc(&idp).scopes(["email", "offline_access"]).extra_authorize_params([("prompt", "consent")]).build().unwrap();
    assert_eq!(up.scopes(), ["openid", "email", "offline_access"]);
    let url = up.authorization_url(&request()).await.unwrap();
    assert!(url.as_str().starts_with(&idp.authorize_url()));
    let q = query(&url);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], CLIENT);
    assert_eq!(q["redirect_uri"], REDIRECT);
    assert_eq!(q["scope"], "openid email offline_access");
    assert_eq!(q["state"], STATE);
    assert_eq!(q["nonce"], NONCE);
    assert_eq!(q["code_challenge"], CHALLENGE);
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["prompt"], "consent");
    assert!(!q.contains_key("resource"), "RFC 8707 resource is never forwarded upstream");
    assert!(!q.contains_key("client_secret"));
    assert_eq!(up.response_issuer().await.unwrap(), Some((idp.issuer.clone(), true)));

    // Default scopes.
    let up = oidc(&idp).build().unwrap();
    assert_eq!(up.scopes(), ["openid", "email", "profile"]);
}

// Metadata is fetched once, lazily, and reused.
#[tokio::test]
async fn oidc_discovery_is_lazy_and_cached() {
    let (idp, _key) = provider().await;
    let up = oidc(&idp).build().unwrap();
    assert_eq!(idp.discovery_hits(), 0, "nothing fetched at build time");
    up.authorization_url(&request()).await.unwrap();
    up.authorization_url(&request()).await.unwrap();
    up.response_issuer().await.unwrap();
    assert_eq!(idp.discovery_hits(), 1);
}

// R-8414-02: metadata whose `issuer` differs from the configured issuer is not used.
#[tokio::test]
async fn oidc_discovery_issuer_mismatch_is_refused() {
    let (idp, _key) = provider().await;
    for other in [format!("{}/", idp.issuer), "https://evil.example".to_owned()] {
        let doc = idp.oidc_discovery(&other);
        idp.set(|k| k.discovery = Some(doc));
        let up = oidc(&idp).build().unwrap();
        assert_eq!(kind(up.authorization_url(&request()).await), UpstreamErrorKind::Invalid, "{other}");
    }
}

// A provider that cannot be reached is "unavailable", and discovery is tried again later.
#[tokio::test]
async fn oidc_discovery_failure_is_unavailable_and_retried() {
    let (idp, _key) = provider().await;
    idp.set(|k| k.discovery_status = 503);
    let up = oidc(&idp).build().unwrap();
    assert_eq!(kind(up.authorization_url(&request()).await), UpstreamErrorKind::Unavailable);
    assert_eq!(kind(up.response_issuer().await), UpstreamErrorKind::Unavailable);
    idp.set(|k| k.discovery_status = 200);
    up.authorization_url(&request()).await.unwrap();
    assert_eq!(idp.discovery_hits(), 3);
}

// Metadata without PKCE S256 support, or with an insecure endpoint, is refused.
#[tokio::test]
async fn oidc_discovery_requires_s256_and_secure_endpoints() {
    let (idp, _key) = provider().await;
    let doc = with(idp.oidc_discovery(&idp.issuer), json!({"code_challenge_methods_supported": ["plain"]}));
    idp.set(|k| k.discovery = Some(doc));
    assert_eq!(kind(oidc(&idp).build().unwrap().authorization_url(&request()).await), UpstreamErrorKind::Invalid);

    let doc = with(idp.oidc_discovery(&idp.issuer), json!({"token_endpoint": "http://idp.example.com/token"}));
    idp.set(|k| k.discovery = Some(doc));
    assert_eq!(kind(oidc(&idp).build().unwrap().authorization_url(&request()).await), UpstreamErrorKind::Invalid);

    let doc = with(idp.oidc_discovery(&idp.issuer), json!({"jwks_uri": null}));
    idp.set(|k| k.discovery = Some(doc));
    assert_eq!(kind(oidc(&idp).build().unwrap().authorization_url(&request()).await), UpstreamErrorKind::Invalid);
}

// ---------------------------------------------------------------------------------------------
// OpenID Connect: code exchange

// Happy path with client_secret_basic (RFC 6749 §2.3.1): the form carries the code, the PKCE
// verifier and the redirect URI; the identity is the ID token's `sub`; default claims only.
#[tokio::test]
async fn oidc_exchange_with_client_secret_basic() {
    let (idp, key) = provider().await;
    answer_with_id_claims(&idp, &key, json!({}));
    let up = oidc(&idp).build().unwrap();
    let grant = up.exchange("code-1", VERIFIER, REDIRECT, NONCE).await.unwrap();

    assert_eq!(grant.identity.subject, "user-1");
    let expected = json!({
        "sub": "user-1", "email": "ada@example.com", "email_verified": true, "name": "Ada Lovelace",
    });
    assert_eq!(Value::Object(grant.identity.claims.clone()), expected, "locale is not copied");
    assert_eq!(idp.userinfo_hits(), 0, "email and name were in the ID token");

    let tokens = &grant.tokens;
    assert!(tokens.access_token.as_deref().unwrap().starts_with("ey"));
    assert_eq!(tokens.refresh_token.as_deref(), Some("rt-1"));
    assert!(tokens.id_token.is_some());
    let expires = tokens.expires_at.unwrap();
    assert!((now() + 3590..=now() + 3610).contains(&expires));
    assert_eq!(tokens.scope.as_deref(), Some("openid email profile"), "scopes of the JWT access token");

    let sent = idp.last_token_request().unwrap();
    assert_eq!(sent.form["grant_type"], "authorization_code");
    assert_eq!(sent.form["code"], "code-1");
    assert_eq!(sent.form["code_verifier"], VERIFIER);
    assert_eq!(sent.form["redirect_uri"], REDIRECT);
    assert!(!sent.form.contains_key("client_secret"));
    assert_eq!(sent.authorization.as_deref(), Some(basic(CLIENT, SECRET).as_str()));
}

#[tokio::test]
async fn oidc_exchange_with_client_secret_post() {
    let (idp, key) = provider().await;
    answer_with_id_claims(&idp, &key, json!({}));
    let up = oidc(&idp).client_secret_post().build().unwrap();
    up.exchange("code-1", VERIFIER, REDIRECT, NONCE).await.unwrap();
    let sent = idp.last_token_request().unwrap();
    assert_eq!(sent.form["client_id"], CLIENT);
    assert_eq!(sent.form["client_secret"], SECRET);
    assert_eq!(sent.form["code_verifier"], VERIFIER);
    assert_eq!(sent.authorization, None);
}

// A public client identifies itself with `client_id` and relies on PKCE.
#[tokio::test]
async fn oidc_exchange_as_public_client() {
    let (idp, key) = provider().await;
    answer_with_id_claims(&idp, &key, json!({}));
    let up = OidcUpstream::builder(&idp.issuer).client_id(CLIENT).build().unwrap();
    up.exchange("code-1", VERIFIER, REDIRECT, NONCE).await.unwrap();
    let sent = idp.last_token_request().unwrap();
    assert_eq!(sent.form["client_id"], CLIENT);
    assert!(!sent.form.contains_key("client_secret"));
    assert_eq!(sent.authorization, None);
}

// OIDC Core §3.1.3.7: every ID token check, each failure `invalid`.
#[tokio::test]
async fn oidc_id_token_failures_are_invalid() {
    let (idp, key) = provider().await;
    let other_key = TestKey::rs256_b();
    let up = oidc(&idp).build().unwrap();
    let iss = idp.issuer.clone();
    let base = || id_claims(&iss);
    let at = access_token(&key, &idp.issuer, CLIENT);
    let header = json!({"alg": "RS256", "kid": key.kid, "typ": "JWT"});

    let cases: Vec<(&str, Value, &str)> = vec![
        ("bad signature", json!(other_key.sign(&header, &base())), "signature"),
        ("unknown key", json!(id_token(&other_key, &base())), "unknown kid"),
        ("wrong aud", json!(id_token(&key, &with(base(), json!({"aud": "another-client"})))), "audience"),
        ("wrong iss", json!(id_token(&key, &with(base(), json!({"iss": "https://evil.example"})))), "issuer"),
        ("iss with trailing slash", json!(id_token(&key, &with(base(), json!({"iss": format!("{iss}/")})))), "issuer"),
        ("missing nonce", json!(id_token(&key, &with(base(), json!({"nonce": null})))), "nonce"),
        ("wrong nonce", json!(id_token(&key, &with(base(), json!({"nonce": "replayed"})))), "nonce"),
        ("expired", json!(id_token(&key, &with(base(), json!({"exp": now() - 120, "iat": now() - 600})))), "expired"),
        ("no exp", json!(id_token(&key, &with(base(), json!({"exp": null})))), "exp"),
        ("no iat", json!(id_token(&key, &with(base(), json!({"iat": null})))), "no iat"),
        ("no sub", json!(id_token(&key, &with(base(), json!({"sub": null})))), "no sub"),
        (
            "alg none",
            json!(format!("{}.{}.AAAA", none_header(), support::keys::b64(base().to_string()))),
            "algorithm not allowed",
        ),
        ("azp of another client", json!(id_token(&key, &with(base(), json!({"azp": "another-client"})))), "azp"),
        (
            "several audiences, no azp",
            json!(id_token(&key, &with(base(), json!({"aud": [CLIENT, "other"]})))),
            "no azp",
        ),
        ("typed as an access token", json!(key.token(&base())), "access token"),
        (
            "at_hash of another token",
            json!(id_token(&key, &with(base(), json!({"at_hash": "x4yeRbTrw2TmhV5dmfaeUQ"})))),
            "at_hash",
        ),
        ("missing", Value::Null, "no id_token"),
        ("not a JWT", json!("opaque"), "not a JWS"),
    ];
    for (case, id, why) in cases {
        let mut res = token_response(&at, "");
        match id {
            Value::Null => {
                res.as_object_mut().unwrap().remove("id_token");
            }
            id => res["id_token"] = id,
        }
        idp.set(|k| k.token_response = res);
        let err = up.exchange("code-1", VERIFIER, REDIRECT, NONCE).await.expect_err(case);
        assert_eq!(err.kind(), UpstreamErrorKind::Invalid, "{case}: {err}");
        assert!(err.to_string().contains(why), "{case}: {err}");
    }

    // Sanity: several audiences with the right azp, and a matching at_hash, are accepted.
    let ok = with(base(), json!({"aud": [CLIENT, "other"], "azp": CLIENT, "at_hash": at_hash(&at)}));
    idp.set(|k| k.token_response = token_response(&at, &id_token(&key, &ok)));
    up.exchange("code-1", VERIFIER, REDIRECT, NONCE).await.unwrap();
}

fn none_header() -> String {
    support::keys::b64(json!({"alg": "none", "typ": "JWT"}).to_string())
}

fn at_hash(token: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(token.as_bytes());
    support::keys::b64(&d[..16])
}

// RFC 6749 §7.1 / RFC 9449: a token type other than Bearer (e.g. DPoP) is not usable here.
#[tokio::test]
async fn oidc_token_type_must_be_bearer() {
    let (idp, key) = provider().await;
    let up = oidc(&idp).build().unwrap();
    for (token_type, ok) in [("DPoP", false), ("mac", false), ("bearer", true), ("BEARER", true)] {
        answer_with_id_claims(&idp, &key, json!({}));
        idp.set(|k| k.token_response["token_type"] = json!(token_type));
        let res = up.exchange("code-1", VERIFIER, REDIRECT, NONCE).await;
        if ok {
            res.unwrap();
        } else {
            assert_eq!(kind(res), UpstreamErrorKind::Invalid, "{token_type}");
        }
    }
    // Absent token_type: tolerated.
    answer_with_id_claims(&idp, &key, json!({}));
    idp.set(|k| {
        k.token_response.as_object_mut().unwrap().remove("token_type");
    });
    up.exchange("code-1", VERIFIER, REDIRECT, NONCE).await.unwrap();
}

// 4xx → refused, 5xx / timeout → unavailable; provider error text never reaches the message.
#[tokio::test]
async fn oidc_token_endpoint_errors() {
    let (idp, _key) = provider().await;
    let up = oidc(&idp).timeout(Duration::from_millis(500)).build().unwrap();
    let refusal = json!({"error": "invalid_grant", "error_description": "LEAK-MARKER code expired"});

    for (status, expected) in [
        (400, UpstreamErrorKind::Refused),
        (401, UpstreamErrorKind::Refused),
        (500, UpstreamErrorKind::Unavailable),
        (503, UpstreamErrorKind::Unavailable),
    ] {
        let body = refusal.clone();
        idp.set(|k| {
            k.token_status = status;
            k.token_response = body;
        });
        let err = up.exchange("code-1", VERIFIER, REDIRECT, NONCE).await.expect_err("error status");
        assert_eq!(err.kind(), expected, "{status}");
        assert!(!err.to_string().contains("LEAK-MARKER"), "{err}");
    }

    // An error with status 200 (GitHub does this) is a refusal too.
    idp.set(|k| {
        k.token_status = 200;
        k.token_response = refusal;
    });
    assert_eq!(kind(up.exchange("code-1", VERIFIER, REDIRECT, NONCE).await), UpstreamErrorKind::Refused);

    // Not JSON / no access token: invalid.
    idp.set(|k| k.token_response = json!("just a string"));
    assert_eq!(kind(up.exchange("code-1", VERIFIER, REDIRECT, NONCE).await), UpstreamErrorKind::Invalid);
    idp.set(|k| k.token_response = json!({"token_type": "Bearer"}));
    assert_eq!(kind(up.exchange("code-1", VERIFIER, REDIRECT, NONCE).await), UpstreamErrorKind::Invalid);

    // A slow provider: the total deadline applies.
    idp.set(|k| k.token_delay = Duration::from_secs(3));
    let started = std::time::Instant::now();
    assert_eq!(kind(up.exchange("code-1", VERIFIER, REDIRECT, NONCE).await), UpstreamErrorKind::Unavailable);
    assert!(started.elapsed() < Duration::from_secs(2));
}

// Default mode: the access token must be a JWT that verifies; verify_id_token mode keeps an
// opaque access token as the token of record, scopes from the grant.
#[tokio::test]
async fn oidc_verify_id_token_mode_keeps_opaque_access_token() {
    let (idp, key) = provider().await;
    let id = id_token(&key, &id_claims(&idp.issuer));
    let res = with(token_response("opaque-at-42", &id), json!({"expires_in": null}));
    idp.set(|k| k.token_response = res);

    let strict = oidc(&idp).build().unwrap();
    let err = strict.exchange("code-1", VERIFIER, REDIRECT, NONCE).await.expect_err("opaque in default mode");
    assert_eq!(err.kind(), UpstreamErrorKind::Invalid);
    assert!(err.to_string().contains("verify_id_token"), "{err}");

    let up = oidc(&idp).verify_id_token(true).build().unwrap();
    let grant = up.exchange("code-1", VERIFIER, REDIRECT, NONCE).await.unwrap();
    assert_eq!(grant.identity.subject, "user-1");
    assert_eq!(grant.tokens.access_token.as_deref(), Some("opaque-at-42"));
    assert_eq!(grant.tokens.scope.as_deref(), Some("openid email profile"), "the scopes requested");
    assert_eq!(grant.tokens.expires_at, None);

    // With a scope in the response, that one.
    let res = with(token_response("opaque-at-42", &id), json!({"scope": "openid email"}));
    idp.set(|k| k.token_response = res);
    let grant = up.exchange("code-1", VERIFIER, REDIRECT, NONCE).await.unwrap();
    assert_eq!(grant.tokens.scope.as_deref(), Some("openid email"));
}

// Default mode: the access token is checked like a resource server would.
#[tokio::test]
async fn oidc_default_mode_verifies_the_access_token() {
    let (idp, key) = provider().await;
    let id = id_token(&key, &id_claims(&idp.issuer));
    let up = oidc(&idp).build().unwrap();
    for (case, at, why) in [
        (
            "other audience",
            access_token(&key, &idp.issuer, "https://api.example.com"),
            "access token rejected: audience",
        ),
        ("other issuer", access_token(&key, "https://evil.example", CLIENT), "access token rejected: issuer"),
        ("other key", access_token(&TestKey::rs256_b(), &idp.issuer, CLIENT), "access token rejected: unknown kid"),
    ] {
        idp.set(|k| k.token_response = token_response(&at, &id));
        let err = up.exchange("code-1", VERIFIER, REDIRECT, NONCE).await.expect_err(case);
        assert_eq!(err.kind(), UpstreamErrorKind::Invalid, "{case}");
        assert!(err.to_string().contains(why), "{case}: {err}");
    }
    // A configured access-token audience.
    let at = access_token(&key, &idp.issuer, "https://api.example.com");
    idp.set(|k| k.token_response = token_response(&at, &id));
    let up = oidc(&idp).access_token_audience("https://api.example.com").build().unwrap();
    up.exchange("code-1", VERIFIER, REDIRECT, NONCE).await.unwrap();
}

// OIDC Core §5.3: userinfo is called with the access token when the ID token lacks email or
// name; its `sub` must match; the claims hook sees both.
#[tokio::test]
async fn oidc_userinfo() {
    let (idp, key) = provider().await;
    let up = oidc(&idp).build().unwrap();
    answer_with_id_claims(&idp, &key, json!({"email": null, "name": null, "email_verified": null}));
    idp.set(|k| k.userinfo = json!({"sub": "user-1", "email": "ada@example.com", "name": "Ada", "picture": "x"}));
    let grant = up.exchange("code-1", VERIFIER, REDIRECT, NONCE).await.unwrap();
    assert_eq!(idp.userinfo_hits(), 1);
    let at = grant.tokens.access_token.clone().unwrap();
    let sent = idp.last_userinfo_request().unwrap();
    assert_eq!(sent.authorization, Some(format!("Bearer {at}")));
    assert_eq!(
        Value::Object(grant.identity.claims),
        json!({"sub": "user-1", "email": "ada@example.com", "name": "Ada"})
    );

    // Another subject at userinfo: refused as invalid.
    idp.set(|k| k.userinfo = json!({"sub": "user-2", "email": "eve@example.com"}));
    assert_eq!(kind(up.exchange("code-1", VERIFIER, REDIRECT, NONCE).await), UpstreamErrorKind::Invalid);
    idp.set(|k| k.userinfo = json!({"email": "eve@example.com"}));
    assert_eq!(kind(up.exchange("code-1", VERIFIER, REDIRECT, NONCE).await), UpstreamErrorKind::Invalid);

    // Userinfo failing when only wanted for enrichment: the ID token claims are used.
    idp.set(|k| k.userinfo_status = 500);
    let grant = up.exchange("code-1", VERIFIER, REDIRECT, NONCE).await.unwrap();
    assert_eq!(Value::Object(grant.identity.claims), json!({"sub": "user-1"}));

    // Asked for explicitly: its failure fails the sign-in.
    let explicit = oidc(&idp).fetch_userinfo(true).build().unwrap();
    assert_eq!(kind(explicit.exchange("code-1", VERIFIER, REDIRECT, NONCE).await), UpstreamErrorKind::Unavailable);

    // Never.
    let hits = idp.userinfo_hits();
    let never = oidc(&idp).fetch_userinfo(false).build().unwrap();
    never.exchange("code-1", VERIFIER, REDIRECT, NONCE).await.unwrap();
    assert_eq!(idp.userinfo_hits(), hits);

    // The claims hook, with userinfo, and its error rejecting the sign-in.
    idp.set(|k| {
        k.userinfo_status = 200;
        k.userinfo = json!({"sub": "user-1", "groups": ["admins"]});
    });
    let hooked = oidc(&idp)
        .fetch_userinfo(true)
        .map_claims(|id, info| {
            let mut out = Map::new();
            out.insert("user".into(), id["sub"].clone());
            out.insert("groups".into(), info.and_then(|i| i.get("groups")).cloned().unwrap_or(Value::Null));
            Ok(out)
        })
        .build()
        .unwrap();
    let grant = hooked.exchange("code-1", VERIFIER, REDIRECT, NONCE).await.unwrap();
    assert_eq!(Value::Object(grant.identity.claims), json!({"user": "user-1", "groups": ["admins"]}));
    let refusing = oidc(&idp).map_claims(|_, _| Err(UpstreamError::invalid("not in the right group"))).build().unwrap();
    assert_eq!(kind(refusing.exchange("code-1", VERIFIER, REDIRECT, NONCE).await), UpstreamErrorKind::Invalid);
}

// ---------------------------------------------------------------------------------------------
// OpenID Connect: refresh and revocation

// A refresh response without id_token / refresh_token keeps the earlier ones once merged
// (UpstreamTokens::merged); a refreshed ID token must name the same subject (OIDC Core §12.2).
#[tokio::test]
async fn oidc_refresh_merges_and_checks_the_subject() {
    let (idp, key) = provider().await;
    answer_with_id_claims(&idp, &key, json!({}));
    let up = oidc(&idp).build().unwrap();
    let first = up.exchange("code-1", VERIFIER, REDIRECT, NONCE).await.unwrap().tokens;

    let at2 = access_token(&key, &idp.issuer, CLIENT);
    idp.set(|k| k.token_response = json!({"access_token": at2, "token_type": "Bearer", "expires_in": 60}));
    let partial = up.refresh(&first).await.unwrap();
    assert_eq!(partial.access_token.as_deref(), Some(at2.as_str()));
    assert_eq!(partial.refresh_token, None);
    assert_eq!(partial.id_token, None);
    let merged = first.merged(partial);
    assert_eq!(merged.access_token.as_deref(), Some(at2.as_str()));
    assert_eq!(merged.refresh_token.as_deref(), Some("rt-1"));
    assert_eq!(merged.id_token, first.id_token);
    assert!(merged.expires_at.unwrap() <= now() + 61);
    let sent = idp.last_token_request().unwrap();
    assert_eq!(sent.form["grant_type"], "refresh_token");
    assert_eq!(sent.form["refresh_token"], "rt-1");
    assert_eq!(sent.authorization.as_deref(), Some(basic(CLIENT, SECRET).as_str()));

    // A refreshed ID token for the same user (no nonce on refresh) is accepted, rotated
    // refresh token returned.
    let same = id_token(&key, &with(id_claims(&idp.issuer), json!({"nonce": null})));
    let res = with(token_response(&at2, &same), json!({"refresh_token": "rt-2"}));
    idp.set(|k| k.token_response = res);
    let partial = up.refresh(&first).await.unwrap();
    assert_eq!(partial.refresh_token.as_deref(), Some("rt-2"));
    assert_eq!(partial.id_token.as_deref(), Some(same.as_str()));

    // Another subject: invalid.
    let other = id_token(&key, &with(id_claims(&idp.issuer), json!({"sub": "user-2", "nonce": null})));
    idp.set(|k| k.token_response = token_response(&at2, &other));
    assert_eq!(kind(up.refresh(&first).await), UpstreamErrorKind::Invalid);

    // A refreshed ID token that fails verification: invalid.
    let bad = id_token(&key, &with(id_claims(&idp.issuer), json!({"aud": "another-client", "nonce": null})));
    idp.set(|k| k.token_response = token_response(&at2, &bad));
    assert_eq!(kind(up.refresh(&first).await), UpstreamErrorKind::Invalid);

    // The provider refusing the refresh token.
    idp.set(|k| {
        k.token_status = 400;
        k.token_response = json!({"error": "invalid_grant"});
    });
    assert_eq!(kind(up.refresh(&first).await), UpstreamErrorKind::Refused);

    // Nothing to refresh with.
    assert_eq!(kind(up.refresh(&UpstreamTokens::default()).await), UpstreamErrorKind::Refused);
}

// RFC 7009: the refresh token is revoked (else the access token); failures are ignored.
#[tokio::test]
async fn oidc_revocation() {
    let (idp, _key) = provider().await;
    let up = oidc(&idp).build().unwrap();
    let mut tokens = UpstreamTokens::default();
    tokens.access_token = Some("at-1".into());
    tokens.refresh_token = Some("rt-1".into());
    up.revoke(&tokens).await.unwrap();
    let sent = idp.last_revocation_request().unwrap();
    assert_eq!(sent.form["token"], "rt-1");
    assert_eq!(sent.form["token_type_hint"], "refresh_token");
    assert_eq!(sent.authorization.as_deref(), Some(basic(CLIENT, SECRET).as_str()));

    tokens.refresh_token = None;
    idp.set(|k| k.revocation_status = 503);
    up.revoke(&tokens).await.unwrap();
    let sent = idp.last_revocation_request().unwrap();
    assert_eq!(sent.form["token"], "at-1");
    assert_eq!(sent.form["token_type_hint"], "access_token");
    assert_eq!(idp.revocation_hits(), 2);

    // No revocation endpoint advertised: nothing is sent.
    let doc = with(idp.oidc_discovery(&idp.issuer), json!({"revocation_endpoint": null}));
    idp.set(|k| k.discovery = Some(doc));
    oidc(&idp).build().unwrap().revoke(&tokens).await.unwrap();
    assert_eq!(idp.revocation_hits(), 2);
}

// STYLE.md rule 12: tokens, codes, verifiers and secrets never reach the logs, at any level.
#[tokio::test]
async fn logs_never_contain_tokens_or_secrets() {
    let (logs, _guard) = support::logs::capture();
    let (idp, key) = provider().await;
    let id = id_token(&key, &with(id_claims(&idp.issuer), json!({"name": null})));
    let at = access_token(&key, &idp.issuer, CLIENT);
    let res = with(token_response(&at, &id), json!({"refresh_token": "rt-LEAK-CHECK"}));
    idp.set(|k| {
        k.token_response = res;
        k.userinfo = json!({"sub": "user-1", "name": "Ada"});
    });
    let up = oidc(&idp).build().unwrap();
    let grant = up.exchange("code-LEAK-CHECK", VERIFIER, REDIRECT, NONCE).await.unwrap();
    assert_eq!(idp.userinfo_hits(), 1);
    up.refresh(&grant.tokens).await.unwrap();
    up.revoke(&grant.tokens).await.unwrap();
    idp.set(|k| {
        k.token_status = 400;
        k.token_response = json!({"error": "invalid_grant", "error_description": "desc-LEAK-CHECK"});
    });
    up.exchange("code-LEAK-CHECK", VERIFIER, REDIRECT, NONCE).await.unwrap_err();
    up.refresh(&grant.tokens).await.unwrap_err();

    let text = logs.text();
    assert!(text.contains("upstream"), "logging was captured: {text}");
    let basic_creds = STANDARD.encode(format!("{CLIENT}:{SECRET}"));
    for secret in
        [&at, &id, "rt-LEAK-CHECK", "code-LEAK-CHECK", VERIFIER, SECRET, &basic_creds, "desc-LEAK-CHECK", NONCE]
    {
        assert!(!text.contains(secret), "{secret} leaked into the logs:\n{text}");
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration

// Builders fail closed (STYLE.md rule 6).
#[test]
fn builders_fail_closed() {
    let issuer = "https://login.example.com";
    let err = |r: Result<OidcUpstream, tower_mcp_auth::ConfigError>| r.expect_err("must fail").kind();
    assert_eq!(err(OidcUpstream::builder(issuer).build()), ConfigErrorKind::Missing);
    assert_eq!(err(OidcUpstream::builder(issuer).client_id("").build()), ConfigErrorKind::Missing);
    assert_eq!(
        err(OidcUpstream::builder("http://login.example.com").client_id("c").build()),
        ConfigErrorKind::InsecureUrl
    );
    assert_eq!(err(OidcUpstream::builder("not a url").client_id("c").build()), ConfigErrorKind::InvalidUrl);
    assert_eq!(err(OidcUpstream::builder(format!("{issuer}?x=1")).client_id("c").build()), ConfigErrorKind::InvalidUrl);
    assert_eq!(
        err(OidcUpstream::builder(issuer).client_id("c").scopes(["bad scope"]).build()),
        ConfigErrorKind::InvalidScope
    );
    assert_eq!(
        err(OidcUpstream::builder(issuer).client_id("c").client_secret_post().build()),
        ConfigErrorKind::Missing
    );
    assert_eq!(err(OidcUpstream::builder(issuer).client_id("c").client_secret("").build()), ConfigErrorKind::Invalid);
    for reserved in ["redirect_uri", "state", "nonce", "code_challenge_method", "Scope"] {
        let r = OidcUpstream::builder(issuer).client_id("c").extra_authorize_params([(reserved, "x")]).build();
        assert_eq!(err(r), ConfigErrorKind::Invalid, "{reserved}");
    }
    // Loopback http is allowed (tests), other hosts only when insecure_allow_http is set.
    OidcUpstream::builder("http://127.0.0.1:9/").client_id("c").build().unwrap();
    OidcUpstream::builder("http://login.example.com").client_id("c").insecure_allow_http().build().unwrap();

    let entra = |tenant: &str| EntraUpstream::builder(tenant, "c").scopes(["mcp:read"]).build();
    for tenant in ["common", "organizations", "consumers", "", "a/b"] {
        assert_eq!(entra(tenant).expect_err(tenant).kind(), ConfigErrorKind::Invalid, "{tenant}");
    }
    let no_scope = EntraUpstream::builder("tenant-1", "c").build().expect_err("no API scope");
    assert_eq!(no_scope.kind(), ConfigErrorKind::Missing);
    let resource = EntraUpstream::builder("tenant-1", "c")
        .scopes(["mcp:read"])
        .extra_authorize_params([("resource", "https://mcp.example.com/mcp")])
        .build()
        .expect_err("resource is never forwarded");
    assert_eq!(resource.kind(), ConfigErrorKind::Invalid);

    let oauth2 = || {
        OAuth2Upstream::builder()
            .authorization_endpoint("https://github.com/login/oauth/authorize")
            .token_endpoint("https://github.com/login/oauth/access_token")
            .client_id("c")
    };
    assert_eq!(oauth2().build().expect_err("no userinfo").kind(), ConfigErrorKind::Missing);
    let insecure = oauth2().userinfo_endpoint("http://api.github.com/user").build().expect_err("http");
    assert_eq!(insecure.kind(), ConfigErrorKind::InsecureUrl);
    oauth2().userinfo_endpoint("https://api.github.com/user").build().unwrap();
}

// Secrets never appear in Debug output.
#[test]
fn debug_never_prints_secrets() {
    let b = OidcUpstream::builder("https://login.example.com").client_id("c").client_secret(SECRET);
    assert!(!format!("{b:?}").contains(SECRET));
    let up = b.build().unwrap();
    let text = format!("{up:?}");
    assert!(!text.contains(SECRET), "{text}");
    assert!(text.contains("client_secret_basic"), "{text}");

    let e = EntraUpstream::builder("tenant-1", "c").client_secret(SECRET).scopes(["mcp:read"]);
    assert!(!format!("{e:?}").contains(SECRET));
    assert!(!format!("{:?}", e.build().unwrap()).contains(SECRET));

    let o = OAuth2Upstream::builder()
        .authorization_endpoint("https://github.com/login/oauth/authorize")
        .token_endpoint("https://github.com/login/oauth/access_token")
        .userinfo_endpoint("https://api.github.com/user")
        .client_id("c")
        .client_secret(SECRET);
    assert!(!format!("{o:?}").contains(SECRET));
    assert!(!format!("{:?}", o.build().unwrap()).contains(SECRET));
}

// ---------------------------------------------------------------------------------------------
// Microsoft Entra ID

const TENANT: &str = "tenant-1";
const API: &str = "api-client-id";

/// The mock as an Entra authority: discovery under `/{tenant}/v2.0`.
async fn entra_provider() -> (MockIdp, TestKey, String) {
    let idp = MockIdp::start().await;
    let key = TestKey::rs256_a();
    idp.set_keys(&[&key]);
    let issuer = format!("{}/{TENANT}/v2.0", idp.issuer);
    let doc = with(
        idp.oidc_discovery(&issuer),
        json!({"revocation_endpoint": null, "code_challenge_methods_supported": null}),
    );
    idp.set(|k| k.discovery = Some(doc));
    (idp, key, issuer)
}

// MCP scopes are requested on the Application ID URI, OpenID Connect scopes added, extra
// scopes as they are; RFC 8707 `resource` is never sent.
#[tokio::test]
async fn entra_authorization_url_prefixes_scopes() {
    let (idp, _key, issuer) = entra_provider().await;
    let up = EntraUpstream::builder(TENANT, CLIENT)
        .authority(&idp.issuer)
        .client_secret(SECRET)
        .api_client_id(API)
        .scopes(["mcp:read", "mcp:admin"])
        .extra_scopes(["User.Read"])
        .build()
        .unwrap();
    assert_eq!(up.issuer(), issuer);
    assert_eq!(up.display_name(), "Microsoft Entra ID");
    let url = up.authorization_url(&request()).await.unwrap();
    let q = query(&url);
    assert_eq!(
        q["scope"],
        format!("openid api://{API}/mcp:read api://{API}/mcp:admin profile email offline_access User.Read")
    );
    assert_eq!(q["client_id"], CLIENT);
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["nonce"], NONCE);
    assert!(!q.contains_key("resource"));
    assert_eq!(up.response_issuer().await.unwrap(), Some((issuer, true)));

    // A custom Application ID URI; scopes already prefixed are left alone.
    let up = EntraUpstream::builder(TENANT, CLIENT)
        .authority(&idp.issuer)
        .application_id_uri("https://contoso.example/mcp/")
        .scopes(["mcp:read", "https://contoso.example/mcp/mcp:admin"])
        .build()
        .unwrap();
    let q = query(&up.authorization_url(&request()).await.unwrap());
    assert_eq!(
        q["scope"],
        "openid https://contoso.example/mcp/mcp:read https://contoso.example/mcp/mcp:admin profile email offline_access"
    );
}

fn entra_access_token(key: &TestKey, iss: &str, ver: &str) -> String {
    let now = now();
    key.sign(
        &json!({"alg": "RS256", "kid": key.kid, "typ": "JWT"}),
        &json!({
            "iss": iss, "aud": API, "sub": "pairwise-sub", "oid": "object-1", "tid": TENANT, "ver": ver,
            "scp": "mcp:read", "azp": CLIENT, "iat": now, "exp": now + 3600,
        }),
    )
}

// A v2.0 access token for the API is accepted; identity and claims from the ID token
// (oid/tid included); userinfo is never called; token requests name only API + OIDC scopes.
#[tokio::test]
async fn entra_exchange_with_v2_tokens() {
    let (idp, key, issuer) = entra_provider().await;
    let id = id_token(
        &key,
        &with(
            id_claims(&issuer),
            json!({"oid": "object-1", "tid": TENANT, "email": null, "preferred_username": "ada@contoso.example"}),
        ),
    );
    let at = entra_access_token(&key, &issuer, "2.0");
    idp.set(|k| k.token_response = with(token_response(&at, &id), json!({"scope": format!("api://{API}/mcp:read")})));
    let up = EntraUpstream::builder(TENANT, CLIENT)
        .authority(&idp.issuer)
        .client_secret(SECRET)
        .api_client_id(API)
        .scopes(["mcp:read"])
        .extra_scopes(["User.Read"])
        .build()
        .unwrap();
    let grant = up.exchange("code-1", VERIFIER, REDIRECT, NONCE).await.unwrap();
    assert_eq!(grant.identity.subject, "user-1");
    assert_eq!(
        Value::Object(grant.identity.claims),
        json!({
            "sub": "user-1", "oid": "object-1", "tid": TENANT, "email_verified": true, "name": "Ada Lovelace",
            "preferred_username": "ada@contoso.example",
        })
    );
    assert_eq!(idp.userinfo_hits(), 0);
    let sent = idp.last_token_request().unwrap();
    assert_eq!(sent.form["scope"], format!("api://{API}/mcp:read openid profile email offline_access"));
    assert!(!sent.form.contains_key("resource"));
    assert_eq!(sent.form["code_verifier"], VERIFIER);

    // An access token for another audience (e.g. Microsoft Graph) is refused.
    let graph = {
        let now = now();
        key.token(&json!({"iss": issuer, "aud": "00000003-0000-0000-c000-000000000000", "ver": "2.0", "iat": now, "exp": now + 60}))
    };
    idp.set(|k| k.token_response = token_response(&graph, &id));
    let err = up.exchange("code-1", VERIFIER, REDIRECT, NONCE).await.expect_err("Graph token");
    assert_eq!(err.kind(), UpstreamErrorKind::Invalid);
    assert!(err.to_string().contains("access token rejected: audience"), "{err}");
}

// A v1.0 access token is refused with the fix in the message.
#[tokio::test]
async fn entra_rejects_v1_access_tokens_with_manifest_hint() {
    let (idp, key, issuer) = entra_provider().await;
    let id = id_token(&key, &id_claims(&issuer));
    let up = EntraUpstream::builder(TENANT, CLIENT)
        .authority(&idp.issuer)
        .api_client_id(API)
        .scopes(["mcp:read"])
        .build()
        .unwrap();
    for at in [
        entra_access_token(&key, &format!("https://sts.windows.net/{TENANT}/"), "1.0"),
        entra_access_token(&key, &format!("https://sts.windows.net/{TENANT}/"), "2.0"),
        entra_access_token(&key, &issuer, "1.0"),
    ] {
        idp.set(|k| k.token_response = token_response(&at, &id));
        let err = up.exchange("code-1", VERIFIER, REDIRECT, NONCE).await.expect_err("v1 token");
        assert_eq!(err.kind(), UpstreamErrorKind::Invalid);
        assert!(err.to_string().contains("accessTokenAcceptedVersion"), "{err}");
    }
    // On refresh too.
    let mut tokens = UpstreamTokens::default();
    tokens.refresh_token = Some("rt-1".into());
    let v1 = entra_access_token(&key, &format!("https://sts.windows.net/{TENANT}/"), "1.0");
    idp.set(|k| k.token_response = json!({"access_token": v1, "token_type": "Bearer"}));
    let err = up.refresh(&tokens).await.expect_err("v1 token on refresh");
    assert!(err.to_string().contains("accessTokenAcceptedVersion"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Plain OAuth 2 (GitHub style)

fn github(idp: &MockIdp) -> OAuth2Upstream {
    OAuth2Upstream::builder()
        .authorization_endpoint(idp.authorize_url())
        .token_endpoint(idp.token_url())
        .userinfo_endpoint(idp.userinfo_url())
        .revocation_endpoint(idp.revocation_url())
        .client_id(CLIENT)
        .client_secret(SECRET)
        .scopes(["read:user", "user:email"])
        .subject_claim("id")
        .display_name("GitHub")
        .build()
        .unwrap()
}

// PKCE S256 always sent, no nonce; no issuer identifier (RFC 9207 not applicable).
#[tokio::test]
async fn oauth2_authorization_url() {
    let idp = MockIdp::start().await;
    let up = github(&idp);
    let q = query(&up.authorization_url(&request()).await.unwrap());
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["scope"], "read:user user:email");
    assert_eq!(q["code_challenge"], CHALLENGE);
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["state"], STATE);
    assert!(!q.contains_key("nonce"));
    assert_eq!(up.response_issuer().await.unwrap(), None);
    assert_eq!(up.display_name(), "GitHub");
}

// The identity comes from userinfo called with the access token; a numeric `id` becomes a
// string subject.
#[tokio::test]
async fn oauth2_identity_from_userinfo_with_numeric_id() {
    let idp = MockIdp::start().await;
    idp.set(|k| {
        k.token_response =
            json!({"access_token": "gho_opaque", "token_type": "bearer", "scope": "read:user,user:email"});
        k.userinfo =
            json!({"id": 583231, "login": "octocat", "name": "The Octocat", "email": null, "site_admin": false});
    });
    let up = github(&idp);
    let grant = up.exchange("code-1", VERIFIER, REDIRECT, NONCE).await.unwrap();
    assert_eq!(grant.identity.subject, "583231");
    assert_eq!(
        Value::Object(grant.identity.claims),
        json!({"sub": "583231", "login": "octocat", "name": "The Octocat"})
    );
    assert_eq!(grant.tokens.access_token.as_deref(), Some("gho_opaque"));
    assert_eq!(grant.tokens.scope.as_deref(), Some("read:user,user:email"));
    assert_eq!(grant.tokens.id_token, None);

    let sent = idp.last_token_request().unwrap();
    assert_eq!(sent.form["code_verifier"], VERIFIER);
    assert_eq!(sent.form["redirect_uri"], REDIRECT);
    assert_eq!(sent.authorization.as_deref(), Some(basic(CLIENT, SECRET).as_str()));
    assert_eq!(idp.last_userinfo_request().unwrap().authorization.as_deref(), Some("Bearer gho_opaque"));

    // A claims hook.
    let hooked = OAuth2Upstream::builder()
        .authorization_endpoint(idp.authorize_url())
        .token_endpoint(idp.token_url())
        .userinfo_endpoint(idp.userinfo_url())
        .client_id(CLIENT)
        .subject_claim("id")
        .map_claims(|info| {
            let mut out = Map::new();
            out.insert("github_login".into(), info["login"].clone());
            Ok(out)
        })
        .build()
        .unwrap();
    let grant = hooked.exchange("code-1", VERIFIER, REDIRECT, NONCE).await.unwrap();
    assert_eq!(Value::Object(grant.identity.claims), json!({"github_login": "octocat"}));
    assert_eq!(idp.last_token_request().unwrap().form["client_id"], CLIENT, "public client");
}

#[tokio::test]
async fn oauth2_userinfo_failures() {
    let idp = MockIdp::start().await;
    let up = github(&idp);
    idp.set(|k| k.token_response = json!({"access_token": "gho_opaque", "token_type": "bearer"}));

    for (status, body, expected) in [
        (401, json!({"message": "Bad credentials"}), UpstreamErrorKind::Refused),
        (502, json!({}), UpstreamErrorKind::Unavailable),
        (200, json!({"login": "no-id"}), UpstreamErrorKind::Invalid),
        (200, json!({"id": 1.5}), UpstreamErrorKind::Invalid),
        (200, json!({"id": ""}), UpstreamErrorKind::Invalid),
        (200, json!(["not", "an", "object"]), UpstreamErrorKind::Invalid),
    ] {
        idp.set(|k| {
            k.userinfo_status = status;
            k.userinfo = body.clone();
        });
        assert_eq!(kind(up.exchange("code-1", VERIFIER, REDIRECT, NONCE).await), expected, "{status} {body}");
    }
    // A string id is used as it is.
    idp.set(|k| {
        k.userinfo_status = 200;
        k.userinfo = json!({"id": "U123"});
    });
    assert_eq!(up.exchange("code-1", VERIFIER, REDIRECT, NONCE).await.unwrap().identity.subject, "U123");
}

#[tokio::test]
async fn oauth2_refresh_and_revoke() {
    let idp = MockIdp::start().await;
    let up = github(&idp);
    let mut tokens = UpstreamTokens::default();
    tokens.access_token = Some("gho_1".into());
    tokens.refresh_token = Some("ghr_1".into());
    tokens.scope = Some("read:user".into());
    idp.set(|k| k.token_response = json!({"access_token": "gho_2", "token_type": "bearer", "expires_in": 28800}));
    let merged = tokens.merged(up.refresh(&tokens).await.unwrap());
    assert_eq!(merged.access_token.as_deref(), Some("gho_2"));
    assert_eq!(merged.refresh_token.as_deref(), Some("ghr_1"));
    assert_eq!(merged.scope.as_deref(), Some("read:user"));
    assert_eq!(idp.last_token_request().unwrap().form["grant_type"], "refresh_token");

    up.revoke(&merged).await.unwrap();
    assert_eq!(idp.last_revocation_request().unwrap().form["token"], "ghr_1");
}
