//! `RedisStore` on one Redis server that each test starts itself: the generic store contract, the
//! round-trip budget per request (counted with MONITOR on the test's own server), outages,
//! recovery, timeouts and foreign values under session keys.
#![cfg(feature = "redis")]

#[path = "support/hardening_suite.rs"]
mod hardening_suite;
#[path = "support/owner_suite.rs"]
mod owner_suite;
#[path = "support/redis_server.rs"]
mod redis_server;
#[path = "support/store_suite.rs"]
mod store_suite;
mod support;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use redis_server::RedisServer;
use support::{get_with_cookie, send, Client, Counter, Event, Events};
use tower_typed_sessions::{
    RedisStore, RejectReason, SessionConfig, SessionId, SessionLayer, StoreError,
};

async fn store_on(server: &RedisServer) -> RedisStore<Counter> {
    RedisStore::connect(&server.url())
        .await
        .expect("connect to the test's redis")
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let server = RedisServer::start();
            store_suite::$name(&store_on(&server).await).await;
        }
    )*};
}

store_suite::contract_checks!(contract);

fn app(store: RedisStore<Counter>, events: &Events) -> axum::Router {
    support::routes()
        .layer(SessionLayer::from_config(store, events.attach(SessionConfig::new())).unwrap())
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
async fn round_trips_per_request_stay_within_budget() {
    let server = RedisServer::start();
    let events = Events::default();
    let mut client = Client::new(app(store_on(&server).await, &events));
    let mut monitor = server.monitor();

    let mut table = Vec::new();
    let mut measure = |label: &str, commands: Vec<String>, budget: usize| {
        let names = names(commands);
        println!("{label:<44} {} {:?}", names.len(), names);
        assert!(
            names.len() <= budget,
            "{label}: {names:?} is over the budget of {budget}"
        );
        table.push((label.to_owned(), names));
    };

    client.get("/read").await;
    measure(
        "no cookie, handler writes nothing",
        monitor.commands_since_last_call(),
        0,
    );
    client.get("/incr").await;
    measure(
        "first write of a new session",
        monitor.commands_since_last_call(),
        1,
    );
    client.get("/read").await;
    measure(
        "read-only, sliding on",
        monitor.commands_since_last_call(),
        1,
    );
    client.get("/incr").await;
    measure(
        "modify an existing session",
        monitor.commands_since_last_call(),
        2,
    );
    client.get("/login").await;
    measure("regenerate (login)", monitor.commands_since_last_call(), 2);
    client.get("/logout").await;
    measure("delete (logout)", monitor.commands_since_last_call(), 2);

    assert_eq!(table[1].1, ["SET"]);
    assert_eq!(
        table[2].1,
        ["GETEX"],
        "load and slide in one native command"
    );
    assert_eq!(table[3].1, ["GETEX", "SET"]);
    assert_eq!(table[4].1, ["GETEX", "EVALSHA"]);
    assert_eq!(table[5].1, ["GETEX", "DEL"]);
    assert_eq!(client.get("/read").await.body, "0 new=true", "logged out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn value_and_ttl_are_set_together_and_ttl_is_the_effective_expiry() {
    let server = RedisServer::start();
    let config = SessionConfig::new()
        .with_idle_timeout(Duration::from_secs(600))
        .with_absolute_lifetime(Duration::from_secs(300));
    let app = support::routes()
        .layer(SessionLayer::from_config(store_on(&server).await, config).unwrap());
    let mut client = Client::new(app);
    client.get("/incr").await;
    // IDs are hashed at rest on Redis: the key holds a digest of the cookie's ID.
    let key = format!(
        "session:{}",
        client.id().unwrap().hashed_at_rest().expose_secret()
    );
    let ttl: i64 = server
        .command(&["PTTL", &key])
        .trim_start_matches(':')
        .trim()
        .parse()
        .unwrap();
    assert!(
        (295_000..=300_000).contains(&ttl),
        "TTL is the 300 s deadline, not the 600 s idle: {ttl}"
    );
    let value = server.command(&["GET", &key]);
    assert!(
        value.contains("\"v\":1") && value.contains("\"count\":1"),
        "{value}"
    );
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
    for path in ["/read", "/incr", "/login", "/logout"] {
        let started = Instant::now();
        let reply = client.get(path).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        assert!(
            reply.set_cookies().is_empty(),
            "{path}: no Set-Cookie during an outage"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{path} answered in {:?}",
            started.elapsed()
        );
        let seen = events.take();
        assert!(matches!(&seen[..], [Event::Error(_)]), "{path}: {seen:?}");
    }
    assert_eq!(
        client.id(),
        Some(id),
        "the client's cookie survived the outage"
    );
    // A request with no cookie and no write needs no store: it is still served.
    let reply = send(
        &client.app,
        axum::http::Request::get("/nothing")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);

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
    server.command(&["CLIENT", "PAUSE", "2000", "ALL"]);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_or_foreign_values_under_a_session_key_become_a_fresh_session() {
    let server = RedisServer::start();
    let events = Events::default();
    let app = app(store_on(&server).await, &events);
    for (label, setup) in [
        ("not json", vec!["SET", "{key}", "garbage \u{1} bytes"]),
        (
            "json of another shape",
            vec!["SET", "{key}", "{\"user\":42}"],
        ),
        ("a hash", vec!["HSET", "{key}", "field", "value"]),
        ("a list", vec!["RPUSH", "{key}", "a", "b"]),
    ] {
        let id = SessionId::generate().unwrap();
        let key = format!("session:{}", id.hashed_at_rest().expose_secret());
        let args: Vec<&str> = setup
            .iter()
            .map(|a| if *a == "{key}" { key.as_str() } else { a })
            .collect();
        server.command(&args);
        let reply = send(
            &app,
            get_with_cookie("/incr", &format!("id={}", id.expose_secret())),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{label}");
        assert_eq!(reply.body, "1", "{label}: a fresh session");
        let new = reply.issued_id().expect("a new session cookie");
        assert_ne!(new, id, "{label}");
        let seen = events.take();
        assert_eq!(
            seen[0],
            Event::Rejected(RejectReason::Undecodable, Some(id.hashed_at_rest())),
            "{label}: {seen:?}"
        );
        assert_eq!(
            server.command(&["EXISTS", &key]),
            ":0\r\n",
            "{label}: the foreign value is removed"
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
    let value = server.command(&[
        "GET",
        &format!("session:{}", real.hashed_at_rest().expose_secret()),
    ]);
    let json = value.split("\r\n").nth(1).unwrap().to_owned();
    let forged = SessionId::generate().unwrap();
    server.command(&[
        "SET",
        &format!("session:{}", forged.hashed_at_rest().expose_secret()),
        &json,
    ]);
    events.take();
    let reply = send(
        &client.app,
        get_with_cookie("/read", &format!("id={}", forged.expose_secret())),
    )
    .await;
    assert_eq!(reply.body, "0 new=true");
    assert_eq!(
        events.take()[0],
        Event::Rejected(RejectReason::Undecodable, Some(forged.hashed_at_rest()))
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
    assert_eq!(server.command(&["TYPE", "session:owner:carol"]), "+set\r\n");
    let ttl: i64 = server
        .command(&["PTTL", "session:owner:carol"])
        .trim_start_matches(':')
        .trim()
        .parse()
        .unwrap();
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
    let raw = client.id().unwrap();
    let keys = server.command(&["KEYS", "*"]);
    let values = server.command(&[
        "GET",
        &format!("session:{}", raw.hashed_at_rest().expose_secret()),
    ]);
    assert!(
        !keys.contains(raw.expose_secret()) && !values.contains(raw.expose_secret()),
        "{keys} {values}"
    );
    assert!(values.contains("\"count\":1"));
    // Sending a key from the dump back as a cookie gives nothing.
    let dumped = raw.hashed_at_rest();
    let reply = send(
        &client.app,
        get_with_cookie("/read", &format!("id={}", dumped.expose_secret())),
    )
    .await;
    assert_eq!(reply.body, "0 new=true");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_of_a_newer_format_is_not_guessed_at() {
    let server = RedisServer::start();
    let events = Events::default();
    let mut client = Client::new(app(store_on(&server).await, &events));
    client.get("/incr").await;
    let key = format!(
        "session:{}",
        client.id().unwrap().hashed_at_rest().expose_secret()
    );
    let value = server.command(&["GET", &key]);
    let json = value
        .split("\r\n")
        .nth(1)
        .unwrap()
        .replacen("\"v\":1", "\"v\":2", 1);
    server.command(&["SET", &key, &json]);
    events.take();
    assert_eq!(client.get("/read").await.body, "0 new=true");
    assert!(matches!(
        events.take()[0],
        Event::Rejected(RejectReason::Undecodable, _)
    ));
}
