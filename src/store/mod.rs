//! The storage contract and its backends.
//!
//! A backend implements five operations ([`Store`]); the engine builds every request's write out
//! of them, so the rules that keep concurrent requests correct are written once, in the engine,
//! and checked for any backend by the conformance suite (`testing` feature).
//!
//! # The write discipline
//! - Every record carries a revision. Every write states the revision its copy was read at
//!   ([`Expect::Revision`] in optimistic mode, [`Expect::Any`] otherwise). A successful write
//!   at an expected revision stores that revision plus one; a last-write-wins write stores the
//!   stored revision plus one, or, in a store that writes without reading, the revision its
//!   copy was read at plus one (which two such writes can share).
//! - [`Store::regenerate`] moves a session to a new key and leaves a forwarding pointer under the
//!   old one ([`Loaded::Moved`]) until [`Forward::until`]. A [`Store::save`] or
//!   [`Store::delete`] that reaches a pointer answers [`WriteOutcome::Moved`]. The engine follows
//!   it for a delete, so a logout or revoke by a request that loaded the old key still ends the
//!   session; it refuses a save or a regenerate from such a copy (409), so a request that started
//!   before a login never undoes what the login changed.
//! - Each operation is atomic on one session's keys, so no operation needs two sessions at
//!   once: the only exception, regenerate, may be done in steps where the two sessions live on
//!   different servers (see [`Store::regenerate`]).

use std::{future::Future, time::Duration};

use time::OffsetDateTime;

use crate::{error::StoreError, id::SessionKey, record::Record, session::Session};

pub mod memory;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "sqlite"))))]
pub mod sql;
mod sweeper;

/// What [`Store::load`] found.
#[derive(Debug)]
#[non_exhaustive]
pub enum Loaded<T> {
    /// A live session.
    Active(Record<T>),
    /// The session existed but was past its idle expiry or its deadline. The store has removed
    /// it (or will). A store must still tell an expired session from an unknown one for a while
    /// after it expired (the Redis store keeps an expired record for a configurable retention),
    /// so that the `expired` event fires instead of `rejected`.
    Expired(Record<T>),
    /// The session was regenerated: this key forwards to its new key.
    Moved(Forward),
    /// No session under that key (never issued, deleted, or gone past any retention).
    Missing,
}

/// A forwarding pointer left by [`Store::regenerate`] under the old key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Forward {
    /// The key the session moved to.
    pub to: SessionKey,
    /// Until when a request that arrives with the old cookie may read the moved session (the
    /// layer's regenerate grace window); `None` without a grace window.
    pub grace_until: Option<OffsetDateTime>,
    /// Until when the pointer exists: writes through the old key are forwarded until then.
    pub until: OffsetDateTime,
}

impl Forward {
    /// A pointer to `to`, readable through the old cookie until `grace_until`, and kept until
    /// `until`.
    pub fn new(to: SessionKey, grace_until: Option<OffsetDateTime>, until: OffsetDateTime) -> Self {
        Self {
            to,
            grace_until,
            until,
        }
    }
}

/// How [`Store::load`] treats the session it finds.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct LoadOptions {
    /// The layer's clock for this request: expiry is judged against it.
    pub now: OffsetDateTime,
    /// Slide the idle expiry to `now + idle` (never past the deadline) in the same step.
    pub slide: Option<Duration>,
    /// Take the pending flash messages in the same step: the returned record carries them and
    /// the stored one no longer does, so that of several concurrent loads only one sees them.
    pub take_flash: bool,
}

impl LoadOptions {
    /// A load at `now` that neither slides nor takes the flash.
    pub fn at(now: OffsetDateTime) -> Self {
        Self {
            now,
            slide: None,
            take_flash: false,
        }
    }

    /// Also slides the idle expiry to `now + idle`.
    #[must_use]
    pub fn sliding(mut self, idle: Option<Duration>) -> Self {
        self.slide = idle;
        self
    }

    /// Also takes the pending flash messages.
    #[must_use]
    pub fn taking_flash(mut self, take: bool) -> Self {
        self.take_flash = take;
        self
    }
}

/// What a write expects of the stored record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Expect {
    /// Any live record (last write wins).
    Any,
    /// A live record still at this revision (optimistic concurrency): otherwise
    /// [`WriteOutcome::Conflict`].
    Revision(u64),
}

/// The result of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteOutcome {
    /// The write happened.
    Done,
    /// No live session under the key (deleted, expired, never there): nothing was written.
    Missing,
    /// The new key is already in use: nothing was written.
    Collision,
    /// The stored record is at another revision than expected: nothing was written.
    Conflict,
    /// The key holds a forwarding pointer to this key: nothing was written.
    Moved(SessionKey),
}

/// A session backend: five operations, each atomic on its key, and optional capabilities with
/// defaults that say "unsupported".
///
/// | operation | must |
/// |---|---|
/// | [`load`](Store::load) | report `Active`, `Expired`, `Moved` or `Missing`; slide and take the flash in the same step when asked |
/// | [`create`](Store::create) | never overwrite anything under the key, a pointer included |
/// | [`save`](Store::save) | update only a live record, checking [`Expect`]; answer `Moved` at a pointer |
/// | [`regenerate`](Store::regenerate) | move a live record and leave a pointer, checking [`Expect`] |
/// | [`delete`](Store::delete) | remove a live record, checking [`Expect`]; answer `Moved` at a pointer |
///
/// Implement the operations as plain `async fn`s; their futures must be `Send`. The layer calls
/// them without boxing, so a backend that answers at once costs no allocation per call.
/// `tower_typed_sessions::testing` (feature `testing`) runs the whole contract, races included,
/// against any store.
///
/// A store that wraps another one, counting the sessions it loads:
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use tower_typed_sessions::{
///     store::{Expect, Forward, LoadOptions},
///     Loaded, MemoryStore, Record, Session, SessionKey, Store, StoreError, WriteOutcome,
/// };
///
/// struct Counted<S> { inner: S, loads: AtomicU64 }
///
/// impl<T: Session, S: Store<T>> Store<T> for Counted<S> {
///     async fn load(&self, key: &SessionKey, options: LoadOptions) -> Result<Loaded<T>, StoreError> {
///         self.loads.fetch_add(1, Ordering::Relaxed);
///         self.inner.load(key, options).await
///     }
///     async fn create(&self, record: &Record<T>) -> Result<WriteOutcome, StoreError> {
///         self.inner.create(record).await
///     }
///     async fn save(&self, record: &Record<T>, expect: Expect) -> Result<WriteOutcome, StoreError> {
///         self.inner.save(record, expect).await
///     }
///     async fn regenerate(
///         &self, old: &SessionKey, record: &Record<T>, expect: Expect, forward: Forward,
///     ) -> Result<WriteOutcome, StoreError> {
///         self.inner.regenerate(old, record, expect, forward).await
///     }
///     async fn delete(&self, key: &SessionKey, expect: Expect) -> Result<WriteOutcome, StoreError> {
///         self.inner.delete(key, expect).await
///     }
/// }
///
/// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct Cart;
/// # impl Session for Cart {}
/// let store = Counted { inner: MemoryStore::<Cart>::new(), loads: AtomicU64::new(0) };
/// let layer = tower_typed_sessions::SessionLayer::new(store);
/// ```
pub trait Store<T: Session>: Send + Sync + 'static {
    /// Loads the session under `key`, judging expiry at `options.now`; slides its idle expiry
    /// when `options` asks, and takes its pending flash atomically (of several loads at once,
    /// one gets it), in the same step or, as the Redis store does when a flash waits, in a
    /// second one. An `Active` record shows the slid expiry and the taken flash. A store may
    /// skip a slide that would move the expiry by less than a second; the expiry it reports
    /// never passes the deadline.
    fn load(
        &self,
        key: &SessionKey,
        options: LoadOptions,
    ) -> impl Future<Output = Result<Loaded<T>, StoreError>> + Send;

    /// Inserts a new session under `record.key`. Answers [`WriteOutcome::Collision`] if anything
    /// is stored under the key (a live or expired record, or a pointer), and never overwrites.
    fn create(
        &self,
        record: &Record<T>,
    ) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send;

    /// Replaces the live record under `record.key` (its data; its expiry only forward: a store
    /// whose load slides the expiry may leave it where the load put it, which is the expiry the
    /// engine saves), if `expect` holds. A record with a flash replaces the pending one; a record
    /// without one leaves the pending flash as it is (another request may have set it). Under
    /// [`Expect::Revision`] the stored revision becomes one higher than it was; under
    /// [`Expect::Any`] it becomes that, or `record.revision` (which the engine sets to the
    /// revision it read plus one) for a store that writes without reading. Answers
    /// [`WriteOutcome::Missing`] without a live record (never re-creates one),
    /// [`WriteOutcome::Conflict`] if the revision differs, and [`WriteOutcome::Moved`] if the key
    /// holds a pointer.
    fn save(
        &self,
        record: &Record<T>,
        expect: Expect,
    ) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send;

    /// Moves the live session under `old` to `record.key`, with `record` as its content and the
    /// old revision plus one (under [`Expect::Any`], as for `save`, a store may take
    /// `record.revision` instead), and leaves `forward` under `old` (pointing to `record.key`).
    /// A pending flash moves along unless `record` has one of its own.
    ///
    /// Answers [`WriteOutcome::Missing`] if `old` holds no live record,
    /// [`WriteOutcome::Moved`] if it holds a pointer, [`WriteOutcome::Conflict`] if `expect`
    /// does not hold, and [`WriteOutcome::Collision`] if `record.key` is taken; in each of those
    /// cases nothing changes. Where both keys can change in one step they must. Otherwise
    /// (different servers) create the new record first, then turn `old` into the pointer only if
    /// it is still live and `expect` holds, and remove the new record if not: there is never a
    /// moment when the session exists under neither key, and never one after the operation
    /// answered when it exists under both.
    fn regenerate(
        &self,
        old: &SessionKey,
        record: &Record<T>,
        expect: Expect,
        forward: Forward,
    ) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send;

    /// Deletes the live record under `key` if `expect` holds. Answers [`WriteOutcome::Missing`]
    /// if there was none (an expired record is removed and reported missing),
    /// [`WriteOutcome::Conflict`] if the revision differs, and [`WriteOutcome::Moved`] if the key
    /// holds a pointer, which stays. A logout deletes with [`Expect::Any`]: it ends the session
    /// whatever changed it meanwhile.
    fn delete(
        &self,
        key: &SessionKey,
        expect: Expect,
    ) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send;

    /// How much further than asked a sliding load may move the expiry (default zero). A store
    /// that refreshes expiries at most once per interval (a cache in front of a server) slides
    /// by that interval more, so that a session read within its idle timeout never expires
    /// between refreshes; it reports the expiry it set, and the layer enforces it.
    fn slide_headroom(&self) -> Duration {
        Duration::ZERO
    }

    /// Whether the store's contents never leave this process. Keys are the cookie's ID hashed at
    /// rest unless this says yes (or the layer says otherwise with
    /// [`IdsAtRest`](crate::IdsAtRest)): a dump, replica or backup must not hold live cookies.
    /// Default: no.
    fn contents_stay_in_process(&self) -> bool {
        false
    }

    /// How many live sessions the store holds. Default: [`StoreError::Unsupported`].
    fn count(&self) -> impl Future<Output = Result<usize, StoreError>> + Send {
        async { Err(StoreError::Unsupported("count")) }
    }

    /// Whether the store keeps an owner index ([`Store::index_owner`] and the two after it).
    /// Without one, the layer keeps no index and
    /// [`SessionManager`](crate::SessionManager) answers [`StoreError::Unsupported`].
    /// Default: no.
    fn supports_owner_index(&self) -> bool {
        false
    }

    /// Adds `key` to the index of `owner`'s sessions, keeping the entry at least until `until`
    /// (the session's deadline). The layer calls it before the session is written, so a failure
    /// never leaves a live session out of the index.
    fn index_owner(
        &self,
        owner: &str,
        key: &SessionKey,
        until: OffsetDateTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let _ = (owner, key, until);
        async { Err(StoreError::Unsupported("owner index")) }
    }

    /// Removes `key` from `owner`'s index (no error if it is not there).
    fn unindex_owner(
        &self,
        owner: &str,
        key: &SessionKey,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let _ = (owner, key);
        async { Err(StoreError::Unsupported("owner index")) }
    }

    /// The keys in `owner`'s index. It may hold keys of sessions that have since expired, moved
    /// or changed owner: [`SessionManager`](crate::SessionManager) checks each and cleans up.
    fn owner_keys(
        &self,
        owner: &str,
    ) -> impl Future<Output = Result<Vec<SessionKey>, StoreError>> + Send {
        let _ = owner;
        async { Err(StoreError::Unsupported("owner index")) }
    }
}
