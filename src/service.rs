//! The service the layer wraps around the application: hand the request a lazy session, run the
//! handler, and write what it left in the session if it loaded it.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{header, Request, Response};
use tower_service::Service;

use crate::{
    cookies,
    engine::{self, Engine},
    lazy::{Finished, LazySession},
    session::Session,
    store::Store,
};

/// The middleware built by [`SessionLayer`](crate::SessionLayer).
pub struct SessionService<S, T, St> {
    inner: S,
    engine: Arc<Engine<T, St>>,
}

impl<S: Clone, T, St> Clone for SessionService<S, T, St> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            engine: Arc::clone(&self.engine),
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
    pub(crate) fn new(inner: S, engine: Arc<Engine<T, St>>) -> Self {
        Self { inner, engine }
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
        let engine = Arc::clone(&self.engine);
        // Only the cookie headers are kept (reference-counted, not copied): the store is asked
        // when, and if, the handler loads the session.
        let cookie_headers = req
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .cloned()
            .collect();
        let session = LazySession::new(engine::loader(&engine), cookie_headers);
        req.extensions_mut().insert(session.clone());
        ResponseFuture {
            inner: Box::pin(async move {
                let mut response = inner.call(req).await?;
                let state = match session.finish() {
                    Finished::NotLoaded => return Ok(response),
                    Finished::Failed(unavailable) => {
                        return Ok(engine.error_response(unavailable.error()))
                    }
                    Finished::Loaded(state) => state,
                };
                let loaded = state.existing.is_some();
                match engine.write(state).await {
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
                    Err(err) => Ok(engine.error_response(&err)),
                }
            }),
        }
    }
}
