//! Lifecycle callbacks, for audit logging and metrics.

use std::{fmt, sync::Arc};

use crate::{error::SessionError, id::SessionKey};

pub(crate) type DataCallback<T> = Arc<dyn Fn(&SessionKey, &T) + Send + Sync>;
pub(crate) type RegeneratedCallback<T> = Arc<dyn Fn(&SessionKey, &SessionKey, &T) + Send + Sync>;
pub(crate) type RejectedCallback = Arc<dyn Fn(RejectReason, Option<&SessionKey>) + Send + Sync>;
pub(crate) type ErrorCallback = Arc<dyn Fn(&SessionError) + Send + Sync>;
pub(crate) type IdCallback = Arc<dyn Fn(&SessionKey) + Send + Sync>;

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
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RejectReason::Malformed => "malformed",
            RejectReason::Unknown => "unknown",
            RejectReason::Regenerated => "regenerated",
            RejectReason::Undecodable => "undecodable",
            RejectReason::BadSignature => "bad signature",
        })
    }
}

/// The registered callbacks. Callbacks run synchronously on the request's task, after the store
/// confirmed the event; keep them short, and hand slow work to a channel or `tokio::spawn`.
pub(crate) struct Callbacks<T> {
    pub(crate) started: Option<DataCallback<T>>,
    pub(crate) loaded: Option<DataCallback<T>>,
    pub(crate) client: Option<DataCallback<T>>,
    pub(crate) deleted: Option<DataCallback<T>>,
    pub(crate) expired: Option<DataCallback<T>>,
    pub(crate) regenerated: Option<RegeneratedCallback<T>>,
    pub(crate) rejected: Option<RejectedCallback>,
    pub(crate) error: Option<ErrorCallback>,
    pub(crate) conflict: Option<IdCallback>,
}

impl<T> Default for Callbacks<T> {
    fn default() -> Self {
        Self {
            started: None,
            loaded: None,
            client: None,
            deleted: None,
            expired: None,
            regenerated: None,
            rejected: None,
            error: None,
            conflict: None,
        }
    }
}

impl<T> Clone for Callbacks<T> {
    fn clone(&self) -> Self {
        Self {
            started: self.started.clone(),
            loaded: self.loaded.clone(),
            client: self.client.clone(),
            deleted: self.deleted.clone(),
            expired: self.expired.clone(),
            regenerated: self.regenerated.clone(),
            rejected: self.rejected.clone(),
            error: self.error.clone(),
            conflict: self.conflict.clone(),
        }
    }
}

impl<T> fmt::Debug for Callbacks<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn show<C>(c: &Option<C>) -> &'static str {
            if c.is_some() {
                "<fn>"
            } else {
                "None"
            }
        }
        f.debug_struct("Callbacks")
            .field("started", &show(&self.started))
            .field("loaded", &show(&self.loaded))
            .field("client", &show(&self.client))
            .field("deleted", &show(&self.deleted))
            .field("expired", &show(&self.expired))
            .field("regenerated", &show(&self.regenerated))
            .field("rejected", &show(&self.rejected))
            .field("error", &show(&self.error))
            .field("conflict", &show(&self.conflict))
            .finish()
    }
}

impl<T> Callbacks<T> {
    pub(crate) fn started(&self, id: &SessionKey, data: &T) {
        crate::telemetry::event("started");
        tracing::debug!(session = %id, "session started");
        if let Some(f) = &self.started {
            f(id, data);
        }
    }

    pub(crate) fn loaded(&self, id: &SessionKey, data: &T) {
        crate::telemetry::event("loaded");
        tracing::trace!(session = %id, "session loaded");
        if let Some(f) = &self.loaded {
            f(id, data);
        }
    }

    pub(crate) fn client(&self, id: &SessionKey, data: &T) {
        crate::telemetry::event("cookie_sent");
        tracing::trace!(session = %id, "session cookie sent");
        if let Some(f) = &self.client {
            f(id, data);
        }
    }

    pub(crate) fn deleted(&self, id: &SessionKey, data: &T) {
        crate::telemetry::event("deleted");
        tracing::debug!(session = %id, "session deleted");
        if let Some(f) = &self.deleted {
            f(id, data);
        }
    }

    pub(crate) fn expired(&self, id: &SessionKey, data: &T) {
        crate::telemetry::event("expired");
        tracing::debug!(session = %id, "session expired");
        if let Some(f) = &self.expired {
            f(id, data);
        }
    }

    pub(crate) fn regenerated(&self, old: &SessionKey, new: &SessionKey, data: &T) {
        crate::telemetry::event("regenerated");
        tracing::debug!(old = %old, new = %new, "session id regenerated");
        if let Some(f) = &self.regenerated {
            f(old, new, data);
        }
    }

    pub(crate) fn rejected(&self, reason: RejectReason, id: Option<&SessionKey>) {
        crate::telemetry::rejected(reason);
        match id {
            Some(id) => tracing::debug!(session = %id, %reason, "session cookie rejected"),
            None => tracing::debug!(%reason, "session cookie rejected"),
        }
        if let Some(f) = &self.rejected {
            f(reason, id);
        }
    }

    pub(crate) fn conflict(&self, id: &SessionKey) {
        crate::telemetry::event("conflict");
        tracing::info!(session = %id, "change refused: the session changed or moved since this request loaded it");
        if let Some(f) = &self.conflict {
            f(id);
        }
    }

    pub(crate) fn error(&self, error: &SessionError) {
        crate::telemetry::event("error");
        tracing::error!(%error, "session layer failed");
        if let Some(f) = &self.error {
            f(error);
        }
    }
}
