//! A mock identity provider on 127.0.0.1 for fault injection: discovery, JWKS,
//! introspection, token, userinfo and revocation endpoints whose answers, delays and failures
//! tests set, with hit counters and the last requests received.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use bytes::Bytes;
use serde_json::{Value, json};

use super::TestKey;

#[derive(Clone)]
pub enum Jwks {
    Json(Value),
    Raw {
        status: u16,
        content_type: &'static str,
        body: Bytes,
    },
    Redirect(String),
    /// A chunked body that never ends.
    Endless,
    /// One byte per second.
    Trickle,
}

#[derive(Clone)]
pub struct Knobs {
    pub jwks: Jwks,
    pub jwks_delay: Duration,
    pub cache_control: Option<String>,
    /// Replaces the discovery document (default: issuer + jwks_uri).
    pub discovery: Option<Value>,
    /// Status of `/.well-known/oauth-authorization-server` (default 404: only OpenID
    /// discovery is served).
    pub oauth_metadata_status: u16,
    pub discovery_status: u16,
    /// Introspection responses by token (default `{"active": false}`).
    pub introspection: HashMap<String, Value>,
    pub introspection_status: u16,
    pub introspection_delay: Duration,
    /// `Authorization` header the introspection endpoint requires.
    pub introspection_auth: Option<String>,
    /// Answer of `POST /token` (default `{}`) and its status.
    pub token_response: Value,
    pub token_status: u16,
    pub token_delay: Duration,
    /// Answer of `GET /userinfo` (default `{}`) and its status.
    pub userinfo: Value,
    pub userinfo_status: u16,
    /// Status of `POST /revoke` (default 200).
    pub revocation_status: u16,
}

/// A request received by the token, userinfo or revocation endpoint.
#[derive(Clone, Debug, Default)]
pub struct Received {
    /// Form parameters (empty for GET).
    pub form: HashMap<String, String>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
}

pub struct Counters {
    pub jwks: AtomicUsize,
    pub discovery: AtomicUsize,
    pub introspection: AtomicUsize,
    pub trap: AtomicUsize,
    pub token: AtomicUsize,
    pub userinfo: AtomicUsize,
    pub revocation: AtomicUsize,
}

#[derive(Default)]
struct Last {
    token: Option<Received>,
    userinfo: Option<Received>,
    revocation: Option<Received>,
}

struct Shared {
    knobs: Mutex<Knobs>,
    counters: Counters,
    last: Mutex<Last>,
}

pub struct MockIdp {
    pub addr: SocketAddr,
    pub issuer: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockIdp {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let issuer = format!("http://{addr}");
        let shared = Arc::new(Shared {
            knobs: Mutex::new(Knobs {
                jwks: Jwks::Json(json!({"keys": []})),
                jwks_delay: Duration::ZERO,
                cache_control: None,
                discovery: None,
                oauth_metadata_status: 404,
                discovery_status: 200,
                introspection: HashMap::new(),
                introspection_status: 200,
                introspection_delay: Duration::ZERO,
                introspection_auth: None,
                token_response: json!({}),
                token_status: 200,
                token_delay: Duration::ZERO,
                userinfo: json!({}),
                userinfo_status: 200,
                revocation_status: 200,
            }),
            counters: Counters {
                jwks: AtomicUsize::new(0),
                discovery: AtomicUsize::new(0),
                introspection: AtomicUsize::new(0),
                trap: AtomicUsize::new(0),
                token: AtomicUsize::new(0),
                userinfo: AtomicUsize::new(0),
                revocation: AtomicUsize::new(0),
            },
            last: Mutex::new(Last::default()),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/.well-known/oauth-authorization-server", get(oauth_metadata))
            .route("/jwks", get(jwks))
            .route("/introspect", post(introspect))
            .route("/{tenant}/v2.0/.well-known/openid-configuration", get(discovery))
            .route("/token", post(token))
            .route("/userinfo", get(userinfo))
            .route("/revoke", post(revoke))
            .route("/trap", any(trap))
            .route("/trap/{*rest}", any(trap))
            .with_state((shared.clone(), issuer.clone()));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, issuer, shared, task }
    }

    pub fn set(&self, f: impl FnOnce(&mut Knobs)) {
        f(&mut self.shared.knobs.lock().unwrap());
    }

    pub fn set_keys(&self, keys: &[&TestKey]) {
        let doc = TestKey::jwks(keys);
        self.set(|k| k.jwks = Jwks::Json(doc));
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.issuer)
    }

    pub fn trap_url(&self) -> String {
        format!("{}/trap", self.issuer)
    }

    pub fn introspection_url(&self) -> String {
        format!("{}/introspect", self.issuer)
    }

    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    pub fn jwks_hits(&self) -> usize {
        self.shared.counters.jwks.load(Ordering::SeqCst)
    }

    pub fn discovery_hits(&self) -> usize {
        self.shared.counters.discovery.load(Ordering::SeqCst)
    }

    pub fn introspection_hits(&self) -> usize {
        self.shared.counters.introspection.load(Ordering::SeqCst)
    }

    pub fn trap_hits(&self) -> usize {
        self.shared.counters.trap.load(Ordering::SeqCst)
    }

    pub fn authorize_url(&self) -> String {
        format!("{}/authorize", self.issuer)
    }

    pub fn token_url(&self) -> String {
        format!("{}/token", self.issuer)
    }

    pub fn userinfo_url(&self) -> String {
        format!("{}/userinfo", self.issuer)
    }

    pub fn revocation_url(&self) -> String {
        format!("{}/revoke", self.issuer)
    }

    /// A full OpenID Connect discovery document for `issuer` pointing at this provider's
    /// endpoints (set it with `idp.set(|k| k.discovery = Some(doc))`).
    pub fn oidc_discovery(&self, issuer: &str) -> Value {
        json!({
            "issuer": issuer,
            "authorization_endpoint": self.authorize_url(),
            "token_endpoint": self.token_url(),
            "userinfo_endpoint": self.userinfo_url(),
            "revocation_endpoint": self.revocation_url(),
            "jwks_uri": self.jwks_url(),
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": true,
        })
    }

    pub fn token_hits(&self) -> usize {
        self.shared.counters.token.load(Ordering::SeqCst)
    }

    pub fn userinfo_hits(&self) -> usize {
        self.shared.counters.userinfo.load(Ordering::SeqCst)
    }

    pub fn revocation_hits(&self) -> usize {
        self.shared.counters.revocation.load(Ordering::SeqCst)
    }

    /// The last request to `/token`.
    pub fn last_token_request(&self) -> Option<Received> {
        self.shared.last.lock().unwrap().token.clone()
    }

    /// The last request to `/userinfo`.
    pub fn last_userinfo_request(&self) -> Option<Received> {
        self.shared.last.lock().unwrap().userinfo.clone()
    }

    /// The last request to `/revoke`.
    pub fn last_revocation_request(&self) -> Option<Received> {
        self.shared.last.lock().unwrap().revocation.clone()
    }
}

type St = AxState<(Arc<Shared>, String)>;

async fn discovery(AxState((shared, issuer)): St) -> Response {
    shared.counters.discovery.fetch_add(1, Ordering::SeqCst);
    let (status, doc) = {
        let k = shared.knobs.lock().unwrap();
        (k.discovery_status, k.discovery.clone())
    };
    let doc = doc.unwrap_or_else(|| json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")}));
    (StatusCode::from_u16(status).unwrap(), axum::Json(doc)).into_response()
}

async fn oauth_metadata(AxState((shared, issuer)): St) -> Response {
    shared.counters.discovery.fetch_add(1, Ordering::SeqCst);
    let (status, doc) = {
        let k = shared.knobs.lock().unwrap();
        (k.oauth_metadata_status, k.discovery.clone())
    };
    if status != 200 {
        return StatusCode::from_u16(status).unwrap().into_response();
    }
    let doc = doc.unwrap_or_else(|| json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")}));
    axum::Json(doc).into_response()
}

async fn jwks(AxState((shared, _)): St) -> Response {
    shared.counters.jwks.fetch_add(1, Ordering::SeqCst);
    let (jwks, delay, cache_control) = {
        let k = shared.knobs.lock().unwrap();
        (k.jwks.clone(), k.jwks_delay, k.cache_control.clone())
    };
    if !delay.is_zero() {
        // Fault injection: a slow identity provider.
        tokio::time::sleep(delay).await;
    }
    let mut res = match jwks {
        Jwks::Json(v) => axum::Json(v).into_response(),
        Jwks::Raw { status, content_type, body } => {
            (StatusCode::from_u16(status).unwrap(), [(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Jwks::Redirect(to) => (StatusCode::FOUND, [(header::LOCATION, to)]).into_response(),
        Jwks::Endless => {
            let chunk = Bytes::from(vec![b' '; 16 * 1024]);
            let stream = futures_stream(move || Some(chunk.clone()), Duration::ZERO);
            Response::new(Body::from_stream(stream))
        }
        Jwks::Trickle => {
            let stream = futures_stream(|| Some(Bytes::from_static(b" ")), Duration::from_secs(1));
            Response::new(Body::from_stream(stream))
        }
    };
    if let Some(cc) = cache_control {
        res.headers_mut().insert(header::CACHE_CONTROL, cc.parse().unwrap());
    }
    res
}

fn futures_stream(
    mut next: impl FnMut() -> Option<Bytes> + Send + 'static,
    every: Duration,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures_util::stream::unfold((), move |()| {
        let item = next();
        async move {
            if !every.is_zero() {
                // Fault injection: a server that trickles.
                tokio::time::sleep(every).await;
            }
            item.map(|b| (Ok(b), ()))
        }
    })
}

async fn introspect(AxState((shared, _)): St, headers: HeaderMap, body: Bytes) -> Response {
    shared.counters.introspection.fetch_add(1, Ordering::SeqCst);
    let (status, delay, required_auth, responses) = {
        let k = shared.knobs.lock().unwrap();
        (k.introspection_status, k.introspection_delay, k.introspection_auth.clone(), k.introspection.clone())
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(auth) = required_auth
        && headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(auth.as_str())
    {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if status != 200 {
        return StatusCode::from_u16(status).unwrap().into_response();
    }
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let token = form.get("token").cloned().unwrap_or_default();
    let answer = responses.get(&token).cloned().unwrap_or_else(|| json!({"active": false}));
    axum::Json(answer).into_response()
}

async fn trap(AxState((shared, _)): St) -> StatusCode {
    shared.counters.trap.fetch_add(1, Ordering::SeqCst);
    StatusCode::OK
}

fn received(headers: &HeaderMap, body: &[u8]) -> Received {
    Received {
        form: serde_urlencoded::from_bytes(body).unwrap_or_default(),
        authorization: headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned),
    }
}

async fn token(AxState((shared, _)): St, headers: HeaderMap, body: Bytes) -> Response {
    shared.counters.token.fetch_add(1, Ordering::SeqCst);
    shared.last.lock().unwrap().token = Some(received(&headers, &body));
    let (status, delay, answer) = {
        let k = shared.knobs.lock().unwrap();
        (k.token_status, k.token_delay, k.token_response.clone())
    };
    if !delay.is_zero() {
        // Fault injection: a slow token endpoint.
        tokio::time::sleep(delay).await;
    }
    (StatusCode::from_u16(status).unwrap(), axum::Json(answer)).into_response()
}

async fn userinfo(AxState((shared, _)): St, headers: HeaderMap) -> Response {
    shared.counters.userinfo.fetch_add(1, Ordering::SeqCst);
    shared.last.lock().unwrap().userinfo = Some(received(&headers, b""));
    let (status, answer) = {
        let k = shared.knobs.lock().unwrap();
        (k.userinfo_status, k.userinfo.clone())
    };
    (StatusCode::from_u16(status).unwrap(), axum::Json(answer)).into_response()
}

async fn revoke(AxState((shared, _)): St, headers: HeaderMap, body: Bytes) -> StatusCode {
    shared.counters.revocation.fetch_add(1, Ordering::SeqCst);
    shared.last.lock().unwrap().revocation = Some(received(&headers, &body));
    let status = shared.knobs.lock().unwrap().revocation_status;
    StatusCode::from_u16(status).unwrap()
}
