//! SECURITY-CATALOGUE group I (and C11): the hardened fetcher `net::SafeFetcher`, used for URLs
//! chosen by untrusted parties.
//!
//! Everything runs on loopback. Private and special addresses come from an injected resolver
//! and must be refused before any connection; loopback "trap" listeners count the TCP
//! connections they accept and must record none where no connection may happen. Counts are
//! read after a sentinel connection has been accepted, so connections still in the accept
//! queue are counted too. HTTPS servers are a counting TCP front, a TLS terminator with a
//! test CA, and a scripted plain backend.

#[allow(dead_code)]
#[path = "support/tls.rs"]
mod tls;

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tls::{TestCa, TlsFront, self_signed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tower_mcp_auth::net::{FetchError, Resolve, SafeFetcher, SafeFetcherBuilder, StaticResolver};
use url::Url;

/// The names every test certificate is valid for.
const NAMES: &[&str] = &["client.test", "a.test", "b.test", "jwks.test", "127.0.0.1"];
/// Bound of every wait on a listener.
const WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Proxy environment (I21): set once per process, before any client is built, in every test.

/// A std listener standing in for a proxy: counts accepted connections and drops them.
struct ProxyTrap {
    addr: SocketAddr,
    seen: Arc<(Mutex<Vec<SocketAddr>>, Condvar)>,
    sentinels: Mutex<Vec<SocketAddr>>,
}

impl ProxyTrap {
    /// Connections accepted so far (after flushing the accept queue with a sentinel).
    fn hits(&self) -> usize {
        let sentinel = std::net::TcpStream::connect(self.addr).unwrap();
        let me = sentinel.local_addr().unwrap();
        self.sentinels.lock().unwrap().push(me);
        let (lock, cv) = &*self.seen;
        let (seen, timeout) = cv.wait_timeout_while(lock.lock().unwrap(), WAIT, |seen| !seen.contains(&me)).unwrap();
        assert!(!timeout.timed_out(), "proxy trap did not accept the sentinel in time");
        let sentinels = self.sentinels.lock().unwrap();
        seen.iter().filter(|a| !sentinels.contains(a)).count()
    }
}

static PROXY: OnceLock<ProxyTrap> = OnceLock::new();

/// Points every proxy variable at the trap (same value every time), once per process.
fn setup() -> &'static ProxyTrap {
    PROXY.get_or_init(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let shared = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let Ok(peer) = stream.peer_addr() else { continue };
                shared.0.lock().unwrap().push(peer);
                shared.1.notify_all();
            }
        });
        let proxy = format!("http://{addr}");
        set_proxy_env(&proxy);
        ProxyTrap { addr, seen, sentinels: Mutex::new(Vec::new()) }
    })
}

#[allow(unsafe_code)]
fn set_proxy_env(proxy: &str) {
    for key in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"] {
        // SAFETY: runs once, inside `OnceLock::get_or_init`, before any test of this binary
        // builds a client or reads the environment.
        unsafe { std::env::set_var(key, proxy) };
    }
    for key in ["NO_PROXY", "no_proxy"] {
        // SAFETY: as above.
        unsafe { std::env::remove_var(key) };
    }
}

// ---------------------------------------------------------------------------------------------
// Counting TCP listeners: traps (hold connections, never answer) and fronts of test servers.

struct Listener {
    addr: SocketAddr,
    seen: watch::Receiver<Vec<SocketAddr>>,
    sentinels: Mutex<Vec<SocketAddr>>,
    max_open: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One accepted connection, as the listener tracks it.
struct Conn {
    /// A second handle on the socket, to look at it without reading.
    probe: std::net::TcpStream,
    /// Set when the connection task has seen the peer close.
    closed: AtomicBool,
    /// Signalled whenever the connection task has read something (or seen the end).
    progress: Notify,
}

impl Conn {
    /// Whether the peer still holds the connection open. Data still unread (a TLS
    /// `close_notify` before the FIN, say) is first left to the connection task to read, so a
    /// close that happened before now is always seen as one.
    async fn still_open(&self) -> bool {
        loop {
            let progress = self.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            if self.closed.load(SeqCst) {
                return false;
            }
            match self.probe.peek(&mut [0u8; 1]) {
                Ok(0) => return false,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
                Ok(_) => {}
            }
            if tokio::time::timeout(WAIT, progress).await.is_err() {
                return true;
            }
        }
    }

    /// Reads from the peer until it closes, handing the bytes to `upstream` if any.
    async fn serve(self: Arc<Self>, mut rd: OwnedReadHalf, mut upstream: Option<tokio::net::tcp::OwnedWriteHalf>) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = rd.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            self.progress.notify_waiters();
            if let Some(up) = upstream.as_mut()
                && up.write_all(&buf[..n]).await.is_err()
            {
                break;
            }
        }
        self.closed.store(true, SeqCst);
        self.progress.notify_waiters();
    }
}

impl Listener {
    /// Listens on `bind`; forwards each connection to `forward`, or holds it until the peer
    /// closes it. `None` when `bind` is unavailable (no IPv6).
    async fn start(bind: &str, forward: Option<SocketAddr>) -> Option<Self> {
        let listener = TcpListener::bind(bind).await.ok()?;
        let addr = listener.local_addr().unwrap();
        let (tx, seen) = watch::channel(Vec::new());
        let max_open = Arc::new(AtomicUsize::new(0));
        let max = max_open.clone();
        let task = tokio::spawn(async move {
            let mut open: Vec<Arc<Conn>> = Vec::new();
            loop {
                let Ok((stream, peer)) = listener.accept().await else { return };
                tx.send_modify(|v| v.push(peer));
                let std_stream = stream.into_std().unwrap();
                let probe = std_stream.try_clone().unwrap();
                let stream = TcpStream::from_std(std_stream).unwrap();
                let conn = Arc::new(Conn { probe, closed: AtomicBool::new(false), progress: Notify::new() });
                let mut still = Vec::new();
                for c in open.drain(..) {
                    if c.still_open().await {
                        still.push(c);
                    }
                }
                open = still;
                open.push(conn.clone());
                max.fetch_max(open.len(), SeqCst);
                tokio::spawn(async move {
                    let (rd, mut wr) = stream.into_split();
                    match forward {
                        Some(to) => {
                            let Ok(upstream) = TcpStream::connect(to).await else { return };
                            let (mut up_rd, up_wr) = upstream.into_split();
                            let down = tokio::spawn(async move {
                                let _ = tokio::io::copy(&mut up_rd, &mut wr).await;
                                let _ = wr.shutdown().await;
                            });
                            conn.serve(rd, Some(up_wr)).await;
                            down.abort();
                        }
                        None => conn.serve(rd, None).await,
                    }
                });
            }
        });
        Some(Self { addr, seen, sentinels: Mutex::new(Vec::new()), max_open, task })
    }

    async fn trap() -> Self {
        Self::start("127.0.0.1:0", None).await.unwrap()
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Connections accepted so far, the accept queue flushed with a sentinel connection.
    async fn hits(&self) -> usize {
        let sentinel = tokio::time::timeout(WAIT, TcpStream::connect(self.addr)).await.unwrap().unwrap();
        let me = sentinel.local_addr().unwrap();
        self.sentinels.lock().unwrap().push(me);
        let mut seen = self.seen.clone();
        tokio::time::timeout(WAIT, seen.wait_for(|v| v.contains(&me)))
            .await
            .expect("listener did not accept the sentinel in time")
            .unwrap();
        drop(sentinel);
        let sentinels = self.sentinels.lock().unwrap().clone();
        self.seen.borrow().iter().filter(|a| !sentinels.contains(a)).count()
    }

    /// The most connections that were open at once.
    fn max_open(&self) -> usize {
        self.max_open.load(SeqCst)
    }
}

// ---------------------------------------------------------------------------------------------
// Scripted HTTP backends behind TLS.

/// What the backend does after reading a request head.
enum Action {
    /// Writes these bytes and closes.
    Reply(Vec<u8>),
    /// Writes these bytes for this and every later request on the connection (keep-alive).
    KeepAlive(Vec<u8>),
    /// Writes these bytes, then waits (never finishes) until the peer closes.
    Stall(Vec<u8>),
    /// Writes this head, then one body byte every 100 ms.
    Drip(Vec<u8>),
    /// Writes this (chunked) head, then 1 KiB chunks forever.
    Endless(Vec<u8>),
}

type Script = Arc<dyn Fn(&str) -> Action + Send + Sync>;

async fn peer_closed(rd: &mut OwnedReadHalf) {
    let mut buf = [0u8; 512];
    while let Ok(n) = rd.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}

/// Reads the request head; the path of the request line.
async fn read_head(rd: &mut OwnedReadHalf) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = rd.read(&mut buf).await.ok()?;
        if n == 0 || head.len() > 64 * 1024 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head).lines().next()?.to_owned();
    line.split(' ').nth(1).map(str::to_owned)
}

struct Backend {
    addr: SocketAddr,
    /// Connections accepted (only after a TLS handshake succeeded at the front).
    accepted: Arc<AtomicUsize>,
    /// Body bytes written by `Endless` so far.
    written: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn backend(script: Script) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    let total = written.clone();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            count.fetch_add(1, SeqCst);
            let script = script.clone();
            let total = total.clone();
            tokio::spawn(async move {
                let (mut rd, mut wr) = stream.into_split();
                let Some(path) = read_head(&mut rd).await else { return };
                match script(&path) {
                    Action::Reply(bytes) => {
                        let _ = wr.write_all(&bytes).await;
                        let _ = wr.shutdown().await;
                    }
                    Action::KeepAlive(bytes) => {
                        while wr.write_all(&bytes).await.is_ok() && read_head(&mut rd).await.is_some() {}
                    }
                    Action::Stall(head) => {
                        let _ = wr.write_all(&head).await;
                        peer_closed(&mut rd).await;
                    }
                    Action::Drip(head) => {
                        if wr.write_all(&head).await.is_err() {
                            return;
                        }
                        let mut tick = tokio::time::interval(Duration::from_millis(100));
                        loop {
                            tokio::select! {
                                _ = peer_closed(&mut rd) => return,
                                _ = tick.tick() => if wr.write_all(b" ").await.is_err() { return },
                            }
                        }
                    }
                    Action::Endless(head) => {
                        if wr.write_all(&head).await.is_err() {
                            return;
                        }
                        let chunk = format!("400\r\n{}\r\n", "x".repeat(1024));
                        loop {
                            tokio::select! {
                                _ = peer_closed(&mut rd) => return,
                                r = wr.write_all(chunk.as_bytes()) => match r {
                                    Ok(()) => { total.fetch_add(1024, SeqCst); }
                                    Err(_) => return,
                                },
                            }
                        }
                    }
                }
            });
        }
    });
    Backend { addr, accepted, written, task }
}

/// An HTTPS server on 127.0.0.1: counting front → TLS (test CA) → scripted backend.
struct Server {
    front: Listener,
    backend: Backend,
    _tls: TlsFront,
}

impl Server {
    async fn start(ca: &TestCa, script: impl Fn(&str) -> Action + Send + Sync + 'static) -> Self {
        Self::with_cert(ca.leaf(NAMES), script).await
    }

    async fn with_cert(
        cert: (rustls::pki_types::CertificateDer<'static>, rustls::pki_types::PrivateKeyDer<'static>),
        script: impl Fn(&str) -> Action + Send + Sync + 'static,
    ) -> Self {
        let backend = backend(Arc::new(script)).await;
        let tls = TlsFront::start(cert, backend.addr).await;
        let front = Listener::start("127.0.0.1:0", Some(tls.addr)).await.unwrap();
        Self { front, backend, _tls: tls }
    }

    fn port(&self) -> u16 {
        self.front.port()
    }

    async fn hits(&self) -> usize {
        self.front.hits().await
    }

    fn backend_hits(&self) -> usize {
        self.backend.accepted.load(SeqCst)
    }
}

/// A complete response with `Content-Length` and `Connection: close`.
fn response(status: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut all = vec!["Connection: close"];
    all.extend_from_slice(headers);
    response_keep_alive(status, &all, body)
}

/// A complete response with `Content-Length`, the connection left open.
fn response_keep_alive(status: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

fn json(body: &str) -> Action {
    Action::Reply(response("200 OK", &["Content-Type: application/json"], body.as_bytes()))
}

// ---------------------------------------------------------------------------------------------
// Resolvers and fetchers.

/// The answer for a host at the n-th call.
type Answer = Box<dyn Fn(&str, usize) -> Vec<IpAddr> + Send + Sync>;

/// Answers from a closure of (host, call index), counting calls.
struct TestResolver {
    answer: Answer,
    calls: AtomicUsize,
}

impl TestResolver {
    fn calls(&self) -> usize {
        self.calls.load(SeqCst)
    }
}

impl Resolve for TestResolver {
    fn resolve<'a>(&'a self, host: &'a str) -> Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>> {
        let n = self.calls.fetch_add(1, SeqCst);
        let answer = (self.answer)(host, n);
        Box::pin(async move { Ok(answer) })
    }
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn resolver(answer: impl Fn(&str, usize) -> Vec<IpAddr> + Send + Sync + 'static) -> Arc<TestResolver> {
    Arc::new(TestResolver { answer: Box::new(answer), calls: AtomicUsize::new(0) })
}

/// Every name resolves to `list`.
fn fixed(list: &[&str]) -> Arc<TestResolver> {
    let list = ips(list);
    resolver(move |_, _| list.clone())
}

/// Loopback allowed, the test CA trusted, `r` as resolver.
fn builder(ca: &TestCa, r: Arc<dyn Resolve>) -> SafeFetcherBuilder {
    SafeFetcher::builder().allow_loopback(true).trust_root_certificate(ca.pem.clone()).resolver(r)
}

fn url(host: &str, port: u16, path: &str) -> Url {
    Url::parse(&format!("https://{host}:{port}{path}")).unwrap()
}

// ---------------------------------------------------------------------------------------------
// I03: resolved addresses.

#[tokio::test]
async fn i03_private_addresses_refused_before_connect() {
    setup();
    let ca = TestCa::new();
    let trap4 = Listener::trap().await;
    let trap6 = Listener::start("[::1]:0", None).await;
    let cases = [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fc00::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "64:ff9b::7f00:1",
        "224.0.0.1",
        "ff02::1",
    ];
    for case in cases {
        let plain_loopback = case == "127.0.0.1" || case == "::1";
        let port = match (&trap6, case) {
            (Some(t6), "::1") => t6.port(),
            _ => trap4.port(),
        };
        for allow_loopback in [false, true] {
            if allow_loopback && plain_loopback {
                continue;
            }
            let r = fixed(&[case]);
            let fetcher =
                builder(&ca, r.clone()).allow_loopback(allow_loopback).timeout(Duration::from_secs(2)).build().unwrap();
            let got = fetcher.get_json(&url("client.test", port, "/client.json")).await;
            assert_eq!(got.unwrap_err(), FetchError::AddressRefused, "{case} (allow_loopback {allow_loopback})");
            assert_eq!(r.calls(), 1, "{case}: resolved once");
        }
    }
    assert_eq!(trap4.hits().await, 0, "no connection to 127.0.0.1");
    if let Some(t6) = trap6 {
        assert_eq!(t6.hits().await, 0, "no connection to ::1");
    }
}

/// The default (system) resolver is policed the same way: `localhost` is loopback.
#[tokio::test]
async fn i03_system_resolver_localhost_refused() {
    setup();
    let trap = Listener::trap().await;
    let fetcher = SafeFetcher::builder().timeout(Duration::from_secs(2)).build().unwrap();
    let got = fetcher.get_json(&url("localhost", trap.port(), "/client.json")).await;
    // `localhost` resolves to loopback (refused) or, in an odd sandbox, not at all.
    assert!(matches!(got, Err(FetchError::AddressRefused | FetchError::Transport)), "{got:?}");
    assert_eq!(trap.hits().await, 0);
}

// ---------------------------------------------------------------------------------------------
// I04: IP-literal hosts.

#[tokio::test]
async fn i04_ip_literal_hosts_refused() {
    setup();
    let ca = TestCa::new();
    let trap = Listener::trap().await;
    let p = trap.port();
    let r = fixed(&["127.0.0.1"]);
    let strict = builder(&ca, r.clone()).allow_loopback(false).timeout(Duration::from_secs(2)).build().unwrap();
    let lenient = builder(&ca, r.clone()).allow_loopback(true).timeout(Duration::from_secs(2)).build().unwrap();
    let loopback_forms = [
        format!("https://2130706433:{p}/x"),
        format!("https://0x7f000001:{p}/x"),
        format!("https://0177.0.0.1:{p}/x"),
        format!("https://127.1:{p}/x"),
        format!("https://127.0.0.1:{p}/x"),
        format!("https://[::ffff:7f00:1]:{p}/x"),
        format!("https://[::ffff:127.0.0.1]:{p}/x"),
        format!("https://[::1]:{p}/x"),
        format!("https://0:{p}/x"),
        format!("https://0.0.0.0:{p}/x"),
    ];
    for raw in &loopback_forms {
        let got = match Url::parse(raw) {
            Ok(u) => strict.get_json(&u).await,
            Err(_) => Err(FetchError::InvalidUrl),
        };
        assert!(matches!(got, Err(FetchError::AddressRefused | FetchError::InvalidUrl)), "{raw}: {got:?}");
    }
    // Embedded and unspecified forms stay refused when plain loopback is allowed.
    for raw in [
        format!("https://[::ffff:7f00:1]:{p}/x"),
        format!("https://[::ffff:127.0.0.1]:{p}/x"),
        format!("https://0:{p}/x"),
        format!("https://0.0.0.0:{p}/x"),
    ] {
        let got = lenient.get_json(&Url::parse(&raw).unwrap()).await;
        assert_eq!(got.unwrap_err(), FetchError::AddressRefused, "{raw}");
    }
    assert_eq!(r.calls(), 0, "IP literals are never resolved");
    assert_eq!(trap.hits().await, 0);
}

/// Control for I04: an allowed literal (loopback, allowed) is fetched.
#[tokio::test]
async fn i04_allowed_ip_literal_is_fetched() {
    setup();
    let ca = TestCa::new();
    let server = Server::start(&ca, |_| json(r#"{"ok":true}"#)).await;
    let fetcher = builder(&ca, fixed(&[])).build().unwrap();
    let got = fetcher.get_json(&url("127.0.0.1", server.port(), "/x")).await.unwrap();
    assert_eq!(&got.body[..], br#"{"ok":true}"#);
    assert_eq!(server.hits().await, 1);
}

// ---------------------------------------------------------------------------------------------
// I05, I06: answers judged on every dial, all of them.

#[tokio::test]
async fn i05_dns_rebinding_validated_on_every_fetch() {
    setup();
    let ca = TestCa::new();
    // Keep-alive answers: a pooled connection would be reused without resolving again.
    let ok = response_keep_alive("200 OK", &["Content-Type: application/json"], b"{}");
    let server = Server::start(&ca, move |_| Action::KeepAlive(ok.clone())).await;
    // 1st: allowed; 2nd and 3rd: rebinding to forms that reach loopback but are refused;
    // 4th: allowed again (nothing pinned, nothing pooled).
    let r = resolver(|_, n| match n {
        0 | 3 => ips(&["127.0.0.1"]),
        1 => ips(&["::ffff:127.0.0.1"]),
        _ => ips(&["0.0.0.0"]),
    });
    let fetcher = builder(&ca, r.clone()).build().unwrap();
    let u = url("client.test", server.port(), "/client.json");

    assert!(fetcher.get_json(&u).await.is_ok());
    assert_eq!(server.hits().await, 1);
    assert_eq!(r.calls(), 1);

    assert_eq!(fetcher.get_json(&u).await.unwrap_err(), FetchError::AddressRefused);
    assert_eq!(r.calls(), 2);
    assert_eq!(fetcher.get_json(&u).await.unwrap_err(), FetchError::AddressRefused);
    assert_eq!(r.calls(), 3);
    assert_eq!(server.hits().await, 1, "no connection after rebinding");

    assert!(fetcher.get_json(&u).await.is_ok());
    assert_eq!(r.calls(), 4, "resolved exactly once per fetch");
    assert_eq!(server.hits().await, 2);
}

#[tokio::test]
async fn i06_one_refused_answer_refuses_all() {
    setup();
    let ca = TestCa::new();
    let server = Server::start(&ca, |_| json("{}")).await;
    let u = url("client.test", server.port(), "/client.json");
    for answers in
        [&["127.0.0.1", "10.0.0.1"][..], &["127.0.0.1", "::ffff:127.0.0.1"], &["127.0.0.1", "169.254.169.254"], &[]]
    {
        let fetcher = builder(&ca, fixed(answers)).build().unwrap();
        assert_eq!(fetcher.get_json(&u).await.unwrap_err(), FetchError::AddressRefused, "{answers:?}");
    }
    assert_eq!(server.hits().await, 0);
    // Control: the allowed address alone reaches the server.
    let fetcher = builder(&ca, fixed(&["127.0.0.1"])).build().unwrap();
    assert!(fetcher.get_json(&u).await.is_ok());
    assert_eq!(server.hits().await, 1);
}

// ---------------------------------------------------------------------------------------------
// I07, I08: status and type.

#[tokio::test]
async fn i07_redirects_never_followed() {
    setup();
    let ca = TestCa::new();
    let target = Listener::trap().await;
    let location = format!("Location: https://client.test:{}/next.json", target.port());
    let server = Server::start(&ca, move |path| {
        let status = match path {
            "/301" => "301 Moved Permanently",
            "/302" => "302 Found",
            "/303" => "303 See Other",
            "/307" => "307 Temporary Redirect",
            _ => "308 Permanent Redirect",
        };
        Action::Reply(response(status, &[&location, "Content-Type: application/json"], b"{}"))
    })
    .await;
    let fetcher = builder(&ca, fixed(&["127.0.0.1"])).build().unwrap();
    for path in ["/301", "/302", "/303", "/307", "/308"] {
        let got = fetcher.get_json(&url("client.test", server.port(), path)).await;
        assert_eq!(got.unwrap_err(), FetchError::Redirect, "{path}");
    }
    assert_eq!(server.hits().await, 5);
    assert_eq!(target.hits().await, 0, "redirect target never contacted");
}

#[tokio::test]
async fn i08_only_200_json_succeeds() {
    setup();
    let ca = TestCa::new();
    let server = Server::start(&ca, |path| {
        let plain = |status: &str, ct: &str| Action::Reply(response(status, &[ct], b"{}"));
        match path {
            "/304" => plain("304 Not Modified", "Content-Type: application/json"),
            "/404" => plain("404 Not Found", "Content-Type: application/json"),
            "/500" => plain("500 Internal Server Error", "Content-Type: application/json"),
            "/201" => plain("201 Created", "Content-Type: application/json"),
            "/html" => plain("200 OK", "Content-Type: text/html"),
            "/none" => plain("200 OK", "X-Nothing: 1"),
            "/jsonp" => plain("200 OK", "Content-Type: application/jsonp"),
            _ => Action::Reply(response(
                "200 OK",
                &["Content-Type: Application/JSON; charset=utf-8", "Cache-Control: public, max-age=600"],
                br#"{"client_id":"https://client.test/client.json"}"#,
            )),
        }
    })
    .await;
    let fetcher = builder(&ca, fixed(&["127.0.0.1"])).per_host_per_minute(100).build().unwrap();
    let get = async |path: &str| fetcher.get_json(&url("client.test", server.port(), path)).await;
    assert_eq!(get("/304").await.unwrap_err(), FetchError::Status(304));
    assert_eq!(get("/404").await.unwrap_err(), FetchError::Status(404));
    assert_eq!(get("/500").await.unwrap_err(), FetchError::Status(500));
    assert_eq!(get("/201").await.unwrap_err(), FetchError::Status(201));
    assert_eq!(get("/html").await.unwrap_err(), FetchError::NotJson);
    assert_eq!(get("/none").await.unwrap_err(), FetchError::NotJson);
    assert_eq!(get("/jsonp").await.unwrap_err(), FetchError::NotJson);
    // Nothing is remembered: the same failure is fetched again.
    assert_eq!(get("/404").await.unwrap_err(), FetchError::Status(404));
    assert_eq!(server.hits().await, 8);

    let ok = get("/client.json").await.unwrap();
    assert_eq!(&ok.body[..], br#"{"client_id":"https://client.test/client.json"}"#);
    assert_eq!(ok.max_age, Some(Duration::from_secs(600)));
}

// ---------------------------------------------------------------------------------------------
// I09: size cap.

fn chunked_head() -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        .to_vec()
}

#[tokio::test]
async fn i09_body_over_cap_refused() {
    setup();
    let ca = TestCa::new();
    let server = Server::start(&ca, |path| {
        let n: usize = path.trim_start_matches(|c: char| !c.is_ascii_digit()).parse().unwrap();
        let body = "x".repeat(n);
        if path.starts_with("/chunked/") {
            let mut out = chunked_head();
            out.extend_from_slice(format!("{n:x}\r\n{body}\r\n0\r\n\r\n").as_bytes());
            Action::Reply(out)
        } else {
            Action::Reply(response("200 OK", &["Content-Type: application/json"], body.as_bytes()))
        }
    })
    .await;
    let fetcher = builder(&ca, fixed(&["127.0.0.1"])).build().unwrap();
    let get = async |path: &str| fetcher.get_json(&url("client.test", server.port(), path)).await;
    // Default cap: 5 KiB.
    assert_eq!(get("/length/5121").await.unwrap_err(), FetchError::TooLarge);
    assert_eq!(get("/chunked/5121").await.unwrap_err(), FetchError::TooLarge);
    assert_eq!(get("/length/5120").await.unwrap().body.len(), 5120);
    assert_eq!(get("/chunked/5120").await.unwrap().body.len(), 5120);

    let small = builder(&ca, fixed(&["127.0.0.1"])).max_bytes(100).build().unwrap();
    let got = small.get_json(&url("client.test", server.port(), "/chunked/101")).await;
    assert_eq!(got.unwrap_err(), FetchError::TooLarge);
}

#[tokio::test]
async fn i09_huge_content_length_refused_without_reading() {
    setup();
    let ca = TestCa::new();
    // The head announces 100 MB; no body byte ever follows.
    let head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n".to_vec();
    let server = Server::start(&ca, move |_| Action::Stall(head.clone())).await;
    let fetcher = builder(&ca, fixed(&["127.0.0.1"])).build().unwrap();
    let start = Instant::now();
    let got = fetcher.get_json(&url("client.test", server.port(), "/client.json")).await;
    assert_eq!(got.unwrap_err(), FetchError::TooLarge);
    assert!(start.elapsed() < Duration::from_secs(3), "refused on the header, not after the 5 s deadline");
}

#[tokio::test]
async fn i09_endless_chunked_body_aborted_at_cap() {
    setup();
    let ca = TestCa::new();
    let server = Server::start(&ca, |_| Action::Endless(chunked_head())).await;
    let fetcher = builder(&ca, fixed(&["127.0.0.1"])).build().unwrap();
    let start = Instant::now();
    let got = fetcher.get_json(&url("client.test", server.port(), "/client.json")).await;
    assert_eq!(got.unwrap_err(), FetchError::TooLarge);
    assert!(start.elapsed() < Duration::from_secs(3), "aborted at the cap, not at the deadline");
    // Only what socket buffers hold was ever written: the body was not drained.
    assert!(server.backend.written.load(SeqCst) < 64 * 1024 * 1024);
}

// ---------------------------------------------------------------------------------------------
// I10: deadline and concurrency.

fn drip_head() -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n".to_vec()
}

fn assert_near_deadline(elapsed: Duration) {
    assert!(elapsed >= Duration::from_millis(450), "ended before the deadline: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "ended long after the deadline: {elapsed:?}");
}

#[tokio::test]
async fn i10_slowloris_body_times_out_at_deadline() {
    setup();
    let ca = TestCa::new();
    let server = Server::start(&ca, |_| Action::Drip(drip_head())).await;
    let fetcher = builder(&ca, fixed(&["127.0.0.1"])).timeout(Duration::from_millis(500)).build().unwrap();
    let start = Instant::now();
    let got = fetcher.get_json(&url("client.test", server.port(), "/client.json")).await;
    assert_eq!(got.unwrap_err(), FetchError::Timeout);
    assert_near_deadline(start.elapsed());
}

#[tokio::test]
async fn i10_silent_server_times_out_at_deadline() {
    setup();
    let ca = TestCa::new();
    let server = Server::start(&ca, |_| Action::Stall(Vec::new())).await;
    let fetcher = builder(&ca, fixed(&["127.0.0.1"])).timeout(Duration::from_millis(500)).build().unwrap();
    let start = Instant::now();
    let got = fetcher.get_json(&url("client.test", server.port(), "/client.json")).await;
    assert_eq!(got.unwrap_err(), FetchError::Timeout);
    assert_near_deadline(start.elapsed());
    assert_eq!(server.hits().await, 1);
}

#[tokio::test]
async fn i10_tls_stall_times_out_at_deadline() {
    setup();
    let ca = TestCa::new();
    // Accepts TCP, never speaks TLS.
    let stall = Listener::trap().await;
    let fetcher = builder(&ca, fixed(&["127.0.0.1"])).timeout(Duration::from_millis(500)).build().unwrap();
    let start = Instant::now();
    let got = fetcher.get_json(&url("client.test", stall.port(), "/client.json")).await;
    assert_eq!(got.unwrap_err(), FetchError::Timeout);
    assert_near_deadline(start.elapsed());
    assert_eq!(stall.hits().await, 1);
}

#[tokio::test]
async fn i10_hundred_slowloris_fetches_bounded_in_time_and_concurrency() {
    setup();
    let ca = TestCa::new();
    let server = Server::start(&ca, |_| Action::Drip(drip_head())).await;
    let fetcher = builder(&ca, fixed(&["127.0.0.1"]))
        .timeout(Duration::from_millis(500))
        .max_concurrent(4)
        .per_host_per_minute(1000)
        .global_per_minute(1000)
        .build()
        .unwrap();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let fetcher = fetcher.clone();
        let u = url("client.test", server.port(), &format!("/client/{i}.json"));
        tasks.spawn(async move { fetcher.get_json(&u).await });
    }
    let mut timeouts = 0;
    while let Some(res) = tasks.join_next().await {
        assert_eq!(res.unwrap().unwrap_err(), FetchError::Timeout);
        timeouts += 1;
    }
    assert_eq!(timeouts, 100);
    assert_near_deadline(start.elapsed());
    let max_open = server.front.max_open();
    assert!((1..=4).contains(&max_open), "at most 4 connections open at once, saw {max_open}");
}

// ---------------------------------------------------------------------------------------------
// I17: a client's jwks_uri gets the same treatment.

#[tokio::test]
async fn i17_jwks_uri_same_rules() {
    setup();
    let ca = TestCa::new();
    let jwks = r#"{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;
    let server = Server::start(&ca, move |path| match path {
        "/huge" => Action::Stall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/jwk-set+json\r\nContent-Length: 100000000\r\n\r\n".to_vec(),
        ),
        "/moved" => Action::Reply(response("302 Found", &["Location: https://jwks.test/elsewhere"], b"")),
        _ => Action::Reply(response("200 OK", &["Content-Type: application/jwk-set+json"], jwks.as_bytes())),
    })
    .await;
    let u = |path: &str| url("jwks.test", server.port(), path);

    // Private (metadata) address: refused.
    let fetcher = builder(&ca, fixed(&["169.254.169.254"])).build().unwrap();
    assert_eq!(fetcher.get_json(&u("/jwks.json")).await.unwrap_err(), FetchError::AddressRefused);
    // Loopback, not allowed: refused although a server is there.
    let fetcher = builder(&ca, fixed(&["127.0.0.1"])).allow_loopback(false).build().unwrap();
    assert_eq!(fetcher.get_json(&u("/jwks.json")).await.unwrap_err(), FetchError::AddressRefused);
    assert_eq!(server.hits().await, 0);

    // Allowed: the document is fetched; redirects and huge bodies are not.
    let fetcher = builder(&ca, fixed(&["127.0.0.1"])).build().unwrap();
    assert_eq!(&fetcher.get_json(&u("/jwks.json")).await.unwrap().body[..], jwks.as_bytes());
    assert_eq!(fetcher.get_json(&u("/moved")).await.unwrap_err(), FetchError::Redirect);
    assert_eq!(fetcher.get_json(&u("/huge")).await.unwrap_err(), FetchError::TooLarge);
    assert_eq!(server.hits().await, 3);
}

// ---------------------------------------------------------------------------------------------
// I19: rates.

#[tokio::test]
async fn i19_per_host_rate_limit() {
    setup();
    let ca = TestCa::new();
    let server = Server::start(&ca, |_| json("{}")).await;
    let r = fixed(&["127.0.0.1"]);
    let fetcher = builder(&ca, r.clone()).per_host_per_minute(10).build().unwrap();
    let (mut ok, mut limited) = (0, 0);
    for i in 0..40 {
        match fetcher.get_json(&url("a.test", server.port(), &format!("/clients/{i}.json"))).await {
            Ok(_) => ok += 1,
            Err(FetchError::RateLimited) => limited += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!((ok, limited), (10, 30));
    assert_eq!(server.hits().await, 10);
    assert_eq!(r.calls(), 10, "no resolution when rate limited");
    // Another host has its own budget.
    assert!(fetcher.get_json(&url("b.test", server.port(), "/client.json")).await.is_ok());
    assert_eq!(server.hits().await, 11);
}

#[tokio::test]
async fn i19_global_rate_limit() {
    setup();
    let ca = TestCa::new();
    let server = Server::start(&ca, |_| json("{}")).await;
    let r = fixed(&["127.0.0.1"]);
    let fetcher = builder(&ca, r.clone()).per_host_per_minute(100).global_per_minute(10).build().unwrap();
    let (mut ok, mut limited) = (0, 0);
    for i in 0..40 {
        let host = if i % 2 == 0 { "a.test" } else { "b.test" };
        match fetcher.get_json(&url(host, server.port(), &format!("/clients/{i}.json"))).await {
            Ok(_) => ok += 1,
            Err(FetchError::RateLimited) => limited += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!((ok, limited), (10, 30));
    assert_eq!(server.hits().await, 10);
    assert_eq!(r.calls(), 10);
}

// ---------------------------------------------------------------------------------------------
// I21: proxy variables ignored.

#[tokio::test]
async fn i21_proxy_environment_ignored() {
    let proxy = setup();
    let ca = TestCa::new();
    let server = Server::start(&ca, |_| json(r#"{"direct":true}"#)).await;
    let fetcher = builder(&ca, fixed(&["127.0.0.1"])).build().unwrap();
    let u = url("client.test", server.port(), "/client.json");
    let got = fetcher.get_json(&u).await.unwrap();
    assert_eq!(&got.body[..], br#"{"direct":true}"#);
    assert_eq!(server.hits().await, 1, "fetched directly");
    // (A short blocking wait, bounded by `WAIT`; the trap runs on its own thread.)
    assert_eq!(proxy.hits(), 0, "proxy never contacted");

    // Control: a client that honours the environment does go to the trap.
    let plain = reqwest::Client::builder().timeout(WAIT).build().unwrap();
    assert!(plain.get(u).send().await.is_err());
    assert!(proxy.hits() >= 1, "the environment points at the trap");
}

// ---------------------------------------------------------------------------------------------
// C11: transport failures are plain failures, never an insecure fallback.

#[tokio::test]
async fn c11_untrusted_certificate_dns_failure_and_refused_connection() {
    setup();
    let ca = TestCa::new();
    let self_signed_server = Server::with_cert(self_signed(&["client.test"]), |_| json("{}")).await;
    let wrong_name = Server::with_cert(ca.leaf(&["other.test"]), |_| json("{}")).await;
    let fetcher = builder(&ca, fixed(&["127.0.0.1"])).build().unwrap();
    for port in [self_signed_server.port(), wrong_name.port()] {
        let got = fetcher.get_json(&url("client.test", port, "/client.json")).await;
        assert_eq!(got.unwrap_err(), FetchError::Transport);
    }
    assert_eq!(self_signed_server.backend_hits(), 0);
    assert_eq!(wrong_name.backend_hits(), 0);

    // Unknown name.
    let fetcher = builder(&ca, Arc::new(StaticResolver::new())).build().unwrap();
    let got = fetcher.get_json(&url("client.test", 443, "/client.json")).await;
    assert_eq!(got.unwrap_err(), FetchError::Transport);

    // Nobody listening.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let fetcher = builder(&ca, fixed(&["127.0.0.1"])).build().unwrap();
    let got = fetcher.get_json(&url("client.test", port, "/client.json")).await;
    assert_eq!(got.unwrap_err(), FetchError::Transport);
}

// ---------------------------------------------------------------------------------------------
// URL shape.

#[tokio::test]
async fn i02_only_https_without_credentials() {
    setup();
    let ca = TestCa::new();
    let trap = Listener::trap().await;
    let r = fixed(&["127.0.0.1"]);
    let fetcher = builder(&ca, r.clone()).build().unwrap();
    let p = trap.port();
    for raw in [
        format!("http://client.test:{p}/client.json"),
        format!("ftp://client.test:{p}/client.json"),
        format!("wss://client.test:{p}/client.json"),
        format!("https://user@client.test:{p}/client.json"),
        format!("https://user:pass@client.test:{p}/client.json"),
        "file:///etc/passwd".to_owned(),
    ] {
        let got = fetcher.get_json(&Url::parse(&raw).unwrap()).await;
        assert_eq!(got.unwrap_err(), FetchError::InvalidUrl, "{raw}");
    }
    assert_eq!(r.calls(), 0);
    assert_eq!(trap.hits().await, 0);
}
