//! SECURITY-CATALOGUE group D (scope guard and routing) and the MCP-aware rules of
//! `ScopeGuardLayer` (MCP 2026-07-28 `Mcp-Method` / `Mcp-Name`, SPEC items 19 and 30).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::json;
use support::stack::{METADATA_URL, Svc, post, send, stack};
use support::{ISSUER, RESOURCE, TestKey, claims, with};
use tower::ServiceExt;
use tower_mcp_auth::scope_guard::{Requirement, ScopeGuardLayer, ScopePolicy};
use tower_mcp_auth::verify::{Issuer, KeySet};
use tower_mcp_auth::{BearerAuthLayer, ClaimsExtractLayer, JwtVerifier, ScopeHierarchy};

fn verifier() -> JwtVerifier {
    JwtVerifier::builder()
        .issuer(Issuer::with_keys(ISSUER, KeySet::from_jwk_json(&TestKey::rs256_a().jwk.to_string()).unwrap()))
        .audience(RESOURCE)
        .build()
        .unwrap()
}

fn token(scope: &str) -> String {
    TestKey::rs256_a().token(&with(claims(ISSUER, RESOURCE), json!({ "scope": scope })))
}

fn forbidden(scopes: &str) -> String {
    format!(r#"Bearer error="insufficient_scope", scope="{scopes}", resource_metadata="{METADATA_URL}""#)
}

fn guarded(policy: ScopePolicy) -> (Svc, Arc<std::sync::Mutex<Vec<support::stack::Seen>>>) {
    stack(verifier(), policy)
}

fn write_policy() -> ScopePolicy {
    ScopePolicy::require(Requirement::all(["mcp:write"])).unwrap()
}

#[tokio::test]
async fn d01_missing_scope_is_403_naming_it() {
    let (svc, seen) = guarded(write_policy());
    let res = send(&svc, post(Some(&token("mcp:read")), "{}")).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert_eq!(res.www_authenticate(), forbidden("mcp:write"));
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(send(&svc, post(Some(&token("mcp:read mcp:write")), "{}")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn d02_no_token_is_401_not_403() {
    let (svc, _) = guarded(write_policy());
    let res = send(&svc, post(None, "{}")).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert!(!res.www_authenticate().contains("error="));
}

#[tokio::test]
async fn d03_d04_d07_no_prefix_case_or_wildcard_match() {
    let (svc, _) = guarded(write_policy());
    for s in ["mcp:writer", "mcp:write:x", "xmcp:write", "MCP:WRITE", "*", "mcp:*", "all", "mcp:Write"] {
        let res = send(&svc, post(Some(&token(s)), "{}")).await;
        assert_eq!(res.status, StatusCode::FORBIDDEN, "{s}");
    }
}

#[tokio::test]
async fn d05_only_spaces_separate_scopes() {
    let (svc, _) = guarded(write_policy());
    assert_eq!(send(&svc, post(Some(&token("  mcp:read   mcp:write ")), "{}")).await.status, StatusCode::OK);
    for s in ["mcp:read\tmcp:write", "mcp:read\nmcp:write", "mcp:read,mcp:write"] {
        assert_eq!(send(&svc, post(Some(&token(s)), "{}")).await.status, StatusCode::FORBIDDEN, "{s:?}");
    }
}

#[tokio::test]
async fn d06_scope_claim_conflicts_are_401() {
    let (svc, _) = guarded(write_policy());
    let t =
        TestKey::rs256_a().token(&with(claims(ISSUER, RESOURCE), json!({"scope": "mcp:write", "scp": ["mcp:admin"]})));
    assert_eq!(send(&svc, post(Some(&t), "{}")).await.status, StatusCode::UNAUTHORIZED);
    let t = TestKey::rs256_a().token(&with(claims(ISSUER, RESOURCE), json!({"scope": ["mcp:write"]})));
    assert_eq!(send(&svc, post(Some(&t), "{}")).await.status, StatusCode::UNAUTHORIZED);
    let t = TestKey::rs256_a().token(&with(claims(ISSUER, RESOURCE), json!({"scope": null, "scp": ["mcp:write"]})));
    assert_eq!(send(&svc, post(Some(&t), "{}")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn any_of_and_hierarchy() {
    let policy = ScopePolicy::builder()
        .require(Requirement::any(["files:read", "files:admin"]).and(Requirement::all(["mcp:read"])))
        .hierarchy(ScopeHierarchy::new().implies("mcp:admin", ["mcp:read", "files:admin"]).unwrap())
        .build()
        .unwrap();
    let (svc, _) = guarded(policy);
    assert_eq!(send(&svc, post(Some(&token("files:read mcp:read")), "{}")).await.status, StatusCode::OK);
    assert_eq!(send(&svc, post(Some(&token("mcp:admin")), "{}")).await.status, StatusCode::OK, "hierarchy");
    let res = send(&svc, post(Some(&token("other")), "{}")).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    // Every scope the operation needs, in one challenge: the first alternative of an any-of.
    assert_eq!(res.www_authenticate(), forbidden("files:read mcp:read"));
    // A satisfied alternative is named as granted.
    let res = send(&svc, post(Some(&token("files:admin")), "{}")).await;
    assert_eq!(res.www_authenticate(), forbidden("files:admin mcp:read"));
}

fn mcp_policy() -> ScopePolicy {
    ScopePolicy::builder()
        .mcp_method("tools/list", Requirement::all(["mcp:read"]))
        .mcp_tool("admin_ping", Requirement::all(["mcp:admin"]))
        .mcp_tool("echo", Requirement::all(["mcp:read"]))
        .mcp_resource("file:///secret", Requirement::all(["files:secret"]))
        .mcp_prompt("deploy", Requirement::all(["mcp:deploy"]))
        .max_body_bytes(4096)
        .build()
        .unwrap()
}

fn call(tool: &str) -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": {}}}).to_string()
}

#[tokio::test]
async fn mcp_tool_rules_and_body_handed_on_intact() {
    let (svc, seen) = guarded(mcp_policy());
    let body = call("admin_ping");
    let res = send(&svc, post(Some(&token("mcp:read")), &body)).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert_eq!(res.www_authenticate(), forbidden("mcp:admin"));
    let res = send(&svc, post(Some(&token("mcp:admin")), &body)).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(seen.lock().unwrap()[0].body, body.as_bytes(), "the inner service reads the same bytes");
    // A tool without a rule needs only the base requirement.
    assert_eq!(send(&svc, post(Some(&token("")), &call("whoami"))).await.status, StatusCode::OK);
    // Methods with rules, resources and prompts.
    let list = json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}).to_string();
    assert_eq!(send(&svc, post(Some(&token("")), &list)).await.www_authenticate(), forbidden("mcp:read"));
    let read = json!({"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"file:///secret"}}).to_string();
    assert_eq!(send(&svc, post(Some(&token("mcp:read")), &read)).await.www_authenticate(), forbidden("files:secret"));
    let prompt = json!({"jsonrpc":"2.0","id":4,"method":"prompts/get","params":{"name":"deploy"}}).to_string();
    assert_eq!(send(&svc, post(Some(&token("mcp:read")), &prompt)).await.status, StatusCode::FORBIDDEN);
    // GET (SSE stream) and DELETE carry no body: base requirement only.
    let get = Request::get("/mcp")
        .header("authorization", format!("Bearer {}", token("")))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send(&svc, get).await.status, StatusCode::OK);
}

// D10: in a batch every message's rule applies; method names are case-sensitive.
#[tokio::test]
async fn d10_batches_and_method_case() {
    let (svc, seen) = guarded(mcp_policy());
    let batch = format!("[{},{}]", call("echo"), call("admin_ping"));
    let res = send(&svc, post(Some(&token("mcp:read")), &batch)).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert_eq!(res.www_authenticate(), forbidden("mcp:read mcp:admin"));
    assert!(seen.lock().unwrap().is_empty(), "no item of a refused batch runs");
    // `Tools/Call` is not `tools/call`: it matches no rule, and an MCP server answers it with
    // "method not found" (checked against a real rmcp server in tests/mcp.rs).
    let odd = json!({"jsonrpc":"2.0","id":1,"method":"Tools/Call","params":{"name":"admin_ping"}}).to_string();
    assert_eq!(send(&svc, post(Some(&token("mcp:read")), &odd)).await.status, StatusCode::OK);
}

// SPEC 30 / catalogue: headers must agree with the body, ambiguous bodies are refused.
#[tokio::test]
async fn mcp_headers_must_match_body() {
    let (svc, seen) = guarded(mcp_policy());
    let t = token("mcp:admin mcp:read");
    let body = call("admin_ping");
    let with_headers = |m: &str, n: Option<&str>| {
        let mut r = post(Some(&t), &body);
        r.headers_mut().insert("mcp-method", m.parse().unwrap());
        if let Some(n) = n {
            r.headers_mut().insert("mcp-name", n.parse().unwrap());
        }
        r
    };
    assert_eq!(send(&svc, with_headers("tools/call", Some("admin_ping"))).await.status, StatusCode::OK);
    for (m, n) in [("tools/list", None), ("tools/call", Some("echo")), ("Tools/Call", Some("admin_ping"))] {
        let res = send(&svc, with_headers(m, n)).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{m} {n:?}");
        assert!(res.www_authenticate().contains(r#"error="invalid_request""#));
    }
    // Header says a harmless method while the body calls the guarded tool: refused either way.
    let t_read = token("mcp:read");
    let mut r = post(Some(&t_read), &body);
    r.headers_mut().insert("mcp-method", "tools/list".parse().unwrap());
    assert_eq!(send(&svc, r).await.status, StatusCode::BAD_REQUEST);
    for bad in [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"admin_ping"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"admin_ping"}}"#,
        "{not json",
        "\u{feff}{}",
    ] {
        assert_eq!(send(&svc, post(Some(&t_read), bad)).await.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn mcp_body_over_the_cap_is_413() {
    let (svc, seen) = guarded(mcp_policy());
    let big = json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x".repeat(5000)}}}).to_string();
    assert_eq!(send(&svc, post(Some(&token("mcp:read")), &big)).await.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(seen.lock().unwrap().is_empty());
}

// D08, D09: a guard applied per route with axum's `route_layer` sees exactly the path the router
// dispatches; no spelling of the admin path reaches the handler without the scope.
#[tokio::test]
async fn d08_d09_path_tricks_never_reach_a_guarded_route() {
    let hits = Arc::new(AtomicUsize::new(0));
    let admin_hits = hits.clone();
    let resource = support::stack::resource();
    let admin = ScopePolicy::require(Requirement::all(["mcp:admin"])).unwrap();
    let app = Router::new()
        .route(
            "/admin",
            get(move || {
                admin_hits.fetch_add(1, Ordering::SeqCst);
                async { "admin" }
            })
            .route_layer(ScopeGuardLayer::new(admin, resource.clone())),
        )
        .route("/public", get(|| async { "public" }))
        .layer(ClaimsExtractLayer::new(verifier(), resource.clone()))
        .layer(BearerAuthLayer::new(resource));
    let reader = token("mcp:read");
    let request = |path: &str, extra: &[(&str, &str)]| {
        let mut b = Request::get(path).header("authorization", format!("Bearer {reader}"));
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        b.body(Body::empty()).unwrap()
    };
    for path in [
        "/admin",
        "/admin/",
        "//admin",
        "/ADMIN",
        "/%61dmin",
        "/admin%2F",
        "/admin;x",
        "/public/../admin",
        "/admin?x=/public",
        "/./admin",
        "/admin/.",
    ] {
        let res = app.clone().oneshot(request(path, &[])).await.unwrap();
        assert_ne!(res.status(), StatusCode::OK, "{path}");
    }
    for header in ["x-forwarded-uri", "x-original-url", "x-rewrite-url"] {
        let res = app.clone().oneshot(request("/admin", &[(header, "/public")])).await.unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{header}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    // The guard does work on the real path, and the unguarded route stays open.
    let admin_token = token("mcp:admin");
    let ok =
        Request::get("/admin").header("authorization", format!("Bearer {admin_token}")).body(Body::empty()).unwrap();
    assert_eq!(app.clone().oneshot(ok).await.unwrap().status(), StatusCode::OK);
    assert_eq!(app.clone().oneshot(request("/public", &[])).await.unwrap().status(), StatusCode::OK);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}
