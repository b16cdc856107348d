//! The examples as users run them: each binary is started on `127.0.0.1:0` against the mock
//! identity provider of `tests/support` and checked over real loopback HTTP (and gRPC).
//!
//! `cargo test --test examples` does not build examples, so the first test builds the four it
//! needs (`cargo build --all-features --example …`, a no-op when they are up to date).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use support::idp::MockIdp;
use support::process::{Proc, example};
use support::{TestKey, claims, with};
use tokio::process::Command;
use tower_mcp_auth::challenge;

/// Time for one HTTP or gRPC exchange.
const EXCHANGE: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// Starting examples.

/// A running example (a `support::process::Proc`): killed on drop, and closing its stdin ends
/// it as well, since every example here runs with `--exit-on-stdin-eof`.
struct Running {
    proc: Proc,
    addr: SocketAddr,
}

impl Running {
    /// Starts example `name` on `127.0.0.1:0` and reads its address from its first line,
    /// `listening on http://ADDR` (`http://ADDR/mcp` for mcp_server).
    async fn start(name: &str, args: &[&str]) -> Self {
        let mut proc = Proc::spawn(
            format!("example {name}"),
            Command::new(example(name)).args(["--bind", "127.0.0.1:0", "--exit-on-stdin-eof"]).args(args),
        );
        let line = proc
            .first_line()
            .await
            .unwrap_or_else(|| panic!("example {name} did not print its address; output:\n{}", proc.output()));
        let addr = line
            .strip_prefix("listening on http://")
            .map(|rest| rest.trim_end_matches("/mcp"))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from {name}: {line:?}"));
        Self { proc, addr }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything the example printed so far: its logs (stderr) and its stdout.
    fn stderr(&self) -> String {
        self.proc.output()
    }
}

/// Runs example `name`, expected to exit at once; returns its status code and stderr.
async fn run_to_exit(name: &str, args: &[&str]) -> (Option<i32>, String) {
    support::process::run_to_exit(example(name), args).await
}

// ---------------------------------------------------------------------------------------------
// Clients and assertions.

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(EXCHANGE).build().unwrap()
}

fn www_authenticate(res: &reqwest::Response) -> String {
    res.headers()
        .get("www-authenticate")
        .unwrap_or_else(|| panic!("no WWW-Authenticate on {}", res.status()))
        .to_str()
        .unwrap()
        .to_owned()
}

/// The one Bearer challenge of a `WWW-Authenticate` value.
fn bearer_params(value: &str) -> challenge::ParsedChallenge {
    let mut parsed = challenge::parse(value).unwrap();
    assert_eq!(parsed.len(), 1, "{value}");
    let c = parsed.remove(0);
    assert!(c.scheme().eq_ignore_ascii_case("bearer"), "{value}");
    c
}

fn token(key: &TestKey, idp: &MockIdp, aud: &str, scope: &str) -> String {
    key.token(&with(claims(&idp.issuer, aud), json!({ "scope": scope })))
}

async fn idp_with_key() -> (MockIdp, TestKey) {
    let idp = MockIdp::start().await;
    let key = TestKey::rs256_a();
    idp.set_keys(&[&key]);
    (idp, key)
}

// ---------------------------------------------------------------------------------------------
// examples/axum.rs

#[tokio::test]
async fn axum_example_protects_hello_and_admin() {
    let (idp, key) = idp_with_key().await;
    let srv = Running::start("axum", &["--issuer", &idp.issuer]).await;
    let resource = srv.url("");
    let metadata_url = srv.url("/.well-known/oauth-protected-resource");
    let http = http();
    let get = |path: &str, token: Option<&str>| {
        let mut req = http.get(srv.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };

    // A01: no token, 401 with the exact challenge (no `error`).
    let res = get("/hello", None).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(www_authenticate(&res), format!(r#"Bearer scope="mcp:read", resource_metadata="{metadata_url}""#));

    let reader = token(&key, &idp, &resource, "mcp:read");
    let res = get("/hello", Some(&reader)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().await.unwrap(), "hello user-1");

    // Per-route scope: 403 naming exactly the missing scope, with the metadata URL.
    let res = get("/admin", Some(&reader)).await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let c = bearer_params(&www_authenticate(&res));
    assert_eq!(c.param("error"), Some("insufficient_scope"));
    assert_eq!(c.param("scope"), Some("mcp:admin"));
    assert_eq!(c.param("resource_metadata"), Some(metadata_url.as_str()));
    let admin = token(&key, &idp, &resource, "mcp:read mcp:admin");
    let res = get("/admin", Some(&admin)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().await.unwrap(), "welcome, administrator user-1");

    // Audience binding (RFC 8707): a token for another resource is an invalid token.
    let elsewhere = token(&key, &idp, "http://127.0.0.1:1/other", "mcp:read mcp:admin");
    let res = get("/hello", Some(&elsewhere)).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(bearer_params(&www_authenticate(&res)).param("error"), Some("invalid_token"));

    // RFC 9728 metadata, and unknown paths stay 404 (the auth layers are route layers).
    let res = get("/.well-known/oauth-protected-resource", None).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let doc: Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
    assert_eq!(doc["resource"], resource);
    assert_eq!(doc["authorization_servers"], json!([idp.issuer]));
    assert_eq!(get("/nope", None).await.unwrap().status(), StatusCode::NOT_FOUND);
    assert!(idp.discovery_hits() >= 1, "keys found by discovery");
}

// ---------------------------------------------------------------------------------------------
// examples/hyper.rs

#[tokio::test]
async fn hyper_example_with_a_jwks_url() {
    let (idp, key) = idp_with_key().await;
    let srv = Running::start("hyper", &["--issuer", &idp.issuer, "--jwks-url", &idp.jwks_url()]).await;
    let http = http();

    let res = http.get(srv.url("/hello")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        www_authenticate(&res),
        format!(r#"Bearer scope="mcp:read", resource_metadata="{}""#, srv.url("/.well-known/oauth-protected-resource"))
    );

    let good = token(&key, &idp, &srv.url(""), "mcp:read");
    let res = http.get(srv.url("/hello")).bearer_auth(&good).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().await.unwrap(), "hello user-1");

    let res = http.get(srv.url("/hello")).bearer_auth(format!("{good}x")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(bearer_params(&www_authenticate(&res)).param("error"), Some("invalid_token"));

    let res = http.get(srv.url("/.well-known/oauth-protected-resource")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(http.get(srv.url("/other")).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(idp.discovery_hits(), 0, "--jwks-url: no discovery");
    assert!(idp.jwks_hits() >= 1);
}

// ---------------------------------------------------------------------------------------------
// examples/tonic.rs

#[tokio::test]
async fn tonic_example_health_check() {
    use tonic::Code;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let (idp, key) = idp_with_key().await;
    let srv = Running::start("tonic", &["--issuer", &idp.issuer]).await;
    let channel = tonic::transport::Endpoint::from_shared(srv.url(""))
        .unwrap()
        .timeout(EXCHANGE)
        .connect_timeout(EXCHANGE)
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let check = |token: Option<String>| {
        let mut req = tonic::Request::new(HealthCheckRequest { service: String::new() });
        if let Some(t) = token {
            req.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        req
    };

    // No token: UNAUTHENTICATED, with the challenge in the metadata.
    let status = client.check(check(None)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let challenge = status.metadata().get("www-authenticate").expect("www-authenticate metadata");
    assert_eq!(
        challenge.to_str().unwrap(),
        format!(r#"Bearer scope="mcp:read", resource_metadata="{}""#, srv.url("/.well-known/oauth-protected-resource"))
    );

    // A valid token: the health service answers.
    let good = token(&key, &idp, &srv.url(""), "mcp:read");
    let res = client.check(check(Some(good))).await.unwrap().into_inner();
    assert_eq!(res.status, ServingStatus::Serving as i32);

    // Valid, but without mcp:read: PERMISSION_DENIED naming the scope.
    let scopeless = token(&key, &idp, &srv.url(""), "profile");
    let status = client.check(check(Some(scopeless))).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let c = bearer_params(status.metadata().get("www-authenticate").unwrap().to_str().unwrap());
    assert_eq!(c.param("scope"), Some("mcp:read"));

    // Wrong audience: UNAUTHENTICATED.
    let elsewhere = token(&key, &idp, "http://127.0.0.1:1/other", "mcp:read");
    let status = client.check(check(Some(elsewhere))).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}

// ---------------------------------------------------------------------------------------------
// examples/mcp_server.rs, against the mock identity provider (the real OIDC provider and the
// MCP TypeScript SDK drive it in tests/e2e_oidc.rs).

const PROTOCOL: &str = "2025-06-18";

/// A minimal streamable-HTTP MCP client: JSON-RPC over POST, responses as JSON or SSE.
struct Mcp {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
    session: Option<String>,
}

impl Mcp {
    fn new(url: String, token: Option<String>) -> Self {
        Self { http: http(), url, token, session: None }
    }

    async fn post(&self, body: &Value, extra: &[(&str, &str)]) -> reqwest::Response {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("accept", HeaderValue::from_static("application/json, text/event-stream"));
        if let Some(session) = &self.session {
            headers.insert("mcp-session-id", session.parse().unwrap());
            headers.insert("mcp-protocol-version", HeaderValue::from_static(PROTOCOL));
        }
        if let Some(t) = &self.token {
            headers.insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        for (k, v) in extra {
            headers.insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        self.http.post(&self.url).headers(headers).body(body.to_string()).send().await.unwrap()
    }

    /// Sends a request and returns the JSON-RPC response with the same id.
    async fn call(&mut self, id: u64, method: &str, params: Value) -> Value {
        let res = self.post(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}), &[]).await;
        assert_eq!(res.status(), StatusCode::OK, "{method}: {:?}", res.headers());
        if let Some(session) = res.headers().get("mcp-session-id") {
            self.session = Some(session.to_str().unwrap().to_owned());
        }
        let is_sse = res
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/event-stream"));
        let text = res.text().await.unwrap();
        let messages: Vec<Value> = if is_sse {
            text.lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .filter_map(|d| serde_json::from_str(d.trim()).ok())
                .collect()
        } else {
            vec![serde_json::from_str(&text).unwrap()]
        };
        messages.into_iter().find(|m| m["id"] == id).unwrap_or_else(|| panic!("no response to {method}: {text}"))
    }

    async fn initialize(&mut self) {
        let params = json!({
            "protocolVersion": PROTOCOL,
            "capabilities": {},
            "clientInfo": {"name": "tower-mcp-auth-tests", "version": "0"},
        });
        let init = self.call(1, "initialize", params).await;
        assert!(init["result"]["capabilities"]["tools"].is_object(), "{init}");
        let res = self.post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}), &[]).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
    }

    async fn tool_text(&mut self, id: u64, name: &str, arguments: Value) -> String {
        let res = self.call(id, "tools/call", json!({"name": name, "arguments": arguments})).await;
        assert_eq!(res["result"]["isError"], false, "{res}");
        res["result"]["content"][0]["text"].as_str().unwrap_or_else(|| panic!("{res}")).to_owned()
    }
}

fn initialize_body() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}})
}

#[tokio::test]
async fn mcp_server_example_against_mock_idp() {
    let (idp, key) = idp_with_key().await;
    let app_origin = "https://app.example";
    let srv =
        Running::start("mcp_server", &["--authorization-server", &idp.issuer, "--allow-origin", app_origin]).await;
    let resource = srv.url("/mcp");
    let metadata_url = srv.url("/.well-known/oauth-protected-resource/mcp");
    let http = http();

    // No token: 401 and the challenge MCP clients start discovery from.
    let res = Mcp::new(resource.clone(), None).post(&initialize_body(), &[]).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(www_authenticate(&res), format!(r#"Bearer scope="mcp:read", resource_metadata="{metadata_url}""#));

    // RFC 9728 metadata at the path-inserted and the root well-known paths.
    for url in [metadata_url.clone(), srv.url("/.well-known/oauth-protected-resource")] {
        let res = http.get(&url).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{url}");
        let doc: Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
        assert_eq!(doc["resource"], resource);
        assert_eq!(doc["authorization_servers"], json!([idp.issuer]));
        assert_eq!(doc["scopes_supported"], json!(["mcp:read", "mcp:admin"]));
    }

    // CORS preflight: answered without a token, before authentication.
    let origin = srv.url("");
    let res = http
        .request(reqwest::Method::OPTIONS, &resource)
        .header("origin", &origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type, mcp-protocol-version")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    assert_eq!(res.headers()["access-control-allow-origin"], origin.as_str());
    let allowed = res.headers()["access-control-allow-headers"].to_str().unwrap().to_owned();
    for h in ["authorization", "content-type", "mcp-protocol-version", "mcp-session-id", "mcp-method", "mcp-name"] {
        assert!(allowed.contains(h), "{h} not in {allowed}");
    }
    // A browser can read the challenge of a 401.
    let res = Mcp::new(resource.clone(), None).post(&initialize_body(), &[("origin", &origin)]).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let exposed = res.headers()["access-control-expose-headers"].to_str().unwrap().to_ascii_lowercase();
    assert!(exposed.contains("www-authenticate") && exposed.contains("mcp-session-id"), "{exposed}");

    // A full session with an mcp:read token: whoami sees the verified token.
    let reader = token(&key, &idp, &resource, "mcp:read");
    let mut mcp = Mcp::new(resource.clone(), Some(reader.clone()));
    mcp.initialize().await;
    let list = mcp.call(2, "tools/list", json!({})).await;
    let mut tools: Vec<&str> =
        list["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    tools.sort_unstable();
    assert_eq!(tools, ["admin_ping", "echo", "whoami"]);
    let who: Value = serde_json::from_str(&mcp.tool_text(3, "whoami", json!({})).await).unwrap();
    assert_eq!(who["sub"], "user-1");
    assert_eq!(who["client_id"], "client-1");
    assert_eq!(who["scopes"], json!(["mcp:read"]));
    assert_eq!(who["aud"], json!([resource]));
    assert_eq!(who["iss"], idp.issuer);
    assert!(who.get("raw").is_none() && !who.to_string().contains(&reader), "the raw token is never shown");
    assert_eq!(mcp.tool_text(4, "echo", json!({"text": "hello"})).await, "hello");

    // admin_ping without mcp:admin: 403 step-up challenge at the HTTP layer.
    let call =
        json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "admin_ping", "arguments": {}}});
    let res = mcp.post(&call, &[]).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let c = bearer_params(&www_authenticate(&res));
    assert_eq!(c.param("error"), Some("insufficient_scope"));
    assert_eq!(c.param("scope"), Some("mcp:admin"));
    assert_eq!(c.param("resource_metadata"), Some(metadata_url.as_str()));
    // With it: pong.
    let mut admin = Mcp::new(resource.clone(), Some(token(&key, &idp, &resource, "mcp:read mcp:admin")));
    admin.initialize().await;
    assert_eq!(admin.tool_text(2, "admin_ping", json!({})).await, "pong");

    // A17: the session belongs to user-1; another user presenting its id gets 404.
    let mut intruder =
        Mcp::new(resource.clone(), Some(key.token(&with(claims(&idp.issuer, &resource), json!({"sub": "user-2"})))));
    intruder.session = mcp.session.clone();
    let list = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/list", "params": {}});
    assert_eq!(intruder.post(&list, &[]).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(mcp.call(9, "tools/list", json!({})).await["result"]["tools"].as_array().unwrap().len(), 3);

    // echo needs mcp:read.
    let mut scopeless = Mcp::new(resource.clone(), Some(token(&key, &idp, &resource, "profile")));
    scopeless.initialize().await;
    let echo = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "x"}}});
    let res = scopeless.post(&echo, &[]).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(bearer_params(&www_authenticate(&res)).param("scope"), Some("mcp:read"));

    // Audience binding: a token minted for another resource is an invalid token.
    let elsewhere = Mcp::new(resource.clone(), Some(token(&key, &idp, "http://127.0.0.1:1/mcp", "mcp:read")));
    let res = elsewhere.post(&initialize_body(), &[]).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(bearer_params(&www_authenticate(&res)).param("error"), Some("invalid_token"));

    // A15: a valid token from a foreign Origin is refused by rmcp.
    let fresh = Mcp::new(resource.clone(), Some(reader.clone()));
    let res = fresh.post(&initialize_body(), &[("origin", "https://evil.example")]).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // A16: DNS rebinding, a valid token sent to a foreign Host.
    let res = fresh.post(&initialize_body(), &[("host", "attacker.com")]).await;
    assert!(matches!(res.status().as_u16(), 403 | 421), "{}", res.status());
    let res = fresh.post(&initialize_body(), &[("host", &format!("attacker.com:{}", srv.addr.port()))]).await;
    assert!(matches!(res.status().as_u16(), 403 | 421), "{}", res.status());
    // The server's own origin and --allow-origin ones are fine, for rmcp and for CORS.
    for allowed in [origin.as_str(), app_origin] {
        let res = fresh.post(&initialize_body(), &[("origin", allowed)]).await;
        assert_eq!(res.status(), StatusCode::OK, "{allowed}");
        assert_eq!(res.headers()["access-control-allow-origin"], allowed);
    }
    // An origin that is not allowed gets no CORS grant, even on a preflight.
    let res = http
        .request(reqwest::Method::OPTIONS, &resource)
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());

    assert!(!srv.stderr().contains(&reader), "the token was logged");
}

#[tokio::test]
async fn mcp_server_example_refuses_bad_usage() {
    // A Redis store where nothing listens: a clean failure naming --store, without the
    // password of the URL. Without an encryption key it is refused before connecting: Redis is
    // persistent and shared, and no key file can be written beside it, also in development mode.
    let nothing = format!("redis://:pw-{}@127.0.0.1:{}/", support::rand_suffix(), support::process::free_port());
    let key = "33".repeat(32);
    for args in [&["--store", &nothing, "--encryption-key", &key][..], &["--store", &nothing]] {
        let mut all = vec!["--bind", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let (code, stderr) = run_to_exit("mcp_server", &all).await;
        assert!(matches!(code, Some(1 | 2)), "{args:?}: {code:?} {stderr}");
        assert!(stderr.contains("--store"), "{stderr}");
        assert!(!stderr.contains("pw-"), "the Redis password is not shown: {stderr}");
        if args.len() == 2 {
            assert!(stderr.contains("--encryption-key"), "{stderr}");
        }
    }
    // On a running Redis it starts, and a second instance with another key is refused (K10):
    // the store is shared.
    let redis = support::redis::RedisServer::shared().url();
    let first = Running::start("mcp_server", &["--store", &redis, "--encryption-key", &key]).await;
    let other_key = "44".repeat(32);
    let (code, stderr) =
        run_to_exit("mcp_server", &["--bind", "127.0.0.1:0", "--store", &redis, "--encryption-key", &other_key]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("encryption key"), "{stderr}");
    first.proc.stop().await;
    // Loopback fetches only make sense with the built-in authorization server.
    let rs = ["--bind", "127.0.0.1:0", "--authorization-server", "https://as.example", "--allow-loopback-fetch"];
    let (code, stderr) = run_to_exit("mcp_server", &rs).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--allow-loopback-fetch"), "{stderr}");
    let (code, stderr) = run_to_exit("mcp_server", &["--bind", "127.0.0.1:0", "--store", "postgres://x"]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--store"), "{stderr}");

    // Proxy mode on a persistent store needs an explicit encryption key (K10).
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("p.db").display());
    let proxy = ["--bind", "127.0.0.1:0", "--store", &db, "--upstream-issuer", "https://idp.example"];
    let (code, stderr) = run_to_exit("mcp_server", &[&proxy[..], &["--upstream-client-id", "c"]].concat()).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--encryption-key"), "{stderr}");

    // A database created with one key refuses another (K10).
    let key_a = "11".repeat(32);
    let key_b = "22".repeat(32);
    let first = Running::start("mcp_server", &["--store", &db, "--encryption-key", &key_a]).await;
    first.proc.stop().await;
    let args_b = ["--bind", "127.0.0.1:0", "--store", &db, "--encryption-key", &key_b];
    let (code, stderr) = run_to_exit("mcp_server", &args_b).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("encryption key"), "{stderr}");

    // Modes that exclude each other.
    for args in [
        &[
            "--authorization-server",
            "https://as.example",
            "--upstream-issuer",
            "https://idp.example",
            "--upstream-client-id",
            "c",
        ][..],
        &["--authorization-server", "https://as.example", "--insecure-auto-approve"],
    ] {
        let mut all = vec!["--bind", "127.0.0.1:0"];
        all.extend_from_slice(args);
        assert_eq!(run_to_exit("mcp_server", &all).await.0, Some(2), "{args:?}");
    }

    // Configuration problems are usage errors too.
    let as_ = ["--bind", "127.0.0.1:0", "--authorization-server", "https://as.example"];
    let (code, stderr) = run_to_exit("mcp_server", &[&as_[..], &["--trust-ca", "/nonexistent/ca.pem"]].concat()).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--trust-ca"), "{stderr}");
    let (code, stderr) =
        run_to_exit("mcp_server", &[&as_[..], &["--public-url", "https://mcp.example.com/sub"]].concat()).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--public-url"), "{stderr}");

    // Both modes at once.
    let args = ["--bind", "127.0.0.1:0", "--insecure-no-auth", "--authorization-server", "https://as.example"];
    assert_eq!(run_to_exit("mcp_server", &args).await.0, Some(2));
}
