//! The cached Redis store (`RedisStore::connect_cached`): several instances on one Redis server,
//! each with its own local cache and its own connection. A logout on one is never served as a
//! live session by another (1,000 times, with the invalidation lag measured), reads cost no
//! command once warm, the Redis expiry is refreshed at most once per interval with both sides
//! of its bound checked, the cache keeps to its capacity, and an outage stops it at once. The
//! store contract and races run through the cache in tests/conformance_redis.rs.
#![cfg(all(feature = "redis", feature = "axum"))]

#[path = "support/hardening_suite.rs"]
mod hardening_suite;
#[path = "support/owner_suite.rs"]
mod owner_suite;
#[path = "support/redis_server.rs"]
mod redis_server;
mod support;

use std::time::{Duration, Instant};

use axum::{http::StatusCode, routing::get, Router};
use redis_server::RedisServer;
use support::{Client, Counter, Events};
use time::OffsetDateTime;
use tower_typed_sessions::{
    store::redis::LocalCache, Expect, LoadOptions, Loaded, RedisStore, SessionHandle, SessionLayer,
    Store,
};

async fn cached(server: &RedisServer, cache: LocalCache) -> RedisStore<Counter> {
    RedisStore::connect_cached(&server.url(), cache)
        .await
        .expect("connect to the test's redis")
}

/// The lifecycle routes plus `/key` (the session's store key) behind a layer on `store`.
fn app(store: RedisStore<Counter>, idle: Duration) -> Router {
    support::routes()
        .route(
            "/key",
            get(|s: SessionHandle<Counter>| async move {
                s.id()
                    .map(|key| key.as_str().to_owned())
                    .unwrap_or_default()
            }),
        )
        .layer(SessionLayer::new(store).with_idle_timeout(idle))
}

fn is_logged_in(body: &str) -> bool {
    // `/read` answers "<count> new=<bool>"; the login sets count to 0 but makes it not new.
    body.ends_with("new=false")
}

/// 1,000 logouts on instance A, each followed at once by a request with the same cookie on
/// instance B, which had the session cached: none is served as logged in. Then the lag from a
/// write's acknowledgement on A to B dropping its entry, over 1,000 writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_on_one_instance_is_seen_at_once_by_another() {
    let server = RedisServer::start();
    let (a, b) = (
        cached(&server, LocalCache::new()).await,
        cached(&server, LocalCache::new()).await,
    );
    let hour = Duration::from_secs(3600);
    let (app_a, app_b) = (app(a.clone(), hour), app(b.clone(), hour));
    let mut served_logged_in = 0;
    let (hits_before, _) = b.cache_hits_and_misses();
    for _ in 0..1000 {
        let mut on_a = Client::new(app_a.clone());
        on_a.get("/login").await;
        let key = tower_typed_sessions::SessionKey::parse(&on_a.get("/key").await.body).unwrap();
        let mut on_b = Client::new(app_b.clone());
        on_b.cookie = on_a.cookie.clone();
        // B reads it until it holds it (a read whose claim an earlier push removed does not
        // fill: the push of A's own create can arrive after B's read began).
        for _ in 0..5 {
            assert!(is_logged_in(&on_b.get("/read").await.body));
            if b.is_cached(&key) {
                break;
            }
        }
        assert!(b.is_cached(&key), "B caches the session");
        assert!(is_logged_in(&on_b.get("/read").await.body));
        assert!(on_a.get("/logout").await.is_removal("id"));
        let reply = on_b.get("/read").await;
        if is_logged_in(&reply.body) {
            served_logged_in += 1;
        }
    }
    let hits = b.cache_hits_and_misses().0 - hits_before;
    println!(
        "1000 logouts on A, then a request on B: {served_logged_in} served as logged in \
         ({hits} of B's reads were cache hits)"
    );
    assert_eq!(served_logged_in, 0);
    assert!(
        hits >= 1000,
        "B served the session from its cache before each logout"
    );

    // The lag: A deletes through its store; B's entry must go when the push arrives.
    let mut lags = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let mut on_a = Client::new(app_a.clone());
        on_a.get("/incr").await;
        let key = tower_typed_sessions::SessionKey::parse(&on_a.get("/key").await.body).unwrap();
        for _ in 0..5 {
            let now = OffsetDateTime::now_utc();
            assert!(matches!(
                b.load(
                    &key,
                    LoadOptions::at(now).sliding(Some(hour)).taking_flash(true)
                )
                .await,
                Ok(Loaded::Active(_))
            ));
            if b.is_cached(&key) {
                break;
            }
        }
        assert!(b.is_cached(&key));
        a.delete(&key, Expect::Any).await.unwrap();
        let acknowledged = Instant::now();
        while b.is_cached(&key) {
            assert!(
                acknowledged.elapsed() < Duration::from_secs(2),
                "no invalidation within 2 s"
            );
            std::hint::spin_loop();
            tokio::task::yield_now().await;
        }
        lags.push(acknowledged.elapsed());
    }
    lags.sort();
    let at = |q: f64| lags[((lags.len() - 1) as f64 * q) as usize];
    println!(
        "invalidation lag from A's acknowledged delete to B dropping the entry, 1000 writes: \
         p50 {:?}, p99 {:?}, max {:?}",
        at(0.5),
        at(0.99),
        lags[lags.len() - 1]
    );
}

/// Once warm, a read costs no Redis command (the heartbeat's PINGs aside) and a write one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_read_sends_nothing_and_a_write_one_command() {
    let server = RedisServer::start();
    let store = cached(&server, LocalCache::new()).await;
    let mut client = Client::new(app(store.clone(), Duration::from_secs(3600)));
    client.get("/incr").await;
    client.get("/read").await;
    let mut monitor = server.monitor();
    let commands = |monitor: &mut redis_server::Monitor| {
        monitor
            .commands_since_last_call()
            .into_iter()
            .filter(|line| !line.contains("\"PING\""))
            .collect::<Vec<_>>()
    };
    commands(&mut monitor);
    for _ in 0..20 {
        assert_eq!(client.get("/read").await.body, "1 new=false");
    }
    let seen = commands(&mut monitor);
    assert!(seen.is_empty(), "20 warm reads sent {seen:?}");
    for n in 2..12 {
        assert_eq!(client.get("/incr").await.body, n.to_string());
    }
    let seen = commands(&mut monitor);
    assert_eq!(seen.len(), 10, "10 writes, one command each: {seen:?}");
    assert!(seen.iter().all(|line| line.contains("\"SET\"")), "{seen:?}");
}

/// The Redis expiry moves at most once per refresh interval, to the idle timeout plus the
/// interval: a session used within its idle timeout never expires, and one left alone sits in
/// Redis at most the interval longer than the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refresh_bound_holds_on_both_sides() {
    let server = RedisServer::start();
    let (idle, refresh) = (Duration::from_millis(1200), Duration::from_millis(600));
    let store = cached(&server, LocalCache::new().with_refresh_interval(refresh)).await;
    let app = app(store.clone(), idle);
    let mut client = Client::new(app.clone());
    client.get("/incr").await;
    let key = client.get("/key").await.body;
    let live = format!("session:{{{key}}}:live");

    // Used every 1.1 s (within the idle timeout, past the refresh interval): never expires,
    // and most reads are hits.
    let (hits_before, _) = store.cache_hits_and_misses();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(client.get("/read").await.body, "1 new=false");
        let ttl: i64 = server.command(&["PTTL", &live]);
        assert!(
            ttl > 0 && ttl <= (idle + refresh).as_millis() as i64,
            "the live key's TTL {ttl} ms is within idle + refresh"
        );
    }
    let (hits, _) = store.cache_hits_and_misses();
    println!("5 reads 1.1 s apart: {} hits", hits - hits_before);

    // Left alone: alive just before the idle timeout, gone from Redis by idle + refresh.
    let mut second = Client::new(app.clone());
    second.get("/incr").await;
    let key = second.get("/key").await.body;
    let live = format!("session:{{{key}}}:live");
    let ttl: i64 = server.command(&["PTTL", &live]);
    assert!(
        ttl <= (idle + refresh).as_millis() as i64 && ttl > 0,
        "{ttl}"
    );
    tokio::time::sleep(idle + refresh + Duration::from_millis(100)).await;
    let exists: i64 = server.command(&["EXISTS", &live]);
    assert_eq!(exists, 0, "idle + refresh later the live key is gone");
    assert_eq!(second.get("/read").await.body, "0 new=true");
}

/// The cache keeps to its capacity, evicting the least recently used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_keeps_to_its_capacity() {
    let server = RedisServer::start();
    let store = cached(&server, LocalCache::new().with_capacity(10)).await;
    let app = app(store.clone(), Duration::from_secs(3600));
    let mut hot = Client::new(app.clone());
    hot.get("/incr").await;
    for _ in 0..50 {
        let mut other = Client::new(app.clone());
        other.get("/incr").await;
        other.get("/read").await;
        hot.get("/read").await;
        assert!(store.cached_sessions() <= 10, "{}", store.cached_sessions());
    }
    // The session read all along is still there.
    let (hits, _) = store.cache_hits_and_misses();
    hot.get("/read").await;
    assert_eq!(store.cache_hits_and_misses().0, hits + 1);
}

/// Redis stopped: the cache stops serving at once (the request fails closed, without
/// Set-Cookie), and service comes back within a second of Redis, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_stops_the_cache_at_once_and_service_recovers() {
    let mut server = RedisServer::start();
    let store = cached(&server, LocalCache::new()).await;
    let events = Events::default();
    let app = support::routes().layer(events.attach(SessionLayer::new(store.clone())));
    let mut client = Client::new(app);
    client.get("/incr").await;
    client.get("/read").await;
    assert!(store.cached_sessions() > 0);
    let cookie = client.cookie.clone();
    events.take();

    server.stop();
    // The connection's end reaches the store as a push: the cache is dropped before any
    // request comes.
    let stopped = Instant::now();
    while store.cached_sessions() > 0 {
        assert!(
            stopped.elapsed() < Duration::from_millis(500),
            "the cache outlived the connection"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (hits, _) = store.cache_hits_and_misses();
    support::requests_during_an_outage(&mut client, &events).await;
    assert_eq!(
        store.cache_hits_and_misses().0,
        hits,
        "no hit while Redis is down"
    );
    assert_eq!(client.cookie, cookie);

    server.restart();
    let accepting = Instant::now();
    let recovered = loop {
        if client.get("/incr").await.status == StatusCode::OK {
            break accepting.elapsed();
        }
        assert!(accepting.elapsed() < Duration::from_secs(5), "no recovery");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("recovered {recovered:?} after redis accepted connections again");
    assert!(recovered < Duration::from_secs(1));
    // Tracking is back: reads are hits again (the first one after the new session may go to
    // Redis to refresh its expiry).
    let (hits, _) = store.cache_hits_and_misses();
    for _ in 0..5 {
        assert_eq!(client.get("/read").await.status, StatusCode::OK);
    }
    let (after, _) = store.cache_hits_and_misses();
    assert!(
        after >= hits + 3,
        "{} hits in 5 reads after recovery",
        after - hits
    );
}

/// The owner index and the HTTP-level hardening suite behave as on the uncached store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_index_and_hardening_through_the_cache() {
    let server = RedisServer::start();
    let store =
        RedisStore::<owner_suite::Account>::connect_cached(&server.url(), LocalCache::new())
            .await
            .unwrap();
    owner_suite::owner_index_flow(store).await;
    let store = cached(&server, LocalCache::new()).await;
    let resurrections = hardening_suite::no_resurrection(store.clone(), 300).await;
    assert_eq!(resurrections, 0);
    let (value, successes, _) = hardening_suite::optimistic_increments(store.clone()).await;
    assert_eq!((value as usize, successes), (64, 64));
    hardening_suite::regenerate_grace_window(store.clone()).await;
}
