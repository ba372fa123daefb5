//! Cross-site request forgery: a random token per session (the synchronizer token pattern),
//! checked on every unsafe request together with the request's `Origin` (or `Referer`).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use pin_project_lite::pin_project;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use subtle::ConstantTimeEq;
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    error::SessionError,
    events::Events,
    id::{SessionId, SessionKey},
    lazy::{self, BoxFuture},
    session::Session,
};

/// A session's CSRF token: 256 random bits from the OS CSPRNG, as 43 characters of base64url.
/// Read it with [`SessionHandle::csrf_token`](crate::SessionHandle::csrf_token) and put it in
/// forms (a hidden field) or in a request header; `Debug` never prints it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CsrfToken(SessionId);

impl CsrfToken {
    pub(crate) fn generate() -> Result<Self, SessionError> {
        SessionId::generate().map(Self)
    }

    /// The token's text, for a form field or a header.
    pub fn as_str(&self) -> &str {
        self.0.expose_secret()
    }

    /// Whether `candidate` is this token, compared in constant time.
    pub(crate) fn matches(&self, candidate: &[u8]) -> bool {
        let ours = self.as_str().as_bytes();
        // The length is public (always 43); only the content is compared in constant time.
        candidate.len() == ours.len() && bool::from(candidate.ct_eq(ours))
    }
}

impl fmt::Debug for CsrfToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CsrfToken(<redacted>)")
    }
}

impl Serialize for CsrfToken {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CsrfToken {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Owned, not borrowed: not every deserializer can lend a string (escapes, readers).
        let text = String::deserialize(d)?;
        SessionId::parse(&text)
            .map(Self)
            .ok_or_else(|| de::Error::custom("not a CSRF token"))
    }
}

/// Why [`CsrfLayer`] refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CsrfRejection {
    /// The request's `Origin` (or, without one, its `Referer`) is another origin than the
    /// request's own host or the trusted ones (or `Origin: null`).
    CrossOrigin,
    /// The request carries no token (neither the header nor the form field).
    MissingToken,
    /// The request's session has no token: it never rendered a form (or has ended).
    NoSessionToken,
    /// The token is not this session's: wrong, from another session, or from before the
    /// session was regenerated (a login).
    WrongToken,
}

impl fmt::Display for CsrfRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CsrfRejection::CrossOrigin => "cross origin",
            CsrfRejection::MissingToken => "missing token",
            CsrfRejection::NoSessionToken => "no session token",
            CsrfRejection::WrongToken => "wrong token",
        })
    }
}

/// Refuses unsafe requests (`POST`, `PUT`, `PATCH`, `DELETE` and any other method but `GET`,
/// `HEAD`, `OPTIONS` and `TRACE`) that do not prove they come from your own pages. Get one from
/// [`SessionLayer::csrf`](crate::SessionLayer::csrf) and put it inside the session layer.
///
/// An unsafe request must pass two checks, or it is answered with 403 (configurable) and the
/// `csrf_rejected` event fires:
/// 1. **Origin**: its `Origin` header, or without one its `Referer`, names the request's own
///    host (the `Host` header, any scheme) or one of the origins given to
///    [`CsrfLayer::with_trusted_origins`]. A request with neither header passes this check (old
///    clients, privacy proxies) and is left to the token.
/// 2. **Token**: the session's [`CsrfToken`] is in the `x-csrf-token` header or, for an
///    `application/x-www-form-urlencoded` body, in the `csrf_token` field (both names
///    configurable). The comparison takes constant time. The session must have a token, so a
///    form the session never rendered cannot be posted.
///
/// Safe methods pass untouched and never load the session.
///
/// The form field is read from request bodies that can be rebuilt from bytes (axum's `Body`,
/// `Full<Bytes>`); behind plain Hyper, whose `Incoming` cannot, send the token in the header or
/// map the body to such a type first.
///
/// With `SameSite=Lax` (the default) browsers already keep the session cookie off cross-site
/// `POST`s; the token also covers what `SameSite` does not: same-site attackers (a sibling
/// subdomain, another port on the same host), browsers that ignore `SameSite`, and a cookie set
/// with `SameSite=None`.
///
/// ```
/// use axum::{routing::{get, post}, Router};
/// use tower_typed_sessions::{MemoryStore, Session, SessionHandle, SessionLayer};
///
/// #[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
/// struct Data;
/// impl Session for Data {}
///
/// async fn form(session: SessionHandle<Data>) -> Result<String, tower_typed_sessions::SessionError> {
///     let token = session.csrf_token()?;
///     Ok(format!(
///         r#"<form method="post" action="/save"><input type="hidden" name="csrf_token" value="{}"></form>"#,
///         token.as_str()
///     ))
/// }
///
/// let sessions = SessionLayer::new(MemoryStore::<Data>::new());
/// let app: Router = Router::new()
///     .route("/form", get(form))
///     .route("/save", post(|| async { "saved" }))
///     .layer(sessions.csrf())
///     .layer(sessions);
/// ```
pub struct CsrfLayer<T> {
    shared: Arc<CsrfConfig<T>>,
}

struct CsrfConfig<T> {
    events: Events<T>,
    header: header::HeaderName,
    field: String,
    trusted_origins: Vec<String>,
    check_origin: bool,
    max_form_bytes: usize,
    status: StatusCode,
    body: Bytes,
}

impl<T> Clone for CsrfConfig<T> {
    fn clone(&self) -> Self {
        Self {
            events: self.events.clone(),
            header: self.header.clone(),
            field: self.field.clone(),
            trusted_origins: self.trusted_origins.clone(),
            check_origin: self.check_origin,
            max_form_bytes: self.max_form_bytes,
            status: self.status,
            body: self.body.clone(),
        }
    }
}

impl<T> Clone for CsrfLayer<T> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> fmt::Debug for CsrfLayer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.shared;
        f.debug_struct("CsrfLayer")
            .field("header", &c.header)
            .field("field", &c.field)
            .field("trusted_origins", &c.trusted_origins)
            .field("check_origin", &c.check_origin)
            .field("max_form_bytes", &c.max_form_bytes)
            .field("status", &c.status)
            .finish()
    }
}

impl<T: Session> CsrfLayer<T> {
    pub(crate) fn new(events: Events<T>) -> Self {
        Self {
            shared: Arc::new(CsrfConfig {
                events,
                header: header::HeaderName::from_static("x-csrf-token"),
                field: "csrf_token".to_owned(),
                trusted_origins: Vec::new(),
                check_origin: true,
                max_form_bytes: 64 * 1024,
                status: StatusCode::FORBIDDEN,
                body: Bytes::from_static(b"cross-site request refused"),
            }),
        }
    }

    fn configure(self, change: impl FnOnce(&mut CsrfConfig<T>)) -> Self {
        let mut config = CsrfConfig::clone(&self.shared);
        change(&mut config);
        Self {
            shared: Arc::new(config),
        }
    }

    /// The request header that carries the token (default `x-csrf-token`), for scripts.
    pub fn with_header_name(self, name: header::HeaderName) -> Self {
        self.configure(|c| c.header = name)
    }

    /// The form field that carries the token (default `csrf_token`).
    pub fn with_form_field(self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.configure(|c| c.field = name)
    }

    /// Origins besides the request's own host that may send unsafe requests, as
    /// `scheme://host[:port]` (for example a front end on another host, or the public origin
    /// when a proxy rewrites `Host`). Compared exactly, ignoring ASCII case.
    pub fn with_trusted_origins(
        self,
        origins: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        let origins = origins
            .into_iter()
            .map(|o| o.into().trim_end_matches('/').to_ascii_lowercase())
            .collect();
        self.configure(|c| c.trusted_origins = origins)
    }

    /// Turns the `Origin`/`Referer` check off, leaving the token alone (for an API behind a
    /// proxy that strips or rewrites those headers).
    pub fn without_origin_check(self) -> Self {
        self.configure(|c| c.check_origin = false)
    }

    /// The largest form body read to find the token (default 64 KiB); a larger form without the
    /// header is refused.
    pub fn with_max_form_bytes(self, bytes: usize) -> Self {
        self.configure(|c| c.max_form_bytes = bytes)
    }

    /// The response to a refused request (default `403`, `cross-site request refused`).
    pub fn with_rejection_response(self, status: StatusCode, body: impl Into<Bytes>) -> Self {
        let body = body.into();
        self.configure(|c| {
            c.status = status;
            c.body = body;
        })
    }
}

impl<S, T> Layer<S> for CsrfLayer<T> {
    type Service = CsrfService<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        CsrfService {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The middleware built by [`CsrfLayer`].
pub struct CsrfService<S, T> {
    inner: S,
    shared: Arc<CsrfConfig<T>>,
}

impl<S: Clone, T> Clone for CsrfService<S, T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, T> fmt::Debug for CsrfService<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsrfService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// Methods that must not change anything, so never need a token (RFC 9110, section 9.2.1).
fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// `scheme://authority` of an origin or URL, lowercased; `None` when it has no authority.
fn origin_of(url: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if scheme.is_empty() || authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some((scheme.to_ascii_lowercase(), authority.to_ascii_lowercase()))
}

impl<T> CsrfConfig<T> {
    /// Whether the request's `Origin` (or `Referer`) is acceptable.
    fn origin_allowed(&self, headers: &HeaderMap, uri: &http::Uri) -> bool {
        if !self.check_origin {
            return true;
        }
        let claimed = match (headers.get(header::ORIGIN), headers.get(header::REFERER)) {
            (Some(origin), _) => origin,
            (None, Some(referer)) => referer,
            (None, None) => return true,
        };
        let Some((scheme, authority)) = claimed.to_str().ok().and_then(origin_of) else {
            // `Origin: null` (a sandboxed or privacy-sensitive context) or garbage.
            return false;
        };
        // HTTP/1 names the host in `Host`; HTTP/2 and 3 in the `:authority` pseudo-header, which
        // reaches us as the URI's authority.
        let own_host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| uri.authority().map(|a| a.as_str()))
            .map(str::to_ascii_lowercase);
        if own_host.as_deref() == Some(authority.as_str()) {
            return true;
        }
        let full = format!("{scheme}://{authority}");
        self.trusted_origins.contains(&full)
    }

    fn reject<B: From<Bytes>>(&self, reason: CsrfRejection, key: Option<&SessionKey>) -> Response<B>
    where
        T: 'static,
    {
        self.events.csrf_rejected(reason, key);
        let mut response = Response::new(B::from(self.body.clone()));
        *response.status_mut() = self.status;
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// Whether the request's body is a urlencoded form.
fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

impl<S, T, ReqBody, ResBody> Service<Request<ReqBody>> for CsrfService<S, T>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Body + From<Bytes> + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    ResBody: From<Bytes> + Send + 'static,
    T: Session,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = CsrfFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        if is_safe(req.method()) {
            return CsrfFuture::passed(inner.call(req));
        }
        let shared = Arc::clone(&self.shared);
        CsrfFuture::checking(Box::pin(async move {
            if !shared.origin_allowed(req.headers(), req.uri()) {
                return Ok(shared.reject(CsrfRejection::CrossOrigin, None));
            }
            let lazy = match lazy::of_request::<T, _, ResBody>(&req, "CsrfLayer") {
                Ok(lazy) => lazy,
                Err(response) => return Ok(response),
            };
            // The header first: no body to read.
            let mut candidate = req
                .headers()
                .get(&shared.header)
                .map(|v| v.as_bytes().to_vec());
            let req = if candidate.is_none() && is_form(req.headers()) {
                let (parts, body) = req.into_parts();
                let Ok(collected) = Limited::new(body, shared.max_form_bytes).collect().await
                else {
                    return Ok(shared.reject(CsrfRejection::MissingToken, None));
                };
                let bytes = collected.to_bytes();
                candidate = form_urlencoded::parse(&bytes)
                    .find(|(name, _)| *name == shared.field)
                    .map(|(_, value)| value.as_bytes().to_vec());
                Request::from_parts(parts, ReqBody::from(bytes))
            } else {
                req
            };
            let Some(candidate) = candidate else {
                return Ok(shared.reject(CsrfRejection::MissingToken, None));
            };
            let session = match lazy.load().await {
                Ok(session) => session,
                // A store failure, not an attack: no event; the session layer replaces this
                // answer with its error response.
                Err(_) => {
                    let mut response = Response::new(ResBody::from(Bytes::new()));
                    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    return Ok(response);
                }
            };
            let key = session.id();
            // A read-only view (an old cookie within a regenerate grace window) carries no token,
            // so it is refused below like any session without one.
            match session.stored_csrf_token() {
                None => Ok(shared.reject(CsrfRejection::NoSessionToken, key.as_ref())),
                Some(token) if !token.matches(&candidate) => {
                    Ok(shared.reject(CsrfRejection::WrongToken, key.as_ref()))
                }
                Some(_) => inner.call(req).await,
            }
        }))
    }
}

pin_project! {
    /// The response future of [`CsrfService`]: a safe request's handler future as it is (no
    /// allocation), or the boxed check of an unsafe one.
    pub struct CsrfFuture<F, B, E> {
        #[pin]
        stage: Stage<F, B, E>,
    }
}

pin_project! {
    #[project = StageProj]
    enum Stage<F, B, E> {
        // A safe method: straight to the inner service.
        Passed { #[pin] inner: F },
        // An unsafe method: the checks, then the inner service.
        Checking { checking: BoxFuture<Response<B>, E> },
    }
}

impl<F, B, E> CsrfFuture<F, B, E> {
    fn passed(inner: F) -> Self {
        Self {
            stage: Stage::Passed { inner },
        }
    }

    fn checking(checking: BoxFuture<Response<B>, E>) -> Self {
        Self {
            stage: Stage::Checking { checking },
        }
    }
}

impl<F, B, E> fmt::Debug for CsrfFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stage = match self.stage {
            Stage::Passed { .. } => "passed",
            Stage::Checking { .. } => "checking",
        };
        f.debug_struct("CsrfFuture").field("stage", &stage).finish()
    }
}

impl<F, B, E> Future for CsrfFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().stage.project() {
            StageProj::Passed { inner } => inner.poll(cx),
            StageProj::Checking { checking } => checking.as_mut().poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_and_authority() {
        assert_eq!(
            origin_of("https://Example.com:8443/path?q#f"),
            Some(("https".into(), "example.com:8443".into()))
        );
        assert_eq!(origin_of("null"), None);
        assert_eq!(origin_of("https://user@evil.example/"), None);
        assert_eq!(origin_of("/relative"), None);
    }

    #[test]
    fn tokens_compare_whole_and_never_print() {
        let token = CsrfToken::generate().unwrap();
        assert!(token.matches(token.as_str().as_bytes()));
        assert!(!token.matches(&token.as_str().as_bytes()[..42]));
        assert!(!token.matches(b""));
        let other = CsrfToken::generate().unwrap();
        assert!(!token.matches(other.as_str().as_bytes()));
        assert!(!format!("{token:?}").contains(token.as_str()));
    }

    #[test]
    fn tokens_decode_from_owned_strings_too() {
        let token = CsrfToken::generate().unwrap();
        let json = serde_json::to_string(&token).unwrap();
        let borrowed: CsrfToken = serde_json::from_str(&json).unwrap();
        let from_reader: CsrfToken = serde_json::from_reader(json.as_bytes()).unwrap();
        let from_value: CsrfToken =
            serde_json::from_value(serde_json::json!(token.as_str())).unwrap();
        assert!(borrowed == token && from_reader == token && from_value == token);
        assert!(serde_json::from_str::<CsrfToken>("\"not a token\"").is_err());
    }
}
