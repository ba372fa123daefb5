//! The `Store<T>` contract run against `MemoryStore`, plus the behaviour only `MemoryStore` has
//! (sweeper, capacity cap, shared clones), checked through its public API.

#[path = "support/store_suite.rs"]
mod store_suite;
mod support;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use store_suite::{active, assert_missing, count, live, new_id, record, LONG, PAST_SHORT, SHORT};
use support::Counter;
use tower_typed_sessions::{Loaded, MemoryStore, Store, StoreError, WriteOutcome};

fn store() -> MemoryStore<Counter> {
    MemoryStore::<Counter>::new()
}

/// One `#[tokio::test]` per suite function, each on a fresh store.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $name() {
            store_suite::$name(&store()).await;
        }
    )*};
}

store_suite::contract_checks!(contract);

// ---------------------------------------------------------------------------------------------
// MemoryStore only
// ---------------------------------------------------------------------------------------------

/// Sleeps in small steps until `done` holds, for at most `limit`. Returns whether it held.
async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The number of entries the store physically holds (expired ones included), from its `Debug`.
fn entries(store: &MemoryStore<Counter>) -> usize {
    let debug = format!("{store:?}");
    let rest = debug
        .split("entries: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no entries in {debug}"));
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap()
}

#[tokio::test]
async fn memory_expired_session_is_never_returned_before_a_sweep() {
    let store = MemoryStore::<Counter>::builder()
        .with_sweep_interval(LONG)
        .build();
    let a = record(new_id(), 1, SHORT, LONG);
    let b = record(new_id(), 2, SHORT, LONG);
    assert_eq!(store.create(&a).await.unwrap(), WriteOutcome::Done);
    assert_eq!(store.create(&b).await.unwrap(), WriteOutcome::Done);
    tokio::time::sleep(PAST_SHORT).await;

    // Both still physically held: no sweep has run.
    assert_eq!(entries(&store), 2);
    assert_eq!(count(&store).await, 0);
    // MemoryStore still has the record, so it reports Expired (with the record) and removes it.
    match store.load(&a.id).await.unwrap() {
        Loaded::Expired(record) => {
            assert_eq!(record.id, a.id);
            assert_eq!(record.data.count, 1);
        }
        other => panic!("expected Expired, got {other:?}"),
    }
    assert_missing(&store, &a.id).await;
    assert!(matches!(
        store
            .load_and_touch(&b.id, Duration::from_secs(60))
            .await
            .unwrap(),
        Loaded::Expired(record) if record.id == b.id
    ));
    assert_missing(&store, &b.id).await;
    assert_eq!(entries(&store), 0);
    assert_eq!(store.purge_expired(), 0);

    // And purge_expired removes what nobody looked at.
    let c = record(new_id(), 3, SHORT, LONG);
    let d = live(new_id(), 4);
    assert_eq!(store.create(&c).await.unwrap(), WriteOutcome::Done);
    assert_eq!(store.create(&d).await.unwrap(), WriteOutcome::Done);
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(entries(&store), 2);
    assert_eq!(store.purge_expired(), 1);
    assert_eq!(entries(&store), 1);
    assert_eq!(active(&store, &d.id).await.data.count, 4);
}

#[tokio::test]
async fn memory_background_sweeper_removes_expired_sessions() {
    let store = MemoryStore::<Counter>::builder()
        .with_sweep_interval(Duration::from_millis(50))
        .build();
    let keep = live(new_id(), 0);
    let short: Vec<_> = (1..=3).map(|i| record(new_id(), i, SHORT, LONG)).collect();
    assert_eq!(store.create(&keep).await.unwrap(), WriteOutcome::Done);
    for rec in &short {
        assert_eq!(store.create(rec).await.unwrap(), WriteOutcome::Done);
    }
    tokio::time::sleep(SHORT).await;

    // Nothing but the sweeper touches the store now: it must bring the entries down to 1.
    assert!(
        wait_until(Duration::from_secs(3), || entries(&store) == 1).await,
        "the sweeper did not remove the expired sessions: {store:?}"
    );
    assert_eq!(store.purge_expired(), 0, "already swept");
    assert_eq!(count(&store).await, 1);
    assert_eq!(active(&store, &keep.id).await.data.count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_sweeper_task_ends_when_the_last_clone_is_dropped() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let base = metrics.num_alive_tasks();

    let store = MemoryStore::<Counter>::builder()
        .with_sweep_interval(Duration::from_secs(3600))
        .build();
    let clone = store.clone();
    assert_eq!(metrics.num_alive_tasks(), base, "no sweeper before a write");

    assert_eq!(
        store.create(&live(new_id(), 1)).await.unwrap(),
        WriteOutcome::Done
    );
    assert_eq!(metrics.num_alive_tasks(), base + 1, "the sweeper started");
    assert_eq!(
        clone.create(&live(new_id(), 2)).await.unwrap(),
        WriteOutcome::Done
    );
    assert_eq!(metrics.num_alive_tasks(), base + 1, "only one sweeper");

    // A clone still holds the store: the sweeper keeps running.
    drop(store);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(metrics.num_alive_tasks(), base + 1);
    assert_eq!(count(&clone).await, 2);

    drop(clone);
    assert!(
        wait_until(Duration::from_secs(2), || metrics.num_alive_tasks() == base).await,
        "the sweeper task outlived the store: {} alive tasks, expected {base}",
        metrics.num_alive_tasks()
    );
}

#[tokio::test]
async fn memory_capacity_cap_refuses_creates_beyond_the_limit() {
    let store = MemoryStore::<Counter>::builder()
        .with_max_sessions(3)
        .build();
    let recs: Vec<_> = (0..3).map(|i| live(new_id(), i)).collect();
    for rec in &recs {
        assert_eq!(store.create(rec).await.unwrap(), WriteOutcome::Done);
    }
    let extra = live(new_id(), 9);
    match store.create(&extra).await {
        Err(StoreError::CapacityExceeded { limit: 3 }) => {}
        other => panic!("expected CapacityExceeded {{ limit: 3 }}, got {other:?}"),
    }
    assert_missing(&store, &extra.id).await;
    assert_eq!(count(&store).await, 3);

    // Updates and moves are not creates: they still work at the limit.
    let mut updated = recs[0].clone();
    updated.data.count = 10;
    assert_eq!(store.save(&updated).await.unwrap(), WriteOutcome::Done);
    let mut moved = recs[1].clone();
    moved.id = new_id();
    assert_eq!(
        store.regenerate(&recs[1].id, &moved).await.unwrap(),
        WriteOutcome::Done
    );
    assert_eq!(count(&store).await, 3);
    assert!(matches!(
        store.create(&extra).await,
        Err(StoreError::CapacityExceeded { limit: 3 })
    ));

    // Deleting one frees a place.
    assert_eq!(store.delete(&recs[2].id).await.unwrap(), WriteOutcome::Done);
    assert_eq!(store.create(&extra).await.unwrap(), WriteOutcome::Done);
    assert_eq!(count(&store).await, 3);
    assert!(matches!(
        store.create(&live(new_id(), 11)).await,
        Err(StoreError::CapacityExceeded { limit: 3 })
    ));
}

/// The cap holds when creates race: 32 tasks released together against `with_max_sessions(8)`
/// must produce exactly 8 sessions. Repeated so that an unsynchronised check-then-insert is caught
/// (a correct store passes every round; a racy one fails within the first few dozen).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_capacity_cap_holds_under_concurrent_creates() {
    const LIMIT: usize = 8;
    const RACERS: u32 = 32;
    for round in 0..1000 {
        let store = MemoryStore::<Counter>::builder()
            .with_max_sessions(LIMIT)
            .build();
        let barrier = Arc::new(tokio::sync::Barrier::new(RACERS as usize));
        let mut tasks = Vec::new();
        for i in 0..RACERS {
            let store = store.clone();
            let barrier = Arc::clone(&barrier);
            let rec = live(new_id(), i);
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                store.create(&rec).await
            }));
        }
        let mut created = 0;
        for task in tasks {
            match task.await.expect("task panicked") {
                Ok(WriteOutcome::Done) => created += 1,
                Err(StoreError::CapacityExceeded { limit: LIMIT }) => {}
                other => panic!("unexpected create result {other:?}"),
            }
        }
        let held = count(&store).await;
        assert!(
            created == LIMIT && held == LIMIT,
            "round {round}: {created} concurrent creates succeeded and the store holds {held} \
             sessions, but with_max_sessions({LIMIT}) caps it at {LIMIT}"
        );
    }
}

#[tokio::test]
async fn memory_capacity_cap_frees_places_of_expired_sessions() {
    let store = MemoryStore::<Counter>::builder()
        .with_max_sessions(3)
        .with_sweep_interval(LONG)
        .build();
    let long: Vec<_> = (0..2).map(|i| live(new_id(), i)).collect();
    let short = record(new_id(), 5, SHORT, LONG);
    for rec in long.iter().chain([&short]) {
        assert_eq!(store.create(rec).await.unwrap(), WriteOutcome::Done);
    }
    tokio::time::sleep(PAST_SHORT).await;

    // The expired one still occupies its place until purged; create purges and succeeds.
    assert_eq!(entries(&store), 3);
    let next = live(new_id(), 6);
    assert_eq!(store.create(&next).await.unwrap(), WriteOutcome::Done);
    assert_eq!(entries(&store), 3);
    assert_eq!(count(&store).await, 3);
    assert!(matches!(
        store.create(&live(new_id(), 7)).await,
        Err(StoreError::CapacityExceeded { limit: 3 })
    ));
}

#[tokio::test]
async fn memory_clones_share_sessions() {
    let a = store();
    let b = a.clone();
    let rec = live(new_id(), 1);
    assert_eq!(a.create(&rec).await.unwrap(), WriteOutcome::Done);
    assert_eq!(active(&b, &rec.id).await.data.count, 1);
    assert_eq!(count(&b).await, 1);
    assert_eq!(b.create(&rec).await.unwrap(), WriteOutcome::Collision);

    let mut changed = rec.clone();
    changed.data.count = 2;
    assert_eq!(b.save(&changed).await.unwrap(), WriteOutcome::Done);
    assert_eq!(active(&a, &rec.id).await.data.count, 2);

    let c = b.clone();
    drop(b);
    assert_eq!(c.delete(&rec.id).await.unwrap(), WriteOutcome::Done);
    assert_missing(&a, &rec.id).await;
    assert_eq!(count(&a).await, 0);
    assert_eq!(count(&c).await, 0);

    // Two separately built stores share nothing.
    let other = store();
    assert_eq!(a.create(&rec).await.unwrap(), WriteOutcome::Done);
    assert_missing(&other, &rec.id).await;
    assert_eq!(count(&other).await, 0);
}
