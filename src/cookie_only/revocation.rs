//! The optional revocation list of a cookie-only layer: the IDs of sealed sessions that ended
//! (logout, the old ID of a regenerate), kept in any [`Store`] until the session's deadline, so
//! that a copy of their cookie is refused.

use std::{future::Future, pin::Pin, time::Duration};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{
    error::StoreError,
    id::SessionKey,
    record::Record,
    session::Session,
    store::{LoadOptions, Loaded, Store, WriteOutcome},
    telemetry::Measured,
};

/// The entry a cookie-only layer's revocation list keeps for a session that ended: the session
/// type of the store given to
/// [`SessionLayer::with_revocation_list`](crate::SessionLayer::with_revocation_list), as in
/// `MemoryStore::<Revoked>::new()` or `RedisStore::<Revoked>::new(..)`.
///
/// ```
/// use tower_typed_sessions::{Key, MemoryStore, Revoked, Session, SessionLayer};
/// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct Cart;
/// # impl Session for Cart {}
/// let layer = SessionLayer::<Cart, _>::cookie_only([Key::from_bytes(&[7u8; 32])?])?
///     .with_revocation_list(MemoryStore::<Revoked>::new());
/// # Ok::<_, tower_typed_sessions::ConfigError>(())
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Revoked {
    /// Where the session went, when it ended by moving to a new ID (a regenerate): a logout that
    /// finds the old ID already revoked follows it and revokes the new one too.
    #[serde(rename = "to", default, skip_serializing_if = "Option::is_none")]
    successor: Option<Successor>,
    /// When the ID was revoked.
    #[serde(
        rename = "at",
        with = "crate::record::unix_millis",
        default = "unix_epoch"
    )]
    revoked_at: OffsetDateTime,
}

impl Default for Revoked {
    fn default() -> Self {
        Self {
            successor: None,
            revoked_at: unix_epoch(),
        }
    }
}

fn unix_epoch() -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH
}

/// The new ID of a regenerated session, and its deadline: how long a revocation of it must last.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Successor {
    key: SessionKey,
    #[serde(with = "crate::record::unix_millis")]
    until: OffsetDateTime,
}

impl Revoked {
    /// The key the session moved to, if it ended by a regenerate.
    pub fn successor(&self) -> Option<&SessionKey> {
        self.successor.as_ref().map(|successor| &successor.key)
    }

    /// When the ID was revoked.
    pub fn revoked_at(&self) -> OffsetDateTime {
        self.revoked_at
    }
}

impl Session for Revoked {}

type BoxFuture<'a, R> = Pin<Box<dyn Future<Output = Result<R, StoreError>> + Send + 'a>>;

/// A `Store<Revoked>` with its type erased, so that the layer's type does not name it.
trait Entries: Send + Sync + 'static {
    fn contents_stay_in_process(&self) -> bool;
    fn find<'a>(
        &'a self,
        key: &'a SessionKey,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, Option<Revoked>>;
    fn insert<'a>(&'a self, entry: &'a Record<Revoked>) -> BoxFuture<'a, bool>;
}

impl<St: Store<Revoked>> Entries for Measured<St> {
    fn contents_stay_in_process(&self) -> bool {
        self.inner().contents_stay_in_process()
    }

    fn find<'a>(
        &'a self,
        key: &'a SessionKey,
        now: OffsetDateTime,
    ) -> BoxFuture<'a, Option<Revoked>> {
        Box::pin(async move {
            Ok(match self.load(key, LoadOptions::at(now)).await? {
                Loaded::Active(entry) if !entry.is_expired(now) => Some(entry.data),
                // Nothing but entries is written to the list; a pointer would be a store bug,
                // read as revoked (fail closed).
                Loaded::Moved(_) => Some(Revoked::default()),
                _ => None,
            })
        })
    }

    fn insert<'a>(&'a self, entry: &'a Record<Revoked>) -> BoxFuture<'a, bool> {
        Box::pin(async move { Ok(self.create(entry).await? == WriteOutcome::Done) })
    }
}

/// What revoking an ID found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Revocation {
    /// This call revoked it: the session was live until now.
    First,
    /// It had ended already (logout, revoke, or its entry expired with the session).
    AlreadyEnded,
    /// It had already moved to the given key, which lives until the given deadline (another
    /// request's regenerate).
    AlreadyMoved(SessionKey, OffsetDateTime),
}

/// How many regenerates a logout follows before it gives up (as for stores' pointers).
const MAX_SUCCESSORS: usize = 16;

/// The revocation list as the engine uses it.
pub(crate) struct RevocationList {
    entries: Box<dyn Entries>,
}

impl std::fmt::Debug for RevocationList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationList").finish_non_exhaustive()
    }
}

impl RevocationList {
    pub(crate) fn new<St: Store<Revoked>>(store: St) -> Self {
        Self {
            entries: Box::new(Measured::new(store)),
        }
    }

    pub(crate) fn contents_stay_in_process(&self) -> bool {
        self.entries.contents_stay_in_process()
    }

    /// The entry under `key`, if the session it names was revoked.
    pub(crate) async fn find(
        &self,
        key: &SessionKey,
        now: OffsetDateTime,
    ) -> Result<Option<Revoked>, StoreError> {
        self.entries.find(key, now).await
    }

    /// Revokes `key` until `until` (no cookie of the session lives longer), recording where it
    /// moved if it did (`moved_to`, and that session's deadline). The store's create is the
    /// test-and-set: of two requests revoking one ID (a logout and a login, two logins), exactly
    /// one is first.
    pub(crate) async fn revoke(
        &self,
        key: SessionKey,
        until: OffsetDateTime,
        moved_to: Option<(SessionKey, OffsetDateTime)>,
        now: OffsetDateTime,
    ) -> Result<Revocation, StoreError> {
        let successor = moved_to.map(|(key, until)| Successor { key, until });
        let Ok(keep) = Duration::try_from(until - now) else {
            // Past its deadline every copy of the cookie is dead already.
            return Ok(Revocation::First);
        };
        let keep = keep.max(Duration::from_millis(1));
        let revoked = Revoked {
            successor,
            revoked_at: now,
        };
        let mut entry = Record::new(key, revoked, now, keep, keep);
        entry.has_data = true;
        if self.entries.insert(&entry).await? {
            return Ok(Revocation::First);
        }
        Ok(match self.find(&key, now).await? {
            Some(Revoked {
                successor: Some(moved),
                ..
            }) => Revocation::AlreadyMoved(moved.key, moved.until),
            _ => Revocation::AlreadyEnded,
        })
    }

    /// Ends the session `key` names (alive until `until`) wherever it moved: a logout racing a
    /// login ends the session under its new ID too. Returns whether it was live, and the key it
    /// ended under.
    pub(crate) async fn end(
        &self,
        mut key: SessionKey,
        mut until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(bool, SessionKey), StoreError> {
        for _ in 0..MAX_SUCCESSORS {
            match self.revoke(key, until, None, now).await? {
                Revocation::First => return Ok((true, key)),
                Revocation::AlreadyEnded => return Ok((false, key)),
                Revocation::AlreadyMoved(moved, moved_until) => (key, until) = (moved, moved_until),
            }
        }
        Err(StoreError::TooManyForwards)
    }
}
