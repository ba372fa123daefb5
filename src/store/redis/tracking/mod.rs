//! How a cached [`RedisStore`](super::RedisStore) learns that a session changed: RESP3
//! connections with `CLIENT TRACKING ON BCAST`, whose invalidation pushes reach the local cache.
//!
//! - [`server`]: one server (or the master Sentinel names): a connection for the commands,
//!   whose tracking sends its invalidations to a second, quiet one (`NOLOOP`: the store applies
//!   its own writes to the cache).
//! - [`cluster`]: a Redis Cluster, such a pair for every master beside the cluster connection,
//!   torn down on any change of the slot map.
//! - [`socket`]: the sockets of those connections, opened by the store, and how it tells that
//!   every invalidation that reached one has been applied.
//! - [`gather`]: the commands connection's writes, held back one pass to leave as one.

use std::{sync::Arc, time::Instant};

use redis::{aio::MultiplexedConnection, PushInfo, PushKind, RedisError, Value};

use super::{cache::Cache, layout::Keys};
use crate::session::Session;

#[cfg(feature = "cluster")]
pub(super) mod cluster;
mod gather;
pub(super) mod server;
pub(super) mod socket;

/// Where the cache's invalidations go, type-erased over the session type.
pub(super) trait Invalidations: Send + Sync + 'static {
    /// Tracking is on for connection (or set of connections) `epoch`.
    fn connected(&self, epoch: u64);
    /// Connection `epoch` broke or is in doubt.
    fn disconnected(&self, epoch: u64);
    /// Every connection of `epoch` answered a heartbeat sent at `sent`.
    fn pong(&self, epoch: u64, sent: Instant);
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

    fn pong(&self, epoch: u64, sent: Instant) {
        self.cache.pong(epoch, sent);
    }

    fn connected_epoch(&self) -> u64 {
        self.cache.connected_epoch()
    }

    fn push(&self, epoch: u64, push: PushInfo) {
        let ended = match &push.kind {
            PushKind::Disconnection => true,
            // The quiet connection is gone: Redis tells the commands connection.
            PushKind::Other(kind) => kind == "tracking-redir-broken",
            _ => false,
        };
        if ended {
            // Also for a connection still being set up: it must not be connected after this.
            self.cache.disconnected(epoch);
            return;
        }
        // A push from a connection the cache does not listen to (yet, or any more) says nothing
        // about now: the cache is emptied when a connection's tracking goes on.
        if self.cache.connected_epoch() != epoch || push.kind != PushKind::Invalidate {
            return;
        }
        match push.data.first() {
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
        }
    }
}

/// Switches tracking on, on the connection the store's commands go through, for every key under
/// `prefix`, whoever changes it, except through this connection (`NOLOOP`: the store applies
/// its own writes to the cache); the invalidations go to the connection `to` (`REDIRECT`), which
/// carries nothing else, so that an unread byte on it can only be an invalidation.
async fn track(
    connection: &mut MultiplexedConnection,
    prefix: &str,
    to: i64,
) -> Result<(), RedisError> {
    redis::cmd("CLIENT")
        .arg("TRACKING")
        .arg("ON")
        .arg("REDIRECT")
        .arg(to)
        .arg("BCAST")
        .arg("PREFIX")
        .arg(prefix)
        .arg("NOLOOP")
        .exec_async(connection)
        .await
}
