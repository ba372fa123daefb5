//! How the store reaches Redis: one server through a reconnecting `ConnectionManager`, a
//! Cluster, or the master that Redis Sentinel names, re-asked after every failure.

use std::time::Duration;

use redis::{
    aio::{ConnectionLike, ConnectionManager},
    Cmd, Pipeline, RedisError, RedisFuture, Value,
};

/// How long data the store sent may go unacknowledged before the kernel gives up on the
/// connection (`TCP_USER_TIMEOUT`, Linux), and after how long idle a connection is probed
/// (TCP keepalive). A server that vanished without a word (its host gone, a failover behind a
/// virtual IP) leaves a connection that looks open: without these, every command on it times
/// out until the kernel's own retransmissions give up, about 15 minutes later. With them the
/// connection breaks within seconds, and the store reconnects.
pub(super) const DEAD_PEER_TIMEOUT: Duration = Duration::from_secs(10);
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// The TCP settings of the connections the redis crate opens for the store: a dead peer
/// noticed within seconds (see [`DEAD_PEER_TIMEOUT`]). Nagle's algorithm stays on, as the redis
/// crate leaves it: on a multiplexed connection it gathers the commands of concurrent requests
/// into fewer packets (bench-http, uncached `/read`: 75,000 req/s with it, 54,000 without).
/// A cached store's own sockets turn it off and gather writes themselves.
pub(super) fn tcp_settings() -> redis::io::tcp::TcpSettings {
    let settings = redis::io::tcp::TcpSettings::default().set_keepalive(keepalive());
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    let settings = settings.set_user_timeout(DEAD_PEER_TIMEOUT);
    settings
}

/// The keepalive probes of [`tcp_settings`].
pub(super) fn keepalive() -> socket2::TcpKeepalive {
    let keepalive = socket2::TcpKeepalive::new().with_time(KEEPALIVE_IDLE);
    #[cfg(any(
        target_os = "android",
        target_os = "dragonfly",
        target_os = "freebsd",
        target_os = "fuchsia",
        target_os = "illumos",
        target_os = "ios",
        target_os = "linux",
        target_os = "macos",
        target_os = "netbsd",
        target_os = "windows",
    ))]
    let keepalive = keepalive.with_interval(KEEPALIVE_INTERVAL);
    keepalive
}

/// Where the store's commands go.
#[derive(Clone)]
pub(super) enum Connection {
    Single(ConnectionManager),
    /// One server through the tracked connection of a cached store.
    Tracked(std::sync::Arc<super::tracking::server::Tracked>),
    /// A Cluster, with a tracking connection to each master beside the cluster connection.
    #[cfg(feature = "cluster")]
    TrackedCluster(std::sync::Arc<super::tracking::cluster::TrackedCluster>),
    #[cfg(feature = "cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
    #[cfg(feature = "sentinel")]
    Sentinel(std::sync::Arc<sentinel::Master>),
}

impl Connection {
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Connection::Single(_) => "single",
            Connection::Tracked(_) => "single, cached",
            #[cfg(feature = "cluster")]
            Connection::Cluster(_) => "cluster",
            #[cfg(feature = "cluster")]
            Connection::TrackedCluster(_) => "cluster, cached",
            #[cfg(feature = "sentinel")]
            Connection::Sentinel(_) => "sentinel",
        }
    }

    /// The cluster connection, on a Cluster.
    #[cfg(feature = "cluster")]
    pub(super) fn cluster(&self) -> Option<redis::cluster_async::ClusterConnection> {
        match self {
            Connection::Cluster(cluster) => Some(cluster.clone()),
            Connection::TrackedCluster(tracked) => Some(tracked.commands()),
            _ => None,
        }
    }

    /// What tells whether every invalidation that reached the tracked connection `key`'s
    /// session is read through has been applied; `None` when no tracked connection serves it
    /// now (or the store has no cache).
    pub(super) fn watch(
        &self,
        key: &crate::id::SessionKey,
    ) -> Option<(std::sync::Arc<super::tracking::socket::Settled>, u64)> {
        match self {
            Connection::Tracked(tracked) => tracked.watch(),
            // A session's keys hash by their tag, the session key itself.
            #[cfg(feature = "cluster")]
            Connection::TrackedCluster(tracked) => tracked.watch(key.as_str().as_bytes()),
            _ => {
                let _ = key;
                None
            }
        }
    }

    /// The open connection, if there is one to hand out at once (the kinds that reconnect by
    /// themselves always have one).
    pub(super) fn open_now(&self) -> Option<Conn> {
        match self {
            Connection::Single(manager) => Some(Conn::Single(manager.clone())),
            Connection::Tracked(tracked) => tracked
                .open_now()
                .map(|(conn, epoch)| Conn::Tracked(conn, epoch)),
            #[cfg(feature = "cluster")]
            Connection::Cluster(cluster) => Some(Conn::Cluster(cluster.clone())),
            #[cfg(feature = "cluster")]
            Connection::TrackedCluster(tracked) => {
                Some(Conn::TrackedCluster(tracked.clone(), tracked.epoch()))
            }
            #[cfg(feature = "sentinel")]
            Connection::Sentinel(master) => master
                .open_now()
                .map(|(conn, generation)| Conn::Sentinel(conn, generation)),
        }
    }

    /// A connection for one operation's commands, opened if need be.
    pub(super) async fn get(&self) -> Result<Conn, RedisError> {
        match self {
            // Boxed: opening a tracked connection is a deep future.
            Connection::Tracked(tracked) => Box::pin(tracked.connection())
                .await
                .map(|(conn, epoch)| Conn::Tracked(conn, epoch)),
            #[cfg(feature = "sentinel")]
            Connection::Sentinel(master) => master
                .connection()
                .await
                .map(|(conn, generation)| Conn::Sentinel(conn, generation)),
            // The others reconnect by themselves and always hand one out.
            other => other
                .open_now()
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotConnected).into()),
        }
    }

    /// The generation an operation that starts now goes through, for one that takes no
    /// [`Conn`] (the cluster connection's own commands).
    #[cfg(feature = "cluster")]
    pub(super) fn generation(&self) -> Generation {
        match self {
            Connection::TrackedCluster(tracked) => tracked.epoch(),
            _ => 0,
        }
    }

    /// An operation through `generation` failed with `error` (`None`: it timed out). Unless
    /// the server merely refused the command, that generation ends: a cached store's tracked
    /// connections with their cache, and behind Sentinel the master's connection, so that the
    /// next operation asks the sentinels again. A newer generation, opened while the operation
    /// was under way, is not touched. The other connections reconnect by themselves.
    pub(super) fn failed(&self, generation: Generation, error: Option<&RedisError>) {
        if !connection_in_doubt(error) {
            return;
        }
        if let Connection::Tracked(tracked) = self {
            tracked.end(generation);
        }
        #[cfg(feature = "cluster")]
        if let Connection::TrackedCluster(tracked) = self {
            tracked.failed(generation);
        }
        #[cfg(feature = "sentinel")]
        if let Connection::Sentinel(master) = self {
            master.failed(generation);
        }
    }
}

/// Which of a reopening connection's successive incarnations an operation went through (0: a
/// connection that never reopens as another, or none open), so that its failure ends that one
/// and not one opened since.
pub(super) type Generation = u64;

/// Whether an operation's failure (`None`: a timeout) may mean the connection is gone or now
/// reaches a server that is not the master (a failover): the connection is then dropped. A
/// command the server merely refused is not.
pub(super) fn connection_in_doubt(error: Option<&RedisError>) -> bool {
    match error {
        None => true,
        Some(error) => {
            error.is_io_error()
                || error.is_connection_dropped()
                || error.is_connection_refusal()
                || error.is_timeout()
                || error.is_unrecoverable_error()
                // EXECABORT: a transaction refused as a whole, as a replica or a loading
                // server refuses writes (the reason is inside; taken as one of those).
                || matches!(
                    error.code(),
                    Some("READONLY" | "MASTERDOWN" | "LOADING" | "EXECABORT")
                )
        }
    }
}

/// One operation's connection: a cheap clone of a multiplexed one, with its generation.
pub(super) enum Conn {
    Single(ConnectionManager),
    Tracked(redis::aio::MultiplexedConnection, Generation),
    #[cfg(feature = "cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
    /// Each command to its master's tracking connection.
    #[cfg(feature = "cluster")]
    TrackedCluster(
        std::sync::Arc<super::tracking::cluster::TrackedCluster>,
        Generation,
    ),
    #[cfg(feature = "sentinel")]
    Sentinel(redis::aio::MultiplexedConnection, Generation),
}

impl Conn {
    /// The generation this connection belongs to.
    pub(super) fn generation(&self) -> Generation {
        match self {
            Conn::Tracked(_, generation) => *generation,
            #[cfg(feature = "cluster")]
            Conn::TrackedCluster(_, generation) => *generation,
            #[cfg(feature = "sentinel")]
            Conn::Sentinel(_, generation) => *generation,
            _ => 0,
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Tracked(conn, _) => conn.req_packed_command(cmd),
            #[cfg(feature = "cluster")]
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
            #[cfg(feature = "cluster")]
            Conn::TrackedCluster(tracked, _) => Box::pin(tracked.command(cmd)),
            #[cfg(feature = "sentinel")]
            Conn::Sentinel(conn, _) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Tracked(conn, _) => conn.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "cluster")]
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "cluster")]
            Conn::TrackedCluster(tracked, _) => Box::pin(tracked.pipeline(pipeline, offset, count)),
            #[cfg(feature = "sentinel")]
            Conn::Sentinel(conn, _) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Tracked(conn, _) => conn.get_db(),
            #[cfg(feature = "cluster")]
            Conn::Cluster(conn) => conn.get_db(),
            #[cfg(feature = "cluster")]
            Conn::TrackedCluster(..) => 0,
            #[cfg(feature = "sentinel")]
            Conn::Sentinel(conn, _) => conn.get_db(),
        }
    }
}

#[cfg(feature = "sentinel")]
pub(super) mod sentinel {
    use std::sync::{
        atomic::{AtomicU64, Ordering},
        RwLock,
    };

    use redis::{
        aio::MultiplexedConnection, sentinel::SentinelClient, AsyncConnectionConfig, RedisError,
    };

    use super::Generation;

    /// The master a Sentinel deployment names, and one multiplexed connection to it while it
    /// works. Any failure that may mean a failover drops the connection, so that the next
    /// operation asks the sentinels who the master is now: requests fail (the layer's error
    /// response, no cookie) only until the sentinels have promoted a replica.
    pub(crate) struct Master {
        sentinels: tokio::sync::Mutex<SentinelClient>,
        /// The connection, and its generation (counted from 1).
        current: RwLock<Option<(MultiplexedConnection, Generation)>>,
        generations: AtomicU64,
        config: AsyncConnectionConfig,
    }

    impl Master {
        pub(crate) fn new(sentinels: SentinelClient, config: AsyncConnectionConfig) -> Self {
            Self {
                sentinels: tokio::sync::Mutex::new(sentinels),
                current: RwLock::new(None),
                generations: AtomicU64::new(0),
                config,
            }
        }

        /// The open connection, if any.
        pub(crate) fn open_now(&self) -> Option<(MultiplexedConnection, Generation)> {
            self.current
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone()
        }

        pub(crate) async fn connection(
            &self,
        ) -> Result<(MultiplexedConnection, Generation), RedisError> {
            if let Some(connection) = self.open_now() {
                return Ok(connection);
            }
            // One operation asks the sentinels; the others wait for its answer.
            let mut sentinels = self.sentinels.lock().await;
            if let Some(connection) = self.open_now() {
                return Ok(connection);
            }
            // The redis crate asks the sentinels for the master's address and that node for its
            // ROLE, so a master the sentinels still name after its demotion is not taken.
            let master = sentinels.async_get_client().await?;
            let connection = master
                .get_multiplexed_async_connection_with_config(&self.config)
                .await?;
            let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
            *self
                .current
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) =
                Some((connection.clone(), generation));
            tracing::info!("redis sentinel: connected to the current master");
            Ok((connection, generation))
        }

        /// An operation through connection `generation` failed in a way that may mean a
        /// failover: that connection goes (not one opened since).
        pub(crate) fn failed(&self, generation: Generation) {
            let mut current = self
                .current
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if current
                .as_ref()
                .is_some_and(|(_, open)| *open == generation)
            {
                *current = None;
                drop(current);
                tracing::warn!(
                    "redis sentinel: the master failed; the next operation asks the sentinels again"
                );
            }
        }
    }
}
