//! The service the layer wraps around the application: load, run the handler, persist.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use time::OffsetDateTime;
use tower_service::Service;

use crate::{
    callbacks::RejectReason,
    config::Concurrency,
    cookies::{self, Incoming},
    error::{SessionError, StoreOperation},
    handle::{Existing, SessionHandle, State},
    id::SessionId,
    layer::Shared,
    record::{Record, RECORD_FORMAT},
    session::Session,
    store::{Loaded, Store, WriteOutcome},
};

/// How many fresh IDs to try when the store reports a collision. With 256 random bits a real
/// collision never happens; retries only guard against a broken random source or store.
const ID_ATTEMPTS: usize = 3;

/// The middleware built by [`SessionLayer`](crate::SessionLayer).
pub struct SessionService<S, T, St> {
    inner: S,
    shared: Arc<Shared<T, St>>,
}

impl<S: Clone, T, St> Clone for SessionService<S, T, St> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, T, St> fmt::Debug for SessionService<S, T, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, T, St> SessionService<S, T, St> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<T, St>>) -> Self {
        Self { inner, shared }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// The response future of [`SessionService`].
pub struct ResponseFuture<B, E> {
    inner: Pin<Box<dyn Future<Output = Result<Response<B>, E>> + Send>>,
}

impl<B, E> Future for ResponseFuture<B, E> {
    type Output = Result<Response<B>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<B, E> fmt::Debug for ResponseFuture<B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, T, St, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S, T, St>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: 'static,
    ReqBody: Send + 'static,
    ResBody: From<Bytes> + Send + 'static,
    T: Session,
    St: Store<T>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // The instance poll_ready prepared goes into the future; a fresh clone stays behind.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let shared = Arc::clone(&self.shared);
        ResponseFuture {
            inner: Box::pin(async move {
                let incoming = cookies::find_session_id(
                    req.headers(),
                    &shared.settings.cookie.name,
                    shared.settings.signer.as_ref(),
                );
                let state = match shared.load(incoming).await {
                    Ok(state) => state,
                    Err(err) => return Ok(shared.fail(&err)),
                };
                let loaded = state.existing.is_some();
                let handle = SessionHandle::new(state);
                req.extensions_mut().insert(handle.clone());
                let mut response = inner.call(req).await?;
                match shared.persist(handle.close()).await {
                    Ok(Some(cookie)) => {
                        let headers = response.headers_mut();
                        headers.append(header::SET_COOKIE, cookie);
                        cookies::mark_uncacheable(headers);
                        Ok(response)
                    }
                    Ok(None) => {
                        if loaded {
                            // The handler may have rendered session data: caches must key on it.
                            cookies::vary_on_cookie(response.headers_mut());
                        }
                        Ok(response)
                    }
                    Err(err) => Ok(shared.fail(&err)),
                }
            }),
        }
    }
}

fn store_error(operation: StoreOperation) -> impl FnOnce(crate::StoreError) -> SessionError {
    move |source| SessionError::Store { operation, source }
}

impl<T: Session, St: Store<T>> Shared<T, St> {
    /// The error response: never a Set-Cookie, so the client keeps its cookie through an outage.
    fn fail<B: From<Bytes>>(&self, err: &SessionError) -> Response<B> {
        let (status, body) = match (err, self.settings.concurrency) {
            (SessionError::Conflict, Concurrency::Optimistic { status }) => (
                status,
                Bytes::from_static(b"the session changed concurrently; retry"),
            ),
            _ => {
                self.settings.callbacks.error(err);
                (self.settings.error_status, self.settings.error_body.clone())
            }
        };
        let mut response = Response::new(B::from(body));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    async fn load(&self, incoming: Incoming) -> Result<State<T>, SessionError> {
        let callbacks = &self.settings.callbacks;
        let (cookie_id, resign) = match incoming {
            Incoming::Absent => return Ok(State::fresh()),
            Incoming::Malformed => {
                callbacks.rejected(RejectReason::Malformed, None);
                return Ok(State::fresh());
            }
            Incoming::BadSignature => {
                callbacks.rejected(RejectReason::BadSignature, None);
                return Ok(State::fresh());
            }
            Incoming::Id { id, resign } => (id, resign),
        };
        let id = self.settings.at_rest.storage_id(&cookie_id);
        match self.fetch(&id).await {
            Ok(Loaded::Active(record))
                if record.id == id && !record.is_expired(OffsetDateTime::now_utc()) =>
            {
                callbacks.loaded(&id, &record.data);
                Ok(State::loaded(
                    record,
                    self.settings.sliding,
                    Some(cookie_id),
                    resign,
                ))
            }
            Ok(Loaded::Active(record)) => {
                // A store that does not check expiry itself: the layer enforces it.
                self.store
                    .delete(&id)
                    .await
                    .map_err(store_error(StoreOperation::Delete))?;
                callbacks.expired(&id, &record.data);
                Ok(State::fresh())
            }
            Ok(Loaded::Expired(record)) => {
                callbacks.expired(&id, &record.data);
                Ok(State::fresh())
            }
            Ok(Loaded::Missing) => {
                if let Some(state) = self.follow_grace_pointer(&id).await? {
                    return Ok(state);
                }
                callbacks.rejected(RejectReason::Unknown, Some(&id));
                Ok(State::fresh())
            }
            Err(err) if err.is_decode() => {
                tracing::warn!(session = %id, error = %err, "stored session is undecodable; starting a fresh one");
                callbacks.rejected(RejectReason::Undecodable, Some(&id));
                if let Err(err) = self.store.delete(&id).await {
                    tracing::warn!(session = %id, error = %err, "could not delete the undecodable session");
                }
                Ok(State::fresh())
            }
            Err(err) => Err(store_error(StoreOperation::Load)(err)),
        }
    }

    /// Loads a session, sliding its expiry in the same store call when sliding is on.
    async fn fetch(&self, id: &SessionId) -> Result<Loaded<T>, crate::StoreError> {
        if self.settings.sliding {
            self.store
                .load_and_touch(id, self.settings.idle_timeout)
                .await
        } else {
            self.store.load(id).await
        }
    }

    /// With a regenerate grace period, a missing ID may have just moved: serve the new session.
    async fn follow_grace_pointer(&self, id: &SessionId) -> Result<Option<State<T>>, SessionError> {
        if self.settings.regenerate_grace.is_none() {
            return Ok(None);
        }
        let Some(new) = self
            .store
            .moved_to(id)
            .await
            .map_err(store_error(StoreOperation::Load))?
        else {
            return Ok(None);
        };
        match self
            .fetch(&new)
            .await
            .map_err(store_error(StoreOperation::Load))?
        {
            Loaded::Active(record)
                if record.id == new && !record.is_expired(OffsetDateTime::now_utc()) =>
            {
                tracing::debug!(old = %id, new = %new, "request with a regenerated id served within the grace period");
                self.settings.callbacks.loaded(&new, &record.data);
                Ok(Some(State::loaded(
                    record,
                    self.settings.sliding,
                    None,
                    false,
                )))
            }
            _ => Ok(None),
        }
    }

    /// Writes what the handler changed and returns the Set-Cookie to send, if any.
    async fn persist(&self, state: State<T>) -> Result<Option<HeaderValue>, SessionError> {
        let callbacks = &self.settings.callbacks;
        let mut cookie = None;
        let mut existing = state.existing;
        // Index entries are added before a session is written and removed after it is gone, so
        // a failure in between leaves a stale entry (cleaned lazily), never an unindexed session.
        // The owner as loaded is only looked at on the paths that write.

        if let Some(old_data) = &state.deleted {
            if let Some(old) = existing.take() {
                let loaded_owner = state.owner_as_loaded();
                // Missing is fine: someone else already removed it.
                self.store
                    .delete(&old.id)
                    .await
                    .map_err(store_error(StoreOperation::Delete))?;
                self.unindex(loaded_owner.as_deref(), &old.id).await;
                callbacks.deleted(&old.id, old_data);
                cookie = Some(self.settings.cookie.removal.clone());
            }
        }

        let Some(old) = existing else {
            if state.changed || !state.outgoing_flash.is_empty() {
                let now = OffsetDateTime::now_utc();
                let (record, cookie_id) = self.create(state, now).await?;
                callbacks.started(&record.id, &record.data);
                cookie = Some(self.live_cookie(&record, &cookie_id, now));
            }
            return Ok(cookie);
        };

        if !state.has_data && state.outgoing_flash.is_empty() {
            // The session only carried a flash, now consumed: nothing is left to keep alive. This
            // is housekeeping, not a logout, so the `deleted` callback does not fire.
            let loaded_owner = state.owner_as_loaded();
            self.store
                .delete(&old.id)
                .await
                .map_err(store_error(StoreOperation::Delete))?;
            self.unindex(loaded_owner.as_deref(), &old.id).await;
            tracing::debug!(session = %old.id, "flash-only session consumed and removed");
            return Ok(Some(self.settings.cookie.removal.clone()));
        }

        if state.regenerate {
            let loaded_owner = state.owner_as_loaded();
            let now = OffsetDateTime::now_utc();
            let record = self.existing_record(&old, state, now);
            return match self.regenerate(&old.id, record).await? {
                Some((record, cookie_id)) => {
                    self.unindex(loaded_owner.as_deref(), &old.id).await;
                    callbacks.regenerated(&old.id, &record.id, &record.data);
                    Ok(Some(self.live_cookie(&record, &cookie_id, now)))
                }
                None => {
                    tracing::warn!(session = %old.id, "session vanished before it could be regenerated");
                    Ok(None)
                }
            };
        }

        // Re-send the cookie to slide a persistent cookie's Max-Age, or to re-sign it.
        let announce = (self.settings.persistent && old.slid) || old.resign;
        if state.changed || state.flash_consumed || !state.outgoing_flash.is_empty() {
            let loaded_owner = state.owner_as_loaded();
            let now = OffsetDateTime::now_utc();
            let record = self.existing_record(&old, state, now);
            self.check_size(&record)?;
            let owner = record.data.owner();
            let owner_changed = owner != loaded_owner;
            if owner_changed {
                self.index(owner.as_deref(), &record).await?;
            }
            let saved = match self.settings.concurrency {
                Concurrency::Optimistic { .. } => {
                    self.store.save_if_revision(&record, old.revision).await
                }
                _ => self.store.save(&record).await,
            };
            match saved.map_err(store_error(StoreOperation::Save))? {
                WriteOutcome::Done => {
                    if owner_changed {
                        self.unindex(loaded_owner.as_deref(), &old.id).await;
                    }
                    let cookie_id = old.cookie_id.filter(|_| announce);
                    Ok(cookie_id.map(|cookie_id| self.live_cookie(&record, &cookie_id, now)))
                }
                WriteOutcome::Conflict => {
                    callbacks.conflict(&old.id);
                    Err(SessionError::Conflict)
                }
                _ => {
                    // Deleted (logout) or expired meanwhile: never resurrect it, never send a
                    // cookie for it.
                    tracing::debug!(session = %old.id, "session vanished before it could be saved");
                    Ok(None)
                }
            }
        } else if let Some(cookie_id) = old.cookie_id.filter(|_| announce) {
            let max_age = self
                .settings
                .persistent
                .then(|| seconds_until(old.effective_expiry(), OffsetDateTime::now_utc()));
            callbacks.client(&old.id, &state.data);
            Ok(Some(cookies::live_cookie(
                &self.settings.cookie,
                self.settings.signer.as_ref(),
                &cookie_id,
                max_age,
            )))
        } else {
            Ok(None)
        }
    }

    /// Adds `record` to its owner's index (before the record is written).
    async fn index(&self, owner: Option<&str>, record: &Record<T>) -> Result<(), SessionError> {
        let Some(owner) = owner else { return Ok(()) };
        self.store
            .index_owner(owner, &record.id, record.deadline)
            .await
            .map_err(store_error(StoreOperation::Index))
    }

    /// Removes a session that is gone or moved from its owner's index. A failure only leaves a
    /// stale entry, which listing cleans up, so it does not fail the request.
    async fn unindex(&self, owner: Option<&str>, id: &SessionId) {
        let Some(owner) = owner else { return };
        if let Err(error) = self.store.unindex_owner(owner, id).await {
            tracing::warn!(session = %id, %error, "could not remove a session from its owner index");
        }
    }

    fn new_record(&self, id: SessionId, state: State<T>, now: OffsetDateTime) -> Record<T> {
        let mut record = Record::new(
            id,
            state.data,
            now,
            self.settings.idle_timeout,
            self.settings.absolute_lifetime,
        );
        record.flash = state.outgoing_flash;
        record.has_data = state.has_data;
        record
    }

    fn existing_record(&self, old: &Existing, state: State<T>, now: OffsetDateTime) -> Record<T> {
        Record {
            format: RECORD_FORMAT,
            id: old.id,
            data: state.data,
            flash: state.outgoing_flash,
            has_data: state.has_data,
            created_at: old.created_at,
            revision: old.revision + 1,
            last_seen: now,
            expires_at: old.expires_at,
            deadline: old.deadline,
        }
    }

    /// Refuses a record whose JSON is over the configured maximum. Serialization stops as soon as
    /// the limit is passed, so an oversized session costs no more than the limit.
    fn check_size(&self, record: &Record<T>) -> Result<(), SessionError> {
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
                SessionError::Store {
                    operation: StoreOperation::Save,
                    source: crate::StoreError::Encode(Box::new(err)),
                }
            }
        })
    }

    /// A new cookie ID and the ID the store keeps it under.
    fn new_ids(&self) -> Result<(SessionId, SessionId), SessionError> {
        let cookie_id = SessionId::generate()?;
        Ok((cookie_id, self.settings.at_rest.storage_id(&cookie_id)))
    }

    /// Creates a session from `state`, drawing other IDs on a collision. Returns the record and
    /// the ID for the cookie.
    async fn create(
        &self,
        state: State<T>,
        now: OffsetDateTime,
    ) -> Result<(Record<T>, SessionId), SessionError> {
        let (mut cookie_id, stored) = self.new_ids()?;
        let mut record = self.new_record(stored, state, now);
        self.check_size(&record)?;
        let owner = record.data.owner();
        for attempt in 0..ID_ATTEMPTS {
            if attempt > 0 {
                (cookie_id, record.id) = self.new_ids()?;
            }
            self.index(owner.as_deref(), &record).await?;
            match self
                .store
                .create(&record)
                .await
                .map_err(store_error(StoreOperation::Create))?
            {
                WriteOutcome::Done => return Ok((record, cookie_id)),
                _ => tracing::warn!("session id collision; drawing another"),
            }
        }
        Err(SessionError::IdCollision)
    }

    /// Moves `old` to new IDs, drawing others on a collision. Returns the moved record and the
    /// ID for the cookie, or `None` if `old` is gone.
    async fn regenerate(
        &self,
        old: &SessionId,
        mut record: Record<T>,
    ) -> Result<Option<(Record<T>, SessionId)>, SessionError> {
        self.check_size(&record)?;
        let owner = record.data.owner();
        for _ in 0..ID_ATTEMPTS {
            let cookie_id;
            (cookie_id, record.id) = self.new_ids()?;
            self.index(owner.as_deref(), &record).await?;
            let moved = match self.settings.regenerate_grace {
                Some(grace) => self.store.regenerate_with_grace(old, &record, grace).await,
                None => self.store.regenerate(old, &record).await,
            };
            match moved.map_err(store_error(StoreOperation::Regenerate))? {
                WriteOutcome::Done => return Ok(Some((record, cookie_id))),
                WriteOutcome::Missing => {
                    self.unindex(owner.as_deref(), &record.id).await;
                    return Ok(None);
                }
                _ => tracing::warn!("session id collision; drawing another"),
            }
        }
        Err(SessionError::IdCollision)
    }

    fn live_cookie(
        &self,
        record: &Record<T>,
        cookie_id: &SessionId,
        now: OffsetDateTime,
    ) -> HeaderValue {
        let max_age = self
            .settings
            .persistent
            .then(|| seconds_until(record.effective_expiry(), now));
        self.settings.callbacks.client(&record.id, &record.data);
        cookies::live_cookie(
            &self.settings.cookie,
            self.settings.signer.as_ref(),
            cookie_id,
            max_age,
        )
    }
}

fn seconds_until(at: OffsetDateTime, now: OffsetDateTime) -> u64 {
    u64::try_from((at - now).whole_seconds()).unwrap_or(0)
}
