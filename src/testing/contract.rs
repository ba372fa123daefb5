//! The contract of each [`Store`] operation, checked one by one. Each function takes a store of
//! its own and panics with what the store did wrong.

use std::time::Duration;

use time::OffsetDateTime;

use super::{Factory, Probe};
use crate::{
    flash::Flash,
    id::SessionKey,
    record::Record,
    store::{Expect, Forward, LoadOptions, Loaded, Store, WriteOutcome},
};

/// Idle timeout of records that must expire during a check.
const SHORT: Duration = Duration::from_millis(150);
/// Sleep that surely outlasts [`SHORT`] (generous for loaded machines).
const PAST_SHORT: Duration = Duration::from_millis(400);
/// A timeout no check outlives.
const LONG: Duration = Duration::from_secs(3600);

/// Calls `$check(&store)` for every check with a fresh store each, and counts them.
macro_rules! each_check {
    ($make:expr, $($check:ident),+ $(,)?) => {{
        let mut passed = 0;
        $(
            let store = ($make)().await;
            $check(&store).await;
            passed += 1;
        )+
        passed
    }};
}

pub(crate) async fn run_all<St: Store<Probe> + Clone>(make: &Factory<St>) -> usize {
    each_check!(
        make,
        create_then_load_round_trips,
        create_never_overwrites,
        load_unknown_is_missing,
        save_never_creates,
        save_replaces_and_checks_the_revision,
        delete_then_missing,
        regenerate_moves_and_leaves_a_pointer,
        writes_through_a_pointer_answer_moved,
        regenerate_refuses_what_it_must,
        load_slides_expiry_up_to_the_deadline,
        expired_sessions_are_reported_expired,
        pointers_end,
        flash_is_taken_once,
        concurrent_loads_take_the_flash_once,
        concurrent_regenerates_have_one_winner,
        concurrent_sessions_stay_apart,
        count_when_supported,
        owner_index_when_supported,
    )
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Now, in whole milliseconds (the precision stores keep).
pub(crate) fn now() -> OffsetDateTime {
    let ms = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn new_key() -> SessionKey {
    SessionKey::generate().expect("the OS random source works")
}

fn record(key: SessionKey, count: u32, idle: Duration, lifetime: Duration) -> Record<Probe> {
    let mut record = Record::new(key, Probe { count, user: None }, now(), idle, lifetime);
    record.has_data = true;
    record
}

fn live(key: SessionKey, count: u32) -> Record<Probe> {
    record(key, count, LONG, 2 * LONG)
}

/// `rec`'s content under a fresh key: the copy a regenerate writes.
fn elsewhere(rec: &Record<Probe>) -> Record<Probe> {
    let mut moved = rec.clone();
    moved.key = new_key();
    moved
}

/// Moves the session under `from` to `to` under last write wins, leaving the usual pointer.
async fn move_any<St: Store<Probe>>(
    store: &St,
    from: &SessionKey,
    to: &Record<Probe>,
) -> Result<WriteOutcome, crate::StoreError> {
    store
        .regenerate(from, to, Expect::Any, forward(to.key))
        .await
}

fn forward(to: SessionKey) -> Forward {
    Forward::new(to, Some(now() + LONG), now() + LONG)
}

async fn load<St: Store<Probe>>(store: &St, key: &SessionKey) -> Loaded<Probe> {
    store
        .load(key, LoadOptions::at(now()))
        .await
        .unwrap_or_else(|err| panic!("load {key}: {err}"))
}

async fn active<St: Store<Probe>>(store: &St, key: &SessionKey) -> Record<Probe> {
    match load(store, key).await {
        Loaded::Active(record) => record,
        other => panic!("{key}: expected Active, got {}", describe(&other)),
    }
}

fn describe(loaded: &Loaded<Probe>) -> String {
    match loaded {
        Loaded::Active(r) => format!("Active(revision {}, count {})", r.revision, r.data.count),
        Loaded::Expired(_) => "Expired".to_owned(),
        Loaded::Moved(f) => format!("Moved(to {})", f.to),
        Loaded::Missing => "Missing".to_owned(),
    }
}

async fn assert_missing<St: Store<Probe>>(store: &St, key: &SessionKey, what: &str) {
    let loaded = load(store, key).await;
    assert!(
        matches!(loaded, Loaded::Missing),
        "{what}: expected Missing, got {}",
        describe(&loaded)
    );
}

fn ok(outcome: Result<WriteOutcome, crate::StoreError>, what: &str) -> WriteOutcome {
    outcome.unwrap_or_else(|err| panic!("{what}: {err}"))
}

fn same(got: &Record<Probe>, want: &Record<Probe>, what: &str) {
    assert_eq!(got.key, want.key, "{what}: key");
    assert_eq!(got.data, want.data, "{what}: data");
    assert_eq!(got.has_data, want.has_data, "{what}: has_data");
    assert_eq!(got.created_at, want.created_at, "{what}: created_at");
    assert_eq!(got.deadline, want.deadline, "{what}: deadline");
    assert_eq!(
        got.effective_expiry(),
        want.effective_expiry(),
        "{what}: expiry"
    );
}

// ---------------------------------------------------------------------------------------------
// One operation at a time
// ---------------------------------------------------------------------------------------------

/// `create` then `load` gives back the record: data, flash, timestamps (ms), revision.
pub async fn create_then_load_round_trips<St: Store<Probe>>(store: &St) {
    let mut rec = live(new_key(), 7);
    rec.data.user = Some("alice".into());
    rec.flash.insert("notice".into(), "hello".into());
    rec.flash.insert("error".into(), "oops".into());
    rec.created_at = now() - Duration::from_secs(5);
    assert_eq!(ok(store.create(&rec).await, "create"), WriteOutcome::Done);
    let got = active(store, &rec.key).await;
    same(&got, &rec, "round trip");
    assert_eq!(got.revision, rec.revision, "create keeps the revision");
    assert_eq!(
        got.flash, rec.flash,
        "a load that does not take the flash shows it"
    );

    let mut flash_only = live(new_key(), 0);
    flash_only.has_data = false;
    assert_eq!(
        ok(store.create(&flash_only).await, "create"),
        WriteOutcome::Done
    );
    same(
        &active(store, &flash_only.key).await,
        &flash_only,
        "flash-only",
    );
}

/// `create` on a taken key answers `Collision` and leaves what is there alone.
pub async fn create_never_overwrites<St: Store<Probe>>(store: &St) {
    let first = live(new_key(), 1);
    assert_eq!(ok(store.create(&first).await, "create"), WriteOutcome::Done);
    let second = live(first.key, 2);
    assert_eq!(
        ok(store.create(&second).await, "create again"),
        WriteOutcome::Collision
    );
    assert_eq!(active(store, &first.key).await.data.count, 1);
}

/// An unknown key loads as `Missing`; deleting it answers `Missing`.
pub async fn load_unknown_is_missing<St: Store<Probe>>(store: &St) {
    let key = new_key();
    assert_missing(store, &key, "unknown").await;
    assert_eq!(
        ok(store.delete(&key, Expect::Any).await, "delete unknown"),
        WriteOutcome::Missing
    );
}

/// `save` never creates.
pub async fn save_never_creates<St: Store<Probe>>(store: &St) {
    let rec = live(new_key(), 1);
    for expect in [Expect::Any, Expect::Revision(0)] {
        assert_eq!(
            ok(store.save(&rec, expect).await, "save of nothing"),
            WriteOutcome::Missing
        );
    }
    assert_missing(store, &rec.key, "after a save of nothing").await;
}

/// `save` replaces data, flash and expiry and moves the revision on by one; a save at another
/// revision is refused and writes nothing; a save without a flash leaves the pending one.
pub async fn save_replaces_and_checks_the_revision<St: Store<Probe>>(store: &St) {
    let rec = live(new_key(), 1);
    ok(store.create(&rec).await, "create");
    let mut next = rec.clone();
    next.data.count = 2;
    next.flash.insert("notice".into(), "saved".into());
    next.revision = rec.revision + 1;
    assert_eq!(
        ok(
            store.save(&next, Expect::Revision(rec.revision)).await,
            "save"
        ),
        WriteOutcome::Done
    );
    let got = active(store, &rec.key).await;
    assert_eq!(got.data.count, 2);
    assert_eq!(got.flash.get("notice"), Some("saved"));
    assert_eq!(
        got.revision,
        rec.revision + 1,
        "a save moves the revision by one"
    );

    let mut stale = rec.clone();
    stale.data.count = 99;
    assert_eq!(
        ok(
            store.save(&stale, Expect::Revision(rec.revision)).await,
            "stale save"
        ),
        WriteOutcome::Conflict
    );
    assert_eq!(
        active(store, &rec.key).await.data.count,
        2,
        "a refused save writes nothing"
    );

    // Last write wins: any revision. The stored revision becomes the stored one plus one, or,
    // for a store that writes without reading, the one the engine gives (here one that differs
    // from both, so that a store that keeps the old revision fails).
    stale.revision = rec.revision + 7;
    assert_eq!(
        ok(store.save(&stale, Expect::Any).await, "save any"),
        WriteOutcome::Done
    );
    let got = active(store, &rec.key).await;
    assert_eq!(got.data.count, 99);
    assert!(
        got.revision == rec.revision + 2 || got.revision == stale.revision,
        "a save under last write wins stores the stored revision plus one or the one it was \
         given, not {}",
        got.revision
    );
    assert_eq!(
        got.flash.get("notice"),
        Some("saved"),
        "a save without a flash leaves the pending one"
    );

    // Optimistic again, from what is stored: the revision it read, plus one.
    let mut next = got.clone();
    next.data.count = 100;
    next.flash.insert("notice".into(), "replaced".into());
    assert_eq!(
        ok(
            store.save(&next, Expect::Revision(got.revision)).await,
            "save at the stored revision"
        ),
        WriteOutcome::Done
    );
    let got_again = active(store, &rec.key).await;
    assert_eq!(got_again.revision, got.revision + 1);
    assert_eq!(
        got_again.flash.get("notice"),
        Some("replaced"),
        "a save with a flash replaces the pending one"
    );
}

/// `delete` removes a live session once; with a revision, only at that revision.
pub async fn delete_then_missing<St: Store<Probe>>(store: &St) {
    let rec = live(new_key(), 1);
    ok(store.create(&rec).await, "create");
    assert_eq!(
        ok(
            store
                .delete(&rec.key, Expect::Revision(rec.revision + 5))
                .await,
            "stale delete"
        ),
        WriteOutcome::Conflict
    );
    active(store, &rec.key).await;
    assert_eq!(
        ok(
            store.delete(&rec.key, Expect::Revision(rec.revision)).await,
            "delete"
        ),
        WriteOutcome::Done
    );
    assert_missing(store, &rec.key, "after delete").await;
    assert_eq!(
        ok(store.delete(&rec.key, Expect::Any).await, "delete again"),
        WriteOutcome::Missing
    );
    assert_eq!(
        ok(store.save(&rec, Expect::Any).await, "save after delete"),
        WriteOutcome::Missing
    );
    assert_missing(store, &rec.key, "a save never resurrects").await;
}

/// `regenerate` moves the record (revision + 1) and a pending flash, and leaves a pointer with
/// the forward's fields.
pub async fn regenerate_moves_and_leaves_a_pointer<St: Store<Probe>>(store: &St) {
    let mut old = live(new_key(), 3);
    old.flash.insert("notice".into(), "still pending".into());
    ok(store.create(&old).await, "create");
    let mut moved = elsewhere(&old);
    moved.data.user = Some("alice".into());
    moved.revision = old.revision + 1;
    // The engine's copy carries no flash of its own: the pending one moves along.
    moved.flash = Flash::default();
    let pointer = forward(moved.key);
    assert_eq!(
        ok(
            store
                .regenerate(&old.key, &moved, Expect::Revision(old.revision), pointer)
                .await,
            "regenerate"
        ),
        WriteOutcome::Done
    );
    let got = active(store, &moved.key).await;
    same(
        &got,
        &Record {
            flash: old.flash.clone(),
            ..moved.clone()
        },
        "moved record",
    );
    assert_eq!(got.revision, old.revision + 1);
    match load(store, &old.key).await {
        Loaded::Moved(found) => {
            assert_eq!(found.to, moved.key, "pointer target");
            assert_eq!(found.grace_until, pointer.grace_until, "pointer grace");
        }
        other => panic!(
            "old key after regenerate: expected Moved, got {}",
            describe(&other)
        ),
    }
    // Without a grace window the pointer says so.
    let next = elsewhere(&got);
    let no_grace = Forward::new(next.key, None, now() + LONG);
    assert_eq!(
        ok(
            store
                .regenerate(&moved.key, &next, Expect::Any, no_grace)
                .await,
            "regenerate again"
        ),
        WriteOutcome::Done
    );
    match load(store, &moved.key).await {
        Loaded::Moved(found) => assert_eq!(found.grace_until, None),
        other => panic!("expected Moved, got {}", describe(&other)),
    }
}

/// At a pointer, `save` and `delete` answer `Moved(new key)` and change nothing; `create` over
/// it is a collision.
pub async fn writes_through_a_pointer_answer_moved<St: Store<Probe>>(store: &St) {
    let old = live(new_key(), 1);
    ok(store.create(&old).await, "create");
    let moved = elsewhere(&old);
    ok(move_any(store, &old.key, &moved).await, "regenerate");
    let mut through_old = old.clone();
    through_old.data.count = 50;
    assert_eq!(
        ok(
            store.save(&through_old, Expect::Any).await,
            "save at pointer"
        ),
        WriteOutcome::Moved(moved.key)
    );
    assert_eq!(
        ok(
            store.delete(&old.key, Expect::Any).await,
            "delete at pointer"
        ),
        WriteOutcome::Moved(moved.key)
    );
    assert_eq!(
        ok(store.create(&through_old).await, "create at pointer"),
        WriteOutcome::Collision
    );
    assert!(
        matches!(load(store, &old.key).await, Loaded::Moved(_)),
        "the pointer stays"
    );
    assert_eq!(
        active(store, &moved.key).await.data.count,
        1,
        "nothing reached the session"
    );
}

/// `regenerate` refuses a missing source, a pointer, a stale revision and a taken target, and
/// changes nothing when it does.
pub async fn regenerate_refuses_what_it_must<St: Store<Probe>>(store: &St) {
    // Missing source: nothing is created.
    let mut target = live(new_key(), 1);
    assert_eq!(
        ok(move_any(store, &new_key(), &target).await, "from missing"),
        WriteOutcome::Missing
    );
    assert_missing(
        store,
        &target.key,
        "regenerate from missing creates nothing",
    )
    .await;

    // Stale revision.
    let old = live(new_key(), 2);
    ok(store.create(&old).await, "create");
    target.key = new_key();
    assert_eq!(
        ok(
            store
                .regenerate(
                    &old.key,
                    &target,
                    Expect::Revision(old.revision + 1),
                    forward(target.key)
                )
                .await,
            "stale"
        ),
        WriteOutcome::Conflict
    );
    assert_missing(store, &target.key, "a refused regenerate creates nothing").await;
    assert_eq!(active(store, &old.key).await.data.count, 2);

    // Taken target.
    let taken = live(new_key(), 9);
    ok(store.create(&taken).await, "create");
    let mut onto = old.clone();
    onto.key = taken.key;
    assert_eq!(
        ok(move_any(store, &old.key, &onto).await, "onto taken"),
        WriteOutcome::Collision
    );
    assert_eq!(active(store, &taken.key).await.data.count, 9);
    assert_eq!(active(store, &old.key).await.data.count, 2);

    // A pointer: a session moves once per copy.
    let first = elsewhere(&old);
    ok(move_any(store, &old.key, &first).await, "regenerate");
    let second = elsewhere(&old);
    assert_eq!(
        ok(move_any(store, &old.key, &second).await, "from pointer"),
        WriteOutcome::Moved(first.key)
    );
    assert_missing(
        store,
        &second.key,
        "a regenerate from a pointer creates nothing",
    )
    .await;
}

/// A sliding load moves the idle expiry to `now + idle` (a store may skip a move of less than a
/// second, or slide up to its [`Store::slide_headroom`] further), never back and never past the
/// deadline.
pub async fn load_slides_expiry_up_to_the_deadline<St: Store<Probe>>(store: &St) {
    let rec = record(
        new_key(),
        1,
        Duration::from_secs(60),
        Duration::from_secs(600),
    );
    ok(store.create(&rec).await, "create");
    let at = now() + Duration::from_secs(5);
    let Loaded::Active(slid) = store
        .load(
            &rec.key,
            LoadOptions::at(at).sliding(Some(Duration::from_secs(60))),
        )
        .await
        .expect("load")
    else {
        panic!("sliding load: expected Active");
    };
    // A store that refreshes at most once per interval may slide that much further
    // (`Store::slide_headroom`).
    let headroom = store.slide_headroom();
    let asked = at + Duration::from_secs(60);
    assert!(
        slid.effective_expiry() >= asked && slid.effective_expiry() <= asked + headroom,
        "slid expiry: {} for {asked} (headroom {headroom:?})",
        slid.effective_expiry()
    );
    assert_eq!(
        active(store, &rec.key).await.effective_expiry(),
        slid.effective_expiry(),
        "stored"
    );
    // A step of less than a second may be skipped, never taken backwards.
    let later =
        LoadOptions::at(at + Duration::from_millis(300)).sliding(Some(Duration::from_secs(60)));
    let Loaded::Active(again) = store.load(&rec.key, later).await.expect("load") else {
        panic!("sliding load: expected Active");
    };
    let moved = again.effective_expiry() - slid.effective_expiry();
    assert!(
        moved >= time::Duration::ZERO && moved <= time::Duration::milliseconds(300) + headroom,
        "a load 300 ms later moves the expiry by 0 to 300 ms (plus the headroom), not {moved}"
    );

    let capped = record(
        new_key(),
        1,
        Duration::from_secs(60),
        Duration::from_secs(90),
    );
    ok(store.create(&capped).await, "create");
    let Loaded::Active(slid) = store
        .load(
            &capped.key,
            LoadOptions::at(now() + Duration::from_secs(50)).sliding(Some(Duration::from_secs(60))),
        )
        .await
        .expect("load")
    else {
        panic!("sliding load: expected Active");
    };
    assert_eq!(
        slid.effective_expiry(),
        capped.deadline,
        "capped at the deadline"
    );
}

/// A session past its idle expiry or its deadline loads as `Expired` (not `Missing`), is never
/// `Active` again, and no write reaches it.
pub async fn expired_sessions_are_reported_expired<St: Store<Probe>>(store: &St) {
    let idle = record(new_key(), 1, SHORT, LONG);
    let deadline = record(new_key(), 1, LONG, SHORT);
    let written = record(new_key(), 1, SHORT, LONG);
    for rec in [&idle, &deadline, &written] {
        ok(store.create(rec).await, "create");
    }
    tokio::time::sleep(PAST_SHORT).await;
    for (rec, what) in [(&idle, "idle-expired"), (&deadline, "past its deadline")] {
        match load(store, &rec.key).await {
            Loaded::Expired(got) => assert_eq!(got.key, rec.key),
            other => panic!("{what}: expected Expired, got {}", describe(&other)),
        }
        let again = load(store, &rec.key).await;
        assert!(
            matches!(again, Loaded::Expired(_) | Loaded::Missing),
            "{what}, loaded again: {}",
            describe(&again)
        );
    }
    let mut next = written.clone();
    next.data.count = 2;
    assert_eq!(
        ok(store.save(&next, Expect::Any).await, "save expired"),
        WriteOutcome::Missing
    );
    let moved = elsewhere(&written);
    assert_eq!(
        ok(
            move_any(store, &written.key, &moved).await,
            "regenerate expired"
        ),
        WriteOutcome::Missing
    );
    assert_missing(store, &moved.key, "regenerate of an expired session").await;
    assert_eq!(
        ok(
            store.delete(&written.key, Expect::Any).await,
            "delete expired"
        ),
        WriteOutcome::Missing
    );
}

/// A pointer lives until `until`, then the old key is `Missing`.
pub async fn pointers_end<St: Store<Probe>>(store: &St) {
    let old = live(new_key(), 1);
    ok(store.create(&old).await, "create");
    let moved = elsewhere(&old);
    let short = Forward::new(moved.key, None, now() + SHORT);
    ok(
        store.regenerate(&old.key, &moved, Expect::Any, short).await,
        "regenerate",
    );
    assert!(matches!(load(store, &old.key).await, Loaded::Moved(_)));
    tokio::time::sleep(PAST_SHORT).await;
    assert_missing(store, &old.key, "a pointer past its end").await;
    active(store, &moved.key).await;
}

/// A load that takes the flash gets it once; a load that does not take it leaves it.
pub async fn flash_is_taken_once<St: Store<Probe>>(store: &St) {
    let mut rec = live(new_key(), 1);
    rec.flash.insert("notice".into(), "once".into());
    ok(store.create(&rec).await, "create");
    let look = LoadOptions::at(now());
    for _ in 0..2 {
        let Loaded::Active(seen) = store.load(&rec.key, look).await.expect("load") else {
            panic!("expected Active");
        };
        assert_eq!(
            seen.flash.get("notice"),
            Some("once"),
            "a load that does not take the flash shows it and leaves it"
        );
    }
    let take = LoadOptions::at(now()).taking_flash(true);
    let Loaded::Active(first) = store.load(&rec.key, take).await.expect("load") else {
        panic!("expected Active");
    };
    assert_eq!(
        first.flash.get("notice"),
        Some("once"),
        "the first taker sees the flash"
    );
    let Loaded::Active(second) = store.load(&rec.key, take).await.expect("load") else {
        panic!("expected Active");
    };
    assert_eq!(second.flash, Flash::default(), "the second taker does not");
    assert_eq!(
        second.revision, rec.revision,
        "taking the flash is not a write"
    );
}

/// Of many concurrent loads that take the flash, exactly one gets it.
pub async fn concurrent_loads_take_the_flash_once<St: Store<Probe> + Clone>(store: &St) {
    for _ in 0..10 {
        let mut rec = live(new_key(), 1);
        rec.flash.insert("notice".into(), "once".into());
        ok(store.create(&rec).await, "create");
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let store = store.clone();
                let key = rec.key;
                tokio::spawn(async move {
                    let take = LoadOptions::at(now()).taking_flash(true);
                    match store.load(&key, take).await {
                        Ok(Loaded::Active(record)) => !record.flash.is_empty(),
                        Ok(_) => false,
                        Err(err) => panic!("load: {err}"),
                    }
                })
            })
            .collect();
        let mut seen = 0;
        for task in tasks {
            seen += usize::from(task.await.expect("task"));
        }
        assert_eq!(
            seen, 1,
            "16 concurrent loads: the flash must reach exactly one"
        );
    }
}

/// Of concurrent regenerates of one session, exactly one succeeds; the others change nothing.
pub async fn concurrent_regenerates_have_one_winner<St: Store<Probe> + Clone>(store: &St) {
    for _ in 0..5 {
        let old = live(new_key(), 1);
        ok(store.create(&old).await, "create");
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                let old = old.clone();
                tokio::spawn(async move {
                    let moved = elsewhere(&old);
                    let outcome = store
                        .regenerate(
                            &old.key,
                            &moved,
                            Expect::Revision(old.revision),
                            forward(moved.key),
                        )
                        .await
                        .expect("regenerate");
                    (outcome, moved.key)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            let (outcome, key) = task.await.expect("task");
            if outcome == WriteOutcome::Done {
                winners.push(key);
            } else {
                assert_missing(store, &key, "a losing regenerate").await;
            }
        }
        assert_eq!(winners.len(), 1, "exactly one regenerate wins");
        active(store, &winners[0]).await;
    }
}

/// Concurrent writers of different sessions do not disturb each other.
pub async fn concurrent_sessions_stay_apart<St: Store<Probe> + Clone>(store: &St) {
    let tasks: Vec<_> = (0..16u32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let rec = live(new_key(), i);
                ok(store.create(&rec).await, "create");
                for n in 1..=5 {
                    let mut next = rec.clone();
                    next.data.count = i * 100 + n;
                    assert_eq!(
                        ok(store.save(&next, Expect::Any).await, "save"),
                        WriteOutcome::Done
                    );
                }
                (rec.key, i * 100 + 5)
            })
        })
        .collect();
    for task in tasks {
        let (key, count) = task.await.expect("task");
        assert_eq!(active(store, &key).await.data.count, count);
    }
}

/// `count`, where supported, counts live sessions only (not pointers, not expired ones).
pub async fn count_when_supported<St: Store<Probe>>(store: &St) {
    let before = match store.count().await {
        Ok(n) => n,
        Err(err) if err.is_unsupported() => return,
        Err(err) => panic!("count: {err}"),
    };
    let a = live(new_key(), 1);
    let b = record(new_key(), 1, SHORT, LONG);
    ok(store.create(&a).await, "create");
    ok(store.create(&b).await, "create");
    let moved = elsewhere(&a);
    ok(move_any(store, &a.key, &moved).await, "regenerate");
    assert_eq!(store.count().await.expect("count"), before + 2);
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(
        store.count().await.expect("count"),
        before + 1,
        "expired sessions do not count"
    );
}

/// The owner index, where supported: add, list, remove.
pub async fn owner_index_when_supported<St: Store<Probe>>(store: &St) {
    if !store.supports_owner_index() {
        let err = store
            .owner_keys("nobody")
            .await
            .expect_err("unsupported index");
        assert!(err.is_unsupported(), "an unsupported index says so: {err}");
        return;
    }
    let owner = format!("owner-{}", new_key().tag());
    let (a, b) = (new_key(), new_key());
    for key in [&a, &b] {
        store
            .index_owner(&owner, key, now() + LONG)
            .await
            .expect("index");
    }
    let mut keys = store.owner_keys(&owner).await.expect("owner keys");
    keys.sort_by(|x, y| x.as_str().cmp(y.as_str()));
    let mut want = vec![a, b];
    want.sort_by(|x, y| x.as_str().cmp(y.as_str()));
    assert_eq!(keys, want);
    store.unindex_owner(&owner, &a).await.expect("unindex");
    store
        .unindex_owner(&owner, &a)
        .await
        .expect("unindex twice");
    assert_eq!(store.owner_keys(&owner).await.expect("owner keys"), vec![b]);
}
