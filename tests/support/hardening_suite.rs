//! The hardening guarantees, written once over HTTP and generic over the store, so that memory,
//! one Redis and a Redis Cluster run the same checks.
#![allow(dead_code, unreachable_pub)]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{body::Body, http::Request, routing::get, Router};
use time::OffsetDateTime;
use tokio::sync::oneshot;
use tower_typed_sessions::{
    Concurrency, Expect, Forward, IdsAtRest, Key, LoadOptions, Loaded, Record, RejectReason,
    SessionHandle, SessionId, SessionKey, SessionLayer, Store, StoreError, WriteOutcome,
};

use crate::support::{get_with_cookie, send, Client, Counter};

type Gate = Arc<Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>>;

fn racing_app<St: Store<Counter> + Clone>(layer: SessionLayer<Counter, St>, gate: Gate) -> Router {
    crate::support::routes()
        .route(
            // Loads, tells the test it has loaded, waits for the test, then writes.
            "/gated-incr",
            get(move |s: SessionHandle<Counter>| {
                let gate = gate.clone();
                async move {
                    let (loaded, go) = gate.lock().unwrap().take().expect("a gate per race");
                    let _ = loaded.send(());
                    let _ = go.await;
                    s.update(|c| c.count += 1000);
                    "written"
                }
            }),
        )
        .route(
            // A read-modify-write with a window, as a real handler doing I/O would have.
            "/slow-incr",
            get(|s: SessionHandle<Counter>| async move {
                let seen = s.read(|c| c.count);
                tokio::time::sleep(Duration::from_millis(3)).await;
                s.update(|c| c.count = seen + 1);
                (seen + 1).to_string()
            }),
        )
        .route(
            "/read-only",
            get(|s: SessionHandle<Counter>| async move { s.is_read_only().to_string() }),
        )
        .layer(layer)
}

/// The key `store` keeps the session with cookie ID `id` under, with the layer's default
/// `IdsAtRest::StoreDefault`: plain when the store's contents stay in the process (memory),
/// hashed otherwise (Redis).
pub fn default_key<St: Store<Counter>>(store: &St, id: &SessionId) -> SessionKey {
    if store.contents_stay_in_process() {
        SessionKey::plain(id)
    } else {
        SessionKey::hashed(id)
    }
}

/// What `store` holds under `key`, read without sliding or taking the flash.
pub async fn peek<St: Store<Counter>>(store: &St, key: &SessionKey) -> Loaded<Counter> {
    store
        .load(key, LoadOptions::at(OffsetDateTime::now_utc()))
        .await
        .expect("load")
}

/// `races` times: a request loads the session, a logout (or a login that regenerates) completes,
/// then the first request saves. The session must stay dead (logout) or the old ID must stay
/// dead (login: its key only forwards, and the slow write is refused rather than undo the
/// login). Returns how many resurrections were seen (the caller asserts zero).
pub async fn no_resurrection<St: Store<Counter> + Clone>(store: St, races: usize) -> usize {
    let gate: Gate = Arc::default();
    let app = racing_app(SessionLayer::new(store.clone()), gate.clone());
    let mut resurrections = 0;
    for race in 0..races {
        let mut client = Client::new(app.clone());
        client.get("/incr").await;
        let id = client.id().expect("a session");
        let key = default_key(&store, &id);
        let cookie = format!("id={}", id.expose_secret());
        let (loaded_tx, loaded_rx) = oneshot::channel();
        let (go_tx, go_rx) = oneshot::channel();
        *gate.lock().unwrap() = Some((loaded_tx, go_rx));
        let slow = tokio::spawn({
            let app = app.clone();
            let cookie = cookie.clone();
            async move { send(&app, get_with_cookie("/gated-incr", &cookie)).await }
        });
        loaded_rx.await.expect("the slow request loaded");
        let path = if race % 2 == 0 { "/logout" } else { "/login" };
        let winner = send(&app, get_with_cookie(path, &cookie)).await;
        assert_eq!(winner.status, 200);
        go_tx.send(()).expect("the slow request waits");
        let slow = slow.await.expect("slow request");
        // After a logout the slow write is dropped (last write wins, 200); after a login it is
        // refused (409): its copy predates the login and must not undo it.
        let expected = if path == "/logout" { 200 } else { 409 };
        assert_eq!(slow.status, expected, "{path}: the slow write's answer");
        let old_alive = matches!(peek(&store, &key).await, Loaded::Active(_));
        let replay = send(&app, get_with_cookie("/read", &cookie)).await;
        if old_alive || replay.body != "0 new=true" || !slow.set_cookies().is_empty() {
            resurrections += 1;
        }
        if path == "/login" {
            // The moved session keeps what the login wrote; the slow copy did not land.
            let new = winner.issued_id().expect("the login's cookie");
            match peek(&store, &default_key(&store, &new)).await {
                Loaded::Active(record) => assert_eq!(
                    record.data.count, 1,
                    "the slow write must not overwrite the moved session"
                ),
                other => panic!("the moved session is gone: {other:?}"),
            }
        }
    }
    resurrections
}

/// The counter as `/read` shows it (the body starts with it).
async fn counter(client: &mut Client) -> u32 {
    client
        .get("/read")
        .await
        .body
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// How many of the request tasks ended in success.
async fn successes(tasks: Vec<tokio::task::JoinHandle<bool>>) -> usize {
    let mut successes = 0;
    for task in tasks {
        if task.await.unwrap() {
            successes += 1;
        }
    }
    successes
}

/// 64 concurrent increments of one counter, each client retrying on 409 until it succeeds.
/// Returns (final value, successful responses, conflicts seen).
pub async fn optimistic_increments<St: Store<Counter> + Clone>(store: St) -> (u32, usize, usize) {
    let conflicts = Arc::new(Mutex::new(0usize));
    let seen = conflicts.clone();
    let layer = SessionLayer::new(store)
        .with_concurrency(Concurrency::optimistic())
        .on_conflict(move |_| *seen.lock().unwrap() += 1);
    let app = racing_app(layer, Gate::default());
    let mut client = Client::new(app.clone());
    client.get("/incr").await;
    client.get("/read").await;
    let cookie = format!("id={}", client.id().unwrap().expose_secret());
    let before = counter(&mut client).await;
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let app = app.clone();
        let cookie = cookie.clone();
        tasks.push(tokio::spawn(async move {
            for _attempt in 0..10_000 {
                let reply = send(&app, get_with_cookie("/slow-incr", &cookie)).await;
                match reply.status.as_u16() {
                    200 => {
                        assert!(reply.set_cookies().is_empty());
                        return true;
                    }
                    409 => {
                        assert!(
                            reply.set_cookies().is_empty(),
                            "no Set-Cookie on a conflict"
                        );
                        tokio::task::yield_now().await;
                    }
                    other => panic!("unexpected status {other}"),
                }
            }
            false
        }));
    }
    let successes = successes(tasks).await;
    let after = counter(&mut client).await;
    let conflicts = *conflicts.lock().unwrap();
    (after - before, successes, conflicts)
}

/// The same 64 concurrent increments under last-write-wins (no retries needed: every response is
/// 200). Returns (final value, successful responses).
pub async fn last_write_wins_increments<St: Store<Counter> + Clone>(store: St) -> (u32, usize) {
    let app = racing_app(SessionLayer::new(store), Gate::default());
    let mut client = Client::new(app.clone());
    client.get("/incr").await;
    let cookie = format!("id={}", client.id().unwrap().expose_secret());
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let app = app.clone();
        let cookie = cookie.clone();
        tasks.push(tokio::spawn(async move {
            send(&app, get_with_cookie("/slow-incr", &cookie))
                .await
                .status
                == 200
        }));
    }
    let successes = successes(tasks).await;
    let after = counter(&mut client).await;
    (after - 1, successes)
}

/// Wraps any store and counts the loads it receives.
#[derive(Clone)]
pub struct Counting<S> {
    pub inner: S,
    loads: Arc<std::sync::atomic::AtomicUsize>,
}

impl<S> Counting<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            loads: Arc::default(),
        }
    }

    pub fn loads(&self) -> usize {
        self.loads.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl<S: Store<Counter>> Store<Counter> for Counting<S> {
    async fn load(
        &self,
        key: &SessionKey,
        options: LoadOptions,
    ) -> Result<Loaded<Counter>, StoreError> {
        self.loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.load(key, options).await
    }
    async fn create(&self, r: &Record<Counter>) -> Result<WriteOutcome, StoreError> {
        self.inner.create(r).await
    }
    async fn save(&self, r: &Record<Counter>, expect: Expect) -> Result<WriteOutcome, StoreError> {
        self.inner.save(r, expect).await
    }
    async fn regenerate(
        &self,
        old: &SessionKey,
        r: &Record<Counter>,
        expect: Expect,
        forward: Forward,
    ) -> Result<WriteOutcome, StoreError> {
        self.inner.regenerate(old, r, expect, forward).await
    }
    async fn delete(&self, key: &SessionKey, expect: Expect) -> Result<WriteOutcome, StoreError> {
        self.inner.delete(key, expect).await
    }
    fn contents_stay_in_process(&self) -> bool {
        self.inner.contents_stay_in_process()
    }
    async fn count(&self) -> Result<usize, StoreError> {
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
        self.inner.index_owner(owner, key, until).await
    }
    async fn unindex_owner(&self, owner: &str, key: &SessionKey) -> Result<(), StoreError> {
        self.inner.unindex_owner(owner, key).await
    }
    async fn owner_keys(&self, owner: &str) -> Result<Vec<SessionKey>, StoreError> {
        self.inner.owner_keys(owner).await
    }
}

fn key(byte: u8) -> Key {
    Key::from_bytes(&[byte; 32]).unwrap()
}

fn cookie_value(reply: &crate::support::Reply) -> String {
    let cookie = reply.set_cookie().expect("a Set-Cookie");
    cookie
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("id=")
        .unwrap()
        .to_owned()
}

/// Signed cookies with key rotation. Returns the number of forged or unsigned cookies tried
/// (all must have been rejected without a store lookup).
pub async fn signed_cookies_and_rotation<St: Store<Counter> + Clone>(store: St) -> usize {
    let store = Counting::new(store);
    let rejected = Arc::new(Mutex::new(Vec::new()));
    let sink = rejected.clone();
    let signed_by = |keys: Vec<Key>| {
        let sink = sink.clone();
        crate::support::routes().layer(
            SessionLayer::new(store.clone())
                .with_signing_keys(keys)
                .on_rejected(move |reason, _| sink.lock().unwrap().push(reason)),
        )
    };
    let old_app = signed_by(vec![key(1)]);
    let reply = send(&old_app, Request::get("/incr").body(Body::empty()).unwrap()).await;
    let signed = cookie_value(&reply);
    let (id_part, signature) = signed.split_once('.').expect("id.signature");
    assert_eq!((id_part.len(), signature.len()), (43, 43));
    let read = |app: &Router, value: String| {
        let app = app.clone();
        async move { send(&app, get_with_cookie("/read", &format!("id={value}"))).await }
    };
    assert_eq!(read(&old_app, signed.clone()).await.body, "1 new=false");

    // Forged, unsigned, re-signed by an unknown key, swapped: rejected, no lookup.
    let other = SessionId::generate().unwrap();
    let foreign_app = signed_by(vec![key(9)]);
    let foreign = cookie_value(
        &send(
            &foreign_app,
            Request::get("/incr").body(Body::empty()).unwrap(),
        )
        .await,
    );
    let attempts = vec![
        id_part.to_owned(),
        format!("{id_part}."),
        format!("{id_part}.{}", other.expose_secret()),
        format!("{}.{signature}", other.expose_secret()),
        foreign.clone(),
        format!("{id_part}.{}", &signature[..42]),
    ];
    let loads_before = store.loads();
    rejected.lock().unwrap().clear();
    for attempt in &attempts {
        let reply = read(&old_app, attempt.clone()).await;
        assert_eq!(reply.body, "0 new=true", "{attempt}");
        assert!(
            reply.is_removal("id"),
            "{attempt}: the forged cookie is cleared: {:?}",
            reply.set_cookies()
        );
    }
    assert_eq!(
        store.loads(),
        loads_before,
        "no store lookup for a bad signature"
    );
    let reasons = rejected.lock().unwrap().clone();
    assert_eq!(reasons.len(), attempts.len());
    assert!(
        reasons.iter().all(|r| *r == RejectReason::BadSignature),
        "{reasons:?}"
    );

    // Rotation: key 2 now signs, key 1 still verifies; the old cookie is re-issued under key 2.
    let rotated_app = signed_by(vec![key(2), key(1)]);
    let reply = read(&rotated_app, signed.clone()).await;
    assert_eq!(
        reply.body, "1 new=false",
        "a cookie signed by the previous key still works"
    );
    let reissued = cookie_value(&reply);
    assert_ne!(reissued, signed);
    assert!(
        reissued.starts_with(&format!("{id_part}.")),
        "same session, new signature"
    );
    let reply = read(&rotated_app, reissued.clone()).await;
    assert_eq!(reply.body, "1 new=false");
    assert!(
        reply.set_cookies().is_empty(),
        "a current signature is not re-issued"
    );
    // Once key 1 is retired, its cookies stop working; the re-issued one keeps working.
    let retired_app = signed_by(vec![key(2)]);
    let reply = read(&retired_app, signed).await;
    assert_eq!(reply.body, "0 new=true");
    assert!(reply.is_removal("id"), "a retired key's cookie is cleared");
    assert_eq!(read(&retired_app, reissued).await.body, "1 new=false");
    attempts.len()
}

/// IDs hashed at rest: the store holds only the digest, and sending the digest back as a cookie
/// authenticates nothing. Checks plain SHA-256 and the keyed variant.
pub async fn hashed_ids_at_rest<St: Store<Counter> + Clone>(store: St) {
    for (label, mode) in [
        ("hash", IdsAtRest::Hash),
        ("keyed", IdsAtRest::KeyedHash(key(5))),
    ] {
        let app = crate::support::routes()
            .layer(SessionLayer::new(store.clone()).with_ids_at_rest(mode.clone()));
        let mut client = Client::new(app.clone());
        client.get("/incr").await;
        client.get("/incr").await;
        let raw = client.id().expect("cookie id");
        assert!(
            matches!(
                peek(&store, &SessionKey::plain(&raw)).await,
                Loaded::Missing
            ),
            "{label}: nothing is stored under the cookie's ID"
        );
        let digest = SessionKey::hashed(&raw);
        let stored = match peek(&store, &digest).await {
            Loaded::Active(record) => Some(record),
            _ => None,
        };
        match label {
            "hash" => {
                let record = stored.expect("stored under the SHA-256 digest");
                assert_eq!(record.data.count, 2);
                assert_eq!(record.key, digest);
                assert_ne!(record.key.as_str(), raw.expose_secret());
                let json = String::from_utf8(record.encode().unwrap()).unwrap();
                assert!(
                    !json.contains(raw.expose_secret()),
                    "the record does not hold the cookie"
                );
                // The store key sent back as a cookie is not a session.
                let replay = send(
                    &app,
                    get_with_cookie("/read", &format!("id={}", digest.as_str())),
                )
                .await;
                assert_eq!(replay.body, "0 new=true", "{label}");
                assert!(replay.is_removal("id"), "{label}");
            }
            _ => assert!(
                stored.is_none(),
                "{label}: the keyed digest differs from the plain one"
            ),
        }
        assert_eq!(client.get("/read").await.body, "2 new=false", "{label}");
        client.get("/logout").await;
    }
}

/// Regenerate grace window: within it, a request with the old cookie reads the new session
/// read-only (no flash, no cookie; a write is refused with 409; a logout ends the session); after
/// it, the old cookie is rejected as `Regenerated`, its writes are refused, and a logout through
/// it still ends the moved session.
pub async fn regenerate_grace_window<St: Store<Counter> + Clone>(store: St) {
    let rejected = Arc::new(Mutex::new(Vec::new()));
    let deleted = Arc::new(Mutex::new(Vec::new()));
    let (rejected_sink, deleted_sink) = (rejected.clone(), deleted.clone());
    let grace = Duration::from_millis(1000);
    let app = racing_app(
        SessionLayer::new(store.clone())
            .with_regenerate_grace(grace)
            .on_rejected(move |reason, _| rejected_sink.lock().unwrap().push(reason))
            .on_deleted(move |key, data: &Counter| {
                deleted_sink.lock().unwrap().push((*key, data.count))
            }),
        Gate::default(),
    );
    let mut client = Client::new(app.clone());
    client.get("/incr").await;
    let old_cookie = format!("id={}", client.id().unwrap().expose_secret());
    let started = std::time::Instant::now();
    client.get("/login").await;
    let new_id = client.id().unwrap();
    assert_ne!(format!("id={}", new_id.expose_secret()), old_cookie);
    let new_key = default_key(&store, &new_id);

    // Inside the window: the request with the old cookie reads the new session, read-only, and
    // gets no cookie that could overwrite the new one.
    let reply = send(&app, get_with_cookie("/read", &old_cookie)).await;
    assert_eq!(reply.body, "1 new=false");
    assert!(reply.set_cookies().is_empty());
    let reply = send(&app, get_with_cookie("/read-only", &old_cookie)).await;
    assert_eq!(reply.body, "true");
    assert_eq!(client.get("/read-only").await.body, "false");
    // A write through the old cookie is refused, so the client retries with its new cookie.
    for path in ["/incr", "/flash?msg=old", "/login"] {
        let reply = send(&app, get_with_cookie(path, &old_cookie)).await;
        assert_eq!(reply.status, 409, "{path}");
        assert!(reply.set_cookies().is_empty(), "{path}");
    }
    // The flash belongs to the request with the new cookie.
    client.get("/flash?msg=for-new").await;
    let reply = send(&app, get_with_cookie("/show", &old_cookie)).await;
    assert_eq!(reply.body, "-", "an old-cookie request sees no flash");
    assert_eq!(client.get("/show").await.body, "for-new");
    assert!(
        started.elapsed() < grace,
        "the checks above ran inside the window ({:?})",
        started.elapsed()
    );
    assert_eq!(
        client.get("/read").await.body,
        "1 new=false",
        "no write through the old cookie landed"
    );
    assert_eq!(
        client.id(),
        Some(new_id),
        "the new cookie was never replaced"
    );
    assert!(rejected.lock().unwrap().is_empty());

    // After the window: the old cookie is rejected, sees an empty session and may not write.
    tokio::time::sleep(grace.saturating_sub(started.elapsed()) + Duration::from_millis(300)).await;
    let reply = send(&app, get_with_cookie("/read", &old_cookie)).await;
    assert_eq!(reply.body, "0 new=true");
    assert!(
        reply.set_cookies().is_empty(),
        "the old cookie is not cleared: the response could overtake the login's"
    );
    assert_eq!(*rejected.lock().unwrap(), [RejectReason::Regenerated]);
    let reply = send(&app, get_with_cookie("/incr", &old_cookie)).await;
    assert_eq!(reply.status, 409);
    assert!(reply.set_cookies().is_empty());
    assert_eq!(client.get("/read").await.body, "1 new=false");

    // A logout through the old cookie still ends the session where it moved.
    assert!(deleted.lock().unwrap().is_empty());
    let reply = send(&app, get_with_cookie("/logout", &old_cookie)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(*deleted.lock().unwrap(), [(new_key, 1)]);
    assert!(matches!(peek(&store, &new_key).await, Loaded::Missing));
    assert_eq!(client.get("/read").await.body, "0 new=true");

    // And within the window, a logout with the old cookie ends the new session too.
    deleted.lock().unwrap().clear();
    let mut other = Client::new(app.clone());
    other.get("/incr").await;
    other.get("/incr").await;
    let old_cookie = format!("id={}", other.id().unwrap().expose_secret());
    other.get("/login").await;
    let moved = default_key(&store, &other.id().unwrap());
    let reply = send(&app, get_with_cookie("/logout", &old_cookie)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(*deleted.lock().unwrap(), [(moved, 2)]);
    assert_eq!(other.get("/read").await.body, "0 new=true");
}

/// The record size limit: a session that outgrows it is refused with the error response and a
/// typed error, nothing written, nothing truncated.
pub async fn record_size_limit<St: Store<Counter> + Clone>(store: St) {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let sink = errors.clone();
    let app = crate::support::routes()
        .route(
            "/grow",
            get(
                |s: SessionHandle<Counter>,
                 axum::extract::Query(q): axum::extract::Query<
                    std::collections::HashMap<String, usize>,
                >| async move {
                    let n = q.get("n").copied().unwrap_or(0);
                    s.update(|c| c.user = Some("x".repeat(n)));
                    "grown"
                },
            ),
        )
        .layer(
            SessionLayer::new(store.clone())
                .with_max_record_size(512)
                .on_error(move |e| sink.lock().unwrap().push(e.to_string())),
        );
    let mut client = Client::new(app);
    assert_eq!(client.get("/grow?n=10").await.status, 200);
    let id = client.id().unwrap();
    let reply = client.get("/grow?n=2000").await;
    assert_eq!(reply.status, 500);
    assert!(reply.set_cookies().is_empty());
    let seen = errors.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].contains("larger than the maximum of 512 bytes"),
        "{seen:?}"
    );
    assert_eq!(client.id(), Some(id));
    assert_eq!(
        client.get("/read").await.body,
        "0 new=false",
        "the stored session is untouched"
    );
    // A new session that is too large from the start is not created either.
    let mut fresh = Client::new(client.app.clone());
    assert_eq!(fresh.get("/grow?n=2000").await.status, 500);
    assert!(fresh.cookie.is_none());
}
