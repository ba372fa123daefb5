//! Steps 1 and 4 for a cookie-only layer: the session is opened from the cookie instead of
//! loaded from a store, and the request's [`Change`] (decided exactly as for a store) is sealed
//! into the response's cookie instead of written. With a revocation list, an ended session's ID
//! is entered there (and checked on every load), under the same rules a store follows: a logout
//! ends the session wherever a concurrent login moved it, and a write from a copy older than a
//! regenerate is refused.

use http::HeaderValue;
use time::OffsetDateTime;

use super::{
    change::{Change, Fresh},
    store_error,
    write::max_age,
    Engine,
};
use crate::{
    cookie_only::{revocation::Revocation, seal::Opened, Sealed},
    cookies,
    error::{SessionError, StoreOperation},
    events::{Ending, RejectReason},
    handle::{Existing, State},
    id::SessionId,
    record::Record,
    session::Session,
    store::Store,
};

/// How long after a regenerate its old cookie is treated as a request in flight during the login
/// (refused without clearing it, a logout through it ending the session where it moved); after
/// that it is cleared like any revoked cookie.
const MOVED_COOKIE_SETTLE: time::Duration = time::Duration::seconds(5);

impl<T: Session, St: Store<T>> Engine<T, St> {
    /// Opens the session cookie. No store call unless a revocation list is configured (one
    /// lookup then).
    pub(super) async fn load_sealed(
        &self,
        sealed: &Sealed,
        cookie_headers: &[HeaderValue],
    ) -> Result<State<T>, SessionError> {
        let settings = &self.settings;
        let events = &settings.events;
        let name = settings.cookie.name.as_str();
        let mut seen = false;
        let mut undecodable = None;
        let mut opened = None;
        for value in cookies::values_named(cookie_headers, name) {
            seen = true;
            match sealed.sealer.open::<T>(name, value) {
                Opened::Sealed { payload, rotated } => {
                    opened = Some((payload, rotated));
                    break;
                }
                Opened::Undecodable(id) => undecodable = Some(id),
                Opened::Forged => {}
            }
        }
        let Some((payload, rotated)) = opened else {
            if let Some(id) = undecodable {
                let key = id.map(|id| settings.at_rest.storage_key(&id));
                tracing::warn!(session = ?key, "sealed session does not decode as the session type; starting a fresh one");
                events.rejected(RejectReason::Undecodable, key.as_ref());
                return Ok(State::replacing_stale_cookie());
            }
            if seen {
                events.rejected(RejectReason::Unsealable, None);
                return Ok(State::replacing_stale_cookie());
            }
            return Ok(State::fresh());
        };
        let now = OffsetDateTime::now_utc();
        let cookie_id = payload.id;
        let key = settings.at_rest.storage_key(&cookie_id);
        let mut record = payload.into_record(key);
        // The payload's expiry, never the cookie's Max-Age: a client can keep a cookie forever.
        if record.is_expired(now) {
            events.expired(&key, &record.data);
            return Ok(State::replacing_stale_cookie());
        }
        if let Some(list) = &sealed.revocations {
            match list.find(&key, now).await {
                Ok(None) => {}
                // The old cookie of a regenerated session. Shortly after the login it is refused
                // but not cleared (the response could overtake the login's, which carries the
                // new cookie), and a logout through it still ends the session where it moved, as
                // on a store. Later it can only be a leftover (a response that left before the
                // login and arrived after it): cleared, so the client is not stuck with it.
                Ok(Some(revoked)) if revoked.successor().is_some() => {
                    events.rejected(RejectReason::Regenerated, Some(&key));
                    return Ok(if now - revoked.revoked_at() < MOVED_COOKIE_SETTLE {
                        State::moved_away(key)
                    } else {
                        State::replacing_stale_cookie()
                    });
                }
                Ok(Some(_)) => {
                    events.rejected(RejectReason::Revoked, Some(&key));
                    return Ok(State::replacing_stale_cookie());
                }
                Err(err) => return Err(store_error(StoreOperation::Load)(err)),
            }
        }
        let slid = settings.sliding && self.slide_sealed(&mut record, now);
        // A shown flash must leave the cookie, or the next request shows it again.
        let reissue = slid || rotated || !record.flash.is_empty();
        events.loaded(&key, &record.data);
        Ok(State::loaded(record, slid, Some(cookie_id), reissue))
    }

    /// Slides a sealed session's idle expiry once less than half its idle timeout is left
    /// (re-sealing on every read would send a cookie with every response). Returns whether it
    /// moved.
    fn slide_sealed(&self, record: &mut Record<T>, now: OffsetDateTime) -> bool {
        let idle = record.idle_timeout.unwrap_or(self.settings.idle_timeout);
        let slid = (now + idle).min(record.deadline);
        if record.expires_at - now >= idle / 2 || slid <= record.expires_at {
            return false;
        }
        record.expires_at = slid;
        record.last_seen = now;
        true
    }

    /// Seals what the handler left into the response's cookie.
    pub(super) async fn write_sealed(
        &self,
        sealed: &Sealed,
        state: State<T>,
    ) -> Result<Option<HeaderValue>, SessionError> {
        let stale_cookie = state.stale_cookie;
        let now = OffsetDateTime::now_utc();
        let events = &self.settings.events;
        let cookie = match Change::decide(state, now, self.defaults()) {
            Change::Nothing => None,
            Change::Announce {
                record, cookie_id, ..
            } => {
                let cookie = self.sealed_cookie(sealed, &cookie_id, &record, now)?;
                if self.ended_meanwhile(sealed, &record.key, now).await? {
                    // A login or logout since this request opened the session: its cookie wins.
                    None
                } else {
                    events.cookie_sent(&record.key, &record.data);
                    Some(cookie)
                }
            }
            Change::Create(fresh) => Some(self.create_sealed(sealed, fresh, now)?),
            Change::Save { record, loaded, .. } => {
                self.save_sealed(sealed, record, &loaded, now).await?
            }
            Change::Regenerate { record, loaded, .. } => {
                self.regenerate_sealed(sealed, record, &loaded, now).await?
            }
            Change::Logout {
                key,
                data,
                deadline,
                then,
                ..
            } => {
                let (live, ended) = match &sealed.revocations {
                    Some(list) => {
                        let until = deadline.unwrap_or(now + self.settings.absolute_lifetime);
                        list.end(key, until, now)
                            .await
                            .map_err(store_error(StoreOperation::Delete))?
                    }
                    // Nothing to end but the browser's copy, which the removal cookie clears.
                    None => (true, key),
                };
                if live {
                    events.ended(&ended, data.as_ref(), Ending::Logout);
                }
                match then {
                    Some(fresh) => Some(self.create_sealed(sealed, fresh, now)?),
                    None => Some(self.settings.cookie.removal.clone()),
                }
            }
            // A session that held only the flash this request showed: nothing is left to seal,
            // unless a login moved it meanwhile (the login's cookie must not be removed).
            Change::Discard { key, .. } => {
                if self.ended_meanwhile(sealed, &key, now).await? {
                    None
                } else {
                    Some(self.settings.cookie.removal.clone())
                }
            }
            Change::Refuse { key } => {
                events.conflict(&key);
                return Err(SessionError::ReadOnly);
            }
        };
        Ok(cookie.or_else(|| stale_cookie.then(|| self.settings.cookie.removal.clone())))
    }

    /// With a revocation list, whether the session under `key` ended or moved since this
    /// request opened it: then this request's cookie must not replace the one the login or
    /// logout sent. Without a list, never known.
    async fn ended_meanwhile(
        &self,
        sealed: &Sealed,
        key: &crate::id::SessionKey,
        now: OffsetDateTime,
    ) -> Result<bool, SessionError> {
        let Some(list) = &sealed.revocations else {
            return Ok(false);
        };
        let found = list
            .find(key, now)
            .await
            .map_err(store_error(StoreOperation::Load))?;
        Ok(found.is_some())
    }

    fn create_sealed(
        &self,
        sealed: &Sealed,
        fresh: Fresh<T>,
        now: OffsetDateTime,
    ) -> Result<HeaderValue, SessionError> {
        let cookie_id = SessionId::generate()?;
        let record = self.fresh_record(fresh, &cookie_id, now);
        let cookie = self.sealed_cookie(sealed, &cookie_id, &record, now)?;
        let events = &self.settings.events;
        events.started(&record.key, &record.data);
        events.cookie_sent(&record.key, &record.data);
        Ok(cookie)
    }

    /// Re-seals a changed session under its ID. With a revocation list, a session that ended or
    /// moved since this request opened it is not brought back by this older copy: a logout's
    /// or a login's cookie stays the one the client keeps.
    async fn save_sealed(
        &self,
        sealed: &Sealed,
        record: Record<T>,
        loaded: &Existing,
        now: OffsetDateTime,
    ) -> Result<Option<HeaderValue>, SessionError> {
        let Some(cookie_id) = loaded.cookie_id else {
            return Ok(None);
        };
        let cookie = self.sealed_cookie(sealed, &cookie_id, &record, now)?;
        if let Some(list) = &sealed.revocations {
            match list
                .find(&record.key, now)
                .await
                .map_err(store_error(StoreOperation::Save))?
            {
                None => {}
                Some(revoked) if revoked.successor().is_some() || self.optimistic() => {
                    return Err(self.conflict(&loaded.key))
                }
                Some(_) => {
                    tracing::debug!(session = %loaded.key, "session ended before it could be saved");
                    return Ok(None);
                }
            }
        }
        self.settings.events.cookie_sent(&record.key, &record.data);
        Ok(Some(cookie))
    }

    /// Moves a sealed session to a new ID. With a revocation list the old ID is revoked (and
    /// points to the new one); only the first of several concurrent regenerates or logouts of
    /// one ID gets through, the others are answered as on a store.
    async fn regenerate_sealed(
        &self,
        sealed: &Sealed,
        mut record: Record<T>,
        loaded: &Existing,
        now: OffsetDateTime,
    ) -> Result<Option<HeaderValue>, SessionError> {
        let cookie_id = SessionId::generate()?;
        record.key = self.settings.at_rest.storage_key(&cookie_id);
        // Sealed before the old ID is revoked: a session too large for its cookie must not be
        // logged out by the attempt.
        let cookie = self.sealed_cookie(sealed, &cookie_id, &record, now)?;
        if let Some(list) = &sealed.revocations {
            let revocation = list
                .revoke(
                    loaded.key,
                    loaded.deadline,
                    Some((record.key, record.deadline)),
                    now,
                )
                .await
                .map_err(store_error(StoreOperation::Regenerate))?;
            match revocation {
                Revocation::First => {}
                Revocation::AlreadyEnded if !self.optimistic() => {
                    tracing::debug!(session = %loaded.key, "session ended before it could be regenerated");
                    return Ok(None);
                }
                _ => return Err(self.conflict(&loaded.key)),
            }
        }
        let events = &self.settings.events;
        events.regenerated(&loaded.key, &record.key, &record.data);
        events.cookie_sent(&record.key, &record.data);
        Ok(Some(cookie))
    }

    /// The Set-Cookie carrying `record` sealed under `cookie_id`: persistent if the layer's
    /// cookies are or the session has a lifetime of its own, with the sealed expiry as `Max-Age`.
    fn sealed_cookie(
        &self,
        sealed: &Sealed,
        cookie_id: &SessionId,
        record: &Record<T>,
        now: OffsetDateTime,
    ) -> Result<HeaderValue, SessionError> {
        let settings = &self.settings;
        self.check_size(record)?;
        let value = sealed
            .sealer
            .seal(&settings.cookie.name, cookie_id, record)
            .inspect_err(|err| {
                if let SessionError::CookieTooLarge { size, .. } = err {
                    tracing::warn!(session = %record.key, size, "session too large for its cookie; nothing sent");
                }
            })?;
        let persistent = settings.persistent || record.idle_timeout.is_some();
        let max_age = persistent.then(|| max_age(record.effective_expiry(), now));
        Ok(cookies::set_cookie(&settings.cookie, &value, max_age))
    }
}
