//! Private `redis-server`s for the tests of `RedisStore`: one shared by the whole test binary
//! ([`RedisServer::shared`]; tests keep apart with their own key prefix, [`prefix`]) and
//! private ones for tests that stop and restart theirs ([`RedisServer::start`]).
//!
//! Each server is `redis-server` on a free loopback port without persistence, started through
//! `sh`, which kills it as soon as its stdin closes: on drop, and also when the test process
//! dies, so no server outlives the tests. `redis-server` must be on `PATH` (`.ci/run`
//! installs it): without it the tests fail, they are never skipped.

use std::io::Read;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::process::restartable_port;

/// Time for a started server to answer `PING`, and for a stopped one to exit.
const READY: Duration = Duration::from_secs(10);

/// `redis-server` in the foreground, killed (and waited for) when the shell's stdin closes.
const WRAPPER: &str = r#"redis-server "$@" & pid=$!
trap 'kill $pid 2>/dev/null; wait $pid' EXIT
cat >/dev/null"#;

/// A running `redis-server` on `127.0.0.1`; stopped on drop.
pub struct RedisServer {
    port: u16,
    child: Child,
    stdin: Option<ChildStdin>,
    log: Arc<Mutex<Vec<u8>>>,
}

impl RedisServer {
    /// The server shared by every test of this binary (started on first use, stopped when the
    /// test process exits).
    pub fn shared() -> &'static RedisServer {
        static SHARED: OnceLock<RedisServer> = OnceLock::new();
        SHARED.get_or_init(|| Self::start(&[]))
    }

    /// A private server on a free port, with extra `redis-server` arguments.
    pub fn start(extra: &[&str]) -> Self {
        let mut last = String::new();
        // A port found free may be taken before the server binds it: try a few.
        for _ in 0..5 {
            match Self::try_start(restartable_port(), extra) {
                Ok(server) => return server,
                Err(log) => last = log,
            }
        }
        panic!("redis-server did not start:\n{last}")
    }

    /// A server on `port` (restarting one that was stopped), with extra arguments.
    pub fn start_on(port: u16, extra: &[&str]) -> Self {
        Self::try_start(port, extra).unwrap_or_else(|log| panic!("redis-server did not start on {port}:\n{log}"))
    }

    fn try_start(port: u16, extra: &[&str]) -> Result<Self, String> {
        ensure_installed();
        let port_arg = port.to_string();
        let args = ["--port", &port_arg, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
        let mut child = Command::new("sh")
            .args(["-c", WRAPPER, "redis-server"])
            .args(args)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run sh: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        for pipe in [
            child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
            child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let sink = log.clone();
            std::thread::spawn(move || collect(pipe, &sink));
        }
        let server = Self { port, stdin: child.stdin.take(), child, log };
        let start = Instant::now();
        loop {
            if server.ping() {
                return Ok(server);
            }
            if start.elapsed() > READY {
                return Err(format!("no PONG on port {port} within {READY:?}:\n{}", server.log()));
            }
            // redis-server exits at once when its port is taken.
            if let Some(log) = server.exited_with() {
                return Err(log);
            }
            // Polling readiness, bounded by READY above.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// What the server printed so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }

    /// A plain connection, for checking what Redis itself holds (`PTTL`, `EXISTS`).
    pub fn raw(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("cannot connect to redis on port {}: {e}", self.port))
    }

    /// Stops the server and waits (bounded) until it has exited and released its port.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        drop(self.stdin.take());
        let start = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if start.elapsed() < READY => {
                    // Polling the exit, bounded by READY.
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!("redis-server on port {} did not stop within {READY:?}", self.port);
                }
            }
        }
    }

    fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else { return false };
        let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(500)) else { return false };
        match redis::cmd("PING").query::<String>(&mut conn) {
            Ok(pong) => pong == "PONG",
            // A server started with `--requirepass` answers NOAUTH: it is up all the same.
            Err(e) => e.code() == Some("NOAUTH"),
        }
    }

    fn exited_with(&self) -> Option<String> {
        // The shell outlives redis-server (it waits on stdin), so look at the log instead.
        let log = self.log();
        (log.contains("Address already in use") || log.contains("FATAL") || log.contains("not found"))
            .then(|| format!("redis-server exited:\n{log}"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            drop(self.stdin.take());
            // Bounded like `stop`, without panicking in drop.
            let start = Instant::now();
            while start.elapsed() < READY {
                if !matches!(self.child.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn collect(mut pipe: Box<dyn Read + Send>, sink: &Mutex<Vec<u8>>) {
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = pipe.read(&mut buf) {
        sink.lock().unwrap().extend_from_slice(&buf[..n]);
    }
}

/// Panics with instructions unless `redis-server` runs.
fn ensure_installed() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let checked = CHECKED.get_or_init(|| match Command::new("redis-server").arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!("`redis-server --version` failed: {}", String::from_utf8_lossy(&out.stderr))),
        Err(e) => Err(format!("cannot run redis-server: {e}")),
    });
    if let Err(e) = checked {
        panic!(
            "the RedisStore tests need redis-server on PATH ({e}); install it (Debian: apt-get install \
             redis-server; .ci/run does this)"
        );
    }
}

/// A key prefix no other test uses.
pub fn prefix(test: &str) -> String {
    format!("test-{test}-{}:", super::rand_suffix())
}
