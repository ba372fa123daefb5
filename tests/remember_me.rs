//! Per-session lifetimes ("remember me"): a remembered and a plain session side by side across
//! idle expiry, the deadline, a regenerate and a restart of the layer, on the memory store,
//! SQLite and Redis; and turning it back.
#![cfg(all(feature = "redis", feature = "sqlite"))]

#[path = "support/postgres_server.rs"]
mod postgres_server;
#[path = "support/redis_server.rs"]
mod redis_server;
mod support;

use std::time::{Duration, Instant};

use axum::{extract::RawQuery, routing::get, Router};
use postgres_server::TempSqlite;
use redis_server::RedisServer;
use support::{Client, Counter, Reply};
use tower_typed_sessions::{
    Lifetime, MemoryStore, RedisStore, SessionHandle, SessionLayer, SqliteStore, Store,
};

const LAYER_IDLE: Duration = Duration::from_millis(300);
const LAYER_ABSOLUTE: Duration = Duration::from_millis(1500);
const OWN_IDLE: Duration = Duration::from_millis(1200);
const OWN_ABSOLUTE: Duration = Duration::from_millis(3000);

fn app<St: Store<Counter>>(store: St) -> Router {
    app_with_grace(store, Duration::ZERO)
}

fn app_with_grace<St: Store<Counter>>(store: St, grace: Duration) -> Router {
    let layer = SessionLayer::new(store)
        .with_idle_timeout(LAYER_IDLE)
        .with_absolute_lifetime(LAYER_ABSOLUTE)
        .with_regenerate_grace(grace);
    Router::new()
        .route(
            "/login",
            get(
                |s: SessionHandle<Counter>, RawQuery(q): RawQuery| async move {
                    s.update(|c| c.user = Some("alice".into()));
                    s.regenerate();
                    match q.as_deref() {
                        Some("remember") => s.remember(Lifetime::new(OWN_IDLE, OWN_ABSOLUTE)),
                        // Shorter than the layer's idle timeout: raised to it.
                        Some("remember-briefly") => {
                            s.remember(Lifetime::new(Duration::from_millis(50), OWN_ABSOLUTE))
                        }
                        _ => {}
                    }
                    "in"
                },
            ),
        )
        .route(
            "/forget",
            get(|s: SessionHandle<Counter>| async move {
                s.use_layer_lifetime();
                "forgotten"
            }),
        )
        .route(
            "/read",
            get(|s: SessionHandle<Counter>| async move {
                let own = s
                    .remembered_idle_timeout()
                    .map_or("-".to_owned(), |d| d.as_millis().to_string());
                format!("new={} own={own}", s.is_new())
            }),
        )
        .layer(layer)
}

fn max_age(reply: &Reply) -> Option<u64> {
    let cookie = reply.set_cookie().expect("a cookie");
    cookie
        .split("; ")
        .find_map(|attribute| attribute.strip_prefix("Max-Age="))
        .map(|seconds| seconds.parse().unwrap())
}

async fn alive(client: &mut Client) -> bool {
    let body = client.get("/read").await.body;
    !body.starts_with("new=true")
}

/// The whole story on one store. `restart` builds a second layer (another instance, or the
/// app after a restart) on the same store.
async fn remembered_and_plain_side_by_side<St: Store<Counter>>(make: impl Fn() -> St) {
    let mut plain = Client::new(app(make()));
    let mut remembered = Client::new(app(make()));
    let started = Instant::now();

    let reply = plain.get("/login").await;
    assert_eq!(
        max_age(&reply),
        None,
        "a plain session keeps a browser-session cookie"
    );
    let reply = remembered.get("/login?remember").await;
    assert_eq!(
        max_age(&reply),
        Some(2),
        "persistent, up to its own idle expiry (1.2 s, rounded up)"
    );
    assert_eq!(remembered.get("/read").await.body, "new=false own=1200");
    assert_eq!(plain.get("/read").await.body, "new=false own=-");

    // Past the layer's idle timeout: only the remembered one lives.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!alive(&mut plain).await, "the plain session idled out");
    assert!(
        alive(&mut remembered).await,
        "the remembered one has its own idle timeout"
    );

    // Used every 400 ms, the remembered session outlives the layer's absolute lifetime.
    while started.elapsed() < LAYER_ABSOLUTE + Duration::from_millis(300) {
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            alive(&mut remembered).await,
            "alive at {:?}",
            started.elapsed()
        );
    }

    // A login on the remembered session keeps its lifetime under the new ID.
    let before = remembered.id();
    let reply = remembered.get("/login").await;
    assert_ne!(remembered.id(), before);
    assert!(
        max_age(&reply).is_some(),
        "still persistent: {:?}",
        reply.set_cookie()
    );
    assert_eq!(remembered.get("/read").await.body, "new=false own=1200");

    // Another layer on the same store (a restart, or another instance) knows it too.
    let mut restarted = Client::new(app(make()));
    restarted.cookie = remembered.cookie.clone();
    assert_eq!(restarted.get("/read").await.body, "new=false own=1200");

    // Its own deadline ends it however often it is used: 3 s after it was remembered.
    let died = loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if !alive(&mut restarted).await {
            break started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(5), "never died");
    };
    assert!(
        died >= OWN_ABSOLUTE - Duration::from_millis(100),
        "died at {died:?}, before its deadline"
    );
}

/// A remembered session left alone dies after its own idle timeout, and one put back on the
/// layer's lifetime gets the layer's kind of cookie and idle timeout.
async fn idle_and_turning_back<St: Store<Counter>>(store: St) {
    let app = app(store);
    let mut idle = Client::new(app.clone());
    idle.get("/login?remember").await;
    tokio::time::sleep(OWN_IDLE + Duration::from_millis(300)).await;
    assert!(!alive(&mut idle).await, "unused past its own idle timeout");

    let mut brief = Client::new(app.clone());
    brief.get("/login?remember-briefly").await;
    assert_eq!(
        brief.get("/read").await.body,
        "new=false own=300",
        "an own idle timeout is at least the layer's"
    );

    let mut back = Client::new(app);
    back.get("/login?remember").await;
    let before = back.id();
    let reply = back.get("/forget").await;
    assert_eq!(max_age(&reply), None, "a browser-session cookie again");
    assert_ne!(back.id(), before, "a new ID");
    assert_eq!(back.get("/read").await.body, "new=false own=-");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !alive(&mut back).await,
        "the layer's idle timeout applies again"
    );
}

/// A read through a regenerate grace window (an old cookie, read-only) slides a remembered
/// session by its own idle timeout too, not by the layer's (a Redis read sets the expiry
/// outright, so it would cut it to the layer's).
async fn a_grace_read_keeps_the_own_idle_timeout<St: Store<Counter>>(store: St) {
    let app = app_with_grace(store, Duration::from_secs(30));
    let mut user = Client::new(app.clone());
    user.get("/login").await;
    let mut old = Client::new(app);
    old.cookie = user.cookie.clone();
    user.get("/login?remember").await;
    assert_ne!(old.cookie, user.cookie);
    assert_eq!(
        old.get("/read").await.body,
        "new=false own=1200",
        "read through grace"
    );
    tokio::time::sleep(LAYER_IDLE + Duration::from_millis(300)).await;
    assert!(
        alive(&mut user).await,
        "alive past the layer's idle timeout"
    );
}

#[tokio::test]
async fn memory_store() {
    let store = MemoryStore::<Counter>::new();
    remembered_and_plain_side_by_side(|| store.clone()).await;
    idle_and_turning_back(MemoryStore::new()).await;
    a_grace_read_keeps_the_own_idle_timeout(MemoryStore::new()).await;
}

#[tokio::test]
async fn sqlite_store() {
    let file = TempSqlite::new();
    let pool = support::sqlite_pool(file.path()).await;
    let store = SqliteStore::<Counter>::new(pool.clone());
    store.migrate().await.unwrap();
    // Each layer gets its own store value on the same database: a restart.
    remembered_and_plain_side_by_side(|| SqliteStore::new(pool.clone())).await;
    idle_and_turning_back(store).await;
}

#[tokio::test]
async fn redis_store() {
    let server = RedisServer::start();
    let first = RedisStore::<Counter>::connect(&server.url()).await.unwrap();
    remembered_and_plain_side_by_side(|| first.clone()).await;
    let second = RedisStore::<Counter>::connect(&server.url()).await.unwrap();
    idle_and_turning_back(second.clone()).await;
    a_grace_read_keeps_the_own_idle_timeout(second).await;
}
