//! The stack in front of a real rmcp streamable-HTTP server on loopback: the `AccessToken`
//! tool parameter, per-tool scopes, sessions bound to their principal (A17), decisions from
//! the current request's token (D11), method-name casing (D10), and rmcp's own Origin / Host
//! checks (A15, A16) behind the auth layers.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, ServerHandler, tool, tool_handler, tool_router};
use serde_json::{Value, json};
use support::{ISSUER, TestKey, claims, with};
use tower::ServiceBuilder;
use tower_mcp_auth::scope_guard::{Requirement, ScopeGuardLayer, ScopePolicy};
use tower_mcp_auth::session::SessionBindingLayer;
use tower_mcp_auth::verify::{Issuer, KeySet};
use tower_mcp_auth::{AccessToken, BearerAuthLayer, ClaimsExtractLayer, JwtVerifier, ProtectedResource};

#[derive(Clone)]
struct Tools {
    tool_router: ToolRouter<Self>,
    admin_calls: Arc<AtomicUsize>,
}

#[tool_router]
impl Tools {
    #[tool(description = "The caller")]
    fn whoami(&self, token: AccessToken) -> Result<String, ErrorData> {
        serde_json::to_string(&token).map_err(|e| ErrorData::internal_error(e.to_string(), None))
    }

    #[tool(description = "Needs mcp:admin")]
    fn admin_ping(&self) -> String {
        self.admin_calls.fetch_add(1, Ordering::SeqCst);
        "pong".into()
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Tools {}

struct Server {
    addr: SocketAddr,
    resource: String,
    admin_calls: Arc<AtomicUsize>,
    http: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn server() -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let resource_url = format!("http://{addr}/mcp");
    let resource = ProtectedResource::builder(&resource_url)
        .authorization_server(ISSUER)
        .scopes_supported(["mcp:read", "mcp:admin"])
        .build()
        .unwrap();
    let verifier = JwtVerifier::builder()
        .issuer(Issuer::with_keys(ISSUER, KeySet::from_jwk_json(&TestKey::rs256_a().jwk.to_string()).unwrap()))
        .resource(&resource)
        .build()
        .unwrap();
    let policy = ScopePolicy::builder().mcp_tool("admin_ping", Requirement::all(["mcp:admin"])).build().unwrap();
    let admin_calls = Arc::new(AtomicUsize::new(0));
    let calls = admin_calls.clone();
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(vec!["127.0.0.1".to_owned(), addr.to_string()])
        .with_allowed_origins(vec![format!("http://{addr}")]);
    let mcp = StreamableHttpService::new(
        move || Ok(Tools { tool_router: Tools::tool_router(), admin_calls: calls.clone() }),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let app = Router::new().route_service(
        "/mcp",
        ServiceBuilder::new()
            .layer(BearerAuthLayer::new(resource.clone()))
            .layer(ClaimsExtractLayer::new(verifier, resource.clone()))
            .layer(SessionBindingLayer::new())
            .layer(ScopeGuardLayer::new(policy, resource))
            .service(mcp),
    );
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server { addr, resource: resource_url, admin_calls, http: reqwest::Client::new(), task }
}

fn token(resource: &str, sub: &str, scope: &str) -> String {
    TestKey::rs256_a().token(&with(claims(ISSUER, resource), json!({"sub": sub, "scope": scope})))
}

struct Reply {
    status: u16,
    session: Option<String>,
    headers: reqwest::header::HeaderMap,
    body: Option<Value>,
}

impl Server {
    async fn rpc(&self, token: &str, session: Option<&str>, msg: Value, extra: &[(&str, &str)]) -> Reply {
        let mut req = self
            .http
            .post(format!("http://{}/mcp", self.addr))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18");
        if let Some(s) = session {
            req = req.header("mcp-session-id", s);
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let res = req.body(msg.to_string()).send().await.unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let session = headers.get("mcp-session-id").map(|v| v.to_str().unwrap().to_owned());
        let text = res.text().await.unwrap();
        // JSON, or an SSE stream whose data lines carry the JSON-RPC reply.
        let body = serde_json::from_str(&text).ok().or_else(|| {
            text.lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .find_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        });
        Reply { status, session, headers, body }
    }

    /// initialize + initialized; returns the session id.
    async fn open_session(&self, token: &str) -> String {
        let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
            "protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"test","version":"1"}}});
        let r = self.rpc(token, None, init, &[]).await;
        assert_eq!(r.status, 200, "initialize");
        let session = r.session.expect("session id");
        let r =
            self.rpc(token, Some(&session), json!({"jsonrpc":"2.0","method":"notifications/initialized"}), &[]).await;
        assert!(r.status == 202 || r.status == 200, "initialized: {}", r.status);
        session
    }
}

fn call(id: u64, tool: &str) -> Value {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":{}}})
}

#[tokio::test]
async fn access_token_reaches_rmcp_tools() {
    let s = server().await;
    let t = token(&s.resource, "alice", "mcp:read");
    let session = s.open_session(&t).await;
    let r = s.rpc(&t, Some(&session), call(1, "whoami"), &[]).await;
    assert_eq!(r.status, 200);
    let text = r.body.unwrap()["result"]["content"][0]["text"].as_str().unwrap().to_owned();
    let me: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(me["sub"], "alice");
    assert_eq!(me["aud"], json!([s.resource]));
    assert_eq!(me["scopes"], json!(["mcp:read"]));
    assert!(!text.contains(&t), "the raw token is not serialized");
}

#[tokio::test]
async fn a17_session_of_another_principal_is_404() {
    let s = server().await;
    let alice = token(&s.resource, "alice", "mcp:read mcp:admin");
    let bob = token(&s.resource, "bob", "mcp:read mcp:admin");
    let session = s.open_session(&alice).await;
    let r = s.rpc(&bob, Some(&session), call(1, "admin_ping"), &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(s.admin_calls.load(Ordering::SeqCst), 0);
    // The owner keeps using it.
    let r = s.rpc(&alice, Some(&session), call(2, "admin_ping"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(s.admin_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn d11_each_request_is_decided_on_its_own_token() {
    let s = server().await;
    let admin = token(&s.resource, "alice", "mcp:read mcp:admin");
    let reader = token(&s.resource, "alice", "mcp:read");
    let session = s.open_session(&admin).await;
    assert_eq!(s.rpc(&admin, Some(&session), call(1, "admin_ping"), &[]).await.status, 200);
    let r = s.rpc(&reader, Some(&session), call(2, "admin_ping"), &[]).await;
    assert_eq!(r.status, 403);
    assert!(r.headers["www-authenticate"].to_str().unwrap().contains(r#"scope="mcp:admin""#));
    assert_eq!(s.admin_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn d10_method_names_are_case_sensitive_end_to_end() {
    let s = server().await;
    let reader = token(&s.resource, "alice", "mcp:read");
    let session = s.open_session(&reader).await;
    let odd = json!({"jsonrpc":"2.0","id":1,"method":"Tools/Call","params":{"name":"admin_ping","arguments":{}}});
    let r = s.rpc(&reader, Some(&session), odd, &[]).await;
    assert_eq!(r.body.as_ref().and_then(|b| b["error"]["code"].as_i64()), Some(-32601), "method not found");
    assert_eq!(s.admin_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a15_a16_origin_and_host_checks_behind_the_auth_layers() {
    let s = server().await;
    let t = token(&s.resource, "alice", "mcp:read");
    let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
        "protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"test","version":"1"}}});
    let r = s.rpc(&t, None, init.clone(), &[("origin", "https://evil.example")]).await;
    assert_eq!(r.status, 403, "A15: foreign Origin");
    let r = s.rpc(&t, None, init.clone(), &[("host", "attacker.example")]).await;
    assert!(r.status == 403 || r.status == 421, "A16: rebinding Host, got {}", r.status);
    // Authentication still comes first: without a token the answer is the 401 challenge.
    let res =
        s.http.post(format!("http://{}/mcp", s.addr)).header("origin", "https://evil.example").send().await.unwrap();
    assert_eq!(res.status(), 401);
}
