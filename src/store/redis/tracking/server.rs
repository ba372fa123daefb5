//! The connections of a cached store on one server: one for the commands, whose tracking sends
//! Redis's invalidation pushes to a second, quiet one; opened again (both) after any failure,
//! with tracking switched on before they serve, and pinged by a heartbeat. Behind Sentinel, each
//! new pair goes to the master the sentinels name then.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, RwLock, Weak,
    },
    time::{Duration, Instant},
};

use redis::{aio::MultiplexedConnection, ConnectionInfo, PushInfo, RedisError};

use super::{
    socket::{self, Pair, Pushes, Settled, Tls},
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
    Sentinel(
        Arc<tokio::sync::Mutex<redis::sentinel::SentinelClient>>,
        Tls,
    ),
}

impl Source {
    async fn open(
        &self,
        prefix: &str,
        pushes: Pushes,
        timeout: Duration,
    ) -> Result<Pair, RedisError> {
        match self {
            Source::Server(info, tls) => {
                socket::open_pair(info, tls, prefix, pushes, timeout).await
            }
            #[cfg(feature = "sentinel")]
            Source::Sentinel(sentinels, tls) => {
                // The redis crate asks the sentinels for the master's address and that node for
                // its ROLE, so a demoted master the sentinels still name is not taken.
                let master = sentinels.lock().await.async_get_client().await?;
                let info = master.get_connection_info();
                socket::open_pair(info, tls, prefix, pushes, timeout).await
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
    current: RwLock<Option<(Arc<Pair>, u64)>>,
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
    fn current(&self) -> Option<(Arc<Pair>, u64)> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
            .filter(|(_, epoch)| self.receiver.connected_epoch() == *epoch)
    }

    /// The open connection and its epoch, if any (nothing is opened here).
    pub(in crate::store::redis) fn open_now(&self) -> Option<(MultiplexedConnection, u64)> {
        self.current()
            .map(|(pair, epoch)| (pair.commands.clone(), epoch))
    }

    pub(in crate::store::redis) fn source(&self) -> &Source {
        &self.source
    }

    /// The connection, opened (with tracking on) if there is none. The first one starts the
    /// heartbeat, which ends with the store.
    pub(in crate::store::redis) async fn connection(
        self: &Arc<Self>,
    ) -> Result<(MultiplexedConnection, u64), RedisError> {
        if let Some(open) = self.open_now() {
            return Ok(open);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(open) = self.open_now() {
            return Ok(open);
        }
        let epoch = self.epochs.fetch_add(1, Ordering::Relaxed) + 1;
        let receiver = Arc::clone(&self.receiver);
        let pushes: Pushes = Arc::new(move |push: PushInfo| receiver.push(epoch, push));
        // Boxed and erased: opening a connection is a deep future, and every operation's may
        // include it.
        let open: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send + '_>> =
            Box::pin(self.source.open(&self.prefix, pushes, self.timeout));
        let pair = tokio::time::timeout(self.timeout, open)
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        let pair = Arc::new(pair);
        let connection = pair.commands.clone();
        // Published and connected under the lock a drop takes: a connection cannot be dropped
        // between the two and then serve.
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *current = Some((pair, epoch));
        self.receiver.connected(epoch);
        drop(current);
        tracing::debug!(epoch, "redis cache: tracking on");
        if !self.heartbeat_started.swap(true, Ordering::AcqRel) {
            tokio::spawn(heartbeat(Arc::downgrade(self), self.heartbeat));
        }
        Ok((connection, epoch))
    }

    /// What tells whether every invalidation that reached the connection has been applied, and
    /// the epoch it belongs to; `None` without a connection.
    pub(in crate::store::redis) fn watch(&self) -> Option<(Arc<Settled>, u64)> {
        self.current()
            .map(|(pair, epoch)| (Arc::clone(&pair.settled), epoch))
    }

    /// Holds the connection's reading back for `pause` (fault injection for tests).
    #[cfg(feature = "testing")]
    pub(in crate::store::redis) fn pause(&self, pause: Duration) {
        if let Some((pair, _)) = self.current() {
            pair.settled.pause(pause);
        }
    }

    /// Holds the commands connection's replies back for `hold` (fault injection for tests).
    #[cfg(feature = "testing")]
    pub(in crate::store::redis) fn hold_replies(&self, hold: Duration) {
        if let Some((pair, _)) = self.current() {
            pair.settled.hold_replies(hold);
        }
    }

    /// Connection `epoch` failed (a command through it, or its heartbeat): it is dropped with
    /// everything cached through it, unless a newer one has replaced it.
    pub(in crate::store::redis) fn end(&self, epoch: u64) {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.as_ref().is_some_and(|(_, open)| *open == epoch) {
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
        let Some((pair, epoch)) = tracked.current() else {
            continue;
        };
        let sent = Instant::now();
        let ping = pair.ping();
        match tokio::time::timeout(tracked.timeout.min(interval.saturating_mul(3)), ping).await {
            Ok(Ok(_)) => tracked.receiver.pong(epoch, sent),
            Ok(Err(err)) if !crate::store::redis::connection::connection_in_doubt(Some(&err)) => {
                tracked.receiver.pong(epoch, sent);
            }
            _ => tracked.end(epoch),
        }
    }
}
