//! SECURITY-CATALOGUE group F (token endpoint: PKCE, codes, refresh, client authentication;
//! F01–F20) and group G (revocation and metadata), against the in-process authorization
//! server on every store backend. F21–F29 need `private_key_jwt` / CIMD, which this server
//! does not offer; G07 is about the resource server's metadata (tests/metadata.rs).

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};
use support::authz::{
    BACKENDS, Browser, Env, ISSUER, REDIRECT, RESOURCE, Reply, basic, call_svc, code_for, dev_code, env_with_upstream,
    form_request, pkce, redeem, refresh, tokens, upstream_code, verify,
};
use tower_mcp_auth::server::{PeerAddr, UpstreamAccess, UpstreamAccessError};

/// Form fields and extra headers of a request.
type Form<'a> = Vec<(&'a str, &'a str)>;
type Headers<'a> = Vec<(&'a str, String)>;

async fn post(env: &Env, path: &str, form: &[(&str, &str)], headers: &[(&str, &str)]) -> Reply {
    env.post_form(path, form, headers).await
}

/// An RFC 6749 §5.2 error: status, JSON, `no-store`, the error code, a fixed description.
fn assert_oauth_error(r: &Reply, status: StatusCode, error: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(r.header("cache-control"), "no-store");
    assert_eq!(r.json()["error"], error, "{}", r.text());
    let description = r.json()["error_description"].as_str().unwrap_or_default().to_owned();
    assert!(description.bytes().all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\'), "{description}");
}

/// A successful token response (F11).
fn assert_token_response(r: &Reply) -> Value {
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(r.header("cache-control"), "no-store");
    let j = r.json();
    assert_eq!(j["token_type"], "Bearer");
    assert!(j["expires_in"].as_i64().is_some_and(|e| e > 0), "{j}");
    assert!(j["access_token"].as_str().is_some_and(|t| t.split('.').count() == 3));
    j
}

fn at(j: &Value) -> String {
    j["access_token"].as_str().unwrap().to_owned()
}

fn rt(j: &Value) -> String {
    j["refresh_token"].as_str().unwrap().to_owned()
}

// ---------------------------------------------------------------------------------------
// F. Token endpoint

#[tokio::test]
async fn f01_code_replay_revokes_what_it_issued() {
    for backend in BACKENDS {
        let env = Env::with(
            backend,
            support::authz::Options { configure: Box::new(|b| b.revocation_check(true)), ..Default::default() },
        )
        .await;
        let mut browser = Browser::default();
        let (client, code, verifier) = code_for(&env, &mut browser).await;
        let first = assert_token_response(&redeem(&env, &client, &code, &verifier).await);
        assert!(verify(&env, &at(&first)).await.is_ok());
        let again = redeem(&env, &client, &code, &verifier).await;
        assert_oauth_error(&again, StatusCode::BAD_REQUEST, "invalid_grant");
        // The first redemption's tokens are revoked: the RS refuses the access token, the
        // refresh token fails.
        let e = verify(&env, &at(&first)).await.unwrap_err();
        assert!(e.is_invalid_token(), "{backend:?}");
        assert_oauth_error(&refresh(&env, &client, &rt(&first)).await, StatusCode::BAD_REQUEST, "invalid_grant");
    }
}

#[tokio::test]
async fn f02_invalid_replay_does_not_revoke() {
    for backend in BACKENDS {
        let env = Env::with(
            backend,
            support::authz::Options { configure: Box::new(|b| b.revocation_check(true)), ..Default::default() },
        )
        .await;
        let mut browser = Browser::default();
        let (client, code, verifier) = code_for(&env, &mut browser).await;
        let first = assert_token_response(&redeem(&env, &client, &code, &verifier).await);
        let (wrong, _) = pkce();
        let other = env.register().await;
        // Replays by someone holding only the code: wrong verifier, no verifier, another client.
        for (c, v) in [(&client, wrong.as_str()), (&client, ""), (&other, verifier.as_str())] {
            let form = [
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("code_verifier", v),
                ("client_id", c.as_str()),
                ("redirect_uri", REDIRECT),
            ];
            assert_oauth_error(&post(&env, "/token", &form, &[]).await, StatusCode::BAD_REQUEST, "invalid_grant");
        }
        assert!(verify(&env, &at(&first)).await.is_ok(), "{backend:?}: first tokens not revoked");
        assert_token_response(&refresh(&env, &client, &rt(&first)).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f03_concurrent_redemptions_exactly_one_succeeds() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let mut browser = Browser::default();
        let (client, code, verifier) = code_for(&env, &mut browser).await;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("code_verifier", verifier.as_str()),
            ("client_id", client.as_str()),
            ("redirect_uri", REDIRECT),
        ];
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..20 {
            set.spawn(call_svc(env.svc.clone(), form_request("/token", &form, &[])));
        }
        let mut ok = 0;
        while let Some(r) = set.join_next().await {
            let r = r.unwrap();
            match r.status {
                StatusCode::OK => ok += 1,
                _ => assert_oauth_error(&r, StatusCode::BAD_REQUEST, "invalid_grant"),
            }
        }
        assert_eq!(ok, 1, "{backend:?}");
        assert!(env.count("refresh_tokens").await <= 1, "never two live refresh tokens");
    }
}

#[tokio::test]
async fn f04_code_lifetime() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let mut browser = Browser::default();
        let client = env.register().await;
        let (code, verifier) = dev_code(&env, &mut browser, &client, &[]).await;
        env.clock.advance(Duration::from_secs(59));
        assert_token_response(&redeem(&env, &client, &code, &verifier).await);
        let (code, verifier) = dev_code(&env, &mut browser, &client, &[]).await;
        env.clock.advance(Duration::from_secs(61));
        assert_oauth_error(&redeem(&env, &client, &code, &verifier).await, StatusCode::BAD_REQUEST, "invalid_grant");
    }
}

#[tokio::test]
async fn f05_code_of_another_client() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let mut browser = Browser::default();
        let (a, code, verifier) = code_for(&env, &mut browser).await;
        let b = env.register().await;
        let (b_conf, b_secret) = env.register_confidential("client_secret_basic").await;
        assert_oauth_error(&redeem(&env, &b, &code, &verifier).await, StatusCode::BAD_REQUEST, "invalid_grant");
        let form = [
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &verifier),
            ("redirect_uri", REDIRECT),
        ];
        let r = post(&env, "/token", &form, &[("authorization", &basic(&b_conf, &b_secret))]).await;
        assert_oauth_error(&r, StatusCode::BAD_REQUEST, "invalid_grant");
        // A's code is not burned.
        assert_token_response(&redeem(&env, &a, &code, &verifier).await);
    }
}

#[tokio::test]
async fn f06_verifier_checks() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let mut browser = Browser::default();
        let (client, code, verifier) = code_for(&env, &mut browser).await;
        let (wrong, _) = pkce();
        let plus = format!("{}+", &verifier[..verifier.len() - 1]);
        let cases = [
            (wrong.clone(), "invalid_grant"),
            (String::new(), "invalid_grant"),
            ("a".repeat(42), "invalid_request"),
            ("a".repeat(129), "invalid_request"),
            (plus, "invalid_request"),
            (format!("{verifier} "), "invalid_request"),
        ];
        for (v, error) in &cases {
            let r = redeem(&env, &client, &code, v).await;
            assert_oauth_error(&r, StatusCode::BAD_REQUEST, error);
        }
        // Boundaries of the grammar are accepted (and fail only the comparison).
        for v in ["a".repeat(43), "~".repeat(128)] {
            assert_oauth_error(&redeem(&env, &client, &code, &v).await, StatusCode::BAD_REQUEST, "invalid_grant");
        }
        // None of these burned the code.
        assert_token_response(&redeem(&env, &client, &code, &verifier).await);
    }
}

/// F07: a PKCE downgrade needs a code issued without a challenge; the authorization endpoint
/// never issues one (E06), so every code carries a challenge and a verifier is always checked.
#[tokio::test]
async fn f07_no_code_without_challenge_so_no_downgrade() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let client = env.register().await;
        let r = Browser::default()
            .get(&env, &support::authz::authorize_query(&client, "", "s", &[("code_challenge_method", "")]))
            .await;
        assert_eq!(r.location_param("error").as_deref(), Some("invalid_request"), "{backend:?}");
        assert_eq!(env.count("codes").await, 0);
        // A verifier for a code bound to another challenge is refused.
        let (code, _) = dev_code(&env, &mut Browser::default(), &client, &[]).await;
        let (other, _) = pkce();
        assert_oauth_error(&redeem(&env, &client, &code, &other).await, StatusCode::BAD_REQUEST, "invalid_grant");
    }
}

#[tokio::test]
async fn f08_redirect_uri_at_token_must_match() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let mut browser = Browser::default();
        let client = env.register().await;
        let (code, verifier) = dev_code(&env, &mut browser, &client, &[]).await;
        for bad in ["http://127.0.0.1:53682/callback/", "http://127.0.0.1:9999/callback", "https://evil.example/cb"] {
            let form = [
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("code_verifier", &verifier),
                ("client_id", &client),
                ("redirect_uri", bad),
            ];
            assert_oauth_error(&post(&env, "/token", &form, &[]).await, StatusCode::BAD_REQUEST, "invalid_grant");
        }
        // Named at authorize: required at token (RFC 6749 §4.1.3).
        let without = [
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &verifier),
            ("client_id", &client),
        ];
        assert_oauth_error(&post(&env, "/token", &without, &[]).await, StatusCode::BAD_REQUEST, "invalid_grant");
        assert_token_response(&redeem(&env, &client, &code, &verifier).await);
        // Omitted at authorize (one registered URI) and at token: fine.
        let (code, verifier) = dev_code(&env, &mut browser, &client, &[("redirect_uri", "")]).await;
        let without = [
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &verifier),
            ("client_id", &client),
        ];
        assert_token_response(&post(&env, "/token", &without, &[]).await);
    }
}

#[tokio::test]
async fn f09_unsupported_grant_types() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let client = env.register().await;
        let (conf, secret) = env.register_confidential("client_secret_basic").await;
        for gt in [
            "password",
            "implicit",
            "client_credentials",
            "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "urn:ietf:params:oauth:grant-type:device_code",
            "unknown",
            "AUTHORIZATION_CODE",
        ] {
            let form = [("grant_type", gt), ("client_id", client.as_str()), ("username", "alice"), ("password", "pw")];
            assert_oauth_error(
                &post(&env, "/token", &form, &[]).await,
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
            );
            let r = post(&env, "/token", &[("grant_type", gt)], &[("authorization", &basic(&conf, &secret))]).await;
            assert_oauth_error(&r, StatusCode::BAD_REQUEST, "unsupported_grant_type");
        }
        assert_eq!(env.count("refresh_tokens").await, 0, "{backend:?}");
    }
}

#[tokio::test]
async fn f10_request_shape() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let mut browser = Browser::default();
        let (client, code, verifier) = code_for(&env, &mut browser).await;
        let get = env
            .call(
                Request::get(format!("/token?grant_type=authorization_code&code={code}"))
                    .body(Full::default())
                    .unwrap(),
            )
            .await;
        assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED, "{backend:?}");
        assert!(get.header("allow").contains("POST"));
        let json_body =
            json!({"grant_type": "authorization_code", "code": code, "code_verifier": verifier, "client_id": client});
        assert_oauth_error(&env.post_json("/token", &json_body).await, StatusCode::BAD_REQUEST, "invalid_request");
        let big = format!("grant_type=authorization_code&code={code}&pad={}", "a".repeat(65 * 1024));
        let req = Request::post("/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(big)))
            .unwrap();
        assert_oauth_error(&env.call(req).await, StatusCode::PAYLOAD_TOO_LARGE, "invalid_request");
        for dup in ["code", "code_verifier", "grant_type", "client_id", "redirect_uri"] {
            let mut form = vec![
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("code_verifier", verifier.as_str()),
                ("client_id", client.as_str()),
                ("redirect_uri", REDIRECT),
            ];
            let value = form.iter().find(|(k, _)| *k == dup).unwrap().1;
            form.push((dup, value));
            assert_oauth_error(&post(&env, "/token", &form, &[]).await, StatusCode::BAD_REQUEST, "invalid_request");
        }
        // None of that used the code.
        assert_token_response(&redeem(&env, &client, &code, &verifier).await);
    }
}

#[tokio::test]
async fn f11_token_responses_carry_only_our_tokens() {
    for backend in BACKENDS {
        let (env, up) = env_with_upstream(backend, |b| b).await;
        let mut browser = Browser::default();
        let client = env.register().await;
        let (code, verifier) = upstream_code(&env, &up, &mut browser, &client, &[]).await;
        let first = redeem(&env, &client, &code, &verifier).await;
        let j = assert_token_response(&first);
        let second = refresh(&env, &client, &rt(&j)).await;
        let j2 = assert_token_response(&second);
        assert_eq!(j2["scope"], "mcp:read");
        let minted = up.minted.lock().unwrap().clone();
        assert!(minted.len() >= 3, "the upstream issued tokens");
        for r in [&first, &second] {
            let body = r.text();
            for t in &minted {
                assert!(!body.contains(t.as_str()), "{backend:?}: upstream token in the token response");
            }
            let j = r.json();
            for k in j.as_object().unwrap().keys() {
                assert!(
                    ["access_token", "token_type", "expires_in", "scope", "refresh_token"].contains(&k.as_str()),
                    "{k}"
                );
            }
        }
        // Our token: our issuer, audience the resource.
        let v = verify(&env, &at(&j)).await.unwrap();
        assert_eq!(v.issuer(), Some(ISSUER));
        assert_eq!(v.audience(), [RESOURCE]);
    }
}

#[tokio::test]
async fn f12_refresh_reuse_revokes_the_family() {
    for backend in BACKENDS {
        let env = Env::with(
            backend,
            support::authz::Options { configure: Box::new(|b| b.revocation_check(true)), ..Default::default() },
        )
        .await;
        let mut browser = Browser::default();
        let (client, code, verifier) = code_for(&env, &mut browser).await;
        let j1 = assert_token_response(&redeem(&env, &client, &code, &verifier).await);
        let j2 = assert_token_response(&refresh(&env, &client, &rt(&j1)).await);
        assert_ne!(rt(&j1), rt(&j2));
        assert!(verify(&env, &at(&j2)).await.is_ok());
        assert_oauth_error(&refresh(&env, &client, &rt(&j1)).await, StatusCode::BAD_REQUEST, "invalid_grant");
        assert_oauth_error(&refresh(&env, &client, &rt(&j2)).await, StatusCode::BAD_REQUEST, "invalid_grant");
        for t in [at(&j1), at(&j2)] {
            assert!(verify(&env, &t).await.unwrap_err().is_invalid_token(), "{backend:?}: access tokens of the grant");
        }
        // Another grant of the same client is unaffected.
        let (code, verifier) = dev_code(&env, &mut browser, &client, &[]).await;
        let j3 = assert_token_response(&redeem(&env, &client, &code, &verifier).await);
        assert_token_response(&refresh(&env, &client, &rt(&j3)).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f13_concurrent_refreshes_never_two_successors() {
    for backend in BACKENDS {
        for n in [2, 10] {
            let env = Env::new(backend).await;
            let mut browser = Browser::default();
            let (client, code, verifier) = code_for(&env, &mut browser).await;
            let j = assert_token_response(&redeem(&env, &client, &code, &verifier).await);
            let rt1 = rt(&j);
            let form =
                [("grant_type", "refresh_token"), ("refresh_token", rt1.as_str()), ("client_id", client.as_str())];
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..n {
                set.spawn(call_svc(env.svc.clone(), form_request("/token", &form, &[])));
            }
            let mut successors = Vec::new();
            while let Some(r) = set.join_next().await {
                let r = r.unwrap();
                if r.status == StatusCode::OK {
                    successors.push(rt(&r.json()));
                } else {
                    assert_oauth_error(&r, StatusCode::BAD_REQUEST, "invalid_grant");
                }
            }
            assert_eq!(successors.len(), 1, "{backend:?} n={n}");
            // Policy: a racing refresh with the same token counts as reuse and may revoke the
            // family; at most one successor is ever alive.
            assert!(env.count("refresh_tokens").await <= 1, "{backend:?} n={n}");
            let live = {
                let mut live = 0;
                for s in &successors {
                    if refresh(&env, &client, s).await.status == StatusCode::OK {
                        live += 1;
                    }
                }
                live
            };
            assert!(live <= 1);
        }
    }
}

#[tokio::test]
async fn f14_refresh_scope_can_only_narrow() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let mut browser = Browser::default();
        let client = env.register().await;
        let (code, verifier) = dev_code(&env, &mut browser, &client, &[("scope", "mcp:read")]).await;
        let narrow = assert_token_response(&redeem(&env, &client, &code, &verifier).await);
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt(&narrow)),
            ("client_id", &client),
            ("scope", "mcp:read mcp:admin"),
        ];
        assert_oauth_error(&post(&env, "/token", &form, &[]).await, StatusCode::BAD_REQUEST, "invalid_scope");
        // The refused attempt did not consume the refresh token.
        assert_token_response(&refresh(&env, &client, &rt(&narrow)).await);

        let (code, verifier) = dev_code(&env, &mut browser, &client, &[("scope", "mcp:read mcp:admin")]).await;
        let wide = assert_token_response(&redeem(&env, &client, &code, &verifier).await);
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt(&wide)),
            ("client_id", &client),
            ("scope", "mcp:read"),
        ];
        let narrowed = assert_token_response(&post(&env, "/token", &form, &[]).await);
        assert_eq!(narrowed["scope"], "mcp:read");
        let v = verify(&env, &at(&narrowed)).await.unwrap();
        assert!(v.scopes().contains("mcp:read") && !v.scopes().contains("mcp:admin"), "{backend:?}");
        // The new refresh token keeps the full scope.
        let full = assert_token_response(&refresh(&env, &client, &rt(&narrowed)).await);
        let v = verify(&env, &at(&full)).await.unwrap();
        assert!(v.scopes().contains("mcp:read") && v.scopes().contains("mcp:admin"), "{backend:?}: {}", full["scope"]);
    }
}

#[tokio::test]
async fn f15_refresh_token_of_another_client() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let mut browser = Browser::default();
        let (a, code, verifier) = code_for(&env, &mut browser).await;
        let j = assert_token_response(&redeem(&env, &a, &code, &verifier).await);
        let b = env.register().await;
        let (c, secret) = env.register_confidential("client_secret_post").await;
        assert_oauth_error(&refresh(&env, &b, &rt(&j)).await, StatusCode::BAD_REQUEST, "invalid_grant");
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt(&j)),
            ("client_id", &c),
            ("client_secret", &secret),
        ];
        assert_oauth_error(&post(&env, "/token", &form, &[]).await, StatusCode::BAD_REQUEST, "invalid_grant");
        // Not revoked.
        assert_token_response(&refresh(&env, &a, &rt(&j)).await);
    }
}

#[tokio::test]
async fn f16_refresh_after_revocation() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let mut browser = Browser::default();
        let (client, code, verifier) = code_for(&env, &mut browser).await;
        let j = assert_token_response(&redeem(&env, &client, &code, &verifier).await);
        let r = post(&env, "/revoke", &[("token", &rt(&j)), ("client_id", &client)], &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_oauth_error(&refresh(&env, &client, &rt(&j)).await, StatusCode::BAD_REQUEST, "invalid_grant");
        // Revoking the grant (through another of its refresh tokens) ends the others too.
        let (code, verifier) = dev_code(&env, &mut browser, &client, &[]).await;
        let j1 = assert_token_response(&redeem(&env, &client, &code, &verifier).await);
        let j2 = assert_token_response(&refresh(&env, &client, &rt(&j1)).await);
        let _ = refresh(&env, &client, &rt(&j1)).await; // reuse: the grant is revoked
        assert_oauth_error(&refresh(&env, &client, &rt(&j2)).await, StatusCode::BAD_REQUEST, "invalid_grant");
        // And an expired one.
        let (code, verifier) = dev_code(&env, &mut browser, &client, &[]).await;
        let j3 = assert_token_response(&redeem(&env, &client, &code, &verifier).await);
        env.clock.advance(Duration::from_secs(30 * 24 * 3600 + 1));
        assert_oauth_error(&refresh(&env, &client, &rt(&j3)).await, StatusCode::BAD_REQUEST, "invalid_grant");
    }
}

#[tokio::test]
async fn f17_bad_basic_credentials() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let (id, secret) = env.register_confidential("client_secret_basic").await;
        let b64 = |s: &str| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(s)
        };
        let form = [("grant_type", "refresh_token"), ("refresh_token", "unknown")];
        // Control: the right credentials get past client authentication.
        let ok = post(&env, "/token", &form, &[("authorization", &basic(&id, &secret))]).await;
        assert_oauth_error(&ok, StatusCode::BAD_REQUEST, "invalid_grant");
        for header in [
            basic(&id, "wrong-secret"),
            basic(&id, &secret[..secret.len() - 1]),
            basic(&id, ""),
            format!("Basic {}", b64(&id)),
            format!("Basic {}", b64(&format!("{id}{secret}"))),
            "Basic !!!not-base64!!!".to_owned(),
            format!("Basic {}", &b64(&format!("{id}:{secret}"))[1..]),
            format!("Basic {}", b64(&format!("{id}:{secret}%zz"))),
            format!("Basic {}", b64(&format!("{id}:%{secret}"))),
            format!("Basic {}", b64(&format!(":{secret}"))),
            "Basic".to_owned(),
        ] {
            let r = post(&env, "/token", &form, &[("authorization", &header)]).await;
            assert_oauth_error(&r, StatusCode::UNAUTHORIZED, "invalid_client");
            assert!(r.header("www-authenticate").starts_with("Basic"), "{backend:?} {header}: {:?}", r.headers);
        }
        // The same at the revocation endpoint.
        let r = post(&env, "/revoke", &[("token", "x")], &[("authorization", &basic(&id, "wrong"))]).await;
        assert_oauth_error(&r, StatusCode::UNAUTHORIZED, "invalid_client");
        assert!(r.header("www-authenticate").starts_with("Basic"));
    }
}

#[tokio::test]
async fn f18_two_authentication_methods() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let (id, secret) = env.register_confidential("client_secret_basic").await;
        let auth = basic(&id, &secret);
        let cases: Vec<Vec<(&str, &str)>> = vec![
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", "x"),
                ("client_id", &id),
                ("client_secret", &secret),
            ],
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", "x"),
                ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                ("client_assertion", "eyJhbGciOiJFUzI1NiJ9.e30.sig"),
            ],
        ];
        for form in &cases {
            let r = post(&env, "/token", form, &[("authorization", &auth)]).await;
            assert_oauth_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
            let r = post(&env, "/revoke", &[form.clone(), vec![("token", "x")]].concat(), &[("authorization", &auth)])
                .await;
            assert_oauth_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
        }
        // Post secret and assertion together, without Basic.
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", "x"),
            ("client_id", id.as_str()),
            ("client_secret", secret.as_str()),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", "eyJhbGciOiJFUzI1NiJ9.e30.sig"),
        ];
        assert_oauth_error(&post(&env, "/token", &form, &[]).await, StatusCode::BAD_REQUEST, "invalid_request");
    }
}

#[tokio::test]
async fn f19_confidential_client_with_only_its_id() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        for method in ["client_secret_basic", "client_secret_post"] {
            let (id, _) = env.register_confidential(method).await;
            let form = [("grant_type", "refresh_token"), ("refresh_token", "x"), ("client_id", id.as_str())];
            assert_oauth_error(&post(&env, "/token", &form, &[]).await, StatusCode::UNAUTHORIZED, "invalid_client");
            let r = post(&env, "/revoke", &[("token", "x"), ("client_id", &id)], &[]).await;
            assert_oauth_error(&r, StatusCode::UNAUTHORIZED, "invalid_client");
        }
    }
}

#[tokio::test]
async fn f20_unknown_client_and_wrong_secret_look_alike() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let (basic_id, _) = env.register_confidential("client_secret_basic").await;
        let (post_id, _) = env.register_confidential("client_secret_post").await;
        let unknown = "C0ffee-unknown-client-id-of-the-same-length";
        let form = [("grant_type", "refresh_token"), ("refresh_token", "x")];
        let a = post(&env, "/token", &form, &[("authorization", &basic(&basic_id, "wrong"))]).await;
        let b = post(&env, "/token", &form, &[("authorization", &basic(unknown, "wrong"))]).await;
        let post_form = |id| {
            [("grant_type", "refresh_token"), ("refresh_token", "x"), ("client_id", id), ("client_secret", "wrong")]
        };
        let c = post(&env, "/token", &post_form(post_id.as_str()), &[]).await;
        let d = post(&env, "/token", &post_form(unknown), &[]).await;
        for (x, y) in [(&a, &b), (&c, &d)] {
            assert_oauth_error(x, StatusCode::UNAUTHORIZED, "invalid_client");
            assert_eq!((x.status, &x.body), (y.status, &y.body), "{backend:?}: identical answers");
            assert_eq!(x.header("www-authenticate"), y.header("www-authenticate"));
        }
        // Comparable latency (both paths hash and compare; interleaved medians).
        let (mut known, mut unknown_t) = (Vec::new(), Vec::new());
        for _ in 0..40 {
            let t = Instant::now();
            post(&env, "/token", &form, &[("authorization", &basic(&basic_id, "wrong"))]).await;
            known.push(t.elapsed());
            let t = Instant::now();
            post(&env, "/token", &form, &[("authorization", &basic(unknown, "wrong"))]).await;
            unknown_t.push(t.elapsed());
        }
        known.sort();
        unknown_t.sort();
        let (k, u) = (known[20], unknown_t[20]);
        let (hi, lo) = (k.max(u), k.min(u));
        assert!(hi < lo * 4 || hi - lo < Duration::from_millis(2), "{backend:?}: medians known {k:?} vs unknown {u:?}");
    }
}

// ---------------------------------------------------------------------------------------
// G. Revocation and metadata

#[tokio::test]
async fn g01_revoking_a_refresh_token_ends_the_grant() {
    for backend in BACKENDS {
        for check in [true, false] {
            let (env, up) = env_with_upstream(backend, move |b| b.revocation_check(check)).await;
            let mut browser = Browser::default();
            let client = env.register().await;
            let (code, verifier) = upstream_code(&env, &up, &mut browser, &client, &[]).await;
            let (at, rt) = tokens(&env, &client, &code, &verifier).await;
            let access = verify(&env, &at).await.unwrap();
            let upstream = access.extension::<UpstreamAccess>().unwrap().clone();
            assert!(upstream.access_token().await.unwrap().starts_with("up-at-"));
            assert_eq!(env.count("upstream_tokens").await, 1);
            let r = post(
                &env,
                "/revoke",
                &[("token", &rt), ("token_type_hint", "refresh_token"), ("client_id", &client)],
                &[],
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{backend:?}");
            assert_eq!(r.header("cache-control"), "no-store");
            assert_oauth_error(&refresh(&env, &client, &rt).await, StatusCode::BAD_REQUEST, "invalid_grant");
            // Upstream tokens: deleted here and revoked at the provider.
            assert_eq!(env.count("upstream_tokens").await, 0, "{backend:?}");
            assert_eq!(up.revoked.lock().unwrap().len(), 1);
            assert_eq!(upstream.access_token().await, Err(UpstreamAccessError::Revoked));
            if check {
                assert!(verify(&env, &at).await.unwrap_err().is_invalid_token(), "{backend:?}: revocation check");
            } else {
                // Documented: without the revocation check the access token lives out its
                // lifetime (10 minutes) and no longer.
                assert!(verify(&env, &at).await.is_ok());
                env.clock.advance(Duration::from_secs(600 + 61));
                assert!(verify(&env, &at).await.is_err(), "{backend:?}: expired");
            }
        }
    }
}

#[tokio::test]
async fn g01_revoking_an_access_token() {
    for backend in BACKENDS {
        let env = Env::with(
            backend,
            support::authz::Options { configure: Box::new(|b| b.revocation_check(true)), ..Default::default() },
        )
        .await;
        let mut browser = Browser::default();
        let (client, code, verifier) = code_for(&env, &mut browser).await;
        let (at, rt) = tokens(&env, &client, &code, &verifier).await;
        let r = post(&env, "/revoke", &[("token", &at), ("client_id", &client)], &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(verify(&env, &at).await.unwrap_err().is_invalid_token(), "{backend:?}");
        // The grant itself (its refresh token) stays.
        assert_eq!(refresh(&env, &client, &rt).await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn g02_garbage_and_repeated_revocations_are_200() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let mut browser = Browser::default();
        let (client, code, verifier) = code_for(&env, &mut browser).await;
        let (at, rt) = tokens(&env, &client, &code, &verifier).await;
        let before = env.census().await;
        for token in ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", &"x".repeat(5000), "é"] {
            for hint in ["", "access_token", "refresh_token", "unsupported"] {
                let r =
                    post(&env, "/revoke", &[("token", token), ("token_type_hint", hint), ("client_id", &client)], &[])
                        .await;
                assert_eq!(r.status, StatusCode::OK, "{backend:?} {token:.20} {hint}");
                assert_eq!(r.body, Bytes::from_static(b"{}"));
            }
        }
        assert_eq!(env.census().await, before, "nothing stored for garbage");
        for _ in 0..2 {
            for t in [&rt, &at] {
                let r = post(&env, "/revoke", &[("token", t), ("client_id", &client)], &[]).await;
                assert_eq!(r.status, StatusCode::OK);
                assert_eq!(r.body, Bytes::from_static(b"{}"));
            }
        }
        // Missing token: a malformed request.
        assert_oauth_error(
            &post(&env, "/revoke", &[("client_id", &client)], &[]).await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        );
    }
}

#[tokio::test]
async fn g03_revoking_another_clients_token_changes_nothing() {
    for backend in BACKENDS {
        let env = Env::with(
            backend,
            support::authz::Options { configure: Box::new(|b| b.revocation_check(true)), ..Default::default() },
        )
        .await;
        let mut browser = Browser::default();
        let (b, code, verifier) = code_for(&env, &mut browser).await;
        let (at, rt) = tokens(&env, &b, &code, &verifier).await;
        let a = env.register().await;
        let garbage = post(&env, "/revoke", &[("token", "garbage"), ("client_id", &a)], &[]).await;
        let before = env.census().await;
        for t in [&rt, &at] {
            let r = post(&env, "/revoke", &[("token", t), ("client_id", &a)], &[]).await;
            assert_eq!((r.status, &r.body), (garbage.status, &garbage.body), "{backend:?}: no existence oracle");
        }
        assert_eq!(env.census().await, before, "nothing changed");
        assert!(verify(&env, &at).await.is_ok(), "{backend:?}: B's access token still valid");
        assert_token_response(&refresh(&env, &b, &rt).await);
    }
}

#[tokio::test]
async fn g04_confidential_client_must_authenticate_to_revoke() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let (id, secret) = env.register_confidential("client_secret_basic").await;
        let r = post(&env, "/revoke", &[("token", "x"), ("client_id", &id)], &[]).await;
        assert_oauth_error(&r, StatusCode::UNAUTHORIZED, "invalid_client");
        let r = post(&env, "/revoke", &[("token", "x")], &[]).await;
        assert_oauth_error(&r, StatusCode::UNAUTHORIZED, "invalid_client");
        let r = post(&env, "/revoke", &[("token", "x")], &[("authorization", &basic(&id, &secret))]).await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: control");
    }
}

#[tokio::test]
async fn g05_revocation_rate_limit() {
    for backend in BACKENDS {
        let env = Env::with(
            backend,
            support::authz::Options { configure: Box::new(|b| b.revocations_per_minute(5)), ..Default::default() },
        )
        .await;
        let mut browser = Browser::default();
        let (client, code, verifier) = code_for(&env, &mut browser).await;
        let (_, rt) = tokens(&env, &client, &code, &verifier).await;
        let before = env.census().await;
        let peer = |ip: [u8; 4], token: &str| {
            let mut req = form_request("/revoke", &[("token", token), ("client_id", &client)], &[]);
            req.extensions_mut().insert(PeerAddr(std::net::IpAddr::from(ip)));
            req
        };
        let mut statuses = Vec::new();
        for i in 0..50 {
            statuses.push(env.call(peer([192, 0, 2, 1], &format!("random-token-{i}"))).await);
        }
        let ok = statuses.iter().filter(|r| r.status == StatusCode::OK).count();
        assert_eq!(ok, 5, "{backend:?}");
        for r in statuses.iter().skip(5) {
            assert_oauth_error(r, StatusCode::TOO_MANY_REQUESTS, "invalid_request");
            // Five a minute: the next one in 12 s.
            assert_eq!(r.header("retry-after"), "12");
        }
        // The limited address cannot revoke even a real token; the store is untouched.
        assert_eq!(env.call(peer([192, 0, 2, 1], &rt)).await.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(env.census().await, before, "{backend:?}: store unaffected");
        assert_token_response(&refresh(&env, &client, &rt).await);
        // The limit is per address.
        assert_eq!(env.call(peer([192, 0, 2, 2], "random")).await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn g06_metadata_and_advertised_auth_methods() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let r = env.get("/.well-known/oauth-authorization-server").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("content-type"), "application/json");
        let m = r.json();
        assert_eq!(m["issuer"], ISSUER);
        for k in
            ["authorization_endpoint", "token_endpoint", "revocation_endpoint", "registration_endpoint", "jwks_uri"]
        {
            let v = m[k].as_str().unwrap_or_else(|| panic!("{k}"));
            let u = url::Url::parse(v).unwrap();
            assert_eq!(u.scheme(), "https", "{k}");
            assert!(v.starts_with(&format!("{ISSUER}/")), "{k}: {v}");
        }
        assert_eq!(m["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(m["response_types_supported"], json!(["code"]));
        assert_eq!(m["authorization_response_iss_parameter_supported"], true);
        let grants: Vec<&str> =
            m["grant_types_supported"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert!(
            !grants.contains(&"password") && !grants.contains(&"implicit") && !grants.contains(&"client_credentials")
        );
        let methods: Vec<String> = m["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(methods, ["none", "client_secret_basic", "client_secret_post"]);
        // SPEC 8: the OpenID Connect alias has the OIDC-required members; SPEC 26: a spoofed
        // Host changes nothing.
        let oidc = env.get("/.well-known/openid-configuration").await.json();
        assert_eq!(oidc["issuer"], ISSUER);
        for k in [
            "jwks_uri",
            "subject_types_supported",
            "id_token_signing_alg_values_supported",
            "code_challenge_methods_supported",
        ] {
            assert!(!oidc[k].is_null(), "{k}");
        }
        let spoofed = env
            .call(
                Request::get("/.well-known/oauth-authorization-server")
                    .header("host", "evil.example")
                    .header("x-forwarded-host", "evil.example")
                    .body(Full::default())
                    .unwrap(),
            )
            .await;
        assert_eq!(spoofed.json(), m);

        // Every advertised method works (at /revoke and /token)...
        let public = env.register().await;
        let (b_id, b_secret) = env.register_confidential("client_secret_basic").await;
        let (p_id, p_secret) = env.register_confidential("client_secret_post").await;
        let rt_form = [("grant_type", "refresh_token"), ("refresh_token", "x")];
        let works: Vec<(Form, Headers)> = vec![
            (vec![("client_id", &public)], vec![]),
            (vec![], vec![("authorization", basic(&b_id, &b_secret))]),
            (vec![("client_id", &p_id), ("client_secret", &p_secret)], vec![]),
        ];
        for (form, headers) in &works {
            let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let r = post(&env, "/revoke", &[form.clone(), vec![("token", "x")]].concat(), &hs).await;
            assert_eq!(r.status, StatusCode::OK, "{backend:?} {form:?}");
            let r = post(&env, "/token", &[form.clone(), rt_form.to_vec()].concat(), &hs).await;
            assert_oauth_error(&r, StatusCode::BAD_REQUEST, "invalid_grant");
        }
        // ...and everything else is refused: JWT assertions, the other secret method than the
        // registered one, a secret for a public client.
        let assertion = [
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", "eyJhbGciOiJIUzI1NiJ9.e30.sig"),
        ];
        let refused: Vec<(Form, Headers)> = vec![
            ([vec![("client_id", b_id.as_str())], assertion.to_vec()].concat(), vec![]),
            (assertion.to_vec(), vec![]),
            (vec![("client_id", &b_id), ("client_secret", &b_secret)], vec![]),
            (vec![], vec![("authorization", basic(&p_id, &p_secret))]),
            (vec![("client_id", &public), ("client_secret", "anything")], vec![]),
            (vec![], vec![("authorization", basic(&public, ""))]),
        ];
        for (form, headers) in &refused {
            let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let r = post(&env, "/token", &[form.clone(), rt_form.to_vec()].concat(), &hs).await;
            assert_oauth_error(&r, StatusCode::UNAUTHORIZED, "invalid_client");
        }
        for method in ["private_key_jwt", "client_secret_jwt", "tls_client_auth"] {
            let r = env
                .post_json("/register", &json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": method}))
                .await;
            assert_oauth_error(&r, StatusCode::BAD_REQUEST, "invalid_client_metadata");
        }
    }
}

/// SPEC 14 (RFC 8707): the token request's `resource` must be the authorized one, at the code
/// and the refresh grant; a refused request consumes nothing.
#[tokio::test]
async fn spec14_resource_at_the_token_endpoint() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let mut browser = Browser::default();
        let (client, code, verifier) = code_for(&env, &mut browser).await;
        for resource in ["https://other.example/mcp", "https://auth.example.com/mcp/"] {
            let form = [
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("code_verifier", verifier.as_str()),
                ("client_id", client.as_str()),
                ("redirect_uri", REDIRECT),
                ("resource", resource),
            ];
            assert_oauth_error(&post(&env, "/token", &form, &[]).await, StatusCode::BAD_REQUEST, "invalid_target");
        }
        let j = assert_token_response(&redeem(&env, &client, &code, &verifier).await);
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt(&j)),
            ("client_id", &client),
            ("resource", "https://other.example/mcp"),
        ];
        assert_oauth_error(&post(&env, "/token", &form, &[]).await, StatusCode::BAD_REQUEST, "invalid_target");
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt(&j)),
            ("client_id", &client),
            ("resource", RESOURCE),
        ];
        let j2 = assert_token_response(&post(&env, "/token", &form, &[]).await);
        assert_eq!(verify(&env, &at(&j2)).await.unwrap().audience(), [RESOURCE], "{backend:?}");
    }
}

/// SPEC 17: the issuer must be https (http only on loopback, or with the `insecure` opt-in).
#[tokio::test]
async fn spec17_https_issuer_required() {
    use std::sync::Arc;
    use tower_mcp_auth::ProtectedResource;
    use tower_mcp_auth::server::AuthorizationServer;
    use tower_mcp_auth::store::MemoryStore;
    use tower_mcp_auth::store::crypto::EncryptionKeys;
    let build = |issuer: &'static str, insecure: bool| async move {
        let resource = ProtectedResource::builder(format!("{issuer}/mcp"))
            .authorization_server(issuer)
            .scopes_supported(["mcp:read"])
            .insecure_allow_http()
            .build()
            .unwrap();
        let mut b = AuthorizationServer::builder(issuer, resource)
            .store(Arc::new(MemoryStore::new()))
            .encryption_keys(EncryptionKeys::generate())
            .upstream(Arc::new(tower_mcp_auth::upstream::DevLogin::new("alice")));
        if insecure {
            b = b.insecure_allow_http();
        }
        b.build().await.map(|s| s.issuer().to_owned())
    };
    let err = build("http://auth.example.com", false).await.unwrap_err();
    assert_eq!(err.kind(), tower_mcp_auth::ConfigErrorKind::InsecureUrl, "{err}");
    assert!(build("http://127.0.0.1:8080", false).await.is_ok());
    assert!(build("http://auth.example.com", true).await.is_ok());
    assert!(build("https://auth.example.com", false).await.is_ok());
}
