use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{Namespace, Store, StoreError, StoreFuture};
use crate::clock::{Clock, SharedClock};

/// Embedded, persistent storage in one SQLite file (WAL mode): registered clients, consents,
/// refresh tokens and revocations survive restarts. Lifetimes are kept as wall-clock expiry
/// times, so they also run while the process is down.
///
/// Operations run on Tokio's blocking pool; each is one statement or one `IMMEDIATE`
/// transaction, so `take`, `insert_if_absent` and `compare_and_swap` stay atomic even when
/// several processes open the same file.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    clock: SharedClock,
    writes: Arc<AtomicU64>,
    path: Arc<str>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish()
    }
}

const PURGE_EVERY: u64 = 1024;

fn db_err(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) =>
        {
            StoreError::unavailable("database busy")
        }
        rusqlite::Error::SqliteFailure(f, _) => StoreError::unavailable(format!("sqlite error {:?}", f.code)),
        _ => StoreError::corrupt("unexpected sqlite result"),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with_clock(path, crate::clock::SystemClock)
    }

    /// Opens the database at `path` with lifetimes on `clock` (for tests).
    pub fn open_with_clock<C: Clock>(path: impl AsRef<Path>, clock: C) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let conn = Connection::open(path).map_err(db_err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(db_err)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS kv (
                 ns TEXT NOT NULL,
                 key TEXT NOT NULL,
                 value BLOB NOT NULL,
                 expires_at INTEGER,
                 PRIMARY KEY (ns, key)
             ) WITHOUT ROWID;
             CREATE INDEX IF NOT EXISTS kv_expiry ON kv (expires_at) WHERE expires_at IS NOT NULL;",
        )
        .map_err(db_err)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            clock: Arc::new(clock),
            writes: Arc::new(AtomicU64::new(0)),
            path: path.to_string_lossy().into(),
        })
    }

    /// An in-memory SQLite database (for tests of the SQL paths).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::open(":memory:")
    }

    /// Every live entry as `(namespace, key, value)`, for tests that scan for secrets at rest.
    pub async fn dump(&self) -> Result<Vec<(String, String, Vec<u8>)>, StoreError> {
        self.run(|conn, now| {
            let mut stmt = conn
                .prepare("SELECT ns, key, value FROM kv WHERE expires_at IS NULL OR expires_at > ?1")
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(db_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db_err)?;
            Ok(rows)
        })
        .await
    }

    fn now_millis(&self) -> i64 {
        self.clock.unix_time().saturating_mul(1000)
    }

    fn expiry(&self, ttl: Option<Duration>) -> Option<i64> {
        ttl.map(|t| self.now_millis().saturating_add(i64::try_from(t.as_millis()).unwrap_or(i64::MAX)))
    }

    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, i64) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        let now = self.now_millis();
        tokio::task::spawn_blocking(move || {
            // A panic inside a statement leaves no partial transaction behind (rusqlite rolls
            // back on drop), so a poisoned lock still guards a consistent connection.
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard, now)
        })
        .await
        .map_err(|_| StoreError::unavailable("sqlite worker failed"))?
    }

    fn note_write(&self) -> bool {
        self.writes.fetch_add(1, Ordering::Relaxed) % PURGE_EVERY == PURGE_EVERY - 1
    }
}

fn purge(conn: &Connection, now: i64) -> Result<(), StoreError> {
    conn.execute("DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?1", params![now]).map_err(db_err)?;
    Ok(())
}

impl Store for SqliteStore {
    fn get<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        let key = key.to_owned();
        Box::pin(self.run(move |conn, now| {
            conn.query_row(
                "SELECT value FROM kv WHERE ns = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)",
                params![ns.as_str(), key, now],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)
        }))
    }

    fn put<'a>(&'a self, ns: Namespace, key: &'a str, value: Vec<u8>, ttl: Option<Duration>) -> StoreFuture<'a, ()> {
        let (key, expires, purge_now) = (key.to_owned(), self.expiry(ttl), self.note_write());
        Box::pin(self.run(move |conn, now| {
            conn.execute(
                "INSERT INTO kv (ns, key, value, expires_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                params![ns.as_str(), key, value, expires],
            )
            .map_err(db_err)?;
            if purge_now {
                purge(conn, now)?;
            }
            Ok(())
        }))
    }

    fn insert_if_absent<'a>(
        &'a self,
        ns: Namespace,
        key: &'a str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, bool> {
        let (key, expires) = (key.to_owned(), self.expiry(ttl));
        Box::pin(self.run(move |conn, now| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
            tx.execute(
                "DELETE FROM kv WHERE ns = ?1 AND key = ?2 AND expires_at IS NOT NULL AND expires_at <= ?3",
                params![ns.as_str(), key, now],
            )
            .map_err(db_err)?;
            let inserted = tx
                .execute(
                    "INSERT OR IGNORE INTO kv (ns, key, value, expires_at) VALUES (?1, ?2, ?3, ?4)",
                    params![ns.as_str(), key, value, expires],
                )
                .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            Ok(inserted == 1)
        }))
    }

    fn take<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        let key = key.to_owned();
        Box::pin(self.run(move |conn, now| {
            let row: Option<(Vec<u8>, Option<i64>)> = conn
                .query_row(
                    "DELETE FROM kv WHERE ns = ?1 AND key = ?2 RETURNING value, expires_at",
                    params![ns.as_str(), key],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db_err)?;
            Ok(row.filter(|(_, exp)| exp.is_none_or(|e| e > now)).map(|(v, _)| v))
        }))
    }

    fn delete<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, bool> {
        let key = key.to_owned();
        Box::pin(self.run(move |conn, now| {
            let row: Option<Option<i64>> = conn
                .query_row(
                    "DELETE FROM kv WHERE ns = ?1 AND key = ?2 RETURNING expires_at",
                    params![ns.as_str(), key],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?;
            Ok(row.is_some_and(|exp| exp.is_none_or(|e| e > now)))
        }))
    }

    fn compare_and_swap<'a>(
        &'a self,
        ns: Namespace,
        key: &'a str,
        expected: &'a [u8],
        new: Option<Vec<u8>>,
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, bool> {
        let (key, expected, expires) = (key.to_owned(), expected.to_vec(), self.expiry(ttl));
        Box::pin(self.run(move |conn, now| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
            let current: Option<Vec<u8>> = tx
                .query_row(
                    "SELECT value FROM kv WHERE ns = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)",
                    params![ns.as_str(), key, now],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?;
            if current.as_deref() != Some(expected.as_slice()) {
                return Ok(false);
            }
            match new {
                Some(value) => tx.execute(
                    "UPDATE kv SET value = ?3, expires_at = ?4 WHERE ns = ?1 AND key = ?2",
                    params![ns.as_str(), key, value, expires],
                ),
                None => tx.execute("DELETE FROM kv WHERE ns = ?1 AND key = ?2", params![ns.as_str(), key]),
            }
            .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            Ok(true)
        }))
    }
}
