//! The behavioural contract of [`Store<T>`], written once and generic over the store, so that every
//! backend (memory today, Redis and Redis Cluster later) runs the very same checks.
//!
//! Each function is one test body. Call it with a fresh store (or at least one that no other test
//! uses at the same time): the functions compare `count` before and after, so they tolerate
//! sessions left over from earlier tests, but not concurrent writers.
//!
//! Timing: all records are built from millisecond timestamps (the stored precision), expiry tests
//! use a short idle time and sleep well past it, and nothing depends on a sleep being short.
#![allow(dead_code, unreachable_pub)]

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use time::OffsetDateTime;
use tower_typed_sessions::{Loaded, Record, SessionId, Store, WriteOutcome};

use crate::support::Counter;

/// Idle timeout of the records that must expire during a test.
pub const SHORT: Duration = Duration::from_millis(150);
/// How long to sleep so that a [`SHORT`] record is surely dead (generous: loaded CI boxes).
pub const PAST_SHORT: Duration = Duration::from_millis(400);
/// A timeout no test outlives.
pub const LONG: Duration = Duration::from_secs(3600);
/// How far "about now" may be off when a store stamps the time itself.
pub const SLACK: Duration = Duration::from_secs(1);

/// Calls `$run!(check, ...)` with every contract check, so that each backend's test binary runs
/// the very same list.
macro_rules! contract_checks {
    ($run:ident) => {
        $run!(
            create_then_load_round_trips,
            create_never_overwrites,
            load_unknown_is_missing,
            save_never_creates,
            save_replaces_existing,
            save_after_delete_does_not_resurrect,
            delete_then_missing,
            regenerate_moves_session,
            regenerate_from_missing_creates_nothing,
            regenerate_onto_taken_id_changes_nothing,
            touch_extends_up_to_deadline,
            load_and_touch_slides_expiry,
            idle_expired_session_is_dead,
            deadline_passed_session_is_dead,
            concurrent_independent_sessions,
            concurrent_regenerate_has_one_winner,
        );
    };
}
pub(crate) use contract_checks;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The current time in whole milliseconds since the Unix epoch (the precision records keep).
pub fn now_ms() -> i64 {
    i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap()
}

/// A point in time from milliseconds since the Unix epoch.
pub fn at_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap()
}

fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap()
}

pub fn new_id() -> SessionId {
    SessionId::generate().unwrap()
}

/// A record built the way a client of the crate can: by deserializing its stored form.
/// Created and last seen now, idle expiry `now + idle`, absolute deadline `now + lifetime`.
pub fn record(id: SessionId, count: u32, idle: Duration, lifetime: Duration) -> Record<Counter> {
    let now = now_ms();
    serde_json::from_value(serde_json::json!({
        "v": 1,
        "id": id.expose_secret(),
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
pub fn live(id: SessionId, count: u32) -> Record<Counter> {
    record(id, count, LONG, 2 * LONG)
}

/// The live record under `id`, or a panic describing what the store said instead.
pub async fn active<S: Store<Counter>>(store: &S, id: &SessionId) -> Record<Counter> {
    match store.load(id).await.unwrap() {
        Loaded::Active(record) => record,
        Loaded::Expired(_) => panic!("{id}: expected Active, got Expired"),
        Loaded::Missing => panic!("{id}: expected Active, got Missing"),
        _ => panic!("{id}: expected Active, got an unknown variant"),
    }
}

pub async fn assert_missing<S: Store<Counter>>(store: &S, id: &SessionId) {
    match store.load(id).await.unwrap() {
        Loaded::Missing => {}
        Loaded::Active(record) => panic!("{id}: expected Missing, got Active({record:?})"),
        Loaded::Expired(_) => panic!("{id}: expected Missing, got Expired"),
        _ => panic!("{id}: expected Missing, got an unknown variant"),
    }
}

/// A dead session may be reported as `Expired` (the store still had it) or `Missing` (a TTL
/// backend already dropped it, or an earlier call removed it), never as `Active`.
fn assert_dead_result(what: &str, id: &SessionId, loaded: Loaded<Counter>) {
    match loaded {
        Loaded::Expired(record) => assert_eq!(record.id, *id, "{what}: Expired carries its id"),
        Loaded::Missing => {}
        Loaded::Active(record) => {
            panic!("{what} {id}: a dead session came back Active: {record:?}")
        }
        _ => panic!("{what} {id}: unexpected variant"),
    }
}

pub async fn count<S: Store<Counter>>(store: &S) -> usize {
    store.count().await.unwrap()
}

fn assert_same_record(got: &Record<Counter>, want: &Record<Counter>) {
    assert_eq!(got.format, want.format, "format");
    assert_eq!(got.id, want.id, "id");
    assert_eq!(got.data, want.data, "data");
    assert_eq!(got.flash, want.flash, "flash");
    assert_eq!(got.has_data, want.has_data, "has_data");
    assert_eq!(got.created_at, want.created_at, "created_at");
    assert_eq!(got.last_seen, want.last_seen, "last_seen");
    assert_eq!(got.expires_at, want.expires_at, "expires_at");
    assert_eq!(got.deadline, want.deadline, "deadline");
}

// ---------------------------------------------------------------------------------------------
// create / load
// ---------------------------------------------------------------------------------------------

/// `create` then `load` gives back the same record: data, flash and timestamps (ms precision).
pub async fn create_then_load_round_trips<S: Store<Counter>>(store: &S) {
    let before = count(store).await;
    let id = new_id();
    let mut rec: Record<Counter> = serde_json::from_value(serde_json::json!({
        "v": 1,
        "id": id.expose_secret(),
        "data": { "count": 7, "user": "alice" },
        "flash": [ { "key": "notice", "message": "hello" }, { "key": "error", "message": "oops" } ],
        "has_data": true,
        "created_at": now_ms() - 5_000,
        "last_seen": now_ms() - 1_000,
        "expires_at": now_ms() + ms(LONG),
        "deadline": now_ms() + ms(2 * LONG),
    }))
    .unwrap();
    rec.data.count = 8;
    assert_eq!(rec.flash.len(), 2);

    assert_eq!(store.create(&rec).await.unwrap(), WriteOutcome::Done);
    let got = active(store, &id).await;
    assert_same_record(&got, &rec);
    assert_eq!(got.data.user.as_deref(), Some("alice"));
    assert_eq!(got.flash.get("notice"), Some("hello"));
    assert_eq!(count(store).await, before + 1);

    // A second session counts too, and the first is unaffected by it.
    let other = live(new_id(), 1);
    assert_eq!(store.create(&other).await.unwrap(), WriteOutcome::Done);
    assert_eq!(count(store).await, before + 2);
    assert_same_record(&active(store, &other.id).await, &other);
    assert_same_record(&active(store, &id).await, &rec);

    // A flash-only session (no data yet) round-trips its `has_data: false`.
    let mut flash_only = live(new_id(), 0);
    flash_only.has_data = false;
    assert_eq!(store.create(&flash_only).await.unwrap(), WriteOutcome::Done);
    assert_same_record(&active(store, &flash_only.id).await, &flash_only);
    assert_eq!(count(store).await, before + 3);
}

/// `create` with an ID that is taken answers `Collision` and leaves the existing session alone.
pub async fn create_never_overwrites<S: Store<Counter>>(store: &S) {
    let id = new_id();
    let first = live(id, 1);
    assert_eq!(store.create(&first).await.unwrap(), WriteOutcome::Done);
    let before = count(store).await;

    let mut intruder = record(id, 99, 2 * LONG, 3 * LONG);
    intruder.data.user = Some("mallory".into());
    assert_eq!(
        store.create(&intruder).await.unwrap(),
        WriteOutcome::Collision
    );

    assert_same_record(&active(store, &id).await, &first);
    assert_eq!(count(store).await, before);
}

/// `load` of an ID the store never issued is `Missing`.
pub async fn load_unknown_is_missing<S: Store<Counter>>(store: &S) {
    let before = count(store).await;
    assert_missing(store, &new_id()).await;
    assert!(matches!(
        store
            .load_and_touch(&new_id(), Duration::from_secs(60))
            .await
            .unwrap(),
        Loaded::Missing
    ));
    assert_eq!(count(store).await, before, "a lookup creates nothing");
}

// ---------------------------------------------------------------------------------------------
// save
// ---------------------------------------------------------------------------------------------

/// `save` of a record that was never created answers `Missing` and creates nothing.
pub async fn save_never_creates<S: Store<Counter>>(store: &S) {
    let before = count(store).await;
    let rec = live(new_id(), 5);
    assert_eq!(store.save(&rec).await.unwrap(), WriteOutcome::Missing);
    assert_missing(store, &rec.id).await;
    assert_eq!(count(store).await, before);
}

/// `save` of an existing session replaces its record.
pub async fn save_replaces_existing<S: Store<Counter>>(store: &S) {
    let mut rec = live(new_id(), 1);
    assert_eq!(store.create(&rec).await.unwrap(), WriteOutcome::Done);
    let before = count(store).await;

    rec.data.count = 2;
    rec.data.user = Some("bob".into());
    rec.last_seen = at_ms(now_ms());
    rec.expires_at = at_ms(now_ms() + ms(LONG) + 1_234);
    assert_eq!(store.save(&rec).await.unwrap(), WriteOutcome::Done);
    let got = active(store, &rec.id).await;
    assert_same_record(&got, &rec);
    assert_eq!(got.data.count, 2);
    assert_eq!(got.data.user.as_deref(), Some("bob"));

    // And again: the latest save wins.
    rec.data.count = 3;
    assert_eq!(store.save(&rec).await.unwrap(), WriteOutcome::Done);
    assert_eq!(active(store, &rec.id).await.data.count, 3);
    assert_eq!(count(store).await, before, "save does not add a session");
}

/// `save` after `delete` answers `Missing` and does not bring the session back.
pub async fn save_after_delete_does_not_resurrect<S: Store<Counter>>(store: &S) {
    let mut rec = live(new_id(), 1);
    assert_eq!(store.create(&rec).await.unwrap(), WriteOutcome::Done);
    let before = count(store).await;
    assert_eq!(store.delete(&rec.id).await.unwrap(), WriteOutcome::Done);

    rec.data.count = 2;
    assert_eq!(store.save(&rec).await.unwrap(), WriteOutcome::Missing);
    assert_missing(store, &rec.id).await;
    assert_eq!(count(store).await, before - 1);
}

// ---------------------------------------------------------------------------------------------
// delete
// ---------------------------------------------------------------------------------------------

/// `delete` answers `Done`, then `Missing` the second time; the session is gone.
pub async fn delete_then_missing<S: Store<Counter>>(store: &S) {
    let keep = live(new_id(), 1);
    let rec = live(new_id(), 2);
    assert_eq!(store.create(&keep).await.unwrap(), WriteOutcome::Done);
    assert_eq!(store.create(&rec).await.unwrap(), WriteOutcome::Done);
    let before = count(store).await;

    assert_eq!(store.delete(&rec.id).await.unwrap(), WriteOutcome::Done);
    assert_eq!(count(store).await, before - 1);
    assert_missing(store, &rec.id).await;
    assert_eq!(store.delete(&rec.id).await.unwrap(), WriteOutcome::Missing);
    assert_eq!(
        store.delete(&new_id()).await.unwrap(),
        WriteOutcome::Missing
    );
    assert_missing(store, &rec.id).await;
    assert_eq!(count(store).await, before - 1);

    // Only that session went.
    assert_same_record(&active(store, &keep.id).await, &keep);
}

// ---------------------------------------------------------------------------------------------
// regenerate
// ---------------------------------------------------------------------------------------------

/// `regenerate` moves the session to the new ID with the given content; the old ID is dead.
pub async fn regenerate_moves_session<S: Store<Counter>>(store: &S) {
    let old = live(new_id(), 5);
    assert_eq!(store.create(&old).await.unwrap(), WriteOutcome::Done);
    let before = count(store).await;

    let mut moved = old.clone();
    moved.id = new_id();
    moved.data.user = Some("alice".into());
    assert_eq!(
        store.regenerate(&old.id, &moved).await.unwrap(),
        WriteOutcome::Done
    );

    assert_missing(store, &old.id).await;
    let got = active(store, &moved.id).await;
    assert_same_record(&got, &moved);
    assert_eq!(got.data.count, 5);
    assert_eq!(
        got.created_at, old.created_at,
        "regenerating keeps created_at"
    );
    assert_eq!(
        count(store).await,
        before,
        "a move neither adds nor removes"
    );

    // The old ID is dead for every operation.
    assert_eq!(store.save(&old).await.unwrap(), WriteOutcome::Missing);
    assert_eq!(
        store
            .touch(&old.id, at_ms(now_ms() + 60_000))
            .await
            .unwrap(),
        WriteOutcome::Missing
    );
    assert_eq!(store.delete(&old.id).await.unwrap(), WriteOutcome::Missing);
    assert_missing(store, &old.id).await;
    assert_eq!(count(store).await, before);
}

/// `regenerate` from an unknown or deleted old ID answers `Missing` and creates nothing.
pub async fn regenerate_from_missing_creates_nothing<S: Store<Counter>>(store: &S) {
    let before = count(store).await;

    // Never issued.
    let target = live(new_id(), 1);
    assert_eq!(
        store.regenerate(&new_id(), &target).await.unwrap(),
        WriteOutcome::Missing
    );
    assert_missing(store, &target.id).await;
    assert_eq!(count(store).await, before);

    // Deleted.
    let old = live(new_id(), 2);
    assert_eq!(store.create(&old).await.unwrap(), WriteOutcome::Done);
    assert_eq!(store.delete(&old.id).await.unwrap(), WriteOutcome::Done);
    let mut moved = old.clone();
    moved.id = new_id();
    assert_eq!(
        store.regenerate(&old.id, &moved).await.unwrap(),
        WriteOutcome::Missing
    );
    assert_missing(store, &moved.id).await;
    assert_missing(store, &old.id).await;
    assert_eq!(count(store).await, before);

    // Already moved away: a second move of the same old ID fails.
    let old = live(new_id(), 3);
    assert_eq!(store.create(&old).await.unwrap(), WriteOutcome::Done);
    let mut first = old.clone();
    first.id = new_id();
    let mut second = old.clone();
    second.id = new_id();
    assert_eq!(
        store.regenerate(&old.id, &first).await.unwrap(),
        WriteOutcome::Done
    );
    assert_eq!(
        store.regenerate(&old.id, &second).await.unwrap(),
        WriteOutcome::Missing
    );
    assert_missing(store, &second.id).await;
    assert_eq!(active(store, &first.id).await.data.count, 3);
    assert_eq!(count(store).await, before + 1);
}

/// `regenerate` onto an ID that is taken answers `Collision` and changes nothing.
pub async fn regenerate_onto_taken_id_changes_nothing<S: Store<Counter>>(store: &S) {
    let old = live(new_id(), 1);
    let taken = live(new_id(), 2);
    assert_eq!(store.create(&old).await.unwrap(), WriteOutcome::Done);
    assert_eq!(store.create(&taken).await.unwrap(), WriteOutcome::Done);
    let before = count(store).await;

    let mut moved = old.clone();
    moved.id = taken.id;
    moved.data.count = 100;
    assert_eq!(
        store.regenerate(&old.id, &moved).await.unwrap(),
        WriteOutcome::Collision
    );

    assert_same_record(&active(store, &old.id).await, &old);
    assert_same_record(&active(store, &taken.id).await, &taken);
    assert_eq!(count(store).await, before);
}

// ---------------------------------------------------------------------------------------------
// touch / load_and_touch
// ---------------------------------------------------------------------------------------------

/// `touch` sets the idle expiry (here: extends it), never beyond the deadline; an unknown ID is
/// `Missing`.
pub async fn touch_extends_up_to_deadline<S: Store<Counter>>(store: &S) {
    let rec = record(
        new_id(),
        4,
        Duration::from_secs(60),
        Duration::from_secs(600),
    );
    assert_eq!(store.create(&rec).await.unwrap(), WriteOutcome::Done);
    let before = count(store).await;

    // Within the deadline: exactly what was asked.
    let later = at_ms(now_ms() + 300_000);
    assert_eq!(
        store.touch(&rec.id, later).await.unwrap(),
        WriteOutcome::Done
    );
    let got = active(store, &rec.id).await;
    assert_eq!(got.expires_at, later);
    assert_eq!(got.deadline, rec.deadline, "touch never moves the deadline");
    assert_eq!(got.data, rec.data, "touch does not rewrite the data");
    assert_eq!(got.created_at, rec.created_at);

    // Past the deadline: capped at it.
    let too_late = rec.deadline + Duration::from_secs(3600);
    assert_eq!(
        store.touch(&rec.id, too_late).await.unwrap(),
        WriteOutcome::Done
    );
    let got = active(store, &rec.id).await;
    assert_eq!(got.expires_at, rec.deadline);
    assert_eq!(got.deadline, rec.deadline);
    assert_eq!(got.effective_expiry(), rec.deadline);
    assert_eq!(got.data, rec.data);

    // Unknown ID: Missing, and nothing is created.
    let unknown = new_id();
    assert_eq!(
        store.touch(&unknown, later).await.unwrap(),
        WriteOutcome::Missing
    );
    assert_missing(store, &unknown).await;
    assert_eq!(count(store).await, before);
}

/// `load_and_touch` slides the idle expiry to about `now + idle`, capped at the deadline, returns
/// the new expiry, and a later `load` sees it.
pub async fn load_and_touch_slides_expiry<S: Store<Counter>>(store: &S) {
    let rec = record(new_id(), 6, Duration::from_secs(60), 2 * LONG);
    assert_eq!(store.create(&rec).await.unwrap(), WriteOutcome::Done);
    let idle = Duration::from_secs(600);

    let start = at_ms(now_ms());
    let got = match store.load_and_touch(&rec.id, idle).await.unwrap() {
        Loaded::Active(record) => record,
        _ => panic!("expected Active"),
    };
    let end = at_ms(now_ms() + 1);
    assert_eq!(got.id, rec.id);
    assert_eq!(got.data, rec.data);
    assert_eq!(got.deadline, rec.deadline);
    assert_eq!(got.created_at, rec.created_at);
    assert!(
        got.expires_at >= start + idle - SLACK && got.expires_at <= end + idle + SLACK,
        "expires_at {} is not about now + idle (between {} and {})",
        got.expires_at,
        start + idle,
        end + idle
    );
    assert!(got.expires_at > rec.expires_at + Duration::from_secs(60));

    let reloaded = active(store, &rec.id).await;
    assert_eq!(
        reloaded.expires_at, got.expires_at,
        "the slide is stored, not only returned"
    );
    assert_eq!(reloaded.data, rec.data);

    // Capped at the deadline.
    let capped = record(
        new_id(),
        7,
        Duration::from_secs(60),
        Duration::from_secs(300),
    );
    assert_eq!(store.create(&capped).await.unwrap(), WriteOutcome::Done);
    let got = match store.load_and_touch(&capped.id, LONG).await.unwrap() {
        Loaded::Active(record) => record,
        _ => panic!("expected Active"),
    };
    assert_eq!(got.expires_at, capped.deadline);
    assert_eq!(active(store, &capped.id).await.expires_at, capped.deadline);

    // Unknown ID.
    assert!(matches!(
        store.load_and_touch(&new_id(), idle).await.unwrap(),
        Loaded::Missing
    ));
}

// ---------------------------------------------------------------------------------------------
// expiry
// ---------------------------------------------------------------------------------------------

/// Sessions past their expiry are dead for every operation: never `Active`, not saved, not touched,
/// not moved, not counted.
async fn assert_all_dead<S: Store<Counter>>(store: &S, recs: &[Record<Counter>; 5], before: usize) {
    let [for_load, for_lat, for_save, for_touch, for_regen] = recs;
    // Count first, while every one of them may still be physically present.
    assert_eq!(count(store).await, before, "dead sessions are not counted");

    assert_dead_result(
        "load",
        &for_load.id,
        store.load(&for_load.id).await.unwrap(),
    );
    assert_dead_result(
        "load again",
        &for_load.id,
        store.load(&for_load.id).await.unwrap(),
    );

    assert_dead_result(
        "load_and_touch",
        &for_lat.id,
        store
            .load_and_touch(&for_lat.id, Duration::from_secs(600))
            .await
            .unwrap(),
    );
    assert_dead_result(
        "load after load_and_touch",
        &for_lat.id,
        store.load(&for_lat.id).await.unwrap(),
    );

    let mut saved = for_save.clone();
    saved.data.count += 1;
    saved.expires_at = at_ms(now_ms() + ms(LONG));
    assert_eq!(
        store.save(&saved).await.unwrap(),
        WriteOutcome::Missing,
        "save of a dead session"
    );
    assert_dead_result(
        "load after save",
        &for_save.id,
        store.load(&for_save.id).await.unwrap(),
    );

    assert_eq!(
        store
            .touch(&for_touch.id, at_ms(now_ms() + ms(LONG)))
            .await
            .unwrap(),
        WriteOutcome::Missing,
        "touch of a dead session"
    );
    assert_dead_result(
        "load after touch",
        &for_touch.id,
        store.load(&for_touch.id).await.unwrap(),
    );

    let mut moved = for_regen.clone();
    moved.id = new_id();
    moved.expires_at = at_ms(now_ms() + ms(LONG));
    assert_eq!(
        store.regenerate(&for_regen.id, &moved).await.unwrap(),
        WriteOutcome::Missing,
        "regenerate of a dead session"
    );
    assert_missing(store, &moved.id).await;

    assert_eq!(count(store).await, before);
}

/// A session whose idle expiry has passed is never returned `Active` (whether or not the store
/// still holds it: `Expired` and `Missing` are both accepted).
pub async fn idle_expired_session_is_dead<S: Store<Counter>>(store: &S) {
    let before = count(store).await;
    let keep = live(new_id(), 1);
    assert_eq!(store.create(&keep).await.unwrap(), WriteOutcome::Done);

    let started = Instant::now();
    let recs: [Record<Counter>; 5] =
        std::array::from_fn(|i| record(new_id(), i as u32, SHORT, LONG));
    for rec in &recs {
        assert_eq!(store.create(rec).await.unwrap(), WriteOutcome::Done);
    }
    // Sanity: they were alive (checked only while surely still inside the idle time, so that a
    // slow machine cannot make this fail).
    if started.elapsed() < SHORT / 3 {
        assert_eq!(count(store).await, before + 6);
    }

    tokio::time::sleep(PAST_SHORT).await;
    assert_all_dead(store, &recs, before + 1).await;
    assert_same_record(&active(store, &keep.id).await, &keep);
}

/// A session whose absolute deadline has passed is dead even though its idle expiry is far away.
pub async fn deadline_passed_session_is_dead<S: Store<Counter>>(store: &S) {
    let before = count(store).await;
    let keep = live(new_id(), 1);
    assert_eq!(store.create(&keep).await.unwrap(), WriteOutcome::Done);

    let started = Instant::now();
    let recs: [Record<Counter>; 5] =
        std::array::from_fn(|i| record(new_id(), i as u32, LONG, SHORT));
    for rec in &recs {
        assert!(rec.expires_at > rec.deadline);
        assert_eq!(store.create(rec).await.unwrap(), WriteOutcome::Done);
    }
    if started.elapsed() < SHORT / 3 {
        assert_eq!(count(store).await, before + 6);
    }

    tokio::time::sleep(PAST_SHORT).await;
    assert_all_dead(store, &recs, before + 1).await;
    assert_same_record(&active(store, &keep.id).await, &keep);
}

// ---------------------------------------------------------------------------------------------
// concurrency
// ---------------------------------------------------------------------------------------------

/// 64 tasks each run their own sessions through create, load, save, load_and_touch and delete at
/// the same time; afterwards every surviving session holds its final data and the count is right.
pub async fn concurrent_independent_sessions<S: Store<Counter> + Clone>(store: &S) {
    const TASKS: u32 = 64;
    let before = count(store).await;
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut keep = live(new_id(), task);
            let drop = live(new_id(), task + 1000);
            assert_eq!(store.create(&keep).await.unwrap(), WriteOutcome::Done);
            assert_eq!(store.create(&drop).await.unwrap(), WriteOutcome::Done);
            for round in 1..=5 {
                let mut current = active(&store, &keep.id).await;
                assert_eq!(current.data.count, task + (round - 1) * 10_000);
                current.data.count = task + round * 10_000;
                assert_eq!(store.save(&current).await.unwrap(), WriteOutcome::Done);
                keep = current;
                tokio::task::yield_now().await;
            }
            match store
                .load_and_touch(&keep.id, Duration::from_secs(600))
                .await
                .unwrap()
            {
                Loaded::Active(record) => assert_eq!(record.data, keep.data),
                _ => panic!("expected Active"),
            }
            assert_eq!(store.delete(&drop.id).await.unwrap(), WriteOutcome::Done);
            assert_eq!(store.delete(&drop.id).await.unwrap(), WriteOutcome::Missing);
            keep.id
        }));
    }
    let mut kept = Vec::new();
    for task in tasks {
        kept.push(task.await.expect("task panicked"));
    }
    assert_eq!(count(store).await, before + TASKS as usize);
    for (task, id) in kept.iter().enumerate() {
        assert_eq!(active(store, id).await.data.count, task as u32 + 5 * 10_000);
    }
}

/// 32 concurrent `regenerate`s of the same old ID to 32 different new IDs: exactly one wins, the
/// others see `Missing`, and exactly one new ID exists afterwards.
pub async fn concurrent_regenerate_has_one_winner<S: Store<Counter> + Clone>(store: &S) {
    const RACERS: usize = 32;
    let old = live(new_id(), 42);
    assert_eq!(store.create(&old).await.unwrap(), WriteOutcome::Done);
    let before = count(store).await;

    let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
    let mut tasks = Vec::new();
    for racer in 0..RACERS {
        let store = store.clone();
        let barrier = Arc::clone(&barrier);
        let mut moved = old.clone();
        moved.id = new_id();
        moved.data.user = Some(format!("racer {racer}"));
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let outcome = store.regenerate(&old.id, &moved).await.unwrap();
            (moved.id, outcome)
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("task panicked"));
    }

    let winners: Vec<_> = results
        .iter()
        .filter(|(_, outcome)| *outcome == WriteOutcome::Done)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one regenerate wins: {results:?}");
    assert!(
        results
            .iter()
            .all(|(_, o)| matches!(o, WriteOutcome::Done | WriteOutcome::Missing)),
        "the losers see Missing: {results:?}"
    );
    let ids: HashSet<_> = results.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), RACERS);

    let mut alive = Vec::new();
    for (id, _) in &results {
        if let Loaded::Active(record) = store.load(id).await.unwrap() {
            alive.push(record);
        }
    }
    assert_eq!(alive.len(), 1, "exactly one new id exists");
    assert_eq!(alive[0].id, winners[0].0);
    assert_eq!(alive[0].data.count, 42);
    assert_missing(store, &old.id).await;
    assert_eq!(count(store).await, before);
}
