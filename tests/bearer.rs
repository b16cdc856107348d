//! SECURITY-CATALOGUE group A: bearer header parsing and transport at the resource server
//! (RFC 6750 §2.1 and §3, OAuth 2.1 §5, RFC 9728 §5.1).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::json;
use support::stack::{Layers, METADATA_URL, Svc, open_policy, post, send, stack_with};
use support::{ISSUER, RESOURCE, TestKey, claims, with};
use tower_mcp_auth::challenge;
use tower_mcp_auth::verify::{Issuer, KeySet, verifier_fn};
use tower_mcp_auth::{AccessToken, BearerToken, JwtVerifier, VerifyError};

const MISSING: &str =
    r#"Bearer scope="mcp:read", resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp""#;
const INVALID_REQUEST: &str = r#"Bearer error="invalid_request", resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp""#;

fn verifier(key: &TestKey) -> JwtVerifier {
    JwtVerifier::builder()
        .issuer(Issuer::with_keys(ISSUER, KeySet::from_jwk_json(&key.jwk.to_string()).unwrap()))
        .audience(RESOURCE)
        .build()
        .unwrap()
}

fn setup(layers: Layers) -> (Svc, String, Arc<std::sync::Mutex<Vec<support::stack::Seen>>>) {
    let key = TestKey::rs256_a();
    let token = key.token(&claims(ISSUER, RESOURCE));
    let (svc, seen) = stack_with(layers, verifier(&key), open_policy());
    (svc, token, seen)
}

fn req_with(auth: &[&[u8]]) -> Request<Full<Bytes>> {
    let mut r = post(None, "{}");
    for v in auth {
        r.headers_mut().append("authorization", HeaderValue::from_bytes(v).unwrap());
    }
    r
}

async fn case_a01_no_authorization_is_401_without_error(layers: Layers) {
    let (svc, _, seen) = setup(layers);
    let res = send(&svc, post(None, "{}")).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert_eq!(res.www_authenticate(), MISSING);
    assert!(seen.lock().unwrap().is_empty());
}

async fn case_a02_other_scheme_is_401_without_error(layers: Layers) {
    let (svc, _, _) = setup(layers);
    for v in [&b"Basic dXNlcjpw"[..], b"Negotiate abc", b"Bearerx abc", b"garbage"] {
        let res = send(&svc, req_with(&[v])).await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{v:?}");
        assert_eq!(res.www_authenticate(), MISSING);
    }
}

async fn case_a03_scheme_is_case_insensitive(layers: Layers) {
    let (svc, token, seen) = setup(layers);
    for scheme in ["bearer", "BEARER", "bEaReR", "Bearer"] {
        let res = send(&svc, req_with(&[format!("{scheme} {token}").as_bytes()])).await;
        assert_eq!(res.status, StatusCode::OK, "{scheme}");
    }
    assert_eq!(seen.lock().unwrap().len(), 4);
}

async fn case_a04_empty_token_is_400_invalid_request(layers: Layers) {
    let (svc, _, seen) = setup(layers);
    for v in [&b"Bearer"[..], b"Bearer ", b"bearer   "] {
        let res = send(&svc, req_with(&[v])).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{v:?}");
        assert_eq!(res.www_authenticate(), INVALID_REQUEST);
    }
    assert!(seen.lock().unwrap().is_empty());
}

async fn case_a05_non_token68_is_400_and_never_echoed(layers: Layers) {
    let (svc, _, _) = setup(layers);
    for v in [
        "Bearer a b",
        "Bearer a,b",
        "Bearer SECRET\"x",
        "Bearer SECRET\\x",
        "Bearer SECRET%41",
        "Bearer SECRET=x",
        "Bearer SECRET;x",
    ] {
        let res = send(&svc, req_with(&[v.as_bytes()])).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(res.www_authenticate(), INVALID_REQUEST);
        let all = format!("{:?}{:?}", res.headers, res.body);
        assert!(!all.contains("SECRET"), "token echoed for {v}");
    }
}

// A06: the grammar is `Bearer 1*SP token68`: tab and NBSP are refused, several spaces accepted.
async fn case_a06_separators(layers: Layers) {
    let (svc, token, _) = setup(layers);
    let tab = format!("Bearer\t{token}");
    let nbsp = [&b"Bearer\xc2\xa0"[..], token.as_bytes()].concat();
    let two = format!("Bearer  {token}");
    assert_eq!(send(&svc, req_with(&[tab.as_bytes()])).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(send(&svc, req_with(&[&nbsp])).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(send(&svc, req_with(&[two.as_bytes()])).await.status, StatusCode::OK);
}

async fn case_a07_two_authorization_headers_are_400(layers: Layers) {
    let (svc, token, seen) = setup(layers);
    let other = TestKey::rs256_a().token(&with(claims(ISSUER, RESOURCE), json!({"sub": "user-2"})));
    let valid = format!("Bearer {token}");
    for pair in
        [[valid.as_str(), "Bearer junk"], [valid.as_str(), &format!("Bearer {other}")], ["Bearer junk", valid.as_str()]]
    {
        let res = send(&svc, req_with(&[pair[0].as_bytes(), pair[1].as_bytes()])).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST);
        assert_eq!(res.www_authenticate(), INVALID_REQUEST);
    }
    assert!(seen.lock().unwrap().is_empty(), "never first-wins");
}

async fn case_a08_query_token_is_ignored(layers: Layers) {
    let (svc, token, seen) = setup(layers);
    let (logs, _guard) = support::logs::capture();
    let req = Request::post(format!("/mcp?access_token={token}")).body(Full::new(Bytes::new())).unwrap();
    let res = send(&svc, req).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert_eq!(res.www_authenticate(), MISSING);
    assert!(seen.lock().unwrap().is_empty());
    assert!(!logs.text().contains(&token));
}

async fn case_a09_form_token_is_ignored(layers: Layers) {
    let (svc, token, seen) = setup(layers);
    let req = Request::post("/mcp")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(format!("access_token={token}"))))
        .unwrap();
    let res = send(&svc, req).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert_eq!(res.www_authenticate(), MISSING);
    assert!(seen.lock().unwrap().is_empty());
}

async fn case_a10_obs_text_is_400_without_panic(layers: Layers) {
    let (svc, _, _) = setup(layers);
    for v in [&b"Bearer \x80\xff\xfe"[..], b"Bearer abc\xff", b"Bearer \xc3\xa9t\xc3\xa9"] {
        assert_eq!(send(&svc, req_with(&[v])).await.status, StatusCode::BAD_REQUEST);
    }
    // Another scheme with obs-text is simply not bearer credentials.
    assert_eq!(send(&svc, req_with(&[b"Basic \xff"])).await.status, StatusCode::UNAUTHORIZED);
}

/// A counting verifier: proves oversized tokens are refused before any decoding work.
fn counting() -> (impl tower_mcp_auth::verify::TokenVerifier + Clone, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let v = verifier_fn(move |_t: &BearerToken| {
        c.fetch_add(1, Ordering::SeqCst);
        async { Err::<AccessToken, _>(VerifyError::invalid_token("test")) }
    });
    (v, calls)
}

async fn case_a11_a12_oversized_tokens_rejected_before_any_work(layers: Layers) {
    let (v, calls) = counting();
    let (svc, _) = stack_with(layers, v, open_policy());
    let big = format!("Bearer {}", "a".repeat(64 * 1024));
    assert_eq!(send(&svc, req_with(&[big.as_bytes()])).await.status, StatusCode::BAD_REQUEST);
    let dots = format!("Bearer {}", ".".repeat(1024 * 1024));
    assert_eq!(send(&svc, req_with(&[dots.as_bytes()])).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

// B26 boundary at the layer: 8 KiB is accepted for verification, 8 KiB + 1 is not.
async fn case_b26_size_cap_boundary(layers: Layers) {
    let (v, calls) = counting();
    let (svc, _) = stack_with(layers, v, open_policy());
    let at_cap = format!("Bearer {}", "a".repeat(8 * 1024));
    let over = format!("Bearer {}", "a".repeat(8 * 1024 + 1));
    assert_eq!(send(&svc, req_with(&[at_cap.as_bytes()])).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(send(&svc, req_with(&[over.as_bytes()])).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

// A13: every challenge has each parameter at most once, with values from a fixed vocabulary.
async fn case_a13_challenges_are_well_formed_and_fixed(layers: Layers) {
    let (svc, token, _) = setup(layers);
    let hostile = [
        String::new(),
        "Bearer".into(),
        "Bearer x\"y".into(),
        "Bearer a\\b".into(),
        "Bearer x, error=\"evil\"".into(),
        format!("Bearer {token}x"),
        "Bearer eyJhbGciOiJub25lIn0.eyJzY29wZSI6ImV2aWwifQ.".into(),
        "Basic evil".into(),
    ];
    for h in &hostile {
        let req = if h.is_empty() { post(None, "{}") } else { req_with(&[h.as_bytes()]) };
        let res = send(&svc, req).await;
        assert!(matches!(res.status.as_u16(), 400 | 401), "{h}");
        let value = res.www_authenticate();
        assert!(!value.contains('\r') && !value.contains('\n'));
        let parsed = challenge::parse(value).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].scheme(), "Bearer");
        for (name, v) in parsed[0].params() {
            assert_eq!(parsed[0].param_count(name), 1, "{name} twice");
            let allowed = match name.as_str() {
                "error" => ["invalid_request", "invalid_token"].contains(&v.as_str()),
                "scope" => v == "mcp:read",
                "resource_metadata" => v == METADATA_URL,
                _ => false,
            };
            assert!(allowed, "{name}={v} for {h}");
        }
    }
}

async fn case_a14_host_headers_never_change_the_challenge(layers: Layers) {
    let (svc, _, _) = setup(layers);
    let mut req = post(None, "{}");
    let h = req.headers_mut();
    h.insert("host", HeaderValue::from_static("evil.example"));
    h.insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
    h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    h.insert("forwarded", HeaderValue::from_static("host=evil.example;proto=http"));
    let res = send(&svc, req).await;
    assert_eq!(res.www_authenticate(), MISSING);
}

async fn case_a18_sender_constrained_tokens_and_dpop_scheme(layers: Layers) {
    let (svc, _, _) = setup(layers);
    let key = TestKey::rs256_a();
    let bound = key
        .token(&with(claims(ISSUER, RESOURCE), json!({"cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}})));
    let res = send(&svc, post(Some(&bound), "{}")).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert!(res.www_authenticate().starts_with(r#"Bearer error="invalid_token""#));
    let valid = key.token(&claims(ISSUER, RESOURCE));
    let res = send(&svc, req_with(&[format!("DPoP {valid}").as_bytes()])).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert_eq!(res.www_authenticate(), MISSING);
}

async fn case_a19_every_method_gets_the_same_outcome(layers: Layers) {
    let (svc, token, _) = setup(layers);
    for method in [Method::GET, Method::HEAD, Method::DELETE, Method::OPTIONS, Method::PUT, Method::PATCH] {
        let bare = Request::builder().method(method.clone()).uri("/mcp").body(Full::new(Bytes::new())).unwrap();
        let res = send(&svc, bare).await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{method}");
        assert_eq!(res.www_authenticate(), MISSING);
        let authed = Request::builder()
            .method(method.clone())
            .uri("/mcp")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert_eq!(send(&svc, authed).await.status, StatusCode::OK, "{method}");
    }
}

async fn case_a20_health_check_disguises_do_not_bypass(layers: Layers) {
    let (svc, _, seen) = setup(layers);
    let req = Request::post("/mcp")
        .header("user-agent", "kube-probe/1.29")
        .header("x-forwarded-uri", "/health")
        .header("x-original-url", "/health")
        .header("x-rewrite-url", "/ping")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send(&svc, req).await.status, StatusCode::UNAUTHORIZED);
    assert!(seen.lock().unwrap().is_empty());
}

// SPEC 6 / R-MCP-06: the inner service never receives the client's token.
async fn case_no_token_passthrough_to_the_inner_service(layers: Layers) {
    let (svc, token, seen) = setup(layers);
    assert_eq!(send(&svc, post(Some(&token), "{}")).await.status, StatusCode::OK);
    let seen = seen.lock().unwrap();
    assert!(seen[0].headers.get("authorization").is_none());
    let t = seen[0].token.as_ref().unwrap();
    assert_eq!(t.subject(), Some("user-1"));
    assert!(!format!("{t:?}").contains(&token), "Debug never prints the raw token");
}

/// Every case runs twice: with BearerAuthLayer in front of ClaimsExtractLayer, and with
/// ClaimsExtractLayer reading the header itself. Both must answer alike.
macro_rules! both_stacks {
    ($($name:ident => $case:ident),* $(,)?) => {$(
        mod $name {
            use super::*;

            #[tokio::test]
            async fn bearer_auth_layer_first() {
                $case(Layers::BearerFirst).await
            }

            #[tokio::test]
            async fn claims_extract_alone() {
                $case(Layers::ClaimsAlone).await
            }
        }
    )*};
}

both_stacks! {
    a01_no_authorization_is_401_without_error => case_a01_no_authorization_is_401_without_error,
    a02_other_scheme_is_401_without_error => case_a02_other_scheme_is_401_without_error,
    a03_scheme_is_case_insensitive => case_a03_scheme_is_case_insensitive,
    a04_empty_token_is_400_invalid_request => case_a04_empty_token_is_400_invalid_request,
    a05_non_token68_is_400_and_never_echoed => case_a05_non_token68_is_400_and_never_echoed,
    a06_separators => case_a06_separators,
    a07_two_authorization_headers_are_400 => case_a07_two_authorization_headers_are_400,
    a08_query_token_is_ignored => case_a08_query_token_is_ignored,
    a09_form_token_is_ignored => case_a09_form_token_is_ignored,
    a10_obs_text_is_400_without_panic => case_a10_obs_text_is_400_without_panic,
    a11_a12_oversized_tokens_rejected_before_any_work => case_a11_a12_oversized_tokens_rejected_before_any_work,
    b26_size_cap_boundary => case_b26_size_cap_boundary,
    a13_challenges_are_well_formed_and_fixed => case_a13_challenges_are_well_formed_and_fixed,
    a14_host_headers_never_change_the_challenge => case_a14_host_headers_never_change_the_challenge,
    a18_sender_constrained_tokens_and_dpop_scheme => case_a18_sender_constrained_tokens_and_dpop_scheme,
    a19_every_method_gets_the_same_outcome => case_a19_every_method_gets_the_same_outcome,
    a20_health_check_disguises_do_not_bypass => case_a20_health_check_disguises_do_not_bypass,
    no_token_passthrough_to_the_inner_service => case_no_token_passthrough_to_the_inner_service,
}
