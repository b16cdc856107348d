//! End-to-end tests of the example's built-in authorization server, real parts only, all on
//! 127.0.0.1: the official MCP TypeScript SDK client (tests/e2e/mcp-client.mjs) signs in at the
//! example MCP server (examples/mcp_server.rs), which is
//!
//! - an OAuth proxy in front of a real OpenID Connect provider (`oidc-provider`,
//!   tests/e2e/oidc-provider.mjs, where the example is a confidential client), or
//! - its own identity provider with the development login (the default mode).
//!
//! The client's headless browser passes the consent page and the development login page over
//! HTTP, by submitting their forms. After the tool calls it rotates the refresh token and
//! revokes the grant. Then the secrets checks (catalogue L01 and K11): no secret that the
//! client or the provider saw appears in the server's TRACE log or in its SQLite database
//! files. See tests/e2e/README.md.
//!
//! Needs Node.js 20+ and npm; the Node dependencies are installed with `npm ci` on first use.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use support::process::{Proc, ensure_node_modules, example, free_port, node, output_within, random_hex};
use support::secrets::Secrets;
use tokio::process::Command;

/// Everything after the builds: start the servers, sign in, call the tools, stop.
const WHOLE_TEST: Duration = Duration::from_secs(150);
/// Time for the client driver (its own hard limit is 60 s).
const CLIENT: Duration = Duration::from_secs(75);
/// The example's client ID at the provider.
const UPSTREAM_CLIENT_ID: &str = "mcp-proxy";
/// The development login's user.
const DEV_USER: &str = "e2e-developer";

/// The Node dependencies, and the mcp_server example binary, built on first use.
async fn prerequisites() -> PathBuf {
    tokio::task::spawn_blocking(|| {
        ensure_node_modules();
        example("mcp_server")
    })
    .await
    .unwrap()
}

/// Who signs the users in.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Identity {
    /// OAuth proxy; the provider's access tokens for the example are JWTs (`aud` = its client ID).
    ProxyJwt,
    /// OAuth proxy with `--verify-id-token`; the provider's access tokens are opaque.
    ProxyOpaqueVerifyIdToken,
    /// OAuth proxy without `--verify-id-token`, while the provider's access tokens are opaque.
    ProxyOpaqueMisconfigured,
    /// The development login.
    DevLogin,
}

impl Identity {
    fn proxied(self) -> bool {
        self != Identity::DevLogin
    }
}

/// One sign-in run and everything recorded about it.
struct Run {
    /// The client's JSON report.
    result: Value,
    client_ok: bool,
    client_stderr: String,
    /// `http://127.0.0.1:PORT`: the example's origin and issuer.
    origin: String,
    mcp_url: String,
    /// The provider's issuer (proxy modes).
    provider_issuer: Option<String>,
    provider_log: String,
    /// What the provider issued (its `--secrets-file`).
    provider_issued: Value,
    /// The server's stdout and stderr (RUST_LOG=trace).
    server_log: String,
    /// The SQLite database files, concatenated.
    database: Vec<u8>,
    /// Every secret of the run: what the client saw (its cookies included), what the provider
    /// issued (and the example's upstream PKCE verifier), the encryption key, the example's
    /// client secret at the provider.
    secrets: Secrets,
}

/// Starts the provider (proxy modes) and the example on a port picked beforehand (the callback
/// URL registered at the provider names it; on the rare lost race, start over once), runs the
/// client with `--call whoami --call echo --refresh --revoke`, stops everything, and collects
/// the logs, the database and the secrets.
async fn sign_in(mcp_server: &Path, identity: Identity) -> Run {
    let tmp = tempfile::Builder::new().prefix("e2e-proxy-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let db = tmp.path().join("as.db");
    let client_secrets = tmp.path().join("client-secrets.json");
    let provider_secrets = tmp.path().join("provider-secrets.json");
    let key = random_hex(32);
    let upstream_secret = random_hex(24);

    let mut started = None;
    for attempt in 0..2 {
        let port = free_port();
        let origin = format!("http://127.0.0.1:{port}");
        let mut provider = None;
        let mut server_cmd = Command::new(mcp_server);
        server_cmd.args(["--bind", &format!("127.0.0.1:{port}")]);
        if identity.proxied() {
            let mut cmd = node("oidc-provider.mjs");
            cmd.arg("--client")
                .arg(format!("{UPSTREAM_CLIENT_ID}:{upstream_secret}:{origin}/callback"))
                .arg("--secrets-file")
                .arg(&provider_secrets);
            if identity != Identity::ProxyJwt {
                cmd.arg("--opaque-access-tokens");
            }
            let mut p = Proc::spawn("oidc-provider.mjs", &mut cmd);
            let issuer =
                p.listening_on().await.unwrap_or_else(|| panic!("oidc-provider.mjs did not start:\n{}", p.output()));
            server_cmd
                .args(["--upstream-issuer", &issuer, "--upstream-client-id", UPSTREAM_CLIENT_ID])
                .args(["--upstream-client-secret", &upstream_secret]);
            if identity == Identity::ProxyOpaqueVerifyIdToken {
                server_cmd.arg("--verify-id-token");
            }
            provider = Some((p, issuer));
        } else {
            server_cmd.args(["--dev-user", DEV_USER]);
        }
        server_cmd
            .arg("--store")
            .arg(format!("sqlite:{}", db.display()))
            .args(["--encryption-key", &key, "--exit-on-stdin-eof"])
            // The client checks that a revoked grant's access token stops at once.
            .arg("--revocation-check")
            .env("RUST_LOG", "trace");
        let mut server = Proc::spawn("mcp_server", &mut server_cmd);
        match server.listening_on().await {
            Some(url) => {
                assert_eq!(url, format!("{origin}/mcp"));
                started = Some((provider, server, origin));
                break;
            }
            None if attempt == 0 && server.output().contains("cannot listen") => continue,
            None => panic!("mcp_server did not start:\n{}", server.output()),
        }
    }
    let (provider, server, origin) = started.unwrap();
    let mcp_url = format!("{origin}/mcp");

    let args = ["--call", "whoami", "--call", "echo", "--refresh", "--revoke", "--secrets-file"];
    let out = output_within(
        node("mcp-client.mjs").args(args).arg(&client_secrets).arg(&mcp_url),
        CLIENT,
        "node mcp-client.mjs",
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let client_stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let result: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("mcp-client.mjs printed no JSON ({e}): {stdout}\n{client_stderr}\nserver:\n{}", server.output())
    });
    let client_ok = result["ok"] == true && out.status.success();

    // Stopped, so that the log is complete and the database closed.
    let server_log = server.stop().await;
    let (provider_issuer, provider_log) = match provider {
        Some((p, issuer)) => (Some(issuer), p.stop().await),
        None => (None, String::new()),
    };

    let mut database = Vec::new();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        if let Ok(bytes) = std::fs::read(format!("{}{suffix}", db.display())) {
            database.extend(bytes);
        }
    }
    let mut secrets = Secrets::new();
    secrets.add("encryption key", &key);
    secrets.add_file("client", &client_secrets);
    // The provider writes its file at start-up (the example's client secret), so it is there in
    // every proxy mode.
    let provider_issued = if identity.proxied() {
        secrets.add("upstream client secret", &upstream_secret);
        secrets.add_file("provider", &provider_secrets)
    } else {
        json!({})
    };

    Run {
        result,
        client_ok,
        client_stderr,
        origin,
        mcp_url,
        provider_issuer,
        provider_log,
        provider_issued,
        server_log,
        database,
        secrets,
    }
}

impl Run {
    /// Asserts the client succeeded, showing every log otherwise.
    fn assert_ok(&self) {
        assert!(
            self.client_ok,
            "client failed: {:#}\nclient stderr:\n{}\nserver output:\n{}\nprovider output:\n{}",
            self.result, self.client_stderr, self.server_log, self.provider_log
        );
    }

    fn trace(&self) -> Vec<&str> {
        self.result["trace"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect()
    }

    /// The one authorization round: its hops.
    fn hops(&self) -> Vec<&str> {
        let rounds = self.result["authorizations"].as_array().unwrap();
        assert_eq!(rounds.len(), 1, "one authorization round expected: {rounds:#?}");
        rounds[0]["hops"].as_array().unwrap().iter().map(|h| h.as_str().unwrap()).collect()
    }

    fn round(&self) -> &Value {
        &self.result["authorizations"][0]
    }

    /// The secrets the client recorded in list `name`.
    fn client_secret_count(&self, name: &str) -> usize {
        self.secrets.count(&format!("client {name}"))
    }
}

/// 401 → protected resource metadata → OUR authorization server metadata → DCR → authorize;
/// the token endpoint only after that.
fn assert_discovery(run: &Run) {
    let (origin, mcp_url) = (&run.origin, &run.mcp_url);
    let trace = run.trace();
    let expected = [
        format!("POST {mcp_url} -> 401"),
        format!("GET {origin}/.well-known/oauth-protected-resource/mcp -> 200"),
        format!("GET {origin}/.well-known/oauth-authorization-server -> 200"),
        format!("POST {origin}/register -> 201"),
    ];
    assert!(trace.len() > expected.len(), "{trace:#?}");
    assert_eq!(trace[..expected.len()], expected.iter().map(String::as_str).collect::<Vec<_>>()[..], "{trace:#?}");
    let token = format!("POST {origin}/token -> 200");
    assert!(trace[expected.len()..].contains(&token.as_str()), "{trace:#?}");

    let discovery = &run.result["discovery"];
    assert_eq!(discovery["issuer"], *origin, "the example's own authorization server");
    assert_eq!(discovery["authorizationServers"], json!([origin]));
    assert_eq!(discovery["resource"], *mcp_url);
    assert_eq!(run.round()["endpoint"], format!("{origin}/authorize"));
    assert_eq!(run.round()["params"]["resource"], *mcp_url);
    assert_eq!(run.round()["params"]["scope"], "mcp:read");
}

/// The consent page: a 200 HTML page, whose form the browser posts (CSRF token, request
/// handle, the approve button) to /consent, answered by a redirect.
fn assert_consent_hops(run: &Run) {
    let origin = &run.origin;
    let hops = run.hops();
    assert_eq!(hops[0], format!("GET {origin}/authorize -> 200 (form)"), "{hops:#?}");
    assert_eq!(hops[1], format!("POST {origin}/consent -> 303"), "{hops:#?}");
    let consent = &run.round()["forms"][0];
    assert_eq!(consent["action"], format!("{origin}/consent"));
    assert_eq!(consent["fields"], json!(["request", "csrf", "decision"]));
    assert_eq!(consent["button"], "decision=approve");
    // The authorization response: at the client's redirect URI, with code, state and iss.
    assert_eq!(hops.last().copied(), Some(format!("GET {origin}/callback -> 302").as_str()), "{hops:#?}");
    assert_eq!(run.round()["result"], "code");
    assert_eq!(run.round()["callbackParams"], json!(["code", "state", "iss"]));
    assert_eq!(run.round()["iss"], *origin);
}

/// The first text content of a tool call result.
fn text_of(result: &Value, call: &str) -> String {
    let call_result = &result["calls"][call];
    assert_ne!(call_result["isError"], true, "{call}: {call_result}");
    call_result["content"][0]["text"].as_str().unwrap_or_else(|| panic!("{call}: {call_result}")).to_owned()
}

/// `whoami`'s view of a token issued by the example to the DCR client for `sub`.
fn assert_whoami(run: &Run, who: &Value, sub: &str) {
    assert_eq!(who["sub"], sub, "{who}");
    assert_eq!(who["client_id"], run.result["clientId"], "{who}");
    assert!(run.result["clientId"].as_str().is_some_and(|c| !c.is_empty()));
    assert_eq!(who["scopes"], json!(["mcp:read"]), "{who}");
    assert_eq!(who["aud"], json!([run.mcp_url]), "{who}");
    assert_eq!(who["iss"], run.origin, "{who}");
}

/// The SDK's tools, the token's claims, and the tool calls with the first access token.
fn assert_tools(run: &Run, sub: &str) -> Value {
    let result = &run.result;
    let mut tools: Vec<&str> = result["tools"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    tools.sort_unstable();
    assert_eq!(tools, ["admin_ping", "echo", "whoami"]);
    assert_eq!(result["accessTokenHeader"]["typ"], "at+jwt");
    assert_eq!(result["accessTokenClaims"]["iss"], run.origin);
    assert_eq!(result["accessTokenClaims"]["aud"], run.mcp_url);
    let who: Value = serde_json::from_str(&text_of(result, "whoami")).unwrap();
    assert_whoami(run, &who, sub);
    assert_eq!(text_of(result, "echo"), "hello");
    assert_eq!(result["adminPingRaw"]["status"], 403, "admin_ping needs mcp:admin");
    who
}

/// Refresh: a new access token that works and a new refresh token; the old refresh token is
/// refused afterwards. Revocation: 200, then the current access token is refused at once (the
/// example checks revocations) and so is the revoked refresh token.
fn assert_refresh_and_revoke(run: &Run, sub: &str) -> Value {
    let refresh = &run.result["refresh"];
    assert_eq!(refresh["refreshStatus"], 200, "{refresh:#}");
    assert_eq!(refresh["tokenType"], "Bearer", "{refresh:#}");
    assert_eq!(refresh["cacheControl"], "no-store", "{refresh:#}");
    assert_eq!(refresh["scope"], "mcp:read", "{refresh:#}");
    assert_eq!(refresh["newAccessTokenDiffers"], true, "{refresh:#}");
    assert_eq!(refresh["newRefreshTokenDiffers"], true, "rotation: {refresh:#}");
    assert_eq!(refresh["newWhoamiStatus"], 200, "{refresh:#}");
    assert_whoami(run, &refresh["newWhoami"], sub);
    assert_eq!(refresh["oldRefreshStatus"], 400, "{refresh:#}");
    assert_eq!(refresh["oldRefreshError"], "invalid_grant", "{refresh:#}");

    let revoke = &run.result["revoke"];
    assert_eq!(revoke["revokeStatus"], 200, "{revoke:#}");
    assert_eq!(revoke["afterRevokeStatus"], 401, "{revoke:#}");
    let challenge = revoke["afterRevokeWwwAuthenticate"].as_str().unwrap_or_default();
    assert!(challenge.starts_with("Bearer ") && challenge.contains("error=\"invalid_token\""), "{revoke:#}");
    assert_eq!(revoke["refreshAfterRevokeStatus"], 400, "{revoke:#}");
    assert_eq!(revoke["refreshAfterRevokeError"], "invalid_grant", "{revoke:#}");
    let trace = run.trace();
    assert!(trace.contains(&format!("POST {}/revoke -> 200", run.origin).as_str()), "{trace:#?}");

    // Both access tokens and both refresh tokens were recorded for the secrets checks.
    assert_eq!(run.client_secret_count("accessTokens"), 2);
    assert_eq!(run.client_secret_count("refreshTokens"), 2);
    refresh["newWhoami"].clone()
}

/// L01 and K11: no secret in the server's TRACE log, nor in the database files (raw bytes).
fn assert_no_secrets(run: &Run) {
    assert!(run.database.len() > 4096, "no database written ({} bytes)", run.database.len());
    assert!(run.secrets.len() >= 10, "too few secrets recorded: {}", run.secrets.len());
    // Every run passes the consent page, which sets the browser-binding cookie.
    assert!(run.client_secret_count("cookies") >= 1, "no cookie recorded");
    run.secrets.assert_not_in_trace_log("the server log", &run.server_log);
    run.secrets.assert_not_in_bytes("the SQLite database files", &run.database);
    // The example traces the authorization server's requests: the code and state of the
    // callback are in that log line, redacted.
    assert!(
        run.server_log.contains("/callback?code=[redacted]&state=[redacted]"),
        "no redacted callback URI in the server log"
    );
}

/// The payload of a compact JWS, unverified.
fn jwt_payload(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap_or_else(|| panic!("not a JWT"));
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// What the provider issued to the example: access tokens, ID tokens and refresh tokens.
fn issued<'a>(run: &'a Run, list: &str) -> Vec<&'a str> {
    run.provider_issued[list]
        .as_array()
        .unwrap_or_else(|| panic!("provider issued no {list}"))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

/// The proxy flow: consent, then the provider's headless login and consent, then the
/// example's callback; identity from the provider; no provider token reaches the client.
fn assert_proxied(run: &Run) -> Value {
    let issuer = run.provider_issuer.as_deref().unwrap();
    let hops = run.hops();
    assert_eq!(hops[2], format!("GET {issuer}/auth -> 303"), "{hops:#?}");
    let at_provider = &hops[2..hops.len() - 1];
    assert!(at_provider.iter().all(|h| h.starts_with(&format!("GET {issuer}/"))), "{hops:#?}");
    assert!(at_provider.iter().any(|h| h.contains("/interaction/")), "the provider's login: {hops:#?}");
    assert_eq!(run.result["authorizations"][0]["forms"].as_array().unwrap().len(), 1, "only our consent form");

    let who = assert_tools(run, "e2e-user");
    let refreshed = assert_refresh_and_revoke(run, "e2e-user");
    for who in [&who, &refreshed] {
        let upstream = &who["upstream_claims"];
        assert_eq!(upstream["sub"], "e2e-user", "{who}");
        assert_eq!(upstream["email"], "e2e@example.test", "{who}");
        assert_eq!(upstream["email_verified"], true, "{who}");
        assert_eq!(upstream["name"], "E2E User", "{who}");
    }

    // The provider signed the example in once (one code, one token response, with a refresh
    // token and an ID token for the example); none of its tokens reached the MCP client
    // (no passthrough), whose tokens are the example's own.
    assert_eq!(issued(run, "authorizationCodes").len(), 1);
    assert_eq!(issued(run, "codeVerifiers").len(), 1, "the example's upstream PKCE verifier");
    assert_eq!(issued(run, "refreshTokens").len(), 1, "the provider's refresh token for the example");
    let [id_token] = issued(run, "idTokens")[..] else { panic!("one ID token expected") };
    let id = jwt_payload(id_token);
    assert_eq!((&id["iss"], &id["aud"], &id["sub"]), (&json!(issuer), &json!(UPSTREAM_CLIENT_ID), &json!("e2e-user")));
    assert!(run.provider_log.contains("POST /token -> 200"), "{}", run.provider_log);
    // Revoking the grant at the example revoked the example's grant at the provider too.
    assert!(run.provider_log.contains("POST /token/revocation -> 200"), "{}", run.provider_log);
    let provider_tokens: Vec<&str> =
        ["accessTokens", "refreshTokens", "idTokens"].iter().flat_map(|l| issued(run, l)).collect();
    for (label, value) in run.secrets.iter() {
        if label.starts_with("client ") {
            assert!(!provider_tokens.contains(&value), "{label} is a provider token (passthrough)");
        }
    }
    assert_eq!(run.client_secret_count("hopCodes"), 1, "the provider's code on its way to the callback");
    who
}

#[tokio::test]
async fn proxy_sdk_client_signs_in_through_consent_and_provider_with_jwt_access_tokens() {
    let mcp_server = prerequisites().await;
    let start = Instant::now();
    let run = tokio::time::timeout(WHOLE_TEST, sign_in(&mcp_server, Identity::ProxyJwt))
        .await
        .expect("the end-to-end test exceeded its deadline");
    run.assert_ok();
    assert_discovery(&run);
    assert_consent_hops(&run);
    assert_proxied(&run);

    // What the example received: a JWT access token for itself (aud = its client ID, verified
    // like a resource server would), and the claims in the ID token (no userinfo request).
    let [access_token] = issued(&run, "accessTokens")[..] else { panic!("one access token expected") };
    let claims = jwt_payload(access_token);
    assert_eq!(claims["aud"], UPSTREAM_CLIENT_ID);
    assert_eq!(claims["iss"], run.provider_issuer.as_deref().unwrap());
    assert_eq!(claims["scope"], "openid email profile");
    assert_eq!(jwt_payload(issued(&run, "idTokens")[0])["email"], "e2e@example.test");
    assert!(!run.provider_log.contains("GET /me "), "no userinfo request expected:\n{}", run.provider_log);

    assert_no_secrets(&run);
    eprintln!("proxy (JWT access tokens): {:?}, {} secrets checked", start.elapsed(), run.secrets.len());
}

#[tokio::test]
async fn proxy_with_verify_id_token_accepts_opaque_provider_access_tokens() {
    let mcp_server = prerequisites().await;
    let start = Instant::now();
    let run = tokio::time::timeout(WHOLE_TEST, sign_in(&mcp_server, Identity::ProxyOpaqueVerifyIdToken))
        .await
        .expect("the end-to-end test exceeded its deadline");
    run.assert_ok();
    assert_discovery(&run);
    assert_consent_hops(&run);
    assert_proxied(&run);

    // What the example received: an opaque access token; the verified ID token proves who
    // signed in (it carries only `sub` here), and the claims come from userinfo.
    let [access_token] = issued(&run, "accessTokens")[..] else { panic!("one access token expected") };
    assert!(!access_token.contains('.'), "an opaque access token expected");
    assert_eq!(jwt_payload(issued(&run, "idTokens")[0]).get("email"), None);
    assert!(run.provider_log.contains("GET /me -> 200"), "userinfo expected:\n{}", run.provider_log);

    assert_no_secrets(&run);
    eprintln!(
        "proxy (opaque access tokens, --verify-id-token): {:?}, {} secrets checked",
        start.elapsed(),
        run.secrets.len()
    );
}

/// Fail closed: without `--verify-id-token` the proxy requires a verifiable JWT access token,
/// refuses the provider's opaque one, and the client gets `access_denied` (with state and iss).
#[tokio::test]
async fn proxy_without_verify_id_token_refuses_opaque_provider_access_tokens() {
    let mcp_server = prerequisites().await;
    let run = tokio::time::timeout(WHOLE_TEST, sign_in(&mcp_server, Identity::ProxyOpaqueMisconfigured))
        .await
        .expect("the end-to-end test exceeded its deadline");
    assert!(!run.client_ok, "the sign-in must fail: {:#}", run.result);
    assert_eq!(run.result["error"], "authorization error: access_denied", "{:#}", run.result);
    let round = &run.result["authorizations"][0];
    assert_eq!(round["error"], "access_denied");
    assert_eq!(round["iss"], run.origin);
    assert_eq!(round["callbackParams"], json!(["error", "state", "iss"]));
    assert!(run.server_log.contains("not a JWT"), "{}", run.server_log);
    assert_no_secrets(&run);
}

#[tokio::test]
async fn dev_login_sdk_client_passes_consent_and_login_pages() {
    let mcp_server = prerequisites().await;
    let start = Instant::now();
    let run = tokio::time::timeout(WHOLE_TEST, sign_in(&mcp_server, Identity::DevLogin))
        .await
        .expect("the end-to-end test exceeded its deadline");
    run.assert_ok();
    assert_discovery(&run);
    assert_consent_hops(&run);

    let origin = &run.origin;
    let expected = [
        format!("GET {origin}/authorize -> 200 (form)"),
        format!("POST {origin}/consent -> 303"),
        format!("GET {origin}/dev-login -> 200 (form)"),
        format!("POST {origin}/dev-login -> 303"),
        format!("GET {origin}/callback -> 302"),
    ];
    assert_eq!(run.hops(), expected.iter().map(String::as_str).collect::<Vec<_>>());
    let login = &run.round()["forms"][1];
    assert_eq!(login["action"], format!("{origin}/dev-login"));
    assert_eq!(login["fields"], json!(["state", "nonce", "code_challenge"]));

    let who = assert_tools(&run, DEV_USER);
    let refreshed = assert_refresh_and_revoke(&run, DEV_USER);
    for who in [&who, &refreshed] {
        assert_eq!(who["upstream_claims"]["preferred_username"], DEV_USER, "{who}");
    }
    assert_no_secrets(&run);
    eprintln!("development login: {:?}, {} secrets checked", start.elapsed(), run.secrets.len());
}
