//! Throughput of the authorization server's token endpoint, in process, on `SqliteStore` (a
//! file in a temporary directory) and `MemoryStore`: authorization-code grants per second and
//! refresh-token grants per second.
//!
//! Every request goes through `AuthorizationServer::service()` as an `http::Request` with a
//! form body (`tower::ServiceExt::oneshot`), one at a time, on a current-thread tokio runtime
//! (SQLite work runs on tokio's blocking pool, as in a server). The server is built as a
//! deployment builds it (`.store(..).encryption_keys(EncryptionKeys::generate())
//! .upstream(DevLogin)`), plus `insecure_auto_approve()` so that `/authorize` goes straight to
//! `/callback` without the consent and login pages.
//!
//! Codes and refresh tokens are single-use, so this is a plain timed loop rather than criterion:
//!
//! 1. outside the timed region, for each store: a batch of N real codes, each through the real
//!    flow (`GET /authorize` with its own PKCE pair → `GET /callback` with the browser cookie →
//!    the code in the redirect to the client), and the N token requests built;
//! 2. timed: redeeming the N codes (`grant_type=authorization_code`), responses read to the
//!    end; every answer must be 200 with an access and a refresh token (checked after the
//!    clock stops: a rejected grant would look fast);
//! 3. timed: redeeming the N refresh tokens those grants returned (`grant_type=refresh_token`).
//!
//! Each round does this for both stores, interleaved (code grants SQLite, memory, then refresh
//! grants SQLite, memory; the order of the stores flips every round), then probes the disk:
//! 4 KiB overwrite + `fdatasync` cycles per second in the SQLite file's directory. SQLite
//! commits every write with `synchronous = FULL`, so its figures follow the disk, which on
//! shared machines changes speed by more than 10× from minute to minute: read the SQLite
//! figures next to that probe. Each store keeps its server across rounds, so its tables grow
//! as a server's would. Before the rounds, an unmeasured pass on a counting memory store prints
//! the store operations per grant.
//!
//! Printed: one line per round, then per figure the median over rounds and the SQLite ÷ memory
//! ratio (median of per-round ratios), and last the summary line
//! `token endpoint: code grants/s sqlite=X memory=Y; refresh grants/s sqlite=Z memory=W`
//! (medians over rounds).
//!
//! Variables: `TOKEN_BENCH_ROUNDS` (at most this many rounds, default 15),
//! `TOKEN_BENCH_BUDGET` (seconds; no new round starts after it, default 90, at least 3 rounds
//! run), `TOKEN_BENCH_BATCH` (N, default 300; codes live 60 s, so a batch must be prepared and
//! redeemed within that), `TOKEN_BENCH_DIR` (where the SQLite file goes; default a temporary
//! directory under the system's, e.g. `/dev/shm` to take the disk out of the figures).

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tower::ServiceExt;
use tower_mcp_auth::ProtectedResource;
use tower_mcp_auth::server::{AuthorizationServer, Endpoints};
use tower_mcp_auth::store::crypto::EncryptionKeys;
use tower_mcp_auth::store::{MemoryStore, Namespace, SqliteStore, Store, StoreFuture};
use tower_mcp_auth::upstream::DevLogin;
use url::Url;

const ISSUER: &str = "https://auth.example.com";
const RESOURCE: &str = "https://auth.example.com/mcp";
const REDIRECT: &str = "http://127.0.0.1:53682/callback";
/// Codes live 60 s: the batch must be prepared and redeemed well within that.
const CODE_LIFETIME_BUDGET: Duration = Duration::from_secs(45);
/// Rounds run even when the time budget is spent.
const MIN_ROUNDS: usize = 3;
/// `fdatasync`s per disk probe (one probe per round).
const SYNC_PROBES: usize = 200;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(default)
}

/// A random URL-safe string of `bytes` random bytes.
fn random(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).unwrap();
    URL_SAFE_NO_PAD.encode(b)
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn location(&self) -> Url {
        let loc = self
            .headers
            .get("location")
            .unwrap_or_else(|| panic!("no redirect ({}): {}", self.status, String::from_utf8_lossy(&self.body)));
        Url::parse(ISSUER).unwrap().join(loc.to_str().unwrap()).unwrap()
    }
}

async fn call(svc: &Endpoints, req: Request<Full<Bytes>>) -> Reply {
    let res = svc.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    Reply { status: parts.status, headers: parts.headers, body: body.collect().await.unwrap().to_bytes() }
}

fn form(path: &str, fields: &[(&str, &str)]) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(serde_urlencoded::to_string(fields).unwrap())))
        .unwrap()
}

fn path_and_query(url: &Url) -> String {
    format!("{}?{}", url.path(), url.query().unwrap_or(""))
}

fn param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// One authorization server on one store, with one registered public client.
struct Target {
    name: &'static str,
    svc: Endpoints,
    client_id: String,
    /// The browser cookie `/authorize` sets and `/callback` checks.
    cookie: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl Target {
    async fn new(name: &'static str, store: Arc<dyn Store>, dir: Option<tempfile::TempDir>) -> Self {
        let resource = ProtectedResource::builder(RESOURCE)
            .authorization_server(ISSUER)
            .scopes_supported(["mcp:read", "mcp:admin"])
            .challenge_scopes(["mcp:read"])
            .build()
            .unwrap();
        let server = AuthorizationServer::builder(ISSUER, resource)
            .store(store)
            .encryption_keys(EncryptionKeys::generate())
            .upstream(Arc::new(DevLogin::new("bench")))
            .insecure_auto_approve()
            .build()
            .await
            .unwrap();
        let svc = server.service();
        let registration = json!({
            "client_name": "token bench",
            "redirect_uris": [REDIRECT],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none",
        });
        let req = Request::post("/register")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(registration.to_string())))
            .unwrap();
        let r = call(&svc, req).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&r.body));
        let client: Value = serde_json::from_slice(&r.body).unwrap();
        let client_id = client["client_id"].as_str().unwrap().to_owned();
        Self { name, svc, client_id, cookie: None, _dir: dir }
    }

    /// One real code: `/authorize` (auto-approved) → `/callback` → the client's redirect URI.
    /// Returns the token request that redeems it.
    async fn code_request(&mut self) -> Request<Full<Bytes>> {
        let verifier = random(32);
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let state = random(8);
        let query = serde_urlencoded::to_string([
            ("response_type", "code"),
            ("client_id", &self.client_id),
            ("redirect_uri", REDIRECT),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("state", &state),
            ("scope", "mcp:read"),
            ("resource", RESOURCE),
        ])
        .unwrap();
        let mut req = Request::get(format!("/authorize?{query}"));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let r = call(&self.svc, req.body(Full::default()).unwrap()).await;
        assert_eq!(r.status, StatusCode::FOUND, "/authorize: {}", String::from_utf8_lossy(&r.body));
        if let Some(set) = r.headers.get("set-cookie") {
            self.cookie = Some(set.to_str().unwrap().split(';').next().unwrap().to_owned());
        }
        let callback = r.location();
        let mut req = Request::get(path_and_query(&callback));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let r = call(&self.svc, req.body(Full::default()).unwrap()).await;
        let back = r.location();
        assert!(back.as_str().starts_with(REDIRECT), "not back at the client: {back}");
        assert_eq!(param(&back, "state").as_deref(), Some(state.as_str()));
        let code = param(&back, "code").unwrap_or_else(|| panic!("no code: {back}"));
        form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("code_verifier", &verifier),
                ("client_id", &self.client_id),
                ("redirect_uri", REDIRECT),
                ("resource", RESOURCE),
            ],
        )
    }

    fn refresh_request(&self, refresh_token: &str) -> Request<Full<Bytes>> {
        form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("client_id", &self.client_id),
                ("resource", RESOURCE),
            ],
        )
    }

    async fn code_requests(&mut self, n: usize) -> Vec<Request<Full<Bytes>>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.code_request().await);
        }
        out
    }
}

/// The timed part: sends `requests` one after another and reads each response to the end.
/// Returns the elapsed time and the refresh tokens of the answers, after checking (outside
/// the clock) that every answer was a 200 with an access token and a refresh token.
async fn timed(target: &Target, requests: Vec<Request<Full<Bytes>>>) -> (Duration, Vec<String>) {
    let n = requests.len();
    let mut answers = Vec::with_capacity(n);
    let start = Instant::now();
    for req in requests {
        let res = target.svc.clone().oneshot(req).await.unwrap();
        let (parts, body) = res.into_parts();
        answers.push((parts.status, body.collect().await.unwrap().to_bytes()));
    }
    let elapsed = start.elapsed();
    let mut refresh_tokens = Vec::with_capacity(n);
    for (status, body) in answers {
        assert_eq!(status, StatusCode::OK, "{}: {}", target.name, String::from_utf8_lossy(&body));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["token_type"], "Bearer", "{v}");
        assert!(v["access_token"].as_str().is_some_and(|t| t.len() > 100), "{v}");
        refresh_tokens.push(v["refresh_token"].as_str().unwrap_or_else(|| panic!("no refresh token: {v}")).to_owned());
    }
    (elapsed, refresh_tokens)
}

/// The store operations the server performs, counted (a separate, unmeasured pass): they
/// explain the SQLite figures, where every write is its own durable transaction.
#[derive(Debug, Default)]
struct Counting {
    inner: MemoryStore,
    /// get, put, insert_if_absent, take, delete, compare_and_swap.
    ops: [AtomicU64; 6],
}

const OPS: [&str; 6] = ["get", "put", "insert_if_absent", "take", "delete", "compare_and_swap"];

impl Counting {
    fn count(&self, op: usize) {
        self.ops[op].fetch_add(1, Ordering::Relaxed);
    }

    fn take_counts(&self) -> [u64; 6] {
        std::array::from_fn(|i| self.ops[i].swap(0, Ordering::Relaxed))
    }
}

impl Store for Counting {
    fn get<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        self.count(0);
        self.inner.get(ns, key)
    }
    fn put<'a>(&'a self, ns: Namespace, key: &'a str, value: Vec<u8>, ttl: Option<Duration>) -> StoreFuture<'a, ()> {
        self.count(1);
        self.inner.put(ns, key, value, ttl)
    }
    fn insert_if_absent<'a>(
        &'a self,
        ns: Namespace,
        key: &'a str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, bool> {
        self.count(2);
        self.inner.insert_if_absent(ns, key, value, ttl)
    }
    fn take<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        self.count(3);
        self.inner.take(ns, key)
    }
    fn delete<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, bool> {
        self.count(4);
        self.inner.delete(ns, key)
    }
    fn compare_and_swap<'a>(
        &'a self,
        ns: Namespace,
        key: &'a str,
        expected: &'a [u8],
        new: Option<Vec<u8>>,
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, bool> {
        self.count(5);
        self.inner.compare_and_swap(ns, key, expected, new, ttl)
    }
}

fn describe(counts: [u64; 6], grants: u64) -> String {
    let parts: Vec<String> = OPS
        .iter()
        .zip(counts)
        .filter(|(_, n)| *n > 0)
        .map(|(op, n)| format!("{op} {}", n as f64 / grants as f64))
        .collect();
    parts.join(", ")
}

/// Store operations per grant of each kind, on a counting memory store.
async fn count_store_operations() -> (String, String) {
    const N: usize = 20;
    let counting = Arc::new(Counting::default());
    let mut target = Target::new("counting", counting.clone(), None).await;
    // The client's first grant also records that the client was used: not counted.
    let first = target.code_requests(1).await;
    timed(&target, first).await;
    let codes = target.code_requests(N).await;
    counting.take_counts();
    let (_, rts) = timed(&target, codes).await;
    let code = describe(counting.take_counts(), N as u64);
    let reqs = rts.iter().map(|rt| target.refresh_request(rt)).collect();
    timed(&target, reqs).await;
    let refresh = describe(counting.take_counts(), N as u64);
    (code, refresh)
}

/// How many 4 KiB overwrite + `fdatasync` cycles per second the SQLite file's directory
/// allows: the floor under every durable SQLite commit (`synchronous = FULL`).
fn sync_rate(dir: &Path, n: usize) -> f64 {
    let path = dir.join("sync-probe");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = [0x5au8; 4096];
    let start = Instant::now();
    for _ in 0..n {
        file.seek(SeekFrom::Start(0)).unwrap();
        file.write_all(&block).unwrap();
        file.sync_data().unwrap();
    }
    let elapsed = start.elapsed();
    drop(file);
    let _ = std::fs::remove_file(path);
    per_second(n, elapsed)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 { xs[n / 2] } else { (xs[n / 2 - 1] + xs[n / 2]) / 2.0 }
}

fn per_second(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

#[derive(Default)]
struct Figures {
    code: Vec<f64>,
    refresh: Vec<f64>,
}

async fn run() {
    let max_rounds = env_or("TOKEN_BENCH_ROUNDS", 15);
    let batch = env_or("TOKEN_BENCH_BATCH", 300);
    let budget = Duration::from_secs(env_or("TOKEN_BENCH_BUDGET", 90) as u64);
    let dir = match std::env::var_os("TOKEN_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(base).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let dir_path = dir.path().to_owned();
    let db = dir_path.join("token-bench.db");
    println!(
        "token bench: up to {max_rounds} rounds (at least {MIN_ROUNDS}, no new round after {budget:?}) of {batch} grants \
         per store and grant type, one request at a time; SQLite file {}",
        db.display()
    );
    let (code_ops, refresh_ops) = count_store_operations().await;
    println!("store operations per code grant: {code_ops}");
    println!("store operations per refresh grant: {refresh_ops}");

    let sqlite = SqliteStore::open(&db).unwrap();
    let mut targets = [
        Target::new("sqlite", Arc::new(sqlite), Some(dir)).await,
        Target::new("memory", Arc::new(MemoryStore::new()), None).await,
    ];
    let mut figures = [Figures::default(), Figures::default()];
    let mut syncs = Vec::new();

    // Warm-up: one small batch through both grants on each store (not recorded).
    for t in &mut targets {
        let reqs = t.code_requests(batch.min(20)).await;
        let (_, rts) = timed(t, reqs).await;
        let reqs = rts.iter().map(|rt| t.refresh_request(rt)).collect();
        timed(t, reqs).await;
    }

    let started = Instant::now();
    let mut rounds = 0;
    while rounds < max_rounds && (rounds < MIN_ROUNDS || started.elapsed() < budget) {
        // The order of the stores flips every round.
        let order: [usize; 2] = if rounds % 2 == 0 { [0, 1] } else { [1, 0] };
        let prepared_at = Instant::now();
        let mut codes: [Vec<Request<Full<Bytes>>>; 2] = [Vec::new(), Vec::new()];
        for &i in &order {
            codes[i] = targets[i].code_requests(batch).await;
        }
        let prepare = prepared_at.elapsed();
        let mut refresh_tokens: [Vec<String>; 2] = [Vec::new(), Vec::new()];
        let mut code_rates = [0.0; 2];
        for &i in &order {
            let (d, rts) = timed(&targets[i], std::mem::take(&mut codes[i])).await;
            code_rates[i] = per_second(batch, d);
            refresh_tokens[i] = rts;
        }
        assert!(
            prepared_at.elapsed() < CODE_LIFETIME_BUDGET,
            "preparing and redeeming the codes took {:?}: lower TOKEN_BENCH_BATCH (codes live 60 s)",
            prepared_at.elapsed()
        );
        let mut refresh_rates = [0.0; 2];
        for &i in &order {
            let reqs = refresh_tokens[i].iter().map(|rt| targets[i].refresh_request(rt)).collect();
            let (d, _) = timed(&targets[i], reqs).await;
            refresh_rates[i] = per_second(batch, d);
        }
        let sync = sync_rate(&dir_path, SYNC_PROBES);
        syncs.push(sync);
        for i in 0..2 {
            figures[i].code.push(code_rates[i]);
            figures[i].refresh.push(refresh_rates[i]);
        }
        rounds += 1;
        println!(
            "round {rounds}: code grants/s sqlite={:.0} memory={:.0}; refresh grants/s sqlite={:.0} memory={:.0}; \
             disk syncs/s {sync:.0} (preparing {} codes: {:.1} s)",
            code_rates[0],
            code_rates[1],
            refresh_rates[0],
            refresh_rates[1],
            2 * batch,
            prepare.as_secs_f64()
        );
    }
    println!("measured part: {:.1} s", started.elapsed().as_secs_f64());

    let ratio = |a: &[f64], b: &[f64]| median(a.iter().zip(b).map(|(x, y)| x / y).collect());
    let [sq, mem] = &figures;
    println!(
        "medians of {rounds} rounds: code grants/s sqlite {:.0}, memory {:.0}, sqlite ÷ memory {:.3}; \
         refresh grants/s sqlite {:.0}, memory {:.0}, sqlite ÷ memory {:.3}; disk syncs/s {:.0} \
         (ratios: medians of per-round ratios)",
        median(sq.code.clone()),
        median(mem.code.clone()),
        ratio(&sq.code, &mem.code),
        median(sq.refresh.clone()),
        median(mem.refresh.clone()),
        ratio(&sq.refresh, &mem.refresh),
        median(syncs.clone()),
    );
    println!(
        "token endpoint: code grants/s sqlite={:.0} memory={:.0}; refresh grants/s sqlite={:.0} memory={:.0}",
        median(sq.code.clone()),
        median(mem.code.clone()),
        median(sq.refresh.clone()),
        median(mem.refresh.clone()),
    );
}

fn main() {
    // `cargo bench` passes `--bench` (and criterion-style filters); nothing here takes arguments.
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(run());
}
