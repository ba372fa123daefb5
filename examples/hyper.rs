//! The session layer on a plain hyper 1 server, without Axum.
//!
//! The layer is an ordinary Tower layer: wrap a `tower::service_fn` with it, adapt the result to
//! hyper with `TowerToHyperService`, and serve each connection with hyper's HTTP/1 builder. The
//! handler finds a `LazySession<T>` in the request extensions and loads the session from it only
//! on the routes that need one.
//!
//! `GET /` counts visits per session, `GET /reset` deletes the session; anything else is a 404
//! that never touches the store.
//!
//! Run it (set `PORT` to use another port than 3000):
//!
//! ```text
//! cargo run --example hyper
//! ```
//!
//! Then open <http://localhost:3000> and reload, or use curl with a cookie jar:
//!
//! ```text
//! curl -c jar -b jar http://localhost:3000/        # You have visited 1 time.
//! curl -c jar -b jar http://localhost:3000/        # You have visited 2 times.
//! curl -c jar -b jar http://localhost:3000/reset   # Session deleted.
//! ```
//!
//! The cookie is `Secure` by default; browsers and curl still accept it from `http://localhost`.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    body::Incoming,
    header::{HeaderValue, CONTENT_TYPE},
    server::conn::http1,
    Request, Response, StatusCode,
};
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use serde::{Deserialize, Serialize};
use tower::ServiceBuilder;
use tower_typed_sessions::{LazySession, MemoryStore, Session, SessionLayer};

/// What this app keeps per session.
#[derive(Clone, Default, Serialize, Deserialize)]
struct Visits {
    count: u32,
}

impl Session for Visits {}

/// The application: a plain async function from request to response. The response body must
/// implement `From<Bytes>` (the layer builds its error response from bytes); `Full<Bytes>` does.
async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    if path != "/" && path != "/reset" {
        // Never loaded: no store call, and this answer works while the store is down.
        return Ok(text(StatusCode::NOT_FOUND, "Not found.\n".to_owned()));
    }
    // The layer put the lazy session in the extensions. It is missing only if the layer is not
    // in front of this service (or was built for another session type): a server bug, so a 500.
    let Some(lazy) = req.extensions().get::<LazySession<Visits>>() else {
        return Ok(text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "session layer missing".to_owned(),
        ));
    };
    // One store call. On a store failure the layer replaces whatever we answer with its error
    // response (500, no Set-Cookie).
    let Ok(session) = lazy.load().await else {
        return Ok(text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "session unavailable".to_owned(),
        ));
    };
    let response = match path {
        "/" => {
            // Marks the session changed: the layer saves it (and sets the cookie the first time)
            // once this function has returned its response.
            let count = session.update(|visits| {
                visits.count = visits.count.saturating_add(1);
                visits.count
            });
            let times = if count == 1 { "time" } else { "times" };
            text(
                StatusCode::OK,
                format!("You have visited {count} {times}.\n"),
            )
        }
        "/reset" => {
            // Deleted in the store, and a removal cookie goes out with this response.
            session.delete();
            text(StatusCode::OK, "Session deleted.\n".to_owned())
        }
        _ => text(StatusCode::NOT_FOUND, "Not found.\n".to_owned()),
    };
    Ok(response)
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[tokio::main]
async fn main() {
    // One layer (and so one store) for the whole server; the service is cloned per connection.
    let service = ServiceBuilder::new()
        .layer(SessionLayer::new(MemoryStore::<Visits>::new()))
        .service(tower::service_fn(handle));

    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("failed to bind 127.0.0.1 (is PORT free?)");
    let port = listener.local_addr().map_or(port, |addr| addr.port());
    println!("listening on http://localhost:{port}");

    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Usually out of file descriptors: back off instead of spinning.
                eprintln!("accept failed: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            if let Err(err) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("connection error: {err}");
            }
        });
    }
}
