//! The visit counter on PostgreSQL: sessions survive an app restart and are shared by every
//! instance of the app that points at the same database.
//!
//! Run it against a PostgreSQL you have (default `postgres://postgres@127.0.0.1:5432/postgres`;
//! set `DATABASE_URL` for another, and `PORT` for another port than 3000):
//!
//! ```text
//! cargo run --example postgres --features postgres
//! ```
//!
//! Then open <http://localhost:3000>, or use curl with a cookie jar and look at the table:
//!
//! ```text
//! curl -c jar -b jar http://localhost:3000/        # You have visited 1 time.
//! curl -c jar -b jar http://localhost:3000/        # You have visited 2 times.
//! psql -c 'SELECT key, revision, expires_ms FROM typed_sessions'   # keyed by a digest of the cookie
//! curl -c jar -b jar http://localhost:3000/reset   # deletes the row
//! ```

use axum::{response::Html, routing::get, Router};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPoolOptions;
use tower_typed_sessions::{PostgresStore, Session, SessionHandle, SessionLayer};

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
        "<h1>Counter on PostgreSQL</h1><p>You have visited {count} {times}.</p><p><a href=\"/reset\">Reset</a></p>"
    ))
}

async fn reset(session: SessionHandle<Visits>) -> Html<&'static str> {
    session.delete();
    Html(
        "<h1>Counter on PostgreSQL</h1><p>Session deleted.</p><p><a href=\"/\">Start again</a></p>",
    )
}

#[tokio::main]
async fn main() {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    // The application's own pool. Without `test_before_acquire(false)` sqlx pings each connection
    // it hands out: one more round trip per store operation.
    let pool = match PgPoolOptions::new()
        .max_connections(16)
        .test_before_acquire(false)
        .connect(&url)
        .await
    {
        Ok(pool) => pool,
        Err(err) => {
            eprintln!("cannot connect to {url}: {err}");
            std::process::exit(1);
        }
    };
    let store = PostgresStore::<Visits>::new(pool);
    // Creates `typed_sessions` and `typed_sessions_owners` if they do not exist.
    if let Err(err) = store.migrate().await {
        eprintln!("cannot create the session tables: {err}");
        std::process::exit(1);
    }
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
    println!("listening on http://localhost:{port} (sessions in PostgreSQL)");
    axum::serve(listener, app).await.expect("server error");
}
