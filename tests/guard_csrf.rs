//! The login guard, the login/logout helpers and CSRF tokens, over real HTTP (an axum server on
//! 127.0.0.1 and a hyper client with its own cookie jar).

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    extract::Query,
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
    Form, Router,
};
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use serde::{Deserialize, Serialize};
use tower_typed_sessions::{
    local_redirect, CsrfRejection, MemoryStore, Session, SessionEvents, SessionHandle, SessionKey,
    SessionLayer, SessionManager, Unauthenticated,
};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Account {
    user: Option<String>,
    admin: bool,
}

impl Session for Account {
    fn owner(&self) -> Option<String> {
        self.user.clone()
    }
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
    #[serde(default)]
    next: Option<String>,
}

#[derive(Deserialize)]
struct Next {
    next: Option<String>,
}

/// The CSRF refusals the layer reported.
#[derive(Clone, Default)]
struct Refusals(Arc<Mutex<Vec<CsrfRejection>>>);

impl Refusals {
    fn take(&self) -> Vec<CsrfRejection> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl SessionEvents<Account> for Refusals {
    fn csrf_rejected(&self, reason: CsrfRejection, _key: Option<&SessionKey>) {
        self.0.lock().unwrap().push(reason);
    }
}

async fn login_page(session: SessionHandle<Account>, Query(q): Query<Next>) -> Response {
    match session.csrf_token() {
        Ok(token) => format!(
            "token={} next={}",
            token.as_str(),
            q.next.unwrap_or_default()
        )
        .into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

async fn login(session: SessionHandle<Account>, Form(form): Form<LoginForm>) -> Redirect {
    let admin = form.user == "root";
    session.log_in(|account| {
        account.user = Some(form.user.clone());
        account.admin = admin;
    });
    let next = form.next.as_deref().and_then(local_redirect).unwrap_or("/");
    Redirect::to(next)
}

async fn logout(session: SessionHandle<Account>) -> &'static str {
    session.log_out();
    "bye"
}

async fn token(session: SessionHandle<Account>) -> String {
    session
        .csrf_token()
        .map(|t| t.as_str().to_owned())
        .unwrap_or_default()
}

struct Server {
    addr: SocketAddr,
    manager: SessionManager<Account, MemoryStore<Account>>,
    refusals: Refusals,
}

async fn serve(idle: Duration, trusted: &[&str]) -> Server {
    serve_with_grace(idle, trusted, Duration::ZERO).await
}

async fn serve_with_grace(idle: Duration, trusted: &[&str], grace: Duration) -> Server {
    let refusals = Refusals::default();
    let sessions = SessionLayer::new(MemoryStore::<Account>::new())
        .with_idle_timeout(idle)
        .with_regenerate_grace(grace)
        .with_events(refusals.clone());
    let csrf = if trusted.is_empty() {
        sessions.csrf()
    } else {
        sessions
            .csrf()
            .with_trusted_origins(trusted.iter().copied())
    };
    let guarded = Router::new()
        .route("/orders", get(|| async { "orders" }))
        .route("/transfer", post(|| async { "transferred" }))
        .route_layer(sessions.require_login());
    let admin = Router::new()
        .route("/admin", get(|| async { "admin" }))
        .route_layer(
            sessions
                .require_login()
                .with_predicate(|a: &Account| a.admin),
        );
    let api = Router::new()
        .route("/api/orders", get(|| async { "orders" }))
        .route_layer(
            sessions
                .require_login()
                .with_unauthenticated(Unauthenticated::Status),
        );
    let app = Router::new()
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/token", get(token))
        .route("/echo", post(|| async { "echoed" }).put(|| async { "put" }))
        .merge(guarded)
        .merge(admin)
        .merge(api)
        .layer(csrf)
        .layer(sessions.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server {
        addr,
        manager: sessions.manager(),
        refusals,
    }
}

/// One user agent: a cookie jar of one session cookie, over real HTTP.
struct Agent {
    addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
    cookie: Option<String>,
}

struct Answer {
    status: StatusCode,
    location: Option<String>,
    body: String,
}

impl Agent {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            client: Client::builder(TokioExecutor::new()).build_http(),
            cookie: None,
        }
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        if let Some(cookie) = &self.cookie {
            request = request.header(header::COOKIE, cookie);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self
            .client
            .request(request.body(Full::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        for set in response.headers().get_all(header::SET_COOKIE) {
            let set = set.to_str().unwrap();
            if set.contains("Max-Age=0") {
                self.cookie = None;
            } else {
                self.cookie = Some(set.split(';').next().unwrap().to_owned());
            }
        }
        let status = response.status();
        let location = response
            .headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            location,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.send(Method::GET, path, headers, "").await
    }

    async fn post_form(&mut self, path: &str, form: &str, headers: &[(&str, &str)]) -> Answer {
        let mut all = vec![("content-type", "application/x-www-form-urlencoded")];
        all.extend_from_slice(headers);
        self.send(Method::POST, path, &all, form).await
    }

    /// Opens the login page and returns the token it shows.
    async fn token(&mut self) -> String {
        let body = self.get("/login", &[]).await.body;
        body.strip_prefix("token=")
            .and_then(|rest| rest.split(' ').next())
            .unwrap()
            .to_owned()
    }

    /// Logs in as `user` through the form, with the token the login page gave.
    async fn log_in(&mut self, user: &str) -> Answer {
        let token = self.token().await;
        self.post_form("/login", &format!("user={user}&csrf_token={token}"), &[])
            .await
    }
}

const HTML: (&str, &str) = ("accept", "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8");

#[tokio::test]
async fn the_guard_lets_only_logged_in_sessions_through() {
    let server = serve(Duration::from_secs(60), &[]).await;
    let mut agent = Agent::new(server.addr);

    // Anonymous: a browser is redirected with the path and query it asked for, encoded.
    let answer = agent.get("/orders?page=2&sort=a%20b", &[HTML]).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(
        answer.location.as_deref(),
        Some("/login?next=%2Forders%3Fpage%3D2%26sort%3Da%2520b")
    );
    // A script gets 401, and a route set to always answer with the status too.
    assert_eq!(
        agent
            .get("/orders", &[("accept", "application/json")])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        agent.get("/api/orders", &[HTML]).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Logged in: through, and back to where the guard sent it from.
    let token = agent.token().await;
    let next = "%2Forders%3Fpage%3D2";
    let answer = agent
        .post_form(
            "/login",
            &format!("user=alice&csrf_token={token}&next={next}"),
            &[],
        )
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(answer.location.as_deref(), Some("/orders?page=2"));
    assert_eq!(agent.get("/orders", &[HTML]).await.body, "orders");
    assert_eq!(agent.get("/api/orders", &[]).await.body, "orders");

    // A predicate: alice is no admin; root is.
    assert_eq!(
        agent.get("/admin", &[HTML]).await.status,
        StatusCode::SEE_OTHER
    );
    let mut root = Agent::new(server.addr);
    root.log_in("root").await;
    assert_eq!(root.get("/admin", &[HTML]).await.body, "admin");

    // Revoked: refused like an anonymous session.
    assert_eq!(server.manager.revoke_all("alice").await.unwrap(), 1);
    assert_eq!(
        agent.get("/orders", &[HTML]).await.status,
        StatusCode::SEE_OTHER
    );

    // Logged out: the old cookie opens nothing.
    let token = root.get("/token", &[]).await.body;
    let old_cookie = root.cookie.clone();
    let answer = root
        .post_form("/logout", &format!("csrf_token={token}"), &[])
        .await;
    assert_eq!(answer.body, "bye");
    root.cookie = old_cookie;
    assert_eq!(
        root.get("/admin", &[HTML]).await.status,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn the_guard_refuses_an_expired_session() {
    let server = serve(Duration::from_millis(300), &[]).await;
    let mut agent = Agent::new(server.addr);
    agent.log_in("alice").await;
    assert_eq!(agent.get("/orders", &[HTML]).await.body, "orders");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answer = agent.get("/orders", &[HTML]).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(answer.location.as_deref(), Some("/login?next=%2Forders"));
}

#[tokio::test]
async fn the_login_page_only_sends_users_back_to_this_site() {
    let server = serve(Duration::from_secs(60), &[]).await;
    for (next, expected) in [
        ("/orders", "/orders"),
        ("/orders?page=2", "/orders?page=2"),
        ("//evil.example", "/"),
        ("///evil.example", "/"),
        ("https://evil.example/", "/"),
        ("http:evil.example", "/"),
        ("/\\evil.example", "/"),
        ("\\\\evil.example", "/"),
        ("/\t/evil.example", "/"),
        ("/%2F%2Fevil.example", "/"),
        ("/%5Cevil.example", "/"),
        ("/%252F%252Fevil.example", "/"),
        ("/%0d%0aSet-Cookie:%20x=1", "/"),
        ("javascript:alert(1)", "/"),
        ("", "/"),
    ] {
        let mut agent = Agent::new(server.addr);
        let token = agent.token().await;
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("user", "alice")
            .append_pair("csrf_token", &token)
            .append_pair("next", next)
            .finish();
        let answer = agent.post_form("/login", &form, &[]).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{next:?}");
        assert_eq!(answer.location.as_deref(), Some(expected), "{next:?}");
    }
}

#[tokio::test]
async fn unsafe_requests_need_this_sessions_current_token() {
    let server = serve(Duration::from_secs(60), &[]).await;
    let refusals = &server.refusals;
    let mut alice = Agent::new(server.addr);
    let before_login = alice.token().await;

    // Safe methods never need it.
    assert_eq!(
        alice.get("/orders", &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert!(refusals.take().is_empty());

    // No token, a wrong one: refused.
    let answer = alice.post_form("/echo", "a=1", &[]).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(refusals.take(), [CsrfRejection::MissingToken]);
    let wrong = "A".repeat(43);
    let answer = alice
        .post_form("/echo", &format!("csrf_token={wrong}"), &[])
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(refusals.take(), [CsrfRejection::WrongToken]);
    let answer = alice
        .send(Method::PUT, "/echo", &[("x-csrf-token", "short")], "")
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(refusals.take(), [CsrfRejection::WrongToken]);

    // The right one, in the form or in the header.
    let answer = alice
        .post_form("/echo", &format!("a=1&csrf_token={before_login}"), &[])
        .await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "echoed")
    );
    let answer = alice
        .send(Method::PUT, "/echo", &[("x-csrf-token", &before_login)], "")
        .await;
    assert_eq!(answer.body, "put");

    // Another session's token is no good here, nor is a token without a session.
    let mut mallory = Agent::new(server.addr);
    let mallorys = mallory.token().await;
    let answer = alice
        .post_form("/echo", &format!("csrf_token={mallorys}"), &[])
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(refusals.take(), [CsrfRejection::WrongToken]);
    let mut nobody = Agent::new(server.addr);
    let answer = nobody
        .post_form("/echo", &format!("csrf_token={mallorys}"), &[])
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(refusals.take(), [CsrfRejection::NoSessionToken]);

    // A login regenerates the session, and its token: the one from before the login is dead.
    let answer = alice
        .post_form(
            "/login",
            &format!("user=alice&csrf_token={before_login}"),
            &[],
        )
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    let after_login = alice.get("/token", &[]).await.body;
    assert_ne!(
        after_login, before_login,
        "the token changes with the session ID"
    );
    let answer = alice
        .post_form("/transfer", &format!("csrf_token={before_login}"), &[])
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(refusals.take(), [CsrfRejection::WrongToken]);
    let answer = alice
        .post_form("/transfer", &format!("csrf_token={after_login}"), &[])
        .await;
    assert_eq!(answer.body, "transferred");
    assert!(refusals.take().is_empty());
}

#[tokio::test]
async fn another_origin_is_refused_even_with_the_token() {
    let server = serve(Duration::from_secs(60), &["https://app.example"]).await;
    let mut alice = Agent::new(server.addr);
    alice.log_in("alice").await;
    let token = alice.get("/token", &[]).await.body;
    let form = format!("csrf_token={token}");
    let own = format!("http://{}", server.addr);
    let own_page = format!("{own}/transfer-form");
    let cases = [
        (vec![("origin", own.as_str())], StatusCode::OK),
        (vec![("origin", "https://app.example")], StatusCode::OK),
        (
            vec![("origin", "http://evil.example")],
            StatusCode::FORBIDDEN,
        ),
        (vec![("origin", "null")], StatusCode::FORBIDDEN),
        (
            vec![("referer", "http://evil.example/page")],
            StatusCode::FORBIDDEN,
        ),
        (vec![("referer", own_page.as_str())], StatusCode::OK),
        // Neither header (old clients, privacy proxies): left to the token.
        (vec![], StatusCode::OK),
    ];
    for (headers, expected) in &cases {
        let answer = alice.post_form("/transfer", &form, headers).await;
        assert_eq!(answer.status, *expected, "{headers:?}");
    }
    let refused = server.refusals.take();
    assert_eq!(refused, [CsrfRejection::CrossOrigin; 3]);
}

#[tokio::test]
async fn an_old_cookie_within_the_grace_window_neither_gets_nor_uses_the_token() {
    let server = serve_with_grace(Duration::from_secs(60), &[], Duration::from_secs(30)).await;
    let mut victim = Agent::new(server.addr);
    victim.token().await;
    let planted = victim.cookie.clone();
    victim.log_in("alice").await;
    let current = victim.get("/token", &[]).await.body;
    assert_eq!(current.len(), 43);

    // The old cookie reads the logged-in session read-only (the grace window)...
    let mut old = Agent::new(server.addr);
    old.cookie = planted;
    assert_eq!(old.get("/orders", &[HTML]).await.body, "orders");
    // ...but is never shown its token, and cannot post with it.
    assert_eq!(
        old.get("/token", &[]).await.body,
        "",
        "no token for a read-only view"
    );
    let answer = old
        .post_form("/transfer", &format!("csrf_token={current}"), &[])
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(server.refusals.take(), [CsrfRejection::NoSessionToken]);
    // The new cookie still can.
    let answer = victim
        .post_form("/transfer", &format!("csrf_token={current}"), &[])
        .await;
    assert_eq!(answer.body, "transferred");
}

/// HTTP/2 names the host in `:authority` (the request URI), not in a `Host` header.
#[tokio::test]
async fn the_origin_check_reads_the_authority_when_there_is_no_host_header() {
    use tower::ServiceExt;
    let sessions = SessionLayer::new(MemoryStore::<Account>::new());
    let app = Router::new()
        .route("/token", get(token))
        .route("/echo", post(|| async { "echoed" }))
        .layer(sessions.csrf())
        .layer(sessions);
    let reply = app
        .clone()
        .oneshot(
            Request::get("http://app.example/token")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let cookie = reply.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let token = String::from_utf8(
        reply
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    for (origin, expected) in [
        ("http://app.example", StatusCode::OK),
        ("http://evil.example", StatusCode::FORBIDDEN),
    ] {
        let request = Request::post("http://app.example/echo")
            .header(header::COOKIE, &cookie)
            .header(header::ORIGIN, origin)
            .header("x-csrf-token", &token)
            .body(axum::body::Body::empty())
            .unwrap();
        assert!(request.headers().get(header::HOST).is_none());
        let reply = app.clone().oneshot(request).await.unwrap();
        assert_eq!(reply.status(), expected, "{origin}");
    }
}
