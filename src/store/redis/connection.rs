//! How the store reaches Redis: one server through a reconnecting `ConnectionManager`, a
//! Cluster, or the master that Redis Sentinel names, re-asked after every failure.

use redis::{
    aio::{ConnectionLike, ConnectionManager},
    Cmd, Pipeline, RedisError, RedisFuture, Value,
};

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

    /// A connection for one operation's commands.
    pub(super) async fn get(&self) -> Result<Conn, RedisError> {
        match self {
            Connection::Single(manager) => Ok(Conn::Single(manager.clone())),
            // Boxed: opening a tracked connection is a deep future.
            Connection::Tracked(tracked) => Box::pin(tracked.connection()).await.map(Conn::Tracked),
            #[cfg(feature = "cluster")]
            Connection::Cluster(cluster) => Ok(Conn::Cluster(cluster.clone())),
            #[cfg(feature = "cluster")]
            Connection::TrackedCluster(tracked) => Ok(Conn::TrackedCluster(tracked.clone())),
            #[cfg(feature = "sentinel")]
            Connection::Sentinel(master) => master.connection().await.map(Conn::Sentinel),
        }
    }

    /// An operation failed with `error` (`None`: it timed out). Behind Sentinel, a failure that
    /// may mean the master went away or was demoted makes the next operation ask the sentinels
    /// again; the other connections reconnect by themselves.
    pub(super) fn failed(&self, error: Option<&RedisError>) {
        if let Connection::Tracked(tracked) = self {
            tracked.failed(error);
        }
        #[cfg(feature = "cluster")]
        if let Connection::TrackedCluster(tracked) = self {
            tracked.failed(error);
        }
        #[cfg(feature = "sentinel")]
        if let Connection::Sentinel(master) = self {
            master.failed(error);
        }
        let _ = error;
    }
}

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

/// One operation's connection: a cheap clone of a multiplexed one.
pub(super) enum Conn {
    Single(ConnectionManager),
    Tracked(redis::aio::MultiplexedConnection),
    #[cfg(feature = "cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
    /// Each command to its master's tracking connection.
    #[cfg(feature = "cluster")]
    TrackedCluster(std::sync::Arc<super::tracking::cluster::TrackedCluster>),
    #[cfg(feature = "sentinel")]
    Sentinel(redis::aio::MultiplexedConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Tracked(conn) => conn.req_packed_command(cmd),
            #[cfg(feature = "cluster")]
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
            #[cfg(feature = "cluster")]
            Conn::TrackedCluster(tracked) => Box::pin(tracked.command(cmd)),
            #[cfg(feature = "sentinel")]
            Conn::Sentinel(conn) => conn.req_packed_command(cmd),
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
            Conn::Tracked(conn) => conn.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "cluster")]
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "cluster")]
            Conn::TrackedCluster(tracked) => Box::pin(tracked.pipeline(pipeline, offset, count)),
            #[cfg(feature = "sentinel")]
            Conn::Sentinel(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Tracked(conn) => conn.get_db(),
            #[cfg(feature = "cluster")]
            Conn::Cluster(conn) => conn.get_db(),
            #[cfg(feature = "cluster")]
            Conn::TrackedCluster(_) => 0,
            #[cfg(feature = "sentinel")]
            Conn::Sentinel(conn) => conn.get_db(),
        }
    }
}

#[cfg(feature = "sentinel")]
pub(super) mod sentinel {
    use std::sync::RwLock;

    use redis::{
        aio::MultiplexedConnection, sentinel::SentinelClient, AsyncConnectionConfig, RedisError,
    };

    /// The master a Sentinel deployment names, and one multiplexed connection to it while it
    /// works. Any failure that may mean a failover drops the connection, so that the next
    /// operation asks the sentinels who the master is now: requests fail (the layer's error
    /// response, no cookie) only until the sentinels have promoted a replica.
    pub(crate) struct Master {
        sentinels: tokio::sync::Mutex<SentinelClient>,
        current: RwLock<Option<MultiplexedConnection>>,
        config: AsyncConnectionConfig,
    }

    impl Master {
        pub(crate) fn new(sentinels: SentinelClient, config: AsyncConnectionConfig) -> Self {
            Self {
                sentinels: tokio::sync::Mutex::new(sentinels),
                current: RwLock::new(None),
                config,
            }
        }

        fn current(&self) -> Option<MultiplexedConnection> {
            self.current
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone()
        }

        pub(crate) async fn connection(&self) -> Result<MultiplexedConnection, RedisError> {
            if let Some(connection) = self.current() {
                return Ok(connection);
            }
            // One operation asks the sentinels; the others wait for its answer.
            let mut sentinels = self.sentinels.lock().await;
            if let Some(connection) = self.current() {
                return Ok(connection);
            }
            // The redis crate asks the sentinels for the master's address and that node for its
            // ROLE, so a master the sentinels still name after its demotion is not taken.
            let master = sentinels.async_get_client().await?;
            let connection = master
                .get_multiplexed_async_connection_with_config(&self.config)
                .await?;
            *self
                .current
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(connection.clone());
            tracing::info!("redis sentinel: connected to the current master");
            Ok(connection)
        }

        pub(crate) fn failed(&self, error: Option<&RedisError>) {
            if super::connection_in_doubt(error) {
                let dropped = self
                    .current
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .take();
                if dropped.is_some() {
                    tracing::warn!(
                        "redis sentinel: the master failed; the next operation asks the sentinels again"
                    );
                }
            }
        }
    }
}
