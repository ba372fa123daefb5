//! `RedisStore` on one Redis server that each test starts itself: the round-trip budget per
//! request (counted with MONITOR on the test's own server), the stored layout, outages, recovery,
//! timeouts, expired-record retention and foreign values under session keys. The store contract
//! itself is checked by the conformance suite (tests/conformance_redis.rs).
#![cfg(feature = "redis")]

#[path = "support/hardening_suite.rs"]
mod hardening_suite;
#[path = "support/owner_suite.rs"]
mod owner_suite;
#[path = "support/redis_server.rs"]
mod redis_server;
mod support;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use redis_server::RedisServer;
use support::{get_with_cookie, get_with_id, send, Client, Counter, Event, Events};
use tower_typed_sessions::{
    RedisStore, RejectReason, SessionId, SessionKey, SessionLayer, StoreError,
};

async fn store_on(server: &RedisServer) -> RedisStore<Counter> {
    RedisStore::connect(&server.url())
        .await
        .expect("connect to the test's redis")
}

/// The Redis key of the record of the session whose cookie carries `id` (IDs are hashed at
/// rest on Redis).
fn redis_key(id: &SessionId) -> String {
    format!("session:{{{}}}", SessionKey::hashed(id).as_str())
}

/// The key that exists while that session is not idle-expired, and holds its pending flash.
fn live_key(id: &SessionId) -> String {
    format!("{}:live", redis_key(id))
}

/// The key of that session's forwarding pointer, once it was regenerated.
fn moved_key(id: &SessionId) -> String {
    format!("{}:moved", redis_key(id))
}

fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap()
}

// The layout (see src/store/redis/layout.rs):
//   session:{K}        S | revision (20 digits) | deadline ms (15) | record JSON
//   session:{K}:live   the pending flash's JSON ('' none); its TTL is the session's expiry
//   session:{K}:moved  P | new key (43) | grace end ms (15, 0: none) | pointer end ms (15)

/// A session as Redis holds it.
#[derive(Debug)]
struct StoredSession {
    revision: u64,
    /// When the `live` key expires (the session's expiry).
    expiry: i64,
    deadline: i64,
    record: String,
    /// The pending flash, `None` for none.
    flash: Option<String>,
}

/// A forwarding pointer as Redis holds it.
#[derive(Debug)]
struct StoredPointer {
    to: String,
    grace_until: i64,
    until: i64,
}

fn digits<N: std::str::FromStr>(value: &str, from: usize, len: usize) -> N {
    value[from..from + len]
        .parse()
        .unwrap_or_else(|_| panic!("not a number at {from}..{}: {value}", from + len))
}

/// The session whose cookie carries `id`, which must be live.
fn stored_session(server: &RedisServer, id: &SessionId) -> StoredSession {
    let key = redis_key(id);
    let value = server
        .command::<Option<String>>(&["GET", &key])
        .unwrap_or_else(|| panic!("nothing at {key}"));
    assert!(value.starts_with('S'), "not a session: {value}");
    let flash = server
        .command::<Option<String>>(&["GET", &live_key(id)])
        .unwrap_or_else(|| panic!("{key} is not live"));
    StoredSession {
        revision: digits(&value, 1, 20),
        expiry: server.command::<i64>(&["PEXPIRETIME", &live_key(id)]),
        deadline: digits(&value, 21, 15),
        record: value[36..].to_owned(),
        flash: (!flash.is_empty()).then_some(flash),
    }
}

/// The forwarding pointer the session whose cookie carried `id` left.
fn stored_pointer(server: &RedisServer, id: &SessionId) -> StoredPointer {
    let key = moved_key(id);
    let value = server
        .command::<Option<String>>(&["GET", &key])
        .unwrap_or_else(|| panic!("nothing at {key}"));
    assert!(value.starts_with('P'), "not a pointer: {value}");
    StoredPointer {
        to: value[1..44].to_owned(),
        grace_until: digits(&value, 44, 15),
        until: digits(&value, 59, 15),
    }
}

/// A record value in the store's layout, for writing forged ones.
fn session_value(revision: u64, deadline: i64, record: &str) -> String {
    format!("S{revision:020}{deadline:015}{record}")
}

fn app(store: RedisStore<Counter>, events: &Events) -> axum::Router {
    support::routes().layer(events.attach(SessionLayer::new(store)))
}

/// Names of the commands in MONITOR lines (`"EVALSHA" "..."` -> `EVALSHA`).
fn names(commands: Vec<String>) -> Vec<String> {
    commands
        .iter()
        .map(|c| {
            c.split(' ')
                .next()
                .unwrap_or_default()
                .trim_matches('"')
                .to_uppercase()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_and_commands_per_request() {
    let server = RedisServer::start();
    // Round trips through a counting relay; command names from MONITOR.
    let relay = redis_server::RoundTrips::start(server.port());
    let store = RedisStore::connect(&relay.url()).await.unwrap();
    let events = Events::default();
    let mut client = Client::new(app(store, &events));
    let mut monitor = server.monitor();
    relay.take();

    let mut check = |label: &str, round_trips: usize, commands: &[&str]| {
        let seen = names(monitor.commands_since_last_call());
        let trips = relay.take();
        println!("{label:<44} {trips} round trips, {seen:?}");
        // Exact: redis-rs writes a pipeline in one piece, which loopback delivers whole, so the
        // relay sees one send per round trip.
        assert_eq!(trips, round_trips, "{label}: round trips ({seen:?})");
        assert_eq!(seen, commands, "{label}: commands");
    };

    client.get("/read").await;
    check("no cookie, handler writes nothing", 0, &[]);
    client.get("/incr").await;
    check("first write of a new session", 1, &["EVALSHA"]);
    client.get("/read").await;
    check("read, sliding: no script", 1, &["GETEX", "GETEX"]);
    client.get("/incr").await;
    check(
        "modify (last write wins): no script",
        2,
        &["GETEX", "GETEX", "SET"],
    );
    client.get("/flash?msg=hi").await;
    check("set a flash", 2, &["GETEX", "GETEX", "SET", "SET"]);
    assert_eq!(client.get("/show").await.body, "hi");
    check(
        "read a page with a flash: the flash is taken",
        2,
        &["GETEX", "GETEX", "SET"],
    );
    client.get("/read").await;
    check("read once the flash is gone", 1, &["GETEX", "GETEX"]);
    client.get("/login").await;
    check(
        "regenerate (login): the new session is written, then the script, in one transaction",
        2,
        &["GETEX", "GETEX", "MULTI", "SET", "SET", "EVALSHA", "EXEC"],
    );
    client.get("/logout").await;
    check("delete (logout)", 2, &["GETEX", "GETEX", "EVALSHA"]);
    assert_eq!(client.get("/read").await.body, "0 new=true", "logged out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_a_record_and_a_live_key_whose_ttl_is_its_expiry() {
    let server = RedisServer::start();
    for (retention, label) in [
        (None, "default retention of 1 h"),
        (Some(Duration::ZERO), "no retention"),
    ] {
        let mut store = store_on(&server).await;
        if let Some(retention) = retention {
            store = store.with_expired_retention(retention);
        }
        let layer = SessionLayer::new(store)
            .with_idle_timeout(Duration::from_secs(600))
            .with_absolute_lifetime(Duration::from_secs(300));
        let app = support::routes().layer(layer);
        let mut client = Client::new(app);
        client.get("/incr").await;
        // IDs are hashed at rest on Redis: the keys hold a digest of the cookie's ID.
        let id = client.id().unwrap();
        let session = stored_session(&server, &id);
        assert_eq!(
            session.expiry, session.deadline,
            "{label}: the 300 s deadline comes before the 600 s idle"
        );
        assert!(
            (295_000..=300_000).contains(&(session.expiry - now_ms())),
            "{label}: expiry in {} ms",
            session.expiry - now_ms()
        );
        let ttl = server.command::<i64>(&["PTTL", &redis_key(&id)]);
        let retention_ms = retention.map_or(3_600_000, |r| r.as_millis() as i64) + 1_000;
        assert!(
            (retention_ms + 295_000..=retention_ms + 300_000).contains(&ttl),
            "{label}: the record's TTL is the expiry plus the retention and a second: {ttl}"
        );
        assert!(
            session.record.contains("\"v\":2") && session.record.contains("\"count\":1"),
            "{session:?}"
        );
        assert_eq!(
            session.revision, 0,
            "{label}: the revision of a new session"
        );
        assert_eq!(session.flash, None);
        client.get("/flash?msg=hi").await;
        let session = stored_session(&server, &id);
        assert_eq!(session.revision, 1, "{label}: a save moves the revision on");
        assert!(
            session.flash.as_deref().is_some_and(|f| f.contains("hi")),
            "{label}: the flash waits in the live key: {session:?}"
        );
        // (Not "hi": a random key may contain it.)
        assert!(!session.record.contains("notice"), "{label}: {session:?}");
        assert_eq!(client.get("/show").await.body, "hi");
        let session = stored_session(&server, &id);
        assert_eq!(session.flash, None, "{label}: the load took the flash");
        assert_eq!(session.revision, 1, "{label}: without a write");
        let slid = session.expiry - now_ms();
        assert!(
            (595_000..=600_000).contains(&slid),
            "{label}: a read slides the live key to the idle timeout: {slid} ms"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_expired_session_fires_expired_until_its_retention_ends() {
    let server = RedisServer::start();
    for (retention, expected) in [(None, "expired"), (Some(Duration::ZERO), "unknown")] {
        let events = Events::default();
        let mut store = store_on(&server).await;
        if let Some(retention) = retention {
            store = store.with_expired_retention(retention);
        }
        let layer = events
            .attach(SessionLayer::new(store))
            .with_idle_timeout(Duration::from_millis(300));
        let app = support::routes().layer(layer);
        let mut client = Client::new(app);
        client.get("/incr").await;
        let id = client.id().unwrap();
        let key = SessionKey::hashed(&id);
        // Past the idle timeout; without a retention, past the extra second the record keeps
        // over its live key too.
        let wait = if retention.is_some() { 1_600 } else { 600 };
        tokio::time::sleep(Duration::from_millis(wait)).await;
        assert_eq!(
            server.command::<i64>(&["EXISTS", &live_key(&id)]),
            0,
            "Redis ended the live key at the idle timeout"
        );
        events.take();
        let reply = client.get("/read").await;
        assert_eq!(reply.body, "0 new=true", "{expected}");
        assert!(
            reply.is_removal("id"),
            "{expected}: the stale cookie is cleared"
        );
        let seen = events.take();
        match expected {
            "expired" => assert_eq!(seen, [Event::Expired(key)]),
            _ => assert_eq!(
                seen,
                [Event::Rejected(RejectReason::Unknown, Some(key))],
                "without a retention Redis forgets the session soon after its expiry"
            ),
        }
        if expected == "expired" {
            // It stays for the retention (every load until then says "expired"), then its
            // TTL removes it; no write reaches it meanwhile.
            let ttl = server.command::<i64>(&["PTTL", &redis_key(&id)]);
            assert!(
                (3_000_000..=3_602_000).contains(&ttl),
                "the rest of the 1 h retention: {ttl}"
            );
        } else {
            assert_eq!(server.command::<i64>(&["EXISTS", &redis_key(&id)]), 0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regenerate_leaves_a_forwarding_pointer_under_the_old_key() {
    let server = RedisServer::start();
    let layer =
        SessionLayer::new(store_on(&server).await).with_regenerate_grace(Duration::from_secs(5));
    let app = support::routes().layer(layer);
    let mut client = Client::new(app);
    client.get("/incr").await;
    let old = client.id().unwrap();
    let before = now_ms();
    client.get("/login").await;
    let new = client.id().unwrap();
    let pointer = stored_pointer(&server, &old);
    assert_eq!(
        pointer.to,
        SessionKey::hashed(&new).as_str(),
        "it points to the new key"
    );
    assert!(
        (before + 4_000..=now_ms() + 5_000).contains(&pointer.grace_until),
        "the grace window ends 5 s after the login: {}",
        pointer.grace_until - before
    );
    for gone in [redis_key(&old), live_key(&old)] {
        assert_eq!(
            server.command::<i64>(&["EXISTS", &gone]),
            0,
            "the old record and live key go in the same step: {gone}"
        );
    }
    let moved = stored_session(&server, &new);
    assert_eq!(moved.revision, 1, "a move is a write");
    assert!(moved.record.contains("\"count\":1"), "{moved:?}");
    assert_eq!(
        pointer.until, moved.expiry,
        "the pointer lasts as long as the moved session"
    );
    let ttl = server.command::<i64>(&["PTTL", &moved_key(&old)]);
    assert!(ttl > 0 && ttl <= pointer.until - before, "{ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_at_start_is_a_clear_error() {
    let server = RedisServer::start();
    let url = server.url();
    drop(server);
    let started = Instant::now();
    let err = RedisStore::<Counter>::connect(&url)
        .await
        .expect_err("nothing listens there");
    assert!(
        matches!(err, StoreError::Backend(_) | StoreError::Timeout),
        "{err:?}"
    );
    assert!(!err.to_string().is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "fails fast: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_answers_500_without_set_cookie_and_recovers_within_a_second_of_restart() {
    let mut server = RedisServer::start();
    let events = Events::default();
    let mut client = Client::new(app(store_on(&server).await, &events));
    client.get("/incr").await;
    let id = client.id().unwrap();
    events.take();

    server.stop();
    support::requests_during_an_outage(&mut client, &events).await;
    assert_eq!(
        client.id(),
        Some(id),
        "the client's cookie survived the outage"
    );

    server.restart();
    let accepting = Instant::now();
    let recovered = loop {
        let reply = client.get("/incr").await;
        if reply.status == StatusCode::OK {
            break accepting.elapsed();
        }
        assert!(
            accepting.elapsed() < Duration::from_secs(5),
            "no recovery after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("recovered {recovered:?} after redis accepted connections again");
    assert!(
        recovered < Duration::from_secs(1),
        "recovered in {recovered:?}"
    );
    // The restarted server is empty: the old cookie was not adopted, a new session began.
    assert_ne!(client.id(), Some(id));
    assert_eq!(client.get("/read").await.body, "1 new=false");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_times_out_instead_of_hanging_the_request() {
    let server = RedisServer::start();
    let events = Events::default();
    let store = store_on(&server)
        .await
        .with_command_timeout(Duration::from_millis(300));
    let mut client = Client::new(app(store, &events));
    client.get("/incr").await;
    events.take();
    server.command::<()>(&["CLIENT", "PAUSE", "2000", "ALL"]);
    let started = Instant::now();
    let reply = client.get("/read").await;
    let took = started.elapsed();
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.set_cookies().is_empty());
    assert!(
        took < Duration::from_millis(1500),
        "answered after {took:?}"
    );
    assert!(matches!(&events.take()[..], [Event::Error(msg)] if msg.contains("timed out")));
}

/// The command timeout is the store's, whichever way: with 3 s, a Redis that answers only after
/// 1.2 s (`CLIENT PAUSE`) is waited for, not cut off by a shorter timeout of the connection's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_longer_command_timeout_waits_for_a_slow_redis() {
    let server = RedisServer::start();
    let events = Events::default();
    let store = store_on(&server)
        .await
        .with_command_timeout(Duration::from_secs(3));
    let mut client = Client::new(app(store, &events));
    assert_eq!(client.get("/incr").await.body, "1");
    server.command::<()>(&["CLIENT", "PAUSE", "1200", "ALL"]);
    let started = Instant::now();
    let reply = client.get("/incr").await;
    let took = started.elapsed();
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "after {took:?}: {:?}",
        events.take()
    );
    assert_eq!(reply.body, "2");
    assert!(
        took >= Duration::from_millis(1000),
        "answered after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_or_foreign_values_under_a_session_key_become_a_fresh_session() {
    let server = RedisServer::start();
    let events = Events::default();
    let app = app(store_on(&server).await, &events);
    let future = now_ms() + 600_000;
    let not_json = session_value(0, future, "garbage \u{1} bytes");
    let other_shape = session_value(0, future, "{\"user\":42}");
    // Every case is refused as undecodable, answered with a fresh session, and removed: a string
    // (another program's, or a broken session) and a value of another Redis type alike.
    for (label, setup, removed) in [
        (
            "a session whose record is not json",
            vec!["SET", "{key}", not_json.as_str()],
            true,
        ),
        (
            "a session whose record has another shape",
            vec!["SET", "{key}", other_shape.as_str()],
            true,
        ),
        ("a foreign string", vec!["SET", "{key}", "garbage"], true),
        ("a hash", vec!["HSET", "{key}", "field", "value"], true),
        ("a list", vec!["RPUSH", "{key}", "a", "b"], true),
    ] {
        let id = SessionId::generate().unwrap();
        let key = redis_key(&id);
        let args: Vec<&str> = setup
            .iter()
            .map(|a| if *a == "{key}" { key.as_str() } else { a })
            .collect();
        server.command::<redis::Value>(&args);
        let reply = send(&app, get_with_id("/incr", &id)).await;
        assert_eq!(reply.status, StatusCode::OK, "{label}");
        assert_eq!(reply.body, "1", "{label}: a fresh session");
        let new = reply.issued_id().expect("a new session cookie");
        assert_ne!(new, id, "{label}");
        let seen = events.take();
        assert_eq!(
            seen[0],
            Event::Rejected(RejectReason::Undecodable, Some(SessionKey::hashed(&id))),
            "{label}: {seen:?}"
        );
        assert_eq!(
            server.command::<i64>(&["EXISTS", &key]),
            if removed { 0 } else { 1 },
            "{label}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_under_another_sessions_key_is_not_adopted() {
    let server = RedisServer::start();
    let events = Events::default();
    let mut client = Client::new(app(store_on(&server).await, &events));
    client.get("/incr").await;
    let real = client.id().unwrap();
    let forged = SessionId::generate().unwrap();
    // A copy of the real session, live key and all, under the forged ID's keys.
    let value = server
        .command::<Option<String>>(&["GET", &redis_key(&real)])
        .expect("the real session");
    server.command::<()>(&["SET", &redis_key(&forged), &value]);
    server.command::<()>(&["SET", &live_key(&forged), "", "PX", "60000"]);
    events.take();
    let reply = send(&client.app, get_with_id("/read", &forged)).await;
    assert_eq!(reply.body, "0 new=true");
    assert!(reply.is_removal("id"));
    assert_eq!(
        events.take()[0],
        Event::Rejected(RejectReason::Undecodable, Some(SessionKey::hashed(&forged)))
    );
    assert_eq!(
        client.get("/read").await.body,
        "1 new=false",
        "the real one is untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_index_on_one_redis() {
    let server = RedisServer::start();
    let store = RedisStore::<owner_suite::Account>::connect(&server.url())
        .await
        .unwrap();
    owner_suite::owner_index_flow(store.clone()).await;
    // The index is one set per owner, with a TTL, and never counted as a session.
    use tower_typed_sessions::Store;
    let mut device = owner_suite::Device::new(&owner_suite::app(SessionLayer::new(store.clone())));
    device.get("/login?user=carol&agent=x").await;
    assert_eq!(
        server.command::<String>(&["TYPE", "session:owner:carol"]),
        "set"
    );
    let members: Vec<String> = server.command(&["SMEMBERS", "session:owner:carol"]);
    let carol = SessionKey::hashed(&device.id().unwrap());
    assert!(
        members.iter().any(|m| m == carol.as_str()),
        "the index holds the session's key: {members:?}"
    );
    let ttl: i64 = server.command(&["PTTL", "session:owner:carol"]);
    assert!(ttl > 0, "the owner set expires too: {ttl}");
    assert_eq!(store.count().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hardening_on_one_redis() {
    let server = RedisServer::start();
    let store = store_on(&server).await;
    let resurrections = hardening_suite::no_resurrection(store.clone(), 1000).await;
    println!("redis: 1000 races, {resurrections} resurrections");
    assert_eq!(resurrections, 0);
    let (value, successes, conflicts) = hardening_suite::optimistic_increments(store.clone()).await;
    println!(
        "redis optimistic: final +{value}, {successes} successes, {conflicts} conflicts refused"
    );
    assert_eq!((value as usize, successes), (64, 64));
    let tried = hardening_suite::signed_cookies_and_rotation(store.clone()).await;
    println!("redis: {tried} forged or unsigned cookies rejected without a store lookup");
    hardening_suite::hashed_ids_at_rest(store.clone()).await;
    hardening_suite::regenerate_grace_window(store.clone()).await;
    hardening_suite::record_size_limit(store.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_of_redis_holds_no_live_cookie() {
    let server = RedisServer::start();
    let mut client =
        Client::new(support::routes().layer(SessionLayer::new(store_on(&server).await)));
    client.get("/incr").await;
    let old = client.id().unwrap();
    // A login leaves a forwarding pointer: it names the new key, never the new cookie.
    client.get("/login").await;
    let new = client.id().unwrap();
    let keys: Vec<String> = server.command(&["KEYS", "*"]);
    let mut dump = keys.join("\n");
    for id in [old, new] {
        for key in [redis_key(&id), live_key(&id), moved_key(&id)] {
            if let Some(value) = server.command::<Option<String>>(&["GET", &key]) {
                dump.push_str(&value);
            }
        }
    }
    for id in [old, new] {
        assert!(!dump.contains(id.expose_secret()), "{dump}");
    }
    assert!(dump.contains("\"count\":1"), "{dump}");
    assert!(dump.contains(SessionKey::hashed(&new).as_str()), "{dump}");
    // Sending a key from the dump back as a cookie gives nothing.
    for id in [old, new] {
        let dumped = SessionKey::hashed(&id);
        let reply = send(
            &client.app,
            get_with_cookie("/read", &format!("id={}", dumped.as_str())),
        )
        .await;
        assert_eq!(reply.body, "0 new=true");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_of_a_newer_format_is_not_guessed_at() {
    let server = RedisServer::start();
    let events = Events::default();
    let mut client = Client::new(app(store_on(&server).await, &events));
    client.get("/incr").await;
    let id = client.id().unwrap();
    let session = stored_session(&server, &id);
    let newer = session.record.replacen("\"v\":2", "\"v\":3", 1);
    assert_ne!(newer, session.record);
    server.command::<()>(&[
        "SET",
        &redis_key(&id),
        &session_value(session.revision, session.deadline, &newer),
        "KEEPTTL",
    ]);
    events.take();
    assert_eq!(client.get("/read").await.body, "0 new=true");
    assert!(matches!(
        events.take()[0],
        Event::Rejected(RejectReason::Undecodable, _)
    ));
}
