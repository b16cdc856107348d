//! JWS parsing and validation (header, claims, signature) on a verifier with static keys: never
//! panics, and no input is accepted, since the fuzzer cannot forge a signature.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tower_mcp_auth::verify::{Algorithm, Issuer, KeySet, TokenVerifier};
use tower_mcp_auth::{BearerToken, JwtVerifier};

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/keys/");

fn verifier() -> &'static (tokio::runtime::Runtime, JwtVerifier) {
    static V: OnceLock<(tokio::runtime::Runtime, JwtVerifier)> = OnceLock::new();
    V.get_or_init(|| {
        let mut keys = Vec::new();
        for (file, alg) in [("rs256-a", Algorithm::RS256), ("es256", Algorithm::ES256), ("ed25519", Algorithm::EdDSA)] {
            let pem = std::fs::read(format!("{KEYS}{file}.pub.pem")).expect("fixture key");
            keys.push(KeySet::from_pem(&pem, alg, Some(file)).expect("fixture key parses"));
        }
        let mut builder = JwtVerifier::builder().audience("https://mcp.example.com/mcp");
        for (i, k) in keys.into_iter().enumerate() {
            builder = builder.issuer(Issuer::with_keys(format!("https://issuer{i}.example.com"), k));
        }
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        (runtime, builder.build().expect("verifier"))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Some(token) = BearerToken::new(text) else { return };
    let (runtime, verifier) = verifier();
    let result = runtime.block_on(verifier.verify(&token));
    assert!(result.is_err(), "a token nobody signed was accepted");
});
