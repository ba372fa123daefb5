//! `rediss://` (feature `redis-tls`): the store, cached and not, on a `redis-server`, a Cluster
//! and (feature `sentinel`) a master behind a Sentinel, all started by the test with TLS ports
//! and a certificate signed by a CA the test generates; the wrong CA, the system's roots and
//! plain text are refused with a clear error, without a session cookie.
#![cfg(all(feature = "redis-tls", feature = "cluster"))]

#[path = "support/redis_server.rs"]
mod redis_server;
mod support;

use std::{net::TcpListener, path::PathBuf};

use axum::http::StatusCode;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use redis_server::{query, RedisServer};
use support::{Client, Counter};
use tower_typed_sessions::{
    store::redis::{LocalCache, RedisTls},
    RedisStore, SessionLayer, StoreError,
};

/// A CA, and a server certificate it signed for 127.0.0.1 and localhost, as PEM.
struct Pki {
    ca_pem: String,
    server_pem: String,
    server_key_pem: String,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    // A name of its own per run, as real CAs have (OpenSSL, in redis-cli, wants one).
    let name = format!(
        "tower-typed-sessions test CA {}",
        tower_typed_sessions::SessionId::generate()
            .unwrap()
            .fingerprint()
    );
    ca_params.distinguished_name.push(DnType::CommonName, name);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let mut server_params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    server_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server_key = KeyPair::generate().unwrap();
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        server_pem: server_cert.pem(),
        server_key_pem: server_key.serialize_pem(),
    }
}

/// A redis-server with a TLS port (its plain port only serves the harness's readiness check).
struct TlsRedis {
    _server: RedisServer,
    tls_port: u16,
    ca_pem: String,
    files: TlsFiles,
    _dir: TempDir,
}

struct TempDir(PathBuf);

/// The server's certificate, key and CA, as files redis-server reads.
struct TlsFiles {
    cert: String,
    key: String,
    ca: String,
}

impl TlsFiles {
    /// The certificate, key and CA of `pki`, written into a temporary directory of their own.
    fn write(pki: &Pki) -> (Self, TempDir) {
        let dir = std::env::temp_dir().join(format!(
            "tts-redis-tls-{}-{}",
            std::process::id(),
            tower_typed_sessions::SessionId::generate()
                .unwrap()
                .fingerprint()
                .replace(':', "")
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            std::fs::write(&path, pem).unwrap();
            path.to_str().unwrap().to_owned()
        };
        let files = Self {
            cert: write("server.pem", &pki.server_pem),
            key: write("server.key", &pki.server_key_pem),
            ca: write("ca.pem", &pki.ca_pem),
        };
        (files, TempDir(dir))
    }

    /// redis-server's arguments for a TLS port (its plain port only serves the harness's
    /// readiness check) and TLS on the cluster bus and between nodes.
    fn args(&self, tls_port: u16) -> Vec<String> {
        [
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &self.cert,
            "--tls-key-file",
            &self.key,
            "--tls-ca-cert-file",
            &self.ca,
            "--tls-auth-clients",
            "no",
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

/// A free port whose cluster bus port (port + 10000) is free too.
fn free_port() -> u16 {
    loop {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        if port < 55535 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl TlsRedis {
    fn start() -> Self {
        let pki = pki();
        let (files, dir) = TlsFiles::write(&pki);
        let tls_port = free_port();
        let args = files.args(tls_port);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = RedisServer::start_with(&args);
        Self {
            _server: server,
            tls_port,
            ca_pem: pki.ca_pem,
            files,
            _dir: dir,
        }
    }

    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}/", self.tls_port)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_work_over_tls_with_the_servers_ca() {
    let redis = TlsRedis::start();
    let tls = RedisTls::new().with_root_certificate(redis.ca_pem.clone());
    let store = RedisStore::<Counter>::connect_with_tls(&redis.url("rediss"), tls)
        .await
        .expect("connect over TLS trusting the test's CA");
    let mut client = Client::new(support::routes().layer(SessionLayer::new(store)));
    assert_eq!(client.get("/incr").await.body, "1");
    assert_eq!(client.get("/incr").await.body, "2");
    client.get("/login").await;
    assert_eq!(client.get("/read").await.body, "2 new=false");
    client.get("/logout").await;
    let reply = client.get("/read").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "0 new=true");
}

/// Two cached stores on one Redis deployment: B answers a session's reads from memory, and a
/// logout on A reaches B at once (the invalidations came over TLS too).
async fn cached_pair_works(a: RedisStore<Counter>, b: RedisStore<Counter>) {
    let app_a = support::routes().layer(SessionLayer::new(a));
    let app_b = support::routes().layer(SessionLayer::new(b.clone()));
    let mut on_b = Client::new(app_b);
    assert_eq!(on_b.get("/incr").await.body, "1");
    on_b.get("/login").await;
    let (hits, _) = b.cache_hits_and_misses();
    for _ in 0..5 {
        assert_eq!(on_b.get("/read").await.body, "1 new=false");
    }
    let (after, _) = b.cache_hits_and_misses();
    assert!(after >= hits + 3, "{} of 5 reads from memory", after - hits);
    let mut on_a = Client::new(app_a);
    on_a.cookie = on_b.cookie.clone();
    on_a.get("/logout").await;
    assert_eq!(on_b.get("/read").await.body, "0 new=true");
}

/// The cached store over TLS (`connect_cached_with_tls`): tracking and its pushes work over
/// the TLS connection; another CA is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cached_store_works_over_tls() {
    let redis = TlsRedis::start();
    let tls = RedisTls::new().with_root_certificate(redis.ca_pem.clone());
    let url = redis.url("rediss");
    let connect =
        || RedisStore::<Counter>::connect_cached_with_tls(&url, tls.clone(), LocalCache::new());
    let (a, b) = (connect().await.unwrap(), connect().await.unwrap());
    cached_pair_works(a, b).await;
    let other_ca = RedisTls::new().with_root_certificate(pki().ca_pem);
    let wrong_ca = refused(
        RedisStore::connect_cached_with_tls(&redis.url("rediss"), other_ca, LocalCache::new())
            .await,
    )
    .await;
    assert!(
        wrong_ca.to_lowercase().contains("certificate"),
        "{wrong_ca}"
    );
}

/// The connect error of each refused set-up, as text.
async fn refused(result: Result<RedisStore<Counter>, StoreError>) -> String {
    match result {
        Ok(_) => panic!("the connection should have been refused"),
        Err(err) => {
            let text = err.to_string();
            assert!(matches!(err, StoreError::Backend(_)), "{text}");
            text
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_the_system_roots_and_plain_text_are_refused() {
    let redis = TlsRedis::start();

    let other_ca = RedisTls::new().with_root_certificate(pki().ca_pem);
    let wrong_ca =
        refused(RedisStore::connect_with_tls(&redis.url("rediss"), other_ca).await).await;
    println!("another CA: {wrong_ca}");
    assert!(
        wrong_ca.to_lowercase().contains("certificate"),
        "the error names the certificate: {wrong_ca}"
    );

    // The test's CA is in no system trust store.
    let system = refused(RedisStore::connect(&redis.url("rediss")).await).await;
    println!("system roots: {system}");
    assert!(
        system.to_lowercase().contains("certificate"),
        "the error names the certificate: {system}"
    );

    // Plain text to the TLS port.
    let plain = refused(RedisStore::connect(&redis.url("redis")).await).await;
    println!("plain text: {plain}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_tls_serves_sessions_across_its_masters() {
    let certificates = pki();
    let (files, _dir) = TlsFiles::write(&certificates);
    // Three masters whose bus and client ports speak only TLS (the plain port answers the
    // harness's readiness check), joined by redis-cli over TLS.
    let tls_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let nodes: Vec<RedisServer> = tls_ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let mut args = files.args(*port);
            args.extend(
                [
                    "--tls-cluster",
                    "yes",
                    "--tls-replication",
                    "yes",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &format!("tls-nodes-{i}-{}.conf", std::process::id()),
                ]
                .map(str::to_owned),
            );
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            RedisServer::start_with(&args)
        })
        .collect();
    let created = std::process::Command::new("redis-cli")
        .args(["--tls", "--cacert", &files.ca, "--cluster", "create"])
        .args(tls_ports.iter().map(|port| format!("127.0.0.1:{port}")))
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run redis-cli --cluster create");
    assert!(
        created.status.success(),
        "cluster create over TLS: {}{}",
        String::from_utf8_lossy(&created.stdout),
        String::from_utf8_lossy(&created.stderr)
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !nodes.iter().all(|n| {
        query::<String>(n.port, &["CLUSTER", "INFO"]).is_ok_and(|r| r.contains("cluster_state:ok"))
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "the TLS cluster did not reach state ok"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let urls: Vec<String> = tls_ports
        .iter()
        .map(|port| format!("rediss://127.0.0.1:{port}/"))
        .collect();
    let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
    let tls = RedisTls::new().with_root_certificate(certificates.ca_pem.clone());
    let store = RedisStore::<Counter>::connect_cluster_with_tls(&nodes, tls)
        .await
        .expect("connect to the cluster over TLS");
    let app = support::routes().layer(SessionLayer::new(store));
    // Sessions hash to every master's slots; each is created, changed, moved and ended.
    for _ in 0..12 {
        let mut client = Client::new(app.clone());
        assert_eq!(client.get("/incr").await.body, "1");
        client.get("/login").await;
        assert_eq!(client.get("/incr").await.body, "2");
        client.get("/logout").await;
        assert_eq!(client.get("/read").await.body, "0 new=true");
    }

    // Cached: a tracking connection to each master, over TLS with the same CA.
    let cached = || {
        RedisStore::<Counter>::connect_cluster_cached_with_tls(
            &nodes,
            RedisTls::new().with_root_certificate(certificates.ca_pem.clone()),
            LocalCache::new(),
        )
    };
    for _ in 0..6 {
        cached_pair_works(cached().await.unwrap(), cached().await.unwrap()).await;
    }

    let wrong = RedisTls::new().with_root_certificate(pki().ca_pem);
    let refused = RedisStore::<Counter>::connect_cluster_with_tls(&nodes, wrong.clone()).await;
    assert!(
        refused.is_err(),
        "a cluster whose CA is not trusted is refused"
    );
    let refused =
        RedisStore::<Counter>::connect_cluster_cached_with_tls(&nodes, wrong, LocalCache::new())
            .await;
    assert!(refused.is_err(), "also with the cache");
}

/// A master that speaks only TLS behind a sentinel that speaks TLS (feature `sentinel`):
/// `SentinelMaster::with_tls` reaches both with the test's CA, plain and cached; through the
/// sentinel's plain port the master is still reached over TLS; another CA is refused.
#[cfg(feature = "sentinel")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_behind_a_sentinel_is_reached_over_tls() {
    use redis_server::RedisSentinel;
    use tower_typed_sessions::store::redis::SentinelMaster;

    const MASTER: &str = "sessions";
    let redis = TlsRedis::start();
    let sentinel_tls_port = free_port();
    let files = &redis.files;
    let sentinel = RedisSentinel::start_with(
        redis.tls_port,
        MASTER,
        &[
            format!("tls-port {sentinel_tls_port}"),
            format!("tls-cert-file {}", files.cert),
            format!("tls-key-file {}", files.key),
            format!("tls-ca-cert-file {}", files.ca),
            "tls-auth-clients no".to_owned(),
            // The sentinel reaches the master over TLS too.
            "tls-replication yes".to_owned(),
        ],
    );
    let url = format!("rediss://127.0.0.1:{sentinel_tls_port}/");
    let nodes = [url.as_str()];
    let tls = RedisTls::new().with_root_certificate(redis.ca_pem.clone());
    let master = SentinelMaster::new().with_tls(tls);

    let store = RedisStore::<Counter>::connect_sentinel_with(&nodes, MASTER, master.clone())
        .await
        .expect("reach the master through the sentinel, both over TLS");
    let mut client = Client::new(support::routes().layer(SessionLayer::new(store)));
    assert_eq!(client.get("/incr").await.body, "1");
    client.get("/login").await;
    assert_eq!(client.get("/read").await.body, "1 new=false");
    client.get("/logout").await;
    assert_eq!(client.get("/read").await.body, "0 new=true");

    let connect = || {
        RedisStore::<Counter>::connect_sentinel_cached_with(
            &nodes,
            MASTER,
            master.clone(),
            LocalCache::new(),
        )
    };
    let (a, b) = (connect().await.unwrap(), connect().await.unwrap());
    cached_pair_works(a, b).await;

    // The sentinel's plain port: the master is still reached over TLS.
    let plain_sentinel = sentinel.url();
    let store =
        RedisStore::<Counter>::connect_sentinel_with(&[&plain_sentinel], MASTER, master.clone())
            .await
            .expect("reach the TLS master through a plain sentinel");
    let mut client = Client::new(support::routes().layer(SessionLayer::new(store)));
    assert_eq!(client.get("/incr").await.body, "1");
    // Without the TLS settings the store speaks plain text to the master's TLS port: refused
    // when it connects.
    let plain = refused(RedisStore::connect_sentinel(&[&plain_sentinel], MASTER).await).await;
    println!("plain text to the master: {plain}");

    let other_ca = RedisTls::new().with_root_certificate(pki().ca_pem);
    let wrong_ca = refused(
        RedisStore::connect_sentinel_with(&nodes, MASTER, SentinelMaster::new().with_tls(other_ca))
            .await,
    )
    .await;
    assert!(
        wrong_ca.to_lowercase().contains("certificate"),
        "{wrong_ca}"
    );
}
