//! Layer configuration: cookie attributes, timeouts, error response and callbacks.

use std::{fmt, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use crate::{
    callbacks::{Callbacks, RejectReason},
    error::{ConfigError, SessionError},
    id::SessionKey,
    keys::{AtRest, IdsAtRest, Key, Signer},
};

/// The `SameSite` attribute of the session cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SameSite {
    /// Sent only on same-site requests.
    Strict,
    /// Sent on same-site requests and top-level cross-site navigations (the default).
    Lax,
    /// Sent on all requests; requires Secure.
    None,
}

/// What happens when two requests of one session change it at the same time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Concurrency {
    /// The later save wins and the earlier change is lost (the default, like every other session
    /// library). A save never re-creates a session that was deleted meanwhile, and a save from a
    /// copy loaded before a regenerate (a login) is refused with the conflict response (409)
    /// instead of undoing the login's change.
    LastWriteWins,
    /// Every write (save, regenerate) from a copy older than the stored session is refused, and
    /// so is a save that finds the session ended: the `conflict` callback fires and the request
    /// is answered with `status` (409 by default), without Set-Cookie, so the client can retry.
    /// No write answered with success is lost.
    Optimistic {
        /// The status of the answer to a refused save.
        status: StatusCode,
    },
}

impl Concurrency {
    /// Optimistic concurrency answering conflicts with 409 Conflict.
    pub const fn optimistic() -> Self {
        Concurrency::Optimistic {
            status: StatusCode::CONFLICT,
        }
    }
}

/// How the session layer behaves. Build it with the `with_*` methods and pass it to
/// [`SessionLayer::from_config`](crate::SessionLayer::from_config), which checks it.
///
/// | setting | default |
/// |---|---|
/// | cookie name | `id` |
/// | `Path` | `/` |
/// | `Domain` | none (host-only) |
/// | `Secure` | on |
/// | `HttpOnly` | on |
/// | `SameSite` | `Lax` |
/// | persistent cookie (`Max-Age`) | off: a browser-session cookie |
/// | idle timeout | 1 hour |
/// | sliding expiration | on |
/// | absolute lifetime | 24 hours |
/// | error response | `500`, `session unavailable` |
/// | concurrency | [`Concurrency::LastWriteWins`] |
///
/// ```
/// use std::time::Duration;
/// use tower_typed_sessions::{MemoryStore, SameSite, Session, SessionConfig, SessionLayer};
/// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct Data;
/// # impl Session for Data {}
///
/// let config = SessionConfig::<Data>::new()
///     .with_cookie_name("__Host-sid")
///     .with_same_site(SameSite::Strict)
///     .with_idle_timeout(Duration::from_secs(30 * 60))
///     .with_absolute_lifetime(Duration::from_secs(8 * 60 * 60))
///     .on_started(|id, _data| println!("started {id}"));
/// let layer = SessionLayer::from_config(MemoryStore::new(), config)?;
/// # Ok::<_, tower_typed_sessions::ConfigError>(())
/// ```
#[must_use]
pub struct SessionConfig<T> {
    cookie_name: String,
    path: String,
    domain: Option<String>,
    secure: bool,
    http_only: bool,
    same_site: SameSite,
    persistent: bool,
    idle_timeout: Duration,
    sliding: bool,
    absolute_lifetime: Duration,
    error_status: StatusCode,
    error_body: Bytes,
    concurrency: Concurrency,
    signing_keys: Vec<Key>,
    ids_at_rest: IdsAtRest,
    regenerate_grace: Option<Duration>,
    max_record_size: Option<usize>,
    callbacks: Callbacks<T>,
}

impl<T> Default for SessionConfig<T> {
    fn default() -> Self {
        Self {
            cookie_name: "id".to_owned(),
            path: "/".to_owned(),
            domain: None,
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            persistent: false,
            idle_timeout: Duration::from_secs(60 * 60),
            sliding: true,
            absolute_lifetime: Duration::from_secs(24 * 60 * 60),
            error_status: StatusCode::INTERNAL_SERVER_ERROR,
            error_body: Bytes::from_static(b"session unavailable"),
            concurrency: Concurrency::LastWriteWins,
            signing_keys: Vec::new(),
            ids_at_rest: IdsAtRest::StoreDefault,
            regenerate_grace: None,
            max_record_size: None,
            callbacks: Callbacks::default(),
        }
    }
}

impl<T> Clone for SessionConfig<T> {
    fn clone(&self) -> Self {
        Self {
            cookie_name: self.cookie_name.clone(),
            path: self.path.clone(),
            domain: self.domain.clone(),
            secure: self.secure,
            http_only: self.http_only,
            same_site: self.same_site,
            persistent: self.persistent,
            idle_timeout: self.idle_timeout,
            sliding: self.sliding,
            absolute_lifetime: self.absolute_lifetime,
            error_status: self.error_status,
            error_body: self.error_body.clone(),
            concurrency: self.concurrency,
            signing_keys: self.signing_keys.clone(),
            ids_at_rest: self.ids_at_rest.clone(),
            regenerate_grace: self.regenerate_grace,
            max_record_size: self.max_record_size,
            callbacks: self.callbacks.clone(),
        }
    }
}

impl<T> fmt::Debug for SessionConfig<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionConfig")
            .field("cookie_name", &self.cookie_name)
            .field("path", &self.path)
            .field("domain", &self.domain)
            .field("secure", &self.secure)
            .field("http_only", &self.http_only)
            .field("same_site", &self.same_site)
            .field("persistent", &self.persistent)
            .field("idle_timeout", &self.idle_timeout)
            .field("sliding", &self.sliding)
            .field("absolute_lifetime", &self.absolute_lifetime)
            .field("error_status", &self.error_status)
            .field("concurrency", &self.concurrency)
            .field("signing_keys", &self.signing_keys.len())
            .field("ids_at_rest", &self.ids_at_rest)
            .field("regenerate_grace", &self.regenerate_grace)
            .field("max_record_size", &self.max_record_size)
            .field("callbacks", &self.callbacks)
            .finish()
    }
}

impl<T> SessionConfig<T> {
    /// The defaults listed above.
    pub fn new() -> Self {
        Self::default()
    }

    /// The cookie's name (default `id`). A `__Host-` name requires Secure, `Path=/` and no
    /// Domain; a `__Secure-` name requires Secure: both are checked when the layer is built.
    pub fn with_cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie_name = name.into();
        self
    }

    /// The cookie's `Path` (default `/`). The removal cookie on logout uses the same path.
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// The cookie's `Domain` (default none: the cookie goes only to the host that set it).
    pub fn with_domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    /// The `Secure` attribute (default on). Browsers and curl accept Secure cookies from
    /// `http://localhost`, so leave it on in development too.
    pub fn with_secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// The `HttpOnly` attribute (default on), which keeps the cookie away from scripts.
    pub fn with_http_only(mut self, http_only: bool) -> Self {
        self.http_only = http_only;
        self
    }

    /// The `SameSite` attribute (default [`SameSite::Lax`], always written explicitly).
    pub fn with_same_site(mut self, same_site: SameSite) -> Self {
        self.same_site = same_site;
        self
    }

    /// Whether the cookie carries a `Max-Age` matching the session's remaining life (default off:
    /// a browser-session cookie, dropped when the browser closes). With sliding expiration a
    /// persistent cookie is re-sent on every request, to slide its `Max-Age` too.
    pub fn with_persistent(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }

    /// How long an unused session lives (default 1 hour).
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Whether each request that loads the session extends its idle expiry (default on). Off: the
    /// session dies `idle_timeout` after it was created.
    pub fn with_sliding_expiration(mut self, sliding: bool) -> Self {
        self.sliding = sliding;
        self
    }

    /// The absolute lifetime from creation (default 24 hours). Neither sliding nor regenerating
    /// the ID extends it.
    pub fn with_absolute_lifetime(mut self, lifetime: Duration) -> Self {
        self.absolute_lifetime = lifetime;
        self
    }

    /// The response sent when the store fails (default `500` with `session unavailable`). It
    /// never carries a Set-Cookie, so the client's cookie survives the outage.
    ///
    /// The layer fails closed: when the store fails while saving, after the handler ran, this
    /// response replaces the handler's, because the client must not believe a change was kept.
    /// Side effects of the handler outside the session are not undone.
    pub fn with_error_response(mut self, status: StatusCode, body: impl Into<Bytes>) -> Self {
        self.error_status = status;
        self.error_body = body.into();
        self
    }

    /// What happens when concurrent requests of one session both change it (default
    /// [`Concurrency::LastWriteWins`]).
    ///
    /// ```
    /// use tower_typed_sessions::{Concurrency, SessionConfig};
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct Data;
    /// # impl tower_typed_sessions::Session for Data {}
    /// let config = SessionConfig::<Data>::new().with_concurrency(Concurrency::optimistic());
    /// ```
    pub fn with_concurrency(mut self, concurrency: Concurrency) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Signs session cookies: the cookie carries the ID and an HMAC-SHA256 of it, and a cookie
    /// whose signature is missing or wrong is rejected before any store lookup (the `rejected`
    /// callback fires with [`RejectReason::BadSignature`]). The first key signs, all verify: to
    /// rotate, put the new key first and keep the old one until its cookies have been re-issued
    /// (a request with a cookie signed by an older key gets it back signed with the first key).
    ///
    /// ```
    /// use tower_typed_sessions::{Key, SessionConfig};
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct Data;
    /// # impl tower_typed_sessions::Session for Data {}
    /// let current = Key::from_bytes(&[1u8; 32])?;
    /// let previous = Key::from_bytes(&[2u8; 32])?;
    /// let config = SessionConfig::<Data>::new().with_signing_keys([current, previous]);
    /// # Ok::<_, tower_typed_sessions::ConfigError>(())
    /// ```
    pub fn with_signing_keys(mut self, keys: impl IntoIterator<Item = Key>) -> Self {
        self.signing_keys = keys.into_iter().collect();
        self
    }

    /// How IDs are kept in the store (default [`IdsAtRest::StoreDefault`]: hashed on Redis,
    /// plain in memory).
    pub fn with_ids_at_rest(mut self, ids_at_rest: IdsAtRest) -> Self {
        self.ids_at_rest = ids_at_rest;
        self
    }

    /// After a regenerate (login), requests that arrive with the old cookie within `grace` read
    /// the new session, read-only (default: none, the old ID is refused at once). Past the window
    /// the old ID is rejected with [`RejectReason::Regenerated`]. Such requests never receive a
    /// cookie to the session and never see the flash; a write from them (data, flash,
    /// regenerate) is refused with the conflict response, and a logout from them ends the
    /// session. Keep it short (a few seconds): it exists for parallel requests a page fires while
    /// the login response is on its way; it costs one more store lookup for those requests only.
    ///
    /// Independently of it, requests that loaded the session before the regenerate and write
    /// after it reach the session under its new ID: a logout still ends it.
    pub fn with_regenerate_grace(mut self, grace: Duration) -> Self {
        self.regenerate_grace = (!grace.is_zero()).then_some(grace);
        self
    }

    /// The largest serialized session record (JSON) the layer writes (default: no limit). A
    /// request whose session outgrows it gets the error response, the `error` callback receives
    /// [`SessionError::RecordTooLarge`], and nothing is written or truncated.
    pub fn with_max_record_size(mut self, bytes: usize) -> Self {
        self.max_record_size = Some(bytes);
        self
    }

    /// Called when a write was refused because the session changed or moved since this request
    /// loaded it: under optimistic concurrency a save or regenerate from an older copy (or a save
    /// that finds the session ended); in any mode a save or regenerate of a session another
    /// request regenerated meanwhile, and a write from a request with a regenerated session's old
    /// cookie. The request is answered with the conflict status, without Set-Cookie.
    pub fn on_conflict(mut self, f: impl Fn(&SessionKey) + Send + Sync + 'static) -> Self {
        self.callbacks.conflict = Some(std::sync::Arc::new(f));
        self
    }

    /// Called when a new session is first stored, with its ID and data.
    pub fn on_started(mut self, f: impl Fn(&SessionKey, &T) + Send + Sync + 'static) -> Self {
        self.callbacks.started = Some(std::sync::Arc::new(f));
        self
    }

    /// Called when a request's cookie loaded a live session.
    pub fn on_loaded(mut self, f: impl Fn(&SessionKey, &T) + Send + Sync + 'static) -> Self {
        self.callbacks.loaded = Some(std::sync::Arc::new(f));
        self
    }

    /// Called when a response sets the session cookie (a new ID, or a persistent cookie's
    /// refreshed `Max-Age`).
    pub fn on_client(mut self, f: impl Fn(&SessionKey, &T) + Send + Sync + 'static) -> Self {
        self.callbacks.client = Some(std::sync::Arc::new(f));
        self
    }

    /// Called when a session is deleted (logout), with the data it held.
    pub fn on_deleted(mut self, f: impl Fn(&SessionKey, &T) + Send + Sync + 'static) -> Self {
        self.callbacks.deleted = Some(std::sync::Arc::new(f));
        self
    }

    /// Called when a request presented a session that had passed its idle expiry or absolute
    /// deadline (the session is removed and the request gets a fresh one).
    pub fn on_expired(mut self, f: impl Fn(&SessionKey, &T) + Send + Sync + 'static) -> Self {
        self.callbacks.expired = Some(std::sync::Arc::new(f));
        self
    }

    /// Called when a session moved to a new ID, with the old ID, the new ID and the data.
    pub fn on_regenerated(
        mut self,
        f: impl Fn(&SessionKey, &SessionKey, &T) + Send + Sync + 'static,
    ) -> Self {
        self.callbacks.regenerated = Some(std::sync::Arc::new(f));
        self
    }

    /// Called when a client's session cookie was not used, with the reason and, when it was well
    /// formed, the ID.
    pub fn on_rejected(
        mut self,
        f: impl Fn(RejectReason, Option<&SessionKey>) + Send + Sync + 'static,
    ) -> Self {
        self.callbacks.rejected = Some(std::sync::Arc::new(f));
        self
    }

    /// Called when the layer fails (a store error), before it sends the error response.
    pub fn on_error(mut self, f: impl Fn(&SessionError) + Send + Sync + 'static) -> Self {
        self.callbacks.error = Some(std::sync::Arc::new(f));
        self
    }

    /// Checks the configuration. `store_hashes_ids` is the store's preference for
    /// [`IdsAtRest::StoreDefault`] (hash unless its contents stay in the process).
    pub(crate) fn validate(self, store_hashes_ids: bool) -> Result<Settings<T>, ConfigError> {
        let name = &self.cookie_name;
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(ConfigError::InvalidCookieName);
        }
        if !self.path.starts_with('/')
            || !self.path.bytes().all(|b| is_attribute_byte(b) && b != b';')
        {
            return Err(ConfigError::InvalidPath);
        }
        if let Some(domain) = &self.domain {
            let valid = !domain.is_empty()
                && domain
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !valid {
                return Err(ConfigError::InvalidDomain);
            }
        }
        if name.starts_with("__Host-") {
            if self.domain.is_some() {
                return Err(ConfigError::HostPrefixWithDomain);
            }
            if self.path != "/" {
                return Err(ConfigError::HostPrefixWithPath);
            }
        }
        if (name.starts_with("__Host-") || name.starts_with("__Secure-")) && !self.secure {
            return Err(ConfigError::PrefixWithoutSecure);
        }
        if self.same_site == SameSite::None && !self.secure {
            return Err(ConfigError::SameSiteNoneWithoutSecure);
        }
        if self.idle_timeout.is_zero() || self.absolute_lifetime.is_zero() {
            return Err(ConfigError::ZeroTimeout);
        }
        let longest = [self.idle_timeout, self.absolute_lifetime]
            .into_iter()
            .chain(self.regenerate_grace)
            .max()
            .unwrap_or_default();
        if longest > MAX_DURATION {
            return Err(ConfigError::DurationTooLong);
        }

        let mut template = cookie::Cookie::build((self.cookie_name.clone(), ""))
            .path(self.path.clone())
            .http_only(self.http_only)
            .secure(self.secure)
            .same_site(match self.same_site {
                SameSite::Strict => cookie::SameSite::Strict,
                SameSite::Lax => cookie::SameSite::Lax,
                SameSite::None => cookie::SameSite::None,
            });
        if let Some(domain) = &self.domain {
            template = template.domain(domain.clone());
        }
        let mut cookie = template.build();
        // `name=` followed by the attributes, rendered once by the cookie crate.
        let attributes = cookie.to_string()[name.len() + 1..].to_owned();
        cookie.make_removal();
        let removal = HeaderValue::from_str(&cookie.to_string())
            .map_err(|_| ConfigError::InvalidCookieName)?;

        Ok(Settings {
            cookie: CookieSettings {
                name: self.cookie_name,
                attributes,
                removal,
            },
            persistent: self.persistent,
            idle_timeout: self.idle_timeout,
            sliding: self.sliding,
            absolute_lifetime: self.absolute_lifetime,
            error_status: self.error_status,
            error_body: self.error_body,
            concurrency: self.concurrency,
            signer: Signer::new(self.signing_keys),
            regenerate_grace: self.regenerate_grace,
            max_record_size: self.max_record_size,
            at_rest: match self.ids_at_rest {
                IdsAtRest::Plain => AtRest::Plain,
                IdsAtRest::Hash => AtRest::Hash,
                IdsAtRest::KeyedHash(key) => AtRest::KeyedHash(key),
                IdsAtRest::StoreDefault if store_hashes_ids => AtRest::Hash,
                IdsAtRest::StoreDefault => AtRest::Plain,
            },
            callbacks: self.callbacks,
        })
    }
}

/// The longest timeout accepted (100 years): timestamps stay far from the ends of the calendar.
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// RFC 6265 `token`: visible ASCII except separators.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)
}

fn is_attribute_byte(b: u8) -> bool {
    b.is_ascii_graphic() || b == b' '
}

/// A checked configuration, shared by every request.
pub(crate) struct Settings<T> {
    pub(crate) cookie: CookieSettings,
    pub(crate) persistent: bool,
    pub(crate) idle_timeout: Duration,
    pub(crate) sliding: bool,
    pub(crate) absolute_lifetime: Duration,
    pub(crate) error_status: StatusCode,
    pub(crate) error_body: Bytes,
    pub(crate) concurrency: Concurrency,
    pub(crate) signer: Option<Signer>,
    pub(crate) regenerate_grace: Option<Duration>,
    pub(crate) max_record_size: Option<usize>,
    pub(crate) at_rest: AtRest,
    pub(crate) callbacks: Callbacks<T>,
}

impl<T> fmt::Debug for Settings<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("cookie", &self.cookie)
            .field("persistent", &self.persistent)
            .field("idle_timeout", &self.idle_timeout)
            .field("sliding", &self.sliding)
            .field("absolute_lifetime", &self.absolute_lifetime)
            .field("error_status", &self.error_status)
            .field("signed", &self.signer.is_some())
            .field("at_rest", &self.at_rest)
            .field("callbacks", &self.callbacks)
            .finish()
    }
}

/// The cookie's name, its rendered attributes, and the ready-made removal cookie.
#[derive(Debug)]
pub(crate) struct CookieSettings {
    pub(crate) name: String,
    /// `; Path=/; HttpOnly; ...` as the cookie crate renders them.
    pub(crate) attributes: String,
    pub(crate) removal: HeaderValue,
}
