//! The configuration type of the first release, kept for one release so that code written for it
//! still compiles. Everything it does, [`SessionLayer`]'s own builder methods do.

#![allow(deprecated)]

use std::{fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use http::StatusCode;

use super::{Concurrency, Config, SameSite};
use crate::{
    error::SessionError,
    events::RejectReason,
    id::SessionKey,
    keys::{IdsAtRest, Key},
};

/// The layer's settings as a separate value, passed to the deprecated
/// [`SessionLayer::from_config`]. Use [`SessionLayer`]'s builder methods instead: each method
/// here has the same name there (`on_client` is now
/// [`on_cookie_sent`](SessionLayer::on_cookie_sent)), and the settings that can be refused are
/// checked where they are set (`try_with_*`).
///
/// ```
/// # #![allow(deprecated)]
/// use std::time::Duration;
/// use tower_typed_sessions::{MemoryStore, Session, SessionConfig, SessionLayer};
/// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct Data;
/// # impl Session for Data {}
///
/// // Before:
/// let config = SessionConfig::<Data>::new().with_idle_timeout(Duration::from_secs(30 * 60));
/// let old = SessionLayer::from_config(MemoryStore::new(), config)?;
/// // Now:
/// let new = SessionLayer::new(MemoryStore::<Data>::new()).with_idle_timeout(Duration::from_secs(30 * 60));
/// # Ok::<_, tower_typed_sessions::ConfigError>(())
/// ```
#[deprecated(
    since = "0.2.0",
    note = "configure the layer itself: `SessionLayer::new(store).with_idle_timeout(..)`"
)]
#[must_use]
pub struct SessionConfig<T>(pub(crate) Config<T>);

impl<T> Default for SessionConfig<T> {
    fn default() -> Self {
        Self(Config::default())
    }
}

impl<T> Clone for SessionConfig<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> fmt::Debug for SessionConfig<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SessionConfig").field(&self.0).finish()
    }
}

impl<T> SessionConfig<T> {
    /// The defaults. See [`SessionLayer::new`].
    pub fn new() -> Self {
        Self::default()
    }

    /// See [`SessionLayer::try_with_cookie_name`].
    pub fn with_cookie_name(self, name: impl Into<String>) -> Self {
        Self(self.0.with_cookie_name(name))
    }

    /// See [`SessionLayer::try_with_path`].
    pub fn with_path(self, path: impl Into<String>) -> Self {
        Self(self.0.with_path(path))
    }

    /// See [`SessionLayer::try_with_domain`].
    pub fn with_domain(self, domain: impl Into<String>) -> Self {
        Self(self.0.with_domain(domain))
    }

    /// See [`SessionLayer::try_with_secure`].
    pub fn with_secure(self, secure: bool) -> Self {
        Self(self.0.with_secure(secure))
    }

    /// See [`SessionLayer::with_http_only`].
    pub fn with_http_only(self, http_only: bool) -> Self {
        Self(self.0.with_http_only(http_only))
    }

    /// See [`SessionLayer::try_with_same_site`].
    pub fn with_same_site(self, same_site: SameSite) -> Self {
        Self(self.0.with_same_site(same_site))
    }

    /// See [`SessionLayer::with_persistent`].
    pub fn with_persistent(self, persistent: bool) -> Self {
        Self(self.0.with_persistent(persistent))
    }

    /// See [`SessionLayer::with_idle_timeout`]; a zero timeout is refused when the layer is built.
    pub fn with_idle_timeout(self, timeout: Duration) -> Self {
        Self(self.0.with_idle_timeout(timeout))
    }

    /// See [`SessionLayer::with_sliding_expiration`].
    pub fn with_sliding_expiration(self, sliding: bool) -> Self {
        Self(self.0.with_sliding_expiration(sliding))
    }

    /// See [`SessionLayer::with_absolute_lifetime`]; a zero lifetime is refused when the layer is
    /// built.
    pub fn with_absolute_lifetime(self, lifetime: Duration) -> Self {
        Self(self.0.with_absolute_lifetime(lifetime))
    }

    /// See [`SessionLayer::with_error_response`].
    pub fn with_error_response(self, status: StatusCode, body: impl Into<Bytes>) -> Self {
        Self(self.0.with_error_response(status, body.into()))
    }

    /// See [`SessionLayer::with_concurrency`].
    pub fn with_concurrency(self, concurrency: Concurrency) -> Self {
        Self(self.0.with_concurrency(concurrency))
    }

    /// See [`SessionLayer::with_signing_keys`].
    pub fn with_signing_keys(self, keys: impl IntoIterator<Item = Key>) -> Self {
        Self(self.0.with_signing_keys(keys.into_iter().collect()))
    }

    /// See [`SessionLayer::with_ids_at_rest`].
    pub fn with_ids_at_rest(self, ids_at_rest: IdsAtRest) -> Self {
        Self(self.0.with_ids_at_rest(ids_at_rest))
    }

    /// See [`SessionLayer::with_regenerate_grace`].
    pub fn with_regenerate_grace(self, grace: Duration) -> Self {
        Self(self.0.with_regenerate_grace(grace))
    }

    /// See [`SessionLayer::with_max_record_size`].
    pub fn with_max_record_size(self, bytes: usize) -> Self {
        Self(self.0.with_max_record_size(bytes))
    }

    /// See [`SessionLayer::on_conflict`].
    pub fn on_conflict(mut self, f: impl Fn(&SessionKey) + Send + Sync + 'static) -> Self {
        self.0.closures().conflict = Some(Arc::new(f));
        self
    }

    /// See [`SessionLayer::on_started`].
    pub fn on_started(mut self, f: impl Fn(&SessionKey, &T) + Send + Sync + 'static) -> Self {
        self.0.closures().started = Some(Arc::new(f));
        self
    }

    /// See [`SessionLayer::on_loaded`].
    pub fn on_loaded(mut self, f: impl Fn(&SessionKey, &T) + Send + Sync + 'static) -> Self {
        self.0.closures().loaded = Some(Arc::new(f));
        self
    }

    /// See [`SessionLayer::on_cookie_sent`], its new name.
    pub fn on_client(mut self, f: impl Fn(&SessionKey, &T) + Send + Sync + 'static) -> Self {
        self.0.closures().cookie_sent = Some(Arc::new(f));
        self
    }

    /// See [`SessionLayer::on_deleted`].
    pub fn on_deleted(mut self, f: impl Fn(&SessionKey, &T) + Send + Sync + 'static) -> Self {
        self.0.closures().deleted = Some(Arc::new(f));
        self
    }

    /// See [`SessionLayer::on_expired`].
    pub fn on_expired(mut self, f: impl Fn(&SessionKey, &T) + Send + Sync + 'static) -> Self {
        self.0.closures().expired = Some(Arc::new(f));
        self
    }

    /// See [`SessionLayer::on_regenerated`].
    pub fn on_regenerated(
        mut self,
        f: impl Fn(&SessionKey, &SessionKey, &T) + Send + Sync + 'static,
    ) -> Self {
        self.0.closures().regenerated = Some(Arc::new(f));
        self
    }

    /// See [`SessionLayer::on_rejected`].
    pub fn on_rejected(
        mut self,
        f: impl Fn(RejectReason, Option<&SessionKey>) + Send + Sync + 'static,
    ) -> Self {
        self.0.closures().rejected = Some(Arc::new(f));
        self
    }

    /// See [`SessionLayer::on_error`].
    pub fn on_error(mut self, f: impl Fn(&SessionError) + Send + Sync + 'static) -> Self {
        self.0.closures().error = Some(Arc::new(f));
        self
    }
}
