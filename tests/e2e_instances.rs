//! Two `examples/mcp_server` processes on one `redis-server`, behind a round-robin load
//! balancer that sends each HTTP request to the other instance than the one before. Real
//! parts: the MCP TypeScript SDK client (tests/e2e/mcp-client.mjs, development login through
//! the consent and login pages), Redis with an append-only file, the example binary. The
//! balancer is a few lines of axum in this test; the client ID metadata documents are served
//! over https by a loopback server with a certificate from a test CA.
//!
//! In order, in one run:
//! 1. a full TypeScript SDK flow through the balancer (DCR, authorize, consent, login,
//!    callback, token, refresh, tool calls), every request at the other instance;
//! 2. a client ID metadata document client, its document fetched once for both instances;
//! 3. a refresh token revoked at one instance is refused at the other (F12, K15);
//! 4. Redis stopped: the protected MCP endpoint keeps working; token, register and revoke
//!    answer 503 JSON and authorize and callback an error page, within the store deadline; a
//!    refresh tried during the outage did not spend its token; Redis started again: the next
//!    flow succeeds with no restart of either instance;
//! 5. both instances restarted: clients, refresh tokens, revocations and signing keys
//!    survive (group K on Redis; consents: tests/authz_storage.rs K04 on Redis);
//! 6. one code redeemed at both at once → one success (F03); one refresh token at both at
//!    once → one successor (F13); one `private_key_jwt` assertion replayed at the other
//!    instance → 401 (F21);
//! 7. confidential clients (`client_secret_post`, `client_secret_basic`) redeem a code at the
//!    other instance, so that client secrets pass the token endpoint in the form and in the
//!    `Authorization` header (for L01 below).
//!
//! Every instance runs with `RUST_LOG=trace`. Catalogue L01: at the end, no instance's log
//! holds any secret of the run: what each client run saw (tokens, codes, verifiers, form
//! secrets, cookies), what the test minted or received itself (codes, verifiers, cookies,
//! tokens, client secrets, the `private_key_jwt` assertion) and the encryption key. K11: nor
//! does Redis's append-only file.
//!
//! Needs Node.js 20+, npm (the Node dependencies are installed with `npm ci` on first use)
//! and redis-server.

#![cfg(all(feature = "redis", feature = "sqlite"))]

mod support;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{Value, json};
use support::TestKey;
use support::authz::pkce;
use support::process::{Proc, ensure_node_modules, example, node, output_within, random_hex};
use support::redis::RedisServer;
use support::secrets::Secrets;
use support::tls::{TestCa, TlsFront};
use tokio::net::TcpListener;
use tokio::process::Command;

/// The redirect URI of mcp-client.mjs (nothing listens there).
const REDIRECT_URI: &str = "http://127.0.0.1:53682/callback";
const CLIENT: Duration = Duration::from_secs(75);
const DEV_USER: &str = "replica-user";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

// ---------------------------------------------------------------------------------------
// The load balancer: each request to the next instance, round robin, logged.

#[derive(Clone, Debug)]
struct Hop {
    /// The request's place in the balancer's round (since the last `set`): logged when the
    /// answer comes, concurrent requests (the SDK's GET stream beside a POST) may finish out of
    /// order.
    seq: usize,
    instance: usize,
    method: String,
    path: String,
    status: u16,
}

struct Balancer {
    backends: Mutex<Vec<SocketAddr>>,
    next: AtomicUsize,
    log: Mutex<Vec<Hop>>,
    client: reqwest::Client,
}

impl Balancer {
    async fn start() -> (Arc<Self>, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let lb = Arc::new(Self {
            backends: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
            client: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
        });
        let app = axum::Router::new().fallback(forward).with_state(lb.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (lb, origin)
    }

    fn set(&self, backends: Vec<SocketAddr>) {
        *self.backends.lock().unwrap() = backends;
        self.next.store(0, Ordering::SeqCst);
    }

    /// Hops logged from `from` on, in the order the balancer picked their instance.
    fn hops(&self, from: usize) -> Vec<Hop> {
        let mut hops = self.log.lock().unwrap()[from..].to_vec();
        hops.sort_by_key(|h| h.seq);
        hops
    }

    fn len(&self) -> usize {
        self.log.lock().unwrap().len()
    }
}

async fn forward(State(lb): State<Arc<Balancer>>, req: axum::extract::Request) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 1 << 20).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let (seq, instance, backend) = {
        let backends = lb.backends.lock().unwrap();
        let seq = lb.next.fetch_add(1, Ordering::SeqCst);
        let i = seq % backends.len();
        (seq, i, backends[i])
    };
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut request = lb.client.request(parts.method.clone(), format!("http://{backend}{path_and_query}"));
    for (name, value) in &parts.headers {
        if name != http::header::CONTENT_LENGTH && name != http::header::CONNECTION {
            request = request.header(name, value);
        }
    }
    let hop = |status: u16| Hop {
        seq,
        instance,
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        status,
    };
    let upstream = match request.body(body).send().await {
        Ok(r) => r,
        Err(_) => {
            lb.log.lock().unwrap().push(hop(502));
            return StatusCode::BAD_GATEWAY.into_response();
        }
    };
    let status = upstream.status();
    let headers = upstream.headers().clone();
    let bytes = upstream.bytes().await.unwrap_or_default();
    lb.log.lock().unwrap().push(hop(status.as_u16()));
    let mut res = Response::new(axum::body::Body::from(bytes));
    *res.status_mut() = status;
    for (name, value) in &headers {
        if name != http::header::CONTENT_LENGTH && name != http::header::TRANSFER_ENCODING {
            res.headers_mut().append(name, value.clone());
        }
    }
    res
}

// ---------------------------------------------------------------------------------------
// Client ID metadata documents over https, fetches counted per path.

struct Documents {
    origin: String,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    _front: TlsFront,
}

impl Documents {
    async fn start(ca: &TestCa, key: &TestKey) -> Self {
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = listener.local_addr().unwrap();
        let front = TlsFront::start(ca.leaf(&["localhost"]), backend).await;
        let origin = format!("https://localhost:{}", front.addr.port());
        let public = json!({
            "client_id": format!("{origin}/public.json"),
            "client_name": "replicas e2e (document)",
            "redirect_uris": [REDIRECT_URI],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        });
        let signed = json!({
            "client_id": format!("{origin}/pk.json"),
            "client_name": "replicas e2e (private_key_jwt)",
            "redirect_uris": [REDIRECT_URI],
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": TestKey::jwks(&[key]),
        });
        let docs: Arc<HashMap<String, String>> = Arc::new(HashMap::from([
            ("/public.json".to_owned(), public.to_string()),
            ("/pk.json".to_owned(), signed.to_string()),
        ]));
        let counter = hits.clone();
        let app = axum::Router::new().fallback(move |uri: http::Uri| {
            let docs = docs.clone();
            let counter = counter.clone();
            async move {
                *counter.lock().unwrap().entry(uri.path().to_owned()).or_default() += 1;
                match docs.get(uri.path()) {
                    Some(doc) => {
                        ([("content-type", "application/json"), ("cache-control", "max-age=300")], doc.clone())
                            .into_response()
                    }
                    None => StatusCode::NOT_FOUND.into_response(),
                }
            }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { origin, hits, _front: front }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

// ---------------------------------------------------------------------------------------
// The instances and the client.

struct Cluster {
    exe: std::path::PathBuf,
    origin: String,
    redis_url: String,
    key: String,
    ca_file: std::path::PathBuf,
    http: reqwest::Client,
    /// Where each client run writes its secrets file.
    tmp: std::path::PathBuf,
    client_runs: AtomicUsize,
    /// Every secret of the run, for the L01 and K11 checks at the end.
    secrets: Mutex<Secrets>,
}

struct Instance {
    name: String,
    proc: Proc,
    addr: SocketAddr,
}

impl Instance {
    /// Stops the instance: (its name, its whole log).
    async fn stop(self) -> (String, String) {
        (self.name, self.proc.stop().await)
    }
}

impl Cluster {
    async fn instance(&self, name: &str, extra: &[&str]) -> Instance {
        let mut cmd = Command::new(&self.exe);
        cmd.args(["--bind", "127.0.0.1:0", "--public-url", &self.origin, "--store", &self.redis_url])
            .args(["--encryption-key", &self.key, "--stateless", "--dev-user", DEV_USER])
            .args(["--allow-loopback-fetch", "--exit-on-stdin-eof", "--trust-ca"])
            .arg(&self.ca_file)
            .args(extra)
            .env("RUST_LOG", "trace");
        let mut proc = Proc::spawn(name, &mut cmd);
        let url = proc.listening_on().await.unwrap_or_else(|| panic!("{name} did not start:\n{}", proc.output()));
        let addr = url.trim_start_matches("http://").trim_end_matches("/mcp").parse().unwrap();
        Instance { name: name.to_owned(), proc, addr }
    }

    /// A secret the test minted or received, for the checks at the end.
    fn secret(&self, kind: &str, value: &str) {
        self.secrets.lock().unwrap().add(kind, value);
    }

    /// The secrets in a token or registration response.
    fn secrets_of(&self, reply: &Reply) {
        let json = reply.json();
        for (member, kind) in [
            ("access_token", "test accessTokens"),
            ("refresh_token", "test refreshTokens"),
            ("id_token", "test idTokens"),
            ("client_secret", "test clientSecrets"),
            ("registration_access_token", "test registrationAccessTokens"),
        ] {
            if let Some(value) = json[member].as_str() {
                self.secret(kind, value);
            }
        }
    }

    /// Runs mcp-client.mjs against the balancer, its secrets recorded for the checks at the
    /// end: its JSON result, which must say ok, and its secrets file.
    async fn client(&self, args: &[&str], logs: &[&Instance]) -> (Value, Value) {
        let n = self.client_runs.fetch_add(1, Ordering::SeqCst);
        let secrets_file = self.tmp.join(format!("client-{n}.json"));
        let out = output_within(
            node("mcp-client.mjs")
                .args(args)
                .arg("--secrets-file")
                .arg(&secrets_file)
                .arg(format!("{}/mcp", self.origin)),
            CLIENT,
            "client",
        )
        .await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let servers: String = logs.iter().map(|i| i.proc.output()).collect::<Vec<_>>().join("\n----\n");
        let result: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!("no JSON ({e}): {stdout}\n{}\nservers:\n{servers}", String::from_utf8_lossy(&out.stderr))
        });
        assert!(
            result["ok"] == true && out.status.success(),
            "client failed: {result:#}\n{}\nservers:\n{servers}",
            String::from_utf8_lossy(&out.stderr)
        );
        let seen = self.secrets.lock().unwrap().add_file(&format!("client run {n}"), &secrets_file);
        (result, seen)
    }

    /// A request straight to one instance (not through the balancer), with the public host.
    fn to(&self, instance: &Instance, method: http::Method, path: &str) -> reqwest::RequestBuilder {
        let host = self.origin.trim_start_matches("http://").to_owned();
        self.http.request(method, format!("http://{}{path}", instance.addr)).header("host", host)
    }

    async fn form(&self, instance: &Instance, path: &str, form: &[(&str, &str)]) -> Reply {
        let body = serde_urlencoded::to_string(form).unwrap();
        let r = self
            .to(instance, http::Method::POST, path)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        let reply = Reply::from(r).await;
        self.secrets_of(&reply);
        reply
    }

    async fn refresh(&self, instance: &Instance, client: &str, rt: &str) -> Reply {
        self.form(instance, "/token", &[("grant_type", "refresh_token"), ("refresh_token", rt), ("client_id", client)])
            .await
    }

    /// `initialize` at /mcp with `token`: the protected endpoint's answer.
    async fn mcp_initialize(&self, instance: &Instance, token: &str) -> Reply {
        let body = json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
        });
        let r = self
            .to(instance, http::Method::POST, "/mcp")
            .header("authorization", format!("Bearer {token}"))
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(body.to_string());
        Reply::from(r).await
    }

    /// Registers a public client at `instance`: its client_id.
    async fn register(&self, instance: &Instance) -> String {
        self.register_as(instance, "none").await.0
    }

    /// Registers a client with token endpoint authentication `method` at `instance`: its
    /// client_id, and its client secret if one was issued.
    async fn register_as(&self, instance: &Instance, method: &str) -> (String, Option<String>) {
        let body = json!({
            "client_name": "replicas e2e", "redirect_uris": [REDIRECT_URI],
            "grant_types": ["authorization_code", "refresh_token"], "token_endpoint_auth_method": method,
        });
        let r = Reply::from(
            self.to(instance, http::Method::POST, "/register")
                .header("content-type", "application/json")
                .body(body.to_string()),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        self.secrets_of(&r);
        let json = r.json();
        (json["client_id"].as_str().unwrap().to_owned(), json["client_secret"].as_str().map(str::to_owned))
    }

    fn authorize_path(&self, client: &str, challenge: &str) -> String {
        let query = serde_urlencoded::to_string([
            ("response_type", "code"),
            ("client_id", client),
            ("redirect_uri", REDIRECT_URI),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
            ("state", "st"),
            ("scope", "mcp:read"),
            ("resource", &format!("{}/mcp", self.origin)),
        ])
        .unwrap();
        format!("/authorize?{query}")
    }

    /// A code from `instance` (started with --insecure-auto-approve), following its redirects
    /// (the callback, which may be answered by any instance) with the cookies it sets, like a
    /// browser: (code, verifier).
    async fn code(&self, instance: &Instance, client: &str) -> (String, String) {
        let (verifier, challenge) = pkce();
        self.secret("test codeVerifiers", &verifier);
        let mut r = Reply::from(self.to(instance, http::Method::GET, &self.authorize_path(client, &challenge))).await;
        let mut cookies = r.cookies.clone();
        for _ in 0..3 {
            assert!(r.status == 302 || r.status == 303, "{} {}", r.status, r.text);
            let Some(path) = r.location.strip_prefix(&self.origin) else { break };
            let next = self.to(instance, http::Method::GET, path).header("cookie", cookies.join("; "));
            r = Reply::from(next).await;
            cookies.extend(r.cookies.iter().cloned());
        }
        for cookie in &cookies {
            let (_, value) = cookie.split_once('=').unwrap_or_else(|| panic!("a cookie without a value"));
            self.secret("test cookies", value);
        }
        let location = url::Url::parse(&r.location).unwrap();
        assert!(r.location.starts_with(REDIRECT_URI), "{location}");
        let code = location.query_pairs().find(|(k, _)| k == "code").map(|(_, v)| v.into_owned());
        let code = code.unwrap_or_else(|| panic!("no code in {location}"));
        self.secret("test authorizationCodes", &code);
        (code, verifier)
    }

    async fn redeem(&self, instance: &Instance, client: &str, code: &str, verifier: &str) -> Reply {
        self.redeem_with(instance, client, code, verifier, &[]).await
    }

    /// The code at `instance`, with `extra` form fields (client authentication).
    async fn redeem_with(
        &self,
        instance: &Instance,
        client: &str,
        code: &str,
        verifier: &str,
        extra: &[(&str, &str)],
    ) -> Reply {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("code_verifier", verifier),
            ("client_id", client),
            ("redirect_uri", REDIRECT_URI),
        ];
        form.extend_from_slice(extra);
        self.form(instance, "/token", &form).await
    }
}

struct Reply {
    status: u16,
    content_type: String,
    cache_control: String,
    location: String,
    /// `name=value` of each cookie set.
    cookies: Vec<String>,
    text: String,
    elapsed: Duration,
}

impl Reply {
    async fn from(request: reqwest::RequestBuilder) -> Self {
        let start = Instant::now();
        let r = request.send().await.unwrap();
        let header = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let (content_type, cache_control, location) =
            (header("content-type"), header("cache-control"), header("location"));
        let cookies = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .map(str::to_owned)
            .collect();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        Self { status, content_type, cache_control, location, cookies, text, elapsed: start.elapsed() }
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
}

/// 503 with a JSON `temporarily_unavailable`, not cached, within the store deadline.
fn assert_unavailable_json(r: &Reply, what: &str) {
    assert_eq!(r.status, 503, "{what}: {}", r.text);
    assert_eq!(r.content_type, "application/json", "{what}");
    assert_eq!(r.cache_control, "no-store", "{what}");
    assert_eq!(r.error(), "temporarily_unavailable", "{what}: {}", r.text);
    assert!(!r.text.to_lowercase().contains("redis"), "{what}: no internal detail: {}", r.text);
    assert!(r.elapsed < Duration::from_secs(6), "{what}: answered after {:?}", r.elapsed);
}

/// An HTML error page (no redirect), within the store deadline.
fn assert_error_page(r: &Reply, what: &str) {
    assert!(r.status >= 500, "{what}: {} {}", r.status, r.text);
    assert!(r.content_type.starts_with("text/html"), "{what}: {}", r.content_type);
    assert!(r.location.is_empty(), "{what}: no redirect");
    assert!(!r.text.to_lowercase().contains("redis"), "{what}: no internal detail");
    assert!(r.elapsed < Duration::from_secs(6), "{what}: answered after {:?}", r.elapsed);
}

fn first(v: &Value, kind: &str) -> String {
    v[kind].as_array().and_then(|a| a.last()).and_then(Value::as_str).unwrap_or_else(|| panic!("no {kind}")).to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_redis_behind_a_round_robin_balancer() {
    let exe = tokio::task::spawn_blocking(|| {
        ensure_node_modules();
        example("mcp_server")
    })
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(400), scenario(exe)).await.expect("the test took longer than 400 s");
}

async fn scenario(exe: std::path::PathBuf) {
    let tmp = tempfile::Builder::new().prefix("e2e-instances-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let aof_dir = tmp.path().join("redis");
    std::fs::create_dir(&aof_dir).unwrap();
    let aof_dir = aof_dir.to_str().unwrap().to_owned();
    // Durable Redis: an append-only file, so a stopped and restarted server keeps its data.
    let redis_args = ["--appendonly", "yes", "--appendfsync", "always", "--dir", aof_dir.as_str()];
    let redis = RedisServer::start(&redis_args);
    let redis_port = redis.port();

    let ca = TestCa::new();
    let ca_file = tmp.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let client_key = TestKey::es256();
    let docs = Documents::start(&ca, &client_key).await;

    let (lb, origin) = Balancer::start().await;
    let cluster = Cluster {
        exe,
        origin: origin.clone(),
        redis_url: redis.url(),
        key: random_hex(32),
        ca_file,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
        tmp: tmp.path().to_owned(),
        client_runs: AtomicUsize::new(0),
        secrets: Mutex::new(Secrets::new()),
    };
    cluster.secret("encryption key", &cluster.key);
    // Every instance's log, checked at the end.
    let mut logs: Vec<(String, String)> = Vec::new();
    let a = cluster.instance("instance A", &[]).await;
    let b = cluster.instance("instance B", &[]).await;
    lb.set(vec![a.addr, b.addr]);

    // 1. The whole TypeScript SDK flow, each request at the other instance.
    let from = lb.len();
    let (run, _) = cluster.client(&["--call", "whoami", "--call", "echo", "--refresh"], &[&a, &b]).await;
    let hops = lb.hops(from);
    for (i, hop) in hops.iter().enumerate() {
        // Every request of the round logged (none lost), each at the other instance.
        assert_eq!((hop.seq, hop.instance), (i, i % 2), "strict alternation: {hops:#?}");
    }
    let served = |path: &str| hops.iter().filter(|h| h.path == path).map(|h| h.instance).collect::<BTreeSet<_>>();
    for path in ["/register", "/authorize", "/consent", "/callback", "/token", "/mcp"] {
        assert!(!served(path).is_empty(), "{path} not requested: {hops:#?}");
    }
    let tool_posts: BTreeSet<usize> =
        hops.iter().filter(|h| h.path == "/mcp" && h.method == "POST" && h.status == 200).map(|h| h.instance).collect();
    assert_eq!(tool_posts.len(), 2, "MCP requests answered at both instances: {hops:#?}");
    assert!(hops.iter().all(|h| h.status != 502), "the balancer reached every instance: {hops:#?}");
    let refresh = &run["refresh"];
    assert_eq!(refresh["refreshStatus"], 200, "{refresh:#}");
    assert_eq!(refresh["newWhoamiStatus"], 200, "{refresh:#}");
    assert_eq!(refresh["oldRefreshError"], "invalid_grant", "{refresh:#}");
    let who: Value = serde_json::from_str(run["calls"]["whoami"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(who["sub"], DEV_USER, "{who}");
    assert_eq!(run["calls"]["echo"]["content"][0]["text"], "hello");
    eprintln!("flow through the balancer: {} requests, alternating", hops.len());

    // 2. A client ID metadata document: both instances use it, one fetch.
    let from = lb.len();
    let doc_url = docs.url("/public.json");
    let (run, _) = cluster.client(&["--cimd", &doc_url, "--call", "whoami"], &[&a, &b]).await;
    assert_eq!(run["clientId"], doc_url);
    let hops = lb.hops(from);
    let needing_the_document: BTreeSet<usize> = hops
        .iter()
        .filter(|h| ["/authorize", "/consent", "/token"].contains(&h.path.as_str()))
        .map(|h| h.instance)
        .collect();
    assert_eq!(needing_the_document.len(), 2, "{hops:#?}");
    assert_eq!(docs.hits("/public.json"), 1, "one fetch for both instances");

    // 3. A live grant kept for later, and a refresh token revoked at A, refused at B.
    let (kept, kept_secrets) = cluster.client(&["--call", "whoami"], &[&a, &b]).await;
    let kept_client = kept["clientId"].as_str().unwrap().to_owned();
    let kept_at = first(&kept_secrets, "accessTokens");
    let kept_rt = first(&kept_secrets, "refreshTokens");
    let (revoked, revoked_secrets) = cluster.client(&[], &[&a, &b]).await;
    let revoked_client = revoked["clientId"].as_str().unwrap().to_owned();
    let revoked_rt = first(&revoked_secrets, "refreshTokens");
    let r = cluster.form(&a, "/revoke", &[("token", &revoked_rt), ("client_id", &revoked_client)]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(cluster.refresh(&b, &revoked_client, &revoked_rt).await.error(), "invalid_grant");

    // 4. Redis stops.
    redis.stop();
    for (name, instance) in [("A", &a), ("B", &b)] {
        let r = cluster.mcp_initialize(instance, &kept_at).await;
        assert_eq!(r.status, 200, "{name}: the protected endpoint works without the store: {}", r.text);
        assert!(r.text.contains("serverInfo"), "{name}: {}", r.text);
        assert_unavailable_json(&cluster.refresh(instance, &kept_client, &kept_rt).await, &format!("{name} refresh"));
        let r = Reply::from(
            cluster
                .to(instance, http::Method::POST, "/register")
                .header("content-type", "application/json")
                .body(json!({"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "none"}).to_string()),
        )
        .await;
        assert_unavailable_json(&r, &format!("{name} register"));
        let r = cluster.form(instance, "/revoke", &[("token", &kept_rt), ("client_id", &kept_client)]).await;
        assert_unavailable_json(&r, &format!("{name} revoke"));
        let (_, challenge) = pkce();
        let r = Reply::from(cluster.to(instance, http::Method::GET, &cluster.authorize_path(&kept_client, &challenge)))
            .await;
        assert_error_page(&r, &format!("{name} authorize"));
        let r = Reply::from(cluster.to(instance, http::Method::GET, "/callback?state=abc&code=def")).await;
        assert_error_page(&r, &format!("{name} callback"));
    }

    // Redis starts again, on the same port and files: both instances reconnect by themselves.
    let redis = RedisServer::start_on(redis_port, &redis_args);
    let started = Instant::now();
    for instance in [&a, &b] {
        loop {
            // A refresh token that does not exist: invalid_grant once the store answers.
            let r = cluster.refresh(instance, &kept_client, "not-a-token").await;
            if r.status == 400 {
                break;
            }
            assert_eq!(r.status, 503, "{}", r.text);
            assert!(started.elapsed() < Duration::from_secs(20), "no recovery within 20 s");
            // Polling recovery, bounded above.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!("both instances answered from the store again {:?} after Redis restarted", started.elapsed());
    // Nothing was spent or half-written during the outage: the refresh token still works,
    // exactly once.
    let r = cluster.refresh(&b, &kept_client, &kept_rt).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let kept_rt = r.json()["refresh_token"].as_str().unwrap().to_owned();
    // The next flow succeeds.
    cluster.client(&["--call", "whoami", "--call", "echo"], &[&a, &b]).await;

    // 5. Both instances restart (now approving automatically, for the races below).
    logs.push(a.stop().await);
    logs.push(b.stop().await);
    let a = cluster.instance("instance A (restarted)", &["--insecure-auto-approve"]).await;
    let b = cluster.instance("instance B (restarted)", &["--insecure-auto-approve"]).await;
    lb.set(vec![a.addr, b.addr]);
    for (name, instance) in [("A", &a), ("B", &b)] {
        let r = cluster.mcp_initialize(instance, &kept_at).await;
        assert_eq!(r.status, 200, "{name}: the signing keys survived: {}", r.text);
    }
    let r = cluster.refresh(&a, &kept_client, &kept_rt).await;
    assert_eq!(r.status, 200, "the client and its refresh token survived: {}", r.text);
    assert_eq!(cluster.refresh(&b, &revoked_client, &revoked_rt).await.error(), "invalid_grant", "revocation survived");

    // 6. Races across the two processes.
    let client = cluster.register(&a).await;
    for round in 0..5 {
        let (code, verifier) = cluster.code(&a, &client).await;
        let mut attempts = Vec::new();
        for i in 0..10 {
            let instance = if i % 2 == 0 { &a } else { &b };
            attempts.push(cluster.redeem(instance, &client, &code, &verifier));
        }
        let replies = futures_util::future::join_all(attempts).await;
        let ok = replies.iter().filter(|r| r.status == 200).count();
        assert_eq!(ok, 1, "round {round}: one code, ten redemptions at two instances: {}", replies[0].text);
        assert!(replies.iter().filter(|r| r.status != 200).all(|r| r.error() == "invalid_grant"));
    }
    for round in 0..5 {
        let (code, verifier) = cluster.code(&b, &client).await;
        let rt =
            cluster.redeem(&a, &client, &code, &verifier).await.json()["refresh_token"].as_str().unwrap().to_owned();
        let (ra, rb) = tokio::join!(cluster.refresh(&a, &client, &rt), cluster.refresh(&b, &client, &rt));
        let ok = [&ra, &rb].iter().filter(|r| r.status == 200).count();
        assert_eq!(ok, 1, "round {round}: one refresh token at both instances at once: {} / {}", ra.text, rb.text);
        assert!([&ra, &rb].iter().filter(|r| r.status != 200).all(|r| r.error() == "invalid_grant"));
    }

    // F21: a private_key_jwt assertion used at B, replayed at A.
    let pk_client = docs.url("/pk.json");
    let now = support::now();
    let header = json!({"alg": "ES256", "kid": client_key.kid, "typ": "JWT"});
    let assertion = client_key.sign(
        &header,
        &json!({
            "iss": pk_client, "sub": pk_client, "aud": origin, "iat": now, "exp": now + 120, "jti": random_hex(16),
        }),
    );
    cluster.secret("test assertions", &assertion);
    let with_assertion = [("client_assertion_type", JWT_BEARER), ("client_assertion", assertion.as_str())];
    let (code, verifier) = cluster.code(&a, &pk_client).await;
    let r = cluster.redeem_with(&b, &pk_client, &code, &verifier, &with_assertion).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (code, verifier) = cluster.code(&b, &pk_client).await;
    let r = cluster.redeem_with(&a, &pk_client, &code, &verifier, &with_assertion).await;
    assert_eq!(r.status, 401, "the assertion replayed at the other instance: {}", r.text);
    assert_eq!(r.error(), "invalid_client");
    assert_eq!(docs.hits("/pk.json"), 1, "one document fetch for both instances");

    // 7. Client secrets through the token endpoint: in the form, then in the Authorization header.
    let (post_client, post_secret) = cluster.register_as(&a, "client_secret_post").await;
    let post_secret = post_secret.expect("a client secret for client_secret_post");
    let (code, verifier) = cluster.code(&a, &post_client).await;
    let r = cluster.redeem_with(&b, &post_client, &code, &verifier, &[("client_secret", &post_secret)]).await;
    assert_eq!(r.status, 200, "client_secret_post: {}", r.text);
    let (basic_client, basic_secret) = cluster.register_as(&b, "client_secret_basic").await;
    let basic_secret = basic_secret.expect("a client secret for client_secret_basic");
    let (code, verifier) = cluster.code(&b, &basic_client).await;
    let form = serde_urlencoded::to_string([
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("code_verifier", &verifier),
        ("redirect_uri", REDIRECT_URI),
    ])
    .unwrap();
    let request = cluster
        .to(&a, http::Method::POST, "/token")
        .basic_auth(&basic_client, Some(&basic_secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form);
    let r = Reply::from(request).await;
    cluster.secrets_of(&r);
    assert_eq!(r.status, 200, "client_secret_basic: {}", r.text);

    logs.push(a.stop().await);
    logs.push(b.stop().await);
    redis.stop();

    // L01 on every instance's whole log, the restarted ones included; K11 on Redis's
    // append-only files (the commands as sent: no rewrite happens at this size, so no
    // compressed RDB base hides a value).
    let secrets = cluster.secrets.into_inner().unwrap();
    for kind in ["client run 0 cookies", "client run 0 formSecrets", "test cookies", "test assertions"] {
        assert!(secrets.count(kind) >= 1, "no {kind} recorded");
    }
    assert_eq!(secrets.count("test clientSecrets"), 2);
    assert_eq!(logs.len(), 4);
    for (name, log) in &logs {
        secrets.assert_not_in_trace_log(&format!("the log of {name}"), log);
    }
    let aof = read_tree(Path::new(&aof_dir));
    assert!(aof.len() > 4096, "no append-only file written ({} bytes)", aof.len());
    secrets.assert_not_in_bytes("Redis's append-only files", &aof);
    eprintln!("{} secrets checked in {} logs and the append-only files", secrets.len(), logs.len());
}

/// Every file under `dir`, concatenated.
fn read_tree(dir: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            bytes.extend(read_tree(&path));
        } else {
            bytes.extend(std::fs::read(&path).unwrap());
        }
    }
    bytes
}
