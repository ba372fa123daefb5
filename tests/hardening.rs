//! Hardening guarantees on the memory store (the Redis and Cluster binaries run the same suite).

#[path = "support/hardening_suite.rs"]
mod hardening_suite;
mod support;

use support::TestStore;
use tower_typed_sessions::{
    Expect, Forward, LoadOptions, Loaded, MemoryStore, Record, SessionKey, Store, StoreError,
    WriteOutcome,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_resurrection_in_1000_races_of_a_slow_writer_against_logout_or_login() {
    let resurrections = hardening_suite::no_resurrection(TestStore::new(), 1000).await;
    println!("memory: 1000 races, {resurrections} resurrections");
    assert_eq!(resurrections, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimistic_concurrency_loses_no_increment() {
    let (value, successes, conflicts) =
        hardening_suite::optimistic_increments(TestStore::new()).await;
    println!("memory optimistic: 64 clients, final +{value}, {successes} successes, {conflicts} conflicts refused");
    assert_eq!(successes, 64);
    assert_eq!(
        value as usize, successes,
        "every successful response is counted exactly once"
    );
    assert!(conflicts > 0, "the race really happened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_write_wins_documents_the_lost_updates() {
    let (value, successes) = hardening_suite::last_write_wins_increments(TestStore::new()).await;
    println!(
        "memory last-write-wins: 64 successes, final +{value}: {} increments lost",
        successes as u32 - value
    );
    assert_eq!(successes, 64);
    assert!(
        value < 64,
        "concurrent read-modify-writes lose updates under last-write-wins"
    );
}

#[tokio::test]
async fn signed_cookies_reject_forgeries_without_lookup_and_rotate_keys() {
    let tried = hardening_suite::signed_cookies_and_rotation(MemoryStore::new()).await;
    println!("memory: {tried} forged or unsigned cookies rejected without a store lookup");
}

#[tokio::test]
async fn ids_hashed_at_rest_on_the_memory_store() {
    hardening_suite::hashed_ids_at_rest(MemoryStore::new()).await;
}

#[tokio::test]
async fn memory_store_keeps_plain_ids_unless_told_otherwise() {
    let store = MemoryStore::<support::Counter>::new();
    let mut client = support::Client::new(
        support::routes().layer(tower_typed_sessions::SessionLayer::new(store.clone())),
    );
    client.get("/incr").await;
    let id = client.id().unwrap();
    assert!(matches!(
        hardening_suite::peek(&store, &SessionKey::plain(&id)).await,
        Loaded::Active(_)
    ));
    assert!(matches!(
        hardening_suite::peek(&store, &SessionKey::hashed(&id)).await,
        Loaded::Missing
    ));
}

/// A store wrapper that implements only the five required operations: it does not say that its
/// contents stay in the process, so the layer hashes IDs at rest by default, even though the
/// store underneath is a `MemoryStore`.
#[derive(Clone)]
struct Opaque(MemoryStore<support::Counter>);

impl Store<support::Counter> for Opaque {
    async fn load(
        &self,
        key: &SessionKey,
        options: LoadOptions,
    ) -> Result<Loaded<support::Counter>, StoreError> {
        self.0.load(key, options).await
    }
    async fn create(&self, r: &Record<support::Counter>) -> Result<WriteOutcome, StoreError> {
        self.0.create(r).await
    }
    async fn save(
        &self,
        r: &Record<support::Counter>,
        expect: Expect,
    ) -> Result<WriteOutcome, StoreError> {
        self.0.save(r, expect).await
    }
    async fn regenerate(
        &self,
        old: &SessionKey,
        r: &Record<support::Counter>,
        expect: Expect,
        forward: Forward,
    ) -> Result<WriteOutcome, StoreError> {
        self.0.regenerate(old, r, expect, forward).await
    }
    async fn delete(&self, key: &SessionKey, expect: Expect) -> Result<WriteOutcome, StoreError> {
        self.0.delete(key, expect).await
    }
}

#[tokio::test]
async fn a_store_that_does_not_say_its_contents_stay_in_process_is_hashed_by_default() {
    let inner = MemoryStore::<support::Counter>::new();
    let mut client = support::Client::new(support::routes().layer(
        tower_typed_sessions::SessionLayer::new(Opaque(inner.clone())),
    ));
    client.get("/incr").await;
    let id = client.id().unwrap();
    assert!(matches!(
        hardening_suite::peek(&inner, &SessionKey::hashed(&id)).await,
        Loaded::Active(_)
    ));
    assert!(matches!(
        hardening_suite::peek(&inner, &SessionKey::plain(&id)).await,
        Loaded::Missing
    ));
    assert_eq!(client.get("/read").await.body, "1 new=false");
    // The owner index and count are optional: without them the layer still serves sessions, and
    // a manager answers Unsupported.
    let layer = tower_typed_sessions::SessionLayer::new(Opaque(inner));
    let err = layer.manager().list("alice").await.unwrap_err();
    assert!(
        err.store_error().is_some_and(StoreError::is_unsupported),
        "{err}"
    );
}

#[tokio::test]
async fn regenerate_grace_window_on_the_memory_store() {
    hardening_suite::regenerate_grace_window(MemoryStore::<support::Counter>::new()).await;
}

#[tokio::test]
async fn record_size_limit_on_the_memory_store() {
    hardening_suite::record_size_limit(MemoryStore::<support::Counter>::new()).await;
}
