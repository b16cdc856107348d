//! The example's built-in authorization server on `SqliteStore` keeps its state across
//! restarts: codes, refresh tokens (with rotation and reuse detection), registered clients and
//! signing keys. Driven over HTTP from Rust like a browser and a client would (a manual cookie
//! jar, the consent and development login forms submitted), against examples/mcp_server in the
//! development login mode, stopped and started again on the same port.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::process::{Proc, example, random_hex, restartable_port};
use tokio::process::Command;
use url::Url;

/// Everything after the build.
const WHOLE_TEST: Duration = Duration::from_secs(120);
/// Each HTTP exchange.
const EXCHANGE: Duration = Duration::from_secs(10);
/// The client's redirect URI (nothing listens there: the flow stops at the redirect to it).
const REDIRECT_URI: &str = "http://127.0.0.1:53682/callback";
const CLIENT_NAME: &str = "restart test client";

// ---------------------------------------------------------------------------------------------
// The server, on a fixed port and database across restarts.

struct Server {
    exe: PathBuf,
    port: u16,
    db: PathBuf,
    key: String,
    proc: Option<Proc>,
    starts: u32,
}

impl Server {
    /// Starts the example on a free port outside the ephemeral range (another one if the port
    /// was taken meanwhile).
    async fn start(exe: PathBuf, db: PathBuf, key: String) -> Self {
        for attempt in 0..2 {
            let mut server = Self {
                exe: exe.clone(),
                port: restartable_port(),
                db: db.clone(),
                key: key.clone(),
                proc: None,
                starts: 0,
            };
            match server.spawn().await {
                Ok(()) => return server,
                Err(out) if attempt == 0 && out.contains("cannot listen") => continue,
                Err(out) => panic!("mcp_server did not start:\n{out}"),
            }
        }
        unreachable!()
    }

    fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) -> Result<(), String> {
        let mut proc = Proc::spawn(
            format!("mcp_server (start {})", self.starts + 1),
            Command::new(&self.exe)
                .args(["--bind", &format!("127.0.0.1:{}", self.port)])
                .arg("--store")
                .arg(format!("sqlite:{}", self.db.display()))
                .args(["--encryption-key", &self.key, "--exit-on-stdin-eof"])
                // Revoked grants' access tokens are checked to stop at once.
                .arg("--revocation-check"),
        );
        match proc.listening_on().await {
            Some(url) => {
                assert_eq!(url, format!("{}/mcp", self.origin()));
                self.proc = Some(proc);
                self.starts += 1;
                Ok(())
            }
            None => Err(proc.output()),
        }
    }

    /// Stops the server (stdin closed: a graceful shutdown) and starts it again, same port,
    /// same database, same key.
    async fn restart(&mut self) {
        if let Some(proc) = self.proc.take() {
            proc.stop().await;
        }
        if let Err(out) = self.spawn().await {
            panic!("mcp_server did not start again on port {}:\n{out}", self.port);
        }
    }

    async fn stop(&mut self) -> String {
        self.proc.take().map(Proc::stop).unwrap().await
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP: a browser with a cookie jar, and a client.

struct Response {
    status: StatusCode,
    location: Option<String>,
    body: String,
}

impl Response {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

struct Browser {
    http: reqwest::Client,
    /// One host only: name → value.
    cookies: BTreeMap<String, String>,
}

impl Browser {
    fn new() -> Self {
        Self { http: http(), cookies: BTreeMap::new() }
    }

    async fn send(&mut self, mut req: reqwest::RequestBuilder) -> Response {
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.header(COOKIE, jar.join("; "));
        }
        let res = req.send().await.unwrap();
        for set in res.headers().get_all(SET_COOKIE) {
            let pair = set.to_str().unwrap().split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.insert(name.trim().to_owned(), value.trim().to_owned());
        }
        let status = res.status();
        let location = res.headers().get(LOCATION).map(|l| l.to_str().unwrap().to_owned());
        Response { status, location, body: res.text().await.unwrap() }
    }

    async fn get(&mut self, url: &str) -> Response {
        let req = self.http.get(url);
        self.send(req).await
    }

    /// Submits the page's post form like a browser: its hidden inputs, the approve button if
    /// it has one, the page's origin.
    async fn submit(&mut self, page_url: &str, page: &Response) -> Response {
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let form = Form::parse(&page.body).unwrap_or_else(|| panic!("no post form in {}", page.body));
        let base = Url::parse(page_url).unwrap();
        let action = base.join(&form.action).unwrap();
        let mut fields = form.fields.clone();
        if form.approve {
            fields.push(("decision".into(), "approve".into()));
        }
        let req = self
            .http
            .post(action)
            .header(ORIGIN, base.origin().ascii_serialization())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(&fields).unwrap());
        self.send(req).await
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).timeout(EXCHANGE).build().unwrap()
}

/// The first `<form method="post">` of one of the server's pages.
#[derive(Debug, Clone)]
struct Form {
    action: String,
    fields: Vec<(String, String)>,
    /// Whether it has a `decision=approve` submit button.
    approve: bool,
}

impl Form {
    fn parse(html: &str) -> Option<Self> {
        let start = html.find("<form ")?;
        let end = start + html[start..].find("</form>")?;
        let body = &html[start..end];
        let open = &body[..body.find('>')?];
        if attr(open, "method").as_deref() != Some("post") {
            return None;
        }
        let mut fields = Vec::new();
        let mut approve = false;
        for tag in tags(body, "input") {
            if attr(tag, "type").as_deref() == Some("hidden") {
                fields.push((attr(tag, "name")?, attr(tag, "value").unwrap_or_default()));
            }
        }
        for tag in tags(body, "button") {
            approve |=
                attr(tag, "name").as_deref() == Some("decision") && attr(tag, "value").as_deref() == Some("approve");
        }
        Some(Self { action: attr(open, "action")?, fields, approve })
    }

    fn field(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// The opening tags `<name …>` in `html`.
fn tags<'a>(html: &'a str, name: &str) -> Vec<&'a str> {
    let open = format!("<{name} ");
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find(&open) {
        let tag = &rest[i..];
        let Some(end) = tag.find('>') else { break };
        out.push(&tag[..end]);
        rest = &tag[end..];
    }
    out
}

/// A double-quoted attribute of a tag, HTML entities decoded.
fn attr(tag: &str, name: &str) -> Option<String> {
    let needle = format!(" {name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let end = start + tag[start..].find('"')?;
    Some(
        tag[start..end]
            .replace("&quot;", "\"")
            .replace("&#x27;", "'")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

async fn post_json(url: &str, body: &Value) -> Response {
    let req = http().post(url).header(CONTENT_TYPE, "application/json").body(body.to_string());
    Browser::new().send(req).await
}

async fn post_form(url: &str, fields: &[(&str, &str)]) -> Response {
    let req = http()
        .post(url)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(fields).unwrap());
    Browser::new().send(req).await
}

/// An MCP `initialize` with `token`: its status (200 once the token is accepted).
async fn mcp_initialize(origin: &str, token: &str) -> StatusCode {
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": { "name": "restart", "version": "0" } },
    });
    let res = http()
        .post(format!("{origin}/mcp"))
        .bearer_auth(token)
        .header(CONTENT_TYPE, "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    res.status()
}

fn query(url: &str) -> BTreeMap<String, String> {
    Url::parse(url).unwrap().query_pairs().into_owned().collect()
}

// ---------------------------------------------------------------------------------------------
// The test.

/// Registers a public client with refresh tokens.
async fn register(origin: &str) -> String {
    let res = post_json(
        &format!("{origin}/register"),
        &json!({
            "redirect_uris": [REDIRECT_URI],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "client_name": CLIENT_NAME,
        }),
    )
    .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.body);
    res.json()["client_id"].as_str().unwrap().to_owned()
}

fn authorize_url(origin: &str, client_id: &str, challenge: &str, state: &str) -> String {
    let mut url = Url::parse(&format!("{origin}/authorize")).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", REDIRECT_URI)
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", state)
        .append_pair("scope", "mcp:read")
        .append_pair("resource", &format!("{origin}/mcp"));
    url.into()
}

/// Consent page → consent form → development login page → its form → callback → the client's
/// redirect URI with the code.
async fn authorize(origin: &str, client_id: &str, challenge: &str) -> String {
    let mut browser = Browser::new();
    let state = random_hex(16);
    let url = authorize_url(origin, client_id, challenge, &state);
    let consent = browser.get(&url).await;
    assert!(consent.body.contains(CLIENT_NAME), "{}", consent.body);
    let form = Form::parse(&consent.body).unwrap();
    assert_eq!(form.action, "/consent");
    assert!(form.approve && form.field("csrf").is_some() && form.field("request").is_some(), "{form:?}");
    let res = browser.submit(&url, &consent).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let login_url = res.location.unwrap();
    assert!(login_url.starts_with(&format!("{origin}/dev-login?")), "{login_url}");
    let login = browser.get(&login_url).await;
    assert_eq!(Form::parse(&login.body).unwrap().action, "/dev-login");
    let res = browser.submit(&login_url, &login).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    let callback = res.location.unwrap();
    assert!(callback.starts_with(&format!("{origin}/callback?")), "{callback}");
    let res = browser.get(&callback).await;
    assert_eq!(res.status, StatusCode::FOUND, "{}", res.body);
    let response = res.location.unwrap();
    assert!(response.starts_with(&format!("{REDIRECT_URI}?")), "{response}");
    let params = query(&response);
    assert_eq!(params.get("state"), Some(&state));
    assert_eq!(params.get("iss").map(String::as_str), Some(origin));
    params.get("code").unwrap_or_else(|| panic!("no code: {response}")).clone()
}

async fn redeem(origin: &str, client_id: &str, code: &str, verifier: &str) -> Response {
    let resource = format!("{origin}/mcp");
    let fields = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT_URI),
        ("client_id", client_id),
        ("code_verifier", verifier),
        ("resource", resource.as_str()),
    ];
    post_form(&format!("{origin}/token"), &fields).await
}

async fn refresh(origin: &str, client_id: &str, refresh_token: &str) -> Response {
    let fields = [("grant_type", "refresh_token"), ("refresh_token", refresh_token), ("client_id", client_id)];
    post_form(&format!("{origin}/token"), &fields).await
}

fn assert_invalid_grant(res: &Response, what: &str) {
    assert_eq!(res.status, StatusCode::BAD_REQUEST, "{what}: {}", res.body);
    assert_eq!(res.json()["error"], "invalid_grant", "{what}");
}

fn tokens(res: &Response, what: &str) -> (String, String) {
    assert_eq!(res.status, StatusCode::OK, "{what}: {}", res.body);
    let body = res.json();
    let access = body["access_token"].as_str().unwrap_or_else(|| panic!("{what}: no access token")).to_owned();
    let refresh = body["refresh_token"].as_str().unwrap_or_else(|| panic!("{what}: no refresh token")).to_owned();
    (access, refresh)
}

async fn jwks(origin: &str) -> Value {
    let res = Browser::new().get(&format!("{origin}/jwks.json")).await;
    assert_eq!(res.status, StatusCode::OK);
    res.json()
}

/// Codes, refresh tokens, clients and signing keys survive restarts of the example on
/// SqliteStore; the code stays single-use and refresh tokens keep rotating across them.
#[tokio::test]
async fn sqlite_state_survives_restarts() {
    let exe = tokio::task::spawn_blocking(|| example("mcp_server")).await.unwrap();
    let start = Instant::now();
    let tmp = tempfile::Builder::new().prefix("restart-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let db = tmp.path().join("as.db");
    tokio::time::timeout(WHOLE_TEST, run(exe, &db)).await.expect("the restart test exceeded its deadline");
    eprintln!("restart test: {:?}", start.elapsed());
}

async fn run(exe: PathBuf, db: &Path) {
    let key = random_hex(32);
    let mut server = Server::start(exe, db.to_owned(), key.clone()).await;
    let origin = server.origin();
    let keys = jwks(&origin).await;

    // 1. Register, and authorize through consent and the development login, up to the code.
    let client_id = register(&origin).await;
    let verifier = random_hex(32);
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let code = authorize(&origin, &client_id, &challenge).await;

    // 2. Restart; the code is redeemed once, and only once. A second redemption also revokes
    // what the first one issued (RFC 9700 §4.2.4), across the restart too.
    server.restart().await;
    assert_eq!(jwks(&origin).await, keys, "the signing keys are kept");
    let first = redeem(&origin, &client_id, &code, &verifier).await;
    let (access_1, refresh_1) = tokens(&first, "code redeemed after a restart");
    assert_eq!(first.json()["token_type"], "Bearer");
    assert_eq!(mcp_initialize(&origin, &access_1).await, StatusCode::OK);
    assert_invalid_grant(&redeem(&origin, &client_id, &code, &verifier).await, "code redeemed twice");
    assert_eq!(mcp_initialize(&origin, &access_1).await, StatusCode::UNAUTHORIZED, "grant revoked on code replay");
    assert_invalid_grant(&refresh(&origin, &client_id, &refresh_1).await, "refresh token of a replayed code");

    // 3. A new grant; restart; the access token issued before still verifies, the refresh
    // token rotates, and the rotated-out one is refused (which revokes the grant: its newest
    // refresh token and access token stop working too).
    let verifier_2 = random_hex(32);
    let challenge_2 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier_2.as_bytes()));
    let code_2 = authorize(&origin, &client_id, &challenge_2).await;
    let (access_2, refresh_2) = tokens(&redeem(&origin, &client_id, &code_2, &verifier_2).await, "second code");
    server.restart().await;
    assert_eq!(mcp_initialize(&origin, &access_2).await, StatusCode::OK, "access token from before the restart");
    let (access_3, refresh_3) = tokens(&refresh(&origin, &client_id, &refresh_2).await, "refresh after a restart");
    assert_ne!(refresh_3, refresh_2);
    assert_eq!(mcp_initialize(&origin, &access_3).await, StatusCode::OK);
    assert_invalid_grant(&refresh(&origin, &client_id, &refresh_2).await, "the previous refresh token");
    assert_invalid_grant(&refresh(&origin, &client_id, &refresh_3).await, "the newest refresh token after reuse");
    assert_eq!(mcp_initialize(&origin, &access_3).await, StatusCode::UNAUTHORIZED, "grant revoked on reuse");

    // 4. The client is still registered: a new authorization request shows its consent page
    // (an unknown client gets the error page instead).
    // (A fresh PKCE challenge: one a code was issued for is refused, RFC 9700 §2.1.1.)
    let challenge_3 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(random_hex(32)));
    let mut browser = Browser::new();
    let page = browser.get(&authorize_url(&origin, &client_id, &challenge_3, "again")).await;
    assert_eq!(page.status, StatusCode::OK, "{:?} {}", page.location, page.body);
    assert!(page.body.contains(CLIENT_NAME), "{}", page.body);
    assert_eq!(Form::parse(&page.body).map(|f| f.action).as_deref(), Some("/consent"));
    let unknown = browser.get(&authorize_url(&origin, "unknown-client", &challenge_3, "x")).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert!(!unknown.body.contains("action=\"/consent\""), "{}", unknown.body);

    // K11: the database files hold none of the secrets.
    server.stop().await;
    let mut database = Vec::new();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        if let Ok(bytes) = std::fs::read(format!("{}{suffix}", db.display())) {
            database.extend(bytes);
        }
    }
    assert!(database.len() > 4096, "no database written");
    for (what, secret) in [
        ("encryption key", key.as_str()),
        ("code", code.as_str()),
        ("code 2", code_2.as_str()),
        ("code verifier", verifier.as_str()),
        ("code verifier 2", verifier_2.as_str()),
        ("access token 1", access_1.as_str()),
        ("access token 2", access_2.as_str()),
        ("access token 3", access_3.as_str()),
        ("refresh token 1", refresh_1.as_str()),
        ("refresh token 2", refresh_2.as_str()),
        ("refresh token 3", refresh_3.as_str()),
    ] {
        let needle = secret.as_bytes();
        assert!(!database.windows(needle.len()).any(|w| w == needle), "the {what} appears in the database files");
    }
    assert_eq!(server.starts, 3);
}
