//! The handle a handler uses to read and change its session.

use std::{
    fmt,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use time::OffsetDateTime;

use crate::{
    csrf::CsrfToken,
    error::SessionError,
    flash::{Flash, FlashMessage},
    id::{SessionId, SessionKey},
    lifetime::Lifetime,
    record::Record,
    session::Session,
};

/// The current request's session, typed as the application's `T`.
///
/// With the `axum` feature it is an extractor (`SessionHandle<T>` or `Option<SessionHandle<T>>`)
/// that loads the session; without Axum, [`LazySession::load`](crate::LazySession::load) returns
/// it. Clones share the same session.
///
/// Reads are cheap (a lock, no store access). Writes only mark the session changed: the layer
/// persists it once, after the handler returns, and only if something changed. A request that
/// only reads stores nothing and sets no cookie.
///
/// # Behavior
/// - Changes made after the response has left the layer cannot be saved: they are ignored, with a
///   warning in the `tracing` log.
/// - With a regenerate grace window, a request that arrives with the old cookie of a session
///   that was just regenerated (a login) sees the session read-only
///   ([`SessionHandle::is_read_only`]): it sees no flash messages and receives no cookie, and if
///   its handler changes the data or the flash or regenerates, nothing is stored and the layer
///   answers with the conflict response (409), so the client retries with its new cookie.
/// - Past the grace window (or without one) such a request sees a new, empty session, and may not
///   write to it either (its cookie would overwrite the new one the login sent): the layer
///   answers a write with the conflict response.
/// - [`SessionHandle::delete`] always works: a logout with the old cookie of a regenerated
///   session, within the grace window or after it, ends the session under its new ID.
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
            .field("key", &state.existing.as_ref().map(|e| e.key))
            .field("changed", &state.changed)
            .field("regenerate", &matches!(state.intent, Intent::Regenerate))
            .field("delete", &matches!(state.intent, Intent::Delete { .. }))
            .finish_non_exhaustive()
    }
}

/// What the layer knows of a session it loaded from the store.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Existing {
    /// The key the store keeps the session under.
    pub(crate) key: SessionKey,
    /// The ID the client's cookie carries, to re-send it (a persistent cookie's Max-Age, a
    /// re-signature). `None` when the request reached the session through a regenerate grace
    /// window: its cookie is the old one, which is never re-sent, and nothing else either.
    pub(crate) cookie_id: Option<SessionId>,
    /// The cookie goes out again even if nothing changes: it was signed (or a cookie-only
    /// session sealed) with an older key, or a cookie-only session is due for re-sealing (it
    /// slid, or its flash was shown).
    pub(crate) reissue: bool,
    pub(crate) created_at: OffsetDateTime,
    pub(crate) expires_at: OffsetDateTime,
    pub(crate) deadline: OffsetDateTime,
    /// The revision the record had when loaded: every write states it.
    pub(crate) revision: u64,
    /// The load slid the expiry.
    pub(crate) slid: bool,
    /// The session's own idle timeout (a remembered session), or `None` for the layer's.
    pub(crate) idle_timeout: Option<Duration>,
}

impl Existing {
    pub(crate) fn effective_expiry(&self) -> OffsetDateTime {
        self.expires_at.min(self.deadline)
    }

    /// Whether the session's cookie carries a `Max-Age`: always for a remembered session,
    /// otherwise as the layer says.
    pub(crate) fn persistent(&self, layer_persistent: bool) -> bool {
        layer_persistent || self.idle_timeout.is_some()
    }

    /// Whether the request came with the old cookie of a regenerated session (grace window): it
    /// may read the session, never change it.
    pub(crate) fn read_only(&self) -> bool {
        self.cookie_id.is_none()
    }
}

/// What the handler asked the layer to do with the session besides saving changed data.
pub(crate) enum Intent<T> {
    /// Keep the session (save it if it changed).
    Keep,
    /// Move it to a new ID when the response is sent.
    Regenerate,
    /// Log out: delete it; `data` is what it held, for the `deleted` event (`None` when the
    /// request could not read it: an old cookie past the grace window).
    Delete { data: Option<T> },
}

/// A lifetime change the handler asked for: written by moving the session to a new ID, where the
/// store takes the new expiry as given.
#[derive(Clone, Copy, Debug)]
pub(crate) enum LifetimeChange {
    Remember(Lifetime),
    LayerDefault,
}

/// One request's view of its session, shared by the handle's clones and taken back by the layer
/// when the handler returns.
pub(crate) struct State<T> {
    pub(crate) data: T,
    pub(crate) existing: Option<Existing>,
    /// The handler wrote the data.
    pub(crate) changed: bool,
    /// The session holds application data (not only a flash).
    pub(crate) has_data: bool,
    /// Messages from the previous request, visible now (the load took them from the store).
    pub(crate) incoming_flash: Flash,
    /// Messages for the next request.
    pub(crate) outgoing_flash: Flash,
    /// Messages for this request only; never stored.
    pub(crate) now_flash: Flash,
    pub(crate) intent: Intent<T>,
    /// The handler tried to change a session it may only read (grace window).
    pub(crate) refused_write: bool,
    /// The handler changed the session's lifetime.
    pub(crate) lifetime: Option<LifetimeChange>,
    /// The session's CSRF token, if it has one.
    pub(crate) csrf: Option<CsrfToken>,
    /// The token is new on this request (first asked for, or rotated by a regenerate).
    pub(crate) csrf_changed: bool,
    /// The request's cookie named no live session (unknown, expired, undecodable, malformed, or
    /// badly signed): clear it unless the response sets a session cookie anyway.
    pub(crate) stale_cookie: bool,
    /// The request's cookie is the old ID of a regenerated session it may not read (past the
    /// grace window): a logout still ends that session, wherever it moved.
    pub(crate) moved_from: Option<SessionKey>,
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
            intent: Intent::Keep,
            refused_write: false,
            lifetime: None,
            csrf: None,
            csrf_changed: false,
            stale_cookie: false,
            moved_from: None,
            // A fresh session has no index entry, whatever its default data would say.
            loaded_owner: Some(None),
            closed: false,
        }
    }

    /// A fresh session for a request whose cookie named no live session.
    pub(crate) fn replacing_stale_cookie() -> Self {
        Self {
            stale_cookie: true,
            ..Self::fresh()
        }
    }

    /// A fresh session for a request whose cookie is the old ID of a regenerated session.
    pub(crate) fn moved_away(old: SessionKey) -> Self {
        Self {
            moved_from: Some(old),
            ..Self::fresh()
        }
    }

    /// The state for a loaded record. Its flash was taken by the load: visible now, and gone
    /// from the store. `cookie_id` is `None` for a read-only view through a grace window.
    pub(crate) fn loaded(
        record: Record<T>,
        slid: bool,
        cookie_id: Option<SessionId>,
        reissue: bool,
    ) -> Self {
        Self {
            existing: Some(Existing {
                key: record.key,
                cookie_id,
                reissue,
                created_at: record.created_at,
                expires_at: record.expires_at,
                deadline: record.deadline,
                revision: record.revision,
                slid,
                idle_timeout: record.idle_timeout,
            }),
            has_data: record.has_data,
            loaded_owner: None,
            // A read-only view (an old cookie within a grace window) never sees the token of the
            // session it reads: it could hand it to whoever holds the old cookie.
            csrf: if cookie_id.is_some() {
                record.csrf_token
            } else {
                None
            },
            incoming_flash: record.flash,
            data: record.data,
            ..Self::fresh()
        }
    }

    /// Records the owner of the data as loaded; call before changing the data.
    fn capture_owner(&mut self) {
        if self.loaded_owner.is_none() {
            self.loaded_owner = Some(self.data.owner());
        }
    }

    /// A regenerate retires the session's CSRF token with its ID: a new one replaces it (or, if
    /// the random source fails, none, and the next `csrf_token` call draws again).
    fn rotate_csrf(&mut self) {
        if self.csrf.is_some() {
            self.csrf = CsrfToken::generate().ok();
            self.csrf_changed = true;
        }
    }

    /// The request came with the old cookie of a regenerated session and has not logged out.
    fn read_only(&self) -> bool {
        let old_cookie =
            self.existing.as_ref().is_some_and(Existing::read_only) || self.moved_from.is_some();
        old_cookie && !matches!(self.intent, Intent::Delete { .. })
    }

    /// Whether this request may change the session; marks the refusal if not. After a delete
    /// the handle is a new session, which it may write.
    fn may_write(&mut self) -> bool {
        let read_only = self.read_only();
        if read_only {
            self.refused_write = true;
        }
        !read_only
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
                if state.may_write() {
                    state.capture_owner();
                    state.changed = true;
                    state.has_data = true;
                }
                f(&mut state.data)
            }
            None => f(&mut T::default()),
        }
    }

    /// Replaces the data and marks the session changed.
    pub fn set(&self, data: T) {
        self.update(|current| *current = data);
    }

    /// The key the store keeps this session under, if it exists in the store (a new session gets
    /// one when the layer first stores it). It is the same kind of value on every store (by
    /// default a digest of the cookie's ID, never the cookie itself) and the one that events and
    /// [`SessionManager`](crate::SessionManager) use.
    pub fn id(&self) -> Option<SessionKey> {
        self.lock().existing.as_ref().map(|e| e.key)
    }

    /// The session's public tag (see [`SessionManager`](crate::SessionManager)), if it exists in
    /// the store.
    pub fn tag(&self) -> Option<crate::SessionTag> {
        self.id().map(|key| key.tag())
    }

    /// Whether this request may only read: it came with the old cookie of a session that was
    /// regenerated (see the type's "Behavior"). Only [`SessionHandle::delete`] works then.
    pub fn is_read_only(&self) -> bool {
        self.lock().read_only()
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
            if state.may_write() {
                state.outgoing_flash.insert(key.into(), message.into());
            }
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
        if !state.may_write() {
            return false;
        }
        let Some(message) = state.incoming_flash.get(key).map(str::to_owned) else {
            return false;
        };
        state.outgoing_flash.insert(key.to_owned(), message);
        true
    }

    /// Keeps every message from the previous request for one more request (a message set for
    /// the next request under the same key wins over the kept one only if it is set after this
    /// call, as with [`SessionHandle::keep_flash`]). Returns how many were kept.
    ///
    /// ```
    /// # use tower_typed_sessions::{Session, SessionHandle};
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct Data;
    /// # impl Session for Data {}
    /// // A page that redirects on: the messages it did not show reach the next page.
    /// async fn step(session: SessionHandle<Data>) -> &'static str {
    ///     session.keep_all_flash();
    ///     "redirecting"
    /// }
    /// ```
    pub fn keep_all_flash(&self) -> usize {
        let Some(mut state) = self.write() else {
            return 0;
        };
        if !state.may_write() {
            return 0;
        }
        let incoming: Vec<FlashMessage> = state.incoming_flash.iter().cloned().collect();
        for message in &incoming {
            state
                .outgoing_flash
                .insert(message.key.clone(), message.message.clone());
        }
        incoming.len()
    }

    /// Takes back the message queued under `key` for the next request (set with
    /// [`SessionHandle::flash`] or kept with [`SessionHandle::keep_flash`] on this request).
    /// Returns whether there was one.
    ///
    /// ```
    /// # use tower_typed_sessions::{Session, SessionHandle};
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct Data;
    /// # impl Session for Data {}
    /// async fn save(session: SessionHandle<Data>) -> &'static str {
    ///     session.flash("notice", "Saved.");
    ///     let failed = true;
    ///     if failed {
    ///         session.discard_flash("notice");
    ///         session.flash("error", "Not saved.");
    ///     }
    ///     "done"
    /// }
    /// ```
    pub fn discard_flash(&self, key: &str) -> bool {
        let Some(mut state) = self.write() else {
            return false;
        };
        state.may_write() && state.outgoing_flash.remove(key)
    }

    /// Takes back every message queued for the next request.
    pub fn discard_all_flash(&self) {
        if let Some(mut state) = self.write() {
            if state.may_write() {
                state.outgoing_flash.clear();
            }
        }
    }

    /// The messages queued for the next request so far (set with [`SessionHandle::flash`] or
    /// kept on this request), in the order they were first queued.
    ///
    /// ```
    /// # use tower_typed_sessions::{Session, SessionHandle};
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct Data;
    /// # impl Session for Data {}
    /// async fn handler(session: SessionHandle<Data>) -> String {
    ///     session.flash("notice", "Saved.");
    ///     let queued = session.queued_flash();
    ///     format!("{} message(s) for the next page", queued.len())
    /// }
    /// ```
    pub fn queued_flash(&self) -> Vec<FlashMessage> {
        self.lock().outgoing_flash.iter().cloned().collect()
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

    /// Gives this session a lifetime of its own ("remember me"): it lives `lifetime`'s idle
    /// timeout without use and its absolute lifetime at most (counted from now), whatever the
    /// layer's settings, and its cookie becomes persistent (`Max-Age`) so the browser keeps it
    /// across restarts. Other sessions keep the layer's lifetime. The lifetime is stored with
    /// the session, so it holds on every instance and after a restart.
    ///
    /// Like a login, it moves the session to a new ID when the response is sent (see
    /// [`SessionHandle::regenerate`]): a longer-lived session gets a fresh ID, and the store
    /// takes its new expiry in that one write.
    ///
    /// The idle timeout is at least the layer's (a shorter one is raised to it): a remembered
    /// session is one that may live longer, and the store slides every session by the layer's
    /// idle timeout on each read.
    ///
    /// A remembered session's expiry slides as the layer's do, in steps: it moves forward once
    /// the move is worth at least a thousandth of its idle timeout (at least a second, at most a
    /// minute), so a session used at least once every idle timeout minus that step never
    /// expires. On the memory and SQL stores a session read many times a minute costs one extra
    /// store call a minute; on Redis, whose read sets the expiry outright, every read of a
    /// remembered session costs one extra store call.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_typed_sessions::{Lifetime, Session, SessionHandle};
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    /// # struct Account { user: Option<String> }
    /// # impl Session for Account {}
    /// const DAY: Duration = Duration::from_secs(24 * 60 * 60);
    ///
    /// async fn login(session: SessionHandle<Account>, remember_me: bool) -> &'static str {
    ///     session.update(|a| a.user = Some("alice".into()));
    ///     session.regenerate();
    ///     if remember_me {
    ///         session.remember(Lifetime::new(30 * DAY, 90 * DAY));
    ///     }
    ///     "welcome"
    /// }
    /// ```
    pub fn remember(&self, lifetime: Lifetime) {
        self.change_lifetime(LifetimeChange::Remember(lifetime));
    }

    /// Puts a remembered session back on the layer's lifetime: the layer's idle timeout from
    /// now, the earlier of its deadline and the layer's absolute lifetime from now, and the
    /// layer's kind of cookie (a browser-session cookie unless the layer is persistent). Like
    /// [`SessionHandle::remember`], it moves the session to a new ID.
    pub fn use_layer_lifetime(&self) {
        self.change_lifetime(LifetimeChange::LayerDefault);
    }

    /// The session's own lifetime's idle timeout, if it has one (see
    /// [`SessionHandle::remember`]), as of this request.
    pub fn remembered_idle_timeout(&self) -> Option<Duration> {
        let state = self.lock();
        match state.lifetime {
            Some(LifetimeChange::Remember(lifetime)) => Some(lifetime.idle_timeout()),
            Some(LifetimeChange::LayerDefault) => None,
            None => state.existing.as_ref().and_then(|e| e.idle_timeout),
        }
    }

    fn change_lifetime(&self, change: LifetimeChange) {
        if let Some(mut state) = self.write() {
            if state.may_write() && !matches!(state.intent, Intent::Delete { .. }) {
                state.capture_owner();
                state.lifetime = Some(change);
                if matches!(state.intent, Intent::Keep) {
                    state.intent = Intent::Regenerate;
                    state.rotate_csrf();
                }
            }
        }
    }

    /// Moves the session to a new ID when the response is sent, keeping its data and killing the
    /// old ID. Call it whenever the privilege level changes (login, sudo) to defeat session
    /// fixation. The absolute deadline is not reset.
    pub fn regenerate(&self) {
        if let Some(mut state) = self.write() {
            if state.may_write() && matches!(state.intent, Intent::Keep) {
                state.intent = Intent::Regenerate;
                state.rotate_csrf();
            }
        }
    }

    /// Logs in: applies `f` to the data (set the user there, so that [`Session::owner`] names
    /// them) and moves the session to a new ID, in one call, so the regenerate that defeats
    /// session fixation cannot be forgotten. The CSRF token changes with the ID. Returns what
    /// `f` returns.
    ///
    /// ```
    /// # use tower_typed_sessions::{Session, SessionHandle};
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    /// # struct Account { user: Option<String> }
    /// # impl Session for Account { fn owner(&self) -> Option<String> { self.user.clone() } }
    /// async fn login(session: SessionHandle<Account>) -> &'static str {
    ///     // ... after checking the password:
    ///     session.log_in(|account| account.user = Some("alice".into()));
    ///     "welcome"
    /// }
    /// ```
    pub fn log_in<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let out = self.update(f);
        self.regenerate();
        out
    }

    /// Logs out: the same as [`SessionHandle::delete`], named for symmetry with
    /// [`SessionHandle::log_in`]. The session is deleted wherever it moved, whatever runs
    /// concurrently, and the browser's cookie is removed.
    pub fn log_out(&self) {
        self.delete();
    }

    /// The session's CSRF token, for a hidden form field or a script's request header (see
    /// [`CsrfLayer`](crate::CsrfLayer)). The first call on a session draws one (256 bits from
    /// the OS CSPRNG) and stores it with the session, so a page with a form keeps the visitor's
    /// session even before a login; later calls return the same token until the session is
    /// regenerated, which draws a new one.
    ///
    /// Fails if the operating system cannot provide random bytes, or if the request may only
    /// read its session (an old cookie within a regenerate grace window) and it has no token.
    pub fn csrf_token(&self) -> Result<CsrfToken, SessionError> {
        let Some(mut state) = self.write() else {
            return Err(SessionError::ReadOnly);
        };
        if let Some(token) = state.csrf {
            return Ok(token);
        }
        // Refused without marking the request as a refused write: asking for a token is not a
        // change the handler made, so the page may still be answered.
        if state.read_only() {
            return Err(SessionError::ReadOnly);
        }
        let token = CsrfToken::generate()?;
        state.csrf = Some(token);
        state.csrf_changed = true;
        // A session that holds a token must outlive a consumed flash: it is not flash-only.
        state.has_data = true;
        Ok(token)
    }

    /// The token stored with the session, if any, without drawing one.
    pub(crate) fn stored_csrf_token(&self) -> Option<CsrfToken> {
        self.lock().csrf
    }

    /// Logs out: deletes the session from the store when the response is sent and sends a cookie
    /// that removes it from the browser. The handle continues as a new, empty session; writing to
    /// it (a "logged out" flash, say) starts a new session with a new ID.
    pub fn delete(&self) {
        if let Some(mut state) = self.write() {
            // Allowed on a read-only session too: whoever holds a cookie of the session may end
            // it, even one that a login replaced a moment ago.
            state.capture_owner();
            let old = std::mem::take(&mut state.data);
            match state.intent {
                Intent::Delete { .. } => {}
                _ if state.existing.is_some() => state.intent = Intent::Delete { data: Some(old) },
                _ if state.moved_from.is_some() => state.intent = Intent::Delete { data: None },
                _ => state.intent = Intent::Keep,
            }
            state.changed = false;
            state.has_data = false;
            state.lifetime = None;
            state.csrf = None;
            state.csrf_changed = false;
            state.outgoing_flash.clear();
        }
    }
}
