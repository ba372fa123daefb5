//! The handle a handler uses to read and change its session.

use std::{
    fmt,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use time::OffsetDateTime;

use crate::{
    flash::{Flash, FlashMessage},
    id::SessionId,
    record::Record,
    session::Session,
};

/// The current request's session, typed as the application's `T`.
///
/// The layer puts one into each request's extensions; with the `axum` feature it is also an
/// extractor (`SessionHandle<T>` or `Option<SessionHandle<T>>`). Clones share the same session.
///
/// Reads are cheap (a lock, no store access). Writes only mark the session changed: the layer
/// persists it once, after the handler returns, and only if something changed. A request that
/// only reads stores nothing and sets no cookie.
///
/// # Behavior
/// Changes made after the response has left the layer cannot be saved: they are ignored, with a
/// warning in the `tracing` log.
///
/// ```
/// use axum::{routing::get, Router};
/// use serde::{Deserialize, Serialize};
/// use tower_typed_sessions::{MemoryStore, Session, SessionHandle, SessionLayer};
///
/// #[derive(Clone, Default, Serialize, Deserialize)]
/// struct Visits { count: u32 }
/// impl Session for Visits {}
///
/// async fn count(session: SessionHandle<Visits>) -> String {
///     let n = session.update(|v| { v.count += 1; v.count });
///     format!("visit {n}")
/// }
///
/// let app: Router = Router::new()
///     .route("/", get(count))
///     .layer(SessionLayer::new(MemoryStore::<Visits>::new()));
/// ```
pub struct SessionHandle<T> {
    state: Arc<Mutex<State<T>>>,
}

impl<T> Clone for SessionHandle<T> {
    fn clone(&self) -> Self {
        Self {
            state: Arc::clone(&self.state),
        }
    }
}

impl<T> SessionHandle<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic in an application closure leaves the data as the closure left it, which is no
        // worse than any other write: keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<T> fmt::Debug for SessionHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("SessionHandle")
            .field("id", &state.existing.as_ref().map(|e| e.id))
            .field("changed", &state.changed)
            .field("regenerate", &state.regenerate)
            .field("delete", &state.deleted.is_some())
            .finish_non_exhaustive()
    }
}

/// What the layer knows of a session it loaded from the store.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Existing {
    /// The ID the store keeps the session under (a digest of `cookie_id` when IDs are hashed at
    /// rest). Everything past the cookie boundary uses it.
    pub(crate) id: SessionId,
    /// The ID the client's cookie carries; `None` when the request reached the session through a
    /// regenerate grace pointer (its cookie is the old one, which must never be re-sent).
    pub(crate) cookie_id: Option<SessionId>,
    /// The cookie was signed with an older key: re-issue it under the current one.
    pub(crate) resign: bool,
    pub(crate) created_at: OffsetDateTime,
    pub(crate) expires_at: OffsetDateTime,
    pub(crate) deadline: OffsetDateTime,
    /// The revision the record had when loaded.
    pub(crate) revision: u64,
    /// The load slid the expiry.
    pub(crate) slid: bool,
}

impl Existing {
    pub(crate) fn effective_expiry(&self) -> OffsetDateTime {
        self.expires_at.min(self.deadline)
    }
}

pub(crate) struct State<T> {
    pub(crate) data: T,
    pub(crate) existing: Option<Existing>,
    /// The handler wrote the data.
    pub(crate) changed: bool,
    /// The session holds application data (not only a flash).
    pub(crate) has_data: bool,
    /// Messages from the previous request, visible now.
    pub(crate) incoming_flash: Flash,
    /// Messages for the next request.
    pub(crate) outgoing_flash: Flash,
    /// Messages for this request only; never stored.
    pub(crate) now_flash: Flash,
    /// The stored record held flash messages that this request consumed, so it must be rewritten.
    pub(crate) flash_consumed: bool,
    pub(crate) regenerate: bool,
    /// Set by `delete`: the data the deleted session held, for the `deleted` callback.
    pub(crate) deleted: Option<T>,
    /// [`Session::owner`] of the data as loaded, to move the owner index when it changes.
    /// Taken just before the handler's first write (`None` until then: the data is still as
    /// loaded), so that a request that only reads never calls `owner()`.
    pub(crate) loaded_owner: Option<Option<String>>,
    /// The layer has taken the state to persist it.
    pub(crate) closed: bool,
}

impl<T: Session> State<T> {
    pub(crate) fn fresh() -> Self {
        Self {
            data: T::default(),
            existing: None,
            changed: false,
            has_data: false,
            incoming_flash: Flash::default(),
            outgoing_flash: Flash::default(),
            now_flash: Flash::default(),
            flash_consumed: false,
            regenerate: false,
            deleted: None,
            // A fresh session has no index entry, whatever its default data would say.
            loaded_owner: Some(None),
            closed: false,
        }
    }

    /// The state for a loaded record, with its flash rotated: what was pending is visible now and
    /// will not be stored again.
    pub(crate) fn loaded(
        record: Record<T>,
        slid: bool,
        cookie_id: Option<SessionId>,
        resign: bool,
    ) -> Self {
        let flash_consumed = !record.flash.is_empty();
        Self {
            existing: Some(Existing {
                id: record.id,
                cookie_id,
                resign,
                created_at: record.created_at,
                expires_at: record.expires_at,
                deadline: record.deadline,
                revision: record.revision,
                slid,
            }),
            has_data: record.has_data,
            loaded_owner: None,
            incoming_flash: record.flash,
            flash_consumed,
            data: record.data,
            ..Self::fresh()
        }
    }
}

impl<T: Session> State<T> {
    /// Records the owner of the data as loaded; call before changing the data.
    fn capture_owner(&mut self) {
        if self.loaded_owner.is_none() {
            self.loaded_owner = Some(self.data.owner());
        }
    }

    /// The owner of the data as loaded.
    pub(crate) fn owner_as_loaded(&self) -> Option<String> {
        match &self.loaded_owner {
            Some(owner) => owner.clone(),
            // Not captured: nothing was written, so the data is as loaded.
            None => self.data.owner(),
        }
    }
}

impl<T: Session> SessionHandle<T> {
    pub(crate) fn new(state: State<T>) -> Self {
        Self {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// Takes the state out for persisting; later writes through other clones are ignored.
    pub(crate) fn close(&self) -> State<T> {
        let mut closed = State::fresh();
        closed.closed = true;
        std::mem::replace(&mut *self.lock(), closed)
    }

    fn write(&self) -> Option<MutexGuard<'_, State<T>>> {
        let state = self.lock();
        if state.closed {
            tracing::warn!("session changed after the response was sent; the change is lost");
            return None;
        }
        Some(state)
    }

    /// A copy of the session data.
    pub fn get(&self) -> T {
        self.lock().data.clone()
    }

    /// Reads the data without copying it.
    pub fn read<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        f(&self.lock().data)
    }

    /// Changes the data and marks the session changed, so the layer saves it (creating the session
    /// and setting the cookie if it is new). Returns what `f` returns.
    ///
    /// The closure runs under the session's lock: keep it short and do not call other methods of
    /// this handle from inside it.
    pub fn update<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        match self.write() {
            Some(mut state) => {
                state.capture_owner();
                state.changed = true;
                state.has_data = true;
                f(&mut state.data)
            }
            None => f(&mut T::default()),
        }
    }

    /// Replaces the data and marks the session changed.
    pub fn set(&self, data: T) {
        self.update(|current| *current = data);
    }

    /// The session's ID, if it exists in the store (a new session gets its ID when the layer first
    /// stores it).
    pub fn id(&self) -> Option<SessionId> {
        self.lock().existing.as_ref().map(|e| e.id)
    }

    /// The session's public tag (see [`SessionManager`](crate::SessionManager)), if it exists in
    /// the store.
    pub fn tag(&self) -> Option<crate::SessionTag> {
        self.id().map(|id| id.tag())
    }

    /// Whether the session was not loaded from the store on this request.
    pub fn is_new(&self) -> bool {
        self.lock().existing.is_none()
    }

    /// When the session was created, if it exists in the store.
    pub fn created_at(&self) -> Option<OffsetDateTime> {
        self.lock().existing.as_ref().map(|e| e.created_at)
    }

    /// When the session will expire unless used again (the earlier of its idle expiry and its
    /// absolute deadline), if it exists in the store.
    pub fn expires_at(&self) -> Option<OffsetDateTime> {
        self.lock()
            .existing
            .as_ref()
            .map(Existing::effective_expiry)
    }

    /// Time left before [`SessionHandle::expires_at`].
    pub fn expires_in(&self) -> Option<Duration> {
        let at = self.expires_at()?;
        Some(
            (at - OffsetDateTime::now_utc())
                .try_into()
                .unwrap_or(Duration::ZERO),
        )
    }

    /// Sets a flash message for the next request. It is shown there and gone after it, whether or
    /// not that request reads it.
    pub fn flash(&self, key: impl Into<String>, message: impl Into<String>) {
        if let Some(mut state) = self.write() {
            state.outgoing_flash.insert(key.into(), message.into());
        }
    }

    /// Sets a flash message for this request only; it is never stored.
    pub fn flash_now(&self, key: impl Into<String>, message: impl Into<String>) {
        if let Some(mut state) = self.write() {
            state.now_flash.insert(key.into(), message.into());
        }
    }

    /// Keeps the message under `key` (from the previous request) for one more request. Returns
    /// whether there was such a message.
    pub fn keep_flash(&self, key: &str) -> bool {
        let Some(mut state) = self.write() else {
            return false;
        };
        let Some(message) = state.incoming_flash.get(key).map(str::to_owned) else {
            return false;
        };
        state.outgoing_flash.insert(key.to_owned(), message);
        true
    }

    /// The flash message under `key` visible on this request (set by `flash_now` on this request,
    /// or by `flash` on the previous one).
    pub fn flash_message(&self, key: &str) -> Option<String> {
        let state = self.lock();
        state
            .now_flash
            .get(key)
            .or_else(|| state.incoming_flash.get(key))
            .map(str::to_owned)
    }

    /// All flash messages visible on this request: those from the previous request, then those set
    /// with `flash_now` (which replace a message with the same key).
    pub fn flash_messages(&self) -> Vec<FlashMessage> {
        let state = self.lock();
        let mut visible = state.incoming_flash.clone();
        for m in state.now_flash.iter() {
            visible.insert(m.key.clone(), m.message.clone());
        }
        visible.iter().cloned().collect()
    }

    /// Moves the session to a new ID when the response is sent, keeping its data and killing the
    /// old ID. Call it whenever the privilege level changes (login, sudo) to defeat session
    /// fixation. The absolute deadline is not reset.
    pub fn regenerate(&self) {
        if let Some(mut state) = self.write() {
            state.regenerate = true;
        }
    }

    /// Logs out: deletes the session from the store when the response is sent and sends a cookie
    /// that removes it from the browser. The handle continues as a new, empty session; writing to
    /// it (a "logged out" flash, say) starts a new session with a new ID.
    pub fn delete(&self) {
        if let Some(mut state) = self.write() {
            state.capture_owner();
            let old = std::mem::take(&mut state.data);
            if state.existing.is_some() && state.deleted.is_none() {
                state.deleted = Some(old);
            }
            state.changed = false;
            state.has_data = false;
            state.regenerate = false;
            state.outgoing_flash.clear();
        }
    }
}
