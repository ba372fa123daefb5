//! Redis servers that a test starts and stops itself: on free 127.0.0.1 ports, with
//! `--save "" --appendonly no`, logging into a temporary directory, killed on drop. A
//! three-master Cluster, sentinels, a MONITOR-based counter of the commands clients send, and a
//! relay that counts round trips. Commands to them go through the redis crate.
#![allow(dead_code, unreachable_pub)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

fn require(binary: &str) {
    let found = Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "`{binary}` is not on PATH. The Redis tests start their own servers: install Redis \
         (Debian/Ubuntu: `sudo apt-get install redis-server`, macOS: `brew install redis`) \
         or run the other tests with `cargo test` (without --all-features)."
    );
}

/// A free port below 55535, so that a cluster bus port (port + 10000) is valid too. Another
/// process may take it between this check and the server's bind: callers retry.
fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        if port < 55535 && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tts-redis-{tag}-{}-{}",
        std::process::id(),
        tower_typed_sessions::SessionId::generate()
            .unwrap()
            .fingerprint()
            .replace(':', "")
    ));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Sends one command to the server on `port` through the redis crate (a connection of its own,
/// 2 s timeouts) and reads the reply as `V`.
pub fn query<V: redis::FromRedisValue>(port: u16, args: &[&str]) -> redis::RedisResult<V> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let mut connection = client.get_connection_with_timeout(Duration::from_secs(2))?;
    connection.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(&mut connection)
}

/// Whether the server on `port` answers PING (a server with `requirepass` answers that it wants
/// the password).
fn answers(port: u16) -> bool {
    match query::<String>(port, &["PING"]) {
        Ok(reply) => reply == "PONG",
        Err(err) => err.code() == Some("NOAUTH"),
    }
}

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Self {
        require("redis-server");
        let dir = temp_dir("server");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        for _ in 0..20 {
            let mut server = Self {
                child: None,
                port: free_port(),
                dir: dir.clone(),
                extra: extra.clone(),
            };
            if server.spawn() {
                return server;
            }
        }
        panic!(
            "could not start redis-server on a free port; see logs in {}",
            dir.display()
        );
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(format!("redis-{}.log", self.port))
    }

    /// Starts the process on `self.port` and waits until it answers PING. False if it exited
    /// (port taken).
    fn spawn(&mut self) -> bool {
        let port = self.port.to_string();
        let mut command = Command::new("redis-server");
        command
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--dir", self.dir.to_str().expect("utf-8 temp dir")])
            .args([
                "--logfile",
                self.log_path().to_str().expect("utf-8 temp dir"),
            ])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = command.spawn().expect("spawn redis-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if answers(self.port) {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "redis-server on port {} did not answer within 10 s; log:\n{}",
            self.port,
            std::fs::read_to_string(self.log_path()).unwrap_or_default()
        );
    }

    /// Kills the server (an outage). The port stays reserved by this handle for `restart`.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty: nothing is persisted).
    pub fn restart(&mut self) {
        self.stop();
        for _ in 0..50 {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("could not restart redis-server on port {}", self.port);
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// One command, its reply read as `V` (`String`, `Option<String>` for a nil, `i64`, `()`…).
    pub fn command<V: redis::FromRedisValue>(&self, args: &[&str]) -> V {
        query(self.port, args).unwrap_or_else(|err| panic!("redis {args:?}: {err}"))
    }

    /// Counts the commands clients send from now on, MONITOR-style: one line per command a
    /// client sent, commands run inside scripts excluded.
    pub fn monitor(&self) -> Monitor {
        Monitor::start(self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct Monitor {
    child: Child,
    lines: mpsc::Receiver<String>,
    port: u16,
    markers: u32,
}

impl Monitor {
    fn start(port: u16) -> Self {
        require("redis-cli");
        let mut child = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "monitor"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-cli monitor");
        let stdout = child.stdout.take().expect("monitor stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        // redis-cli prints OK once MONITOR is active.
        let first = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("monitor started");
        assert_eq!(first.trim(), "OK", "unexpected monitor output: {first}");
        let mut monitor = Self {
            child,
            lines: rx,
            port,
            markers: 0,
        };
        monitor.commands_since_last_call();
        monitor
    }

    /// The client commands seen since the previous call (each as `"CMD" "arg" ...`), the
    /// marker commands excluded.
    pub fn commands_since_last_call(&mut self) -> Vec<String> {
        self.markers += 1;
        let marker = format!("tts-monitor-marker-{}", self.markers);
        query::<String>(self.port, &["ECHO", &marker]).expect("send marker");
        let mut seen = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(5))
                .expect("monitor line before the marker");
            if line.contains(&marker) {
                return seen;
            }
            if line.contains("tts-monitor-marker-") || line.contains(" lua] ") {
                continue;
            }
            if let Some(command) = line.split("] ").nth(1) {
                seen.push(command.to_owned());
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP relay in front of a server that counts round trips: a round trip starts each time the
/// client sends after having received (or for the first time). A pipeline is one round trip
/// however the kernel splits it, and a second command sent only after the first one's reply is
/// another. Meaningful while one request at a time runs through it.
pub struct RoundTrips {
    port: u16,
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl RoundTrips {
    pub fn start(server_port: u16) -> Self {
        use std::sync::{
            atomic::{AtomicBool, AtomicUsize, Ordering},
            Arc,
        };
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let port = listener.local_addr().expect("relay addr").port();
        let count = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&count);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", server_port)) else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                // Whether the last bytes went to the server (a round trip is under way).
                let sending = Arc::new(AtomicBool::new(false));
                let relay = |mut from: TcpStream, mut to: TcpStream, upstream: bool| {
                    let sending = Arc::clone(&sending);
                    let counted = Arc::clone(&counted);
                    move || {
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if upstream && !sending.swap(true, Ordering::SeqCst) {
                                counted.fetch_add(1, Ordering::SeqCst);
                            }
                            if !upstream {
                                sending.store(false, Ordering::SeqCst);
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    }
                };
                let (c2, s2) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                std::thread::spawn(relay(client, server, true));
                std::thread::spawn(relay(s2, c2, false));
            }
        });
        Self { port, count }
    }

    /// The relay's URL, for the client under test.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Round trips since the previous call.
    pub fn take(&self) -> usize {
        self.count.swap(0, std::sync::atomic::Ordering::SeqCst)
    }
}

/// Three masters with `--cluster-enabled yes`, joined with `redis-cli --cluster create`
/// (with `start_with_replicas`, a replica for each).
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> Self {
        Self::start_nodes(0, 5000)
    }

    /// Three masters and a replica of each; a master that stops answering for 1 s is failed
    /// over to its replica.
    pub fn start_with_replicas() -> Self {
        Self::start_nodes(1, 1000)
    }

    fn start_nodes(replicas: usize, node_timeout_ms: u32) -> Self {
        require("redis-cli");
        static CONFIGS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        'attempt: for _ in 0..5 {
            let nodes: Vec<RedisServer> = (0..3 * (1 + replicas))
                .map(|_| {
                    let config = CONFIGS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    RedisServer::start_with(&[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        &format!("nodes-{config}-{}.conf", std::process::id()),
                        "--cluster-node-timeout",
                        &node_timeout_ms.to_string(),
                    ])
                })
                .collect();
            let addresses: Vec<String> = nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port))
                .collect();
            let output = Command::new("redis-cli")
                .arg("--cluster")
                .arg("create")
                .args(&addresses)
                .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
                .stdin(Stdio::null())
                .output()
                .expect("run redis-cli --cluster create");
            if !output.status.success() {
                eprintln!(
                    "cluster create failed: {}",
                    String::from_utf8_lossy(&output.stdout)
                );
                continue;
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                let ok = nodes.iter().all(|n| {
                    query::<String>(n.port, &["CLUSTER", "INFO"])
                        .is_ok_and(|r| r.contains("cluster_state:ok"))
                }) && (replicas == 0
                    || nodes.iter().all(|n| {
                        // Every replica has synced with its master.
                        query::<String>(n.port, &["INFO", "replication"]).is_ok_and(|info| {
                            info.contains("role:master") || info.contains("master_link_status:up")
                        })
                    }));
                if ok {
                    return Self { nodes };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!("cluster did not reach state ok; retrying");
            continue 'attempt;
        }
        panic!("could not start a 3-master Redis Cluster");
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}

/// A Redis Sentinel (`redis-server <config> --sentinel`) watching the master on `master_port`
/// under `name`: quorum 2, the master judged down after 1 s. Killed on drop.
pub struct RedisSentinel {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl RedisSentinel {
    pub fn start(master_port: u16, name: &str) -> Self {
        Self::start_with(master_port, name, &[])
    }

    /// A sentinel whose configuration also holds the lines `extra` (the master's password, TLS).
    pub fn start_with(master_port: u16, name: &str, extra: &[String]) -> Self {
        require("redis-server");
        let dir = temp_dir("sentinel");
        for _ in 0..20 {
            let port = free_port();
            let config = dir.join(format!("sentinel-{port}.conf"));
            let text = format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\nlogfile {dir}/sentinel-{port}.log\n\
                 sentinel resolve-hostnames no\n\
                 sentinel monitor {name} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {name} 1000\n\
                 sentinel failover-timeout {name} 4000\n\
                 sentinel parallel-syncs {name} 1\n{extra}\n",
                dir = dir.display(),
                extra = extra.join("\n"),
            );
            std::fs::write(&config, text).expect("write the sentinel config");
            let mut child = Command::new("redis-server")
                .arg(&config)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server --sentinel");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if answers(port) {
                    return Self {
                        child: Some(child),
                        port,
                        dir,
                    };
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("could not start a sentinel; logs in {}", dir.display());
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn command<V: redis::FromRedisValue>(&self, args: &[&str]) -> V {
        query(self.port, args).unwrap_or_else(|err| panic!("sentinel {args:?}: {err}"))
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
