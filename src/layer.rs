//! The Tower layer, which is also its own builder.

use std::{fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use http::StatusCode;
use tower_layer::Layer;

use crate::{
    config::{Concurrency, Config, Preset, SameSite, MAX_DURATION},
    cookie_only::{revocation::RevocationList, CookieOnly, Revoked, Sealed},
    csrf::CsrfLayer,
    engine::Engine,
    error::{ConfigError, SessionError},
    events::{RejectReason, SessionEvents},
    guard::RequireLogin,
    id::SessionKey,
    keys::{IdsAtRest, Key},
    manager::SessionManager,
    service::SessionService,
    session::Session,
    store::Store,
};

/// A [`tower_layer::Layer`] that gives every request a typed session backed by a [`Store`].
///
/// The layer is its own builder: start from [`SessionLayer::new`] (or a [`Preset`]) and chain
/// `with_*` methods. Settings that can be refused (a cookie name, path or domain, and the
/// `Secure` and `SameSite` attributes, which must agree with each other) are set with
/// `try_with_*`, which checks them there and then.
///
/// | setting | default | method |
/// |---|---|---|
/// | cookie name | `id` | [`try_with_cookie_name`](Self::try_with_cookie_name) |
/// | `Path` | `/` | [`try_with_path`](Self::try_with_path) |
/// | `Domain` | none (host-only) | [`try_with_domain`](Self::try_with_domain) |
/// | `Secure` | on | [`try_with_secure`](Self::try_with_secure) |
/// | `HttpOnly` | on | [`with_http_only`](Self::with_http_only) |
/// | `SameSite` | `Lax` | [`try_with_same_site`](Self::try_with_same_site) |
/// | persistent cookie (`Max-Age`) | off: a browser-session cookie | [`with_persistent`](Self::with_persistent) |
/// | idle timeout | 1 hour | [`with_idle_timeout`](Self::with_idle_timeout) |
/// | sliding expiration | on | [`with_sliding_expiration`](Self::with_sliding_expiration) |
/// | absolute lifetime | 24 hours | [`with_absolute_lifetime`](Self::with_absolute_lifetime) |
/// | error response | `500`, `session unavailable` | [`with_error_response`](Self::with_error_response) |
/// | concurrency | [`Concurrency::LastWriteWins`] | [`with_concurrency`](Self::with_concurrency) |
/// | signed cookies | off | [`with_signing_keys`](Self::with_signing_keys) |
/// | IDs at rest | hashed unless the store keeps them in the process | [`with_ids_at_rest`](Self::with_ids_at_rest) |
/// | regenerate grace window | none | [`with_regenerate_grace`](Self::with_regenerate_grace) |
/// | record size limit | none | [`with_max_record_size`](Self::with_max_record_size) |
///
/// ```
/// use std::time::Duration;
/// use axum::{routing::get, Router};
/// use tower_typed_sessions::{Key, MemoryStore, SameSite, Session, SessionHandle, SessionLayer};
///
/// #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
/// struct Cart { items: Vec<String> }
/// impl Session for Cart {}
///
/// async fn add(session: SessionHandle<Cart>) -> &'static str {
///     session.update(|cart| cart.items.push("apple".into()));
///     "added"
/// }
///
/// # fn main() -> Result<(), tower_typed_sessions::ConfigError> {
/// let layer = SessionLayer::new(MemoryStore::<Cart>::new())
///     .with_idle_timeout(Duration::from_secs(30 * 60))
///     .with_signing_keys([Key::from_bytes(&[7u8; 32])?])
///     .try_with_cookie_name("__Host-cart")?
///     .try_with_same_site(SameSite::Strict)?
///     .on_started(|key, _cart| println!("new cart session {key}"));
/// let app: Router = Router::new().route("/add", get(add)).layer(layer);
/// # Ok(()) }
/// ```
///
/// Without Axum, the layer puts a [`LazySession`](crate::LazySession) into each request's
/// extensions:
///
/// ```
/// use bytes::Bytes;
/// use http::{header, Request, Response};
/// use http_body_util::Full;
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
/// use tower_typed_sessions::{LazySession, MemoryStore, Session, SessionLayer};
///
/// #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
/// struct Cart { items: Vec<String> }
/// impl Session for Cart {}
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let service = ServiceBuilder::new()
///     .layer(SessionLayer::new(MemoryStore::<Cart>::new()))
///     .service(service_fn(|req: Request<Full<Bytes>>| async move {
///         let lazy = req.extensions().get::<LazySession<Cart>>().expect("the layer is in front");
///         if let Ok(session) = lazy.load().await {
///             session.update(|cart| cart.items.push("apple".into()));
///         }
///         Ok::<_, std::convert::Infallible>(Response::new(Full::<Bytes>::default()))
///     }));
///
/// let response = service.oneshot(Request::new(Full::default())).await?;
/// let cookie = response.headers()[header::SET_COOKIE].to_str()?;
/// assert!(cookie.starts_with("id="));
/// assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Secure"));
/// # Ok(()) }
/// ```
#[must_use]
pub struct SessionLayer<T, St> {
    config: Config<T>,
    engine: Arc<Engine<T, St>>,
}

impl<T, St> Clone for SessionLayer<T, St> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            engine: Arc::clone(&self.engine),
        }
    }
}

impl<T, St: fmt::Debug> fmt::Debug for SessionLayer<T, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLayer")
            .field("store", self.engine.store())
            .field("settings", self.engine.settings())
            .finish()
    }
}

/// Durations are kept between a millisecond and a hundred years: timestamps stay far from the
/// ends of the calendar, and no session is dead before it is stored.
fn clamp(duration: Duration) -> Duration {
    duration.clamp(Duration::from_millis(1), MAX_DURATION)
}

impl<T: Session, St: Store<T>> SessionLayer<T, St> {
    /// A layer with the defaults in the table above.
    pub fn new(store: St) -> Self {
        Self::build(store, Config::default())
    }

    /// A layer with the settings of `preset` (see [`Preset`]).
    pub fn from_preset(store: St, preset: Preset) -> Self {
        Self::build(store, preset.config())
    }

    /// A layer from a [`SessionConfig`](crate::SessionConfig), refused if the configuration
    /// cannot work (for example a `__Host-` cookie with a Domain).
    #[deprecated(
        since = "0.2.0",
        note = "configure the layer itself: `SessionLayer::new(store).with_idle_timeout(..)`"
    )]
    #[allow(deprecated)]
    pub fn from_config(
        store: St,
        config: crate::config::SessionConfig<T>,
    ) -> Result<Self, ConfigError> {
        let config = config.0;
        let settings = config.validate(!store.contents_stay_in_process())?;
        Ok(Self {
            engine: Arc::new(Engine::new(store, settings)),
            config,
        })
    }

    /// `config` is one of the built-in ones, valid by construction (a test keeps them so).
    fn build(store: St, config: Config<T>) -> Self {
        match config.validate(!store.contents_stay_in_process()) {
            Ok(settings) => Self {
                engine: Arc::new(Engine::new(store, settings)),
                config,
            },
            Err(err) => unreachable!("a built-in session configuration is invalid: {err}"),
        }
    }

    /// Applies `change`, if the result is a configuration that can work.
    fn try_configure(
        self,
        change: impl FnOnce(Config<T>) -> Config<T>,
    ) -> Result<Self, ConfigError> {
        let config = change(self.config);
        let settings = config.validate(self.engine.hashes_ids_by_default())?;
        Ok(Self {
            engine: Arc::new(self.engine.with_settings(settings)),
            config,
        })
    }

    /// Applies a change that cannot make a valid configuration invalid.
    fn configure(self, change: impl FnOnce(Config<T>) -> Config<T>) -> Self {
        let unchanged = self.clone();
        match self.try_configure(change) {
            Ok(layer) => layer,
            Err(err) => {
                tracing::error!(%err, "session layer setting refused; the layer keeps its previous settings");
                unchanged
            }
        }
    }

    /// The cookie's name (default `id`). Refused unless it is an RFC 6265 token; a `__Host-` name
    /// also needs `Secure`, `Path=/` and no Domain, a `__Secure-` name needs `Secure`.
    ///
    /// ```
    /// # use tower_typed_sessions::{ConfigError, MemoryStore, Session, SessionLayer};
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct Data;
    /// # impl Session for Data {}
    /// let layer = SessionLayer::new(MemoryStore::<Data>::new()).try_with_cookie_name("__Host-sid")?;
    /// let refused = SessionLayer::new(MemoryStore::<Data>::new()).try_with_cookie_name("a b");
    /// assert_eq!(refused.err(), Some(ConfigError::InvalidCookieName));
    /// # Ok::<_, ConfigError>(())
    /// ```
    pub fn try_with_cookie_name(self, name: impl Into<String>) -> Result<Self, ConfigError> {
        self.try_configure(|config| config.with_cookie_name(name))
    }

    /// The cookie's `Path` (default `/`; the removal cookie on logout uses the same path).
    /// Refused unless it starts with `/` and holds no `;` or control character, and for a
    /// `__Host-` cookie unless it is `/`.
    pub fn try_with_path(self, path: impl Into<String>) -> Result<Self, ConfigError> {
        self.try_configure(|config| config.with_path(path))
    }

    /// The cookie's `Domain` (default none: the cookie goes only to the host that set it).
    /// Refused unless it is a host name, and for a `__Host-` cookie.
    pub fn try_with_domain(self, domain: impl Into<String>) -> Result<Self, ConfigError> {
        self.try_configure(|config| config.with_domain(domain))
    }

    /// The `Secure` attribute (default on). Browsers and curl accept Secure cookies from
    /// `http://localhost`, so leave it on in development too. Turning it off is refused for a
    /// `__Host-` or `__Secure-` cookie and with `SameSite=None`.
    pub fn try_with_secure(self, secure: bool) -> Result<Self, ConfigError> {
        self.try_configure(|config| config.with_secure(secure))
    }

    /// The `SameSite` attribute (default [`SameSite::Lax`], always written explicitly).
    /// [`SameSite::None`] is refused without `Secure`.
    pub fn try_with_same_site(self, same_site: SameSite) -> Result<Self, ConfigError> {
        self.try_configure(|config| config.with_same_site(same_site))
    }

    /// The `HttpOnly` attribute (default on), which keeps the cookie away from scripts.
    pub fn with_http_only(self, http_only: bool) -> Self {
        self.configure(|config| config.with_http_only(http_only))
    }

    /// Whether the cookie carries a `Max-Age` matching the session's remaining life (default off:
    /// a browser-session cookie, dropped when the browser closes). With sliding expiration a
    /// persistent cookie is re-sent whenever its session's expiry slid.
    pub fn with_persistent(self, persistent: bool) -> Self {
        self.configure(|config| config.with_persistent(persistent))
    }

    /// How long an unused session lives (default 1 hour; kept between a millisecond and 100
    /// years).
    pub fn with_idle_timeout(self, timeout: Duration) -> Self {
        self.configure(|config| config.with_idle_timeout(clamp(timeout)))
    }

    /// Whether each request that loads the session extends its idle expiry (default on). Off: the
    /// session dies `idle_timeout` after it was created.
    pub fn with_sliding_expiration(self, sliding: bool) -> Self {
        self.configure(|config| config.with_sliding_expiration(sliding))
    }

    /// The absolute lifetime from creation (default 24 hours; kept between a millisecond and 100
    /// years). Neither sliding nor regenerating the ID extends it.
    pub fn with_absolute_lifetime(self, lifetime: Duration) -> Self {
        self.configure(|config| config.with_absolute_lifetime(clamp(lifetime)))
    }

    /// The response sent when the store fails (default `500` with `session unavailable`). It
    /// never carries a Set-Cookie, so the client's cookie survives the outage.
    ///
    /// The layer fails closed: when the store fails while loading or saving, this response
    /// replaces the handler's, because the client must not believe a change was kept. Side
    /// effects of the handler outside the session are not undone.
    pub fn with_error_response(self, status: StatusCode, body: impl Into<Bytes>) -> Self {
        let body = body.into();
        self.configure(|config| config.with_error_response(status, body))
    }

    /// What happens when concurrent requests of one session both change it (default
    /// [`Concurrency::LastWriteWins`]).
    ///
    /// ```
    /// use tower_typed_sessions::{Concurrency, MemoryStore, SessionLayer};
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct Data;
    /// # impl tower_typed_sessions::Session for Data {}
    /// let layer = SessionLayer::new(MemoryStore::<Data>::new())
    ///     .with_concurrency(Concurrency::optimistic());
    /// ```
    pub fn with_concurrency(self, concurrency: Concurrency) -> Self {
        self.configure(|config| config.with_concurrency(concurrency))
    }

    /// Signs session cookies: the cookie carries the ID and an HMAC-SHA256 of it, and a cookie
    /// whose signature is missing or wrong is rejected before any store lookup (the `rejected`
    /// event fires with [`RejectReason::BadSignature`]). The first key signs, all verify: to
    /// rotate, put the new key first and keep the old one until its cookies have been re-issued
    /// (a request with a cookie signed by an older key gets it back signed with the first key).
    ///
    /// ```
    /// use tower_typed_sessions::{Key, MemoryStore, SessionLayer};
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct Data;
    /// # impl tower_typed_sessions::Session for Data {}
    /// let current = Key::from_bytes(&[1u8; 32])?;
    /// let previous = Key::from_bytes(&[2u8; 32])?;
    /// let layer = SessionLayer::new(MemoryStore::<Data>::new())
    ///     .with_signing_keys([current, previous]);
    /// # Ok::<_, tower_typed_sessions::ConfigError>(())
    /// ```
    pub fn with_signing_keys(self, keys: impl IntoIterator<Item = Key>) -> Self {
        let keys = keys.into_iter().collect();
        self.configure(|config| config.with_signing_keys(keys))
    }

    /// How IDs are kept in the store (default [`IdsAtRest::StoreDefault`]: hashed unless the
    /// store's contents stay in the process).
    pub fn with_ids_at_rest(self, ids_at_rest: IdsAtRest) -> Self {
        self.configure(|config| config.with_ids_at_rest(ids_at_rest))
    }

    /// After a regenerate (login), requests that arrive with the old cookie within `grace` read
    /// the new session, read-only (default: none, the old ID is refused at once; zero means
    /// none). Past the window the old ID is rejected with [`RejectReason::Regenerated`]. Such
    /// requests never receive a cookie to the session and never see the flash; a write from
    /// them (data, flash, regenerate) is refused with the conflict response, and a logout from
    /// them ends the session. Keep it short (a few seconds): it exists for parallel requests a
    /// page fires while the login response is on its way; it costs one more store lookup for
    /// those requests only.
    ///
    /// Independently of it, requests that loaded the session before the regenerate and write
    /// after it reach the session under its new ID: a logout still ends it.
    pub fn with_regenerate_grace(self, grace: Duration) -> Self {
        self.configure(|config| config.with_regenerate_grace(grace.min(MAX_DURATION)))
    }

    /// The largest serialized session record (JSON) the layer writes (default: no limit). A
    /// request whose session outgrows it gets the error response, the `error` event receives
    /// [`SessionError::RecordTooLarge`], and nothing is written or truncated.
    pub fn with_max_record_size(self, bytes: usize) -> Self {
        self.configure(|config| config.with_max_record_size(bytes))
    }

    /// Adds a listener for every lifecycle event (see [`SessionEvents`]). Several can be added;
    /// each receives every event, after the `on_*` closures.
    pub fn with_events(self, listener: impl SessionEvents<T>) -> Self {
        let listener: Arc<dyn SessionEvents<T>> = Arc::new(listener);
        self.configure(|config| config.with_listener(listener))
    }

    /// Called when a new session is first stored, with its key and data
    /// ([`SessionEvents::started`]).
    pub fn on_started(self, f: impl Fn(&SessionKey, &T) + Send + Sync + 'static) -> Self {
        self.configure(|mut config| {
            config.closures().started = Some(Arc::new(f));
            config
        })
    }

    /// Called when a request's cookie loaded a live session ([`SessionEvents::loaded`]).
    pub fn on_loaded(self, f: impl Fn(&SessionKey, &T) + Send + Sync + 'static) -> Self {
        self.configure(|mut config| {
            config.closures().loaded = Some(Arc::new(f));
            config
        })
    }

    /// Called when a response sets the session cookie: a new ID, a persistent cookie's refreshed
    /// `Max-Age`, or a re-signed cookie ([`SessionEvents::cookie_sent`]).
    pub fn on_cookie_sent(self, f: impl Fn(&SessionKey, &T) + Send + Sync + 'static) -> Self {
        self.configure(|mut config| {
            config.closures().cookie_sent = Some(Arc::new(f));
            config
        })
    }

    /// Called when a session ends by a logout or a revoke, with the data it held
    /// ([`SessionEvents::deleted`]).
    pub fn on_deleted(self, f: impl Fn(&SessionKey, &T) + Send + Sync + 'static) -> Self {
        self.configure(|mut config| {
            config.closures().deleted = Some(Arc::new(f));
            config
        })
    }

    /// Called when a request presented a session past its idle expiry or absolute deadline (the
    /// session is removed and the request gets a fresh one) ([`SessionEvents::expired`]).
    pub fn on_expired(self, f: impl Fn(&SessionKey, &T) + Send + Sync + 'static) -> Self {
        self.configure(|mut config| {
            config.closures().expired = Some(Arc::new(f));
            config
        })
    }

    /// Called when a session moved to a new ID, with the old key, the new key and the data
    /// ([`SessionEvents::regenerated`]).
    pub fn on_regenerated(
        self,
        f: impl Fn(&SessionKey, &SessionKey, &T) + Send + Sync + 'static,
    ) -> Self {
        self.configure(|mut config| {
            config.closures().regenerated = Some(Arc::new(f));
            config
        })
    }

    /// Called when a client's session cookie was not used, with the reason and, when it was well
    /// formed, the key ([`SessionEvents::rejected`]).
    pub fn on_rejected(
        self,
        f: impl Fn(RejectReason, Option<&SessionKey>) + Send + Sync + 'static,
    ) -> Self {
        self.configure(|mut config| {
            config.closures().rejected = Some(Arc::new(f));
            config
        })
    }

    /// Called when the layer fails (a store error), before it sends the error response
    /// ([`SessionEvents::error`]).
    pub fn on_error(self, f: impl Fn(&SessionError) + Send + Sync + 'static) -> Self {
        self.configure(|mut config| {
            config.closures().error = Some(Arc::new(f));
            config
        })
    }

    /// Called when a write was refused because the session changed or moved since this request
    /// loaded it ([`SessionEvents::conflict`]): under optimistic concurrency a save or
    /// regenerate from an older copy (or a save that finds the session ended); in any mode a
    /// save or regenerate of a session another request regenerated meanwhile, and a write from a
    /// request with a regenerated session's old cookie. The request is answered with the
    /// conflict status, without Set-Cookie.
    pub fn on_conflict(self, f: impl Fn(&SessionKey) + Send + Sync + 'static) -> Self {
        self.configure(|mut config| {
            config.closures().conflict = Some(Arc::new(f));
            config
        })
    }

    /// A [`SessionManager`] for listing and revoking users' sessions, sharing this layer's store
    /// and events. Take it after the last builder method: it keeps the settings it was made with.
    pub fn manager(&self) -> SessionManager<T, St> {
        SessionManager::new(Arc::clone(&self.engine))
    }

    /// A [`CsrfLayer`] for the routes behind this layer: it refuses unsafe requests that do not
    /// carry the session's CSRF token or that come from another origin, and reports them to this
    /// layer's events. Take it after the last builder method, like
    /// [`manager`](Self::manager).
    pub fn csrf(&self) -> CsrfLayer<T> {
        CsrfLayer::new(self.engine.settings().events.clone())
    }

    /// A [`RequireLogin`] guard for the routes behind this layer (its session type): only
    /// logged-in sessions get through.
    pub fn require_login(&self) -> RequireLogin<T> {
        RequireLogin::new()
    }

    /// The store behind the layer.
    pub fn store(&self) -> &St {
        self.engine.store()
    }
}

impl<T: Session> SessionLayer<T, CookieOnly> {
    /// A layer with no store: each session (its data, flash, CSRF token, expiry and deadline)
    /// travels in its cookie, sealed with XChaCha20-Poly1305 under a key derived from the first
    /// of `keys`; every key opens, so to rotate put the new key first and keep the old ones
    /// until their cookies have expired (a cookie sealed with an older key is re-sealed with the
    /// first on its next request). Refused without a key.
    ///
    /// Everything the handler does works as with a store (`SessionHandle`, flash, regenerate,
    /// logout, remember me, CSRF, events), with these differences:
    ///
    /// - Expiry is read from inside the sealed payload, never from the cookie's `Max-Age`. The
    ///   cookie is re-sealed when less than half of its idle timeout is left (and when a flash
    ///   was shown or an older key sealed it), not on every read: a session used at least once
    ///   per half idle timeout never expires, and one left alone dies between half and all of
    ///   the idle timeout after its last request.
    /// - A session must fit in one cookie ([`MAX_COOKIE_BYTES`] for name and value): one that
    ///   does not is refused with [`SessionError::CookieTooLarge`] and the error response,
    ///   never truncated.
    /// - Logout clears the browser's cookie but cannot reach a copy of it, and the old cookie of
    ///   a regenerated session stays valid too, until its own expiry. Add a
    ///   [revocation list](Self::with_revocation_list) to refuse them.
    /// - Concurrent requests each send their own copy of the session and the last one the
    ///   browser receives wins: concurrent changes are last-write-wins whatever
    ///   [`with_concurrency`](Self::with_concurrency) says (there is no stored revision to
    ///   compare), and two overlapping requests can both see one flash message. The regenerate
    ///   grace window and [`with_signing_keys`](Self::with_signing_keys) have no effect (the
    ///   seal authenticates).
    /// - [`SessionManager`] has no sessions to list and answers
    ///   [`StoreError::Unsupported`](crate::StoreError::Unsupported).
    /// - Give each application its own key: two apps with the same key and cookie name accept
    ///   each other's cookies.
    ///
    /// ```
    /// use tower_typed_sessions::{Key, Session, SessionLayer};
    ///
    /// #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
    /// struct Cart { items: Vec<String> }
    /// impl Session for Cart {}
    ///
    /// # fn main() -> Result<(), tower_typed_sessions::ConfigError> {
    /// # let secret = [7u8; 32];
    /// let layer = SessionLayer::<Cart, _>::cookie_only([Key::from_bytes(&secret)?])?
    ///     .with_idle_timeout(std::time::Duration::from_secs(30 * 60));
    /// # Ok(()) }
    /// ```
    pub fn cookie_only(keys: impl IntoIterator<Item = Key>) -> Result<Self, ConfigError> {
        let sealed = Sealed::new(keys).ok_or(ConfigError::NoKeys)?;
        let config = Config::default();
        let settings = config.validate(sealed.hashes_ids_by_default())?;
        Ok(Self {
            engine: Arc::new(Engine::cookie_only(sealed, settings)),
            config,
        })
    }

    /// Keeps the IDs of ended sessions in `list` (any store, of [`Revoked`] entries) until their
    /// deadline, and checks it on every request that opens a session: a cookie of a session
    /// that logged out is then refused ([`RejectReason::Revoked`]) even if a copy was kept, and
    /// so is the old cookie of a regenerated session ([`RejectReason::Regenerated`]: within 5
    /// seconds of the login it is not cleared, as the response could overtake the login's, and
    /// a logout through it ends the session where it moved; later it is cleared).
    ///
    /// It also brings back the rules a store keeps between concurrent requests: a logout ends
    /// the session a concurrent login moved to a new ID; of two concurrent logins one moves the
    /// session and the other is answered with the conflict status; a save, re-seal or flash
    /// removal from a copy opened before a login or logout sends no cookie if it finds the ID
    /// in the list (a save is answered with the conflict status after a login), so the login's
    /// or logout's cookie stays the client's. (One that checked just before the login still
    /// sends the old ID's cookie, which the list then refuses.)
    ///
    /// Cost: one lookup on every request that opens a session, one more before a save,
    /// re-seal or flash removal, one write per logout or regenerate (plus a lookup and a write
    /// per session a logout follows to its new ID). The list holds one entry per logout and
    /// regenerate until that session's deadline, including sessions without a user: size it
    /// for that (a capped [`MemoryStore`](crate::MemoryStore) that is full fails logouts and
    /// logins closed). A failing list fails the request closed (the error response, no
    /// Set-Cookie).
    ///
    /// With the default [`IdsAtRest`], the IDs are hashed unless `list`'s contents stay in the
    /// process.
    ///
    /// ```
    /// use tower_typed_sessions::{Key, MemoryStore, Revoked, Session, SessionLayer};
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct Cart;
    /// # impl Session for Cart {}
    /// let layer = SessionLayer::<Cart, _>::cookie_only([Key::from_bytes(&[7u8; 32])?])?
    ///     .with_revocation_list(MemoryStore::<Revoked>::new());
    /// # Ok::<_, tower_typed_sessions::ConfigError>(())
    /// ```
    pub fn with_revocation_list(self, list: impl Store<Revoked>) -> Self {
        let Some(current) = self.engine.sealed() else {
            return self;
        };
        let sealed = Sealed {
            sealer: current.sealer.clone(),
            revocations: Some(RevocationList::new(list)),
        };
        match self.config.validate(sealed.hashes_ids_by_default()) {
            Ok(settings) => Self {
                engine: Arc::new(Engine::cookie_only(sealed, settings)),
                config: self.config,
            },
            Err(err) => {
                tracing::error!(%err, "revocation list refused; the layer keeps its previous settings");
                self
            }
        }
    }
}

impl<S, T, St> Layer<S> for SessionLayer<T, St> {
    type Service = SessionService<S, T, St>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService::new(inner, Arc::clone(&self.engine))
    }
}
