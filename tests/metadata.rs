//! RFC 9728 protected resource metadata (SPEC items 1, 2, 20, 24, 25, 26; catalogue G07).

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use tower_mcp_auth::{ProtectedResource, ProtectedResourceMetadata};

fn resource(serve_root: bool) -> ProtectedResource {
    ProtectedResource::builder("https://mcp.example.com/mcp")
        .authorization_server("https://auth.example.com/tenant")
        .scopes_supported(["mcp:read", "mcp:admin"])
        .challenge_scopes(["mcp:read"])
        .resource_name("Example MCP")
        .serve_root_metadata(serve_root)
        .build()
        .unwrap()
}

async fn call(
    svc: &ProtectedResourceMetadata,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, Bytes) {
    let mut b = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let res = svc.clone().oneshot(b.body(()).unwrap()).await.unwrap();
    let (parts, body) = res.into_parts();
    (parts.status, parts.headers, body.collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn g07_document_at_path_inserted_and_root_paths() {
    let r = resource(true);
    let svc = ProtectedResourceMetadata::new(r.clone());
    assert_eq!(
        r.metadata_paths().collect::<Vec<_>>(),
        ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"]
    );
    for path in r.metadata_paths() {
        let (status, headers, body) = call(&svc, Method::GET, path, &[]).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers["content-type"], "application/json");
        let doc: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["resource"], "https://mcp.example.com/mcp");
        assert_eq!(doc["authorization_servers"], json!(["https://auth.example.com/tenant"]));
        assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
        assert_eq!(doc["scopes_supported"], json!(["mcp:read", "mcp:admin"]));
        assert_eq!(doc["resource_name"], "Example MCP");
    }
    // Without root serving, the root path is not this resource's.
    let svc = ProtectedResourceMetadata::new(resource(false));
    assert_eq!(call(&svc, Method::GET, "/.well-known/oauth-protected-resource", &[]).await.0, StatusCode::NOT_FOUND);
}

// SPEC 26 / A14: documents come from configuration, not from Host or X-Forwarded-*.
#[tokio::test]
async fn spoofed_host_changes_nothing() {
    let svc = ProtectedResourceMetadata::new(resource(true));
    let (_, _, plain) = call(&svc, Method::GET, "/.well-known/oauth-protected-resource/mcp", &[]).await;
    let (_, _, spoofed) = call(
        &svc,
        Method::GET,
        "/.well-known/oauth-protected-resource/mcp",
        &[("host", "evil.example"), ("x-forwarded-host", "evil.example"), ("forwarded", "host=evil.example")],
    )
    .await;
    assert_eq!(plain, spoofed);
}

// SPEC 24: browser clients preflight the MCP-Protocol-Version header.
#[tokio::test]
async fn cors_for_browser_clients() {
    let svc = ProtectedResourceMetadata::new(resource(false));
    let path = "/.well-known/oauth-protected-resource/mcp";
    let (status, headers, _) = call(
        &svc,
        Method::OPTIONS,
        path,
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "mcp-protocol-version"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert!(headers["access-control-allow-headers"].to_str().unwrap().contains("mcp-protocol-version"));
    let (_, headers, _) = call(&svc, Method::GET, path, &[("origin", "https://app.example")]).await;
    assert_eq!(headers["access-control-allow-origin"], "*");
}

// SPEC 25: no redirects; other methods 405, HEAD without a body.
#[tokio::test]
async fn no_redirects_and_method_handling() {
    let svc = ProtectedResourceMetadata::new(resource(false));
    let path = "/.well-known/oauth-protected-resource/mcp";
    for p in [format!("{path}/"), "/.well-known/oauth-protected-resource/MCP".into()] {
        let (status, headers, _) = call(&svc, Method::GET, &p, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(headers.get("location").is_none());
    }
    let (status, headers, _) = call(&svc, Method::POST, path, &[]).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "GET, HEAD, OPTIONS");
    let (status, _, body) = call(&svc, Method::HEAD, path, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty());
}

// SPEC 1 / 20: canonical resource, no offline_access, the challenge names the configured scope.
#[tokio::test]
async fn canonical_resource_and_challenge() {
    let r = ProtectedResource::builder("HTTPS://MCP.Example.com:443/mcp/")
        .authorization_server("https://auth.example.com")
        .scopes_supported(["mcp:read"])
        .build()
        .unwrap();
    assert_eq!(r.resource(), "https://mcp.example.com/mcp");
    assert_eq!(
        r.missing_token_challenge(),
        r#"Bearer scope="mcp:read", resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp""#
    );
    assert!(
        ProtectedResource::builder("https://x/mcp")
            .authorization_server("https://as")
            .scopes_supported(["offline_access"])
            .build()
            .is_err()
    );
    assert!(
        ProtectedResource::builder("https://x/mcp")
            .authorization_server("https://as")
            .challenge_scopes(["bad scope"])
            .build()
            .is_err()
    );
}
