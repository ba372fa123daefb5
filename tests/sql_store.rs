//! `PostgresStore` and `SqliteStore` through the layer: the statements per request (counted in
//! the log of the test's own PostgreSQL), an outage and recovery, expiry, the sweep, undecodable
//! rows, migrations, restarts, the owner index and the hardening suite on both. The store
//! contract itself is checked by the conformance suite (tests/conformance_sql.rs).
#![cfg(all(feature = "postgres", feature = "sqlite"))]

#[path = "support/hardening_suite.rs"]
mod hardening_suite;
#[path = "support/owner_suite.rs"]
mod owner_suite;
#[path = "support/postgres_server.rs"]
mod postgres_server;
mod support;

use std::{
    future::Future,
    time::{Duration, Instant},
};

use axum::http::StatusCode;
use postgres_server::{PostgresServer, TempSqlite};
use sqlx::{
    postgres::PgPoolOptions,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions},
    PgPool, SqlitePool,
};
use support::{send, Client, Counter, Event, Events};
use tower_typed_sessions::{
    PostgresStore, RejectReason, SessionKey, SessionLayer, SqliteStore, Store,
};

async fn pg_pool(server: &PostgresServer) -> PgPool {
    PgPoolOptions::new()
        .max_connections(8)
        .test_before_acquire(false)
        .connect(&server.url())
        .await
        .expect("connect to the test's postgres")
}

async fn sqlite_pool(file: &TempSqlite) -> SqlitePool {
    let options = SqliteConnectOptions::new()
        .filename(file.path())
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(5));
    SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .expect("open the temporary database")
}

async fn pg_store<T: tower_typed_sessions::Session>(
    pool: &PgPool,
    table: &str,
) -> PostgresStore<T> {
    let store = PostgresStore::new(pool.clone()).with_table(table).unwrap();
    store.migrate().await.expect("migrate");
    store
}

async fn sqlite_store<T: tower_typed_sessions::Session>(
    pool: &SqlitePool,
    table: &str,
) -> SqliteStore<T> {
    let store = SqliteStore::new(pool.clone()).with_table(table).unwrap();
    store.migrate().await.expect("migrate");
    store
}

/// Plain SQL on the test's database, to look at and forge rows behind the store's back.
trait Raw: Clone + Send + Sync + 'static {
    fn scalar(&self, sql: &str) -> impl Future<Output = i64> + Send;
    fn execute(&self, sql: &str) -> impl Future<Output = u64> + Send;
    fn texts(&self, sql: &str) -> impl Future<Output = Vec<String>> + Send;
}

macro_rules! raw_for {
    ($pool:ty) => {
        impl Raw for $pool {
            async fn scalar(&self, sql: &str) -> i64 {
                sqlx::query_scalar(sql).fetch_one(self).await.expect(sql)
            }
            async fn execute(&self, sql: &str) -> u64 {
                sqlx::query(sql)
                    .execute(self)
                    .await
                    .expect(sql)
                    .rows_affected()
            }
            async fn texts(&self, sql: &str) -> Vec<String> {
                sqlx::query_scalar(sql).fetch_all(self).await.expect(sql)
            }
        }
    };
}
raw_for!(PgPool);
raw_for!(SqlitePool);

fn app<St: Store<Counter> + Clone>(layer: SessionLayer<Counter, St>) -> axum::Router {
    support::routes().layer(layer)
}

/// The first word of each statement, with the first expression's name after `WITH`.
fn verbs(statements: &[String]) -> Vec<String> {
    statements
        .iter()
        .map(|s| {
            let words: Vec<&str> = s.split_whitespace().take(2).collect();
            match words[..] {
                ["WITH", name] => format!("WITH {name}"),
                [verb, ..] => verb.to_owned(),
                [] => String::new(),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_per_request_on_postgres() {
    if !postgres_server::available_or_skip("statements_per_request_on_postgres") {
        return;
    }
    let server = PostgresServer::start();
    let pool = pg_pool(&server).await;
    let store = pg_store(&pool, "sessions").await;
    let mut client = Client::new(app(SessionLayer::new(store)));
    let (_, mut mark) = server.statements_since(0);
    let mut check = |label: &str, expected: &[&str]| {
        let (statements, now) = server.statements_since(mark);
        mark = now;
        let seen = verbs(&statements);
        println!("{label:<44} {seen:?}");
        assert_eq!(seen, expected, "{label}: {statements:#?}");
    };

    client.get("/read").await;
    check("no cookie, handler writes nothing", &[]);
    client.get("/incr").await;
    check("first write of a new session", &["INSERT"]);
    // A load is one statement whether or not it slides or takes a flash.
    let load = "WITH touched";
    client.get("/read").await;
    check("read, sliding", &[load]);
    client.get("/incr").await;
    check("modify (last write wins)", &[load, "UPDATE"]);
    client.get("/flash?msg=hi").await;
    check("set a flash", &[load, "UPDATE"]);
    assert_eq!(client.get("/show").await.body, "hi");
    check("read a page with a flash: taken by the load", &[load]);
    assert_eq!(client.get("/show").await.body, "-");
    check("the flash is gone", &[load]);
    client.get("/login").await;
    check("regenerate (login): one statement", &[load, "WITH source"]);
    client.get("/logout").await;
    check("delete (logout)", &[load, "DELETE"]);
    assert_eq!(client.get("/read").await.body, "0 new=true", "logged out");
}

/// A read slides the stored expiry only when that moves it by a second or more: reads within a
/// second write nothing; a read after one slides it to the full idle timeout again.
async fn slides_at_most_once_a_second<St: Store<Counter> + Clone>(
    label: &str,
    store: St,
    raw: impl Raw,
    table: &str,
) {
    let idle = Duration::from_secs(60);
    let mut client = Client::new(app(SessionLayer::new(store).with_idle_timeout(idle)));
    client.get("/incr").await;
    let expiry = format!("SELECT expires_ms FROM {table}");
    let written = raw.scalar(&expiry).await;
    for _ in 0..5 {
        assert_eq!(client.get("/read").await.body, "1 new=false", "{label}");
    }
    assert_eq!(
        raw.scalar(&expiry).await,
        written,
        "{label}: reads within a second leave the row alone"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = now_ms();
    client.get("/read").await;
    let slid = raw.scalar(&expiry).await;
    assert!(
        slid >= before + 60_000 && slid <= now_ms() + 60_000,
        "{label}: a read a second later slides it to now + idle ({slid} vs {before} + 60000)"
    );
}

/// With an idle timeout under two seconds the step is half of it, so reads keep a session alive
/// however short the timeout.
async fn short_idle_timeouts_still_slide<St: Store<Counter> + Clone>(label: &str, store: St) {
    let layer = SessionLayer::new(store).with_idle_timeout(Duration::from_millis(400));
    let mut client = Client::new(app(layer));
    client.get("/incr").await;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            client.get("/read").await.body,
            "1 new=false",
            "{label}: read every 150 ms, a 400 ms session lives on"
        );
    }
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_slides_the_stored_expiry_at_most_once_a_second() {
    let file = TempSqlite::new();
    let pool = sqlite_pool(&file).await;
    let store: SqliteStore<Counter> = sqlite_store(&pool, "sliding").await;
    slides_at_most_once_a_second("sqlite", store.clone(), pool, "sliding").await;
    short_idle_timeouts_still_slide("sqlite", store).await;

    if !postgres_server::available_or_skip("sliding (postgres)") {
        return;
    }
    let server = PostgresServer::start();
    let pool = pg_pool(&server).await;
    let store: PostgresStore<Counter> = pg_store(&pool, "sliding").await;
    slides_at_most_once_a_second("postgres", store.clone(), pool, "sliding").await;
    short_idle_timeouts_still_slide("postgres", store).await;
}

/// Thousands of ended rows go in one call (SQLite deletes them a thousand at a time), live ones
/// stay, and an owner may be any string, NUL included.
async fn sweep_many_and_odd_owners<St: Store<Counter> + Clone + SqlExtras>(
    label: &str,
    store: St,
    raw: impl Raw,
    table: &str,
    series: &str,
) {
    let mut client = Client::new(app(SessionLayer::new(store.clone())));
    client.get("/incr").await;
    let added = raw
        .execute(&format!(
            "INSERT INTO {table} (key, revision, expires_ms, deadline_ms, record) \
             SELECT 'ended' || i, 0, 1, 1, NULL FROM {series}"
        ))
        .await;
    assert_eq!(added, 2_500, "{label}");
    assert_eq!(
        store.sweep().await,
        2_500,
        "{label}: every ended row in one call"
    );
    let rows = format!("SELECT COUNT(*) FROM {table}");
    assert_eq!(
        raw.scalar(&rows).await,
        1,
        "{label}: the live session stays"
    );

    let key = SessionKey::hashed(&client.id().unwrap());
    let until = time::OffsetDateTime::now_utc() + Duration::from_secs(60);
    for owner in ["user\0with nul", "ünïcode", ""] {
        store.index_owner(owner, &key, until).await.expect(label);
        assert_eq!(
            store.owner_keys(owner).await.expect(label),
            [key],
            "{label}"
        );
        store.unindex_owner(owner, &key).await.expect(label);
        assert!(store.owner_keys(owner).await.expect(label).is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_removes_thousands_at_once_and_owners_are_any_string() {
    let file = TempSqlite::new();
    let pool = sqlite_pool(&file).await;
    let store: SqliteStore<Counter> = sqlite_store(&pool, "many").await;
    let series = "(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 2500) \
                  SELECT i FROM s)";
    sweep_many_and_odd_owners("sqlite", store, pool, "many", series).await;

    if !postgres_server::available_or_skip("sweep and owners (postgres)") {
        return;
    }
    let server = PostgresServer::start();
    let pool = pg_pool(&server).await;
    let store: PostgresStore<Counter> = pg_store(&pool, "many").await;
    let series = "generate_series(1, 2500) AS i";
    sweep_many_and_odd_owners("postgres", store, pool, "many", series).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_answers_500_without_set_cookie_and_recovers_by_itself() {
    if !postgres_server::available_or_skip("postgres_outage") {
        return;
    }
    let mut server = PostgresServer::start();
    let pool = pg_pool(&server).await;
    let store = pg_store(&pool, "sessions")
        .await
        .with_operation_timeout(Duration::from_millis(500));
    let events = Events::default();
    let mut client = Client::new(app(events.attach(SessionLayer::new(store))));
    client.get("/incr").await;
    let id = client.id().unwrap();
    events.take();

    server.stop();
    support::requests_during_an_outage(&mut client, &events).await;
    assert_eq!(client.id(), Some(id), "the cookie survived the outage");

    server.restart();
    let accepting = Instant::now();
    let recovered = loop {
        let reply = client.get("/incr").await;
        if reply.status == StatusCode::OK {
            break accepting.elapsed();
        }
        assert!(
            reply.set_cookies().is_empty(),
            "no Set-Cookie while recovering"
        );
        assert!(
            accepting.elapsed() < Duration::from_secs(10),
            "no recovery after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("recovered {recovered:?} after postgres accepted connections again");
    // PostgreSQL kept the session through the restart: same cookie, same count.
    assert_eq!(client.id(), Some(id));
    assert_eq!(client.get("/read").await.body, "2 new=false");
}

/// An idle-expired session fires `expired` while its row is kept, and `rejected(unknown)` once
/// the sweep removed it; the sweep keeps it for the retention.
async fn expired_until_swept<St: Store<Counter> + Clone + SqlExtras>(
    label: &str,
    keeping: St,
    sweeping: St,
    raw: impl Raw,
    table: &str,
) {
    let events = Events::default();
    let layer = events
        .attach(SessionLayer::new(keeping.clone()))
        .with_idle_timeout(Duration::from_millis(300));
    let mut client = Client::new(app(layer));
    client.get("/incr").await;
    let id = client.id().unwrap();
    let key = SessionKey::hashed(&id);
    tokio::time::sleep(Duration::from_millis(500)).await;
    events.take();

    let reply = client.get("/read").await;
    assert_eq!(reply.body, "0 new=true", "{label}");
    assert!(
        reply.is_removal("id"),
        "{label}: the stale cookie is cleared"
    );
    assert_eq!(events.take(), [Event::Expired(key)], "{label}");
    let rows = format!("SELECT COUNT(*) FROM {table}");
    assert_eq!(raw.scalar(&rows).await, 1, "{label}: the row is kept");

    // Within the retention (1 h by default) the sweep leaves it.
    assert_eq!(keeping.sweep().await, 0, "{label}");
    assert_eq!(raw.scalar(&rows).await, 1, "{label}");
    // With no retention it goes, and the cookie is then unknown.
    assert_eq!(sweeping.sweep().await, 1, "{label}: one row swept");
    assert_eq!(raw.scalar(&rows).await, 0, "{label}");
    let reply = support::send(&client.app, support::get_with_id("/read", &id)).await;
    assert_eq!(reply.body, "0 new=true", "{label}");
    assert_eq!(
        events.take(),
        [Event::Rejected(RejectReason::Unknown, Some(key))],
        "{label}"
    );
}

/// What both SQL stores offer beyond `Store`: the sweep and the migration.
trait SqlExtras {
    fn sweep(&self) -> impl Future<Output = u64> + Send;
    fn migrate_tables(&self) -> impl Future<Output = ()> + Send;
}
impl<T: tower_typed_sessions::Session> SqlExtras for PostgresStore<T> {
    async fn sweep(&self) -> u64 {
        self.delete_expired().await.expect("sweep")
    }
    async fn migrate_tables(&self) {
        self.migrate().await.expect("migrate on postgres");
    }
}
impl<T: tower_typed_sessions::Session> SqlExtras for SqliteStore<T> {
    async fn sweep(&self) -> u64 {
        self.delete_expired().await.expect("sweep")
    }
    async fn migrate_tables(&self) {
        self.migrate().await.expect("migrate on sqlite");
    }
}

/// Four migrations at once, one more after them, then a session written through the store.
async fn migrate_concurrently_then_write<St: Store<Counter> + Clone + SqlExtras>(store: St) {
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.migrate_tables().await })
        })
        .collect();
    for run in runs {
        run.await.unwrap();
    }
    store.migrate_tables().await;
    let mut client = Client::new(app(SessionLayer::new(store)));
    client.get("/incr").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_sessions_fire_expired_until_the_sweep_removes_them() {
    let file = TempSqlite::new();
    let pool = sqlite_pool(&file).await;
    let keeping: SqliteStore<Counter> = sqlite_store(&pool, "expiry").await;
    let sweeping = keeping.clone().with_expired_retention(Duration::ZERO);
    expired_until_swept("sqlite", keeping, sweeping, pool, "expiry").await;

    if !postgres_server::available_or_skip("expired_sessions (postgres)") {
        return;
    }
    let server = PostgresServer::start();
    let pool = pg_pool(&server).await;
    let keeping: PostgresStore<Counter> = pg_store(&pool, "expiry").await;
    let sweeping = keeping.clone().with_expired_retention(Duration::ZERO);
    expired_until_swept("postgres", keeping, sweeping, pool, "expiry").await;
}

/// The background sweep removes expired rows by itself, and stops with the store.
async fn background_sweep<St: Store<Counter> + Clone>(
    label: &str,
    sweeping: St,
    passive: St,
    raw: impl Raw,
    table: &str,
) {
    let short = |store: St| SessionLayer::new(store).with_idle_timeout(Duration::from_millis(100));
    let rows = format!("SELECT COUNT(*) FROM {table}");
    let mut client = Client::new(app(short(sweeping.clone())));
    client.get("/incr").await;
    assert_eq!(raw.scalar(&rows).await, 1, "{label}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while raw.scalar(&rows).await > 0 {
        assert!(
            Instant::now() < deadline,
            "{label}: the background sweep removed nothing in 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Once every clone of the sweeping store is gone, its task stops: a row that expires
    // afterwards stays.
    drop(client);
    drop(sweeping);
    let mut client = Client::new(app(short(passive)));
    client.get("/incr").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        raw.scalar(&rows).await,
        1,
        "{label}: the dropped store's sweep stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_sweep_runs_and_stops_with_the_store() {
    let file = TempSqlite::new();
    let pool = sqlite_pool(&file).await;
    let passive: SqliteStore<Counter> = sqlite_store(&pool, "swept").await;
    let passive = passive
        .without_sweeper()
        .with_expired_retention(Duration::ZERO);
    let sweeping = passive
        .clone()
        .with_sweep_interval(Duration::from_millis(50));
    background_sweep("sqlite", sweeping, passive, pool, "swept").await;

    if !postgres_server::available_or_skip("background sweep (postgres)") {
        return;
    }
    let server = PostgresServer::start();
    let pool = pg_pool(&server).await;
    let passive: PostgresStore<Counter> = pg_store(&pool, "swept").await;
    let passive = passive
        .without_sweeper()
        .with_expired_retention(Duration::ZERO);
    let sweeping = passive
        .clone()
        .with_sweep_interval(Duration::from_millis(50));
    background_sweep("postgres", sweeping, passive, pool, "swept").await;
}

/// A row whose record cannot be read as the session type gives a fresh session and is deleted;
/// the table holds digests of the cookies' IDs, never an ID itself.
async fn undecodable_and_hashed<St: Store<Counter> + Clone>(
    label: &str,
    store: St,
    raw: impl Raw,
    table: &str,
) {
    let events = Events::default();
    let mut client = Client::new(app(events.attach(SessionLayer::new(store))));
    client.get("/incr").await;
    let id = client.id().unwrap();
    let keys = raw.texts(&format!("SELECT key FROM {table}")).await;
    assert_eq!(keys, [SessionKey::hashed(&id).as_str()], "{label}");
    assert!(
        !keys.iter().any(|k| k == id.expose_secret()),
        "{label}: no cookie ID at rest"
    );

    let forged = raw
        .execute(&format!(
            "UPDATE {table} SET record = CAST('{{\"garbage\":1}}' AS {}) WHERE key = '{}'",
            if label == "postgres" { "BYTEA" } else { "BLOB" },
            SessionKey::hashed(&id).as_str()
        ))
        .await;
    assert_eq!(forged, 1);
    events.take();
    let reply = client.get("/read").await;
    assert_eq!(reply.body, "0 new=true", "{label}");
    let seen = events.take();
    assert!(
        seen.contains(&Event::Rejected(
            RejectReason::Undecodable,
            Some(SessionKey::hashed(&id))
        )),
        "{label}: {seen:?}"
    );
    assert_eq!(
        raw.scalar(&format!("SELECT COUNT(*) FROM {table}")).await,
        0,
        "{label}: the undecodable row was deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_rows_give_a_fresh_session_and_no_id_is_stored() {
    let file = TempSqlite::new();
    let pool = sqlite_pool(&file).await;
    let store: SqliteStore<Counter> = sqlite_store(&pool, "forged").await;
    undecodable_and_hashed("sqlite", store, pool, "forged").await;

    if !postgres_server::available_or_skip("undecodable rows (postgres)") {
        return;
    }
    let server = PostgresServer::start();
    let pool = pg_pool(&server).await;
    let store: PostgresStore<Counter> = pg_store(&pool, "forged").await;
    undecodable_and_hashed("postgres", store, pool, "forged").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_idempotent_concurrent_and_names_are_checked() {
    let file = TempSqlite::new();
    let pool = sqlite_pool(&file).await;
    for bad in [
        "",
        "1table",
        "a-b",
        "a\"b",
        "x; DROP TABLE y",
        &"t".repeat(49),
    ] {
        let refused = SqliteStore::<Counter>::new(pool.clone()).with_table(bad);
        assert_eq!(refused.unwrap_err().name(), bad);
    }
    let store = SqliteStore::<Counter>::new(pool.clone())
        .with_table("Mixed_Case_2")
        .unwrap();
    migrate_concurrently_then_write(store).await;
    assert_eq!(
        pool.scalar("SELECT COUNT(*) FROM \"Mixed_Case_2\"").await,
        1
    );

    if !postgres_server::available_or_skip("migrations (postgres)") {
        return;
    }
    let server = PostgresServer::start();
    let pool = pg_pool(&server).await;
    assert!(PostgresStore::<Counter>::new(pool.clone())
        .with_schema("no-dash")
        .is_err());
    let store = PostgresStore::<Counter>::new(pool.clone())
        .with_schema("auth")
        .unwrap()
        .with_table("web_sessions")
        .unwrap();
    migrate_concurrently_then_write(store).await;
    assert_eq!(
        pool.scalar("SELECT COUNT(*) FROM auth.web_sessions").await,
        1
    );
    assert_eq!(
        pool.scalar("SELECT COUNT(*) FROM auth.web_sessions_owners")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sessions_survive_a_restart_of_the_application() {
    let file = TempSqlite::new();
    let cookie = {
        let pool = sqlite_pool(&file).await;
        let store: SqliteStore<Counter> = sqlite_store(&pool, "sessions").await;
        let mut client = Client::new(app(SessionLayer::new(store)));
        client.get("/incr").await;
        client.get("/incr").await;
        pool.close().await;
        client.id().unwrap()
    };
    let pool = sqlite_pool(&file).await;
    let store: SqliteStore<Counter> = sqlite_store(&pool, "sessions").await;
    let app = app(SessionLayer::new(store));
    let reply = send(&app, support::get_with_id("/read", &cookie)).await;
    assert_eq!(reply.body, "2 new=false");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_index_and_hardening_on_sqlite() {
    let file = TempSqlite::new();
    let pool = sqlite_pool(&file).await;
    owner_suite::owner_index_flow(sqlite_store(&pool, "owners_flow").await).await;
    hardening("sqlite", sqlite_store(&pool, "hardening").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_index_and_hardening_on_postgres() {
    if !postgres_server::available_or_skip("owner index and hardening (postgres)") {
        return;
    }
    let server = PostgresServer::start();
    let pool = pg_pool(&server).await;
    owner_suite::owner_index_flow(pg_store(&pool, "owners_flow").await).await;
    hardening("postgres", pg_store(&pool, "hardening").await).await;
}

async fn hardening<St: Store<Counter> + Clone>(label: &str, store: St) {
    let resurrections = hardening_suite::no_resurrection(store.clone(), 300).await;
    println!("{label}: 300 races, {resurrections} resurrections");
    assert_eq!(resurrections, 0);
    let (value, successes, conflicts) = hardening_suite::optimistic_increments(store.clone()).await;
    println!("{label} optimistic: +{value}, {successes} successes, {conflicts} conflicts refused");
    assert_eq!((value as usize, successes), (64, 64));
    let (value, successes) = hardening_suite::last_write_wins_increments(store.clone()).await;
    println!("{label} last write wins: +{value} from {successes} successes");
    hardening_suite::signed_cookies_and_rotation(store.clone()).await;
    hardening_suite::hashed_ids_at_rest(store.clone()).await;
    hardening_suite::regenerate_grace_window(store.clone()).await;
    hardening_suite::record_size_limit(store).await;
}
