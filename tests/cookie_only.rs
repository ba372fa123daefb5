//! Cookie-only sessions (`SessionLayer::cookie_only`): the session sealed in its cookie, with no
//! store. Tampering, truncation, forgery, key rotation, size, expiry from inside the payload,
//! the re-seal rule, flash and regenerate, replay after logout (with and without a revocation
//! list), and the races a revocation list must settle as a store does (logout against login,
//! a write from an older copy against a login, two logins), on the memory store, SQLite and
//! Redis as the list.
#![cfg(feature = "axum")]

#[cfg(feature = "sqlite")]
#[path = "support/postgres_server.rs"]
mod postgres_server;
#[cfg(feature = "redis")]
#[path = "support/redis_server.rs"]
mod redis_server;
mod support;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Body,
    extract::Query,
    http::{header, Request, StatusCode},
    routing::get,
    Router,
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use serde::Deserialize;
use support::{send, Client, Counter, Event, Events, Reply};
use tower_typed_sessions::{
    CookieOnly, Expect, Forward, Key, Lifetime, LoadOptions, Loaded, MemoryStore, Record,
    RejectReason, Revoked, SessionError, SessionHandle, SessionKey, SessionLayer, Store,
    StoreError, WriteOutcome, MAX_COOKIE_BYTES,
};

fn key(seed: u8) -> Key {
    Key::from_bytes(&[seed; 32]).unwrap()
}

fn layer(keys: &[u8]) -> SessionLayer<Counter, CookieOnly> {
    SessionLayer::cookie_only(keys.iter().map(|seed| key(*seed))).unwrap()
}

#[derive(Deserialize)]
struct Params {
    #[serde(default)]
    delay: u64,
    #[serde(default)]
    bytes: usize,
}

/// The lifecycle routes, plus `/grow?bytes=n` (stores `n` bytes of data) and `?delay=ms` on the
/// writing routes (the handler waits before it returns, so that concurrent requests reach the
/// layer's write in a chosen order).
fn app(layer: SessionLayer<Counter, CookieOnly>) -> Router {
    Router::new()
        .route(
            "/login-after",
            get(
                |s: SessionHandle<Counter>, Query(p): Query<Params>| async move {
                    tokio::time::sleep(Duration::from_millis(p.delay)).await;
                    let fresh = s.is_new();
                    s.log_in(|c| c.user = Some("alice".into()));
                    format!("logged in new={fresh}")
                },
            ),
        )
        .route(
            "/logout-after",
            get(
                |s: SessionHandle<Counter>, Query(p): Query<Params>| async move {
                    tokio::time::sleep(Duration::from_millis(p.delay)).await;
                    s.log_out();
                    "logged out"
                },
            ),
        )
        .route(
            "/show-after",
            get(
                |s: SessionHandle<Counter>, Query(p): Query<Params>| async move {
                    tokio::time::sleep(Duration::from_millis(p.delay)).await;
                    s.flash_message("notice").unwrap_or_else(|| "-".into())
                },
            ),
        )
        .route(
            "/incr-after",
            get(
                |s: SessionHandle<Counter>, Query(p): Query<Params>| async move {
                    tokio::time::sleep(Duration::from_millis(p.delay)).await;
                    s.update(|c| c.count += 1);
                    "incremented"
                },
            ),
        )
        .route(
            "/grow",
            get(
                |s: SessionHandle<Counter>, Query(p): Query<Params>| async move {
                    s.update(|c| c.user = Some("x".repeat(p.bytes)));
                    "grown"
                },
            ),
        )
        .route(
            "/remember",
            get(|s: SessionHandle<Counter>| async move {
                s.remember(Lifetime::new(
                    Duration::from_secs(2),
                    Duration::from_secs(10),
                ));
                s.update(|c| c.count += 1);
                "remembered"
            }),
        )
        .route(
            "/who",
            get(|s: SessionHandle<Counter>| async move {
                let (count, user) = s.read(|c| (c.count, c.user.clone()));
                format!("{count} {} new={}", user.unwrap_or_default(), s.is_new())
            }),
        )
        .merge(support::routes())
        .layer(layer)
}

/// The value of the live cookie a reply sets, if any.
fn sealed_value(reply: &Reply) -> Option<String> {
    let cookie = reply.set_cookie()?;
    if cookie.contains("Max-Age=0") {
        return None;
    }
    Some(cookie.split(';').next()?.split_once('=')?.1.to_owned())
}

async fn get_with(app: &Router, path: impl AsRef<str>, value: &str) -> Reply {
    send(
        app,
        Request::get(path.as_ref())
            .header(header::COOKIE, format!("id={value}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn the_session_lives_in_the_cookie() {
    let app = app(layer(&[1]));
    let mut client = Client::new(app.clone());
    assert_eq!(
        client.get("/nothing").await.set_cookies(),
        Vec::<String>::new()
    );
    let first = client.get("/incr").await;
    let cookie = first.set_cookie().unwrap();
    for attribute in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(
        !cookie.contains("Max-Age"),
        "a browser-session cookie: {cookie}"
    );
    client.get("/incr").await;
    assert_eq!(client.get("/incr").await.body, "3");
    // A read well within the idle timeout re-seals nothing.
    let read = client.get("/read").await;
    assert_eq!(read.body, "3 new=false");
    assert!(read.set_cookies().is_empty());
    // The value hides the data (and the ID): nothing readable in it.
    let value = client.cookie.clone().unwrap();
    let raw = URL_SAFE_NO_PAD.decode(&value).unwrap();
    assert!(!String::from_utf8_lossy(&raw).contains("count"));
    // Another app with the same key reads it: there is no server-side state.
    let other = self::app(layer(&[1]));
    assert_eq!(get_with(&other, "/read", &value).await.body, "3 new=false");
}

/// Every byte of the sealed value flipped (in its decoded form, and as base64 text), every
/// truncation and an extension: refused as `Unsealable`, a fresh session, the cookie cleared.
#[tokio::test]
async fn tampered_and_truncated_cookies_are_refused() {
    let events = Events::default();
    let app = app(events.attach(layer(&[1])));
    let mut client = Client::new(app.clone());
    client.get("/incr").await;
    let value = client.cookie.clone().unwrap();
    events.take();

    let refused = |reply: &Reply| reply.body == "0 new=true" && reply.is_removal("id");
    let raw = URL_SAFE_NO_PAD.decode(&value).unwrap();
    let mut forgeries = Vec::new();
    for at in 0..raw.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut forged = raw.clone();
            forged[at] ^= flip;
            forgeries.push(URL_SAFE_NO_PAD.encode(&forged));
        }
    }
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for at in 0..value.len() {
        let mut text = value.clone().into_bytes();
        text[at] = alphabet[(alphabet.iter().position(|c| *c == text[at]).unwrap() + 17) % 64];
        forgeries.push(String::from_utf8(text).unwrap());
    }
    for len in 0..value.len() {
        forgeries.push(value[..len].to_owned());
    }
    forgeries.push(format!("{value}A"));
    forgeries.push(format!("{value}AAAA"));
    let mut refusals = 0;
    for forged in &forgeries {
        // A one-character change in the last base64 digit may only touch its unused low bits,
        // which decode to the same bytes: that is the same cookie, not a forgery.
        if URL_SAFE_NO_PAD.decode(forged).ok() == Some(raw.clone()) {
            continue;
        }
        let reply = get_with(&app, "/read", forged).await;
        assert!(
            refused(&reply),
            "accepted a forged cookie: {} {:?}",
            reply.body,
            reply.set_cookies()
        );
        refusals += 1;
    }
    let seen = events.take();
    let unsealable = seen
        .iter()
        .filter(|e| matches!(e, Event::Rejected(RejectReason::Unsealable, None)))
        .count();
    assert_eq!(unsealable, refusals, "{seen:?}");
    println!(
        "{refusals} forgeries of a {}-byte sealed value refused",
        raw.len()
    );
    assert!(refusals > 3 * raw.len(), "{refusals} forgeries tried");
    // The genuine cookie still works.
    assert_eq!(get_with(&app, "/read", &value).await.body, "1 new=false");
}

/// A value sealed for another cookie name, by another key, or in an older layout does not open.
#[tokio::test]
async fn another_key_or_cookie_name_does_not_open() {
    let mut client = Client::new(app(layer(&[1])));
    client.get("/incr").await;
    let value = client.cookie.clone().unwrap();
    let stranger = app(layer(&[9]));
    assert_eq!(
        get_with(&stranger, "/read", &value).await.body,
        "0 new=true"
    );
    let renamed = app(layer(&[1]).try_with_cookie_name("sid").unwrap());
    let reply = send(
        &renamed,
        Request::get("/read")
            .header(header::COOKIE, format!("sid={value}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.body, "0 new=true");
    // A plain session ID is not a sealed session.
    let id = tower_typed_sessions::SessionId::generate().unwrap();
    assert_eq!(
        get_with(&app(layer(&[1])), "/read", id.expose_secret())
            .await
            .body,
        "0 new=true"
    );
}

/// The first key seals, every key opens; a cookie sealed with an older key is re-sealed with the
/// first on its next request, and opens once the old key is gone.
#[tokio::test]
async fn key_rotation() {
    let mut client = Client::new(app(layer(&[1])));
    client.get("/incr").await;
    let old = client.cookie.clone().unwrap();

    let rotated = app(layer(&[2, 1]));
    let reply = get_with(&rotated, "/read", &old).await;
    assert_eq!(reply.body, "1 new=false");
    let resealed = sealed_value(&reply).expect("re-sealed with the new key");
    assert_ne!(resealed, old);

    let only_new = app(layer(&[2]));
    assert_eq!(
        get_with(&only_new, "/read", &resealed).await.body,
        "1 new=false"
    );
    assert_eq!(get_with(&only_new, "/read", &old).await.body, "0 new=true");
    // Already under the first key: nothing to re-seal.
    assert!(get_with(&rotated, "/read", &resealed)
        .await
        .set_cookies()
        .is_empty());
    assert_eq!(
        SessionLayer::<Counter, CookieOnly>::cookie_only([]).err(),
        Some(tower_typed_sessions::ConfigError::NoKeys)
    );
}

/// A session that would not fit in one cookie is refused with the error response and a typed
/// error; nothing is truncated and the client keeps its cookie. Measures the usable payload.
#[tokio::test]
async fn a_session_too_large_for_its_cookie() {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&errors);
    let app = app(layer(&[1]).on_error(move |err| {
        let too_large = matches!(err, SessionError::CookieTooLarge { size, limit } if *size > *limit && *limit == MAX_COOKIE_BYTES);
        seen.lock().unwrap().push(too_large);
    }));
    let mut client = Client::new(app.clone());
    client.get("/incr").await;
    let before = client.cookie.clone().unwrap();

    let reply = client.get("/grow?bytes=5000").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.set_cookies().is_empty());
    assert_eq!(*errors.lock().unwrap(), [true]);
    assert_eq!(client.cookie.as_deref(), Some(before.as_str()));
    assert_eq!(client.get("/read").await.body, "1 new=false");

    // The largest string that fits, by bisection; its cookie is within the limit.
    let (mut fits, mut fails) = (0usize, 5000usize);
    while fails - fits > 1 {
        let mid = (fits + fails) / 2;
        let reply = get_with(&app, &format!("/grow?bytes={mid}"), &before).await;
        if reply.status == StatusCode::OK {
            fits = mid;
        } else {
            fails = mid;
        }
    }
    let reply = get_with(&app, &format!("/grow?bytes={fits}"), &before).await;
    let value = sealed_value(&reply).unwrap();
    assert!("id=".len() + value.len() <= MAX_COOKIE_BYTES);
    assert!(
        "id=".len() + value.len() > MAX_COOKIE_BYTES - 4,
        "the limit is used up to the last base64 digit"
    );
    println!("usable payload with cookie name `id`: a {fits}-character string in the session");
    // README.md states this figure: a session `{"count":1,"user":"…"}` with 2,888 characters.
    assert_eq!(fits, 2888);
    assert_eq!(
        get_with(&app, "/who", &value).await.body.len(),
        fits + " new=false".len() + 2
    );
}

/// Expiry is read from inside the payload: a cookie kept past its idle timeout or its deadline
/// is refused however long its Max-Age says, and the re-seal rule slides it only when less than
/// half of the idle timeout is left.
#[tokio::test]
async fn expiry_is_enforced_from_inside_the_payload() {
    // Times in units of 150 ms: idle 8 units, deadline 26 (long enough steps for a loaded
    // machine).
    let unit = |n: u64| Duration::from_millis(150 * n);
    let idle = unit(8);
    let events = Events::default();
    let app = app(events.attach(
        layer(&[1])
            .with_idle_timeout(idle)
            .with_absolute_lifetime(unit(26))
            .with_persistent(true),
    ));
    let mut client = Client::new(app.clone());
    let created = client.get("/incr").await;
    let first = client.cookie.clone().unwrap();
    assert!(
        created.set_cookie().unwrap().contains("Max-Age=2"),
        "{:?}",
        created.set_cookie()
    );

    // More than half left: no re-seal.
    tokio::time::sleep(unit(2)).await;
    assert!(client.get("/read").await.set_cookies().is_empty());
    // Less than half left: re-sealed, with a later expiry.
    tokio::time::sleep(unit(3)).await;
    let slid = client.get("/read").await;
    assert!(
        slid.set_cookie().is_some(),
        "re-sealed past half the idle timeout"
    );
    let second = client.cookie.clone().unwrap();
    assert_ne!(first, second);
    // The first cookie, kept by a client that ignores Max-Age, dies at its own sealed expiry.
    tokio::time::sleep(unit(4)).await;
    events.take();
    assert_eq!(get_with(&app, "/read", &first).await.body, "0 new=true");
    assert!(matches!(&events.take()[..], [Event::Expired(_)]));
    // The slid one is alive (used within its idle timeout).
    assert_eq!(client.get("/read").await.body, "1 new=false");

    // Used every 3 units it outlives the idle timeout, but not its deadline.
    let mut alive = 0;
    for _ in 0..12 {
        tokio::time::sleep(unit(3)).await;
        if client.get("/read").await.body == "1 new=false" {
            alive += 1;
        } else {
            break;
        }
    }
    assert!((3..8).contains(&alive), "{alive} reads before the deadline");
    assert!(events.take().iter().any(|e| matches!(e, Event::Expired(_))));

    // Idle for longer than the idle timeout: expired.
    let mut client = Client::new(app.clone());
    client.get("/incr").await;
    tokio::time::sleep(idle + unit(1)).await;
    let reply = client.get("/read").await;
    assert_eq!(reply.body, "0 new=true");
    assert!(reply.is_removal("id"));
}

/// "Remember me" on a cookie-only session: its own idle timeout and deadline are sealed with it,
/// its cookie becomes persistent, and it outlives the layer's idle timeout.
#[tokio::test]
async fn a_remembered_session_keeps_its_own_lifetime() {
    let app = app(layer(&[1]).with_idle_timeout(Duration::from_millis(300)));
    let mut client = Client::new(app.clone());
    client.get("/incr").await;
    let plain = client.cookie.clone().unwrap();
    let reply = client.get("/remember").await;
    let cookie = reply.set_cookie().unwrap();
    assert!(cookie.contains("Max-Age=2"), "{cookie}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(client.get("/read").await.body, "2 new=false");
    // The plain copy from before died at the layer's idle timeout.
    assert_eq!(get_with(&app, "/read", &plain).await.body, "0 new=true");
}

/// A flash is shown once: the response that shows it re-seals the cookie without it. A copy of
/// the cookie that carried it shows it again (documented: a cookie cannot be taken back). A
/// session that held only the flash is cleared once it is shown.
#[tokio::test]
async fn flash_and_regenerate_flows() {
    let events = Events::default();
    let app = app(events.attach(layer(&[1])));
    let mut client = Client::new(app.clone());
    client.get("/incr").await;
    client.get("/flash?msg=saved").await;
    let carrying = client.cookie.clone().unwrap();
    let shown = client.get("/show").await;
    assert_eq!(shown.body, "saved");
    assert!(shown.set_cookie().is_some(), "re-sealed without the flash");
    assert_eq!(client.get("/show").await.body, "-");
    assert_eq!(get_with(&app, "/show", &carrying).await.body, "saved");

    // keep_flash carries it one more request.
    client.get("/flash?msg=again").await;
    assert_eq!(client.get("/keep").await.body, "again");
    assert_eq!(client.get("/show").await.body, "again");
    assert_eq!(client.get("/show").await.body, "-");

    // Flash only: shown, then the cookie is cleared.
    let mut anonymous = Client::new(app.clone());
    anonymous.get("/flash?msg=hello").await;
    let reply = anonymous.get("/show").await;
    assert_eq!(reply.body, "hello");
    assert!(reply.is_removal("id"));

    // A regenerate keeps the data, issues a new ID and reports both keys.
    events.take();
    let before = client.get("/who").await.body;
    let old = client.cookie.clone().unwrap();
    client.get("/login-after").await;
    assert_ne!(client.cookie.as_deref(), Some(old.as_str()));
    assert_eq!(
        client.get("/who").await.body,
        before.replace("  ", " alice ")
    );
    let seen = events.take();
    let Some(Event::Regenerated(from, to, _)) =
        seen.iter().find(|e| matches!(e, Event::Regenerated(..)))
    else {
        panic!("no regenerated event: {seen:?}");
    };
    assert_ne!(from, to);
    // Without a revocation list the old cookie still opens (documented limit).
    assert_eq!(get_with(&app, "/who", &old).await.body, before);

    // Flash and regenerate in one request: the new cookie carries the flash.
    client.get("/flash-and-regenerate").await;
    assert_eq!(client.get("/show").await.body, "moved");
}

/// Replay after logout. Without a revocation list a copy of the cookie stays valid until its
/// own expiry (the documented outcome); with one, the copy is refused, and so is the old cookie
/// of a regenerated session.
#[tokio::test]
async fn replay_after_logout() {
    let mut client = Client::new(app(layer(&[1])));
    client.get("/incr").await;
    let copy = client.cookie.clone().unwrap();
    assert!(client.get("/logout").await.is_removal("id"));
    assert_eq!(client.get("/read").await.body, "0 new=true");
    assert_eq!(
        get_with(&client.app, "/read", &copy).await.body,
        "1 new=false"
    );

    let events = Events::default();
    let list = MemoryStore::<Revoked>::new();
    let app = app(events.attach(layer(&[1]).with_revocation_list(list.clone())));
    let mut client = Client::new(app.clone());
    client.get("/incr").await;
    let before_login = client.cookie.clone().unwrap();
    client.get("/login-after").await;
    let copy = client.cookie.clone().unwrap();
    events.take();
    assert!(client.get("/logout").await.is_removal("id"));
    assert!(events
        .take()
        .iter()
        .any(|e| matches!(e, Event::Deleted(..))));
    let reply = get_with(&app, "/read", &copy).await;
    assert_eq!(reply.body, "0 new=true");
    assert!(reply.is_removal("id"));
    assert!(matches!(
        &events.take()[..],
        [Event::Rejected(RejectReason::Revoked, Some(_))]
    ));
    // The old cookie of the regenerated session: refused, but not cleared (the response could
    // overtake the login's).
    let reply = get_with(&app, "/read", &before_login).await;
    assert_eq!(reply.body, "0 new=true");
    assert!(reply.set_cookies().is_empty());
    assert!(matches!(
        &events.take()[..],
        [Event::Rejected(RejectReason::Regenerated, Some(_))]
    ));
    // The list holds the two ended IDs until their deadline, hashed or not as the store says.
    assert_eq!(list.count().await.unwrap(), 2);

    // Through a regenerated session's old cookie: a write is refused (409), a logout ends the
    // session where it moved.
    let mut client = Client::new(app.clone());
    client.get("/incr").await;
    let old = client.cookie.clone().unwrap();
    client.get("/login-after").await;
    let new = client.cookie.clone().unwrap();
    let write = get_with(&app, "/incr", &old).await;
    assert_eq!(write.status, StatusCode::CONFLICT);
    assert!(write.set_cookies().is_empty());
    assert_eq!(get_with(&app, "/who", &new).await.body, "1 alice new=false");
    assert!(get_with(&app, "/logout", &old).await.is_removal("id"));
    assert_eq!(get_with(&app, "/who", &new).await.body, "0  new=true");
}

/// A regenerated session's old cookie that arrives long after the login is a leftover: cleared,
/// so a client holding it (a response that left before the login and arrived after it) is not
/// stuck with a cookie whose every write is refused.
#[tokio::test]
async fn a_leftover_old_cookie_is_cleared_once_the_login_settled() {
    let app = app(layer(&[1]).with_revocation_list(MemoryStore::<Revoked>::new()));
    let mut client = Client::new(app.clone());
    client.get("/incr").await;
    let old = client.cookie.clone().unwrap();
    client.get("/login-after").await;
    // At once: refused, not cleared, writes refused.
    let reply = get_with(&app, "/read", &old).await;
    assert_eq!(reply.body, "0 new=true");
    assert!(reply.set_cookies().is_empty());
    assert_eq!(
        get_with(&app, "/incr", &old).await.status,
        StatusCode::CONFLICT
    );
    tokio::time::sleep(Duration::from_millis(5200)).await;
    let reply = get_with(&app, "/read", &old).await;
    assert_eq!(reply.body, "0 new=true");
    assert!(reply.is_removal("id"));
    let write = get_with(&app, "/incr", &old).await;
    assert_eq!(write.status, StatusCode::OK, "a fresh session");
    assert!(sealed_value(&write).is_some());
    // The login's session is untouched.
    assert_eq!(client.get("/who").await.body, "1 alice new=false");
}

/// The revocation list failing fails the request closed: the error response, no Set-Cookie.
#[tokio::test]
async fn a_failing_revocation_list_fails_closed() {
    let list = Flaky::over(MemoryStore::<Revoked>::new());
    let app = app(layer(&[1]).with_revocation_list(list.clone()));
    let mut client = Client::new(app.clone());
    client.get("/incr").await;
    let cookie = client.cookie.clone();
    list.fail(true);
    for path in ["/read", "/incr", "/login-after", "/logout"] {
        let reply = client.get(path).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        assert!(reply.set_cookies().is_empty(), "{path}");
    }
    assert_eq!(client.cookie, cookie);
    list.fail(false);
    assert_eq!(client.get("/read").await.body, "1 new=false");

    // The writes' own list calls failing: a logout's or login's revoke, a save's check.
    list.fail_creates(true);
    for path in ["/logout", "/login-after"] {
        let reply = client.get(path).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        assert!(reply.set_cookies().is_empty(), "{path}");
    }
    list.fail_creates(false);
    list.fail_finds_after(1);
    let reply = client.get("/incr").await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.set_cookies().is_empty());
    list.fail_finds_after(-1);
    assert_eq!(client.cookie, cookie);
    assert_eq!(client.get("/read").await.body, "1 new=false");
}

// ---- Races, settled by the revocation list ------------------------------------------------

/// A `Store<Revoked>` that logs each call's kind in the order calls reach the store, and fails
/// on demand.
#[derive(Clone)]
struct Flaky<St> {
    inner: St,
    log: Arc<Mutex<Vec<(&'static str, SessionKey)>>>,
    failing: Arc<std::sync::atomic::AtomicBool>,
    failing_creates: Arc<std::sync::atomic::AtomicBool>,
    /// Lookups to let through before lookups fail (negative: never fail them).
    finds_before_failing: Arc<std::sync::atomic::AtomicI64>,
}

impl<St> Flaky<St> {
    fn over(inner: St) -> Self {
        Self {
            inner,
            log: Arc::default(),
            failing: Arc::default(),
            failing_creates: Arc::default(),
            finds_before_failing: Arc::new(std::sync::atomic::AtomicI64::new(-1)),
        }
    }

    fn fail(&self, fail: bool) {
        self.failing
            .store(fail, std::sync::atomic::Ordering::SeqCst);
    }

    fn fail_creates(&self, fail: bool) {
        self.failing_creates
            .store(fail, std::sync::atomic::Ordering::SeqCst);
    }

    /// Lets `n` more lookups through, then fails every lookup (until reset with a negative).
    fn fail_finds_after(&self, n: i64) {
        self.finds_before_failing
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    fn check(&self, call: &'static str, key: &SessionKey) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        let down = self.failing.load(SeqCst)
            || (call.is_empty() && self.failing_creates.load(SeqCst))
            || (call == "find"
                && matches!(
                    self.finds_before_failing
                        .fetch_update(SeqCst, SeqCst, |n| (n > 0).then_some(n - 1)),
                    Err(0)
                ));
        if down {
            return Err(StoreError::Backend("revocation list down".into()));
        }
        if !call.is_empty() {
            self.log.lock().unwrap().push((call, *key));
        }
        Ok(())
    }

    fn take_log(&self) -> Vec<(&'static str, SessionKey)> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

impl<St: Store<Revoked>> Store<Revoked> for Flaky<St> {
    async fn load(
        &self,
        key: &SessionKey,
        options: LoadOptions,
    ) -> Result<Loaded<Revoked>, StoreError> {
        self.check("find", key)?;
        self.inner.load(key, options).await
    }
    /// Logged once the store answered: a lookup logged after it sees the entry.
    async fn create(&self, record: &Record<Revoked>) -> Result<WriteOutcome, StoreError> {
        self.check("", &record.key)?;
        let outcome = self.inner.create(record).await;
        self.log.lock().unwrap().push(("revoke", record.key));
        outcome
    }
    async fn save(
        &self,
        record: &Record<Revoked>,
        expect: Expect,
    ) -> Result<WriteOutcome, StoreError> {
        self.inner.save(record, expect).await
    }
    async fn regenerate(
        &self,
        old: &SessionKey,
        record: &Record<Revoked>,
        expect: Expect,
        forward: Forward,
    ) -> Result<WriteOutcome, StoreError> {
        self.inner.regenerate(old, record, expect, forward).await
    }
    async fn delete(&self, key: &SessionKey, expect: Expect) -> Result<WriteOutcome, StoreError> {
        self.inner.delete(key, expect).await
    }
    fn contents_stay_in_process(&self) -> bool {
        self.inner.contents_stay_in_process()
    }
}

/// Handler delays (ms) tried on each side: every pair, so each request reaches the list first in
/// some runs and second in others (the log says which, and the test checks both happened).
const DELAYS: [u64; 4] = [0, 8, 25, 60];

/// A logout racing a login of the same session: whatever order they reach the revocation list
/// in, no cookie either response (or the client) holds afterwards opens a live session.
async fn logout_racing_login<St: Store<Revoked> + Clone>(list: St) {
    let list = Flaky::over(list);
    let app = app(layer(&[1]).with_revocation_list(list.clone()));
    let (mut login_first, mut logout_first) = (0, 0);
    for login_delay in DELAYS {
        for logout_delay in DELAYS {
            let mut client = Client::new(app.clone());
            client.get("/incr").await;
            let old = client.cookie.clone().unwrap();
            list.take_log();
            let (login, logout) = tokio::join!(
                get_with(&app, format!("/login-after?delay={login_delay}"), &old),
                get_with(&app, format!("/logout-after?delay={logout_delay}"), &old),
            );
            let revokes = list
                .take_log()
                .iter()
                .filter(|(call, _)| *call == "revoke")
                .count();
            let login_new = sealed_value(&login);
            assert!(logout.is_removal("id"), "the logout clears the cookie");
            if login.body.ends_with("new=true") {
                // The login opened the session after the logout ended it: it rightly started a
                // new session of its own. Not a race.
                assert_eq!(get_with(&app, "/who", &old).await.body, "0  new=true");
                continue;
            }
            for cookie in [Some(old.clone()), login_new.clone()].into_iter().flatten() {
                let reply = get_with(&app, "/who", &cookie).await;
                assert!(
                    reply.body.ends_with("new=true"),
                    "a session survived its logout (login after {login_delay} ms, logout after {logout_delay} ms): {}",
                    reply.body
                );
            }
            // Which request revoked the old ID first shows in what the login answered: a new
            // cookie if it was first; if the logout was, nothing (the session had ended). A
            // logout second follows the login to its new ID: one more revoke.
            match (&login_new, login.status) {
                (Some(_), StatusCode::OK) => {
                    assert_eq!(
                        revokes, 3,
                        "old ID by the login, then old and new by the logout"
                    );
                    login_first += 1;
                }
                (None, StatusCode::OK) => {
                    assert_eq!(revokes, 2);
                    logout_first += 1;
                }
                (_, status) => panic!("login answered {status}"),
            }
        }
    }
    assert!(
        login_first > 0 && logout_first > 0,
        "both orders: {login_first} login first, {logout_first} logout first"
    );
}

/// A request from a copy opened before a login that sends the session's cookie (a save, or a
/// re-seal after showing a flash), racing the login: if it reaches the list after the login it
/// sends no cookie (a save is answered `withheld`, 409), so the login's cookie stays the
/// client's; if before, its cookie carries the old ID, which the login then revokes. Either way
/// only the login's session lives.
async fn stale_cookie_racing_login<St: Store<Revoked> + Clone>(
    list: St,
    path: &str,
    with_flash: bool,
    withheld: StatusCode,
) {
    let list = Flaky::over(list);
    let app = app(layer(&[1]).with_revocation_list(list.clone()));
    let (mut refused, mut overtaken) = (0, 0);
    for login_delay in DELAYS {
        for other_delay in DELAYS {
            let mut client = Client::new(app.clone());
            client.get("/incr").await;
            if with_flash {
                client.get("/flash?msg=hi").await;
            }
            let old = client.cookie.clone().unwrap();
            list.take_log();
            let (login, other) = tokio::join!(
                get_with(&app, format!("/login-after?delay={login_delay}"), &old),
                get_with(&app, format!("{path}?delay={other_delay}"), &old),
            );
            let log = list.take_log();
            let new = sealed_value(&login).expect("the login goes through");
            assert_eq!(login.body, "logged in new=false");
            assert_eq!(get_with(&app, "/who", &new).await.body, "1 alice new=false");
            match sealed_value(&other) {
                None => {
                    assert_eq!(other.status, withheld, "{path} after the login");
                    refused += 1;
                }
                Some(stale) => {
                    // The last lookup is the write's check, logged when it started; the revoke
                    // is logged when it finished.
                    let revoked_at = log.iter().position(|(call, _)| *call == "revoke").unwrap();
                    let checked_at = log.iter().rposition(|(call, _)| *call == "find").unwrap();
                    assert!(
                        checked_at < revoked_at,
                        "{path} sent a cookie though its check started after the login's revoke: {log:?}"
                    );
                    let reply = get_with(&app, "/who", &stale).await;
                    assert!(reply.body.ends_with("new=true"), "{}", reply.body);
                    overtaken += 1;
                }
            }
        }
    }
    assert!(
        refused > 0 && overtaken > 0,
        "{path}, both orders: {refused} after the login, {overtaken} before it"
    );
}

/// Two logins of one session: exactly one moves it, the other is answered 409 without a cookie.
async fn two_logins<St: Store<Revoked> + Clone>(list: St) {
    let app = app(layer(&[1]).with_revocation_list(list));
    for (a, b) in [(0, 20), (20, 0), (0, 0)] {
        let mut client = Client::new(app.clone());
        client.get("/incr").await;
        let old = client.cookie.clone().unwrap();
        let (first, second) = tokio::join!(
            get_with(&app, format!("/login-after?delay={a}"), &old),
            get_with(&app, format!("/login-after?delay={b}"), &old),
        );
        let issued: Vec<_> = [&first, &second]
            .into_iter()
            .filter_map(sealed_value)
            .collect();
        assert_eq!(issued.len(), 1, "{} {}", first.status, second.status);
        let statuses = [first.status, second.status];
        assert!(statuses.contains(&StatusCode::CONFLICT) && statuses.contains(&StatusCode::OK));
    }
}

async fn every_race<St: Store<Revoked> + Clone>(list: St) {
    logout_racing_login(list.clone()).await;
    stale_cookie_racing_login(list.clone(), "/incr-after", false, StatusCode::CONFLICT).await;
    stale_cookie_racing_login(list.clone(), "/show-after", true, StatusCode::OK).await;
    two_logins(list).await;
}

#[tokio::test]
async fn races_on_a_memory_revocation_list() {
    every_race(MemoryStore::<Revoked>::new()).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn races_on_a_sqlite_revocation_list() {
    use postgres_server::TempSqlite;
    use tower_typed_sessions::SqliteStore;

    let file = TempSqlite::new();
    let pool = support::sqlite_pool(file.path()).await;
    let list = SqliteStore::<Revoked>::new(pool);
    list.migrate().await.unwrap();
    every_race(list).await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn races_on_a_redis_revocation_list() {
    use redis_server::RedisServer;
    use tower_typed_sessions::RedisStore;

    let server = RedisServer::start();
    let list = RedisStore::<Revoked>::connect(&server.url()).await.unwrap();
    every_race(list.clone()).await;
    // Entries live in Redis until the sessions' deadlines (a TTL on each).
    let keys: Vec<String> = server.command(&["KEYS", "*"]);
    assert!(!keys.is_empty());
    for key in keys {
        let ttl: i64 = server.command(&["PTTL", &key]);
        assert!(ttl > 0, "{key} has no expiry");
    }
}
