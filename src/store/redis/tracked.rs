//! The connection of a cached [`RedisStore`](super::RedisStore): one RESP3 multiplexed
//! connection that carries every command and receives Redis's invalidation pushes, opened again
//! after any failure with tracking switched on before it serves, and pinged by a heartbeat.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, RwLock, Weak,
    },
    time::Duration,
};

use redis::{
    aio::MultiplexedConnection, AsyncConnectionConfig, PushInfo, PushKind, RedisError, Value,
};

use super::{cache::Cache, layout::Keys};
use crate::session::Session;

/// Where the cache's invalidations come from, type-erased over the session type.
pub(super) trait Invalidations: Send + Sync + 'static {
    /// Tracking is on for connection `epoch`.
    fn connected(&self, epoch: u64);
    /// Connection `epoch` broke or is in doubt.
    fn disconnected(&self, epoch: u64);
    /// A heartbeat was answered.
    fn pong(&self);
    /// A push arrived on connection `epoch`.
    fn push(&self, epoch: u64, push: PushInfo);
    /// The connection whose invalidations are applied (0: none).
    fn connected_epoch(&self) -> u64;
}

/// The cache and the key prefix it reads pushes with.
pub(super) struct Receiver<T> {
    pub(super) cache: Arc<Cache<T>>,
    pub(super) prefix: String,
}

impl<T: Session> Invalidations for Receiver<T> {
    fn connected(&self, epoch: u64) {
        self.cache.connected(epoch);
    }

    fn disconnected(&self, epoch: u64) {
        self.cache.disconnected(epoch);
    }

    fn pong(&self) {
        self.cache.pong();
    }

    fn connected_epoch(&self) -> u64 {
        self.cache.connected_epoch()
    }

    fn push(&self, epoch: u64, push: PushInfo) {
        match push.kind {
            PushKind::Invalidate => match push.data.first() {
                Some(Value::Array(keys)) => {
                    for key in keys {
                        let Value::BulkString(name) = key else {
                            continue;
                        };
                        // Owner-index keys share the prefix; only session keys name a session.
                        if let Some(session) = std::str::from_utf8(name)
                            .ok()
                            .and_then(|name| Keys::session_of(&self.prefix, name))
                        {
                            self.cache.invalidate(&session);
                        }
                    }
                }
                // A null invalidation: Redis flushed its tracking table (FLUSHALL, or too many
                // tracked keys). Anything may have changed.
                _ => self.cache.flush(),
            },
            PushKind::Disconnection => self.cache.disconnected(epoch),
            _ => {}
        }
    }
}

/// The tracked connection, reopened on demand.
pub(super) struct Tracked {
    client: redis::Client,
    prefix: String,
    timeout: Duration,
    heartbeat: Duration,
    heartbeat_started: std::sync::atomic::AtomicBool,
    current: RwLock<Option<(MultiplexedConnection, u64)>>,
    connecting: tokio::sync::Mutex<()>,
    epochs: AtomicU64,
    receiver: Arc<dyn Invalidations>,
}

impl Tracked {
    /// `client` must speak RESP3.
    pub(super) fn new(
        client: redis::Client,
        prefix: String,
        timeout: Duration,
        heartbeat: Duration,
        receiver: Arc<dyn Invalidations>,
    ) -> Self {
        Self {
            client,
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
    fn current(&self) -> Option<(MultiplexedConnection, u64)> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
            .filter(|(_, epoch)| self.receiver.connected_epoch() == *epoch)
    }

    pub(super) fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The connection, opened (with tracking on) if there is none. The first one starts the
    /// heartbeat, which ends with the store.
    pub(super) async fn connection(self: &Arc<Self>) -> Result<MultiplexedConnection, RedisError> {
        if let Some((connection, _)) = self.current() {
            return Ok(connection);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some((connection, _)) = self.current() {
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
        let mut connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        // Every key under the prefix, whoever reads it; not the writes of this connection,
        // which the store applies to the cache itself.
        redis::cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .arg("BCAST")
            .arg("PREFIX")
            .arg(&self.prefix)
            .arg("NOLOOP")
            .exec_async(&mut connection)
            .await?;
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((connection.clone(), epoch));
        self.receiver.connected(epoch);
        tracing::debug!(epoch, "redis cache: tracking on");
        if !self.heartbeat_started.swap(true, Ordering::AcqRel) {
            tokio::spawn(heartbeat(Arc::downgrade(self), self.heartbeat));
        }
        Ok(connection)
    }

    /// An operation failed with `error` (`None`: it timed out): unless the server merely
    /// refused the command, the connection is dropped with everything cached through it.
    pub(super) fn failed(&self, error: Option<&RedisError>) {
        if super::connection::connection_in_doubt(error) {
            self.drop_connection();
        }
    }

    fn drop_connection(&self) {
        let dropped = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some((_, epoch)) = dropped {
            self.receiver.disconnected(epoch);
            tracing::warn!(
                epoch,
                "redis cache: connection lost; cache dropped until tracking is back"
            );
        }
    }
}

/// Pings the connection every `interval` while the store lives; an unanswered ping drops the
/// connection (and the cache with it).
pub(super) async fn heartbeat(tracked: Weak<Tracked>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(tracked) = tracked.upgrade() else {
            return;
        };
        let Some((mut connection, _)) = tracked.current() else {
            continue;
        };
        let ping_cmd = redis::cmd("PING");
        let ping = ping_cmd.query_async::<Value>(&mut connection);
        match tokio::time::timeout(tracked.timeout.min(interval.saturating_mul(3)), ping).await {
            Ok(Ok(_)) => tracked.receiver.pong(),
            Ok(Err(err)) => tracked.failed(Some(&err)),
            Err(_) => tracked.failed(None),
        }
    }
}
