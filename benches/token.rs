//! Throughput of the authorization server's token endpoint, in process, on `SqliteStore` (a
//! file in a temporary directory), `RedisStore` (a private `redis-server` on loopback) and
//! `MemoryStore`: authorization-code grants per second and refresh-token grants per second,
//! and where a grant's time goes (signing the access token, hashing, store operations, the
//! rest).
//!
//! Every request goes through `AuthorizationServer::service()` as an `http::Request` with a
//! form body (`tower::ServiceExt::oneshot`), one at a time, on a current-thread tokio runtime
//! (SQLite work runs on tokio's blocking pool, as in a server; the Redis connection's task runs
//! on the same runtime). The server is built as a deployment builds it (`.store(..)
//! .encryption_keys(EncryptionKeys::generate()).upstream(DevLogin)`), plus
//! `insecure_auto_approve()` so that `/authorize` goes straight to `/callback` without the
//! consent and login pages.
//!
//! Redis: the bench starts its own `redis-server` (it must be on `PATH`; without it the bench
//! fails, it is never skipped) on 127.0.0.1 and a free port, with its data directory in the
//! same temporary directory as the SQLite file, persisting as `tests/e2e_instances.rs` runs it
//! for several instances: an append-only file fsynced before every reply (`--appendonly yes
//! --appendfsync always`; no RDB snapshots), the counterpart of SQLite's `synchronous = FULL`.
//! The server runs under `sh`, which stops it when its stdin closes: when the bench ends, also
//! by a panic, and when the bench process dies.
//!
//! Codes and refresh tokens are single-use, so this is a plain timed loop rather than criterion:
//!
//! 1. outside the timed region, for each store: a batch of N real codes, each through the real
//!    flow (`GET /authorize` with its own PKCE pair → `GET /callback` with the browser cookie →
//!    the code in the redirect to the client), and the N token requests built;
//! 2. timed: redeeming the N codes (`grant_type=authorization_code`), responses read to the
//!    end; every answer must be 200 with an access and a refresh token (checked after the
//!    clock stops: a rejected grant would look fast);
//! 3. timed: redeeming the N refresh tokens those grants returned (`grant_type=refresh_token`);
//! 4. the cost split, measured in the same round: right after each batch of grants, the mean
//!    latency of `get`, `put`, `take` and `compare_and_swap` on that store, timed one at a time
//!    through the `Store` trait on the server's own store (same file, same connection; keys in
//!    a namespace of the bench's own); at the end of the round, the access-token signing the
//!    server does (`SigningKeys::sign` is crate-private, so its steps are repeated here with the
//!    fixture ES256 key, on the claims of a token the server issued) and SHA-256 + base64url of
//!    a 43-character secret, as `secret_hash` does.
//!
//! Each round does this for the three stores, interleaved (code grants on every store, then
//! refresh grants on every store, each followed by that store's latencies; the order of the
//! stores rotates every round), then probes the disk: 4 KiB overwrite + `fdatasync` cycles per
//! second in the directory of the SQLite file and of Redis's append-only file. Both commit
//! every write to disk, so their figures follow the disk, which on shared machines changes
//! speed by more than 10× from minute to minute: read them next to that probe. Each store keeps
//! its server across rounds, so its data grows as a server's would. Before the rounds, an
//! unmeasured pass on a counting memory store prints the store operations per grant.
//!
//! The split per grant, per round: signing = one signature; hashing = the SHA-256s the grant
//! computes (counted in src/server/token.rs: 3 for a code grant — the code, the PKCE verifier,
//! the new refresh token — and 2 for a refresh grant — the presented and the new refresh
//! token) × the time of one; store ops = the counted operations × that store's latency per
//! operation; rest = 1 / (grants/s) − those three (HTTP request and response, form and JSON
//! parsing, record (de)serialisation, claims, random tokens, store deadlines).
//!
//! Printed: one line per round, then per figure the median over rounds and the ratio to memory
//! (median of per-round ratios), the store latencies, the cost split table (medians over
//! rounds of the per-round figures, so a row need not add up exactly), and last the summary
//! line `token endpoint: code grants/s sqlite=X redis=Y memory=Z; refresh grants/s sqlite=…
//! redis=… memory=…` (medians over rounds).
//!
//! Variables: `TOKEN_BENCH_ROUNDS` (at most this many rounds, default 15),
//! `TOKEN_BENCH_BUDGET` (seconds; no new round starts after it, default 90, at least 3 rounds
//! run), `TOKEN_BENCH_BATCH` (N, default 300; codes live 60 s, so a batch must be prepared and
//! redeemed within that), `TOKEN_BENCH_OPS` (iterations of put, get, compare_and_swap, take per
//! store and round, default 100), `TOKEN_BENCH_DIR` (where the SQLite file and Redis's data go;
//! default a temporary directory under the system's, e.g. `/dev/shm` to take the disk out of
//! the figures), `TOKEN_BENCH_REDIS_FSYNC` (`always`, `everysec` or `no`; default `always`).

use std::hint::black_box;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use jsonwebtoken::EncodingKey;
#[cfg(feature = "aws_lc_rs")]
use jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER as PROVIDER;
#[cfg(all(feature = "rust_crypto", not(feature = "aws_lc_rs")))]
use jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER as PROVIDER;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tower::ServiceExt;
use tower_mcp_auth::ProtectedResource;
use tower_mcp_auth::server::{AuthorizationServer, Endpoints};
use tower_mcp_auth::store::crypto::EncryptionKeys;
use tower_mcp_auth::store::{MemoryStore, Namespace, RedisStore, SqliteStore, Store, StoreError, StoreFuture};
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
/// Signatures per round for the signing cost.
const SIGN_ITERS: usize = 200;
/// SHA-256 computations per round for the hashing cost.
const HASH_ITERS: usize = 20_000;
/// SHA-256s per grant, counted in src/server/token.rs: a code grant hashes the code
/// (`secret_hash`), the PKCE verifier (S256) and the new refresh token; a refresh grant the
/// presented refresh token and the new one. Every input is 43 characters (32 random bytes,
/// base64url), as are this bench's PKCE verifiers.
const HASHES_PER_GRANT: [f64; 2] = [3.0, 2.0];
/// The lifetime the store latencies are measured with (the server's refresh-token lifetime is
/// of this order; only its presence matters).
const OP_TTL: Option<Duration> = Some(Duration::from_secs(3600));
/// The namespace the store latencies are measured in (no server record lives there).
const BENCH_NS: Namespace = Namespace::new("token_bench");

/// The stores, in the order of every per-store array below.
const STORES: [&str; 3] = ["sqlite", "redis", "memory"];
const MEMORY: usize = 2;
/// Grant kinds, in the order of every per-kind array below.
const KINDS: [&str; 2] = ["code", "refresh"];

/// Store operations, in the order of every per-operation array below.
const OPS: [&str; 6] = ["get", "put", "insert_if_absent", "take", "delete", "compare_and_swap"];
const GET: usize = 0;
const PUT: usize = 1;
const TAKE: usize = 3;
const CAS: usize = 5;
/// The operations whose latency is measured (the ones the grants perform).
const TIMED_OPS: [usize; 4] = [GET, PUT, TAKE, CAS];

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(default)
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).unwrap();
    b
}

/// A random URL-safe string of `bytes` random bytes.
fn random(bytes: usize) -> String {
    URL_SAFE_NO_PAD.encode(random_bytes(bytes))
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
    /// The server's store, also timed directly for the cost split.
    store: Arc<dyn Store>,
    client_id: String,
    /// The browser cookie `/authorize` sets and `/callback` checks.
    cookie: Option<String>,
}

impl Target {
    async fn new(name: &'static str, store: Arc<dyn Store>) -> Self {
        let resource = ProtectedResource::builder(RESOURCE)
            .authorization_server(ISSUER)
            .scopes_supported(["mcp:read", "mcp:admin"])
            .challenge_scopes(["mcp:read"])
            .build()
            .unwrap();
        let server = AuthorizationServer::builder(ISSUER, resource)
            .store(store.clone())
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
        Self { name, svc, store, client_id, cookie: None }
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

    fn refresh_requests(&self, tokens: &[Tokens]) -> Vec<Request<Full<Bytes>>> {
        tokens.iter().map(|t| self.refresh_request(&t.refresh)).collect()
    }

    async fn code_requests(&mut self, n: usize) -> Vec<Request<Full<Bytes>>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.code_request().await);
        }
        out
    }
}

/// What one successful grant returned.
struct Tokens {
    access: String,
    refresh: String,
}

/// The timed part: sends `requests` one after another and reads each response to the end.
/// Returns the elapsed time and the tokens of the answers, after checking (outside the clock)
/// that every answer was a 200 with an access token and a refresh token.
async fn timed(target: &Target, requests: Vec<Request<Full<Bytes>>>) -> (Duration, Vec<Tokens>) {
    let n = requests.len();
    let mut answers = Vec::with_capacity(n);
    let start = Instant::now();
    for req in requests {
        let res = target.svc.clone().oneshot(req).await.unwrap();
        let (parts, body) = res.into_parts();
        answers.push((parts.status, body.collect().await.unwrap().to_bytes()));
    }
    let elapsed = start.elapsed();
    let mut tokens = Vec::with_capacity(n);
    for (status, body) in answers {
        assert_eq!(status, StatusCode::OK, "{}: {}", target.name, String::from_utf8_lossy(&body));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["token_type"], "Bearer", "{v}");
        let access = v["access_token"].as_str().filter(|t| t.len() > 100).unwrap_or_else(|| panic!("{v}"));
        let refresh = v["refresh_token"].as_str().unwrap_or_else(|| panic!("no refresh token: {v}"));
        tokens.push(Tokens { access: access.to_owned(), refresh: refresh.to_owned() });
    }
    (elapsed, tokens)
}

// ---------------------------------------------------------------------------------------------
// Counting the store operations of a grant.

/// One store operation the server performed: its index in `OPS`, its namespace, and the size
/// of the value it wrote or read (0 when none).
type Logged = (usize, Namespace, usize);

/// A memory store that logs every operation (a separate, unmeasured pass): the counts explain
/// the SQLite and Redis figures, where every write is its own durable commit.
#[derive(Debug, Default)]
struct Counting {
    inner: MemoryStore,
    log: Mutex<Vec<Logged>>,
}

impl Counting {
    fn record(&self, op: usize, ns: Namespace, bytes: usize) {
        self.log.lock().unwrap().push((op, ns, bytes));
    }

    fn take_log(&self) -> Vec<Logged> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

fn read_len(r: &Result<Option<Vec<u8>>, StoreError>) -> usize {
    r.as_ref().ok().and_then(Option::as_ref).map_or(0, Vec::len)
}

impl Store for Counting {
    fn get<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let r = self.inner.get(ns, key).await;
            self.record(GET, ns, read_len(&r));
            r
        })
    }
    fn put<'a>(&'a self, ns: Namespace, key: &'a str, value: Vec<u8>, ttl: Option<Duration>) -> StoreFuture<'a, ()> {
        self.record(PUT, ns, value.len());
        self.inner.put(ns, key, value, ttl)
    }
    fn insert_if_absent<'a>(
        &'a self,
        ns: Namespace,
        key: &'a str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, bool> {
        self.record(2, ns, value.len());
        self.inner.insert_if_absent(ns, key, value, ttl)
    }
    fn take<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let r = self.inner.take(ns, key).await;
            self.record(TAKE, ns, read_len(&r));
            r
        })
    }
    fn delete<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, bool> {
        self.record(4, ns, 0);
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
        self.record(CAS, ns, new.as_ref().map_or(expected.len(), Vec::len));
        self.inner.compare_and_swap(ns, key, expected, new, ttl)
    }
}

/// A count per grant: an integer as one, otherwise two decimals.
fn per_grant(n: usize, grants: usize) -> String {
    if n.is_multiple_of(grants) { (n / grants).to_string() } else { format!("{:.2}", n as f64 / grants as f64) }
}

/// "get 3 (clients, codes, grants), put 2 (…), …" per grant.
fn describe(log: &[Logged], grants: usize) -> String {
    let mut parts = Vec::new();
    for (op, name) in OPS.iter().enumerate() {
        let mut namespaces: Vec<(Namespace, usize)> = Vec::new();
        for &(_, ns, _) in log.iter().filter(|(o, _, _)| *o == op) {
            match namespaces.iter_mut().find(|(n, _)| *n == ns) {
                Some((_, count)) => *count += 1,
                None => namespaces.push((ns, 1)),
            }
        }
        if namespaces.is_empty() {
            continue;
        }
        let total: usize = namespaces.iter().map(|(_, c)| c).sum();
        let each: Vec<String> = namespaces
            .iter()
            .map(|(ns, c)| if *c == grants { ns.to_string() } else { format!("{ns} ×{}", per_grant(*c, grants)) })
            .collect();
        parts.push(format!("{name} {} ({})", per_grant(total, grants), each.join(", ")));
    }
    parts.join(", ")
}

fn counts_per_grant(log: &[Logged], grants: usize) -> [f64; 6] {
    std::array::from_fn(|op| log.iter().filter(|(o, _, _)| *o == op).count() as f64 / grants as f64)
}

/// What the counting pass found.
struct OpCounts {
    /// Store operations per grant, per kind (`KINDS`) and operation (`OPS`).
    per_grant: [[f64; 6]; 2],
    described: [String; 2],
    /// Mean size of the values the grants' operations wrote or read, in bytes.
    value_len: usize,
    /// An access token the server issued: its header and claims are what signing is timed on.
    access_token: String,
}

/// Store operations per grant of each kind, on a counting memory store.
async fn count_store_operations() -> OpCounts {
    const N: usize = 20;
    let counting = Arc::new(Counting::default());
    let mut target = Target::new("counting", counting.clone()).await;
    // The client's first grant also records that the client was used: not counted.
    let first = target.code_requests(1).await;
    timed(&target, first).await;
    let codes = target.code_requests(N).await;
    counting.take_log();
    let (_, tokens) = timed(&target, codes).await;
    let code_log = counting.take_log();
    timed(&target, target.refresh_requests(&tokens)).await;
    let refresh_log = counting.take_log();
    let sizes: Vec<usize> = code_log.iter().chain(&refresh_log).map(|&(_, _, b)| b).filter(|&b| b > 0).collect();
    OpCounts {
        per_grant: [counts_per_grant(&code_log, N), counts_per_grant(&refresh_log, N)],
        described: [describe(&code_log, N), describe(&refresh_log, N)],
        value_len: sizes.iter().sum::<usize>() / sizes.len().max(1),
        access_token: tokens.into_iter().next().unwrap().access,
    }
}

// ---------------------------------------------------------------------------------------------
// The cost split: store latencies, signing, hashing.

/// Mean latency in µs of each operation in `TIMED_OPS` (NaN for the others), timed one at a
/// time through the `Store` trait: `n` times put, get, compare_and_swap (same value, as the
/// grants extend a grant's lifetime) and take of a fresh 43-character key with a value of
/// `value_len` bytes. Each result is checked after its clock stops.
async fn op_latencies(store: &dyn Store, n: usize, value_len: usize) -> [f64; 6] {
    let mut sums = [Duration::ZERO; 6];
    for _ in 0..n {
        let key = random(32);
        let value = random_bytes(value_len);
        let (put_value, swap_value) = (value.clone(), value.clone());

        let t = Instant::now();
        store.put(BENCH_NS, &key, put_value, OP_TTL).await.unwrap();
        sums[PUT] += t.elapsed();

        let t = Instant::now();
        let got = store.get(BENCH_NS, &key).await.unwrap();
        sums[GET] += t.elapsed();
        assert_eq!(got.as_deref(), Some(&value[..]), "get after put");

        let t = Instant::now();
        let swapped = store.compare_and_swap(BENCH_NS, &key, &value, Some(swap_value), OP_TTL).await.unwrap();
        sums[CAS] += t.elapsed();
        assert!(swapped, "compare_and_swap of the stored value");

        let t = Instant::now();
        let taken = store.take(BENCH_NS, &key).await.unwrap();
        sums[TAKE] += t.elapsed();
        assert_eq!(taken.as_deref(), Some(&value[..]), "take after compare_and_swap");
    }
    std::array::from_fn(|op| if TIMED_OPS.contains(&op) { sums[op].as_secs_f64() * 1e6 / n as f64 } else { f64::NAN })
}

/// The access-token signing of `SigningKeys::sign` (crate-private), step by step: header and
/// claims serialized and base64url-encoded, ECDSA P-256 over the input with the key pair the
/// server parsed once from PKCS#8 (aws-lc-rs), the signature base64url-encoded. The key is
/// tests/fixtures/keys/es256.pem; `kid` and claims are those of a token the server issued, so
/// the token is byte for byte as long as the server's. `load` is what parsing the key for
/// each token would add (the server did that until it kept the parsed key).
struct Signer {
    key: EncodingKey,
    pair: aws_lc_rs::signature::EcdsaKeyPair,
    kid: String,
    claims: Value,
}

impl Signer {
    fn new(issued: &str) -> Self {
        let pem = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys/es256.pem")).unwrap();
        let key = EncodingKey::from_ec_pem(&pem).unwrap();
        let pem_text = std::str::from_utf8(&pem).unwrap();
        let der = p256::pkcs8::DecodePrivateKey::from_pkcs8_pem(pem_text)
            .map(|k: p256::SecretKey| p256::pkcs8::EncodePrivateKey::to_pkcs8_der(&k).unwrap())
            .unwrap();
        let pair = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            der.as_bytes(),
        )
        .unwrap();
        let part = |i: usize| -> Value {
            let b64 = issued.split('.').nth(i).unwrap();
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(b64).unwrap()).unwrap()
        };
        let header = part(0);
        assert_eq!(header["alg"], "ES256", "the server signs with ES256: {header}");
        let signer = Self { key, pair, kid: header["kid"].as_str().unwrap().to_owned(), claims: part(1) };
        assert_eq!(signer.sign().len(), issued.len(), "the timed signing must produce a token of the server's size");
        signer
    }

    fn load(&self) -> Box<dyn jsonwebtoken::crypto::JwtSigner> {
        (PROVIDER.signer_factory)(&jsonwebtoken::Algorithm::ES256, &self.key).unwrap()
    }

    fn sign(&self) -> String {
        let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": self.kid});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(self.claims.to_string())
        );
        let signature = self.pair.sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// µs per signature, and µs per key load alone (no longer part of a signature).
    fn cost(&self, n: usize) -> (f64, f64) {
        let start = Instant::now();
        for _ in 0..n {
            black_box(self.sign());
        }
        let sign = start.elapsed();
        let start = Instant::now();
        for _ in 0..n {
            black_box(self.load());
        }
        let load = start.elapsed();
        (sign.as_secs_f64() * 1e6 / n as f64, load.as_secs_f64() * 1e6 / n as f64)
    }
}

/// µs per `secret_hash`-shaped computation: base64url(SHA-256(43-character secret)).
fn hash_cost(inputs: &[String], n: usize) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        let input = black_box(inputs[i % inputs.len()].as_bytes());
        black_box(URL_SAFE_NO_PAD.encode(Sha256::digest(input)));
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

// ---------------------------------------------------------------------------------------------
// A private redis-server.

/// Time for `redis-server` to report that it accepts connections, and to exit once told to.
const REDIS_READY: Duration = Duration::from_secs(15);

/// Runs `redis-server` with the given arguments and stops it (SIGTERM, so it fsyncs and exits)
/// as soon as the shell's stdin reaches its end: when the bench drops its end, and when the
/// bench process dies. The shell exits when `redis-server` does, so the end of its output means
/// both are gone. Its first line is the server's pid (for a last-resort SIGKILL).
const REDIS_WRAPPER: &str = r#"exec 2>&1 3<&0
redis-server "$@" 3<&- & pid=$!
echo "redis-server pid $pid"
{ cat <&3 >/dev/null 2>&1; kill "$pid" 2>/dev/null; } >/dev/null 2>&1 &
exec 3<&-
wait "$pid""#;

enum RedisEvent {
    Ready,
    /// The output ended: the shell and `redis-server` have exited.
    Exited,
}

/// A `redis-server` of the bench's own on 127.0.0.1; stopped on drop (also while a panic
/// unwinds) and when the bench process dies.
struct RedisServer {
    port: u16,
    version: String,
    child: Child,
    stdin: Option<ChildStdin>,
    log: Arc<Mutex<String>>,
    events: Receiver<RedisEvent>,
    exited: bool,
}

impl RedisServer {
    /// Starts a server with its data in `dir`, an append-only file fsynced per `fsync`, no RDB
    /// snapshots. Panics with instructions if `redis-server` cannot run.
    fn start(dir: &Path, fsync: &str) -> Self {
        let version = match Command::new("redis-server").arg("--version").output() {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .find_map(|w| w.strip_prefix("v="))
                .unwrap_or("?")
                .to_owned(),
            Ok(out) => panic!(
                "benches/token.rs needs redis-server: `redis-server --version` failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => panic!(
                "benches/token.rs needs redis-server on PATH to measure RedisStore ({e}); install it \
                 (Debian/Ubuntu: apt-get install redis-server)"
            ),
        };
        let mut last = String::new();
        // A port found free may be taken before the server binds it: try a few.
        for _ in 0..5 {
            let port = TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port();
            match Self::try_start(port, dir, fsync, &version) {
                Ok(server) => return server,
                Err(log) => last = log,
            }
        }
        panic!("redis-server did not start:\n{last}")
    }

    fn try_start(port: u16, dir: &Path, fsync: &str, version: &str) -> Result<Self, String> {
        let port_arg = port.to_string();
        let dir_arg = dir.to_str().expect("a UTF-8 temporary directory");
        let args = [
            ("--port", port_arg.as_str()),
            ("--bind", "127.0.0.1"),
            ("--dir", dir_arg),
            ("--appendonly", "yes"),
            ("--appendfsync", fsync),
            ("--save", ""),
        ];
        let mut child = Command::new("sh")
            .args(["-c", REDIS_WRAPPER, "redis-server"])
            .args(args.iter().flat_map(|&(name, value)| [name, value]))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run sh: {e}"));
        let stdout = child.stdout.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, events) = mpsc::channel();
        let sink = log.clone();
        // Reads the output to its end (so the server never blocks on a full pipe), reporting
        // readiness and the end.
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(1..) => {
                        let text = String::from_utf8_lossy(&line);
                        sink.lock().unwrap().push_str(&text);
                        if text.contains("Ready to accept connections") {
                            let _ = tx.send(RedisEvent::Ready);
                        }
                    }
                    _ => {
                        let _ = tx.send(RedisEvent::Exited);
                        return;
                    }
                }
            }
        });
        let mut server =
            Self { port, version: version.to_owned(), stdin: child.stdin.take(), child, log, events, exited: false };
        match server.events.recv_timeout(REDIS_READY) {
            Ok(RedisEvent::Ready) => Ok(server),
            Ok(RedisEvent::Exited) => {
                server.exited = true;
                Err(format!("redis-server exited on port {port}:\n{}", server.log()))
            }
            Err(_) => Err(format!("redis-server not ready on port {port} within {REDIS_READY:?}:\n{}", server.log())),
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The pid `REDIS_WRAPPER` printed.
    fn pid(&self) -> Option<String> {
        self.log().lines().find_map(|l| l.strip_prefix("redis-server pid ").map(str::to_owned))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + REDIS_READY;
        while !self.exited {
            match self.events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(RedisEvent::Exited) | Err(RecvTimeoutError::Disconnected) => self.exited = true,
                Ok(RedisEvent::Ready) => {}
                Err(RecvTimeoutError::Timeout) => break,
            }
        }
        if !self.exited {
            eprintln!("redis-server on port {} did not stop within {REDIS_READY:?}: killing it", self.port);
            if let Some(pid) = self.pid() {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The disk, statistics.

/// How many 4 KiB overwrite + `fdatasync` cycles per second `dir` allows: the floor under every
/// durable SQLite commit (`synchronous = FULL`) and Redis write (`appendfsync always`).
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

/// What one round measured; per-store arrays in `STORES` order.
struct Round {
    /// Grants per second, per kind (`KINDS`) and store.
    rates: [[f64; 3]; 2],
    /// Mean µs per operation (`OPS`; NaN for those not timed), per store, measured right after
    /// that store's grants of each kind (`KINDS`).
    latency: [[[f64; 6]; 3]; 2],
    sign_us: f64,
    key_load_us: f64,
    hash_us: f64,
    syncs: f64,
}

/// A grant's time split: total, signing, hashing, store operations, rest (µs).
fn split(round: &Round, counts: &OpCounts, kind: usize, store: usize) -> [f64; 5] {
    let total = 1e6 / round.rates[kind][store];
    let hashing = HASHES_PER_GRANT[kind] * round.hash_us;
    let store_ops: f64 = TIMED_OPS.iter().map(|&op| counts.per_grant[kind][op] * round.latency[kind][store][op]).sum();
    [total, round.sign_us, hashing, store_ops, total - round.sign_us - hashing - store_ops]
}

async fn run() {
    let max_rounds = env_or("TOKEN_BENCH_ROUNDS", 15);
    let batch = env_or("TOKEN_BENCH_BATCH", 300);
    let ops_iters = env_or("TOKEN_BENCH_OPS", 100);
    let budget = Duration::from_secs(env_or("TOKEN_BENCH_BUDGET", 90) as u64);
    let fsync = std::env::var("TOKEN_BENCH_REDIS_FSYNC").unwrap_or_else(|_| "always".to_owned());
    assert!(
        ["always", "everysec", "no"].contains(&fsync.as_str()),
        "TOKEN_BENCH_REDIS_FSYNC must be always, everysec or no, not {fsync:?}"
    );
    let dir = match std::env::var_os("TOKEN_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(base).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let dir_path = dir.path().to_owned();
    let db = dir_path.join("token-bench.db");
    let redis_dir = dir_path.join("redis");
    std::fs::create_dir(&redis_dir).unwrap();
    // Declared after `dir`, so dropped (stopped) before the directory is removed.
    let redis = RedisServer::start(&redis_dir, &fsync);
    println!(
        "token bench: up to {max_rounds} rounds (at least {MIN_ROUNDS}, no new round after {budget:?}) of {batch} \
         grants per store and grant type, one request at a time; SQLite file {}; redis-server {} on 127.0.0.1:{}, \
         append-only file in {} (appendfsync {fsync}, no RDB snapshots)",
        db.display(),
        redis.version,
        redis.port,
        redis_dir.display(),
    );
    let counts = count_store_operations().await;
    for (kind, described) in KINDS.iter().zip(&counts.described) {
        println!("store operations per {kind} grant: {described}");
    }
    println!("mean size of the values they write or read: {} bytes", counts.value_len);
    let untimed: Vec<&str> = (0..OPS.len())
        .filter(|op| !TIMED_OPS.contains(op) && counts.per_grant.iter().any(|c| c[*op] > 0.0))
        .map(|op| OPS[op])
        .collect();
    if !untimed.is_empty() {
        println!("note: the grants also use {untimed:?}, whose latency is not measured: counted in `rest`");
    }
    let signer = Signer::new(&counts.access_token);
    let hash_inputs: Vec<String> = (0..64).map(|_| random(32)).collect();

    let sqlite = SqliteStore::open(&db).unwrap();
    let redis_store = RedisStore::connect(&redis.url())
        .await
        .unwrap_or_else(|e| panic!("connecting to {}: {e}\n{}", redis.url(), redis.log()));
    let mut targets = [
        Target::new("sqlite", Arc::new(sqlite)).await,
        Target::new("redis", Arc::new(redis_store)).await,
        Target::new("memory", Arc::new(MemoryStore::new())).await,
    ];

    // Warm-up: one small batch through both grants on each store, and every cost measurement
    // (not recorded).
    for t in &mut targets {
        let reqs = t.code_requests(batch.min(20)).await;
        let (_, tokens) = timed(t, reqs).await;
        timed(t, t.refresh_requests(&tokens)).await;
        op_latencies(&*t.store, ops_iters.min(20), counts.value_len).await;
    }
    signer.cost(SIGN_ITERS / 4);
    hash_cost(&hash_inputs, HASH_ITERS / 4);

    let started = Instant::now();
    let mut rounds: Vec<Round> = Vec::new();
    while rounds.len() < max_rounds && (rounds.len() < MIN_ROUNDS || started.elapsed() < budget) {
        // The order of the stores rotates every round.
        let r = rounds.len();
        let order: [usize; 3] = std::array::from_fn(|j| (r + j) % STORES.len());
        let round_start = Instant::now();
        let mut prepared_at = [round_start; 3];
        let mut codes: [Vec<Request<Full<Bytes>>>; 3] = Default::default();
        for &i in &order {
            prepared_at[i] = Instant::now();
            codes[i] = targets[i].code_requests(batch).await;
        }
        let prepare = round_start.elapsed();
        let mut tokens: [Vec<Tokens>; 3] = Default::default();
        let mut rates = [[0.0; 3]; 2];
        let mut latency = [[[f64::NAN; 6]; 3]; 2];
        for &i in &order {
            let age = prepared_at[i].elapsed();
            assert!(
                age < CODE_LIFETIME_BUDGET,
                "{}: the oldest code is {age:?} old before its redemption: lower TOKEN_BENCH_BATCH (codes live 60 s)",
                STORES[i]
            );
            let (d, t) = timed(&targets[i], std::mem::take(&mut codes[i])).await;
            rates[0][i] = per_second(batch, d);
            tokens[i] = t;
            // The store's latency right after the grants it explains (the disk drifts).
            latency[0][i] = op_latencies(&*targets[i].store, ops_iters, counts.value_len).await;
        }
        for &i in &order {
            let reqs = targets[i].refresh_requests(&tokens[i]);
            let (d, _) = timed(&targets[i], reqs).await;
            rates[1][i] = per_second(batch, d);
            latency[1][i] = op_latencies(&*targets[i].store, ops_iters, counts.value_len).await;
        }
        let (sign_us, key_load_us) = signer.cost(SIGN_ITERS);
        let hash_us = hash_cost(&hash_inputs, HASH_ITERS);
        let syncs = sync_rate(&dir_path, SYNC_PROBES);
        let round = Round { rates, latency, sign_us, key_load_us, hash_us, syncs };
        let per_store = |kind: usize| -> String {
            let each: Vec<String> =
                STORES.iter().zip(&round.rates[kind]).map(|(name, rate)| format!("{name}={rate:.0}")).collect();
            each.join(" ")
        };
        let store_ops: Vec<String> = STORES
            .iter()
            .enumerate()
            .map(|(s, name)| {
                format!("{name}={:.0}/{:.0}", split(&round, &counts, 0, s)[3], split(&round, &counts, 1, s)[3])
            })
            .collect();
        println!(
            "round {}: code grants/s {}; refresh grants/s {}; store ops µs per grant (code/refresh) {}; disk \
             syncs/s {syncs:.0} (preparing {} codes: {:.1} s)",
            r + 1,
            per_store(0),
            per_store(1),
            store_ops.join(" "),
            STORES.len() * batch,
            prepare.as_secs_f64()
        );
        rounds.push(round);
    }
    println!("measured part: {:.1} s", started.elapsed().as_secs_f64());
    report(&rounds, &counts, ops_iters);
    drop(targets);
    drop(redis);
    drop(dir);
}

fn report(rounds: &[Round], counts: &OpCounts, ops_iters: usize) {
    let n = rounds.len();
    let med = |f: &dyn Fn(&Round) -> f64| median(rounds.iter().map(f).collect());
    let rate = |kind: usize, store: usize| med(&|r| r.rates[kind][store]);
    let rate_fields = |kind: usize| -> String {
        let each: Vec<String> =
            STORES.iter().enumerate().map(|(s, name)| format!("{name}={:.0}", rate(kind, s))).collect();
        each.join(" ")
    };

    let mut medians = Vec::new();
    for (kind, name) in KINDS.iter().enumerate() {
        let ratio = |s: usize| med(&|r| r.rates[kind][s] / r.rates[kind][MEMORY]);
        medians.push(format!(
            "{name} grants/s sqlite {:.0}, redis {:.0}, memory {:.0} (sqlite ÷ memory {:.3}, redis ÷ memory {:.3})",
            rate(kind, 0),
            rate(kind, 1),
            rate(kind, MEMORY),
            ratio(0),
            ratio(1),
        ));
    }
    println!(
        "medians of {n} rounds: {}; disk syncs/s {:.0} (ratios: medians of per-round ratios)",
        medians.join("; "),
        med(&|r| r.syncs),
    );

    let latencies: Vec<String> = STORES
        .iter()
        .enumerate()
        .map(|(s, name)| {
            let each: Vec<String> = TIMED_OPS
                .iter()
                .map(|&op| {
                    let all = rounds.iter().flat_map(|r| [r.latency[0][s][op], r.latency[1][s][op]]);
                    format!("{} {:.1}", OPS[op], median(all.collect()))
                })
                .collect();
            format!("{name}: {}", each.join(", "))
        })
        .collect();
    println!(
        "store latency per operation, µs (each a mean of {ops_iters}, measured after each store's code grants and \
         after its refresh grants; median of rounds; {}-byte values): {}",
        counts.value_len,
        latencies.join("; ")
    );
    println!(
        "signing: {:.1} µs per access token, the key parsed once (parsing it from PKCS#8 for each token would add {:.1} µs); hashing: {:.2} µs per \
         SHA-256 + base64url of a 43-character secret, {} per code grant, {} per refresh grant",
        med(&|r| r.sign_us),
        med(&|r| r.key_load_us),
        med(&|r| r.hash_us),
        HASHES_PER_GRANT[0],
        HASHES_PER_GRANT[1],
    );
    println!(
        "cost split per grant, µs (medians of per-round figures; store ops = operations counted × the store's \
         latency; rest = the grant's time − signing − hashing − store ops):"
    );
    println!(
        "{:<8} {:<8} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9}",
        "store", "grant", "grants/s", "µs/grant", "signing", "hashing", "store ops", "rest"
    );
    for (kind, kind_name) in KINDS.iter().enumerate() {
        for (s, store_name) in STORES.iter().enumerate() {
            let part = |i: usize| med(&|r| split(r, counts, kind, s)[i]);
            println!(
                "{store_name:<8} {kind_name:<8} {:>9.0} {:>9.1} {:>9.1} {:>9.2} {:>10.1} {:>9.1}",
                rate(kind, s),
                part(0),
                part(1),
                part(2),
                part(3),
                part(4),
            );
        }
    }
    println!("token endpoint: code grants/s {}; refresh grants/s {}", rate_fields(0), rate_fields(1));
}

fn main() {
    // `cargo bench` passes `--bench` (and criterion-style filters); nothing here takes arguments.
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(run());
}
