//! Several authorization-server instances on one store, in process: each instance has its
//! own caches, rate limiters and key ring, and shares only the store, as replicas behind a
//! load balancer do. Every test runs on every backend (memory, SQLite, Redis); the
//! two-process version with the TypeScript SDK client is tests/e2e_instances.rs.
//!
//! Catalogue rows: F03 and F13 across instances, F12 and K15 (revocation seen by the other
//! instance), and the shared signing keys (issued at one instance, verified at any).

mod support;

use std::time::Duration;

use base64::Engine;
use http::StatusCode;
use serde_json::Value;
use support::authz::{
    BACKENDS, Browser, Env, Faults, Op, Options, REDIRECT, Reply, call_svc, code_for, dev_code, form_request, refresh,
    tokens, verify,
};
use tower_mcp_auth::verify::TokenVerifier;

const HOUR: Duration = Duration::from_secs(3600);

fn kid(jwt: &str) -> String {
    let header = jwt.split('.').next().unwrap();
    let header: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

async fn jwks_kids(env: &Env) -> Vec<String> {
    let r = env.get("/jwks.json").await;
    assert_eq!(r.status, StatusCode::OK);
    let mut kids: Vec<String> =
        r.json()["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect();
    kids.sort();
    kids
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// A fresh access token from `env` for `client` (dev login, then the code).
async fn fresh_token(env: &Env, browser: &mut Browser, client: &str) -> (String, String) {
    let (code, verifier) = dev_code(env, browser, client, &[]).await;
    tokens(env, client, &code, &verifier).await
}

fn status_counts(replies: &[Reply]) -> (usize, usize) {
    let ok = replies.iter().filter(|r| r.status == StatusCode::OK).count();
    let invalid =
        replies.iter().filter(|r| r.status == StatusCode::BAD_REQUEST && r.json()["error"] == "invalid_grant").count();
    (ok, invalid)
}

#[tokio::test]
async fn every_instance_signs_and_verifies_with_the_same_keys() {
    for backend in BACKENDS {
        let a = Env::new(backend).await;
        let b = a.sibling(Options::default()).await.unwrap();
        assert_eq!(a.server.signing_keys().kids(), b.server.signing_keys().kids(), "{backend:?}: one ring");
        assert_eq!(jwks_kids(&a).await, jwks_kids(&b).await);
        let mut browser = Browser::default();
        let (client, code, verifier) = code_for(&a, &mut browser).await;
        // Authorized at A, redeemed at B, verified at both.
        let (at, rt) = tokens(&b, &client, &code, &verifier).await;
        assert!(verify(&a, &at).await.is_ok(), "{backend:?}");
        assert!(verify(&b, &at).await.is_ok(), "{backend:?}");
        // Refreshed at A with B's refresh token.
        assert_eq!(refresh(&a, &client, &rt).await.status, StatusCode::OK, "{backend:?}");
    }
}

#[tokio::test]
async fn every_step_of_a_sign_in_can_land_on_another_instance() {
    for backend in BACKENDS {
        let a = Env::new(backend).await;
        let b = a.sibling(Options::default()).await.unwrap();
        let client = b.register().await;
        let (verifier, challenge) = support::authz::pkce();
        let mut browser = Browser::default();
        // authorize at A, consent at B, login page at A, login at B, callback at A, token at B.
        let page = browser.get(&a, &support::authz::authorize_query(&client, &challenge, "st-x", &[])).await;
        assert_eq!(page.status, StatusCode::OK, "{backend:?}: {}", page.text());
        let f = support::authz::form_fields(&page.text());
        let r = browser
            .post(&b, "/consent", &[("request", &f["request"]), ("csrf", &f["csrf"]), ("decision", "approve")])
            .await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{backend:?}: {}", r.text());
        let loc = r.location().unwrap();
        let login = browser.get(&a, &format!("{}?{}", loc.path(), loc.query().unwrap_or(""))).await;
        let f = support::authz::form_fields(&login.text());
        let form = [("state", &f["state"]), ("nonce", &f["nonce"]), ("code_challenge", &f["code_challenge"])];
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = browser.post(&b, "/dev-login", &form).await;
        let loc = r.location().expect("redirect to the callback");
        let r = browser.get(&a, &format!("{}?{}", loc.path(), loc.query().unwrap_or(""))).await;
        let code = r.location_param("code").unwrap_or_else(|| panic!("{backend:?}: no code: {}", r.text()));
        let (at, _) = tokens(&b, &client, &code, &verifier).await;
        assert!(verify(&a, &at).await.is_ok(), "{backend:?}");
    }
}

#[tokio::test]
async fn a_rotation_at_one_instance_reaches_the_others_without_logging_anyone_out() {
    for backend in BACKENDS {
        let a = Env::new(backend).await;
        let b = a.sibling(Options::default()).await.unwrap();
        let c = a.sibling(Options::default()).await.unwrap();
        let old = a.server.signing_keys().kids()[0].clone();
        let mut browser = Browser::default();
        let client = a.register().await;
        let (before, _) = fresh_token(&a, &mut browser, &client).await;
        assert_eq!(kid(&before), old);

        a.server.rotate_signing_key(HOUR).await.unwrap();
        let new = a.server.signing_keys().kids()[0].clone();
        assert_ne!(new, old);
        let (after, _) = fresh_token(&a, &mut browser, &client).await;
        assert_eq!(kid(&after), new, "{backend:?}: A signs with the new key");

        // B has never seen the new key: the first token signed with it makes B reload.
        assert!(verify(&b, &after).await.is_ok(), "{backend:?}: unknown kid → reload → verified");
        assert_eq!(b.server.signing_keys().kids()[0], new);
        assert!(verify(&b, &before).await.is_ok(), "{backend:?}: tokens of the previous key still verify");

        // C has not been asked about the new key yet: it keeps signing with the previous one,
        // which every instance still accepts during the overlap...
        let (from_c, _) = fresh_token(&c, &mut browser, &client).await;
        assert_eq!(kid(&from_c), old, "{backend:?}: within the refresh interval");
        assert!(verify(&a, &from_c).await.is_ok());
        // ...and switches once its refresh interval has passed, publishing the new key.
        c.clock.advance(Duration::from_secs(61));
        assert_eq!(jwks_kids(&c).await, sorted(vec![old.clone(), new.clone()]), "{backend:?}");
        let (from_c, _) = fresh_token(&c, &mut browser, &client).await;
        assert_eq!(kid(&from_c), new, "{backend:?}");
        assert!(verify(&b, &from_c).await.is_ok());

        // After the overlap the previous key is gone everywhere (tokens it signed have expired).
        a.clock.advance(HOUR);
        for env in [&a, &b, &c] {
            assert_eq!(jwks_kids(env).await, vec![new.clone()], "{backend:?}");
        }
    }
}

#[tokio::test]
async fn two_rotations_at_once_at_two_instances_both_land() {
    for backend in BACKENDS {
        let a = Env::new(backend).await;
        let b = a.sibling(Options::default()).await.unwrap();
        let original = a.server.signing_keys().kids()[0].clone();
        let (ra, rb) = tokio::join!(a.server.rotate_signing_key(HOUR), b.server.rotate_signing_key(HOUR));
        ra.unwrap();
        rb.unwrap();
        // Both new keys and the original are in the stored ring: after a refresh interval both
        // instances publish all three, and each instance's tokens verify at the other.
        a.clock.advance(Duration::from_secs(61));
        let kids_a = jwks_kids(&a).await;
        let kids_b = jwks_kids(&b).await;
        assert_eq!(kids_a.len(), 3, "{backend:?}: {kids_a:?}");
        assert_eq!(kids_a, kids_b, "{backend:?}");
        assert!(kids_a.contains(&original));
        let mut browser = Browser::default();
        let client = a.register().await;
        let (from_a, _) = fresh_token(&a, &mut browser, &client).await;
        let (from_b, _) = fresh_token(&b, &mut browser, &client).await;
        assert_eq!(kid(&from_a), kid(&from_b), "{backend:?}: one signing key again");
        assert!(verify(&b, &from_a).await.is_ok() && verify(&a, &from_b).await.is_ok());
    }
}

#[tokio::test]
async fn forged_kids_read_the_store_at_most_once_per_five_seconds() {
    for backend in BACKENDS {
        let a = Env::new(backend).await;
        let faults = Faults::default();
        let b = a.sibling_with(Options::default(), Some(faults.clone())).await.unwrap();
        // Count B's reads of the key ring (a zero delay is an injected no-op that is counted).
        faults.delay(Some(Op::Get), Some("meta"), Duration::ZERO);
        let mut browser = Browser::default();
        let client = a.register().await;
        let (at, _) = fresh_token(&a, &mut browser, &client).await;
        // The same token with 50 different unknown kids (the signature no longer matters).
        let [_, payload, signature] = at.split('.').collect::<Vec<_>>()[..] else { panic!() };
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        for i in 0..50 {
            let header = b64.encode(format!(r#"{{"alg":"ES256","typ":"at+jwt","kid":"forged-{i}"}}"#));
            let forged = format!("{header}.{payload}.{signature}");
            let e = verify(&b, &forged).await.unwrap_err();
            assert!(e.is_invalid_token(), "{backend:?}: {e}");
        }
        assert_eq!(faults.injected(), 1, "{backend:?}: one store read for 50 unknown kids");
        b.clock.advance(Duration::from_secs(5));
        let header = b64.encode(r#"{"alg":"ES256","typ":"at+jwt","kid":"forged-x"}"#);
        assert!(verify(&b, &format!("{header}.{payload}.{signature}")).await.is_err());
        assert_eq!(faults.injected(), 2, "{backend:?}: one more after five seconds");
        // A genuine token never reads the store (no revocation check configured).
        assert!(verify(&b, &at).await.is_ok());
        assert_eq!(faults.injected(), 2, "{backend:?}");
    }
}

#[tokio::test]
async fn verification_keeps_working_while_the_store_is_down_and_rotation_waits_for_it() {
    for backend in BACKENDS {
        let a = Env::new(backend).await;
        let faults = Faults::default();
        let b = a.sibling_with(Options::default(), Some(faults.clone())).await.unwrap();
        let mut browser = Browser::default();
        let client = a.register().await;
        let (at, _) = fresh_token(&a, &mut browser, &client).await;
        faults.down();
        assert!(verify(&b, &at).await.is_ok(), "{backend:?}: JWT verification reads no store");
        let jwks = b.get("/jwks.json").await;
        assert_eq!(jwks.status, StatusCode::OK, "{backend:?}: the JWKS is served from memory");
        b.clock.advance(Duration::from_secs(61));
        assert_eq!(b.get("/jwks.json").await.status, StatusCode::OK, "{backend:?}: a due refresh that fails");
        let e = b.server.rotate_signing_key(HOUR).await.unwrap_err();
        assert!(e.to_string().contains("store"), "{backend:?}: {e}");
        faults.clear();
        b.server.rotate_signing_key(HOUR).await.unwrap();
        assert_eq!(b.server.signing_keys().kids().len(), 2, "{backend:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f03_one_code_redeemed_at_two_instances_at_once_succeeds_once() {
    for backend in BACKENDS {
        let a = Env::new(backend).await;
        let b = a.sibling(Options::default()).await.unwrap();
        for round in 0..5 {
            let mut browser = Browser::default();
            let (client, code, verifier) = code_for(&a, &mut browser).await;
            let form = [
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("code_verifier", verifier.as_str()),
                ("client_id", client.as_str()),
                ("redirect_uri", REDIRECT),
            ];
            let mut set = tokio::task::JoinSet::new();
            for i in 0..10 {
                let svc = if i % 2 == 0 { a.svc.clone() } else { b.svc.clone() };
                set.spawn(call_svc(svc, form_request("/token", &form, &[])));
            }
            let replies: Vec<Reply> = set.join_all().await;
            let (ok, invalid) = status_counts(&replies);
            assert_eq!((ok, invalid), (1, 9), "{backend:?} round {round}");
            assert!(a.count("refresh_tokens").await <= 1 + round, "{backend:?}: never two live refresh tokens");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f13_one_refresh_token_used_at_two_instances_at_once_has_one_successor() {
    for backend in BACKENDS {
        let a = Env::new(backend).await;
        let b = a.sibling(Options::default()).await.unwrap();
        for round in 0..5 {
            let mut browser = Browser::default();
            let (client, code, verifier) = code_for(&a, &mut browser).await;
            let (_, rt1) = tokens(&a, &client, &code, &verifier).await;
            let form =
                [("grant_type", "refresh_token"), ("refresh_token", rt1.as_str()), ("client_id", client.as_str())];
            let (ra, rb) = tokio::join!(
                call_svc(a.svc.clone(), form_request("/token", &form, &[])),
                call_svc(b.svc.clone(), form_request("/token", &form, &[])),
            );
            let replies = [ra, rb];
            let (ok, invalid) = status_counts(&replies);
            assert_eq!((ok, invalid), (1, 1), "{backend:?} round {round}: one successor, one invalid_grant");
            // The documented reuse behaviour: the loser is a reuse of a rotated token, which
            // revokes the grant; at most one successor is alive, and only if the loser arrived
            // after the rotation had already completed (a true race leaves it alive).
            let successor = replies.iter().find(|r| r.status == StatusCode::OK).unwrap().json();
            let successor = successor["refresh_token"].as_str().unwrap().to_owned();
            let r = refresh(&b, &client, &successor).await;
            assert!(r.status == StatusCode::OK || r.json()["error"] == "invalid_grant", "{backend:?}: {}", r.text());
            // The old token stays dead at both instances.
            assert_eq!(refresh(&a, &client, &rt1).await.json()["error"], "invalid_grant");
            assert_eq!(refresh(&b, &client, &rt1).await.json()["error"], "invalid_grant");
        }
    }
}

#[tokio::test]
async fn f12_k15_a_revocation_at_one_instance_is_seen_by_the_other() {
    for backend in BACKENDS {
        let checked = || Options { configure: Box::new(|b| b.revocation_check(true)), ..Default::default() };
        let a = Env::with(backend, checked()).await;
        let b = a.sibling(checked()).await.unwrap();
        let mut browser = Browser::default();
        let (client, code, verifier) = code_for(&a, &mut browser).await;
        let (at, rt) = tokens(&a, &client, &code, &verifier).await;
        assert!(verify(&b, &at).await.is_ok());
        let r = a.post_form("/revoke", &[("token", &rt), ("client_id", &client)], &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(refresh(&b, &client, &rt).await.json()["error"], "invalid_grant", "{backend:?}");
        assert!(verify(&b, &at).await.unwrap_err().is_invalid_token(), "{backend:?}: the grant's access token");

        // Reuse of a rotated refresh token at B revokes the family that A rotated.
        let (code, verifier) = dev_code(&a, &mut browser, &client, &[]).await;
        let (_, rt1) = tokens(&a, &client, &code, &verifier).await;
        let r = refresh(&a, &client, &rt1).await;
        let (at2, rt2) = (r.json()["access_token"].as_str().unwrap().to_owned(), r.json()["refresh_token"].clone());
        assert_eq!(refresh(&b, &client, &rt1).await.json()["error"], "invalid_grant");
        assert_eq!(refresh(&a, &client, rt2.as_str().unwrap()).await.json()["error"], "invalid_grant", "{backend:?}");
        assert!(b.server.verifier().verify(&tower_mcp_auth::BearerToken::new(&at2).unwrap()).await.is_err());
    }
}
