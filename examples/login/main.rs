//! A login flow: a guarded page, a login form, logout, flash messages, "keep me signed in" and
//! CSRF tokens.
//!
//! - `GET /` is guarded by `RequireLogin`: logged in, it greets you (plus any flash message) and
//!   offers a logout button; otherwise the guard redirects (303) to `/login?next=%2F`.
//! - `GET /login` shows the login form (with the session's CSRF token in a hidden field, and the
//!   `next` page to return to) and any flash message (a failed login, "logged out").
//! - `POST /login` checks the form. **Demo rule:** any non-empty username is accepted with the
//!   password `password`. On success `log_in` records the user and moves the session to a new
//!   ID (against session fixation; the CSRF token changes with it), a welcome is flashed, and
//!   the browser goes back to `next` if `local_redirect` accepts it as a path on this site
//!   (otherwise to `/`). With "keep me signed in" ticked, this one session gets a lifetime of
//!   its own (30 days idle, 90 at most) and a persistent cookie; other sessions keep the
//!   layer's (a browser-session cookie, 1 hour idle).
//! - `POST /logout` (a form with the token) ends the session with `log_out`, flashes "You have
//!   been logged out" and redirects to `/login`.
//!
//! Every `POST` goes through `CsrfLayer`: without this session's token, or from another origin,
//! it is refused with 403, whatever cookies the browser sent.
//!
//! Run it (set `PORT` to use another port than 3000):
//!
//! ```text
//! cargo run --example login
//! ```
//!
//! Then open <http://localhost:3000>, or use curl with a cookie jar:
//!
//! ```text
//! curl -i -H 'accept: text/html' http://localhost:3000/         # 303 to /login?next=%2F
//! curl -i http://localhost:3000/                                # 401: not a browser
//! token=$(curl -s -c jar -b jar http://localhost:3000/login | grep -o 'csrf_token" value="[^"]*' | cut -d'"' -f3)
//! curl -i -c jar -b jar -d username=alice -d password=password -d csrf_token=$token http://localhost:3000/login
//! curl -c jar -b jar http://localhost:3000/                     # Hello, alice + "Welcome, alice!"
//! curl -i -c jar -b jar -d username=alice -d password=password http://localhost:3000/login   # 403: no token
//! ```
//!
//! The cookie is `Secure` by default; browsers and curl still accept it from `http://localhost`.
//! It is also `SameSite=Lax`, so most cross-site forms cannot even send it; the CSRF token
//! covers the rest (a page on another port of the same host, say).

mod app;

use tower_typed_sessions::{MemoryStore, SessionLayer};

#[tokio::main]
async fn main() {
    let sessions = SessionLayer::new(MemoryStore::<app::Auth>::new());
    app::serve(app::router(sessions)).await;
}
