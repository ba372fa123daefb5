//! The local cache of a [`RedisStore`](super::RedisStore): live sessions kept in process
//! memory, dropped the moment Redis says they changed.
//!
//! Correctness rests on three rules:
//!
//! 1. **Only what Redis tracks is cached.** The store's commands connection has `CLIENT
//!    TRACKING ON REDIRECT <quiet connection> BCAST PREFIX <prefix> NOLOOP`: Redis pushes an
//!    invalidation for every key under the prefix that another client changes. While both are
//!    up (and answered a heartbeat within the lease), an entry is served; the moment it breaks, everything is dropped and nothing
//!    is served or filled until a new connection has tracking on again. Before an entry is
//!    served, the store makes sure every push that reached the socket was applied
//!    (`tracking::socket`).
//! 2. **A fill never outruns an invalidation.** A read or write claims its session's slot with
//!    a ticket before its command leaves; an invalidation (or another local write) removes or
//!    replaces the slot; the result is stored only if the slot still holds the ticket. So a
//!    reply that arrives just before the push announcing a newer write can never land after it.
//! 3. **Our own writes update the cache only when no other local write overlapped** (NOLOOP
//!    means Redis does not tell us about them): a write that found another write's claim
//!    leaves the slot empty, and the next read goes to Redis. Redis (7.0 to 8.x, and Valkey)
//!    records a Lua script's own client as the writer of the keys it changes, so NOLOOP does
//!    not cover scripted writes: their invalidation comes back right after the reply and
//!    removes the entry the write stored, and the next read goes to Redis once. So the writes
//!    whose result is worth keeping are plain commands: the default save (`SET`), and a
//!    regenerate's new session (`SET … NX`, before the script that retires the old one; a
//!    pending flash the script moves over is its write, and such a session is not kept). A
//!    create, an optimistic save and a delete are scripts.
//!
//! Entries are evicted by a CLOCK sweep (LRU-like: a hit marks an entry, the sweep spares a
//! marked one once) when the count passes the capacity.

use std::{
    collections::{hash_map::Entry as Slot, HashMap, VecDeque},
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use time::OffsetDateTime;

use crate::{id::SessionKey, record::Record, store::LoadOptions};

/// What a local cache in front of Redis may hold and how it refreshes expiries: pass it to
/// [`RedisStore::connect_cached`](super::RedisStore::connect_cached).
///
/// ```
/// use std::time::Duration;
/// use tower_typed_sessions::store::redis::LocalCache;
///
/// let cache = LocalCache::new()
///     .with_capacity(50_000)
///     .with_refresh_interval(Duration::from_secs(30));
/// ```
#[derive(Clone, Debug)]
pub struct LocalCache {
    pub(super) capacity: usize,
    pub(super) refresh: Duration,
    pub(super) heartbeat: Duration,
}

impl Default for LocalCache {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalCache {
    /// 100,000 sessions, a refresh interval of 10 s and a heartbeat every 100 ms.
    pub fn new() -> Self {
        Self {
            capacity: 100_000,
            refresh: Duration::from_secs(10),
            heartbeat: Duration::from_millis(100),
        }
    }

    /// The most sessions kept (default 100,000); beyond it the least recently used go (a CLOCK
    /// sweep).
    #[must_use]
    pub fn with_capacity(mut self, sessions: usize) -> Self {
        self.capacity = sessions.max(1);
        self
    }

    /// How often, at most, a session read from the cache has its Redis expiry moved forward
    /// (default 10 s). A sliding read that finds less than the idle timeout left in Redis sets
    /// it to the idle timeout plus this interval, so that a session read within its idle
    /// timeout never expires, and one left alone stays in Redis at most this much longer than
    /// the idle timeout.
    #[must_use]
    pub fn with_refresh_interval(mut self, interval: Duration) -> Self {
        self.refresh = interval;
        self
    }

    /// How often the connection is pinged (default 100 ms). Entries are served only while the
    /// last ping was answered within three intervals: a connection that stops answering (a
    /// partition that sends no reset) stops the cache within that time.
    #[must_use]
    pub fn with_heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = interval.max(Duration::from_millis(1));
        self
    }
}

/// A claim on a session's slot by one read or write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Ticket(u64);

enum State<T> {
    /// A read went to Redis and may store what it finds.
    Reading(Ticket),
    /// A write is in flight; `alone`: no other local write overlapped it; `clean`: the slot
    /// held an entry when it began, so no flash was pending (entries never have one, and any
    /// other client's write since would have removed it).
    Writing {
        ticket: Ticket,
        alone: bool,
        clean: bool,
    },
    Ready(Ready<T>),
}

struct Ready<T> {
    record: Record<T>,
    /// Marked by a hit; the CLOCK sweep spares a marked entry once.
    referenced: bool,
}

struct Slots<T> {
    slots: HashMap<SessionKey, State<T>>,
    /// The CLOCK: keys of ready entries in insertion order (stale keys are skipped).
    clock: VecDeque<SessionKey>,
    ready: usize,
    next_ticket: u64,
    /// Loads this shard answered (counted under its lock: a shared counter would be one more
    /// cache line that every hit moves between cores).
    hits: u64,
}

/// What a load found in the cache.
pub(super) enum Lookup<T> {
    Hit(Record<T>),
    /// Go to Redis; store the result under this ticket, if any.
    Miss(Option<Ticket>),
}

/// Counters, for tests and benchmarks.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) misses: AtomicU64,
    pub(super) invalidations: AtomicU64,
    pub(super) flushes: AtomicU64,
}

/// Shards of the cache, each with its own lock and CLOCK, so that requests on different
/// sessions do not queue for one lock.
const SHARDS: usize = 16;

pub(super) struct Cache<T> {
    shards: Box<[Mutex<Slots<T>>]>,
    /// Each shard's share of the capacity.
    shard_capacity: usize,
    /// The connection whose invalidations we receive (0: none, nothing is served or filled).
    connected: AtomicU64,
    /// The newest connection reported broken: one that breaks while it is being set up (before
    /// `connected`) must never be connected.
    broken: AtomicU64,
    /// Milliseconds since `started` of the last answered heartbeat.
    last_pong: AtomicU64,
    started: Instant,
    pub(super) settings: LocalCache,
    pub(super) counters: Counters,
}

impl<T: Clone> Cache<T> {
    pub(super) fn new(settings: LocalCache) -> Self {
        // No more shards than sessions, and each a whole share: never more than the capacity.
        let shards = SHARDS.min(settings.capacity).max(1);
        Self {
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Slots {
                        slots: HashMap::new(),
                        clock: VecDeque::new(),
                        ready: 0,
                        hits: 0,
                        next_ticket: 1,
                    })
                })
                .collect(),
            shard_capacity: (settings.capacity / shards).max(1),
            connected: AtomicU64::new(0),
            broken: AtomicU64::new(0),
            last_pong: AtomicU64::new(0),
            started: Instant::now(),
            settings,
            counters: Counters::default(),
        }
    }

    /// The shard `key` lives in, locked.
    fn lock(&self, key: &SessionKey) -> MutexGuard<'_, Slots<T>> {
        // `shard_hash` is well spread; the remainder is below the shard count.
        let index = (key.shard_hash() % self.shards.len() as u64) as usize;
        lock(&self.shards[index])
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether entries may be served: tracking is on, and the connection answered a heartbeat
    /// recently.
    fn serving(&self) -> bool {
        let lease = u64::try_from(self.settings.heartbeat.as_millis())
            .unwrap_or(u64::MAX)
            .saturating_mul(3);
        self.connected.load(Ordering::Acquire) != 0
            && self
                .millis()
                .saturating_sub(self.last_pong.load(Ordering::Acquire))
                <= lease
    }

    /// Tracking is on for connection `epoch`: serve and fill from now on (starting empty:
    /// nothing from an earlier connection survives).
    pub(super) fn connected(&self, epoch: u64) {
        if self.broken.load(Ordering::SeqCst) >= epoch {
            return;
        }
        self.flush();
        self.last_pong.store(self.millis(), Ordering::Release);
        self.connected.store(epoch, Ordering::SeqCst);
        // A break reported meanwhile either saw `epoch` connected (and ended it) or is seen here.
        if self.broken.load(Ordering::SeqCst) >= epoch {
            self.disconnected(epoch);
        }
    }

    /// Connection `epoch` is gone (or in doubt): if it is the one the cache listens to, drop
    /// everything and stop serving until another connection has tracking on.
    pub(super) fn disconnected(&self, epoch: u64) {
        self.broken.fetch_max(epoch, Ordering::SeqCst);
        if self
            .connected
            .compare_exchange(epoch, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            self.flush();
        }
    }

    pub(super) fn connected_epoch(&self) -> u64 {
        self.connected.load(Ordering::Acquire)
    }

    /// Connection `epoch` answered a heartbeat sent at `sent`: the lease runs from the sending,
    /// so a slow answer does not stretch it.
    pub(super) fn pong(&self, epoch: u64, sent: Instant) {
        if self.connected_epoch() == epoch {
            let at = u64::try_from(sent.saturating_duration_since(self.started).as_millis())
                .unwrap_or(u64::MAX);
            self.last_pong.fetch_max(at, Ordering::AcqRel);
        }
    }

    /// Drops every entry and every claim.
    /// Drops every entry and every read's claim. A write's claim stays (the write's own result
    /// must still not be overtaken by a read sent before it) but may no longer fill.
    pub(super) fn flush(&self) {
        for shard in self.shards.iter() {
            let mut slots = lock(shard);
            slots.slots.retain(|_, state| match state {
                State::Writing { alone, .. } => {
                    *alone = false;
                    true
                }
                _ => false,
            });
            slots.clock.clear();
            slots.ready = 0;
        }
        self.counters.flushes.fetch_add(1, Ordering::Relaxed);
    }

    /// Redis says `key` changed. An entry or a read's claim goes; a local write's claim stays
    /// (so that no read fills before that write is done) but may no longer fill.
    pub(super) fn invalidate(&self, key: &SessionKey) {
        let mut slots = self.lock(key);
        match slots.slots.get_mut(key) {
            Some(State::Writing { alone, .. }) => *alone = false,
            Some(State::Ready(_)) => {
                slots.slots.remove(key);
                slots.ready -= 1;
            }
            Some(State::Reading(_)) => {
                slots.slots.remove(key);
            }
            None => {}
        }
        self.counters.invalidations.fetch_add(1, Ordering::Relaxed);
    }

    /// A load: the entry if it answers `options` (live at `options.now`, enough expiry left for
    /// a sliding load, no flash to take), or a claim for the read that goes to Redis.
    pub(super) fn lookup(&self, key: &SessionKey, options: &LoadOptions) -> Lookup<T> {
        if !self.serving() {
            self.counters.misses.fetch_add(1, Ordering::Relaxed);
            return Lookup::Miss(None);
        }
        let mut slots = self.lock(key);
        let slots = &mut *slots;
        match slots.slots.entry(*key) {
            Slot::Occupied(mut occupied) => match occupied.get_mut() {
                State::Ready(ready) if answers(&ready.record, options) => {
                    ready.referenced = true;
                    slots.hits += 1;
                    Lookup::Hit(ready.record.clone())
                }
                State::Ready(_) => {
                    slots.ready -= 1;
                    let ticket = Self::ticket_for(&mut slots.next_ticket);
                    occupied.insert(State::Reading(ticket));
                    self.counters.misses.fetch_add(1, Ordering::Relaxed);
                    Lookup::Miss(Some(ticket))
                }
                // Another read or a write is in flight: this read does not fill.
                _ => {
                    self.counters.misses.fetch_add(1, Ordering::Relaxed);
                    Lookup::Miss(None)
                }
            },
            Slot::Vacant(vacant) => {
                let ticket = Self::ticket_for(&mut slots.next_ticket);
                vacant.insert(State::Reading(ticket));
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                Lookup::Miss(Some(ticket))
            }
        }
    }

    fn ticket_for(next: &mut u64) -> Ticket {
        *next += 1;
        Ticket(*next)
    }

    /// Stores what the read under `ticket` found, if nothing changed the slot since.
    pub(super) fn fill_read(&self, key: &SessionKey, ticket: Ticket, record: Record<T>) {
        let mut slots = self.lock(key);
        if matches!(slots.slots.get(key), Some(State::Reading(t)) if *t == ticket) {
            self.store_ready(&mut slots, record);
        }
    }

    /// Gives up the claim of a read or write that stores nothing.
    pub(super) fn release(&self, key: &SessionKey, ticket: Ticket) {
        let mut slots = self.lock(key);
        let held = match slots.slots.get(key) {
            Some(State::Reading(t)) => *t == ticket,
            Some(State::Writing { ticket: t, .. }) => *t == ticket,
            _ => false,
        };
        if held {
            slots.slots.remove(key);
        }
    }

    /// A local write to `key` is about to leave: claims the slot (any entry goes, any read in
    /// flight will not fill). `None` while the cache is not serving.
    pub(super) fn begin_write(&self, key: &SessionKey) -> Ticket {
        let mut slots = self.lock(key);
        let ticket = Self::ticket_for(&mut slots.next_ticket);
        // Not tracking now: the write still claims the slot (no read may fill before it is
        // done), but cannot fill it.
        let tracking = self.connected_epoch() != 0;
        let alone = tracking && !matches!(slots.slots.get(key), Some(State::Writing { .. }));
        let clean = matches!(slots.slots.get(key), Some(State::Ready(_)));
        let writing = State::Writing {
            ticket,
            alone,
            clean,
        };
        if let Some(State::Ready(_)) = slots.slots.insert(*key, writing) {
            slots.ready -= 1;
        }
        ticket
    }

    /// The write under `ticket` was acknowledged: `record` is what `key` now holds, stored if
    /// no other write overlapped and nothing invalidated the key meanwhile. `needs_clean`: the
    /// write may have left a pending flash it does not show (a save without one), so it is
    /// stored only if none was pending when it began.
    pub(super) fn fill_write(
        &self,
        key: &SessionKey,
        ticket: Ticket,
        record: Record<T>,
        needs_clean: bool,
    ) {
        let mut slots = self.lock(key);
        let alone = matches!(
            slots.slots.get(key),
            Some(State::Writing { ticket: t, alone: true, clean })
                if *t == ticket && (*clean || !needs_clean)
        );
        if alone && self.serving() {
            self.store_ready(&mut slots, record);
        } else {
            drop(slots);
            self.release(key, ticket);
        }
    }

    fn store_ready(&self, slots: &mut Slots<T>, record: Record<T>) {
        let key = record.key;
        slots.slots.insert(
            key,
            State::Ready(Ready {
                record,
                referenced: false,
            }),
        );
        slots.ready += 1;
        slots.clock.push_back(key);
        self.evict(slots);
    }

    /// The CLOCK sweep: while over capacity, the hand drops the first unmarked entry, unmarking
    /// the marked ones it passes.
    fn evict(&self, slots: &mut Slots<T>) {
        while slots.ready > self.shard_capacity {
            let Some(key) = slots.clock.pop_front() else {
                break;
            };
            match slots.slots.get_mut(&key) {
                Some(State::Ready(ready)) if ready.referenced => {
                    ready.referenced = false;
                    slots.clock.push_back(key);
                }
                Some(State::Ready(_)) => {
                    slots.slots.remove(&key);
                    slots.ready -= 1;
                }
                _ => {}
            }
        }
        // Keys of entries that were invalidated stay in the queue until the hand passes them:
        // bound them.
        if slots.clock.len() > 2 * self.shard_capacity + 64 {
            let Slots {
                slots: map, clock, ..
            } = slots;
            clock.retain(|key| matches!(map.get(key), Some(State::Ready(_))));
            // An entry re-filled after an invalidation may be queued twice: keep one.
            let mut seen = std::collections::HashSet::with_capacity(clock.len());
            clock.retain(|key| seen.insert(*key));
        }
    }

    /// Whether a session is cached under `key`.
    pub(super) fn holds(&self, key: &SessionKey) -> bool {
        matches!(self.lock(key).slots.get(key), Some(State::Ready(_)))
    }

    /// How many sessions are cached.
    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).ready).sum()
    }

    /// Loads answered from the cache so far.
    pub(super) fn hits(&self) -> u64 {
        self.shards.iter().map(|shard| lock(shard).hits).sum()
    }
}

fn lock<T>(shard: &Mutex<Slots<T>>) -> MutexGuard<'_, Slots<T>> {
    shard
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether a cached record answers a load: live at `now`, with as much expiry left as a sliding
/// load asks (or up to the deadline), and no flash to take (entries never hold one).
fn answers<T>(record: &Record<T>, options: &LoadOptions) -> bool {
    let now = options.now;
    if record.is_expired(now) || !record.flash.is_empty() {
        return false;
    }
    match options.slide {
        Some(idle) => record.expires_at >= (now + idle).min(record.deadline),
        None => true,
    }
}

/// The expiry a refreshing read asks Redis for: the idle timeout plus the refresh interval.
pub(super) fn refreshed(options: LoadOptions, refresh: Duration) -> LoadOptions {
    let slide = options.slide.map(|idle| idle.saturating_add(refresh));
    options.sliding(slide)
}

/// `now` as the cache judges a write's record: a record already expired is not cached.
pub(super) fn cacheable<T>(record: &Record<T>) -> bool {
    record.flash.is_empty() && !record.is_expired(OffsetDateTime::now_utc())
}

/// Claims of one operation, given back if it ends early (a cancelled request): a claim left
/// behind would keep its session out of the cache, and claims of made-up keys would pile up.
pub(super) struct Claims<'a, T: Clone> {
    cache: &'a Cache<T>,
    held: Vec<(SessionKey, Ticket)>,
}

impl<'a, T: Clone> Claims<'a, T> {
    pub(super) fn new(cache: &'a Cache<T>) -> Self {
        Self {
            cache,
            held: Vec::with_capacity(2),
        }
    }

    pub(super) fn hold(&mut self, key: SessionKey, ticket: Ticket) {
        self.held.push((key, ticket));
    }

    /// The claims, for the operation to fill or release itself.
    pub(super) fn take(&mut self) -> Vec<(SessionKey, Ticket)> {
        std::mem::take(&mut self.held)
    }
}

impl<T: Clone> Drop for Claims<'_, T> {
    fn drop(&mut self) {
        for (key, ticket) in self.held.drain(..) {
            self.cache.release(&key, ticket);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One step of one actor: a read (claim, then fill), a local write (claim, then fill),
    /// or Redis's invalidation push for another client's write.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Step {
        ReadClaim,
        ReadFill,
        WriteClaim,
        WriteFill,
        Push,
    }

    fn record(key: SessionKey, version: u64) -> Record<u64> {
        let now = OffsetDateTime::now_utc();
        Record::new(
            key,
            version,
            now,
            Duration::from_secs(60),
            Duration::from_secs(600),
        )
    }

    /// Every interleaving of `actors` (each a sequence of steps kept in order).
    fn interleavings(actors: &[Vec<Step>]) -> Vec<Vec<Step>> {
        fn go(
            actors: &[Vec<Step>],
            at: &mut Vec<usize>,
            order: &mut Vec<Step>,
            out: &mut Vec<Vec<Step>>,
        ) {
            let mut done = true;
            for i in 0..actors.len() {
                if at[i] < actors[i].len() {
                    done = false;
                    order.push(actors[i][at[i]]);
                    at[i] += 1;
                    go(actors, at, order, out);
                    at[i] -= 1;
                    order.pop();
                }
            }
            if done {
                out.push(order.clone());
            }
        }
        let mut out = Vec::new();
        go(
            actors,
            &mut vec![0; actors.len()],
            &mut Vec::new(),
            &mut out,
        );
        out
    }

    /// In every order of a read, a local write and a remote write's push reaching the cache:
    /// an entry is stored only if nothing that may have changed the session (a push, another
    /// local write) came between its claim and its fill, and an entry stored is dropped by any
    /// such event after it. And when nothing intervened, the entry is stored (the rules do not
    /// just refuse everything).
    #[test]
    fn no_order_of_fills_pushes_and_writes_leaves_a_stale_entry() {
        let actors = vec![
            vec![Step::ReadClaim, Step::ReadFill],
            vec![Step::WriteClaim, Step::WriteFill],
            vec![Step::Push],
        ];
        let orders = interleavings(&actors);
        assert_eq!(orders.len(), 30);
        let (mut stored_read, mut stored_write) = (0, 0);
        for order in &orders {
            let cache = Cache::<u64>::new(LocalCache::new());
            cache.connected(1);
            let key = SessionKey::generate().unwrap();
            let options = LoadOptions::at(OffsetDateTime::now_utc());
            let (mut read_ticket, mut write_ticket) = (None, None);
            // For each stored version: the step index after which it is stale.
            let mut events = Vec::new();
            for (at, step) in order.iter().enumerate() {
                match step {
                    Step::ReadClaim => {
                        read_ticket = match cache.lookup(&key, &options) {
                            Lookup::Miss(ticket) => ticket,
                            Lookup::Hit(_) => None,
                        }
                    }
                    Step::ReadFill => {
                        if let Some(ticket) = read_ticket {
                            cache.fill_read(&key, ticket, record(key, 1));
                        }
                    }
                    Step::WriteClaim => write_ticket = Some(cache.begin_write(&key)),
                    Step::WriteFill => {
                        if let Some(ticket) = write_ticket {
                            cache.fill_write(&key, ticket, record(key, 2), false);
                        }
                    }
                    Step::Push => cache.invalidate(&key),
                }
                events.push((at, *step));
            }
            let position = |step: Step| order.iter().position(|s| *s == step).unwrap();
            let between = |from: usize, to: usize, steps: &[Step]| {
                order[from + 1..to].iter().any(|s| steps.contains(s))
            };
            let held = cache
                .lock(&key)
                .slots
                .get(&key)
                .and_then(|state| match state {
                    State::Ready(ready) => Some(ready.record.data),
                    _ => None,
                });
            let (rc, rf) = (position(Step::ReadClaim), position(Step::ReadFill));
            let (wc, wf) = (position(Step::WriteClaim), position(Step::WriteFill));
            match held {
                Some(1) => {
                    // The read's value: nothing that may change the session after its claim.
                    assert!(
                        !between(rc, order.len(), &[Step::Push, Step::WriteClaim]),
                        "stale read kept: {order:?}"
                    );
                    stored_read += 1;
                }
                Some(2) => {
                    // The write's value: no other client's write after it was claimed.
                    assert!(
                        !between(wc, order.len(), &[Step::Push]),
                        "a write's value kept past a push: {order:?}"
                    );
                    stored_write += 1;
                }
                _ => {}
            }
            // A read alone after everything else settled is kept.
            if rc > wf.max(position(Step::Push)) && wf > wc {
                let _ = rf;
                assert!(held.is_some(), "nothing kept: {order:?}");
            }
        }
        println!(
            "{} orders: the read's value kept in {stored_read}, the write's in {stored_write}",
            orders.len()
        );
        assert!(stored_read > 0 && stored_write > 0);
    }

    #[test]
    fn nothing_is_served_or_filled_without_tracking() {
        let cache = Cache::<u64>::new(LocalCache::new());
        let key = SessionKey::generate().unwrap();
        let options = LoadOptions::at(OffsetDateTime::now_utc());
        assert!(matches!(cache.lookup(&key, &options), Lookup::Miss(None)));
        let ticket = cache.begin_write(&key);
        cache.fill_write(&key, ticket, record(key, 9), false);
        assert!(
            !cache.holds(&key),
            "a write while not tracking fills nothing"
        );
        cache.connected(7);
        let Lookup::Miss(Some(ticket)) = cache.lookup(&key, &options) else {
            panic!("a claim once connected");
        };
        cache.fill_read(&key, ticket, record(key, 1));
        assert!(matches!(cache.lookup(&key, &options), Lookup::Hit(_)));
        // A disconnection of another connection changes nothing; of this one, everything.
        cache.disconnected(6);
        assert!(matches!(cache.lookup(&key, &options), Lookup::Hit(_)));
        cache.disconnected(7);
        assert!(matches!(cache.lookup(&key, &options), Lookup::Miss(None)));
        assert_eq!(cache.len(), 0);
    }

    /// A local write's claim outlives a flush, a push and a reconnect until the write is done:
    /// no read sent before the write (NOLOOP: Redis says nothing of our own writes) can fill the
    /// session it changes. And a claim given up by a cancelled operation leaves nothing behind.
    #[test]
    fn a_write_claim_holds_until_the_write_is_done() {
        let cache = Cache::<u64>::new(LocalCache::new());
        let key = SessionKey::generate().unwrap();
        let options = LoadOptions::at(OffsetDateTime::now_utc());
        // Claimed while not tracking, then tracking comes back: still no read may fill.
        let before = cache.begin_write(&key);
        cache.connected(1);
        assert!(matches!(cache.lookup(&key, &options), Lookup::Miss(None)));
        cache.release(&key, before);
        for disturb in [Cache::<u64>::flush as fn(&Cache<u64>), |cache| {
            cache.invalidate(&SessionKey::plain(
                &crate::id::SessionId::generate().unwrap(),
            ))
        }] {
            let ticket = cache.begin_write(&key);
            disturb(&cache);
            cache.invalidate(&key);
            assert!(matches!(cache.lookup(&key, &options), Lookup::Miss(None)));
            cache.fill_write(&key, ticket, record(key, 2), false);
            assert!(
                !cache.holds(&key),
                "a write disturbed in flight does not fill"
            );
            assert!(matches!(
                cache.lookup(&key, &options),
                Lookup::Miss(Some(_))
            ));
            cache.flush();
        }
        {
            let mut claims = Claims::new(&cache);
            claims.hold(key, cache.begin_write(&key));
        }
        assert!(
            matches!(cache.lookup(&key, &options), Lookup::Miss(Some(_))),
            "the cancelled claim is gone"
        );
    }
}
