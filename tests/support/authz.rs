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
use tower_mcp_auth::ProtectedResource;
use tower_mcp_auth::clock::ManualClock;
use tower_mcp_auth::server::{AuthorizationServer, AuthorizationServerBuilder, Endpoints};
use tower_mcp_auth::store::crypto::EncryptionKeys;
use tower_mcp_auth::store::{MemoryStore, SqliteStore, Store};
use tower_mcp_auth::upstream::{DevLogin, Upstream};

pub const ISSUER: &str = "https://auth.example.com";
pub const RESOURCE: &str = "https://auth.example.com/mcp";
pub const REDIRECT: &str = "http://127.0.0.1:53682/callback";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Sqlite,
}

pub const BACKENDS: [Backend; 2] = [Backend::Memory, Backend::Sqlite];

pub struct Env {
    pub server: AuthorizationServer,
    pub svc: Endpoints,
    pub store: Arc<dyn Store>,
    pub memory: Option<MemoryStore>,
    pub sqlite: Option<SqliteStore>,
    pub clock: Arc<ManualClock>,
    pub enc: EncryptionKeys,
    pub backend: Backend,
    pub dir: Option<tempfile::TempDir>,
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
        let clock = Arc::new(ManualClock::new(super::now()));
        let enc = EncryptionKeys::generate();
        let (store, memory, sqlite, dir): (Arc<dyn Store>, _, _, _) = match backend {
            Backend::Memory => {
                let m = MemoryStore::with_clock(clock.clone());
                (Arc::new(m.clone()), Some(m), None, None)
            }
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let s = SqliteStore::open_with_clock(dir.path().join("as.db"), clock.clone()).unwrap();
                (Arc::new(s.clone()), None, Some(s), Some(dir))
            }
        };
        let builder = AuthorizationServer::builder(ISSUER, resource())
            .store(store.clone())
            .encryption_keys(enc.clone())
            .upstream(options.upstream)
            .clock(clock.clone());
        let server = (options.configure)(builder).build().await.unwrap();
        let svc = server.service();
        Self { server, svc, store, memory, sqlite, clock, enc, backend, dir }
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

    /// Every live stored value, for at-rest scans.
    pub async fn dump(&self) -> Vec<Vec<u8>> {
        match (&self.memory, &self.sqlite) {
            (Some(m), _) => m.dump().into_iter().map(|(_, k, v)| [k.into_bytes(), v].concat()).collect(),
            (_, Some(s)) => s.dump().await.unwrap().into_iter().map(|(_, k, v)| [k.into_bytes(), v].concat()).collect(),
            _ => Vec::new(),
        }
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
