//! The stored form of a session.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{csrf::CsrfToken, error::StoreError, flash::Flash, id::SessionKey};

/// The record format this version of the crate writes. Stores keep it with each record so that a
/// later format can still read records written by this one; [`Record::decode`] refuses a newer
/// one.
pub const RECORD_FORMAT: u16 = 2;

/// One session as a [`Store`](crate::Store) keeps it.
///
/// Records are built by the layer; stores persist and return them. The fields are public so that
/// a backend can read the expiry (to set a TTL, for example) and the revision (to check a write).
/// A backend that keeps bytes uses [`Record::encode`] and [`Record::decode`], so the format and
/// its versioning live in one place.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Record<T> {
    /// Format version of this record ([`RECORD_FORMAT`] when written by this crate).
    #[serde(rename = "v")]
    pub format: u16,
    /// The key the store keeps the session under.
    pub key: SessionKey,
    /// The application's data.
    pub data: T,
    /// Flash messages waiting for the next request.
    #[serde(default, skip_serializing_if = "Flash::is_empty")]
    pub flash: Flash,
    /// Whether the application ever stored data in this session, as opposed to a flash message
    /// only. A session that only carried a flash is removed once the flash is consumed.
    #[serde(default)]
    pub has_data: bool,
    /// When the session was created. Regenerating the ID keeps it.
    #[serde(with = "unix_millis")]
    pub created_at: OffsetDateTime,
    /// How many times the session was written (saved or regenerated). Every write states the
    /// revision it read; optimistic concurrency refuses one whose copy is older than the store's.
    #[serde(default)]
    pub revision: u64,
    /// When the session was last written.
    #[serde(with = "unix_millis")]
    pub last_seen: OffsetDateTime,
    /// Idle expiry: the session is dead after this unless it is used (and sliding is on).
    #[serde(with = "unix_millis")]
    pub expires_at: OffsetDateTime,
    /// Absolute deadline: the session is dead after this whatever happens.
    #[serde(with = "unix_millis")]
    pub deadline: OffsetDateTime,
    /// The session's own idle timeout, when a handler gave it a lifetime of its own
    /// ([`SessionHandle::remember`](crate::SessionHandle::remember)); `None` for the layer's.
    /// The layer slides such a session by it and sends it a persistent cookie.
    #[serde(
        rename = "idle_ms",
        default,
        skip_serializing_if = "Option::is_none",
        with = "optional_millis"
    )]
    pub idle_timeout: Option<Duration>,
    /// The session's CSRF token, once a handler asked for one
    /// ([`SessionHandle::csrf_token`](crate::SessionHandle::csrf_token)); replaced when the
    /// session is regenerated.
    #[serde(rename = "csrf", default, skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<CsrfToken>,
}

impl<T> Record<T> {
    pub(crate) fn new(
        key: SessionKey,
        data: T,
        now: OffsetDateTime,
        idle: Duration,
        lifetime: Duration,
    ) -> Self {
        let deadline = now + lifetime;
        Self {
            format: RECORD_FORMAT,
            key,
            data,
            flash: Flash::default(),
            has_data: false,
            created_at: now,
            revision: 0,
            last_seen: now,
            expires_at: (now + idle).min(deadline),
            deadline,
            idle_timeout: None,
            csrf_token: None,
        }
    }

    /// The moment the session dies: the earlier of the idle expiry and the absolute deadline.
    pub fn effective_expiry(&self) -> OffsetDateTime {
        self.expires_at.min(self.deadline)
    }

    /// Whether the session is dead at `now`.
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        now >= self.effective_expiry()
    }

    /// Time left before the session dies (zero once it has).
    pub fn time_until_expiry(&self, now: OffsetDateTime) -> Duration {
        (self.effective_expiry() - now)
            .try_into()
            .unwrap_or(Duration::ZERO)
    }

    /// Slides the idle expiry to `now + idle`, never past the absolute deadline.
    pub fn touch(&mut self, now: OffsetDateTime, idle: Duration) {
        self.last_seen = now;
        self.expires_at = (now + idle).min(self.deadline);
    }
}

impl<T: Serialize> Record<T> {
    /// The stored form of the record (JSON), flash messages included.
    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(self).map_err(|err| StoreError::Encode(Box::new(err)))
    }

    /// The stored form without the flash messages, for a backend that keeps them apart so that
    /// a load can take them in the same step (see [`Flash::encode`]).
    pub fn encode_without_flash(&self) -> Result<Vec<u8>, StoreError> {
        let mut bytes = Vec::with_capacity(256);
        self.write_without_flash(&mut bytes)?;
        Ok(bytes)
    }

    /// Like [`Record::encode_without_flash`], written into `writer` (a command buffer, say).
    pub fn write_without_flash(&self, writer: impl std::io::Write) -> Result<(), StoreError> {
        serde_json::to_writer(writer, &WithoutFlash(self))
            .map_err(|err| StoreError::Encode(Box::new(err)))
    }
}

impl<T: serde::de::DeserializeOwned> Record<T> {
    /// Reads a record written by [`Record::encode`] or [`Record::encode_without_flash`] from under
    /// `key`. Refuses a record stored under another key, a newer format than this crate writes,
    /// and anything that is not a record of `T`: all as [`StoreError::Decode`], which the layer
    /// answers with a fresh session.
    pub fn decode(key: &SessionKey, bytes: &[u8]) -> Result<Self, StoreError> {
        let record: Record<T> =
            serde_json::from_slice(bytes).map_err(|err| StoreError::Decode(Box::new(err)))?;
        if record.key != *key {
            return Err(StoreError::Decode(
                "record stored under another session's key".into(),
            ));
        }
        if record.format > RECORD_FORMAT {
            // Written by a newer version of this crate: its meaning may differ, so do not guess.
            return Err(StoreError::Decode(
                format!(
                    "record format {} is newer than {RECORD_FORMAT}",
                    record.format
                )
                .into(),
            ));
        }
        Ok(record)
    }
}

/// `t` in whole milliseconds since the Unix epoch, the precision records keep.
pub(crate) fn unix_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// A record serialized with an empty flash (which `Record` leaves out of the JSON).
struct WithoutFlash<'a, T>(&'a Record<T>);

impl<T: Serialize> Serialize for WithoutFlash<'_, T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let r = self.0;
        let mut out = s.serialize_struct("Record", 11)?;
        out.serialize_field("v", &r.format)?;
        out.serialize_field("key", &r.key)?;
        out.serialize_field("data", &r.data)?;
        out.serialize_field("has_data", &r.has_data)?;
        out.serialize_field("created_at", &Millis(r.created_at))?;
        out.serialize_field("revision", &r.revision)?;
        out.serialize_field("last_seen", &Millis(r.last_seen))?;
        out.serialize_field("expires_at", &Millis(r.expires_at))?;
        out.serialize_field("deadline", &Millis(r.deadline))?;
        match r.idle_timeout {
            Some(idle) => out.serialize_field("idle_ms", &optional_millis::whole_ms(idle))?,
            None => out.skip_field("idle_ms")?,
        }
        match &r.csrf_token {
            Some(token) => out.serialize_field("csrf", token)?,
            None => out.skip_field("csrf")?,
        }
        out.end()
    }
}

struct Millis(OffsetDateTime);

impl Serialize for Millis {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        unix_millis::serialize(&self.0, s)
    }
}

/// Timestamps as integer milliseconds since the Unix epoch: compact and exact enough for expiry.
pub(crate) mod unix_millis {
    use serde::{de, Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;

    pub(crate) fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        let millis = t.unix_timestamp_nanos() / 1_000_000;
        s.serialize_i64(i64::try_from(millis).map_err(serde::ser::Error::custom)?)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let millis = i64::deserialize(d)?;
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
            .map_err(de::Error::custom)
    }
}

/// A duration as whole milliseconds, or nothing.
pub(crate) mod optional_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn whole_ms(duration: Duration) -> u64 {
        u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(duration) => s.serialize_some(&whole_ms(*duration)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json_with_millisecond_timestamps() {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let key = SessionKey::generate().unwrap();
        let mut record = Record::new(
            key,
            7u32,
            now,
            Duration::from_secs(60),
            Duration::from_secs(30),
        );
        record.flash.insert("notice".into(), "hi".into());
        assert_eq!(
            record.expires_at, record.deadline,
            "idle expiry is capped by the deadline"
        );
        let json = serde_json::to_string(&record).unwrap();
        assert!(json.contains("\"v\":2"));
        let back: Record<u32> = Record::decode(&key, json.as_bytes()).unwrap();
        assert_eq!(back.key, key);
        assert_eq!(back.data, 7);
        assert_eq!(back.flash.get("notice"), Some("hi"));
        assert_eq!(back.created_at, now);
        assert!(back.is_expired(now + Duration::from_secs(30)));
        assert!(!back.is_expired(now + Duration::from_secs(29)));

        let flash_free = record.encode_without_flash().unwrap();
        let back: Record<u32> = Record::decode(&key, &flash_free).unwrap();
        assert!(back.flash.is_empty());
        assert_eq!(back.deadline, record.deadline);
        let other = SessionKey::generate().unwrap();
        let mut remembered = record.clone();
        remembered.idle_timeout = Some(Duration::from_secs(30 * 24 * 60 * 60));
        for bytes in [
            remembered.encode().unwrap(),
            remembered.encode_without_flash().unwrap(),
        ] {
            let back: Record<u32> = Record::decode(&key, &bytes).unwrap();
            assert_eq!(back.idle_timeout, remembered.idle_timeout);
        }
        assert!(!json.contains("idle_ms"), "absent unless set: {json}");
        assert!(Record::<u32>::decode(&other, &flash_free)
            .unwrap_err()
            .is_decode());
        let newer = json.replace("\"v\":2", "\"v\":3");
        assert!(Record::<u32>::decode(&key, newer.as_bytes())
            .unwrap_err()
            .is_decode());
    }
}
