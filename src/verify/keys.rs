//! Verification keys: JWK / JWKS / PEM parsing with the checks RFC 8725 §3.4 and the
//! Wycheproof JWK vectors call for, and one algorithm bound to every key.

use std::fmt;

use base64::Engine;
use jsonwebtoken::DecodingKey;
use serde_json::{Map, Value};

use super::algorithm::{Algorithm, Family};
use crate::error::{ConfigError, ConfigErrorKind};

#[cfg(feature = "aws_lc_rs")]
use jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER as PROVIDER;
#[cfg(all(feature = "rust_crypto", not(feature = "aws_lc_rs")))]
use jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER as PROVIDER;
#[cfg(not(any(feature = "aws_lc_rs", feature = "rust_crypto")))]
compile_error!("tower-mcp-auth needs a signature backend: enable the `aws_lc_rs` or the `rust_crypto` feature");

/// Strict base64url without padding, canonical trailing bits (RFC 7515 §2).
pub(crate) const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Most keys accepted from one JWKS document.
pub(crate) const MAX_KEYS: usize = 100;
const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 16384;

/// A key bound to exactly one algorithm.
#[derive(Clone)]
pub(crate) struct VerifyingKey {
    pub(crate) kid: Option<Box<str>>,
    pub(crate) alg: Algorithm,
    key: Material,
    /// SHA-256 of the key material: tells a replaced key from the one it replaces.
    fingerprint: [u8; 32],
}

/// The key in the form verification uses.
#[derive(Clone)]
enum Material {
    /// Parsed once, at load time (aws-lc-rs): no per-request key setup.
    #[cfg(feature = "aws_lc_rs")]
    Parsed(std::sync::Arc<aws_lc_rs::signature::ParsedPublicKey>),
    /// Handed to jsonwebtoken's backend on each verification (HMAC secrets, RustCrypto).
    Decoding(DecodingKey),
}

impl VerifyingKey {
    fn new(kid: Option<Box<str>>, alg: Algorithm, key: DecodingKey) -> Self {
        Self { kid, alg, key: Material::Decoding(key), fingerprint: [0; 32] }
    }

    /// Parses an asymmetric key once, where the backend allows it. `raw` is (n, e) for RSA,
    /// the SEC1 point for EC, the 32-byte key for Ed25519.
    #[cfg(feature = "aws_lc_rs")]
    fn parsed(kid: Option<Box<str>>, alg: Algorithm, raw: RawKey<'_>, fallback: DecodingKey) -> Self {
        use aws_lc_rs::signature as sig;
        let parsed = match (alg, raw) {
            (_, RawKey::Rsa { n, e }) => {
                let params: &'static sig::RsaParameters = match alg {
                    Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
                    Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
                    Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
                    Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
                    Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
                    Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
                    _ => return Self::new(kid, alg, fallback),
                };
                sig::RsaPublicKeyComponents { n, e }.to_parsed_public_key(params).ok()
            }
            (Algorithm::ES256, RawKey::Bytes(b)) => sig::ParsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, b).ok(),
            (Algorithm::ES384, RawKey::Bytes(b)) => sig::ParsedPublicKey::new(&sig::ECDSA_P384_SHA384_FIXED, b).ok(),
            (Algorithm::EdDSA, RawKey::Bytes(b)) => sig::ParsedPublicKey::new(&sig::ED25519, b).ok(),
            _ => None,
        };
        match parsed {
            Some(p) => Self { kid, alg, key: Material::Parsed(std::sync::Arc::new(p)), fingerprint: [0; 32] },
            None => Self::new(kid, alg, fallback),
        }
    }

    #[cfg(not(feature = "aws_lc_rs"))]
    fn parsed(kid: Option<Box<str>>, alg: Algorithm, _raw: RawKey<'_>, fallback: DecodingKey) -> Self {
        Self::new(kid, alg, fallback)
    }

    /// Checks `signature` (base64url) over `message`.
    pub(crate) fn verify(&self, message: &[u8], signature_b64: &str) -> bool {
        // 512 bytes covers RSA-4096 signatures without a heap allocation.
        let mut buf = [0u8; 512];
        let heap;
        let signature: &[u8] = match B64.decode_slice(signature_b64, &mut buf) {
            Ok(n) => &buf[..n],
            Err(base64::DecodeSliceError::OutputSliceTooSmall) => match B64.decode(signature_b64) {
                Ok(v) => {
                    heap = v;
                    &heap
                }
                Err(_) => return false,
            },
            Err(_) => return false,
        };
        match &self.key {
            #[cfg(feature = "aws_lc_rs")]
            Material::Parsed(key) => key.verify_sig(message, signature).is_ok(),
            Material::Decoding(key) => {
                let Ok(verifier) = (PROVIDER.verifier_factory)(&self.alg.to_jwt(), key) else { return false };
                verifier.verify(message, &signature.to_vec()).is_ok()
            }
        }
    }
}

/// Public key bytes for parsing once.
#[derive(Clone, Copy)]
#[cfg_attr(not(feature = "aws_lc_rs"), allow(dead_code))]
enum RawKey<'a> {
    Rsa { n: &'a [u8], e: &'a [u8] },
    Bytes(&'a [u8]),
}

/// A set of verification keys, each bound to one algorithm.
///
/// Build one from a JWKS document, a single JWK, or PEM; give it to
/// [`Issuer::keys`](super::Issuer::keys). Keys that must not verify signatures are skipped:
/// `oct` keys, `use` other than `sig`, `key_ops` without `verify`, RSA moduli under 2048 bits
/// or public exponent 1, EC points off the curve, an `alg` that does not fit the key. Two keys
/// with the same `kid` make that `kid` unusable.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
    ambiguous_kids: Vec<Box<str>>,
}

/// Result of looking a key up.
pub(crate) enum Lookup<'a> {
    Found(&'a VerifyingKey),
    /// A `kid` this set does not hold: worth a refresh of a remote set.
    UnknownKid,
    /// No usable key, and a refresh would not help (wrong algorithm for the key, ambiguous kid,
    /// no kid with several candidates).
    Unusable,
}

impl KeySet {
    /// Parses a JWKS document (`{"keys": [...]}`), keeping the usable keys.
    pub fn from_jwks_json(json: &str) -> Result<Self, ConfigError> {
        parse_jwks(json.as_bytes(), &Algorithm::ASYMMETRIC)
            .map_err(|e| ConfigError::new(ConfigErrorKind::InvalidKey, format!("JWKS: {e}")))
    }

    /// Parses one JWK. Fails if the key is not usable for signature verification.
    pub fn from_jwk_json(json: &str) -> Result<Self, ConfigError> {
        let obj: Map<String, Value> = serde_json::from_str(json)
            .map_err(|e| ConfigError::new(ConfigErrorKind::InvalidKey, format!("JWK: {e}")))?;
        let key = parse_jwk(&obj, &Algorithm::ASYMMETRIC)
            .map_err(|e| ConfigError::new(ConfigErrorKind::InvalidKey, format!("JWK: {e}")))?;
        Ok(Self::from_keys(vec![key]))
    }

    /// Parses public JWKs already in JSON form (used by the authorization server for its own
    /// keys).
    pub(crate) fn from_jwk_values(jwks: &[Value]) -> Self {
        let keys = jwks
            .iter()
            .filter_map(|v| v.as_object())
            .filter_map(|o| parse_jwk(o, &Algorithm::ASYMMETRIC).ok())
            .collect();
        Self::from_keys(keys)
    }

    /// A public key in PEM form (SPKI `PUBLIC KEY`, or PKCS#1 `RSA PUBLIC KEY`), used with
    /// `alg` only, under an optional `kid`.
    pub fn from_pem(pem: &[u8], alg: Algorithm, kid: Option<&str>) -> Result<Self, ConfigError> {
        let bad = |what: &str| ConfigError::new(ConfigErrorKind::InvalidKey, format!("PEM key: {what}"));
        let public = match alg.family() {
            Family::Rsa => {
                let der = DecodingKey::from_rsa_pem(pem).map_err(|_| bad("not an RSA public key"))?;
                let der = der.try_get_as_bytes().map_err(|_| bad("not an RSA public key"))?;
                let (n, e) = (PROVIDER.key_utils.rsa_pub_components_from_public_key)(der)
                    .map_err(|_| bad("not an RSA public key"))?;
                let (n, e) = check_rsa(&n, &e).map_err(bad)?;
                Public::Rsa { n, e }
            }
            Family::P256 | Family::P384 => {
                let k = DecodingKey::from_ec_pem(pem).map_err(|_| bad("not an EC public key"))?;
                let point = k.try_get_as_bytes().map_err(|_| bad("not an EC public key"))?;
                check_ec_point(alg.family(), point).map_err(bad)?;
                Public::Point(point.to_vec())
            }
            Family::Ed25519 => {
                let k = DecodingKey::from_ed_pem(pem).map_err(|_| bad("not an Ed25519 public key"))?;
                let x = k.try_get_as_bytes().map_err(|_| bad("not an Ed25519 public key"))?;
                if x.len() != 32 {
                    return Err(bad("not an Ed25519 public key"));
                }
                Public::Ed25519(x.to_vec())
            }
            Family::Hmac => return Err(bad("HMAC keys are not PEM; use KeySet::dangerous_hmac_secret")),
        };
        Ok(Self::from_keys(vec![public.into_key(kid.map(Into::into), alg)]))
    }

    /// A shared HMAC secret. Dangerous: anyone who can verify can also mint tokens, so use it
    /// only for tokens your own service issues. The secret must be at least as long as the
    /// hash (32, 48 or 64 bytes; RFC 8725 §3.5), and the algorithm must also be allowed on the
    /// verifier.
    pub fn dangerous_hmac_secret(secret: &[u8], alg: Algorithm, kid: Option<&str>) -> Result<Self, ConfigError> {
        let min = match alg {
            Algorithm::HS256 => 32,
            Algorithm::HS384 => 48,
            Algorithm::HS512 => 64,
            _ => return Err(ConfigError::new(ConfigErrorKind::InvalidKey, "not an HMAC algorithm")),
        };
        if secret.len() < min {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidKey,
                format!("{alg} secret must be at least {min} bytes"),
            ));
        }
        Ok(Self::from_keys(vec![Public::Secret(secret.to_vec()).into_key(kid.map(Into::into), alg)]))
    }

    /// Parses a JWKS document of shared HMAC secrets (`oct` keys, each with an `HS*` `alg` and
    /// at least as many bytes as its hash). A document that mixes secrets with public keys is
    /// refused as a whole, like one with a key of another type. Dangerous for the same reason
    /// as [`dangerous_hmac_secret`](Self::dangerous_hmac_secret).
    pub fn dangerous_from_hmac_jwks_json(json: &str) -> Result<Self, ConfigError> {
        let bad = |m: &str| ConfigError::new(ConfigErrorKind::InvalidKey, format!("HMAC JWKS: {m}"));
        let doc: Value = serde_json::from_str(json).map_err(|_| bad("not JSON"))?;
        let keys = doc.get("keys").and_then(Value::as_array).ok_or_else(|| bad("no \"keys\" array"))?;
        if keys.len() > MAX_KEYS {
            return Err(bad("too many keys"));
        }
        let hmac = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let obj = k.as_object().ok_or_else(|| bad("key is not an object"))?;
            if obj.get("kty").and_then(Value::as_str) != Some("oct") {
                return Err(bad("mixes shared secrets with other keys"));
            }
            out.push(parse_jwk(obj, &hmac).map_err(bad)?);
        }
        Ok(Self::from_keys(out))
    }

    /// Adds the keys of `other`.
    pub fn merge(mut self, other: KeySet) -> Self {
        let mut keys = std::mem::take(&mut self.keys);
        keys.extend(other.keys);
        let mut set = Self::from_keys(keys);
        set.ambiguous_kids.extend(self.ambiguous_kids);
        set.ambiguous_kids.extend(other.ambiguous_kids);
        set
    }

    pub(crate) fn from_keys(keys: Vec<VerifyingKey>) -> Self {
        let mut set = Self { keys: Vec::with_capacity(keys.len()), ambiguous_kids: Vec::new() };
        for key in keys {
            if let Some(kid) = &key.kid {
                if set.ambiguous_kids.contains(kid) {
                    continue;
                }
                if let Some(i) = set.keys.iter().position(|k| k.kid.as_deref() == Some(&**kid)) {
                    set.keys.remove(i);
                    set.ambiguous_kids.push(kid.clone());
                    continue;
                }
            }
            set.keys.push(key);
        }
        set
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no usable key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The `kid`s of the usable keys.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().filter_map(|k| k.kid.as_deref())
    }

    /// Whether every key of `old` is still here, unchanged (same `kid`, algorithm and
    /// material). When not, tokens verified with `old` may no longer verify.
    pub(crate) fn holds_all(&self, old: &KeySet) -> bool {
        old.keys
            .iter()
            .all(|o| self.keys.iter().any(|k| k.kid == o.kid && k.alg == o.alg && k.fingerprint == o.fingerprint))
            && old.ambiguous_kids.iter().all(|a| self.ambiguous_kids.contains(a))
    }

    pub(crate) fn algorithms(&self) -> impl Iterator<Item = Algorithm> + '_ {
        self.keys.iter().map(|k| k.alg)
    }

    /// The one key without `kid` bound to `alg`, if exactly one exists.
    fn only_kidless(&self, alg: Algorithm) -> Option<&VerifyingKey> {
        let mut candidates = self.keys.iter().filter(|k| k.kid.is_none() && k.alg == alg);
        match (candidates.next(), candidates.next()) {
            (Some(k), None) => Some(k),
            _ => None,
        }
    }

    pub(crate) fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Lookup<'_> {
        match kid {
            Some(kid) => {
                if self.ambiguous_kids.iter().any(|k| &**k == kid) {
                    return Lookup::Unusable;
                }
                match self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)) {
                    Some(k) if k.alg == alg => Lookup::Found(k),
                    Some(_) => Lookup::Unusable,
                    // A key published without `kid` does not constrain the token's `kid`.
                    None => match self.only_kidless(alg) {
                        Some(k) => Lookup::Found(k),
                        None => Lookup::UnknownKid,
                    },
                }
            }
            None => {
                let mut candidates = self.keys.iter().filter(|k| k.alg == alg);
                match (candidates.next(), candidates.next()) {
                    (Some(k), None) => Lookup::Found(k),
                    _ => Lookup::Unusable,
                }
            }
        }
    }
}

/// A key set that can be replaced while verifiers use it (key rotation without rebuilding
/// verifiers). Cloning shares the same set.
#[derive(Clone)]
pub struct SharedKeySet(std::sync::Arc<SharedInner>);

struct SharedInner {
    keys: arc_swap::ArcSwap<KeySet>,
    /// Bumped whenever a replacement drops or changes a key (see [`KeySet::holds_all`]).
    epoch: std::sync::atomic::AtomicU64,
}

impl SharedKeySet {
    /// Shares `keys`.
    pub fn new(keys: KeySet) -> Self {
        Self(std::sync::Arc::new(SharedInner {
            keys: arc_swap::ArcSwap::from_pointee(keys),
            epoch: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    /// Replaces the keys for every verifier that uses this set. Tokens verified with a key
    /// that is gone (or changed) are dropped from every [`TokenCache`](crate::claims::TokenCache).
    pub fn replace(&self, keys: KeySet) {
        let old = self.0.keys.swap(std::sync::Arc::new(keys));
        // After the swap: a verification that read the previous epoch may have used an old
        // key, and its cache entry must not outlive this change.
        if !self.0.keys.load().holds_all(&old) {
            self.0.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
    }

    pub(crate) fn load(&self) -> arc_swap::Guard<std::sync::Arc<KeySet>> {
        self.0.keys.load()
    }

    /// Changes whenever a key was dropped or replaced.
    pub(crate) fn epoch(&self) -> u64 {
        self.0.epoch.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl fmt::Debug for SharedKeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self.0.keys.load(), f)
    }
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.keys.iter().map(|k| (k.kid.as_deref().unwrap_or("-"), k.alg.as_str()))).finish()
    }
}

/// Parses a JWKS document; fails on a document that is not one (so a cache keeps its last
/// good keys), skips individual keys that are not usable.
pub(crate) fn parse_jwks(body: &[u8], allowed: &[Algorithm]) -> Result<KeySet, &'static str> {
    let doc: Value = serde_json::from_slice(body).map_err(|_| "not JSON")?;
    let keys = doc.get("keys").and_then(Value::as_array).ok_or("no \"keys\" array")?;
    if keys.len() > MAX_KEYS {
        return Err("too many keys");
    }
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        let Some(obj) = k.as_object() else { continue };
        match parse_jwk(obj, allowed) {
            Ok(key) => out.push(key),
            Err(why) => tracing::debug!(why, "JWKS key skipped"),
        }
    }
    Ok(KeySet::from_keys(out))
}

fn str_field<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, &'static str> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err("JWK member is not a string"),
    }
}

fn b64_field(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, &'static str> {
    let s = str_field(obj, name)?.ok_or("JWK member missing")?;
    B64.decode(s).map_err(|_| "JWK member is not base64url")
}

/// Parses one JWK into a key bound to one algorithm from `allowed`.
pub(crate) fn parse_jwk(obj: &Map<String, Value>, allowed: &[Algorithm]) -> Result<VerifyingKey, &'static str> {
    let kty = str_field(obj, "kty")?.ok_or("no kty")?;
    if let Some(u) = str_field(obj, "use")?
        && u != "sig"
    {
        return Err("use is not sig");
    }
    if let Some(ops) = obj.get("key_ops") {
        let ops = ops.as_array().ok_or("key_ops is not an array")?;
        if !ops.iter().any(|o| o.as_str() == Some("verify")) {
            return Err("key_ops does not allow verify");
        }
    }
    let declared = match str_field(obj, "alg")? {
        Some(a) => Some(Algorithm::from_name(a).ok_or("unsupported alg")?),
        None => None,
    };
    let kid = str_field(obj, "kid")?.map(Into::into);

    let (family, public) = match kty {
        "RSA" => {
            let (n, e) = check_rsa(&b64_field(obj, "n")?, &b64_field(obj, "e")?)?;
            (Family::Rsa, Public::Rsa { n, e })
        }
        "EC" => {
            let family = match str_field(obj, "crv")? {
                Some("P-256") => Family::P256,
                Some("P-384") => Family::P384,
                _ => return Err("unsupported curve"),
            };
            let (x, y) = (b64_field(obj, "x")?, b64_field(obj, "y")?);
            let mut point = Vec::with_capacity(1 + x.len() + y.len());
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            check_ec_point(family, &point)?;
            (family, Public::Point(point))
        }
        "OKP" => {
            if str_field(obj, "crv")? != Some("Ed25519") {
                return Err("unsupported curve");
            }
            let x = b64_field(obj, "x")?;
            if x.len() != 32 {
                return Err("Ed25519 key must be 32 bytes");
            }
            (Family::Ed25519, Public::Ed25519(x))
        }
        "oct" => {
            let k = b64_field(obj, "k")?;
            let alg = declared.ok_or("oct key without alg")?;
            if !allowed.contains(&alg) || alg.family() != Family::Hmac {
                return Err("HMAC key not allowed");
            }
            let min = match alg {
                Algorithm::HS256 => 32,
                Algorithm::HS384 => 48,
                _ => 64,
            };
            if k.len() < min {
                return Err("HMAC key too short");
            }
            (Family::Hmac, Public::Secret(k))
        }
        _ => return Err("unsupported kty"),
    };

    let alg = match declared {
        Some(a) if a.family() == family => a,
        Some(_) => return Err("alg does not fit the key"),
        None => match family {
            Family::Rsa => Algorithm::RS256,
            Family::P256 => Algorithm::ES256,
            Family::P384 => Algorithm::ES384,
            Family::Ed25519 => Algorithm::EdDSA,
            Family::Hmac => return Err("oct key without alg"),
        },
    };
    if !allowed.contains(&alg) {
        return Err("algorithm not allowed");
    }
    Ok(public.into_key(kid, alg))
}

/// Checked key material, before it is bound to an algorithm.
enum Public {
    /// Modulus and exponent, big-endian without leading zeros.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// An uncompressed SEC1 point (what both backends read for EC keys).
    Point(Vec<u8>),
    Ed25519(Vec<u8>),
    Secret(Vec<u8>),
}

impl Public {
    fn into_key(self, kid: Option<Box<str>>, alg: Algorithm) -> VerifyingKey {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        match &self {
            Public::Rsa { n, e } => {
                h.update(b"rsa");
                h.update((n.len() as u64).to_be_bytes());
                h.update(n);
                h.update(e);
            }
            Public::Point(p) => {
                h.update(b"ec");
                h.update(p);
            }
            Public::Ed25519(x) => {
                h.update(b"okp");
                h.update(x);
            }
            Public::Secret(k) => {
                h.update(b"oct");
                h.update(k);
            }
        }
        let fingerprint: [u8; 32] = h.finalize().into();
        let mut key = self.into_unfingerprinted_key(kid, alg);
        key.fingerprint = fingerprint;
        key
    }

    fn into_unfingerprinted_key(self, kid: Option<Box<str>>, alg: Algorithm) -> VerifyingKey {
        match self {
            Public::Rsa { n, e } => {
                let fallback = DecodingKey::from_rsa_raw_components(&n, &e);
                VerifyingKey::parsed(kid, alg, RawKey::Rsa { n: &n, e: &e }, fallback)
            }
            Public::Point(p) => VerifyingKey::parsed(kid, alg, RawKey::Bytes(&p), DecodingKey::from_ec_der(&p)),
            Public::Ed25519(x) => VerifyingKey::parsed(kid, alg, RawKey::Bytes(&x), DecodingKey::from_ed_der(&x)),
            Public::Secret(k) => VerifyingKey::new(kid, alg, DecodingKey::from_secret(&k)),
        }
    }
}

/// Checks an RSA public key and returns (n, e) without leading zeros.
fn check_rsa(n: &[u8], e: &[u8]) -> Result<(Vec<u8>, Vec<u8>), &'static str> {
    let n = strip_zeros(n);
    let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
    if bits < MIN_RSA_BITS {
        return Err("RSA modulus under 2048 bits");
    }
    if bits > MAX_RSA_BITS {
        return Err("RSA modulus too large");
    }
    let e = strip_zeros(e);
    if e.is_empty() || e.len() > 4 {
        return Err("RSA exponent out of range");
    }
    let e_val = e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    if e_val < 3 || e_val % 2 == 0 {
        return Err("RSA exponent must be odd and at least 3");
    }
    if n.last().is_none_or(|b| b % 2 == 0) {
        return Err("RSA modulus must be odd");
    }
    if has_roca_fingerprint(n) {
        return Err("RSA key generated by a ROCA-vulnerable library (CVE-2017-15361)");
    }
    Ok((n.to_vec(), e.to_vec()))
}

/// The ROCA fingerprint (Nemec et al., CCS 2017): moduli from the affected Infineon library
/// are, modulo each of these small primes, in the subgroup generated by 65537. A random
/// modulus passes all of them with probability far below 2^-100.
fn has_roca_fingerprint(n: &[u8]) -> bool {
    const PRIMES: [u32; 38] = [
        3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 101, 103, 107,
        109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
    ];
    PRIMES.iter().all(|&p| {
        let residue = n.iter().fold(0u32, |acc, b| (acc * 256 + u32::from(*b)) % p);
        let generator = 65537 % p;
        let mut x = 1;
        // Walk the cyclic subgroup <65537> mod p (at most p - 1 steps).
        for _ in 0..p {
            if x == residue {
                return true;
            }
            x = x * generator % p;
            if x == 1 {
                break;
            }
        }
        false
    })
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[first..]
}

fn check_ec_point(family: Family, point: &[u8]) -> Result<(), &'static str> {
    let ok = match family {
        Family::P256 => point.len() == 65 && p256::PublicKey::from_sec1_bytes(point).is_ok(),
        Family::P384 => point.len() == 97 && p384::PublicKey::from_sec1_bytes(point).is_ok(),
        _ => false,
    };
    if ok { Ok(()) } else { Err("EC point is not on the curve") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwk(v: Value) -> Result<VerifyingKey, &'static str> {
        parse_jwk(v.as_object().unwrap(), &Algorithm::ASYMMETRIC)
    }

    // A P-256 point from RFC 7515 A.3.
    const X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";

    #[test]
    fn c13_ec_key_checks() {
        assert!(jwk(serde_json::json!({"kty":"EC","crv":"P-256","x":X,"y":Y})).is_ok());
        let k = jwk(serde_json::json!({"kty":"EC","crv":"P-256","x":X,"y":Y,"alg":"ES256","use":"sig"})).unwrap();
        assert_eq!(k.alg, Algorithm::ES256);
        // Off-curve: flip the last byte of y.
        let mut y = B64.decode(Y).unwrap();
        *y.last_mut().unwrap() ^= 1;
        let y = B64.encode(y);
        assert!(jwk(serde_json::json!({"kty":"EC","crv":"P-256","x":X,"y":y})).is_err());
        assert!(jwk(serde_json::json!({"kty":"EC","crv":"P-256","x":X,"y":Y,"use":"enc"})).is_err());
        assert!(jwk(serde_json::json!({"kty":"EC","crv":"P-256","x":X,"y":Y,"key_ops":["encrypt"]})).is_err());
        assert!(jwk(serde_json::json!({"kty":"EC","crv":"P-256","x":X,"y":Y,"alg":"ES384"})).is_err());
        assert!(jwk(serde_json::json!({"kty":"EC","crv":"P-256","x":X,"y":Y,"alg":"RS256"})).is_err());
    }

    #[test]
    fn c12_oct_keys_ignored_and_duplicate_kids_unusable() {
        let k = B64.encode([7u8; 32]);
        let doc = serde_json::json!({"keys":[
            {"kty":"oct","k":k,"alg":"HS256","kid":"h"},
            {"kty":"EC","crv":"P-256","x":X,"y":Y,"kid":"dup"},
            {"kty":"EC","crv":"P-256","x":X,"y":Y,"kid":"dup"},
            {"kty":"EC","crv":"P-256","x":X,"y":Y,"kid":"one"},
        ]});
        let set = parse_jwks(doc.to_string().as_bytes(), &Algorithm::ASYMMETRIC).unwrap();
        assert_eq!(set.kids().collect::<Vec<_>>(), ["one"]);
        assert!(matches!(set.lookup(Some("dup"), Algorithm::ES256), Lookup::Unusable));
        assert!(matches!(set.lookup(Some("h"), Algorithm::HS256), Lookup::UnknownKid));
        assert!(matches!(set.lookup(Some("one"), Algorithm::ES256), Lookup::Found(_)));
        assert!(matches!(set.lookup(Some("one"), Algorithm::RS256), Lookup::Unusable));
    }

    #[test]
    fn c06_too_many_keys_and_bad_documents() {
        let many: Vec<Value> = (0..=MAX_KEYS)
            .map(|i| serde_json::json!({"kty":"EC","crv":"P-256","x":X,"y":Y,"kid":i.to_string()}))
            .collect();
        assert!(parse_jwks(serde_json::json!({"keys": many}).to_string().as_bytes(), &Algorithm::ASYMMETRIC).is_err());
        for bad in [&b"{}"[..], b"{\"keys\":\"x\"}", b"<html>", b"[]"] {
            assert!(parse_jwks(bad, &Algorithm::ASYMMETRIC).is_err());
        }
        assert!(parse_jwks(b"{\"keys\":[]}", &Algorithm::ASYMMETRIC).unwrap().is_empty());
    }

    #[test]
    fn c13_rsa_key_checks() {
        let n2048 = {
            let mut n = vec![0xC5u8; 256];
            n[255] |= 1;
            n
        };
        assert!(check_rsa(&n2048, &[1, 0, 1]).is_ok());
        assert!(check_rsa(&n2048[..128], &[1, 0, 1]).is_err(), "1024-bit modulus");
        assert!(check_rsa(&n2048, &[1]).is_err(), "e = 1");
        assert!(check_rsa(&n2048, &[2]).is_err(), "even e");
        let mut even = n2048.clone();
        even[255] &= 0xFE;
        assert!(check_rsa(&even, &[1, 0, 1]).is_err());
    }

    #[test]
    fn hmac_secret_length() {
        assert!(KeySet::dangerous_hmac_secret(&[1; 31], Algorithm::HS256, None).is_err());
        assert!(KeySet::dangerous_hmac_secret(&[1; 32], Algorithm::HS256, None).is_ok());
        assert!(KeySet::dangerous_hmac_secret(&[1; 63], Algorithm::HS512, None).is_err());
        assert!(KeySet::dangerous_hmac_secret(&[1; 64], Algorithm::RS256, None).is_err());
    }
}
