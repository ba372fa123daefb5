//! The conformance suite (feature `testing`) against the SQL stores: PostgreSQL that the test
//! starts itself (initdb into a temporary directory, a free loopback port) and SQLite in a
//! temporary file. Every check gets a table of its own.
#![cfg(all(feature = "testing", feature = "postgres", feature = "sqlite"))]

#[path = "support/postgres_server.rs"]
mod postgres_server;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use postgres_server::{PostgresServer, TempSqlite};
use sqlx::{
    postgres::PgPoolOptions,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions},
};
use tower_typed_sessions::{
    testing::{Conformance, Report},
    PostgresStore, SqliteStore,
};

/// The suite ran all six race guarantees, each through every order at least once.
fn every_race_ran(database: &str, report: &Report) {
    println!("{database}: {report}");
    assert_eq!(report.races.len(), 6);
    assert!(
        report.races.iter().all(|(_, races)| *races >= 140),
        "{report}"
    );
}

fn table(counter: &AtomicUsize) -> String {
    format!("conformance{}", counter.fetch_add(1, Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_passes_the_conformance_suite() {
    if !postgres_server::available_or_skip("postgres_store_passes_the_conformance_suite") {
        return;
    }
    let server = PostgresServer::start();
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .test_before_acquire(false)
        .connect(&server.url())
        .await
        .expect("connect to the test's postgres");
    let counter = Arc::new(AtomicUsize::new(0));
    let report = Conformance::with_async(move || {
        let (pool, counter) = (pool.clone(), Arc::clone(&counter));
        async move {
            let store = PostgresStore::new(pool)
                .with_table(&table(&counter))
                .expect("a valid table name");
            store.migrate().await.expect("create the table");
            store
        }
    })
    .repetitions(1)
    .run()
    .await;
    every_race_ran("PostgreSQL", &report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_passes_the_conformance_suite() {
    let file = TempSqlite::new();
    let options = SqliteConnectOptions::new()
        .filename(file.path())
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .expect("open the temporary database");
    let counter = Arc::new(AtomicUsize::new(0));
    let report = Conformance::with_async(move || {
        let (pool, counter) = (pool.clone(), Arc::clone(&counter));
        async move {
            let store = SqliteStore::new(pool)
                .with_table(&table(&counter))
                .expect("a valid table name");
            store.migrate().await.expect("create the table");
            store
        }
    })
    .repetitions(1)
    .run()
    .await;
    every_race_ran("SQLite", &report);
}
