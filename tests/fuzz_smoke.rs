//! SECURITY-CATALOGUE L03, bounded: every parser that reads attacker input is fed tens of
//! thousands of mutated and random inputs from a fixed-seed generator, and must answer without
//! panicking (and, for the HTTP endpoints, without a 5xx). The time-boxed coverage-guided
//! fuzzing of the same targets is a separate job.

mod support;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request};
use http_body_util::Full;
use support::authz::{BACKENDS, Env};
use support::{ISSUER, RESOURCE, TestKey, claims};
use tower::ServiceExt;
use tower_mcp_auth::bearer::parse_authorization;
use tower_mcp_auth::challenge;
use tower_mcp_auth::verify::{Issuer, KeySet, TokenVerifier};
use tower_mcp_auth::{BearerToken, JwtVerifier};

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    /// `seed` mutated: bytes flipped, inserted, deleted, duplicated, or replaced by
    /// interesting ones.
    fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
        const INTERESTING: &[u8] = b"\x00\xff\"\\%=&.,;: \t\r\n{}[]+/_-~#?@";
        let mut v = seed.to_vec();
        for _ in 0..=self.below(4) {
            let i = self.below(v.len() + 1);
            match self.below(6) {
                0 if i < v.len() => v[i] ^= 1 << self.below(8),
                1 => v.insert(i, INTERESTING[self.below(INTERESTING.len())]),
                2 if i < v.len() => {
                    v.remove(i);
                }
                3 => {
                    let end = (i + self.below(16)).min(v.len());
                    let chunk = v[i.min(end)..end].to_vec();
                    v.splice(i..i, chunk);
                }
                4 if i < v.len() => v[i] = INTERESTING[self.below(INTERESTING.len())],
                _ => v.insert(i, self.next() as u8),
            }
        }
        v
    }
}

#[test]
fn bearer_header_parser() {
    let mut rng = Rng(0x5eed_0001);
    let seeds: [&[u8]; 4] = [b"Bearer abc.def-ghi_jkl~", b"bearer  x==", b"Basic dXNlcjpw", b"Bearer"];
    for i in 0..50_000 {
        let input = rng.mutate(seeds[i % seeds.len()]);
        let Ok(value) = HeaderValue::from_bytes(&input) else { continue };
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, value);
        let _ = parse_authorization(&h, 8192);
    }
}

#[test]
fn www_authenticate_parser() {
    let mut rng = Rng(0x5eed_0002);
    let seed = br#"Bearer error="insufficient_scope", scope="a b", resource_metadata="https://x/y", DPoP algs="ES256", Basic abc=="#;
    for _ in 0..50_000 {
        let input = rng.mutate(seed);
        let _ = challenge::parse(&String::from_utf8_lossy(&input));
    }
}

#[tokio::test]
async fn jws_verifier() {
    let key = TestKey::rs256_a();
    let v = JwtVerifier::builder()
        .issuer(Issuer::with_keys(ISSUER, KeySet::from_jwk_json(&key.jwk.to_string()).unwrap()))
        .audience(RESOURCE)
        .build()
        .unwrap();
    let valid = key.token(&claims(ISSUER, RESOURCE));
    let mut rng = Rng(0x5eed_0003);
    let mut accepted = 0;
    for _ in 0..20_000 {
        let input = rng.mutate(valid.as_bytes());
        let Ok(s) = std::str::from_utf8(&input) else { continue };
        let Some(token) = BearerToken::new(s) else { continue };
        if v.verify(&token).await.is_ok() {
            accepted += 1;
            // Only mutations that decode to the same signed bytes may pass (e.g. none at all).
            assert_eq!(s, valid, "a mutated token was accepted");
        }
    }
    assert!(accepted <= 20_000);
}

#[tokio::test]
async fn authorization_server_endpoints_never_5xx() {
    for backend in BACKENDS {
        let env = Env::new(backend).await;
        let client = env.register().await;
        let svc = env.svc.clone();
        let mut rng = Rng(0x5eed_0004 ^ backend as u64);
        let authorize = format!(
            "response_type=code&client_id={client}&redirect_uri=http%3A%2F%2F127.0.0.1%3A53682%2Fcallback&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256&state=s&scope=mcp%3Aread&resource=https%3A%2F%2Fauth.example.com%2Fmcp"
        );
        let token_form = format!(
            "grant_type=authorization_code&code=abc&code_verifier={}&client_id={client}&redirect_uri=x",
            "v".repeat(43)
        );
        let register = br#"{"redirect_uris":["https://app.example/cb"],"token_endpoint_auth_method":"none","grant_types":["authorization_code","refresh_token"],"client_name":"n"}"#;
        for i in 0..1500 {
            let req = match i % 4 {
                0 => {
                    let q = rng.mutate(authorize.as_bytes());
                    let q: String = q.iter().map(|b| if b.is_ascii_graphic() { *b as char } else { '%' }).collect();
                    let Ok(req) = Request::get(format!("/authorize?{q}")).body(Full::new(Bytes::new())) else {
                        continue;
                    };
                    req
                }
                1 => Request::post("/token")
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(Full::new(Bytes::from(rng.mutate(token_form.as_bytes()))))
                    .unwrap(),
                2 => Request::post("/register")
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(rng.mutate(register))))
                    .unwrap(),
                _ => Request::post("/revoke")
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(Full::new(Bytes::from(rng.mutate(format!("token=abc&client_id={client}").as_bytes()))))
                    .unwrap(),
            };
            let path = req.uri().path().to_owned();
            let res = svc.clone().oneshot(req).await.unwrap();
            assert!(res.status().as_u16() < 500, "{backend:?} {path}: {} for input #{i}", res.status());
        }
    }
}
