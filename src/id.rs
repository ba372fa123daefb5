//! Session IDs (the cookie's secret) and session keys (what a store keys a session by): 256 bits
//! written as 43 base64url characters, strict parsing, and redacted printing.

use std::fmt;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::error::SessionError;

/// Random bytes behind one ID.
const ID_BYTES: usize = 32;
/// Length of the URL-safe base64 text of [`ID_BYTES`] bytes, without padding.
pub(crate) const ID_LEN: usize = 43;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Byte -> 6-bit value of [`ALPHABET`], or `INVALID`: one lookup per character on the hot path.
///
/// Every cookie is checked with this table rather than decoded with the `base64` crate (which
/// encodes and decodes here): under callgrind a million checks of a 43-character ID take 196
/// million instructions this way and 564 million through `decode_slice` (BENCHMARKS.md, "IDs:
/// base64url").
const INVALID: u8 = 0xff;
const DECODE: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < 64 {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// A session ID: 256 bits from the operating system's CSPRNG, written as 43 URL-safe base64
/// characters.
///
/// `Debug` and `Display` never print the ID itself, only a short, stable fingerprint
/// (`sid:` and 8 hex digits), so IDs can be correlated in logs without leaking a live cookie.
/// [`SessionId::expose_secret`] gives the raw value; use it only where the raw value must go
/// (a cookie, a store key).
///
/// ```
/// use tower_typed_sessions::SessionId;
///
/// let id = SessionId::generate().unwrap();
/// assert_eq!(id.expose_secret().len(), 43);
/// assert!(!format!("{id:?}").contains(id.expose_secret()));
/// assert_eq!(SessionId::parse(id.expose_secret()), Some(id));
/// assert_eq!(SessionId::parse("not-an-id"), None);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId([u8; ID_LEN]);

impl SessionId {
    /// Draws a new ID from the operating system's CSPRNG.
    ///
    /// Fails only if the operating system cannot provide random bytes.
    pub fn generate() -> Result<Self, SessionError> {
        let mut bytes = [0u8; ID_BYTES];
        getrandom::fill(&mut bytes).map_err(|err| SessionError::Random(Box::new(err)))?;
        Ok(Self(encode(&bytes)))
    }

    /// Parses the text form of an ID. Anything that is not exactly 43 characters of the URL-safe
    /// base64 alphabet in canonical form is refused.
    ///
    /// A well-formed ID is not a valid session: only the store knows which IDs it issued.
    pub fn parse(text: &str) -> Option<Self> {
        Self::parse_bytes(text.as_bytes())
    }

    /// Like [`SessionId::parse`], for raw bytes (for example a header value that is not UTF-8).
    pub fn parse_bytes(bytes: &[u8]) -> Option<Self> {
        let array: [u8; ID_LEN] = bytes.try_into().ok()?;
        if array.iter().any(|b| DECODE[usize::from(*b)] == INVALID) {
            return None;
        }
        // 256 bits fill 42 characters and 4 bits of the last: its 2 low bits must be zero,
        // so that each ID has exactly one text form.
        if DECODE[usize::from(array[ID_LEN - 1])] & 0b11 != 0 {
            return None;
        }
        Some(Self(array))
    }

    /// The raw ID, as it goes into the cookie. Treat it as a secret: whoever holds it holds the
    /// session. Never log it; `Display` gives a fingerprint for that.
    pub fn expose_secret(&self) -> &str {
        // Only ever built from ALPHABET characters, so it is ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// A short, stable, non-secret fingerprint of the ID (`sid:` and 8 hex digits), for logs.
    pub fn fingerprint(&self) -> String {
        format!("sid:{:08x}", (fnv1a(&self.0) >> 32) as u32)
    }

    /// An ID-shaped encoding of 32 digest bytes (signatures).
    pub(crate) fn from_digest(bytes: [u8; ID_BYTES]) -> Self {
        Self(encode(&bytes))
    }

    /// The 32 bytes behind the text form.
    pub(crate) fn decode(&self) -> Option<[u8; ID_BYTES]> {
        let mut out = [0u8; ID_BYTES];
        match URL_SAFE_NO_PAD.decode_slice(self.0, &mut out) {
            Ok(ID_BYTES) => Some(out),
            _ => None,
        }
    }
}

/// The key a store keeps one session under: what [`IdsAtRest`](crate::IdsAtRest) makes of the
/// cookie's [`SessionId`] (by default a SHA-256 digest of it, shaped like an ID).
///
/// It is a separate type from [`SessionId`] so that an API can only hand out the one it means:
/// handles, events, [`SessionManager`](crate::SessionManager) and stores see keys, and only
/// the cookie code sees IDs. A hashed key authenticates nothing when sent back as a cookie. With
/// [`IdsAtRest::Plain`](crate::IdsAtRest::Plain) the key's text is the cookie's value, so
/// `Debug` and `Display` print a fingerprint here too.
///
/// ```
/// use tower_typed_sessions::{SessionId, SessionKey};
///
/// let id = SessionId::generate().unwrap();
/// let key = SessionKey::hashed(&id);
/// assert_ne!(key.as_str(), id.expose_secret());
/// assert_eq!(SessionKey::parse(key.as_str()), Some(key));
/// assert!(!format!("{key:?}").contains(key.as_str()));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionKey([u8; ID_LEN]);

impl SessionKey {
    /// Parses the text form of a key (43 characters of base64url, canonical), as a store reads
    /// keys back from an index.
    pub fn parse(text: &str) -> Option<Self> {
        Self::parse_bytes(text.as_bytes())
    }

    /// Like [`SessionKey::parse`], for raw bytes.
    pub fn parse_bytes(bytes: &[u8]) -> Option<Self> {
        SessionId::parse_bytes(bytes).map(|id| Self(id.0))
    }

    /// The text form, as a store writes it into a key or an index.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The text form's bytes, without the UTF-8 check `as_str` makes (for a store's hot path).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key of the session whose cookie carries `id` when keys are the plain ID
    /// ([`IdsAtRest::Plain`](crate::IdsAtRest::Plain)).
    pub fn plain(id: &SessionId) -> Self {
        Self(id.0)
    }

    /// A random key, for store tests and for sessions that have no cookie.
    pub fn generate() -> Result<Self, SessionError> {
        SessionId::generate().map(|id| Self(id.0))
    }

    /// A short, stable, non-secret fingerprint of the key (`sid:` and 8 hex digits), for logs.
    pub fn fingerprint(&self) -> String {
        format!("sid:{:08x}", (fnv1a(&self.0) >> 32) as u32)
    }

    /// The session's public tag: a name for this session that can be shown to its user and sent
    /// back to revoke it, but that cannot be turned into the key or the ID (it is a SHA-256
    /// digest of the key).
    pub fn tag(&self) -> SessionTag {
        let digest = Sha256::new_with_prefix(b"tower-typed-sessions tag\0")
            .chain_update(self.0)
            .finalize();
        let mut text = [0u8; TAG_LEN];
        // 16 bytes are exactly 32 hex digits: the slice always fits.
        let _ = hex::encode_to_slice(&digest[..TAG_LEN / 2], &mut text);
        SessionTag(text)
    }

    pub(crate) fn from_digest(bytes: [u8; ID_BYTES]) -> Self {
        Self(encode(&bytes))
    }

    /// A well-spread 64-bit hash of the key, for sharding.
    pub(crate) fn shard_hash(&self) -> u64 {
        fnv1a(&self.0)
    }
}

const TAG_LEN: usize = 32;

/// A non-secret name for one session (32 hex digits of a SHA-256 digest of its key), used to list
/// and revoke a user's sessions. It changes when the ID is regenerated.
///
/// ```
/// use tower_typed_sessions::{SessionKey, SessionTag};
///
/// let key = SessionKey::generate().unwrap();
/// let tag = key.tag();
/// assert_eq!(SessionTag::parse(&tag.to_string()), Some(tag));
/// assert!(!tag.to_string().contains(key.as_str()));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SessionTag([u8; TAG_LEN]);

impl SessionTag {
    /// Parses the text form (32 lowercase hex digits).
    pub fn parse(text: &str) -> Option<Self> {
        let array: [u8; TAG_LEN] = text.as_bytes().try_into().ok()?;
        array
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
            .then_some(Self(array))
    }

    /// The text form.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for SessionTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for SessionTag {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// FNV-1a: a fast, well-spread, non-cryptographic hash for sharding and fingerprints.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn encode(bytes: &[u8; ID_BYTES]) -> [u8; ID_LEN] {
    let mut out = [0u8; ID_LEN];
    // 32 bytes are exactly 43 characters without padding: the slice always fits.
    let _ = URL_SAFE_NO_PAD.encode_slice(bytes, &mut out);
    out
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", self.fingerprint())
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fingerprint())
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionKey({})", self.fingerprint())
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fingerprint())
    }
}

impl Serialize for SessionKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SessionKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A visitor instead of a `String`/`Cow` (which serde always makes owned): parsing the
        // key in place costs no allocation on every store load.
        struct KeyVisitor;
        impl de::Visitor<'_> for KeyVisitor {
            type Value = SessionKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a session key")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<SessionKey, E> {
                SessionKey::parse(text).ok_or_else(|| E::custom("malformed session key"))
            }
            fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<SessionKey, E> {
                SessionKey::parse_bytes(bytes).ok_or_else(|| E::custom("malformed session key"))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back_and_differ() {
        let a = SessionId::generate().unwrap();
        let b = SessionId::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(SessionId::parse(a.expose_secret()), Some(a));
    }

    #[test]
    fn serde_round_trip_refuses_malformed_keys() {
        let key = SessionKey::generate().unwrap();
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(serde_json::from_str::<SessionKey>(&json).unwrap(), key);
        // An escaped form of the same text is the same key (serde_json hands over an owned str).
        let escaped = format!(
            "\"\\u{:04x}{}\"",
            key.as_str().as_bytes()[0],
            &key.as_str()[1..]
        );
        assert_eq!(serde_json::from_str::<SessionKey>(&escaped).unwrap(), key);
        for bad in ["\"short\"", "42", "null", "[]"] {
            assert!(serde_json::from_str::<SessionKey>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refuses_non_canonical_and_foreign_text() {
        let id = SessionId::generate().unwrap();
        let mut text = id.expose_secret().as_bytes().to_vec();
        // Flip the last character to one with low bits set: not canonical.
        text[ID_LEN - 1] = b'B';
        assert_eq!(SessionId::parse_bytes(&text), None);
        text[ID_LEN - 1] = b'+';
        assert_eq!(SessionId::parse_bytes(&text), None);
        assert_eq!(SessionId::parse_bytes(&text[..ID_LEN - 1]), None);
        assert_eq!(SessionId::parse_bytes(&[0xff; ID_LEN]), None);
    }

    #[test]
    fn decode_inverts_encode() {
        let bytes: [u8; ID_BYTES] = std::array::from_fn(|i| (i * 37 + 11) as u8);
        assert_eq!(SessionId::from_digest(bytes).decode(), Some(bytes));
    }

    #[test]
    fn encoding_matches_base64url() {
        let bytes = [0xffu8; ID_BYTES];
        let text = encode(&bytes);
        assert_eq!(&text[..42], "_".repeat(42).as_bytes());
        // The last 4 bits (1111) padded with two zero bits: 0b111100 = 60 = '8'.
        assert_eq!(text[42], b'8');
        let zero = encode(&[0u8; ID_BYTES]);
        assert_eq!(&zero, "A".repeat(43).as_bytes());
    }
}
