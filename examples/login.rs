//! A login flow: a protected page, a login form, logout, and flash messages.
//!
//! - `GET /` is protected: logged in, it greets you (plus any flash message) and offers a logout
//!   button; otherwise it redirects (303) to `/login`.
//! - `GET /login` shows the login form and any flash message (a failed login, "logged out").
//! - `POST /login` checks the form. **Demo rule:** any non-empty username is accepted with the
//!   password `password`. On success the session gets a new ID (`regenerate`, against session
//!   fixation), remembers the user, flashes a welcome and redirects to `/`. With "keep me signed
//!   in" ticked, this one session gets a lifetime of its own (30 days idle, 90 at most) and a
//!   persistent cookie; other sessions keep the layer's (a browser-session cookie, 1 hour idle).
//! - `POST /logout` deletes the session, flashes "You have been logged out" (which lands in a new,
//!   flash-only session) and redirects to `/login`.
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
//! curl -i -c jar -b jar http://localhost:3000/                   # 303 to /login
//! curl -i -c jar -b jar -d username=alice -d password=password http://localhost:3000/login
//! curl -c jar -b jar http://localhost:3000/                      # Hello, alice + "Welcome, alice!"
//! curl -c jar -b jar http://localhost:3000/                      # Hello, alice (the flash is gone)
//! curl -i -c jar -b jar -X POST http://localhost:3000/logout     # 303 to /login
//! curl -c jar -b jar http://localhost:3000/login                 # "You have been logged out"
//! ```
//!
//! The cookie is `Secure` by default; browsers and curl still accept it from `http://localhost`.
//! It is also `SameSite=Lax`, so a cross-site form cannot post to `/logout` with it.

use axum::{
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
    Form, Router,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;

use tower_typed_sessions::{Lifetime, MemoryStore, Session, SessionHandle, SessionLayer};

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// What this app keeps per session: who is logged in, if anyone.
#[derive(Clone, Default, Serialize, Deserialize)]
struct Auth {
    user: Option<String>,
}

impl Session for Auth {}

/// The login form. Missing fields become empty strings, so they fail like a wrong password
/// instead of being rejected by the extractor.
#[derive(Deserialize)]
struct Credentials {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    /// The "keep me signed in" checkbox: present only when ticked.
    #[serde(default)]
    remember: Option<String>,
}

/// The protected page.
async fn home(session: SessionHandle<Auth>) -> Response {
    let Some(user) = session.read(|auth| auth.user.clone()) else {
        return Redirect::to("/login").into_response(); // 303 See Other
    };
    let body = format!(
        "<h1>Hello, {user}</h1>\
         {flash}\
         <form method=\"post\" action=\"/logout\">\
         <button type=\"submit\" id=\"logout\">Log out</button>\
         </form>",
        user = escape(&user),
        flash = flash_html(&session),
    );
    page("Home", &body).into_response()
}

async fn login_form(session: SessionHandle<Auth>) -> Html<String> {
    let body = format!(
        "<h1>Log in</h1>\
         {flash}\
         <form method=\"post\" action=\"/login\" id=\"login-form\">\
         <label>Username <input name=\"username\" autocomplete=\"username\"></label>\
         <label>Password <input name=\"password\" type=\"password\" \
         autocomplete=\"current-password\"></label>\
         <label><input name=\"remember\" type=\"checkbox\" value=\"1\"> Keep me signed in</label>\
         <button type=\"submit\">Log in</button>\
         </form>\
         <p>Demo: any username, password <code>password</code>.</p>",
        flash = flash_html(&session),
    );
    page("Log in", &body)
}

async fn login(session: SessionHandle<Auth>, Form(form): Form<Credentials>) -> Redirect {
    let name = form.username.trim();
    // The demo rule. A real app looks the user up and verifies a password hash.
    if name.is_empty() || form.password != "password" {
        // Shown by the next request: the login page we redirect to.
        session.flash("error", "Wrong username or password.");
        return Redirect::to("/login");
    }
    // The privilege level changes: move the session to a new ID so that an ID planted before the
    // login (session fixation) is worthless. The data is kept.
    session.regenerate();
    session.update(|auth| auth.user = Some(name.to_owned()));
    if form.remember.is_some() {
        // This session only: 30 days without use, 90 at most, and a cookie the browser keeps.
        session.remember(Lifetime::new(30 * DAY, 90 * DAY));
    }
    session.flash("notice", format!("Welcome, {name}!"));
    Redirect::to("/")
}

async fn logout(session: SessionHandle<Auth>) -> Redirect {
    // Deletes the session from the store and sends a removal cookie. The handle then acts as a
    // new, empty session, so this flash starts a new (flash-only) session that the login page
    // consumes.
    session.delete();
    session.flash("notice", "You have been logged out.");
    Redirect::to("/login")
}

/// The flash messages visible on this request, in one element with `id="flash"` (or nothing).
fn flash_html(session: &SessionHandle<Auth>) -> String {
    let messages = session.flash_messages();
    if messages.is_empty() {
        return String::new();
    }
    let items: String = messages
        .iter()
        .map(|m| format!("<p class=\"{}\">{}</p>", escape(&m.key), escape(&m.message)))
        .collect();
    format!("<div id=\"flash\">{items}</div>")
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body>{body}</body></html>"
    ))
}

/// Escapes text for HTML element content and quoted attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[tokio::main]
async fn main() {
    let app = Router::new()
        .route("/", get(home))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .layer(SessionLayer::new(MemoryStore::<Auth>::new()));

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
