//! An in-process store: the embedded default.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak,
    },
    time::Duration,
};

use time::OffsetDateTime;
use tokio::sync::oneshot;

use super::{Loaded, Store, WriteOutcome};
use crate::{error::StoreError, id::SessionId, record::Record, session::Session};

const SHARDS: usize = 64;
const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

type Shard<T> = RwLock<HashMap<SessionId, Record<T>>>;
type OwnerShard = std::sync::Mutex<HashMap<String, HashSet<SessionId>>>;
const OWNER_SHARDS: usize = 16;

/// Sessions kept in this process's memory.
///
/// # Behavior
/// - Sharded: requests for different sessions rarely contend, and no lock is held across an
///   `await`.
/// - An expired session is never returned, even before the sweeper has removed it.
/// - A background task (spawned on the Tokio runtime at the first write) removes expired
///   sessions every sweep interval; it ends when the last clone of the store is dropped.
/// - Optional cap on the number of sessions: creating one more fails with
///   [`StoreError::CapacityExceeded`] (after expired sessions have been purged).
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
    /// Old ID -> (new ID, end of grace) after `regenerate_with_grace`; only read after a miss.
    moved: std::sync::Mutex<HashMap<SessionId, (SessionId, OffsetDateTime)>>,
    len: AtomicUsize,
    max_sessions: Option<usize>,
    sweep_interval: Duration,
    sweeper_started: AtomicBool,
    /// Dropped with the store, which tells the sweeper to stop.
    sweeper_stop: std::sync::Mutex<Option<oneshot::Sender<()>>>,
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
                moved: std::sync::Mutex::new(HashMap::new()),
                len: AtomicUsize::new(0),
                max_sessions: self.max_sessions,
                sweep_interval: self.sweep_interval,
                sweeper_started: AtomicBool::new(false),
                sweeper_stop: std::sync::Mutex::new(None),
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

    fn shard(&self, id: &SessionId) -> &Shard<T> {
        &self.inner.shards[(id.shard_hash() as usize) % SHARDS]
    }

    fn ensure_sweeper(&self) {
        if self.inner.sweeper_started.load(Ordering::Relaxed)
            || self.inner.sweeper_started.swap(true, Ordering::AcqRel)
        {
            return;
        }
        // Outside a Tokio runtime there is no sweeper: expired sessions are still never
        // returned, and `purge_expired` frees them.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        *lock_mutex(&self.inner.sweeper_stop) = Some(stop_tx);
        let weak: Weak<Inner<T>> = Arc::downgrade(&self.inner);
        let interval = self.inner.sweep_interval;
        runtime.spawn(sweep(weak, interval, stop_rx));
    }
}

async fn sweep<T: Session>(
    weak: Weak<Inner<T>>,
    interval: Duration,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        // The sender lives in the store: once the store is dropped, `stop` resolves at once.
        if tokio::time::timeout(interval, &mut stop).await.is_ok() {
            return;
        }
        let Some(inner) = weak.upgrade() else { return };
        let removed = inner.purge_expired(OffsetDateTime::now_utc());
        if removed > 0 {
            tracing::debug!(removed, "memory store swept expired sessions");
        }
    }
}

impl<T: Session> Inner<T> {
    /// Counts one more session, refusing past the cap (after purging expired ones once).
    fn reserve(&self) -> Result<(), StoreError> {
        let Some(limit) = self.max_sessions else {
            self.len.fetch_add(1, Ordering::AcqRel);
            return Ok(());
        };
        for attempt in 0..2 {
            if self.len.fetch_add(1, Ordering::AcqRel) < limit {
                return Ok(());
            }
            self.len.fetch_sub(1, Ordering::AcqRel);
            if attempt == 0 && self.purge_expired(OffsetDateTime::now_utc()) == 0 {
                break;
            }
        }
        Err(StoreError::CapacityExceeded { limit })
    }

    fn purge_expired(&self, now: OffsetDateTime) -> usize {
        let mut removed = 0;
        let mut orphaned = Vec::new();
        for shard in self.shards.iter() {
            let mut map = write(shard);
            let before = map.len();
            map.retain(|id, record| {
                let live = !record.is_expired(now);
                if !live {
                    if let Some(owner) = record.data.owner() {
                        orphaned.push((owner, *id));
                    }
                }
                live
            });
            removed += before - map.len();
        }
        self.len.fetch_sub(removed, Ordering::Relaxed);
        lock_mutex(&self.moved).retain(|_, (_, until)| *until > now);
        for (owner, id) in orphaned {
            self.unindex(&owner, &id);
        }
        removed
    }

    fn owner_shard(&self, owner: &str) -> &OwnerShard {
        let hash = owner.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        &self.owners[(hash as usize) % OWNER_SHARDS]
    }

    fn unindex(&self, owner: &str, id: &SessionId) {
        let mut owners = lock_mutex(self.owner_shard(owner));
        if let Some(ids) = owners.get_mut(owner) {
            ids.remove(id);
            if ids.is_empty() {
                owners.remove(owner);
            }
        }
    }
}

// A panic inside a lock cannot leave a map half-updated (every update is one insert/remove), so a
// poisoned lock is safe to keep using.
fn read<T>(shard: &Shard<T>) -> RwLockReadGuard<'_, HashMap<SessionId, Record<T>>> {
    shard
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(shard: &Shard<T>) -> RwLockWriteGuard<'_, HashMap<SessionId, Record<T>>> {
    shard
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn lock_mutex<V>(mutex: &std::sync::Mutex<V>) -> std::sync::MutexGuard<'_, V> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<T: Session> Store<T> for MemoryStore<T> {
    async fn create(&self, record: &Record<T>) -> Result<WriteOutcome, StoreError> {
        self.ensure_sweeper();
        // Reserve the place before inserting, so that concurrent creates on different shards
        // cannot all pass the cap together; every path that inserts nothing new gives it back.
        self.inner.reserve()?;
        let mut map = write(self.shard(&record.id));
        match map.get(&record.id) {
            Some(existing) if !existing.is_expired(OffsetDateTime::now_utc()) => {
                drop(map);
                self.inner.len.fetch_sub(1, Ordering::AcqRel);
                Ok(WriteOutcome::Collision)
            }
            Some(_) => {
                // Replaces an expired entry that was already counted.
                map.insert(record.id, record.clone());
                drop(map);
                self.inner.len.fetch_sub(1, Ordering::AcqRel);
                Ok(WriteOutcome::Done)
            }
            None => {
                map.insert(record.id, record.clone());
                Ok(WriteOutcome::Done)
            }
        }
    }

    async fn load(&self, id: &SessionId) -> Result<Loaded<T>, StoreError> {
        let now = OffsetDateTime::now_utc();
        {
            let map = read(self.shard(id));
            match map.get(id) {
                None => return Ok(Loaded::Missing),
                Some(record) if !record.is_expired(now) => {
                    return Ok(Loaded::Active(record.clone()))
                }
                Some(_) => {}
            }
        }
        Ok(self.remove_if_expired(id, now))
    }

    async fn load_and_touch(
        &self,
        id: &SessionId,
        idle: Duration,
    ) -> Result<Loaded<T>, StoreError> {
        let now = OffsetDateTime::now_utc();
        let mut map = write(self.shard(id));
        let Some(record) = map.get_mut(id) else {
            return Ok(Loaded::Missing);
        };
        if record.is_expired(now) {
            let expired = map.remove(id);
            drop(map);
            self.inner.len.fetch_sub(1, Ordering::Relaxed);
            return Ok(expired.map_or(Loaded::Missing, Loaded::Expired));
        }
        record.touch(now, idle);
        Ok(Loaded::Active(record.clone()))
    }

    async fn touch(
        &self,
        id: &SessionId,
        expires_at: OffsetDateTime,
    ) -> Result<WriteOutcome, StoreError> {
        let now = OffsetDateTime::now_utc();
        let mut map = write(self.shard(id));
        match map.get_mut(id) {
            Some(record) if !record.is_expired(now) => {
                record.last_seen = now;
                record.expires_at = expires_at.min(record.deadline);
                Ok(WriteOutcome::Done)
            }
            _ => Ok(WriteOutcome::Missing),
        }
    }

    async fn save(&self, record: &Record<T>) -> Result<WriteOutcome, StoreError> {
        let now = OffsetDateTime::now_utc();
        let mut map = write(self.shard(&record.id));
        match map.get_mut(&record.id) {
            Some(existing) if !existing.is_expired(now) => {
                *existing = record.clone();
                Ok(WriteOutcome::Done)
            }
            _ => Ok(WriteOutcome::Missing),
        }
    }

    async fn save_if_revision(
        &self,
        record: &Record<T>,
        expected: u64,
    ) -> Result<WriteOutcome, StoreError> {
        let now = OffsetDateTime::now_utc();
        let mut map = write(self.shard(&record.id));
        match map.get_mut(&record.id) {
            Some(existing) if existing.is_expired(now) => Ok(WriteOutcome::Missing),
            Some(existing) if existing.revision != expected => Ok(WriteOutcome::Conflict),
            Some(existing) => {
                *existing = record.clone();
                Ok(WriteOutcome::Done)
            }
            None => Ok(WriteOutcome::Missing),
        }
    }

    async fn delete(&self, id: &SessionId) -> Result<WriteOutcome, StoreError> {
        let removed = write(self.shard(id)).remove(id);
        match removed {
            Some(record) => {
                self.inner.len.fetch_sub(1, Ordering::Relaxed);
                if record.is_expired(OffsetDateTime::now_utc()) {
                    Ok(WriteOutcome::Missing)
                } else {
                    Ok(WriteOutcome::Done)
                }
            }
            None => Ok(WriteOutcome::Missing),
        }
    }

    async fn regenerate_with_grace(
        &self,
        old: &SessionId,
        record: &Record<T>,
        grace: Duration,
    ) -> Result<WriteOutcome, StoreError> {
        self.move_session(old, record, Some(grace))
    }

    async fn moved_to(&self, id: &SessionId) -> Result<Option<SessionId>, StoreError> {
        let now = OffsetDateTime::now_utc();
        let mut moved = lock_mutex(&self.inner.moved);
        match moved.get(id) {
            Some((new, until)) if *until > now => Ok(Some(*new)),
            Some(_) => {
                moved.remove(id);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn regenerate(
        &self,
        old: &SessionId,
        record: &Record<T>,
    ) -> Result<WriteOutcome, StoreError> {
        self.move_session(old, record, None)
    }

    async fn count(&self) -> Result<usize, StoreError> {
        let now = OffsetDateTime::now_utc();
        Ok(self
            .inner
            .shards
            .iter()
            .map(|shard| read(shard).values().filter(|r| !r.is_expired(now)).count())
            .sum())
    }

    async fn index_owner(
        &self,
        owner: &str,
        id: &SessionId,
        _until: OffsetDateTime,
    ) -> Result<(), StoreError> {
        // Entries of dead sessions are removed by the sweeper and by SessionManager, so this
        // index needs no expiry of its own.
        lock_mutex(self.inner.owner_shard(owner))
            .entry(owner.to_owned())
            .or_default()
            .insert(*id);
        Ok(())
    }

    async fn unindex_owner(&self, owner: &str, id: &SessionId) -> Result<(), StoreError> {
        self.inner.unindex(owner, id);
        Ok(())
    }

    async fn owner_ids(&self, owner: &str) -> Result<Vec<SessionId>, StoreError> {
        Ok(lock_mutex(self.inner.owner_shard(owner))
            .get(owner)
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default())
    }
}

impl<T: Session> MemoryStore<T> {
    /// Moves `old` to `record.id`; with a grace period, also leaves a pointer from `old`.
    fn move_session(
        &self,
        old: &SessionId,
        record: &Record<T>,
        grace: Option<Duration>,
    ) -> Result<WriteOutcome, StoreError> {
        let now = OffsetDateTime::now_utc();
        let old_index = (old.shard_hash() as usize) % SHARDS;
        let new_index = (record.id.shard_hash() as usize) % SHARDS;
        // Both shards stay locked for the whole move, always in index order (no deadlock), so no
        // other request sees the session under both IDs or under neither.
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
        let old_live = first.get(old).is_some_and(|r| !r.is_expired(now));
        if !old_live {
            return Ok(WriteOutcome::Missing);
        }
        let new_map = second.as_deref_mut().unwrap_or(&mut first);
        if new_map.get(&record.id).is_some_and(|r| !r.is_expired(now)) {
            return Ok(WriteOutcome::Collision);
        }
        let replaced = new_map.insert(record.id, record.clone()).is_some();
        first.remove(old);
        if replaced {
            // An expired entry under the new ID was overwritten and the old one removed.
            self.inner.len.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(grace) = grace {
            // Still under the shard locks: no request sees the old ID as neither live nor moved.
            lock_mutex(&self.inner.moved).insert(*old, (record.id, now + grace));
        }
        Ok(WriteOutcome::Done)
    }

    fn remove_if_expired(&self, id: &SessionId, now: OffsetDateTime) -> Loaded<T> {
        let mut map = write(self.shard(id));
        match map.get(id) {
            Some(record) if record.is_expired(now) => {
                let expired = map.remove(id);
                drop(map);
                self.inner.len.fetch_sub(1, Ordering::Relaxed);
                expired.map_or(Loaded::Missing, Loaded::Expired)
            }
            // Refreshed or replaced between the two locks.
            Some(record) => Loaded::Active(record.clone()),
            None => Loaded::Missing,
        }
    }
}
