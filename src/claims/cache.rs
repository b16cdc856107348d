//! The verified-token cache of [`ClaimsExtractLayer`](super::ClaimsExtractLayer).

use std::fmt;
use std::sync::Arc;

use crate::token::Verified;
use crate::verify::CachePolicy;

/// Default budget of a [`TokenCache`]: 64 MiB, about 100,000 typical JWT access tokens.
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Bytes an entry costs beyond what its verified token holds: the key, the slot, the
/// bookkeeping of the cache and its share of the index.
const ENTRY_OVERHEAD: u64 = 96;

/// Verified tokens, so that a token presented again is not verified again.
///
/// Every [`ClaimsExtractLayer`](super::ClaimsExtractLayer) has one, shared by the services it
/// builds (on by default, [`DEFAULT_CACHE_BYTES`]). What it guarantees:
///
/// - **Keys are keyed hashes**: 128-bit XXH3 of the token under a secret drawn from the OS
///   when the cache is created. Tokens themselves are not kept; nobody outside the process
///   can compute a key, and a token that is not byte-for-byte one verified before lands on
///   another key (or, with probability 2⁻¹²⁸, on one that holds nothing useful to a holder of
///   a different token).
/// - **Never past `exp`**: an entry answers only while the token's `exp` is in the future by
///   the verifier's clock (checked on every hit, no leeway); tokens without `exp` are not
///   cached. Failed verifications are never cached.
/// - **Invalidation**: each entry remembers the verifier's [epoch](CachePolicy) when it was
///   verified; a verifier that drops or replaces a key (JWKS refresh,
///   [`SharedKeySet::replace`](crate::verify::SharedKeySet::replace)) or learns of a
///   revocation moves to a new epoch, and every older entry stops answering.
///   [`invalidate`](Self::invalidate) removes one token, [`clear`](Self::clear) all.
/// - **Bounded memory**: entries are weighed by the bytes they hold; past the budget the
///   least useful ones go (quick_cache's CLOCK-Pro policy, which resists scans).
/// - Verifiers opt in: only a [`TokenVerifier`](crate::verify::TokenVerifier) that returns a
///   [`CachePolicy`] is cached ([`JwtVerifier`](crate::JwtVerifier) and
///   [`IssuedTokenVerifier`](crate::server::IssuedTokenVerifier) do).
#[derive(Clone)]
pub struct TokenCache(Arc<Inner>);

struct Inner {
    entries: quick_cache::sync::Cache<u128, Entry, Weigh, KeyIsHash>,
    secret: [u8; 192],
    capacity: u64,
}

#[derive(Clone)]
struct Entry {
    verified: Arc<Verified>,
    /// Unix time from which the entry no longer answers.
    expires: i64,
    epoch: u64,
    weight: u32,
}

#[derive(Clone)]
struct Weigh;

impl quick_cache::Weighter<u128, Entry> for Weigh {
    fn weight(&self, _key: &u128, entry: &Entry) -> u64 {
        u64::from(entry.weight)
    }
}

/// The keys are already keyed hashes of the tokens (uniform and unpredictable without the
/// secret): the cache's table uses their bits as they are instead of hashing them again.
#[derive(Clone, Default)]
struct KeyIsHash;

impl std::hash::BuildHasher for KeyIsHash {
    type Hasher = KeyHasher;

    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u128(&mut self, key: u128) {
        // Both halves, so no bit of the key is ignored.
        self.0 ^= (key as u64) ^ ((key >> 64) as u64);
    }

    // Only u128 keys are hashed; any other input is still mixed in, never dropped.
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(word);
        }
    }
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("len", &self.len())
            .field("weight", &self.weight())
            .field("capacity", &self.0.capacity)
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// A cache of at most `capacity` bytes (approximate: what its entries hold).
    pub(crate) fn new(capacity: u64) -> Self {
        let mut secret = [0u8; 192];
        // Without OS randomness the keys would be predictable: better no cache entry at all
        // than a guessable one, so a failure leaves a cache of zero capacity (nothing is kept).
        let capacity = if getrandom::fill(&mut secret).is_ok() { capacity } else { 0 };
        let entries = quick_cache::sync::Cache::with(
            1024,
            capacity,
            Weigh,
            KeyIsHash,
            quick_cache::sync::DefaultLifecycle::default(),
        );
        Self(Arc::new(Inner { entries, secret, capacity }))
    }

    /// The token's key: 128-bit XXH3 under the cache's secret (the AVX2 or SSE2 code is
    /// picked at run time). `None` only if the secret were refused, which its fixed length
    /// rules out; the token is then neither looked up nor kept.
    #[inline]
    pub(crate) fn key(&self, token: &[u8]) -> Option<u128> {
        twox_hash::XxHash3_128::oneshot_with_secret(&self.0.secret, token).ok()
    }

    /// The verified token under `key`, if its entry still answers under `policy`.
    #[inline]
    pub(crate) fn get(&self, key: u128, policy: &CachePolicy) -> Option<Arc<Verified>> {
        let entry = self.0.entries.get(&key)?;
        if entry.epoch == policy.epoch() && policy.now() < entry.expires {
            return Some(entry.verified);
        }
        self.0.entries.remove(&key);
        None
    }

    /// Keeps a verdict given under `policy` (read before verification started).
    pub(crate) fn insert(&self, key: u128, verified: &Arc<Verified>, exp: Option<i64>, policy: &CachePolicy) {
        let Some(exp) = exp else { return };
        let expires = match policy.max_age_secs() {
            Some(age) => exp.min(policy.now().saturating_add(age)),
            None => exp,
        };
        if expires <= policy.now() || self.0.capacity == 0 {
            return;
        }
        let weight = u64::try_from(verified.approx_bytes()).unwrap_or(u64::MAX).saturating_add(ENTRY_OVERHEAD);
        let Ok(weight) = u32::try_from(weight) else { return };
        self.0.entries.insert(key, Entry { verified: verified.clone(), expires, epoch: policy.epoch(), weight });
    }

    /// Forgets `token` (the raw token text): its next use is verified again. Returns whether
    /// it was cached.
    pub fn invalidate(&self, token: &str) -> bool {
        self.key(token.as_bytes()).is_some_and(|key| self.0.entries.remove(&key).is_some())
    }

    /// Forgets every token.
    pub fn clear(&self) {
        self.0.entries.clear();
    }

    /// Number of cached tokens (including ones that no longer answer and wait for eviction).
    pub fn len(&self) -> usize {
        self.0.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.0.entries.is_empty()
    }

    /// Bytes accounted to the cached entries (an estimate of what they hold).
    pub fn weight(&self) -> u64 {
        self.0.entries.weight()
    }

    /// The budget in bytes.
    pub fn capacity(&self) -> u64 {
        self.0.capacity
    }
}
