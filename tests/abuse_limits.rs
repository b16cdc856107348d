//! Abuse limits of the authorization server with its default budgets (SECURITY-CATALOGUE H08,
//! G05): a flood from one address meets `429` with `Retry-After` after the documented
//! threshold while other clients, at other addresses and behind the same egress address, are
//! still served; `X-Forwarded-For` only counts from trusted proxies; every endpoint caps its
//! body.
//!
//! The limits are store-independent (in-memory token buckets), so one backend suffices. The
//! clock is the test's manual clock: no budget refills unless the test moves it.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::json;
use support::authz::{Backend, Browser, Env, Options, REDIRECT, Reply, dev_code, form_request};
use tower_mcp_auth::server::{Limit, PeerAddr, RateLimits};

fn env_with(
    configure: impl FnOnce(
        tower_mcp_auth::server::AuthorizationServerBuilder,
    ) -> tower_mcp_auth::server::AuthorizationServerBuilder
    + 'static,
) -> impl std::future::Future<Output = Env> {
    Env::with(Backend::Memory, Options { configure: Box::new(configure), ..Default::default() })
}

/// The default limits (the test support turns them off for other tests).
async fn defaults() -> Env {
    env_with(|b| b.rate_limits(RateLimits::default())).await
}

fn at(ip: &str, mut req: Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    req.extensions_mut().insert(PeerAddr(ip.parse::<IpAddr>().unwrap()));
    req
}

fn registration(name: &str, redirect: &str) -> Request<Full<Bytes>> {
    let body = json!({"client_name": name, "redirect_uris": [redirect], "token_endpoint_auth_method": "none"});
    Request::post("/register")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn assert_limited(r: &Reply, retry_after: &str) {
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    assert_eq!(r.json()["error"], "invalid_request");
    assert_eq!(r.header("retry-after"), retry_after);
}

/// Counts 201s; every other answer must be a 429 with `retry_after`.
async fn register_many(
    env: &Env,
    n: usize,
    request: impl Fn(usize) -> Request<Full<Bytes>>,
    retry_after: &str,
) -> usize {
    let mut created = 0;
    for i in 0..n {
        let r = env.call(request(i)).await;
        if r.status == StatusCode::CREATED {
            created += 1;
        } else {
            assert_limited(&r, retry_after);
        }
    }
    created
}

#[tokio::test]
async fn h08_a_thousand_registrations_a_minute_from_one_address() {
    let env = defaults().await;
    let egress = "198.51.100.7";

    // The same client 1000 times: its own budget, 10 a minute, then 429 (the next one in 6 s).
    let noisy = |_| at(egress, registration("Noisy", REDIRECT));
    assert_eq!(register_many(&env, 1000, noisy, "6").await, 10);
    // Another client behind the same egress address is still served, and so is everyone
    // elsewhere.
    let r = env.call(at(egress, registration("Neighbour", "https://neighbour.example/cb"))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = env.call(at("203.0.113.1", registration("Noisy", REDIRECT))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());

    // A flood that changes its client every time meets the address ceiling: 30 a minute.
    let other = "192.0.2.44";
    let varied = |i| at(other, registration(&format!("Client {i}"), REDIRECT));
    assert_eq!(register_many(&env, 1000, varied, "2").await, 30);
    let r = env.call(at("203.0.113.2", registration("Client x", REDIRECT))).await;
    assert_eq!(r.status, StatusCode::CREATED, "another address is served");
    assert_eq!(env.count("clients").await, 10 + 1 + 1 + 30 + 1, "the floods stored nothing more");

    // The budgets refill over the minute.
    env.clock.advance(Duration::from_secs(6));
    assert_eq!(env.call(at(egress, registration("Noisy", REDIRECT))).await.status, StatusCode::CREATED);
    assert_limited(&env.call(at(egress, registration("Noisy", REDIRECT))).await, "6");
}

#[tokio::test]
async fn h08_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy() {
    let spoofed = |i: usize| {
        let mut req = at("10.0.0.5", registration(&format!("Client {i}"), REDIRECT));
        req.headers_mut().insert("x-forwarded-for", format!("203.0.113.{}", i % 250).parse().unwrap());
        req
    };
    // No trusted proxies (the default): the header picks nothing, the peer's budget counts.
    let env = defaults().await;
    assert_eq!(register_many(&env, 100, spoofed, "2").await, 30);

    // Behind a trusted load balancer each forwarded address has its own budget.
    let env = env_with(|b| b.rate_limits(RateLimits::default()).trusted_proxies(["10.0.0.0/8"])).await;
    assert_eq!(register_many(&env, 100, spoofed, "2").await, 100);
    // A client cannot escape its budget by prepending addresses: the rightmost hop that is not
    // a trusted proxy is the source.
    let through_lb = |i: usize| {
        let mut req = at("10.0.0.5", registration(&format!("Other {i}"), REDIRECT));
        req.headers_mut().insert("x-forwarded-for", format!("192.0.2.{i}, 198.51.100.9, 10.0.0.6").parse().unwrap());
        req
    };
    assert_eq!(register_many(&env, 40, through_lb, "2").await, 30);
    // And an untrusted peer's header is ignored even so.
    let direct = |i: usize| {
        let mut req = at("198.51.100.200", registration(&format!("Direct {i}"), REDIRECT));
        req.headers_mut().insert("x-forwarded-for", format!("192.0.2.{i}").parse().unwrap());
        req
    };
    assert_eq!(register_many(&env, 40, direct, "2").await, 30);

    // A malformed proxy list fails the build.
    let err = tower_mcp_auth::server::AuthorizationServer::builder(support::authz::ISSUER, support::authz::resource())
        .trusted_proxies(["10.0.0.0/40"])
        .store(std::sync::Arc::new(tower_mcp_auth::store::MemoryStore::new()))
        .encryption_keys(tower_mcp_auth::store::crypto::EncryptionKeys::generate())
        .upstream(std::sync::Arc::new(tower_mcp_auth::upstream::DevLogin::new("alice")))
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("10.0.0.0/40"), "{err}");
}

#[tokio::test]
async fn a_noisy_client_at_a_shared_egress_does_not_lock_out_its_neighbours() {
    let env = defaults().await;
    let egress = "192.0.2.80";
    let noisy = env.register_with(json!({"client_name": "Noisy"})).await["client_id"].as_str().unwrap().to_owned();
    let quiet = env.register_with(json!({"client_name": "Quiet"})).await["client_id"].as_str().unwrap().to_owned();
    let (code, verifier) = dev_code(&env, &mut Browser::default(), &quiet, &[]).await;

    // 1000 bad token requests from the noisy client: 120 are answered, then 429 for it alone.
    let (mut answered, mut limited) = (0, 0);
    for i in 0..1000 {
        let form = [("grant_type", "authorization_code"), ("code", &*format!("guess-{i}")), ("client_id", &*noisy)];
        let r = env.call(at(egress, form_request("/token", &form, &[]))).await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(r.header("retry-after"), "1");
            limited += 1;
        } else {
            assert_eq!(r.json()["error"], "invalid_grant", "{}", r.text());
            answered += 1;
        }
    }
    assert_eq!((answered, limited), (120, 880));

    // The quiet client behind the same address redeems its code.
    let form = [
        ("grant_type", "authorization_code"),
        ("code", &*code),
        ("code_verifier", &*verifier),
        ("client_id", &*quiet),
        ("redirect_uri", REDIRECT),
    ];
    let r = env.call(at(egress, form_request("/token", &form, &[]))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.json()["access_token"].is_string());
}

#[tokio::test]
async fn g05_revocations_flood_meets_the_address_ceiling() {
    let env = env_with(|b| b.rate_limits(RateLimits::default().revoke(Limit::per_minute(20, 10)))).await;
    let client = env.register().await;
    let mut results = Vec::new();
    for i in 0..1000 {
        // A different claimed client every time: only the address ceiling stops it.
        let claimed = if i % 2 == 0 { client.clone() } else { format!("made-up-{i}") };
        let r =
            env.call(at("192.0.2.9", form_request("/revoke", &[("token", "x"), ("client_id", &claimed)], &[]))).await;
        results.push(r.status);
    }
    let limited = results.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!(limited, 980, "20 a minute from one address");
    let r = env.call(at("192.0.2.10", form_request("/revoke", &[("token", "x"), ("client_id", &client)], &[]))).await;
    assert_eq!(r.status, StatusCode::OK, "another address is served");
}

#[tokio::test]
async fn every_endpoint_caps_its_body() {
    let env = env_with(|b| b.rate_limits(RateLimits::default())).await;
    let big = vec![b'a'; 64 * 1024 + 1];
    let paths = env.server.paths().clone();
    for (path, content_type) in [
        (&paths.register, "application/json"),
        (&paths.token, "application/x-www-form-urlencoded"),
        (&paths.revoke, "application/x-www-form-urlencoded"),
        (&paths.consent, "application/x-www-form-urlencoded"),
        (&paths.dev_login, "application/x-www-form-urlencoded"),
        (&paths.authorize, "application/x-www-form-urlencoded"),
        (&paths.callback, "application/x-www-form-urlencoded"),
        (&paths.jwks, "application/json"),
        (&paths.metadata, "application/json"),
    ] {
        let req = Request::post(path.as_str())
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(big.clone())))
            .unwrap();
        let r = env.call(at("192.0.2.1", req)).await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{path}: {}", r.text());
    }
    // Just under the cap is read (and refused for what it is).
    let req = Request::post(paths.token.as_str())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(vec![b'a'; 64 * 1024])))
        .unwrap();
    assert_ne!(env.call(at("192.0.2.1", req)).await.status, StatusCode::PAYLOAD_TOO_LARGE);
}
