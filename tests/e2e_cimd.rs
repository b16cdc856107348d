//! End-to-end: the official MCP TypeScript SDK client (tests/e2e/mcp-client.mjs) identifies
//! itself with a Client ID Metadata Document (no dynamic registration) at the example MCP
//! server (examples/mcp_server.rs, development login). The document is served over https by a
//! loopback server with a certificate from a test CA; the example trusts that CA
//! (`--trust-ca`) and may fetch from loopback (`--allow-loopback-fetch`). All on 127.0.0.1.
//!
//! The example runs with `RUST_LOG=trace`; catalogue L01: its log holds none of the secrets the
//! client saw (tokens, code, verifier, form secrets, cookies).
//!
//! Needs Node.js 20+ and npm; the Node dependencies are installed with `npm ci` on first use.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use support::process::{Proc, ensure_node_modules, example, node, output_within};
use support::secrets::Secrets;
use support::tls::{TestCa, TlsFront};
use tokio::net::TcpListener;
use tokio::process::Command;

/// The redirect URI of mcp-client.mjs.
const REDIRECT_URI: &str = "http://127.0.0.1:53682/callback";
const CLIENT: Duration = Duration::from_secs(75);

/// The document at `/client-metadata.json` over https on loopback (name `localhost`); counts
/// fetches.
async fn document_server(ca: &TestCa) -> (String, Arc<AtomicUsize>, TlsFront) {
    let hits = Arc::new(AtomicUsize::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let front = TlsFront::start(ca.leaf(&["localhost"]), backend).await;
    let url = format!("https://localhost:{}/client-metadata.json", front.addr.port());
    let doc = json!({
        "client_id": url,
        "client_name": "tower-mcp-auth e2e (CIMD)",
        "redirect_uris": [REDIRECT_URI],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    })
    .to_string();
    let h = hits.clone();
    let app = axum::Router::new().route(
        "/client-metadata.json",
        axum::routing::get(move || {
            h.fetch_add(1, Ordering::SeqCst);
            let doc = doc.clone();
            async move { ([("content-type", "application/json"), ("cache-control", "max-age=300")], doc) }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, hits, front)
}

/// The sign-in, then catalogue L01 on the example's TRACE log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_sdk_client_signs_in_with_a_client_id_metadata_document() {
    let mcp_server = tokio::task::spawn_blocking(|| {
        ensure_node_modules();
        example("mcp_server")
    })
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(150), async move {
        let ca = TestCa::new();
        let (doc_url, hits, _front) = document_server(&ca).await;
        let tmp = tempfile::Builder::new().prefix("e2e-cimd-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let ca_file = tmp.path().join("ca.pem");
        std::fs::write(&ca_file, &ca.pem).unwrap();
        let secrets_file = tmp.path().join("client-secrets.json");

        let mut cmd = Command::new(&mcp_server);
        cmd.args(["--bind", "127.0.0.1:0", "--store", "memory", "--dev-user", "cimd-user"])
            .args(["--allow-loopback-fetch", "--exit-on-stdin-eof", "--trust-ca"])
            .arg(&ca_file)
            .env("RUST_LOG", "trace");
        let mut server = Proc::spawn("mcp_server", &mut cmd);
        let mcp_url = server.listening_on().await.unwrap_or_else(|| panic!("no start:\n{}", server.output()));
        let origin = mcp_url.trim_end_matches("/mcp").to_owned();

        // --refresh: a refresh token too, and the refresh grant's path through the log.
        let args = ["--cimd", &doc_url, "--call", "whoami", "--call", "echo", "--refresh", "--secrets-file"];
        let out = output_within(
            node("mcp-client.mjs").args(args).arg(&secrets_file).arg(&mcp_url),
            CLIENT,
            "node mcp-client.mjs",
        )
        .await;
        let log = server.stop().await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let result: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!("no JSON ({e}): {stdout}\n{}\nserver:\n{log}", String::from_utf8_lossy(&out.stderr))
        });
        assert!(
            result["ok"] == true && out.status.success(),
            "client failed: {result:#}\n{}\nserver:\n{log}",
            String::from_utf8_lossy(&out.stderr)
        );

        // Discovery, then straight to authorize: no registration.
        let trace: Vec<&str> = result["trace"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert_eq!(trace[0], format!("POST {mcp_url} -> 401"), "{trace:#?}");
        assert!(trace.contains(&format!("GET {origin}/.well-known/oauth-authorization-server -> 200").as_str()));
        assert!(!trace.iter().any(|t| t.contains("/register")), "{trace:#?}");
        assert!(trace.contains(&format!("POST {origin}/token -> 200").as_str()), "{trace:#?}");
        assert_eq!(result["clientId"], doc_url);
        let round = &result["authorizations"][0];
        assert_eq!(round["params"]["client_id"], doc_url, "{round:#}");

        // The consent page named the document's domain.
        let hops: Vec<&str> = round["hops"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert_eq!(hops[0], format!("GET {origin}/authorize -> 200 (form)"), "{hops:#?}");

        // whoami: the token was issued to the URL client ID.
        let who: Value =
            serde_json::from_str(result["calls"]["whoami"]["content"][0]["text"].as_str().unwrap()).unwrap();
        assert_eq!(who["client_id"], doc_url, "{who}");
        assert_eq!(who["sub"], "cimd-user", "{who}");
        assert_eq!(result["calls"]["echo"]["content"][0]["text"], "hello");

        // Fetched once: the token requests were answered from the cache.
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert_eq!(result["refresh"]["refreshStatus"], 200, "{:#}", result["refresh"]);

        // L01: the log is complete (the server stopped above); no secret of the run in it.
        let mut secrets = Secrets::new();
        secrets.add_file("client", &secrets_file);
        for kind in ["authorizationCodes", "codeVerifiers", "accessTokens", "refreshTokens", "formSecrets", "cookies"] {
            assert!(secrets.count(&format!("client {kind}")) >= 1, "no client {kind} recorded");
        }
        secrets.assert_not_in_trace_log("the server log", &log);
    })
    .await
    .expect("the test took longer than 150 s");
}
