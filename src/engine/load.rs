//! Step 1: from the request's cookie to the session state the handler sees.

use std::{future::Future, pin::Pin, sync::Arc};

use http::HeaderValue;
use time::OffsetDateTime;

use super::{store_error, Engine};
use crate::{
    cookies::{self, Incoming},
    error::{SessionError, StoreOperation},
    events::RejectReason,
    handle::State,
    id::SessionKey,
    lazy::Loader,
    record::Record,
    session::Session,
    store::{Expect, Forward, LoadOptions, Loaded, Store},
};

impl<T: Session, St: Store<T>> Engine<T, St> {
    /// Reads the session cookie and loads the session it names. One store call for a live
    /// session (sliding and flash taking included); a request without a cookie, or with one
    /// that cannot be an ID we issued, costs none.
    pub(crate) async fn load(
        &self,
        cookie_headers: &[HeaderValue],
    ) -> Result<State<T>, SessionError> {
        if let Some(sealed) = &self.sealed {
            return self.load_sealed(sealed, cookie_headers).await;
        }
        let settings = &self.settings;
        let events = &settings.events;
        let (cookie_id, resign) = match cookies::find_session_id(
            cookie_headers,
            &settings.cookie.name,
            settings.signer.as_ref(),
        ) {
            Incoming::Absent => return Ok(State::fresh()),
            Incoming::Malformed => {
                events.rejected(RejectReason::Malformed, None);
                return Ok(State::replacing_stale_cookie());
            }
            Incoming::BadSignature => {
                events.rejected(RejectReason::BadSignature, None);
                return Ok(State::replacing_stale_cookie());
            }
            Incoming::Id { id, resign } => (id, resign),
        };
        let key = settings.at_rest.storage_key(&cookie_id);
        let now = OffsetDateTime::now_utc();
        let options = LoadOptions::at(now)
            .sliding(self.slide())
            .taking_flash(true);
        match self.store.load(&key, options).await {
            Ok(Loaded::Active(record)) if record.key == key && !record.is_expired(now) => {
                let (record, slid) = match record.idle_timeout {
                    Some(idle) if settings.sliding => self.slide_own(record, idle, now).await?,
                    _ => (record, settings.sliding),
                };
                events.loaded(&key, &record.data);
                Ok(State::loaded(record, slid, Some(cookie_id), resign))
            }
            Ok(Loaded::Active(record)) => self.dead_record(&key, record).await,
            Ok(Loaded::Expired(record)) => {
                events.expired(&key, &record.data);
                Ok(State::replacing_stale_cookie())
            }
            Ok(Loaded::Moved(forward)) => self.through_grace(&key, forward, now).await,
            Ok(Loaded::Missing) => {
                events.rejected(RejectReason::Unknown, Some(&key));
                Ok(State::replacing_stale_cookie())
            }
            Err(err) if err.is_decode() => {
                tracing::warn!(session = %key, error = %err, "stored session is undecodable; starting a fresh one");
                events.rejected(RejectReason::Undecodable, Some(&key));
                if let Err(err) = self.store.delete(&key, Expect::Any).await {
                    tracing::warn!(session = %key, error = %err, "could not delete the undecodable session");
                }
                Ok(State::replacing_stale_cookie())
            }
            Err(err) => Err(store_error(StoreOperation::Load)(err)),
        }
    }

    /// Slides a remembered session by its own idle timeout, which the store's load (sliding by
    /// the layer's) does not know: a second load, only when that moves the expiry by a step (see
    /// `lifetime::slide_step`). Returns the record with its expiry now, and whether it moved.
    async fn slide_own(
        &self,
        mut record: Record<T>,
        idle: std::time::Duration,
        now: OffsetDateTime,
    ) -> Result<(Record<T>, bool), SessionError> {
        // Enough when it lives at least `idle - step` more (or to its deadline). Not "moves by a
        // step": a store whose load sets the expiry outright (Redis) may have just moved it
        // back to the layer's idle timeout, and near the deadline that is less than a step.
        let enough = (now + idle - crate::lifetime::slide_step(idle)).min(record.deadline);
        if record.expires_at >= enough {
            return Ok((record, false));
        }
        let options = LoadOptions::at(now).sliding(Some(idle));
        match self.store.load(&record.key, options).await {
            Ok(Loaded::Active(slid)) if slid.key == record.key => {
                record.expires_at = slid.expires_at;
                Ok((record, true))
            }
            // Ended or moved since the first load: this request keeps the copy it read, as any
            // request does that loaded just before a logout.
            Ok(_) => Ok((record, false)),
            Err(err) => Err(store_error(StoreOperation::Load)(err)),
        }
    }

    /// The idle timeout to slide by, when sliding is on.
    fn slide(&self) -> Option<std::time::Duration> {
        self.settings.sliding.then_some(self.settings.idle_timeout)
    }

    /// A store answered `Active` with a record that is past its expiry or not the one asked for:
    /// the engine enforces expiry itself rather than trust it.
    async fn dead_record(
        &self,
        key: &SessionKey,
        record: Record<T>,
    ) -> Result<State<T>, SessionError> {
        if record.key != *key {
            self.settings
                .events
                .rejected(RejectReason::Undecodable, Some(key));
            return Ok(State::replacing_stale_cookie());
        }
        self.store
            .delete(key, Expect::Any)
            .await
            .map_err(store_error(StoreOperation::Delete))?;
        self.settings.events.expired(key, &record.data);
        Ok(State::replacing_stale_cookie())
    }

    /// The cookie names a session that was regenerated. Within the grace window the request
    /// reads the moved session, read-only and without its flash; past it, the cookie is refused
    /// (a logout through it still ends the session). Either way its cookie is not cleared: the
    /// response could overtake the login response that carries the new cookie and wipe it.
    async fn through_grace(
        &self,
        key: &SessionKey,
        forward: Forward,
        now: OffsetDateTime,
    ) -> Result<State<T>, SessionError> {
        let within_grace = self.settings.regenerate_grace.is_some()
            && forward.grace_until.is_some_and(|until| now < until);
        if within_grace {
            let options = LoadOptions::at(now).sliding(self.slide());
            match self.follow(forward.to, options).await {
                Ok(Some(record)) => {
                    tracing::debug!(old = %key, new = %record.key, "request with a regenerated id served read-only within the grace window");
                    // The first load slid by the layer's idle timeout (on Redis, outright).
                    let mut record = match record.idle_timeout {
                        Some(idle) if self.settings.sliding => {
                            self.slide_own(record, idle, now).await?.0
                        }
                        _ => record,
                    };
                    // The flash belongs to the request that carries the new cookie.
                    record.flash.clear();
                    self.settings.events.loaded(&record.key, &record.data);
                    return Ok(State::loaded(record, false, None, false));
                }
                Ok(None) => {}
                Err(err) if err.is_decode() => {
                    tracing::warn!(session = %key, error = %err, "the session a grace pointer leads to is undecodable");
                }
                Err(err) => return Err(store_error(StoreOperation::Load)(err)),
            }
        }
        self.settings
            .events
            .rejected(RejectReason::Regenerated, Some(key));
        Ok(State::moved_away(*key))
    }
}

impl<T: Session, St: Store<T>> Loader<T> for Engine<T, St> {
    fn load<'a>(
        &'a self,
        cookie_headers: &'a [HeaderValue],
    ) -> Pin<Box<dyn Future<Output = Result<State<T>, SessionError>> + Send + 'a>> {
        Box::pin(Engine::load(self, cookie_headers))
    }
}

/// Lets the layer hand an engine to a request as a [`Loader`] without its store type.
pub(crate) fn loader<T: Session, St: Store<T>>(engine: &Arc<Engine<T, St>>) -> Arc<dyn Loader<T>> {
    Arc::clone(engine) as Arc<dyn Loader<T>>
}
