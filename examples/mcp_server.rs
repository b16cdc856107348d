//! A real MCP server (rmcp, streamable HTTP) at `/mcp`, protected by tower-mcp-auth.
//!
//! ```text
//! request ─▶ CORS ─▶ ClaimsExtractLayer<JwtVerifier> ─▶ SessionBindingLayer
//!         ─▶ ScopeGuardLayer ─▶ rmcp
//! ```
//!
//! (`SessionBindingLayer` ties each MCP session to the user and client that opened it: another
//! principal presenting the session id gets 404.)
//!
//! By default the built-in authorization server issues the tokens, with a development login
//! (one local user, `--dev-user`); with `--upstream-issuer URL --upstream-client-id ID
//! --upstream-client-secret S` it is an OAuth proxy to that OpenID Connect provider (its
//! callback is `{public-url}/callback`; `--verify-id-token` for providers whose access tokens
//! are opaque). Its state is kept in `--store` (default `sqlite:mcp-auth.db`).
//!
//! Modes:
//!
//! ```text
//! cargo run --release --example mcp_server                       # built-in authorization server, development login
//! cargo run --release --example mcp_server -- \
//!     --upstream-issuer https://login.example.com/realms/acme \
//!     --upstream-client-id mcp --upstream-client-secret … --encryption-key …   # OAuth proxy to an OIDC provider
//! cargo run --release --example mcp_server -- \
//!     --authorization-server https://login.example.com/realms/acme           # external authorization server only
//! ```
//!
//! The authorization server's endpoints sit at the origin root. `--insecure-no-auth` serves
//! the same tools with no protection at all (a benchmark baseline).
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
use axum::extract::ConnectInfo;
use axum::http::{HeaderName, HeaderValue, Method, header};
use clap::Parser;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, ServerHandler, schemars, tool, tool_handler, tool_router};
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;
use tower_mcp_auth::cimd::CimdConfig;
use tower_mcp_auth::net::SafeFetcher;
use tower_mcp_auth::redact::redact_uri;
use tower_mcp_auth::scope_guard::{Requirement, ScopeGuardLayer, ScopePolicy};
use tower_mcp_auth::server::{AuthorizationServer, PeerAddr};
use tower_mcp_auth::session::SessionBindingLayer;
use tower_mcp_auth::store::crypto::EncryptionKeys;
use tower_mcp_auth::store::{MemoryStore, RedisStore, SqliteStore, Store};
use tower_mcp_auth::upstream::{DevLogin, OidcUpstream, Upstream};
use tower_mcp_auth::verify::{Issuer, TokenVerifier};
use tower_mcp_auth::{AccessToken, ClaimsExtractLayer, JwtVerifier, ProtectedResource, ProtectedResourceMetadata};
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
    /// (default: http://ADDR). The protected resource is {public-url}/mcp; the built-in
    /// authorization server's issuer is {public-url}.
    #[arg(long, value_name = "URL")]
    public_url: Option<Url>,

    /// Storage of the built-in authorization server: memory, sqlite:PATH, or
    /// redis://[:PASSWORD@]HOST:PORT[/DB] (rediss:// for TLS) shared by several instances
    /// (needs --encryption-key).
    #[arg(long, value_name = "URI", default_value = "sqlite:mcp-auth.db")]
    store: String,

    /// The development login's one local user (the default mode).
    #[arg(long, value_name = "NAME", default_value = "developer")]
    dev_user: String,

    /// OAuth proxy mode: users sign in at this OpenID Connect provider (discovery).
    #[arg(long, value_name = "URL", requires = "upstream_client_id")]
    upstream_issuer: Option<String>,

    /// The proxy's client id at the upstream provider.
    #[arg(long, value_name = "ID", requires = "upstream_issuer")]
    upstream_client_id: Option<String>,

    /// The proxy's client secret at the upstream provider (also env MCP_AUTH_UPSTREAM_CLIENT_SECRET).
    #[arg(long, value_name = "SECRET", env = "MCP_AUTH_UPSTREAM_CLIENT_SECRET", hide_env_values = true)]
    upstream_client_secret: Option<String>,

    /// Scopes requested upstream, space-separated (default: openid email profile).
    #[arg(long, value_name = "SCOPES")]
    upstream_scopes: Option<String>,

    /// Identify users by the upstream ID token (providers whose access tokens are opaque).
    #[arg(long, requires = "upstream_issuer")]
    verify_id_token: bool,

    /// The `aud` the upstream provider's JWT access tokens carry (default: the client id;
    /// e.g. `account` for Keycloak, the API identifier for Auth0). Not used with
    /// --verify-id-token.
    #[arg(long, value_name = "AUD", requires = "upstream_issuer", conflicts_with = "verify_id_token")]
    upstream_access_token_audience: Option<String>,

    /// Resource-server mode: trust the tokens of this external authorization server (its
    /// issuer identifier; keys found by OIDC / RFC 8414 discovery). No built-in server.
    #[arg(long, value_name = "URL", conflicts_with_all = ["upstream_issuer", "insecure_auto_approve"])]
    authorization_server: Option<String>,

    /// Skip the consent and development login pages (automated tests only).
    #[arg(long)]
    insecure_auto_approve: bool,

    /// Key (64 hex characters) that encrypts upstream tokens and signing keys at rest.
    #[arg(long, value_name = "HEX", env = "MCP_AUTH_ENCRYPTION_KEY", hide_env_values = true)]
    encryption_key: Option<String>,

    /// Extra root certificate (PEM) for outbound fetches (discovery, JWKS, upstream).
    #[arg(long, value_name = "PEM_FILE")]
    trust_ca: Option<PathBuf>,

    /// Another browser origin allowed to call /mcp (CORS and rmcp's Origin check); the
    /// public URL's own origin is always allowed. Can be repeated.
    #[arg(long, value_name = "ORIGIN")]
    allow_origin: Vec<String>,

    /// Serve the MCP server with NO authorization at all (benchmark baseline only).
    #[arg(long, conflicts_with_all = ["authorization_server", "upstream_issuer", "trust_ca"])]
    insecure_no_auth: bool,

    /// Exit when stdin reaches end-of-file (lets a parent process tie our lifetime to its own).
    #[arg(long)]
    exit_on_stdin_eof: bool,

    /// Let the hardened fetcher (client ID metadata documents and client key sets) reach
    /// loopback addresses. Local development and tests only.
    #[arg(long, conflicts_with_all = ["authorization_server", "insecure_no_auth"])]
    allow_loopback_fetch: bool,

    /// Refuse client ID metadata documents (URL client IDs); dynamic registration remains.
    #[arg(long, conflicts_with_all = ["authorization_server", "insecure_no_auth", "allow_loopback_fetch"])]
    no_cimd: bool,

    /// A host whose client ID metadata documents are trusted (`example.com` or
    /// `*.example.com`); can be repeated.
    #[arg(long, value_name = "HOST")]
    cimd_allow_host: Vec<String>,

    /// A host whose client ID metadata documents are refused; can be repeated.
    #[arg(long, value_name = "HOST")]
    cimd_deny_host: Vec<String>,

    /// Accept client ID metadata documents from --cimd-allow-host hosts only.
    #[arg(long)]
    cimd_only_allowed: bool,

    /// Serve MCP without sessions: every request stands alone (no Mcp-Session-Id), so any
    /// instance behind a load balancer can answer any request. Without it, sessions live in
    /// this process and a load balancer must keep each session on one instance.
    #[arg(long)]
    stateless: bool,

    /// Check every access token against the store's revocations (revoked tokens stop at
    /// once, but each MCP request reads the store and fails with 503 while it is down).
    /// Without it, verification reads no store: a revoked grant can no longer be refreshed,
    /// and its access tokens end with their lifetime (10 minutes).
    #[arg(long, conflicts_with_all = ["authorization_server", "insecure_no_auth"])]
    revocation_check: bool,

    /// A reverse proxy or load balancer (address or CIDR network, e.g. 10.0.0.0/8) whose
    /// X-Forwarded-For header names the client address that rate limits count; can be
    /// repeated. Without it the header is ignored.
    #[arg(long, value_name = "CIDR", conflicts_with_all = ["authorization_server", "insecure_no_auth"])]
    trusted_proxy: Vec<String>,
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

/// How /mcp is protected.
enum Mode {
    NoAuth,
    /// Tokens of an external authorization server.
    External(String),
    /// The built-in authorization server, with this identity provider.
    BuiltIn(Arc<dyn Upstream>, &'static str),
}

fn mode(args: &Args) -> Result<Mode, Failure> {
    if args.insecure_no_auth {
        return Ok(Mode::NoAuth);
    }
    if let Some(issuer) = &args.authorization_server {
        return Ok(Mode::External(issuer.clone()));
    }
    let Some(issuer) = &args.upstream_issuer else {
        return Ok(Mode::BuiltIn(Arc::new(DevLogin::new(args.dev_user.clone())), "development login"));
    };
    let mut upstream = OidcUpstream::builder(issuer.clone())
        .client_id(args.upstream_client_id.clone().unwrap_or_default())
        .verify_id_token(args.verify_id_token);
    if let Some(secret) = &args.upstream_client_secret {
        upstream = upstream.client_secret(secret.clone());
    }
    if let Some(aud) = &args.upstream_access_token_audience {
        upstream = upstream.access_token_audience(aud.clone());
    }
    if let Some(scopes) = &args.upstream_scopes {
        upstream = upstream.scopes(scopes.split(' ').filter(|s| !s.is_empty()).map(str::to_owned));
    }
    if let Some(path) = &args.trust_ca {
        let pem = std::fs::read(path).map_err(|e| Failure::Usage(format!("--trust-ca {}: {e}", path.display())))?;
        upstream = upstream.trust_root_certificate(pem);
    }
    let upstream = upstream.build().map_err(|e| Failure::Usage(format!("upstream provider: {e}")))?;
    Ok(Mode::BuiltIn(Arc::new(upstream), "OAuth proxy"))
}

/// The store named by `--store`, and where a development key file may be written beside it
/// (`None` for memory, which keeps nothing, and for Redis, which needs `--encryption-key`).
///
/// Redis is persistent and shared by every instance, and no key file can be written beside
/// it: it always needs the encryption key from `--encryption-key` / `MCP_AUTH_ENCRYPTION_KEY`,
/// also in development mode, so that all instances (and restarts) can open what the others
/// sealed.
async fn open_store(uri: &str, encryption_key_given: bool) -> Result<(Arc<dyn Store>, Option<PathBuf>), Failure> {
    if uri == "memory" {
        return Ok((Arc::new(MemoryStore::new()), None));
    }
    if let Some(path) = uri.strip_prefix("sqlite:") {
        let store = SqliteStore::open(path).map_err(|e| Failure::Runtime(format!("--store {uri}: {e}")))?;
        return Ok((Arc::new(store), Some(PathBuf::from(path))));
    }
    if uri.starts_with("redis://") || uri.starts_with("rediss://") {
        if !encryption_key_given {
            return Err(Failure::Usage(
                "--store redis: a Redis store is persistent and shared by every instance, so it needs their common \
                 encryption key for the upstream tokens: pass --encryption-key HEX (64 hex characters) or set \
                 MCP_AUTH_ENCRYPTION_KEY"
                    .into(),
            ));
        }
        // The error names the server without its password.
        let store = RedisStore::connect(uri).await.map_err(|e| Failure::Runtime(format!("--store: {e}")))?;
        return Ok((Arc::new(store), None));
    }
    Err(Failure::Usage(format!(
        "--store must be memory, sqlite:PATH, redis://HOST:PORT or rediss://HOST:PORT (got {:?})",
        uri.split_once("://").map_or(uri, |(scheme, _)| scheme)
    )))
}

/// The encryption key: `--encryption-key` / `MCP_AUTH_ENCRYPTION_KEY`; a fresh one for a
/// memory store; for the development login on SQLite, a key file beside the database.
fn encryption_key(args: &Args, persistent: Option<&PathBuf>, dev: bool) -> Result<EncryptionKeys, Failure> {
    if let Some(hex) = &args.encryption_key {
        return EncryptionKeys::from_hex(1, hex).map_err(|e| Failure::Usage(format!("--encryption-key: {e}")));
    }
    let Some(db) = persistent else { return Ok(EncryptionKeys::generate()) };
    if !dev {
        return Err(Failure::Usage(
            "a persistent store needs an encryption key for the upstream tokens: pass --encryption-key HEX \
             (64 hex characters) or set MCP_AUTH_ENCRYPTION_KEY"
                .into(),
        ));
    }
    let key_path = PathBuf::from(format!("{}.key", db.display()));
    let hex = match std::fs::read_to_string(&key_path) {
        Ok(hex) => hex,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).map_err(|_| Failure::Runtime("no randomness".into()))?;
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            write_private(&key_path, &hex).map_err(|e| Failure::Runtime(format!("{}: {e}", key_path.display())))?;
            eprintln!(
                "mcp_server: development mode: created the encryption key {} (keep it with the database)",
                key_path.display()
            );
            hex
        }
        Err(e) => return Err(Failure::Runtime(format!("{}: {e}", key_path.display()))),
    };
    EncryptionKeys::from_hex(1, &hex).map_err(|e| Failure::Usage(format!("{}: {e}", key_path.display())))
}

fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())
}

async fn run(args: Args) -> Result<(), Failure> {
    let mode = mode(&args)?;
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(|e| Failure::Runtime(format!("cannot listen on {}: {e}", args.bind)))?;
    let addr = listener.local_addr().map_err(|e| Failure::Runtime(format!("local address: {e}")))?;
    let public_url = public_url(args.public_url.as_ref(), addr)?;
    let base = public_url.as_str().trim_end_matches('/').to_owned();

    let mut origins = vec![public_url.clone()];
    for extra in &args.allow_origin {
        let url = Url::parse(extra).map_err(|e| Failure::Usage(format!("--allow-origin {extra:?}: {e}")))?;
        origins.push(url);
    }
    let mcp_config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(!args.stateless)
        .with_json_response(args.stateless)
        .with_allowed_hosts(allowed_hosts(&public_url)?)
        .with_allowed_origins(origins.iter().map(origin_with_port).collect::<Result<Vec<_>, _>>()?);
    let cancel = mcp_config.cancellation_token.clone();
    let with_auth = !matches!(mode, Mode::NoAuth);
    let mcp = StreamableHttpService::new(
        move || Ok(Tools::new(with_auth)),
        Arc::new(LocalSessionManager::default()),
        mcp_config,
    );
    let cors = cors(&origins)?;

    let resource = |issuer: &str| {
        ProtectedResource::builder(format!("{base}/mcp"))
            .authorization_server(issuer)
            .scopes_supported(SCOPES)
            .challenge_scopes([DEFAULT_SCOPE])
            .serve_root_metadata(true)
            .build()
            .map_err(|e| Failure::Usage(format!("protected resource: {e}")))
    };
    let app = match mode {
        Mode::NoAuth => {
            eprintln!(
                "WARNING: --insecure-no-auth: /mcp is served with NO authorization. Anyone who can reach \
                 {addr} can call every tool. Use this only as a benchmark baseline."
            );
            Router::new().route_service("/mcp", ServiceBuilder::new().layer(cors).service(mcp))
        }
        Mode::External(issuer) => {
            let resource = resource(&issuer)?;
            let mut verifier = JwtVerifier::builder().issuer(Issuer::discover(&issuer)).resource(&resource);
            if let Some(path) = &args.trust_ca {
                let pem =
                    std::fs::read(path).map_err(|e| Failure::Usage(format!("--trust-ca {}: {e}", path.display())))?;
                verifier = verifier.trust_root_certificate(pem);
            }
            let verifier = verifier.build().map_err(|e| Failure::Usage(format!("token verifier: {e}")))?;
            tracing::info!(resource = resource.resource(), authorization_server = %issuer, "resource-server mode");
            protected(mcp, cors, &resource, verifier)?
        }
        Mode::BuiltIn(upstream, label) => {
            let resource = resource(&base)?;
            let dev = upstream.as_dev_login().is_some();
            let (store, persistent) = open_store(&args.store, args.encryption_key.is_some()).await?;
            let keys = encryption_key(&args, persistent.as_ref(), dev)?;
            let mut server = AuthorizationServer::builder(base.clone(), resource.clone())
                .store(store.clone())
                .encryption_keys(keys)
                .upstream(upstream)
                .revocation_check(args.revocation_check)
                .trusted_proxies(args.trusted_proxy.iter().cloned());
            if !args.no_cimd {
                server = server.client_id_metadata_documents(cimd_config(&args)?);
            }
            if args.insecure_auto_approve {
                eprintln!(
                    "WARNING: --insecure-auto-approve: no consent page and no login page. Any client can obtain \
                     tokens. Use this only in automated tests."
                );
                server = server.insecure_auto_approve();
            }
            let server = server.build().await.map_err(|e| Failure::Usage(format!("authorization server: {e}")))?;
            // The store's Debug form, not --store: a Redis URL may carry a password.
            tracing::info!(issuer = %base, store = ?store, "{label} mode: built-in authorization server");
            // Only the authorization server's endpoints need the client's address. Their
            // requests are traced (DEBUG) with the URI redacted: codes and states travel in
            // query strings.
            let trace = TraceLayer::new_for_http().make_span_with(|req: &axum::extract::Request| {
                tracing::debug_span!("request", method = %req.method(), uri = %redact_uri(req.uri()))
            });
            let endpoints = ServiceBuilder::new().layer(trace).map_request(peer_addr).service(server.service());
            protected(mcp, cors, &resource, server.verifier())?.fallback_service(endpoints)
        }
    };

    println!("listening on http://{addr}/mcp");
    std::io::stdout().flush().map_err(|e| Failure::Runtime(format!("stdout: {e}")))?;

    let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
    let serve = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).with_graceful_shutdown(
        async move {
            shutdown_signal(args.exit_on_stdin_eof).await;
            // Ends rmcp's sessions and SSE streams, so graceful shutdown does not wait on them.
            cancel.cancel();
            let _ = stopping_tx.send(true);
        },
    );
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

/// Client ID metadata documents: fetched through the hardened fetcher.
fn cimd_config(args: &Args) -> Result<CimdConfig, Failure> {
    let mut fetcher = SafeFetcher::builder().allow_loopback(args.allow_loopback_fetch);
    if args.allow_loopback_fetch {
        eprintln!(
            "WARNING: --allow-loopback-fetch: client metadata documents and key sets may be fetched from this \
             machine's loopback addresses. Use this only for local development and tests."
        );
    }
    if let Some(path) = &args.trust_ca {
        let pem = std::fs::read(path).map_err(|e| Failure::Usage(format!("--trust-ca {}: {e}", path.display())))?;
        fetcher = fetcher.trust_root_certificate(pem);
    }
    let fetcher = fetcher.build().map_err(|e| Failure::Usage(format!("fetcher: {e}")))?;
    Ok(CimdConfig::new(fetcher)
        .allow_hosts(args.cimd_allow_host.iter().cloned())
        .deny_hosts(args.cimd_deny_host.iter().cloned())
        .only_allowed_hosts(args.cimd_only_allowed))
}

/// The client's address, for the authorization server's per-address rate limits.
fn peer_addr(mut req: axum::extract::Request) -> axum::extract::Request {
    if let Some(ConnectInfo(addr)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() {
        req.extensions_mut().insert(PeerAddr(addr.ip()));
    }
    req
}

/// /mcp behind the resource-server layers, and the protected resource metadata.
fn protected<V>(
    mcp: StreamableHttpService<Tools, LocalSessionManager>,
    cors: CorsLayer,
    resource: &ProtectedResource,
    verifier: V,
) -> Result<Router, Failure>
where
    V: TokenVerifier + Clone,
{
    let policy = ScopePolicy::builder()
        .mcp_tool("echo", Requirement::all(["mcp:read"]))
        .mcp_tool("admin_ping", Requirement::all(["mcp:admin"]))
        .build()
        .map_err(|e| Failure::Usage(format!("scope policy: {e}")))?;
    let protected = ServiceBuilder::new()
        .layer(cors)
        // Reads the bearer token itself (no BearerAuthLayer needed), with its token cache.
        .layer(ClaimsExtractLayer::new(verifier, resource.clone()))
        .layer(SessionBindingLayer::new())
        .layer(ScopeGuardLayer::new(policy, resource.clone()))
        .service(mcp);
    let mut app = Router::new().route_service("/mcp", protected);
    for path in resource.metadata_paths() {
        app = app.route_service(path, ProtectedResourceMetadata::new(resource.clone()));
    }
    Ok(app)
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
