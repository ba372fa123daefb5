//! `RedisStore` behind Redis Sentinel (feature `sentinel`): a master, a replica and three
//! sentinels the test starts; the master is killed under load and the store follows the
//! failover by itself. And a master that wants a password, reached on the database
//! `SentinelMaster` names.
#![cfg(all(feature = "sentinel", feature = "axum"))]

#[path = "support/redis_server.rs"]
mod redis_server;
mod support;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use axum::http::StatusCode;
use redis_server::{RedisSentinel, RedisServer};
use support::{Client, Counter};
use tower_typed_sessions::{
    store::redis::{LocalCache, SentinelMaster},
    RedisStore, SessionLayer, StoreError,
};

const MASTER: &str = "sessions";

/// Waits until `done` holds, polling; panics after `limit`.
fn wait_for(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One reply seen by the load: when its request left and when it came, its status, whether it
/// set a cookie.
struct Seen {
    sent: Instant,
    at: Instant,
    status: StatusCode,
    set_cookie: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_follow_a_failover_of_the_master_under_load() {
    follows_a_failover(false).await;
}

/// The same with the local cache (`connect_sentinel_cached`) and reads between the writes: the
/// cache is dropped the moment the master goes, so no read is answered from memory while there
/// is no master (the sentinels cannot promote one before their 1 s down-after time); after the
/// failover, tracking is switched on at the new master and reads come from memory again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cached_store_follows_a_failover_and_serves_nothing_from_memory_meanwhile() {
    follows_a_failover(true).await;
}

async fn follows_a_failover(cached: bool) {
    let mut master = RedisServer::start();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
    wait_for("the replica syncs", Duration::from_secs(20), || {
        replica
            .command::<String>(&["INFO", "replication"])
            .contains("master_link_status:up")
    });
    let sentinels: Vec<RedisSentinel> = (0..3)
        .map(|_| RedisSentinel::start(master.port, MASTER))
        .collect();
    wait_for(
        "the sentinels see each other and the replica",
        Duration::from_secs(30),
        || {
            sentinels.iter().all(|s| {
                // Field names and values, alternating.
                let info: Vec<String> = s.command(&["SENTINEL", "MASTER", MASTER]);
                let field = |name: &str| {
                    info.chunks(2)
                        .find(|pair| pair[0] == name)
                        .and_then(|pair| pair.get(1).cloned())
                };
                field("num-other-sentinels").as_deref() == Some("2")
                    && field("num-slaves").as_deref() == Some("1")
            })
        },
    );

    let urls: Vec<String> = sentinels.iter().map(RedisSentinel::url).collect();
    let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
    let store = if cached {
        RedisStore::<Counter>::connect_sentinel_cached(&nodes, MASTER, LocalCache::new()).await
    } else {
        RedisStore::<Counter>::connect_sentinel(&nodes, MASTER).await
    }
    .expect("connect through the sentinels");
    let app = support::routes().layer(SessionLayer::new(store.clone()));

    // Eight users, each with a session of their own, incrementing without pause.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (app, stop, seen) = (app.clone(), Arc::clone(&stop), Arc::clone(&seen));
            tokio::spawn(async move {
                let mut client = Client::new(app);
                let mut turn = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // Cached: two reads (from memory) for each write.
                    turn += 1;
                    let path = if cached && !turn.is_multiple_of(3) {
                        "/read"
                    } else {
                        "/incr"
                    };
                    let sent = Instant::now();
                    let reply = client.get(path).await;
                    seen.lock().unwrap().push(Seen {
                        sent,
                        at: Instant::now(),
                        status: reply.status,
                        set_cookie: !reply.set_cookies().is_empty(),
                    });
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(1)).await;
    let (hits_before_kill, _) = store.cache_hits_and_misses();
    let killed = Instant::now();
    master.stop();
    // Until a second of successes after the failover, or 30 s.
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let recovered = {
            let seen = seen.lock().unwrap();
            let last_failure = seen
                .iter()
                .filter(|s| s.status != StatusCode::OK)
                .map(|s| s.at)
                .max();
            last_failure.is_some_and(|at| at.elapsed() > Duration::from_secs(1))
                && seen.last().is_some_and(|s| s.status == StatusCode::OK)
        };
        if recovered || killed.elapsed() > Duration::from_secs(30) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }

    let seen = seen.lock().unwrap();
    let total = seen.len();
    let failures: Vec<&Seen> = seen.iter().filter(|s| s.status != StatusCode::OK).collect();
    for reply in seen.iter() {
        assert!(
            reply.status == StatusCode::OK || reply.status == StatusCode::INTERNAL_SERVER_ERROR,
            "every request is answered with success or the error response: {}",
            reply.status
        );
    }
    assert!(
        failures.iter().all(|f| !f.set_cookie),
        "no Set-Cookie on a failed request"
    );
    let first_failure = failures.first().map(|f| f.at.duration_since(killed));
    let last_failure = failures.last().map(|f| f.at.duration_since(killed));
    let first_success_after = seen
        .iter()
        .filter(|s| s.at > killed && s.status == StatusCode::OK)
        .find(|s| failures.last().is_none_or(|f| s.at > f.at))
        .map(|s| s.at.duration_since(killed));
    println!(
        "{total} requests, {} answered with the error response; after the kill: first error \
         {first_failure:?}, last error {last_failure:?}, service back {first_success_after:?}",
        failures.len()
    );
    let back = first_success_after.expect("service came back without restarting the app");
    assert!(back < Duration::from_secs(20), "back after {back:?}");
    let successes_after = seen
        .iter()
        .filter(|s| s.at > killed + back && s.status == StatusCode::OK)
        .count();
    assert!(
        successes_after > 8,
        "steady successes after the failover: {successes_after}"
    );
    if cached {
        let (hits, _) = store.cache_hits_and_misses();
        let from_memory_meanwhile = seen
            .iter()
            .filter(|s| {
                s.status == StatusCode::OK
                    && s.sent > killed + Duration::from_millis(50)
                    && s.sent < killed + Duration::from_millis(900)
            })
            .count();
        println!(
            "cached: {hits_before_kill} reads from memory before the kill, {} after; {from_memory_meanwhile} answered while there was no master",
            hits - hits_before_kill
        );
        assert!(hits_before_kill > 100, "the cache served before the kill");
        assert_eq!(from_memory_meanwhile, 0);
        assert!(
            hits > hits_before_kill + 20,
            "the cache serves again after the failover"
        );
    }
}

/// A master with `requirepass` (the sentinel told its password): the store logs in with
/// `SentinelMaster::with_password`, plain and cached, and keeps its sessions in the database
/// `with_db` names; without the password it is refused when it connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_with_a_password_is_reached_on_the_database_sentinel_master_names() {
    const PASSWORD: &str = "the-masters-password";
    let master = RedisServer::start_with(&["--requirepass", PASSWORD]);
    let sentinel = RedisSentinel::start_with(
        master.port,
        MASTER,
        &[format!("sentinel auth-pass {MASTER} {PASSWORD}")],
    );
    let url = sentinel.url();
    let nodes = [url.as_str()];
    let settings = SentinelMaster::new().with_password(PASSWORD).with_db(3);
    for cached in [false, true] {
        let store = if cached {
            RedisStore::<Counter>::connect_sentinel_cached_with(
                &nodes,
                MASTER,
                settings.clone(),
                LocalCache::new(),
            )
            .await
        } else {
            RedisStore::<Counter>::connect_sentinel_with(&nodes, MASTER, settings.clone()).await
        }
        .unwrap_or_else(|err| panic!("cached {cached}: connect with the password: {err}"));
        let mut client = Client::new(support::routes().layer(SessionLayer::new(store)));
        assert_eq!(client.get("/incr").await.body, "1", "cached {cached}");
        assert_eq!(client.get("/incr").await.body, "2", "cached {cached}");
        client.get("/login").await;
        assert_eq!(
            client.get("/read").await.body,
            "2 new=false",
            "cached {cached}"
        );
    }
    let keys_in = |db: u8| -> i64 {
        let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/{db}", master.port);
        let mut connection = redis::Client::open(url)
            .and_then(|client| client.get_connection())
            .expect("log in to the master");
        redis::cmd("DBSIZE").query(&mut connection).expect("DBSIZE")
    };
    assert!(keys_in(3) > 0, "the sessions are in database 3");
    assert_eq!(keys_in(0), 0, "nothing is in database 0");

    let refused = |result: Result<RedisStore<Counter>, StoreError>| match result {
        Ok(_) => panic!("a store without the master's password must not connect"),
        Err(err) => {
            assert!(matches!(err, StoreError::Backend(_)), "{err}");
            err.to_string()
        }
    };
    let plain = refused(RedisStore::connect_sentinel(&nodes, MASTER).await);
    let cached =
        refused(RedisStore::connect_sentinel_cached(&nodes, MASTER, LocalCache::new()).await);
    println!("without the password: {plain}; cached: {cached}");
    let wrong = SentinelMaster::new().with_password("not-the-password");
    refused(RedisStore::connect_sentinel_with(&nodes, MASTER, wrong).await);
}
