//! Several sessions per user: list them and revoke them ("log out my other devices").

use std::{fmt, sync::Arc};

use time::OffsetDateTime;

use crate::{
    engine::Engine,
    error::SessionError,
    id::{SessionKey, SessionTag},
    session::Session,
    store::Store,
};

/// One of a user's live sessions, as [`SessionManager::list`] shows it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SessionInfo<T> {
    /// The session's public tag: show it, and pass it back to [`SessionManager::revoke`].
    pub tag: SessionTag,
    /// When the session was created (a login keeps it: regenerating does not reset it).
    pub created_at: OffsetDateTime,
    /// When the session was last written.
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
/// Revoking ends a session the way a logout does: it is deleted wherever it moved (a session
/// regenerated while the revoke runs is caught under its new ID), the `deleted` event fires (its
/// state change says [`Revoked`](crate::SessionState::Revoked)),
/// and its next request is anonymous. A request of that session already in flight cannot bring
/// it back. It needs a store with an owner index ([`Store::supports_owner_index`]); on others
/// every method answers [`StoreError::Unsupported`](crate::StoreError::Unsupported).
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
    engine: Arc<Engine<T, St>>,
}

impl<T, St> Clone for SessionManager<T, St> {
    fn clone(&self) -> Self {
        Self {
            engine: Arc::clone(&self.engine),
        }
    }
}

impl<T, St> fmt::Debug for SessionManager<T, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionManager").finish_non_exhaustive()
    }
}

impl<T: Session, St: Store<T>> SessionManager<T, St> {
    pub(crate) fn new(engine: Arc<Engine<T, St>>) -> Self {
        Self { engine }
    }

    /// The live sessions of `owner`, most recently written first. Index entries of sessions that
    /// expired, moved to a new ID or changed owner are removed on the way and never listed.
    pub async fn list(&self, owner: &str) -> Result<Vec<SessionInfo<T>>, SessionError> {
        let mut sessions: Vec<SessionInfo<T>> = self
            .engine
            .live_sessions(owner)
            .await?
            .into_iter()
            .map(|indexed| indexed.record)
            .map(|record| SessionInfo {
                tag: record.key.tag(),
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
        let tagged = |key: &SessionKey| key.tag() == *tag;
        Ok(self
            .engine
            .revoke(owner, |indexed, now| tagged(indexed) || tagged(now))
            .await?
            > 0)
    }

    /// Revokes every session of `owner` except `keep` (typically the current request's,
    /// [`SessionHandle::id`](crate::SessionHandle::id)). Returns how many were revoked.
    pub async fn revoke_others(
        &self,
        owner: &str,
        keep: &SessionKey,
    ) -> Result<usize, SessionError> {
        self.engine
            .revoke(owner, |indexed, now| indexed != keep && now != keep)
            .await
    }

    /// Revokes every session of `owner` (after a password change, say), including sessions
    /// regenerated while it runs. Returns how many.
    pub async fn revoke_all(&self, owner: &str) -> Result<usize, SessionError> {
        self.engine.revoke(owner, |_, _| true).await
    }
}
