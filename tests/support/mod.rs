//! Shared test fixtures: a typed session, a store wrapper that counts calls and fails on demand,
//! an event recorder wired to every callback, and a small cookie-jar client over an axum router.
#![allow(dead_code, unreachable_pub)]

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
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
    Loaded, MemoryStore, Record, RejectReason, Session, SessionConfig, SessionHandle, SessionId,
    SessionLayer, Store, StoreError, WriteOutcome,
};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counter {
    pub count: u32,
    pub user: Option<String>,
}

impl Session for Counter {}

/// A MemoryStore behind a wrapper that logs every call, fails every call while `fail` is set, and
/// answers loads of the IDs in `undecodable` with a decode error.
#[derive(Clone, Default)]
pub struct TestStore {
    pub inner: MemoryStore<Counter>,
    calls: Arc<Mutex<Vec<&'static str>>>,
    fail: Arc<AtomicBool>,
    undecodable: Arc<Mutex<HashSet<SessionId>>>,
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

    pub fn make_undecodable(&self, id: SessionId) {
        self.undecodable.lock().unwrap().insert(id);
    }

    pub async fn get(&self, id: &SessionId) -> Option<Record<Counter>> {
        match self.inner.load(id).await.unwrap() {
            Loaded::Active(record) => Some(record),
            _ => None,
        }
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
    async fn create(&self, record: &Record<Counter>) -> Result<WriteOutcome, StoreError> {
        self.enter("create")?;
        self.inner.create(record).await
    }

    async fn load(&self, id: &SessionId) -> Result<Loaded<Counter>, StoreError> {
        self.enter("load")?;
        if self.undecodable.lock().unwrap().contains(id) {
            return Err(StoreError::Decode("expected a Counter record".into()));
        }
        self.inner.load(id).await
    }

    async fn load_and_touch(
        &self,
        id: &SessionId,
        idle: Duration,
    ) -> Result<Loaded<Counter>, StoreError> {
        self.enter("load_and_touch")?;
        if self.undecodable.lock().unwrap().contains(id) {
            return Err(StoreError::Decode("expected a Counter record".into()));
        }
        self.inner.load_and_touch(id, idle).await
    }

    async fn touch(
        &self,
        id: &SessionId,
        expires_at: OffsetDateTime,
    ) -> Result<WriteOutcome, StoreError> {
        self.enter("touch")?;
        self.inner.touch(id, expires_at).await
    }

    async fn save(&self, record: &Record<Counter>) -> Result<WriteOutcome, StoreError> {
        self.enter("save")?;
        self.inner.save(record).await
    }

    async fn save_if_revision(
        &self,
        record: &Record<Counter>,
        expected: u64,
    ) -> Result<WriteOutcome, StoreError> {
        self.enter("save_if_revision")?;
        self.inner.save_if_revision(record, expected).await
    }

    async fn delete(&self, id: &SessionId) -> Result<WriteOutcome, StoreError> {
        self.enter("delete")?;
        self.undecodable.lock().unwrap().remove(id);
        self.inner.delete(id).await
    }

    async fn regenerate(
        &self,
        old: &SessionId,
        record: &Record<Counter>,
    ) -> Result<WriteOutcome, StoreError> {
        self.enter("regenerate")?;
        self.inner.regenerate(old, record).await
    }

    async fn regenerate_with_grace(
        &self,
        old: &SessionId,
        record: &Record<Counter>,
        grace: Duration,
    ) -> Result<WriteOutcome, StoreError> {
        self.enter("regenerate_with_grace")?;
        self.inner.regenerate_with_grace(old, record, grace).await
    }

    async fn moved_to(&self, id: &SessionId) -> Result<Option<SessionId>, StoreError> {
        self.enter("moved_to")?;
        self.inner.moved_to(id).await
    }

    async fn count(&self) -> Result<usize, StoreError> {
        self.enter("count")?;
        self.inner.count().await
    }

    async fn index_owner(
        &self,
        owner: &str,
        id: &SessionId,
        until: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.enter("index_owner")?;
        self.inner.index_owner(owner, id, until).await
    }

    async fn unindex_owner(&self, owner: &str, id: &SessionId) -> Result<(), StoreError> {
        self.enter("unindex_owner")?;
        self.inner.unindex_owner(owner, id).await
    }

    async fn owner_ids(&self, owner: &str) -> Result<Vec<SessionId>, StoreError> {
        self.enter("owner_ids")?;
        self.inner.owner_ids(owner).await
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Started(SessionId),
    Loaded(SessionId),
    Client(SessionId),
    Deleted(SessionId, Counter),
    Expired(SessionId),
    Regenerated(SessionId, SessionId, Counter),
    Rejected(RejectReason, Option<SessionId>),
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

    /// Registers a recorder on every callback of `config`.
    pub fn attach(&self, config: SessionConfig<Counter>) -> SessionConfig<Counter> {
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
        config
            .on_started(move |id, _| a.push(Event::Started(*id)))
            .on_loaded(move |id, _| b.push(Event::Loaded(*id)))
            .on_client(move |id, _| c.push(Event::Client(*id)))
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

pub fn app(store: TestStore, config: SessionConfig<Counter>) -> Router {
    routes().layer(SessionLayer::from_config(store, config).expect("valid config"))
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
