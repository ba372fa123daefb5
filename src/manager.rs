//! Several sessions per user: list them and revoke them ("log out my other devices").

use std::{fmt, sync::Arc};

use time::OffsetDateTime;

use crate::{
    error::{SessionError, StoreOperation},
    id::{SessionId, SessionTag},
    layer::Shared,
    record::Record,
    session::Session,
    store::{Loaded, Store, WriteOutcome},
};

/// One of a user's live sessions, as [`SessionManager::list`] shows it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SessionInfo<T> {
    /// The session's public tag: show it, and pass it back to [`SessionManager::revoke`].
    pub tag: SessionTag,
    /// When the session was created (a login keeps it: regenerating does not reset it).
    pub created_at: OffsetDateTime,
    /// When the session was last used.
    pub last_seen: OffsetDateTime,
    /// When it expires unless used again.
    pub expires_at: OffsetDateTime,
    /// The session's data, including whatever the application records for display (a user
    /// agent, a place, a device name).
    pub data: T,
}

/// Lists and revokes the sessions of one owner (see [`Session::owner`]). Get one from
/// [`SessionLayer::manager`](crate::SessionLayer::manager); it is cheap to clone, so keep it in
/// your application state.
///
/// Revoking deletes the session from the store and fires the `deleted` callback: its next
/// request is anonymous. A request of that session already in flight cannot bring it back.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use tower_typed_sessions::{MemoryStore, Session, SessionLayer};
///
/// #[derive(Clone, Default, Serialize, Deserialize)]
/// struct Account { user: Option<String> }
/// impl Session for Account {
///     fn owner(&self) -> Option<String> { self.user.clone() }
/// }
///
/// # #[tokio::main] async fn main() -> Result<(), tower_typed_sessions::SessionError> {
/// let layer = SessionLayer::new(MemoryStore::<Account>::new());
/// let manager = layer.manager();
/// // After a password change: log alice out everywhere.
/// let revoked = manager.revoke_all("alice").await?;
/// assert_eq!(revoked, 0);
/// # Ok(()) }
/// ```
pub struct SessionManager<T, St> {
    shared: Arc<Shared<T, St>>,
}

impl<T, St> Clone for SessionManager<T, St> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T, St> fmt::Debug for SessionManager<T, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionManager").finish_non_exhaustive()
    }
}

fn index_error(source: crate::StoreError) -> SessionError {
    SessionError::Store {
        operation: StoreOperation::Index,
        source,
    }
}

impl<T: Session, St: Store<T>> SessionManager<T, St> {
    pub(crate) fn new(shared: Arc<Shared<T, St>>) -> Self {
        Self { shared }
    }

    /// The live sessions of `owner`, most recently used first. Index entries of sessions that
    /// expired, moved to a new ID or changed owner are removed on the way and never listed.
    pub async fn list(&self, owner: &str) -> Result<Vec<SessionInfo<T>>, SessionError> {
        let mut sessions: Vec<SessionInfo<T>> = self
            .live_records(owner)
            .await?
            .into_iter()
            .map(|record| SessionInfo {
                tag: record.id.tag(),
                created_at: record.created_at,
                last_seen: record.last_seen,
                expires_at: record.effective_expiry(),
                data: record.data,
            })
            .collect();
        sessions.sort_by_key(|info| std::cmp::Reverse(info.last_seen));
        Ok(sessions)
    }

    /// Revokes the session of `owner` tagged `tag`. Returns whether there was one.
    pub async fn revoke(&self, owner: &str, tag: &SessionTag) -> Result<bool, SessionError> {
        Ok(self.revoke_where(owner, |id| id.tag() == *tag).await? > 0)
    }

    /// Revokes every session of `owner` except `keep` (typically the current request's,
    /// [`SessionHandle::id`](crate::SessionHandle::id)). Returns how many were revoked.
    pub async fn revoke_others(
        &self,
        owner: &str,
        keep: &SessionId,
    ) -> Result<usize, SessionError> {
        self.revoke_where(owner, |id| id != keep).await
    }

    /// Revokes every session of `owner` (after a password change, say). Returns how many.
    pub async fn revoke_all(&self, owner: &str) -> Result<usize, SessionError> {
        self.revoke_where(owner, |_| true).await
    }

    async fn revoke_where(
        &self,
        owner: &str,
        select: impl Fn(&SessionId) -> bool,
    ) -> Result<usize, SessionError> {
        let mut revoked = 0;
        for record in self.live_records(owner).await? {
            if !select(&record.id) {
                continue;
            }
            let outcome = self
                .shared
                .store
                .delete(&record.id)
                .await
                .map_err(|source| SessionError::Store {
                    operation: StoreOperation::Delete,
                    source,
                })?;
            self.unindex(owner, &record.id).await;
            if outcome == WriteOutcome::Done {
                self.shared
                    .settings
                    .callbacks
                    .deleted(&record.id, &record.data);
                revoked += 1;
            }
        }
        Ok(revoked)
    }

    /// The indexed sessions of `owner` that are alive and still theirs; the rest is unindexed.
    async fn live_records(&self, owner: &str) -> Result<Vec<Record<T>>, SessionError> {
        let store = &self.shared.store;
        let ids = store.owner_ids(owner).await.map_err(index_error)?;
        let now = OffsetDateTime::now_utc();
        let mut live = Vec::with_capacity(ids.len());
        for id in ids {
            match store.load(&id).await {
                Ok(Loaded::Active(record))
                    if !record.is_expired(now) && record.data.owner().as_deref() == Some(owner) =>
                {
                    live.push(record);
                }
                Ok(_) => self.unindex(owner, &id).await,
                Err(error) if error.is_decode() => self.unindex(owner, &id).await,
                Err(source) => {
                    return Err(SessionError::Store {
                        operation: StoreOperation::Load,
                        source,
                    })
                }
            }
        }
        Ok(live)
    }

    async fn unindex(&self, owner: &str, id: &SessionId) {
        if let Err(error) = self.shared.store.unindex_owner(owner, id).await {
            tracing::warn!(session = %id, %error, "could not remove a stale owner index entry");
        }
    }
}
