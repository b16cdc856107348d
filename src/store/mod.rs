//! Storage for the authorization server: one [`Store`] trait with namespaced keys, lifetimes,
//! and the atomic operations single-use artefacts depend on.
//!
//! Authorization codes, `state` values, consent transactions, assertion `jti`s and refresh
//! tokens must each be used at most once, also when several requests race, also across
//! instances. The trait therefore offers [`take`](Store::take) (read and delete in one step),
//! [`insert_if_absent`](Store::insert_if_absent) and [`compare_and_swap`](Store::compare_and_swap),
//! and every implementation makes them atomic.
//!
//! Implementations: [`MemoryStore`] (one process; loses everything on restart); with the
//! `sqlite` feature, `SqliteStore` (embedded, persistent); with the `redis` feature,
//! `RedisStore` (shared by several instances behind a load balancer). Secrets never reach a store in the
//! clear: codes, refresh tokens and client secrets are stored as hashes, upstream tokens
//! encrypted ([`crypto`]).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::time::Duration;
//! use tower_mcp_auth::store::{MemoryStore, Namespace, Store};
//!
//! const CODES: Namespace = Namespace::new("codes");
//! let store = MemoryStore::new();
//! assert!(store.insert_if_absent(CODES, "h1", b"grant".to_vec(), Some(Duration::from_secs(60))).await.unwrap());
//! assert!(!store.insert_if_absent(CODES, "h1", b"other".to_vec(), None).await.unwrap());
//! assert_eq!(store.take(CODES, "h1").await.unwrap(), Some(b"grant".to_vec()));
//! assert_eq!(store.take(CODES, "h1").await.unwrap(), None); // single use
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub mod crypto;
mod memory;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "redis")]
pub use self::redis::RedisStore;
pub use memory::MemoryStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

/// The future every store operation returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A namespace of keys (one per kind of record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(&'static str);

impl Namespace {
    /// A namespace named `name` (letters, digits, `-` and `_`).
    pub const fn new(name: &'static str) -> Self {
        Self(name)
    }

    /// The name.
    pub const fn as_str(self) -> &'static str {
        self.0
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// A key-value store with lifetimes and atomic single-use operations.
///
/// Values are opaque bytes. An entry whose lifetime (`ttl`) has passed is gone: no operation
/// sees it. `None` as lifetime means "until deleted".
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// The value under `key`, if present and alive.
    fn get<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>>;

    /// Stores `value` under `key`, replacing any previous value.
    fn put<'a>(&'a self, ns: Namespace, key: &'a str, value: Vec<u8>, ttl: Option<Duration>) -> StoreFuture<'a, ()>;

    /// Stores `value` only if `key` holds no live value; `true` if it was stored. Atomic.
    fn insert_if_absent<'a>(
        &'a self,
        ns: Namespace,
        key: &'a str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, bool>;

    /// Removes and returns the value under `key`. Atomic: of several concurrent `take`s of
    /// one key, exactly one gets the value.
    fn take<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>>;

    /// Removes `key`; `true` if a live value was removed.
    fn delete<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, bool>;

    /// Replaces the value under `key` with `new` (or removes it, for `None`) only if it
    /// currently equals `expected`; `true` if it did. Atomic.
    fn compare_and_swap<'a>(
        &'a self,
        ns: Namespace,
        key: &'a str,
        expected: &'a [u8],
        new: Option<Vec<u8>>,
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, bool>;
}

impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    fn get<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        (**self).get(ns, key)
    }
    fn put<'a>(&'a self, ns: Namespace, key: &'a str, value: Vec<u8>, ttl: Option<Duration>) -> StoreFuture<'a, ()> {
        (**self).put(ns, key, value, ttl)
    }
    fn insert_if_absent<'a>(
        &'a self,
        ns: Namespace,
        key: &'a str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, bool> {
        (**self).insert_if_absent(ns, key, value, ttl)
    }
    fn take<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        (**self).take(ns, key)
    }
    fn delete<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, bool> {
        (**self).delete(ns, key)
    }
    fn compare_and_swap<'a>(
        &'a self,
        ns: Namespace,
        key: &'a str,
        expected: &'a [u8],
        new: Option<Vec<u8>>,
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, bool> {
        (**self).compare_and_swap(ns, key, expected, new, ttl)
    }
}

/// A store operation that failed. The message never contains keys or values.
#[derive(Debug, Clone, thiserror::Error)]
#[error("store {kind}: {message}")]
pub struct StoreError {
    kind: StoreErrorKind,
    message: String,
}

/// What kind of failure a [`StoreError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The store cannot be reached, or did not answer in time: retry later (503).
    Unavailable,
    /// The store answered with something unusable (corrupt data, schema mismatch).
    Corrupt,
}

impl fmt::Display for StoreErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unavailable => "unavailable",
            Self::Corrupt => "corrupt",
        })
    }
}

impl StoreError {
    /// A store that cannot be reached or timed out.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self { kind: StoreErrorKind::Unavailable, message: message.into() }
    }

    /// A store that returned unusable data.
    pub fn corrupt(message: impl Into<String>) -> Self {
        Self { kind: StoreErrorKind::Corrupt, message: message.into() }
    }

    /// The kind of failure.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }
}
