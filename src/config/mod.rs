//! The layer's settings: what the builder methods collect ([`Config`]), the checks that turn
//! them into the [`Settings`] every request reads, the presets, and the deprecated
//! [`SessionConfig`](legacy::SessionConfig).

mod legacy;
mod preset;

#[allow(deprecated)]
pub use legacy::SessionConfig;
pub use preset::Preset;

use std::{fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use crate::{
    error::ConfigError,
    events::{Closures, Events, SessionEvents},
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
    /// so is a save that finds the session ended: the `conflict` event fires and the request
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

/// The layer's settings as given, before they are checked: what [`SessionLayer`](crate::SessionLayer)'s
/// builder methods and the deprecated [`SessionConfig`](crate::SessionConfig) both fill in.
#[must_use]
pub(crate) struct Config<T> {
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
    closures: Closures<T>,
    listeners: Vec<Arc<dyn SessionEvents<T>>>,
}

impl<T> Default for Config<T> {
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
            closures: Closures::default(),
            listeners: Vec::new(),
        }
    }
}

impl<T> Clone for Config<T> {
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
            closures: self.closures.clone(),
            listeners: self.listeners.clone(),
        }
    }
}

impl<T> fmt::Debug for Config<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
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
            .field("closures", &self.closures.names())
            .field("listeners", &self.listeners.len())
            .finish()
    }
}

impl<T> Config<T> {
    pub(crate) fn with_cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie_name = name.into();
        self
    }

    pub(crate) fn with_path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    pub(crate) fn with_domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    pub(crate) fn with_secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    pub(crate) fn with_http_only(mut self, http_only: bool) -> Self {
        self.http_only = http_only;
        self
    }

    pub(crate) fn with_same_site(mut self, same_site: SameSite) -> Self {
        self.same_site = same_site;
        self
    }

    pub(crate) fn with_persistent(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }

    pub(crate) fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    pub(crate) fn with_sliding_expiration(mut self, sliding: bool) -> Self {
        self.sliding = sliding;
        self
    }

    pub(crate) fn with_absolute_lifetime(mut self, lifetime: Duration) -> Self {
        self.absolute_lifetime = lifetime;
        self
    }

    pub(crate) fn with_error_response(mut self, status: StatusCode, body: Bytes) -> Self {
        self.error_status = status;
        self.error_body = body;
        self
    }

    pub(crate) fn with_concurrency(mut self, concurrency: Concurrency) -> Self {
        self.concurrency = concurrency;
        self
    }

    pub(crate) fn with_signing_keys(mut self, keys: Vec<Key>) -> Self {
        self.signing_keys = keys;
        self
    }

    pub(crate) fn with_ids_at_rest(mut self, ids_at_rest: IdsAtRest) -> Self {
        self.ids_at_rest = ids_at_rest;
        self
    }

    pub(crate) fn with_regenerate_grace(mut self, grace: Duration) -> Self {
        self.regenerate_grace = (!grace.is_zero()).then_some(grace);
        self
    }

    pub(crate) fn with_max_record_size(mut self, bytes: usize) -> Self {
        self.max_record_size = Some(bytes);
        self
    }

    /// The `on_*` closures, to set one.
    pub(crate) fn closures(&mut self) -> &mut Closures<T> {
        &mut self.closures
    }

    pub(crate) fn with_listener(mut self, listener: Arc<dyn SessionEvents<T>>) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Checks the configuration. `store_hashes_ids` is the store's preference for
    /// [`IdsAtRest::StoreDefault`] (hash unless its contents stay in the process).
    pub(crate) fn validate(&self, store_hashes_ids: bool) -> Result<Settings<T>, ConfigError>
    where
        T: 'static,
    {
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
                name: self.cookie_name.clone(),
                attributes,
                removal,
            },
            persistent: self.persistent,
            idle_timeout: self.idle_timeout,
            sliding: self.sliding,
            absolute_lifetime: self.absolute_lifetime,
            error_status: self.error_status,
            error_body: self.error_body.clone(),
            concurrency: self.concurrency,
            signer: Signer::new(self.signing_keys.clone()),
            regenerate_grace: self.regenerate_grace,
            max_record_size: self.max_record_size,
            at_rest: match self.ids_at_rest.clone() {
                IdsAtRest::Plain => AtRest::Plain,
                IdsAtRest::Hash => AtRest::Hash,
                IdsAtRest::KeyedHash(key) => AtRest::KeyedHash(key),
                IdsAtRest::StoreDefault if store_hashes_ids => AtRest::Hash,
                IdsAtRest::StoreDefault => AtRest::Plain,
            },
            events: Events::new(&self.closures, &self.listeners),
        })
    }
}

/// The longest timeout accepted (100 years): timestamps stay far from the ends of the calendar.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

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
    pub(crate) events: Events<T>,
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
            .field("events", &self.events)
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
