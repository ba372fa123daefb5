//! Lifecycle events: one trait with a method per event, for audit logs and monitoring, and the
//! closures of the `on_*` methods, dispatched together.

use std::{fmt, sync::Arc};

use crate::{csrf::CsrfRejection, error::SessionError, id::SessionKey};

/// Why the session cookie a client sent was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// The cookie value is not a well-formed ID (wrong length or alphabet, oversized, not UTF-8).
    /// The store was not asked.
    Malformed,
    /// The ID is well formed but the store does not know it: never issued, deleted, or gone
    /// past the store's retention. It is never adopted.
    Unknown,
    /// The ID belonged to a session that has since been regenerated (a login), and the request
    /// came after the grace window (or there is none). Its cookie is not cleared, since the
    /// response could overtake the login response that carries the new one.
    Regenerated,
    /// The store holds a record under the ID that cannot be decoded as the session type (for
    /// example after the struct changed). The record is deleted.
    Undecodable,
    /// Cookies are signed and this one's signature is missing or matches no key. The store was
    /// not asked.
    BadSignature,
    /// A cookie-only session's sealed value opens under no configured key: tampered with,
    /// truncated, sealed for another cookie name, or sealed with a key that was since removed.
    Unsealable,
    /// A cookie-only session that logged out, found in the revocation list (see
    /// [`SessionLayer::with_revocation_list`](crate::SessionLayer::with_revocation_list)). The
    /// old cookie of a regenerated session found there is [`RejectReason::Regenerated`].
    Revoked,
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RejectReason::Malformed => "malformed",
            RejectReason::Unknown => "unknown",
            RejectReason::Regenerated => "regenerated",
            RejectReason::Undecodable => "undecodable",
            RejectReason::BadSignature => "bad signature",
            RejectReason::Unsealable => "unsealable",
            RejectReason::Revoked => "revoked",
        })
    }
}

/// Where a session stands, as [`StateChange`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SessionState {
    /// Not stored yet: a request without a session, or a cookie the layer does not know.
    New,
    /// Stored and live.
    Active,
    /// Moved to a new ID (a login): the old ID only forwards.
    Regenerated,
    /// Past its idle expiry or absolute deadline.
    Expired,
    /// Ended by a logout ([`SessionHandle::delete`](crate::SessionHandle::delete)).
    Deleted,
    /// Ended through [`SessionManager`](crate::SessionManager) (another device, a password
    /// change).
    Revoked,
    /// A cookie the layer refused ([`RejectReason`] says why).
    Rejected,
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SessionState::New => "new",
            SessionState::Active => "active",
            SessionState::Regenerated => "regenerated",
            SessionState::Expired => "expired",
            SessionState::Deleted => "deleted",
            SessionState::Revoked => "revoked",
            SessionState::Rejected => "rejected",
        })
    }
}

/// One change of a session's state, reported to [`SessionEvents::state_changed`] after the store
/// confirmed it.
///
/// | change | `from` → `to` | `key` | `new_key` | `data` |
/// |---|---|---|---|---|
/// | a session is stored for the first time | `New` → `Active` | the new key | | yes |
/// | a login moves it to a new ID | `Active` → `Regenerated` | the old key | the new key | yes |
/// | a request finds it past its expiry | `Active` → `Expired` | its key | | yes |
/// | a logout ends it | `Active` → `Deleted` | the key it ended under | | when known |
/// | [`SessionManager`](crate::SessionManager) revokes it | `Active` → `Revoked` | the key it ended under | | yes |
/// | a regenerated session's old cookie arrives after the grace window (cookie-only: is in the revocation list) | `Regenerated` → `Rejected` | the old key | | |
/// | a cookie-only session's logged-out cookie arrives (it is in the revocation list) | `Deleted` → `Rejected` | its key | | |
/// | any other cookie is refused | `New` → `Rejected` | its key, when well formed | | |
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct StateChange<'a, T> {
    /// The session's key (for a refused cookie: its key when the cookie was well formed).
    pub key: Option<&'a SessionKey>,
    /// The state before.
    pub from: SessionState,
    /// The state after.
    pub to: SessionState,
    /// For [`SessionState::Regenerated`]: the key the session moved to.
    pub new_key: Option<&'a SessionKey>,
    /// For [`SessionState::Rejected`]: why.
    pub reason: Option<RejectReason>,
    /// The session's data, when the layer has it.
    pub data: Option<&'a T>,
}

impl<'a, T> StateChange<'a, T> {
    fn new(key: Option<&'a SessionKey>, from: SessionState, to: SessionState) -> Self {
        Self {
            key,
            from,
            to,
            new_key: None,
            reason: None,
            data: None,
        }
    }
}

/// Listens to a session layer's lifecycle events: implement the methods you need, the others do
/// nothing. Register it with [`SessionLayer::with_events`](crate::SessionLayer::with_events);
/// several listeners and the `on_*` closures all receive every event.
///
/// Events fire after the store confirmed what they report, synchronously on the request's task:
/// keep them short, and hand slow work (a database insert, a network call) to a channel or
/// `tokio::spawn`. Keys print as fingerprints, never as the cookie's ID.
///
/// ```
/// use tower_typed_sessions::{
///     MemoryStore, Session, SessionEvents, SessionKey, SessionLayer, StateChange,
/// };
///
/// #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
/// struct Account { user: Option<String> }
/// impl Session for Account {}
///
/// struct AuditLog;
///
/// impl SessionEvents<Account> for AuditLog {
///     fn state_changed(&self, change: &StateChange<'_, Account>) {
///         let user = change.data.and_then(|account| account.user.as_deref());
///         println!("session {:?}: {} -> {} (user {user:?})", change.key, change.from, change.to);
///     }
///
///     fn regenerated(&self, old: &SessionKey, new: &SessionKey, _data: &Account) {
///         println!("login: {old} is now {new}");
///     }
/// }
///
/// let layer = SessionLayer::new(MemoryStore::<Account>::new()).with_events(AuditLog);
/// ```
#[allow(unused_variables)]
pub trait SessionEvents<T>: Send + Sync + 'static {
    /// A new session was stored, with its key and data.
    fn started(&self, key: &SessionKey, data: &T) {}

    /// A request's cookie loaded a live session.
    fn loaded(&self, key: &SessionKey, data: &T) {}

    /// A response set the session cookie: a new ID, a persistent cookie's refreshed `Max-Age`,
    /// or a cookie re-signed under the current key.
    fn cookie_sent(&self, key: &SessionKey, data: &T) {}

    /// A session ended by a logout or a revoke, with the data it held.
    fn deleted(&self, key: &SessionKey, data: &T) {}

    /// A request presented a session past its idle expiry or absolute deadline; it is removed
    /// and the request gets a fresh one.
    fn expired(&self, key: &SessionKey, data: &T) {}

    /// A session moved to a new ID (a login), with the old key, the new key and the data.
    fn regenerated(&self, old: &SessionKey, new: &SessionKey, data: &T) {}

    /// A client's session cookie was not used, with the reason and, when it was well formed, the
    /// key it names.
    fn rejected(&self, reason: RejectReason, key: Option<&SessionKey>) {}

    /// A write was refused because the session changed or moved since this request loaded it
    /// (see [`Concurrency`](crate::Concurrency)); the request is answered with the conflict
    /// status, without Set-Cookie.
    fn conflict(&self, key: &SessionKey) {}

    /// The layer failed (a store error), before it sends the error response.
    fn error(&self, error: &SessionError) {}

    /// [`CsrfLayer`](crate::CsrfLayer) refused an unsafe request, with why and, when the
    /// request's session was loaded, its key.
    fn csrf_rejected(&self, reason: CsrfRejection, key: Option<&SessionKey>) {}

    /// A session changed state (see [`StateChange`]): one method that sees every change, for a
    /// listener that records them all the same way.
    fn state_changed(&self, change: &StateChange<'_, T>) {}
}

type DataFn<T> = Arc<dyn Fn(&SessionKey, &T) + Send + Sync>;
type RegeneratedFn<T> = Arc<dyn Fn(&SessionKey, &SessionKey, &T) + Send + Sync>;
type RejectedFn = Arc<dyn Fn(RejectReason, Option<&SessionKey>) + Send + Sync>;
type ErrorFn = Arc<dyn Fn(&SessionError) + Send + Sync>;
type KeyFn = Arc<dyn Fn(&SessionKey) + Send + Sync>;

/// The closures of the `on_*` methods: one listener among the others.
pub(crate) struct Closures<T> {
    pub(crate) started: Option<DataFn<T>>,
    pub(crate) loaded: Option<DataFn<T>>,
    pub(crate) cookie_sent: Option<DataFn<T>>,
    pub(crate) deleted: Option<DataFn<T>>,
    pub(crate) expired: Option<DataFn<T>>,
    pub(crate) regenerated: Option<RegeneratedFn<T>>,
    pub(crate) rejected: Option<RejectedFn>,
    pub(crate) error: Option<ErrorFn>,
    pub(crate) conflict: Option<KeyFn>,
}

impl<T> Default for Closures<T> {
    fn default() -> Self {
        Self {
            started: None,
            loaded: None,
            cookie_sent: None,
            deleted: None,
            expired: None,
            regenerated: None,
            rejected: None,
            error: None,
            conflict: None,
        }
    }
}

impl<T> Clone for Closures<T> {
    fn clone(&self) -> Self {
        Self {
            started: self.started.clone(),
            loaded: self.loaded.clone(),
            cookie_sent: self.cookie_sent.clone(),
            deleted: self.deleted.clone(),
            expired: self.expired.clone(),
            regenerated: self.regenerated.clone(),
            rejected: self.rejected.clone(),
            error: self.error.clone(),
            conflict: self.conflict.clone(),
        }
    }
}

impl<T> Closures<T> {
    pub(crate) fn names(&self) -> Vec<&'static str> {
        let set = [
            ("started", self.started.is_some()),
            ("loaded", self.loaded.is_some()),
            ("cookie_sent", self.cookie_sent.is_some()),
            ("deleted", self.deleted.is_some()),
            ("expired", self.expired.is_some()),
            ("regenerated", self.regenerated.is_some()),
            ("rejected", self.rejected.is_some()),
            ("error", self.error.is_some()),
            ("conflict", self.conflict.is_some()),
        ];
        set.into_iter()
            .filter_map(|(name, is_set)| is_set.then_some(name))
            .collect()
    }
}

/// The `on_*` closures are one listener among the others.
impl<T: 'static> SessionEvents<T> for Closures<T> {
    fn started(&self, key: &SessionKey, data: &T) {
        if let Some(f) = &self.started {
            f(key, data);
        }
    }
    fn loaded(&self, key: &SessionKey, data: &T) {
        if let Some(f) = &self.loaded {
            f(key, data);
        }
    }
    fn cookie_sent(&self, key: &SessionKey, data: &T) {
        if let Some(f) = &self.cookie_sent {
            f(key, data);
        }
    }
    fn deleted(&self, key: &SessionKey, data: &T) {
        if let Some(f) = &self.deleted {
            f(key, data);
        }
    }
    fn expired(&self, key: &SessionKey, data: &T) {
        if let Some(f) = &self.expired {
            f(key, data);
        }
    }
    fn regenerated(&self, old: &SessionKey, new: &SessionKey, data: &T) {
        if let Some(f) = &self.regenerated {
            f(old, new, data);
        }
    }
    fn rejected(&self, reason: RejectReason, key: Option<&SessionKey>) {
        if let Some(f) = &self.rejected {
            f(reason, key);
        }
    }
    fn conflict(&self, key: &SessionKey) {
        if let Some(f) = &self.conflict {
            f(key);
        }
    }
    fn error(&self, error: &SessionError) {
        if let Some(f) = &self.error {
            f(error);
        }
    }
}

/// How a session ended: by its own request (logout) or through the manager (revoke).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    Logout,
    Revoke,
}

/// Every listener of one layer, in order: the `on_*` closures (as one listener), then each
/// [`SessionEvents`] in the order they were added. Each event also goes to `tracing` (keys as
/// fingerprints) and to metrics.
pub(crate) struct Events<T> {
    listeners: Vec<Arc<dyn SessionEvents<T>>>,
}

impl<T> Clone for Events<T> {
    fn clone(&self) -> Self {
        Self {
            listeners: self.listeners.clone(),
        }
    }
}

impl<T> fmt::Debug for Events<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("listeners", &self.listeners.len())
            .finish()
    }
}

impl<T: 'static> Events<T> {
    /// The closures (when any is set) first, then `listeners`.
    pub(crate) fn new(closures: &Closures<T>, listeners: &[Arc<dyn SessionEvents<T>>]) -> Self {
        let closures = (!closures.names().is_empty())
            .then(|| Arc::new(closures.clone()) as Arc<dyn SessionEvents<T>>);
        Self {
            listeners: closures
                .into_iter()
                .chain(listeners.iter().cloned())
                .collect(),
        }
    }

    fn changed(&self, change: StateChange<'_, T>) {
        for listener in &self.listeners {
            listener.state_changed(&change);
        }
    }

    pub(crate) fn started(&self, key: &SessionKey, data: &T) {
        crate::telemetry::event("started");
        tracing::debug!(session = %key, "session started");
        for listener in &self.listeners {
            listener.started(key, data);
        }
        self.changed(StateChange {
            data: Some(data),
            ..StateChange::new(Some(key), SessionState::New, SessionState::Active)
        });
    }

    pub(crate) fn loaded(&self, key: &SessionKey, data: &T) {
        crate::telemetry::event("loaded");
        tracing::trace!(session = %key, "session loaded");
        for listener in &self.listeners {
            listener.loaded(key, data);
        }
    }

    pub(crate) fn cookie_sent(&self, key: &SessionKey, data: &T) {
        crate::telemetry::event("cookie_sent");
        tracing::trace!(session = %key, "session cookie sent");
        for listener in &self.listeners {
            listener.cookie_sent(key, data);
        }
    }

    /// A session ended under `key`. `data` is `None` when nobody could read it (a logout through
    /// a regenerated session's old cookie whose session was already gone): then only the state
    /// change is reported.
    pub(crate) fn ended(&self, key: &SessionKey, data: Option<&T>, how: Ending) {
        crate::telemetry::event("deleted");
        let to = match how {
            Ending::Logout => SessionState::Deleted,
            Ending::Revoke => SessionState::Revoked,
        };
        tracing::debug!(session = %key, state = %to, "session ended");
        if let Some(data) = data {
            for listener in &self.listeners {
                listener.deleted(key, data);
            }
        }
        self.changed(StateChange {
            data,
            ..StateChange::new(Some(key), SessionState::Active, to)
        });
    }

    pub(crate) fn expired(&self, key: &SessionKey, data: &T) {
        crate::telemetry::event("expired");
        tracing::debug!(session = %key, "session expired");
        for listener in &self.listeners {
            listener.expired(key, data);
        }
        self.changed(StateChange {
            data: Some(data),
            ..StateChange::new(Some(key), SessionState::Active, SessionState::Expired)
        });
    }

    pub(crate) fn regenerated(&self, old: &SessionKey, new: &SessionKey, data: &T) {
        crate::telemetry::event("regenerated");
        tracing::debug!(old = %old, new = %new, "session id regenerated");
        for listener in &self.listeners {
            listener.regenerated(old, new, data);
        }
        self.changed(StateChange {
            new_key: Some(new),
            data: Some(data),
            ..StateChange::new(Some(old), SessionState::Active, SessionState::Regenerated)
        });
    }

    pub(crate) fn rejected(&self, reason: RejectReason, key: Option<&SessionKey>) {
        crate::telemetry::rejected(reason);
        match key {
            Some(key) => tracing::debug!(session = %key, %reason, "session cookie rejected"),
            None => tracing::debug!(%reason, "session cookie rejected"),
        }
        for listener in &self.listeners {
            listener.rejected(reason, key);
        }
        let from = match reason {
            RejectReason::Regenerated => SessionState::Regenerated,
            RejectReason::Revoked => SessionState::Deleted,
            _ => SessionState::New,
        };
        self.changed(StateChange {
            reason: Some(reason),
            ..StateChange::new(key, from, SessionState::Rejected)
        });
    }

    pub(crate) fn conflict(&self, key: &SessionKey) {
        crate::telemetry::event("conflict");
        tracing::info!(session = %key, "change refused: the session changed or moved since this request loaded it");
        for listener in &self.listeners {
            listener.conflict(key);
        }
    }

    pub(crate) fn csrf_rejected(&self, reason: CsrfRejection, key: Option<&SessionKey>) {
        crate::telemetry::event("csrf_rejected");
        match key {
            Some(key) => tracing::info!(session = %key, %reason, "cross-site request refused"),
            None => tracing::info!(%reason, "cross-site request refused"),
        }
        for listener in &self.listeners {
            listener.csrf_rejected(reason, key);
        }
    }

    pub(crate) fn error(&self, error: &SessionError) {
        crate::telemetry::event("error");
        tracing::error!(%error, "session layer failed");
        for listener in &self.listeners {
            listener.error(error);
        }
    }
}
