//! `cimd`: write and check Client ID Metadata Documents.
//!
//! ```text
//! cimd create --client-id https://app.example/mcp-client.json --name "Example" \
//!     --redirect-uri http://127.0.0.1:33418/callback [--out client.json]
//! cimd validate https://app.example/mcp-client.json
//! ```
//!
//! `validate` fetches the document with the same hardened fetcher and the same rules as the
//! authorization server, and prints what the server would decide and why. Exit status: 0
//! accepted, 1 refused, 2 usage error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::Value;
use tower_mcp_auth::cimd::{CimdConfig, CimdError, ClientMetadataDocument, HostDecision, check_client_id};
use tower_mcp_auth::net::SafeFetcher;

#[derive(Parser, Debug)]
#[command(name = "cimd", version, about = "Write and check OAuth Client ID Metadata Documents (MCP)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a valid document (checked with the server's rules before it is written).
    Create {
        /// The URL the document will be served at: it is the client ID.
        #[arg(long, value_name = "URL")]
        client_id: String,
        /// The name shown on consent pages.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// A redirect URI (https, loopback http, or a private-use scheme); can be repeated.
        #[arg(long = "redirect-uri", value_name = "URI", required = true)]
        redirect_uris: Vec<String>,
        /// Authenticate at the token endpoint with private_key_jwt, keys published at this URL.
        #[arg(long, value_name = "URL", conflicts_with = "jwks")]
        jwks_uri: Option<String>,
        /// Authenticate at the token endpoint with private_key_jwt, keys (a JWKS file) inline.
        #[arg(long, value_name = "FILE")]
        jwks: Option<PathBuf>,
        /// Write to this file instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Fetch a document as an authorization server would and print the decision.
    Validate {
        /// The client ID (the document's URL).
        url: String,
        /// Allow loopback addresses (a document served on this machine, for development).
        #[arg(long)]
        allow_loopback: bool,
        /// An extra trusted root certificate (PEM file).
        #[arg(long, value_name = "PEM_FILE")]
        trust_ca: Option<PathBuf>,
        /// Trusted hosts of the server's policy (`example.com` or `*.example.com`).
        #[arg(long, value_name = "HOST")]
        allow_host: Vec<String>,
        /// Refused hosts of the server's policy.
        #[arg(long, value_name = "HOST")]
        deny_host: Vec<String>,
        /// The server accepts allowed hosts only.
        #[arg(long)]
        only_allowed: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Create { client_id, name, redirect_uris, jwks_uri, jwks, out } => {
            create(&client_id, &name, &redirect_uris, jwks_uri, jwks, out)
        }
        Command::Validate { url, allow_loopback, trust_ca, allow_host, deny_host, only_allowed } => {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cimd: cannot start: {e}");
                    return ExitCode::from(2);
                }
            };
            runtime.block_on(validate(&url, allow_loopback, trust_ca, allow_host, deny_host, only_allowed))
        }
    }
}

fn usage(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("cimd: {message}");
    ExitCode::from(2)
}

fn create(
    client_id: &str,
    name: &str,
    redirect_uris: &[String],
    jwks_uri: Option<String>,
    jwks: Option<PathBuf>,
    out: Option<PathBuf>,
) -> ExitCode {
    if let Err(e) = check_client_id(client_id, false) {
        return usage(format!("--client-id: {e}"));
    }
    let mut doc = tower_mcp_auth::cimd::document::template(client_id, name, redirect_uris);
    if let Some(uri) = jwks_uri {
        doc["token_endpoint_auth_method"] = Value::from("private_key_jwt");
        doc["jwks_uri"] = Value::from(uri);
    }
    if let Some(path) = jwks {
        let keys: Value = match std::fs::read(&path).map(|b| serde_json::from_slice(&b)) {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return usage(format!("--jwks {}: {e}", path.display())),
            Err(e) => return usage(format!("--jwks {}: {e}", path.display())),
        };
        doc["token_endpoint_auth_method"] = Value::from("private_key_jwt");
        doc["jwks"] = keys;
    }
    let text = match serde_json::to_string_pretty(&doc) {
        Ok(t) => t + "\n",
        Err(e) => return usage(e),
    };
    // The same rules the server applies to what it fetches.
    if let Err(e) = ClientMetadataDocument::parse(client_id, text.as_bytes(), redirect_uri_allowed) {
        return usage(format!("the document would be refused: {e}"));
    }
    match out {
        Some(path) => match std::fs::write(&path, &text) {
            Ok(()) => {
                eprintln!("wrote {} (serve it at {client_id} as application/json)", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => usage(format!("--out {}: {e}", path.display())),
        },
        None => {
            print!("{text}");
            ExitCode::SUCCESS
        }
    }
}

/// The server's redirect URI policy (https, loopback http, private-use scheme with a dot).
fn redirect_uri_allowed(uri: &str) -> bool {
    tower_mcp_auth::server::redirect_uri_allowed(uri)
}

async fn validate(
    url: &str,
    allow_loopback: bool,
    trust_ca: Option<PathBuf>,
    allow_host: Vec<String>,
    deny_host: Vec<String>,
    only_allowed: bool,
) -> ExitCode {
    let mut fetcher = SafeFetcher::builder().allow_loopback(allow_loopback);
    if let Some(path) = trust_ca {
        match std::fs::read(&path) {
            Ok(pem) => fetcher = fetcher.trust_root_certificate(pem),
            Err(e) => return usage(format!("--trust-ca {}: {e}", path.display())),
        }
    }
    let fetcher = match fetcher.build() {
        Ok(f) => f,
        Err(e) => return usage(e),
    };
    let config =
        CimdConfig::new(fetcher).allow_hosts(allow_host).deny_hosts(deny_host).only_allowed_hosts(only_allowed);
    match config.fetch_and_validate(url).await {
        Ok(v) => {
            let d = &v.document;
            println!("ACCEPTED {url}");
            println!("  client_name: {}", d.client_name());
            println!("  verified domain: {}", d.domain());
            println!("  redirect_uris: {}", d.redirect_uris().join(", "));
            println!("  token_endpoint_auth_method: {}", d.token_endpoint_auth_method());
            println!("  cached for: {} s", v.ttl.as_secs());
            let policy = match v.decision {
                HostDecision::AutoApproved => "trusted host, consent skipped",
                HostDecision::Trusted => "trusted host, consent asked",
                _ => "consent asked",
            };
            println!("  policy: {policy}");
            if d.localhost_only() {
                println!("  warning: only localhost redirect URIs; the consent page warns the user");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("REFUSED {url}");
            println!("  reason: {e}");
            if matches!(e, CimdError::ClientId(_) | CimdError::HostRefused) {
                println!("  (decided before any network access)");
            }
            ExitCode::from(1)
        }
    }
}
