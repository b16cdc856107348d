//! Child processes for the tests that run real binaries (tests/examples.rs, tests/e2e_oidc.rs,
//! tests/e2e_proxy.rs, tests/restart.rs): the examples, built on first use; the Node.js helpers
//! of tests/e2e (dependencies installed on first use); long-running servers that are killed on
//! drop; one-shot runs.

use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::task::JoinHandle;

/// Time for `cargo build` of the examples (a cold build of their dependencies included).
pub const BUILD: Duration = Duration::from_secs(900);
/// Time for a process to print its first line (its `listening on` line).
pub const STARTUP: Duration = Duration::from_secs(30);
/// Time for a process to stop once its stdin is closed.
pub const STOP: Duration = Duration::from_secs(15);
/// Time for a one-shot run of an example ([`run_to_exit`]) to exit.
pub const RUN: Duration = Duration::from_secs(30);
/// Time for `npm ci` in tests/e2e.
pub const NPM_INSTALL: Duration = Duration::from_secs(600);

/// The Node.js helpers (tests/e2e/README.md).
pub const E2E_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e");

/// The examples built on first use: `cargo test --test …` does not build examples.
const EXAMPLES: [&str; 4] = ["axum", "hyper", "tonic", "mcp_server"];

// ---------------------------------------------------------------------------------------------
// The examples.

/// The built example `name`: target/debug/deps/<this test> → target/debug/examples/<name>. The
/// first call builds all the examples in one `cargo build --all-features` (a no-op when they
/// are up to date); a failed build fails every call with the same log.
pub fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = BUILT.get_or_init(build_examples) {
        panic!("building the examples failed:\n{e}");
    }
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap().join("examples");
    dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

fn build_examples() -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    // The test runner gives the test process the package's variables (`CARGO_PKG_NAME`,
    // `CARGO_MANIFEST_DIR`, …). ring's build script tracks them (`rerun-if-env-changed`): a
    // cargo that inherits them rebuilds ring and everything above it, and the next cargo run
    // without them (the test runner's own build) rebuilds it all again.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_CRATE_", "CARGO_PRIMARY_PACKAGE"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            cmd.env_remove(name);
        }
    }
    let child = cmd
        .args(["build", "--all-features"])
        .args(EXAMPLES.into_iter().flat_map(|name| ["--example", name]))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    wait_blocking(child, BUILD, "cargo build").map(drop)
}

/// Waits for a std child whose stderr is piped, killing it after `deadline`: its stderr if it
/// exited successfully, an error with the stderr (or the timeout) otherwise.
pub fn wait_blocking(mut child: std::process::Child, deadline: Duration, what: &str) -> Result<String, String> {
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        let _ = tx.send(text);
    });
    // stderr ends when the process exits.
    let Ok(text) = rx.recv_timeout(deadline) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("{what} did not finish within {deadline:?}"));
    };
    match child.wait() {
        Ok(status) if status.success() => Ok(text),
        Ok(status) => Err(format!("{what}: {status}\n{text}")),
        Err(e) => Err(format!("{what}: {e}\n{text}")),
    }
}

// ---------------------------------------------------------------------------------------------
// The Node.js helpers.

/// Runs `npm ci` in tests/e2e unless the dependencies are there (see [`ensure_npm`]).
/// Blocking: call it from `spawn_blocking`.
pub fn ensure_node_modules() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        ensure_npm(
            Path::new(E2E_DIR),
            &["node_modules/oidc-provider/package.json", "node_modules/@modelcontextprotocol/sdk/package.json"],
        )
    });
}

/// Runs `npm ci` in `dir` unless `node_modules` is complete (npm's own
/// `node_modules/.package-lock.json` and every file of `markers` exist), under the lock file
/// `.npm-ci.lock` so that two test processes never install at once. Blocking.
pub fn ensure_npm(dir: &Path, markers: &[&str]) {
    let installed = || {
        std::iter::once("node_modules/.package-lock.json").chain(markers.iter().copied()).all(|p| dir.join(p).is_file())
    };
    let lock_path = dir.join(".npm-ci.lock");
    if installed() && !lock_path.exists() {
        return;
    }
    let _lock = LockFile::acquire(&lock_path, NPM_INSTALL);
    if installed() {
        return;
    }
    eprintln!("running `npm ci` in {}", dir.display());
    let child = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run npm (Node.js 20+ and npm are needed): {e}"));
    let log = wait_blocking(child, NPM_INSTALL, "npm ci").unwrap_or_else(|e| panic!("npm ci failed:\n{e}"));
    assert!(installed(), "npm ci failed:\n{log}");
}

/// A lock held by creating a file exclusively; removed on drop.
struct LockFile(PathBuf);

impl LockFile {
    fn acquire(path: &Path, deadline: Duration) -> Self {
        let start = Instant::now();
        loop {
            match OpenOptions::new().write(true).create_new(true).open(path) {
                Ok(_) => return Self(path.to_owned()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // A lock older than the longest install is left over from a killed process.
                    let age = std::fs::metadata(path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| SystemTime::now().duration_since(t).ok());
                    if age.is_some_and(|age| age > deadline) {
                        let _ = std::fs::remove_file(path);
                        continue;
                    }
                    assert!(start.elapsed() < deadline, "{} still held after {deadline:?}", path.display());
                    // Polling the lock's release, bounded by the deadline above.
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(e) => panic!("cannot create {}: {e}", path.display()),
            }
        }
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `node tests/e2e/SCRIPT`, run in tests/e2e.
pub fn node(script: &str) -> Command {
    let mut cmd = Command::new("node");
    cmd.arg(Path::new(E2E_DIR).join(script)).current_dir(E2E_DIR);
    cmd
}

/// A loopback port that was free a moment ago (for servers whose URL must be known before
/// they start; callers retry on the rare lost race).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A free loopback port outside the usual ephemeral ranges (Linux 32768–60999, BSD, macOS and
/// Windows 49152–65535), for a server restarted on the same port: while it is down, no
/// outgoing connection is given the port as its source port.
pub fn restartable_port() -> u16 {
    for _ in 0..100 {
        let mut r = [0u8; 2];
        getrandom::fill(&mut r).unwrap();
        let port = 20_000 + u16::from_le_bytes(r) % 12_000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000")
}

/// `n` random bytes as lowercase hex (keys and client secrets handed to child processes).
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Long-running processes.

/// A long-running child whose stdout and stderr are collected into one buffer (stdout is read
/// to the end, so the child never blocks on a full pipe). Killed on drop; the servers here also
/// exit when their stdin closes, so a test process that dies cannot leave them behind.
pub struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    output: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    first_line: Option<tokio::sync::oneshot::Receiver<String>>,
}

impl Proc {
    /// Starts `cmd` with piped stdin, stdout and stderr; `name` is for messages.
    pub fn spawn(name: impl Into<String>, cmd: &mut Command) -> Self {
        let name = name.into();
        let mut child = start(cmd, Stdio::piped(), &name);
        let output = Arc::new(Mutex::new(Vec::new()));
        let (line_tx, line_rx) = tokio::sync::oneshot::channel();
        let stdout = child.stdout.take().unwrap();
        let sink = output.clone();
        let out_reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            let mut first = Some(line_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().extend_from_slice(format!("{line}\n").as_bytes());
                if let Some(tx) = first.take() {
                    let _ = tx.send(line);
                }
            }
        });
        let err_reader = tokio::spawn(collect(child.stderr.take().unwrap(), output.clone()));
        Self {
            name,
            stdin: child.stdin.take(),
            child,
            output,
            readers: vec![out_reader, err_reader],
            first_line: Some(line_rx),
        }
    }

    /// The first stdout line, or `None` if the process ended without printing one (or it was
    /// asked for before). Panics with the output so far after [`STARTUP`].
    pub async fn first_line(&mut self) -> Option<String> {
        let rx = self.first_line.take()?;
        match tokio::time::timeout(STARTUP, rx).await {
            Ok(Ok(line)) => Some(line),
            Ok(Err(_)) => None,
            Err(_) => panic!("{} printed nothing within {STARTUP:?}:\n{}", self.name, self.output()),
        }
    }

    /// The address in the `listening on URL` first line, or `None` if the process ended without
    /// printing one (its output then tells why). Panics on any other first line.
    pub async fn listening_on(&mut self) -> Option<String> {
        let line = self.first_line().await?;
        match line.strip_prefix("listening on ") {
            Some(url) => Some(url.to_owned()),
            None => panic!("{} printed {line:?} instead of `listening on URL`:\n{}", self.name, self.output()),
        }
    }

    /// Everything printed so far, stdout and stderr.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Closes stdin and waits (bounded) for the process to exit and its output to be read.
    pub async fn stop(mut self) -> String {
        drop(self.stdin.take());
        let exited = tokio::time::timeout(STOP, self.child.wait()).await;
        assert!(matches!(exited, Ok(Ok(_))), "{} did not exit after stdin closed:\n{}", self.name, self.output());
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(STOP, reader).await;
        }
        self.output()
    }
}

/// Spawns `cmd` with stdout and stderr piped, killed on drop.
fn start(cmd: &mut Command, stdin: Stdio, what: &str) -> Child {
    cmd.stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"))
}

async fn collect(mut pipe: impl AsyncRead + Unpin, sink: Arc<Mutex<Vec<u8>>>) {
    let mut buf = [0u8; 8192];
    while let Ok(n @ 1..) = pipe.read(&mut buf).await {
        sink.lock().unwrap().extend_from_slice(&buf[..n]);
    }
}

// ---------------------------------------------------------------------------------------------
// One-shot runs.

/// Runs `cmd` with stdin closed and returns its output; killed if it has not exited after
/// `deadline`. `what` is for messages.
pub async fn output_within(cmd: &mut Command, deadline: Duration, what: &str) -> Output {
    let child = start(cmd, Stdio::null(), what);
    tokio::time::timeout(deadline, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {deadline:?}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Runs `path` with `args`, expecting it to exit within [`RUN`]; returns its status code and
/// stderr.
pub async fn run_to_exit(path: impl AsRef<Path>, args: &[&str]) -> (Option<i32>, String) {
    let path = path.as_ref();
    let what = format!("{} {args:?}", path.display());
    let out = output_within(Command::new(path).args(args), RUN, &what).await;
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}
