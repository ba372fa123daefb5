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
use http::{header, HeaderValue, Request, Response};
use tower_service::Service;

use pin_project_lite::pin_project;

use crate::{
    cookies::{self, CookieHeaders},
    engine::{self, Engine, Pending, Write},
    error::SessionError,
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

type WriteFuture<B, E> = Pin<Box<dyn Future<Output = Result<Response<B>, E>> + Send>>;

pin_project! {
    /// The response future of [`SessionService`]: the handler's future, then, only if the
    /// handler loaded the session and the store has work to do, the write (boxed, since it
    /// awaits the store). A request that never loads, or only reads a store's session, costs no
    /// allocation here (a cookie-only session is always sealed on the boxed path).
    pub struct ResponseFuture<F, T, St, B, E> {
        #[pin]
        handler: F,
        engine: Arc<Engine<T, St>>,
        session: LazySession<T>,
        writing: Option<WriteFuture<B, E>>,
    }
}

impl<F, T, St, B, E> fmt::Debug for ResponseFuture<F, T, St, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("writing", &self.writing.is_some())
            .finish_non_exhaustive()
    }
}

impl<F, T, St, B, E> Future for ResponseFuture<F, T, St, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
    T: Session,
    St: Store<T>,
    B: From<Bytes> + Send + 'static,
    E: 'static,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(writing) = this.writing {
            return writing.as_mut().poll(cx);
        }
        let response = match this.handler.poll(cx) {
            Poll::Ready(Ok(response)) => response,
            Poll::Ready(Err(err)) => {
                // Nothing is written for a failed handler; later writes are refused loudly.
                let _ = this.session.finish();
                return Poll::Ready(Err(err));
            }
            Poll::Pending => return Poll::Pending,
        };
        let state = match this.session.finish() {
            Finished::NotLoaded => return Poll::Ready(Ok(response)),
            Finished::Failed(unavailable) => {
                return Poll::Ready(Ok(this.engine.error_response(unavailable.error())))
            }
            Finished::Loaded(state) => state,
        };
        let loaded = state.existing.is_some();
        match this.engine.write_now(state) {
            // A read: answered in this poll, with nothing boxed.
            Write::Done(cookie) => {
                Poll::Ready(Ok(respond(this.engine, response, Ok(cookie), loaded)))
            }
            Write::Later(pending) => {
                let engine = Arc::clone(this.engine);
                let writing = this
                    .writing
                    .insert(Box::pin(write(engine, pending, response, loaded)));
                writing.as_mut().poll(cx)
            }
        }
    }
}

/// Writes what the handler left in a loaded session, for the store, and answers.
async fn write<T: Session, St: Store<T>, B: From<Bytes>, E>(
    engine: Arc<Engine<T, St>>,
    pending: Pending<T>,
    response: Response<B>,
    loaded: bool,
) -> Result<Response<B>, E> {
    let written = engine.write_later(pending).await;
    Ok(respond(&engine, response, written, loaded))
}

/// `response` with the write's Set-Cookie, or the error response if the store failed.
fn respond<T: Session, St: Store<T>, B: From<Bytes>>(
    engine: &Engine<T, St>,
    mut response: Response<B>,
    written: Result<Option<HeaderValue>, SessionError>,
    loaded: bool,
) -> Response<B> {
    match written {
        Ok(Some(cookie)) => {
            let headers = response.headers_mut();
            headers.append(header::SET_COOKIE, cookie);
            cookies::mark_uncacheable(headers);
            response
        }
        Ok(None) => {
            if loaded {
                // The handler may have rendered session data: caches must key on it.
                cookies::vary_on_cookie(response.headers_mut());
            }
            response
        }
        Err(err) => engine.error_response(&err),
    }
}

impl<S, T, St, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S, T, St>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    ReqBody: Send + 'static,
    ResBody: From<Bytes> + Send + 'static,
    T: Session,
    St: Store<T>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, T, St, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // Only the cookie headers are kept (reference-counted, not copied): the store is asked
        // when, and if, the handler loads the session.
        let cookie_headers = CookieHeaders::from_request(req.headers());
        let session = LazySession::new(engine::loader(&self.engine), cookie_headers);
        req.extensions_mut().insert(session.clone());
        ResponseFuture {
            handler: self.inner.call(req),
            engine: Arc::clone(&self.engine),
            session,
            writing: None,
        }
    }
}
