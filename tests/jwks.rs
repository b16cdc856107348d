//! SECURITY-CATALOGUE group C: remote keys and network faults, against a mock identity
//! provider on 127.0.0.1 with hit counters. Time moves through `ManualClock`, never sleeps.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use support::idp::{Jwks, MockIdp};
use support::{RESOURCE, TestKey, claims, now, with};
use tokio::task::JoinSet;
use tower_mcp_auth::clock::ManualClock;
use tower_mcp_auth::verify::{Issuer, TokenVerifier};
use tower_mcp_auth::{AccessToken, BearerToken, JwtVerifier, VerifyError};

struct Env {
    idp: MockIdp,
    clock: Arc<ManualClock>,
    k1: TestKey,
    k2: TestKey,
}

async fn env() -> Env {
    let idp = MockIdp::start().await;
    let k1 = TestKey::rs256_a();
    let k2 = TestKey::rs256_b();
    idp.set_keys(&[&k1]);
    Env { idp, clock: Arc::new(ManualClock::new(now())), k1, k2 }
}

impl Env {
    fn builder(&self) -> tower_mcp_auth::verify::JwtVerifierBuilder {
        JwtVerifier::builder()
            .issuer(Issuer::with_jwks_url(self.idp.issuer.clone(), self.idp.jwks_url()))
            .audience(RESOURCE)
            .clock(self.clock.clone())
            .fetch_timeout(Duration::from_secs(1))
    }

    fn verifier(&self) -> JwtVerifier {
        self.builder().build().unwrap()
    }

    /// A token valid for two days, so moving the clock through key lifetimes never expires it.
    fn token(&self, key: &TestKey) -> String {
        key.token(&with(claims(&self.idp.issuer, RESOURCE), json!({"exp": now() + 2 * 86_400})))
    }
}

async fn verify(v: &JwtVerifier, token: &str) -> Result<AccessToken, VerifyError> {
    v.verify(&BearerToken::new(token).unwrap()).await
}

fn assert_unavailable(r: Result<AccessToken, VerifyError>) -> Duration {
    match r {
        Err(e) if e.is_unavailable() => e.retry_after().unwrap(),
        other => panic!("expected 503-unavailable, got {other:?}"),
    }
}

fn assert_invalid(r: Result<AccessToken, VerifyError>) {
    match r {
        Err(e) if e.is_invalid_token() => {}
        other => panic!("expected invalid_token, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c01_slow_jwks_on_cold_start_is_a_bounded_503_with_one_fetch() {
    let e = env().await;
    e.idp.set(|k| k.jwks_delay = Duration::from_secs(30));
    let v = e.verifier();
    let token = e.token(&e.k1);
    let started = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..20 {
        let (v, t) = (v.clone(), token.clone());
        set.spawn(async move { verify(&v, &t).await });
    }
    while let Some(r) = set.join_next().await {
        let retry = assert_unavailable(r.unwrap());
        assert!(retry >= Duration::from_secs(1));
    }
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert_eq!(e.idp.jwks_hits(), 1, "concurrent requests share one fetch");
}

#[tokio::test]
async fn c02_failures_after_a_good_fetch_keep_the_last_good_keys() {
    let e = env().await;
    let v = e.verifier();
    let token = e.token(&e.k1);
    verify(&v, &token).await.unwrap();
    let failures = [
        Jwks::Raw { status: 500, content_type: "application/json", body: Bytes::from_static(b"{}") },
        Jwks::Raw { status: 404, content_type: "text/plain", body: Bytes::from_static(b"nope") },
        Jwks::Raw { status: 200, content_type: "text/html", body: Bytes::from_static(b"<html>") },
        Jwks::Json(json!({})),
        Jwks::Json(json!({"keys": "x"})),
    ];
    for (i, failure) in failures.into_iter().enumerate() {
        e.idp.set(|k| k.jwks = failure);
        // Past the key lifetime (5 min default) and the failure back-off: one refetch, which fails.
        e.clock.advance(Duration::from_secs(301));
        verify(&v, &token).await.unwrap_or_else(|err| panic!("failure {i}: {err:?}"));
        assert_eq!(e.idp.jwks_hits(), 2 + i);
        // Within the back-off: no further fetch, still served from the last good keys.
        verify(&v, &token).await.unwrap();
        assert_eq!(e.idp.jwks_hits(), 2 + i);
    }
}

#[tokio::test]
async fn c02_last_good_keys_expire_after_max_stale() {
    let e = env().await;
    let v = e.builder().jwks_max_stale(Duration::from_secs(600)).build().unwrap();
    let token = e.token(&e.k1);
    verify(&v, &token).await.unwrap();
    e.idp.set(|k| k.jwks = Jwks::Raw { status: 500, content_type: "text/plain", body: Bytes::new() });
    e.clock.advance(Duration::from_secs(301 + 600));
    assert_unavailable(verify(&v, &token).await);
}

#[tokio::test]
async fn c03_k06_cold_start_failure_is_503_and_recovers_without_restart() {
    let e = env().await;
    e.idp.set(|k| k.jwks = Jwks::Raw { status: 503, content_type: "text/plain", body: Bytes::new() });
    let v = e.verifier();
    let token = e.token(&e.k1);
    let retry = assert_unavailable(verify(&v, &token).await);
    assert_eq!(retry, Duration::from_secs(5), "Retry-After is the failure back-off");
    // Within the back-off nothing is fetched again.
    assert_unavailable(verify(&v, &token).await);
    assert_eq!(e.idp.jwks_hits(), 1);
    // The identity provider comes back; after the back-off the next request recovers.
    e.idp.set_keys(&[&e.k1]);
    e.clock.advance(Duration::from_secs(5));
    verify(&v, &token).await.unwrap();
    assert_eq!(e.idp.jwks_hits(), 2);
}

#[tokio::test]
async fn c04_redirects_are_not_followed() {
    let e = env().await;
    e.idp.set(|k| k.jwks = Jwks::Redirect(format!("{}/trap", k_issuer(&e))));
    let v = e.verifier();
    assert_unavailable(verify(&v, &e.token(&e.k1)).await);
    assert_eq!(e.idp.trap_hits(), 0);
}

fn k_issuer(e: &Env) -> String {
    e.idp.issuer.clone()
}

#[tokio::test]
async fn c05_huge_endless_and_trickling_bodies_are_cut_off() {
    for (name, jwks) in [
        ("10 MB", Jwks::Raw { status: 200, content_type: "application/json", body: Bytes::from(vec![b' '; 10 << 20]) }),
        ("endless", Jwks::Endless),
        ("trickle", Jwks::Trickle),
    ] {
        let e = env().await;
        e.idp.set(|k| k.jwks = jwks);
        let v = e.verifier();
        let started = Instant::now();
        assert_unavailable(verify(&v, &e.token(&e.k1)).await);
        assert!(started.elapsed() < Duration::from_secs(3), "{name}: {:?}", started.elapsed());
    }
}

#[tokio::test]
async fn c06_ten_thousand_keys_are_refused_and_last_good_kept() {
    let e = env().await;
    let v = e.verifier();
    let token = e.token(&e.k1);
    verify(&v, &token).await.unwrap();
    let many: Vec<_> = (0..10_000).map(|i| with(e.k2.jwk.clone(), json!({"kid": format!("k{i}")}))).collect();
    e.idp.set(|k| k.jwks = Jwks::Json(json!({ "keys": many })));
    e.clock.advance(Duration::from_secs(301));
    verify(&v, &token).await.unwrap();
    assert_eq!(e.idp.jwks_hits(), 2);
}

#[tokio::test]
async fn c07_rotation_adds_a_key_with_one_refresh() {
    let e = env().await;
    let v = e.verifier();
    verify(&v, &e.token(&e.k1)).await.unwrap();
    e.idp.set_keys(&[&e.k1, &e.k2]);
    // The cooldown counts from the last fetch; a rotation seen later refreshes at once.
    e.clock.advance(Duration::from_secs(30));
    verify(&v, &e.token(&e.k2)).await.unwrap();
    assert_eq!(e.idp.jwks_hits(), 2);
    verify(&v, &e.token(&e.k1)).await.unwrap();
    verify(&v, &e.token(&e.k2)).await.unwrap();
    assert_eq!(e.idp.jwks_hits(), 2);
}

#[tokio::test]
async fn c08_b25_removed_key_stops_verifying_after_refresh() {
    let e = env().await;
    let v = e.verifier();
    let old = e.token(&e.k1);
    verify(&v, &old).await.unwrap();
    e.idp.set_keys(&[&e.k2]);
    e.clock.advance(Duration::from_secs(301));
    assert_invalid(verify(&v, &old).await);
    verify(&v, &e.token(&e.k2)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c09_random_kids_cause_at_most_one_fetch_per_cooldown() {
    let e = env().await;
    let v = e.verifier();
    let good = e.token(&e.k1);
    verify(&v, &good).await.unwrap();
    e.clock.advance(Duration::from_secs(31));
    let mut set = JoinSet::new();
    for i in 0..1000 {
        let v = v.clone();
        let t = e.k1.sign(
            &json!({"alg": "RS256", "kid": format!("random-{i}-{}", support::rand_suffix())}),
            &claims(&e.idp.issuer, RESOURCE),
        );
        set.spawn(async move { verify(&v, &t).await });
    }
    while let Some(r) = set.join_next().await {
        assert_invalid(r.unwrap());
    }
    assert_eq!(e.idp.jwks_hits(), 2, "one cold fetch, then at most one refresh in the window");
    verify(&v, &good).await.unwrap();
    assert_eq!(e.idp.jwks_hits(), 2, "known keys unaffected, cache not wiped");
    // The next window allows one more refresh, no more.
    e.clock.advance(Duration::from_secs(30));
    let t = e.k1.sign(&json!({"alg": "RS256", "kid": "another"}), &claims(&e.idp.issuer, RESOURCE));
    assert_invalid(verify(&v, &t).await);
    assert_invalid(verify(&v, &t).await);
    assert_eq!(e.idp.jwks_hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c10_concurrent_valid_requests_on_a_cold_cache_fetch_once() {
    let e = env().await;
    let v = e.verifier();
    let token = e.token(&e.k1);
    let mut set = JoinSet::new();
    for _ in 0..1000 {
        let (v, t) = (v.clone(), token.clone());
        set.spawn(async move { verify(&v, &t).await });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(e.idp.jwks_hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c10_concurrent_valid_requests_at_expiry_fetch_once() {
    let e = env().await;
    let v = e.verifier();
    let token = e.token(&e.k1);
    verify(&v, &token).await.unwrap();
    e.clock.advance(Duration::from_secs(301));
    let mut set = JoinSet::new();
    for _ in 0..1000 {
        let (v, t) = (v.clone(), token.clone());
        set.spawn(async move { verify(&v, &t).await });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(e.idp.jwks_hits(), 2);
}

#[tokio::test]
async fn c11_transport_failures_never_fall_back() {
    let e = env().await;
    let token = e.token(&e.k1);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        port
    };
    let targets = [
        format!("http://127.0.0.1:{closed}/jwks"),
        // TLS to a plain-HTTP server: the handshake fails.
        format!("https://{}/jwks", e.idp.addr),
        "https://jwks.invalid/jwks".to_owned(),
    ];
    for url in targets {
        let v = JwtVerifier::builder()
            .issuer(Issuer::with_jwks_url(e.idp.issuer.clone(), url.clone()))
            .audience(RESOURCE)
            .fetch_timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        assert_unavailable(verify(&v, &token).await);
    }
}

#[tokio::test]
async fn c12_remote_oct_keys_ignored_and_duplicate_kid_unusable() {
    let e = env().await;
    let oct =
        json!({"kty": "oct", "kid": "rs256-a", "alg": "HS256", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2U"});
    e.idp.set(|k| k.jwks = Jwks::Json(json!({"keys": [oct, e.k2.jwk, with(e.k2.jwk.clone(), json!({"kid": "dup"})), with(e.k1.jwk.clone(), json!({"kid": "dup"}))]})));
    let v = e.verifier();
    assert_invalid(verify(&v, &e.token(&e.k1)).await);
    verify(&v, &e.token(&e.k2)).await.unwrap();
    let dup = e.k1.sign(&json!({"alg": "RS256", "kid": "dup"}), &claims(&e.idp.issuer, RESOURCE));
    assert_invalid(verify(&v, &dup).await);
}

#[tokio::test]
async fn c14_discovery_issuer_mismatch_and_http_jwks_are_refused() {
    let e = env().await;
    let token = e.token(&e.k1);
    let discover = || {
        JwtVerifier::builder()
            .issuer(Issuer::discover(e.idp.issuer.clone()))
            .audience(RESOURCE)
            .fetch_timeout(Duration::from_secs(1))
            .build()
            .unwrap()
    };
    verify(&discover(), &token).await.unwrap();
    for doc in [
        json!({"issuer": "https://evil.example", "jwks_uri": e.idp.jwks_url()}),
        json!({"issuer": format!("{}/", e.idp.issuer), "jwks_uri": e.idp.jwks_url()}),
        json!({"issuer": e.idp.issuer, "jwks_uri": "http://idp.example.com/jwks"}),
        json!({"issuer": e.idp.issuer}),
    ] {
        e.idp.set(|k| k.discovery = Some(doc.clone()));
        assert_unavailable(verify(&discover(), &token).await);
    }
}

#[tokio::test]
async fn discovery_prefers_rfc8414_then_openid() {
    let e = env().await;
    let token = e.token(&e.k1);
    e.idp.set(|k| k.oauth_metadata_status = 200);
    let v = JwtVerifier::from_issuer(e.idp.issuer.clone(), RESOURCE).unwrap();
    verify(&v, &token).await.unwrap();
    assert_eq!(e.idp.discovery_hits(), 1, "RFC 8414 document found first");
    // A 5xx on the first URL is a failure, not a reason to try the next.
    e.idp.set(|k| k.oauth_metadata_status = 500);
    let v = JwtVerifier::from_issuer(e.idp.issuer.clone(), RESOURCE).unwrap();
    assert_unavailable(verify(&v, &token).await);
    // A 404 moves on to OpenID Connect discovery.
    e.idp.set(|k| k.oauth_metadata_status = 404);
    let v = JwtVerifier::from_issuer(e.idp.issuer.clone(), RESOURCE).unwrap();
    verify(&v, &token).await.unwrap();
}

#[tokio::test]
async fn c15_wall_clock_jumps_do_not_lock_out_refresh() {
    let e = env().await;
    let v = e.verifier();
    verify(&v, &e.token(&e.k1)).await.unwrap();
    e.idp.set_keys(&[&e.k1, &e.k2]);
    // The wall clock jumps back an hour; only monotonic time counts for the cooldown.
    e.clock.set_unix_time(now() - 3600);
    e.clock.advance(Duration::from_secs(31));
    let t = e.k2.token(&with(claims(&e.idp.issuer, RESOURCE), json!({"iat": now() - 3600, "exp": now() - 3000})));
    verify(&v, &t).await.unwrap();
    assert_eq!(e.idp.jwks_hits(), 2);
}

#[tokio::test]
async fn cache_control_sets_the_key_lifetime() {
    let e = env().await;
    e.idp.set(|k| k.cache_control = Some("public, max-age=3600".into()));
    let v = e.verifier();
    let token = e.token(&e.k1);
    verify(&v, &token).await.unwrap();
    e.clock.advance(Duration::from_secs(3000));
    verify(&v, &token).await.unwrap();
    assert_eq!(e.idp.jwks_hits(), 1, "still fresh at 50 min");
    e.clock.advance(Duration::from_secs(601));
    verify(&v, &token).await.unwrap();
    assert_eq!(e.idp.jwks_hits(), 2, "refetched after an hour");
    // no-store is clamped to the 30 s minimum.
    e.idp.set(|k| k.cache_control = Some("no-store".into()));
    e.clock.advance(Duration::from_secs(3601));
    verify(&v, &token).await.unwrap();
    e.clock.advance(Duration::from_secs(20));
    verify(&v, &token).await.unwrap();
    assert_eq!(e.idp.jwks_hits(), 3);
    e.clock.advance(Duration::from_secs(11));
    verify(&v, &token).await.unwrap();
    assert_eq!(e.idp.jwks_hits(), 4);
}

// C11 with real certificates: a trusted CA works, and an unknown CA, a certificate for another
// host or a self-signed certificate all fail without any insecure fallback.
#[tokio::test]
async fn c11_tls_trusts_only_what_it_is_told_to() {
    use support::tls::{TestCa, TlsFront, self_signed};
    let e = env().await;
    let ca = TestCa::new();
    let token = e.token(&e.k1);
    let build = |port: u16, trust: Option<&str>| {
        let mut b = JwtVerifier::builder()
            .issuer(Issuer::with_jwks_url(e.idp.issuer.clone(), format!("https://127.0.0.1:{port}/jwks")))
            .audience(RESOURCE)
            .fetch_timeout(Duration::from_secs(2));
        if let Some(pem) = trust {
            b = b.trust_root_certificate(pem.as_bytes().to_vec());
        }
        b.build().unwrap()
    };
    let good = TlsFront::start(ca.leaf(&["127.0.0.1", "localhost"]), e.idp.addr).await;
    verify(&build(good.addr.port(), Some(&ca.pem)), &token).await.unwrap();
    assert_unavailable(verify(&build(good.addr.port(), None), &token).await);
    let wrong_host = TlsFront::start(ca.leaf(&["jwks.other.example"]), e.idp.addr).await;
    assert_unavailable(verify(&build(wrong_host.addr.port(), Some(&ca.pem)), &token).await);
    let selfish = TlsFront::start(self_signed(&["127.0.0.1"]), e.idp.addr).await;
    assert_unavailable(verify(&build(selfish.addr.port(), Some(&ca.pem)), &token).await);
    assert_eq!(e.idp.jwks_hits(), 1, "only the trusted server was ever read");
}
