//! The behaviour only `MemoryStore` has (sweeper, capacity cap, shared clones), checked through
//! its public API. The `Store<T>` contract itself is run by the crate's conformance suite
//! (tests/conformance.rs).

mod support;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use support::Counter;
use time::OffsetDateTime;
use tower_typed_sessions::{
    Expect, Forward, LoadOptions, Loaded, MemoryStore, Record, SessionKey, Store, StoreError,
    WriteOutcome,
};

/// Idle timeout of the records that must expire during a test.
const SHORT: Duration = Duration::from_millis(150);
/// How long to sleep so that a [`SHORT`] record is surely dead (generous: loaded CI boxes).
const PAST_SHORT: Duration = Duration::from_millis(400);
/// A timeout no test outlives.
const LONG: Duration = Duration::from_secs(3600);

fn store() -> MemoryStore<Counter> {
    MemoryStore::<Counter>::new()
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn now_ms() -> i64 {
    i64::try_from(now().unix_timestamp_nanos() / 1_000_000).unwrap()
}

fn new_key() -> SessionKey {
    SessionKey::generate().unwrap()
}

/// A record built the way a client of the crate can: by deserializing its stored form.
/// Created and last seen now, idle expiry `now + idle`, absolute deadline `now + lifetime`.
fn record(key: SessionKey, count: u32, idle: Duration, lifetime: Duration) -> Record<Counter> {
    let now = now_ms();
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap();
    serde_json::from_value(serde_json::json!({
        "v": tower_typed_sessions::RECORD_FORMAT,
        "key": key.as_str(),
        "data": { "count": count, "user": null },
        "has_data": true,
        "created_at": now,
        "last_seen": now,
        "expires_at": now + ms(idle),
        "deadline": now + ms(lifetime),
    }))
    .unwrap()
}

/// A long-lived record (nothing expires during a test).
fn live(key: SessionKey, count: u32) -> Record<Counter> {
    record(key, count, LONG, 2 * LONG)
}

async fn load(store: &MemoryStore<Counter>, key: &SessionKey) -> Loaded<Counter> {
    store.load(key, LoadOptions::at(now())).await.unwrap()
}

/// The live record under `key`, or a panic describing what the store said instead.
async fn active(store: &MemoryStore<Counter>, key: &SessionKey) -> Record<Counter> {
    match load(store, key).await {
        Loaded::Active(record) => record,
        other => panic!("{key}: expected Active, got {other:?}"),
    }
}

async fn assert_missing(store: &MemoryStore<Counter>, key: &SessionKey) {
    match load(store, key).await {
        Loaded::Missing => {}
        other => panic!("{key}: expected Missing, got {other:?}"),
    }
}

async fn count(store: &MemoryStore<Counter>) -> usize {
    store.count().await.unwrap()
}

/// A pointer to `to` that lasts as long as a long-lived record.
fn forward(to: SessionKey) -> Forward {
    Forward::new(to, None, now() + LONG)
}

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
    let a = record(new_key(), 1, SHORT, LONG);
    let b = record(new_key(), 2, SHORT, LONG);
    assert_eq!(store.create(&a).await.unwrap(), WriteOutcome::Done);
    assert_eq!(store.create(&b).await.unwrap(), WriteOutcome::Done);
    tokio::time::sleep(PAST_SHORT).await;

    // Both still physically held: no sweep has run.
    assert_eq!(entries(&store), 2);
    assert_eq!(count(&store).await, 0);
    // MemoryStore still has the record, so it reports Expired (with the record), on every load
    // until the sweep: a listing of a user's sessions does not turn an expiry into "unknown".
    for _ in 0..2 {
        match load(&store, &a.key).await {
            Loaded::Expired(record) => {
                assert_eq!(record.key, a.key);
                assert_eq!(record.data.count, 1);
            }
            other => panic!("expected Expired, got {other:?}"),
        }
    }
    // A sliding, flash-taking load does not revive it either.
    let options = LoadOptions::at(now())
        .sliding(Some(Duration::from_secs(60)))
        .taking_flash(true);
    assert!(matches!(
        store.load(&b.key, options).await.unwrap(),
        Loaded::Expired(record) if record.key == b.key
    ));
    assert!(matches!(load(&store, &b.key).await, Loaded::Expired(_)));
    assert_eq!(entries(&store), 2);
    assert_eq!(store.purge_expired(), 2);
    assert_missing(&store, &a.key).await;
    assert_missing(&store, &b.key).await;
    assert_eq!(entries(&store), 0);

    // And purge_expired removes what nobody looked at.
    let c = record(new_key(), 3, SHORT, LONG);
    let d = live(new_key(), 4);
    assert_eq!(store.create(&c).await.unwrap(), WriteOutcome::Done);
    assert_eq!(store.create(&d).await.unwrap(), WriteOutcome::Done);
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(entries(&store), 2);
    assert_eq!(store.purge_expired(), 1);
    assert_eq!(entries(&store), 1);
    assert_eq!(active(&store, &d.key).await.data.count, 4);
}

#[tokio::test]
async fn memory_background_sweeper_removes_expired_sessions() {
    let store = MemoryStore::<Counter>::builder()
        .with_sweep_interval(Duration::from_millis(50))
        .build();
    let keep = live(new_key(), 0);
    let short: Vec<_> = (1..=3).map(|i| record(new_key(), i, SHORT, LONG)).collect();
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
    assert_eq!(active(&store, &keep.key).await.data.count, 0);
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
        store.create(&live(new_key(), 1)).await.unwrap(),
        WriteOutcome::Done
    );
    assert_eq!(metrics.num_alive_tasks(), base + 1, "the sweeper started");
    assert_eq!(
        clone.create(&live(new_key(), 2)).await.unwrap(),
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
    let recs: Vec<_> = (0..3).map(|i| live(new_key(), i)).collect();
    for rec in &recs {
        assert_eq!(store.create(rec).await.unwrap(), WriteOutcome::Done);
    }
    let extra = live(new_key(), 9);
    match store.create(&extra).await {
        Err(StoreError::CapacityExceeded { limit: 3 }) => {}
        other => panic!("expected CapacityExceeded {{ limit: 3 }}, got {other:?}"),
    }
    assert_missing(&store, &extra.key).await;
    assert_eq!(count(&store).await, 3);

    // An update is not a create: it works at the limit. A move needs a place for the pointer
    // it leaves (pointers are entries too, so that logging in over and over cannot grow the
    // store past its cap): at the limit it is refused, and nothing changes.
    let mut updated = recs[0].clone();
    updated.data.count = 10;
    assert_eq!(
        store.save(&updated, Expect::Any).await.unwrap(),
        WriteOutcome::Done
    );
    let mut moved = recs[1].clone();
    moved.key = new_key();
    assert!(matches!(
        store
            .regenerate(&recs[1].key, &moved, Expect::Any, forward(moved.key))
            .await,
        Err(StoreError::CapacityExceeded { limit: 3 })
    ));
    assert_missing(&store, &moved.key).await;
    assert_eq!(active(&store, &recs[1].key).await.data.count, 1);
    assert_eq!(entries(&store), 3);

    // A delete frees a place: the move then fits, and its pointer takes the place.
    assert_eq!(
        store.delete(&recs[2].key, Expect::Any).await.unwrap(),
        WriteOutcome::Done
    );
    assert_eq!(
        store
            .regenerate(&recs[1].key, &moved, Expect::Any, forward(moved.key))
            .await
            .unwrap(),
        WriteOutcome::Done
    );
    assert_eq!(count(&store).await, 2);
    assert_eq!(entries(&store), 3);
    assert!(matches!(
        store.create(&extra).await,
        Err(StoreError::CapacityExceeded { limit: 3 })
    ));
    assert_eq!(
        store.delete(&recs[0].key, Expect::Any).await.unwrap(),
        WriteOutcome::Done
    );
    assert_eq!(store.create(&extra).await.unwrap(), WriteOutcome::Done);
    assert_eq!(count(&store).await, 2);
    assert_eq!(entries(&store), 3);
    assert!(matches!(
        store.create(&live(new_key(), 11)).await,
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
            let rec = live(new_key(), i);
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
    let long: Vec<_> = (0..2).map(|i| live(new_key(), i)).collect();
    let short = record(new_key(), 5, SHORT, LONG);
    for rec in long.iter().chain([&short]) {
        assert_eq!(store.create(rec).await.unwrap(), WriteOutcome::Done);
    }
    tokio::time::sleep(PAST_SHORT).await;

    // The expired one still occupies its place until purged; create purges and succeeds.
    assert_eq!(entries(&store), 3);
    let next = live(new_key(), 6);
    assert_eq!(store.create(&next).await.unwrap(), WriteOutcome::Done);
    assert_eq!(entries(&store), 3);
    assert_eq!(count(&store).await, 3);
    assert!(matches!(
        store.create(&live(new_key(), 7)).await,
        Err(StoreError::CapacityExceeded { limit: 3 })
    ));
}

/// A refused create purges expired entries at most once a second, so that a flood of refused
/// creates costs O(1) each instead of a scan of the whole store.
#[tokio::test]
async fn memory_capacity_cap_purges_at_most_once_a_second() {
    let store = MemoryStore::<Counter>::builder()
        .with_max_sessions(2)
        .with_sweep_interval(LONG)
        .build();
    let keep = live(new_key(), 0);
    let short = record(new_key(), 1, SHORT, LONG);
    assert_eq!(store.create(&keep).await.unwrap(), WriteOutcome::Done);
    assert_eq!(store.create(&short).await.unwrap(), WriteOutcome::Done);

    // Refused while nothing is expired: that create used up this second's purge.
    let started = Instant::now();
    let next = live(new_key(), 2);
    assert!(matches!(
        store.create(&next).await,
        Err(StoreError::CapacityExceeded { limit: 2 })
    ));

    // The short one has expired, but the next purge is not due yet: still refused.
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(count(&store).await, 1);
    assert!(matches!(
        store.create(&next).await,
        Err(StoreError::CapacityExceeded { limit: 2 })
    ));
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "the second refusal came within the second: {:?}",
        started.elapsed()
    );
    assert_eq!(entries(&store), 2, "no purge ran");

    // A second after the first refusal, a refused create purges again, and succeeds.
    tokio::time::sleep(Duration::from_millis(1100).saturating_sub(started.elapsed())).await;
    assert_eq!(store.create(&next).await.unwrap(), WriteOutcome::Done);
    assert_eq!(entries(&store), 2);
    assert_eq!(count(&store).await, 2);
}

#[tokio::test]
async fn memory_clones_share_sessions() {
    let a = store();
    let b = a.clone();
    let rec = live(new_key(), 1);
    assert_eq!(a.create(&rec).await.unwrap(), WriteOutcome::Done);
    assert_eq!(active(&b, &rec.key).await.data.count, 1);
    assert_eq!(count(&b).await, 1);
    assert_eq!(b.create(&rec).await.unwrap(), WriteOutcome::Collision);

    let mut changed = rec.clone();
    changed.data.count = 2;
    assert_eq!(
        b.save(&changed, Expect::Any).await.unwrap(),
        WriteOutcome::Done
    );
    assert_eq!(active(&a, &rec.key).await.data.count, 2);

    let c = b.clone();
    drop(b);
    assert_eq!(
        c.delete(&rec.key, Expect::Any).await.unwrap(),
        WriteOutcome::Done
    );
    assert_missing(&a, &rec.key).await;
    assert_eq!(count(&a).await, 0);
    assert_eq!(count(&c).await, 0);

    // Two separately built stores share nothing.
    let other = store();
    assert_eq!(a.create(&rec).await.unwrap(), WriteOutcome::Done);
    assert_missing(&other, &rec.key).await;
    assert_eq!(count(&other).await, 0);
}
