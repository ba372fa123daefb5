//! The apps under test. Every app serves the same four routes:
//! `/read` (read the typed counter), `/incr` (increment it), `/login` (regenerate the session ID),
//! and `/plain` (never asks for the session).

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use axum::{routing::get, serve::ListenerExt, Router};
use serde::{Deserialize, Serialize};
use tower_typed_sessions::{
    Key, MemoryStore, PostgresStore, RedisStore, Revoked, Session, SessionHandle, SessionLayer,
};

/// The session of every app: ours stores it as the typed session; tower-sessions stores it as
/// one typed value under [`KEY`] in its key-value map.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Counter {
    pub count: u64,
}

impl Session for Counter {}

/// The key tower-sessions keeps the counter under.
const KEY: &str = "counter";

/// Idle timeout of every app: one hour, sliding on every request.
pub const IDLE_SECS: i64 = 3600;

/// Serves `router` on a fresh 127.0.0.1 port of the current runtime, with TCP_NODELAY.
pub async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// Plain axum, no sessions: a shared atomic stands in for the session's counter.
pub fn bare() -> Router {
    let counter = Arc::new(AtomicU64::new(0));
    let (c1, c2) = (Arc::clone(&counter), counter);
    Router::new()
        .route(
            "/read",
            get(move || {
                let c = Arc::clone(&c1);
                async move { c.load(Ordering::Relaxed).to_string() }
            }),
        )
        .route(
            "/incr",
            get(move || {
                let c = Arc::clone(&c2);
                async move { (c.fetch_add(1, Ordering::Relaxed) + 1).to_string() }
            }),
        )
        .route("/login", get(|| async { "welcome" }))
        .route("/plain", get(plain))
}

/// The same in every app: a page that never asks for the session.
async fn plain() -> &'static str {
    "no session needed"
}

mod ours {
    use super::*;

    pub async fn read(session: SessionHandle<Counter>) -> String {
        session.read(|c| c.count).to_string()
    }

    pub async fn incr(session: SessionHandle<Counter>) -> String {
        session
            .update(|c| {
                c.count += 1;
                c.count
            })
            .to_string()
    }

    pub async fn login(session: SessionHandle<Counter>) -> &'static str {
        session.regenerate();
        "welcome"
    }
}

/// tower-typed-sessions with its defaults (1 h idle timeout, sliding).
fn ours_router() -> Router {
    Router::new()
        .route("/read", get(ours::read))
        .route("/incr", get(ours::incr))
        .route("/login", get(ours::login))
        .route("/plain", get(plain))
}

pub fn ours_memory(store: MemoryStore<Counter>) -> Router {
    ours_router().layer(SessionLayer::new(store))
}

/// Cookie-only sessions (no store), optionally with a revocation list in memory.
pub fn ours_cookie(revocation_list: bool) -> Router {
    let key = Key::from_bytes(&[7; 32]).expect("a 32-byte key");
    let layer = SessionLayer::<Counter, _>::cookie_only([key]).expect("one key");
    if revocation_list {
        ours_router().layer(layer.with_revocation_list(MemoryStore::<Revoked>::new()))
    } else {
        ours_router().layer(layer)
    }
}

pub fn ours_redis_cached(store: RedisStore<Counter>) -> Router {
    ours_router().layer(SessionLayer::new(store))
}

pub fn ours_redis(store: RedisStore<Counter>) -> Router {
    ours_router().layer(SessionLayer::new(store))
}

pub fn ours_postgres(store: PostgresStore<Counter>) -> Router {
    ours_router().layer(SessionLayer::new(store))
}

/// The pool both PostgreSQL apps use: the same size, and no ping before each statement (sqlx's
/// default pings every connection it hands out; both stores would pay it alike).
pub async fn pg_pool(url: &str) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .test_before_acquire(false)
        .connect(url)
        .await
        .expect("connect to the bench's postgres")
}

/// tower-sessions 0.14 on tower-sessions-sqlx-store's PostgresStore, migrated.
pub async fn ts_postgres(pool: sqlx::PgPool) -> Router {
    let store = tower_sessions_sqlx_store::PostgresStore::new(pool);
    store
        .migrate()
        .await
        .expect("migrate tower-sessions' table");
    ts_014::router(store)
}

/// The same three handlers for one version of tower-sessions.
macro_rules! tower_sessions_app {
    ($module:ident, $crate_name:ident) => {
        pub mod $module {
            use super::{Counter, KEY};
            use axum::{routing::get, Router};
            use $crate_name::{Expiry, Session, SessionManagerLayer, SessionStore};

            pub async fn read(session: Session) -> String {
                let counter: Counter = session.get(KEY).await.unwrap().unwrap_or_default();
                counter.count.to_string()
            }

            pub async fn incr(session: Session) -> String {
                let mut counter: Counter = session.get(KEY).await.unwrap().unwrap_or_default();
                counter.count += 1;
                session.insert(KEY, &counter).await.unwrap();
                counter.count.to_string()
            }

            pub async fn login(session: Session) -> &'static str {
                session.cycle_id().await.unwrap();
                "welcome"
            }

            /// Sliding idle expiry as tower-sessions does it: `OnInactivity` plus
            /// `with_always_save(true)`, without which a read never extends the session.
            pub fn router<S: SessionStore + Clone>(store: S) -> Router {
                Router::new()
                    .route("/read", get(read))
                    .route("/incr", get(incr))
                    .route("/login", get(login))
                    .route("/plain", get(super::plain))
                    .layer(
                        SessionManagerLayer::new(store)
                            .with_expiry(Expiry::OnInactivity(time::Duration::seconds(
                                super::IDLE_SECS,
                            )))
                            .with_always_save(true),
                    )
            }
        }
    };
}

tower_sessions_app!(ts_latest, tower_sessions);
tower_sessions_app!(ts_014, tower_sessions_014);

pub fn ts_memory() -> Router {
    ts_latest::router(tower_sessions::MemoryStore::default())
}

/// tower-sessions 0.14 on tower-sessions-redis-store (fred), with a pool of `pool_size`
/// connections (the store's documented example uses 6; one auto-pipelined connection is faster
/// on a small machine, so the bench defaults to 1).
pub async fn ts_redis(url: &str, pool_size: usize) -> Router {
    use tower_sessions_redis_store::fred::prelude::{ClientLike, Config, Pool};
    let config = Config::from_url(url).expect("redis url");
    let pool = Pool::new(config, None, None, None, pool_size).expect("fred pool");
    // Connects every client and waits for them; the returned task handle runs in the background.
    let _connections = pool.init().await.expect("fred connect");
    ts_014::router(tower_sessions_redis_store::RedisStore::new(pool))
}

/// axum_session 0.22 on its Redis pool backend (axum_session_redispool 0.13), with its
/// in-memory layer as configured by default (`memory`), or with that layer off.
pub async fn axum_session_redis(url: &str, memory: bool) -> Router {
    use axum_session::{Session, SessionConfig, SessionLayer, SessionStore};
    use axum_session_redispool::SessionRedisPool;

    type Handle = Session<SessionRedisPool>;
    async fn read(session: Handle) -> String {
        let counter: Counter = session.get(KEY).unwrap_or_default();
        counter.count.to_string()
    }
    async fn incr(session: Handle) -> String {
        let mut counter: Counter = session.get(KEY).unwrap_or_default();
        counter.count += 1;
        session.set(KEY, &counter);
        counter.count.to_string()
    }
    async fn login(session: Handle) -> &'static str {
        session.renew();
        "welcome"
    }

    let client = redis::Client::open(url).expect("redis url");
    let pool = redis_pool::SingleRedisPool::from(client);
    let mut config = SessionConfig::default()
        .with_lifetime(time::Duration::seconds(IDLE_SECS))
        .with_table_name("axum_session");
    if !memory {
        config = config.with_memory_lifetime(time::Duration::ZERO);
    }
    let store = SessionStore::<SessionRedisPool>::new(Some(pool.into()), config)
        .await
        .expect("axum_session store");
    Router::new()
        .route("/read", get(read))
        .route("/incr", get(incr))
        .route("/login", get(login))
        .route("/plain", get(plain))
        .layer(SessionLayer::new(store))
}
