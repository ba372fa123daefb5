//! The stored form of a session.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{flash::Flash, id::SessionId};

/// The record format this version of the crate writes. Stores keep it with each record so that a
/// later format can still read records written by this one.
pub const RECORD_FORMAT: u16 = 1;

/// One session as a [`Store`](crate::Store) keeps it.
///
/// Records are built by the layer; stores persist and return them. The fields are public so that
/// a backend can read the expiry (to set a TTL, for example).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Record<T> {
    /// Format version of this record ([`RECORD_FORMAT`] when written by this crate).
    #[serde(rename = "v")]
    pub format: u16,
    /// The session ID.
    pub id: SessionId,
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
    /// How many times the session's content was saved: optimistic concurrency refuses a save
    /// whose copy was loaded at an older revision.
    #[serde(default)]
    pub revision: u64,
    /// When the session was last loaded or saved.
    #[serde(with = "unix_millis")]
    pub last_seen: OffsetDateTime,
    /// Idle expiry: the session is dead after this unless it is used (and sliding is on).
    #[serde(with = "unix_millis")]
    pub expires_at: OffsetDateTime,
    /// Absolute deadline: the session is dead after this whatever happens.
    ///
    /// Serialized last, so that a backend script can read it from the end of the JSON without
    /// decoding the application's data (the Redis store does).
    #[serde(with = "unix_millis")]
    pub deadline: OffsetDateTime,
}

impl<T> Record<T> {
    pub(crate) fn new(
        id: SessionId,
        data: T,
        now: OffsetDateTime,
        idle: Duration,
        lifetime: Duration,
    ) -> Self {
        let deadline = now + lifetime;
        Self {
            format: RECORD_FORMAT,
            id,
            data,
            flash: Flash::default(),
            has_data: false,
            created_at: now,
            revision: 0,
            last_seen: now,
            expires_at: (now + idle).min(deadline),
            deadline,
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

/// Timestamps as integer milliseconds since the Unix epoch: compact and exact enough for expiry.
mod unix_millis {
    use serde::{de, Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;

    pub(super) fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        let millis = t.unix_timestamp_nanos() / 1_000_000;
        s.serialize_i64(i64::try_from(millis).map_err(serde::ser::Error::custom)?)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let millis = i64::deserialize(d)?;
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
            .map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json_with_millisecond_timestamps() {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let id = SessionId::generate().unwrap();
        let mut record = Record::new(
            id,
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
        assert!(json.contains("\"v\":1"));
        // Backend scripts read the revision and timestamps from the end of the JSON.
        let tail = format!(
            "\"revision\":0,\"last_seen\":{0},\"expires_at\":{1},\"deadline\":{1}}}",
            now.unix_timestamp() * 1000,
            (now + Duration::from_secs(30)).unix_timestamp() * 1000
        );
        assert!(json.ends_with(&tail), "{json}");
        let back: Record<u32> = serde_json::from_str(&json).unwrap();
        assert_eq!(back.id, id);
        assert_eq!(back.data, 7);
        assert_eq!(back.flash.get("notice"), Some("hi"));
        assert_eq!(back.created_at, now);
        assert!(back.is_expired(now + Duration::from_secs(30)));
        assert!(!back.is_expired(now + Duration::from_secs(29)));
    }
}
