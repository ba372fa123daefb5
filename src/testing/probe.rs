//! The session type the suite stores, and the small application the races drive.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use tower_service::Service;

use crate::{lazy::LazySession, session::Session};

/// The session the suite stores: a counter and an owner.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// Incremented by the suite's writes.
    pub count: u32,
    /// Set by the suite's login; the session's owner.
    pub user: Option<String>,
}

impl Session for Probe {
    fn owner(&self) -> Option<String> {
        self.user.clone()
    }
}

/// The application behind the layer in the races. Paths:
/// `/read` (answers `new|user|count`), `/incr`, `/login` (sets the user `alice` and
/// regenerates), `/regenerate`, `/logout`, `/flash` (sets the data and a flash for the next
/// request), `/show` (answers the visible flash, or nothing).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ProbeApp;

impl Service<Request<Bytes>> for ProbeApp {
    type Response = Response<Bytes>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Bytes>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        Box::pin(answer(req))
    }
}

fn failure(body: &'static str) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from_static(body.as_bytes()));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}

async fn answer(req: Request<Bytes>) -> Result<Response<Bytes>, Infallible> {
    let Some(lazy) = req.extensions().get::<LazySession<Probe>>().cloned() else {
        return Ok(failure("no session layer"));
    };
    let Ok(session) = lazy.load().await else {
        // The layer answers with its error response.
        return Ok(failure("session unavailable"));
    };
    let body = match req.uri().path() {
        "/read" => {
            let new = session.is_new();
            session.read(|p| format!("{new}|{}|{}", p.user.as_deref().unwrap_or(""), p.count))
        }
        "/incr" => session.update(|p| {
            p.count += 1;
            p.count.to_string()
        }),
        "/login" => {
            session.update(|p| p.user = Some("alice".to_owned()));
            session.regenerate();
            String::new()
        }
        "/regenerate" => {
            session.regenerate();
            String::new()
        }
        "/logout" => {
            session.delete();
            String::new()
        }
        "/flash" => {
            session.update(|p| p.count += 1);
            session.flash("notice", "hello");
            String::new()
        }
        "/show" => session.flash_message("notice").unwrap_or_default(),
        _ => String::new(),
    };
    let mut response = Response::new(Bytes::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    Ok(response)
}
