//! Sealing a session record into a cookie value and opening it again.
//!
//! A sealed value is `base64url(version || nonce || ciphertext || tag)`: XChaCha20-Poly1305
//! under a key derived from the application's [`Key`], with a random 192-bit nonce (random
//! nonces of that size never repeat in practice, so no counter has to be kept across
//! instances). The associated data binds the version and the cookie's name, so a value sealed
//! for one cookie does not open as another.

use std::{fmt, time::Duration};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use chacha20poly1305::{
    aead::{AeadInPlace, KeyInit},
    Tag, XChaCha20Poly1305, XNonce,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{
    csrf::CsrfToken,
    error::SessionError,
    flash::Flash,
    id::{SessionId, SessionKey},
    keys::Key,
    record::{optional_millis, unix_millis, Record, RECORD_FORMAT},
};

/// The most bytes of name and value a cookie-only session's cookie may have. RFC 6265 (§6.1)
/// asks browsers to keep at least 4096 bytes per cookie; Chromium and Firefox count the name
/// and value against that limit (Chromium's `kMaxCookieNamePlusValueSize`). A cookie-only
/// session whose sealed cookie would be larger is refused with
/// [`SessionError::CookieTooLarge`](crate::SessionError::CookieTooLarge).
pub const MAX_COOKIE_BYTES: usize = 4096;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Bytes a sealed value adds to the payload before base64: version, nonce, tag.
const OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;
const SEAL_DOMAIN: &[u8] = b"tower-typed-sessions cookie seal\0";
const AAD_PREFIX: &[u8] = b"tower-typed-sessions sealed\0";

/// The layer's sealing keys: the first seals, every one opens.
#[derive(Clone)]
pub(crate) struct Sealer {
    ciphers: Vec<XChaCha20Poly1305>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("keys", &self.ciphers.len())
            .finish()
    }
}

/// What opening a cookie value found.
pub(crate) enum Opened<T> {
    /// A payload this layer sealed. `rotated`: sealed with an older key.
    Sealed { payload: Payload<T>, rotated: bool },
    /// Authentic (it opened), but its content does not decode as the session type: the type
    /// changed since it was sealed. `id` when the ID could still be read.
    Undecodable(Option<SessionId>),
    /// Not a value any configured key sealed for this cookie.
    Forged,
}

/// The content of a sealed cookie: a [`Record`] less what only a store needs (the revision, the
/// last write), with the cookie's own ID instead of the storage key.
pub(crate) struct Payload<T> {
    pub(crate) id: SessionId,
    data: T,
    flash: Flash,
    has_data: bool,
    created_at: OffsetDateTime,
    expires_at: OffsetDateTime,
    deadline: OffsetDateTime,
    idle_timeout: Option<Duration>,
    csrf_token: Option<CsrfToken>,
}

impl<T> Payload<T> {
    /// The record the engine works on, kept under `key` (the ID as the layer keeps IDs at rest).
    pub(crate) fn into_record(self, key: SessionKey) -> Record<T> {
        Record {
            format: RECORD_FORMAT,
            key,
            data: self.data,
            flash: self.flash,
            has_data: self.has_data,
            created_at: self.created_at,
            revision: 0,
            last_seen: self.created_at,
            expires_at: self.expires_at,
            deadline: self.deadline,
            idle_timeout: self.idle_timeout,
            csrf_token: self.csrf_token,
        }
    }
}

/// Short field names: every byte of the payload costs 4/3 of a byte in the cookie.
#[derive(Serialize)]
struct Outgoing<'a, T> {
    #[serde(rename = "i")]
    id: &'a str,
    #[serde(rename = "d")]
    data: &'a T,
    #[serde(rename = "f", skip_serializing_if = "no_flash")]
    flash: &'a Flash,
    #[serde(rename = "h")]
    has_data: bool,
    #[serde(rename = "c", with = "unix_millis")]
    created_at: OffsetDateTime,
    #[serde(rename = "x", with = "unix_millis")]
    expires_at: OffsetDateTime,
    #[serde(rename = "l", with = "unix_millis")]
    deadline: OffsetDateTime,
    #[serde(
        rename = "t",
        skip_serializing_if = "Option::is_none",
        with = "optional_millis"
    )]
    idle_timeout: Option<Duration>,
    #[serde(rename = "k", skip_serializing_if = "Option::is_none")]
    csrf_token: Option<&'a CsrfToken>,
}

fn no_flash(flash: &&Flash) -> bool {
    flash.is_empty()
}

#[derive(Deserialize)]
struct Incoming<T> {
    #[serde(rename = "i")]
    id: String,
    #[serde(rename = "d")]
    data: T,
    #[serde(rename = "f", default)]
    flash: Flash,
    #[serde(rename = "h")]
    has_data: bool,
    #[serde(rename = "c", with = "unix_millis")]
    created_at: OffsetDateTime,
    #[serde(rename = "x", with = "unix_millis")]
    expires_at: OffsetDateTime,
    #[serde(rename = "l", with = "unix_millis")]
    deadline: OffsetDateTime,
    #[serde(rename = "t", default, with = "optional_millis")]
    idle_timeout: Option<Duration>,
    #[serde(rename = "k", default)]
    csrf_token: Option<CsrfToken>,
}

/// Only the ID, to name a session whose data no longer decodes.
#[derive(Deserialize)]
struct IdOnly {
    #[serde(rename = "i")]
    id: String,
}

impl Sealer {
    /// `None` without keys.
    pub(crate) fn new(keys: impl IntoIterator<Item = Key>) -> Option<Self> {
        let ciphers: Vec<_> = keys
            .into_iter()
            .map(|key| XChaCha20Poly1305::new(&key.derive(SEAL_DOMAIN).into()))
            .collect();
        (!ciphers.is_empty()).then_some(Self { ciphers })
    }

    /// Seals `record` (under the cookie ID `id`) into the value of the cookie `name`. Refused,
    /// before any encryption, if name and value would pass [`MAX_COOKIE_BYTES`].
    pub(crate) fn seal<T: Serialize>(
        &self,
        name: &str,
        id: &SessionId,
        record: &Record<T>,
    ) -> Result<String, SessionError> {
        let outgoing = Outgoing {
            id: id.expose_secret(),
            data: &record.data,
            flash: &record.flash,
            has_data: record.has_data,
            created_at: record.created_at,
            expires_at: record.expires_at,
            deadline: record.deadline,
            idle_timeout: record.idle_timeout,
            csrf_token: record.csrf_token.as_ref(),
        };
        let mut sealed = Vec::with_capacity(512);
        sealed.push(VERSION);
        sealed.extend_from_slice(&[0; NONCE_LEN]);
        serde_json::to_writer(&mut sealed, &outgoing)
            .map_err(|err| SessionError::Encode(Box::new(err)))?;
        let size = name.len() + 1 + encoded_len(sealed.len() + TAG_LEN);
        if size > MAX_COOKIE_BYTES {
            return Err(SessionError::CookieTooLarge {
                size,
                limit: MAX_COOKIE_BYTES,
            });
        }
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|err| SessionError::Random(Box::new(err)))?;
        sealed[1..=NONCE_LEN].copy_from_slice(&nonce);
        let (head, plaintext) = sealed.split_at_mut(1 + NONCE_LEN);
        let tag = self.ciphers[0]
            .encrypt_in_place_detached(
                XNonce::from_slice(&head[1..]),
                &aad(VERSION, name),
                plaintext,
            )
            // Only a message longer than the cipher's 256 GiB limit fails.
            .map_err(|_| SessionError::CookieTooLarge {
                size,
                limit: MAX_COOKIE_BYTES,
            })?;
        sealed.extend_from_slice(&tag);
        Ok(URL_SAFE_NO_PAD.encode(&sealed))
    }

    /// Opens the value of the cookie `name`, trying each key in turn.
    pub(crate) fn open<T: DeserializeOwned>(&self, name: &str, value: &[u8]) -> Opened<T> {
        // No browser sends more; refusing early bounds the work a forged header can cause.
        if value.len() > MAX_COOKIE_BYTES {
            return Opened::Forged;
        }
        let Ok(mut sealed) = URL_SAFE_NO_PAD.decode(value) else {
            return Opened::Forged;
        };
        if sealed.len() < OVERHEAD || sealed[0] != VERSION {
            return Opened::Forged;
        }
        let tag_at = sealed.len() - TAG_LEN;
        let tag = *Tag::from_slice(&sealed[tag_at..]);
        sealed.truncate(tag_at);
        let (head, ciphertext) = sealed.split_at_mut(1 + NONCE_LEN);
        let nonce = *XNonce::from_slice(&head[1..]);
        let aad = aad(head[0], name);
        // Older keys get a copy each: a failed attempt must not leave the ciphertext altered
        // for the next one, whatever order the cipher checks and decrypts in.
        let pristine = (self.ciphers.len() > 1).then(|| ciphertext.to_vec());
        let mut opened_by = None;
        for (index, cipher) in self.ciphers.iter().enumerate() {
            if index > 0 {
                if let Some(pristine) = &pristine {
                    ciphertext.copy_from_slice(pristine);
                }
            }
            if cipher
                .decrypt_in_place_detached(&nonce, &aad, ciphertext, &tag)
                .is_ok()
            {
                opened_by = Some(index);
                break;
            }
        }
        let Some(index) = opened_by else {
            return Opened::Forged;
        };
        let plaintext = &sealed[1 + NONCE_LEN..];
        match serde_json::from_slice::<Incoming<T>>(plaintext) {
            Ok(incoming) => match SessionId::parse(&incoming.id) {
                Some(id) => Opened::Sealed {
                    payload: Payload {
                        id,
                        data: incoming.data,
                        flash: incoming.flash,
                        has_data: incoming.has_data,
                        created_at: incoming.created_at,
                        expires_at: incoming.expires_at,
                        deadline: incoming.deadline,
                        idle_timeout: incoming.idle_timeout,
                        csrf_token: incoming.csrf_token,
                    },
                    rotated: index > 0,
                },
                None => Opened::Undecodable(None),
            },
            Err(_) => Opened::Undecodable(
                serde_json::from_slice::<IdOnly>(plaintext)
                    .ok()
                    .and_then(|only| SessionId::parse(&only.id)),
            ),
        }
    }
}

/// What is authenticated besides the payload: the format version and the cookie's name.
fn aad(version: u8, name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_PREFIX.len() + 1 + name.len());
    aad.extend_from_slice(AAD_PREFIX);
    aad.push(version);
    aad.extend_from_slice(name.as_bytes());
    aad
}

/// Length of unpadded base64 of `n` bytes.
fn encoded_len(n: usize) -> usize {
    (n * 4).div_ceil(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(seeds: &[u8]) -> Sealer {
        Sealer::new(
            seeds
                .iter()
                .map(|seed| Key::from_bytes(&[*seed; 32]).unwrap()),
        )
        .unwrap()
    }

    fn record(data: String) -> (SessionId, Record<String>) {
        let id = SessionId::generate().unwrap();
        let now = OffsetDateTime::now_utc();
        let record = Record::new(
            SessionKey::plain(&id),
            data,
            now,
            Duration::from_secs(60),
            Duration::from_secs(3600),
        );
        (id, record)
    }

    #[test]
    fn opens_what_it_sealed_and_nothing_else() {
        let (id, record) = record("cart".into());
        let value = sealer(&[1]).seal("id", &id, &record).unwrap();
        let Opened::Sealed { payload, rotated } =
            sealer(&[1]).open::<String>("id", value.as_bytes())
        else {
            panic!("did not open");
        };
        assert!(!rotated);
        assert_eq!(payload.id, id);
        assert_eq!(payload.data, "cart");
        // Another key, another cookie name, another session type.
        assert!(matches!(
            sealer(&[2]).open::<String>("id", value.as_bytes()),
            Opened::Forged
        ));
        assert!(matches!(
            sealer(&[1]).open::<String>("sid", value.as_bytes()),
            Opened::Forged
        ));
        assert!(matches!(
            sealer(&[1]).open::<u64>("id", value.as_bytes()),
            Opened::Undecodable(Some(found)) if found == id
        ));
    }

    #[test]
    fn every_key_opens_and_reports_rotation() {
        let (id, record) = record("x".into());
        let old = sealer(&[2]).seal("id", &id, &record).unwrap();
        assert!(matches!(
            sealer(&[1, 2]).open::<String>("id", old.as_bytes()),
            Opened::Sealed { rotated: true, .. }
        ));
    }

    #[test]
    fn size_is_checked_before_sealing() {
        let (id, record) = record("a".repeat(MAX_COOKIE_BYTES));
        assert!(matches!(
            sealer(&[1]).seal("id", &id, &record),
            Err(SessionError::CookieTooLarge { size, limit: MAX_COOKIE_BYTES }) if size > MAX_COOKIE_BYTES
        ));
    }
}
