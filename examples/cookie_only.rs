//! The `login` example's app on cookie-only sessions: no session store at all. Each session
//! (who is logged in, the flash, the CSRF token, its expiry) lives in its cookie, sealed with
//! XChaCha20-Poly1305; a revocation list in memory refuses the cookies of sessions that logged
//! out or were regenerated at login, even if a copy was kept.
//!
//! Run it (set `PORT` to use another port than 3000):
//!
//! ```text
//! cargo run --example cookie_only
//! ```
//!
//! Sealing keys come from `SESSION_KEYS`: hex keys of 32 bytes or more, separated by commas; the
//! first seals, all open (to rotate, put a new key first and keep the old one until its cookies
//! expired). Without it the example draws a key at start, and sessions end with the process.
//!
//! ```text
//! SESSION_KEYS=$(openssl rand -hex 32) cargo run --example cookie_only
//! ```
//!
//! Then open <http://localhost:3000> (demo login: any username, password `password`), or use
//! the curl lines of the `login` example: they work the same. Look at the cookie: about 300
//! characters of base64url that say nothing without the key, re-sealed when the session changes,
//! when a flash was shown, or when less than half of its idle timeout is left.
//!
//! A revocation list in memory serves one process; several instances share one in Redis
//! (`RedisStore::<Revoked>`) or SQL. Without any, logout still clears the browser's cookie, but
//! a copy of it stays valid until its own expiry: see the README's "Cookie-only sessions".

#[path = "login/app.rs"]
mod app;

use tower_typed_sessions::{Key, MemoryStore, Revoked, SessionLayer};

#[tokio::main]
async fn main() {
    let keys = match std::env::var("SESSION_KEYS") {
        Ok(text) => text
            .split(',')
            .map(|hex_key| {
                let bytes = hex::decode(hex_key.trim()).expect("SESSION_KEYS: hex keys");
                Key::from_bytes(&bytes).expect("SESSION_KEYS: keys of at least 32 bytes")
            })
            .collect(),
        Err(_) => {
            eprintln!("SESSION_KEYS is not set: sealing with a random key (sessions end with this process)");
            vec![Key::generate().expect("the OS random number generator")]
        }
    };
    let sessions = SessionLayer::cookie_only(keys)
        .expect("at least one key")
        .with_revocation_list(MemoryStore::<Revoked>::new());
    app::serve(app::router(sessions)).await;
}
