//! The cached Redis store (`RedisStore::connect_cached`): several instances on one Redis server,
//! each with its own local cache and its own connection. A logout on one is never served as a
//! live session by another (1,000 times, with the invalidation lag measured), reads cost no
//! command once warm, the Redis expiry is refreshed at most once per interval with both sides
//! of its bound checked, the cache keeps to its capacity, and an outage stops it at once. The
//! store contract and races run through the cache in tests/conformance_redis.rs.
#![cfg(all(feature = "redis", feature = "axum"))]

#[path = "support/hardening_suite.rs"]
mod hardening_suite;
#[path = "support/owner_suite.rs"]
mod owner_suite;
#[path = "support/redis_server.rs"]
mod redis_server;
mod support;

use std::time::{Duration, Instant};

use axum::{http::StatusCode, routing::get, Router};
use redis_server::RedisServer;
use support::{Client, Counter, Events};
use time::OffsetDateTime;
use tower_typed_sessions::{
    store::redis::LocalCache, Expect, LoadOptions, Loaded, RedisStore, SessionHandle, SessionLayer,
    Store,
};

async fn cached(server: &RedisServer, cache: LocalCache) -> RedisStore<Counter> {
    RedisStore::connect_cached(&server.url(), cache)
        .await
        .expect("connect to the test's redis")
}

/// Where an instance's cached store goes: one server, or a Cluster through its nodes.
#[derive(Clone, Debug)]
enum Target {
    Server(String),
    #[cfg(feature = "cluster")]
    Cluster(Vec<String>),
}

impl Target {
    async fn connect(&self, cache: LocalCache) -> RedisStore<Counter> {
        match self {
            Target::Server(url) => RedisStore::connect_cached(url, cache).await,
            #[cfg(feature = "cluster")]
            Target::Cluster(urls) => {
                let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
                RedisStore::connect_cluster_cached(&nodes, cache).await
            }
        }
        .expect("connect to the test's redis")
    }

    /// As the environment variable an app process reads.
    fn to_env(&self) -> String {
        match self {
            Target::Server(url) => format!("server {url}"),
            #[cfg(feature = "cluster")]
            Target::Cluster(urls) => format!("cluster {}", urls.join(" ")),
        }
    }

    fn from_env(text: &str) -> Self {
        let mut words = text.split(' ');
        match words.next() {
            #[cfg(feature = "cluster")]
            Some("cluster") => Target::Cluster(words.map(str::to_owned).collect()),
            _ => Target::Server(words.next().unwrap().to_owned()),
        }
    }
}

/// The lifecycle routes plus `/key` (the session's store key) behind a layer on `store`.
fn app(store: RedisStore<Counter>, idle: Duration) -> Router {
    support::routes()
        .route(
            "/key",
            get(|s: SessionHandle<Counter>| async move {
                s.id()
                    .map(|key| key.as_str().to_owned())
                    .unwrap_or_default()
            }),
        )
        .layer(SessionLayer::new(store).with_idle_timeout(idle))
}

fn is_logged_in(body: &str) -> bool {
    // `/read` answers "<count> new=<bool>"; the login sets count to 0 but makes it not new.
    body.ends_with("new=false")
}

/// An instance of the app as another process would run it: its own runtime on its own thread,
/// its own store (connection, cache) made there, serving HTTP on a free 127.0.0.1 port.
fn instance(target: Target, idle: Duration) -> (std::net::SocketAddr, RedisStore<Counter>) {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let store = target.connect(LocalCache::new()).await;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            sender
                .send((listener.local_addr().unwrap(), store.clone()))
                .unwrap();
            axum::serve(listener, app(store, idle)).await.unwrap();
        });
    });
    receiver.recv().unwrap()
}

type Http = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<bytes::Bytes>,
>;

fn http_client() -> Http {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// `GET base+path` with `cookie` (a `name=value` pair), which the response's Set-Cookie replaces
/// (or clears, for a removal cookie). Returns the body.
async fn fetch(client: &Http, base: &str, path: &str, cookie: &mut Option<String>) -> String {
    use http_body_util::BodyExt;
    let mut request = http::Request::get(format!("{base}{path}"));
    if let Some(cookie) = cookie.as_deref() {
        request = request.header(http::header::COOKIE, cookie);
    }
    let response = client
        .request(request.body(http_body_util::Empty::new()).unwrap())
        .await
        .unwrap();
    if let Some(set) = response.headers().get(http::header::SET_COOKIE) {
        let set = set.to_str().unwrap();
        let pair = set.split(';').next().unwrap().to_owned();
        *cookie = (!set.contains("Max-Age=0")).then_some(pair);
    }
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// Two instances A and B on `target` (1 h idle timeout): their base URLs and stores.
fn two_instances(target: &Target) -> (String, RedisStore<Counter>, String, RedisStore<Counter>) {
    let hour = Duration::from_secs(3600);
    let (addr_a, a) = instance(target.clone(), hour);
    let (addr_b, b) = instance(target.clone(), hour);
    (format!("http://{addr_a}"), a, format!("http://{addr_b}"), b)
}

/// Logs in on A (over HTTP) and reads on B until B's cache holds the session: the cookie and
/// the session's key. (A read whose claim an earlier push removed does not fill: the push of A's
/// own write can arrive after B's read began.)
async fn logged_in_on_a_cached_on_b(
    client: &Http,
    base_a: &str,
    base_b: &str,
    b: &RedisStore<Counter>,
) -> (Option<String>, tower_typed_sessions::SessionKey) {
    let mut cookie = None;
    fetch(client, base_a, "/login", &mut cookie).await;
    let key = fetch(client, base_a, "/key", &mut cookie).await;
    let key = tower_typed_sessions::SessionKey::parse(&key).unwrap();
    for _ in 0..5 {
        assert!(is_logged_in(
            &fetch(client, base_b, "/read", &mut cookie).await
        ));
        if b.is_cached(&key) {
            break;
        }
    }
    assert!(b.is_cached(&key), "B caches the session");
    (cookie, key)
}

/// 1,000 logouts on instance A, each followed at once by a request with the same cookie on
/// instance B, which had the session cached: none is served as logged in. A and B run as
/// separate processes would (own runtimes, own connections), over HTTP. Then the lag from a
/// write's acknowledgement on A to B dropping its entry, over 1,000 writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_on_one_instance_is_seen_at_once_by_another() {
    let server = RedisServer::start();
    logouts_seen_at_once(Target::Server(server.url())).await;
}

/// The same on a three-master Cluster: the invalidations come from whichever master holds the
/// session's slot, on tracking connections beside the cluster connection.
#[cfg(feature = "cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_on_one_instance_is_seen_at_once_by_another_on_a_cluster() {
    let cluster = redis_server::RedisCluster::start();
    logouts_seen_at_once(Target::Cluster(cluster.urls())).await;
}

async fn logouts_seen_at_once(target: Target) {
    let hour = Duration::from_secs(3600);
    let (base_a, a, base_b, b) = two_instances(&target);
    let client = http_client();
    let mut served_logged_in = 0;
    let (hits_before, _) = b.cache_hits_and_misses();
    for _ in 0..1000 {
        let (mut cookie, _) = logged_in_on_a_cached_on_b(&client, &base_a, &base_b, &b).await;
        assert!(is_logged_in(
            &fetch(&client, &base_b, "/read", &mut cookie).await
        ));
        let mut copy = cookie.clone();
        fetch(&client, &base_a, "/logout", &mut copy).await;
        assert_eq!(copy, None, "A's logout clears the cookie");
        // At once, with the cookie from before the logout.
        if is_logged_in(&fetch(&client, &base_b, "/read", &mut cookie).await) {
            served_logged_in += 1;
        }
    }
    let hits = b.cache_hits_and_misses().0 - hits_before;
    println!(
        "{target:?}: 1000 logouts on A, then a request on B: {served_logged_in} served as \
         logged in ({hits} of B's reads were cache hits)"
    );
    assert_eq!(served_logged_in, 0);
    assert!(
        hits >= 1000,
        "B served the session from its cache before each logout"
    );

    // The lag: A deletes through its store; B's entry must go when the push arrives.
    let mut lags = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let mut cookie = None;
        fetch(&client, &base_a, "/incr", &mut cookie).await;
        let key = fetch(&client, &base_a, "/key", &mut cookie).await;
        let key = tower_typed_sessions::SessionKey::parse(&key).unwrap();
        for _ in 0..5 {
            let now = OffsetDateTime::now_utc();
            assert!(matches!(
                b.load(
                    &key,
                    LoadOptions::at(now).sliding(Some(hour)).taking_flash(true)
                )
                .await,
                Ok(Loaded::Active(_))
            ));
            if b.is_cached(&key) {
                break;
            }
        }
        assert!(b.is_cached(&key));
        a.delete(&key, Expect::Any).await.unwrap();
        let acknowledged = Instant::now();
        while b.is_cached(&key) {
            assert!(
                acknowledged.elapsed() < Duration::from_secs(2),
                "no invalidation within 2 s"
            );
            std::hint::spin_loop();
            tokio::task::yield_now().await;
        }
        lags.push(acknowledged.elapsed());
    }
    lags.sort();
    let at = |q: f64| lags[((lags.len() - 1) as f64 * q) as usize];
    println!(
        "{target:?}: invalidation lag from A's acknowledged delete to B dropping the entry, \
         1000 writes: p50 {:?}, p99 {:?}, max {:?}",
        at(0.5),
        at(0.99),
        lags[lags.len() - 1]
    );
}

/// The race the invalidation check exists for, forced: B's tracked connection is held back from
/// reading (`pause_invalidations`), so A's logout invalidation is on B's socket, unread, when
/// the request with the old cookie reaches B. The read waits until it is applied: 0 of 100
/// served as logged in (100 of 100 when the cache answers without that check, as a runtime
/// yield before the lookup did).
#[cfg(feature = "testing")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_whose_invalidation_is_still_unread_is_not_served() {
    let server = RedisServer::start();
    unread_invalidations(Target::Server(server.url())).await;
}

/// The same on a Cluster.
#[cfg(all(feature = "testing", feature = "cluster"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_whose_invalidation_is_still_unread_is_not_served_on_a_cluster() {
    let cluster = redis_server::RedisCluster::start();
    unread_invalidations(Target::Cluster(cluster.urls())).await;
}

#[cfg(feature = "testing")]
async fn unread_invalidations(target: Target) {
    let (base_a, _a, base_b, b) = two_instances(&target);
    let client = http_client();
    let pause = Duration::from_millis(30);
    let mut served_logged_in = 0;
    let mut waits = Vec::new();
    for _ in 0..100 {
        let (mut cookie, _) = logged_in_on_a_cached_on_b(&client, &base_a, &base_b, &b).await;
        b.pause_invalidations(pause);
        let paused = Instant::now();
        let mut copy = cookie.clone();
        fetch(&client, &base_a, "/logout", &mut copy).await;
        if is_logged_in(&fetch(&client, &base_b, "/read", &mut cookie).await) {
            served_logged_in += 1;
        }
        waits.push(paused.elapsed());
        // The next round starts with B reading again.
        tokio::time::sleep(pause.saturating_sub(paused.elapsed())).await;
    }
    waits.sort();
    let median = waits[waits.len() / 2];
    println!(
        "{target:?}: 100 logouts on A with B's invalidations held back {pause:?}: \
         {served_logged_in} served as logged in; logout plus B's read took {median:?} (median)"
    );
    assert_eq!(served_logged_in, 0);
    assert!(
        median >= pause / 2,
        "B's reads waited for the held-back invalidation: {median:?}"
    );
}

/// A login's new session is kept by the cache of the instance that wrote it, and a logout on
/// another instance racing that login still ends it there. Each round creates a session on A,
/// then sends A's `/login` and B's `/logout` (with the cookie from before the login) with the
/// logout starting from 400 µs before the login to 400 µs after it, in 9 steps over the rounds,
/// so that the logout reaches Redis first in some rounds and the login in others; in every
/// other round A's replies are held back 15 ms (`hold_replies`), so that B's invalidation
/// reaches A while A's write is in flight, and in the others mostly after A stored the session
/// it wrote. Every order must occur (told apart by the login's cookie and the read after it:
/// login first, logout first, logout between the login's read and its write). However they
/// land, the logged-out session is over: A's next read with the newest cookie does not see it,
/// and the live sessions counted afterwards show that a refused login left nothing behind.
/// First, logins alone show A keeping the session its login wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_is_cached_where_it_was_made_and_a_racing_logout_still_ends_it() {
    let server = RedisServer::start();
    login_racing_logout(Target::Server(server.url())).await;
}

/// The same on a Cluster. Here a login writes the new session first, on its slot's master,
/// then retires the old one on the old slot's master, whose replies the held rounds hold back:
/// when the two sessions sit on different masters (about two rounds in three), the logout
/// lands while the retire is in flight.
#[cfg(feature = "cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_is_cached_where_it_was_made_and_a_racing_logout_still_ends_it_on_a_cluster() {
    let cluster = redis_server::RedisCluster::start();
    login_racing_logout(Target::Cluster(cluster.urls())).await;
}

async fn login_racing_logout(target: Target) {
    let (base_a, a, base_b, _b) = two_instances(&target);
    let client = http_client();

    // Alone, a login is answered from A's cache on the next read.
    let mut cached_after_login = 0;
    for _ in 0..50 {
        let mut cookie = None;
        fetch(&client, &base_a, "/incr", &mut cookie).await;
        fetch(&client, &base_a, "/login", &mut cookie).await;
        let key = fetch(&client, &base_a, "/key", &mut cookie).await;
        let key = tower_typed_sessions::SessionKey::parse(&key).unwrap();
        if a.is_cached(&key) {
            cached_after_login += 1;
        }
    }
    assert_eq!(
        cached_after_login, 50,
        "A keeps the session its login wrote"
    );

    let spin = |micros: u64| {
        let until = Instant::now() + Duration::from_micros(micros);
        while Instant::now() < until {
            std::hint::spin_loop();
        }
    };
    // The round's session counts 1; a login after the logout starts a new one at 0.
    let (mut login_first, mut logout_first, mut refused) = (0, 0, 0);
    for round in 0..450u64 {
        let mut cookie = None;
        fetch(&client, &base_a, "/incr", &mut cookie).await;
        // -400 µs (the logout first) to +400 µs (the login first).
        let offset = (round % 9) as i64 * 100 - 400;
        let (login_delay, logout_delay) = (offset.max(0) as u64, (-offset).max(0) as u64);
        // Every other round, A's login reaches Redis at once but A learns that it is done only
        // 15 ms later (the replies of the connection serving the old session are held back): a
        // logout that follows it lands while A's write is still in flight.
        #[cfg(feature = "testing")]
        if round % 2 == 1 {
            let key = fetch(&client, &base_a, "/key", &mut cookie).await;
            let key = tower_typed_sessions::SessionKey::parse(&key).unwrap();
            a.hold_replies(&key, Duration::from_millis(15));
        }
        let login = {
            let (client, base, mut cookie) = (client.clone(), base_a.clone(), cookie.clone());
            tokio::spawn(async move {
                spin(login_delay);
                fetch(&client, &base, "/login", &mut cookie).await;
                cookie
            })
        };
        let logout = {
            let (client, base, mut cookie) = (client.clone(), base_b.clone(), cookie.clone());
            tokio::spawn(async move {
                spin(logout_delay);
                fetch(&client, &base, "/logout", &mut cookie).await;
            })
        };
        let (login, logout) = tokio::join!(login, logout);
        logout.unwrap();
        let mut newest = login.unwrap();
        let new_cookie = newest != cookie;
        match (
            new_cookie,
            fetch(&client, &base_a, "/read", &mut newest).await.as_str(),
        ) {
            // The login moved the session, then the logout ended it where it moved.
            (true, "0 new=true") => login_first += 1,
            // The logout ended it, then the login started a new session.
            (true, "0 new=false") => logout_first += 1,
            // The logout landed between the login's load and its write: refused, no cookie.
            (false, "0 new=true") => refused += 1,
            (new_cookie, body) => {
                panic!("round {round}: read {body:?} after the logout (new cookie: {new_cookie})")
            }
        }
    }
    // Live now: the 50 sessions of the first part and those the logins after a logout started.
    // A refused login left nothing (a session under a key no cookie carries would count here).
    let live = a.count().await.unwrap();
    println!(
        "{target:?}: 450 logins on A racing a logout on B: login first {login_first}, logout \
         first {logout_first}, login refused {refused}; the logged-out session was never read \
         again; live sessions {live} (expected {})",
        50 + logout_first
    );
    assert_eq!(live, 50 + logout_first, "no session left behind");
    assert!(
        login_first > 0 && logout_first > 0 && refused > 0,
        "every order was covered"
    );
}

/// The environment variable that makes this test binary an app process (`app_process`).
const APP_PROCESS: &str = "TOWER_TYPED_SESSIONS_APP_PROCESS";

/// Not a test of its own: the app process that the multi-process tests start (this test binary
/// again, `--ignored --exact app_process`), on the store `TOWER_TYPED_SESSIONS_APP_PROCESS`
/// names. It serves the lifecycle routes, and `/cached/{key}` (whether its cache holds that
/// session), on a free port it prints, until it is killed.
#[test]
#[ignore = "an app process for the multi-process tests, which start it themselves"]
fn app_process() {
    let target = Target::from_env(&std::env::var(APP_PROCESS).expect("started by a test"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = target.connect(LocalCache::new()).await;
        let probe = store.clone();
        let router = app(store, Duration::from_secs(3600)).route(
            "/cached/{key}",
            get(
                move |axum::extract::Path(key): axum::extract::Path<String>| async move {
                    let key = tower_typed_sessions::SessionKey::parse(&key).unwrap();
                    probe.is_cached(&key).to_string()
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("listening on http://{}", listener.local_addr().unwrap());
        axum::serve(listener, router).await.unwrap();
    });
}

/// An app process, killed on drop.
struct AppProcess {
    child: std::process::Child,
    base: String,
}

impl AppProcess {
    fn start(target: &Target) -> Self {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "app_process", "--nocapture"])
            .env(APP_PROCESS, target.to_env())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("the app process prints its address")
                .unwrap();
            if let Some(base) = line.strip_prefix("listening on ") {
                break base.to_owned();
            }
        };
        // The rest of its output is not read: keep the pipe drained.
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, base }
    }
}

impl Drop for AppProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three app processes on one Redis (own runtimes, connections and caches, as deployed): 1,000
/// logouts on A, each followed at once by a request with the old cookie on B and on C, which
/// both had the session cached: none is served as logged in. Then 500 more logouts, after each
/// of which the test asks B and C over HTTP until their entry is gone: the time from A's reply
/// to that answer bounds the invalidation lag across processes from above (it includes the
/// asking request's own round trip).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logouts_across_three_app_processes() {
    let server = RedisServer::start();
    logouts_across_processes(Target::Server(server.url())).await;
}

/// The same with the three processes on a three-master Cluster.
#[cfg(feature = "cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logouts_across_three_app_processes_on_a_cluster() {
    let cluster = redis_server::RedisCluster::start();
    logouts_across_processes(Target::Cluster(cluster.urls())).await;
}

async fn logouts_across_processes(target: Target) {
    let processes: Vec<AppProcess> = (0..3).map(|_| AppProcess::start(&target)).collect();
    let a = processes[0].base.as_str();
    let others = [processes[1].base.as_str(), processes[2].base.as_str()];
    let client = http_client();

    // A logged-in session on A, cached by B and C; A's logout; its key.
    async fn logged_in_everywhere(
        client: &Http,
        a: &str,
        others: &[&str],
    ) -> (Option<String>, String) {
        let mut cookie = None;
        fetch(client, a, "/login", &mut cookie).await;
        let key = fetch(client, a, "/key", &mut cookie).await;
        for other in others {
            let mut cached = false;
            for _ in 0..5 {
                assert!(is_logged_in(
                    &fetch(client, other, "/read", &mut cookie).await
                ));
                cached = fetch(client, other, &format!("/cached/{key}"), &mut None).await == "true";
                if cached {
                    break;
                }
            }
            assert!(cached, "{other} caches the session");
        }
        let mut copy = cookie.clone();
        fetch(client, a, "/logout", &mut copy).await;
        assert_eq!(copy, None, "A's logout clears the cookie");
        (cookie, key)
    }

    let mut served_logged_in = 0;
    for _ in 0..1000 {
        let (cookie, _) = logged_in_everywhere(&client, a, &others).await;
        for other in others {
            if is_logged_in(&fetch(&client, other, "/read", &mut cookie.clone()).await) {
                served_logged_in += 1;
            }
        }
    }
    println!(
        "{target:?}, 3 processes: 1000 logouts on A, each followed at once by a request on B \
         and on C: {served_logged_in} of 2000 served as logged in"
    );
    assert_eq!(served_logged_in, 0);

    let mut lags = Vec::with_capacity(1000);
    let mut gone_at_first_ask = 0;
    for _ in 0..500 {
        let (_, key) = logged_in_everywhere(&client, a, &others).await;
        let logged_out = Instant::now();
        for other in others {
            let mut first = true;
            while fetch(&client, other, &format!("/cached/{key}"), &mut None).await == "true" {
                first = false;
                assert!(
                    logged_out.elapsed() < Duration::from_secs(2),
                    "no invalidation within 2 s"
                );
            }
            gone_at_first_ask += usize::from(first);
            lags.push(logged_out.elapsed());
        }
    }
    lags.sort();
    let at = |q: f64| lags[((lags.len() - 1) as f64 * q) as usize];
    println!(
        "{target:?}, 3 processes: from A's logout reply to B or C answering that its entry is \
         gone, 1000 answers: p50 {:?}, p99 {:?}, max {:?}; {gone_at_first_ask} of 1000 already \
         gone at the first ask",
        at(0.5),
        at(0.99),
        lags[lags.len() - 1]
    );
}

/// The port of the master serving `redis_key`'s slot, as the node on `ask` sees the cluster.
#[cfg(feature = "cluster")]
fn master_of(ask: u16, redis_key: &str) -> Option<u16> {
    let slot: i64 = redis_server::query(ask, &["CLUSTER", "KEYSLOT", redis_key]).ok()?;
    let nodes: String = redis_server::query(ask, &["CLUSTER", "NODES"]).ok()?;
    nodes.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let flags = fields.get(2)?;
        if !flags.contains("master") || flags.contains("fail") {
            return None;
        }
        let serves = fields.get(8..)?.iter().any(|range| {
            let mut ends = range.split('-').map(str::parse::<i64>);
            match (ends.next(), ends.next()) {
                (Some(Ok(first)), Some(Ok(last))) => (first..=last).contains(&slot),
                (Some(Ok(only)), None) => only == slot,
                _ => false,
            }
        });
        let port = fields.get(1)?.split(['@', ':']).nth(1)?.parse().ok()?;
        serves.then_some(port)
    })
}

/// The master holding a cached session is killed: the cache drops it at once; no request is
/// answered before the cluster has failed the slot over (a cached answer would be); once the
/// replica is promoted, service comes back within a second without a restart, the cache is
/// used again, and another instance's logout still reaches it through the new master.
#[cfg(feature = "cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_failover_stops_the_cache_at_once_and_service_recovers() {
    let mut cluster = redis_server::RedisCluster::start_with_replicas();
    let target = Target::Cluster(cluster.urls());
    let hour = Duration::from_secs(3600);
    let b = target.connect(LocalCache::new()).await;
    let a = target.connect(LocalCache::new()).await;
    let (app_a, app_b) = (app(a.clone(), hour), app(b.clone(), hour));
    let mut client = Client::new(app_b.clone());
    client.get("/login").await;
    let key = tower_typed_sessions::SessionKey::parse(&client.get("/key").await.body).unwrap();
    for _ in 0..5 {
        assert!(is_logged_in(&client.get("/read").await.body));
    }
    assert!(b.is_cached(&key));
    let redis_key = format!("session:{{{}}}", key.as_str());
    let ask = cluster.nodes[0].port;
    let old_master = master_of(ask, &redis_key).unwrap();
    let survivor = cluster
        .nodes
        .iter()
        .map(|node| node.port)
        .find(|port| *port != old_master)
        .unwrap();

    // Watches the cluster for the promotion, from a node that stays.
    let promoted = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
    let watcher = {
        let (promoted, redis_key) = (std::sync::Arc::clone(&promoted), redis_key.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(30) {
                if master_of(survivor, &redis_key).is_some_and(|port| port != old_master) {
                    *promoted.lock().unwrap() = Some(Instant::now());
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    // Replication is asynchronous: wait until the replicas have the session, so that the test
    // is about the cache, not about writes a failover may lose.
    let offset = |port: u16, field: &str| -> i64 {
        let info: String = redis_server::query(port, &["INFO", "replication"]).unwrap();
        info.lines()
            .find_map(|line| line.strip_prefix(&format!("{field}:")))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(-1)
    };
    let written = offset(old_master, "master_repl_offset");
    let synced = Instant::now();
    while !cluster.nodes.iter().any(|node| {
        node.port != old_master && {
            let info: String = redis_server::query(node.port, &["INFO", "replication"]).unwrap();
            info.contains(&format!("master_port:{old_master}"))
                && offset(node.port, "slave_repl_offset") >= written
        }
    }) {
        assert!(
            synced.elapsed() < Duration::from_secs(5),
            "the replica did not sync"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let index = cluster
        .nodes
        .iter()
        .position(|node| node.port == old_master)
        .unwrap();
    cluster.nodes[index].stop();
    let killed = Instant::now();
    while b.is_cached(&key) {
        assert!(
            killed.elapsed() < Duration::from_millis(500),
            "the cache outlived the master"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let dropped = killed.elapsed();

    // Reads of the session until one is answered after the promotion.
    let mut replies = Vec::new();
    let first_ok = loop {
        let started = Instant::now();
        let reply = client.get("/read").await;
        let ok = reply.status == StatusCode::OK;
        assert!(
            ok || reply.set_cookies().is_empty(),
            "no Set-Cookie on a failed request"
        );
        replies.push((started, ok));
        if ok {
            break Instant::now();
        }
        assert!(killed.elapsed() < Duration::from_secs(30), "no recovery");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    watcher.join().unwrap();
    let promoted = promoted.lock().unwrap().expect("the replica was promoted");
    // The cluster cannot fail the slot over before its node timeout (1 s): any answer before
    // that would have come from the cache.
    let early = replies
        .iter()
        .filter(|(started, ok)| *ok && started.duration_since(killed) < Duration::from_millis(900))
        .count();
    let back = first_ok.saturating_duration_since(promoted);
    println!(
        "master killed: cache dropped after {dropped:?}; {} reads failed closed; promoted after \
         {:?}; served again {back:?} after the promotion",
        replies.len() - 1,
        promoted.duration_since(killed)
    );
    assert_eq!(early, 0, "answered before the failover");
    assert!(
        replies.len() > 1,
        "reads failed while the slot had no master"
    );
    assert!(back < Duration::from_secs(1), "back after {back:?}");
    let after = client.get("/read").await;
    assert_eq!(
        (after.status, after.body.as_str()),
        (StatusCode::OK, "0 new=false"),
        "the session survived"
    );

    // Tracking is back on the new map: reads are hits, and a logout on A reaches B.
    let (hits, _) = b.cache_hits_and_misses();
    let settled = Instant::now();
    while b.cache_hits_and_misses().0 < hits + 3 {
        assert!(
            settled.elapsed() < Duration::from_secs(2),
            "the cache is used again"
        );
        client.get("/read").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cookie = client.cookie.clone();
    let mut on_a = Client::new(app_a);
    on_a.cookie = cookie;
    on_a.get("/logout").await;
    assert!(!is_logged_in(&client.get("/read").await.body));
}

/// The node id and port of every master, as the node on `ask` sees the cluster.
#[cfg(feature = "cluster")]
fn masters(ask: u16) -> Vec<(String, u16)> {
    let nodes: String = redis_server::query(ask, &["CLUSTER", "NODES"]).unwrap();
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let port = fields.get(1)?.split(['@', ':']).nth(1)?.parse().ok()?;
            fields
                .get(2)?
                .contains("master")
                .then(|| (fields[0].to_owned(), port))
        })
        .collect()
}

/// A slot holding a cached session is moved to another master (a resharding step, as
/// `redis-cli --cluster reshard` does it: IMPORTING, MIGRATING, MIGRATE, SETSLOT NODE): the cache
/// is emptied when the map changes, sessions are served throughout, and once tracking is on
/// again a logout on another instance reaches the cache through the slot's new master.
#[cfg(feature = "cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resharding_empties_the_cache_and_tracking_follows_the_slot() {
    use redis_server::query;
    let cluster = redis_server::RedisCluster::start();
    let target = Target::Cluster(cluster.urls());
    let hour = Duration::from_secs(3600);
    let (a, b) = (
        target.connect(LocalCache::new()).await,
        target.connect(LocalCache::new()).await,
    );
    let (app_a, app_b) = (app(a, hour), app(b.clone(), hour));
    let mut client = Client::new(app_b.clone());
    client.get("/login").await;
    let key = tower_typed_sessions::SessionKey::parse(&client.get("/key").await.body).unwrap();
    for _ in 0..3 {
        assert!(is_logged_in(&client.get("/read").await.body));
    }
    assert!(b.is_cached(&key));
    let redis_key = format!("session:{{{}}}", key.as_str());
    let ask = cluster.nodes[0].port;
    let slot: i64 = query(ask, &["CLUSTER", "KEYSLOT", &redis_key]).unwrap();
    let slot = slot.to_string();
    let from = master_of(ask, &redis_key).unwrap();
    let all = masters(ask);
    let id_of = |port: u16| all.iter().find(|(_, p)| *p == port).unwrap().0.clone();
    let to = all
        .iter()
        .map(|(_, port)| *port)
        .find(|port| *port != from)
        .unwrap();
    let (from_id, to_id) = (id_of(from), id_of(to));
    // A second session, on another master: only the map's change (not the move of the first
    // session's keys, whose deletion on the old master is itself an invalidation) drops it.
    let mut bystander = Client::new(app_b.clone());
    let other = loop {
        bystander.get("/login").await;
        let other =
            tower_typed_sessions::SessionKey::parse(&bystander.get("/key").await.body).unwrap();
        if master_of(ask, &format!("session:{{{}}}", other.as_str())) == Some(to) {
            break other;
        }
        bystander = Client::new(app_b.clone());
    };
    for _ in 0..3 {
        assert!(is_logged_in(&bystander.get("/read").await.body));
    }
    assert!(b.is_cached(&other));

    let _: () = query(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]).unwrap();
    let _: () = query(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]).unwrap();
    let keys: Vec<String> = query(from, &["CLUSTER", "GETKEYSINSLOT", &slot, "100"]).unwrap();
    assert!(keys.len() >= 2, "the session's keys: {keys:?}");
    let to_port = to.to_string();
    let mut migrate = vec!["MIGRATE", "127.0.0.1", &to_port, "", "0", "5000", "KEYS"];
    migrate.extend(keys.iter().map(String::as_str));
    let _: String = query(from, &migrate).unwrap();
    for node in &cluster.nodes {
        let _: () = query(node.port, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]).unwrap();
    }
    let moved = Instant::now();
    while b.is_cached(&key) || b.is_cached(&other) {
        assert!(
            moved.elapsed() < Duration::from_secs(1),
            "the cache outlived the slot map"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let emptied = moved.elapsed();
    assert_eq!(master_of(ask, &redis_key), Some(to));

    // Served throughout, from the new master; then from memory again.
    let (hits, _) = b.cache_hits_and_misses();
    let mut reads = 0;
    while b.cache_hits_and_misses().0 < hits + 3 {
        assert_eq!(client.get("/read").await.body, "0 new=false");
        reads += 1;
        assert!(reads < 100, "the cache is used again");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("slot {slot} moved: cache emptied after {emptied:?}, used again within {reads} reads");
    let mut on_a = Client::new(app_a);
    on_a.cookie = client.cookie.clone();
    on_a.get("/logout").await;
    assert!(!is_logged_in(&client.get("/read").await.body));
}

/// Once warm, a read costs no Redis command (the heartbeat's PINGs aside) and a write one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_read_sends_nothing_and_a_write_one_command() {
    let server = RedisServer::start();
    let store = cached(&server, LocalCache::new()).await;
    let mut client = Client::new(app(store.clone(), Duration::from_secs(3600)));
    client.get("/incr").await;
    client.get("/read").await;
    let mut monitor = server.monitor();
    let commands = |monitor: &mut redis_server::Monitor| {
        monitor
            .commands_since_last_call()
            .into_iter()
            .filter(|line| !line.contains("\"PING\""))
            .collect::<Vec<_>>()
    };
    commands(&mut monitor);
    for _ in 0..20 {
        assert_eq!(client.get("/read").await.body, "1 new=false");
    }
    let seen = commands(&mut monitor);
    assert!(seen.is_empty(), "20 warm reads sent {seen:?}");
    for n in 2..12 {
        assert_eq!(client.get("/incr").await.body, n.to_string());
    }
    let seen = commands(&mut monitor);
    assert_eq!(seen.len(), 10, "10 writes, one command each: {seen:?}");
    assert!(seen.iter().all(|line| line.contains("\"SET\"")), "{seen:?}");
    // A login's new session is written with plain commands (NOLOOP covers them): the cache
    // keeps it, and the reads after it send nothing.
    client.get("/login").await;
    commands(&mut monitor);
    for _ in 0..20 {
        assert_eq!(client.get("/read").await.body, "11 new=false");
    }
    let seen = commands(&mut monitor);
    assert!(seen.is_empty(), "20 reads after a login sent {seen:?}");
}

/// The Redis expiry moves at most once per refresh interval, to the idle timeout plus the
/// interval: a session used within its idle timeout never expires, and one left alone sits in
/// Redis at most the interval longer than the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refresh_bound_holds_on_both_sides() {
    let server = RedisServer::start();
    let (idle, refresh) = (Duration::from_millis(1200), Duration::from_millis(600));
    let store = cached(&server, LocalCache::new().with_refresh_interval(refresh)).await;
    let app = app(store.clone(), idle);
    let mut client = Client::new(app.clone());
    client.get("/incr").await;
    let key = client.get("/key").await.body;
    let live = format!("session:{{{key}}}:live");

    // Used every 1.1 s (within the idle timeout, past the refresh interval): never expires,
    // and most reads are hits.
    let (hits_before, _) = store.cache_hits_and_misses();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(client.get("/read").await.body, "1 new=false");
        let ttl: i64 = server.command(&["PTTL", &live]);
        assert!(
            ttl > 0 && ttl <= (idle + refresh).as_millis() as i64,
            "the live key's TTL {ttl} ms is within idle + refresh"
        );
    }
    let (hits, _) = store.cache_hits_and_misses();
    println!("5 reads 1.1 s apart: {} hits", hits - hits_before);

    // Left alone: alive just before the idle timeout, gone from Redis by idle + refresh.
    let mut second = Client::new(app.clone());
    second.get("/incr").await;
    let key = second.get("/key").await.body;
    let live = format!("session:{{{key}}}:live");
    let ttl: i64 = server.command(&["PTTL", &live]);
    assert!(
        ttl <= (idle + refresh).as_millis() as i64 && ttl > 0,
        "{ttl}"
    );
    tokio::time::sleep(idle + refresh + Duration::from_millis(100)).await;
    let exists: i64 = server.command(&["EXISTS", &live]);
    assert_eq!(exists, 0, "idle + refresh later the live key is gone");
    assert_eq!(second.get("/read").await.body, "0 new=true");
}

/// The cache keeps to its capacity, evicting the least recently used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_keeps_to_its_capacity() {
    let server = RedisServer::start();
    let store = cached(&server, LocalCache::new().with_capacity(10)).await;
    let app = app(store.clone(), Duration::from_secs(3600));
    let mut hot = Client::new(app.clone());
    hot.get("/incr").await;
    for _ in 0..50 {
        let mut other = Client::new(app.clone());
        other.get("/incr").await;
        other.get("/read").await;
        hot.get("/read").await;
        assert!(store.cached_sessions() <= 10, "{}", store.cached_sessions());
    }
    // The session read all along is still there.
    let (hits, _) = store.cache_hits_and_misses();
    hot.get("/read").await;
    assert_eq!(store.cache_hits_and_misses().0, hits + 1);
}

/// Redis stopped: the cache stops serving at once (the request fails closed, without
/// Set-Cookie), and service comes back within a second of Redis, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_stops_the_cache_at_once_and_service_recovers() {
    let mut server = RedisServer::start();
    let store = cached(&server, LocalCache::new()).await;
    let events = Events::default();
    let app = support::routes().layer(events.attach(SessionLayer::new(store.clone())));
    let mut client = Client::new(app);
    client.get("/incr").await;
    client.get("/read").await;
    assert!(store.cached_sessions() > 0);
    let cookie = client.cookie.clone();
    events.take();

    server.stop();
    // The connection's end reaches the store as a push: the cache is dropped before any
    // request comes.
    let stopped = Instant::now();
    while store.cached_sessions() > 0 {
        assert!(
            stopped.elapsed() < Duration::from_millis(500),
            "the cache outlived the connection"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (hits, _) = store.cache_hits_and_misses();
    support::requests_during_an_outage(&mut client, &events).await;
    assert_eq!(
        store.cache_hits_and_misses().0,
        hits,
        "no hit while Redis is down"
    );
    assert_eq!(client.cookie, cookie);

    server.restart();
    let accepting = Instant::now();
    let recovered = loop {
        if client.get("/incr").await.status == StatusCode::OK {
            break accepting.elapsed();
        }
        assert!(accepting.elapsed() < Duration::from_secs(5), "no recovery");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("recovered {recovered:?} after redis accepted connections again");
    assert!(recovered < Duration::from_secs(1));
    // Tracking is back: reads are hits again (the first one after the new session may go to
    // Redis to refresh its expiry).
    let (hits, _) = store.cache_hits_and_misses();
    for _ in 0..5 {
        assert_eq!(client.get("/read").await.status, StatusCode::OK);
    }
    let (after, _) = store.cache_hits_and_misses();
    assert!(
        after >= hits + 3,
        "{} hits in 5 reads after recovery",
        after - hits
    );
}

/// The store's command timeout also bounds the cached store's own connections: with 3 s, a
/// write that Redis holds for 1.5 s (`CLIENT PAUSE … WRITE`) is waited for and succeeds; with
/// the default 1 s, the same pause fails the request with no cookie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_timeout_is_the_stores_on_the_tracked_connections() {
    let server = RedisServer::start();
    let pause = || server.command::<()>(&["CLIENT", "PAUSE", "1500", "WRITE"]);
    command_timeout_rounds(Target::Server(server.url()), &pause).await;
}

/// The same on a Cluster, every master paused: a session's commands go over the tracked
/// connections, which the cluster connection's per-node timeout (1 s) does not cut.
#[cfg(feature = "cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_timeout_is_the_stores_on_the_tracked_connections_on_a_cluster() {
    let cluster = redis_server::RedisCluster::start();
    let pause = || {
        for node in &cluster.nodes {
            node.command::<()>(&["CLIENT", "PAUSE", "1500", "WRITE"]);
        }
    };
    command_timeout_rounds(Target::Cluster(cluster.urls()), &pause).await;
}

async fn command_timeout_rounds(target: Target, pause: &dyn Fn()) {
    for (timeout, answered) in [
        (Duration::from_secs(3), true),
        (Duration::from_secs(1), false),
    ] {
        let store = target
            .connect(LocalCache::new())
            .await
            .with_command_timeout(timeout);
        let mut client = Client::new(app(store.clone(), Duration::from_secs(3600)));
        assert_eq!(client.get("/incr").await.body, "1");
        let key = tower_typed_sessions::SessionKey::parse(&client.get("/key").await.body).unwrap();
        // Cached: tracking is on, and the session's commands go over the tracked connections.
        let cached_by = Instant::now();
        while !store.is_cached(&key) {
            assert!(
                cached_by.elapsed() < Duration::from_secs(2),
                "{timeout:?}: never cached"
            );
            client.get("/read").await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        pause();
        let started = Instant::now();
        let reply = client.get("/incr").await;
        let took = started.elapsed();
        if answered {
            assert_eq!(reply.status, StatusCode::OK, "{timeout:?}, after {took:?}");
            assert_eq!(reply.body, "2");
            assert!(
                took >= Duration::from_millis(1300),
                "answered after {took:?}"
            );
        } else {
            assert_eq!(
                reply.status,
                StatusCode::INTERNAL_SERVER_ERROR,
                "after {took:?}"
            );
            assert!(reply.set_cookies().is_empty());
            assert!(
                took < Duration::from_millis(1450),
                "answered after {took:?}"
            );
        }
        // Let the pause end before the next round.
        tokio::time::sleep(Duration::from_millis(1600).saturating_sub(started.elapsed())).await;
    }
}

/// A new session made through `client` (`/incr`), read until `store` caches it: its key.
async fn cached_session(
    client: &mut Client,
    store: &RedisStore<Counter>,
) -> tower_typed_sessions::SessionKey {
    client.get("/incr").await;
    let key = tower_typed_sessions::SessionKey::parse(&client.get("/key").await.body).unwrap();
    read_until_cached(client, store, &key, "a new session").await;
    key
}

/// Reads the session `key` through `client` (up to five times) until `store` caches it.
async fn read_until_cached(
    client: &mut Client,
    store: &RedisStore<Counter>,
    key: &tower_typed_sessions::SessionKey,
    what: &str,
) {
    for _ in 0..5 {
        if store.is_cached(key) {
            break;
        }
        client.get("/read").await;
    }
    assert!(store.is_cached(key), "{what} is cached after five reads");
}

/// A command that fails on a tracked connection which has already been replaced ends nothing
/// but that old connection: A's write, whose reply is held back, times out after the quiet
/// connection of its pair was killed and B's requests opened a new pair; B's session stays
/// cached and is read from the cache afterwards. (Before, the late timeout dropped the new
/// pair and its cache too.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_on_a_replaced_connection_leaves_the_new_one() {
    let server = RedisServer::start();
    // A heartbeat far away: only the operations' own failures end a pair here.
    let store = cached(
        &server,
        LocalCache::new().with_heartbeat(Duration::from_secs(30)),
    )
    .await
    .with_command_timeout(Duration::from_millis(900));
    let app = || app(store.clone(), Duration::from_secs(3600));
    let mut a = Client::new(app());
    let key_a = cached_session(&mut a, &store).await;
    // C's session, cached and left alone: its entry goes only when the pair's end empties the
    // cache (A's write removes A's own entry as it starts).
    let key_c = cached_session(&mut Client::new(app()), &store).await;
    let clients: String = server.command(&["CLIENT", "LIST"]);
    let quiet = clients
        .lines()
        .find_map(|line| {
            line.split(' ')
                .find_map(|pair| pair.strip_prefix("redir="))
                .filter(|redirect| *redirect != "-1")
                .map(str::to_owned)
        })
        .expect("a tracking client");

    store.hold_replies(&key_a, Duration::from_secs(4));
    let started = Instant::now();
    let late = tokio::spawn(async move { a.get("/incr").await.status });
    // A's write has reached Redis (its reply is what is held back) before its pair is broken.
    let record = format!("session:{{{}}}", key_a.as_str());
    while !server
        .command::<Option<String>>(&["GET", &record])
        .is_some_and(|value| value.contains("\"count\":2"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "A's write never reached Redis"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let killed: i64 = server.command(&["CLIENT", "KILL", "ID", &quiet]);
    assert_eq!(killed, 1);
    let killed_at = Instant::now();
    while store.is_cached(&key_c) {
        assert!(
            killed_at.elapsed() < Duration::from_millis(300),
            "the cache outlived its pair"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    let mut b = Client::new(app());
    let b_started = Instant::now();
    let first = b.get("/incr").await;
    assert_eq!(
        first.status,
        StatusCode::OK,
        "B's first request, {:?} after A's start, took {:?}: {}",
        b_started - started,
        b_started.elapsed(),
        first.body
    );
    let key_b = tower_typed_sessions::SessionKey::parse(&b.get("/key").await.body).unwrap();
    read_until_cached(&mut b, &store, &key_b, "B's session, through the new pair,").await;
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "B was set up only after {:?}, A's timeout may already have come",
        started.elapsed()
    );

    assert_eq!(
        late.await.unwrap(),
        StatusCode::INTERNAL_SERVER_ERROR,
        "A's write timed out"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(
        store.is_cached(&key_b),
        "A's late timeout ended the new pair"
    );
    let (hits, _) = store.cache_hits_and_misses();
    assert_eq!(b.get("/read").await.body, "1 new=false");
    assert_eq!(
        store.cache_hits_and_misses().0,
        hits + 1,
        "B's read came from the cache"
    );
}

/// Either of the store's two connections killed on the server (`CLIENT KILL`): the commands
/// connection (whose tracking stops with it) or the quiet one the invalidations go to. The cache
/// drops its sessions at once, well before the next heartbeat could notice, and is used again
/// once a new pair has tracking on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn either_connection_killed_stops_the_cache_at_once() {
    let server = RedisServer::start();
    // A heartbeat far away: only the connections' own ends can stop the cache in time.
    let store = cached(
        &server,
        LocalCache::new().with_heartbeat(Duration::from_secs(5)),
    )
    .await;
    let mut client = Client::new(app(store.clone(), Duration::from_secs(3600)));
    for victim in ["commands", "invalidations"] {
        let key = cached_session(&mut client, &store).await;
        // The commands connection is the one with tracking on (`redir=` names the other).
        let clients: String = server.command(&["CLIENT", "LIST"]);
        let (commands, invalidations) = clients
            .lines()
            .find_map(|line| {
                let field = |name: &str| {
                    line.split(' ')
                        .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
                        .map(str::to_owned)
                };
                let redirect = field("redir")?;
                (redirect != "-1").then(|| (field("id").unwrap(), redirect))
            })
            .expect("a tracking client");
        let id = if victim == "commands" {
            commands
        } else {
            invalidations
        };
        let killed: i64 = server.command(&["CLIENT", "KILL", "ID", &id]);
        assert_eq!(killed, 1);
        let at = Instant::now();
        while store.is_cached(&key) {
            assert!(
                at.elapsed() < Duration::from_millis(500),
                "the cache outlived the {victim} connection"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        println!(
            "{victim} connection killed: cache dropped after {:?}",
            at.elapsed()
        );
        // Served again (from Redis, then from a new pair's cache).
        assert_eq!(client.get("/read").await.status, StatusCode::OK);
    }
}

/// The owner index and the HTTP-level hardening suite behave as on the uncached store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_index_and_hardening_through_the_cache() {
    let server = RedisServer::start();
    let store =
        RedisStore::<owner_suite::Account>::connect_cached(&server.url(), LocalCache::new())
            .await
            .unwrap();
    owner_suite::owner_index_flow(store).await;
    let store = cached(&server, LocalCache::new()).await;
    let resurrections = hardening_suite::no_resurrection(store.clone(), 300).await;
    assert_eq!(resurrections, 0);
    let (value, successes, _) = hardening_suite::optimistic_increments(store.clone()).await;
    assert_eq!((value as usize, successes), (64, 64));
    hardening_suite::regenerate_grace_window(store.clone()).await;
}

/// The owner index and the hardening suite through the cache on a Cluster.
#[cfg(feature = "cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_index_and_hardening_through_the_cache_on_a_cluster() {
    let cluster = redis_server::RedisCluster::start();
    let urls = cluster.urls();
    let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
    let store =
        RedisStore::<owner_suite::Account>::connect_cluster_cached(&nodes, LocalCache::new())
            .await
            .unwrap();
    owner_suite::owner_index_flow(store).await;
    let store = Target::Cluster(urls.clone())
        .connect(LocalCache::new())
        .await;
    let resurrections = hardening_suite::no_resurrection(store.clone(), 300).await;
    assert_eq!(resurrections, 0);
    let (value, successes, _) = hardening_suite::optimistic_increments(store.clone()).await;
    assert_eq!((value as usize, successes), (64, 64));
    hardening_suite::regenerate_grace_window(store.clone()).await;
}

/// The `redis_cached` example's own binary against this test's Redis: the README's walk-through
/// (log in on one instance, read on the other from its cache, log out on the first, the other
/// sees it) works as written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_cached_example_walks_through() {
    use std::io::{BufRead, BufReader};

    let server = RedisServer::start();
    let exe = std::env::current_exe().unwrap();
    let binary = exe
        .parent()
        .and_then(std::path::Path::parent)
        .unwrap()
        .join("examples")
        .join(format!("redis_cached{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "run `cargo build --examples --all-features` (a plain `cargo test --all-features` builds it)"
    );
    let mut child = std::process::Command::new(binary)
        .env("REDIS_URL", server.url())
        .env("PORT", "0")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let child = Kill(child);
    let mut bases = Vec::new();
    while bases.len() < 2 {
        let line = lines
            .next()
            .expect("the example prints its addresses")
            .unwrap();
        let base = line
            .strip_prefix("listening on ")
            .and_then(|rest| rest.split(' ').next())
            .expect("a listening line")
            .to_owned();
        bases.push(base);
    }
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let mut cookie: Option<String> = None;
    let (first, second) = (bases[0].clone(), bases[1].clone());
    assert_eq!(
        fetch(&client, &first, "/login", &mut cookie).await,
        "logged in as alice\n"
    );
    for _ in 0..2 {
        assert_eq!(fetch(&client, &second, "/", &mut cookie).await, "alice\n");
    }
    // The logout's removal cookie is not kept: the old cookie goes to the second instance,
    // which had the session cached.
    let mut copy = cookie.clone();
    assert_eq!(
        fetch(&client, &first, "/logout", &mut copy).await,
        "logged out\n"
    );
    assert_eq!(fetch(&client, &second, "/", &mut cookie).await, "nobody\n");
    let stats = fetch(&client, &second, "/stats", &mut None).await;
    let hits: u64 = stats.split(' ').next().unwrap().parse().unwrap();
    assert!(hits >= 1, "{stats}");
    drop(child);
}
