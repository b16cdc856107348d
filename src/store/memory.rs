use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::{Namespace, Store, StoreError, StoreFuture};
use crate::clock::{Clock, SharedClock};

struct Entry {
    value: Vec<u8>,
    /// Monotonic expiry.
    expires_at: Option<Duration>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<(Namespace, String), Entry>,
    writes: u64,
}

/// A store in this process's memory: for tests and single-process development. **Everything
/// is lost on restart** (registered clients, consents, refresh tokens, revocations), so it is
/// not for production. Expired entries are purged as writes happen.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    clock: SharedClock,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore").field("entries", &self.len()).finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

/// Purge expired entries every this many writes.
const PURGE_EVERY: u64 = 1024;

impl MemoryStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(crate::clock::SystemClock)
    }

    /// An empty store whose lifetimes follow `clock` (for tests).
    pub fn with_clock<C: Clock>(clock: C) -> Self {
        Self { inner: Arc::new(Mutex::new(Inner::default())), clock: Arc::new(clock) }
    }

    /// Live entries (for tests and metrics).
    pub fn len(&self) -> usize {
        let now = self.clock.monotonic();
        self.lock().map.values().filter(|e| e.expires_at.is_none_or(|t| t > now)).count()
    }

    /// Whether no live entry exists.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every live entry as `(namespace, key, value)`, for tests that scan for secrets at rest.
    pub fn dump(&self) -> Vec<(Namespace, String, Vec<u8>)> {
        let now = self.clock.monotonic();
        self.lock()
            .map
            .iter()
            .filter(|(_, e)| e.expires_at.is_none_or(|t| t > now))
            .map(|((ns, k), e)| (*ns, k.clone(), e.value.clone()))
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map half-updated (every operation is
        // a single map call), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn expiry(&self, ttl: Option<Duration>) -> Option<Duration> {
        ttl.map(|t| self.clock.monotonic().saturating_add(t))
    }

    fn with<T>(&self, write: bool, f: impl FnOnce(&mut Inner, Duration) -> T) -> T {
        let now = self.clock.monotonic();
        let mut inner = self.lock();
        if write {
            inner.writes += 1;
            if inner.writes.is_multiple_of(PURGE_EVERY) {
                inner.map.retain(|_, e| e.expires_at.is_none_or(|t| t > now));
            }
        }
        f(&mut inner, now)
    }
}

fn live(entry: Option<&Entry>, now: Duration) -> Option<&Entry> {
    entry.filter(|e| e.expires_at.is_none_or(|t| t > now))
}

impl Store for MemoryStore {
    fn get<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        let v = self.with(false, |i, now| live(i.map.get(&(ns, key.to_owned())), now).map(|e| e.value.clone()));
        Box::pin(async move { Ok(v) })
    }

    fn put<'a>(&'a self, ns: Namespace, key: &'a str, value: Vec<u8>, ttl: Option<Duration>) -> StoreFuture<'a, ()> {
        let expires_at = self.expiry(ttl);
        self.with(true, |i, _| i.map.insert((ns, key.to_owned()), Entry { value, expires_at }));
        Box::pin(async { Ok(()) })
    }

    fn insert_if_absent<'a>(
        &'a self,
        ns: Namespace,
        key: &'a str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, bool> {
        let expires_at = self.expiry(ttl);
        let inserted = self.with(true, |i, now| {
            let k = (ns, key.to_owned());
            if live(i.map.get(&k), now).is_some() {
                false
            } else {
                i.map.insert(k, Entry { value, expires_at });
                true
            }
        });
        Box::pin(async move { Ok(inserted) })
    }

    fn take<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        let v = self.with(true, |i, now| {
            i.map.remove(&(ns, key.to_owned())).filter(|e| e.expires_at.is_none_or(|t| t > now)).map(|e| e.value)
        });
        Box::pin(async move { Ok(v) })
    }

    fn delete<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, bool> {
        let removed = self.with(true, |i, now| {
            i.map.remove(&(ns, key.to_owned())).is_some_and(|e| e.expires_at.is_none_or(|t| t > now))
        });
        Box::pin(async move { Ok(removed) })
    }

    fn compare_and_swap<'a>(
        &'a self,
        ns: Namespace,
        key: &'a str,
        expected: &'a [u8],
        new: Option<Vec<u8>>,
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, bool> {
        let expires_at = self.expiry(ttl);
        let swapped = self.with(true, |i, now| {
            let k = (ns, key.to_owned());
            if live(i.map.get(&k), now).is_none_or(|e| e.value != expected) {
                return false;
            }
            match new {
                Some(value) => i.map.insert(k, Entry { value, expires_at }),
                None => i.map.remove(&k),
            };
            true
        });
        Box::pin(async move { Ok::<_, StoreError>(swapped) })
    }
}
