//! Step 4: the request's [`Change`] written under the write discipline, and the Set-Cookie it
//! earns. Every write states the revision its copy was read at. A logout or revoke that reaches
//! a forwarding pointer follows it to where the session moved; a save or regenerate from a copy
//! older than the pointer is refused.

use http::HeaderValue;
use time::OffsetDateTime;

use super::{
    change::{Change, Defaults, Fresh},
    store_error, Engine, ID_ATTEMPTS, MAX_FORWARDS,
};
use crate::{
    cookies,
    error::{SessionError, StoreError, StoreOperation},
    events::Ending,
    handle::{Existing, State},
    id::{SessionId, SessionKey},
    record::Record,
    session::Session,
    store::{Expect, Forward, LoadOptions, Store, WriteOutcome},
};

/// A request's write as decided when its handler finished.
// Returned once and taken apart at once: boxing the change would cost every write an
// allocation to save a move.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Write<T> {
    /// Nothing for the store to do (the session is unchanged, or only its cookie is sent
    /// again): the Set-Cookie, if any, with no future to run.
    Done(Option<HeaderValue>),
    /// The store has work to do: [`Engine::write_later`] does it.
    Later(Pending<T>),
}

/// What a [`Write::Later`] must do.
pub(crate) struct Pending<T>(Step<T>);

enum Step<T> {
    /// A cookie-only session: sealed on its own path, which may ask the revocation list.
    Sealed(State<T>),
    Change {
        change: Change<T>,
        stale_cookie: bool,
        now: OffsetDateTime,
    },
}

impl<T: Session, St: Store<T>> Engine<T, St> {
    /// Decides what the handler left. A request that changed nothing (a read) is done here,
    /// without a future or an allocation; one that needs the store (or a seal) is
    /// [`Write::Later`].
    pub(crate) fn write_now(&self, state: State<T>) -> Write<T> {
        if self.sealed.is_some() {
            return Write::Later(Pending(Step::Sealed(state)));
        }
        let stale_cookie = state.stale_cookie;
        let now = OffsetDateTime::now_utc();
        let cookie = match Change::decide(state, now, self.defaults()) {
            Change::Nothing => None,
            Change::Announce {
                record,
                cookie_id,
                persistent,
            } => Some(self.announce(&record, &cookie_id, persistent, now)),
            change => {
                return Write::Later(Pending(Step::Change {
                    change,
                    stale_cookie,
                    now,
                }))
            }
        };
        Write::Done(self.or_removal(cookie, stale_cookie))
    }

    /// Writes what [`Self::write_now`] left for the store and returns the Set-Cookie to send,
    /// if any. A request whose cookie named no live session, and that creates none, gets a
    /// removal cookie.
    pub(crate) async fn write_later(
        &self,
        pending: Pending<T>,
    ) -> Result<Option<HeaderValue>, SessionError> {
        let (change, stale_cookie, now) = match pending.0 {
            Step::Sealed(state) => {
                if let Some(sealed) = &self.sealed {
                    return self.write_sealed(sealed, state).await;
                }
                // Never made without a seal; decided as for a store all the same.
                let now = OffsetDateTime::now_utc();
                let stale_cookie = state.stale_cookie;
                (
                    Change::decide(state, now, self.defaults()),
                    stale_cookie,
                    now,
                )
            }
            Step::Change {
                change,
                stale_cookie,
                now,
            } => (change, stale_cookie, now),
        };
        let cookie = match change {
            Change::Nothing => None,
            Change::Announce {
                record,
                cookie_id,
                persistent,
            } => Some(self.announce(&record, &cookie_id, persistent, now)),
            Change::Create(fresh) => Some(self.create(fresh, now).await?),
            Change::Save {
                record,
                loaded,
                owner_was,
            } => self.save(record, &loaded, owner_was, now).await?,
            Change::Regenerate {
                record,
                loaded,
                owner_was,
            } => self.regenerate(record, &loaded, owner_was, now).await?,
            Change::Logout {
                key,
                data,
                owner_was,
                then,
                ..
            } => {
                let data = match data {
                    Some(data) => Some(data),
                    None => self.peek(key, now).await?,
                };
                self.end(key, data.as_ref(), owner_was.as_deref(), Ending::Logout)
                    .await?;
                match then {
                    Some(fresh) => Some(self.create(fresh, now).await?),
                    None => Some(self.settings.cookie.removal.clone()),
                }
            }
            Change::Discard {
                key,
                revision,
                owner_was,
            } => self.discard(key, revision, owner_was).await?,
            Change::Refuse { key } => {
                self.settings.events.conflict(&key);
                return Err(SessionError::ReadOnly);
            }
        };
        Ok(self.or_removal(cookie, stale_cookie))
    }

    /// The cookie of a session already stored, sent again (it slid, or it is to be reissued).
    fn announce(
        &self,
        record: &Record<T>,
        cookie_id: &SessionId,
        persistent: bool,
        now: OffsetDateTime,
    ) -> HeaderValue {
        self.settings.events.cookie_sent(&record.key, &record.data);
        let expiry = persistent.then(|| record.effective_expiry());
        self.cookie(cookie_id, expiry, now)
    }

    /// `cookie`, or the removal cookie when the request's cookie named no live session.
    fn or_removal(&self, cookie: Option<HeaderValue>, stale_cookie: bool) -> Option<HeaderValue> {
        cookie.or_else(|| stale_cookie.then(|| self.settings.cookie.removal.clone()))
    }

    /// Ends the session under `key` wherever it moved (logout, revoke), whatever ran
    /// concurrently. Returns whether it was live.
    pub(crate) async fn end(
        &self,
        key: SessionKey,
        data: Option<&T>,
        owner: Option<&str>,
        how: Ending,
    ) -> Result<bool, SessionError> {
        let (outcome, ended) = self.delete_following(key).await?;
        let owner = owner.map(str::to_owned).or_else(|| data.and_then(T::owner));
        self.unindex(owner.as_deref(), &key).await;
        if ended != key {
            self.unindex(owner.as_deref(), &ended).await;
        }
        let live = outcome == WriteOutcome::Done;
        if live {
            self.settings.events.ended(&ended, data, how);
        }
        Ok(live)
    }

    /// The data of the session `key` leads to, for the `deleted` event of a logout whose request
    /// could not read it.
    async fn peek(&self, key: SessionKey, now: OffsetDateTime) -> Result<Option<T>, SessionError> {
        match self.follow(key, LoadOptions::at(now)).await {
            Ok(record) => Ok(record.map(|record| record.data)),
            Err(err) if err.is_decode() => Ok(None),
            Err(err) => Err(store_error(StoreOperation::Load)(err)),
        }
    }

    /// Deletes under `key`, following forwarding pointers. Returns the outcome at the end of the
    /// chain and the key it was reached at.
    async fn delete_following(
        &self,
        mut key: SessionKey,
    ) -> Result<(WriteOutcome, SessionKey), SessionError> {
        for _ in 0..MAX_FORWARDS {
            match self
                .store
                .delete(&key, Expect::Any)
                .await
                .map_err(store_error(StoreOperation::Delete))?
            {
                WriteOutcome::Moved(to) => key = to,
                outcome => return Ok((outcome, key)),
            }
        }
        Err(store_error(StoreOperation::Delete)(
            StoreError::TooManyForwards,
        ))
    }

    /// Saves a changed session. The cookie is re-sent only to slide a persistent cookie or to
    /// re-sign it. A session that was regenerated since this request loaded it is not
    /// overwritten by this older copy, in either concurrency mode: a login's change (a new user,
    /// a dropped privilege) must not be undone by a request that started before it. The request
    /// gets the conflict response and the client retries with its new cookie.
    async fn save(
        &self,
        record: Record<T>,
        loaded: &Existing,
        owner_was: Option<String>,
        now: OffsetDateTime,
    ) -> Result<Option<HeaderValue>, SessionError> {
        self.check_size(&record)?;
        let owner = record.data.owner();
        let owner_changed = owner != owner_was;
        if owner_changed {
            self.index(owner.as_deref(), &record).await?;
        }
        let outcome = self
            .store
            .save(&record, self.expect(loaded.revision))
            .await
            .map_err(store_error(StoreOperation::Save))?;
        if owner_changed && outcome == WriteOutcome::Missing {
            // The session is gone; on a conflict its entry may be another request's, which
            // stays (a stale entry is cleaned when listed, a missing one would hide a session).
            self.unindex(owner.as_deref(), &record.key).await;
        }
        match outcome {
            WriteOutcome::Done => {
                if owner_changed {
                    self.unindex(owner_was.as_deref(), &loaded.key).await;
                }
                let persistent = loaded.persistent(self.settings.persistent);
                let announce = (persistent && loaded.slid) || loaded.reissue;
                Ok(match loaded.cookie_id {
                    Some(cookie_id) if announce => {
                        self.settings.events.cookie_sent(&record.key, &record.data);
                        let expiry = persistent.then(|| record.effective_expiry());
                        Some(self.cookie(&cookie_id, expiry, now))
                    }
                    _ => None,
                })
            }
            WriteOutcome::Moved(_) | WriteOutcome::Conflict => Err(self.conflict(&loaded.key)),
            // Deleted or expired meanwhile: the change is lost, so under optimistic concurrency
            // it must not be answered as a success.
            _ if self.optimistic() => Err(self.conflict(&loaded.key)),
            _ => {
                // Last write wins: a logout or expiry came first. Never resurrect the session,
                // never send a cookie for it.
                tracing::debug!(session = %loaded.key, "session ended before it could be saved");
                Ok(None)
            }
        }
    }

    /// Moves a session to new IDs (drawing others on a collision) and leaves a forwarding
    /// pointer under the old key. A session that another request already moved is not moved
    /// again: the request is answered with the conflict response.
    async fn regenerate(
        &self,
        mut record: Record<T>,
        loaded: &Existing,
        owner_was: Option<String>,
        now: OffsetDateTime,
    ) -> Result<Option<HeaderValue>, SessionError> {
        self.check_size(&record)?;
        let owner = record.data.owner();
        let expect = self.expect(loaded.revision);
        for _ in 0..ID_ATTEMPTS {
            let cookie_id = SessionId::generate()?;
            record.key = self.settings.at_rest.storage_key(&cookie_id);
            self.index(owner.as_deref(), &record).await?;
            let forward = Forward::new(
                record.key,
                self.settings.regenerate_grace.map(|grace| now + grace),
                // Writes of requests that loaded the old key are forwarded for as long as the
                // session could have lived unused: longer than any request runs.
                record.effective_expiry(),
            );
            let outcome = self
                .store
                .regenerate(&loaded.key, &record, expect, forward)
                .await
                .map_err(store_error(StoreOperation::Regenerate))?;
            if outcome != WriteOutcome::Done {
                self.unindex(owner.as_deref(), &record.key).await;
            }
            match outcome {
                WriteOutcome::Done => {
                    self.unindex(owner_was.as_deref(), &loaded.key).await;
                    let events = &self.settings.events;
                    events.regenerated(&loaded.key, &record.key, &record.data);
                    events.cookie_sent(&record.key, &record.data);
                    return Ok(Some(self.record_cookie(&cookie_id, &record, now)));
                }
                WriteOutcome::Collision => {
                    tracing::warn!("session id collision; drawing another");
                }
                WriteOutcome::Missing if !self.optimistic() => {
                    tracing::debug!(session = %loaded.key, "session ended before it could be regenerated");
                    return Ok(None);
                }
                _ => return Err(self.conflict(&loaded.key)),
            }
        }
        Err(SessionError::IdCollision)
    }

    /// Creates a session, drawing other IDs on a collision, and returns its cookie.
    async fn create(
        &self,
        fresh: Fresh<T>,
        now: OffsetDateTime,
    ) -> Result<HeaderValue, SessionError> {
        let mut cookie_id = SessionId::generate()?;
        let mut record = self.fresh_record(fresh, &cookie_id, now);
        self.check_size(&record)?;
        let owner = record.data.owner();
        for attempt in 0..ID_ATTEMPTS {
            if attempt > 0 {
                cookie_id = SessionId::generate()?;
                record.key = self.settings.at_rest.storage_key(&cookie_id);
            }
            self.index(owner.as_deref(), &record).await?;
            match self
                .store
                .create(&record)
                .await
                .map_err(store_error(StoreOperation::Create))?
            {
                WriteOutcome::Done => {
                    let events = &self.settings.events;
                    events.started(&record.key, &record.data);
                    events.cookie_sent(&record.key, &record.data);
                    return Ok(self.record_cookie(&cookie_id, &record, now));
                }
                _ => {
                    self.unindex(owner.as_deref(), &record.key).await;
                    tracing::warn!("session id collision; drawing another");
                }
            }
        }
        Err(SessionError::IdCollision)
    }

    /// The record of a new session with cookie ID `cookie_id`.
    pub(super) fn fresh_record(
        &self,
        fresh: Fresh<T>,
        cookie_id: &SessionId,
        now: OffsetDateTime,
    ) -> Record<T> {
        let mut record = Record::new(
            self.settings.at_rest.storage_key(cookie_id),
            fresh.data,
            now,
            self.settings.idle_timeout,
            self.settings.absolute_lifetime,
        );
        record.flash = fresh.flash;
        record.has_data = fresh.has_data;
        record.csrf_token = fresh.csrf;
        if let Some(lifetime) = fresh.lifetime {
            // Never shorter than the layer's: every read slides by at least that much.
            let idle = lifetime.idle_timeout().max(self.settings.idle_timeout);
            record.idle_timeout = Some(idle);
            record.deadline = now + lifetime.absolute_lifetime();
            record.expires_at = (now + idle).min(record.deadline);
        }
        record
    }

    /// Removes a session that held only a flash this request consumed, unless another request
    /// wrote to it meanwhile (then it lives on, and so does the cookie).
    async fn discard(
        &self,
        key: SessionKey,
        revision: u64,
        owner_was: Option<String>,
    ) -> Result<Option<HeaderValue>, SessionError> {
        let outcome = self
            .store
            .delete(&key, Expect::Revision(revision))
            .await
            .map_err(store_error(StoreOperation::Delete))?;
        Ok(match outcome {
            WriteOutcome::Done | WriteOutcome::Missing => {
                self.unindex(owner_was.as_deref(), &key).await;
                tracing::debug!(session = %key, "flash-only session consumed and removed");
                Some(self.settings.cookie.removal.clone())
            }
            _ => None,
        })
    }

    pub(super) fn conflict(&self, key: &SessionKey) -> SessionError {
        self.settings.events.conflict(key);
        SessionError::Conflict
    }

    /// Adds `record` to its owner's index (before the record is written).
    async fn index(&self, owner: Option<&str>, record: &Record<T>) -> Result<(), SessionError> {
        let Some(owner) = owner.filter(|_| self.store.supports_owner_index()) else {
            return Ok(());
        };
        self.store
            .index_owner(owner, &record.key, record.deadline)
            .await
            .map_err(store_error(StoreOperation::Index))
    }

    /// Removes a session that is gone or moved from its owner's index. A failure only leaves a
    /// stale entry, which listing cleans up, so it does not fail the request.
    pub(crate) async fn unindex(&self, owner: Option<&str>, key: &SessionKey) {
        let Some(owner) = owner.filter(|_| self.store.supports_owner_index()) else {
            return;
        };
        if let Err(error) = self.store.unindex_owner(owner, key).await {
            tracing::warn!(session = %key, %error, "could not remove a session from its owner index");
        }
    }

    /// Refuses a record whose JSON is over the configured maximum. Serialization stops as soon as
    /// the limit is passed, so an oversized session costs no more than the limit.
    pub(super) fn check_size(&self, record: &Record<T>) -> Result<(), SessionError> {
        let Some(limit) = self.settings.max_record_size else {
            return Ok(());
        };
        struct Budget(usize);
        impl std::io::Write for Budget {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0 = self
                    .0
                    .checked_sub(buf.len())
                    .ok_or(std::io::ErrorKind::FileTooLarge)?;
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        serde_json::to_writer(Budget(limit), record).map_err(|err| {
            if err.is_io() {
                SessionError::RecordTooLarge { limit }
            } else {
                store_error(StoreOperation::Save)(StoreError::Encode(Box::new(err)))
            }
        })
    }

    /// The layer's settings a decision needs.
    pub(super) fn defaults(&self) -> Defaults {
        Defaults {
            persistent: self.settings.persistent,
            idle_timeout: self.settings.idle_timeout,
            absolute_lifetime: self.settings.absolute_lifetime,
        }
    }

    /// The Set-Cookie of `record`, just written under `cookie_id`: persistent if the layer's
    /// cookies are or the session has a lifetime of its own.
    fn record_cookie(
        &self,
        cookie_id: &SessionId,
        record: &Record<T>,
        now: OffsetDateTime,
    ) -> HeaderValue {
        let persistent = self.settings.persistent || record.idle_timeout.is_some();
        self.cookie(
            cookie_id,
            persistent.then(|| record.effective_expiry()),
            now,
        )
    }

    /// The Set-Cookie carrying `cookie_id`, with a `Max-Age` up to `expiry` if given (a
    /// persistent cookie).
    fn cookie(
        &self,
        cookie_id: &SessionId,
        expiry: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> HeaderValue {
        let max_age = expiry.map(|expiry| max_age(expiry, now));
        cookies::live_cookie(
            &self.settings.cookie,
            self.settings.signer.as_ref(),
            cookie_id,
            max_age,
        )
    }
}

/// Seconds from `now` to `expiry` for a `Max-Age`, rounded up: a live session's cookie must never
/// say `Max-Age=0`, which deletes it.
pub(super) fn max_age(expiry: OffsetDateTime, now: OffsetDateTime) -> u64 {
    let millis = u64::try_from((expiry - now).whole_milliseconds()).unwrap_or(0);
    millis.max(1).div_ceil(1000)
}
