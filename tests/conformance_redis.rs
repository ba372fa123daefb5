//! The conformance suite (feature `testing`) against Redis: one server, a three-master
//! Cluster and (feature `sentinel`) one server reached through Redis Sentinel, each plain and
//! cached, all started by the test on free loopback ports. Every check gets a store with a key
//! prefix of its own.
#![cfg(all(feature = "testing", feature = "cluster"))]
// Each race nests the layer's futures, the suite's gates and the store's own in one async block,
// and the Redis store's are among the deepest: the default limit of 128 nested layout queries
// is just reached (depending on the order rustc computes them in).
#![recursion_limit = "256"]

#[path = "support/redis_server.rs"]
mod redis_server;

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

#[cfg(feature = "sentinel")]
use redis_server::RedisSentinel;
use redis_server::{RedisCluster, RedisServer};
use tower_typed_sessions::{
    store::redis::{LocalCache, RedisStore},
    testing::Conformance,
};

fn prefix(counter: &AtomicUsize) -> String {
    format!("conformance{}:", counter.fetch_add(1, Ordering::Relaxed))
}

/// Runs `suite` once and checks that every race guarantee was raced at least 140 times.
async fn passes<St: tower_typed_sessions::Store<tower_typed_sessions::testing::Probe> + Clone>(
    label: &str,
    suite: Conformance<St>,
) {
    let report = suite.repetitions(1).run().await;
    println!("{label}: {report}");
    assert_eq!(report.races.len(), 6);
    assert!(
        report.races.iter().all(|(_, races)| *races >= 140),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_passes_the_conformance_suite() {
    let server = RedisServer::start();
    let url = server.url();
    let counter = Arc::new(AtomicUsize::new(0));
    let suite = Conformance::with_async(move || {
        let (url, counter) = (url.clone(), Arc::clone(&counter));
        async move {
            RedisStore::connect(&url)
                .await
                .expect("connect to the test's redis-server")
                .with_key_prefix(prefix(&counter))
        }
    });
    passes("one Redis server", suite).await;
}

/// The cached store (`connect_cached`): every contract check and race through the local cache.
/// The refresh interval is short so that the expiry checks keep their meaning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_redis_store_passes_the_conformance_suite() {
    let server = RedisServer::start();
    let url = server.url();
    let counter = Arc::new(AtomicUsize::new(0));
    let suite = Conformance::with_async(move || {
        let (url, counter) = (url.clone(), Arc::clone(&counter));
        async move {
            let cache =
                LocalCache::new().with_refresh_interval(std::time::Duration::from_millis(50));
            RedisStore::connect_cached(&url, cache)
                .await
                .expect("connect to the test's redis-server")
                .with_key_prefix(prefix(&counter))
        }
    });
    passes("one Redis server, cached", suite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_passes_the_conformance_suite() {
    let cluster = RedisCluster::start();
    let urls = cluster.urls();
    let counter = Arc::new(AtomicUsize::new(0));
    let suite = Conformance::with_async(move || {
        let (urls, counter) = (urls.clone(), Arc::clone(&counter));
        async move {
            let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
            RedisStore::connect_cluster(&nodes)
                .await
                .expect("connect to the test's cluster")
                .with_key_prefix(prefix(&counter))
        }
    });
    passes("Redis Cluster", suite).await;
}

/// The cached store on a Cluster (`connect_cluster_cached`): every contract check and race
/// through the local cache, with invalidations from all three masters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_redis_cluster_passes_the_conformance_suite() {
    let cluster = RedisCluster::start();
    let urls = cluster.urls();
    let counter = Arc::new(AtomicUsize::new(0));
    let suite = Conformance::with_async(move || {
        let (urls, counter) = (urls.clone(), Arc::clone(&counter));
        async move {
            let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
            let cache =
                LocalCache::new().with_refresh_interval(std::time::Duration::from_millis(50));
            RedisStore::connect_cluster_cached(&nodes, cache)
                .await
                .expect("connect to the test's cluster")
                .with_key_prefix(prefix(&counter))
        }
    });
    passes("Redis Cluster, cached", suite).await;
}

/// Behind Sentinel the store reaches the master through a connection of its own kind (asked of
/// the sentinels, replaced after a failure): the same contract and races through it.
#[cfg(feature = "sentinel")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_behind_sentinel_passes_the_conformance_suite() {
    behind_sentinel(false).await;
}

/// The cached store behind Sentinel (`connect_sentinel_cached`).
#[cfg(feature = "sentinel")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_redis_behind_sentinel_passes_the_conformance_suite() {
    behind_sentinel(true).await;
}

#[cfg(feature = "sentinel")]
async fn behind_sentinel(cached: bool) {
    const MASTER: &str = "conformance";
    let server = RedisServer::start();
    let sentinel = RedisSentinel::start(server.port, MASTER);
    let url = sentinel.url();
    let counter = Arc::new(AtomicUsize::new(0));
    let suite = Conformance::with_async(move || {
        let (url, counter) = (url.clone(), Arc::clone(&counter));
        async move {
            let store = if cached {
                let cache =
                    LocalCache::new().with_refresh_interval(std::time::Duration::from_millis(50));
                RedisStore::connect_sentinel_cached(&[&url], MASTER, cache).await
            } else {
                RedisStore::connect_sentinel(&[&url], MASTER).await
            };
            store
                .expect("connect through the test's sentinel")
                .with_key_prefix(prefix(&counter))
        }
    });
    let label = if cached {
        "Redis behind Sentinel, cached"
    } else {
        "Redis behind Sentinel"
    };
    passes(label, suite).await;
}
