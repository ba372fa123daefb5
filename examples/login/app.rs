//! The login app's pages and handlers, shared by the `login` example (a memory store) and the
//! `cookie_only` example (no store): only the session layer differs.

use std::time::Duration;

use axum::{
    extract::Query,
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
    Form, Router,
};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tower_typed_sessions::{local_redirect, Lifetime, Session, SessionHandle, SessionLayer, Store};

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// What this app keeps per session: who is logged in, if anyone.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Auth {
    user: Option<String>,
}

impl Session for Auth {
    /// The guard lets a session through when it has an owner.
    fn owner(&self) -> Option<String> {
        self.user.clone()
    }
}

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
    /// Where to go after the login (from the guard's redirect), checked before use.
    #[serde(default)]
    next: String,
}

#[derive(Deserialize)]
struct Next {
    #[serde(default)]
    next: String,
}

/// The guarded page: the guard already checked that someone is logged in.
async fn home(session: SessionHandle<Auth>) -> Response {
    let user = session.read(|auth| auth.user.clone()).unwrap_or_default();
    let Ok(token) = session.csrf_token() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let body = format!(
        "<h1>Hello, {user}</h1>\
         {flash}\
         <form method=\"post\" action=\"/logout\">\
         <input type=\"hidden\" name=\"csrf_token\" value=\"{token}\">\
         <button type=\"submit\" id=\"logout\">Log out</button>\
         </form>",
        user = escape(&user),
        flash = flash_html(&session),
        token = token.as_str(),
    );
    page("Home", &body).into_response()
}

async fn login_form(session: SessionHandle<Auth>, Query(query): Query<Next>) -> Response {
    // Drawing the token stores it with the (possibly new) session: the form posts it back. A
    // request with the outdated cookie of a session that a login moved may not write, so it
    // gets no token: its post will be refused, and the browser's next request carries the new
    // cookie anyway.
    let token = session
        .csrf_token()
        .map(|token| token.as_str().to_owned())
        .unwrap_or_default();
    let body = format!(
        "<h1>Log in</h1>\
         {flash}\
         <form method=\"post\" action=\"/login\" id=\"login-form\">\
         <input type=\"hidden\" name=\"csrf_token\" value=\"{token}\">\
         <input type=\"hidden\" name=\"next\" value=\"{next}\">\
         <label>Username <input name=\"username\" autocomplete=\"username\"></label>\
         <label>Password <input name=\"password\" type=\"password\" \
         autocomplete=\"current-password\"></label>\
         <label><input name=\"remember\" type=\"checkbox\" value=\"1\"> Keep me signed in</label>\
         <button type=\"submit\">Log in</button>\
         </form>\
         <p>Demo: any username, password <code>password</code>.</p>",
        flash = flash_html(&session),
        next = escape(&query.next),
    );
    page("Log in", &body).into_response()
}

async fn login(session: SessionHandle<Auth>, Form(form): Form<Credentials>) -> Redirect {
    let name = form.username.trim();
    // The demo rule. A real app looks the user up and verifies a password hash.
    if name.is_empty() || form.password != "password" {
        // Shown by the next request: the login page we redirect to.
        session.flash("error", "Wrong username or password.");
        return Redirect::to("/login");
    }
    // Records the user and moves the session to a new ID, so that an ID planted before the
    // login (session fixation) is worthless; the data is kept and the CSRF token renewed.
    session.log_in(|auth| auth.user = Some(name.to_owned()));
    if form.remember.is_some() {
        // This session only: 30 days without use, 90 at most, and a cookie the browser keeps.
        session.remember(Lifetime::new(30 * DAY, 90 * DAY));
    }
    session.flash("notice", format!("Welcome, {name}!"));
    // Only back to a page of this site: `next` comes from a URL anyone can craft.
    Redirect::to(local_redirect(&form.next).unwrap_or("/"))
}

async fn logout(session: SessionHandle<Auth>) -> Redirect {
    // Deletes the session from the store and sends a removal cookie. The handle then acts as a
    // new, empty session, so this flash starts a new session that the login page consumes.
    session.log_out();
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

/// The app behind `sessions`: `/` guarded, `/login` and `/logout`, every POST checked for the
/// session's CSRF token.
pub fn router<St: Store<Auth>>(sessions: SessionLayer<Auth, St>) -> Router {
    Router::new()
        .route("/", get(home))
        // Only `/` needs a login; the guard sends others to `/login?next=...`.
        .route_layer(sessions.require_login())
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        // Every POST needs this session's token and a same-origin `Origin`.
        .layer(sessions.csrf())
        .layer(sessions)
}

/// Serves `app` on 127.0.0.1 (port `PORT`, default 3000) and prints the address.
pub async fn serve(app: Router) {
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
