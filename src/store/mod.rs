//! The storage contract and its backends.

use std::{future::Future, time::Duration};

use time::OffsetDateTime;

use crate::{error::StoreError, id::SessionId, record::Record, session::Session};

pub mod memory;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;

/// What [`Store::load`] found.
#[derive(Debug)]
#[non_exhaustive]
pub enum Loaded<T> {
    /// A live session.
    Active(Record<T>),
    /// The session existed but was past its expiry; the store has removed it. A backend whose
    /// entries vanish by TTL reports most expired sessions as [`Loaded::Missing`] instead.
    Expired(Record<T>),
    /// No session under that ID (never issued, deleted, or evicted by TTL).
    Missing,
}

/// The result of a write that can find the key taken or gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteOutcome {
    /// The write happened.
    Done,
    /// The session to update does not exist (any more): nothing was written.
    Missing,
    /// The new ID is already in use: nothing was written.
    Collision,
    /// The stored session changed since this copy was loaded: nothing was written.
    Conflict,
}

/// A session backend. This is the only trait a backend implements; the layer does the rest.
///
/// Every operation is explicit so that a backend can make each one atomic and cheap:
/// `create` never overwrites, `save` never re-creates, `regenerate` moves a session in one step.
/// Implementations must be safe for concurrent calls.
///
/// Implement the operations as plain `async fn`s (no macro needed); their futures must be `Send`.
/// The layer calls them without boxing, so a backend that answers at once, like
/// [`MemoryStore`](crate::MemoryStore), costs no allocation per call.
///
/// A store that wraps another one, counting the sessions it loads:
///
/// ```
/// use std::{sync::atomic::{AtomicU64, Ordering}, time::Duration};
/// use time::OffsetDateTime;
/// use tower_typed_sessions::{
///     Loaded, MemoryStore, Record, Session, SessionId, Store, StoreError, WriteOutcome,
/// };
///
/// struct Counted<S> { inner: S, loads: AtomicU64 }
///
/// impl<T: Session, S: Store<T>> Store<T> for Counted<S> {
///     async fn load(&self, id: &SessionId) -> Result<Loaded<T>, StoreError> {
///         self.loads.fetch_add(1, Ordering::Relaxed);
///         self.inner.load(id).await
///     }
///     async fn load_and_touch(&self, id: &SessionId, idle: Duration) -> Result<Loaded<T>, StoreError> {
///         self.loads.fetch_add(1, Ordering::Relaxed);
///         self.inner.load_and_touch(id, idle).await
///     }
///     async fn create(&self, r: &Record<T>) -> Result<WriteOutcome, StoreError> { self.inner.create(r).await }
///     async fn touch(&self, id: &SessionId, at: OffsetDateTime) -> Result<WriteOutcome, StoreError> {
///         self.inner.touch(id, at).await
///     }
///     async fn save(&self, r: &Record<T>) -> Result<WriteOutcome, StoreError> { self.inner.save(r).await }
///     async fn save_if_revision(&self, r: &Record<T>, rev: u64) -> Result<WriteOutcome, StoreError> {
///         self.inner.save_if_revision(r, rev).await
///     }
///     async fn delete(&self, id: &SessionId) -> Result<WriteOutcome, StoreError> { self.inner.delete(id).await }
///     async fn regenerate(&self, old: &SessionId, r: &Record<T>) -> Result<WriteOutcome, StoreError> {
///         self.inner.regenerate(old, r).await
///     }
///     async fn regenerate_with_grace(
///         &self, old: &SessionId, r: &Record<T>, grace: Duration,
///     ) -> Result<WriteOutcome, StoreError> {
///         self.inner.regenerate_with_grace(old, r, grace).await
///     }
///     async fn moved_to(&self, id: &SessionId) -> Result<Option<SessionId>, StoreError> {
///         self.inner.moved_to(id).await
///     }
///     async fn count(&self) -> Result<usize, StoreError> { self.inner.count().await }
///     async fn index_owner(&self, owner: &str, id: &SessionId, until: OffsetDateTime) -> Result<(), StoreError> {
///         self.inner.index_owner(owner, id, until).await
///     }
///     async fn unindex_owner(&self, owner: &str, id: &SessionId) -> Result<(), StoreError> {
///         self.inner.unindex_owner(owner, id).await
///     }
///     async fn owner_ids(&self, owner: &str) -> Result<Vec<SessionId>, StoreError> {
///         self.inner.owner_ids(owner).await
///     }
/// }
///
/// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct Cart;
/// # impl Session for Cart {}
/// let store = Counted { inner: MemoryStore::<Cart>::new(), loads: AtomicU64::new(0) };
/// let layer = tower_typed_sessions::SessionLayer::new(store);
/// ```
pub trait Store<T: Session>: Send + Sync + 'static {
    /// Whether sessions in this store should be keyed by a digest of their ID unless the layer is
    /// told otherwise ([`IdsAtRest::StoreDefault`](crate::IdsAtRest::StoreDefault)). Stores
    /// whose contents leave the process (dumps, replicas, backups) should say yes.
    fn hashes_ids_at_rest(&self) -> bool {
        false
    }

    /// Inserts a new session. Returns [`WriteOutcome::Collision`] if the ID is taken, and never
    /// overwrites.
    fn create(
        &self,
        record: &Record<T>,
    ) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send;

    /// Loads a session without changing it.
    fn load(&self, id: &SessionId) -> impl Future<Output = Result<Loaded<T>, StoreError>> + Send;

    /// Loads a session and slides its idle expiry to `now + idle` (capped at the deadline), in one
    /// step where the backend can. The returned record shows the new expiry.
    ///
    /// The default loads, then touches.
    fn load_and_touch(
        &self,
        id: &SessionId,
        idle: Duration,
    ) -> impl Future<Output = Result<Loaded<T>, StoreError>> + Send {
        async move {
            let mut record = match self.load(id).await? {
                Loaded::Active(record) => record,
                other => return Ok(other),
            };
            record.touch(OffsetDateTime::now_utc(), idle);
            match self.touch(id, record.expires_at).await? {
                WriteOutcome::Done => Ok(Loaded::Active(record)),
                _ => Ok(Loaded::Missing),
            }
        }
    }

    /// Sets a session's idle expiry to `expires_at` (capped at its deadline) and its `last_seen`
    /// to now, without rewriting its data. Returns [`WriteOutcome::Missing`] if it is gone.
    fn touch(
        &self,
        id: &SessionId,
        expires_at: OffsetDateTime,
    ) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send;

    /// Replaces an existing session's record. Update-only: if the session was deleted or expired
    /// meanwhile, returns [`WriteOutcome::Missing`] and writes nothing.
    fn save(
        &self,
        record: &Record<T>,
    ) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send;

    /// Like [`Store::save`], but only if the stored record is still at revision `expected`
    /// (optimistic concurrency): otherwise returns [`WriteOutcome::Conflict`] and writes nothing.
    fn save_if_revision(
        &self,
        record: &Record<T>,
        expected: u64,
    ) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send;

    /// Deletes a session. Returns [`WriteOutcome::Missing`] if there was none.
    fn delete(
        &self,
        id: &SessionId,
    ) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send;

    /// Moves the session `old` to `record.id` with `record` as its content, in one step: the old
    /// ID is dead afterwards and there is no moment at which neither exists. Returns
    /// [`WriteOutcome::Missing`] if `old` is gone (nothing is created) and
    /// [`WriteOutcome::Collision`] if the new ID is taken (nothing changes).
    fn regenerate(
        &self,
        old: &SessionId,
        record: &Record<T>,
    ) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send;

    /// Like [`Store::regenerate`], and for `grace` afterwards [`Store::moved_to`] of `old`
    /// answers `record.id`, so that requests already in flight with the old cookie during a login
    /// are served the new session. The old session itself is gone at once, as with `regenerate`.
    fn regenerate_with_grace(
        &self,
        old: &SessionId,
        record: &Record<T>,
        grace: Duration,
    ) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send;

    /// Where the session `id` moved, if it was regenerated with a grace period that has not run
    /// out yet.
    fn moved_to(
        &self,
        id: &SessionId,
    ) -> impl Future<Output = Result<Option<SessionId>, StoreError>> + Send;

    /// How many live sessions the store holds.
    fn count(&self) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// Adds `id` to the index of `owner`'s sessions, keeping the index at least until `until`
    /// (the session's absolute deadline, past which it cannot live). The layer calls it before
    /// the session is written, so a failure never leaves a live session out of the index.
    fn index_owner(
        &self,
        owner: &str,
        id: &SessionId,
        until: OffsetDateTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes `id` from `owner`'s index (no error if it is not there).
    fn unindex_owner(
        &self,
        owner: &str,
        id: &SessionId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The IDs in `owner`'s index. It may hold IDs of sessions that have since expired, moved or
    /// changed owner: [`SessionManager`](crate::SessionManager) checks each one and cleans up.
    fn owner_ids(
        &self,
        owner: &str,
    ) -> impl Future<Output = Result<Vec<SessionId>, StoreError>> + Send;
}
