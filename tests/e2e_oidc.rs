//! Acceptance end-to-end test, real parts only: a real OpenID Connect provider
//! (`oidc-provider`, tests/e2e/oidc-provider.mjs), the example MCP server
//! (examples/mcp_server.rs) in resource-server mode, and the official MCP TypeScript SDK as the
//! client (tests/e2e/mcp-client.mjs), all on 127.0.0.1. See tests/e2e/README.md.
//!
//! Needs Node.js 20+ and npm; the Node dependencies are installed with `npm ci` on first use.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::process::{Proc, ensure_node_modules, example, free_port, node, output_within};
use support::secrets::Secrets;
use tokio::process::Command;
use tower_mcp_auth::challenge;

/// Everything after the builds: start both servers, sign in, call the tools, stop.
const WHOLE_TEST: Duration = Duration::from_secs(120);
/// Time for the client driver (its own hard limit is 60 s).
const CLIENT: Duration = Duration::from_secs(75);

// ---------------------------------------------------------------------------------------------
// Prerequisites: the Node dependencies and the example binary.

/// The Node dependencies, and the mcp_server example binary, built on first use
/// (`cargo test --test e2e_oidc` builds no examples).
async fn prerequisites() -> PathBuf {
    tokio::task::spawn_blocking(|| {
        ensure_node_modules();
        example("mcp_server")
    })
    .await
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Child processes (the servers are `support::process::Proc`s).

/// Runs `mcp-client.mjs` and returns its JSON result (asserting `ok`).
async fn run_client(args: &[&str], server: &Proc) -> Value {
    let out = output_within(node("mcp-client.mjs").args(args), CLIENT, "node mcp-client.mjs").await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("mcp-client.mjs printed no JSON ({e}): {stdout}\n{}", String::from_utf8_lossy(&out.stderr))
    });
    assert!(
        result["ok"] == true && out.status.success(),
        "client failed: {result:#}\nclient stderr:\n{}\nserver output:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.output()
    );
    result
}

/// The first text content of a tool call result.
fn text_of(result: &Value, call: &str) -> String {
    let call_result = &result["calls"][call];
    assert_ne!(call_result["isError"], true, "{call}: {call_result}");
    call_result["content"][0]["text"].as_str().unwrap_or_else(|| panic!("{call}: {call_result}")).to_owned()
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// The provider for `http://127.0.0.1:PORT/mcp` (writing what it issues to `secrets_file`)
/// and the MCP server on PORT trusting it. The port is picked before the server binds it: on
/// the rare lost race, start over once.
async fn start_provider_and_server(mcp_server: &Path, secrets_file: &Path) -> (Proc, Proc, u16, String) {
    for attempt in 0..2 {
        let port = free_port();
        let resource = format!("http://127.0.0.1:{port}/mcp");
        let mut provider = Proc::spawn(
            "oidc-provider.mjs",
            node("oidc-provider.mjs").args(["--resource", &resource, "--secrets-file"]).arg(secrets_file),
        );
        let line = provider.first_line().await;
        let issuer = line
            .as_deref()
            .and_then(|l| l.strip_prefix("listening on "))
            .unwrap_or_else(|| panic!("oidc-provider.mjs did not start: {line:?}\n{}", provider.output()))
            .to_owned();

        let mut server = Proc::spawn(
            "mcp_server",
            Command::new(mcp_server)
                .args(["--bind", &format!("127.0.0.1:{port}"), "--authorization-server", &issuer])
                .arg("--exit-on-stdin-eof")
                .env("RUST_LOG", "trace"),
        );
        match server.first_line().await {
            Some(line) => {
                assert_eq!(line, format!("listening on {resource}"));
                return (provider, server, port, issuer);
            }
            None if attempt == 0 && server.output().contains("cannot listen") => continue,
            None => panic!("mcp_server did not start:\n{}", server.output()),
        }
    }
    unreachable!()
}

/// The MCP TypeScript SDK signs in through the real OIDC provider (401 → RFC 9728 metadata →
/// RFC 8414 metadata → DCR → PKCE authorization → token), then calls the tools; the scope
/// guard turns admin_ping away with a 403 step-up challenge. Catalogue L01: the server's
/// TRACE-level logs contain none of the secrets of the run (what the client saw, cookies
/// included, and what the provider issued).
#[tokio::test]
async fn sdk_client_signs_in_through_real_oidc_provider() {
    let mcp_server = prerequisites().await;
    tokio::time::timeout(WHOLE_TEST, async {
        let tmp = tempfile::Builder::new().prefix("e2e-oidc-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let provider_secrets = tmp.path().join("provider-secrets.json");
        let (provider, server, port, issuer) = start_provider_and_server(&mcp_server, &provider_secrets).await;
        let mcp_url = format!("http://127.0.0.1:{port}/mcp");
        let metadata_url = format!("http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp");
        let secrets_path = tmp.path().join("client-secrets.json");

        let secrets_arg = secrets_path.to_str().unwrap();
        let args = ["--call", "whoami", "--call", "echo", "--call", "admin_ping", "--secrets-file", secrets_arg];
        let result = run_client(&[&args[..], &[mcp_url.as_str()]].concat(), &server).await;

        // Discovery starts from the 401 challenge, then the protected resource metadata.
        let trace: Vec<&str> = result["trace"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
        assert_eq!(trace.first().copied(), Some(format!("POST {mcp_url} -> 401").as_str()), "{trace:#?}");
        assert_eq!(trace.get(1).copied(), Some(format!("GET {metadata_url} -> 200").as_str()), "{trace:#?}");
        assert_eq!(result["discovery"]["authorizationServers"], serde_json::json!([issuer]));
        assert_eq!(result["discovery"]["resource"], mcp_url);
        assert_eq!(result["accessTokenClaims"]["aud"], mcp_url);

        let mut tools: Vec<&str> = result["tools"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
        tools.sort_unstable();
        assert_eq!(tools, ["admin_ping", "echo", "whoami"]);

        // whoami: the token the server verified, as the tool saw it.
        let who: Value = serde_json::from_str(&text_of(&result, "whoami")).unwrap();
        assert_eq!(who["sub"], "e2e-user");
        assert_eq!(who["client_id"], result["clientId"]);
        assert!(result["clientId"].is_string());
        assert!(who["scopes"].as_array().unwrap().iter().any(|s| s == "mcp:read"), "{who}");
        assert_eq!(who["aud"], serde_json::json!([mcp_url]));
        assert_eq!(who["iss"], issuer);
        assert_eq!(text_of(&result, "echo"), "hello");

        // admin_ping needs mcp:admin: a 403 step-up challenge at the HTTP layer.
        assert!(result["calls"]["admin_ping"]["error"].is_string(), "{}", result["calls"]["admin_ping"]);
        assert_eq!(result["adminPingRaw"]["status"], 403);
        let header = result["adminPingRaw"]["wwwAuthenticate"].as_str().expect("www-authenticate on the 403");
        let parsed = challenge::parse(header).unwrap();
        let [bearer] = parsed.as_slice() else { panic!("one challenge expected: {header}") };
        assert!(bearer.scheme().eq_ignore_ascii_case("bearer"));
        assert_eq!(bearer.param("error"), Some("insufficient_scope"));
        assert_eq!(bearer.param("scope"), Some("mcp:admin"));
        assert_eq!(bearer.param("resource_metadata"), Some(metadata_url.as_str()));

        // L01: stop both servers so that the log and the provider's file are complete, then look
        // for every secret in the log.
        let logs = server.stop().await;
        provider.stop().await;
        let mut secrets = Secrets::new();
        secrets.add_file("client", &secrets_path);
        secrets.add_file("provider", &provider_secrets);
        for kind in ["client authorizationCodes", "client codeVerifiers", "client accessTokens", "client cookies"] {
            assert!(secrets.count(kind) >= 1, "no {kind} recorded");
        }
        // The provider's own records of the code it issued and the verifier it was shown.
        assert!(secrets.count("provider authorizationCodes") >= 1 && secrets.count("provider codeVerifiers") >= 1);
        secrets.assert_not_in_trace_log("the server log", &logs);
    })
    .await
    .expect("the end-to-end test exceeded its deadline");
}

/// The `--insecure-no-auth` baseline serves the same tools to the SDK without any token.
#[tokio::test]
async fn insecure_no_auth_baseline_answers_without_token() {
    let mcp_server = prerequisites().await;
    tokio::time::timeout(WHOLE_TEST, async {
        let mut server = Proc::spawn(
            "mcp_server",
            Command::new(&mcp_server).args(["--bind", "127.0.0.1:0", "--insecure-no-auth", "--exit-on-stdin-eof"]),
        );
        let line = server.first_line().await.unwrap_or_else(|| panic!("no address:\n{}", server.output()));
        let mcp_url = line.strip_prefix("listening on ").unwrap().to_owned();
        assert!(server.output().contains("WARNING: --insecure-no-auth"), "{}", server.output());

        let args = ["--no-auth", "--call", "whoami", "--call", "echo", "--call", "admin_ping", mcp_url.as_str()];
        let result = run_client(&args, &server).await;
        assert_eq!(result["trace"][0], format!("POST {mcp_url} -> 200"), "no challenge: {}", result["trace"]);
        assert_eq!(result["authorizations"], serde_json::json!([]));
        let mut tools: Vec<&str> = result["tools"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
        tools.sort_unstable();
        assert_eq!(tools, ["admin_ping", "echo", "whoami"]);
        assert_eq!(text_of(&result, "whoami"), "null");
        assert_eq!(text_of(&result, "echo"), "hello");
        assert_eq!(text_of(&result, "admin_ping"), "pong");
        assert_eq!(result["adminPingRaw"]["status"], 200);
        server.stop().await;
    })
    .await
    .expect("the end-to-end test exceeded its deadline");
}
