//! `IntrospectionVerifier` (RFC 7662) against a mock introspection endpoint on loopback.

mod support;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use support::idp::MockIdp;
use support::{RESOURCE, now};
use tokio::task::JoinSet;
use tower_mcp_auth::clock::ManualClock;
use tower_mcp_auth::verify::TokenVerifier;
use tower_mcp_auth::{AccessToken, BearerToken, IntrospectionVerifier, VerifyError};

struct Env {
    idp: MockIdp,
    clock: Arc<ManualClock>,
    v: IntrospectionVerifier,
}

async fn env() -> Env {
    let idp = MockIdp::start().await;
    // RFC 6749 §2.3.1: id and secret are form-encoded before Basic ("%" becomes "%25").
    let basic = base64::engine::general_purpose::STANDARD.encode("rs-client:s3cr%25t");
    idp.set(|k| k.introspection_auth = Some(format!("Basic {basic}")));
    let clock = Arc::new(ManualClock::new(now()));
    let v = IntrospectionVerifier::builder(idp.introspection_url())
        .client_credentials("rs-client", "s3cr%t")
        .audience(RESOURCE)
        .issuer(idp.issuer.clone())
        .clock(clock.clone())
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    Env { idp, clock, v }
}

impl Env {
    fn answer(&self, token: &str, response: Value) {
        self.idp.set(|k| {
            k.introspection.insert(token.to_owned(), response);
        });
    }

    fn active(&self, token: &str, patch: Value) {
        let mut r = json!({
            "active": true, "iss": self.idp.issuer, "aud": RESOURCE, "sub": "user-9", "client_id": "c-9",
            "scope": "mcp:read mcp:write", "exp": now() + 600, "iat": now(), "token_type": "Bearer"
        });
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                r.as_object_mut().unwrap().remove(k);
            } else {
                r[k] = v.clone();
            }
        }
        self.answer(token, r);
    }

    async fn verify(&self, token: &str) -> Result<AccessToken, VerifyError> {
        self.v.verify(&BearerToken::new(token).unwrap()).await
    }
}

#[tokio::test]
async fn active_token_becomes_an_access_token() {
    let e = env().await;
    e.active("opaque-1", json!({}));
    let t = e.verify("opaque-1").await.unwrap();
    assert_eq!(t.subject(), Some("user-9"));
    assert_eq!(t.client_id(), Some("c-9"));
    assert!(t.scopes().contains("mcp:write"));
    assert_eq!(t.audience(), [RESOURCE]);
    assert_eq!(t.claim("token_type"), Some(&json!("Bearer")));
}

#[tokio::test]
async fn rejections() {
    let e = env().await;
    let cases = [("inactive", json!({"active": false})), ("active-string", json!({"active": "true", "aud": RESOURCE}))];
    for (token, response) in cases {
        e.answer(token, response);
        assert!(e.verify(token).await.unwrap_err().is_invalid_token(), "{token}");
    }
    for (token, patch) in [
        ("other-aud", json!({"aud": "https://other.example/mcp"})),
        ("no-aud", json!({"aud": null})),
        ("expired", json!({"exp": now() - 1})),
        ("future", json!({"nbf": now() + 3600})),
        ("refresh", json!({"token_type": "refresh_token"})),
        ("issuer", json!({"iss": "https://evil.example"})),
        ("cnf", json!({"cnf": {"jkt": "x"}})),
        ("scope-type", json!({"scope": ["mcp:read"]})),
    ] {
        e.active(token, patch);
        assert!(e.verify(token).await.unwrap_err().is_invalid_token(), "{token}");
    }
    assert!(e.verify("unknown-token").await.unwrap_err().is_invalid_token());
}

#[tokio::test]
async fn endpoint_faults_are_503() {
    let e = env().await;
    e.active("t", json!({}));
    for status in [500u16, 503, 401, 302] {
        e.idp.set(|k| k.introspection_status = status);
        let err = e.verify("t").await.unwrap_err();
        assert!(err.is_unavailable(), "{status}: {err:?}");
    }
    e.idp.set(|k| {
        k.introspection_status = 200;
        k.introspection_delay = Duration::from_secs(10);
    });
    let started = std::time::Instant::now();
    assert!(e.verify("t").await.unwrap_err().is_unavailable());
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn wrong_client_credentials_are_503_not_401() {
    let e = env().await;
    e.active("t", json!({}));
    e.idp.set(|k| k.introspection_auth = Some("Basic d3Jvbmc6d3Jvbmc=".into()));
    assert!(e.verify("t").await.unwrap_err().is_unavailable());
}

#[tokio::test]
async fn accepted_tokens_are_cached_never_beyond_exp() {
    let e = env().await;
    e.active("t", json!({"exp": now() + 30}));
    e.verify("t").await.unwrap();
    e.verify("t").await.unwrap();
    assert_eq!(e.idp.introspection_hits(), 1);
    // Past `exp`, the cached entry is not used: the endpoint is asked again, and its (stale)
    // answer is refused because `exp` has passed.
    e.clock.advance(Duration::from_secs(31));
    assert!(e.verify("t").await.unwrap_err().is_invalid_token());
    assert_eq!(e.idp.introspection_hits(), 2);
}

#[tokio::test]
async fn rejections_are_not_cached() {
    let e = env().await;
    e.answer("t", json!({"active": false}));
    assert!(e.verify("t").await.is_err());
    e.active("t", json!({}));
    e.verify("t").await.unwrap();
    assert_eq!(e.idp.introspection_hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_introspection() {
    let e = env().await;
    e.active("t", json!({}));
    e.idp.set(|k| k.introspection_delay = Duration::from_millis(200));
    let v = e.v.clone();
    let mut set = JoinSet::new();
    for _ in 0..50 {
        let v = v.clone();
        set.spawn(async move { v.verify(&BearerToken::new("t").unwrap()).await });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(e.idp.introspection_hits(), 1);
}

#[tokio::test]
async fn builder_fails_closed() {
    let idp = MockIdp::start().await;
    assert!(
        IntrospectionVerifier::builder(idp.introspection_url()).audience(RESOURCE).build().is_err(),
        "no credentials"
    );
    assert!(
        IntrospectionVerifier::builder(idp.introspection_url()).client_credentials("a", "b").build().is_err(),
        "no audience"
    );
    assert!(
        IntrospectionVerifier::builder("http://idp.example.com/introspect")
            .client_credentials("a", "b")
            .audience(RESOURCE)
            .build()
            .is_err(),
        "http endpoint"
    );
}
