//! Step 1: from the request's cookie to the session state the handler sees.

use http::HeaderMap;
use time::OffsetDateTime;

use super::{store_error, Engine};
use crate::{
    callbacks::RejectReason,
    cookies::{self, Incoming},
    error::{SessionError, StoreOperation},
    handle::State,
    id::SessionKey,
    record::Record,
    session::Session,
    store::{Expect, Forward, LoadOptions, Loaded, Store},
};

impl<T: Session, St: Store<T>> Engine<T, St> {
    /// Reads the session cookie and loads the session it names. One store call for a live
    /// session (sliding and flash taking included); a request without a cookie, or with one
    /// that cannot be an ID we issued, costs none.
    pub(crate) async fn load(&self, headers: &HeaderMap) -> Result<State<T>, SessionError> {
        let settings = &self.settings;
        let callbacks = &settings.callbacks;
        let (cookie_id, resign) = match cookies::find_session_id(
            headers,
            &settings.cookie.name,
            settings.signer.as_ref(),
        ) {
            Incoming::Absent => return Ok(State::fresh()),
            Incoming::Malformed => {
                callbacks.rejected(RejectReason::Malformed, None);
                return Ok(State::replacing_stale_cookie());
            }
            Incoming::BadSignature => {
                callbacks.rejected(RejectReason::BadSignature, None);
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
                callbacks.loaded(&key, &record.data);
                Ok(State::loaded(
                    record,
                    settings.sliding,
                    Some(cookie_id),
                    resign,
                ))
            }
            Ok(Loaded::Active(record)) => self.dead_record(&key, record).await,
            Ok(Loaded::Expired(record)) => {
                callbacks.expired(&key, &record.data);
                Ok(State::replacing_stale_cookie())
            }
            Ok(Loaded::Moved(forward)) => self.through_grace(&key, forward, now).await,
            Ok(Loaded::Missing) => {
                callbacks.rejected(RejectReason::Unknown, Some(&key));
                Ok(State::replacing_stale_cookie())
            }
            Err(err) if err.is_decode() => {
                tracing::warn!(session = %key, error = %err, "stored session is undecodable; starting a fresh one");
                callbacks.rejected(RejectReason::Undecodable, Some(&key));
                if let Err(err) = self.store.delete(&key, Expect::Any).await {
                    tracing::warn!(session = %key, error = %err, "could not delete the undecodable session");
                }
                Ok(State::replacing_stale_cookie())
            }
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
                .callbacks
                .rejected(RejectReason::Undecodable, Some(key));
            return Ok(State::replacing_stale_cookie());
        }
        self.store
            .delete(key, Expect::Any)
            .await
            .map_err(store_error(StoreOperation::Delete))?;
        self.settings.callbacks.expired(key, &record.data);
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
                Ok(Some(mut record)) => {
                    tracing::debug!(old = %key, new = %record.key, "request with a regenerated id served read-only within the grace window");
                    // The flash belongs to the request that carries the new cookie.
                    record.flash.clear();
                    self.settings.callbacks.loaded(&record.key, &record.data);
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
            .callbacks
            .rejected(RejectReason::Regenerated, Some(key));
        Ok(State::moved_away(*key))
    }
}
