//! An in-process store: the embedded default.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    sync::{
        atomic::{AtomicI64, AtomicUsize, Ordering},
        Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak,
    },
    time::Duration,
};

use time::OffsetDateTime;

use super::{sweeper::Sweeper, Expect, Forward, LoadOptions, Loaded, Store, WriteOutcome};
use crate::{error::StoreError, id::SessionKey, record::Record, session::Session};

const SHARDS: usize = 64;
const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// At the cap, a refused create purges expired entries at most this often, so that a flood of
/// refused creates costs O(1) each instead of a scan of the whole store under its locks.
const MAX_PURGE_RATE: Duration = Duration::from_secs(1);

/// What one key holds: a session, or the pointer a regenerate left behind.
enum Entry<T> {
    Live(Record<T>),
    Moved(Forward),
}

impl<T> Entry<T> {
    /// Whether the entry can go: an expired session, or a pointer past its lifetime.
    fn is_dead(&self, now: OffsetDateTime) -> bool {
        match self {
            Entry::Live(record) => record.is_expired(now),
            Entry::Moved(forward) => forward.until <= now,
        }
    }
}

type Shard<T> = RwLock<HashMap<SessionKey, Entry<T>>>;
type OwnerShard = std::sync::Mutex<HashMap<String, HashSet<SessionKey>>>;
const OWNER_SHARDS: usize = 16;

/// Sessions kept in this process's memory.
///
/// # Behavior
/// - Sharded: requests for different sessions rarely contend, and no lock is held across an
///   `await`.
/// - An expired session is never returned as live, even before the sweeper has removed it; until
///   then a load reports it [`Loaded::Expired`].
/// - A background task (spawned on the Tokio runtime at the first write) removes expired
///   sessions every sweep interval; it ends when the last clone of the store is dropped.
/// - Optional cap on the number of entries (sessions and regenerate pointers): creating one more
///   fails with [`StoreError::CapacityExceeded`]. A refused create purges expired entries at most
///   once a second, so a flood of them costs each O(1) and never holds the locks for long.
/// - Clones share the same sessions. Sessions are lost when the process exits.
///
/// ```
/// use tower_typed_sessions::{MemoryStore, Session};
/// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct Data;
/// # impl Session for Data {}
/// use std::time::Duration;
///
/// let store: MemoryStore<Data> = MemoryStore::builder()
///     .with_max_sessions(100_000)
///     .with_sweep_interval(Duration::from_secs(30))
///     .build();
/// ```
pub struct MemoryStore<T> {
    inner: Arc<Inner<T>>,
}

struct Inner<T> {
    shards: Box<[Shard<T>]>,
    /// Owner -> IDs of their sessions. Only written when a session's owner changes.
    owners: Box<[OwnerShard]>,
    /// Entries held (sessions, expired ones not yet swept, and pointers): what the cap limits.
    len: AtomicUsize,
    /// When a refused create last purged, in Unix milliseconds.
    last_purge_ms: AtomicI64,
    max_sessions: Option<usize>,
    sweep_interval: Duration,
    sweeper: Sweeper,
}

impl<T> Clone for MemoryStore<T> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T> fmt::Debug for MemoryStore<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.inner.len.load(Ordering::Relaxed))
            .field("max_sessions", &self.inner.max_sessions)
            .field("sweep_interval", &self.inner.sweep_interval)
            .finish()
    }
}

impl<T: Session> Default for MemoryStore<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Builds a [`MemoryStore`] with non-default settings.
#[must_use]
pub struct MemoryStoreBuilder<T> {
    max_sessions: Option<usize>,
    sweep_interval: Duration,
    session: std::marker::PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for MemoryStoreBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStoreBuilder")
            .field("max_sessions", &self.max_sessions)
            .field("sweep_interval", &self.sweep_interval)
            .finish()
    }
}

impl<T: Session> MemoryStoreBuilder<T> {
    /// Refuses to create more than `max` sessions at once (default: no limit).
    pub fn with_max_sessions(mut self, max: usize) -> Self {
        self.max_sessions = Some(max);
        self
    }

    /// How often the background task removes expired sessions (default 60 s).
    pub fn with_sweep_interval(mut self, interval: Duration) -> Self {
        self.sweep_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Builds the store.
    pub fn build(self) -> MemoryStore<T> {
        MemoryStore {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
                owners: (0..OWNER_SHARDS)
                    .map(|_| std::sync::Mutex::new(HashMap::new()))
                    .collect(),
                len: AtomicUsize::new(0),
                last_purge_ms: AtomicI64::new(i64::MIN),
                max_sessions: self.max_sessions,
                sweep_interval: self.sweep_interval,
                sweeper: Sweeper::default(),
            }),
        }
    }
}

impl<T: Session> MemoryStore<T> {
    /// A store with no session limit and a 60 s sweep interval.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder for non-default settings.
    pub fn builder() -> MemoryStoreBuilder<T> {
        MemoryStoreBuilder {
            max_sessions: None,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
            session: std::marker::PhantomData,
        }
    }

    /// Removes every expired session now, returning how many were removed. The background
    /// sweeper calls this; it is public for applications that run without a Tokio runtime.
    pub fn purge_expired(&self) -> usize {
        self.inner.purge_expired(OffsetDateTime::now_utc())
    }

    fn shard(&self, key: &SessionKey) -> &Shard<T> {
        &self.inner.shards[shard_index(key)]
    }

    fn ensure_sweeper(&self) {
        let weak: Weak<Inner<T>> = Arc::downgrade(&self.inner);
        self.inner
            .sweeper
            .start_once(weak, self.inner.sweep_interval, |inner| async move {
                let removed = inner.purge_expired(OffsetDateTime::now_utc());
                if removed > 0 {
                    tracing::debug!(removed, "memory store swept expired sessions");
                }
            });
    }
}

fn shard_index(key: &SessionKey) -> usize {
    (key.shard_hash() as usize) % SHARDS
}

use crate::record::unix_ms as millis;

impl<T: Session> Inner<T> {
    /// Counts one more entry, refusing past the cap. At the cap it purges expired entries first,
    /// but at most once per [`MAX_PURGE_RATE`]: the scan is O(n), a refused create must not be.
    fn reserve(&self, now: OffsetDateTime) -> Result<(), StoreError> {
        let Some(limit) = self.max_sessions else {
            self.len.fetch_add(1, Ordering::AcqRel);
            return Ok(());
        };
        for attempt in 0..2 {
            if self.len.fetch_add(1, Ordering::AcqRel) < limit {
                return Ok(());
            }
            self.len.fetch_sub(1, Ordering::AcqRel);
            if attempt > 0 || !self.may_purge(now) || self.purge_expired(now) == 0 {
                break;
            }
        }
        Err(StoreError::CapacityExceeded { limit })
    }

    /// Claims the right to purge now if the last purge by a refused create was long enough ago.
    fn may_purge(&self, now: OffsetDateTime) -> bool {
        let now_ms = millis(now);
        let last = self.last_purge_ms.load(Ordering::Acquire);
        let gap = i64::try_from(MAX_PURGE_RATE.as_millis()).unwrap_or(i64::MAX);
        now_ms.saturating_sub(last) >= gap
            && self
                .last_purge_ms
                .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// Removes expired sessions and pointers past their lifetime, shard by shard (one shard's
    /// lock at a time), and unindexes the removed sessions' owners.
    fn purge_expired(&self, now: OffsetDateTime) -> usize {
        let mut removed = 0;
        let mut orphaned = Vec::new();
        for shard in self.shards.iter() {
            let mut map = write(shard);
            let before = map.len();
            map.retain(|key, entry| {
                let dead = entry.is_dead(now);
                if let (true, Entry::Live(record)) = (dead, &*entry) {
                    if let Some(owner) = record.data.owner() {
                        orphaned.push((owner, *key));
                    }
                }
                !dead
            });
            removed += before - map.len();
        }
        self.len.fetch_sub(removed, Ordering::AcqRel);
        for (owner, key) in orphaned {
            self.unindex(&owner, &key);
        }
        removed
    }

    fn owner_shard(&self, owner: &str) -> &OwnerShard {
        &self.owners[(crate::id::fnv1a(owner.as_bytes()) as usize) % OWNER_SHARDS]
    }

    fn unindex(&self, owner: &str, key: &SessionKey) {
        let mut owners = lock_mutex(self.owner_shard(owner));
        if let Some(keys) = owners.get_mut(owner) {
            keys.remove(key);
            if keys.is_empty() {
                owners.remove(owner);
            }
        }
    }
}

// A panic inside a lock cannot leave a map half-updated (every update is one insert/remove), so a
// poisoned lock is safe to keep using.
fn read<T>(shard: &Shard<T>) -> RwLockReadGuard<'_, HashMap<SessionKey, Entry<T>>> {
    shard
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(shard: &Shard<T>) -> RwLockWriteGuard<'_, HashMap<SessionKey, Entry<T>>> {
    shard
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn lock_mutex<V>(mutex: &std::sync::Mutex<V>) -> std::sync::MutexGuard<'_, V> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether a live record at `revision` satisfies `expect`.
fn holds(expect: Expect, revision: u64) -> bool {
    match expect {
        Expect::Any => true,
        Expect::Revision(expected) => expected == revision,
    }
}

impl<T: Session> Store<T> for MemoryStore<T> {
    fn contents_stay_in_process(&self) -> bool {
        true
    }

    async fn load(&self, key: &SessionKey, options: LoadOptions) -> Result<Loaded<T>, StoreError> {
        let now = options.now;
        // A plain read takes the shared lock; a load that changes the record (slide, flash)
        // takes the exclusive one. An expired record stays until the sweeper removes it, so
        // every load until then reports it expired.
        if options.slide.is_none() && !options.take_flash {
            let map = read(self.shard(key));
            return Ok(match map.get(key) {
                None => Loaded::Missing,
                Some(Entry::Moved(forward)) if forward.until > now => Loaded::Moved(*forward),
                Some(Entry::Moved(_)) => Loaded::Missing,
                Some(Entry::Live(record)) if record.is_expired(now) => {
                    Loaded::Expired(record.clone())
                }
                Some(Entry::Live(record)) => Loaded::Active(record.clone()),
            });
        }
        let mut map = write(self.shard(key));
        let record = match map.get_mut(key) {
            None => return Ok(Loaded::Missing),
            Some(Entry::Moved(forward)) if forward.until > now => {
                return Ok(Loaded::Moved(*forward))
            }
            Some(Entry::Moved(_)) => return Ok(Loaded::Missing),
            Some(Entry::Live(record)) if record.is_expired(now) => {
                return Ok(Loaded::Expired(record.clone()))
            }
            Some(Entry::Live(record)) => record,
        };
        if let Some(idle) = options.slide {
            record.expires_at = (now + idle).min(record.deadline).max(record.expires_at);
        }
        let flash = if options.take_flash {
            std::mem::take(&mut record.flash)
        } else {
            Default::default()
        };
        let mut loaded = record.clone();
        if options.take_flash {
            loaded.flash = flash;
        }
        Ok(Loaded::Active(loaded))
    }

    async fn create(&self, record: &Record<T>) -> Result<WriteOutcome, StoreError> {
        self.ensure_sweeper();
        let now = OffsetDateTime::now_utc();
        // Reserve the place before inserting, so that concurrent creates on different shards
        // cannot all pass the cap together; every path that inserts nothing gives it back.
        self.inner.reserve(now)?;
        let mut map = write(self.shard(&record.key));
        if map.contains_key(&record.key) {
            drop(map);
            self.inner.len.fetch_sub(1, Ordering::AcqRel);
            return Ok(WriteOutcome::Collision);
        }
        map.insert(record.key, Entry::Live(record.clone()));
        Ok(WriteOutcome::Done)
    }

    async fn save(&self, record: &Record<T>, expect: Expect) -> Result<WriteOutcome, StoreError> {
        let now = OffsetDateTime::now_utc();
        let mut map = write(self.shard(&record.key));
        match map.get_mut(&record.key) {
            Some(Entry::Moved(forward)) if forward.until > now => {
                Ok(WriteOutcome::Moved(forward.to))
            }
            Some(Entry::Live(stored)) if !stored.is_expired(now) => {
                if !holds(expect, stored.revision) {
                    return Ok(WriteOutcome::Conflict);
                }
                let revision = stored.revision + 1;
                // A save never moves the expiry back: a concurrent load may have slid it past
                // what this copy saw.
                let expires_at = stored.expires_at.max(record.expires_at);
                // A save without a flash of its own leaves one that another request set.
                let flash = if record.flash.is_empty() {
                    std::mem::take(&mut stored.flash)
                } else {
                    record.flash.clone()
                };
                *stored = record.clone();
                stored.revision = revision;
                stored.expires_at = expires_at;
                stored.flash = flash;
                Ok(WriteOutcome::Done)
            }
            _ => Ok(WriteOutcome::Missing),
        }
    }

    async fn regenerate(
        &self,
        old: &SessionKey,
        record: &Record<T>,
        expect: Expect,
        forward: Forward,
    ) -> Result<WriteOutcome, StoreError> {
        let now = OffsetDateTime::now_utc();
        // The pointer is one more entry: it counts against the cap like a session.
        self.inner.reserve(now)?;
        let outcome = self.move_session(old, record, expect, forward, now);
        if outcome != WriteOutcome::Done {
            self.inner.len.fetch_sub(1, Ordering::AcqRel);
        }
        Ok(outcome)
    }

    async fn delete(&self, key: &SessionKey, expect: Expect) -> Result<WriteOutcome, StoreError> {
        let now = OffsetDateTime::now_utc();
        let mut map = write(self.shard(key));
        match map.get(key) {
            Some(Entry::Moved(forward)) if forward.until > now => {
                Ok(WriteOutcome::Moved(forward.to))
            }
            None => Ok(WriteOutcome::Missing),
            Some(Entry::Live(stored))
                if !stored.is_expired(now) && !holds(expect, stored.revision) =>
            {
                Ok(WriteOutcome::Conflict)
            }
            Some(entry) => {
                let live = !entry.is_dead(now) && matches!(entry, Entry::Live(_));
                map.remove(key);
                drop(map);
                self.inner.len.fetch_sub(1, Ordering::AcqRel);
                Ok(if live {
                    WriteOutcome::Done
                } else {
                    WriteOutcome::Missing
                })
            }
        }
    }
    async fn count(&self) -> Result<usize, StoreError> {
        let now = OffsetDateTime::now_utc();
        Ok(self
            .inner
            .shards
            .iter()
            .map(|shard| {
                read(shard)
                    .values()
                    .filter(|entry| matches!(entry, Entry::Live(r) if !r.is_expired(now)))
                    .count()
            })
            .sum())
    }

    fn supports_owner_index(&self) -> bool {
        true
    }

    async fn index_owner(
        &self,
        owner: &str,
        key: &SessionKey,
        _until: OffsetDateTime,
    ) -> Result<(), StoreError> {
        // Entries of dead sessions are removed by the sweeper and by SessionManager, so this
        // index needs no expiry of its own.
        lock_mutex(self.inner.owner_shard(owner))
            .entry(owner.to_owned())
            .or_default()
            .insert(*key);
        Ok(())
    }

    async fn unindex_owner(&self, owner: &str, key: &SessionKey) -> Result<(), StoreError> {
        self.inner.unindex(owner, key);
        Ok(())
    }

    async fn owner_keys(&self, owner: &str) -> Result<Vec<SessionKey>, StoreError> {
        Ok(lock_mutex(self.inner.owner_shard(owner))
            .get(owner)
            .map(|keys| keys.iter().copied().collect())
            .unwrap_or_default())
    }
}

impl<T: Session> MemoryStore<T> {
    /// Moves a live session under `old` to `record.key` and leaves `forward` under `old`, with
    /// both shards locked for the whole move.
    fn move_session(
        &self,
        old: &SessionKey,
        record: &Record<T>,
        expect: Expect,
        forward: Forward,
        now: OffsetDateTime,
    ) -> WriteOutcome {
        let (old_index, new_index) = (shard_index(old), shard_index(&record.key));
        // Both shards stay locked for the whole move, always in index order (no deadlock), so no
        // other request sees the session under both keys or under neither.
        let (mut first, mut second) = match old_index.cmp(&new_index) {
            std::cmp::Ordering::Equal => (write(&self.inner.shards[old_index]), None),
            std::cmp::Ordering::Less => {
                let a = write(&self.inner.shards[old_index]);
                (a, Some(write(&self.inner.shards[new_index])))
            }
            std::cmp::Ordering::Greater => {
                let b = write(&self.inner.shards[new_index]);
                (write(&self.inner.shards[old_index]), Some(b))
            }
        };
        let (revision, pending) = match first.get(old) {
            Some(Entry::Moved(pointer)) if pointer.until > now => {
                return WriteOutcome::Moved(pointer.to)
            }
            Some(Entry::Live(stored)) if !stored.is_expired(now) => {
                if !holds(expect, stored.revision) {
                    return WriteOutcome::Conflict;
                }
                (stored.revision + 1, &stored.flash)
            }
            _ => return WriteOutcome::Missing,
        };
        // A flash still pending moves with the session unless this write brings its own.
        let flash = if record.flash.is_empty() {
            pending.clone()
        } else {
            record.flash.clone()
        };
        let new_map = second.as_deref_mut().unwrap_or(&mut first);
        if new_map.contains_key(&record.key) {
            return WriteOutcome::Collision;
        }
        let mut moved = record.clone();
        moved.revision = revision;
        moved.flash = flash;
        new_map.insert(record.key, Entry::Live(moved));
        first.insert(
            *old,
            Entry::Moved(Forward {
                to: record.key,
                ..forward
            }),
        );
        WriteOutcome::Done
    }
}
