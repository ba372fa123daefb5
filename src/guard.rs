//! Guarding routes: only logged-in sessions (or those an application's predicate accepts) get
//! through; others are sent to the login page with a safe way back.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    error::ConfigError,
    lazy::{self, BoxFuture},
    session::Session,
};

/// The path a login page may send the user back to: `candidate` itself if it is a path on this
/// site, `None` otherwise. Use it on the `next` parameter that [`RequireLogin`] adds, before
/// redirecting to it: an unchecked `next` is an open redirect (a link to your login page that
/// ends on an attacker's).
///
/// Accepted: an absolute path (`/`, `/orders?page=2`) of printable ASCII. Refused: anything with
/// a scheme or a host (`https://evil.example`, `//evil.example`), backslashes (`/\evil.example`,
/// which browsers read as `//`), control characters and spaces (browsers drop tabs and line
/// breaks from URLs: `/\t/evil.example` is `//evil.example`), and the same shapes
/// percent-encoded, once or several times (`/%2F%2Fevil.example`, `/%5Cevil.example`).
///
/// ```
/// use tower_typed_sessions::local_redirect;
///
/// assert_eq!(local_redirect("/orders?page=2"), Some("/orders?page=2"));
/// assert_eq!(local_redirect("//evil.example"), None);
/// assert_eq!(local_redirect("https://evil.example/"), None);
/// assert_eq!(local_redirect("/%2F%2Fevil.example"), None);
/// let next = local_redirect("/\\evil.example").unwrap_or("/");
/// assert_eq!(next, "/");
/// ```
pub fn local_redirect(candidate: &str) -> Option<&str> {
    let mut text = candidate.to_owned();
    // Each pass decodes one layer of percent-encoding; every layer must pass.
    for _ in 0..4 {
        if !is_local_path(&text) {
            return None;
        }
        let decoded = percent_decode(&text)?;
        if decoded == text {
            return Some(candidate);
        }
        text = decoded;
    }
    // Still changing after four decodings: nobody links like that.
    None
}

fn is_local_path(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.first() == Some(&b'/')
        && !matches!(bytes.get(1), Some(b'/' | b'\\'))
        && bytes.iter().all(|b| b.is_ascii_graphic() && *b != b'\\')
}

/// One layer of percent-decoding; `None` if the result is not UTF-8 (then it is no path of ours).
fn percent_decode(text: &str) -> Option<String> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .ok()
        .map(|decoded| decoded.into_owned())
}

/// How a refused request is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unauthenticated {
    /// A redirect to the login page for requests that accept HTML (a browser navigating), the
    /// status response for the others (scripts, APIs). The default.
    RedirectBrowsers,
    /// Always the redirect.
    Redirect,
    /// Always the status response.
    Status,
}

type Predicate<T> = Arc<dyn Fn(&T) -> bool + Send + Sync>;

/// Lets a request through only when its session is logged in: by default when
/// [`Session::owner`] names someone, or when the predicate given to
/// [`RequireLogin::with_predicate`] accepts the session (a role, a recent login). Get one from
/// [`SessionLayer::require_login`](crate::SessionLayer::require_login) and put it on the
/// routes to protect (in Axum, `route_layer`), inside the session layer.
///
/// A refused request that accepts HTML is redirected (`303 See Other`) to the login page with
/// the path and query it asked for in a `next` parameter, percent-encoded
/// (`/login?next=%2Forders%3Fpage%3D2`); other requests get `401 Unauthorized` (both
/// configurable). The login handler sends the user back with [`local_redirect`], which refuses
/// any `next` that would leave the site. An expired, revoked or logged-out session is refused
/// like an anonymous one, since it loads as a new, empty session. A request that reads a session
/// through a regenerate grace window (read-only) counts as that session.
///
/// `next` is the request's URI as this layer sees it: under axum's `Router::nest` that is the
/// path without the nest's prefix, so put the guard on the outer router (or nest the login
/// page alike) when the two differ.
///
/// ```
/// use axum::{routing::get, Router};
/// use tower_typed_sessions::{MemoryStore, Session, SessionLayer};
///
/// #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
/// struct Account { user: Option<String>, admin: bool }
/// impl Session for Account {
///     fn owner(&self) -> Option<String> { self.user.clone() }
/// }
///
/// let sessions = SessionLayer::new(MemoryStore::<Account>::new());
/// let app: Router = Router::new()
///     .route("/orders", get(|| async { "your orders" }))
///     .route_layer(sessions.require_login())
///     .route(
///         "/admin",
///         get(|| async { "admin" }).route_layer(
///             sessions.require_login().with_predicate(|account: &Account| account.admin),
///         ),
///     )
///     .route("/login", get(|| async { "the login form" }))
///     .layer(sessions);
/// ```
pub struct RequireLogin<T> {
    login_path: Arc<str>,
    predicate: Option<Predicate<T>>,
    unauthenticated: Unauthenticated,
    status: StatusCode,
}

impl<T> Clone for RequireLogin<T> {
    fn clone(&self) -> Self {
        Self {
            login_path: Arc::clone(&self.login_path),
            predicate: self.predicate.clone(),
            unauthenticated: self.unauthenticated,
            status: self.status,
        }
    }
}

impl<T> fmt::Debug for RequireLogin<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireLogin")
            .field("login_path", &self.login_path)
            .field("predicate", &self.predicate.is_some())
            .field("unauthenticated", &self.unauthenticated)
            .field("status", &self.status)
            .finish()
    }
}

impl<T: Session> RequireLogin<T> {
    pub(crate) fn new() -> Self {
        Self {
            login_path: Arc::from("/login"),
            predicate: None,
            unauthenticated: Unauthenticated::RedirectBrowsers,
            status: StatusCode::UNAUTHORIZED,
        }
    }

    /// The login page (default `/login`). Refused unless it is a local path without a query
    /// (see [`local_redirect`]).
    pub fn try_with_login_path(mut self, path: impl Into<String>) -> Result<Self, ConfigError> {
        let path = path.into();
        if local_redirect(&path).is_none() || path.contains(['?', '#']) {
            return Err(ConfigError::InvalidLoginPath);
        }
        self.login_path = Arc::from(path);
        Ok(self)
    }

    /// Who gets through: `predicate` over the session's data, instead of "has an owner".
    pub fn with_predicate(
        mut self,
        predicate: impl Fn(&T) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.predicate = Some(Arc::new(predicate));
        self
    }

    /// How refused requests are answered (default [`Unauthenticated::RedirectBrowsers`]).
    pub fn with_unauthenticated(mut self, answer: Unauthenticated) -> Self {
        self.unauthenticated = answer;
        self
    }

    /// The status of the non-redirect answer (default 401).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    fn allows(&self, data: &T) -> bool {
        match &self.predicate {
            Some(predicate) => predicate(data),
            None => data.owner().is_some(),
        }
    }

    fn refuse<B: From<Bytes>>(&self, headers: &HeaderMap, path_and_query: &str) -> Response<B> {
        let redirect = match self.unauthenticated {
            Unauthenticated::Redirect => true,
            Unauthenticated::Status => false,
            Unauthenticated::RedirectBrowsers => accepts_html(headers),
        };
        let mut response = Response::new(B::from(Bytes::from_static(b"login required")));
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if !redirect {
            *response.status_mut() = self.status;
            return response;
        }
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("next", path_and_query)
            .finish();
        let location = format!("{}?{query}", self.login_path);
        match HeaderValue::from_str(&location) {
            Ok(location) => {
                *response.status_mut() = StatusCode::SEE_OTHER;
                response.headers_mut().insert(header::LOCATION, location);
            }
            // The query is percent-encoded and the path was checked: unreachable, but never a
            // panic: answer with the status instead.
            Err(_) => *response.status_mut() = self.status,
        }
        response
    }
}

/// Whether the client says it takes HTML (a browser navigating does; `fetch` and API clients
/// usually do not).
fn accepts_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| {
            let media = media.split(';').next().unwrap_or_default().trim();
            media.eq_ignore_ascii_case("text/html")
                || media.eq_ignore_ascii_case("application/xhtml+xml")
        })
}

impl<S, T> Layer<S> for RequireLogin<T> {
    type Service = RequireLoginService<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireLoginService {
            inner,
            guard: self.clone(),
        }
    }
}

/// The middleware built by [`RequireLogin`].
pub struct RequireLoginService<S, T> {
    inner: S,
    guard: RequireLogin<T>,
}

impl<S: Clone, T> Clone for RequireLoginService<S, T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            guard: self.guard.clone(),
        }
    }
}

impl<S: fmt::Debug, T> fmt::Debug for RequireLoginService<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireLoginService")
            .field("inner", &self.inner)
            .field("guard", &self.guard)
            .finish()
    }
}

impl<S, T, ReqBody, ResBody> Service<Request<ReqBody>> for RequireLoginService<S, T>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: From<Bytes> + Send + 'static,
    T: Session,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Response<ResBody>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let guard = self.guard.clone();
        Box::pin(async move {
            let lazy = match lazy::of_request::<T, _, ResBody>(&req, "RequireLogin") {
                Ok(lazy) => lazy,
                Err(response) => return Ok(response),
            };
            let allowed = match lazy.load().await {
                Ok(session) => session.read(|data| guard.allows(data)),
                // The session layer answers with its error response.
                Err(_) => false,
            };
            if allowed {
                return inner.call(req).await;
            }
            let target = req
                .uri()
                .path_and_query()
                .map_or("/", |pq| pq.as_str())
                .to_owned();
            Ok(guard.refuse(req.headers(), &target))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_survive() {
        for good in ["/", "/a", "/a/b?c=d&e=%2F", "/orders?page=2#top", "/%41"] {
            assert_eq!(local_redirect(good), Some(good), "{good}");
        }
        for bad in [
            "",
            "a",
            "//evil.example",
            "///evil.example",
            "https://evil.example",
            "http:/evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "/a\\b",
            "/\t/evil.example",
            "/\n/evil.example",
            "/ /evil.example",
            "/%2F%2Fevil.example",
            "/%2f/evil.example",
            "/%5Cevil.example",
            "/%252F%252Fevil.example",
            "/%09/evil.example",
            "/%0d%0aSet-Cookie:x",
            "/caf\u{e9}",
            "/%ff",
            "javascript:alert(1)",
        ] {
            assert_eq!(local_redirect(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn browsers_are_told_apart_from_scripts() {
        let mut headers = HeaderMap::new();
        assert!(!accepts_html(&headers));
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"),
        );
        assert!(accepts_html(&headers));
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert!(!accepts_html(&headers));
    }
}
