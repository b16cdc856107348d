//! Client ID Metadata Documents at the authorization server: SECURITY-CATALOGUE group I (the
//! rows about the server's decisions; the fetcher's own rows are in tests/net.rs), H06, H07,
//! and F21–F29 (`private_key_jwt`). Documents are served over https by a loopback server whose
//! test CA the fetcher trusts; host names resolve through an injected resolver, so private
//! addresses are never dialled.

mod support;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{Value, json};
use support::TestKey;
use support::authz::{
    BACKENDS, Backend, Browser, Env, ISSUER, Options, PERSISTENT, REDIRECT, RESOURCE, Reply, approve, authorize_query,
    call_svc, form_fields, form_request, pkce,
};
use support::tls::{TestCa, TlsFront};
use tokio::net::TcpListener;
use tower_mcp_auth::cimd::CimdConfig;
use tower_mcp_auth::clock::Clock;
use tower_mcp_auth::net::{SafeFetcher, StaticResolver};

// ---------------------------------------------------------------------------------------
// A document server: https on loopback, answers chosen per path, hits counted.

#[derive(Clone)]
struct Answer {
    status: u16,
    content_type: &'static str,
    cache_control: Option<String>,
    location: Option<String>,
    body: Vec<u8>,
    /// Never answer (a stalled server).
    stall: bool,
}

impl Answer {
    fn json(v: &Value) -> Self {
        Self {
            status: 200,
            content_type: "application/json",
            cache_control: None,
            location: None,
            body: v.to_string().into_bytes(),
            stall: false,
        }
    }
}

#[derive(Default)]
struct SiteState {
    answers: Mutex<HashMap<String, Answer>>,
    hits: Mutex<HashMap<String, usize>>,
    total: AtomicUsize,
    /// Holds answers until released (single-flight test).
    gate: Mutex<Option<tokio::sync::watch::Receiver<bool>>>,
    first_hit: tokio::sync::Notify,
}

struct Site {
    state: Arc<SiteState>,
    front: TlsFront,
    _task: tokio::task::JoinHandle<()>,
}

async fn serve(State(state): State<Arc<SiteState>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    *state.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    state.total.fetch_add(1, Ordering::SeqCst);
    state.first_hit.notify_one();
    let gate = state.gate.lock().unwrap().clone();
    if let Some(mut gate) = gate {
        let _ = tokio::time::timeout(Duration::from_secs(10), gate.wait_for(|open| *open)).await;
    }
    let answer = state.answers.lock().unwrap().get(&path).cloned();
    let Some(a) = answer else { return StatusCode::NOT_FOUND.into_response() };
    if a.stall {
        std::future::pending::<()>().await;
    }
    let mut res = (StatusCode::from_u16(a.status).unwrap(), a.body).into_response();
    res.headers_mut().insert("content-type", a.content_type.parse().unwrap());
    if let Some(cc) = a.cache_control {
        res.headers_mut().insert("cache-control", cc.parse().unwrap());
    }
    if let Some(l) = a.location {
        res.headers_mut().insert("location", l.parse().unwrap());
    }
    res
}

impl Site {
    async fn start(ca: &TestCa) -> Self {
        let state = Arc::new(SiteState::default());
        let app = axum::Router::new().fallback(serve).with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let front = TlsFront::start(ca.leaf(&["client.test", "other.test", "keys.test", "evil.test"]), backend).await;
        Self { state, front, _task: task }
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.front.addr.port())
    }

    fn set(&self, path: &str, answer: Answer) {
        self.state.answers.lock().unwrap().insert(path.to_owned(), answer);
    }

    fn hits(&self, path: &str) -> usize {
        self.state.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    fn total(&self) -> usize {
        self.state.total.load(Ordering::SeqCst)
    }
}

/// A loopback listener that must never be connected to.
struct Trap {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Trap {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        tokio::spawn(async move {
            while listener.accept().await.is_ok() {
                h.fetch_add(1, Ordering::SeqCst);
            }
        });
        Self { addr, hits }
    }
}

const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn resolver() -> StaticResolver {
    StaticResolver::new()
        .with("client.test", [LOOPBACK])
        .with("other.test", [LOOPBACK])
        .with("keys.test", [LOOPBACK])
        .with("evil.test", ["10.0.0.1".parse().unwrap()])
        .with("meta.test", ["169.254.169.254".parse().unwrap()])
}

fn fetcher(ca: &TestCa) -> tower_mcp_auth::net::SafeFetcherBuilder {
    SafeFetcher::builder()
        .allow_loopback(true)
        .trust_root_certificate(ca.pem.clone())
        .resolver(Arc::new(resolver()))
        .timeout(Duration::from_secs(2))
}

struct World {
    env: Env,
    site: Site,
    _ca: TestCa,
}

async fn world_with(backend: Backend, configure: impl FnOnce(CimdConfig) -> CimdConfig + 'static) -> World {
    world_full(backend, |f| f, configure).await
}

async fn world_full(
    backend: Backend,
    tune: impl FnOnce(tower_mcp_auth::net::SafeFetcherBuilder) -> tower_mcp_auth::net::SafeFetcherBuilder,
    configure: impl FnOnce(CimdConfig) -> CimdConfig + 'static,
) -> World {
    let ca = TestCa::new();
    let site = Site::start(&ca).await;
    let config = configure(CimdConfig::new(tune(fetcher(&ca)).build().unwrap()));
    let env = Env::with(
        backend,
        Options { configure: Box::new(move |b| b.client_id_metadata_documents(config)), ..Options::default() },
    )
    .await;
    World { env, site, _ca: ca }
}

/// Server options with documents enabled and the default fetcher of these tests.
fn cimd_options(ca: &TestCa) -> Options {
    let config = CimdConfig::new(fetcher(ca).build().unwrap());
    Options { configure: Box::new(move |b| b.client_id_metadata_documents(config)), ..Options::default() }
}

async fn world(backend: Backend) -> World {
    world_with(backend, |c| c).await
}

/// A valid document for `url` with the test redirect URI.
fn document(url: &str) -> Value {
    json!({
        "client_id": url,
        "client_name": "Example MCP Client",
        "redirect_uris": [REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    })
}

fn patched(url: &str, patch: Value) -> Value {
    support::with(document(url), patch)
}

impl World {
    /// A second instance on the same store, with the same document policy and fetcher
    /// settings but its own in-process caches and rate limits.
    async fn sibling(&self) -> Env {
        self.env.sibling(cimd_options(&self._ca)).await.unwrap()
    }

    /// Publishes a valid document at `path` on client.test; returns its client ID.
    fn publish(&self, path: &str) -> String {
        let url = self.site.url("client.test", path);
        self.site.set(path, Answer::json(&document(&url)));
        url
    }

    async fn authorize(&self, browser: &mut Browser, client_id: &str) -> Reply {
        let (_, challenge) = pkce();
        browser.get(&self.env, &authorize_query(client_id, &challenge, "st", &[])).await
    }

    /// authorize → consent → login → code: (code, verifier).
    async fn code(&self, client_id: &str) -> (String, String) {
        let (verifier, challenge) = pkce();
        let mut browser = Browser::default();
        let r = approve(&self.env, &mut browser, &authorize_query(client_id, &challenge, "st", &[])).await;
        (r.location_param("code").expect("code"), verifier)
    }
}

/// The generic answer to an unusable client ID: an error page, never a redirect.
fn assert_refused_page(r: &Reply) {
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(r.headers.get("location").is_none());
    assert!(r.text().contains("could not be verified"), "{}", r.text());
}

/// An answer for a document URL.
type MakeAnswer = Box<dyn Fn(&str) -> Answer>;

fn assert_invalid_client(r: &Reply) {
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    assert_eq!(r.json()["error"], "invalid_client", "{}", r.text());
}

// ---------------------------------------------------------------------------------------
// Metadata and the whole flow

#[tokio::test]
async fn metadata_advertises_documents_and_private_key_jwt() {
    let w = world(Backend::Memory).await;
    let m = w.env.get("/.well-known/oauth-authorization-server").await.json();
    assert_eq!(m["client_id_metadata_document_supported"], true);
    assert!(m["token_endpoint_auth_methods_supported"].as_array().unwrap().contains(&json!("private_key_jwt")));
    let algs = m["token_endpoint_auth_signing_alg_values_supported"].as_array().unwrap();
    assert!(algs.contains(&json!("ES256")) && !algs.iter().any(|a| a.as_str().unwrap().starts_with("HS")));

    let plain = Env::new(Backend::Memory).await;
    let m = plain.get("/.well-known/oauth-authorization-server").await.json();
    assert_eq!(m["client_id_metadata_document_supported"], false);
    assert!(!m["token_endpoint_auth_methods_supported"].as_array().unwrap().contains(&json!("private_key_jwt")));
}

#[tokio::test]
async fn url_client_id_completes_the_flow_on_every_store() {
    for backend in BACKENDS {
        let w = world(backend).await;
        let client_id = w.publish("/app.json");
        let (code, verifier) = w.code(&client_id).await;
        let r = support::authz::redeem(&w.env, &client_id, &code, &verifier).await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.text());
        let tokens = r.json();
        let at = support::authz::verify(&w.env, tokens["access_token"].as_str().unwrap()).await.unwrap();
        assert_eq!(at.client_id(), Some(client_id.as_str()), "{backend:?}");
        let rt = tokens["refresh_token"].as_str().unwrap();
        let r = support::authz::refresh(&w.env, &client_id, rt).await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.text());
        // One fetch for the whole flow (authorize, token, refresh): the cache answered the rest.
        assert_eq!(w.site.hits("/app.json"), 1, "{backend:?}");
        // Nothing registered: the document is only cached.
        assert_eq!(w.env.count("clients").await, 0, "{backend:?}");
        assert_eq!(w.env.count("cimd_documents").await, 1, "{backend:?}");
    }
}

#[tokio::test]
async fn without_cimd_url_client_ids_are_unknown_and_not_fetched() {
    let ca = TestCa::new();
    let site = Site::start(&ca).await;
    let env = Env::new(Backend::Memory).await;
    let url = site.url("client.test", "/app.json");
    site.set("/app.json", Answer::json(&document(&url)));
    let (_, challenge) = pkce();
    let r = env.get(&authorize_query(&url, &challenge, "st", &[])).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.headers.get("location").is_none());
    assert_eq!(site.total(), 0);
}

// ---------------------------------------------------------------------------------------
// Group I

#[tokio::test]
async fn i01_http_client_id_is_refused_without_a_fetch() {
    let w = world(Backend::Memory).await;
    w.publish("/client.json");
    let http_id = format!("http://client.test:{}/client.json", w.site.front.addr.port());
    let r = w.authorize(&mut Browser::default(), &http_id).await;
    assert_refused_page(&r);
    assert_eq!(w.site.total(), 0);
}

#[tokio::test]
async fn i02_malformed_client_ids_are_refused_before_any_io() {
    let w = world(Backend::Memory).await;
    w.publish("/c");
    let port = w.site.front.addr.port();
    let bad = [
        format!("https://client.test:{port}"),
        format!("https://client.test:{port}/"),
        format!("https://client.test:{port}/c#frag"),
        format!("https://u:p@client.test:{port}/c"),
        format!("https://client.test:{port}/./c"),
        format!("https://client.test:{port}/x/../c"),
        format!("https://client.test:{port}/x/%2e%2e/c"),
        format!("https://client.test:{port}/c?q=1"),
        format!("https://CLIENT.test:{port}/c"),
        format!("https://client.test:{port}\\c"),
        format!("https://clíent.test:{port}/c"),
        "https://client.test:443/c".to_owned(),
    ];
    for id in &bad {
        let r = w.authorize(&mut Browser::default(), id).await;
        assert_refused_page(&r);
    }
    assert_eq!(w.site.total(), 0, "no fetch for a malformed client ID");
}

#[tokio::test]
async fn i03_i17_private_addresses_are_never_dialled() {
    let trap = Trap::start().await;
    let ca = TestCa::new();
    // trap.test resolves to loopback, but this server does not allow loopback fetches.
    let resolver = StaticResolver::new().with("trap.test", [LOOPBACK]).with("evil.test", ["10.0.0.1".parse().unwrap()]);
    let fetcher = SafeFetcher::builder()
        .trust_root_certificate(ca.pem.clone())
        .resolver(Arc::new(resolver))
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let env = Env::with(
        Backend::Memory,
        Options {
            configure: Box::new(move |b| b.client_id_metadata_documents(CimdConfig::new(fetcher))),
            ..Options::default()
        },
    )
    .await;
    for id in [format!("https://trap.test:{}/client.json", trap.addr.port()), "https://evil.test/client.json".into()] {
        let (_, challenge) = pkce();
        let r = env.get(&authorize_query(&id, &challenge, "st", &[])).await;
        assert_refused_page(&r);
    }
    assert_eq!(trap.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn i17_f26_jwks_uri_private_or_stalled_fails_client_authentication() {
    let w = world(Backend::Memory).await;
    let key = TestKey::es256();
    let url = w.site.url("client.test", "/pk.json");
    let doc = patched(
        &url,
        json!({ "token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "https://evil.test/jwks.json" }),
    );
    w.site.set("/pk.json", Answer::json(&doc));
    let (code, verifier) = w.code(&url).await;
    let r = token_with_assertion(&w.env, &code, &verifier, &assertion(&w.env, &key, &url, json!({}))).await;
    assert_invalid_client(&r);

    // F26: a key set URL that stalls: the fetch deadline (2 s here) ends it, then 401.
    let slow = w.site.url("client.test", "/slow-pk.json");
    let jwks_uri = w.site.url("keys.test", "/stalled-jwks.json");
    w.site.set("/stalled-jwks.json", Answer { stall: true, ..Answer::json(&TestKey::jwks(&[&key])) });
    w.site.set(
        "/slow-pk.json",
        Answer::json(&patched(&slow, json!({ "token_endpoint_auth_method": "private_key_jwt", "jwks_uri": jwks_uri }))),
    );
    let (code, verifier) = w.code(&slow).await;
    let begun = std::time::Instant::now();
    let r = token_with_assertion(&w.env, &code, &verifier, &assertion(&w.env, &key, &slow, json!({}))).await;
    assert_invalid_client(&r);
    assert!(begun.elapsed() < Duration::from_secs(5), "{:?}", begun.elapsed());
}

#[tokio::test]
async fn i07_redirects_are_not_followed() {
    let w = world(Backend::Memory).await;
    let target = w.publish("/real.json");
    for status in [301, 302, 307, 308] {
        let path = format!("/moved-{status}.json");
        let id = w.site.url("client.test", &path);
        w.site.set(&path, Answer { status, location: Some(target.clone()), ..Answer::json(&document(&id)) });
        assert_refused_page(&w.authorize(&mut Browser::default(), &id).await);
        assert_eq!(w.site.hits(&path), 1);
    }
    assert_eq!(w.site.hits("/real.json"), 0);
}

#[tokio::test]
async fn i08_i11_i12_i13_i14_bad_answers_are_refused_and_never_cached() {
    for backend in BACKENDS {
        let w = world_full(backend, |f| f.per_host_per_minute(1000), |c| c).await;
        let mut cases: Vec<(&str, MakeAnswer)> = vec![
            ("304", Box::new(|u| Answer { status: 304, ..Answer::json(&document(u)) })),
            ("404", Box::new(|u| Answer { status: 404, ..Answer::json(&document(u)) })),
            ("500", Box::new(|u| Answer { status: 500, ..Answer::json(&document(u)) })),
            ("html", Box::new(|u| Answer { content_type: "text/html", ..Answer::json(&document(u)) })),
            ("big", Box::new(|u| Answer::json(&patched(u, json!({ "padding": "x".repeat(6000) }))))),
            ("slash", Box::new(|u| Answer::json(&patched(u, json!({ "client_id": format!("{u}/") }))))),
            ("case", Box::new(|u| Answer::json(&patched(u, json!({ "client_id": u.replace("client", "CLIENT") }))))),
            ("no-id", Box::new(|u| Answer::json(&patched(u, json!({ "client_id": null }))))),
            ("json", Box::new(|_| Answer { body: b"{\"client_id\":".to_vec(), ..Answer::json(&json!({})) })),
            (
                "dup",
                Box::new(|u| {
                    Answer {
                    body: format!(
                        r#"{{"client_id":"https://evil.test/x","client_id":"{u}","client_name":"a","redirect_uris":["{REDIRECT}"]}}"#
                    )
                    .into_bytes(),
                    ..Answer::json(&json!({}))
                }
                }),
            ),
            ("array", Box::new(|u| Answer::json(&json!([document(u)])))),
            (
                "bom",
                Box::new(|u| Answer {
                    body: [&b"\xEF\xBB\xBF"[..], document(u).to_string().as_bytes()].concat(),
                    ..Answer::json(&json!({}))
                }),
            ),
            (
                "nesting",
                Box::new(|u| Answer {
                    body: format!(r#"{{"client_id":"{u}","x":{}1{}}}"#, "[".repeat(3000), "]".repeat(3000))
                        .into_bytes(),
                    ..Answer::json(&json!({}))
                }),
            ),
            (
                "basic",
                Box::new(|u| Answer::json(&patched(u, json!({ "token_endpoint_auth_method": "client_secret_basic" })))),
            ),
            ("secret", Box::new(|u| Answer::json(&patched(u, json!({ "client_secret": "s" }))))),
            ("no-redirects", Box::new(|u| Answer::json(&patched(u, json!({ "redirect_uris": null }))))),
            ("no-name", Box::new(|u| Answer::json(&patched(u, json!({ "client_name": null }))))),
        ];
        for (name, answer) in cases.drain(..) {
            let path = format!("/{name}.json");
            let id = w.site.url("client.test", &path);
            w.site.set(&path, answer(&id));
            assert_refused_page(&w.authorize(&mut Browser::default(), &id).await);
            assert_eq!(w.env.count("cimd_documents").await, 0, "{backend:?} {name}: cached");
            // Fixed: the next attempt fetches again and succeeds.
            w.site.set(&path, Answer::json(&document(&id)));
            let r = w.authorize(&mut Browser::default(), &id).await;
            assert_eq!(r.status, StatusCode::OK, "{backend:?} {name}: {}", r.text());
            assert_eq!(w.site.hits(&path), 2, "{backend:?} {name}");
            // Start clean for the next case.
            w.env.clock.advance(Duration::from_secs(25 * 3600));
        }
    }
}

#[tokio::test]
async fn i15_redirect_uri_not_in_the_document_gets_an_error_page() {
    let w = world(Backend::Memory).await;
    let id = w.publish("/app.json");
    let (_, challenge) = pkce();
    for other in ["https://evil.example/cb", "http://127.0.0.1:53682/other", "http://localhost:53682/callback"] {
        let r =
            Browser::default().get(&w.env, &authorize_query(&id, &challenge, "st", &[("redirect_uri", other)])).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{other}");
        assert!(r.headers.get("location").is_none(), "{other}");
    }
    // The document's own redirect URI on another loopback port is fine (RFC 8252).
    let r = Browser::default()
        .get(&w.env, &authorize_query(&id, &challenge, "st", &[("redirect_uri", "http://127.0.0.1:9/callback")]))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test]
async fn i16_changed_document_keeps_the_code_binding_and_asks_consent_again() {
    // A short cache lifetime, so the document changes while the code is still valid.
    let ten = Duration::from_secs(10);
    let w = world_with(Backend::Memory, move |c| c.cache_lifetime(ten, ten, ten)).await;
    let id = w.publish("/app.json");
    let mut browser = Browser { user_agent_fetch_site: Some("none"), ..Browser::default() };
    let (verifier, challenge) = pkce();
    let r = approve(&w.env, &mut browser, &authorize_query(&id, &challenge, "st", &[])).await;
    let code = r.location_param("code").unwrap();

    // Remembered consent: the same request skips the consent page.
    let (_, c2) = pkce();
    let again = browser.get(&w.env, &authorize_query(&id, &c2, "st", &[])).await;
    assert!(again.status.is_redirection(), "consent should be remembered: {}", again.text());

    // The document changes (a new redirect URI added) and the cache expires.
    w.site.set(
        "/app.json",
        Answer::json(&patched(&id, json!({ "redirect_uris": [REDIRECT, "https://app.example/cb"] }))),
    );
    w.env.clock.advance(Duration::from_secs(11));

    // The code still redeems with the redirect URI it was bound to.
    let r = support::authz::redeem(&w.env, &id, &code, &verifier).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(w.site.hits("/app.json"), 2);

    // The next authorization asks for consent again.
    let (_, c3) = pkce();
    let page = browser.get(&w.env, &authorize_query(&id, &c3, "st", &[])).await;
    assert_eq!(page.status, StatusCode::OK, "consent page expected: {:?}", page.location());
    assert!(form_fields(&page.text()).contains_key("csrf"));
}

#[tokio::test]
async fn i18_cache_lifetime_is_clamped() {
    for backend in BACKENDS {
        let w = world(backend).await;
        let long = w.publish("/long.json");
        let short = w.publish("/short.json");
        let mut a = Answer::json(&document(&long));
        a.cache_control = Some("public, max-age=31536000".into());
        w.site.set("/long.json", a);
        let mut a = Answer::json(&document(&short));
        a.cache_control = Some("no-store".into());
        w.site.set("/short.json", a);
        let mut b = Browser::default();
        for id in [&long, &short] {
            assert_eq!(w.authorize(&mut b, id).await.status, StatusCode::OK);
        }
        // no-store: kept 60 s (the floor), not 0.
        w.env.clock.advance(Duration::from_secs(59));
        w.authorize(&mut b, &short).await;
        assert_eq!(w.site.hits("/short.json"), 1, "{backend:?}");
        w.env.clock.advance(Duration::from_secs(2));
        w.authorize(&mut b, &short).await;
        assert_eq!(w.site.hits("/short.json"), 2, "{backend:?}");
        // A year: kept 24 h (the ceiling).
        w.env.clock.advance(Duration::from_secs(24 * 3600 - 61 - 10));
        w.authorize(&mut b, &long).await;
        assert_eq!(w.site.hits("/long.json"), 1, "{backend:?}");
        w.env.clock.advance(Duration::from_secs(11));
        w.authorize(&mut b, &long).await;
        assert_eq!(w.site.hits("/long.json"), 2, "{backend:?}");
    }
}

#[tokio::test]
async fn i19_fetches_per_host_are_rate_limited() {
    let w = world_full(Backend::Memory, |f| f.per_host_per_minute(3), |c| c).await;
    for i in 0..8 {
        let id = w.publish(&format!("/c{i}.json"));
        w.authorize(&mut Browser::default(), &id).await;
    }
    assert_eq!(w.site.total(), 3, "at most the per-host budget reaches the victim host");
}

/// The server's own fetch budget (`RateLimits::cimd_fetch`), before the fetcher's per-host one:
/// per document URL from anywhere, and per asking address. Only real fetches count (failures
/// are never cached, so each request here fetches).
#[tokio::test]
async fn i19_document_fetches_per_url_and_per_asking_address_are_limited() {
    use tower_mcp_auth::server::{Limit, PeerAddr, RateLimits};
    let ca = TestCa::new();
    let site = Site::start(&ca).await;
    let config = CimdConfig::new(fetcher(&ca).per_host_per_minute(1000).build().unwrap());
    let env = Env::with(
        Backend::Memory,
        Options {
            configure: Box::new(move |b| {
                b.client_id_metadata_documents(config)
                    .rate_limits(RateLimits::default().cimd_fetch(Limit::per_minute(3, 2)))
            }),
            ..Options::default()
        },
    )
    .await;
    let broken = |path: &str| {
        let url = site.url("client.test", path);
        site.set(path, Answer { status: 500, ..Answer::json(&document(&url)) });
        url
    };
    let (one, two, three) = (broken("/one.json"), broken("/two.json"), broken("/three.json"));
    let from = |ip: [u8; 4], client_id: &str| {
        let (_, challenge) = pkce();
        let mut req = http::Request::get(authorize_query(client_id, &challenge, "st", &[]))
            .body(http_body_util::Full::default())
            .unwrap();
        req.extensions_mut().insert(PeerAddr(IpAddr::from(ip)));
        req
    };
    let limited = |r: &Reply, retry_after: &str| {
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
        assert_eq!(r.header("retry-after"), retry_after);
    };
    // One URL: two fetches a minute, then 429 (the next in 30 s) without a fetch.
    for _ in 0..2 {
        assert_refused_page(&env.call(from([192, 0, 2, 1], &one)).await);
    }
    limited(&env.call(from([192, 0, 2, 1], &one)).await, "30");
    assert_eq!(site.hits("/one.json"), 2);
    // One asking address: three fetches a minute, whatever the URL.
    assert_refused_page(&env.call(from([192, 0, 2, 1], &two)).await);
    limited(&env.call(from([192, 0, 2, 1], &three)).await, "20");
    assert_eq!(site.hits("/three.json"), 0);
    // Another address may still have documents fetched.
    assert_refused_page(&env.call(from([192, 0, 2, 2], &three)).await);
    assert_eq!(site.total(), 4);
}

#[tokio::test]
async fn i20_every_failure_looks_the_same_from_outside() {
    let w =
        world_full(Backend::Memory, |f| f.timeout(Duration::from_millis(400)), |c| c.deny_hosts(["other.test"])).await;
    let port = w.site.front.addr.port();
    let stall = w.site.url("client.test", "/stall.json");
    w.site.set("/stall.json", Answer { stall: true, ..Answer::json(&document(&stall)) });
    let not_found = w.site.url("client.test", "/missing.json");
    let bad_json = w.site.url("client.test", "/bad.json");
    w.site.set("/bad.json", Answer { body: b"nope".to_vec(), ..Answer::json(&json!({})) });
    let ids = [
        format!("https://other.test:{port}/app.json"), // refused by policy
        stall,                                         // timeout
        not_found,                                     // non-200
        bad_json,                                      // bad JSON
        "https://evil.test/app.json".to_owned(),       // private IP
        format!("https://meta.test:{port}/latest"),    // link-local
    ];
    let mut seen = Vec::new();
    for id in &ids {
        let r = w.authorize(&mut Browser::default(), id).await;
        assert_refused_page(&r);
        seen.push((r.status, r.body.clone()));
    }
    assert!(seen.windows(2).all(|p| p[0] == p[1]), "the answers differ");
}

#[tokio::test]
async fn i22_localhost_only_clients_get_a_warning_with_the_domain_and_redirect_host() {
    let w = world(Backend::Memory).await;
    let id = w.publish("/app.json");
    let page = w.authorize(&mut Browser::default(), &id).await.text();
    assert!(page.contains("Published by <strong>client.test</strong>"), "{page}");
    assert!(page.contains("only returns to this computer"), "{page}");
    assert!(page.contains("127.0.0.1"), "{page}");

    let web = w.site.url("client.test", "/web.json");
    w.site.set("/web.json", Answer::json(&patched(&web, json!({ "redirect_uris": ["https://app.example/cb"] }))));
    let (_, challenge) = pkce();
    let page = Browser::default()
        .get(&w.env, &authorize_query(&web, &challenge, "st", &[("redirect_uri", "https://app.example/cb")]))
        .await
        .text();
    assert!(!page.contains("only returns to this computer"), "{page}");
    assert!(page.contains("app.example"), "{page}");
}

#[tokio::test]
async fn i23_concurrent_authorizations_fetch_once() {
    for backend in BACKENDS {
        let w = world(backend).await;
        let id = w.publish("/app.json");
        let (tx, rx) = tokio::sync::watch::channel(false);
        *w.site.state.gate.lock().unwrap() = Some(rx);
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let svc = w.env.svc.clone();
            let (_, challenge) = pkce();
            let path = authorize_query(&id, &challenge, "st", &[]);
            tasks.push(tokio::spawn(async move {
                call_svc(svc, http::Request::get(path).body(Default::default()).unwrap()).await
            }));
        }
        // The first fetch is held at the server while the other requests arrive.
        tokio::time::timeout(Duration::from_secs(10), w.site.state.first_hit.notified()).await.unwrap();
        for _ in 0..200 {
            tokio::task::yield_now().await;
        }
        tx.send(true).unwrap();
        for t in tasks {
            let r = tokio::time::timeout(Duration::from_secs(10), t).await.unwrap().unwrap();
            assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.text());
        }
        assert_eq!(w.site.hits("/app.json"), 1, "{backend:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Trust policy, H06, H07

#[tokio::test]
async fn trust_policy_deny_only_allowed_and_auto_approve() {
    let w = world_with(Backend::Memory, |c| c.deny_hosts(["*.test"]).allow_hosts(["client.test"])).await;
    let id = w.publish("/app.json");
    let port = w.site.front.addr.port();
    // Denied (by the wildcard; the deny list wins over the allow list).
    assert_refused_page(&w.authorize(&mut Browser::default(), &id).await);
    assert_refused_page(&w.authorize(&mut Browser::default(), &format!("https://other.test:{port}/a.json")).await);
    assert_eq!(w.site.total(), 0);

    let w = world_with(Backend::Memory, |c| c.allow_hosts(["client.test"]).only_allowed_hosts(true)).await;
    let id = w.publish("/app.json");
    let other = w.site.url("other.test", "/app.json");
    assert_refused_page(&w.authorize(&mut Browser::default(), &other).await);
    let page = w.authorize(&mut Browser::default(), &id).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text().contains("a domain this server trusts"), "{}", page.text());
    assert_eq!(w.site.total(), 1);

    let w = world_with(Backend::Memory, |c| c.allow_hosts(["client.test"]).auto_approve_allowed_hosts(true)).await;
    let id = w.publish("/app.json");
    let r = w.authorize(&mut Browser::default(), &id).await;
    assert!(r.status.is_redirection(), "no consent page for an auto-approved host: {}", r.status);
    assert!(r.location().unwrap().path().ends_with("/dev-login"), "{:?}", r.location());
    let other = w.site.url("other.test", "/app.json");
    w.site.set("/app.json", Answer::json(&document(&id)));
    let r = w.authorize(&mut Browser::default(), &other).await;
    // other.test's document is at the same path but names client.test: refused (I11).
    assert_refused_page(&r);
}

#[tokio::test]
async fn h06_h07_document_name_is_escaped_and_logo_never_fetched() {
    let trap = Trap::start().await;
    let w = world(Backend::Memory).await;
    let id = w.site.url("client.test", "/app.json");
    let logo = format!("https://keys.test:{}/logo.png", trap.addr.port());
    let doc = patched(
        &id,
        json!({ "client_name": "<script>alert(1)</script>\u{202E}gpj.exe", "logo_uri": logo, "client_uri": logo }),
    );
    w.site.set("/app.json", Answer::json(&doc));
    let page = w.authorize(&mut Browser::default(), &id).await.text();
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(page.contains("&#60;script&#62;"), "{page}");
    assert!(page.contains("<bdi>"), "{page}");
    assert!(page.contains("client.test"), "{page}");
    assert!(!page.contains("logo.png"), "the logo is never hot-linked");
    assert_eq!(trap.hits.load(Ordering::SeqCst), 0);
}

// ---------------------------------------------------------------------------------------
// private_key_jwt (F21–F29)

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn assertion(env: &Env, key: &TestKey, client_id: &str, patch: Value) -> String {
    let now = env.clock.unix_time();
    let claims = support::with(
        json!({
            "iss": client_id,
            "sub": client_id,
            "aud": ISSUER,
            "iat": now,
            "exp": now + 120,
            "jti": support::rand_suffix(),
        }),
        patch,
    );
    let header = json!({ "alg": support::keys::alg_name(key.alg), "kid": key.kid, "typ": "JWT" });
    key.sign(&header, &claims)
}

async fn token_with_assertion(env: &Env, code: &str, verifier: &str, assertion: &str) -> Reply {
    env.post_form(
        "/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("code_verifier", verifier),
            ("redirect_uri", REDIRECT),
            ("resource", RESOURCE),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
        ],
        &[],
    )
    .await
}

/// A `private_key_jwt` client with inline keys: its client ID.
fn publish_pkjwt(w: &World, path: &str, keys: &[&TestKey]) -> String {
    let id = w.site.url("client.test", path);
    let doc = patched(&id, json!({ "token_endpoint_auth_method": "private_key_jwt", "jwks": TestKey::jwks(keys) }));
    w.site.set(path, Answer::json(&doc));
    id
}

#[tokio::test]
async fn f21_assertions_are_single_use() {
    for backend in BACKENDS {
        let w = world(backend).await;
        let key = TestKey::es256();
        let id = publish_pkjwt(&w, "/pk.json", &[&key]);
        let a = assertion(&w.env, &key, &id, json!({}));
        let (code, verifier) = w.code(&id).await;
        let r = token_with_assertion(&w.env, &code, &verifier, &a).await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.text());
        // Replayed with a fresh code: refused.
        let (code, verifier) = w.code(&id).await;
        assert_invalid_client(&token_with_assertion(&w.env, &code, &verifier, &a).await);

        // 10 concurrent requests, each with its own code, one assertion: exactly one succeeds.
        let a = assertion(&w.env, &key, &id, json!({}));
        let mut reqs = Vec::new();
        for _ in 0..10 {
            let (code, verifier) = w.code(&id).await;
            reqs.push(form_request(
                "/token",
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("code_verifier", &verifier),
                    ("redirect_uri", REDIRECT),
                    ("client_assertion_type", JWT_BEARER),
                    ("client_assertion", &a),
                ],
                &[],
            ));
        }
        let tasks: Vec<_> = reqs.into_iter().map(|r| tokio::spawn(call_svc(w.env.svc.clone(), r))).collect();
        let mut ok = 0;
        for t in tasks {
            let r = t.await.unwrap();
            match r.status {
                StatusCode::OK => ok += 1,
                _ => assert_invalid_client(&r),
            }
        }
        assert_eq!(ok, 1, "{backend:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn f21_an_assertion_used_at_one_instance_is_refused_at_another() {
    for backend in BACKENDS {
        let w = world(backend).await;
        let b = w.sibling().await;
        let key = TestKey::es256();
        let id = publish_pkjwt(&w, "/pk.json", &[&key]);
        let a = assertion(&w.env, &key, &id, json!({}));
        let (code, verifier) = w.code(&id).await;
        let r = token_with_assertion(&w.env, &code, &verifier, &a).await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.text());
        let (code, verifier) = w.code(&id).await;
        assert_invalid_client(&token_with_assertion(&b, &code, &verifier, &a).await);
        // The code was not spent by the refused request: with a fresh assertion it works at B.
        let fresh = assertion(&w.env, &key, &id, json!({}));
        assert_eq!(token_with_assertion(&b, &code, &verifier, &fresh).await.status, StatusCode::OK, "{backend:?}");

        // One assertion sent to both instances at once: exactly one success.
        for round in 0..5 {
            let a = assertion(&w.env, &key, &id, json!({}));
            let (c1, v1) = w.code(&id).await;
            let (c2, v2) = w.code(&id).await;
            let (r1, r2) =
                tokio::join!(token_with_assertion(&w.env, &c1, &v1, &a), token_with_assertion(&b, &c2, &v2, &a));
            let ok = [&r1, &r2].iter().filter(|r| r.status == StatusCode::OK).count();
            assert_eq!(ok, 1, "{backend:?} round {round}: {} / {}", r1.text(), r2.text());
            for r in [&r1, &r2].into_iter().filter(|r| r.status != StatusCode::OK) {
                assert_invalid_client(r);
            }
        }
        // The document was fetched once, by A; B read it from the store.
        assert_eq!(w.site.hits("/pk.json"), 1, "{backend:?}");
    }
}

#[tokio::test]
async fn k05_an_assertion_used_before_a_restart_is_refused_after_it() {
    for backend in PERSISTENT {
        let w = world(backend).await;
        let key = TestKey::es256();
        let id = publish_pkjwt(&w, "/pk.json", &[&key]);
        let a = assertion(&w.env, &key, &id, json!({}));
        let (code, verifier) = w.code(&id).await;
        assert_eq!(token_with_assertion(&w.env, &code, &verifier, &a).await.status, StatusCode::OK);
        let World { env, site, _ca } = w;
        let env = env.restart(cimd_options(&_ca)).await;
        let w = World { env, site, _ca };
        let (code, verifier) = w.code(&id).await;
        assert_invalid_client(&token_with_assertion(&w.env, &code, &verifier, &a).await);
        let fresh = assertion(&w.env, &key, &id, json!({}));
        assert_eq!(token_with_assertion(&w.env, &code, &verifier, &fresh).await.status, StatusCode::OK, "{backend:?}");
    }
}

#[tokio::test]
async fn one_document_fetch_serves_every_instance() {
    for backend in BACKENDS {
        let w = world(backend).await;
        let b = w.sibling().await;
        let id = w.publish("/shared.json");
        let (_, challenge) = pkce();
        let r = Browser::default().get(&w.env, &authorize_query(&id, &challenge, "st", &[])).await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.text());
        // B has never seen the client: its consent page comes from the stored document.
        let mut browser = Browser::default();
        let (verifier, challenge) = pkce();
        let r = approve(&b, &mut browser, &authorize_query(&id, &challenge, "st", &[])).await;
        let code = r.location_param("code").expect("code from B");
        // Redeemed at A.
        let r = w
            .env
            .post_form(
                "/token",
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("code_verifier", &verifier),
                    ("client_id", &id),
                    ("redirect_uri", REDIRECT),
                ],
                &[],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.text());
        assert_eq!(w.site.hits("/shared.json"), 1, "{backend:?}: one fetch for both instances");
    }
}

#[tokio::test]
async fn f22_f23_f24_f25_f29_invalid_assertions_are_refused() {
    let w = world(Backend::Memory).await;
    let key = TestKey::es256();
    let rsa = TestKey::rs256_a();
    let id = publish_pkjwt(&w, "/pk.json", &[&key, &rsa]);
    let now = w.env.clock.unix_time();
    let token_endpoint = format!("{ISSUER}/token");
    let mut bad: Vec<(&str, String)> = vec![
        ("aud other AS", assertion(&w.env, &key, &id, json!({ "aud": "https://other-as.example" }))),
        ("aud two values", assertion(&w.env, &key, &id, json!({ "aud": [ISSUER, "https://other-as.example"] }))),
        ("aud missing", assertion(&w.env, &key, &id, json!({ "aud": null }))),
        ("no exp", assertion(&w.env, &key, &id, json!({ "exp": null }))),
        ("past exp", assertion(&w.env, &key, &id, json!({ "exp": now - 120 }))),
        ("exp in a day", assertion(&w.env, &key, &id, json!({ "exp": now + 86_400 }))),
        ("future iat", assertion(&w.env, &key, &id, json!({ "iat": now + 600, "exp": now + 700 }))),
        ("no jti", assertion(&w.env, &key, &id, json!({ "jti": null }))),
        ("iss != sub", assertion(&w.env, &key, &id, json!({ "iss": "https://client.test/other" }))),
        ("sub != client", {
            let other = w.site.url("client.test", "/other.json");
            assertion(&w.env, &key, &id, json!({ "sub": other, "iss": other }))
        }),
        ("alg none", {
            let claims = json!({ "iss": id, "sub": id, "aud": ISSUER, "exp": now + 60, "jti": "n1" });
            format!(
                "{}.{}.",
                support::keys::b64(json!({ "alg": "none" }).to_string()),
                support::keys::b64(claims.to_string())
            )
        }),
        ("HS256 with the public key", {
            let claims = json!({ "iss": id, "sub": id, "aud": ISSUER, "exp": now + 60, "jti": "h1" });
            support::keys::hs256(&rsa.public_pem, &json!({ "alg": "HS256", "kid": rsa.kid }), &claims)
        }),
        ("alg differs from the JWK", {
            let ps = TestKey::rs256_a().with_alg(jsonwebtoken::Algorithm::PS256);
            assertion(&w.env, &ps, &id, json!({}))
        }),
        ("at+jwt", {
            let claims = json!({ "iss": id, "sub": id, "aud": ISSUER, "exp": now + 60, "jti": "t1" });
            key.sign(&json!({ "alg": "ES256", "kid": key.kid, "typ": "at+jwt" }), &claims)
        }),
        ("ID token", {
            let claims = json!({ "iss": ISSUER, "sub": "alice", "aud": id, "exp": now + 60, "jti": "i1" });
            key.sign(&json!({ "alg": "ES256", "kid": key.kid }), &claims)
        }),
        ("signed by another key", assertion(&w.env, &TestKey::ed25519(), &id, json!({}))),
    ];
    for (name, a) in bad.drain(..) {
        let (code, verifier) = w.code(&id).await;
        let r = token_with_assertion(&w.env, &code, &verifier, &a).await;
        assert_invalid_client(&r);
        // The code was not consumed by the failed attempt.
        let good = assertion(&w.env, &key, &id, json!({}));
        let r = token_with_assertion(&w.env, &code, &verifier, &good).await;
        assert_eq!(r.status, StatusCode::OK, "{name}: the code should survive: {}", r.text());
    }
    // Accepted audiences: the issuer, the token endpoint, a one-element array.
    for aud in [json!(ISSUER), json!(token_endpoint), json!([ISSUER])] {
        let (code, verifier) = w.code(&id).await;
        let r =
            token_with_assertion(&w.env, &code, &verifier, &assertion(&w.env, &key, &id, json!({ "aud": aud }))).await;
        assert_eq!(r.status, StatusCode::OK, "aud {aud}: {}", r.text());
    }
    // The RSA key works with its own algorithm.
    let (code, verifier) = w.code(&id).await;
    let r = token_with_assertion(&w.env, &code, &verifier, &assertion(&w.env, &rsa, &id, json!({}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test]
async fn f26_unknown_kid_refetches_the_jwks_uri_once() {
    let w = world(Backend::Memory).await;
    let old = TestKey::es256();
    let new = TestKey::ed25519();
    let id = w.site.url("client.test", "/pk.json");
    let jwks_uri = w.site.url("keys.test", "/jwks.json");
    w.site.set(
        "/pk.json",
        Answer::json(&patched(&id, json!({ "token_endpoint_auth_method": "private_key_jwt", "jwks_uri": jwks_uri }))),
    );
    w.site.set("/jwks.json", Answer::json(&TestKey::jwks(&[&old])));
    let (code, verifier) = w.code(&id).await;
    let r = token_with_assertion(&w.env, &code, &verifier, &assertion(&w.env, &old, &id, json!({}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(w.site.hits("/jwks.json"), 1);

    // The client rotates to a new key: one refetch finds it.
    w.site.set("/jwks.json", Answer::json(&TestKey::jwks(&[&new])));
    let (code, verifier) = w.code(&id).await;
    let r = token_with_assertion(&w.env, &code, &verifier, &assertion(&w.env, &new, &id, json!({}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(w.site.hits("/jwks.json"), 2);

    // Unknown kids again within the minute: no further fetch, 401.
    let stranger = TestKey::rs256_b();
    for _ in 0..3 {
        let (code, verifier) = w.code(&id).await;
        let r = token_with_assertion(&w.env, &code, &verifier, &assertion(&w.env, &stranger, &id, json!({}))).await;
        assert_invalid_client(&r);
    }
    assert_eq!(w.site.hits("/jwks.json"), 2);

    // The key set URL turning into a redirect or an error: 401, nothing followed.
    w.site.set(
        "/jwks.json",
        Answer { status: 302, location: Some("https://evil.test/".into()), ..Answer::json(&json!({})) },
    );
    let (code, verifier) = w.code(&id).await;
    let r = token_with_assertion(&w.env, &code, &verifier, &assertion(&w.env, &stranger, &id, json!({}))).await;
    assert_invalid_client(&r);
}

#[tokio::test]
async fn f27_wrong_or_missing_assertion_type_is_invalid_request() {
    let w = world(Backend::Memory).await;
    let key = TestKey::es256();
    let id = publish_pkjwt(&w, "/pk.json", &[&key]);
    let (code, verifier) = w.code(&id).await;
    let a = assertion(&w.env, &key, &id, json!({}));
    for form in [
        vec![
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"),
            ("client_assertion", a.as_str()),
        ],
        vec![("client_assertion", a.as_str())],
        vec![("client_assertion_type", JWT_BEARER)],
    ] {
        let mut all = vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("code_verifier", verifier.as_str()),
            ("redirect_uri", REDIRECT),
        ];
        all.extend(form);
        let r = w.env.post_form("/token", &all, &[]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
        assert_eq!(r.json()["error"], "invalid_request");
    }
}

#[tokio::test]
async fn f28_private_key_jwt_clients_must_send_an_assertion() {
    let w = world(Backend::Memory).await;
    let key = TestKey::es256();
    let id = publish_pkjwt(&w, "/pk.json", &[&key]);
    let (code, verifier) = w.code(&id).await;
    let r = support::authz::redeem(&w.env, &id, &code, &verifier).await;
    assert_invalid_client(&r);
    // And a public document client cannot use an assertion.
    let public = w.publish("/public.json");
    let (code, verifier) = w.code(&public).await;
    let r = token_with_assertion(&w.env, &code, &verifier, &assertion(&w.env, &key, &public, json!({}))).await;
    assert_invalid_client(&r);
}

#[tokio::test]
async fn registered_clients_may_use_private_key_jwt_too() {
    for backend in BACKENDS {
        let w = world(backend).await;
        let key = TestKey::es256();
        let reg = w
            .env
            .register_with(json!({ "token_endpoint_auth_method": "private_key_jwt", "jwks": TestKey::jwks(&[&key]) }))
            .await;
        assert!(reg.get("client_secret").is_none(), "{reg}");
        let id = reg["client_id"].as_str().unwrap().to_owned();
        let (code, verifier) = w.code(&id).await;
        assert_invalid_client(&support::authz::redeem(&w.env, &id, &code, &verifier).await);
        let r = token_with_assertion(&w.env, &code, &verifier, &assertion(&w.env, &key, &id, json!({}))).await;
        assert_eq!(r.status, StatusCode::OK, "{backend:?}: {}", r.text());
        // A key set with no usable key, or both forms, or none: refused at registration.
        for patch in [
            json!({ "token_endpoint_auth_method": "private_key_jwt" }),
            json!({ "token_endpoint_auth_method": "private_key_jwt", "jwks": { "keys": [] } }),
            json!({ "token_endpoint_auth_method": "private_key_jwt", "jwks": TestKey::jwks(&[&key]), "jwks_uri": "https://k.example/j" }),
            json!({ "token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "http://k.example/j" }),
        ] {
            let meta = support::with(
                json!({ "client_name": "x", "redirect_uris": [REDIRECT], "grant_types": ["authorization_code"] }),
                patch.clone(),
            );
            let r = w.env.post_json("/register", &meta).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{patch}: {}", r.text());
        }
    }
    // Without client ID metadata documents (no fetcher), private_key_jwt is not offered.
    let plain = Env::new(Backend::Memory).await;
    let meta = json!({ "client_name": "x", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "private_key_jwt",
        "jwks": TestKey::jwks(&[&TestKey::es256()]) });
    assert_eq!(plain.post_json("/register", &meta).await.status, StatusCode::BAD_REQUEST);
}
