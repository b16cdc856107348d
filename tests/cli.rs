//! The `cimd` command (feature `cli`): `create` writes documents the server accepts; `validate`
//! fetches with the server's fetcher and rules and explains the decision. Documents are served
//! over https on loopback (name `localhost`) with a test CA.
#![cfg(feature = "cli")]

mod support;

use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use support::tls::{TestCa, TlsFront};
use tokio::net::TcpListener;
use tokio::process::Command;
use tower_mcp_auth::cimd::ClientMetadataDocument;

const CIMD: &str = env!("CARGO_BIN_EXE_cimd");

async fn run(args: &[&str], envs: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(CIMD);
    cmd.args(args).kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    tokio::time::timeout(Duration::from_secs(30), cmd.output()).await.expect("cimd timed out").unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Serves JSON documents over https at `localhost` (test CA); `docs` gets the origin (a
/// document's client_id is its own URL) and returns (path, body) pairs. Returns the origin and
/// a hit counter.
async fn serve_docs(
    ca: &TestCa,
    docs: impl FnOnce(&str) -> Vec<(&'static str, String)>,
) -> (String, Arc<AtomicUsize>, TlsFront) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let front = TlsFront::start(ca.leaf(&["localhost"]), backend).await;
    let origin = format!("https://localhost:{}", front.addr.port());
    let hits = Arc::new(AtomicUsize::new(0));
    let mut app = axum::Router::new();
    for (path, body) in docs(&origin) {
        let h = hits.clone();
        app = app.route(
            path,
            axum::routing::get(move || {
                h.fetch_add(1, Ordering::SeqCst);
                let body = body.clone();
                async move { ([("content-type", "application/json")], body) }
            }),
        );
    }
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (origin, hits, front)
}

#[tokio::test]
async fn create_writes_a_document_the_server_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("client.json");
    let id = "https://app.example/mcp/client.json";
    let o = run(
        &[
            "create",
            "--client-id",
            id,
            "--name",
            "Example <App>",
            "--redirect-uri",
            "http://127.0.0.1:33418/callback",
            "--redirect-uri",
            "https://app.example/cb",
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let body = std::fs::read(&out).unwrap();
    let doc = ClientMetadataDocument::parse(id, &body, tower_mcp_auth::server::redirect_uri_allowed).unwrap();
    assert_eq!(doc.client_name(), "Example <App>");
    assert_eq!(doc.redirect_uris().len(), 2);

    // Refused inputs: exit 2 with the reason, nothing written.
    for args in [
        vec![
            "create",
            "--client-id",
            "http://app.example/c.json",
            "--name",
            "x",
            "--redirect-uri",
            "https://a.example/cb",
        ],
        vec!["create", "--client-id", "https://app.example/", "--name", "x", "--redirect-uri", "https://a.example/cb"],
        vec!["create", "--client-id", id, "--name", "x", "--redirect-uri", "http://evil.example/cb"],
    ] {
        let o = run(&args, &[]).await;
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(!String::from_utf8_lossy(&o.stderr).is_empty());
    }
}

#[tokio::test]
async fn validate_explains_the_decision() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let ca_path = ca_file.to_str().unwrap().to_owned();
    let (origin, hits, _front) = serve_docs(&ca, |origin| {
        let good = json!({
            "client_id": format!("{origin}/good.json"),
            "client_name": "Good",
            "redirect_uris": ["http://127.0.0.1:1/cb"],
        });
        let bad = json!({
            "client_id": format!("{origin}/bad.json"),
            "client_name": "Bad",
            "redirect_uris": ["http://127.0.0.1:1/cb"],
            "token_endpoint_auth_method": "client_secret_basic",
        });
        vec![("/good.json", good.to_string()), ("/bad.json", bad.to_string())]
    })
    .await;

    let good_url = format!("{origin}/good.json");
    let o = run(&["validate", &good_url, "--allow-loopback", "--trust-ca", &ca_path], &[]).await;
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&o.stderr));
    assert!(text.starts_with(&format!("ACCEPTED {good_url}")), "{text}");
    assert!(text.contains("verified domain: localhost"), "{text}");
    assert!(text.contains("only localhost redirect URIs"), "{text}");

    let bad_url = format!("{origin}/bad.json");
    let o = run(&["validate", &bad_url, "--allow-loopback", "--trust-ca", &ca_path], &[]).await;
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains("REFUSED") && text.contains("client_secret_basic"), "{text}");

    // Loopback is refused unless allowed, before any connection.
    let before = hits.load(Ordering::SeqCst);
    let o = run(&["validate", &good_url, "--trust-ca", &ca_path], &[]).await;
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("REFUSED"));
    // The URL rules, with no I/O at all.
    let o = run(&["validate", "http://localhost/x.json"], &[]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("before any network access"), "{}", stdout(&o));
    // The trust policy.
    let o = run(&["validate", &good_url, "--allow-loopback", "--trust-ca", &ca_path, "--deny-host", "localhost"], &[])
        .await;
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("trust policy"), "{}", stdout(&o));
    assert_eq!(hits.load(Ordering::SeqCst), before, "refused before any fetch");
}

/// I21: proxy environment variables do not route the fetch (a trap proxy gets no connection).
#[tokio::test]
async fn i21_proxy_environment_is_ignored() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let trap = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap_url = format!("http://{}", trap.local_addr().unwrap());
    let trap_hits = Arc::new(AtomicUsize::new(0));
    let th = trap_hits.clone();
    tokio::spawn(async move {
        while trap.accept().await.is_ok() {
            th.fetch_add(1, Ordering::SeqCst);
        }
    });
    let (origin, hits, _front) = serve_docs(&ca, |origin| {
        let doc = json!({
            "client_id": format!("{origin}/c.json"),
            "client_name": "P",
            "redirect_uris": ["http://127.0.0.1:1/cb"],
        });
        vec![("/c.json", doc.to_string())]
    })
    .await;
    let url = format!("{origin}/c.json");
    let envs: Vec<(&str, String)> =
        ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
            .into_iter()
            .map(|k| (k, trap_url.clone()))
            .collect();
    let o = run(&["validate", &url, "--allow-loopback", "--trust-ca", ca_file.to_str().unwrap()], &envs).await;
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert_eq!(hits.load(Ordering::SeqCst), 1, "fetched directly");
    assert_eq!(trap_hits.load(Ordering::SeqCst), 0, "the proxy was not used");
}
