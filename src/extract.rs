//! The Axum extractor for [`SessionHandle`].

use std::{convert::Infallible, fmt};

use axum_core::{
    extract::{FromRequestParts, OptionalFromRequestParts},
    response::{IntoResponse, Response},
};
use http::{request::Parts, StatusCode};

use crate::{handle::SessionHandle, session::Session};

/// Why a [`SessionHandle`] could not be extracted.
#[derive(Debug)]
#[non_exhaustive]
pub enum SessionRejection {
    /// The request did not go through a [`SessionLayer`](crate::SessionLayer) for this session
    /// type: add the layer to the router, with the same `T` the handler asks for.
    MissingLayer {
        /// The session type the handler asked for.
        type_name: &'static str,
    },
}

impl SessionRejection {
    /// The status of the rejection's response (500: a server misconfiguration).
    pub fn status(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    /// The body text of the rejection's response.
    pub fn body_text(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for SessionRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionRejection::MissingLayer { type_name } => write!(
                f,
                "missing request extension SessionHandle<{type_name}>: is SessionLayer<{type_name}, _> added to the router?"
            ),
        }
    }
}

impl std::error::Error for SessionRejection {}

impl IntoResponse for SessionRejection {
    fn into_response(self) -> Response {
        tracing::error!(rejection = %self, "session extractor rejected the request");
        (self.status(), self.body_text()).into_response()
    }
}

impl<S, T> FromRequestParts<S> for SessionHandle<T>
where
    S: Send + Sync,
    T: Session,
{
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<SessionHandle<T>>()
            .cloned()
            .ok_or(SessionRejection::MissingLayer {
                type_name: std::any::type_name::<T>(),
            })
    }
}

impl<S, T> OptionalFromRequestParts<S> for SessionHandle<T>
where
    S: Send + Sync,
    T: Session,
{
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<SessionHandle<T>>().cloned())
    }
}
