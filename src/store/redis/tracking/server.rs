//! The connection of a cached store on one server: one RESP3 multiplexed connection that
//! carries every command and receives Redis's invalidation pushes, opened again after any
//! failure with tracking switched on before it serves, and pinged by a heartbeat. Behind
//! Sentinel, each new connection goes to the master the sentinels name then.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, RwLock, Weak,
    },
    time::{Duration, Instant},
};

use redis::{
    aio::MultiplexedConnection, AsyncConnectionConfig, ConnectionInfo, PushInfo, RedisError, Value,
};

use super::{
    socket::{self, Settled, Tls},
    Invalidations,
};

/// Where a tracked connection is opened.
#[derive(Clone)]
pub(in crate::store::redis) enum Source {
    /// One server; the settings speak RESP3.
    Server(Box<ConnectionInfo>, Tls),
    /// The master the sentinels name at the time (asked again for every new connection); the
    /// client's node settings speak RESP3.
    #[cfg(feature = "sentinel")]
    Sentinel(Arc<tokio::sync::Mutex<redis::sentinel::SentinelClient>>),
}

impl Source {
    async fn open(
        &self,
        config: AsyncConnectionConfig,
        timeout: Duration,
    ) -> Result<(MultiplexedConnection, Arc<Settled>), RedisError> {
        match self {
            Source::Server(info, tls) => socket::open(info, tls, config, timeout).await,
            #[cfg(feature = "sentinel")]
            Source::Sentinel(sentinels) => {
                // The redis crate asks the sentinels for the master's address and that node for
                // its ROLE, so a demoted master the sentinels still name is not taken.
                let master = sentinels.lock().await.async_get_client().await?;
                socket::open(master.get_connection_info(), &None, config, timeout).await
            }
        }
    }
}

/// The tracked connection, reopened on demand.
pub(in crate::store::redis) struct Tracked {
    source: Source,
    prefix: String,
    timeout: Duration,
    heartbeat: Duration,
    heartbeat_started: std::sync::atomic::AtomicBool,
    current: RwLock<Option<(MultiplexedConnection, u64, Arc<Settled>)>>,
    connecting: tokio::sync::Mutex<()>,
    epochs: AtomicU64,
    receiver: Arc<dyn Invalidations>,
}

impl Tracked {
    pub(in crate::store::redis) fn new(
        source: Source,
        prefix: String,
        timeout: Duration,
        heartbeat: Duration,
        receiver: Arc<dyn Invalidations>,
    ) -> Self {
        Self {
            source,
            prefix,
            timeout,
            heartbeat,
            heartbeat_started: std::sync::atomic::AtomicBool::new(false),
            current: RwLock::new(None),
            connecting: tokio::sync::Mutex::new(()),
            epochs: AtomicU64::new(0),
            receiver,
        }
    }

    /// The open connection, unless its invalidations stopped (a disconnection push).
    fn current(&self) -> Option<(MultiplexedConnection, u64, Arc<Settled>)> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
            .filter(|(_, epoch, _)| self.receiver.connected_epoch() == *epoch)
    }

    pub(in crate::store::redis) fn source(&self) -> &Source {
        &self.source
    }

    /// The connection, opened (with tracking on) if there is none. The first one starts the
    /// heartbeat, which ends with the store.
    pub(in crate::store::redis) async fn connection(
        self: &Arc<Self>,
    ) -> Result<MultiplexedConnection, RedisError> {
        if let Some((connection, ..)) = self.current() {
            return Ok(connection);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some((connection, ..)) = self.current() {
            return Ok(connection);
        }
        let epoch = self.epochs.fetch_add(1, Ordering::Relaxed) + 1;
        let receiver = Arc::clone(&self.receiver);
        let sender = move |push: PushInfo| {
            receiver.push(epoch, push);
            Ok::<(), std::convert::Infallible>(())
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_push_sender(sender);
        // Boxed and erased: opening a connection is a deep future, and every operation's may
        // include it.
        let open: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send + '_>> =
            Box::pin(self.source.open(config, self.timeout));
        let (mut connection, settled) = open.await?;
        // Not the writes of this connection: the store applies them to the cache itself.
        super::track(&mut connection, &self.prefix, true).await?;
        // Published and connected under the lock a drop takes: a connection cannot be dropped
        // between the two and then serve.
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *current = Some((connection.clone(), epoch, settled));
        self.receiver.connected(epoch);
        drop(current);
        tracing::debug!(epoch, "redis cache: tracking on");
        if !self.heartbeat_started.swap(true, Ordering::AcqRel) {
            tokio::spawn(heartbeat(Arc::downgrade(self), self.heartbeat));
        }
        Ok(connection)
    }

    /// What tells whether every invalidation that reached the connection has been applied;
    /// `None` without a connection.
    pub(in crate::store::redis) fn watch(&self) -> Option<Arc<Settled>> {
        self.current().map(|(_, _, settled)| settled)
    }

    /// Holds the connection's reading back for `pause` (fault injection for tests).
    #[cfg(feature = "testing")]
    pub(in crate::store::redis) fn pause(&self, pause: Duration) {
        if let Some((_, _, settled)) = self.current() {
            settled.pause(pause);
        }
    }

    /// An operation failed with `error` (`None`: it timed out): unless the server merely
    /// refused the command, the connection is dropped with everything cached through it.
    pub(in crate::store::redis) fn failed(&self, error: Option<&RedisError>) {
        if crate::store::redis::connection::connection_in_doubt(error) {
            self.drop_connection();
        }
    }

    fn drop_connection(&self) {
        let dropped = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some((_, epoch, _)) = dropped {
            self.disconnected(epoch);
        }
    }

    /// The heartbeat of connection `epoch` failed: that connection goes, not a newer one.
    fn drop_epoch(&self, epoch: u64) {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.as_ref().is_some_and(|(_, open, _)| *open == epoch) {
            *current = None;
        }
        drop(current);
        self.disconnected(epoch);
    }

    fn disconnected(&self, epoch: u64) {
        if self.receiver.connected_epoch() == epoch {
            tracing::warn!(
                epoch,
                "redis cache: connection lost; cache dropped until tracking is back"
            );
        }
        self.receiver.disconnected(epoch);
    }
}

/// Pings the connection every `interval` while the store lives; an unanswered ping drops the
/// connection (and the cache with it). The lease counts from when a ping was sent.
async fn heartbeat(tracked: Weak<Tracked>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(tracked) = tracked.upgrade() else {
            return;
        };
        let Some((mut connection, epoch, _)) = tracked.current() else {
            continue;
        };
        let sent = Instant::now();
        let ping_cmd = redis::cmd("PING");
        let ping = ping_cmd.query_async::<Value>(&mut connection);
        match tokio::time::timeout(tracked.timeout.min(interval.saturating_mul(3)), ping).await {
            Ok(Ok(_)) => tracked.receiver.pong(epoch, sent),
            Ok(Err(err)) if !crate::store::redis::connection::connection_in_doubt(Some(&err)) => {
                tracked.receiver.pong(epoch, sent);
            }
            _ => tracked.drop_epoch(epoch),
        }
    }
}
