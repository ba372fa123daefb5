//! The Axum extractors: [`SessionHandle`], which loads the session, and [`LazySession`], which
//! leaves loading to the handler.

use std::fmt;

use axum_core::{
    extract::{FromRequestParts, OptionalFromRequestParts},
    response::{IntoResponse, Response},
};
use http::{request::Parts, StatusCode};

use crate::{
    error::SessionError,
    handle::SessionHandle,
    lazy::{LazySession, SessionUnavailable},
    session::Session,
};

/// Why a [`SessionHandle`] or [`LazySession`] could not be extracted.
#[derive(Debug)]
#[non_exhaustive]
pub enum SessionRejection {
    /// The request did not go through a [`SessionLayer`](crate::SessionLayer) for this session
    /// type: add the layer to the router, with the same `T` the handler asks for.
    MissingLayer {
        /// The session type the handler asked for.
        type_name: &'static str,
    },
    /// The store failed while loading the session. The layer replaces this rejection's response
    /// with its configured error response (without Set-Cookie).
    Unavailable(SessionUnavailable),
}

impl SessionRejection {
    /// The status of the rejection's response (500).
    pub fn status(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    /// The body text of the rejection's response.
    pub fn body_text(&self) -> String {
        match self {
            SessionRejection::MissingLayer { .. } => self.to_string(),
            // The details go to the `error` event and the log, not to the client.
            SessionRejection::Unavailable(_) => "session unavailable".to_owned(),
        }
    }
}

impl fmt::Display for SessionRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionRejection::MissingLayer { type_name } => write!(
                f,
                "missing request extension LazySession<{type_name}>: is SessionLayer<{type_name}, _> added to the router?"
            ),
            SessionRejection::Unavailable(unavailable) => unavailable.fmt(f),
        }
    }
}

impl std::error::Error for SessionRejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SessionRejection::MissingLayer { .. } => None,
            SessionRejection::Unavailable(unavailable) => Some(unavailable),
        }
    }
}

impl IntoResponse for SessionRejection {
    fn into_response(self) -> Response {
        if let SessionRejection::MissingLayer { .. } = self {
            tracing::error!(rejection = %self, "session extractor rejected the request");
        }
        (self.status(), self.body_text()).into_response()
    }
}

/// Lets a handler use `?` on the handle's fallible calls (`csrf_token()?`). A conflict (or a
/// write refused to a read-only request) answers 409, anything else 500; the body never carries
/// the error's details, which go to the log.
impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        let status = match self {
            SessionError::Conflict | SessionError::ReadOnly => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        tracing::warn!(error = %self, "handler answered with a session error");
        (status, "session unavailable").into_response()
    }
}

fn lazy<T: Session>(parts: &Parts) -> Option<LazySession<T>> {
    parts.extensions.get::<LazySession<T>>().cloned()
}

fn missing<T>() -> SessionRejection {
    SessionRejection::MissingLayer {
        type_name: std::any::type_name::<T>(),
    }
}

/// Loads the session: one store call for a live session, none without a cookie.
impl<S, T> FromRequestParts<S> for SessionHandle<T>
where
    S: Send + Sync,
    T: Session,
{
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let lazy = lazy::<T>(parts).ok_or_else(missing::<T>)?;
        lazy.load().await.map_err(SessionRejection::Unavailable)
    }
}

/// `None` without a layer for `T`; loads the session otherwise.
impl<S, T> OptionalFromRequestParts<S> for SessionHandle<T>
where
    S: Send + Sync,
    T: Session,
{
    type Rejection = SessionRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        match lazy::<T>(parts) {
            Some(lazy) => lazy
                .load()
                .await
                .map(Some)
                .map_err(SessionRejection::Unavailable),
            None => Ok(None),
        }
    }
}

/// The session unloaded, for a handler that decides itself whether to load it.
impl<S, T> FromRequestParts<S> for LazySession<T>
where
    S: Send + Sync,
    T: Session,
{
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        lazy::<T>(parts).ok_or_else(missing::<T>)
    }
}
