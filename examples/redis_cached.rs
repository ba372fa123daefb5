//! Two instances of one app on one Redis, each reading sessions from its own local cache: log in
//! on one, log out on the other, and the first sees the logout at once, because Redis itself
//! tells every instance when a session changes (client-side caching with `CLIENT TRACKING`).
//!
//! Run it against a Redis 7.0 or newer you have (default `redis://127.0.0.1:6379`; set `REDIS_URL`
//! for another, and `PORT` for another first port than 3000: the second instance listens on the
//! next one):
//!
//! ```text
//! cargo run --example redis_cached --features redis
//! ```
//!
//! Then, with curl and one cookie jar for both instances:
//!
//! ```text
//! curl -c jar -b jar http://localhost:3000/login       # logged in as alice (instance 3000)
//! curl -c jar -b jar http://localhost:3001/            # alice, from 3001's cache after one read
//! curl -c jar -b jar http://localhost:3001/            # alice, no Redis command sent
//! curl -b jar http://localhost:3000/logout             # logged out on 3000 (the jar keeps the cookie)
//! curl -c jar -b jar http://localhost:3001/            # nobody: 3001 dropped its copy
//! curl http://localhost:3001/stats                     # cache hits and misses of 3001
//! ```

use axum::{extract::State, routing::get, Router};
use serde::{Deserialize, Serialize};
use tower_typed_sessions::{
    store::redis::LocalCache, RedisStore, Session, SessionHandle, SessionLayer,
};

#[derive(Clone, Default, Serialize, Deserialize)]
struct Account {
    user: Option<String>,
}

impl Session for Account {}

async fn whoami(session: SessionHandle<Account>) -> String {
    let user = session.read(|account| account.user.clone());
    format!("{}\n", user.as_deref().unwrap_or("nobody"))
}

async fn login(session: SessionHandle<Account>) -> &'static str {
    session.log_in(|account| account.user = Some("alice".into()));
    "logged in as alice\n"
}

async fn logout(session: SessionHandle<Account>) -> &'static str {
    session.log_out();
    "logged out\n"
}

async fn stats(State(store): State<RedisStore<Account>>) -> String {
    let (hits, misses) = store.cache_hits_and_misses();
    format!(
        "{hits} hits, {misses} misses, {} sessions cached\n",
        store.cached_sessions()
    )
}

async fn instance(url: &str, port: u16) {
    // Fails here, with the reason, if Redis cannot be reached at start.
    let store = match RedisStore::<Account>::connect_cached(url, LocalCache::new()).await {
        Ok(store) => store,
        Err(err) => {
            eprintln!("cannot connect to {url}: {err}");
            std::process::exit(1);
        }
    };
    let app = Router::new()
        .route("/", get(whoami))
        .route("/login", get(login))
        .route("/logout", get(logout))
        .route("/stats", get(stats))
        .with_state(store.clone())
        .layer(SessionLayer::new(store));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("failed to bind 127.0.0.1 (is PORT free?)");
    let port = listener.local_addr().map_or(port, |addr| addr.port());
    println!("listening on http://localhost:{port} (sessions in {url}, cached)");
    axum::serve(listener, app).await.expect("server error");
}

#[tokio::main]
async fn main() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    // `PORT=0`: both on ports the system picks.
    let second = if port == 0 { 0 } else { port.saturating_add(1) };
    // Two instances with a store (a connection and a cache) each, as two processes would have.
    tokio::join!(instance(&url, port), instance(&url, second));
}
