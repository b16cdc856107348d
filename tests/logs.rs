//! SECURITY-CATALOGUE L01 and L02 for the resource-server half: with tracing at TRACE,
//! no token ever appears in the logs, and error responses carry no internal detail.

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body_util::Full;
use serde_json::json;
use support::idp::{Jwks, MockIdp};
use support::logs::Capture;
use support::stack::{open_policy, post, send, stack};
use support::{RESOURCE, TestKey, claims, with};
use tower_mcp_auth::reject::JsonReject;
use tower_mcp_auth::scope_guard::{Requirement, ScopePolicy};
use tower_mcp_auth::verify::Issuer;
use tower_mcp_auth::{IntrospectionVerifier, JwtVerifier};

/// One TRACE subscriber for the whole test binary, capturing every thread.
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

#[tokio::test]
async fn l01_no_token_in_trace_logs() {
    let logs = logs();
    let idp = MockIdp::start().await;
    let key = TestKey::rs256_a();
    idp.set_keys(&[&key]);
    let v = JwtVerifier::builder()
        .issuer(Issuer::discover(idp.issuer.clone()))
        .audience(RESOURCE)
        .fetch_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let policy = ScopePolicy::builder().mcp_tool("admin", Requirement::all(["mcp:admin"])).build().unwrap();
    let (svc, _) = stack(v, policy);

    let good = key.token(&claims(&idp.issuer, RESOURCE));
    let expired = key.token(&with(claims(&idp.issuer, RESOURCE), json!({"exp": 1_000})));
    let forged = TestKey::rs256_b().sign(&key.header(), &claims(&idp.issuer, RESOURCE));
    let wrong_aud = key.token(&with(claims(&idp.issuer, RESOURCE), json!({"aud": "https://elsewhere.example"})));
    let secrets = [good.clone(), expired.clone(), forged.clone(), wrong_aud.clone()];

    for t in &secrets {
        send(&svc, post(Some(t), r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"admin"}}"#)).await;
        send(&svc, post(Some(t), "{}")).await;
        let q = Request::post(format!("/mcp?access_token={t}")).body(Full::new(Bytes::new())).unwrap();
        send(&svc, q).await;
        let mut two = post(Some(t), "{}");
        two.headers_mut().append("authorization", HeaderValue::from_str(&format!("Bearer {t}x")).unwrap());
        send(&svc, two).await;
    }
    // Opaque tokens sent to an introspection endpoint, and the verifier's own client secret.
    idp.set(|k| {
        k.introspection
            .insert("opaque-secret-1".into(), json!({"active": true, "aud": RESOURCE, "exp": support::now() + 60}));
    });
    let iv = IntrospectionVerifier::builder(idp.introspection_url())
        .client_credentials("rs", "client-secret-value-42")
        .audience(RESOURCE)
        .build()
        .unwrap();
    let (isvc, _) = stack(iv, open_policy());
    send(&isvc, post(Some("opaque-secret-1"), "{}")).await;
    send(&isvc, post(Some("opaque-secret-2"), "{}")).await;

    let text = logs.text();
    assert!(text.contains("TRACE") || text.contains("DEBUG"), "the capture works");
    for s in secrets.iter().map(String::as_str).chain(["opaque-secret-1", "opaque-secret-2", "client-secret-value-42"])
    {
        assert!(!text.contains(s), "a secret reached the logs");
        // Not even the signature part alone.
        if let Some((_, sig)) = s.rsplit_once('.') {
            assert!(!text.contains(sig), "a token signature reached the logs");
        }
    }
}

#[tokio::test]
async fn l02_error_responses_carry_no_internal_detail() {
    let _ = logs();
    let idp = MockIdp::start().await;
    idp.set(|k| {
        k.jwks = Jwks::Raw {
            status: 500,
            content_type: "text/plain",
            body: Bytes::from_static(b"db error at 10.1.2.3: stack trace"),
        }
    });
    let key = TestKey::rs256_a();
    let v = JwtVerifier::builder()
        .issuer(Issuer::with_jwks_url(idp.issuer.clone(), idp.jwks_url()))
        .audience(RESOURCE)
        .build()
        .unwrap();
    let (svc, _) = stack(v, open_policy());
    let res = send(&svc, post(Some(&key.token(&claims(&idp.issuer, RESOURCE))), "{}")).await;
    assert_eq!(res.status, 503);
    assert_eq!(res.headers["retry-after"], "5");
    let everything = format!("{:?} {:?}", res.headers, res.body);
    for leak in ["10.1.2.3", "stack", "db error", &idp.addr.to_string(), "127.0.0.1", "jwks"] {
        assert!(!everything.contains(leak), "{leak} leaked: {everything}");
    }
    // The JSON body, when chosen, is a fixed error code.
    let json_stack = tower::ServiceBuilder::new()
        .layer(tower_mcp_auth::BearerAuthLayer::new(support::stack::resource()).reject_with(JsonReject))
        .service(tower::service_fn(|_r: Request<Full<Bytes>>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::new())))
        }));
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let mut r = Request::post("/mcp").body(Full::new(Bytes::new())).unwrap();
    r.headers_mut().insert("authorization", HeaderValue::from_static("Bearer a\"b<script>"));
    let res = json_stack.oneshot(r).await.unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.headers()["content-type"], "application/json");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], br#"{"error":"invalid_request"}"#);
}
