//! Plain hyper 1 (no framework) protected by tower-mcp-auth: the layers wrap a
//! `tower::service_fn`, and a small dispatcher in front serves the protected resource metadata.
//!
//! ```text
//! cargo run --example hyper -- --issuer https://login.example.com/realms/acme
//! curl -i http://127.0.0.1:3000/hello                        # 401 + WWW-Authenticate
//! curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:3000/hello
//! ```
//!
//! Tokens must be JWTs from `--issuer` (keys by discovery, or at `--jwks-url`) whose `aud`
//! contains this server's resource URL, `http://ADDR`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tower::{ServiceBuilder, ServiceExt, service_fn};
use tower_mcp_auth::verify::Issuer;
use tower_mcp_auth::{AccessToken, ClaimsExtractLayer, JwtVerifier, ProtectedResource, ProtectedResourceMetadata};

#[derive(Parser)]
struct Args {
    /// Listen address (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:3000")]
    bind: SocketAddr,
    /// The authorization server whose tokens are accepted (issuer identifier).
    #[arg(long)]
    issuer: String,
    /// Fetch the issuer's keys from this JWKS URL instead of discovering it.
    #[arg(long)]
    jwks_url: Option<String>,
    /// Exit when stdin reaches end-of-file.
    #[arg(long)]
    exit_on_stdin_eof: bool,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let listener = tokio::net::TcpListener::bind(args.bind).await?;
    let addr = listener.local_addr()?;

    let resource = ProtectedResource::builder(format!("http://{addr}"))
        .authorization_server(&args.issuer)
        .scopes_supported(["mcp:read"])
        .build()?;
    let issuer = match args.jwks_url {
        Some(jwks_url) => Issuer::with_jwks_url(&args.issuer, jwks_url),
        None => Issuer::discover(&args.issuer),
    };
    let verifier = JwtVerifier::builder().issuer(issuer).resource(&resource).build()?;

    // The protected endpoint: the layers answer 401/400/503 themselves, `hello` only runs
    // with a verified `AccessToken` in the request extensions.
    let hello =
        ServiceBuilder::new().layer(ClaimsExtractLayer::new(verifier, resource.clone())).service(service_fn(hello));
    let metadata = ProtectedResourceMetadata::new(resource.clone());
    let app = service_fn(move |req: Request<Incoming>| {
        let (hello, metadata) = (hello.clone(), metadata.clone());
        async move {
            match req.uri().path() {
                "/hello" => hello.oneshot(req).await,
                path if path.starts_with("/.well-known/oauth-protected-resource") => metadata.oneshot(req).await,
                _ => Ok(status(StatusCode::NOT_FOUND)),
            }
        }
    });

    println!("listening on http://{addr}");
    let shutdown = shutdown(args.exit_on_stdin_eof);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return Ok(()),
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!("connection: {e}");
            }
        });
    }
}

async fn hello(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let Some(token) = req.extensions().get::<AccessToken>() else {
        // Only reachable if the layers above were removed: refuse rather than serve.
        return Ok(status(StatusCode::INTERNAL_SERVER_ERROR));
    };
    let body = format!("hello {}", token.subject().unwrap_or("(no subject)"));
    Ok(Response::new(Full::new(Bytes::from(body))))
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::default());
    *res.status_mut() = code;
    res
}

/// Ctrl-C, or the end of stdin with `--exit-on-stdin-eof`.
async fn shutdown(exit_on_stdin_eof: bool) {
    let stdin_closed = async {
        if !exit_on_stdin_eof {
            std::future::pending::<()>().await;
        }
        // A plain thread: a blocked tokio stdin read would hold up runtime shutdown.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            let _ = tx.send(());
        });
        let _ = rx.await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = stdin_closed => {}
    }
}
