//! Error types: store failures, layer failures and configuration mistakes.

use std::{error::Error as StdError, fmt};

/// A boxed error from a backend, kept as the `source()` of the typed errors below.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// A failure reported by a [`Store`](crate::Store).
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed: connection refused or dropped, I/O, protocol.
    Backend(BoxError),
    /// The backend did not answer in time.
    Timeout,
    /// A stored record could not be decoded (for example the session struct changed, or the
    /// value under the key is not a session record). The layer answers this with a fresh session,
    /// not an error.
    Decode(BoxError),
    /// A record could not be encoded.
    Encode(BoxError),
    /// The store holds its configured maximum number of sessions.
    CapacityExceeded {
        /// The configured maximum.
        limit: usize,
    },
    /// The store does not offer this optional capability (the owner index, counting).
    Unsupported(&'static str),
    /// A write followed more forwarding pointers than a session can have been regenerated in
    /// flight: the store's pointers form a loop or an absurdly long chain.
    TooManyForwards,
}

impl StoreError {
    /// Whether this is a decode failure (the record exists but cannot be read as this type).
    pub fn is_decode(&self) -> bool {
        matches!(self, StoreError::Decode(_))
    }

    /// Whether the backend timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, StoreError::Timeout)
    }

    /// Whether the store lacks the optional capability that was asked for.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, StoreError::Unsupported(_))
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Backend(err) => write!(f, "session store backend failed: {err}"),
            StoreError::Timeout => f.write_str("session store timed out"),
            StoreError::Decode(err) => write!(f, "stored session could not be decoded: {err}"),
            StoreError::Encode(err) => write!(f, "session could not be encoded: {err}"),
            StoreError::CapacityExceeded { limit } => {
                write!(f, "session store is full ({limit} sessions)")
            }
            StoreError::Unsupported(what) => {
                write!(f, "the session store does not support {what}")
            }
            StoreError::TooManyForwards => f.write_str(
                "the session store's forwarding pointers form a chain too long to follow",
            ),
        }
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            StoreError::Backend(err) | StoreError::Decode(err) | StoreError::Encode(err) => {
                Some(err.as_ref())
            }
            StoreError::Timeout
            | StoreError::CapacityExceeded { .. }
            | StoreError::Unsupported(_)
            | StoreError::TooManyForwards => None,
        }
    }
}

/// Which store operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreOperation {
    /// Creating a new session.
    Create,
    /// Loading a session (with or without sliding its expiry).
    Load,
    /// Saving a changed session.
    Save,
    /// Deleting a session.
    Delete,
    /// Moving a session to a new ID.
    Regenerate,
    /// Counting sessions.
    Count,
    /// Updating or reading the owner index.
    Index,
}

impl fmt::Display for StoreOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreOperation::Create => "create",
            StoreOperation::Load => "load",
            StoreOperation::Save => "save",
            StoreOperation::Delete => "delete",
            StoreOperation::Regenerate => "regenerate",
            StoreOperation::Count => "count",
            StoreOperation::Index => "owner index",
        })
    }
}

/// A failure of the session layer while handling one request. The layer reports it to the
/// `error` event and answers with its configured error response, without any Set-Cookie.
#[derive(Debug)]
#[non_exhaustive]
pub enum SessionError {
    /// A store operation failed.
    Store {
        /// What the layer was doing.
        operation: StoreOperation,
        /// What the store said.
        source: StoreError,
    },
    /// The operating system's random number generator failed.
    Random(BoxError),
    /// The store reported an ID collision on every attempt (a broken store or random source).
    IdCollision,
    /// The session changed or moved since this request loaded it and the write was refused:
    /// under optimistic concurrency a save or regenerate from an older copy (or a save that finds
    /// the session ended); in any mode a save or regenerate of a session another request
    /// regenerated meanwhile. Answered with the conflict status (409 by default), without
    /// Set-Cookie.
    Conflict,
    /// The request reached the session through a regenerate grace window (its cookie is the old
    /// one) and tried to change it: such a request may only read. Answered like a conflict.
    ReadOnly,
    /// The session's serialized record is larger than the configured maximum: nothing was
    /// written (never a silent truncation).
    RecordTooLarge {
        /// The configured maximum, in bytes.
        limit: usize,
    },
    /// A cookie-only session ([`SessionLayer::cookie_only`](crate::SessionLayer::cookie_only))
    /// sealed into a cookie larger than browsers keep: nothing was sent (never a truncated or
    /// dropped cookie), and the client keeps the cookie it had.
    CookieTooLarge {
        /// The cookie's name and sealed value, in bytes.
        size: usize,
        /// The most a browser keeps ([`MAX_COOKIE_BYTES`](crate::MAX_COOKIE_BYTES)).
        limit: usize,
    },
    /// The session data could not be serialized (its `Serialize` implementation failed).
    Encode(BoxError),
}

impl SessionError {
    /// The store error, if a store operation failed.
    pub fn store_error(&self) -> Option<&StoreError> {
        match self {
            SessionError::Store { source, .. } => Some(source),
            _ => None,
        }
    }

    /// The store operation that failed, if any.
    pub fn operation(&self) -> Option<StoreOperation> {
        match self {
            SessionError::Store { operation, .. } => Some(*operation),
            _ => None,
        }
    }
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Store { operation, source } => {
                write!(f, "session {operation} failed: {source}")
            }
            SessionError::Random(err) => write!(f, "random number generator failed: {err}"),
            SessionError::IdCollision => f.write_str("could not find an unused session id"),
            SessionError::Conflict => f.write_str("the session changed concurrently"),
            SessionError::ReadOnly => f.write_str(
                "the session was regenerated; a request with the old cookie may only read it",
            ),
            SessionError::RecordTooLarge { limit } => {
                write!(
                    f,
                    "the session record is larger than the maximum of {limit} bytes"
                )
            }
            SessionError::CookieTooLarge { size, limit } => write!(
                f,
                "the sealed session cookie would be {size} bytes, over the {limit} browsers keep"
            ),
            SessionError::Encode(err) => write!(f, "the session data could not be encoded: {err}"),
        }
    }
}

impl StdError for SessionError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            SessionError::Store { source, .. } => Some(source),
            SessionError::Random(err) | SessionError::Encode(err) => Some(err.as_ref()),
            SessionError::IdCollision
            | SessionError::CookieTooLarge { .. }
            | SessionError::Conflict
            | SessionError::ReadOnly
            | SessionError::RecordTooLarge { .. } => None,
        }
    }
}

/// A configuration that cannot work, refused when the layer is built.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The cookie name is empty or has characters a cookie name cannot have.
    InvalidCookieName,
    /// The cookie path is empty, does not start with `/`, or has `;` or control characters.
    InvalidPath,
    /// The cookie domain has characters a domain cannot have.
    InvalidDomain,
    /// A `__Host-` cookie must not have a Domain.
    HostPrefixWithDomain,
    /// A `__Host-` cookie must have `Path=/`.
    HostPrefixWithPath,
    /// A `__Host-` or `__Secure-` cookie must be Secure.
    PrefixWithoutSecure,
    /// `SameSite=None` is only accepted by browsers on Secure cookies.
    SameSiteNoneWithoutSecure,
    /// The idle timeout or the absolute lifetime is zero.
    ZeroTimeout,
    /// A timeout or the grace window is longer than 100 years.
    DurationTooLong,
    /// A secret key is shorter than 32 bytes.
    KeyTooShort,
    /// The login path of [`RequireLogin`](crate::RequireLogin) is not a local path without a
    /// query.
    InvalidLoginPath,
    /// [`SessionLayer::cookie_only`](crate::SessionLayer::cookie_only) was given no key.
    NoKeys,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConfigError::InvalidCookieName => "invalid session cookie name",
            ConfigError::InvalidPath => "invalid session cookie path",
            ConfigError::InvalidDomain => "invalid session cookie domain",
            ConfigError::HostPrefixWithDomain => "a __Host- cookie must not set a Domain",
            ConfigError::HostPrefixWithPath => "a __Host- cookie must use Path=/",
            ConfigError::PrefixWithoutSecure => "a __Host- or __Secure- cookie must be Secure",
            ConfigError::SameSiteNoneWithoutSecure => "SameSite=None requires Secure",
            ConfigError::ZeroTimeout => "session timeouts must be greater than zero",
            ConfigError::DurationTooLong => "session timeouts must be at most 100 years",
            ConfigError::KeyTooShort => "secret keys must be at least 32 bytes",
            ConfigError::InvalidLoginPath => "the login path must be a local path without a query",
            ConfigError::NoKeys => "cookie-only sessions need at least one key",
        })
    }
}

impl StdError for ConfigError {}
