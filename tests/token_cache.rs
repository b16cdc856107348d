//! The verified-token cache of `ClaimsExtractLayer`: a token presented again is not verified
//! again, and a cached verdict never outlives what made it true (exp, keys, revocation).
//! Time moves through `ManualClock`; key changes go through a mock JWKS on 127.0.0.1.

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;
use support::idp::MockIdp;
use support::{ISSUER, RESOURCE, TestKey, claims, now, with};
use tower::util::BoxCloneService;
use tower::{ServiceBuilder, ServiceExt, service_fn};
use tower_mcp_auth::claims::TokenCache;
use tower_mcp_auth::clock::ManualClock;
use tower_mcp_auth::verify::{CachePolicy, Issuer, KeySet, SharedKeySet, TokenVerifier, verifier_fn};
use tower_mcp_auth::{AccessToken, BearerAuthLayer, BearerToken, ClaimsExtractLayer, JwtVerifier, VerifyError};

/// Delegates to `inner`, counting verifications (cache misses).
#[derive(Clone)]
struct Counting<V> {
    inner: V,
    calls: Arc<AtomicUsize>,
}

impl<V: TokenVerifier> TokenVerifier for Counting<V> {
    type Future = V::Future;
    fn verify(&self, token: &BearerToken) -> V::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.verify(token)
    }
    fn cache_policy(&self) -> Option<CachePolicy> {
        self.inner.cache_policy()
    }
}

type Svc = BoxCloneService<Request<Full<Bytes>>, Response<Full<Bytes>>, Infallible>;

struct Stack {
    svc: Svc,
    calls: Arc<AtomicUsize>,
    cache: Option<TokenCache>,
}

/// Bearer → claims → a service answering `sub|raw token` of the `AccessToken` it received.
fn stack<V: TokenVerifier + Clone>(
    verifier: V,
    layer: impl FnOnce(ClaimsExtractLayer<Counting<V>>) -> ClaimsExtractLayer<Counting<V>>,
) -> Stack {
    stack_with(true, verifier, layer)
}

/// [`stack`], with or without BearerAuthLayer in front (without it, ClaimsExtractLayer reads
/// the header itself).
fn stack_with<V: TokenVerifier + Clone>(
    bearer_first: bool,
    verifier: V,
    layer: impl FnOnce(ClaimsExtractLayer<Counting<V>>) -> ClaimsExtractLayer<Counting<V>>,
) -> Stack {
    let calls = Arc::new(AtomicUsize::new(0));
    let resource = support::stack::resource();
    let claims = layer(ClaimsExtractLayer::new(Counting { inner: verifier, calls: calls.clone() }, resource.clone()));
    let cache = claims.token_cache().cloned();
    let bearer = bearer_first.then(|| BearerAuthLayer::new(resource));
    let svc = ServiceBuilder::new().option_layer(bearer).layer(claims).service(service_fn(
        |req: Request<Full<Bytes>>| async move {
            assert!(req.headers().get("authorization").is_none(), "the header reached the service");
            let t = req.extensions().get::<AccessToken>().expect("a verified token");
            let body = format!("{}|{}", t.subject().unwrap_or("-"), t.raw_token());
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
        },
    ));
    Stack { svc: BoxCloneService::new(svc), calls, cache }
}

impl Stack {
    async fn send(&self, token: &str) -> (StatusCode, String) {
        let req = Request::builder().header("authorization", format!("Bearer {token}")).body(Full::default()).unwrap();
        let res = self.svc.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let body = http_body_util::BodyExt::collect(res.into_body()).await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn static_verifier(key: &TestKey, clock: Arc<ManualClock>) -> JwtVerifier {
    let keys = KeySet::from_jwks_json(&TestKey::jwks(&[key]).to_string()).unwrap();
    JwtVerifier::builder().issuer(Issuer::with_keys(ISSUER, keys)).audience(RESOURCE).clock(clock).build().unwrap()
}

fn token_for(key: &TestKey, sub: &str, exp: i64) -> String {
    key.token(&with(claims(ISSUER, RESOURCE), json!({"sub": sub, "exp": exp})))
}

#[tokio::test]
async fn a_token_presented_again_is_verified_once() {
    let clock = Arc::new(ManualClock::new(now()));
    let key = TestKey::rs256_a();
    let s = stack(static_verifier(&key, clock), |l| l);
    let alice = token_for(&key, "alice", now() + 600);
    let bob = token_for(&key, "bob", now() + 600);
    for _ in 0..50 {
        assert_eq!(s.send(&alice).await, (StatusCode::OK, format!("alice|{alice}")));
        assert_eq!(s.send(&bob).await, (StatusCode::OK, format!("bob|{bob}")));
    }
    assert_eq!(s.calls(), 2, "one verification per distinct token");
    let cache = s.cache.as_ref().unwrap();
    assert_eq!(cache.len(), 2);
    assert!(cache.weight() > 0 && cache.weight() < 4096, "{}", cache.weight());
}

/// A05 with the header read by ClaimsExtractLayer itself: the `token68` grammar is checked on
/// every cache miss, so bytes that differ from a cached token never skip it.
#[tokio::test]
async fn a05_without_bearer_auth_layer_every_uncached_token_is_checked_first() {
    let clock = Arc::new(ManualClock::new(now()));
    let key = TestKey::rs256_a();
    let s = stack_with(false, static_verifier(&key, clock), |l| l);
    let good = token_for(&key, "alice", now() + 600);
    for _ in 0..3 {
        assert_eq!(s.send(&good).await, (StatusCode::OK, format!("alice|{good}")));
    }
    assert_eq!(s.calls(), 1);
    for bad in [format!("{good},"), format!("{good}\""), format!("{good} x"), format!("{good}%"), format!("{good}=a")] {
        let (status, body) = s.send(&bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(!body.contains(&good));
    }
    assert_eq!(s.calls(), 1, "a malformed token never reaches the verifier");
    assert_eq!(s.send(&good).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_token_that_differs_by_one_byte_is_verified_and_refused() {
    let clock = Arc::new(ManualClock::new(now()));
    let key = TestKey::rs256_a();
    let s = stack(static_verifier(&key, clock), |l| l);
    let good = token_for(&key, "alice", now() + 600);
    assert_eq!(s.send(&good).await.0, StatusCode::OK);
    // Last signature character, a payload character, and the same signature on another payload.
    let mut last = good.clone().into_bytes();
    let n = last.len() - 1;
    last[n] = if last[n] == b'A' { b'B' } else { b'A' };
    let (header, rest) = good.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let other = token_for(&key, "mallory", now() + 600);
    let other_payload = other.split('.').nth(1).unwrap();
    for bad in [String::from_utf8(last).unwrap(), format!("{header}.{other_payload}.{sig}"), format!("{good}=")] {
        let before = s.calls();
        assert_eq!(s.send(&bad).await.0, StatusCode::UNAUTHORIZED, "{bad}");
        assert_eq!(s.calls(), before + 1, "verified, not answered from the cache");
    }
    // The good token still answers from the cache.
    let before = s.calls();
    assert_eq!(s.send(&good).await.0, StatusCode::OK);
    assert_eq!(s.calls(), before);
}

#[tokio::test]
async fn refusals_are_never_cached() {
    let clock = Arc::new(ManualClock::new(now()));
    let key = TestKey::rs256_a();
    let s = stack(static_verifier(&key, clock), |l| l);
    let expired = token_for(&key, "alice", now() - 3600);
    let foreign = token_for(&TestKey::rs256_b(), "alice", now() + 600);
    for _ in 0..3 {
        assert_eq!(s.send(&expired).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(s.send(&foreign).await.0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(s.calls(), 6);
    assert_eq!(s.cache.as_ref().unwrap().len(), 0);
}

#[tokio::test]
async fn a_cached_verdict_ends_at_exp_and_the_verifier_decides_after() {
    let t0 = now();
    let clock = Arc::new(ManualClock::new(t0));
    let key = TestKey::rs256_a();
    let s = stack(static_verifier(&key, clock.clone()), |l| l);
    let token = token_for(&key, "alice", t0 + 60);
    assert_eq!(s.send(&token).await.0, StatusCode::OK);
    clock.advance(Duration::from_secs(59));
    assert_eq!(s.send(&token).await.0, StatusCode::OK);
    assert_eq!(s.calls(), 1, "still cached one second before exp");
    // At exp the cache no longer answers; the verifier's 30 s leeway still accepts, and the
    // verdict is not cached again (it would outlive exp).
    clock.advance(Duration::from_secs(1));
    assert_eq!(s.send(&token).await.0, StatusCode::OK);
    assert_eq!(s.send(&token).await.0, StatusCode::OK);
    assert_eq!(s.calls(), 3);
    clock.advance(Duration::from_secs(30));
    assert_eq!(s.send(&token).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(s.calls(), 4);
}

#[tokio::test]
async fn replacing_keys_ends_verdicts_of_a_dropped_key_only() {
    let clock = Arc::new(ManualClock::new(now()));
    let (k1, k2) = (TestKey::rs256_a(), TestKey::rs256_b());
    let jwks = |keys: &[&TestKey]| KeySet::from_jwks_json(&TestKey::jwks(keys).to_string()).unwrap();
    let shared = SharedKeySet::new(jwks(&[&k1]));
    let verifier = JwtVerifier::builder()
        .issuer(Issuer::with_shared_keys(ISSUER, shared.clone()))
        .audience(RESOURCE)
        .clock(clock)
        .build()
        .unwrap();
    let s = stack(verifier, |l| l);
    let t1 = token_for(&k1, "alice", now() + 600);
    assert_eq!(s.send(&t1).await.0, StatusCode::OK);
    // Adding a key changes nothing for tokens verified before.
    shared.replace(jwks(&[&k1, &k2]));
    assert_eq!(s.send(&t1).await.0, StatusCode::OK);
    assert_eq!(s.calls(), 1);
    // Dropping k1: the cached verdict stops answering and the verifier refuses.
    shared.replace(jwks(&[&k2]));
    assert_eq!(s.send(&t1).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(s.calls(), 2);
    // The same kid with other key material counts as dropped too.
    let t2 = token_for(&k2, "bob", now() + 600);
    assert_eq!(s.send(&t2).await.0, StatusCode::OK);
    let mut impostor = TestKey::rs256_a();
    impostor.kid = k2.kid;
    impostor.jwk["kid"] = json!(k2.kid);
    shared.replace(jwks(&[&impostor]));
    assert_eq!(s.send(&t2).await.0, StatusCode::UNAUTHORIZED, "k2's material changed under its kid");
}

#[tokio::test]
async fn c_jwks_refresh_that_drops_a_key_ends_its_cached_verdicts() {
    let idp = MockIdp::start().await;
    let (k1, k2) = (TestKey::rs256_a(), TestKey::rs256_b());
    idp.set_keys(&[&k1]);
    let clock = Arc::new(ManualClock::new(now()));
    let verifier = JwtVerifier::builder()
        .issuer(Issuer::with_jwks_url(idp.issuer.clone(), idp.jwks_url()))
        .audience(RESOURCE)
        .clock(clock.clone())
        .fetch_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let s = stack(verifier, |l| l);
    let claims_for = |sub: &str| with(claims(&idp.issuer, RESOURCE), json!({"sub": sub, "exp": now() + 86_400}));
    let t1 = k1.token(&claims_for("alice"));
    assert_eq!(s.send(&t1).await.0, StatusCode::OK);
    assert_eq!(s.send(&t1).await.0, StatusCode::OK);
    assert_eq!((s.calls(), idp.jwks_hits()), (1, 1));
    // The issuer rotates k1 out; a token signed with k2 makes the verifier refetch (after the
    // unknown-kid cooldown), and the refetched set no longer holds k1.
    idp.set_keys(&[&k2]);
    clock.advance(Duration::from_secs(31));
    let t2 = k2.token(&claims_for("bob"));
    assert_eq!(s.send(&t2).await.0, StatusCode::OK);
    assert_eq!(idp.jwks_hits(), 2);
    assert_eq!(s.send(&t1).await.0, StatusCode::UNAUTHORIZED, "k1 is gone: no cached verdict for its tokens");
    // t2 was verified while the key set changed, so its entry was taken under the epoch that
    // ended: verified once more, then answered from the cache.
    let before = s.calls();
    for _ in 0..3 {
        assert_eq!(s.send(&t2).await.0, StatusCode::OK);
    }
    assert_eq!(s.calls(), before + 1);
}

#[tokio::test]
async fn invalidate_forgets_one_token_and_clear_all() {
    let clock = Arc::new(ManualClock::new(now()));
    let key = TestKey::es256();
    let s = stack(static_verifier(&key, clock), |l| l);
    let (a, b) = (token_for(&key, "alice", now() + 600), token_for(&key, "bob", now() + 600));
    s.send(&a).await;
    s.send(&b).await;
    let cache = s.cache.as_ref().unwrap();
    assert!(cache.invalidate(&a));
    assert!(!cache.invalidate(&a), "already gone");
    s.send(&a).await;
    s.send(&b).await;
    assert_eq!(s.calls(), 3, "alice verified again, bob answered from the cache");
    cache.clear();
    assert!(cache.is_empty());
    s.send(&b).await;
    assert_eq!(s.calls(), 4);
}

#[tokio::test]
async fn without_cache_every_request_is_verified() {
    let clock = Arc::new(ManualClock::new(now()));
    let key = TestKey::ed25519();
    let token = token_for(&key, "alice", now() + 600);
    for configure in [
        (|l| l.without_cache())
            as fn(ClaimsExtractLayer<Counting<JwtVerifier>>) -> ClaimsExtractLayer<Counting<JwtVerifier>>,
        |l| l.cache_capacity(0),
    ] {
        let s = stack(static_verifier(&key, clock.clone()), configure);
        assert!(s.cache.is_none());
        for _ in 0..5 {
            assert_eq!(s.send(&token).await.0, StatusCode::OK);
        }
        assert_eq!(s.calls(), 5);
    }
}

#[tokio::test]
async fn verifiers_without_a_cache_policy_are_asked_every_time() {
    let asked = Arc::new(AtomicUsize::new(0));
    let count = asked.clone();
    let verifier = verifier_fn(move |t: &BearerToken| {
        count.fetch_add(1, Ordering::SeqCst);
        let token = AccessToken::builder(t.as_str()).subject("alice").expires_at(now() + 600).build();
        async move { Ok::<_, VerifyError>(token) }
    });
    let s = stack(verifier, |l| l);
    for _ in 0..4 {
        assert_eq!(s.send("opaque-token").await, (StatusCode::OK, "alice|opaque-token".into()));
    }
    assert_eq!(asked.load(Ordering::SeqCst), 4);
    assert_eq!(s.cache.as_ref().unwrap().len(), 0);
}

#[tokio::test]
async fn a_bounded_cache_stays_within_its_budget() {
    let clock = Arc::new(ManualClock::new(now()));
    let key = TestKey::ed25519();
    let s = stack(static_verifier(&key, clock), |l| l.cache_capacity(64 * 1024));
    for i in 0..2000 {
        assert_eq!(s.send(&token_for(&key, &format!("user-{i}"), now() + 600)).await.0, StatusCode::OK);
    }
    let cache = s.cache.as_ref().unwrap();
    assert!(cache.weight() <= 64 * 1024, "{}", cache.weight());
    assert!(cache.len() > 50 && cache.len() < 2000, "{}", cache.len());
}

// ---------------------------------------------------------------------------------------
// The authorization server's own tokens, with and without its revocation check.

mod issued {
    use super::*;
    use support::authz::{Backend, Browser, Env, Options, code_for, tokens};

    async fn signed_in(env: &Env) -> (String, String, String) {
        let mut browser = Browser::default();
        let (client, code, verifier) = code_for(env, &mut browser).await;
        let (at, rt) = tokens(env, &client, &code, &verifier).await;
        (client, at, rt)
    }

    fn checked(interval: Option<Duration>) -> Options {
        Options {
            configure: Box::new(move |b| match interval {
                Some(i) => b.revocation_check(true).revocation_check_interval(i),
                None => b.revocation_check(true),
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn stateless_tokens_are_cached_until_exp() {
        let env = Env::new(Backend::Memory).await;
        let s = stack(env.server.verifier(), |l| l);
        let (_, at, _) = signed_in(&env).await;
        for _ in 0..5 {
            assert_eq!(s.send(&at).await.0, StatusCode::OK);
        }
        assert_eq!(s.calls(), 1);
    }

    #[tokio::test]
    async fn with_the_revocation_check_every_request_reads_the_store_by_default() {
        let env = Env::with(Backend::Memory, checked(None)).await;
        let s = stack(env.server.verifier(), |l| l);
        let (client, at, rt) = signed_in(&env).await;
        for _ in 0..3 {
            assert_eq!(s.send(&at).await.0, StatusCode::OK);
        }
        assert_eq!(s.calls(), 3);
        let r = env.post_form("/revoke", &[("token", &rt), ("client_id", &client)], &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(s.send(&at).await.0, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn a_revocation_here_ends_cached_verdicts_at_once() {
        let env = Env::with(Backend::Memory, checked(Some(Duration::from_secs(60)))).await;
        let s = stack(env.server.verifier(), |l| l);
        let (client, at, rt) = signed_in(&env).await;
        for _ in 0..3 {
            assert_eq!(s.send(&at).await.0, StatusCode::OK);
        }
        assert_eq!(s.calls(), 1, "reused within the interval");
        let r = env.post_form("/revoke", &[("token", &rt), ("client_id", &client)], &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(s.send(&at).await.0, StatusCode::UNAUTHORIZED, "no cached verdict after a revocation");
    }

    #[tokio::test]
    async fn a_revocation_at_another_instance_is_seen_within_the_interval() {
        for backend in [Backend::Sqlite] {
            let a = Env::with(backend, checked(Some(Duration::from_secs(60)))).await;
            let b = a.sibling(checked(Some(Duration::from_secs(60)))).await.unwrap();
            let s = stack(b.server.verifier(), |l| l);
            let (client, at, rt) = signed_in(&a).await;
            assert_eq!(s.send(&at).await.0, StatusCode::OK);
            let r = a.post_form("/revoke", &[("token", &rt), ("client_id", &client)], &[]).await;
            assert_eq!(r.status, StatusCode::OK);
            // B has not heard of it: its cached verdict stands until the interval ends.
            assert_eq!(s.send(&at).await.0, StatusCode::OK, "{backend:?}");
            assert_eq!(s.calls(), 1);
            b.clock.advance(Duration::from_secs(61));
            assert_eq!(s.send(&at).await.0, StatusCode::UNAUTHORIZED, "{backend:?}: store read again");
        }
    }
}
