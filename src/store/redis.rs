use std::fmt;
use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, ConnectionAddr, ErrorKind, RedisError, Script};

use super::{Namespace, Store, StoreError, StoreFuture};
use crate::clock::{Clock, SharedClock};

/// Shared storage in Redis (6.2 or newer, or a compatible server such as Valkey), for several
/// instances of the authorization server behind a load balancer.
///
/// Every operation is one command or one Lua script, so [`take`](Store::take),
/// [`insert_if_absent`](Store::insert_if_absent) and [`compare_and_swap`](Store::compare_and_swap)
/// stay atomic across processes. Lifetimes are kept twice: as Redis's own expiry (`PX`), so
/// expired entries are removed by Redis, and as an expiry time on the injected [`Clock`]
/// stored with the value, which every operation checks (on the server, inside the scripts), so
/// that tests can move time with a `ManualClock`. On the system clock the two agree (the stored
/// one is up to a second earlier).
///
/// Keys are `{prefix}{namespace}:{key}`, with the prefix `tower-mcp-auth:` unless
/// [`with_prefix`](Self::with_prefix) sets another, so that several deployments can share one
/// Redis.
///
/// The connection is re-established automatically after Redis restarts or the network fails.
/// While Redis cannot be reached, every operation fails with
/// [`StoreErrorKind::Unavailable`](super::StoreErrorKind::Unavailable) within two seconds. An
/// operation that timed out may still have been carried out (a `take` that consumed the
/// value, say): callers see a failure either way, so single use still holds.
///
/// ```no_run
/// # async fn run() -> Result<(), tower_mcp_auth::store::StoreError> {
/// use tower_mcp_auth::store::RedisStore;
///
/// let store = RedisStore::connect("redis://:password@redis.internal:6379/0").await?.with_prefix("mcp-prod:");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    clock: SharedClock,
    prefix: Arc<str>,
    /// The URL with its password replaced, for `Debug` and error messages.
    target: Arc<str>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore").field("url", &self.target).field("prefix", &self.prefix).finish()
    }
}

/// The key prefix unless [`RedisStore::with_prefix`] sets another.
const DEFAULT_PREFIX: &str = "tower-mcp-auth:";
/// Time for one TCP (and TLS) connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Time for Redis to answer one command.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Deadline of one whole operation, reconnection attempts included.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest `PX` sent: far beyond any lifetime used here, and small enough that Redis can
/// add it to its clock without overflowing.
const MAX_PX: u64 = 1 << 50;
/// Bytes of the expiry header in front of every stored value.
const HEADER: usize = 8;

/// Lua helper shared by the scripts: the expiry time (ms) in a stored entry's header, or `nil`
/// if the entry is too short to have one.
const EXPIRY_FN: &str = r"
local function expiry(v)
  if #v < 8 then return nil end
  local e = 0
  for i = 1, 8 do e = e * 256 + string.byte(v, i) end
  return e
end
local function live(v, now)
  if not v then return false end
  local e = expiry(v)
  if e == nil then return redis.error_reply('CORRUPT stored entry without header') end
  return e == 0 or e > now
end
local function store(key, entry, px)
  if px ~= '0' then redis.call('SET', key, entry, 'PX', px) else redis.call('SET', key, entry) end
end
";

/// KEYS: key. ARGV: now (ms), entry, px ('0' = none; passed on as given, since Lua numbers
/// would reach Redis in floating-point notation). Returns 1 if stored.
static INSERT_IF_ABSENT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{EXPIRY_FN}
local alive = live(redis.call('GET', KEYS[1]), tonumber(ARGV[1]))
if type(alive) == 'table' then return alive end
if alive then return 0 end
store(KEYS[1], ARGV[2], ARGV[3])
return 1"
    ))
});

/// KEYS: key. ARGV: now (ms), expected value, '1' to store / '0' to delete, entry, px (0 = none).
/// Returns 1 if swapped.
static COMPARE_AND_SWAP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{EXPIRY_FN}
local v = redis.call('GET', KEYS[1])
local alive = live(v, tonumber(ARGV[1]))
if type(alive) == 'table' then return alive end
if not alive or string.sub(v, 9) ~= ARGV[2] then return 0 end
if ARGV[3] == '1' then store(KEYS[1], ARGV[4], ARGV[5]) else redis.call('DEL', KEYS[1]) end
return 1"
    ))
});

impl RedisStore {
    /// Connects to the Redis at `url` (`redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`, `rediss://`
    /// for TLS, `redis+unix:///PATH`); fails if it cannot be reached within a few seconds.
    ///
    /// For `rediss://`, rustls's aws-lc-rs provider is installed as the process-wide default if
    /// no default provider is installed yet.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with_clock(url, crate::clock::SystemClock).await
    }

    /// Connects to the Redis at `url` (see [`connect`](Self::connect)) with lifetimes on `clock`
    /// (for tests).
    pub async fn connect_with_clock<C: Clock>(url: &str, clock: C) -> Result<Self, StoreError> {
        let target: Arc<str> = redact(url).into();
        let client =
            Client::open(url).map_err(|e| StoreError::unavailable(format!("redis URL {target}: {}", describe(&e))))?;
        if matches!(client.get_connection_info().addr(), ConnectionAddr::TcpTls { .. }) {
            install_crypto_provider();
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conn = match tokio::time::timeout(OPERATION_TIMEOUT * 2, ConnectionManager::new_with_config(client, config))
            .await
        {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(StoreError::unavailable(format!("redis at {target}: {}", describe(&e)))),
            Err(_) => return Err(StoreError::unavailable(format!("redis at {target}: no answer in time"))),
        };
        // A server that wants a password accepts the connection but no command: check one.
        let mut ping = conn.clone();
        match tokio::time::timeout(OPERATION_TIMEOUT, redis::cmd("PING").query_async::<()>(&mut ping)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(StoreError::unavailable(format!("redis at {target}: {}", describe(&e)))),
            Err(_) => return Err(StoreError::unavailable(format!("redis at {target}: no answer in time"))),
        }
        Ok(Self { conn, clock: Arc::new(clock), prefix: DEFAULT_PREFIX.into(), target })
    }

    /// Puts every key under `prefix` instead of `tower-mcp-auth:` (one prefix per deployment
    /// sharing a Redis).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().into();
        self
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Every live entry under this store's prefix as `(namespace, key, value)`, for tests that
    /// scan for secrets at rest and for diagnostics. Walks the whole prefix with `SCAN`: not for
    /// request paths.
    pub async fn dump(&self) -> Result<Vec<(String, String, Vec<u8>)>, StoreError> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}*", glob_escape(&self.prefix));
        let now = self.now_millis();
        let mut cursor = 0u64;
        let mut entries = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .run(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(500)
                        .query_async(&mut conn),
                )
                .await?;
            if !keys.is_empty() {
                let values: Vec<Option<Vec<u8>>> =
                    self.run(redis::cmd("MGET").arg(&keys).query_async(&mut conn)).await?;
                for (full, value) in keys.into_iter().zip(values) {
                    let Some(value) = value.map(|v| decode(v, now)).transpose()?.flatten() else { continue };
                    let rest = full.strip_prefix(&*self.prefix).unwrap_or(&full);
                    let Some((ns, key)) = rest.split_once(':') else { continue };
                    entries.push((ns.to_owned(), key.to_owned(), value));
                }
            }
            if next == 0 {
                return Ok(entries);
            }
            cursor = next;
        }
    }

    fn key(&self, ns: Namespace, key: &str) -> String {
        format!("{}{}:{key}", self.prefix, ns.as_str())
    }

    fn now_millis(&self) -> u64 {
        u64::try_from(self.clock.unix_time().saturating_mul(1000)).unwrap_or(0)
    }

    /// The stored form of `value` (expiry header, then the value) and the `PX` to set (0: none).
    fn entry(&self, value: &[u8], ttl: Option<Duration>) -> (Vec<u8>, u64) {
        let ttl_ms = ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        // 0 means "no expiry", so a lifetime ending at the epoch is moved to 1 ms after it.
        let expiry = ttl_ms.map_or(0, |t| self.now_millis().saturating_add(t).max(1));
        let mut entry = Vec::with_capacity(HEADER + value.len());
        entry.extend_from_slice(&expiry.to_be_bytes());
        entry.extend_from_slice(value);
        (entry, ttl_ms.map_or(0, |t| t.clamp(1, MAX_PX)))
    }

    /// Runs one command under the operation deadline.
    async fn run<T>(&self, op: impl Future<Output = Result<T, RedisError>>) -> Result<T, StoreError> {
        match tokio::time::timeout(OPERATION_TIMEOUT, op).await {
            Ok(result) => result.map_err(|e| store_error(&e)),
            Err(_) => Err(StoreError::unavailable("redis did not answer in time")),
        }
    }

    /// `GETDEL`, then the value if it was alive.
    async fn get_del(&self, ns: Namespace, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut conn = self.conn.clone();
        let now = self.now_millis();
        let raw: Option<Vec<u8>> = self.run(redis::cmd("GETDEL").arg(self.key(ns, key)).query_async(&mut conn)).await?;
        Ok(raw.map(|v| decode(v, now)).transpose()?.flatten())
    }
}

/// The value in a stored entry if it is alive at `now`.
fn decode(mut raw: Vec<u8>, now: u64) -> Result<Option<Vec<u8>>, StoreError> {
    let Some(header) = raw.first_chunk::<HEADER>() else {
        return Err(StoreError::corrupt("redis entry without header"));
    };
    let expiry = u64::from_be_bytes(*header);
    if expiry != 0 && expiry <= now {
        return Ok(None);
    }
    Ok(Some(raw.split_off(HEADER)))
}

fn store_error(e: &RedisError) -> StoreError {
    match e.kind() {
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => StoreError::corrupt("unexpected redis reply"),
        _ if matches!(e.code(), Some("CORRUPT" | "WRONGTYPE")) => StoreError::corrupt("unexpected redis entry"),
        _ => StoreError::unavailable(format!("redis: {}", describe(e))),
    }
}

/// A short description of a Redis error: its kind or server code, never its detail (which
/// could quote a command's arguments).
fn describe(e: &RedisError) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    if e.is_connection_refusal() {
        return "connection refused".into();
    }
    if e.is_connection_dropped() {
        return "connection lost".into();
    }
    match e.code() {
        Some(code) => format!("server error {code}"),
        None => format!("{:?}", e.kind()),
    }
}

/// `url` with any password (userinfo or `pass=` query parameter) replaced.
fn redact(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else { return "<unparsable URL>".into() };
    if parsed.password().is_some() && parsed.set_password(Some("REDACTED")).is_err() {
        return "<URL with password>".into();
    }
    if parsed.query_pairs().any(|(k, _)| k == "pass") {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "pass" { "REDACTED".to_owned() } else { v.into_owned() };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.into()
}

/// Escapes the `SCAN MATCH` glob characters in `s`.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// redis-rs builds its TLS configuration on rustls's process-wide default provider, and rustls
/// panics when none is installed and more than one is compiled in.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: a default provider exists either way.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}

impl Store for RedisStore {
    fn get<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let now = self.now_millis();
            let raw: Option<Vec<u8>> =
                self.run(redis::cmd("GET").arg(self.key(ns, key)).query_async(&mut conn)).await?;
            Ok(raw.map(|v| decode(v, now)).transpose()?.flatten())
        })
    }

    fn put<'a>(&'a self, ns: Namespace, key: &'a str, value: Vec<u8>, ttl: Option<Duration>) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let (entry, px) = self.entry(&value, ttl);
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.key(ns, key)).arg(entry);
            if px > 0 {
                cmd.arg("PX").arg(px);
            }
            self.run(cmd.query_async::<()>(&mut conn)).await
        })
    }

    fn insert_if_absent<'a>(
        &'a self,
        ns: Namespace,
        key: &'a str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let (entry, px) = self.entry(&value, ttl);
            let mut call = INSERT_IF_ABSENT.key(self.key(ns, key));
            call.arg(self.now_millis()).arg(entry).arg(px);
            let inserted: i64 = self.run(call.invoke_async(&mut conn)).await?;
            Ok(inserted == 1)
        })
    }

    fn take<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(self.get_del(ns, key))
    }

    fn delete<'a>(&'a self, ns: Namespace, key: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move { Ok(self.get_del(ns, key).await?.is_some()) })
    }

    fn compare_and_swap<'a>(
        &'a self,
        ns: Namespace,
        key: &'a str,
        expected: &'a [u8],
        new: Option<Vec<u8>>,
        ttl: Option<Duration>,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let mut call = COMPARE_AND_SWAP.key(self.key(ns, key));
            call.arg(self.now_millis()).arg(expected);
            match &new {
                Some(value) => {
                    let (entry, px) = self.entry(value, ttl);
                    call.arg("1").arg(entry).arg(px);
                }
                None => {
                    call.arg("0").arg("").arg(0);
                }
            }
            let swapped: i64 = self.run(call.invoke_async(&mut conn)).await?;
            Ok(swapped == 1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("redis://:s3cret@db:6379/0"), "redis://:REDACTED@db:6379/0");
        assert_eq!(redact("rediss://app:s3cret@db/"), "rediss://app:REDACTED@db/");
        assert_eq!(redact("redis://db:6379"), "redis://db:6379");
        let unix = redact("redis+unix:///run/redis.sock?db=1&pass=s3cret");
        assert!(!unix.contains("s3cret") && unix.contains("db=1"), "{unix}");
        assert!(!redact("not a url s3cret").contains("s3cret"));
    }

    #[test]
    fn entries_carry_their_expiry() {
        assert_eq!(decode([&5u64.to_be_bytes()[..], b"v"].concat(), 4).unwrap(), Some(b"v".to_vec()));
        assert_eq!(decode([&5u64.to_be_bytes()[..], b"v"].concat(), 5).unwrap(), None);
        assert_eq!(decode([&0u64.to_be_bytes()[..], b""].concat(), u64::MAX).unwrap(), Some(Vec::new()));
        assert!(decode(b"short".to_vec(), 0).is_err());
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape(r"a*b?[c]\"), r"a\*b\?\[c\]\\");
    }
}
