//! The request path, in the order a request meets it:
//!
//! 1. [`load`]: when the handler first asks for the session (`lazy.rs`), the cookie is parsed
//!    and the session loaded (sliding its expiry and taking its flash in the same store step),
//!    or refused with a reason;
//! 2. the handler works on a [`SessionHandle`](crate::SessionHandle) (`handle.rs`);
//! 3. [`change`]: what the handler left is turned into one [`Change`](change::Change), the one
//!    write the request makes;
//! 4. [`write`]: the change is written under the write discipline (revisions stated,
//!    forwarding pointers followed) and the Set-Cookie decided.
//!
//! A cookie-only layer takes steps 1 and 4 through [`sealed`] instead: the session is opened
//! from and sealed into the cookie, and step 3 is the same.
//!
//! The layer (`layer.rs`), the service (`service.rs`) and the manager (`manager.rs`) all go
//! through an [`Engine`]; none of them touches the store directly.

mod change;
mod load;
mod owners;
mod sealed;
mod write;

pub(crate) use load::loader;
pub(crate) use write::{Pending, Write};

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::{
    config::{Concurrency, Settings},
    cookie_only::{CookieOnly, Sealed},
    error::{SessionError, StoreError, StoreOperation},
    id::SessionKey,
    record::Record,
    session::Session,
    store::{Expect, LoadOptions, Loaded, Store},
    telemetry::Measured,
};

/// How many forwarding pointers a write follows before it gives up: a session regenerated this
/// many times while one request was in flight is not a session but a loop.
const MAX_FORWARDS: usize = 16;

/// How many fresh IDs to try when the store reports a collision. With 256 random bits a real
/// collision never happens; retries only guard against a broken random source or store.
const ID_ATTEMPTS: usize = 3;

/// A store and the checked settings of one layer: everything a request needs.
pub(crate) struct Engine<T, St> {
    store: Arc<Measured<St>>,
    settings: Settings<T>,
    /// Set for a cookie-only layer: sessions live sealed in the cookie, and `store` holds
    /// nothing.
    sealed: Option<Arc<Sealed>>,
}

impl<T, St> Engine<T, St> {
    pub(crate) fn new(store: St, settings: Settings<T>) -> Self {
        Self {
            store: Arc::new(Measured::new(store)),
            settings,
            sealed: None,
        }
    }

    /// The same store with other settings (the layer's builder methods).
    pub(crate) fn with_settings(&self, settings: Settings<T>) -> Self {
        Self {
            store: Arc::clone(&self.store),
            settings,
            sealed: self.sealed.clone(),
        }
    }

    pub(crate) fn store(&self) -> &St {
        self.store.inner()
    }

    pub(crate) fn settings(&self) -> &Settings<T> {
        &self.settings
    }

    /// What a write expects of the stored revision under the configured concurrency.
    fn expect(&self, revision: u64) -> Expect {
        match self.settings.concurrency {
            Concurrency::Optimistic { .. } => Expect::Revision(revision),
            _ => Expect::Any,
        }
    }

    fn optimistic(&self) -> bool {
        matches!(self.settings.concurrency, Concurrency::Optimistic { .. })
    }
}

impl<T> Engine<T, CookieOnly> {
    /// A cookie-only engine.
    pub(crate) fn cookie_only(sealed: Sealed, settings: Settings<T>) -> Self {
        Self {
            sealed: Some(Arc::new(sealed)),
            ..Self::new(CookieOnly::new(), settings)
        }
    }

    /// Its keys and revocation list, for a builder that replaces one of them.
    pub(crate) fn sealed(&self) -> Option<&Sealed> {
        self.sealed.as_deref()
    }
}

impl<T: Session, St: Store<T>> Engine<T, St> {
    /// Whether [`IdsAtRest::StoreDefault`](crate::IdsAtRest::StoreDefault) hashes IDs on this
    /// store: unless its contents stay in the process (for a cookie-only layer: unless it keeps
    /// a revocation list whose contents leave it).
    pub(crate) fn hashes_ids_by_default(&self) -> bool {
        match &self.sealed {
            Some(sealed) => sealed.hashes_ids_by_default(),
            None => !self.store.inner().contents_stay_in_process(),
        }
    }
}

impl<T: Session, St: Store<T>> Engine<T, St> {
    /// The error response: never a Set-Cookie, so the client keeps its cookie through an outage.
    pub(crate) fn error_response<B: From<Bytes>>(&self, err: &SessionError) -> Response<B> {
        let (status, body) = match err {
            SessionError::Conflict | SessionError::ReadOnly => (
                self.conflict_status(),
                Bytes::from_static(b"the session changed concurrently; retry"),
            ),
            _ => {
                self.settings.events.error(err);
                (self.settings.error_status, self.settings.error_body.clone())
            }
        };
        let mut response = Response::new(B::from(body));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    fn conflict_status(&self) -> StatusCode {
        match self.settings.concurrency {
            Concurrency::Optimistic { status } => status,
            _ => StatusCode::CONFLICT,
        }
    }
}

impl<T: Session, St: Store<T>> Engine<T, St> {
    /// The live record `key` leads to, following forwarding pointers: a logout's or a listing's
    /// view of a session that may have moved. Never slides or takes the flash unless `options`
    /// says so.
    async fn follow(
        &self,
        mut key: SessionKey,
        options: LoadOptions,
    ) -> Result<Option<Record<T>>, StoreError> {
        for _ in 0..MAX_FORWARDS {
            match self.store.load(&key, options).await? {
                Loaded::Active(record) if record.key == key && !record.is_expired(options.now) => {
                    return Ok(Some(record))
                }
                Loaded::Moved(forward) => key = forward.to,
                _ => return Ok(None),
            }
        }
        Ok(None)
    }
}

pub(crate) fn store_error(operation: StoreOperation) -> impl FnOnce(StoreError) -> SessionError {
    move |source| SessionError::Store { operation, source }
}
