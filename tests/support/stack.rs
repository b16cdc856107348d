//! The full resource-server stack around an echo service that records what reached it.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::util::BoxCloneService;
use tower::{ServiceBuilder, ServiceExt, service_fn};
use tower_mcp_auth::scope_guard::{GuardBody, ScopeGuardLayer, ScopePolicy};
use tower_mcp_auth::verify::TokenVerifier;
use tower_mcp_auth::{AccessToken, BearerAuthLayer, ClaimsExtractLayer, ProtectedResource};

use super::{ISSUER, RESOURCE};

/// What the protected service saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub headers: HeaderMap,
    pub token: Option<AccessToken>,
    pub body: Bytes,
}

pub type Svc = BoxCloneService<Request<Full<Bytes>>, Response<Full<Bytes>>, Infallible>;

pub fn resource() -> ProtectedResource {
    ProtectedResource::builder(RESOURCE)
        .authorization_server(ISSUER)
        .scopes_supported(["mcp:read", "mcp:write", "mcp:admin"])
        .challenge_scopes(["mcp:read"])
        .build()
        .unwrap()
}

pub const METADATA_URL: &str = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp";

/// Which layers read the `Authorization` header.
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)]
pub enum Layers {
    /// BearerAuthLayer parses it and hands the token to ClaimsExtractLayer.
    BearerFirst,
    /// ClaimsExtractLayer alone reads it (and checks its grammar only on a cache miss).
    ClaimsAlone,
}

/// Bearer → claims (with `verifier`) → scope guard (with `policy`) → recording echo service.
pub fn stack<V>(verifier: V, policy: ScopePolicy) -> (Svc, Arc<Mutex<Vec<Seen>>>)
where
    V: TokenVerifier + Clone,
{
    stack_with(Layers::BearerFirst, verifier, policy)
}

/// [`stack`], with the header read as `layers` says.
pub fn stack_with<V>(layers: Layers, verifier: V, policy: ScopePolicy) -> (Svc, Arc<Mutex<Vec<Seen>>>)
where
    V: TokenVerifier + Clone,
{
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let inner = service_fn(move |req: Request<GuardBody<Full<Bytes>>>| {
        let record = record.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            record.lock().unwrap().push(Seen {
                headers: parts.headers.clone(),
                token: parts.extensions.get::<AccessToken>().cloned(),
                body,
            });
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        }
    });
    let resource = resource();
    let bearer = matches!(layers, Layers::BearerFirst).then(|| BearerAuthLayer::new(resource.clone()));
    let svc = ServiceBuilder::new()
        .option_layer(bearer)
        .layer(ClaimsExtractLayer::new(verifier, resource.clone()))
        .layer(ScopeGuardLayer::new(policy, resource))
        .service(inner);
    (BoxCloneService::new(svc), seen)
}

pub fn open_policy() -> ScopePolicy {
    ScopePolicy::builder().build().unwrap()
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn www_authenticate(&self) -> &str {
        self.headers.get("www-authenticate").map(|v| v.to_str().unwrap()).unwrap_or("")
    }
}

pub async fn send(svc: &Svc, req: Request<Full<Bytes>>) -> Answer {
    let res = svc.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    Answer { status: parts.status, headers: parts.headers, body: body.collect().await.unwrap().to_bytes() }
}

/// A POST to /mcp with `Authorization: Bearer <token>` (if any) and `body`.
pub fn post(token: Option<&str>, body: &str) -> Request<Full<Bytes>> {
    let mut b = Request::post("/mcp").header("content-type", "application/json");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Full::new(Bytes::from(body.to_owned()))).unwrap()
}
