//! Per-request cost of the resource-server stack, in process.
//!
//! Every service here is driven by polling its future once with a no-op waker
//! (`std::task::Waker::noop`): with static keys `JwtVerifier` is ready at once, so the whole
//! stack completes in one poll and no runtime (`block_on`, its thread-local context, its
//! budget) is measured. A future that is not ready at once panics the bench rather than
//! being measured wrongly.
//!
//! Groups:
//!
//! - `bearer`: `parse_authorization` alone.
//! - `cold`: one request through BearerAuthLayer → ClaimsExtractLayer<JwtVerifier> →
//!   ScopeGuardLayer (base requirement `mcp:read`) → a trivial service, for RS256, ES256 and
//!   EdDSA tokens, next to `jsonwebtoken::decode::<serde_json::Value>` of the same token with
//!   an equivalent `Validation` (iss, aud, exp, 30 s leeway). "Cold": no verified-token cache
//!   exists, every request pays a full signature verification.
//!   `floor` is the signature check alone with the key parsed once by aws-lc-rs
//!   (`ParsedPublicKey`): the cost no verifier can go under, for reading the others.
//!   `jsonwebtoken9-ring/RS256` is jsonwebtoken 9 on *ring*, what jwt-authorizer verifies with.
//! - `verifier`: `TokenVerifier::verify` of `JwtVerifier` alone (RS256).
//! - `scope_guard`: the guard alone on a request that already carries an `AccessToken`, with a
//!   base requirement, and with an MCP tool rule that reads a small JSON-RPC body.
//!
//! After criterion, an interleaved A/B run (stack, then jsonwebtoken, round after round)
//! prints one `summary:` line with the ratio stack ÷ jsonwebtoken for each algorithm (goal for
//! RS256: ≤ 1.10). Criterion's own groups run one after another, minutes apart on a machine
//! whose speed drifts, so the summary line is the figure to quote.
//!
//! `VERIFY_BENCH_PROFILE=<case> [VERIFY_BENCH_ITERS=n]` runs only `n` iterations of one case
//! inside `measured_loop` (for `valgrind --tool=callgrind --toggle-collect='*measured_loop*'`);
//! cases: stack-rs256, jwt-rs256, jwt-rs256-ne, verifier-rs256, stack-es256, jwt-es256,
//! stack-eddsa, jwt-eddsa, floor-rs256, floor-es256, floor-eddsa, jwt9-rs256, bearer, scope-base,
//! scope-tool, and `request` (building the request the stack cases build in the loop, to
//! subtract from them).

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{self, ParsedPublicKey, VerificationAlgorithm};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion};
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};
use tower::{Service, ServiceBuilder, service_fn};
use tower_mcp_auth::bearer::{DEFAULT_MAX_TOKEN_LEN, parse_authorization};
use tower_mcp_auth::scope_guard::{Requirement, ScopeGuardLayer, ScopePolicy};
use tower_mcp_auth::verify::{Algorithm, Issuer, KeySet, TokenVerifier};
use tower_mcp_auth::{AccessToken, BearerAuthLayer, BearerToken, ClaimsExtractLayer, JwtVerifier, ProtectedResource};

const RESOURCE: &str = "https://mcp.example.com/mcp";
const ISSUER: &str = "https://idp.example.com";
const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys");
const TOOL_CALL: &str =
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"admin_ping","arguments":{}}}"#;

type ReqBody = Full<Bytes>;

// ---------------------------------------------------------------------------------------------
// Fixtures

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{KEYS}/{name}")).unwrap_or_else(|e| panic!("{KEYS}/{name}: {e}"))
}

/// One signing key of tests/fixtures/keys with everything both verifiers need.
struct Case {
    name: &'static str,
    token: String,
    /// Our key set, from the public PEM.
    keys: KeySet,
    /// jsonwebtoken's key, from the same public PEM.
    jwt_key: DecodingKey,
    jwt_alg: jsonwebtoken::Algorithm,
    /// The crypto floor: the same public key parsed once by aws-lc-rs.
    floor_key: ParsedPublicKey,
}

impl Case {
    fn load(name: &'static str, file: &str, alg: Algorithm, jwt_alg: jsonwebtoken::Algorithm) -> Self {
        let private = read(&format!("{file}.pem"));
        let public = read(&format!("{file}.pub.pem"));
        let (enc, jwt_key) = match jwt_alg {
            jsonwebtoken::Algorithm::RS256 => (EncodingKey::from_rsa_pem(&private), DecodingKey::from_rsa_pem(&public)),
            jsonwebtoken::Algorithm::ES256 => (EncodingKey::from_ec_pem(&private), DecodingKey::from_ec_pem(&public)),
            _ => (EncodingKey::from_ed_pem(&private), DecodingKey::from_ed_pem(&public)),
        };
        let (enc, jwt_key) = (enc.expect("private key"), jwt_key.expect("public key"));
        let keys = KeySet::from_pem(&public, alg, Some(file)).expect("KeySet::from_pem");
        let mut header = Header::new(jwt_alg);
        header.kid = Some(file.to_owned());
        header.typ = Some("at+jwt".to_owned());
        let token = jsonwebtoken::encode(&header, &claims(), &enc).expect("encode");
        let floor_alg: &'static dyn VerificationAlgorithm = match jwt_alg {
            jsonwebtoken::Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            jsonwebtoken::Algorithm::ES256 => &signature::ECDSA_P256_SHA256_FIXED,
            _ => &signature::ED25519,
        };
        let floor_key = ParsedPublicKey::new(floor_alg, spki_der(&public)).expect("aws-lc-rs key");
        Self { name, token, keys, jwt_key, jwt_alg, floor_key }
    }

    /// Signature check only, with a key parsed once: what no JWT library can go under.
    fn floor(&self) -> bool {
        let (input, sig) = self.token.rsplit_once('.').expect("compact JWS");
        let Ok(sig) = URL_SAFE_NO_PAD.decode(sig) else { return false };
        self.floor_key.verify_sig(input.as_bytes(), &sig).is_ok()
    }

    fn verifier(&self) -> JwtVerifier {
        JwtVerifier::builder()
            .issuer(Issuer::with_keys(ISSUER, self.keys.clone()))
            .audience(RESOURCE)
            .build()
            .expect("verifier")
    }

    /// What the stack checks, as jsonwebtoken's options.
    fn validation(&self) -> Validation {
        let mut v = Validation::new(self.jwt_alg);
        v.set_audience(&[RESOURCE]);
        v.set_issuer(&[ISSUER]);
        v.set_required_spec_claims(&["exp", "aud", "iss"]);
        v.leeway = 30;
        v.validate_exp = true;
        v.validate_nbf = true;
        v
    }
}

/// The DER inside a `PUBLIC KEY` PEM.
fn spki_der(pem: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(pem).expect("PEM is text");
    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(b64).expect("PEM body")
}

/// The claims of tests/support (`claims()`), with a 1-hour lifetime.
fn claims() -> Value {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    json!({
        "iss": ISSUER,
        "aud": RESOURCE,
        "sub": "user-1",
        "client_id": "client-1",
        "scope": "mcp:read",
        "iat": now,
        "exp": now + 3600,
        "jti": "jti-0123456789abcdef",
    })
}

fn resource() -> ProtectedResource {
    ProtectedResource::builder(RESOURCE)
        .authorization_server(ISSUER)
        .scopes_supported(["mcp:read", "mcp:admin"])
        .challenge_scopes(["mcp:read"])
        .build()
        .expect("resource")
}

fn base_policy() -> ScopePolicy {
    ScopePolicy::require(Requirement::all(["mcp:read"])).expect("policy")
}

fn tool_policy() -> ScopePolicy {
    ScopePolicy::builder()
        .require(Requirement::all(["mcp:read"]))
        .mcp_tool("admin_ping", Requirement::all(["mcp:admin"]))
        .build()
        .expect("policy")
}

/// The whole stack around a service that answers 200 with an empty body.
fn stack(
    verifier: JwtVerifier,
) -> impl Service<Request<ReqBody>, Response = Response<String>, Error = Infallible> + Clone {
    let resource = resource();
    ServiceBuilder::new()
        .layer(BearerAuthLayer::new(resource.clone()))
        .layer(ClaimsExtractLayer::new(verifier, resource.clone()))
        .layer(ScopeGuardLayer::new(base_policy(), resource))
        .service(service_fn(|_req| std::future::ready(Ok::<_, Infallible>(Response::new(String::new())))))
}

fn guard(
    policy: ScopePolicy,
) -> impl Service<Request<ReqBody>, Response = Response<String>, Error = Infallible> + Clone {
    ServiceBuilder::new()
        .layer(ScopeGuardLayer::new(policy, resource()))
        .service(service_fn(|_req| std::future::ready(Ok::<_, Infallible>(Response::new(String::new())))))
}

fn bearer_request(auth: &HeaderValue) -> Request<ReqBody> {
    let mut req = Request::post("/mcp").body(Full::new(Bytes::from_static(b"{}"))).expect("request");
    req.headers_mut().insert(AUTHORIZATION, auth.clone());
    req
}

fn token_request(token: &AccessToken, body: &'static str) -> Request<ReqBody> {
    let mut req = Request::post("/mcp").body(Full::new(Bytes::from_static(body.as_bytes()))).expect("request");
    req.extensions_mut().insert(token.clone());
    req
}

fn auth_header(token: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("Bearer {token}")).expect("header")
}

// ---------------------------------------------------------------------------------------------
// Driving futures without a runtime

/// Polls `fut` once; the stack with static keys never waits.
fn now_or_panic<F: Future>(fut: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(fut).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("future not ready at once"),
    }
}

/// `poll_ready` then `call`, then one poll of the response future.
fn call<S, Req>(svc: &mut S, req: Req) -> S::Response
where
    S: Service<Req, Error = Infallible>,
{
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("service not ready"),
    }
    match now_or_panic(svc.call(req)) {
        Ok(res) => res,
        Err(never) => match never {},
    }
}

fn jwt_decode(case: &Case, validation: &Validation) -> jsonwebtoken::TokenData<Value> {
    jsonwebtoken::decode::<Value>(&case.token, &case.jwt_key, validation).expect("jsonwebtoken decode")
}

// ---------------------------------------------------------------------------------------------
// Criterion groups

struct Fixtures {
    rs256: Case,
    es256: Case,
    eddsa: Case,
    /// jsonwebtoken with the RSA key as (n, e), the form our `KeySet` holds it in.
    rs256_ne_key: DecodingKey,
    /// jsonwebtoken 9 on ring (what jwt-authorizer 0.15 uses), RS256 key from the same PEM.
    rs256_jwt9: (jsonwebtoken9::DecodingKey, jsonwebtoken9::Validation),
}

fn jwt9_rs256() -> (jsonwebtoken9::DecodingKey, jsonwebtoken9::Validation) {
    let key = jsonwebtoken9::DecodingKey::from_rsa_pem(&read("rs256-a.pub.pem")).expect("jsonwebtoken 9 key");
    let mut v = jsonwebtoken9::Validation::new(jsonwebtoken9::Algorithm::RS256);
    v.set_audience(&[RESOURCE]);
    v.set_issuer(&[ISSUER]);
    v.set_required_spec_claims(&["exp", "aud", "iss"]);
    v.leeway = 30;
    v.validate_nbf = true;
    (key, v)
}

fn jwt9_decode(token: &str, (key, validation): &(jsonwebtoken9::DecodingKey, jsonwebtoken9::Validation)) -> Value {
    jsonwebtoken9::decode::<Value>(token, key, validation).expect("jsonwebtoken 9 decode").claims
}

impl Fixtures {
    fn new() -> Self {
        install_provider();
        let rs256 = Case::load("RS256", "rs256-a", Algorithm::RS256, jsonwebtoken::Algorithm::RS256);
        let es256 = Case::load("ES256", "es256", Algorithm::ES256, jsonwebtoken::Algorithm::ES256);
        let eddsa = Case::load("EdDSA", "ed25519", Algorithm::EdDSA, jsonwebtoken::Algorithm::EdDSA);
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_slice(&read("rs256-a.pub.jwk")).expect("jwk");
        let rs256_ne_key = DecodingKey::from_jwk(&jwk).expect("jwk key");
        let f = Self { rs256, es256, eddsa, rs256_ne_key, rs256_jwt9: jwt9_rs256() };
        f.sanity();
        f
    }

    fn cases(&self) -> [&Case; 3] {
        [&self.rs256, &self.es256, &self.eddsa]
    }

    /// Every measured path must succeed; a rejected token would be measured as fast.
    fn sanity(&self) {
        for case in self.cases() {
            let mut svc = stack(case.verifier());
            let res = call(&mut svc, bearer_request(&auth_header(&case.token)));
            assert_eq!(res.status(), StatusCode::OK, "{}: stack refused the token: {:?}", case.name, res.headers());
            jwt_decode(case, &case.validation());
            assert!(case.floor(), "{}: aws-lc-rs refused the signature", case.name);
        }
        let mut v = self.rs256.validation();
        v.algorithms = vec![jsonwebtoken::Algorithm::RS256];
        jsonwebtoken::decode::<Value>(&self.rs256.token, &self.rs256_ne_key, &v).expect("decode with (n, e) key");
        jwt9_decode(&self.rs256.token, &self.rs256_jwt9);
        for (policy, body) in [(base_policy(), "{}"), (tool_policy(), TOOL_CALL)] {
            let res = call(&mut guard(policy), token_request(&guard_token(), body));
            assert_eq!(res.status(), StatusCode::OK, "scope guard refused");
        }
    }
}

/// Under `--all-features` jsonwebtoken has two backends and needs one chosen; the library
/// itself always uses aws-lc-rs when it is enabled, so the comparison uses it too.
fn install_provider() {
    #[cfg(feature = "aws_lc_rs")]
    let provider = &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER;
    #[cfg(all(feature = "rust_crypto", not(feature = "aws_lc_rs")))]
    let provider = &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
    let _ = jsonwebtoken::crypto::CryptoProvider::install_default(provider);
}

fn guard_token() -> AccessToken {
    AccessToken::builder("t").scopes("mcp:read mcp:admin".parse().expect("scopes")).subject("user-1").build()
}

fn bench_bearer(c: &mut Criterion, f: &Fixtures) {
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, auth_header(&f.rs256.token));
    c.benchmark_group("bearer").bench_function("parse_authorization", |b| {
        b.iter(|| parse_authorization(black_box(&headers), DEFAULT_MAX_TOKEN_LEN).expect("token"))
    });
}

fn bench_cold(c: &mut Criterion, f: &Fixtures) {
    let mut group = c.benchmark_group("cold");
    for case in f.cases() {
        let mut svc = stack(case.verifier());
        let auth = auth_header(&case.token);
        group.bench_with_input(BenchmarkId::new("stack", case.name), &auth, |b, auth| {
            b.iter_batched(|| bearer_request(auth), |req| call(&mut svc, req), BatchSize::SmallInput)
        });
        let validation = case.validation();
        group.bench_with_input(BenchmarkId::new("jsonwebtoken", case.name), case, |b, case| {
            b.iter(|| jwt_decode(case, &validation))
        });
        group.bench_with_input(BenchmarkId::new("floor", case.name), case, |b, case| b.iter(|| case.floor()));
    }
    let mut v = f.rs256.validation();
    v.algorithms = vec![jsonwebtoken::Algorithm::RS256];
    group.bench_function(BenchmarkId::new("jsonwebtoken-ne", "RS256"), |b| {
        b.iter(|| jsonwebtoken::decode::<Value>(&f.rs256.token, &f.rs256_ne_key, &v).expect("decode"))
    });
    group.bench_function(BenchmarkId::new("jsonwebtoken9-ring", "RS256"), |b| {
        b.iter(|| jwt9_decode(&f.rs256.token, &f.rs256_jwt9))
    });
    group.finish();
}

fn bench_verifier(c: &mut Criterion, f: &Fixtures) {
    let verifier = f.rs256.verifier();
    let token = BearerToken::new(&f.rs256.token).expect("token68");
    c.benchmark_group("verifier").bench_function("JwtVerifier::verify/RS256", |b| {
        b.iter(|| now_or_panic(verifier.verify(black_box(&token))).expect("valid"))
    });
}

fn bench_scope(c: &mut Criterion) {
    let token = guard_token();
    let mut group = c.benchmark_group("scope_guard");
    for (name, policy, body) in [("base", base_policy(), "{}"), ("mcp_tool", tool_policy(), TOOL_CALL)] {
        let mut svc = guard(policy);
        group.bench_function(name, |b| {
            b.iter_batched(|| token_request(&token, body), |req| call(&mut svc, req), BatchSize::SmallInput)
        });
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// Interleaved summary

/// Nanoseconds per iteration of `n` runs of `f` (`setup` excluded).
fn time_chunk<I, O>(n: usize, mut setup: impl FnMut() -> I, mut f: impl FnMut(I) -> O) -> f64 {
    let inputs: Vec<I> = (0..n).map(|_| setup()).collect();
    let mut outputs = Vec::with_capacity(n);
    let start = Instant::now();
    for input in inputs {
        outputs.push(black_box(f(input)));
    }
    let elapsed = start.elapsed();
    drop(outputs);
    elapsed.as_nanos() as f64 / n as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 }
}

/// Stack vs `other` for one case: `rounds` pairs A B (order alternating), each chunk ~`chunk`
/// long; returns (median stack ns, median `other` ns, median of paired ratios).
fn interleaved<O>(case: &Case, rounds: usize, chunk: Duration, mut other: impl FnMut() -> O) -> (f64, f64, f64) {
    let mut svc = stack(case.verifier());
    let auth = auth_header(&case.token);
    let mut run_stack = |n| time_chunk(n, || bearer_request(&auth), |req| call(&mut svc, req));
    let mut run_jwt = |n| time_chunk(n, || (), |()| other());
    // Calibrate (and warm up) on jsonwebtoken.
    let probe = run_jwt(50).max(1.0);
    let n = ((chunk.as_nanos() as f64 / probe) as usize).clamp(20, 100_000);
    run_stack(n);
    let (mut a, mut b, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let (s, j) = if round % 2 == 0 {
            let s = run_stack(n);
            (s, run_jwt(n))
        } else {
            let j = run_jwt(n);
            (run_stack(n), j)
        };
        a.push(s);
        b.push(j);
        ratios.push(s / j);
    }
    (median(a), median(b), median(ratios))
}

fn summary(f: &Fixtures) {
    let mut line = String::from("summary:");
    let mut rs256 = 0.0;
    for case in f.cases() {
        let validation = case.validation();
        let (s, j, r) = interleaved(case, 20, Duration::from_millis(40), || jwt_decode(case, &validation));
        println!(
            "interleaved {}: stack {:.1} µs, jsonwebtoken decode {:.1} µs, stack ÷ jsonwebtoken {:.3} (median of 20 paired rounds)",
            case.name,
            s / 1000.0,
            j / 1000.0,
            r
        );
        if case.name == "RS256" {
            rs256 = r;
        }
        line.push_str(&format!(" stack_{}_vs_jsonwebtoken={r:.3}", case.name.to_lowercase()));
    }
    let (s, j, r9) =
        interleaved(&f.rs256, 20, Duration::from_millis(40), || jwt9_decode(&f.rs256.token, &f.rs256_jwt9));
    println!(
        "interleaved RS256: stack {:.1} µs, jsonwebtoken 9 on ring (jwt-authorizer's) {:.1} µs, stack ÷ it {r9:.3}",
        s / 1000.0,
        j / 1000.0
    );
    let verdict = if rs256 <= 1.10 { "met" } else { "NOT met" };
    println!("{line} (goal RS256 <= 1.10: {verdict})");
}

// ---------------------------------------------------------------------------------------------
// Profiling entry (callgrind)

/// A few warm-up calls (lazy statics, first allocations), then the measured loop.
fn profile_loop(iters: usize, mut f: impl FnMut()) {
    for _ in 0..3 {
        f();
    }
    measured_loop(iters, &mut f);
}

/// The only function callgrind collects in (`--toggle-collect='*measured_loop*'`).
#[inline(never)]
fn measured_loop(iters: usize, f: &mut dyn FnMut()) {
    for _ in 0..iters {
        f();
    }
}

fn profile(case_name: &str, iters: usize, f: &Fixtures) {
    let rs = &f.rs256;
    let by_name = |n: &str| match n {
        "rs256" => &f.rs256,
        "es256" => &f.es256,
        _ => &f.eddsa,
    };
    match case_name {
        "jwt-rs256-ne" => {
            let mut v = rs.validation();
            v.algorithms = vec![jsonwebtoken::Algorithm::RS256];
            profile_loop(iters, || {
                black_box(jsonwebtoken::decode::<Value>(&rs.token, &f.rs256_ne_key, &v).expect("decode"));
            });
        }
        "jwt9-rs256" => profile_loop(iters, || {
            black_box(jwt9_decode(&rs.token, &f.rs256_jwt9));
        }),
        "verifier-rs256" => {
            let verifier = rs.verifier();
            let token = BearerToken::new(&rs.token).expect("token68");
            profile_loop(iters, || {
                black_box(now_or_panic(verifier.verify(&token)).expect("valid"));
            });
        }
        // Building and dropping the request the `stack-*` cases build: subtract it from them.
        "request" => {
            let auth = auth_header(&rs.token);
            profile_loop(iters, || {
                black_box(bearer_request(&auth));
            });
        }
        "bearer" => {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, auth_header(&rs.token));
            profile_loop(iters, || {
                black_box(parse_authorization(&headers, DEFAULT_MAX_TOKEN_LEN).expect("token"));
            });
        }
        "scope-base" | "scope-tool" => {
            let (policy, body) =
                if case_name == "scope-base" { (base_policy(), "{}") } else { (tool_policy(), TOOL_CALL) };
            let mut svc = guard(policy);
            let token = guard_token();
            profile_loop(iters, || {
                black_box(call(&mut svc, token_request(&token, body)));
            });
        }
        other => {
            let Some((kind, alg)) = other.split_once('-') else { panic!("unknown profile case {other:?}") };
            let case = by_name(alg);
            match kind {
                "stack" => {
                    let mut svc = stack(case.verifier());
                    let auth = auth_header(&case.token);
                    profile_loop(iters, || {
                        black_box(call(&mut svc, bearer_request(&auth)));
                    });
                }
                "floor" => profile_loop(iters, || {
                    black_box(case.floor());
                }),
                "jwt" => {
                    let v = case.validation();
                    profile_loop(iters, || {
                        black_box(jwt_decode(case, &v));
                    });
                }
                _ => panic!("unknown profile case {other:?}"),
            }
        }
    }
}

fn main() {
    let fixtures = Fixtures::new();
    if let Ok(case) = std::env::var("VERIFY_BENCH_PROFILE") {
        let iters = std::env::var("VERIFY_BENCH_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(1000);
        profile(&case, iters, &fixtures);
        println!("profiled {case}: {iters} iterations inside measured_loop");
        return;
    }

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .configure_from_args();
    bench_bearer(&mut c, &fixtures);
    bench_cold(&mut c, &fixtures);
    bench_verifier(&mut c, &fixtures);
    bench_scope(&mut c);
    c.final_summary();

    // `cargo test --benches` runs this binary in test mode; the summary is for real runs.
    if std::env::args().any(|a| a == "--bench") {
        summary(&fixtures);
    }
}
