//! The session as the layer hands it to the request: not loaded until something asks for it.

use std::{
    error::Error as StdError,
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use bytes::Bytes;
use http::HeaderValue;
use tokio::sync::OnceCell;

use crate::{
    cookies::CookieHeaders,
    error::SessionError,
    handle::{SessionHandle, State},
    session::Session,
};

/// Loads a request's session from its cookie headers: the engine, seen without its store type.
pub(crate) trait Loader<T>: Send + Sync + 'static {
    fn load<'a>(
        &'a self,
        cookie_headers: &'a [HeaderValue],
    ) -> Pin<Box<dyn Future<Output = Result<State<T>, SessionError>> + Send + 'a>>;
}

/// The current request's session before it is loaded. The layer puts one into every request's
/// extensions; nothing touches the store until [`LazySession::load`] is awaited (the Axum
/// extractor for [`SessionHandle`] does it for you).
///
/// A request that never loads its session costs no store round trip, works while the store is
/// down, fires no event, and gets no Set-Cookie, `Vary` or `Cache-Control` header from the
/// layer: its session, if it has one, is left exactly as it was (its expiry does not slide, its
/// flash waits for the next request that loads it).
///
/// Clones share one load: however many times and from however many places it is awaited, the
/// store is asked once and every caller gets the same [`SessionHandle`].
///
/// ```
/// use bytes::Bytes;
/// use http::{Request, Response, StatusCode};
/// use http_body_util::Full;
/// use tower_typed_sessions::{LazySession, Session};
///
/// #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
/// struct Visits { count: u32 }
/// impl Session for Visits {}
///
/// // A Hyper or Tower service behind `SessionLayer`: only `/count` asks for the session.
/// async fn handle(req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
///     if req.uri().path() != "/count" {
///         return Ok(Response::new(Full::from("no session needed")));
///     }
///     let Some(lazy) = req.extensions().get::<LazySession<Visits>>() else {
///         return Ok(Response::new(Full::from("no session layer")));
///     };
///     match lazy.load().await {
///         Ok(session) => {
///             let n = session.update(|v| { v.count += 1; v.count });
///             Ok(Response::new(Full::from(format!("visit {n}"))))
///         }
///         // The layer replaces this answer with its configured error response.
///         Err(_unavailable) => {
///             let mut response = Response::new(Full::default());
///             *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
///             Ok(response)
///         }
///     }
/// }
/// ```
pub struct LazySession<T> {
    shared: Arc<Shared<T>>,
}

struct Shared<T> {
    loader: Arc<dyn Loader<T>>,
    cookie_headers: CookieHeaders,
    outcome: OnceCell<Result<SessionHandle<T>, SessionUnavailable>>,
    /// The layer took the outcome to answer the request: a load that completes later is
    /// discarded.
    finished: AtomicBool,
}

impl<T> Clone for LazySession<T> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> fmt::Debug for LazySession<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.shared.outcome.get() {
            None => "not loaded",
            Some(Ok(_)) => "loaded",
            Some(Err(_)) => "failed",
        };
        f.debug_struct("LazySession")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

/// What the layer finds when the handler has returned. Unboxed although `Loaded` is large: it
/// lives once per request on the stack, where a move costs less than a heap allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Finished<T> {
    /// Nobody asked for the session.
    NotLoaded,
    /// The session was loaded: the state the handler left.
    Loaded(State<T>),
    /// The load failed: the error, for the error response.
    Failed(SessionUnavailable),
}

impl<T: Session> LazySession<T> {
    pub(crate) fn new(loader: Arc<dyn Loader<T>>, cookie_headers: CookieHeaders) -> Self {
        Self {
            shared: Arc::new(Shared {
                loader,
                cookie_headers,
                outcome: OnceCell::new(),
                finished: AtomicBool::new(false),
            }),
        }
    }

    /// Loads the session (one store call for a live session, none without a cookie) and returns
    /// its handle; later calls return the same handle without asking the store again.
    ///
    /// On a store failure every call answers [`SessionUnavailable`], and the layer answers the
    /// request with its configured error response (without Set-Cookie) whatever the handler
    /// returns: fail closed, as when a save fails.
    ///
    /// Load before the response is sent. A load that completes after it (in a task the handler
    /// spawned) still asks the store, which slides the expiry and takes a pending flash (then
    /// lost), but hands back a closed handle: it reads as a new, empty session and keeps no
    /// change.
    pub async fn load(&self) -> Result<SessionHandle<T>, SessionUnavailable> {
        let shared = &self.shared;
        let outcome = shared
            .outcome
            .get_or_init(|| async {
                let loaded = shared.loader.load(shared.cookie_headers.as_slice()).await;
                loaded
                    .map(SessionHandle::new)
                    .map_err(|err| SessionUnavailable {
                        error: Arc::new(err),
                    })
            })
            .await;
        if let (Ok(handle), true) = (outcome, shared.finished.load(Ordering::SeqCst)) {
            // Loaded after the response left (a task the handler spawned): nothing it changes
            // can be saved, and the handle says so when written to.
            tracing::warn!("session loaded after the response was sent; changes will be lost");
            handle.close();
        }
        outcome.clone()
    }

    /// Whether the session has been loaded (successfully or not).
    pub fn is_loaded(&self) -> bool {
        self.shared.outcome.initialized()
    }

    /// Takes what the handler left, once the response is ready; later loads are discarded.
    pub(crate) fn finish(&self) -> Finished<T> {
        self.shared.finished.store(true, Ordering::SeqCst);
        match self.shared.outcome.get() {
            None => Finished::NotLoaded,
            Some(Ok(handle)) => Finished::Loaded(handle.close()),
            Some(Err(unavailable)) => Finished::Failed(unavailable.clone()),
        }
    }
}

/// The lazy session a layer inside the session layer works with (the guard, the CSRF check), or
/// the 500 to answer when there is none: `layer` names the misplaced layer in the log.
pub(crate) fn of_request<T: Session, R, B: From<Bytes>>(
    req: &http::Request<R>,
    layer: &'static str,
) -> Result<LazySession<T>, http::Response<B>> {
    if let Some(lazy) = req.extensions().get::<LazySession<T>>() {
        return Ok(lazy.clone());
    }
    tracing::error!("{layer} without a SessionLayer of the same session type around it");
    let mut response = http::Response::new(B::from(Bytes::from_static(
        b"a session layer is missing in front of this route",
    )));
    *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
    Err(response)
}

/// The boxed future of the layers that run inside the session layer.
pub(crate) type BoxFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

/// The session could not be loaded: the store failed. The layer answers the request with its
/// configured error response, whatever the handler returns; [`SessionUnavailable::error`] says
/// what failed.
#[derive(Clone, Debug)]
pub struct SessionUnavailable {
    error: Arc<SessionError>,
}

impl SessionUnavailable {
    /// What failed.
    pub fn error(&self) -> &SessionError {
        &self.error
    }
}

impl fmt::Display for SessionUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session unavailable: {}", self.error)
    }
}

impl StdError for SessionUnavailable {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(self.error.as_ref())
    }
}
