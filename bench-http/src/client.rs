//! The load generator: N HTTP/1.1 keep-alive connections (hyper's client connection API, no
//! pool), each a closed loop of one request at a time carrying its own session cookie.
//!
//! A cell runs in phases: every connection connects and gets its cookie (a warm-up `/incr`
//! creates its session, or it is handed cookies of pre-stored sessions), runs the route for the
//! warm-up time, then waits at a barrier; the controller takes its "before" snapshots (CPU,
//! Redis INFO) and releases everyone; each connection runs until the deadline, finishes the
//! request in flight and stops; the controller takes its "after" snapshots. So every request
//! counted falls between the two snapshots.

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, sync::Barrier};

/// Where each connection's cookies come from.
#[derive(Clone)]
pub enum Cookies {
    /// A first `GET /incr` without a cookie creates the connection's own session.
    Own,
    /// Connection `i` of `n` cycles through the cookies at `i, i + n, i + 2n, ...` (pre-stored
    /// sessions), and checks that the first answer is `expect`.
    Shared {
        cookies: Arc<Vec<HeaderValue>>,
        expect: &'static str,
    },
}

pub struct Plan {
    pub addr: SocketAddr,
    pub route: &'static str,
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub cookies: Cookies,
}

/// What one connection did in the measured window.
struct ConnResult {
    latencies_ns: Vec<u64>,
    errors: u64,
    last: Option<Instant>,
}

pub struct CellRun {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latencies_ns: Vec<u64>,
}

/// Runs one cell: `before` runs once everyone is warmed up and idle, `after` once all have
/// stopped; their results come back with the run.
pub async fn run<B, A, X, Y>(plan: &Plan, before: B, after: A) -> (CellRun, X, Y)
where
    B: FnOnce() -> X,
    A: FnOnce() -> Y,
{
    let ready = Arc::new(Barrier::new(plan.connections + 1));
    let go = Arc::new(Barrier::new(plan.connections + 1));
    let deadline = Arc::new(OnceLock::new());
    let mut tasks = Vec::with_capacity(plan.connections);
    for i in 0..plan.connections {
        let (ready, go, deadline) = (ready.clone(), go.clone(), deadline.clone());
        let (addr, route, warmup, cookies, n) = (
            plan.addr,
            plan.route,
            plan.warmup,
            plan.cookies.clone(),
            plan.connections,
        );
        tasks.push(tokio::spawn(async move {
            connection(addr, route, warmup, cookies, i, n, ready, go, deadline).await
        }));
    }
    ready.wait().await;
    let x = before();
    let start = Instant::now();
    deadline
        .set(start + plan.duration)
        .expect("deadline set once");
    go.wait().await;
    let mut run = CellRun {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies_ns: Vec::new(),
    };
    let mut end = start;
    for task in tasks {
        let result = task.await.expect("connection task");
        run.errors += result.errors;
        run.latencies_ns.extend(result.latencies_ns);
        if let Some(last) = result.last {
            end = end.max(last);
        }
    }
    let y = after();
    run.requests = run.latencies_ns.len() as u64;
    run.elapsed = end - start;
    (run, x, y)
}

async fn connect(addr: SocketAddr) -> SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

/// One request; the cookie is replaced by the response's Set-Cookie, if any. `Err` for a non-2xx
/// answer.
async fn request(
    sender: &mut SendRequest<Empty<Bytes>>,
    route: &'static str,
    cookie: &mut Option<HeaderValue>,
) -> Result<Bytes, StatusCode> {
    let mut req = Request::get(route).header(header::HOST, "127.0.0.1");
    if let Some(cookie) = cookie.as_ref() {
        req = req.header(header::COOKIE, cookie);
    }
    sender.ready().await.expect("connection ready");
    let response = sender
        .send_request(req.body(Empty::new()).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    if let Some(set) = response.headers().get(header::SET_COOKIE) {
        let pair = set.as_bytes().split(|b| *b == b';').next().unwrap_or(b"");
        // A removal cookie (`id=`) leaves no session to send.
        if pair.last() != Some(&b'=') {
            *cookie = HeaderValue::from_bytes(pair).ok();
        }
    }
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    if status.is_success() {
        Ok(body)
    } else {
        Err(status)
    }
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    addr: SocketAddr,
    route: &'static str,
    warmup: Duration,
    cookies: Cookies,
    index: usize,
    connections: usize,
    ready: Arc<Barrier>,
    go: Arc<Barrier>,
    deadline: Arc<OnceLock<Instant>>,
) -> ConnResult {
    let mut sender = connect(addr).await;
    let mut cookie = None;
    // For shared cookies: the next index into the list.
    let mut next = index;
    let mut next_cookie = |cookie: &mut Option<HeaderValue>| {
        if let Cookies::Shared { cookies, .. } = &cookies {
            *cookie = Some(cookies[next % cookies.len()].clone());
            next += connections;
        }
    };
    match &cookies {
        Cookies::Own => {
            request(&mut sender, "/incr", &mut cookie)
                .await
                .expect("warm-up /incr");
        }
        Cookies::Shared { expect, .. } => {
            next_cookie(&mut cookie);
            let body = request(&mut sender, route, &mut cookie)
                .await
                .expect("warm-up request");
            assert_eq!(
                body.as_ref(),
                expect.as_bytes(),
                "a pre-stored session was not found"
            );
        }
    }
    let warm_until = Instant::now() + warmup;
    while Instant::now() < warm_until {
        next_cookie(&mut cookie);
        let _ = request(&mut sender, route, &mut cookie).await;
    }
    ready.wait().await;
    go.wait().await;
    let deadline = *deadline.get().expect("deadline");
    let mut result = ConnResult {
        latencies_ns: Vec::with_capacity(1 << 16),
        errors: 0,
        last: None,
    };
    loop {
        next_cookie(&mut cookie);
        let sent = Instant::now();
        if sent >= deadline {
            break;
        }
        let outcome = request(&mut sender, route, &mut cookie).await;
        let done = Instant::now();
        match outcome {
            Ok(_) => result.latencies_ns.push((done - sent).as_nanos() as u64),
            Err(_) => result.errors += 1,
        }
        result.last = Some(done);
    }
    result
}

/// One connection driven by hand (the MONITOR pass): its own session, one request at a time.
pub struct Single {
    sender: SendRequest<Empty<Bytes>>,
    cookie: Option<HeaderValue>,
}

impl Single {
    /// Connects and creates the connection's session with `GET /incr`.
    pub async fn new(addr: SocketAddr) -> Self {
        let mut single = Self {
            sender: connect(addr).await,
            cookie: None,
        };
        single.get("/incr").await;
        single
    }

    pub async fn get(&mut self, route: &'static str) {
        request(&mut self.sender, route, &mut self.cookie)
            .await
            .unwrap_or_else(|status| panic!("{route}: {status}"));
    }
}
