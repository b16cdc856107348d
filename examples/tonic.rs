//! A tonic gRPC server (the standard health service) protected by tower-mcp-auth. The layers
//! answer with gRPC statuses (`GrpcReject`): UNAUTHENTICATED (16) without a valid token,
//! PERMISSION_DENIED (7) without the `mcp:read` scope, each with its `www-authenticate`
//! challenge in the metadata.
//!
//! ```text
//! cargo run --example tonic --features tonic -- --issuer https://login.example.com/realms/acme
//! grpcurl -plaintext -H "authorization: Bearer $TOKEN" 127.0.0.1:50051 grpc.health.v1.Health/Check
//! ```
//!
//! Tokens must be JWTs from `--issuer` (keys by discovery, or at `--jwks-url`) whose `aud`
//! contains this server's resource URL, `http://ADDR`.

use std::net::SocketAddr;

use clap::Parser;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tower_mcp_auth::grpc::GrpcReject;
use tower_mcp_auth::scope_guard::{Requirement, ScopeGuardLayer, ScopePolicy};
use tower_mcp_auth::verify::Issuer;
use tower_mcp_auth::{ClaimsExtractLayer, JwtVerifier, ProtectedResource};

#[derive(Parser)]
struct Args {
    /// Listen address (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:50051")]
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
    let policy = ScopePolicy::require(Requirement::all(["mcp:read"]))?;

    // Handlers can read the token with `tower_mcp_auth::grpc::RequestExt::access_token`.
    let (_health_reporter, health) = tonic_health::server::health_reporter();

    println!("listening on http://{addr}");
    Server::builder()
        .layer(ClaimsExtractLayer::new(verifier, resource.clone()).reject_with(GrpcReject))
        .layer(ScopeGuardLayer::new(policy, resource).reject_with(GrpcReject))
        .add_service(health)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown(args.exit_on_stdin_eof))
        .await?;
    Ok(())
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
