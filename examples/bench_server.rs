//! Load-test target for `benches/load.sh`; not an example to copy.
//!
//! `POST /mcp` answers a small fixed JSON-RPC reply (like an MCP `tools/list`), behind:
//!
//! - `bare`: nothing (axum 0.8); the request still carries its `Authorization` header, which
//!   the handler ignores;
//! - `cached-rs256`, `cached-es256`, `cached-eddsa`: ClaimsExtractLayer (reading the
//!   `Authorization` header itself) with a `JwtVerifier` on a static key (tests/fixtures/keys),
//!   its token cache on (the default) → ScopeGuardLayer requiring `mcp:read` (axum 0.8);
//! - `uncached-rs256`, `uncached-es256`, `uncached-eddsa`: the same with
//!   `ClaimsExtractLayer::without_cache()`: every request verifies the signature;
//! - `raw-rs256`, `raw-es256`, `raw-eddsa`: what a hand-written layer does: a tower service
//!   that reads the header and calls `jsonwebtoken::decode` into a typed claims struct (iss,
//!   aud, exp, 30 s leeway), then checks the scope (axum 0.8);
//! - `jwt-authorizer`: the `jwt-authorizer` crate with the RS256 public key, validating iss,
//!   aud and exp (axum 0.7, which it is built on);
//! - `bare07`: `bare` on axum 0.7, the baseline for `jwt-authorizer`.
//!
//! The `cached-*`, `uncached-*` and `raw-*` layers wrap the whole axum router.
//!
//! ```text
//! bench_server --mode stack-rs256 --bind 127.0.0.1:18080
//! bench_server --print-token stack-rs256      # a valid token for that mode (1 h)
//! ```
//!
//! The server runs on a current-thread runtime (pin it to one core), and exits by itself after
//! `--exit-after` seconds or on SIGTERM/SIGINT (cleanly, so profilers write their output).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use tower::ServiceBuilder;
use tower_mcp_auth::scope_guard::{GuardBody, Requirement, ScopeGuardLayer, ScopePolicy};
use tower_mcp_auth::verify::{Algorithm, Issuer, KeySet};
use tower_mcp_auth::{ClaimsExtractLayer, JwtVerifier, ProtectedResource};

const RESOURCE: &str = "https://mcp.example.com/mcp";
const ISSUER: &str = "https://idp.example.com";
const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys");
/// What every mode answers: a small `tools/list` result.
const REPLY: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo","description":"Echoes its input","inputSchema":{"type":"object","properties":{"text":{"type":"string"}}}}]}}"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Bare,
    CachedRs256,
    CachedEs256,
    CachedEddsa,
    UncachedRs256,
    UncachedEs256,
    UncachedEddsa,
    RawRs256,
    RawEs256,
    RawEddsa,
    JwtAuthorizer,
    Bare07,
}

impl Mode {
    /// Key file and algorithm of the tokens this mode accepts (`bare*` get RS256 tokens so the
    /// request is the same size as for `stack-rs256` and `jwt-authorizer`).
    fn key(self) -> (&'static str, Algorithm, jsonwebtoken::Algorithm) {
        match self {
            Mode::CachedEs256 | Mode::UncachedEs256 | Mode::RawEs256 => {
                ("es256", Algorithm::ES256, jsonwebtoken::Algorithm::ES256)
            }
            Mode::CachedEddsa | Mode::UncachedEddsa | Mode::RawEddsa => {
                ("ed25519", Algorithm::EdDSA, jsonwebtoken::Algorithm::EdDSA)
            }
            _ => ("rs256-a", Algorithm::RS256, jsonwebtoken::Algorithm::RS256),
        }
    }

    fn cached(self) -> bool {
        matches!(self, Mode::CachedRs256 | Mode::CachedEs256 | Mode::CachedEddsa)
    }
}

#[derive(Debug, Parser)]
#[command(about = "Load-test target for benches/load.sh")]
struct Args {
    /// What sits in front of the handler.
    #[arg(long, value_enum, required_unless_present = "print_token")]
    mode: Option<Mode>,
    /// Loopback address to listen on.
    #[arg(long, default_value = "127.0.0.1:18080")]
    bind: SocketAddr,
    /// Print a valid token for MODE (1 hour lifetime) and exit.
    #[arg(long, value_enum, value_name = "MODE")]
    print_token: Option<Mode>,
    /// Exit after this many seconds even if nobody stops the server.
    #[arg(long, default_value_t = 600)]
    exit_after: u64,
}

fn read(name: &str) -> Result<Vec<u8>, String> {
    std::fs::read(format!("{KEYS}/{name}")).map_err(|e| format!("{KEYS}/{name}: {e}"))
}

fn print_token(mode: Mode) -> Result<(), String> {
    let (file, _, alg) = mode.key();
    let pem = read(&format!("{file}.pem"))?;
    let key = match alg {
        jsonwebtoken::Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
        jsonwebtoken::Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        _ => EncodingKey::from_ed_pem(&pem),
    }
    .map_err(|e| format!("{file}.pem: {e}"))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| e.to_string())?.as_secs();
    let claims = json!({
        "iss": ISSUER,
        "aud": RESOURCE,
        "sub": "user-1",
        "client_id": "client-1",
        "scope": "mcp:read",
        "iat": now,
        "exp": now + 3600,
        "jti": format!("bench-{now}"),
    });
    let mut header = Header::new(alg);
    header.kid = Some(file.to_owned());
    header.typ = Some("at+jwt".to_owned());
    let token = jsonwebtoken::encode(&header, &claims, &key).map_err(|e| e.to_string())?;
    println!("{token}");
    Ok(())
}

async fn reply() -> ([(http::HeaderName, &'static str); 1], &'static str) {
    ([(http::header::CONTENT_TYPE, "application/json")], REPLY)
}

/// What `axum::serve` runs: a service answering every request (wrapped in `Shared`).
trait App:
    tower::Service<
        http::Request<axum::body::Body>,
        Response = axum::response::Response,
        Error = std::convert::Infallible,
        Future: Send,
    > + Clone
    + Send
    + 'static
{
}

impl<T> App for T where
    T: tower::Service<
            http::Request<axum::body::Body>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
            Future: Send,
        > + Clone
        + Send
        + 'static
{
}

/// The layers wrap the whole router, as an application protecting everything it serves does
/// (`Router::layer` would also box and clone the layered service on every request).
fn stack_router(mode: Mode) -> Result<impl App, String> {
    let (file, alg, _) = mode.key();
    let keys = KeySet::from_pem(&read(&format!("{file}.pub.pem"))?, alg, Some(file)).map_err(|e| e.to_string())?;
    let resource = ProtectedResource::builder(RESOURCE)
        .authorization_server(ISSUER)
        .scopes_supported(["mcp:read"])
        .challenge_scopes(["mcp:read"])
        .build()
        .map_err(|e| e.to_string())?;
    let verifier = JwtVerifier::builder()
        .issuer(Issuer::with_keys(ISSUER, keys))
        .resource(&resource)
        .build()
        .map_err(|e| e.to_string())?;
    let policy = ScopePolicy::require(Requirement::all(["mcp:read"])).map_err(|e| e.to_string())?;
    let claims = ClaimsExtractLayer::new(verifier, resource.clone());
    let claims = if mode.cached() { claims } else { claims.without_cache() };
    let layers = ServiceBuilder::new()
        .layer(claims)
        .layer(ScopeGuardLayer::new(policy, resource))
        // The guard hands on its own body type; axum routes take `axum::body::Body` (`From`
        // unwraps it: no box).
        .map_request(|req: http::Request<GuardBody<axum::body::Body>>| req.map(axum::body::Body::from));
    Ok(layers.service(app()))
}

/// The application every mode serves. `with_state` turns its handlers into routes once, as
/// `axum::serve` does for a bare router per connection; a router called as a plain service
/// would otherwise box its handler on every request.
fn app() -> axum::Router {
    axum::Router::new().route("/mcp", axum::routing::post(reply)).with_state(())
}

/// The hand-written baseline: the shortest correct layer on `jsonwebtoken`.
mod raw {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use futures_util::future::{Either, Ready, ready};
    use jsonwebtoken::{DecodingKey, Validation};
    use serde::Deserialize;

    use super::{ISSUER, Mode, RESOURCE, read};

    #[derive(Deserialize, Clone)]
    #[allow(dead_code)]
    pub struct Claims {
        pub sub: String,
        #[serde(default)]
        pub client_id: Option<String>,
        #[serde(default)]
        pub scope: String,
    }

    #[derive(Clone)]
    pub struct JwtLayer {
        key: Arc<DecodingKey>,
        validation: Arc<Validation>,
    }

    #[derive(Clone)]
    pub struct Jwt<S> {
        inner: S,
        layer: JwtLayer,
    }

    impl<S> tower::Layer<S> for JwtLayer {
        type Service = Jwt<S>;
        fn layer(&self, inner: S) -> Jwt<S> {
            Jwt { inner, layer: self.clone() }
        }
    }

    impl<S> tower::Service<http::Request<axum::body::Body>> for Jwt<S>
    where
        S: tower::Service<http::Request<axum::body::Body>, Response = axum::response::Response, Error = Infallible>,
    {
        type Response = axum::response::Response;
        type Error = Infallible;
        type Future = Either<S::Future, Ready<Result<axum::response::Response, Infallible>>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            self.inner.poll_ready(cx)
        }

        fn call(&mut self, mut req: http::Request<axum::body::Body>) -> Self::Future {
            let token = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            let claims = token.and_then(|t| {
                jsonwebtoken::decode::<Claims>(t, &self.layer.key, &self.layer.validation).ok().map(|d| d.claims)
            });
            match claims {
                Some(c) if c.scope.split(' ').any(|s| s == "mcp:read") => {
                    req.extensions_mut().insert(c);
                    Either::Left(self.inner.call(req))
                }
                _ => {
                    let mut res = axum::response::Response::new(axum::body::Body::empty());
                    *res.status_mut() = http::StatusCode::UNAUTHORIZED;
                    Either::Right(ready(Ok(res)))
                }
            }
        }
    }

    pub fn router(mode: Mode) -> Result<Jwt<axum::Router>, String> {
        let (file, _, alg) = mode.key();
        let pem = read(&format!("{file}.pub.pem"))?;
        let key = match alg {
            jsonwebtoken::Algorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
            jsonwebtoken::Algorithm::ES256 => DecodingKey::from_ec_pem(&pem),
            _ => DecodingKey::from_ed_pem(&pem),
        }
        .map_err(|e| format!("{file}.pub.pem: {e}"))?;
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[RESOURCE]);
        validation.leeway = 30;
        let layer = JwtLayer { key: Arc::new(key), validation: Arc::new(validation) };
        Ok(tower::Layer::layer(&layer, super::app()))
    }
}

async fn jwt_authorizer_router() -> Result<axum07::Router, String> {
    use jwt_authorizer::{Authorizer, IntoLayer, JwtAuthorizer, RegisteredClaims, Validation};
    let pem = String::from_utf8(read("rs256-a.pub.pem")?).map_err(|e| e.to_string())?;
    let validation = Validation::new().iss(&[ISSUER]).aud(&[RESOURCE]).exp(true).leeway(30);
    let auth: Authorizer<RegisteredClaims> = JwtAuthorizer::from_rsa_pem_text(&pem)
        .validation(validation)
        .build()
        .await
        .map_err(|e| format!("jwt-authorizer: {e}"))?;
    Ok(axum07::Router::new().route("/mcp", axum07::routing::post(reply07)).layer(auth.into_layer()))
}

async fn reply07() -> ([(axum07::http::HeaderName, &'static str); 1], &'static str) {
    ([(axum07::http::header::CONTENT_TYPE, "application/json")], REPLY)
}

async fn serve(mode: Mode, bind: SocketAddr) -> Result<(), String> {
    if !bind.ip().is_loopback() {
        return Err(format!("{bind}: bench_server listens on loopback only"));
    }
    let listener = tokio::net::TcpListener::bind(bind).await.map_err(|e| format!("{bind}: {e}"))?;
    eprintln!("bench_server: {mode:?} on http://{bind}/mcp");
    let result = match mode {
        Mode::Bare => axum::serve(listener, app()).await,
        Mode::CachedRs256
        | Mode::CachedEs256
        | Mode::CachedEddsa
        | Mode::UncachedRs256
        | Mode::UncachedEs256
        | Mode::UncachedEddsa => axum::serve(listener, tower::make::Shared::new(stack_router(mode)?)).await,
        Mode::RawRs256 | Mode::RawEs256 | Mode::RawEddsa => {
            axum::serve(listener, tower::make::Shared::new(raw::router(mode)?)).await
        }
        Mode::Bare07 => {
            axum07::serve(listener, axum07::Router::new().route("/mcp", axum07::routing::post(reply07))).await
        }
        Mode::JwtAuthorizer => axum07::serve(listener, jwt_authorizer_router().await?).await,
    };
    result.map_err(|e| e.to_string())
}

async fn stop_signal(after: Duration) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = tokio::time::sleep(after) => eprintln!("bench_server: --exit-after reached"),
    }
    Ok(())
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    // Two signature backends are compiled in under --all-features; use the library's choice.
    #[cfg(feature = "aws_lc_rs")]
    let _ = jsonwebtoken::crypto::CryptoProvider::install_default(&jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER);
    #[cfg(all(feature = "rust_crypto", not(feature = "aws_lc_rs")))]
    let _ = jsonwebtoken::crypto::CryptoProvider::install_default(&jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER);

    if let Some(mode) = args.print_token {
        return print_token(mode);
    }
    let Some(mode) = args.mode else { return Err("--mode is required".into()) };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        tokio::select! {
            r = serve(mode, args.bind) => r,
            r = stop_signal(Duration::from_secs(args.exit_after)) => r,
        }
    })
}
