//! Counts visits per browser session: the smallest complete Axum app using the session layer.
//!
//! `GET /` increments a counter kept in a typed session struct and says how many times you have
//! visited; `GET /reset` deletes the session (server side, plus a removal cookie).
//!
//! Run it (set `PORT` to use another port than 3000):
//!
//! ```text
//! cargo run --example counter
//! ```
//!
//! Then open <http://localhost:3000> and reload, or use curl with a cookie jar:
//!
//! ```text
//! curl -c jar -b jar http://localhost:3000/        # You have visited 1 time.
//! curl -c jar -b jar http://localhost:3000/        # You have visited 2 times.
//! curl -c jar -b jar http://localhost:3000/reset   # Session deleted.
//! curl -c jar -b jar http://localhost:3000/        # You have visited 1 time.
//! ```
//!
//! The cookie is `Secure` by default; browsers and curl still accept it from `http://localhost`.

use axum::{response::Html, routing::get, Router};
use serde::{Deserialize, Serialize};
use tower_typed_sessions::{MemoryStore, Session, SessionHandle, SessionLayer};

/// What this app keeps per session. `Default` is the value a new session starts with.
#[derive(Clone, Default, Serialize, Deserialize)]
struct Visits {
    count: u32,
}

impl Session for Visits {}

async fn index(session: SessionHandle<Visits>) -> Html<String> {
    // `update` changes the data and marks the session changed, so the layer saves it (and sets the
    // cookie, the first time) after this handler returns.
    let count = session.update(|visits| {
        visits.count = visits.count.saturating_add(1);
        visits.count
    });
    let times = if count == 1 { "time" } else { "times" };
    Html(format!(
        "<h1>Counter</h1><p>You have visited {count} {times}.</p><p><a href=\"/reset\">Reset</a></p>"
    ))
}

async fn reset(session: SessionHandle<Visits>) -> Html<&'static str> {
    // Deletes the session from the store and tells the browser to drop the cookie.
    session.delete();
    Html("<h1>Counter</h1><p>Session deleted.</p><p><a href=\"/\">Start again</a></p>")
}

#[tokio::main]
async fn main() {
    let app = Router::new()
        .route("/", get(index))
        .route("/reset", get(reset))
        .layer(SessionLayer::new(MemoryStore::<Visits>::new()));

    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("failed to bind 127.0.0.1 (is PORT free?)");
    let port = listener.local_addr().map_or(port, |addr| addr.port());
    println!("listening on http://localhost:{port}");
    axum::serve(listener, app).await.expect("server error");
}
