//! The `Store` contract, run against every implementation: lifetimes, and the atomicity of
//! `take`, `insert_if_absent` and `compare_and_swap` under concurrency; persistence for
//! `SqliteStore`.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tower_mcp_auth::clock::ManualClock;
use tower_mcp_auth::store::{MemoryStore, Namespace, SqliteStore, Store};

const NS: Namespace = Namespace::new("test");
const OTHER: Namespace = Namespace::new("other");

fn stores(clock: &Arc<ManualClock>) -> Vec<(&'static str, Arc<dyn Store>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open_with_clock(dir.path().join("s.db"), clock.clone()).unwrap();
    vec![("memory", Arc::new(MemoryStore::with_clock(clock.clone())), None), ("sqlite", Arc::new(sqlite), Some(dir))]
}

#[tokio::test]
async fn basic_operations_and_namespaces() {
    let clock = Arc::new(ManualClock::new(1_800_000_000));
    for (name, s, _dir) in stores(&clock) {
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
    for (name, s, _dir) in stores(&clock) {
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
    for (name, s, _dir) in stores(&clock) {
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
