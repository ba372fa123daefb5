//! The visit counter on Redis: sessions survive an app restart and are shared by every instance
//! of the app that points at the same Redis.
//!
//! Run it against a Redis you have (default `redis://127.0.0.1:6379`; set `REDIS_URL` for another,
//! and `PORT` for another port than 3000):
//!
//! ```text
//! cargo run --example redis --features redis
//! ```
//!
//! Then open <http://localhost:3000>, or use curl with a cookie jar and look at the key:
//!
//! ```text
//! curl -c jar -b jar http://localhost:3000/        # You have visited 1 time.
//! curl -c jar -b jar http://localhost:3000/        # You have visited 2 times.
//! redis-cli --scan --pattern 'session:*'           # one hash per session, keyed by a digest of the cookie
//! curl -c jar -b jar http://localhost:3000/reset   # deletes the key
//! ```

use axum::{response::Html, routing::get, Router};
use serde::{Deserialize, Serialize};
use tower_typed_sessions::{RedisStore, Session, SessionHandle, SessionLayer};

#[derive(Clone, Default, Serialize, Deserialize)]
struct Visits {
    count: u32,
}

impl Session for Visits {}

async fn index(session: SessionHandle<Visits>) -> Html<String> {
    let count = session.update(|visits| {
        visits.count = visits.count.saturating_add(1);
        visits.count
    });
    let times = if count == 1 { "time" } else { "times" };
    Html(format!(
        "<h1>Counter on Redis</h1><p>You have visited {count} {times}.</p><p><a href=\"/reset\">Reset</a></p>"
    ))
}

async fn reset(session: SessionHandle<Visits>) -> Html<&'static str> {
    session.delete();
    Html("<h1>Counter on Redis</h1><p>Session deleted.</p><p><a href=\"/\">Start again</a></p>")
}

#[tokio::main]
async fn main() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    // Fails here, with the reason, if Redis cannot be reached at start.
    let store = match RedisStore::<Visits>::connect(&url).await {
        Ok(store) => store.with_key_prefix("session:"),
        Err(err) => {
            eprintln!("cannot connect to {url}: {err}");
            std::process::exit(1);
        }
    };
    let app = Router::new()
        .route("/", get(index))
        .route("/reset", get(reset))
        .layer(SessionLayer::new(store));

    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("failed to bind 127.0.0.1 (is PORT free?)");
    let port = listener.local_addr().map_or(port, |addr| addr.port());
    println!("listening on http://localhost:{port} (sessions in {url})");
    axum::serve(listener, app).await.expect("server error");
}
