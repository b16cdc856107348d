//! The official MCP conformance suite (`@modelcontextprotocol/conformance`, `authorization`
//! mode, tests/conformance) against the built-in authorization server of the example MCP server
//! (examples/mcp_server.rs: development login, `--store memory`, `--insecure-auto-approve`).
//!
//! The suite runs its two authorization-server scenarios in one process:
//! `authorization-server-metadata-endpoint` (RFC 8414 metadata) and `authorization-code-grant`
//! (authorization request with PKCE → redirect to its own callback listener → token request).
//! For the second it prints the authorization URL and waits for a browser to come back to its
//! callback; this test is that browser (it follows the redirects, keeping cookies). What each
//! check verifies is listed in tests/conformance/README.md.
//!
//! Needs Node.js 20+ and npm; `npm ci` runs in tests/conformance on first use. The suite is
//! built for Node 22; on Node 20 it is loaded through tests/conformance/shim.mjs.

mod support;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::process::{Proc, ensure_npm, example};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use url::Url;

const SUITE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/conformance");
/// The suite's entry point, relative to [`SUITE_DIR`].
const SUITE_BIN: &str = "node_modules/@modelcontextprotocol/conformance/dist/index.js";
/// Everything after the builds: start the server, run the suite, check its results.
const WHOLE_TEST: Duration = Duration::from_secs(120);
/// Time for the suite to print the authorization URL and start its callback listener.
const SUITE_READY: Duration = Duration::from_secs(30);
/// Time for the suite to finish once the browser has reached its callback.
const SUITE_FINISH: Duration = Duration::from_secs(30);
/// Time for one HTTP exchange of the browser.
const EXCHANGE: Duration = Duration::from_secs(15);
/// The scenarios `conformance authorization` runs, and the checks each must report.
const SCENARIOS: [&str; 2] = ["authorization-server-metadata-endpoint", "authorization-code-grant"];

// ---------------------------------------------------------------------------------------------
// Prerequisites: the Node dependencies and the example binary.

/// `npm ci` in tests/conformance on first use.
fn ensure_node_modules() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        ensure_npm(Path::new(SUITE_DIR), &["node_modules/@modelcontextprotocol/conformance/package.json", SUITE_BIN])
    });
}

/// The Node dependencies and the mcp_server example, built on first use.
async fn prerequisites() -> PathBuf {
    tokio::task::spawn_blocking(|| {
        ensure_node_modules();
        example("mcp_server")
    })
    .await
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// The example server.

/// examples/mcp_server in its default mode (built-in authorization server, development login)
/// with an in-memory store and no consent or login page; returns it and its origin (the
/// issuer, `http://127.0.0.1:PORT`, no trailing slash).
async fn start_server(mcp_server: &Path) -> (Proc, String) {
    let mut server = Proc::spawn(
        "mcp_server",
        Command::new(mcp_server)
            .args(["--bind", "127.0.0.1:0", "--store", "memory", "--insecure-auto-approve", "--exit-on-stdin-eof"])
            .env("RUST_LOG", "info"),
    );
    let line = server.first_line().await.unwrap_or_else(|| panic!("mcp_server did not start:\n{}", server.output()));
    let origin = line
        .strip_prefix("listening on ")
        .and_then(|url| url.strip_suffix("/mcp"))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}\n{}", server.output()))
        .to_owned();
    (server, origin)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(EXCHANGE).redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// Registers the suite's client (RFC 7591): public, PKCE, the suite's callback as redirect URI.
async fn register_client(origin: &str, redirect_uri: &str, server: &Proc) -> String {
    let metadata = json!({
        "client_name": "MCP conformance suite",
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    });
    let res = http()
        .post(format!("{origin}/register"))
        .header("content-type", "application/json")
        .body(metadata.to_string())
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body = res.text().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "registration failed: {body}\nserver output:\n{}", server.output());
    let client: Value = serde_json::from_str(&body).unwrap();
    client["client_id"].as_str().unwrap_or_else(|| panic!("no client_id: {body}")).to_owned()
}

/// A port that was free a moment ago (the redirect URI must be registered before the suite
/// binds it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------------
// The suite.

/// A running `conformance authorization`: its stdout lines as they come, and everything it
/// printed (stdout and stderr) for messages. Killed on drop.
struct Suite {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    output: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl Suite {
    fn spawn(origin: &str, client_id: &str, callback_port: u16, results: &Path) -> Self {
        let mut cmd = Command::new("node");
        // The suite is built for Node 22; shim.mjs supplies the one missing piece on Node 20
        // and does nothing on Node 22+.
        cmd.args(["--import", "./shim.mjs", SUITE_BIN, "authorization"])
            .args(["--url", origin, "--client-id", client_id])
            .args(["--resource", &format!("{origin}/mcp")])
            .args(["--port", &callback_port.to_string()])
            .arg("--output-dir")
            .arg(results)
            .current_dir(SUITE_DIR)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run node (Node.js 20+ is needed): {e}"));
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = mpsc::unbounded_channel();
        let readers = vec![
            tokio::spawn(read_lines(child.stdout.take().unwrap(), output.clone(), Some(tx))),
            tokio::spawn(read_lines(child.stderr.take().unwrap(), output.clone(), None)),
        ];
        Self { child, lines, output, readers }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Reads stdout until the authorization URL (a line starting with `authorize_prefix`) and
    /// the callback listener's start-up line have both appeared; `None` if the suite ended
    /// first. Panics after [`SUITE_READY`].
    async fn authorization_url(&mut self, authorize_prefix: &str, callback_port: u16) -> Option<String> {
        let listening = format!("Callback server started: http://127.0.0.1:{callback_port}");
        let mut url = None;
        let mut ready = false;
        let wait = async {
            while let Some(line) = self.lines.recv().await {
                let line = line.trim();
                if line.starts_with(authorize_prefix) {
                    url = Some(line.to_owned());
                } else if line == listening {
                    ready = true;
                }
                if ready && url.is_some() {
                    return true;
                }
            }
            false
        };
        let complete = tokio::time::timeout(SUITE_READY, wait).await;
        match complete {
            Ok(true) => url,
            Ok(false) => None,
            Err(_) => panic!("the suite printed no authorization URL within {SUITE_READY:?}:\n{}", self.output()),
        }
    }

    /// Waits (bounded) for the suite to exit; its status and its whole output.
    async fn finish(mut self) -> (ExitStatus, String) {
        let status = match tokio::time::timeout(SUITE_FINISH, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!("the suite did not finish within {SUITE_FINISH:?}:\n{}", self.output()),
        };
        // Let the readers take in what the process wrote last (its pipes are closed now).
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(SUITE_FINISH, reader).await;
        }
        (status, self.output())
    }
}

async fn read_lines(pipe: impl AsyncRead + Unpin, sink: Arc<Mutex<String>>, tx: Option<mpsc::UnboundedSender<String>>) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        sink.lock().unwrap().push_str(&format!("{line}\n"));
        if let Some(tx) = &tx {
            let _ = tx.send(line);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The browser.

/// Opens `url` as a browser would: follows redirects (at most 10), keeping the server's
/// cookies, and stops at the suite's callback (loaded too, which is what the suite waits for).
/// Every hop must stay on the server or go to the callback. Returns the hops, for messages,
/// and the final URL; or what went wrong, with the hops so far.
async fn browse(url: &str, origin: &str, callback: &str) -> Result<(Vec<String>, Url), String> {
    let http = http();
    let mut cookies: BTreeMap<String, String> = BTreeMap::new();
    let mut hops = Vec::new();
    let mut url = Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    for _ in 0..10 {
        let on_server = url.as_str().starts_with(&format!("{origin}/"));
        let at_callback = url.as_str().starts_with(&format!("{callback}?"));
        if !(on_server || at_callback) {
            return Err(format!("redirected off the server: {url}\nhops: {hops:#?}"));
        }
        let mut req = http.get(url.clone());
        if on_server && !cookies.is_empty() {
            let header: Vec<String> = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.header("cookie", header.join("; "));
        }
        let res = req.send().await.map_err(|e| format!("GET {url}: {e}\nhops: {hops:#?}"))?;
        let status = res.status();
        for value in res.headers().get_all("set-cookie") {
            let pair = value.to_str().unwrap_or_default().split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                cookies.insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
        let location = res.headers().get("location").and_then(|l| l.to_str().ok()).map(str::to_owned);
        hops.push(format!("GET {url} -> {status}{}", location.as_deref().map(|l| format!(" {l}")).unwrap_or_default()));
        if at_callback {
            let body = res.text().await.unwrap_or_default();
            if status != StatusCode::OK {
                return Err(format!("the suite's callback answered {status}: {body}\nhops: {hops:#?}"));
            }
            return Ok((hops, url));
        }
        match location {
            Some(location) if status.is_redirection() => {
                url = url.join(&location).map_err(|e| format!("Location {location}: {e}\nhops: {hops:#?}"))?;
            }
            _ => {
                let body = res.text().await.unwrap_or_default();
                return Err(format!("the server answered without a redirect: {body}\nhops: {hops:#?}"));
            }
        }
    }
    Err(format!("more than 10 redirects: {hops:#?}"))
}

// ---------------------------------------------------------------------------------------------
// Results.

/// The checks of each scenario, from the suite's `--output-dir`: one directory
/// `authorization-server-<scenario>-<timestamp>` per scenario, holding `checks.json`.
fn read_results(dir: &Path) -> BTreeMap<String, Vec<Value>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(scenario) = SCENARIOS.iter().find(|s| name.starts_with(&format!("authorization-server-{s}-"))) else {
            panic!("unexpected result directory {name}: a scenario this test does not know (update SCENARIOS)");
        };
        let text = std::fs::read_to_string(path.join("checks.json")).unwrap();
        let checks: Vec<Value> = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}/checks.json: {e}"));
        assert!(out.insert((*scenario).to_owned(), checks).is_none(), "two result directories for {scenario}");
    }
    out
}

/// Every check that is not a SUCCESS in the result files under `dir`, one per line, for
/// failure messages (the suite's own summary names no check when it runs several scenarios).
fn unsuccessful_checks(dir: &Path) -> String {
    let mut out = format!("results in {}:\n", dir.display());
    let Ok(entries) = std::fs::read_dir(dir) else { return out + "  (none)\n" };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let checks: Vec<Value> = std::fs::read_to_string(entry.path().join("checks.json"))
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default();
        for c in checks.iter().filter(|c| c["status"] != "SUCCESS") {
            out += &format!("  {name}: {} {}: {}\n", c["id"], c["status"], c["errorMessage"]);
        }
    }
    out
}

/// The one check with `id` in `checks`.
fn check<'a>(checks: &'a [Value], id: &str) -> &'a Value {
    let mut found = checks.iter().filter(|c| c["id"] == id);
    let first = found.next().unwrap_or_else(|| panic!("no check {id} in {checks:#?}"));
    assert!(found.next().is_none(), "check {id} reported twice: {checks:#?}");
    first
}

fn query_values(url: &Url, name: &str) -> Vec<String> {
    url.query_pairs().filter(|(k, _)| k == name).map(|(_, v)| v.into_owned()).collect()
}

// ---------------------------------------------------------------------------------------------
// The test.

/// `conformance authorization` against the example's built-in authorization server: both
/// scenarios pass, with every check SUCCESS (the CIMD advertisement check included).
#[tokio::test]
async fn conformance_suite_authorization_server_scenarios_pass() {
    let begun = Instant::now();
    let mcp_server = prerequisites().await;
    eprintln!("conformance: npm ci and the example build: {:.1} s", begun.elapsed().as_secs_f64());
    let begun = Instant::now();
    tokio::time::timeout(WHOLE_TEST, async {
        let (server, origin) = start_server(&mcp_server).await;

        // The callback port is picked before the suite binds it: on the rare lost race the
        // suite cannot listen and ends; start over once with another port.
        let mut attempt = 0;
        let (suite, results, callback, final_url, hops) = loop {
            attempt += 1;
            let port = free_port();
            let callback = format!("http://127.0.0.1:{port}/callback");
            let client_id = register_client(&origin, &callback, &server).await;
            let results = Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("conformance-{}-{port}", origin.rsplit(':').next().unwrap()));
            let _ = std::fs::remove_dir_all(&results);
            let mut suite = Suite::spawn(&origin, &client_id, port, &results);
            let Some(url) = suite.authorization_url(&format!("{origin}/authorize?"), port).await else {
                let (status, output) = suite.finish().await;
                if attempt == 1 && output.contains("EADDRINUSE") {
                    continue;
                }
                panic!(
                    "the suite ended ({status}) before asking for authorization:\n{output}\n{}\nserver output:\n{}",
                    unsuccessful_checks(&results),
                    server.output()
                );
            };
            match browse(&url, &origin, &callback).await {
                Ok((hops, final_url)) => break (suite, results, callback, final_url, hops),
                Err(e) => panic!(
                    "the browser step failed: {e}\nsuite output:\n{}\nserver output:\n{}",
                    suite.output(),
                    server.output()
                ),
            }
        };
        let (status, output) = suite.finish().await;
        eprintln!("conformance: server start, suite and browser: {:.1} s", begun.elapsed().as_secs_f64());
        let context = || {
            format!(
                "suite output:\n{output}\n{}\nbrowser hops: {hops:#?}\nserver output:\n{}",
                unsuccessful_checks(&results),
                server.output()
            )
        };

        // The verdict: exit status 0 means no FAILURE check; the summary names both scenarios.
        assert!(status.success(), "the suite failed ({status})\n{}", context());
        for scenario in SCENARIOS {
            let line = output.lines().find(|l| l.starts_with(&format!("✓ {scenario}: ")));
            assert!(line.is_some_and(|l| l.ends_with(" passed, 0 failed")), "{scenario} not passed\n{}", context());
        }

        // The machine-readable results, check by check.
        let results_by_scenario = read_results(&results);
        assert_eq!(results_by_scenario.keys().map(String::as_str).collect::<Vec<_>>(), {
            let mut s = SCENARIOS.to_vec();
            s.sort_unstable();
            s
        });
        for (scenario, checks) in &results_by_scenario {
            for c in checks {
                assert!(
                    c["status"] == "SUCCESS",
                    "{scenario}: check {} is {} ({})\n{}",
                    c["id"],
                    c["status"],
                    c["errorMessage"],
                    context()
                );
                eprintln!("conformance: {scenario}: {} {}", c["id"], c["status"]);
            }
        }

        // authorization-server-metadata-endpoint: one metadata check, one CIMD check.
        let metadata_checks = &results_by_scenario["authorization-server-metadata-endpoint"];
        assert_eq!(metadata_checks.len(), 2, "{metadata_checks:#?}");
        let metadata = check(metadata_checks, "authorization-server-metadata");
        assert_eq!(metadata["details"]["body"]["issuer"], origin.as_str());
        let cimd = check(metadata_checks, "authorization-server-metadata-cimd");
        // The example advertises client ID metadata documents: the suite's CIMD check passes.
        assert_eq!(metadata["details"]["body"]["client_id_metadata_document_supported"], true);
        assert_eq!(cimd["status"], "SUCCESS", "{cimd:#}");

        // authorization-code-grant: one check; beyond what the suite requires (it accepts a
        // response without `iss`), the response carries `iss` (RFC 9207, SPEC item 21).
        let grant_checks = &results_by_scenario["authorization-code-grant"];
        assert_eq!(grant_checks.len(), 1, "{grant_checks:#?}");
        let grant = check(grant_checks, "authorization-code-grant");
        let response_url = grant["details"]["authorizationResponseUrl"].as_str().expect("authorizationResponseUrl");
        assert_eq!(response_url, final_url.as_str(), "the suite saw the URL the browser was sent to");
        assert!(response_url.starts_with(&format!("{callback}?")), "{response_url}");
        assert_eq!(query_values(&final_url, "iss"), [origin.as_str()], "{response_url}");
        assert_eq!(query_values(&final_url, "code").len(), 1, "{response_url}");
        assert!(query_values(&final_url, "error").is_empty(), "{response_url}");
        let token = &grant["details"]["body"];
        assert_eq!(token["token_type"], "Bearer", "{token:#}");
        assert!(token["expires_in"].as_u64().is_some_and(|s| s > 0), "{token:#}");
        // From /authorize (first hop) through the server to the suite's callback (last hop).
        assert!(hops.len() >= 2 && hops[0].starts_with(&format!("GET {origin}/authorize?")), "{hops:#?}");

        let _ = std::fs::remove_dir_all(&results);
        server.stop().await;
    })
    .await
    .expect("the conformance test exceeded its deadline");
}
