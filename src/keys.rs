//! Secret keys: signing session cookies and hashing IDs at rest.

use std::{fmt, sync::Arc};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::{
    error::ConfigError,
    id::{SessionId, SessionKey},
};

type HmacSha256 = Hmac<Sha256>;

/// The fewest key bytes accepted: a key must carry at least 256 bits.
const MIN_KEY_LEN: usize = 32;

/// A secret key (at least 32 bytes) for [`SessionLayer::with_signing_keys`],
/// [`IdsAtRest::KeyedHash`] and [`SessionLayer::cookie_only`]. Each use derives its own key from
/// it, so one secret may serve all three. `Debug` never prints it.
///
/// [`SessionLayer::with_signing_keys`]: crate::SessionLayer::with_signing_keys
/// [`SessionLayer::cookie_only`]: crate::SessionLayer::cookie_only
///
/// ```
/// use tower_typed_sessions::Key;
///
/// let key = Key::from_bytes(&[7u8; 32]).unwrap();
/// assert_eq!(format!("{key:?}"), "Key(REDACTED)");
/// assert!(Key::from_bytes(b"too short").is_err());
/// let random = Key::generate().unwrap();
/// ```
#[derive(Clone)]
pub struct Key(Arc<[u8]>);

impl Key {
    /// A key from secret bytes (at least 32, from a secret store or the environment).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ConfigError> {
        if bytes.len() < MIN_KEY_LEN {
            return Err(ConfigError::KeyTooShort);
        }
        Ok(Self(Arc::from(bytes)))
    }

    /// 32 bytes from the operating system's CSPRNG (valid for this process only: sessions
    /// signed with it die with the process).
    pub fn generate() -> Result<Self, crate::SessionError> {
        let mut bytes = [0u8; MIN_KEY_LEN];
        getrandom::fill(&mut bytes).map_err(|err| crate::SessionError::Random(Box::new(err)))?;
        Ok(Self(Arc::from(bytes.as_slice())))
    }

    /// A 256-bit key for one purpose, derived from this one (HMAC-SHA256 as a PRF over
    /// `domain`): the same secret may serve signing, hashing and sealing without any two
    /// sharing key material.
    pub(crate) fn derive(&self, domain: &[u8]) -> [u8; 32] {
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(domain);
        mac.finalize().into_bytes().into()
    }

    fn mac(&self, domain: &[u8], id: &SessionId) -> HmacSha256 {
        // HMAC accepts keys of any length: this cannot fail.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(domain);
        mac.update(id.expose_secret().as_bytes());
        mac
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(REDACTED)")
    }
}

/// How session IDs are kept in the store: what the [`SessionKey`] of a cookie's [`SessionId`] is.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum IdsAtRest {
    /// As the store prefers: hashed unless the store says its contents never leave the process
    /// ([`Store::contents_stay_in_process`](crate::Store::contents_stay_in_process), true for
    /// [`MemoryStore`](crate::MemoryStore) only). A custom store is hashed unless it opts out.
    #[default]
    StoreDefault,
    /// The raw ID is the store key.
    Plain,
    /// The store key is a SHA-256 digest of the ID: a dump of the store holds no live cookie,
    /// and a store key sent back as a cookie authenticates nothing.
    Hash,
    /// Like [`IdsAtRest::Hash`], with HMAC-SHA256 under a secret key, so that even a guessed
    /// ID cannot be checked against a stolen dump without the key.
    KeyedHash(Key),
}

const AT_REST_DOMAIN: &[u8] = b"tower-typed-sessions at-rest\0";
const COOKIE_DOMAIN: &[u8] = b"tower-typed-sessions cookie\0";

/// The resolved at-rest transform.
#[derive(Clone, Debug)]
pub(crate) enum AtRest {
    Plain,
    Hash,
    KeyedHash(Key),
}

impl AtRest {
    /// The key under which the session with cookie ID `id` is stored.
    pub(crate) fn storage_key(&self, id: &SessionId) -> SessionKey {
        match self {
            AtRest::Plain => SessionKey::plain(id),
            AtRest::Hash => SessionKey::hashed(id),
            AtRest::KeyedHash(key) => {
                SessionKey::from_digest(key.mac(AT_REST_DOMAIN, id).finalize().into_bytes().into())
            }
        }
    }
}

impl SessionKey {
    /// The key under which a session with cookie ID `id` is stored when IDs are hashed at rest
    /// with [`IdsAtRest::Hash`] (the default for stores whose contents leave the process): a
    /// SHA-256 digest, shaped like an ID.
    pub fn hashed(id: &SessionId) -> SessionKey {
        let digest = Sha256::new_with_prefix(AT_REST_DOMAIN)
            .chain_update(id.expose_secret().as_bytes())
            .finalize();
        SessionKey::from_digest(digest.into())
    }
}

/// Cookie signatures: the first key signs, every key verifies.
#[derive(Clone, Debug)]
pub(crate) struct Signer {
    keys: Vec<Key>,
}

/// What verifying a signed cookie value found.
pub(crate) enum Verified {
    /// Signed by the current key.
    Current(SessionId),
    /// Signed by an older key: valid, to be re-issued under the current key.
    Rotated(SessionId),
    /// A well-formed ID whose signature matches no key (or is missing).
    BadSignature,
    /// Not an ID at all.
    Malformed,
}

impl Signer {
    pub(crate) fn new(keys: Vec<Key>) -> Option<Self> {
        (!keys.is_empty()).then_some(Self { keys })
    }

    /// `id.signature`, the signature being 43 base64url characters of HMAC-SHA256.
    pub(crate) fn sign(&self, id: &SessionId) -> String {
        let tag: [u8; 32] = self.keys[0]
            .mac(COOKIE_DOMAIN, id)
            .finalize()
            .into_bytes()
            .into();
        format!(
            "{}.{}",
            id.expose_secret(),
            SessionId::from_digest(tag).expose_secret()
        )
    }

    pub(crate) fn verify(&self, value: &[u8]) -> Verified {
        let (id_part, signature) = match value.iter().position(|b| *b == b'.') {
            Some(dot) => (&value[..dot], Some(&value[dot + 1..])),
            None => (value, None),
        };
        let Some(id) = SessionId::parse_bytes(id_part) else {
            return Verified::Malformed;
        };
        let Some(signature) = signature.and_then(SessionId::parse_bytes) else {
            return Verified::BadSignature;
        };
        let Some(tag) = signature.decode() else {
            return Verified::BadSignature;
        };
        for (index, key) in self.keys.iter().enumerate() {
            // Constant-time comparison.
            if key.mac(COOKIE_DOMAIN, &id).verify_slice(&tag).is_ok() {
                return if index == 0 {
                    Verified::Current(id)
                } else {
                    Verified::Rotated(id)
                };
            }
        }
        Verified::BadSignature
    }
}
