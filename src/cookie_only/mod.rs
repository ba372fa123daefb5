//! Cookie-only sessions: the backend with no store. The whole typed session, its expiry and its
//! deadline travel sealed in the cookie ([`seal`]); an optional revocation list
//! ([`revocation`]) refuses copies of ended sessions. The engine's sealed path
//! (`engine/sealed.rs`) loads and writes through them.

pub(crate) mod revocation;
pub(crate) mod seal;

use std::fmt;

use crate::{
    error::StoreError,
    id::SessionKey,
    keys::Key,
    record::Record,
    session::Session,
    store::{Expect, Forward, LoadOptions, Loaded, Store, WriteOutcome},
};

pub use revocation::Revoked;
pub use seal::MAX_COOKIE_BYTES;

use revocation::RevocationList;
use seal::Sealer;

/// The store type of a cookie-only layer ([`SessionLayer::cookie_only`]): there is none, the
/// session lives in the cookie. It exists so that a cookie-only layer has the same type shape
/// as any other (`SessionLayer<T, CookieOnly>`); it cannot be made outside the crate, and as a
/// [`Store`] it holds nothing (every operation answers [`StoreError::Unsupported`]).
///
/// [`SessionLayer::cookie_only`]: crate::SessionLayer::cookie_only
pub struct CookieOnly {
    _private: (),
}

impl CookieOnly {
    pub(crate) fn new() -> Self {
        Self { _private: () }
    }
}

impl fmt::Debug for CookieOnly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CookieOnly")
    }
}

const NO_STORE: StoreError = StoreError::Unsupported("a cookie-only layer has no store");

impl<T: Session> Store<T> for CookieOnly {
    async fn load(&self, _: &SessionKey, _: LoadOptions) -> Result<Loaded<T>, StoreError> {
        Err(NO_STORE)
    }

    async fn create(&self, _: &Record<T>) -> Result<WriteOutcome, StoreError> {
        Err(NO_STORE)
    }

    async fn save(&self, _: &Record<T>, _: Expect) -> Result<WriteOutcome, StoreError> {
        Err(NO_STORE)
    }

    async fn regenerate(
        &self,
        _: &SessionKey,
        _: &Record<T>,
        _: Expect,
        _: Forward,
    ) -> Result<WriteOutcome, StoreError> {
        Err(NO_STORE)
    }

    async fn delete(&self, _: &SessionKey, _: Expect) -> Result<WriteOutcome, StoreError> {
        Err(NO_STORE)
    }

    /// Keys only name sessions in events and in the revocation list, whose own store decides.
    fn contents_stay_in_process(&self) -> bool {
        true
    }
}

/// Where a cookie-only engine's sessions live: its keys, and its revocation list if it has one.
#[derive(Debug)]
pub(crate) struct Sealed {
    pub(crate) sealer: Sealer,
    pub(crate) revocations: Option<RevocationList>,
}

impl Sealed {
    /// `None` without keys.
    pub(crate) fn new(keys: impl IntoIterator<Item = Key>) -> Option<Self> {
        Some(Self {
            sealer: Sealer::new(keys)?,
            revocations: None,
        })
    }

    /// Whether IDs should be hashed at rest by default: only when a revocation list keeps them
    /// outside the process (without one they never leave it).
    pub(crate) fn hashes_ids_by_default(&self) -> bool {
        self.revocations
            .as_ref()
            .is_some_and(|list| !list.contents_stay_in_process())
    }
}
