//! An in-process authorization server for the endpoint targets: memory store, development
//! login, no rate limits (the fuzzer is one address sending thousands of requests a second).

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower_mcp_auth::ProtectedResource;
use tower_mcp_auth::server::{AuthorizationServer, EndpointBody, Endpoints, RateLimits};
use tower_mcp_auth::store::MemoryStore;
use tower_mcp_auth::store::crypto::EncryptionKeys;
use tower_mcp_auth::upstream::DevLogin;
use tower_service::Service;

pub const ISSUER: &str = "http://127.0.0.1:8080";

pub struct Harness {
    rt: tokio::runtime::Runtime,
    endpoints: Endpoints,
    calls: u32,
}

impl Harness {
    pub fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let endpoints = rt.block_on(server());
        Self { rt, endpoints, calls: 0 }
    }

    /// Sends one request; the answer with its whole body. A fresh server every 4096 calls
    /// keeps the memory store (registrations) bounded.
    pub fn send(&mut self, req: Request<Full<Bytes>>) -> (Response<EndpointBody>, Bytes) {
        self.calls += 1;
        if self.calls % 4096 == 0 {
            self.endpoints = self.rt.block_on(server());
        }
        let mut svc = self.endpoints.clone();
        self.rt.block_on(async move {
            let res = svc.call(req).await.expect("infallible");
            let (parts, body) = res.into_parts();
            let bytes = body.collect().await.expect("full body").to_bytes();
            (Response::from_parts(parts, Full::new(bytes.clone())), bytes)
        })
    }
}

async fn server() -> Endpoints {
    let resource = ProtectedResource::builder(format!("{ISSUER}/mcp"))
        .authorization_server(ISSUER)
        .scopes_supported(["mcp:read"])
        .build()
        .expect("resource");
    AuthorizationServer::builder(ISSUER, resource)
        .store(Arc::new(MemoryStore::new()))
        .encryption_keys(EncryptionKeys::generate())
        .upstream(Arc::new(DevLogin::new("fuzz")))
        .rate_limits(RateLimits::unlimited())
        .build()
        .await
        .expect("server")
        .service()
}
