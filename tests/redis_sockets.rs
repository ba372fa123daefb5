//! Every connection a store opens to Redis (one server, a Cluster and a master behind Sentinel,
//! each plain and cached) notices a server that vanished without a word within seconds: TCP
//! keepalive probes, and `TCP_USER_TIMEOUT` so that data left unacknowledged breaks the
//! connection (the store then reconnects) instead of every command timing out until the kernel
//! gives up, about 15 minutes later. Linux only: the test finds the store's sockets through
//! `/proc` and reads their options back.
#![cfg(all(target_os = "linux", feature = "cluster", feature = "sentinel"))]
// Reading the options of a socket the redis crate owns takes borrowing its file descriptor.
#![allow(unsafe_code)]

#[path = "support/redis_server.rs"]
mod redis_server;

use std::{
    collections::HashSet,
    os::fd::{BorrowedFd, RawFd},
    time::Duration,
};

use redis_server::{RedisCluster, RedisSentinel, RedisServer};
use tower_typed_sessions::{
    store::{redis::LocalCache, LoadOptions},
    RedisStore, Session, SessionKey, Store, StoreError,
};

#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
struct Data;
impl Session for Data {}

/// What the store sets on every socket (the store's `DEAD_PEER_TIMEOUT`).
const USER_TIMEOUT: Duration = Duration::from_secs(10);

/// The inodes of this network namespace's established TCP sockets whose remote port is one of
/// `ports` (`/proc/self/net/tcp` and `tcp6`: local address, remote address, state, …, inode).
fn inodes_connected_to(ports: &HashSet<u16>) -> HashSet<u64> {
    let mut inodes = HashSet::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(remote), Some(state), Some(inode)) =
                (fields.get(2), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let port = remote
                .rsplit(':')
                .next()
                .and_then(|hex| u16::from_str_radix(hex, 16).ok());
            // 01: ESTABLISHED.
            if *state == "01" && port.is_some_and(|port| ports.contains(&port)) {
                if let Ok(inode) = inode.parse() {
                    inodes.insert(inode);
                }
            }
        }
    }
    inodes
}

/// The inode of the socket file descriptor `fd` names now, if it names a socket.
fn socket_inode(fd: RawFd) -> Option<u64> {
    let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    target
        .to_str()?
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// This process's file descriptors of sockets connected to any of `ports`, with their inodes.
fn sockets_to(ports: &[u16]) -> Vec<(RawFd, u64)> {
    let inodes = inodes_connected_to(&ports.iter().copied().collect());
    let mut sockets = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").expect("list /proc/self/fd") {
        let Some(fd) = entry
            .ok()
            .and_then(|entry| entry.file_name().to_str()?.parse::<RawFd>().ok())
        else {
            continue;
        };
        if let Some(inode) = socket_inode(fd).filter(|inode| inodes.contains(inode)) {
            sockets.push((fd, inode));
        }
    }
    sockets
}

/// Every socket of this process connected to `ports` (there must be some) has the store's
/// settings. `label` names the store in a failure.
fn assert_store_sockets(label: &str, ports: &[u16]) {
    let sockets = sockets_to(ports);
    assert!(!sockets.is_empty(), "{label}: no socket to {ports:?} found");
    for (fd, inode) in sockets {
        // SAFETY: `fd` is a socket of a store this test holds (alive and connected, so the
        // socket stays open); the borrow ends before this function returns, and the check
        // below makes sure the number still names that socket.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&borrowed);
        let peer = socket.peer_addr().ok().and_then(|addr| addr.as_socket());
        let what = format!("{label}, socket {fd} to {peer:?}");
        let (keepalive, user_timeout) = (socket.keepalive(), socket.tcp_user_timeout());
        assert_eq!(
            socket_inode(fd),
            Some(inode),
            "{what}: closed while it was read"
        );
        assert!(keepalive.unwrap(), "{what}: no keepalive probes");
        assert_eq!(
            user_timeout.unwrap(),
            Some(USER_TIMEOUT),
            "{what}: TCP_USER_TIMEOUT"
        );
    }
}

/// One operation, so that every connection the store keeps is open.
async fn touch(store: &RedisStore<Data>) -> Result<(), StoreError> {
    let key = SessionKey::parse("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .expect("a well-formed session key");
    store
        .load(&key, LoadOptions::at(time::OffsetDateTime::now_utc()))
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_plain_and_cached() {
    let server = RedisServer::start();
    let plain = RedisStore::<Data>::connect(&server.url()).await.unwrap();
    touch(&plain).await.unwrap();
    assert_store_sockets("one server", &[server.port]);
    let cached = RedisStore::<Data>::connect_cached(&server.url(), LocalCache::new())
        .await
        .unwrap();
    touch(&cached).await.unwrap();
    assert_store_sockets("one server, plain and cached", &[server.port]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_plain_and_cached() {
    let cluster = RedisCluster::start();
    let urls = cluster.urls();
    let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
    let ports: Vec<u16> = urls
        .iter()
        .filter_map(|url| url.rsplit(':').next()?.trim_end_matches('/').parse().ok())
        .collect();
    let plain = RedisStore::<Data>::connect_cluster(&nodes).await.unwrap();
    touch(&plain).await.unwrap();
    assert_store_sockets("Cluster", &ports);
    let cached = RedisStore::<Data>::connect_cluster_cached(&nodes, LocalCache::new())
        .await
        .unwrap();
    touch(&cached).await.unwrap();
    assert_store_sockets("Cluster, plain and cached", &ports);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_behind_sentinel_plain_and_cached() {
    let master = RedisServer::start();
    let sentinel = RedisSentinel::start(master.port, "sockets");
    let url = sentinel.url();
    let plain = RedisStore::<Data>::connect_sentinel(&[&url], "sockets")
        .await
        .unwrap();
    touch(&plain).await.unwrap();
    assert_store_sockets("behind Sentinel", &[master.port]);
    let cached = RedisStore::<Data>::connect_sentinel_cached(&[&url], "sockets", LocalCache::new())
        .await
        .unwrap();
    touch(&cached).await.unwrap();
    assert_store_sockets("behind Sentinel, plain and cached", &[master.port]);
}
