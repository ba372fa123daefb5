//! Shared test fixtures: a typed session, a store wrapper that counts calls and fails on demand,
//! an event recorder wired to every callback, and a small cookie-jar client over an axum router.
#![allow(dead_code, unreachable_pub)]

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use axum::{
    body::Body,
    extract::Query,
    http::{header, HeaderMap, Request, StatusCode},
    routing::get,
    Router,
};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tower::ServiceExt;
use tower_typed_sessions::{
    Expect, Forward, LoadOptions, Loaded, MemoryStore, Record, RejectReason, Session,
    SessionHandle, SessionId, SessionKey, SessionLayer, Store, StoreError, WriteOutcome,
};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counter {
    pub count: u32,
    pub user: Option<String>,
}

impl Session for Counter {}

/// The store key of the session whose cookie carries `id`, on a store that keeps IDs plain at
/// rest (the memory store and [`TestStore`] under the default `IdsAtRest::StoreDefault`).
pub fn key(id: &SessionId) -> SessionKey {
    SessionKey::plain(id)
}

/// A MemoryStore behind a wrapper that logs every call, fails every call while `fail` is set, and
/// answers loads of the keys in `undecodable` with a decode error. It forwards the memory store's
/// optional capabilities too, so the layer treats it exactly like a `MemoryStore` (plain keys at
/// rest, an owner index, a count).
#[derive(Clone, Default)]
pub struct TestStore {
    pub inner: MemoryStore<Counter>,
    calls: Arc<Mutex<Vec<&'static str>>>,
    fail: Arc<AtomicBool>,
    undecodable: Arc<Mutex<HashSet<SessionKey>>>,
    load_delay: Arc<Mutex<std::time::Duration>>,
}

impl TestStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn calls(&self) -> Vec<&'static str> {
        self.calls.lock().unwrap().clone()
    }

    pub fn take_calls(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    pub fn set_failing(&self, fail: bool) {
        self.fail.store(fail, Ordering::SeqCst);
    }

    /// Makes every load wait `delay` before it answers, so that concurrent callers overlap.
    pub fn set_load_delay(&self, delay: std::time::Duration) {
        *self.load_delay.lock().unwrap() = delay;
    }

    pub fn make_undecodable(&self, key: SessionKey) {
        self.undecodable.lock().unwrap().insert(key);
    }

    /// The live record under `key`, read without sliding or taking the flash (and without
    /// logging a call).
    pub async fn get(&self, key: &SessionKey) -> Option<Record<Counter>> {
        match self.peek(key).await {
            Loaded::Active(record) => Some(record),
            _ => None,
        }
    }

    /// What the inner store holds under `key`, read without sliding or taking the flash.
    pub async fn peek(&self, key: &SessionKey) -> Loaded<Counter> {
        self.inner
            .load(key, LoadOptions::at(OffsetDateTime::now_utc()))
            .await
            .unwrap()
    }

    pub async fn count(&self) -> usize {
        self.inner.count().await.unwrap()
    }

    fn enter(&self, op: &'static str) -> Result<(), StoreError> {
        self.calls.lock().unwrap().push(op);
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("store is down on purpose".into()));
        }
        Ok(())
    }
}

impl Store<Counter> for TestStore {
    async fn load(
        &self,
        key: &SessionKey,
        options: LoadOptions,
    ) -> Result<Loaded<Counter>, StoreError> {
        self.enter("load")?;
        let delay = *self.load_delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self.undecodable.lock().unwrap().contains(key) {
            return Err(StoreError::Decode("expected a Counter record".into()));
        }
        self.inner.load(key, options).await
    }

    async fn create(&self, record: &Record<Counter>) -> Result<WriteOutcome, StoreError> {
        self.enter("create")?;
        self.inner.create(record).await
    }

    async fn save(
        &self,
        record: &Record<Counter>,
        expect: Expect,
    ) -> Result<WriteOutcome, StoreError> {
        self.enter("save")?;
        self.inner.save(record, expect).await
    }

    async fn regenerate(
        &self,
        old: &SessionKey,
        record: &Record<Counter>,
        expect: Expect,
        forward: Forward,
    ) -> Result<WriteOutcome, StoreError> {
        self.enter("regenerate")?;
        self.inner.regenerate(old, record, expect, forward).await
    }

    async fn delete(&self, key: &SessionKey, expect: Expect) -> Result<WriteOutcome, StoreError> {
        self.enter("delete")?;
        self.undecodable.lock().unwrap().remove(key);
        self.inner.delete(key, expect).await
    }

    fn contents_stay_in_process(&self) -> bool {
        self.inner.contents_stay_in_process()
    }

    async fn count(&self) -> Result<usize, StoreError> {
        self.enter("count")?;
        self.inner.count().await
    }

    fn supports_owner_index(&self) -> bool {
        self.inner.supports_owner_index()
    }

    async fn index_owner(
        &self,
        owner: &str,
        key: &SessionKey,
        until: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.enter("index_owner")?;
        self.inner.index_owner(owner, key, until).await
    }

    async fn unindex_owner(&self, owner: &str, key: &SessionKey) -> Result<(), StoreError> {
        self.enter("unindex_owner")?;
        self.inner.unindex_owner(owner, key).await
    }

    async fn owner_keys(&self, owner: &str) -> Result<Vec<SessionKey>, StoreError> {
        self.enter("owner_keys")?;
        self.inner.owner_keys(owner).await
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Started(SessionKey),
    Loaded(SessionKey),
    Client(SessionKey),
    Deleted(SessionKey, Counter),
    Expired(SessionKey),
    Regenerated(SessionKey, SessionKey, Counter),
    Rejected(RejectReason, Option<SessionKey>),
    Error(String),
}

#[derive(Clone, Default)]
pub struct Events(Arc<Mutex<Vec<Event>>>);

impl Events {
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    fn push(&self, event: Event) {
        self.0.lock().unwrap().push(event);
    }

    /// Registers a recorder on every callback of `layer`.
    pub fn attach<St: Store<Counter>>(
        &self,
        layer: SessionLayer<Counter, St>,
    ) -> SessionLayer<Counter, St> {
        let (a, b, c, d, e, f, g, h) = (
            self.clone(),
            self.clone(),
            self.clone(),
            self.clone(),
            self.clone(),
            self.clone(),
            self.clone(),
            self.clone(),
        );
        layer
            .on_started(move |id, _| a.push(Event::Started(*id)))
            .on_loaded(move |id, _| b.push(Event::Loaded(*id)))
            .on_cookie_sent(move |id, _| c.push(Event::Client(*id)))
            .on_deleted(move |id, data| d.push(Event::Deleted(*id, data.clone())))
            .on_expired(move |id, _| e.push(Event::Expired(*id)))
            .on_regenerated(move |old, new, data| {
                f.push(Event::Regenerated(*old, *new, data.clone()))
            })
            .on_rejected(move |reason, id| g.push(Event::Rejected(reason, id.copied())))
            .on_error(move |err| h.push(Event::Error(err.to_string())))
    }
}

#[derive(Deserialize)]
struct Msg {
    msg: String,
}

/// The routes every lifecycle test uses.
pub fn routes() -> Router {
    Router::new()
        .route(
            "/read",
            get(|s: SessionHandle<Counter>| async move {
                format!("{} new={}", s.read(|c| c.count), s.is_new())
            }),
        )
        .route(
            "/incr",
            get(|s: SessionHandle<Counter>| async move {
                s.update(|c| {
                    c.count += 1;
                    c.count
                })
                .to_string()
            }),
        )
        .route(
            "/login",
            get(|s: SessionHandle<Counter>| async move {
                s.regenerate();
                s.update(|c| c.user = Some("alice".into()));
                "logged in"
            }),
        )
        .route(
            "/logout",
            get(|s: SessionHandle<Counter>| async move {
                s.delete();
                "logged out"
            }),
        )
        .route(
            "/logout-with-flash",
            get(|s: SessionHandle<Counter>| async move {
                s.delete();
                s.flash("notice", "bye");
                "logged out"
            }),
        )
        .route(
            "/flash",
            get(
                |s: SessionHandle<Counter>, Query(q): Query<Msg>| async move {
                    s.flash("notice", q.msg);
                    "flashed"
                },
            ),
        )
        .route(
            "/flash-and-regenerate",
            get(|s: SessionHandle<Counter>| async move {
                s.flash("notice", "moved");
                s.regenerate();
                "regenerated"
            }),
        )
        .route(
            "/flash-now",
            get(|s: SessionHandle<Counter>| async move {
                s.flash_now("notice", "right now");
                s.flash_message("notice").unwrap_or_default()
            }),
        )
        .route(
            "/show",
            get(|s: SessionHandle<Counter>| async move {
                s.flash_message("notice").unwrap_or_else(|| "-".into())
            }),
        )
        .route(
            "/keep",
            get(|s: SessionHandle<Counter>| async move {
                s.keep_flash("notice");
                s.flash_message("notice").unwrap_or_else(|| "-".into())
            }),
        )
        .route("/nothing", get(|| async { "no session used" }))
        .route(
            "/expires-in",
            get(|s: SessionHandle<Counter>| async move {
                s.expires_in()
                    .map_or("none".to_string(), |d| d.as_millis().to_string())
            }),
        )
}

/// The lifecycle routes behind `layer`.
pub fn app(layer: SessionLayer<Counter, TestStore>) -> Router {
    routes().layer(layer)
}

/// One response, its body read.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    pub fn set_cookie(&self) -> Option<String> {
        let all = self.set_cookies();
        assert!(all.len() <= 1, "more than one Set-Cookie: {all:?}");
        all.into_iter().next()
    }

    /// The session ID a live Set-Cookie carries.
    pub fn issued_id(&self) -> Option<SessionId> {
        let cookie = self.set_cookie()?;
        let value = cookie.split(';').next()?.split_once('=')?.1;
        SessionId::parse(value)
    }

    /// The plain store key of the session a live Set-Cookie carries (see [`key`]).
    pub fn issued_key(&self) -> Option<SessionKey> {
        self.issued_id().as_ref().map(key)
    }

    /// Whether the response carries exactly one Set-Cookie, and it is the layer's removal
    /// cookie for `name` (empty value, `Max-Age=0`).
    pub fn is_removal(&self, name: &str) -> bool {
        self.set_cookie().is_some_and(|cookie| {
            cookie.starts_with(&format!("{name}=;")) && cookie.contains("Max-Age=0")
        })
    }
}

pub async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// A browser-like client: one cookie jar for the session cookie named `id`.
pub struct Client {
    pub app: Router,
    pub cookie: Option<String>,
}

impl Client {
    pub fn new(app: Router) -> Self {
        Self { app, cookie: None }
    }

    pub fn id(&self) -> Option<SessionId> {
        self.cookie.as_deref().and_then(SessionId::parse)
    }

    /// The plain store key of the client's session (see [`key`]).
    pub fn key(&self) -> Option<SessionKey> {
        self.id().as_ref().map(key)
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        let mut request = Request::get(path);
        if let Some(value) = &self.cookie {
            request = request.header(header::COOKIE, format!("id={value}"));
        }
        let reply = send(&self.app, request.body(Body::empty()).unwrap()).await;
        for cookie in reply.set_cookies() {
            let first = cookie.split(';').next().unwrap();
            let (name, value) = first.split_once('=').unwrap();
            assert_eq!(name, "id");
            if cookie.contains("Max-Age=0") {
                self.cookie = None;
            } else {
                self.cookie = Some(value.to_owned());
            }
        }
        reply
    }
}

pub fn get_with_cookie(path: &str, cookie: &str) -> Request<Body> {
    Request::get(path)
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .unwrap()
}

/// A GET that carries `id` as the session cookie (an old, replayed or forged one, say).
pub fn get_with_id(path: &str, id: &SessionId) -> Request<Body> {
    get_with_cookie(path, &format!("id={}", id.expose_secret()))
}

/// While the store is down: `/read`, `/incr`, `/login` and `/logout` each answer 500 within 3 s,
/// with no Set-Cookie and one `error` event; a request that needs no store is still served.
pub async fn requests_during_an_outage(client: &mut Client, events: &Events) {
    for path in ["/read", "/incr", "/login", "/logout"] {
        let started = std::time::Instant::now();
        let reply = client.get(path).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        assert!(
            reply.set_cookies().is_empty(),
            "{path}: no Set-Cookie during an outage"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "{path} answered in {:?}",
            started.elapsed()
        );
        let seen = events.take();
        assert!(matches!(&seen[..], [Event::Error(_)]), "{path}: {seen:?}");
    }
    // A request with no cookie and no write needs no store: it is still served.
    let reply = send(
        &client.app,
        Request::get("/nothing").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
}

/// A pool of four connections on the SQLite file at `path`, created if missing, in WAL mode.
#[cfg(feature = "sqlite")]
pub async fn sqlite_pool(path: &std::path::Path) -> sqlx::SqlitePool {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal);
    SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .expect("open the test's SQLite file")
}
