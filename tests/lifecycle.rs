//! The session lifecycle driven through the public API, over real HTTP requests into an axum
//! router wrapped in `SessionLayer`.

mod support;

use std::time::Duration;

use axum::http::{header, StatusCode};
use support::{
    app, get_with_cookie, get_with_id, key, send, Client, Counter, Event, Events, TestStore,
};
use tower_typed_sessions::{Loaded, RejectReason, SessionId, SessionLayer};

/// A layer with the default settings on `store`.
fn layer(store: &TestStore) -> SessionLayer<Counter, TestStore> {
    SessionLayer::new(store.clone())
}

#[tokio::test]
async fn request_that_only_reads_an_empty_session_touches_no_store_and_sets_no_cookie() {
    let store = TestStore::new();
    let mut client = Client::new(app(layer(&store)));
    for path in ["/read", "/nothing", "/show", "/expires-in"] {
        let reply = client.get(path).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.set_cookie(), None, "{path}");
        assert!(reply.headers.get(header::CACHE_CONTROL).is_none(), "{path}");
    }
    assert_eq!(store.calls(), Vec::<&str>::new());
    assert_eq!(store.count().await, 0);
}

#[tokio::test]
async fn first_write_creates_the_session_and_sets_a_secure_cookie() {
    let store = TestStore::new();
    let events = Events::default();
    let mut client = Client::new(app(events.attach(layer(&store))));
    let reply = client.get("/incr").await;
    assert_eq!(reply.body, "1");
    assert_eq!(store.take_calls(), ["create"]);
    let cookie = reply.set_cookie().expect("a session cookie");
    let id = reply.issued_id().expect("a well-formed id");
    assert_eq!(
        cookie,
        format!(
            "id={}; HttpOnly; SameSite=Lax; Secure; Path=/",
            id.expose_secret()
        )
    );
    assert!(
        !cookie.contains("Domain") && !cookie.contains("Max-Age") && !cookie.contains("Expires")
    );
    assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(reply.headers[header::VARY], "Cookie");
    let key = key(&id);
    assert_eq!(events.take(), [Event::Started(key), Event::Client(key)]);
    assert_eq!(store.get(&key).await.unwrap().data.count, 1);
}

#[tokio::test]
async fn existing_session_is_loaded_saved_only_when_changed_and_the_cookie_is_not_resent() {
    let store = TestStore::new();
    let events = Events::default();
    let mut client = Client::new(app(events.attach(layer(&store))));
    client.get("/incr").await;
    let key = client.key().unwrap();
    store.take_calls();
    events.take();

    let reply = client.get("/read").await;
    assert_eq!(reply.body, "1 new=false");
    assert_eq!(reply.set_cookie(), None);
    assert_eq!(
        store.take_calls(),
        ["load"],
        "one store call, sliding included"
    );
    assert_eq!(events.take(), [Event::Loaded(key)]);
    assert_eq!(
        reply.headers[header::VARY],
        "Cookie",
        "the response depends on the session"
    );

    let reply = client.get("/incr").await;
    assert_eq!(reply.body, "2");
    assert_eq!(reply.set_cookie(), None);
    assert_eq!(store.take_calls(), ["load", "save"]);
    assert_eq!(store.get(&key).await.unwrap().data.count, 2);
}

#[tokio::test]
async fn custom_cookie_attributes_are_written_and_persistent_cookies_carry_max_age() {
    let store = TestStore::new();
    let layer = layer(&store)
        .try_with_cookie_name("sid")
        .expect("a valid cookie name")
        .try_with_path("/app")
        .expect("a valid path")
        .try_with_domain("example.com")
        .expect("a valid domain")
        .try_with_secure(false)
        .expect("an unprefixed Lax cookie may drop Secure")
        .with_http_only(false)
        .try_with_same_site(tower_typed_sessions::SameSite::Strict)
        .expect("Strict is always valid")
        .with_persistent(true)
        .with_idle_timeout(Duration::from_secs(600));
    let app = app(layer);
    let reply = send(
        &app,
        axum::http::Request::get("/incr")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await;
    let cookie = reply.set_cookie().unwrap();
    let value = cookie
        .split(';')
        .next()
        .unwrap()
        .strip_prefix("sid=")
        .unwrap();
    assert!(SessionId::parse(value).is_some());
    let attributes: Vec<&str> = cookie.split("; ").skip(1).collect();
    assert!(attributes.contains(&"SameSite=Strict"), "{cookie}");
    assert!(attributes.contains(&"Path=/app"), "{cookie}");
    assert!(attributes.contains(&"Domain=example.com"), "{cookie}");
    assert!(
        !attributes.contains(&"Secure") && !attributes.contains(&"HttpOnly"),
        "{cookie}"
    );
    let max_age: u64 = attributes
        .iter()
        .find_map(|a| a.strip_prefix("Max-Age="))
        .unwrap()
        .parse()
        .unwrap();
    assert!((598..=600).contains(&max_age), "{max_age}");

    // With sliding on, a persistent cookie is re-announced on a read so its Max-Age slides too.
    let reply = send(&app, get_with_cookie("/read", &format!("sid={value}"))).await;
    let again = reply.set_cookie().expect("re-announced cookie");
    assert!(again.starts_with(&format!("sid={value};")));
    assert!(again.contains("Max-Age="));
    assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store");
}

#[tokio::test]
async fn malformed_cookies_are_cleared_without_a_store_lookup() {
    let store = TestStore::new();
    let events = Events::default();
    let app = app(events.attach(layer(&store)));
    let good = SessionId::generate().unwrap();
    let mut bad_alphabet = good.expose_secret().to_owned();
    bad_alphabet.replace_range(0..1, "+");
    let cases: Vec<Vec<u8>> = vec![
        b"id=".to_vec(),
        b"id=abc".to_vec(),
        format!("id={}", &good.expose_secret()[..42]).into_bytes(),
        format!("id={}A", good.expose_secret()).into_bytes(),
        format!("id={bad_alphabet}").into_bytes(),
        format!("id={}", "A".repeat(8 * 1024)).into_bytes(),
        [b"id=".as_slice(), &[0xff; 43]].concat(),
        [b"id=".as_slice(), &[0xc3, 0xa9], &[b'a'; 41]].concat(),
    ];
    for cookie in cases {
        let request = axum::http::Request::get("/read")
            .header(
                header::COOKIE,
                axum::http::HeaderValue::from_bytes(&cookie).unwrap(),
            )
            .body(axum::body::Body::empty())
            .unwrap();
        let reply = send(&app, request).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, "0 new=true");
        assert!(
            reply.is_removal("id"),
            "the stale cookie is cleared: {:?}",
            reply.set_cookies()
        );
        assert_eq!(
            events.take(),
            [Event::Rejected(RejectReason::Malformed, None)]
        );
    }
    assert_eq!(
        store.calls(),
        Vec::<&str>::new(),
        "no store lookup for malformed ids"
    );
}

#[tokio::test]
async fn strict_mode_never_adopts_a_thousand_unknown_well_formed_ids() {
    let store = TestStore::new();
    let events = Events::default();
    let app = app(events.attach(layer(&store)));
    let mut adopted = 0;
    for _ in 0..1_000 {
        let forged = SessionId::generate().unwrap();
        let cookie = format!("id={}", forged.expose_secret());
        let reply = send(&app, get_with_cookie("/read", &cookie)).await;
        assert_eq!(reply.body, "0 new=true");
        assert!(reply.is_removal("id"), "the unknown cookie is cleared");
        let reply = send(&app, get_with_cookie("/incr", &cookie)).await;
        let issued = reply
            .issued_id()
            .expect("a new session for the write, and no removal cookie");
        if issued == forged || store.get(&key(&forged)).await.is_some() {
            adopted += 1;
        }
        let seen = events.take();
        assert_eq!(
            seen[0],
            Event::Rejected(RejectReason::Unknown, Some(key(&forged)))
        );
        assert!(seen.contains(&Event::Started(key(&issued))));
    }
    assert_eq!(adopted, 0);
    assert_eq!(
        store.count().await,
        1_000,
        "only server-issued ids were stored"
    );
}

#[tokio::test]
async fn regenerate_keeps_the_data_moves_to_a_new_id_and_kills_the_old_one() {
    let store = TestStore::new();
    let events = Events::default();
    let mut client = Client::new(app(events.attach(layer(&store))));
    client.get("/incr").await;
    let old_id = client.id().unwrap();
    let old = key(&old_id);
    let created_at = store.get(&old).await.unwrap().created_at;
    let deadline = store.get(&old).await.unwrap().deadline;
    events.take();
    store.take_calls();

    let reply = client.get("/login").await;
    let new = reply.issued_key().expect("cookie with the new id");
    assert_ne!(new, old);
    assert_eq!(store.take_calls(), ["load", "regenerate"]);
    let expected_data = Counter {
        count: 1,
        user: Some("alice".into()),
    };
    assert_eq!(
        events.take(),
        [
            Event::Loaded(old),
            Event::Regenerated(old, new, expected_data.clone()),
            Event::Client(new)
        ]
    );
    assert!(store.get(&old).await.is_none(), "old id is dead");
    match store.peek(&old).await {
        Loaded::Moved(forward) => {
            assert_eq!(forward.to, new, "the old key forwards to the new one");
            assert_eq!(forward.grace_until, None, "no grace window configured");
        }
        other => panic!("expected a forwarding pointer under the old key, got {other:?}"),
    }
    let record = store.get(&new).await.unwrap();
    assert_eq!(record.data, expected_data);
    assert_eq!(record.created_at, created_at);
    assert_eq!(
        record.deadline, deadline,
        "regenerating does not reset the absolute deadline"
    );

    // Replaying the old cookie gives a fresh session, and no removal cookie: the response could
    // overtake the login's and wipe the new cookie.
    let reply = send(&client.app, get_with_id("/read", &old_id)).await;
    assert_eq!(reply.body, "0 new=true");
    assert!(reply.set_cookies().is_empty(), "{:?}", reply.set_cookies());
    assert_eq!(
        events.take(),
        [Event::Rejected(RejectReason::Regenerated, Some(old))]
    );
    // A write through the old cookie is refused rather than answered with a new session whose
    // cookie would overwrite the one the login sent.
    let reply = send(&client.app, get_with_id("/incr", &old_id)).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert!(reply.set_cookies().is_empty());
    assert_eq!(client.get("/read").await.body, "1 new=false");
}

#[tokio::test]
async fn regenerating_a_new_session_just_creates_it() {
    let store = TestStore::new();
    let events = Events::default();
    let mut client = Client::new(app(events.attach(layer(&store))));
    let reply = client.get("/login").await;
    let key = reply.issued_key().unwrap();
    assert_eq!(store.take_calls(), ["create"]);
    assert_eq!(events.take(), [Event::Started(key), Event::Client(key)]);
}

#[tokio::test]
async fn logout_deletes_server_side_and_sends_a_matching_removal_cookie() {
    let store = TestStore::new();
    let events = Events::default();
    let layer = layer(&store)
        .try_with_path("/")
        .expect("a valid path")
        .try_with_domain("example.com")
        .expect("a valid domain");
    let mut client = Client::new(app(events.attach(layer)));
    client.get("/login").await;
    let id = client.id().unwrap();
    let key = key(&id);
    events.take();
    store.take_calls();

    let reply = client.get("/logout").await;
    assert_eq!(store.take_calls(), ["load", "delete"]);
    let removal = reply.set_cookie().expect("removal cookie");
    let mut parts = removal.split("; ");
    assert_eq!(parts.next(), Some("id="));
    let attributes: Vec<&str> = parts.collect();
    for expected in [
        "HttpOnly",
        "SameSite=Lax",
        "Secure",
        "Path=/",
        "Domain=example.com",
        "Max-Age=0",
    ] {
        assert!(
            attributes.contains(&expected),
            "{expected} missing from {removal}"
        );
    }
    let expires = attributes
        .iter()
        .find_map(|a| a.strip_prefix("Expires="))
        .expect("Expires");
    let expires =
        time::OffsetDateTime::parse(expires, &time::format_description::well_known::Rfc2822)
            .or_else(|_| {
                let format = time::macros::format_description!(
                "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
            );
                time::PrimitiveDateTime::parse(expires, &format).map(|t| t.assume_utc())
            })
            .expect("an HTTP date");
    assert!(expires < time::OffsetDateTime::now_utc());
    assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(
        events.take(),
        [
            Event::Loaded(key),
            Event::Deleted(
                key,
                Counter {
                    count: 0,
                    user: Some("alice".into())
                }
            )
        ]
    );
    assert!(matches!(store.peek(&key).await, Loaded::Missing));
    assert_eq!(store.count().await, 0);

    let replay = send(&client.app, get_with_id("/read", &id)).await;
    assert_eq!(replay.body, "0 new=true");
    assert!(
        replay.is_removal("id"),
        "a replayed logged-out cookie is cleared"
    );
    assert_eq!(
        events.take(),
        [Event::Rejected(RejectReason::Unknown, Some(key))]
    );

    // A second logout with the same cookie ends nothing: no `deleted` event.
    let again = send(&client.app, get_with_id("/logout", &id)).await;
    assert!(again.is_removal("id"));
    assert_eq!(
        events.take(),
        [Event::Rejected(RejectReason::Unknown, Some(key))]
    );
}

#[tokio::test]
async fn logout_then_flash_starts_a_new_session_for_the_flash() {
    let store = TestStore::new();
    let mut client = Client::new(app(layer(&store)));
    client.get("/login").await;
    let old = client.key().unwrap();
    let reply = client.get("/logout-with-flash").await;
    let new = reply.issued_key().expect("a cookie for the new session");
    assert_ne!(new, old);
    assert!(store.get(&old).await.is_none());
    assert_eq!(store.get(&new).await.unwrap().data, Counter::default());
    assert_eq!(client.get("/show").await.body, "bye");
    assert_eq!(client.get("/read").await.body, "0 new=true");
}

#[tokio::test]
async fn flash_is_seen_on_the_next_request_and_gone_after_it_whether_read_or_not() {
    let store = TestStore::new();
    let mut client = Client::new(app(layer(&store)));
    client.get("/incr").await;
    let key = client.key().unwrap();

    client.get("/flash?msg=saved").await;
    assert_eq!(
        store.get(&key).await.unwrap().flash.get("notice"),
        Some("saved")
    );
    store.take_calls();
    let reply = client.get("/show").await;
    assert_eq!(reply.body, "saved");
    assert_eq!(
        store.take_calls(),
        ["load"],
        "the load took the flash: nothing to write back"
    );
    assert!(reply.set_cookies().is_empty());
    assert!(store.get(&key).await.unwrap().flash.is_empty());
    assert_eq!(client.get("/show").await.body, "-");

    // Not read on the next request: still gone after it.
    client.get("/flash?msg=unread").await;
    assert_eq!(client.get("/read").await.body, "1 new=false");
    assert_eq!(client.get("/show").await.body, "-");
}

#[tokio::test]
async fn flash_now_is_never_stored_and_keep_carries_one_more_request() {
    let store = TestStore::new();
    let mut client = Client::new(app(layer(&store)));
    let reply = client.get("/flash-now").await;
    assert_eq!(reply.body, "right now");
    assert_eq!(reply.set_cookie(), None, "a now-flash needs no session");
    assert!(store.calls().is_empty());

    client.get("/incr").await;
    let key = client.key().unwrap();
    client.get("/flash-now").await;
    assert!(store.get(&key).await.unwrap().flash.is_empty());
    assert_eq!(client.get("/show").await.body, "-");

    client.get("/flash?msg=twice").await;
    assert_eq!(client.get("/keep").await.body, "twice");
    assert_eq!(client.get("/show").await.body, "twice");
    assert_eq!(client.get("/show").await.body, "-");
}

#[tokio::test]
async fn flash_is_per_user() {
    let store = TestStore::new();
    let app = app(layer(&store));
    let mut alice = Client::new(app.clone());
    let mut bob = Client::new(app);
    alice.get("/incr").await;
    bob.get("/incr").await;
    alice.get("/flash?msg=for-alice").await;
    assert_eq!(bob.get("/show").await.body, "-");
    assert_eq!(alice.get("/show").await.body, "for-alice");
}

#[tokio::test]
async fn a_session_that_only_carried_a_flash_is_removed_once_the_flash_is_consumed() {
    let store = TestStore::new();
    let events = Events::default();
    let mut client = Client::new(app(events.attach(layer(&store))));
    let reply = client.get("/flash?msg=hello").await;
    let key = reply.issued_key().expect("a session to carry the flash");
    assert_eq!(store.count().await, 1);
    events.take();
    store.take_calls();

    let reply = client.get("/show").await;
    assert_eq!(reply.body, "hello");
    assert!(reply.is_removal("id"), "removal cookie");
    assert_eq!(store.take_calls(), ["load", "delete"]);
    assert_eq!(store.count().await, 0);
    assert!(matches!(store.peek(&key).await, Loaded::Missing));
    assert_eq!(events.take(), [Event::Loaded(key)], "no logout was audited");
    assert!(client.cookie.is_none());
}

#[tokio::test]
async fn store_failure_while_loading_answers_500_without_set_cookie() {
    let store = TestStore::new();
    let events = Events::default();
    let mut client = Client::new(app(events.attach(layer(&store))));
    client.get("/incr").await;
    let id = client.id().unwrap();
    events.take();
    store.take_calls();

    store.set_failing(true);
    let reply = client.get("/incr").await;
    assert_eq!(
        store.take_calls(),
        ["load"],
        "nothing is written after a failed load"
    );
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(reply.body, "session unavailable");
    assert!(reply.set_cookies().is_empty());
    assert!(matches!(&events.take()[..], [Event::Error(msg)] if msg.contains("load")));
    assert_eq!(client.id(), Some(id), "the client keeps its cookie");

    store.set_failing(false);
    assert_eq!(
        client.get("/incr").await.body,
        "2",
        "recovers without a restart"
    );
}

#[tokio::test]
async fn store_failure_while_saving_or_creating_answers_the_configured_error_without_set_cookie() {
    let store = TestStore::new();
    let events = Events::default();
    let layer = events
        .attach(layer(&store))
        .with_error_response(StatusCode::SERVICE_UNAVAILABLE, "try again later");
    let mut client = Client::new(app(layer));

    store.set_failing(true);
    let reply = client.get("/incr").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.body, "try again later");
    assert!(reply.set_cookies().is_empty());
    assert!(matches!(&events.take()[..], [Event::Error(msg)] if msg.contains("create")));
    store.set_failing(false);

    client.get("/incr").await;
    let id = client.id().unwrap();
    events.take();
    store.take_calls();

    // Loading works, then the store breaks inside the handler: the write after it fails.
    let breaking = store.clone();
    let app = support::routes()
        .route(
            "/login-then-break",
            axum::routing::get(
                move |s: tower_typed_sessions::SessionHandle<Counter>| async move {
                    s.regenerate();
                    s.update(|c| c.user = Some("mallory".into()));
                    breaking.set_failing(true);
                    "ok"
                },
            ),
        )
        .layer(events.attach(layer_503(&store)));
    let reply = send(&app, get_with_id("/login-then-break", &id)).await;
    store.set_failing(false);
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(reply.set_cookies().is_empty());
    assert_eq!(store.take_calls(), ["load", "regenerate"]);
    let key = key(&id);
    let seen = events.take();
    assert_eq!(seen[0], Event::Loaded(key));
    assert!(
        matches!(&seen[1..], [Event::Error(msg)] if msg.contains("regenerate")),
        "{seen:?}"
    );
    assert_eq!(
        store.get(&key).await.unwrap().data.user,
        None,
        "the old session is untouched"
    );
}

/// [`layer`] answering store failures with 503 and `try again later`.
fn layer_503(store: &TestStore) -> SessionLayer<Counter, TestStore> {
    layer(store).with_error_response(StatusCode::SERVICE_UNAVAILABLE, "try again later")
}

#[tokio::test]
async fn undecodable_record_becomes_a_fresh_session_with_an_event_not_a_500() {
    let store = TestStore::new();
    let events = Events::default();
    let mut client = Client::new(app(events.attach(layer(&store))));
    client.get("/incr").await;
    let id = client.key().unwrap();
    events.take();
    store.make_undecodable(id);
    store.take_calls();

    let reply = client.get("/incr").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "1", "counting starts again in a fresh session");
    let new = reply.issued_key().expect("new session cookie");
    assert_ne!(new, id);
    assert_eq!(store.take_calls(), ["load", "delete", "create"]);
    assert_eq!(
        events.take(),
        [
            Event::Rejected(RejectReason::Undecodable, Some(id)),
            Event::Started(new),
            Event::Client(new)
        ]
    );
    assert!(
        matches!(store.peek(&id).await, Loaded::Missing),
        "the undecodable record is removed"
    );

    // Without a write, the stale cookie of an undecodable record is cleared.
    let other = client.key().unwrap();
    store.make_undecodable(other);
    let reply = client.get("/read").await;
    assert_eq!(reply.body, "0 new=true");
    assert!(reply.is_removal("id"));
    assert!(client.cookie.is_none());
    assert!(matches!(store.peek(&other).await, Loaded::Missing));
}

#[tokio::test]
async fn sliding_expiry_keeps_a_used_session_alive_past_its_idle_timeout() {
    let store = TestStore::new();
    let idle = Duration::from_millis(600);
    let mut client = Client::new(app(layer(&store).with_idle_timeout(idle)));
    client.get("/incr").await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let reply = client.get("/read").await;
        assert_eq!(
            reply.body, "1 new=false",
            "used every 200 ms, alive after 1.2 s"
        );
    }
    let left: u64 = client.get("/expires-in").await.body.parse().unwrap();
    assert!(
        left > 400 && left <= 600,
        "expiry slid to about now + idle: {left} ms"
    );
}

#[tokio::test]
async fn without_sliding_the_session_dies_its_idle_timeout_after_creation() {
    let store = TestStore::new();
    let events = Events::default();
    let layer = events
        .attach(layer(&store))
        .with_idle_timeout(Duration::from_millis(600))
        .with_sliding_expiration(false);
    let mut client = Client::new(app(layer));
    client.get("/incr").await;
    let id = client.key().unwrap();
    let expires_at = store.get(&id).await.unwrap().expires_at;
    store.take_calls();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(client.get("/read").await.body, "1 new=false");
    assert_eq!(store.take_calls(), ["load"]);
    assert_eq!(
        store.get(&id).await.unwrap().expires_at,
        expires_at,
        "the load did not slide the expiry"
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(client.get("/read").await.body, "1 new=false");
    tokio::time::sleep(Duration::from_millis(250)).await;
    events.take();
    let reply = client.get("/read").await;
    assert_eq!(reply.body, "0 new=true", "dead 600 ms after creation");
    assert!(
        reply.is_removal("id"),
        "the expired session's cookie is cleared"
    );
    assert_eq!(events.take(), [Event::Expired(id)]);
    // It stays until the sweeper removes it: every load until then says "expired".
    assert!(matches!(store.peek(&id).await, Loaded::Expired(_)));
}

#[tokio::test]
async fn absolute_deadline_holds_even_when_sliding_keeps_the_session_busy() {
    let store = TestStore::new();
    let events = Events::default();
    let layer = events
        .attach(layer(&store))
        .with_idle_timeout(Duration::from_millis(500))
        .with_absolute_lifetime(Duration::from_millis(900));
    let mut client = Client::new(app(layer));
    let start = std::time::Instant::now();
    client.get("/incr").await;
    let id = client.key().unwrap();
    // Used every idle/2: the idle timeout never fires, only the deadline can.
    while start.elapsed() < Duration::from_millis(750) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if start.elapsed() < Duration::from_millis(850) {
            assert_eq!(client.get("/read").await.body, "1 new=false");
        }
    }
    let left: u64 = client.get("/expires-in").await.body.parse().unwrap();
    assert!(
        left <= 250,
        "expiry is capped by the deadline, not now + idle: {left} ms"
    );
    tokio::time::sleep(Duration::from_millis(1000).saturating_sub(start.elapsed())).await;
    events.take();
    assert_eq!(client.get("/read").await.body, "0 new=true");
    assert_eq!(events.take(), [Event::Expired(id)]);
}

#[tokio::test]
async fn idle_timeout_is_enforced_on_read_before_any_sweep() {
    let store = TestStore::new();
    let events = Events::default();
    let layer = events
        .attach(layer(&store))
        .with_idle_timeout(Duration::from_millis(300));
    let mut client = Client::new(app(layer));
    client.get("/incr").await;
    let id = client.key().unwrap();
    events.take();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(client.get("/read").await.body, "0 new=true");
    assert_eq!(events.take(), [Event::Expired(id)]);
}

#[tokio::test]
async fn handler_cache_control_is_kept_and_existing_vary_is_extended() {
    let store = TestStore::new();
    let app = axum::Router::new()
        .route(
            "/",
            axum::routing::get(
                |s: tower_typed_sessions::SessionHandle<Counter>| async move {
                    s.update(|c| c.count += 1);
                    (
                        [
                            (header::CACHE_CONTROL, "private, max-age=0"),
                            (header::VARY, "Accept-Encoding"),
                        ],
                        "ok",
                    )
                },
            ),
        )
        .layer(tower_typed_sessions::SessionLayer::new(store));
    let reply = send(
        &app,
        axum::http::Request::get("/")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await;
    assert!(reply.set_cookie().is_some());
    assert_eq!(reply.headers[header::CACHE_CONTROL], "private, max-age=0");
    let vary: Vec<_> = reply.headers.get_all(header::VARY).iter().collect();
    assert_eq!(vary, ["Accept-Encoding", "Cookie"]);
}

#[tokio::test]
async fn duplicate_session_cookies_use_the_first_well_formed_one() {
    let store = TestStore::new();
    let mut client = Client::new(app(layer(&store)));
    client.get("/incr").await;
    let id = client.id().unwrap();
    let header = format!(
        "id=garbage; other=1; id={}; id={}",
        id.expose_secret(),
        SessionId::generate().unwrap().expose_secret()
    );
    let reply = send(&client.app, get_with_cookie("/read", &header)).await;
    assert_eq!(reply.body, "1 new=false");
}

#[tokio::test]
async fn concurrent_clients_each_keep_their_own_count() {
    let store = TestStore::new();
    let app = app(layer(&store));
    let mut tasks = Vec::new();
    for n in 0..32u32 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::new(app);
            for _ in 0..=n {
                client.get("/incr").await;
            }
            client.get("/read").await.body
        }));
    }
    for (n, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap(), format!("{} new=false", n + 1));
    }
    assert_eq!(store.count().await, 32);
}

#[tokio::test]
async fn a_slow_write_racing_a_logout_does_not_resurrect_the_session() {
    let store = TestStore::new();
    let events = Events::default();
    let (app, loaded_rx, go_tx) = gated_app(events.attach(layer(&store)), |s| {
        s.update(|c| c.count += 100);
    });
    let mut client = Client::new(app.clone());
    client.get("/incr").await;
    let cookie = format!("id={}", client.id().unwrap().expose_secret());

    let slow = tokio::spawn({
        let app = app.clone();
        let cookie = cookie.clone();
        async move { send(&app, get_with_cookie("/gated", &cookie)).await }
    });
    loaded_rx.await.unwrap();
    let logout = send(&app, get_with_cookie("/logout", &cookie)).await;
    assert!(logout.set_cookie().unwrap().contains("Max-Age=0"));
    go_tx.send(()).unwrap();
    let slow = slow.await.unwrap();
    assert_eq!(slow.status, StatusCode::OK);
    assert!(
        slow.set_cookies().is_empty(),
        "no live cookie for a deleted session"
    );
    assert_eq!(store.count().await, 0, "the session stays deleted");
    let replay = send(&app, get_with_cookie("/read", &cookie)).await;
    assert_eq!(replay.body, "0 new=true");
}

/// An app whose `/gated` route loads the session, tells the test, waits for its go, then runs
/// `then` on the handle: the test completes another request in between.
fn gated_app(
    layer: SessionLayer<Counter, TestStore>,
    then: fn(&tower_typed_sessions::SessionHandle<Counter>),
) -> (
    axum::Router,
    tokio::sync::oneshot::Receiver<()>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel::<()>();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let gates = std::sync::Arc::new(std::sync::Mutex::new(Some((loaded_tx, go_rx))));
    let app = support::routes()
        .route(
            "/gated",
            axum::routing::get(move |s: tower_typed_sessions::SessionHandle<Counter>| {
                let gates = gates.clone();
                async move {
                    let (loaded, go) = gates.lock().unwrap().take().unwrap();
                    loaded.send(()).unwrap();
                    go.await.unwrap();
                    then(&s);
                    "gated write done"
                }
            }),
        )
        .layer(layer);
    (app, loaded_rx, go_tx)
}

#[tokio::test]
async fn a_regenerate_of_a_session_another_request_already_regenerated_is_a_conflict() {
    for (label, concurrency) in [
        (
            "last write wins",
            tower_typed_sessions::Concurrency::LastWriteWins,
        ),
        (
            "optimistic",
            tower_typed_sessions::Concurrency::optimistic(),
        ),
    ] {
        let store = TestStore::new();
        let (app, loaded, go) = gated_app(layer(&store).with_concurrency(concurrency), |s| {
            s.update(|c| c.user = Some("mallory".into()));
            s.regenerate();
        });
        let mut client = Client::new(app.clone());
        client.get("/incr").await;
        let cookie = format!("id={}", client.id().unwrap().expose_secret());

        let slow = tokio::spawn({
            let app = app.clone();
            let cookie = cookie.clone();
            async move { send(&app, get_with_cookie("/gated", &cookie)).await }
        });
        loaded.await.unwrap();
        let login = client.get("/login").await;
        let new = login
            .issued_key()
            .expect("the first login moves the session");
        go.send(()).unwrap();
        let slow = slow.await.unwrap();
        assert_eq!(slow.status, StatusCode::CONFLICT, "{label}");
        assert!(slow.set_cookies().is_empty(), "{label}");
        assert_eq!(store.count().await, 1, "{label}: one session, not two");
        assert_eq!(
            store.get(&new).await.unwrap().data.user.as_deref(),
            Some("alice"),
            "{label}: the first login's session is the one that lives"
        );
        assert_eq!(client.get("/read").await.body, "1 new=false", "{label}");
    }
}

#[tokio::test]
async fn in_optimistic_mode_a_save_that_finds_the_session_deleted_is_a_conflict() {
    let store = TestStore::new();
    let layer = layer(&store).with_concurrency(tower_typed_sessions::Concurrency::optimistic());
    let (app, loaded, go) = gated_app(layer, |s| s.update(|c| c.count += 100));
    let mut client = Client::new(app.clone());
    client.get("/incr").await;
    let cookie = format!("id={}", client.id().unwrap().expose_secret());

    let slow = tokio::spawn({
        let app = app.clone();
        let cookie = cookie.clone();
        async move { send(&app, get_with_cookie("/gated", &cookie)).await }
    });
    loaded.await.unwrap();
    assert!(send(&app, get_with_cookie("/logout", &cookie))
        .await
        .is_removal("id"));
    go.send(()).unwrap();
    let slow = slow.await.unwrap();
    assert_eq!(
        slow.status,
        StatusCode::CONFLICT,
        "a change that was lost is not answered as a success"
    );
    assert!(slow.set_cookies().is_empty());
    assert_eq!(store.count().await, 0, "the session stays deleted");
}

#[tokio::test]
async fn stale_cookies_are_cleared_once() {
    let store = TestStore::new();
    let events = Events::default();
    let short = layer(&store).with_idle_timeout(Duration::from_millis(100));
    let app = app(events.attach(short));

    // Three cookies that name no live session: never issued, expired, and undecodable.
    let unknown = SessionId::generate().unwrap();
    let mut expiring = Client::new(app.clone());
    expiring.get("/incr").await;
    let expired = expiring.id().unwrap();
    let mut broken = Client::new(app.clone());
    broken.get("/incr").await;
    let undecodable = broken.id().unwrap();
    store.make_undecodable(support::key(&undecodable));
    tokio::time::sleep(Duration::from_millis(250)).await;
    events.take();
    store.take_calls();

    for (label, id) in [
        ("unknown", unknown),
        ("expired", expired),
        ("undecodable", undecodable),
    ] {
        let cookie = format!("id={}", id.expose_secret());
        let reply = send(&app, get_with_cookie("/read", &cookie)).await;
        assert_eq!(reply.body, "0 new=true", "{label}");
        assert!(
            reply.is_removal("id"),
            "{label}: one removal cookie, got {:?}",
            reply.set_cookies()
        );
        // The browser drops the cookie, so the next request costs no lookup.
        store.take_calls();
        let next = send(
            &app,
            axum::http::Request::get("/read")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(next.set_cookies(), Vec::<String>::new(), "{label}");
        assert_eq!(store.take_calls(), Vec::<&str>::new(), "{label}: no lookup");

        // A request with the stale cookie that starts a session gets the new cookie only.
        let reply = send(&app, get_with_cookie("/incr", &cookie)).await;
        let set = reply.set_cookies();
        assert_eq!(set.len(), 1, "{label}: {set:?}");
        assert!(reply.issued_id().is_some_and(|new| new != id), "{label}");
    }
    let seen = events.take();
    assert!(
        seen.contains(&Event::Expired(support::key(&expired))),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_read_with_the_old_cookie_in_the_grace_window_never_changes_the_moved_session() {
    let store = TestStore::new();
    let app = app(layer(&store).with_regenerate_grace(Duration::from_secs(30)));
    // A session that holds only a flash, regenerated by a request that leaves another flash.
    let mut client = Client::new(app.clone());
    client.get("/flash?msg=hi").await;
    let old = client.id().unwrap();
    let reply = client.get("/flash-and-regenerate").await;
    let new = reply.issued_id().expect("the regenerated cookie");
    assert_ne!(new, old);

    // A request with the old cookie, within the grace window: it reads and writes nothing (no
    // housekeeping of the flash-only session, no removal cookie that would wipe the new one).
    let old_cookie = format!("id={}", old.expose_secret());
    for path in ["/read", "/show"] {
        let reply = send(&app, get_with_cookie(path, &old_cookie)).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(reply.set_cookies(), Vec::<String>::new(), "{path}");
    }
    // The moved session is intact and its flash is still for the new cookie.
    let reply = client.get("/show").await;
    assert_eq!(reply.body, "moved");
}
