//! The `Store` contract, run against every implementation: lifetimes, and the atomicity of
//! `take`, `insert_if_absent` and `compare_and_swap` under concurrency; persistence for
//! `SqliteStore`; for `RedisStore` (a private `redis-server`, tests/support/redis.rs) also
//! atomicity across two connections, Redis's own expiry, key prefixes, an outage and the
//! recovery after it, and credentials kept out of `Debug` and errors.

mod support;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tower_mcp_auth::clock::ManualClock;
use tower_mcp_auth::store::{MemoryStore, Namespace, SqliteStore, Store};

const NS: Namespace = Namespace::new("test");
const OTHER: Namespace = Namespace::new("other");

/// Every store, on `clock`; `test` names the Redis key prefix.
async fn stores(
    clock: &Arc<ManualClock>,
    test: &str,
) -> Vec<(&'static str, Arc<dyn Store>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open_with_clock(dir.path().join("s.db"), clock.clone()).unwrap();
    let mut all: Vec<(&'static str, Arc<dyn Store>, Option<tempfile::TempDir>)> = vec![
        ("memory", Arc::new(MemoryStore::with_clock(clock.clone())), None),
        ("sqlite", Arc::new(sqlite), Some(dir)),
    ];
    #[cfg(feature = "redis")]
    all.push(("redis", Arc::new(redis_tests::store(clock, test).await), None));
    #[cfg(not(feature = "redis"))]
    let _ = test;
    all
}

#[tokio::test]
async fn basic_operations_and_namespaces() {
    let clock = Arc::new(ManualClock::new(1_800_000_000));
    for (name, s, _dir) in stores(&clock, "basic").await {
        assert_eq!(s.get(NS, "k").await.unwrap(), None, "{name}");
        s.put(NS, "k", b"v1".to_vec(), None).await.unwrap();
        assert_eq!(s.get(NS, "k").await.unwrap().as_deref(), Some(&b"v1"[..]));
        assert_eq!(s.get(OTHER, "k").await.unwrap(), None, "{name}: namespaces are separate");
        s.put(NS, "k", b"v2".to_vec(), None).await.unwrap();
        assert_eq!(s.get(NS, "k").await.unwrap().as_deref(), Some(&b"v2"[..]));
        assert!(!s.insert_if_absent(NS, "k", b"x".to_vec(), None).await.unwrap());
        assert!(s.insert_if_absent(NS, "k2", b"x".to_vec(), None).await.unwrap());
        assert!(s.compare_and_swap(NS, "k", b"v2", Some(b"v3".to_vec()), None).await.unwrap());
        assert!(!s.compare_and_swap(NS, "k", b"v2", Some(b"v4".to_vec()), None).await.unwrap());
        assert!(s.compare_and_swap(NS, "k", b"v3", None, None).await.unwrap(), "{name}: CAS to delete");
        assert_eq!(s.get(NS, "k").await.unwrap(), None);
        assert_eq!(s.take(NS, "k2").await.unwrap().as_deref(), Some(&b"x"[..]));
        assert_eq!(s.take(NS, "k2").await.unwrap(), None);
        s.put(NS, "d", b"1".to_vec(), None).await.unwrap();
        assert!(s.delete(NS, "d").await.unwrap());
        assert!(!s.delete(NS, "d").await.unwrap());
    }
}

#[tokio::test]
async fn lifetimes() {
    let clock = Arc::new(ManualClock::new(1_800_000_000));
    for (name, s, _dir) in stores(&clock, "lifetimes").await {
        s.put(NS, "t", b"v".to_vec(), Some(Duration::from_secs(60))).await.unwrap();
        s.put(NS, "forever", b"v".to_vec(), None).await.unwrap();
        clock.advance(Duration::from_secs(59));
        assert!(s.get(NS, "t").await.unwrap().is_some(), "{name}");
        clock.advance(Duration::from_secs(2));
        assert_eq!(s.get(NS, "t").await.unwrap(), None, "{name}: expired");
        assert_eq!(s.take(NS, "t").await.unwrap(), None, "{name}: expired take");
        assert!(!s.delete(NS, "t").await.unwrap());
        assert!(s.insert_if_absent(NS, "t", b"new".to_vec(), Some(Duration::from_secs(5))).await.unwrap(), "{name}");
        assert!(!s.compare_and_swap(NS, "gone", b"v", None, None).await.unwrap());
        assert!(s.get(NS, "forever").await.unwrap().is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_use_under_concurrency() {
    let clock = Arc::new(ManualClock::new(1_800_000_000));
    for (name, s, _dir) in stores(&clock, "single-use").await {
        s.put(NS, "code", b"grant".to_vec(), Some(Duration::from_secs(60))).await.unwrap();
        let mut set = JoinSet::new();
        for _ in 0..100 {
            let s = s.clone();
            set.spawn(async move { s.take(NS, "code").await.unwrap().is_some() });
        }
        let mut winners = 0;
        while let Some(r) = set.join_next().await {
            winners += usize::from(r.unwrap());
        }
        assert_eq!(winners, 1, "{name}: take");

        let mut set = JoinSet::new();
        for i in 0..100u8 {
            let s = s.clone();
            set.spawn(async move { s.insert_if_absent(NS, "jti", vec![i], None).await.unwrap() });
        }
        let mut inserted = 0;
        while let Some(r) = set.join_next().await {
            inserted += usize::from(r.unwrap());
        }
        assert_eq!(inserted, 1, "{name}: insert_if_absent");

        s.put(NS, "rt", b"gen-0".to_vec(), None).await.unwrap();
        let mut set = JoinSet::new();
        for i in 0..100 {
            let s = s.clone();
            set.spawn(async move {
                s.compare_and_swap(NS, "rt", b"gen-0", Some(format!("gen-1-{i}").into_bytes()), None).await.unwrap()
            });
        }
        let mut swapped = 0;
        while let Some(r) = set.join_next().await {
            swapped += usize::from(r.unwrap());
        }
        assert_eq!(swapped, 1, "{name}: compare_and_swap");
    }
}

#[tokio::test]
async fn sqlite_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.db");
    {
        let s = SqliteStore::open(&path).unwrap();
        s.put(NS, "client", b"registered".to_vec(), None).await.unwrap();
        s.put(NS, "code", b"once".to_vec(), Some(Duration::from_secs(600))).await.unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.get(NS, "client").await.unwrap().as_deref(), Some(&b"registered"[..]));
    assert_eq!(s.take(NS, "code").await.unwrap().as_deref(), Some(&b"once"[..]));
    drop(s);
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.take(NS, "code").await.unwrap(), None, "a taken value stays taken across restarts");
}

#[cfg(feature = "redis")]
mod redis_tests {
    //! `RedisStore` beyond the shared contract.

    use std::future::Future;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use tokio::task::JoinSet;
    use tower_mcp_auth::clock::{ManualClock, SystemClock};
    use tower_mcp_auth::store::{Namespace, RedisStore, Store, StoreError, StoreErrorKind};

    use super::support::redis::{RedisServer, prefix};
    use super::{NS, OTHER};

    /// A store on the shared server with a prefix of its own.
    pub async fn store(clock: &Arc<ManualClock>, test: &str) -> RedisStore {
        RedisStore::connect_with_clock(&RedisServer::shared().url(), clock.clone())
            .await
            .unwrap_or_else(|e| {
                panic!("connecting to {}: {e}\n{}", RedisServer::shared().url(), RedisServer::shared().log())
            })
            .with_prefix(prefix(test))
    }

    /// Redis's own view of `key` under `store`'s prefix: its `PTTL` (-2: absent, -1: no expiry).
    fn pttl(server: &RedisServer, store: &RedisStore, ns: Namespace, key: &str) -> i64 {
        let full = format!("{}{ns}:{key}", store.prefix());
        redis::cmd("PTTL").arg(full).query(&mut server.raw()).unwrap()
    }

    /// Runs 100 copies of `op` at once, alternately on `a` and `b`; how many returned `true`.
    async fn race<F, Fut>(a: &Arc<RedisStore>, b: &Arc<RedisStore>, op: F) -> usize
    where
        F: Fn(Arc<RedisStore>, usize) -> Fut,
        Fut: Future<Output = bool> + Send + 'static,
    {
        let mut set = JoinSet::new();
        for i in 0..100 {
            set.spawn(op(if i % 2 == 0 { a.clone() } else { b.clone() }, i));
        }
        let mut wins = 0;
        while let Some(r) = set.join_next().await {
            wins += usize::from(r.unwrap());
        }
        wins
    }

    /// Two `RedisStore`s are two connections, as two instances of the server would have: single
    /// use holds across them (Redis runs each operation as one command or script).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn single_use_across_two_instances() {
        let clock = Arc::new(ManualClock::new(1_800_000_000));
        let a = Arc::new(store(&clock, "two-instances").await);
        let b_store = RedisStore::connect_with_clock(&RedisServer::shared().url(), clock.clone()).await.unwrap();
        let b = Arc::new(b_store.with_prefix(a.prefix()));
        for round in 0..3 {
            let code = format!("code-{round}");
            a.put(NS, &code, b"grant".to_vec(), Some(Duration::from_secs(60))).await.unwrap();
            let c = code.clone();
            let winners = race(&a, &b, move |s, _| {
                let c = c.clone();
                async move { s.take(NS, &c).await.unwrap().is_some() }
            })
            .await;
            assert_eq!(winners, 1, "take, round {round}");
            assert_eq!(b.get(NS, &code).await.unwrap(), None);

            let jti = format!("jti-{round}");
            let j = jti.clone();
            let inserted = race(&a, &b, move |s, i| {
                let j = j.clone();
                async move { s.insert_if_absent(NS, &j, vec![i as u8], Some(Duration::from_secs(60))).await.unwrap() }
            })
            .await;
            assert_eq!(inserted, 1, "insert_if_absent, round {round}");

            let rt = format!("rt-{round}");
            a.put(NS, &rt, b"gen-0".to_vec(), None).await.unwrap();
            let r = rt.clone();
            let swapped = race(&a, &b, move |s, i| {
                let r = r.clone();
                async move {
                    s.compare_and_swap(NS, &r, b"gen-0", Some(format!("gen-1-{i}").into_bytes()), None).await.unwrap()
                }
            })
            .await;
            assert_eq!(swapped, 1, "compare_and_swap, round {round}");
            let now = b.get(NS, &rt).await.unwrap().unwrap();
            assert!(now.starts_with(b"gen-1-"), "the one winner's value is stored");
        }
    }

    /// Lifetimes are Redis's own (`PX`, so Redis removes expired keys) and also follow the
    /// injected clock, checked inside every operation.
    #[tokio::test]
    async fn lifetimes_are_native_and_follow_the_clock() {
        let server = RedisServer::shared();
        let clock = Arc::new(ManualClock::new(1_800_000_000));
        let s = store(&clock, "native-ttl").await;

        s.put(NS, "t", b"v".to_vec(), Some(Duration::from_secs(60))).await.unwrap();
        let t = pttl(server, &s, NS, "t");
        assert!((59_000..=60_000).contains(&t), "PX set by put: {t}");
        s.put(NS, "forever", b"v".to_vec(), None).await.unwrap();
        assert_eq!(pttl(server, &s, NS, "forever"), -1, "no lifetime, no PX");
        s.put(NS, "t2", b"v".to_vec(), Some(Duration::from_secs(60))).await.unwrap();
        s.put(NS, "t2", b"v".to_vec(), None).await.unwrap();
        assert_eq!(pttl(server, &s, NS, "t2"), -1, "put without lifetime clears the old one");

        // The clock passes the lifetime; Redis still holds the key, every operation ignores it.
        clock.advance(Duration::from_secs(61));
        assert!(pttl(server, &s, NS, "t") > 0, "Redis's clock did not move");
        assert_eq!(s.get(NS, "t").await.unwrap(), None);
        assert!(!s.compare_and_swap(NS, "t", b"v", Some(b"w".to_vec()), None).await.unwrap());
        assert!(!s.delete(NS, "t").await.unwrap(), "deleting an expired entry removes nothing live");
        s.put(NS, "t", b"v".to_vec(), Some(Duration::from_secs(60))).await.unwrap();
        clock.advance(Duration::from_secs(61));
        assert_eq!(s.take(NS, "t").await.unwrap(), None, "take of an expired entry");
        s.put(NS, "t", b"v".to_vec(), Some(Duration::from_secs(60))).await.unwrap();
        clock.advance(Duration::from_secs(61));
        assert!(s.insert_if_absent(NS, "t", b"new".to_vec(), Some(Duration::from_secs(5))).await.unwrap());
        let t = pttl(server, &s, NS, "t");
        assert!((1..=5_000).contains(&t), "PX set by insert_if_absent: {t}");
        assert!(s.get(NS, "forever").await.unwrap().is_some());

        // compare_and_swap sets the new lifetime, or none.
        assert!(
            s.compare_and_swap(NS, "t", b"new", Some(b"v2".to_vec()), Some(Duration::from_secs(30))).await.unwrap()
        );
        let t = pttl(server, &s, NS, "t");
        assert!((25_000..=30_000).contains(&t), "PX set by compare_and_swap: {t}");
        clock.advance(Duration::from_secs(29));
        assert!(s.compare_and_swap(NS, "t", b"v2", Some(b"v3".to_vec()), None).await.unwrap());
        assert_eq!(pttl(server, &s, NS, "t"), -1, "compare_and_swap without lifetime clears PX");
        clock.advance(Duration::from_secs(3600));
        assert_eq!(s.get(NS, "t").await.unwrap().as_deref(), Some(&b"v3"[..]));
    }

    /// A key with a 1 s lifetime is gone from Redis itself after that second, while the
    /// (manual) clock of the store has not moved.
    #[tokio::test]
    async fn redis_removes_expired_keys() {
        let server = RedisServer::shared();
        let s = store(&Arc::new(ManualClock::new(1_800_000_000)), "expire").await;
        s.put(NS, "short", b"v".to_vec(), Some(Duration::from_secs(1))).await.unwrap();
        let t = pttl(server, &s, NS, "short");
        assert!((1..=1_000).contains(&t), "PX: {t}");
        let deadline = Instant::now() + Duration::from_secs(5);
        while pttl(server, &s, NS, "short") != -2 {
            assert!(Instant::now() < deadline, "Redis kept a key past its PX");
            // Polling Redis's own expiry, bounded by the deadline above.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(s.get(NS, "short").await.unwrap(), None);
    }

    /// Keys are `{prefix}{namespace}:{key}`; two prefixes are two separate stores on one Redis.
    #[tokio::test]
    async fn prefixes_keep_deployments_apart() {
        let server = RedisServer::shared();
        let clock = Arc::new(ManualClock::new(1_800_000_000));
        let a = store(&clock, "deploy-a").await;
        let b = store(&clock, "deploy-b").await;
        a.put(NS, "k", b"a".to_vec(), None).await.unwrap();
        b.put(NS, "k", b"b".to_vec(), None).await.unwrap();
        assert_eq!(a.get(NS, "k").await.unwrap().as_deref(), Some(&b"a"[..]));
        assert_eq!(b.get(NS, "k").await.unwrap().as_deref(), Some(&b"b"[..]));
        assert!(a.take(NS, "k").await.unwrap().is_some());
        assert_eq!(b.get(NS, "k").await.unwrap().as_deref(), Some(&b"b"[..]), "b is untouched");

        let full = format!("{}test:k", b.prefix());
        let exists: i64 = redis::cmd("EXISTS").arg(&full).query(&mut server.raw()).unwrap();
        assert_eq!(exists, 1, "key layout {full}");

        let plain = RedisStore::connect(&server.url()).await.unwrap();
        assert_eq!(plain.prefix(), "tower-mcp-auth:");

        // dump: this prefix only, live entries only, namespaces and keys split back out.
        b.put(OTHER, "x:y", b"colon in key".to_vec(), None).await.unwrap();
        b.put(NS, "soon", b"v".to_vec(), Some(Duration::from_secs(10))).await.unwrap();
        clock.advance(Duration::from_secs(11));
        let mut dump = b.dump().await.unwrap();
        dump.sort();
        assert_eq!(
            dump,
            vec![("other".into(), "x:y".into(), b"colon in key".to_vec()), ("test".into(), "k".into(), b"b".to_vec())]
        );
        // A prefix with glob characters matches itself only.
        let star = store(&clock, "glob").await;
        let star = star.clone().with_prefix(format!("{}*", star.prefix()));
        assert!(star.dump().await.unwrap().is_empty());
    }

    /// A value Redis holds under a store key that this store did not write (no expiry header,
    /// another type) is reported as `Corrupt` by every operation, never taken for absent.
    #[tokio::test]
    async fn foreign_values_are_corrupt() {
        let server = RedisServer::shared();
        let s = store(&Arc::new(ManualClock::new(1_800_000_000)), "foreign").await;
        let mut raw = server.raw();
        let () = redis::cmd("SET").arg(format!("{}test:short", s.prefix())).arg("abc").query(&mut raw).unwrap();
        let _: i64 = redis::cmd("LPUSH").arg(format!("{}test:list", s.prefix())).arg("x").query(&mut raw).unwrap();
        for key in ["short", "list"] {
            let corrupt = |r: Result<(), StoreError>| {
                let err = r.expect_err(key);
                assert_eq!(err.kind(), StoreErrorKind::Corrupt, "{key}: {err}");
            };
            corrupt(s.get(NS, key).await.map(drop));
            corrupt(s.insert_if_absent(NS, key, b"v".to_vec(), None).await.map(drop));
            corrupt(s.compare_and_swap(NS, key, b"abc", None, None).await.map(drop));
        }
        assert_eq!(s.dump().await.unwrap_err().kind(), StoreErrorKind::Corrupt, "dump");
        assert_eq!(s.take(NS, "short").await.unwrap_err().kind(), StoreErrorKind::Corrupt, "take");
    }

    /// While Redis is down every operation fails as `Unavailable` within about two seconds;
    /// once it is back on the same port, the same `RedisStore` works again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outage_and_recovery() {
        let server = RedisServer::start(&[]);
        let port = server.port();
        let s = RedisStore::connect(&server.url()).await.unwrap().with_prefix(prefix("outage"));
        s.put(NS, "k", b"v".to_vec(), None).await.unwrap();
        server.stop();

        async fn unavailable<T: std::fmt::Debug>(what: &str, op: impl Future<Output = Result<T, StoreError>>) {
            let start = Instant::now();
            let result = tokio::time::timeout(Duration::from_secs(10), op).await.expect("no answer at all");
            let elapsed = start.elapsed();
            let err = result.expect_err(what);
            assert_eq!(err.kind(), StoreErrorKind::Unavailable, "{what}: {err}");
            assert!(elapsed < Duration::from_millis(2_500), "{what} took {elapsed:?}");
        }
        for _ in 0..2 {
            unavailable("get", s.get(NS, "k")).await;
            unavailable("put", s.put(NS, "k", b"w".to_vec(), None)).await;
            unavailable("insert_if_absent", s.insert_if_absent(NS, "n", b"w".to_vec(), None)).await;
            unavailable("take", s.take(NS, "k")).await;
            unavailable("delete", s.delete(NS, "k")).await;
            unavailable("compare_and_swap", s.compare_and_swap(NS, "k", b"v", None, None)).await;
            unavailable("dump", s.dump()).await;
        }

        let server = RedisServer::start_on(port, &[]);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match s.put(NS, "k", b"back".to_vec(), None).await {
                Ok(()) => break,
                Err(e) => {
                    assert_eq!(e.kind(), StoreErrorKind::Unavailable);
                    assert!(Instant::now() < deadline, "no recovery within 15 s: {e}\n{}", server.log());
                    // Polling the reconnection, bounded by the deadline above.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        // The scripts are loaded again into the new server (it starts without them).
        assert!(s.insert_if_absent(NS, "n", b"1".to_vec(), Some(Duration::from_secs(60))).await.unwrap());
        assert!(s.compare_and_swap(NS, "k", b"back", Some(b"again".to_vec()), None).await.unwrap());
        assert_eq!(s.take(NS, "k").await.unwrap().as_deref(), Some(&b"again"[..]));
    }

    /// A Redis that accepts connections but does not answer (`CLIENT PAUSE`): operations fail
    /// as `Unavailable` within about two seconds, and work again once it answers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unresponsive_redis_times_out() {
        let server = RedisServer::start(&[]);
        let s = RedisStore::connect(&server.url()).await.unwrap().with_prefix(prefix("paused"));
        s.put(NS, "k", b"v".to_vec(), None).await.unwrap();
        let () = redis::cmd("CLIENT").arg("PAUSE").arg(4000).arg("ALL").query(&mut server.raw()).unwrap();
        let paused = Instant::now();
        for what in ["get", "take"] {
            let start = Instant::now();
            let result = tokio::time::timeout(Duration::from_secs(10), async {
                if what == "get" { s.get(NS, "k").await } else { s.take(NS, "k").await }
            })
            .await
            .expect("no answer at all");
            let err = result.expect_err(what);
            assert_eq!(err.kind(), StoreErrorKind::Unavailable, "{what}: {err}");
            assert!(start.elapsed() < Duration::from_millis(2_500), "{what} took {:?}", start.elapsed());
        }
        assert!(paused.elapsed() < Duration::from_secs(4), "the checks above ran during the pause");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match s.get(NS, "k").await {
                Ok(v) => {
                    // A `take` that timed out may still have run once the pause ended.
                    assert!(v.is_none() || v.as_deref() == Some(&b"v"[..]));
                    break;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "no recovery within 15 s: {e}");
                    // Polling the end of the pause, bounded by the deadline above.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        s.put(NS, "k", b"w".to_vec(), None).await.unwrap();
        assert_eq!(s.get(NS, "k").await.unwrap().as_deref(), Some(&b"w"[..]));
    }

    /// Nothing listens: `connect` fails as `Unavailable`, promptly.
    #[tokio::test]
    async fn connect_to_nothing_fails_promptly() {
        let port = super::support::process::free_port();
        let start = Instant::now();
        let err = RedisStore::connect(&format!("redis://127.0.0.1:{port}/")).await.unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Unavailable, "{err}");
        assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
        let err = RedisStore::connect("postgres://db/").await.unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Unavailable, "{err}");
    }

    /// A password in the URL authenticates, and appears neither in `Debug` nor in errors.
    #[tokio::test]
    async fn password_is_used_and_never_shown() {
        let secret = "s3cret-pw-4711";
        let server = RedisServer::start(&["--requirepass", secret]);
        let url = format!("redis://:{secret}@127.0.0.1:{}/", server.port());
        let s = RedisStore::connect_with_clock(&url, SystemClock).await.unwrap();
        s.put(NS, "k", b"v".to_vec(), None).await.unwrap();
        assert_eq!(s.get(NS, "k").await.unwrap().as_deref(), Some(&b"v"[..]));
        let debug = format!("{s:?}");
        assert!(!debug.contains(secret) && debug.contains("REDACTED"), "{debug}");

        let wrong = format!("redis://default:wrong-pw-0815@127.0.0.1:{}/", server.port());
        let err = RedisStore::connect(&wrong).await.unwrap_err();
        assert!(!err.to_string().contains("wrong-pw-0815"), "{err}");
        assert!(!format!("{err:?}").contains("wrong-pw-0815"), "{err:?}");
        let err = RedisStore::connect(&server.url()).await.unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Unavailable, "no password: {err}");
    }
}
