//! The layer on a plain hyper service (no axum), served on 127.0.0.1 over real TCP, driven by a
//! real HTTP/1 client.

use std::convert::Infallible;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceBuilder;
use tower_typed_sessions::{LazySession, MemoryStore, Session, SessionLayer};

#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
struct Visits {
    count: u32,
}
impl Session for Visits {}

async fn handler(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let Some(lazy) = req.extensions().get::<LazySession<Visits>>() else {
        let mut response = Response::new(Full::from("no session layer"));
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        return Ok(response);
    };
    let Ok(session) = lazy.load().await else {
        let mut response = Response::new(Full::from("session unavailable"));
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        return Ok(response);
    };
    let body = match req.uri().path() {
        "/logout" => {
            session.delete();
            "bye".to_string()
        }
        _ => session.update(|v| {
            v.count += 1;
            v.count.to_string()
        }),
    };
    Ok(Response::new(Full::from(body)))
}

async fn serve() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = ServiceBuilder::new()
        .layer(SessionLayer::new(MemoryStore::<Visits>::new()))
        .service(tower::service_fn(handler));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn get(
    addr: std::net::SocketAddr,
    path: &str,
    cookie: Option<&str>,
) -> (http::HeaderMap, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = Request::get(path).header(header::HOST, "localhost");
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (headers, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn sessions_work_over_real_http_on_a_plain_hyper_service() {
    let addr = serve().await;
    let (headers, body) = get(addr, "/", None).await;
    assert_eq!(body, "1");
    let set_cookie = headers[header::SET_COOKIE].to_str().unwrap().to_owned();
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("Secure"));

    let (headers, body) = get(addr, "/", Some(&cookie)).await;
    assert_eq!(body, "2");
    assert!(headers.get(header::SET_COOKIE).is_none());
    let (_, body) = get(addr, "/", Some(&cookie)).await;
    assert_eq!(body, "3");

    let (headers, _) = get(addr, "/logout", Some(&cookie)).await;
    assert!(headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let (_, body) = get(addr, "/", Some(&cookie)).await;
    assert_eq!(body, "1", "the logged-out cookie is not adopted");
}
