//! How one session lives in Redis: three keys under one hash tag, and what their values hold.
//!
//! For the session key `K` and the prefix `p`:
//!
//! | key | value | TTL |
//! |---|---|---|
//! | `p{K}` | the record: `S`, revision (20 digits), deadline ms (15), then the record's JSON without its flash | expiry + expired-record retention + 1 s |
//! | `p{K}:live` | the pending flash's JSON, `''` for none | the exact idle expiry |
//! | `p{K}:moved` | after a regenerate: `P`, new key (43), grace end ms (15, 0: none), pointer end ms (15) | the pointer's end |
//!
//! The `live` key is what makes a read cheap: it exists exactly as long as the session is not
//! idle-expired, so Redis enforces the idle timeout itself and a read never needs a script.
//! `GETEX live` slides it and returns the pending flash in one native command; a record whose
//! `live` key is gone is an expired session, kept for the retention so that its cookie is told
//! "expired", not "unknown". A regenerate deletes the record and its `live` key in the step that
//! writes `moved`, so a plain `SET ... XX` can never write over a pointer or bring anything back.
//! The shared hash tag keeps the three keys in one Cluster slot, so one pipeline or one script
//! reaches all of them.

use std::io::Write;

use time::OffsetDateTime;

use crate::{error::StoreError, flash::Flash, id::SessionKey, record::Record};

/// Bytes before a record's JSON: `S`, the revision and the deadline.
pub(super) const HEADER: usize = 36;

/// A record outlives its `live` key by the retention plus this much, so that concurrent reads
/// that slide the two by clocks a few milliseconds apart never let the record go first.
pub(super) const RECORD_SLACK_MS: i64 = 1_000;

/// What follows `p{K}` in the name of a session's `live` key.
pub(super) const LIVE: &str = ":live";

/// The Redis keys of one session.
pub(super) struct Keys {
    /// `p{K}`: the record.
    pub(super) record: String,
    /// `p{K}:live`: exists while the session is not idle-expired; holds the pending flash.
    pub(super) live: String,
}

impl Keys {
    pub(super) fn new(prefix: &str, key: &SessionKey) -> Self {
        let mut record = String::with_capacity(prefix.len() + 45);
        record.push_str(prefix);
        record.push('{');
        record.push_str(key.as_str());
        record.push('}');
        let mut live = String::with_capacity(record.len() + 5);
        live.push_str(&record);
        live.push_str(LIVE);
        Self { record, live }
    }

    /// `p{K}:moved`: the forwarding pointer of a regenerated session (needed only off the hot
    /// path, so built on demand).
    pub(super) fn moved(&self) -> String {
        format!("{}:moved", self.record)
    }

    /// The session key inside a `p{K}:live` key that `SCAN` returned.
    pub(super) fn session_of_live(prefix: &str, redis_key: &str) -> Option<SessionKey> {
        redis_key
            .strip_prefix(prefix)?
            .strip_prefix('{')?
            .strip_suffix("}:live")
            .and_then(SessionKey::parse)
    }

    /// The session any of its keys (`p{K}`, `p{K}:live`, `p{K}:moved`) belongs to.
    pub(super) fn session_of(prefix: &str, redis_key: &str) -> Option<SessionKey> {
        let rest = redis_key.strip_prefix(prefix)?.strip_prefix('{')?;
        let (key, suffix) = rest.split_once('}')?;
        matches!(suffix, "" | ":live" | ":moved")
            .then(|| SessionKey::parse(key))
            .flatten()
    }

    /// The record key that belongs to a `p{K}:live` key.
    pub(super) fn record_of_live(redis_key: &str) -> &str {
        redis_key.strip_suffix(":live").unwrap_or(redis_key)
    }
}

/// Writes a record value: header and JSON, into one command argument.
pub(super) fn write_record<T: serde::Serialize>(
    mut out: impl Write,
    revision: u64,
    record: &Record<T>,
) -> Result<(), StoreError> {
    // Digits by hand: `write!` with padded widths cost a fifth of what serializing the record
    // does (callgrind), on every save.
    let mut header = [b'0'; HEADER];
    header[0] = b'S';
    put_digits(&mut header[1..21], revision);
    let deadline = u64::try_from(crate::record::unix_ms(record.deadline)).unwrap_or(0);
    put_digits(&mut header[21..HEADER], deadline);
    out.write_all(&header)
        .map_err(|err| StoreError::Encode(Box::new(err)))?;
    record.write_without_flash(out)
}

/// Writes `n` into `out` as zero-padded decimal digits (the low digits, should it not fit).
fn put_digits(out: &mut [u8], mut n: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// A forwarding pointer's value: `P`, the new key, the grace window's end and the pointer's end.
pub(super) fn pointer_value(forward: &super::Forward) -> String {
    format!(
        "P{}{:015}{:015}",
        forward.to.as_str(),
        forward.grace_until.map_or(0, crate::record::unix_ms),
        crate::record::unix_ms(forward.until)
    )
}

/// The decimal number in `bytes[range]`.
fn number(bytes: &[u8], range: std::ops::Range<usize>) -> Result<i64, StoreError> {
    bytes
        .get(range)
        .and_then(|digits| std::str::from_utf8(digits).ok())
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(foreign)
}

/// A record value as Redis holds it.
pub(super) struct StoredRecord<'a> {
    pub(super) revision: u64,
    pub(super) deadline_ms: i64,
    json: &'a [u8],
}

impl<'a> StoredRecord<'a> {
    pub(super) fn parse(value: &'a [u8]) -> Result<Self, StoreError> {
        if value.first() != Some(&b'S') {
            return Err(foreign());
        }
        Ok(Self {
            revision: u64::try_from(number(value, 1..21)?).map_err(|_| foreign())?,
            deadline_ms: number(value, 21..HEADER)?,
            json: value.get(HEADER..).ok_or_else(foreign)?,
        })
    }

    /// The record, with the header's revision (the truth) and `flash` as its pending flash.
    pub(super) fn record<T: serde::de::DeserializeOwned>(
        &self,
        key: &SessionKey,
        flash: &[u8],
    ) -> Result<Record<T>, StoreError> {
        let mut record = Record::<T>::decode(key, self.json)?;
        record.revision = self.revision;
        record.flash = decode_flash(flash)?;
        Ok(record)
    }
}

/// A pending flash as the `live` key holds it (`''`: none).
pub(super) fn decode_flash(bytes: &[u8]) -> Result<Flash, StoreError> {
    if bytes.is_empty() {
        Ok(Flash::default())
    } else {
        Flash::decode(bytes)
    }
}

/// A forwarding pointer as Redis holds it.
pub(super) struct Pointer {
    pub(super) to: SessionKey,
    pub(super) grace_until_ms: i64,
    pub(super) until_ms: i64,
}

impl Pointer {
    pub(super) fn parse(value: &[u8]) -> Result<Self, StoreError> {
        if value.first() != Some(&b'P') {
            return Err(foreign());
        }
        Ok(Self {
            to: value
                .get(1..44)
                .and_then(SessionKey::parse_bytes)
                .ok_or_else(foreign)?,
            grace_until_ms: number(value, 44..59)?,
            until_ms: number(value, 59..74)?,
        })
    }

    pub(super) fn forward(&self) -> super::Forward {
        super::Forward::new(
            self.to,
            (self.grace_until_ms > 0).then(|| at_millis(self.grace_until_ms)),
            at_millis(self.until_ms),
        )
    }
}

pub(super) fn at_millis(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// A value under a session key that is not a session record (another program's data).
pub(super) fn foreign() -> StoreError {
    StoreError::Decode("the value under a session key is not a session record".into())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_record_value_round_trips_through_its_fixed_width_header() {
        let key = SessionKey::generate().expect("key");
        let now = OffsetDateTime::now_utc();
        let record = Record::new(
            key,
            7u32,
            now,
            Duration::from_secs(60),
            Duration::from_secs(3600),
        );
        let mut value = Vec::new();
        write_record(&mut value, 12_345, &record).expect("write");
        assert_eq!(&value[..21], b"S00000000000000012345");
        let deadline = crate::record::unix_ms(record.deadline);
        assert_eq!(&value[21..HEADER], format!("{deadline:015}").as_bytes());
        let stored = StoredRecord::parse(&value).expect("parse");
        assert_eq!((stored.revision, stored.deadline_ms), (12_345, deadline));
        let back: Record<u32> = stored.record(&key, b"").expect("decode");
        assert_eq!((back.data, back.revision), (7, 12_345));
    }
}
