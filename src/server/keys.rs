//! The keys that sign the access tokens the authorization server issues: ES256, each with a
//! `kid`, published as a JWKS, rotated with an overlap so tokens signed just before a rotation
//! keep verifying.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine;
use bytes::Bytes;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{ConfigError, ConfigErrorKind};
use crate::store::crypto::{EncryptionKeys, fill_random};
use crate::verify::{KeySet, SharedKeySet};

#[cfg(not(feature = "aws_lc_rs"))]
use jsonwebtoken::EncodingKey;
#[cfg(all(feature = "rust_crypto", not(feature = "aws_lc_rs")))]
use jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER as PROVIDER;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

struct Key {
    kid: String,
    /// Parsed once: loading a PKCS#8 key for each token cost about a third of signing it.
    #[cfg(feature = "aws_lc_rs")]
    signer: aws_lc_rs::signature::EcdsaKeyPair,
    #[cfg(not(feature = "aws_lc_rs"))]
    encoding: EncodingKey,
    pkcs8: Vec<u8>,
    public_jwk: Value,
    created_at: i64,
    /// Unix time after which the key is no longer published (it signs nothing any more).
    retire_at: Option<i64>,
}

struct Ring {
    /// The active (signing) key first.
    keys: Vec<Key>,
    jwks: Bytes,
}

/// The authorization server's token-signing keys.
///
/// The first key signs; the others stay published (and accepted) until they retire. Cloning
/// shares the same ring, so a rotation is seen by every clone and by the verifier built from
/// it.
#[derive(Clone)]
pub struct SigningKeys {
    ring: Arc<ArcSwap<Ring>>,
    public: SharedKeySet,
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ring = self.ring.load();
        f.debug_struct("SigningKeys").field("kids", &ring.keys.iter().map(|k| &k.kid).collect::<Vec<_>>()).finish()
    }
}

#[derive(Serialize, Deserialize)]
struct Persisted {
    keys: Vec<PersistedKey>,
}

#[derive(Serialize, Deserialize)]
struct PersistedKey {
    kid: String,
    pkcs8: String,
    created_at: i64,
    retire_at: Option<i64>,
}

fn bad(message: &str) -> ConfigError {
    ConfigError::new(ConfigErrorKind::InvalidKey, format!("signing key: {message}"))
}

impl Key {
    fn generate(now: i64) -> Result<Self, ConfigError> {
        // A uniformly random scalar; retried in the (astronomically unlikely) case it is out of range.
        for _ in 0..8 {
            let mut bytes = [0u8; 32];
            fill_random(&mut bytes);
            if let Ok(secret) = p256::SecretKey::from_bytes(&bytes.into()) {
                let der = secret.to_pkcs8_der().map_err(|_| bad("cannot encode"))?;
                return Self::from_pkcs8(der.as_bytes().to_vec(), None, now, None);
            }
        }
        Err(bad("no valid key generated"))
    }

    fn from_pkcs8(
        pkcs8: Vec<u8>,
        kid: Option<String>,
        created_at: i64,
        retire_at: Option<i64>,
    ) -> Result<Self, ConfigError> {
        let secret = p256::SecretKey::from_pkcs8_der(&pkcs8).map_err(|_| bad("not a P-256 PKCS#8 private key"))?;
        let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&secret.public_key(), false);
        let (Some(x), Some(y)) = (point.x(), point.y()) else { return Err(bad("invalid public point")) };
        let (x, y) = (B64.encode(x), B64.encode(y));
        // RFC 7638 thumbprint as the default kid.
        let kid = kid.unwrap_or_else(|| {
            use sha2::Digest;
            let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
            B64.encode(sha2::Sha256::digest(canonical.as_bytes()))
        });
        let public_jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": "ES256", "use": "sig"});
        #[cfg(feature = "aws_lc_rs")]
        let signer = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &pkcs8,
        )
        .map_err(|_| bad("not a P-256 PKCS#8 private key"))?;
        #[cfg(not(feature = "aws_lc_rs"))]
        let encoding = EncodingKey::from_ec_der(&pkcs8);
        Ok(Self {
            kid,
            #[cfg(feature = "aws_lc_rs")]
            signer,
            #[cfg(not(feature = "aws_lc_rs"))]
            encoding,
            pkcs8,
            public_jwk,
            created_at,
            retire_at,
        })
    }
}

impl Ring {
    fn new(keys: Vec<Key>) -> Self {
        let jwks = json!({ "keys": keys.iter().map(|k| k.public_jwk.clone()).collect::<Vec<_>>() });
        Self { jwks: Bytes::from(jwks.to_string()), keys }
    }

    fn public(&self) -> KeySet {
        KeySet::from_jwk_values(&self.keys.iter().map(|k| k.public_jwk.clone()).collect::<Vec<_>>())
    }
}

impl SigningKeys {
    fn from_ring(ring: Ring) -> Self {
        let public = SharedKeySet::new(ring.public());
        Self { ring: Arc::new(ArcSwap::from_pointee(ring)), public }
    }

    /// One fresh ES256 key.
    pub fn generate() -> Result<Self, ConfigError> {
        Ok(Self::from_ring(Ring::new(vec![Key::generate(crate::clock::Clock::unix_time(&crate::clock::SystemClock))?])))
    }

    /// An ES256 key from a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), with an optional `kid`
    /// (default: its RFC 7638 thumbprint).
    pub fn from_pkcs8_pem(pem: &str, kid: Option<&str>) -> Result<Self, ConfigError> {
        let secret = p256::SecretKey::from_pkcs8_pem(pem).map_err(|_| bad("not a P-256 PKCS#8 PEM private key"))?;
        let der = secret.to_pkcs8_der().map_err(|_| bad("cannot encode"))?;
        let now = crate::clock::Clock::unix_time(&crate::clock::SystemClock);
        Ok(Self::from_ring(Ring::new(vec![Key::from_pkcs8(der.as_bytes().to_vec(), kid.map(Into::into), now, None)?])))
    }

    /// The `kid` of the signing key.
    pub fn active_kid(&self) -> String {
        self.ring.load().keys.first().map(|k| k.kid.clone()).unwrap_or_default()
    }

    /// The published JWKS document.
    pub fn jwks(&self) -> Bytes {
        self.ring.load().jwks.clone()
    }

    /// The public keys, shared with verifiers (they see rotations).
    pub fn public_keys(&self) -> SharedKeySet {
        self.public.clone()
    }

    /// Makes a new key the signing key; the previous ones stay published for `overlap` (at
    /// least the access-token lifetime plus leeway) and are then dropped by `prune`.
    pub(crate) fn rotate(&self, now: i64, overlap: Duration) -> Result<(), ConfigError> {
        let fresh = Key::generate(now)?;
        let current = self.ring.load();
        let retire = now.saturating_add(i64::try_from(overlap.as_secs()).unwrap_or(i64::MAX));
        let mut keys = vec![fresh];
        for k in &current.keys {
            let retire_at = Some(k.retire_at.unwrap_or(retire).min(retire));
            keys.push(Key::from_pkcs8(k.pkcs8.clone(), Some(k.kid.clone()), k.created_at, retire_at)?);
        }
        self.install(Ring::new(keys));
        Ok(())
    }

    /// Drops keys whose overlap has ended.
    pub(crate) fn prune(&self, now: i64) {
        let current = self.ring.load();
        if current.keys.iter().skip(1).all(|k| k.retire_at.is_none_or(|r| r > now)) {
            return;
        }
        let keys = current
            .keys
            .iter()
            .enumerate()
            .filter(|(i, k)| *i == 0 || k.retire_at.is_none_or(|r| r > now))
            .filter_map(|(_, k)| Key::from_pkcs8(k.pkcs8.clone(), Some(k.kid.clone()), k.created_at, k.retire_at).ok())
            .collect();
        self.install(Ring::new(keys));
    }

    fn install(&self, ring: Ring) {
        self.public.replace(ring.public());
        self.ring.store(Arc::new(ring));
    }

    /// Signs `claims` as an RFC 9068 access token (`typ: at+jwt`).
    pub(crate) fn sign(&self, claims: &Value) -> Result<String, ConfigError> {
        let ring = self.ring.load();
        let key = ring.keys.first().ok_or_else(|| bad("no signing key"))?;
        let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": key.kid});
        let input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
        #[cfg(feature = "aws_lc_rs")]
        let signature = key
            .signer
            .sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes())
            .map_err(|_| bad("signing failed"))?;
        #[cfg(not(feature = "aws_lc_rs"))]
        let signature = (PROVIDER.signer_factory)(&jsonwebtoken::Algorithm::ES256, &key.encoding)
            .map_err(|_| bad("cannot load for signing"))?
            .try_sign(input.as_bytes())
            .map_err(|_| bad("signing failed"))?;
        Ok(format!("{input}.{}", B64.encode(signature)))
    }

    /// The keys sealed for storage (associated data `signing-keys`).
    pub(crate) fn seal(&self, enc: &EncryptionKeys) -> Result<Vec<u8>, ConfigError> {
        let ring = self.ring.load();
        let persisted = Persisted {
            keys: ring
                .keys
                .iter()
                .map(|k| PersistedKey {
                    kid: k.kid.clone(),
                    pkcs8: B64.encode(&k.pkcs8),
                    created_at: k.created_at,
                    retire_at: k.retire_at,
                })
                .collect(),
        };
        let plain = zeroize::Zeroizing::new(serde_json::to_vec(&persisted).map_err(|_| bad("cannot encode"))?);
        enc.seal(&plain, b"signing-keys").map_err(|_| bad("cannot seal"))
    }

    /// Keys sealed by [`seal`](Self::seal).
    pub(crate) fn open(sealed: &[u8], enc: &EncryptionKeys) -> Result<Self, ConfigError> {
        Ok(Self::from_ring(open_ring(sealed, enc)?))
    }

    /// Replaces this ring (seen by every clone and by the verifiers) with the one sealed in
    /// `sealed`, then drops keys whose overlap ended before `now`.
    pub(crate) fn reload(&self, sealed: &[u8], enc: &EncryptionKeys, now: i64) -> Result<(), ConfigError> {
        self.install(open_ring(sealed, enc)?);
        self.prune(now);
        Ok(())
    }

    /// Replaces this ring with a copy of `other`'s.
    pub(crate) fn adopt(&self, other: &SigningKeys) -> Result<(), ConfigError> {
        self.install(other.copy_ring()?);
        Ok(())
    }

    /// An independent copy of these keys (its rotations are not seen here).
    pub(crate) fn detached(&self) -> Result<SigningKeys, ConfigError> {
        Ok(Self::from_ring(self.copy_ring()?))
    }

    fn copy_ring(&self) -> Result<Ring, ConfigError> {
        let keys = self
            .ring
            .load()
            .keys
            .iter()
            .map(|k| Key::from_pkcs8(k.pkcs8.clone(), Some(k.kid.clone()), k.created_at, k.retire_at))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Ring::new(keys))
    }

    /// The key ids, signing key first.
    pub fn kids(&self) -> Vec<String> {
        self.ring.load().keys.iter().map(|k| k.kid.clone()).collect()
    }
}

fn open_ring(sealed: &[u8], enc: &EncryptionKeys) -> Result<Ring, ConfigError> {
    let plain = zeroize::Zeroizing::new(enc.open(sealed, b"signing-keys").map_err(|_| {
        ConfigError::new(
            ConfigErrorKind::InvalidKey,
            "the stored signing keys do not open with this encryption key (wrong key?)",
        )
    })?);
    let persisted: Persisted = serde_json::from_slice(&plain).map_err(|_| bad("stored keys are corrupt"))?;
    let keys = persisted
        .keys
        .into_iter()
        .map(|k| {
            let der = B64.decode(k.pkcs8).map_err(|_| bad("stored keys are corrupt"))?;
            Key::from_pkcs8(der, Some(k.kid), k.created_at, k.retire_at)
        })
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        return Err(bad("no stored keys"));
    }
    Ok(Ring::new(keys))
}

/// Keeps store-managed signing keys in step with the store, so that instances sharing a
/// store sign and verify with the same key ring: a rotation made by one instance reaches the
/// others within `interval` (checked when a token is issued or the JWKS served), and at
/// once when a token signed with a key this instance does not know arrives (at most one
/// such store read per [`FORCED_SPACING`] seconds, so forged `kid`s cannot load the store).
pub(crate) struct KeySync {
    interval: i64,
    last_check: AtomicI64,
    last_forced: AtomicI64,
    /// SHA-256 of the sealed ring last loaded or written.
    seen: std::sync::Mutex<[u8; 32]>,
    lock: tokio::sync::Mutex<()>,
}

/// Least seconds between two store reads caused by unknown `kid`s.
pub(crate) const FORCED_SPACING: i64 = 5;

impl KeySync {
    pub(crate) fn new(interval: Duration, now: i64, sealed: &[u8]) -> Self {
        Self {
            interval: i64::try_from(interval.as_secs()).unwrap_or(i64::MAX).max(1),
            last_check: AtomicI64::new(now),
            last_forced: AtomicI64::new(i64::MIN / 2),
            seen: std::sync::Mutex::new(digest(sealed)),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether a check is due at `now` (`forced`: for an unknown `kid`).
    fn due(&self, now: i64, forced: bool) -> bool {
        if forced {
            now.saturating_sub(self.last_forced.load(Ordering::Relaxed)) >= FORCED_SPACING
        } else {
            now.saturating_sub(self.last_check.load(Ordering::Relaxed)) >= self.interval
        }
    }

    pub(crate) fn seen(&self, sealed: &[u8]) -> bool {
        self.seen.lock().map(|s| *s == digest(sealed)).unwrap_or(false)
    }

    pub(crate) fn remember(&self, sealed: &[u8]) {
        if let Ok(mut s) = self.seen.lock() {
            *s = digest(sealed);
        }
    }

    /// Takes the right to check now: `None` if no check is due, or (not forced) another task
    /// is checking already.
    pub(crate) async fn begin(&self, now: i64, forced: bool) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        if !self.due(now, forced) {
            return None;
        }
        let guard = if forced { self.lock.lock().await } else { self.lock.try_lock().ok()? };
        // Someone else may have checked while this task waited.
        if !self.due(now, forced) {
            return None;
        }
        if forced {
            self.last_forced.store(now, Ordering::Relaxed);
        }
        self.last_check.store(now, Ordering::Relaxed);
        Some(guard)
    }
}

fn digest(sealed: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(sealed).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_rotate_and_persist() {
        let keys = SigningKeys::generate().unwrap();
        let kid1 = keys.active_kid();
        let token = keys.sign(&json!({"sub": "a"})).unwrap();
        assert_eq!(token.split('.').count(), 3);
        keys.rotate(1000, Duration::from_secs(600)).unwrap();
        let kid2 = keys.active_kid();
        assert_ne!(kid1, kid2);
        let jwks: Value = serde_json::from_slice(&keys.jwks()).unwrap();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
        keys.prune(1599);
        assert_eq!(keys.public_keys().load().len(), 2);
        keys.prune(1600);
        assert_eq!(keys.public_keys().load().len(), 1);
        let enc = EncryptionKeys::generate();
        let sealed = keys.seal(&enc).unwrap();
        let back = SigningKeys::open(&sealed, &enc).unwrap();
        assert_eq!(back.active_kid(), kid2);
        assert!(SigningKeys::open(&sealed, &EncryptionKeys::generate()).is_err());
    }
}
