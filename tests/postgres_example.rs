//! The `postgres` example's own binary against a PostgreSQL this test starts: what the README
//! tells a user to run works, migration included, and the session lives in the database (a
//! second process of the example reads it).
#![cfg(all(feature = "postgres", feature = "axum"))]

#[path = "support/postgres_server.rs"]
mod postgres_server;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use postgres_server::PostgresServer;
use tokio::net::TcpStream;

/// target/<profile>/examples/postgres, built by `cargo test` (or `cargo build --examples`).
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's own path");
    let profile_dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let binary = profile_dir
        .join("examples")
        .join(format!("postgres{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "the postgres example is not built ({} is missing): run `cargo build --examples \
         --all-features` (a plain `cargo test --all-features` builds it)",
        binary.display()
    );
    binary
}

/// The example's process, killed on drop.
struct Example {
    child: Child,
    addr: SocketAddr,
}

impl Example {
    fn start(database_url: &str) -> Self {
        let mut child = Command::new(example_binary())
            .env("DATABASE_URL", database_url)
            .env("PORT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the postgres example");
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines, received) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let line = received
            .recv_timeout(Duration::from_secs(30))
            .expect("the example printed its listening line");
        let port: u16 = line
            .strip_prefix("listening on http://localhost:")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line: {line}"));
        Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> (Option<String>, String) {
        let stream = TcpStream::connect(self.addr).await.expect("connect");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        let mut request = Request::get(path).header(header::HOST, "localhost");
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        let response = sender
            .send_request(request.body(Empty::<Bytes>::new()).unwrap())
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let set_cookie = response
            .headers()
            .get(header::SET_COOKIE)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (set_cookie, String::from_utf8(body.to_vec()).unwrap())
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_postgres_example_counts_visits_in_the_database() {
    if !postgres_server::available_or_skip("the_postgres_example_counts_visits_in_the_database") {
        return;
    }
    let server = PostgresServer::start();
    let example = Example::start(&server.url());
    let (set_cookie, body) = example.get("/", None).await;
    assert!(body.contains("You have visited 1 time."), "{body}");
    let set_cookie = set_cookie.expect("a session cookie");
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("Secure"));
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let (_, body) = example.get("/", Some(&cookie)).await;
    assert!(body.contains("You have visited 2 times."), "{body}");

    // A second instance (migrating again) serves the same session from the database.
    let second = Example::start(&server.url());
    let (_, body) = second.get("/", Some(&cookie)).await;
    assert!(body.contains("You have visited 3 times."), "{body}");

    let (removal, _) = second.get("/reset", Some(&cookie)).await;
    assert!(removal.expect("a removal cookie").contains("Max-Age=0"));
    let (_, body) = example.get("/", Some(&cookie)).await;
    assert!(
        body.contains("You have visited 1 time."),
        "the reset session is gone on the first instance too: {body}"
    );
}
