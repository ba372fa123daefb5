//! Micro-benchmarks: the layer's per-request cost and the stores' operations, with no network.
//!
//! ```sh
//! cargo bench --bench layer                      # layer paths + MemoryStore operations
//! cargo bench --bench layer --features redis     # + RedisStore operations (needs redis-server)
//! cargo bench --bench layer -- request/          # only the layer paths (criterion filter)
//! cargo bench --bench layer --features metrics -- metrics/   # the metrics feature's cost
//! ```
//!
//! - `request/<app>/<path>`: one request through an axum `Router` driven with
//!   `tower::ServiceExt::oneshot` (no sockets), body collected. `bare` is the same router and
//!   handlers without the layer; `layer_memory` adds `SessionLayer` on a `MemoryStore`,
//!   `layer_cookie_only` a cookie-only `SessionLayer` (sealed cookies, no store). Paths:
//!   `read` (existing session, sliding expiry: one `load`), `modify` (existing session changed:
//!   `load` + `save`), `create` (no cookie, the handler writes: `create`), and `regenerate`
//!   (existing session, new ID: `load` + `regenerate`; the next request uses the new cookie), and
//!   `plain` (a route that never asks for the session, with a live session's cookie: no store
//!   call), where `noop_layer` adds a layer that does nothing, to tell axum's cost of layering a
//!   router from the session layer's own.
//!   Both apps get the same Cookie header, so only the layer differs.
//! - `metrics/<recorder>/<path>` (feature `metrics`): the layer on a `MemoryStore` with no
//!   metrics recorder and with a Prometheus one, side by side.
//! - `store_memory/<op>` and `store_redis/<op>`: one store call (`create`, `load` sliding the
//!   expiry and taking the flash as the layer does, `save`, `delete`), awaited one at a time. Redis runs against a `redis-server` this bench
//!   starts itself on a free 127.0.0.1 port (`--save "" --appendonly no`) and kills at the end;
//!   without the `redis` feature, or without `redis-server` on PATH, it prints why it skips.
//!
//! Each benchmark measures for 2 s after a 1 s warm-up, so the whole file runs in about a minute.

use std::{
    hint::black_box,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    http::{header, HeaderValue, Request},
    routing::get,
    Router,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;
use tower_typed_sessions::{
    Expect, Key, LoadOptions, Loaded, MemoryStore, Record, Session, SessionHandle, SessionKey,
    SessionLayer, Store, WriteOutcome, RECORD_FORMAT,
};

#[derive(Clone, Default, Serialize, Deserialize)]
struct Counter {
    count: u64,
}

impl Session for Counter {}

const IDLE: Duration = Duration::from_secs(3600);

// ---------------------------------------------------------------------------------------------
// Apps
// ---------------------------------------------------------------------------------------------

async fn read(session: SessionHandle<Counter>) -> String {
    session.read(|c| c.count).to_string()
}

async fn incr(session: SessionHandle<Counter>) -> String {
    session
        .update(|c| {
            c.count += 1;
            c.count
        })
        .to_string()
}

async fn login(session: SessionHandle<Counter>) -> &'static str {
    session.regenerate();
    "welcome"
}

/// A page that never asks for the session.
async fn plain() -> &'static str {
    "no session needed"
}

fn layered() -> Router {
    Router::new()
        .route("/read", get(read))
        .route("/incr", get(incr))
        .route("/login", get(login))
        .route("/plain", get(plain))
        .layer(SessionLayer::new(MemoryStore::<Counter>::new()))
        // Turn handlers into routes once, as `axum::serve` does; a `Router` driven directly
        // would redo it (and re-apply the layer) on every request.
        .with_state(())
}

/// The same routes on cookie-only sessions: the session sealed in its cookie, no store.
fn cookie_layered() -> Router {
    let key = Key::from_bytes(&[7; 32]).expect("a 32-byte key");
    Router::new()
        .route("/read", get(read))
        .route("/incr", get(incr))
        .route("/login", get(login))
        .route("/plain", get(plain))
        .layer(SessionLayer::<Counter, _>::cookie_only([key]).expect("one key"))
        .with_state(())
}

/// The bare routes behind a layer that does nothing: what axum's own `Router::layer` costs
/// (every route boxed once more), apart from what the session layer does.
fn noop_layered() -> Router {
    bare().layer(tower::util::MapRequestLayer::new(|req: Request<Body>| req))
}

/// The same routes without sessions: a shared counter stands in for the session's.
fn bare() -> Router {
    let counter = Arc::new(AtomicU64::new(0));
    let (c1, c2) = (Arc::clone(&counter), counter);
    Router::new()
        .route(
            "/read",
            get(move || {
                let c = Arc::clone(&c1);
                async move { c.load(Ordering::Relaxed).to_string() }
            }),
        )
        .route(
            "/incr",
            get(move || {
                let c = Arc::clone(&c2);
                async move { (c.fetch_add(1, Ordering::Relaxed) + 1).to_string() }
            }),
        )
        .route("/login", get(|| async { "welcome" }))
        .route("/plain", get(plain))
        .with_state(())
}

/// One request through `app`; returns the `name=value` part of a Set-Cookie, if any.
async fn request(app: &Router, path: &'static str, cookie: Option<&HeaderValue>) -> Option<String> {
    let mut req = Request::get(path);
    if let Some(cookie) = cookie {
        req = req.header(header::COOKIE, cookie);
    }
    let response = app
        .clone()
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    let set_cookie = response
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    black_box(response.into_body().collect().await.expect("body"));
    set_cookie
}

#[derive(Clone, Copy)]
enum Path {
    Read,
    Modify,
    Create,
    Regenerate,
    Plain,
}

impl Path {
    const ALL: [Path; 5] = [
        Path::Read,
        Path::Modify,
        Path::Create,
        Path::Regenerate,
        Path::Plain,
    ];

    fn name(self) -> &'static str {
        match self {
            Path::Read => "read",
            Path::Modify => "modify",
            Path::Create => "create",
            Path::Regenerate => "regenerate",
            Path::Plain => "plain",
        }
    }

    fn route(self) -> &'static str {
        match self {
            Path::Read => "/read",
            Path::Modify | Path::Create => "/incr",
            Path::Regenerate => "/login",
            Path::Plain => "/plain",
        }
    }
}

/// `iters` requests on `path`, timed; the app (and its store) is fresh for every sample, so that
/// `create` does not grow one store without bound.
/// Builds one of the apps above.
type MakeApp = fn() -> Router;

async fn run_path(app: MakeApp, path: Path, iters: u64) -> Duration {
    let app = app();
    // A live session for the paths that need one (the bare app ignores the cookie).
    let mut cookie = match request(&app, "/incr", None).await {
        Some(cookie) => HeaderValue::from_str(&cookie).expect("cookie"),
        None => HeaderValue::from_static("id=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    };
    let route = path.route();
    let start = Instant::now();
    match path {
        Path::Create => {
            for _ in 0..iters {
                black_box(request(&app, route, None).await);
            }
        }
        Path::Read | Path::Modify | Path::Plain => {
            for _ in 0..iters {
                black_box(request(&app, route, Some(&cookie)).await);
            }
        }
        Path::Regenerate => {
            for _ in 0..iters {
                if let Some(next) = request(&app, route, Some(&cookie)).await {
                    cookie = HeaderValue::from_str(&next).expect("cookie");
                }
            }
        }
    }
    start.elapsed()
}

fn requests(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("request");
    for path in Path::ALL {
        let mut apps: Vec<(&str, MakeApp)> = vec![
            ("bare", bare),
            ("layer_memory", layered),
            ("layer_cookie_only", cookie_layered),
        ];
        if let Path::Plain = path {
            apps.insert(1, ("noop_layer", noop_layered));
        }
        for (name, app) in apps {
            group.bench_function(BenchmarkId::new(name, path.name()), |b| {
                b.to_async(&rt)
                    .iter_custom(|iters| run_path(app, path, iters));
            });
        }
    }
    group.finish();
}

/// The `metrics` feature's cost: the same layer requests with no recorder (the facade's no-op)
/// and with a Prometheus recorder (`metrics-exporter-prometheus`) set for the measured thread,
/// side by side in one run.
#[cfg(feature = "metrics")]
fn requests_with_metrics(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let mut group = c.benchmark_group("metrics");
    for path in [Path::Read, Path::Modify, Path::Regenerate] {
        group.bench_function(BenchmarkId::new("no_recorder", path.name()), |b| {
            b.iter_custom(|iters| rt.block_on(run_path(layered, path, iters)));
        });
        group.bench_function(BenchmarkId::new("prometheus", path.name()), |b| {
            b.iter_custom(|iters| {
                metrics::with_local_recorder(&prometheus, || {
                    rt.block_on(run_path(layered, path, iters))
                })
            });
        });
    }
    group.finish();
}

#[cfg(not(feature = "metrics"))]
fn requests_with_metrics(_: &mut Criterion) {
    eprintln!("metrics/*: skipped (needs --features metrics)");
}

// ---------------------------------------------------------------------------------------------
// Store operations
// ---------------------------------------------------------------------------------------------

fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).expect("time")
}

/// A live record, built the way code outside the crate can: from its stored JSON form.
fn record() -> Record<Counter> {
    let now = now_ms();
    serde_json::from_value(serde_json::json!({
        "v": RECORD_FORMAT,
        "key": SessionKey::generate().expect("random").as_str(),
        "data": { "count": 7 },
        "has_data": true,
        "created_at": now,
        "last_seen": now,
        "expires_at": now + 3_600_000,
        "deadline": now + 86_400_000,
    }))
    .expect("record")
}

#[derive(Clone, Copy)]
enum Op {
    Create,
    Load,
    Save,
    Delete,
}

impl Op {
    const ALL: [Op; 4] = [Op::Create, Op::Load, Op::Save, Op::Delete];

    fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Load => "load",
            Op::Save => "save",
            Op::Delete => "delete",
        }
    }
}

/// `iters` calls of `op`, one at a time, timed; records are prepared outside the timing.
async fn run_op<S: Store<Counter>>(store: &S, op: Op, iters: u64) -> Duration {
    let n = usize::try_from(iters).expect("iters");
    match op {
        Op::Create => {
            let records: Vec<_> = (0..n).map(|_| record()).collect();
            let start = Instant::now();
            for r in &records {
                assert_eq!(store.create(r).await.expect("create"), WriteOutcome::Done);
            }
            let elapsed = start.elapsed();
            for r in &records {
                store.delete(&r.key, Expect::Any).await.expect("delete");
            }
            elapsed
        }
        Op::Load => {
            let r = record();
            store.create(&r).await.expect("create");
            let start = Instant::now();
            for _ in 0..iters {
                // What the layer asks for on every request: slide the expiry, take the flash.
                let options = LoadOptions::at(time::OffsetDateTime::now_utc())
                    .sliding(Some(IDLE))
                    .taking_flash(true);
                let loaded = store.load(&r.key, options).await.expect("load");
                assert!(matches!(loaded, Loaded::Active(_)));
                black_box(loaded);
            }
            let elapsed = start.elapsed();
            store.delete(&r.key, Expect::Any).await.expect("delete");
            elapsed
        }
        Op::Save => {
            let r = record();
            store.create(&r).await.expect("create");
            let start = Instant::now();
            for _ in 0..iters {
                assert_eq!(
                    store.save(&r, Expect::Any).await.expect("save"),
                    WriteOutcome::Done
                );
            }
            let elapsed = start.elapsed();
            store.delete(&r.key, Expect::Any).await.expect("delete");
            elapsed
        }
        Op::Delete => {
            let records: Vec<_> = (0..n).map(|_| record()).collect();
            for r in &records {
                store.create(r).await.expect("create");
            }
            let start = Instant::now();
            for r in &records {
                assert_eq!(
                    store.delete(&r.key, Expect::Any).await.expect("delete"),
                    WriteOutcome::Done
                );
            }
            start.elapsed()
        }
    }
}

fn store_ops(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Set up on first use only, so that a filter that skips these benches skips the set-up too.
    // 1000 sessions are already stored, so the map is not trivially small.
    let memory = std::sync::OnceLock::new();
    let memory = || {
        memory.get_or_init(|| {
            let store = MemoryStore::<Counter>::new();
            rt.block_on(async {
                for _ in 0..1000 {
                    store.create(&record()).await.expect("create");
                }
            });
            store
        })
    };
    let mut group = c.benchmark_group("store_memory");
    for op in Op::ALL {
        group.bench_function(op.name(), |b| {
            let store = memory().clone();
            b.to_async(&rt).iter_custom(|iters| {
                let store = store.clone();
                async move { run_op(&store, op, iters).await }
            });
        });
    }
    group.finish();
    redis_ops(c, &rt);
}

#[cfg(not(feature = "redis"))]
fn redis_ops(_: &mut Criterion, _: &tokio::runtime::Runtime) {
    eprintln!(
        "skipping store_redis benches: built without the `redis` feature \
         (cargo bench --bench layer --features redis)"
    );
}

#[cfg(feature = "redis")]
fn redis_ops(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    use tower_typed_sessions::RedisStore;

    if let Err(reason) = redis_server::available() {
        eprintln!("skipping store_redis benches: {reason}");
        return;
    }
    // The server and the store, started on first use, so that a filter that skips these
    // benches starts no server.
    let redis = std::sync::OnceLock::new();
    let redis = || {
        redis.get_or_init(|| {
            let server = redis_server::RedisServer::start().expect("start redis-server");
            let store = rt
                .block_on(RedisStore::<Counter>::connect(&server.url()))
                .expect("connect to the bench's redis-server");
            rt.block_on(async {
                for _ in 0..1000 {
                    store.create(&record()).await.expect("create");
                }
            });
            (server, store)
        })
    };
    let mut group = c.benchmark_group("store_redis");
    for op in Op::ALL {
        group.bench_function(op.name(), |b| {
            let store = redis().1.clone();
            b.to_async(rt).iter_custom(|iters| {
                let store = store.clone();
                async move { run_op(&store, op, iters).await }
            });
        });
    }
    group.finish();
}

/// A `redis-server` child process on a free loopback port, killed on drop.
#[cfg(feature = "redis")]
mod redis_server {
    use std::{
        io::{Read, Write},
        net::{TcpListener, TcpStream},
        path::PathBuf,
        process::{Child, Command, Stdio},
        time::{Duration, Instant},
    };

    pub(crate) struct RedisServer {
        child: Child,
        port: u16,
        dir: PathBuf,
    }

    /// Whether `redis-server` can be run.
    pub(crate) fn available() -> Result<(), String> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            Ok(())
        } else {
            Err("`redis-server` is not on PATH".into())
        }
    }

    impl RedisServer {
        pub(crate) fn start() -> Result<Self, String> {
            available()?;
            let dir = std::env::temp_dir().join(format!("tts-bench-redis-{}", std::process::id()));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            for _ in 0..10 {
                let port = TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .map_err(|e| e.to_string())?
                    .port();
                let mut child = Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--save", "", "--appendonly", "no"])
                    .args(["--dir", &dir.to_string_lossy()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| e.to_string())?;
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        break; // port taken meanwhile: try another
                    }
                    if ping(port) {
                        return Ok(Self { child, port, dir });
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            Err("could not start redis-server on a free 127.0.0.1 port".into())
        }

        pub(crate) fn url(&self) -> String {
            format!("redis://127.0.0.1:{}/", self.port)
        }
    }

    fn ping(port: u16) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = requests, requests_with_metrics, store_ops
}
criterion_main!(benches);
