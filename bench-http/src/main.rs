//! HTTP load benchmark of tower-typed-sessions against bare axum and tower-sessions.
//!
//! ```sh
//! cargo run --release --manifest-path bench-http/Cargo.toml            # the comparison
//! cargo run --release --manifest-path bench-http/Cargo.toml -- scale   # 1k vs 1M sessions
//! cargo run --release --manifest-path bench-http/Cargo.toml -- --help
//! ```
//!
//! Everything runs on 127.0.0.1: the apps are in-process servers on their own ports (one Tokio
//! runtime), the load generator is another runtime in the same process, and each Redis-backed
//! app gets its own `redis-server` child process, each PostgreSQL-backed one its own PostgreSQL
//! (initdb into a temporary directory). See BENCHMARKS.md at the repository root.

mod apps;
mod client;
mod measure;
#[path = "../../tests/support/postgres_server.rs"]
mod postgres_server;
mod redis_server;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use http::HeaderValue;
use measure::Threads;
use postgres_server::PostgresServer;
use redis_server::RedisServer;
use tower_typed_sessions::{
    MemoryStore, PostgresStore, Record, RedisStore, SessionId, SessionKey, Store, RECORD_FORMAT,
};

use crate::apps::Counter;

#[global_allocator]
static ALLOC: measure::Counting = measure::Counting;

const USAGE: &str = "\
bench-http [scale|sweep] [options]

modes:
  (none)   bare axum, tower-typed-sessions (memory, cookie-only, Redis, PostgreSQL) and tower-sessions
           (memory, Redis, PostgreSQL) on /read, /incr and /login, interleaved, with ratios and
           Redis commands per request
  scale    /read on tower-typed-sessions with few vs many stored sessions (memory, Redis,
           PostgreSQL), and bytes of memory per session
  sweep    PostgresStore: /read while delete_expired removes --large expired rows, against
           /read without a sweep, and the time per sweep

options:
  --duration S          measured seconds per cell (default 2)
  --warmup S            warm-up seconds per cell, not measured (default 0.5)
  --reps N              repetitions; every app and route once per repetition (default 9)
  --connections N       concurrent keep-alive connections (default 32)
  --server-threads N    worker threads of the servers' runtime (default 2)
  --client-threads N    worker threads of the load generator's runtime (default 2)
  --apps a,b,...        subset of: bare,ours-mem,ours-cookie,ours-cookie-rl,ours-redis,
                        ours-redis-cached,ours-redis-cached-tls,as-redis,as-redis-nomem,ours-pg,
                        ts-mem,ts-redis,ts-pg
                        (default all; ours-cookie is cookie-only sessions, ours-cookie-rl the
                        same with a revocation list in memory; ours-redis-cached-tls the cached
                        store over TLS (rediss://, a CA made per run); as-* are axum_session on
                        Redis, with and without its in-memory layer)
  --routes r,...        read, incr, login (the default), and plain (a route that never asks
                        for the session, each connection still sending its cookie)
  --ts-pool N           fred pool size of the tower-sessions Redis app (default 1: one
                        auto-pipelined connection, its fastest setting here; the
                        tower-sessions-redis-store example uses 6)
  --monitor-requests N  requests per app and route in the MONITOR pass (default 200; 0 = skip)
  --small N             scale: sessions in the small stores (default 1000)
  --large N             scale: sessions in the large stores (default 1000000)
  --subset N            scale: how many of the stored sessions the clients read (default 100000)
";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Http,
    Scale,
    Sweep,
}

#[derive(Clone, Debug)]
struct Opts {
    mode: Mode,
    duration: Duration,
    warmup: Duration,
    reps: usize,
    connections: usize,
    server_threads: usize,
    client_threads: usize,
    apps: Vec<String>,
    routes: Vec<String>,
    ts_pool: usize,
    monitor_requests: usize,
    small: usize,
    large: usize,
    subset: usize,
}

fn parse_args() -> Opts {
    let mut opts = Opts {
        mode: Mode::Http,
        duration: Duration::from_secs(2),
        warmup: Duration::from_millis(500),
        reps: 9,
        connections: 32,
        server_threads: 2,
        client_threads: 2,
        apps: ALL_APPS.iter().map(|s| s.to_string()).collect(),
        routes: ["read", "incr", "login"].map(String::from).to_vec(),
        ts_pool: 1,
        monitor_requests: 200,
        small: 1000,
        large: 1_000_000,
        subset: 100_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .unwrap_or_else(|| die(&format!("{name} needs a value")))
        };
        let secs = |v: String| {
            Duration::from_secs_f64(v.parse().unwrap_or_else(|_| die("not a number of seconds")))
        };
        let num = |v: String| -> usize { v.parse().unwrap_or_else(|_| die("not a number")) };
        let list = |v: String| v.split(',').map(str::to_owned).collect::<Vec<_>>();
        match arg.as_str() {
            "scale" => opts.mode = Mode::Scale,
            "sweep" => opts.mode = Mode::Sweep,
            "http" => opts.mode = Mode::Http,
            "--duration" => opts.duration = secs(value(&arg)),
            "--warmup" => opts.warmup = secs(value(&arg)),
            "--reps" => opts.reps = num(value(&arg)).max(1),
            "--connections" => opts.connections = num(value(&arg)).max(1),
            "--server-threads" => opts.server_threads = num(value(&arg)).max(1),
            "--client-threads" => opts.client_threads = num(value(&arg)).max(1),
            "--apps" => opts.apps = list(value(&arg)),
            "--routes" => opts.routes = list(value(&arg)),
            "--ts-pool" => opts.ts_pool = num(value(&arg)).max(1),
            "--monitor-requests" => opts.monitor_requests = num(value(&arg)),
            "--small" => opts.small = num(value(&arg)).max(1),
            "--large" => opts.large = num(value(&arg)).max(1),
            "--subset" => opts.subset = num(value(&arg)).max(1),
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => die(&format!("unknown argument {other}")),
        }
    }
    for app in &opts.apps {
        if !ALL_APPS.contains(&app.as_str()) {
            die(&format!("unknown app {app}"));
        }
    }
    for route in &opts.routes {
        if !["read", "incr", "login", "plain"].contains(&route.as_str()) {
            die(&format!("unknown route {route}"));
        }
    }
    opts
}

fn die(message: &str) -> ! {
    eprintln!("bench-http: {message}\n\n{USAGE}");
    std::process::exit(2)
}

const ALL_APPS: [&str; 13] = [
    "bare",
    "ours-mem",
    "ours-cookie",
    "ours-cookie-rl",
    "ours-redis",
    "ours-redis-cached",
    "ours-redis-cached-tls",
    "as-redis",
    "as-redis-nomem",
    "ours-pg",
    "ts-mem",
    "ts-redis",
    "ts-pg",
];

fn app_title(key: &str) -> &'static str {
    match key {
        "bare" => "axum, no sessions",
        "ours-mem" => "tower-typed-sessions, MemoryStore",
        "ours-cookie" => "tower-typed-sessions, cookie-only",
        "ours-cookie-rl" => "tower-typed-sessions, cookie-only + revocation list (memory)",
        "ours-redis" => "tower-typed-sessions, RedisStore",
        "ours-redis-cached" => "tower-typed-sessions, RedisStore with local cache",
        "ours-redis-cached-tls" => "tower-typed-sessions, RedisStore with local cache, over TLS",
        "as-redis" => "axum_session 0.22, Redis pool, its memory layer on (default)",
        "as-redis-nomem" => "axum_session 0.22, Redis pool, memory layer off",
        "ts-mem" => "tower-sessions 0.15, MemoryStore",
        "ts-redis" => "tower-sessions 0.14, RedisStore (fred)",
        "ours-pg" => "tower-typed-sessions, PostgresStore",
        "ts-pg" => "tower-sessions 0.14, PostgresStore (sqlx-store 0.15)",
        "pg-small" => "tower-typed-sessions, PostgresStore, small",
        "pg-large" => "tower-typed-sessions, PostgresStore, large",
        "pg-idle" => "tower-typed-sessions, PostgresStore, no sweep",
        "pg-sweeping" => "tower-typed-sessions, PostgresStore, during a sweep",
        "mem-small" => "tower-typed-sessions, MemoryStore, small",
        "mem-large" => "tower-typed-sessions, MemoryStore, large",
        "redis-small" => "tower-typed-sessions, RedisStore, small",
        "redis-large" => "tower-typed-sessions, RedisStore, large",
        _ => "?",
    }
}

fn route_path(route: &str) -> &'static str {
    match route {
        "read" => "/read",
        "incr" => "/incr",
        "plain" => "/plain",
        _ => "/login",
    }
}

/// One app under test.
struct App {
    key: String,
    addr: SocketAddr,
    redis: Option<RedisServer>,
    /// Held for as long as the app runs (its drop stops the server).
    #[allow(dead_code)]
    postgres: Option<PostgresServer>,
    /// Scale mode: the stored sessions' cookies the clients use, and how many are stored.
    cookies: Option<Arc<Vec<HeaderValue>>>,
    stored: usize,
}

/// The measurements of one cell (one app, one route, one repetition).
#[derive(Clone, Debug, Default)]
struct Cell {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
    server_cpu_us: f64,
    client_cpu_us: f64,
    redis_cpu_us: Option<f64>,
    /// `INFO commandstats` calls per request, by command (including commands run in scripts).
    calls: BTreeMap<String, f64>,
    errors: u64,
}

struct Bench {
    opts: Opts,
    server_rt: tokio::runtime::Runtime,
    client_rt: tokio::runtime::Runtime,
    server_threads: Threads,
    client_threads: Threads,
}

/// A multi-threaded runtime whose worker threads register in `threads`, so that their CPU time
/// can be read apart from the other runtime's.
fn runtime(name: &str, workers: usize, threads: &Threads) -> tokio::runtime::Runtime {
    let threads = threads.clone();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(name)
        .on_thread_start(move || threads.register())
        .enable_all()
        .build()
        .unwrap_or_else(|err| panic!("{name} runtime: {err}"))
}

fn main() {
    let opts = parse_args();
    let server_threads = Threads::default();
    let client_threads = Threads::default();
    let server_rt = runtime("server", opts.server_threads, &server_threads);
    let client_rt = runtime("client", opts.client_threads, &client_threads);
    client_rt.spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            redis_server::kill_all();
            std::process::exit(130);
        }
    });
    let bench = Bench {
        opts,
        server_rt,
        client_rt,
        server_threads,
        client_threads,
    };
    print_setup(&bench.opts);
    match bench.opts.mode {
        Mode::Http => http_mode(&bench),
        Mode::Scale => scale_mode(&bench),
        Mode::Sweep => sweep_mode(&bench),
    }
}

fn print_setup(opts: &Opts) {
    let profile = if cfg!(debug_assertions) {
        "DEBUG (numbers meaningless: use --release)"
    } else {
        "release"
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let mode = match opts.mode {
        Mode::Http => "",
        Mode::Scale => " scale",
        Mode::Sweep => " sweep",
    };
    println!("# bench-http{mode}\n");
    println!(
        "build: {profile}; cores: {cores}; load average at start: {}",
        load.join(" ")
    );
    println!(
        "cells: {} s measured after {} s warm-up; {} repetitions; {} keep-alive connections; \
         server runtime {} threads, client runtime {} threads (same process, same cores)\n",
        opts.duration.as_secs_f64(),
        opts.warmup.as_secs_f64(),
        opts.reps,
        opts.connections,
        opts.server_threads,
        opts.client_threads
    );
}

impl Bench {
    /// Runs one cell against `app`.
    fn cell(&self, app: &App, route: &str) -> Cell {
        self.cell_with(app, route, || {})
    }

    /// Runs one cell against `app`, calling `on_start` when the measured window begins.
    fn cell_with(&self, app: &App, route: &str, on_start: impl FnOnce()) -> Cell {
        let plan = client::Plan {
            addr: app.addr,
            route: route_path(route),
            connections: self.opts.connections,
            warmup: self.opts.warmup,
            duration: self.opts.duration,
            cookies: match &app.cookies {
                Some(cookies) => client::Cookies::Shared {
                    cookies: Arc::clone(cookies),
                    expect: "7",
                },
                None => client::Cookies::Own,
            },
        };
        let snapshot = || {
            (
                self.server_threads.cpu_ns(),
                self.client_threads.cpu_ns(),
                app.redis.as_ref().map(RedisServer::info),
            )
        };
        let start = || {
            let taken = snapshot();
            on_start();
            taken
        };
        let (run, before, after) = self.client_rt.block_on(client::run(&plan, start, snapshot));
        let mut latencies = run.latencies_ns;
        latencies.sort_unstable();
        let pct = |p: f64| {
            latencies
                .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
                .map_or(f64::NAN, |ns| *ns as f64 / 1000.0)
        };
        let n = run.requests.max(1) as f64;
        let mut cell = Cell {
            rps: run.requests as f64 / run.elapsed.as_secs_f64(),
            p50_us: pct(0.50),
            p99_us: pct(0.99),
            max_us: latencies.last().map_or(f64::NAN, |ns| *ns as f64 / 1000.0),
            server_cpu_us: (after.0 - before.0) as f64 / 1000.0 / n,
            client_cpu_us: (after.1 - before.1) as f64 / 1000.0 / n,
            errors: run.errors,
            ..Cell::default()
        };
        if let (Some(b), Some(a)) = (before.2, after.2) {
            cell.redis_cpu_us = Some((a.cpu_seconds - b.cpu_seconds) * 1e6 / n);
            cell.calls = b
                .delta(&a)
                .into_iter()
                .map(|(name, calls)| (name, calls as f64 / n))
                .collect();
        }
        eprintln!(
            "  {:<12} {:<6} {:>9.0} req/s  p50 {:>7.1} µs  p99 {:>8.1} µs  server {:>5.1} µs/req{}{}",
            app.key,
            route,
            cell.rps,
            cell.p50_us,
            cell.p99_us,
            cell.server_cpu_us,
            cell.redis_cpu_us
                .map(|c| format!("  redis {c:.1} µs/req"))
                .unwrap_or_default(),
            if cell.errors > 0 {
                format!("  ERRORS {}", cell.errors)
            } else {
                String::new()
            }
        );
        cell
    }

    /// Runs every (app, route) cell `reps` times, interleaved: for each repetition, for each
    /// route, for each app. Returns the cells by (app, route), in repetition order.
    fn interleave(&self, apps: &[App], routes: &[String]) -> BTreeMap<(String, String), Vec<Cell>> {
        let mut cells: BTreeMap<(String, String), Vec<Cell>> = BTreeMap::new();
        for rep in 0..self.opts.reps {
            eprintln!("repetition {}/{}", rep + 1, self.opts.reps);
            for route in routes {
                for app in apps {
                    let cell = self.cell(app, route);
                    cells
                        .entry((app.key.clone(), route.clone()))
                        .or_default()
                        .push(cell);
                }
            }
        }
        cells
    }
}

// ---------------------------------------------------------------------------------------------
// The comparison
// ---------------------------------------------------------------------------------------------

fn http_mode(bench: &Bench) {
    let opts = &bench.opts;
    let wants = |key: &str| opts.apps.iter().any(|a| a == key);
    if (wants("ours-pg") || wants("ts-pg")) && !postgres_server::available_or_skip("bench-http") {
        eprintln!("bench-http: the PostgreSQL apps need PostgreSQL; or pass --apps without them");
        std::process::exit(1);
    }
    let redis_apps = [
        "ours-redis",
        "ours-redis-cached",
        "ours-redis-cached-tls",
        "ts-redis",
        "as-redis",
        "as-redis-nomem",
    ];
    if redis_apps.iter().any(|app| wants(app)) && redis_server::available().is_err() {
        eprintln!(
            "bench-http: the Redis apps need `redis-server` on PATH (Debian/Ubuntu: \
             apt-get install redis-server); or pass --apps bare,ours-mem,ts-mem"
        );
        std::process::exit(1);
    }
    let mut apps = Vec::new();
    // Built inside the servers' runtime: the stores' background tasks and connections live there.
    bench.server_rt.block_on(async {
        for key in ALL_APPS.iter().filter(|k| wants(k)) {
            let (router, redis) = match *key {
                "bare" => (apps::bare(), None),
                "ours-mem" => (apps::ours_memory(MemoryStore::new()), None),
                "ours-cookie" => (apps::ours_cookie(false), None),
                "ours-cookie-rl" => (apps::ours_cookie(true), None),
                "ts-mem" => (apps::ts_memory(), None),
                "ours-redis" => {
                    let server = RedisServer::start(key);
                    let store = RedisStore::<Counter>::connect(&server.url())
                        .await
                        .expect("connect RedisStore");
                    (apps::ours_redis(store), Some(server))
                }
                "ts-redis" => {
                    let server = RedisServer::start(key);
                    let router = apps::ts_redis(&server.url(), opts.ts_pool).await;
                    (router, Some(server))
                }
                "ours-redis-cached" => {
                    let server = RedisServer::start(key);
                    let store = RedisStore::<Counter>::connect_cached(
                        &server.url(),
                        tower_typed_sessions::store::redis::LocalCache::new(),
                    )
                    .await
                    .expect("connect cached RedisStore");
                    (apps::ours_redis_cached(store), Some(server))
                }
                "ours-redis-cached-tls" => {
                    let server = RedisServer::start_tls(key);
                    let (url, ca) = server.tls().expect("a TLS server");
                    let store = RedisStore::<Counter>::connect_cached_with_tls(
                        &url,
                        tower_typed_sessions::store::redis::RedisTls::new()
                            .with_root_certificate(ca),
                        tower_typed_sessions::store::redis::LocalCache::new(),
                    )
                    .await
                    .expect("connect cached RedisStore over TLS");
                    (apps::ours_redis_cached(store), Some(server))
                }
                "as-redis" | "as-redis-nomem" => {
                    let server = RedisServer::start(key);
                    let router = apps::axum_session_redis(&server.url(), *key == "as-redis").await;
                    (router, Some(server))
                }
                "ours-pg" | "ts-pg" => (apps::bare(), None),
                _ => unreachable!(),
            };
            let (router, postgres) = match *key {
                "ours-pg" => {
                    let server = PostgresServer::start_quiet();
                    let store = PostgresStore::<Counter>::new(apps::pg_pool(&server.url()).await);
                    store.migrate().await.expect("migrate PostgresStore");
                    (apps::ours_postgres(store), Some(server))
                }
                "ts-pg" => {
                    let server = PostgresServer::start_quiet();
                    let pool = apps::pg_pool(&server.url()).await;
                    (apps::ts_postgres(pool).await, Some(server))
                }
                _ => (router, None),
            };
            apps.push(App {
                key: key.to_string(),
                addr: apps::serve(router).await,
                redis,
                postgres,
                cookies: None,
                stored: 0,
            });
        }
    });
    let cells = bench.interleave(&apps, &opts.routes);
    let monitored = monitor_pass(bench, &apps);
    let mut out = String::new();
    report_http(opts, &apps, &cells, &monitored, &mut out);
    println!("{out}");
}

/// Per (app, route): client commands and script-internal commands per request, from MONITOR.
type Monitored = BTreeMap<(String, String), (BTreeMap<String, f64>, BTreeMap<String, f64>)>;

/// Counts, with MONITOR, what each Redis app sends per request: one connection, its own
/// session, `--monitor-requests` sequential requests per route. Not timed.
fn monitor_pass(bench: &Bench, apps: &[App]) -> Monitored {
    let k = bench.opts.monitor_requests;
    let mut out = Monitored::new();
    if k == 0 {
        return out;
    }
    for app in apps {
        let Some(server) = &app.redis else { continue };
        for route in &bench.opts.routes {
            let path = route_path(route);
            let (client, scripted) = bench.client_rt.block_on(async {
                let mut single = client::Single::new(app.addr).await;
                let monitor = server.monitor();
                for _ in 0..k {
                    single.get(path).await;
                }
                monitor.finish()
            });
            let per = |m: BTreeMap<String, u64>| {
                m.into_iter()
                    .map(|(name, n)| (name, n as f64 / k as f64))
                    .collect::<BTreeMap<_, _>>()
            };
            out.insert(
                (app.key.clone(), route.clone()),
                (per(client), per(scripted)),
            );
        }
    }
    out
}

fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Median over repetitions of `f(cell)`.
fn med(cells: &[Cell], f: impl Fn(&Cell) -> f64) -> f64 {
    median(cells.iter().map(f).collect())
}

/// Median over repetitions of the ratio `f(a) / f(b)`, each ratio taken within one repetition
/// (the two cells ran seconds apart), which cancels slow drifts of the shared machine.
fn paired_ratio(a: &[Cell], b: &[Cell], f: impl Fn(&Cell) -> f64) -> f64 {
    median(a.iter().zip(b).map(|(x, y)| f(x) / f(y)).collect())
}

/// The lowest and highest per-repetition ratio: how far one repetition can stray on this box.
fn ratio_range(a: &[Cell], b: &[Cell], f: impl Fn(&Cell) -> f64) -> String {
    let ratios: Vec<f64> = a.iter().zip(b).map(|(x, y)| f(x) / f(y)).collect();
    let low = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let high = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{low:.2}–{high:.2}")
}

fn fmt_calls(calls: &BTreeMap<String, f64>) -> String {
    let mut parts: Vec<String> = calls
        .iter()
        .filter(|(_, n)| **n >= 0.005)
        .map(|(name, n)| format!("{} {n:.2}", name.to_uppercase()))
        .collect();
    if parts.is_empty() {
        parts.push("none".into());
    }
    parts.join(", ")
}

/// A markdown table with padded columns (readable as text too).
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    out.push_str(&line(header.iter().map(|h| h.to_string()).collect()));
    out.push_str(&line(widths.iter().map(|w| "-".repeat(*w)).collect()));
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out.push('\n');
}

fn report_http(
    opts: &Opts,
    apps: &[App],
    cells: &BTreeMap<(String, String), Vec<Cell>>,
    monitored: &Monitored,
    out: &mut String,
) {
    let get = |app: &str, route: &str| cells.get(&(app.to_owned(), route.to_owned()));
    let _ = writeln!(
        out,
        "## Throughput and latency (median of {} repetitions)\n",
        opts.reps
    );
    let _ = writeln!(
        out,
        "× bare: req/s over bare axum's in the same repetition (median of the per-repetition \
         ratios). CPU µs/req: CPU time of the servers' runtime threads (and of redis-server) \
         per request.\n"
    );
    let mut rows = Vec::new();
    for route in &opts.routes {
        for app in apps {
            let Some(c) = get(&app.key, route) else {
                continue;
            };
            let vs_bare = get("bare", route)
                .map(|b| format!("{:.2}", paired_ratio(c, b, |x| x.rps)))
                .unwrap_or_else(|| "-".into());
            let vs_bare_range = get("bare", route)
                .map(|b| ratio_range(c, b, |x| x.rps))
                .unwrap_or_else(|| "-".into());
            let errors: u64 = c.iter().map(|x| x.errors).sum();
            rows.push(vec![
                route_path(route).to_owned(),
                app_title(&app.key).to_owned(),
                format!("{:.0}", med(c, |x| x.rps)),
                vs_bare,
                vs_bare_range,
                format!("{:.0}", med(c, |x| x.p50_us)),
                format!("{:.0}", med(c, |x| x.p99_us)),
                format!("{:.1}", med(c, |x| x.server_cpu_us)),
                c[0].redis_cpu_us
                    .map(|_| format!("{:.1}", med(c, |x| x.redis_cpu_us.unwrap_or(f64::NAN))))
                    .unwrap_or_else(|| "-".into()),
                format!("{:.1}", med(c, |x| x.client_cpu_us)),
                errors.to_string(),
            ]);
        }
    }
    table(
        out,
        &[
            "route",
            "app",
            "req/s",
            "× bare",
            "× bare per rep.",
            "p50 µs",
            "p99 µs",
            "app CPU µs/req",
            "redis CPU µs/req",
            "client CPU µs/req",
            "errors",
        ],
        &rows,
    );

    let pairs = [
        ("ours-mem", "ts-mem", "memory"),
        ("ours-redis", "ts-redis", "Redis"),
        ("ours-redis-cached", "ts-redis", "Redis, ours cached"),
        (
            "ours-redis-cached",
            "as-redis",
            "Redis, ours cached vs axum_session cached",
        ),
        (
            "ours-redis-cached",
            "ours-redis",
            "Redis, ours cached vs uncached",
        ),
        ("ours-pg", "ts-pg", "PostgreSQL"),
    ];
    let mut rows = Vec::new();
    for route in &opts.routes {
        for (ours, theirs, store) in pairs {
            let (Some(a), Some(b)) = (get(ours, route), get(theirs, route)) else {
                continue;
            };
            rows.push(vec![
                route_path(route).to_owned(),
                store.to_owned(),
                format!("{:.2}", paired_ratio(a, b, |x| x.rps)),
                ratio_range(a, b, |x| x.rps),
                format!("{:.2}", paired_ratio(b, a, |x| x.p50_us)),
                format!("{:.2}", paired_ratio(b, a, |x| x.p99_us)),
                format!("{:.2}", paired_ratio(b, a, |x| x.server_cpu_us)),
            ]);
        }
    }
    if !rows.is_empty() {
        let _ = writeln!(out, "## tower-typed-sessions vs tower-sessions\n");
        let _ = writeln!(
            out,
            "Ratios > 1 favour tower-typed-sessions: its req/s over tower-sessions', and \
             tower-sessions' latency and app CPU per request over its.\n"
        );
        table(
            out,
            &[
                "route",
                "store",
                "req/s ratio",
                "per rep.",
                "p50 ratio",
                "p99 ratio",
                "app CPU ratio",
            ],
            &rows,
        );
    }

    let mut rows = Vec::new();
    for route in &opts.routes {
        for app in apps.iter().filter(|a| a.redis.is_some()) {
            let Some(c) = get(&app.key, route) else {
                continue;
            };
            let keys: std::collections::BTreeSet<&String> =
                c.iter().flat_map(|x| x.calls.keys()).collect();
            let calls: BTreeMap<String, f64> = keys
                .into_iter()
                .map(|k| {
                    (
                        k.clone(),
                        med(c, |x| x.calls.get(k).copied().unwrap_or(0.0)),
                    )
                })
                .collect();
            let total: f64 = calls.values().sum();
            let evalsha = calls.get("evalsha").copied().unwrap_or(0.0);
            let (trips, sent, scripted) = match monitored.get(&(app.key.clone(), route.clone())) {
                Some((client, scripted)) => (
                    format!("{:.2}", client.values().sum::<f64>()),
                    fmt_calls(client),
                    fmt_calls(scripted),
                ),
                None => ("-".into(), "-".into(), "-".into()),
            };
            rows.push(vec![
                route_path(route).to_owned(),
                app_title(&app.key).to_owned(),
                trips,
                sent,
                scripted,
                format!("{evalsha:.2}"),
                format!("{total:.2}"),
                fmt_calls(&calls),
            ]);
        }
    }
    if !rows.is_empty() {
        let _ = writeln!(out, "## Redis commands per request\n");
        let _ = writeln!(
            out,
            "Commands sent: commands the app sent to Redis per request, counted with MONITOR \
             over {} sequential requests per route (commands a Lua script runs are listed apart: \
             MONITOR marks them `lua`). Pipelined commands share a round trip, which MONITOR \
             cannot see: tests/redis_store.rs counts round trips with a relay. commandstats: \
             `INFO commandstats` calls per request during the timed cells (median over \
             repetitions), which count the commands inside scripts too: an EVALSHA that runs GET \
             and SET shows as 3 calls but is 1 command sent.\n",
            opts.monitor_requests
        );
        table(
            out,
            &[
                "route",
                "app",
                "commands sent",
                "sent",
                "run inside scripts",
                "EVALSHA",
                "all calls (commandstats)",
                "commandstats breakdown",
            ],
            &rows,
        );
    }

    // Targets.
    let mut rows = Vec::new();
    let mut target = |what: &str, value: Option<(f64, String)>, goal: f64| {
        if let Some((v, range)) = value {
            rows.push(vec![
                what.to_owned(),
                format!("{v:.2}"),
                range,
                format!(">= {goal:.2}"),
                if v >= goal { "met" } else { "MISSED" }.to_owned(),
            ]);
        }
    };
    let ratio = |a: &str, b: &str, route: &str| {
        let (a, b) = (get(a, route)?, get(b, route)?);
        Some((paired_ratio(a, b, |x| x.rps), ratio_range(a, b, |x| x.rps)))
    };
    target(
        "memory, /read: req/s vs bare axum",
        ratio("ours-mem", "bare", "read"),
        0.90,
    );
    target(
        "memory, /incr (write): req/s vs bare axum",
        ratio("ours-mem", "bare", "incr"),
        0.85,
    );
    target(
        "memory, /plain (session never asked for): req/s vs bare axum",
        ratio("ours-mem", "bare", "plain"),
        0.97,
    );
    target(
        "Redis, /plain (session never asked for): req/s vs bare axum",
        ratio("ours-redis", "bare", "plain"),
        0.97,
    );
    target(
        "Redis, /read: req/s vs tower-sessions Redis",
        ratio("ours-redis", "ts-redis", "read"),
        1.5,
    );
    target(
        "Redis, /incr (write): req/s vs tower-sessions Redis",
        ratio("ours-redis", "ts-redis", "incr"),
        1.2,
    );
    target(
        "cached Redis, /read: req/s vs bare axum",
        ratio("ours-redis-cached", "bare", "read"),
        0.85,
    );
    target(
        "cached Redis, /incr (write): req/s vs tower-sessions Redis",
        ratio("ours-redis-cached", "ts-redis", "incr"),
        1.6,
    );
    target(
        "cached Redis, /login: req/s vs tower-sessions Redis",
        ratio("ours-redis-cached", "ts-redis", "login"),
        1.3,
    );
    target(
        "PostgreSQL, /read: req/s vs tower-sessions PostgreSQL",
        ratio("ours-pg", "ts-pg", "read"),
        1.3,
    );
    target(
        "PostgreSQL, /incr (write): req/s vs tower-sessions PostgreSQL",
        ratio("ours-pg", "ts-pg", "incr"),
        1.2,
    );
    // Cookie-only against the memory store (the only other way to keep no external state).
    let mut cookie_rows = Vec::new();
    for route in &opts.routes {
        for (app, over) in [
            ("ours-cookie", "ours-mem"),
            ("ours-cookie-rl", "ours-mem"),
            ("ours-cookie-rl", "ours-cookie"),
        ] {
            if let Some((v, range)) = ratio(app, over, route) {
                cookie_rows.push(vec![
                    route_path(route).to_owned(),
                    format!("{} over {}", app_title(app), app_title(over)),
                    format!("{v:.2}"),
                    range,
                ]);
            }
        }
    }
    if !cookie_rows.is_empty() {
        let _ = writeln!(out, "## Cookie-only sessions\n");
        table(
            out,
            &["route", "req/s of", "ratio", "per repetition"],
            &cookie_rows,
        );
    }
    if !rows.is_empty() {
        let _ = writeln!(out, "## Targets\n");
        table(
            out,
            &["target", "measured", "per repetition", "goal", ""],
            &rows,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Scale
// ---------------------------------------------------------------------------------------------

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// A live session record with count 7, built from its stored JSON form (`Record` is
/// `#[non_exhaustive]` but `Deserialize`): idle expiry in 1 h, deadline in 24 h.
fn record(key: &SessionKey, now: i64) -> Record<Counter> {
    serde_json::from_value(serde_json::json!({
        "v": RECORD_FORMAT,
        "key": key.as_str(),
        "data": { "count": 7 },
        "has_data": true,
        "created_at": now,
        "last_seen": now,
        "expires_at": now + apps::IDLE_SECS * 1000,
        "deadline": now + 86_400_000,
    }))
    .expect("record")
}

fn ids(n: usize) -> Vec<SessionId> {
    (0..n)
        .map(|_| SessionId::generate().expect("random"))
        .collect()
}

fn cookies(ids: &[SessionId], subset: usize) -> Arc<Vec<HeaderValue>> {
    Arc::new(
        ids.iter()
            .take(subset)
            .map(|id| HeaderValue::from_str(&format!("id={}", id.expose_secret())).expect("cookie"))
            .collect(),
    )
}

struct MemoryCost {
    sessions: usize,
    heap_per_session: f64,
    rss_per_session: f64,
}

/// Fills a fresh MemoryStore with `ids`, measuring the heap it keeps (counting allocator: bytes
/// requested and not freed, so without malloc's own overhead) and the growth of the resident set
/// (which includes it). The IDs are generated before, so only the store's memory is counted.
async fn fill_memory(ids: &[SessionId]) -> (MemoryStore<Counter>, MemoryCost) {
    let store = MemoryStore::<Counter>::new();
    let now = now_ms();
    let rss_before = measure::rss_bytes();
    measure::start_counting();
    for id in ids {
        let stored = storage_key(&store, id);
        store.create(&record(&stored, now)).await.expect("create");
    }
    let heap = measure::stop_counting();
    let rss_after = measure::rss_bytes();
    let n = ids.len() as f64;
    let cost = MemoryCost {
        sessions: ids.len(),
        heap_per_session: heap as f64 / n,
        rss_per_session: (rss_after as f64 - rss_before as f64) / n,
    };
    (store, cost)
}

/// The key a session with cookie ID `id` is stored under with the layer's default config
/// (`IdsAtRest::StoreDefault`): the ID itself for stores whose contents stay in the process
/// (memory), a digest of it otherwise (Redis).
fn storage_key<S: Store<Counter>>(store: &S, id: &SessionId) -> SessionKey {
    if store.contents_stay_in_process() {
        SessionKey::plain(id)
    } else {
        SessionKey::hashed(id)
    }
}

/// Fills a RedisStore with `ids` through `Store::create`, 256 at a time; returns the growth of
/// Redis's `used_memory` per session.
async fn fill_redis(store: &RedisStore<Counter>, server: &RedisServer, ids: &[SessionId]) -> f64 {
    use futures_util::{stream, StreamExt};
    let before = server.info().used_memory;
    let now = now_ms();
    stream::iter(ids)
        .for_each_concurrent(256, |id| async move {
            let stored = storage_key(store, id);
            store.create(&record(&stored, now)).await.expect("create");
        })
        .await;
    let after = server.info().used_memory;
    (after as f64 - before as f64) / ids.len() as f64
}

/// Fills a PostgresStore: `readable` sessions through `Store::create` (64 at a time), then
/// `filler` rows of the same size under keys no cookie names, in one `INSERT … SELECT` (a
/// million creates one by one would take minutes and measure nothing else).
async fn fill_postgres(
    store: &PostgresStore<Counter>,
    readable: &[SessionId],
    filler: usize,
    pool: &sqlx::PgPool,
) {
    use futures_util::{stream, StreamExt};
    let now = now_ms();
    stream::iter(readable)
        .for_each_concurrent(64, |id| async move {
            let stored = storage_key(store, id);
            store.create(&record(&stored, now)).await.expect("create");
        })
        .await;
    if filler == 0 {
        return;
    }
    let sample: Vec<u8> = sqlx::query_scalar("SELECT record FROM typed_sessions LIMIT 1")
        .fetch_one(pool)
        .await
        .expect("a stored record");
    sqlx::query(
        "INSERT INTO typed_sessions (key, revision, expires_ms, deadline_ms, record)
         SELECT substr(md5(i::text) || md5((-i)::text), 1, 43), 0, $2, $3, $4
         FROM generate_series(1, $1) AS i",
    )
    .bind(i64::try_from(filler).expect("filler count"))
    .bind(now + apps::IDLE_SECS * 1000)
    .bind(now + 86_400_000)
    .bind(sample)
    .execute(pool)
    .await
    .expect("filler rows");
    sqlx::query("VACUUM ANALYZE typed_sessions")
        .execute(pool)
        .await
        .expect("vacuum");
}

/// The session table's size on disk (heap, index, TOAST) per row.
async fn table_bytes_per_row(pool: &sqlx::PgPool) -> f64 {
    let (bytes, rows): (i64, i64) = sqlx::query_as(
        "SELECT pg_total_relation_size('typed_sessions'), (SELECT COUNT(*) FROM typed_sessions)",
    )
    .fetch_one(pool)
    .await
    .expect("table size");
    bytes as f64 / rows.max(1) as f64
}

fn scale_mode(bench: &Bench) {
    let opts = &bench.opts;
    let redis_ok = redis_server::available();
    if let Err(reason) = &redis_ok {
        eprintln!("skipping the Redis half of the scale run: {reason}");
    }
    // --apps picks the stores: ours-mem, ours-redis, ours-pg (all by default).
    let wants = |key: &str| opts.apps.iter().any(|a| a == key);
    let postgres_ok =
        wants("ours-pg") && postgres_server::available_or_skip("the PostgreSQL part of the run");
    let mut postgres_costs = Vec::new();
    let (small, large) = (opts.small, opts.large);
    eprintln!("generating {} session IDs", small + large);
    let small_ids = ids(small);
    let large_ids = ids(large);
    let mut apps = Vec::new();
    let mut memory_costs = Vec::new();
    let mut redis_costs = Vec::new();
    bench.server_rt.block_on(async {
        apps.push(App {
            key: "bare".into(),
            addr: apps::serve(apps::bare()).await,
            redis: None,
            postgres: None,
            cookies: None,
            stored: 0,
        });
        let memory = if wants("ours-mem") {
            vec![("mem-small", &small_ids), ("mem-large", &large_ids)]
        } else {
            Vec::new()
        };
        for (key, ids) in memory {
            eprintln!("filling {key} with {} sessions", ids.len());
            let started = Instant::now();
            let (store, cost) = fill_memory(ids).await;
            eprintln!("  {:.1} s", started.elapsed().as_secs_f64());
            memory_costs.push(cost);
            apps.push(App {
                key: key.into(),
                addr: apps::serve(apps::ours_memory(store)).await,
                redis: None,
                postgres: None,
                cookies: Some(cookies(ids, opts.subset)),
                stored: ids.len(),
            });
        }
        if redis_ok.is_ok() && wants("ours-redis") {
            for (key, ids) in [("redis-small", &small_ids), ("redis-large", &large_ids)] {
                eprintln!("filling {key} with {} sessions", ids.len());
                let started = Instant::now();
                let server = RedisServer::start(key);
                let store = RedisStore::<Counter>::connect(&server.url())
                    .await
                    .expect("connect RedisStore");
                redis_costs.push((ids.len(), fill_redis(&store, &server, ids).await));
                eprintln!("  {:.1} s", started.elapsed().as_secs_f64());
                apps.push(App {
                    key: key.into(),
                    addr: apps::serve(apps::ours_redis(store)).await,
                    redis: Some(server),
                    postgres: None,
                    cookies: Some(cookies(ids, opts.subset)),
                    stored: ids.len(),
                });
            }
        }
        if postgres_ok {
            for (key, ids) in [("pg-small", &small_ids), ("pg-large", &large_ids)] {
                eprintln!("filling {key} with {} sessions", ids.len());
                let started = Instant::now();
                let server = PostgresServer::start_quiet();
                let pool = apps::pg_pool(&server.url()).await;
                let store = PostgresStore::<Counter>::new(pool.clone()).without_sweeper();
                store.migrate().await.expect("migrate PostgresStore");
                let readable = opts.subset.min(ids.len());
                fill_postgres(&store, &ids[..readable], ids.len() - readable, &pool).await;
                postgres_costs.push((ids.len(), table_bytes_per_row(&pool).await));
                eprintln!("  {:.1} s", started.elapsed().as_secs_f64());
                apps.push(App {
                    key: key.into(),
                    addr: apps::serve(apps::ours_postgres(store)).await,
                    redis: None,
                    postgres: Some(server),
                    cookies: Some(cookies(ids, opts.subset)),
                    stored: ids.len(),
                });
            }
        }
    });
    drop((small_ids, large_ids));
    let routes = vec!["read".to_owned()];
    let cells = bench.interleave(&apps, &routes);

    let mut out = String::new();
    let get = |key: &str| cells.get(&(key.to_owned(), "read".to_owned()));
    let _ = writeln!(
        out,
        "## /read with {small} vs {large} stored sessions (median of {} repetitions)\n",
        opts.reps
    );
    let _ = writeln!(
        out,
        "Each connection cycles through its share of {} stored sessions' cookies (all of them when \
         fewer are stored), one per request, so reads spread over the store.\n",
        opts.subset
    );
    let mut rows = Vec::new();
    for app in &apps {
        let Some(c) = get(&app.key) else { continue };
        rows.push(vec![
            app_title(&app.key).to_owned(),
            app.stored.to_string(),
            app.cookies
                .as_ref()
                .map_or("-".into(), |c| c.len().to_string()),
            format!("{:.0}", med(c, |x| x.rps)),
            format!("{:.2}", paired_ratio(c, get("bare").unwrap(), |x| x.rps)),
            ratio_range(c, get("bare").unwrap(), |x| x.rps),
            format!("{:.0}", med(c, |x| x.p50_us)),
            format!("{:.0}", med(c, |x| x.p99_us)),
            format!("{:.1}", med(c, |x| x.server_cpu_us)),
            c[0].redis_cpu_us
                .map(|_| format!("{:.1}", med(c, |x| x.redis_cpu_us.unwrap_or(f64::NAN))))
                .unwrap_or_else(|| "-".into()),
            c.iter().map(|x| x.errors).sum::<u64>().to_string(),
        ]);
    }
    table(
        &mut out,
        &[
            "app",
            "stored",
            "read",
            "req/s",
            "× bare",
            "× bare per rep.",
            "p50 µs",
            "p99 µs",
            "app CPU µs/req",
            "redis CPU µs/req",
            "errors",
        ],
        &rows,
    );
    let mut rows = Vec::new();
    for (small_key, large_key, store) in [
        ("mem-small", "mem-large", "MemoryStore"),
        ("redis-small", "redis-large", "RedisStore"),
        ("pg-small", "pg-large", "PostgresStore"),
    ] {
        let (Some(s), Some(l)) = (get(small_key), get(large_key)) else {
            continue;
        };
        let rps = paired_ratio(l, s, |x| x.rps);
        let cpu = paired_ratio(l, s, |x| x.server_cpu_us + x.redis_cpu_us.unwrap_or(0.0));
        rows.push(vec![
            store.to_owned(),
            format!("{rps:.3}"),
            ratio_range(l, s, |x| x.rps),
            format!("{cpu:.3}"),
            if rps >= 0.9 && cpu <= 1.1 {
                "met"
            } else {
                "MISSED"
            }
            .to_owned(),
        ]);
    }
    let _ = writeln!(
        out,
        "## Cost from {small} to {large} sessions (target: within 10%)\n"
    );
    table(
        &mut out,
        &[
            "store",
            "req/s large / small",
            "per rep.",
            "CPU µs/req (app + redis) large / small",
            "",
        ],
        &rows,
    );

    let _ = writeln!(out, "## Memory per stored session\n");
    let _ = writeln!(
        out,
        "MemoryStore, measured while filling an empty store: heap = bytes requested from the \
         allocator and not freed (a counting global allocator in the bench binary; excludes \
         malloc's per-block overhead); RSS = growth of VmRSS (/proc/self/status), which includes \
         it. Both include the hash tables' spare capacity at that size. Redis: growth of \
         `used_memory`. Sizes in the store: `Record<Counter>` {} bytes, `SessionKey` {} bytes.\n",
        std::mem::size_of::<Record<Counter>>(),
        std::mem::size_of::<SessionKey>()
    );
    let mut rows = Vec::new();
    for cost in &memory_costs {
        rows.push(vec![
            "MemoryStore".into(),
            cost.sessions.to_string(),
            format!("{:.0}", cost.heap_per_session),
            format!("{:.0}", cost.rss_per_session),
        ]);
    }
    for (n, bytes) in &redis_costs {
        rows.push(vec![
            "RedisStore (redis-server used_memory)".into(),
            n.to_string(),
            format!("{bytes:.0}"),
            "-".into(),
        ]);
    }
    for (n, bytes) in &postgres_costs {
        rows.push(vec![
            "PostgresStore (pg_total_relation_size / rows: on disk, not in memory)".into(),
            n.to_string(),
            format!("{bytes:.0}"),
            "-".into(),
        ]);
    }
    table(
        &mut out,
        &[
            "store",
            "sessions",
            "heap bytes/session",
            "RSS bytes/session",
        ],
        &rows,
    );
    println!("{out}");
}

// ---------------------------------------------------------------------------------------------
// The sweep
// ---------------------------------------------------------------------------------------------

/// Adds `n` rows under keys no cookie names, expired (`expires_ms` a minute ago) or live.
async fn filler_rows(pool: &sqlx::PgPool, n: usize, expired: bool) {
    let now = now_ms();
    let expires = if expired {
        now - 60_000
    } else {
        now + apps::IDLE_SECS * 1000
    };
    // A fresh key range each call: the offset is the current row count.
    sqlx::query(
        "INSERT INTO typed_sessions (key, revision, expires_ms, deadline_ms, record)
         SELECT substr(md5(i::text) || md5((-i)::text), 1, 43), 0, $2, $3,
                (SELECT record FROM typed_sessions WHERE record IS NOT NULL LIMIT 1)
         FROM generate_series($4 + 1, $4 + $1) AS i",
    )
    .bind(i64::try_from(n).expect("row count"))
    .bind(expires)
    .bind(now + 86_400_000)
    .bind(now)
    .execute(pool)
    .await
    .expect("filler rows");
}

fn sweep_mode(bench: &Bench) {
    let opts = &bench.opts;
    if !postgres_server::available_or_skip("bench-http sweep") {
        std::process::exit(1);
    }
    let readable = opts.subset.min(10_000);
    let (app, store, pool) = bench.server_rt.block_on(async {
        let server = PostgresServer::start_quiet();
        let pool = apps::pg_pool(&server.url()).await;
        let store = PostgresStore::<Counter>::new(pool.clone())
            .without_sweeper()
            .with_expired_retention(Duration::ZERO);
        store.migrate().await.expect("migrate PostgresStore");
        let ids = ids(readable);
        fill_postgres(&store, &ids, 0, &pool).await;
        let app = App {
            key: "ours-pg".into(),
            addr: apps::serve(apps::ours_postgres(store.clone())).await,
            redis: None,
            postgres: Some(server),
            cookies: Some(cookies(&ids, readable)),
            stored: readable,
        };
        (app, store, pool)
    });

    struct Rep {
        idle: Cell,
        sweeping: Cell,
        removed: u64,
        sweep: Duration,
    }
    let mut reps = Vec::new();
    for rep in 0..opts.reps {
        eprintln!("repetition {}/{}", rep + 1, opts.reps);
        bench.server_rt.block_on(async {
            filler_rows(&pool, opts.large, true).await;
            sqlx::query("VACUUM ANALYZE typed_sessions")
                .execute(&pool)
                .await
                .expect("vacuum");
        });
        let idle = bench.cell(&app, "read");
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let sweeping = bench.cell_with(&app, "read", || {
            let store = store.clone();
            bench.server_rt.spawn(async move {
                let started = Instant::now();
                let removed = store.delete_expired().await.expect("sweep");
                let _ = done_tx.send((removed, started.elapsed()));
            });
        });
        let (removed, sweep) = done_rx.recv().expect("the sweep finished");
        eprintln!(
            "  sweep removed {removed} rows in {:.2} s",
            sweep.as_secs_f64()
        );
        reps.push(Rep {
            idle,
            sweeping,
            removed,
            sweep,
        });
    }
    // The periodic scan when nothing has expired.
    let scans: Vec<Duration> = bench.server_rt.block_on(async {
        filler_rows(&pool, opts.large, false).await;
        sqlx::query("VACUUM ANALYZE typed_sessions")
            .execute(&pool)
            .await
            .expect("vacuum");
        let mut scans = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            let removed = store.delete_expired().await.expect("sweep");
            assert_eq!(removed, 0, "nothing had expired");
            scans.push(started.elapsed());
        }
        scans
    });

    let mut out = String::new();
    let _ = writeln!(
        out,
        "## PostgresStore: /read while the sweep deletes {} expired rows\n",
        opts.large
    );
    let _ = writeln!(
        out,
        "Each repetition adds {} expired rows, measures /read over {readable} live sessions \
         without a sweep, then again while `delete_expired` runs (started when the measured \
         window starts; the sweep row says how long it ran: when it ran longer than the window, \
         the whole window is under the sweep).\n",
        opts.large
    );
    let mut rows = Vec::new();
    for (i, rep) in reps.iter().enumerate() {
        rows.push(vec![
            (i + 1).to_string(),
            rep.removed.to_string(),
            format!("{:.2}", rep.sweep.as_secs_f64()),
            format!("{:.0}", rep.idle.rps),
            format!("{:.0}", rep.sweeping.rps),
            format!("{:.2}", rep.sweeping.rps / rep.idle.rps),
            format!("{:.0} / {:.0}", rep.idle.p99_us, rep.sweeping.p99_us),
            format!(
                "{:.1} / {:.1}",
                rep.idle.max_us / 1000.0,
                rep.sweeping.max_us / 1000.0
            ),
            (rep.idle.errors + rep.sweeping.errors).to_string(),
        ]);
    }
    table(
        &mut out,
        &[
            "rep.",
            "rows swept",
            "sweep s",
            "req/s, no sweep",
            "req/s, during",
            "during / none",
            "p99 µs none / during",
            "max ms none / during",
            "errors",
        ],
        &rows,
    );
    let _ = writeln!(
        out,
        "A sweep that finds nothing expired among {} live rows: {} s.\n",
        opts.large + readable,
        scans
            .iter()
            .map(|d| format!("{:.2}", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("{out}");
}
