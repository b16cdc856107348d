//! Secrets at rest: authenticated encryption with versioned keys, hashing of single-use
//! secrets, and the random values the server hands out.
//!
//! Upstream tokens are sealed with XChaCha20-Poly1305; the associated data binds each sealed
//! value to the record it belongs to (a value copied into another record does not open), and
//! the key version travels with the ciphertext so keys can rotate: new values are sealed with
//! the active key, older ones still open with the previous keys until those are removed.
//!
//! ```
//! use tower_mcp_auth::store::crypto::EncryptionKeys;
//!
//! let keys = EncryptionKeys::new(1, [7u8; 32]);
//! let sealed = keys.seal(b"upstream refresh token", b"grant:g-1").unwrap();
//! assert_eq!(keys.open(&sealed, b"grant:g-1").unwrap(), b"upstream refresh token");
//! assert!(keys.open(&sealed, b"grant:g-2").is_err()); // bound to its record
//!
//! let rotated = EncryptionKeys::new(2, [9u8; 32]).with_previous(1, [7u8; 32]);
//! assert_eq!(rotated.open(&sealed, b"grant:g-1").unwrap(), b"upstream refresh token");
//! ```

use std::fmt;

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::{ConfigError, ConfigErrorKind};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
const NONCE_LEN: usize = 24;

/// Encryption keys for secrets at rest: one active key, and older keys kept to open values
/// sealed before a rotation.
#[derive(Clone)]
pub struct EncryptionKeys {
    active: (u32, Zeroizing<[u8; 32]>),
    previous: Vec<(u32, Zeroizing<[u8; 32]>)>,
}

impl fmt::Debug for EncryptionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptionKeys")
            .field("active_version", &self.active.0)
            .field("previous_versions", &self.previous.iter().map(|k| k.0).collect::<Vec<_>>())
            .finish()
    }
}

/// A sealed value that does not open: wrong key, wrong record, or tampered bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("sealed value does not open (wrong key, wrong record or tampered)")]
pub struct OpenError;

impl EncryptionKeys {
    /// One key, version `version`, active.
    pub fn new(version: u32, key: [u8; 32]) -> Self {
        Self { active: (version, Zeroizing::new(key)), previous: Vec::new() }
    }

    /// Parses a 64-character hex key (256 bits) as version `version`.
    pub fn from_hex(version: u32, hex: &str) -> Result<Self, ConfigError> {
        Ok(Self::new(version, parse_hex_key(hex)?))
    }

    /// Keeps `key` (version `version`) to open older values; it never seals new ones.
    pub fn with_previous(mut self, version: u32, key: [u8; 32]) -> Self {
        self.previous.push((version, Zeroizing::new(key)));
        self
    }

    /// A fresh random key (for tests and in-memory development servers).
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        fill_random(&mut key);
        Self::new(1, key)
    }

    /// The active key's version.
    pub fn active_version(&self) -> u32 {
        self.active.0
    }

    /// Encrypts `plaintext`, binding it to `aad` (for example the record's key).
    /// Layout: version (4 bytes, big-endian) ‖ nonce (24) ‖ ciphertext and tag.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, OpenError> {
        let (version, key) = (&self.active.0, &self.active.1);
        let cipher = XChaCha20Poly1305::new((&**key).into());
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        let full_aad = bound_aad(*version, aad);
        let ct =
            cipher.encrypt(&XNonce::from(nonce), Payload { msg: plaintext, aad: &full_aad }).map_err(|_| OpenError)?;
        let mut out = Vec::with_capacity(4 + NONCE_LEN + ct.len());
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Decrypts a value sealed by [`seal`](Self::seal) with the same `aad`, under the active
    /// key or a previous one.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < 4 + NONCE_LEN + 16 {
            return Err(OpenError);
        }
        let version = u32::from_be_bytes([sealed[0], sealed[1], sealed[2], sealed[3]]);
        let key = std::iter::once(&self.active)
            .chain(self.previous.iter())
            .find(|(v, _)| *v == version)
            .map(|(_, k)| k)
            .ok_or(OpenError)?;
        let cipher = XChaCha20Poly1305::new((&**key).into());
        let nonce: [u8; NONCE_LEN] = sealed[4..4 + NONCE_LEN].try_into().map_err(|_| OpenError)?;
        let full_aad = bound_aad(version, aad);
        cipher
            .decrypt(&XNonce::from(nonce), Payload { msg: &sealed[4 + NONCE_LEN..], aad: &full_aad })
            .map_err(|_| OpenError)
    }
}

fn bound_aad(version: u32, aad: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + aad.len() + 16);
    v.extend_from_slice(b"tma1");
    v.extend_from_slice(&version.to_be_bytes());
    v.extend_from_slice(aad);
    v
}

fn parse_hex_key(hex: &str) -> Result<[u8; 32], ConfigError> {
    let bad = || ConfigError::new(ConfigErrorKind::InvalidKey, "encryption key must be 64 hex characters (256 bits)");
    let hex = hex.trim();
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut key = [0u8; 32];
    for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(chunk).map_err(|_| bad())?;
        key[i] = u8::from_str_radix(s, 16).map_err(|_| bad())?;
    }
    Ok(key)
}

/// Fills `buf` from the operating system's CSPRNG.
pub(crate) fn fill_random(buf: &mut [u8]) {
    // Failure of the OS CSPRNG is not recoverable and must never yield predictable secrets.
    if getrandom::fill(buf).is_err() {
        std::process::abort();
    }
}

/// A fresh secret of 256 random bits, base64url (43 characters): for codes, tokens, client
/// secrets, `state`, CSRF tokens and identifiers.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    fill_random(&mut b);
    B64.encode(b)
}

/// The storage key of a high-entropy secret: base64url(SHA-256(secret)). Only this is stored.
pub fn secret_hash(secret: &str) -> String {
    B64.encode(Sha256::digest(secret.as_bytes()))
}

/// Constant-time equality of two secrets or hashes.
pub fn secure_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    // K07: any flipped byte makes the value fail to open.
    #[test]
    fn k07_tampering_is_detected() {
        let keys = EncryptionKeys::new(3, [1u8; 32]);
        let sealed = keys.seal(b"secret", b"rec").unwrap();
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x01;
            assert!(keys.open(&t, b"rec").is_err(), "byte {i}");
        }
    }

    // K08, K09: bound to the record; rotation keeps old values readable until the key is removed.
    #[test]
    fn k08_k09_binding_and_rotation() {
        let v1 = EncryptionKeys::new(1, [1u8; 32]);
        let old = v1.seal(b"s", b"user-a").unwrap();
        assert!(v1.open(&old, b"user-b").is_err());
        let v2 = EncryptionKeys::new(2, [2u8; 32]).with_previous(1, [1u8; 32]);
        assert_eq!(v2.open(&old, b"user-a").unwrap(), b"s");
        let new = v2.seal(b"t", b"user-a").unwrap();
        assert_eq!(&new[..4], &2u32.to_be_bytes());
        let v2_only = EncryptionKeys::new(2, [2u8; 32]);
        assert!(v2_only.open(&old, b"user-a").is_err());
        assert_eq!(v2_only.open(&new, b"user-a").unwrap(), b"t");
        // The version is authenticated too: relabelling a v2 value as v1 fails.
        let mut relabelled = new.clone();
        relabelled[..4].copy_from_slice(&1u32.to_be_bytes());
        assert!(v2.open(&relabelled, b"user-a").is_err());
    }

    #[test]
    fn hex_keys() {
        assert!(EncryptionKeys::from_hex(1, &"ab".repeat(32)).is_ok());
        assert!(EncryptionKeys::from_hex(1, &"ab".repeat(31)).is_err());
        assert!(EncryptionKeys::from_hex(1, &"zz".repeat(32)).is_err());
    }

    #[test]
    fn random_and_hash() {
        let a = random_token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, random_token());
        assert_eq!(secret_hash("x"), secret_hash("x"));
        assert_ne!(secret_hash("x"), secret_hash("y"));
        assert!(secure_eq(b"abc", b"abc") && !secure_eq(b"abc", b"abd") && !secure_eq(b"abc", b"ab"));
    }
}
