//! SECURITY-CATALOGUE group K (storage faults and restarts: "nothing lost, nothing leaked")
//! and group L (secrets at rest and in logs, error detail) for the authorization server, on
//! every store backend.
//!
//! Restarts (K03, K04, K15) run on `SqliteStore` only: `MemoryStore` is documented to lose
//! everything on restart. K05 (replayed `private_key_jwt` assertion), K06 (resource-server
//! restart) and K16 (read replicas, Redis) do not apply to this server; L03 is fuzzing.

mod support;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::json;
use support::authz::{
    BACKENDS, Browser, Env, FAULT_MESSAGE, Faults, ISSUER, Op, Options, PERSISTENT, REDIRECT, Reply, TestUpstream,
    UPSTREAM_ISSUER, UpFail, authorize_query, basic, callback_path, code_for, consent_and_approve, dev_code,
    env_with_upstream, form_fields, pkce, redeem, refresh, tokens, upstream_code, upstream_options, upstream_state,
    verify,
};
use support::logs::Capture;
use tower_mcp_auth::ConfigErrorKind;
use tower_mcp_auth::clock::ManualClock;
use tower_mcp_auth::server::{AuthorizationServer, UpstreamAccess, UpstreamAccessError};
use tower_mcp_auth::store::crypto::EncryptionKeys;
use tower_mcp_auth::store::{MemoryStore, Namespace, Store};

/// Puts a fault in place.
type FaultSetup = dyn Fn(&Faults);

const UPSTREAM_TOKENS: Namespace = Namespace::new("upstream_tokens");

/// One TRACE subscriber for this test binary, capturing every thread.
fn logs() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        let writer = capture.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .init();
        capture
    })
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(support::now()))
}

/// A 503 JSON error that says nothing about the cause.
fn assert_unavailable_json(r: &Reply) {
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(r.header("cache-control"), "no-store");
    assert!(!r.header("retry-after").is_empty());
    assert_eq!(r.json()["error"], "temporarily_unavailable");
    assert!(r.json().get("access_token").is_none());
    assert_no_internal_detail(r);
}

/// L02: nothing internal in headers or body.
fn assert_no_internal_detail(r: &Reply) {
    let all = format!("{:?} {}", r.headers, r.text()).to_lowercase();
    for leak in [
        "sqlite",
        "10.9.8.7",
        "/var/lib",
        "secret-db",
        "ioerr",
        "panicked",
        "backtrace",
        "store unavailable",
        "injected",
    ] {
        assert!(!all.contains(leak), "{leak} leaked: {all}");
    }
}

fn upstream_access(token: &tower_mcp_auth::AccessToken) -> UpstreamAccess {
    token.extension::<UpstreamAccess>().expect("UpstreamAccess").clone()
}

fn gid(token: &tower_mcp_auth::AccessToken) -> String {
    token.claim("gid").and_then(|v| v.as_str()).unwrap().to_owned()
}

// ---------------------------------------------------------------------------------------
// K. Storage faults and restarts

#[tokio::test]
async fn k01_store_down_when_the_code_is_created() {
    for backend in BACKENDS {
        let clock = clock();
        let up = TestUpstream::new(clock.clone());
        let (env, faults) = Env::with_faults(backend, upstream_options(&up, |b| b), clock).await;
        let client = env.register().await;
        let mut browser = Browser::default();
        let iss = [("iss", UPSTREAM_ISSUER)];

        // (a) The store is down for the whole callback: an error page, nothing consumed.
        let (verifier, challenge) = pkce();
        let to_up = consent_and_approve(&env, &mut browser, &authorize_query(&client, &challenge, "st-k01", &[])).await;
        let state = upstream_state(&to_up);
        let up_code = up.login(&state);
        faults.down();
        let r = browser.get(&env, &callback_path(&up_code, &state, &iss)).await;
        faults.clear();
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{backend:?}");
        assert!(r.headers.get("location").is_none() && r.header("content-type").starts_with("text/html"));
        assert_no_internal_detail(&r);
        assert_eq!(up.exchange_count(), 0);
        // After recovery the same sign-in completes.
        let r = browser.get(&env, &callback_path(&up_code, &state, &iss)).await;
        let code = r.location_param("code").expect("code after recovery");
        assert_eq!(redeem(&env, &client, &code, &verifier).await.status, StatusCode::OK);
        let settled = env.census().await;

        // (b) Writing the grant, the upstream tokens or the code fails part-way: an error
        // redirect without a code, nothing half-written, the provider's tokens given back.
        for ns in ["grants", "upstream_tokens", "codes"] {
            let (_, challenge) = pkce();
            let to_up =
                consent_and_approve(&env, &mut browser, &authorize_query(&client, &challenge, "st-k01", &[])).await;
            let state = upstream_state(&to_up);
            let up_code = up.login(&state);
            let revoked = up.revoked.lock().unwrap().len();
            faults.fail(Some(Op::Put), Some(ns));
            let r = browser.get(&env, &callback_path(&up_code, &state, &iss)).await;
            faults.clear();
            assert_eq!(r.status, StatusCode::FOUND, "{backend:?} {ns}");
            assert_eq!(r.location_param("error").as_deref(), Some("temporarily_unavailable"));
            assert_eq!(r.location_param("state").as_deref(), Some("st-k01"));
            assert_eq!(r.location_param("iss").as_deref(), Some(ISSUER));
            assert!(r.location_param("code").is_none());
            assert_eq!(env.census().await, settled, "{backend:?} {ns}: nothing half-written");
            assert_eq!(up.revoked.lock().unwrap().len(), revoked + 1, "{ns}: upstream tokens revoked");
        }
    }
}

#[tokio::test]
async fn k02_store_down_at_token_then_the_code_works_exactly_once() {
    for backend in BACKENDS {
        let (env, faults) = Env::with_faults(backend, Options::default(), clock()).await;
        let mut browser = Browser::default();
        let (client, code, verifier) = code_for(&env, &mut browser).await;
        let before = env.census().await;
        let faults_to_try: Vec<(&str, Box<FaultSetup>)> = vec![
            ("down", Box::new(|f| f.down())),
            ("get codes", Box::new(|f| f.fail(Some(Op::Get), Some("codes")))),
            ("get grants", Box::new(|f| f.fail(Some(Op::Get), Some("grants")))),
            ("put used_codes", Box::new(|f| f.fail(Some(Op::Put), Some("used_codes")))),
            ("put refresh_tokens", Box::new(|f| f.fail(Some(Op::Put), Some("refresh_tokens")))),
            ("cas grants", Box::new(|f| f.fail(Some(Op::Cas), Some("grants")))),
            ("put clients", Box::new(|f| f.fail(Some(Op::Put), Some("clients")))),
            ("take codes", Box::new(|f| f.fail(Some(Op::Take), Some("codes")))),
        ];
        for (what, apply) in &faults_to_try {
            apply(&faults);
            let r = redeem(&env, &client, &code, &verifier).await;
            faults.clear();
            assert!(faults.injected() > 0);
            assert_unavailable_json(&r);
            assert_eq!(env.count("refresh_tokens").await, 0, "{backend:?} {what}: no unrecorded or orphan tokens");
            assert_eq!(env.count("codes").await, 1, "{backend:?} {what}: the code is not consumed");
        }
        let census = env.census().await;
        assert_eq!(census.get("codes"), before.get("codes"));
        // After recovery: exactly once.
        let r = redeem(&env, &client, &code, &verifier).await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.text());
        let again = redeem(&env, &client, &code, &verifier).await;
        assert_eq!(again.json()["error"], "invalid_grant");
    }
}

#[tokio::test]
async fn k03_a_consumed_code_stays_consumed_across_restarts() {
    // Persistent stores only: a MemoryStore loses everything on restart (documented).
    for backend in PERSISTENT {
        let (env, faults) = Env::with_faults(backend, Options::default(), clock()).await;
        let mut browser = Browser::default();
        let (client, code, verifier) = code_for(&env, &mut browser).await;
        // Killed while the redemption waits for the store, before the code is consumed (the
        // request is dropped mid-way, as a dying process drops it).
        faults.delay(Some(Op::Take), Some("codes"), Duration::from_secs(60));
        let killed = tokio::time::timeout(Duration::from_millis(200), redeem(&env, &client, &code, &verifier)).await;
        assert!(killed.is_err(), "the request was still waiting");
        let env = env.restart(Options::default()).await;
        let first = redeem(&env, &client, &code, &verifier).await;
        assert_eq!(first.status, StatusCode::OK, "not consumed before the kill: {}", first.text());
        // Tokens issued, code consumed; killed right after; restarted: never redeemable again.
        let env = env.restart(Options::default()).await;
        let again = redeem(&env, &client, &code, &verifier).await;
        assert_eq!(again.status, StatusCode::BAD_REQUEST);
        assert_eq!(again.json()["error"], "invalid_grant");
        // The replay is still recognised after the restart: the first tokens are revoked.
        let rt = first.json()["refresh_token"].as_str().unwrap().to_owned();
        assert_eq!(refresh(&env, &client, &rt).await.json()["error"], "invalid_grant");
    }
}

#[tokio::test]
async fn k04_restart_keeps_codes_consents_clients_and_tokens() {
    // Persistent stores only: a MemoryStore loses everything on restart (documented).
    for backend in PERSISTENT {
        let clock = clock();
        let up = TestUpstream::new(clock.clone());
        let env = Env::with_clock(backend, upstream_options(&up, |b| b), clock).await;
        let client = env.register().await;
        let mut browser = Browser::default();
        let (code1, v1) = upstream_code(&env, &up, &mut browser, &client, &[]).await;
        let (at1, rt1) = tokens(&env, &client, &code1, &v1).await;
        let (code2, v2) = upstream_code(&env, &up, &mut browser, &client, &[]).await;
        // A consent page shown before the restart, approved after it.
        let (v3, c3) = pkce();
        let page = browser.get(&env, &authorize_query(&client, &c3, "st-k04", &[])).await;
        let f = form_fields(&page.text());
        let env = env.restart(upstream_options(&up, |b| b)).await;

        assert_eq!(redeem(&env, &client, &code2, &v2).await.status, StatusCode::OK, "the code survives");
        assert_eq!(refresh(&env, &client, &rt1).await.status, StatusCode::OK, "the refresh token survives");
        let access = verify(&env, &at1).await.expect("the signing keys survive");
        assert!(
            upstream_access(&access).access_token().await.unwrap().starts_with("up-at-"),
            "upstream tokens survive"
        );
        let r = browser
            .post(&env, "/consent", &[("request", &f["request"]), ("csrf", &f["csrf"]), ("decision", "approve")])
            .await;
        let state = upstream_state(&r);
        let r = browser.get(&env, &callback_path(&up.login(&state), &state, &[("iss", UPSTREAM_ISSUER)])).await;
        assert_eq!(r.location_param("state").as_deref(), Some("st-k04"));
        assert_eq!(redeem(&env, &client, &r.location_param("code").unwrap(), &v3).await.status, StatusCode::OK);
        // The consent is remembered.
        browser.user_agent_fetch_site = Some("none");
        let (_, c4) = pkce();
        let r = browser.get(&env, &authorize_query(&client, &c4, "s", &[])).await;
        assert_eq!(r.status, StatusCode::FOUND);
        assert_eq!(r.location().unwrap().host_str(), Some(support::authz::UPSTREAM_HOST));
    }
}

#[tokio::test]
async fn k07_tampered_upstream_token_row_fails_closed() {
    for backend in BACKENDS {
        let (env, up) = env_with_upstream(backend, |b| b).await;
        let client = env.register().await;
        let (code, verifier) = upstream_code(&env, &up, &mut Browser::default(), &client, &[]).await;
        let (at, rt) = tokens(&env, &client, &code, &verifier).await;
        let token = verify(&env, &at).await.unwrap();
        let access = upstream_access(&token);
        let good = access.access_token().await.unwrap();
        let key = gid(&token);
        let row = env.store.get(UPSTREAM_TOKENS, &key).await.unwrap().unwrap();
        let tampered: Vec<Vec<u8>> = [0, 3, 4, 27, 28, row.len() / 2, row.len() - 16, row.len() - 1]
            .iter()
            .map(|&i| {
                let mut t = row.clone();
                t[i] ^= 0x01;
                t
            })
            .chain([
                row[..row.len() - 1].to_vec(),
                row[..10].to_vec(),
                Vec::new(),
                b"{\"access_token\":\"x\"}".to_vec(),
            ])
            .collect();
        for t in tampered {
            env.store.put(UPSTREAM_TOKENS, &key, t, None).await.unwrap();
            assert_eq!(access.access_token().await, Err(UpstreamAccessError::NoToken), "{backend:?}");
            // Our own token is unaffected (the client just has no upstream access).
            assert!(verify(&env, &at).await.is_ok());
        }
        env.store.put(UPSTREAM_TOKENS, &key, row.clone(), None).await.unwrap();
        assert_eq!(access.access_token().await.unwrap(), good, "control: the untouched row opens");
        // Revoking with a tampered row is a clean 200, not a 500.
        let mut t = row.clone();
        t[40] ^= 0x80;
        env.store.put(UPSTREAM_TOKENS, &key, t, None).await.unwrap();
        let r = env.post_form("/revoke", &[("token", &rt), ("client_id", &client)], &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(access.access_token().await, Err(UpstreamAccessError::Revoked));
    }
}

#[tokio::test]
async fn k08_row_copied_to_another_users_grant_does_not_open() {
    for backend in BACKENDS {
        let (env, up) = env_with_upstream(backend, |b| b).await;
        let client = env.register().await;
        let mut grants = Vec::new();
        for user in ["user-a", "user-b"] {
            up.set(|k| k.subject = user.into());
            let (code, verifier) = upstream_code(&env, &up, &mut Browser::default(), &client, &[]).await;
            let (at, _) = tokens(&env, &client, &code, &verifier).await;
            let token = verify(&env, &at).await.unwrap();
            assert_eq!(token.subject(), Some(user));
            grants.push((gid(&token), upstream_access(&token)));
        }
        let (a_key, a) = &grants[0];
        let (b_key, b) = &grants[1];
        let a_token = a.access_token().await.unwrap();
        assert_ne!(a_token, b.access_token().await.unwrap());
        let a_row = env.store.get(UPSTREAM_TOKENS, a_key).await.unwrap().unwrap();
        env.store.put(UPSTREAM_TOKENS, b_key, a_row, None).await.unwrap();
        assert_eq!(b.access_token().await, Err(UpstreamAccessError::NoToken), "{backend:?}: B never gets A's token");
        assert_eq!(a.access_token().await.unwrap(), a_token, "A unaffected");
    }
}

/// A grant through `up`: its access token.
async fn grant_at(env: &Env, up: &TestUpstream, client: &str) -> String {
    let (code, verifier) = upstream_code(env, up, &mut Browser::default(), client, &[]).await;
    tokens(env, client, &code, &verifier).await.0
}

fn row_version(row: &[u8]) -> u32 {
    u32::from_be_bytes(row[..4].try_into().unwrap())
}

#[tokio::test]
async fn k09_encryption_key_rotation() {
    for backend in BACKENDS {
        // On SQLite a restart; on the memory store a second instance sharing the store.
        let (k1, k2) = ([0x11u8; 32], [0x22u8; 32]);
        let clock = clock();
        let up = TestUpstream::new(clock.clone());
        up.set(|k| k.expires_in = Some(60));
        let opts = || upstream_options(&up, |b| b);
        let env = Env::with_keys(backend, opts(), clock.clone(), EncryptionKeys::new(1, k1)).await;
        let client = env.register().await;
        let untouched = grant_at(&env, &up, &client).await;
        let refreshed = grant_at(&env, &up, &client).await;
        for (ns, _, v) in env.entries().await {
            if ns == "meta" || ns == "upstream_tokens" {
                assert_eq!(row_version(&v), 1, "{backend:?} {ns}");
            }
        }

        // v2 active, v1 kept for opening: old rows readable, new rows sealed with v2, the
        // server's own sealed values re-sealed with v2 at start.
        let env = env.reopen(opts(), EncryptionKeys::new(2, k2).with_previous(1, k1)).await.expect("rotated keys");
        for at in [&untouched, &refreshed] {
            let t = verify(&env, at).await.unwrap();
            assert!(upstream_access(&t).access_token().await.is_ok(), "{backend:?}: old rows readable");
            assert_eq!(row_version(&env.store.get(UPSTREAM_TOKENS, &gid(&t)).await.unwrap().unwrap()), 1);
        }
        let new = grant_at(&env, &up, &client).await;
        let t = verify(&env, &new).await.unwrap();
        assert_eq!(row_version(&env.store.get(UPSTREAM_TOKENS, &gid(&t)).await.unwrap().unwrap()), 2, "new rows v2");
        for (ns, _, v) in env.entries().await {
            if ns == "meta" {
                assert_eq!(row_version(&v), 2, "{backend:?}: meta re-sealed");
            }
        }
        // The upstream token of one old grant expires and is refreshed: re-sealed with v2.
        clock.advance(Duration::from_secs(61));
        let t = verify(&env, &refreshed).await.unwrap();
        let fresh = upstream_access(&t).access_token().await.unwrap();
        assert_eq!(up.refresh_count(), 1);
        assert_eq!(row_version(&env.store.get(UPSTREAM_TOKENS, &gid(&t)).await.unwrap().unwrap()), 2);

        // v1 removed: the server still starts; rows still under v1 fail closed (as K07),
        // everything re-sealed opens.
        let env = env.reopen(opts(), EncryptionKeys::new(2, k2)).await.expect("v1 is no longer needed to start");
        let t = verify(&env, &untouched).await.unwrap();
        assert_eq!(upstream_access(&t).access_token().await, Err(UpstreamAccessError::NoToken), "{backend:?}");
        let t = verify(&env, &refreshed).await.unwrap();
        assert_eq!(upstream_access(&t).access_token().await.unwrap(), fresh);
        let t = verify(&env, &new).await.unwrap();
        assert!(upstream_access(&t).access_token().await.is_ok());
        // And v1 alone no longer opens this store.
        let err = env.reopen(opts(), EncryptionKeys::new(1, k1)).await.unwrap_err();
        assert_eq!(err.kind(), ConfigErrorKind::InvalidKey);
    }
}

#[tokio::test]
async fn k10_missing_or_wrong_key_refuses_to_start() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let env = env.restart(Options::default()).await; // control: the right key
        let err = env.reopen(Options::default(), EncryptionKeys::generate()).await.unwrap_err();
        assert_eq!(err.kind(), ConfigErrorKind::InvalidKey, "{backend:?}");
        assert!(err.to_string().contains("encryption key"), "a clear message: {err}");
        // No key at all.
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let err = AuthorizationServer::builder(support::authz::ISSUER, support::authz::resource())
            .store(store)
            .upstream(Arc::new(tower_mcp_auth::upstream::DevLogin::new("alice")))
            .build()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ConfigErrorKind::Missing);
        assert!(err.to_string().contains("encryption key"), "{err}");
    }
}

#[tokio::test]
async fn k11_l01_no_secret_at_rest_or_in_trace_logs() {
    let logs = logs();
    for backend in BACKENDS {
        let (env, up) = env_with_upstream(backend, |b| b.revocation_check(true)).await;
        let mut secrets: Vec<String> = Vec::new();
        let public = env.register().await;
        let (basic_id, basic_secret) = env.register_confidential("client_secret_basic").await;
        let (post_id, post_secret) = env.register_confidential("client_secret_post").await;
        secrets.extend([basic_secret.clone(), post_secret.clone()]);
        let basic_header = basic(&basic_id, &basic_secret);
        secrets.push(basic_header["Basic ".len()..].to_owned());

        let mut browser = Browser::default();
        for (client, auth) in [
            (&public, vec![("client_id", public.as_str())]),
            (&basic_id, vec![]),
            (&post_id, vec![("client_id", post_id.as_str()), ("client_secret", post_secret.as_str())]),
        ] {
            let headers: Vec<(&str, &str)> =
                if auth.is_empty() { vec![("authorization", basic_header.as_str())] } else { vec![] };
            let (verifier, challenge) = pkce();
            let page = browser.get(&env, &authorize_query(client, &challenge, "st-k11", &[])).await;
            let f = form_fields(&page.text());
            secrets.extend([f["csrf"].clone(), f["request"].clone(), browser.binding(), verifier.clone()]);
            let r = browser
                .post(&env, "/consent", &[("request", &f["request"]), ("csrf", &f["csrf"]), ("decision", "approve")])
                .await;
            let state = upstream_state(&r);
            secrets.push(state.clone());
            let up_code = up.login(&state);
            let r = browser.get(&env, &callback_path(&up_code, &state, &[("iss", UPSTREAM_ISSUER)])).await;
            let code = r.location_param("code").unwrap();
            secrets.push(code.clone());
            let form = [
                vec![
                    ("grant_type", "authorization_code"),
                    ("code", code.as_str()),
                    ("code_verifier", verifier.as_str()),
                    ("redirect_uri", REDIRECT),
                ],
                auth.clone(),
            ]
            .concat();
            let t = env.post_form("/token", &form, &headers).await.json();
            let (at, rt) =
                (t["access_token"].as_str().unwrap().to_owned(), t["refresh_token"].as_str().unwrap().to_owned());
            let access = verify(&env, &at).await.unwrap();
            upstream_access(&access).access_token().await.unwrap();
            let form = [vec![("grant_type", "refresh_token"), ("refresh_token", rt.as_str())], auth.clone()].concat();
            let t2 = env.post_form("/token", &form, &headers).await.json();
            let (at2, rt2) =
                (t2["access_token"].as_str().unwrap().to_owned(), t2["refresh_token"].as_str().unwrap().to_owned());
            // Reuse of the rotated token (logs a warning), then revocations.
            let _ = env.post_form("/token", &form, &headers).await;
            for token in [&at2, &rt2] {
                let form = [vec![("token", token.as_str())], auth.clone()].concat();
                assert_eq!(env.post_form("/revoke", &form, &headers).await.status, StatusCode::OK);
            }
            secrets.extend([at.clone(), rt, at2.clone(), rt2]);
            for t in [&at, &at2] {
                secrets.push(t.rsplit('.').next().unwrap().to_owned());
            }
        }
        // A failing upstream exchange and a store-looking error message get logged too.
        up.set(|k| k.exchange_fails = Some(UpFail::Unavailable));
        let (_, challenge) = pkce();
        let r = consent_and_approve(&env, &mut browser, &authorize_query(&public, &challenge, "s", &[])).await;
        let state = upstream_state(&r);
        let up_code = up.login(&state);
        browser.get(&env, &callback_path(&up_code, &state, &[("iss", UPSTREAM_ISSUER)])).await;
        secrets.extend(up.minted.lock().unwrap().iter().cloned());

        let stored = env.dump().await;
        assert!(!stored.is_empty());
        for s in &secrets {
            assert!(s.len() >= 20, "a real secret: {s}");
            for value in &stored {
                assert!(
                    !value.windows(s.len()).any(|w| w == s.as_bytes()),
                    "{backend:?}: a secret is stored in the clear"
                );
            }
        }
        let text = logs.text();
        assert!(text.contains("refresh_reuse_detected"), "the capture works (the audit event)");
        for s in &secrets {
            assert!(!text.contains(s.as_str()), "{backend:?}: a secret reached the logs");
        }
    }
}

#[tokio::test]
async fn k12_slow_store_hits_the_deadline() {
    for backend in BACKENDS {
        for check in [false, true] {
            // The sign-in runs on an instance with the ordinary deadline; the stall is seen
            // through a second instance on the same storage whose deadline is 100 ms (a
            // deadline that short would also fail healthy operations on a loaded host).
            let env = Env::with_clock(
                backend,
                Options { configure: Box::new(move |b| b.revocation_check(check)), ..Default::default() },
                clock(),
            )
            .await;
            let mut browser = Browser::default();
            let (client, code, verifier) = code_for(&env, &mut browser).await;
            let (at, rt) = tokens(&env, &client, &code, &verifier).await;
            let (_, challenge) = pkce();
            let faults = Faults::default();
            let slow = env
                .sibling_with(
                    Options {
                        configure: Box::new(move |b| {
                            b.store_timeout(Duration::from_millis(100)).revocation_check(check)
                        }),
                        ..Default::default()
                    },
                    Some(faults.clone()),
                )
                .await
                .unwrap();
            faults.delay(None, None, Duration::from_secs(10));
            let started = Instant::now();
            assert_unavailable_json(&refresh(&slow, &client, &rt).await);
            assert_unavailable_json(&slow.post_form("/revoke", &[("token", &rt), ("client_id", &client)], &[]).await);
            let r = slow
                .post_json("/register", &json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}))
                .await;
            assert_unavailable_json(&r);
            let r = Browser::default().get(&slow, &authorize_query(&client, &challenge, "s", &[])).await;
            assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(r.headers.get("location").is_none());
            // Four requests, none waiting out the stall (one that did would alone take 10 s).
            assert!(started.elapsed() < Duration::from_secs(8), "{backend:?}: {:?}", started.elapsed());
            // The resource server's JWT-only path does not touch the store; with the
            // revocation check on, it fails closed (unavailable), quickly.
            let started = Instant::now();
            let v = verify(&slow, &at).await;
            assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
            if check {
                assert!(v.unwrap_err().is_unavailable(), "{backend:?}");
            } else {
                assert!(v.is_ok(), "{backend:?}: JWT-only verification unaffected");
            }
            faults.clear();
            // Nothing was consumed by the timed-out requests: the token still rotates.
            assert_eq!(refresh(&env, &client, &rt).await.status, StatusCode::OK, "{backend:?}");
        }
    }
}

#[tokio::test]
async fn k13_refresh_rotation_with_store_failures_keeps_one_successor() {
    for backend in BACKENDS {
        let (env, faults) = Env::with_faults(backend, Options::default(), clock()).await;
        let mut browser = Browser::default();
        let (client, code, verifier) = code_for(&env, &mut browser).await;
        let (_, mut current) = tokens(&env, &client, &code, &verifier).await;
        let mut retired = Vec::new();
        for (op, ns) in [
            (Op::Take, "refresh_tokens"),
            (Op::Put, "refresh_tokens"),
            (Op::Put, "used_refresh_tokens"),
            (Op::Cas, "grants"),
            (Op::Get, "refresh_tokens"),
        ] {
            faults.fail_next(Some(op), Some(ns), 1);
            let r = refresh(&env, &client, &current).await;
            assert_unavailable_json(&r);
            assert_eq!(env.count("refresh_tokens").await, 1, "{backend:?} {op:?} {ns}: no successor left behind");
            // The retry is not a reuse: it succeeds, with exactly one successor.
            let r = refresh(&env, &client, &current).await;
            assert_eq!(r.status, StatusCode::OK, "{backend:?} {op:?} {ns}: {}", r.text());
            retired.push(std::mem::replace(&mut current, r.json()["refresh_token"].as_str().unwrap().to_owned()));
            assert_eq!(env.count("refresh_tokens").await, 1, "{backend:?} {op:?} {ns}: one live refresh token");
        }
        // Rotated tokens are still recognised as reuse.
        assert_eq!(refresh(&env, &client, &retired[0]).await.json()["error"], "invalid_grant");
        assert_eq!(refresh(&env, &client, &current).await.json()["error"], "invalid_grant", "family revoked");
    }
}

#[tokio::test]
async fn k14_abandoned_flows_and_floods_expire() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let baseline = env.census().await;
        assert_eq!(baseline.keys().collect::<Vec<_>>(), ["meta"]);
        let mut clients = Vec::new();
        for _ in 0..20 {
            clients.push(env.register().await);
        }
        for i in 0..60 {
            let mut browser = Browser::default();
            let (_, challenge) = pkce();
            let page = browser.get(&env, &authorize_query(&clients[i % 20], &challenge, "s", &[])).await;
            if i % 3 == 0 {
                let f = form_fields(&page.text());
                let r = browser
                    .post(
                        &env,
                        "/consent",
                        &[("request", &f["request"]), ("csrf", &f["csrf"]), ("decision", "approve")],
                    )
                    .await;
                assert!(r.status.is_redirection(), "{backend:?}: consent {i}: {} {}", r.status, r.text());
            }
        }
        let flooded = env.census().await;
        assert_eq!(flooded.get("authz_requests"), Some(&40), "{backend:?}: {flooded:?}");
        assert_eq!(flooded.get("upstream_states"), Some(&20));
        assert_eq!(flooded.get("consents"), Some(&20));
        env.clock.advance(Duration::from_secs(601));
        let later = env.census().await;
        assert!(!later.contains_key("authz_requests") && !later.contains_key("upstream_states"), "{later:?}");
        env.clock.advance(Duration::from_secs(24 * 3600));
        let later = env.census().await;
        assert!(!later.contains_key("clients"), "unused registrations expire: {later:?}");
        // A completed flow leaves only the used client (kept) behind after its lifetimes.
        let mut browser = Browser::default();
        let (client, code, verifier) = code_for(&env, &mut browser).await;
        let (_, rt) = tokens(&env, &client, &code, &verifier).await;
        refresh(&env, &client, &rt).await;
        env.clock.advance(Duration::from_secs(31 * 24 * 3600));
        let end = env.census().await;
        assert_eq!(end.get("clients"), Some(&1), "{backend:?}: {end:?}");
        assert_eq!(end.len(), 2, "only meta and the used client remain: {end:?}");
    }
}

#[tokio::test]
async fn k15_revocation_survives_restart() {
    // Persistent stores only: a MemoryStore loses everything on restart (documented).
    for backend in PERSISTENT {
        let env =
            Env::with(backend, Options { configure: Box::new(|b| b.revocation_check(true)), ..Default::default() })
                .await;
        let mut browser = Browser::default();
        let (client, code, verifier) = code_for(&env, &mut browser).await;
        let (at, rt) = tokens(&env, &client, &code, &verifier).await;
        let (code, verifier) = dev_code(&env, &mut browser, &client, &[]).await;
        let (at2, rt2) = tokens(&env, &client, &code, &verifier).await;
        assert_eq!(
            env.post_form("/revoke", &[("token", &rt), ("client_id", &client)], &[]).await.status,
            StatusCode::OK
        );
        assert_eq!(
            env.post_form("/revoke", &[("token", &at2), ("client_id", &client)], &[]).await.status,
            StatusCode::OK
        );
        let env =
            env.restart(Options { configure: Box::new(|b| b.revocation_check(true)), ..Default::default() }).await;
        assert_eq!(refresh(&env, &client, &rt).await.json()["error"], "invalid_grant");
        assert!(verify(&env, &at).await.unwrap_err().is_invalid_token(), "the revoked grant's access token");
        assert!(verify(&env, &at2).await.unwrap_err().is_invalid_token(), "the revoked access token");
        // Control: the other grant's refresh token still works.
        assert_eq!(refresh(&env, &client, &rt2).await.status, StatusCode::OK);
    }
}

// ---------------------------------------------------------------------------------------
// L. Errors carry no internal detail

#[tokio::test]
async fn l02_error_paths_carry_no_internal_detail() {
    for backend in BACKENDS {
        let clock = clock();
        let up = TestUpstream::new(clock.clone());
        let (env, faults) = Env::with_faults(backend, upstream_options(&up, |b| b), clock).await;
        let client = env.register().await;
        let mut browser = Browser::default();
        let (verifier, challenge) = pkce();
        let page = browser.get(&env, &authorize_query(&client, &challenge, "s", &[])).await;
        let f = form_fields(&page.text());
        faults.down();
        let mut replies = vec![
            browser.get(&env, &authorize_query(&client, &challenge, "s", &[])).await,
            browser
                .post(&env, "/consent", &[("request", &f["request"]), ("csrf", &f["csrf"]), ("decision", "approve")])
                .await,
            browser.get(&env, "/callback?code=x&state=y").await,
            redeem(&env, &client, "code", &verifier).await,
            refresh(&env, &client, "rt").await,
            env.post_form("/revoke", &[("token", "t"), ("client_id", &client)], &[]).await,
            env.post_json("/register", &json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}))
                .await,
        ];
        faults.clear();
        for r in &replies {
            assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{backend:?}: {}", r.text());
        }
        // The upstream fails with internal detail in its error.
        up.set(|k| k.exchange_fails = Some(UpFail::Invalid));
        let r = consent_and_approve(&env, &mut browser, &authorize_query(&client, &challenge, "s", &[])).await;
        let state = upstream_state(&r);
        let code = up.login(&state);
        replies.push(browser.get(&env, &callback_path(&code, &state, &[("iss", UPSTREAM_ISSUER)])).await);
        // Malformed requests.
        replies
            .push(env.post_form("/token", &[("grant_type", "authorization_code"), ("code", "{\"$ne\":1}")], &[]).await);
        replies.push(
            env.call(
                http::Request::post("/register")
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{\"a\":")))
                    .unwrap(),
            )
            .await,
        );
        for r in &replies {
            assert_no_internal_detail(r);
            assert!(!r.text().contains(FAULT_MESSAGE));
            assert!(!r.header("location").contains("error_description"));
        }
        assert!(faults.injected() >= 7);
    }
}

// Issue 3 §3: handlers load the upstream access token on demand; an expired one is refreshed
// at the provider while the grant is alive, the result is stored (encrypted) for the next
// call, and a revoked grant gives nothing.
#[tokio::test]
async fn upstream_access_token_is_refreshed_on_demand() {
    for backend in BACKENDS {
        let (env, up) = env_with_upstream(backend, |b| b).await;
        let client = env.register().await;
        let (code, verifier) = upstream_code(&env, &up, &mut Browser::default(), &client, &[]).await;
        let (at, rt) = tokens(&env, &client, &code, &verifier).await;
        let token = verify(&env, &at).await.unwrap();
        let access = upstream_access(&token);
        let first = access.access_token().await.unwrap();
        assert_eq!(up.refreshes.load(std::sync::atomic::Ordering::SeqCst), 0, "{backend:?}: fresh, no refresh");
        // The provider's token (1 h) expires.
        env.clock.advance(std::time::Duration::from_secs(3600));
        let second = access.access_token().await.unwrap();
        assert_ne!(first, second, "{backend:?}: refreshed");
        assert_eq!(up.refreshes.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(access.access_token().await.unwrap(), second, "{backend:?}: the refreshed token was stored");
        assert_eq!(up.refreshes.load(std::sync::atomic::Ordering::SeqCst), 1);
        // The provider refuses to refresh: expired, not a server error.
        env.clock.advance(std::time::Duration::from_secs(3600));
        up.knobs.lock().unwrap().refresh_fails = Some(UpFail::Refused);
        assert_eq!(access.access_token().await, Err(UpstreamAccessError::Expired));
        // A revoked grant gives nothing.
        up.knobs.lock().unwrap().refresh_fails = None;
        let r = env.post_form("/revoke", &[("token", rt.as_str()), ("client_id", client.as_str())], &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(access.access_token().await, Err(UpstreamAccessError::Revoked), "{backend:?}");
    }
}
