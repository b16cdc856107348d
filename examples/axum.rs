//! An axum API protected by tower-mcp-auth: `GET /hello` for any valid token, `GET /admin`
//! for tokens with the `mcp:admin` scope, and the protected resource metadata (RFC 9728).
//!
//! ```text
//! cargo run --example axum --features axum -- --issuer https://login.example.com/realms/acme
//! curl -i http://127.0.0.1:3000/hello                        # 401 + WWW-Authenticate
//! curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:3000/hello
//! ```
//!
//! Tokens must be JWTs from `--issuer` (keys by discovery, or at `--jwks-url`) whose `aud`
//! contains this server's resource URL, `http://ADDR`.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use clap::Parser;
use tower_mcp_auth::scope_guard::{Requirement, ScopeGuardLayer, ScopePolicy};
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

    // What is protected, by whom, and which scopes exist: shared by every layer.
    let resource = ProtectedResource::builder(format!("http://{addr}"))
        .authorization_server(&args.issuer)
        .scopes_supported(["mcp:read", "mcp:admin"])
        .challenge_scopes(["mcp:read"])
        .build()?;
    let issuer = match args.jwks_url {
        Some(jwks_url) => Issuer::with_jwks_url(&args.issuer, jwks_url),
        None => Issuer::discover(&args.issuer),
    };
    let verifier = JwtVerifier::builder().issuer(issuer).resource(&resource).build()?;
    let admin_only = ScopePolicy::require(Requirement::all(["mcp:admin"]))?;

    let mut app = Router::new()
        .route("/hello", get(hello))
        // Per-route scopes: the guard sits on this route only.
        .route("/admin", get(admin).route_layer(ScopeGuardLayer::new(admin_only, resource.clone())))
        // `route_layer`: unknown paths still get 404, not 401.
        .route_layer(ClaimsExtractLayer::new(verifier, resource.clone()));
    for path in resource.metadata_paths() {
        app = app.route_service(path, ProtectedResourceMetadata::new(resource.clone()));
    }

    println!("listening on http://{addr}");
    axum::serve(listener, app).with_graceful_shutdown(shutdown(args.exit_on_stdin_eof)).await?;
    Ok(())
}

async fn hello(token: AccessToken) -> String {
    format!("hello {}", token.subject().unwrap_or("(no subject)"))
}

async fn admin(token: AccessToken) -> String {
    format!("welcome, administrator {}", token.subject().unwrap_or("(no subject)"))
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
