//! An authorization server in process, a cookie-keeping "browser", and helpers for the flow.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tower::ServiceExt;
use tower_mcp_auth::clock::ManualClock;
use tower_mcp_auth::server::{AuthorizationServer, AuthorizationServerBuilder, Endpoints};
use tower_mcp_auth::store::crypto::EncryptionKeys;
use tower_mcp_auth::store::{MemoryStore, Namespace, SqliteStore, Store, StoreError, StoreFuture};
use tower_mcp_auth::upstream::{
    AuthorizationRequest, DevLogin, Upstream, UpstreamError, UpstreamFuture, UpstreamGrant, UpstreamIdentity,
    UpstreamTokens,
};
use tower_mcp_auth::{ConfigError, ProtectedResource};

pub const ISSUER: &str = "https://auth.example.com";
pub const RESOURCE: &str = "https://auth.example.com/mcp";
pub const REDIRECT: &str = "http://127.0.0.1:53682/callback";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Sqlite,
    /// `RedisStore` on this test binary's private `redis-server`, under a key prefix of its own.
    #[cfg(feature = "redis")]
    Redis,
}

/// Every store a storage-dependent test runs on.
#[cfg(not(feature = "redis"))]
pub const BACKENDS: [Backend; 2] = [Backend::Memory, Backend::Sqlite];
/// Every store a storage-dependent test runs on.
#[cfg(feature = "redis")]
pub const BACKENDS: [Backend; 3] = [Backend::Memory, Backend::Sqlite, Backend::Redis];

/// The stores that survive a restart of the server process.
#[cfg(not(feature = "redis"))]
pub const PERSISTENT: [Backend; 1] = [Backend::Sqlite];
/// The stores that survive a restart of the server process.
#[cfg(feature = "redis")]
pub const PERSISTENT: [Backend; 2] = [Backend::Sqlite, Backend::Redis];

#[cfg(feature = "redis")]
type RedisHandle = tower_mcp_auth::store::RedisStore;
#[cfg(not(feature = "redis"))]
type RedisHandle = std::convert::Infallible;

/// A store of `backend` on fresh storage, or (`reuse`) on the storage of an earlier one.
async fn open_store(
    backend: Backend,
    clock: &Arc<ManualClock>,
    dir: Option<&tempfile::TempDir>,
    redis_prefix: Option<&str>,
) -> (Arc<dyn Store>, Option<MemoryStore>, Option<SqliteStore>, Option<RedisHandle>) {
    match backend {
        Backend::Memory => {
            let m = MemoryStore::with_clock(clock.clone());
            (Arc::new(m.clone()), Some(m), None, None)
        }
        Backend::Sqlite => {
            let dir = dir.expect("an SQLite env has a directory");
            let s = SqliteStore::open_with_clock(dir.path().join("as.db"), clock.clone()).unwrap();
            (Arc::new(s.clone()), None, Some(s), None)
        }
        #[cfg(feature = "redis")]
        Backend::Redis => {
            let server = super::redis::RedisServer::shared();
            let prefix = redis_prefix.expect("a Redis env has a key prefix");
            let r = tower_mcp_auth::store::RedisStore::connect_with_clock(&server.url(), clock.clone())
                .await
                .unwrap()
                .with_prefix(prefix);
            (Arc::new(r.clone()), None, None, Some(r))
        }
    }
}

pub struct Env {
    pub server: AuthorizationServer,
    pub svc: Endpoints,
    pub store: Arc<dyn Store>,
    pub memory: Option<MemoryStore>,
    pub sqlite: Option<SqliteStore>,
    pub redis: Option<RedisHandle>,
    redis_prefix: Option<String>,
    pub clock: Arc<ManualClock>,
    pub enc: EncryptionKeys,
    pub backend: Backend,
    pub dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env").field("backend", &self.backend).finish_non_exhaustive()
    }
}

fn redis_prefix(backend: Backend) -> Option<String> {
    match backend {
        #[cfg(feature = "redis")]
        Backend::Redis => Some(super::redis::prefix("authz")),
        _ => None,
    }
}

pub fn resource() -> ProtectedResource {
    ProtectedResource::builder(RESOURCE)
        .authorization_server(ISSUER)
        .scopes_supported(["mcp:read", "mcp:admin"])
        .challenge_scopes(["mcp:read"])
        .build()
        .unwrap()
}

pub struct Options {
    pub upstream: Arc<dyn Upstream>,
    pub configure: Box<dyn FnOnce(AuthorizationServerBuilder) -> AuthorizationServerBuilder>,
}

impl Default for Options {
    fn default() -> Self {
        Self { upstream: Arc::new(DevLogin::new("alice")), configure: Box::new(|b| b) }
    }
}

impl Env {
    pub async fn new(backend: Backend) -> Self {
        Self::with(backend, Options::default()).await
    }

    pub async fn with(backend: Backend, options: Options) -> Self {
        Self::with_clock(backend, options, Arc::new(ManualClock::new(super::now()))).await
    }

    /// With a clock made beforehand (to share it with a [`TestUpstream`]).
    pub async fn with_clock(backend: Backend, options: Options, clock: Arc<ManualClock>) -> Self {
        Self::assemble(backend, options, clock, None, EncryptionKeys::generate()).await
    }

    /// With chosen encryption keys (for rotation tests).
    pub async fn with_keys(backend: Backend, options: Options, clock: Arc<ManualClock>, enc: EncryptionKeys) -> Self {
        Self::assemble(backend, options, clock, None, enc).await
    }

    /// The server's store wrapped in a [`FaultyStore`] driven by the returned [`Faults`]; the
    /// at-rest helpers (`dump`, `entries`) still read the real store.
    pub async fn with_faults(backend: Backend, options: Options, clock: Arc<ManualClock>) -> (Self, Faults) {
        let faults = Faults::default();
        (Self::assemble(backend, options, clock, Some(faults.clone()), EncryptionKeys::generate()).await, faults)
    }

    async fn assemble(
        backend: Backend,
        options: Options,
        clock: Arc<ManualClock>,
        faults: Option<Faults>,
        enc: EncryptionKeys,
    ) -> Self {
        let dir = (backend == Backend::Sqlite).then(|| tempfile::tempdir().unwrap());
        let redis_prefix = redis_prefix(backend);
        let (raw, memory, sqlite, redis) = open_store(backend, &clock, dir.as_ref(), redis_prefix.as_deref()).await;
        let store: Arc<dyn Store> = match faults {
            Some(f) => Arc::new(FaultyStore::new(raw, f)),
            None => raw,
        };
        let server = build_server(store.clone(), enc.clone(), clock.clone(), options).await.unwrap();
        let svc = server.service();
        Self { server, svc, store, memory, sqlite, redis, redis_prefix, clock, enc, backend, dir }
    }

    /// A new server on the same storage, with `enc` as encryption keys: for SQLite a
    /// restart (the file is opened again); for Redis a new process's view (a new connection
    /// to the same server and key prefix); for the memory store a second instance sharing
    /// the store (a real restart of a `MemoryStore` loses everything). The old server and
    /// its store handle are dropped first.
    pub async fn reopen(self, options: Options, enc: EncryptionKeys) -> Result<Env, ConfigError> {
        let Env { server, svc, memory, sqlite, redis, redis_prefix, clock, backend, dir, store, enc: _ } = self;
        drop((server, svc, store, sqlite, redis));
        let (store, memory, sqlite, redis) = match memory {
            Some(m) => (Arc::new(m.clone()) as Arc<dyn Store>, Some(m), None, None),
            None => open_store(backend, &clock, dir.as_ref(), redis_prefix.as_deref()).await,
        };
        let server = build_server(store.clone(), enc.clone(), clock.clone(), options).await?;
        let svc = server.service();
        Ok(Env { server, svc, store, memory, sqlite, redis, redis_prefix, clock, enc, backend, dir })
    }

    /// A second instance beside this one: its own server (own caches, own key set loaded
    /// from the store) on the same storage, as another replica behind a load balancer. For
    /// the memory store both share one `MemoryStore`.
    pub async fn sibling(&self, options: Options) -> Result<Env, ConfigError> {
        self.sibling_with(options, None).await
    }

    /// [`sibling`](Self::sibling) whose store is wrapped in a [`FaultyStore`] driven by `faults`.
    pub async fn sibling_with(&self, options: Options, faults: Option<Faults>) -> Result<Env, ConfigError> {
        let (store, memory, sqlite, redis) = match &self.memory {
            Some(m) => (Arc::new(m.clone()) as Arc<dyn Store>, Some(m.clone()), None, None),
            None => open_store(self.backend, &self.clock, self.dir.as_ref(), self.redis_prefix.as_deref()).await,
        };
        let store: Arc<dyn Store> = match faults {
            Some(f) => Arc::new(FaultyStore::new(store, f)),
            None => store,
        };
        let server = build_server(store.clone(), self.enc.clone(), self.clock.clone(), options).await?;
        let svc = server.service();
        Ok(Env {
            server,
            svc,
            store,
            memory,
            sqlite,
            redis,
            redis_prefix: self.redis_prefix.clone(),
            clock: self.clock.clone(),
            enc: self.enc.clone(),
            backend: self.backend,
            // The directory stays with the first instance.
            dir: None,
        })
    }

    /// [`reopen`](Self::reopen) with the same keys.
    pub async fn restart(self, options: Options) -> Env {
        let enc = self.enc.clone();
        self.reopen(options, enc).await.unwrap()
    }

    pub async fn call(&self, req: Request<Full<Bytes>>) -> Reply {
        let res = self.svc.clone().oneshot(req).await.unwrap();
        let (parts, body) = res.into_parts();
        Reply { status: parts.status, headers: parts.headers, body: body.collect().await.unwrap().to_bytes() }
    }

    pub async fn get(&self, path_and_query: &str) -> Reply {
        self.call(Request::get(path_and_query).body(Full::default()).unwrap()).await
    }

    pub async fn post_form(&self, path: &str, form: &[(&str, &str)], headers: &[(&str, &str)]) -> Reply {
        let body = serde_urlencoded::to_string(form).unwrap();
        let mut b = Request::post(path).header("content-type", "application/x-www-form-urlencoded");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.call(b.body(Full::new(Bytes::from(body))).unwrap()).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        let req = Request::post(path)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        self.call(req).await
    }

    /// Registers a public client for `REDIRECT` that may refresh.
    pub async fn register(&self) -> String {
        self.register_with(json!({})).await["client_id"].as_str().unwrap().to_owned()
    }

    pub async fn register_with(&self, patch: Value) -> Value {
        let meta = super::with(
            json!({
                "client_name": "Test client",
                "redirect_uris": [REDIRECT],
                "grant_types": ["authorization_code", "refresh_token"],
                "token_endpoint_auth_method": "none",
            }),
            patch,
        );
        let r = self.post_json("/register", &meta).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        r.json()
    }

    /// Every live entry as (namespace, key, value), read from the real store.
    pub async fn entries(&self) -> Vec<(String, String, Vec<u8>)> {
        if let Some(m) = &self.memory {
            return m.dump().into_iter().map(|(ns, k, v)| (ns.as_str().to_owned(), k, v)).collect();
        }
        if let Some(s) = &self.sqlite {
            return s.dump().await.unwrap();
        }
        #[cfg(feature = "redis")]
        if let Some(r) = &self.redis {
            return r.dump().await.unwrap();
        }
        panic!("an env has a store to read")
    }

    /// Live entries in namespace `ns`.
    pub async fn count(&self, ns: &str) -> usize {
        self.entries().await.iter().filter(|(n, _, _)| n == ns).count()
    }

    /// Live entries per namespace (for "nothing stored" checks).
    pub async fn census(&self) -> std::collections::BTreeMap<String, usize> {
        let mut out = std::collections::BTreeMap::new();
        for (ns, _, _) in self.entries().await {
            *out.entry(ns).or_insert(0) += 1;
        }
        out
    }

    /// Registers a confidential client (`client_secret_basic` or `client_secret_post`) for
    /// `REDIRECT` that may refresh: (client_id, client_secret).
    pub async fn register_confidential(&self, method: &str) -> (String, String) {
        let r = self.register_with(json!({"token_endpoint_auth_method": method})).await;
        (r["client_id"].as_str().unwrap().to_owned(), r["client_secret"].as_str().unwrap().to_owned())
    }

    /// Every live stored value, for at-rest scans.
    pub async fn dump(&self) -> Vec<Vec<u8>> {
        self.entries().await.into_iter().map(|(_, k, v)| [k.into_bytes(), v].concat()).collect()
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn location(&self) -> Option<url::Url> {
        self.headers.get("location").and_then(|v| url::Url::parse(v.to_str().ok()?).ok())
    }
    pub fn location_param(&self, name: &str) -> Option<String> {
        self.location()?.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

/// PKCE pair.
pub fn pkce() -> (String, String) {
    let verifier = format!("v-{}-{}", super::rand_suffix(), super::rand_suffix()) + "abcdefghijklmnopqrstuvwxyz";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

pub fn authorize_query(client_id: &str, challenge: &str, state: &str, extra: &[(&str, &str)]) -> String {
    let mut params: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("state", state),
        ("scope", "mcp:read"),
        ("resource", RESOURCE),
    ];
    for (k, v) in extra {
        params.retain(|(p, _)| p != k);
        if !v.is_empty() {
            params.push((k, v));
        }
    }
    format!("/authorize?{}", serde_urlencoded::to_string(&params).unwrap())
}

/// A browser: keeps cookies, reads forms.
#[derive(Default, Clone)]
pub struct Browser {
    pub cookies: HashMap<String, String>,
    pub user_agent_fetch_site: Option<&'static str>,
}

impl Browser {
    fn cookie_header(&self) -> Option<String> {
        (!self.cookies.is_empty())
            .then(|| self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; "))
    }

    fn keep(&mut self, r: &Reply) {
        for v in r.headers.get_all("set-cookie") {
            if let Ok(c) = cookie::Cookie::parse(v.to_str().unwrap().to_owned()) {
                self.cookies.insert(c.name().to_owned(), c.value().to_owned());
            }
        }
    }

    pub async fn get(&mut self, env: &Env, path: &str) -> Reply {
        let mut b = Request::get(path);
        if let Some(c) = self.cookie_header() {
            b = b.header("cookie", c);
        }
        if let Some(s) = self.user_agent_fetch_site {
            b = b.header("sec-fetch-site", s);
        }
        let r = env.call(b.body(Full::default()).unwrap()).await;
        self.keep(&r);
        r
    }

    pub async fn post(&mut self, env: &Env, path: &str, form: &[(&str, &str)]) -> Reply {
        let mut headers: Vec<(&str, String)> = Vec::new();
        if let Some(c) = self.cookie_header() {
            headers.push(("cookie", c));
        }
        headers.push(("origin", "https://auth.example.com".into()));
        let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = env.post_form(path, form, &hs).await;
        self.keep(&r);
        r
    }
}

/// The hidden inputs of the page's form.
pub fn form_fields(html: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for input in html.split("<input").skip(1) {
        let attr = |name: &str| {
            let key = format!("{name}=\"");
            input.find(&key).map(|i| {
                let rest = &input[i + key.len()..];
                rest[..rest.find('"').unwrap_or(rest.len())].replace("&#x2b;", "+").replace("&#43;", "+")
            })
        };
        if let (Some(n), Some(v)) = (attr("name"), attr("value")) {
            out.insert(n, v);
        }
    }
    out
}

/// Runs authorize → consent (approve) → dev login → callback; returns the authorization
/// response redirect.
pub async fn approve(env: &Env, browser: &mut Browser, authorize_path: &str) -> Reply {
    let page = browser.get(env, authorize_path).await;
    assert_eq!(page.status, StatusCode::OK, "consent page expected: {} {:?}", page.text(), page.location());
    let f = form_fields(&page.text());
    let r = browser
        .post(env, "/consent", &[("request", &f["request"]), ("csrf", &f["csrf"]), ("decision", "approve")])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    follow_upstream(env, browser, r).await
}

/// From the redirect to the (development) upstream to the client's redirect URI.
pub async fn follow_upstream(env: &Env, browser: &mut Browser, r: Reply) -> Reply {
    let loc = r.location().expect("redirect");
    let path = format!("{}?{}", loc.path(), loc.query().unwrap_or(""));
    let login = browser.get(env, &path).await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text());
    let f = form_fields(&login.text());
    let r = browser
        .post(
            env,
            "/dev-login",
            &[("state", &f["state"]), ("nonce", &f["nonce"]), ("code_challenge", &f["code_challenge"])],
        )
        .await;
    let loc = r.location().expect("redirect to callback");
    browser.get(env, &format!("{}?{}", loc.path(), loc.query().unwrap_or(""))).await
}

/// A full flow up to the code: (client_id, code, verifier).
pub async fn code_for(env: &Env, browser: &mut Browser) -> (String, String, String) {
    let client = env.register().await;
    let (verifier, challenge) = pkce();
    let r = approve(env, browser, &authorize_query(&client, &challenge, "st-1", &[])).await;
    let code = r.location_param("code").expect("code");
    (client, code, verifier)
}

pub async fn redeem(env: &Env, client: &str, code: &str, verifier: &str) -> Reply {
    env.post_form(
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("code_verifier", verifier),
            ("client_id", client),
            ("redirect_uri", REDIRECT),
            ("resource", RESOURCE),
        ],
        &[],
    )
    .await
}

pub async fn refresh(env: &Env, client: &str, rt: &str) -> Reply {
    env.post_form("/token", &[("grant_type", "refresh_token"), ("refresh_token", rt), ("client_id", client)], &[]).await
}

pub fn minutes(m: u64) -> Duration {
    Duration::from_secs(m * 60)
}

async fn build_server(
    store: Arc<dyn Store>,
    enc: EncryptionKeys,
    clock: Arc<ManualClock>,
    options: Options,
) -> Result<AuthorizationServer, ConfigError> {
    let builder = AuthorizationServer::builder(ISSUER, resource())
        .store(store)
        .encryption_keys(enc)
        .upstream(options.upstream)
        .clock(clock)
        // Tests register and redeem far more than a minute's budget from one address; the
        // abuse limits are tested with limits set explicitly (tests/abuse_limits.rs).
        .rate_limits(tower_mcp_auth::server::RateLimits::unlimited())
        // A loaded test host can stall a healthy store operation past the production default
        // of 3 s; the deadline itself is tested with short explicit ones (authz_storage k12).
        .store_timeout(Duration::from_secs(15));
    (options.configure)(builder).build().await
}

/// Sends a request to a (cloned) endpoint service: for concurrent tasks.
pub async fn call_svc(svc: Endpoints, req: Request<Full<Bytes>>) -> Reply {
    let res = svc.oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    Reply { status: parts.status, headers: parts.headers, body: body.collect().await.unwrap().to_bytes() }
}

/// A form POST request.
pub fn form_request(path: &str, form: &[(&str, &str)], headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let body = serde_urlencoded::to_string(form).unwrap();
    let mut b = Request::post(path).header("content-type", "application/x-www-form-urlencoded");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from(body))).unwrap()
}

/// `Authorization: Basic` for a client (RFC 6749 §2.3.1: id and secret form-encoded first).
pub fn basic(id: &str, secret: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", enc(id), enc(secret))))
}

// ---------------------------------------------------------------------------------------
// Store faults

/// A store operation, for [`Faults`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Get,
    Put,
    InsertIfAbsent,
    Take,
    Delete,
    Cas,
}

#[derive(Clone, Debug)]
enum Action {
    Fail,
    Delay(Duration),
}

#[derive(Clone, Debug)]
struct Rule {
    op: Option<Op>,
    ns: Option<&'static str>,
    action: Action,
    /// How many more matching operations it applies to (`None`: until cleared).
    remaining: Option<usize>,
}

/// The faults a [`FaultyStore`] injects, changeable while the server runs.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    rules: Arc<std::sync::Mutex<Vec<Rule>>>,
    injected: Arc<std::sync::atomic::AtomicUsize>,
}

/// What every injected failure says: internal-looking detail that must never reach a client.
pub const FAULT_MESSAGE: &str = "sqlite error SQLITE_IOERR at /var/lib/secret-db/as.db on 10.9.8.7:5432";

impl Faults {
    fn add(&self, op: Option<Op>, ns: Option<&'static str>, action: Action, remaining: Option<usize>) {
        self.rules.lock().unwrap().push(Rule { op, ns, action, remaining });
    }

    /// Every operation fails (store down).
    pub fn down(&self) {
        self.add(None, None, Action::Fail, None);
    }

    /// Operations `op` (any if `None`) in namespace `ns` (any if `None`) fail until cleared.
    pub fn fail(&self, op: Option<Op>, ns: Option<&'static str>) {
        self.add(op, ns, Action::Fail, None);
    }

    /// The next `n` matching operations fail.
    pub fn fail_next(&self, op: Option<Op>, ns: Option<&'static str>, n: usize) {
        self.add(op, ns, Action::Fail, Some(n));
    }

    /// Matching operations are delayed by `by` (a slow store) until cleared.
    pub fn delay(&self, op: Option<Op>, ns: Option<&'static str>, by: Duration) {
        self.add(op, ns, Action::Delay(by), None);
    }

    /// The store recovers.
    pub fn clear(&self) {
        self.rules.lock().unwrap().clear();
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> usize {
        self.injected.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn action(&self, op: Op, ns: Namespace) -> Option<Action> {
        let mut rules = self.rules.lock().unwrap();
        let i = rules.iter().position(|r| r.op.is_none_or(|o| o == op) && r.ns.is_none_or(|n| n == ns.as_str()))?;
        let action = rules[i].action.clone();
        if let Some(left) = rules[i].remaining.as_mut() {
            *left -= 1;
            if *left == 0 {
                rules.remove(i);
            }
        }
        self.injected.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Some(action)
    }
}

/// A store that fails or stalls chosen operations of a real store.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    faults: Faults,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn Store>, faults: Faults) -> Self {
        Self { inner, faults }
    }

    /// Runs `inner` (called only if the operation is not failed: `MemoryStore` does its work
    /// when called, not when awaited) after the fault's delay, if any.
    fn run<'a, T: Send + 'a>(
        &'a self,
        op: Op,
        ns: Namespace,
        inner: impl FnOnce() -> StoreFuture<'a, T> + Send + 'a,
    ) -> StoreFuture<'a, T> {
        let action = self.faults.action(op, ns);
        Box::pin(async move {
            match action {
                Some(Action::Fail) => return Err(StoreError::unavailable(FAULT_MESSAGE)),
                Some(Action::Delay(d)) => tokio::time::sleep(d).await,
                None => {}
            }
            inner().await
        })
    }
}

impl Store for FaultyStore {
    fn get<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        self.run(Op::Get, ns, move || self.inner.get(ns, key))
    }
    fn put<'a>(&'a self, ns: Namespace, key: &'a str, value: Vec<u8>, ttl: Option<Duration>) -> StoreFuture<'a, ()> {
        self.run(Op::Put, ns, move || self.inner.put(ns, key, value, ttl))
    }
    fn insert_if_absent<'a>(
        &'a self,
        ns: Namespace,
        key: &'a str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, bool> {
        self.run(Op::InsertIfAbsent, ns, move || self.inner.insert_if_absent(ns, key, value, ttl))
    }
    fn take<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        self.run(Op::Take, ns, move || self.inner.take(ns, key))
    }
    fn delete<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, bool> {
        self.run(Op::Delete, ns, move || self.inner.delete(ns, key))
    }
    fn compare_and_swap<'a>(
        &'a self,
        ns: Namespace,
        key: &'a str,
        expected: &'a [u8],
        new: Option<Vec<u8>>,
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, bool> {
        self.run(Op::Cas, ns, move || self.inner.compare_and_swap(ns, key, expected, new, ttl))
    }
}

// ---------------------------------------------------------------------------------------
// A scriptable upstream provider

/// How an upstream operation should fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpFail {
    Unavailable,
    Refused,
    Invalid,
}

impl UpFail {
    fn error(self, message: &str) -> UpstreamError {
        match self {
            UpFail::Unavailable => UpstreamError::unavailable(message),
            UpFail::Refused => UpstreamError::refused(message),
            UpFail::Invalid => UpstreamError::invalid(message),
        }
    }
}

/// The knobs of a [`TestUpstream`].
#[derive(Clone, Debug)]
pub struct UpKnobs {
    /// Who signs in next.
    pub subject: String,
    /// Make the code exchange fail.
    pub exchange_fails: Option<UpFail>,
    /// Make refreshes fail.
    pub refresh_fails: Option<UpFail>,
    /// The message of failures (internal-looking; must never reach a client).
    pub error_message: String,
    /// What `response_issuer` answers; `Err` when it fails.
    pub issuer: Result<Option<(String, bool)>, ()>,
    /// Lifetime of issued access tokens (`None`: no expiry).
    pub expires_in: Option<i64>,
    /// Whether a refresh token is issued.
    pub refresh_token: bool,
}

/// An upstream identity provider in process: it "signs in" whoever the knobs say, issues
/// real-looking tokens (remembered in `minted` for leak scans), and counts its calls. Its
/// authorization URL is on a fake host: tests take the `state` from it and call the callback
/// themselves, with a code from [`TestUpstream::login`].
#[derive(Debug)]
pub struct TestUpstream {
    clock: Arc<ManualClock>,
    pub knobs: std::sync::Mutex<UpKnobs>,
    /// state → (challenge, nonce) of authorization URLs handed out.
    pending: std::sync::Mutex<HashMap<String, (String, String)>>,
    /// code → (challenge, nonce, subject).
    codes: std::sync::Mutex<HashMap<String, (String, String, String)>>,
    pub exchanges: std::sync::atomic::AtomicUsize,
    pub refreshes: std::sync::atomic::AtomicUsize,
    pub revoked: std::sync::Mutex<Vec<UpstreamTokens>>,
    /// Every token and code this provider handed out.
    pub minted: std::sync::Mutex<Vec<String>>,
    scopes: Vec<String>,
}

pub const UPSTREAM_HOST: &str = "idp.test.invalid";
pub const UPSTREAM_ISSUER: &str = "https://idp.test.invalid";

impl TestUpstream {
    pub fn new(clock: Arc<ManualClock>) -> Arc<Self> {
        Arc::new(Self {
            clock,
            knobs: std::sync::Mutex::new(UpKnobs {
                subject: "user-a".into(),
                exchange_fails: None,
                refresh_fails: None,
                error_message: FAULT_MESSAGE.into(),
                issuer: Ok(Some((UPSTREAM_ISSUER.into(), true))),
                expires_in: Some(3600),
                refresh_token: true,
            }),
            pending: Default::default(),
            codes: Default::default(),
            exchanges: Default::default(),
            refreshes: Default::default(),
            revoked: Default::default(),
            minted: Default::default(),
            scopes: vec!["openid".into(), "email".into()],
        })
    }

    pub fn set(&self, f: impl FnOnce(&mut UpKnobs)) {
        f(&mut self.knobs.lock().unwrap());
    }

    fn knobs(&self) -> UpKnobs {
        self.knobs.lock().unwrap().clone()
    }

    fn mint(&self, prefix: &str) -> String {
        let t = format!("{prefix}-{}{}", super::rand_suffix(), super::rand_suffix());
        self.minted.lock().unwrap().push(t.clone());
        t
    }

    /// The user signs in for the authorization URL that carried `state`: the code the
    /// provider would send back to the callback.
    pub fn login(&self, state: &str) -> String {
        let (challenge, nonce) =
            self.pending.lock().unwrap().remove(state).expect("an authorization URL for this state");
        let code = self.mint("up-code");
        self.codes.lock().unwrap().insert(code.clone(), (challenge, nonce, self.knobs().subject));
        code
    }

    pub fn exchange_count(&self) -> usize {
        self.exchanges.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn refresh_count(&self) -> usize {
        self.refreshes.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn tokens(&self, with_refresh: bool) -> UpstreamTokens {
        let k = self.knobs();
        let mut t = UpstreamTokens::default();
        t.access_token = Some(self.mint("up-at"));
        t.refresh_token = (with_refresh && k.refresh_token).then(|| self.mint("up-rt"));
        t.id_token = with_refresh.then(|| self.mint("up-id"));
        t.expires_at = k.expires_in.map(|e| tower_mcp_auth::clock::Clock::unix_time(&*self.clock) + e);
        t.scope = Some("openid email".into());
        t
    }
}

impl Upstream for TestUpstream {
    fn display_name(&self) -> &str {
        "Test IdP"
    }

    fn scopes(&self) -> &[String] {
        &self.scopes
    }

    fn authorization_url<'a>(&'a self, request: &'a AuthorizationRequest<'a>) -> UpstreamFuture<'a, url::Url> {
        Box::pin(async move {
            self.pending
                .lock()
                .unwrap()
                .insert(request.state.to_owned(), (request.code_challenge.to_owned(), request.nonce.to_owned()));
            let mut url = url::Url::parse(&format!("{UPSTREAM_ISSUER}/authorize")).unwrap();
            url.query_pairs_mut()
                .append_pair("client_id", "upstream-client")
                .append_pair("state", request.state)
                .append_pair("redirect_uri", request.redirect_uri)
                .append_pair("code_challenge", request.code_challenge)
                .append_pair("code_challenge_method", "S256")
                .append_pair("nonce", request.nonce);
            Ok(url)
        })
    }

    fn response_issuer<'a>(&'a self) -> UpstreamFuture<'a, Option<(String, bool)>> {
        let answer = self.knobs().issuer;
        Box::pin(async move { answer.map_err(|_| UpstreamError::unavailable("discovery failed")) })
    }

    fn exchange<'a>(
        &'a self,
        code: &'a str,
        code_verifier: &'a str,
        _redirect_uri: &'a str,
        nonce: &'a str,
    ) -> UpstreamFuture<'a, UpstreamGrant> {
        Box::pin(async move {
            self.exchanges.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let k = self.knobs();
            if let Some(f) = k.exchange_fails {
                return Err(f.error(&k.error_message));
            }
            let (challenge, sent_nonce, subject) =
                self.codes.lock().unwrap().remove(code).ok_or_else(|| UpstreamError::refused("unknown code"))?;
            let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(code_verifier));
            if computed != challenge || sent_nonce != nonce {
                return Err(UpstreamError::invalid("PKCE or nonce mismatch"));
            }
            let mut claims = serde_json::Map::new();
            claims.insert("sub".into(), json!(subject));
            claims.insert("email".into(), json!(format!("{subject}@example.com")));
            Ok(UpstreamGrant::new(UpstreamIdentity::new(subject, claims), self.tokens(true)))
        })
    }

    fn refresh<'a>(&'a self, tokens: &'a UpstreamTokens) -> UpstreamFuture<'a, UpstreamTokens> {
        Box::pin(async move {
            self.refreshes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let k = self.knobs();
            if let Some(f) = k.refresh_fails {
                return Err(f.error(&k.error_message));
            }
            if tokens.refresh_token.is_none() {
                return Err(UpstreamError::refused("no refresh token"));
            }
            Ok(self.tokens(false))
        })
    }

    fn revoke<'a>(&'a self, tokens: &'a UpstreamTokens) -> UpstreamFuture<'a, ()> {
        self.revoked.lock().unwrap().push(tokens.clone());
        Box::pin(async { Ok(()) })
    }
}

/// Options installing `upstream` (and `configure` on the builder).
pub fn upstream_options(
    upstream: &Arc<TestUpstream>,
    configure: impl FnOnce(AuthorizationServerBuilder) -> AuthorizationServerBuilder + 'static,
) -> Options {
    Options { upstream: upstream.clone(), configure: Box::new(configure) }
}

/// An env whose upstream is a fresh [`TestUpstream`] on the env's clock.
pub async fn env_with_upstream(
    backend: Backend,
    configure: impl FnOnce(AuthorizationServerBuilder) -> AuthorizationServerBuilder + 'static,
) -> (Env, Arc<TestUpstream>) {
    let clock = Arc::new(ManualClock::new(super::now()));
    let up = TestUpstream::new(clock.clone());
    let env = Env::with_clock(backend, upstream_options(&up, configure), clock).await;
    (env, up)
}

/// Authorize → consent page → approve: the redirect to the upstream provider (303).
pub async fn consent_and_approve(env: &Env, browser: &mut Browser, authorize_path: &str) -> Reply {
    let page = browser.get(env, authorize_path).await;
    assert_eq!(page.status, StatusCode::OK, "consent page expected: {} {:?}", page.text(), page.location());
    let f = form_fields(&page.text());
    let r = browser
        .post(env, "/consent", &[("request", &f["request"]), ("csrf", &f["csrf"]), ("decision", "approve")])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    r
}

/// The `state` the server sent to the upstream provider, from the redirect to it.
pub fn upstream_state(r: &Reply) -> String {
    let loc = r.location().expect("redirect to the upstream provider");
    assert_eq!(loc.host_str(), Some(UPSTREAM_HOST), "{loc}");
    r.location_param("state").expect("state")
}

/// The callback path for `code` and `state` (plus `extra` parameters).
pub fn callback_path(code: &str, state: &str, extra: &[(&str, &str)]) -> String {
    let mut params = vec![("code", code), ("state", state)];
    params.extend_from_slice(extra);
    format!("/callback?{}", serde_urlencoded::to_string(&params).unwrap())
}

/// Authorize → consent → upstream sign-in at `up` → callback: the authorization response.
pub async fn approve_upstream(env: &Env, up: &TestUpstream, browser: &mut Browser, authorize_path: &str) -> Reply {
    let r = consent_and_approve(env, browser, authorize_path).await;
    let state = upstream_state(&r);
    let code = up.login(&state);
    browser.get(env, &callback_path(&code, &state, &[("iss", UPSTREAM_ISSUER)])).await
}

/// A code for `client` through `up` (scope `mcp:read` unless `extra` says otherwise):
/// (code, verifier).
pub async fn upstream_code(
    env: &Env,
    up: &TestUpstream,
    browser: &mut Browser,
    client: &str,
    extra: &[(&str, &str)],
) -> (String, String) {
    let (verifier, challenge) = pkce();
    let r = approve_upstream(env, up, browser, &authorize_query(client, &challenge, "st-up", extra)).await;
    (r.location_param("code").unwrap_or_else(|| panic!("code expected: {:?}", r.location())), verifier)
}

/// A code for an existing `client` through the development login: (code, verifier).
pub async fn dev_code(env: &Env, browser: &mut Browser, client: &str, extra: &[(&str, &str)]) -> (String, String) {
    let (verifier, challenge) = pkce();
    let r = approve(env, browser, &authorize_query(client, &challenge, "st-dev", extra)).await;
    (r.location_param("code").unwrap_or_else(|| panic!("code expected: {:?}", r.location())), verifier)
}

/// Code → tokens for a public client: (access token, refresh token).
pub async fn tokens(env: &Env, client: &str, code: &str, verifier: &str) -> (String, String) {
    let r = redeem(env, client, code, verifier).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let j = r.json();
    (j["access_token"].as_str().unwrap().to_owned(), j["refresh_token"].as_str().unwrap_or_default().to_owned())
}

/// Verifies an issued access token with the server's verifier.
pub async fn verify(env: &Env, at: &str) -> Result<tower_mcp_auth::AccessToken, tower_mcp_auth::VerifyError> {
    use tower_mcp_auth::verify::TokenVerifier;
    env.server.verifier().verify(&tower_mcp_auth::BearerToken::new(at).unwrap()).await
}

impl Browser {
    /// A form POST with this browser's cookies and the given `Origin` / extra headers.
    pub async fn post_with(
        &mut self,
        env: &Env,
        path: &str,
        form: &[(&str, &str)],
        origin: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Reply {
        let mut headers: Vec<(&str, String)> = Vec::new();
        if let Some(c) = self.cookie_header() {
            headers.push(("cookie", c));
        }
        if let Some(o) = origin {
            headers.push(("origin", o.to_owned()));
        }
        for (k, v) in extra {
            headers.push((k, (*v).to_owned()));
        }
        let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = env.post_form(path, form, &hs).await;
        self.keep(&r);
        r
    }

    /// The browser-binding cookie's value.
    pub fn binding(&self) -> String {
        self.cookies.get(BROWSER_COOKIE).cloned().expect("the browser-binding cookie")
    }
}

pub const BROWSER_COOKIE: &str = "__Host-mcp-auth-browser";
