//! Memory held by `ClaimsExtractLayer`'s token cache for 100,000 distinct tokens.
//!
//! ```sh
//! cargo bench --all-features --bench cache_memory
//! CACHE_BENCH_TOKENS=200000 cargo bench --all-features --bench cache_memory
//! ```
//!
//! Mints N distinct EdDSA access tokens (the claims `benches/load.sh` sends: iss, aud, sub,
//! client_id, scope, iat, exp, jti), then sends each once through BearerAuthLayer →
//! ClaimsExtractLayer (JwtVerifier, static key, default cache) → ScopeGuardLayer → a service
//! answering 200, in process. Reported: the live heap bytes the cache added (a counting
//! global allocator: bytes requested and not yet freed, measured with every token string
//! still alive so they are not counted), the process's resident set growth (what the
//! allocator really took from the OS), and the cache's own accounting. The last line is
//! machine-readable:
//!
//! ```text
//! cache memory: tokens=100000 cached=100000 heap_mib=X rss_mib=Y bytes_per_token=Z budget_mib=64
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use tower_mcp_auth::scope_guard::{Requirement, ScopeGuardLayer, ScopePolicy};
use tower_mcp_auth::verify::{Algorithm, Issuer, KeySet};
use tower_mcp_auth::{BearerAuthLayer, ClaimsExtractLayer, JwtVerifier, ProtectedResource};

/// Live heap bytes (requested sizes; the allocator's own overhead shows in the RSS figure).
struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const RESOURCE: &str = "https://mcp.example.com/mcp";
const ISSUER: &str = "https://idp.example.com";
const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys");

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn main() {
    #[cfg(feature = "aws_lc_rs")]
    let _ = jsonwebtoken::crypto::CryptoProvider::install_default(&jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER);
    let n: usize = std::env::var("CACHE_BENCH_TOKENS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let pem = std::fs::read(format!("{KEYS}/ed25519.pem")).expect("signing key");
    let encoding = EncodingKey::from_ed_pem(&pem).expect("Ed25519 key");
    let public = std::fs::read(format!("{KEYS}/ed25519.pub.pem")).expect("public key");
    let keys = KeySet::from_pem(&public, Algorithm::EdDSA, Some("ed25519")).expect("key set");

    let resource = ProtectedResource::builder(RESOURCE)
        .authorization_server(ISSUER)
        .scopes_supported(["mcp:read"])
        .build()
        .expect("resource");
    let verifier =
        JwtVerifier::builder().issuer(Issuer::with_keys(ISSUER, keys)).resource(&resource).build().expect("verifier");
    let claims_layer = ClaimsExtractLayer::new(verifier, resource.clone());
    let cache = claims_layer.token_cache().cloned().expect("the cache is on by default");
    let policy = ScopePolicy::require(Requirement::all(["mcp:read"])).expect("policy");
    let mut svc = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(resource.clone()))
        .layer(claims_layer)
        .layer(ScopeGuardLayer::new(policy, resource))
        .service(service_fn(|_req: Request<_>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        }));

    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    let mut header = Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some("ed25519".into());
    header.typ = Some("at+jwt".into());
    let started = std::time::Instant::now();
    let tokens: Vec<String> = (0..n)
        .map(|i| {
            let claims = json!({
                "iss": ISSUER, "aud": RESOURCE, "sub": format!("user-{i}"), "client_id": "client-1",
                "scope": "mcp:read", "iat": now, "exp": now + 3600, "jti": format!("bench-{now}-{i}"),
            });
            jsonwebtoken::encode(&header, &claims, &encoding).expect("token")
        })
        .collect();
    let token_bytes: usize = tokens.iter().map(String::len).sum();
    eprintln!("minted {n} tokens ({} bytes each on average) in {:.1?}", token_bytes / n.max(1), started.elapsed());

    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let (heap_before, rss_before) = (LIVE.load(Ordering::SeqCst), rss_bytes());
    runtime.block_on(async {
        for t in &tokens {
            let req = Request::builder()
                .method("POST")
                .header("authorization", format!("Bearer {t}"))
                .body(Full::new(Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)))
                .expect("request");
            let res = svc.ready().await.expect("ready").call(req).await.expect("infallible");
            assert_eq!(res.status(), StatusCode::OK, "every token must be accepted");
        }
    });
    let (heap_after, rss_after) = (LIVE.load(Ordering::SeqCst), rss_bytes());
    let heap = (heap_after - heap_before).max(0) as f64;
    let rss = rss_after.saturating_sub(rss_before) as f64;
    let mib = |b: f64| b / (1024.0 * 1024.0);
    println!("tokens sent:          {n}");
    println!("tokens cached:        {}", cache.len());
    println!(
        "live heap added:      {:.1} MiB ({:.0} bytes per cached token)",
        mib(heap),
        heap / cache.len().max(1) as f64
    );
    println!(
        "resident set added:   {:.1} MiB ({:.0} bytes per cached token)",
        mib(rss),
        rss / cache.len().max(1) as f64
    );
    println!("cache's accounting:   {:.1} MiB of {:.0} MiB", mib(cache.weight() as f64), mib(cache.capacity() as f64));
    println!(
        "cache memory: tokens={n} cached={} heap_mib={:.1} rss_mib={:.1} bytes_per_token={:.0} budget_mib=64",
        cache.len(),
        mib(heap),
        mib(rss),
        heap.max(rss) / cache.len().max(1) as f64
    );
    drop(tokens);
}
