//! Test keys (tests/fixtures/keys) and raw JWS minting with exactly the given header and claims.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

#[cfg(feature = "aws_lc_rs")]
use jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER as PROVIDER;
#[cfg(all(feature = "rust_crypto", not(feature = "aws_lc_rs")))]
use jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER as PROVIDER;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys");

pub struct TestKey {
    pub kid: &'static str,
    pub alg: Algorithm,
    enc: EncodingKey,
    /// The public JWK (with `kid`, `alg`, `use`).
    pub jwk: Value,
    /// The public key, SPKI PEM.
    pub public_pem: Vec<u8>,
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{DIR}/{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

impl TestKey {
    fn load(kid: &'static str, alg: Algorithm) -> Self {
        let pem = read(&format!("{kid}.pem"));
        let enc = match alg {
            Algorithm::RS256 | Algorithm::PS256 => EncodingKey::from_rsa_pem(&pem),
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
            _ => unreachable!(),
        }
        .unwrap();
        let jwk = serde_json::from_slice(&read(&format!("{kid}.pub.jwk"))).unwrap();
        Self { kid, alg, enc, jwk, public_pem: read(&format!("{kid}.pub.pem")) }
    }

    pub fn rs256_a() -> Self {
        Self::load("rs256-a", Algorithm::RS256)
    }
    pub fn rs256_b() -> Self {
        Self::load("rs256-b", Algorithm::RS256)
    }
    pub fn rsa1024() -> Self {
        Self::load("rsa1024", Algorithm::RS256)
    }
    pub fn es256() -> Self {
        Self::load("es256", Algorithm::ES256)
    }
    pub fn es384() -> Self {
        Self::load("es384", Algorithm::ES384)
    }
    pub fn ed25519() -> Self {
        Self::load("ed25519", Algorithm::EdDSA)
    }

    /// The same private key, signing with another algorithm of its family (e.g. PS256 with an
    /// RSA key bound to RS256).
    pub fn with_alg(mut self, alg: Algorithm) -> Self {
        self.alg = alg;
        self
    }

    /// `{"keys": [jwk]}`.
    pub fn jwks(keys: &[&TestKey]) -> Value {
        json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
    }

    /// The standard header: `alg`, `kid`, `typ: at+jwt`.
    pub fn header(&self) -> Value {
        json!({ "alg": alg_name(self.alg), "kid": self.kid, "typ": "at+jwt" })
    }

    /// A token with the standard header.
    pub fn token(&self, claims: &Value) -> String {
        self.sign(&self.header(), claims)
    }

    /// A token with exactly `header` and `claims` (serialized as given).
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        self.sign_parts(&header.to_string(), &claims.to_string())
    }

    /// A token over raw header and payload JSON text (for duplicate-member tests).
    pub fn sign_parts(&self, header_json: &str, payload_json: &str) -> String {
        let input = format!("{}.{}", B64.encode(header_json), B64.encode(payload_json));
        format!("{input}.{}", self.signature(input.as_bytes()))
    }

    /// base64url signature of `message`.
    pub fn signature(&self, message: &[u8]) -> String {
        let signer = (PROVIDER.signer_factory)(&self.alg, &self.enc).unwrap();
        B64.encode(signer.try_sign(message).unwrap())
    }
}

pub fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::EdDSA => "EdDSA",
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        _ => unreachable!(),
    }
}

/// HS256 over `input` with `secret`.
pub fn hs256(secret: &[u8], header: &Value, claims: &Value) -> String {
    let input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
    let key = EncodingKey::from_secret(secret);
    let signer = (PROVIDER.signer_factory)(&Algorithm::HS256, &key).unwrap();
    format!("{input}.{}", B64.encode(signer.try_sign(input.as_bytes()).unwrap()))
}

pub fn b64(s: impl AsRef<[u8]>) -> String {
    B64.encode(s)
}
