//! A real MCP server (rmcp, streamable HTTP) at `/mcp`, protected by tower-mcp-auth.
//!
//! ```text
//! request ─▶ CORS ─▶ BearerAuthLayer ─▶ ClaimsExtractLayer<JwtVerifier> ─▶ SessionBindingLayer
//!         ─▶ ScopeGuardLayer ─▶ rmcp
//! ```
//!
//! (`SessionBindingLayer` ties each MCP session to the user and client that opened it: another
//! principal presenting the session id gets 404.)
//!
//! Resource-server mode trusts an external authorization server (OIDC discovery + JWKS):
//!
//! ```text
//! cargo run --example mcp_server --features axum,rmcp -- \
//!     --authorization-server https://login.example.com/realms/acme \
//!     --public-url https://mcp.example.com
//! ```
//!
//! `--insecure-no-auth` serves the same tools with no protection at all (a benchmark baseline).
//! The built-in authorization server described in DESIGN.md is not part of this release: its
//! options (`--store`, `--upstream-*`, …) are recognised and refused with exit status 2.
//!
//! Tools: `whoami` (the caller's verified token as JSON), `echo` (needs `mcp:read`),
//! `admin_ping` (needs `mcp:admin`; without it the HTTP layer answers 403 `insufficient_scope`,
//! so clients can step up).
//!
//! Prints one line, `listening on http://ADDR/mcp`, on stdout when ready; logs go to stderr
//! (`RUST_LOG`, default `info`).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, header};
use clap::Parser;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, ServerHandler, schemars, tool, tool_handler, tool_router};
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_mcp_auth::scope_guard::{Requirement, ScopeGuardLayer, ScopePolicy};
use tower_mcp_auth::session::SessionBindingLayer;
use tower_mcp_auth::verify::Issuer;
use tower_mcp_auth::{
    AccessToken, BearerAuthLayer, ClaimsExtractLayer, JwtVerifier, ProtectedResource, ProtectedResourceMetadata,
};
use url::Url;

/// Scopes this server knows, and the one offered in 401 challenges.
const SCOPES: [&str; 2] = ["mcp:read", "mcp:admin"];
const DEFAULT_SCOPE: &str = "mcp:read";
/// How long open connections (SSE streams) get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Parser, Debug)]
#[command(about = "An MCP server (rmcp streamable HTTP) protected by tower-mcp-auth")]
struct Args {
    /// Listen address (port 0 picks a free port; the printed line shows it).
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: SocketAddr,

    /// Externally visible base URL, an origin such as https://mcp.example.com
    /// (default: http://ADDR). The protected resource is {public-url}/mcp.
    #[arg(long, value_name = "URL")]
    public_url: Option<Url>,

    /// Resource-server mode: trust the tokens of this authorization server (its issuer
    /// identifier; keys found by OIDC / RFC 8414 discovery).
    #[arg(long, value_name = "URL")]
    authorization_server: Option<String>,

    /// Extra root certificate (PEM) for outbound fetches (discovery, JWKS).
    #[arg(long, value_name = "PEM_FILE")]
    trust_ca: Option<PathBuf>,

    /// Another browser origin allowed to call /mcp (CORS and rmcp's Origin check); the
    /// public URL's own origin is always allowed. Can be repeated.
    #[arg(long, value_name = "ORIGIN")]
    allow_origin: Vec<String>,

    /// Serve the MCP server with NO authorization at all (benchmark baseline only).
    #[arg(long, conflicts_with_all = ["authorization_server", "trust_ca"])]
    insecure_no_auth: bool,

    /// Exit when stdin reaches end-of-file (lets a parent process tie our lifetime to its own).
    #[arg(long)]
    exit_on_stdin_eof: bool,

    #[command(flatten)]
    unavailable: Unavailable,
}

/// Options of the built-in authorization server (DESIGN.md), not part of this release: they
/// are parsed so that using one fails clearly instead of being ignored.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Not available in this version (built-in authorization server)")]
struct Unavailable {
    /// Storage of the built-in authorization server: memory, sqlite:PATH, redis://HOST:PORT.
    #[arg(long, value_name = "URI")]
    store: Option<String>,
    /// The development login's one local user.
    #[arg(long, value_name = "NAME")]
    dev_user: Option<String>,
    /// OAuth proxy to this OIDC provider (discovery).
    #[arg(long, value_name = "URL")]
    upstream_issuer: Option<String>,
    /// The proxy's client id at the upstream provider.
    #[arg(long, value_name = "ID")]
    upstream_client_id: Option<String>,
    /// The proxy's client secret at the upstream provider.
    #[arg(long, value_name = "SECRET")]
    upstream_client_secret: Option<String>,
    /// Scopes requested upstream.
    #[arg(long, value_name = "SCOPES")]
    upstream_scopes: Option<String>,
    /// Identify users by the upstream ID token (IdPs with opaque access tokens).
    #[arg(long)]
    verify_id_token: bool,
    /// Skip the login and consent pages.
    #[arg(long)]
    insecure_auto_approve: bool,
    /// Key for upstream tokens at rest.
    #[arg(long, value_name = "HEX")]
    encryption_key: Option<String>,
    /// Let the hardened fetcher (CIMD) reach loopback addresses.
    #[arg(long)]
    allow_loopback_fetch: bool,
}

impl Unavailable {
    /// The first option given, by its flag name.
    fn first_given(&self) -> Option<&'static str> {
        [
            ("--store", self.store.is_some()),
            ("--dev-user", self.dev_user.is_some()),
            ("--upstream-issuer", self.upstream_issuer.is_some()),
            ("--upstream-client-id", self.upstream_client_id.is_some()),
            ("--upstream-client-secret", self.upstream_client_secret.is_some()),
            ("--upstream-scopes", self.upstream_scopes.is_some()),
            ("--verify-id-token", self.verify_id_token),
            ("--insecure-auto-approve", self.insecure_auto_approve),
            ("--encryption-key", self.encryption_key.is_some()),
            ("--allow-loopback-fetch", self.allow_loopback_fetch),
        ]
        .into_iter()
        .find_map(|(name, given)| given.then_some(name))
    }
}

/// A startup failure: a usage or configuration problem (exit 2) or a runtime one (exit 1).
enum Failure {
    Usage(String),
    Runtime(String),
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("mcp_server: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(message)) => {
            eprintln!("mcp_server: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Failure> {
    if let Some(flag) = args.unavailable.first_given() {
        return Err(Failure::Usage(format!(
            "{flag} is not available in this version: the built-in authorization server is not part \
             of this release. Use --authorization-server URL to trust an external one."
        )));
    }
    let issuer = match (&args.authorization_server, args.insecure_no_auth) {
        (Some(issuer), false) => Some(issuer.clone()),
        (None, true) => None,
        _ => {
            return Err(Failure::Usage(
                "choose a mode:\n  \
                 --authorization-server URL   protect /mcp with tokens from that authorization server \
                 (resource-server mode)\n  \
                 --insecure-no-auth           serve /mcp with no protection (benchmark baseline only)\n\
                 (the built-in authorization server is not part of this release)"
                    .into(),
            ));
        }
    };

    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(|e| Failure::Runtime(format!("cannot listen on {}: {e}", args.bind)))?;
    let addr = listener.local_addr().map_err(|e| Failure::Runtime(format!("local address: {e}")))?;
    let public_url = public_url(args.public_url.as_ref(), addr)?;

    let mut origins = vec![public_url.clone()];
    for extra in &args.allow_origin {
        let url = Url::parse(extra).map_err(|e| Failure::Usage(format!("--allow-origin {extra:?}: {e}")))?;
        origins.push(url);
    }
    let mcp_config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(allowed_hosts(&public_url)?)
        .with_allowed_origins(origins.iter().map(origin_with_port).collect::<Result<Vec<_>, _>>()?);
    let cancel = mcp_config.cancellation_token.clone();
    let with_auth = issuer.is_some();
    let mcp = StreamableHttpService::new(
        move || Ok(Tools::new(with_auth)),
        Arc::new(LocalSessionManager::default()),
        mcp_config,
    );
    let cors = cors(&origins)?;

    let app = match issuer {
        None => {
            eprintln!(
                "WARNING: --insecure-no-auth: /mcp is served with NO authorization. Anyone who can reach \
                 {addr} can call every tool. Use this only as a benchmark baseline."
            );
            Router::new().route_service("/mcp", ServiceBuilder::new().layer(cors).service(mcp))
        }
        Some(issuer) => {
            let resource = ProtectedResource::builder(format!("{}/mcp", public_url.as_str().trim_end_matches('/')))
                .authorization_server(&issuer)
                .scopes_supported(SCOPES)
                .challenge_scopes([DEFAULT_SCOPE])
                .serve_root_metadata(true)
                .build()
                .map_err(|e| Failure::Usage(format!("protected resource: {e}")))?;
            let mut verifier = JwtVerifier::builder().issuer(Issuer::discover(&issuer)).resource(&resource);
            if let Some(path) = &args.trust_ca {
                let pem =
                    std::fs::read(path).map_err(|e| Failure::Usage(format!("--trust-ca {}: {e}", path.display())))?;
                verifier = verifier.trust_root_certificate(pem);
            }
            let verifier = verifier.build().map_err(|e| Failure::Usage(format!("token verifier: {e}")))?;
            let policy = ScopePolicy::builder()
                .mcp_tool("echo", Requirement::all(["mcp:read"]))
                .mcp_tool("admin_ping", Requirement::all(["mcp:admin"]))
                .build()
                .map_err(|e| Failure::Usage(format!("scope policy: {e}")))?;

            let protected = ServiceBuilder::new()
                .layer(cors)
                .layer(BearerAuthLayer::new(resource.clone()))
                .layer(ClaimsExtractLayer::new(verifier, resource.clone()))
                .layer(SessionBindingLayer::new())
                .layer(ScopeGuardLayer::new(policy, resource.clone()))
                .service(mcp);
            let mut app = Router::new().route_service("/mcp", protected);
            for path in resource.metadata_paths() {
                app = app.route_service(path, ProtectedResourceMetadata::new(resource.clone()));
            }
            tracing::info!(resource = resource.resource(), authorization_server = %issuer, "resource-server mode");
            app
        }
    };

    println!("listening on http://{addr}/mcp");
    std::io::stdout().flush().map_err(|e| Failure::Runtime(format!("stdout: {e}")))?;

    let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown_signal(args.exit_on_stdin_eof).await;
        // Ends rmcp's sessions and SSE streams, so graceful shutdown does not wait on them.
        cancel.cancel();
        let _ = stopping_tx.send(true);
    });
    tokio::select! {
        result = serve => result.map_err(|e| Failure::Runtime(format!("server: {e}")))?,
        _ = async {
            let _ = stopping.wait_for(|stopping| *stopping).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => tracing::warn!("connections still open {SHUTDOWN_GRACE:?} after shutdown began; exiting"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// `--public-url`, which must be a bare origin, or `http://ADDR`.
fn public_url(given: Option<&Url>, addr: SocketAddr) -> Result<Url, Failure> {
    let url = match given {
        Some(url) => url.clone(),
        None => Url::parse(&format!("http://{addr}")).map_err(|e| Failure::Usage(format!("public URL: {e}")))?,
    };
    if !matches!(url.scheme(), "http" | "https")
        || url.host().is_none()
        || url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
    {
        return Err(Failure::Usage(format!(
            "--public-url must be an http(s) origin without path, query or credentials, e.g. \
             https://mcp.example.com (got {url})"
        )));
    }
    Ok(url)
}

/// `scheme://host:port` with an explicit port, for rmcp's Origin check (which reads a
/// port-less entry as "any port").
fn origin_with_port(url: &Url) -> Result<String, Failure> {
    match (url.host_str(), url.port_or_known_default()) {
        (Some(host), Some(port)) if matches!(url.scheme(), "http" | "https") => {
            Ok(format!("{}://{host}:{port}", url.scheme()))
        }
        _ => Err(Failure::Usage(format!("{url} is not an http(s) origin"))),
    }
}

/// The `Host` values rmcp accepts: the public host, bare and with its port (DNS-rebinding
/// protection: a request naming any other host is refused with 403).
fn allowed_hosts(url: &Url) -> Result<Vec<String>, Failure> {
    match (url.host_str(), url.port_or_known_default()) {
        (Some(host), Some(port)) => Ok(vec![host.to_owned(), format!("{host}:{port}")]),
        _ => Err(Failure::Usage(format!("{url} has no host"))),
    }
}

/// CORS for browser-based clients, answered before authentication (preflights carry no token).
fn cors(origins: &[Url]) -> Result<CorsLayer, Failure> {
    let origins = origins
        .iter()
        // As browsers send it: default ports omitted.
        .map(|url| url.origin().ascii_serialization())
        .map(|o| HeaderValue::from_str(&o).map_err(|_| Failure::Usage(format!("invalid origin {o:?}"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("mcp-protocol-version"),
            HeaderName::from_static("mcp-session-id"),
            HeaderName::from_static("last-event-id"),
            HeaderName::from_static("mcp-method"),
            HeaderName::from_static("mcp-name"),
        ])
        .expose_headers([header::WWW_AUTHENTICATE, HeaderName::from_static("mcp-session-id")])
        .max_age(Duration::from_secs(600)))
}

/// Ctrl-C, SIGTERM, or (with `--exit-on-stdin-eof`) the end of stdin.
async fn shutdown_signal(exit_on_stdin_eof: bool) {
    let stdin_eof = async {
        if !exit_on_stdin_eof {
            return std::future::pending().await;
        }
        // A plain thread: tokio's stdin cannot be cancelled and would hold up runtime shutdown.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            let _ = tx.send(());
        });
        let _ = rx.await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C: shutting down"),
        _ = terminate => tracing::info!("SIGTERM: shutting down"),
        _ = stdin_eof => tracing::info!("stdin closed: shutting down"),
    }
}

// ---------------------------------------------------------------------------------------------
// The MCP tools.

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct EchoArgs {
    /// The text to send back.
    text: String,
}

#[derive(Clone)]
struct Tools {
    tool_router: ToolRouter<Self>,
}

impl Tools {
    fn new(with_auth: bool) -> Self {
        let whoami = if with_auth { Self::whoami_router() } else { Self::anonymous_whoami_router() };
        Self { tool_router: Self::tool_router() + whoami }
    }
}

#[tool_router]
impl Tools {
    #[tool(description = "Returns the text it is given. Needs the mcp:read scope.")]
    fn echo(&self, Parameters(EchoArgs { text }): Parameters<EchoArgs>) -> String {
        text
    }

    #[tool(description = "Answers \"pong\". Needs the mcp:admin scope.")]
    fn admin_ping(&self) -> String {
        "pong".to_owned()
    }
}

#[tool_router(router = whoami_router)]
impl Tools {
    /// `AccessToken` as a tool parameter: the token verified for this very HTTP request.
    #[tool(description = "Returns the caller's verified access token (sub, client_id, scopes, aud, iss, exp).")]
    fn whoami(&self, token: AccessToken) -> Result<String, ErrorData> {
        serde_json::to_string(&token)
            .map_err(|e| ErrorData::internal_error(format!("serializing the token: {e}"), None))
    }
}

#[tool_router(router = anonymous_whoami_router)]
impl Tools {
    #[tool(name = "whoami", description = "No authorization on this server: always null.")]
    fn whoami_anonymous(&self) -> String {
        "null".to_owned()
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Tools {}
