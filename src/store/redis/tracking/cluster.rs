//! Tracking on a Redis Cluster. Commands go through the cluster connection (the redis crate
//! routes them, follows `MOVED`/`ASK` and failovers); beside it, one RESP3 connection to each
//! master has `CLIENT TRACKING ON BCAST PREFIX <prefix>`, so a change to a session key on any
//! master reaches the cache, whichever slot the key lives in. The set of those connections (a
//! generation, one epoch) serves only as long as:
//!
//! - every connection is up and answered the last heartbeat within the lease, and
//! - the slot map (`CLUSTER SLOTS`: which master serves which slots), read again by every
//!   heartbeat, is the one the generation was built for.
//!
//! A failover, a resharding, a new or removed master, a lost connection or a missed heartbeat
//! ends the generation: the cache is emptied and serves nothing until the next heartbeat has
//! built a new one on the new map.
//!
//! While a generation lives, a command on a session's keys goes to the master that serves its
//! slot over that master's tracking connection, which has `NOLOOP`: the store's own writes (and
//! the expiry a sliding read moves) do not come back as invalidations, exactly as on one server,
//! and the cache keeps what the store wrote or read. A command the master redirects (`MOVED`,
//! `ASK`: the map changed) ends the generation and goes through the cluster connection, as does
//! every command while there is no generation.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, RwLock, Weak,
    },
    time::{Duration, Instant},
};

use redis::{
    aio::{ConnectionLike, MultiplexedConnection},
    cluster_async::ClusterConnection,
    cluster_routing::{RoutingInfo, SingleNodeRoutingInfo},
    Arg, AsyncConnectionConfig, Cmd, ConnectionAddr, ConnectionInfo, Pipeline, PushInfo,
    RedisError, Value,
};

use super::Invalidations;
use crate::store::redis::connection::connection_in_doubt;

/// Why a generation could not be built or had to end.
#[derive(Debug)]
enum Broken {
    Redis(RedisError),
    /// The heartbeat or a command did not answer within its time.
    Timeout,
    /// The slot map changed (a failover, a resharding, a master added or removed).
    SlotMapChanged,
    /// `CLUSTER SLOTS` answered something that is not a slot map.
    NoSlotMap,
    /// An operation failed in a way that may mean a node went away.
    CommandFailed,
    /// A tracking connection closed.
    Disconnected,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Broken::Redis(err) => write!(f, "{err}"),
            Broken::Timeout => f.write_str("no answer in time"),
            Broken::SlotMapChanged => f.write_str("the slot map changed"),
            Broken::NoSlotMap => f.write_str("CLUSTER SLOTS gave no slot map"),
            Broken::CommandFailed => f.write_str("a command failed"),
            Broken::Disconnected => f.write_str("a tracking connection closed"),
        }
    }
}

impl From<RedisError> for Broken {
    fn from(err: RedisError) -> Self {
        Broken::Redis(err)
    }
}

/// Which master serves which slots: `(first, last, host, port, node id)` per range, sorted.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SlotMap(Vec<(i64, i64, String, i64, String)>);

impl SlotMap {
    /// Reads a `CLUSTER SLOTS` reply; replicas are left out (they serve no writes).
    fn parse(reply: &Value) -> Option<Self> {
        let Value::Array(ranges) = reply else {
            return None;
        };
        let mut map = Vec::with_capacity(ranges.len());
        for range in ranges {
            let Value::Array(fields) = range else {
                return None;
            };
            let (Some(Value::Int(first)), Some(Value::Int(last)), Some(Value::Array(master))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                return None;
            };
            let text = |value: Option<&Value>| match value {
                Some(Value::BulkString(bytes)) => String::from_utf8(bytes.clone()).ok(),
                Some(Value::SimpleString(text)) => Some(text.clone()),
                _ => None,
            };
            let (Some(host), Some(Value::Int(port))) = (text(master.first()), master.get(1)) else {
                return None;
            };
            let id = text(master.get(2)).unwrap_or_default();
            map.push((*first, *last, host, *port, id));
        }
        map.sort();
        (!map.is_empty()).then_some(SlotMap(map))
    }

    /// Each master once: `(host, port)`.
    fn masters(&self) -> Vec<(String, u16)> {
        let mut masters: Vec<(String, u16)> = self
            .0
            .iter()
            .filter_map(|(_, _, host, port, _)| Some((host.clone(), u16::try_from(*port).ok()?)))
            .collect();
        masters.sort();
        masters.dedup();
        masters
    }
}

/// One set of tracking connections, one per master of one slot map.
struct Generation {
    epoch: u64,
    slots: SlotMap,
    /// In the order of `slots.masters()`.
    masters: Vec<MultiplexedConnection>,
    /// For each range of `slots`, the index of its master in `masters`.
    owners: Vec<usize>,
}

impl Generation {
    /// The tracking connection of the master that serves `slot`.
    fn master_for(&self, slot: i64) -> Option<MultiplexedConnection> {
        let range = self
            .slots
            .0
            .iter()
            .position(|(first, last, ..)| (*first..=*last).contains(&slot))?;
        let owner = *self.owners.get(range)?;
        self.masters.get(owner).cloned()
    }
}

/// The key a command of the store acts on (`EVAL`/`EVALSHA`: its first key), if any.
fn key_of(cmd: &Cmd) -> Option<&[u8]> {
    let mut args = cmd.args_iter().map(|arg| match arg {
        Arg::Simple(bytes) => Some(bytes),
        _ => None,
    });
    let name = args.next()??;
    let key = if name.eq_ignore_ascii_case(b"EVALSHA") || name.eq_ignore_ascii_case(b"EVAL") {
        let numkeys = args.nth(1)??;
        if numkeys == b"0" {
            return None;
        }
        args.next()??
    } else if name.eq_ignore_ascii_case(b"PING")
        || name.eq_ignore_ascii_case(b"SCRIPT")
        || name.eq_ignore_ascii_case(b"SCAN")
        || name.eq_ignore_ascii_case(b"CLUSTER")
    {
        return None;
    } else {
        args.next()??
    };
    Some(key)
}

/// The Cluster hash slot of `key`: CRC16 (XMODEM) of its hash tag, or of the whole key.
fn slot_of(key: &[u8]) -> i64 {
    let tagged = key
        .iter()
        .position(|byte| *byte == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|byte| *byte == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    let mut crc: u16 = 0;
    for byte in tagged {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    i64::from(crc % 16384)
}

/// Whether the master did not run the command because the slot is served elsewhere now.
fn redirected(code: Option<&str>) -> bool {
    matches!(code, Some("MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN"))
}

/// The cluster connection for commands and the tracking connections beside it.
pub(in crate::store::redis) struct TrackedCluster {
    commands: ClusterConnection,
    /// A node's settings (credentials, TLS, RESP3); each master's connection takes them with
    /// its own address.
    template: ConnectionInfo,
    #[cfg(feature = "redis-tls")]
    certificates: Option<redis::TlsCertificates>,
    prefix: String,
    timeout: Duration,
    current: RwLock<Option<Arc<Generation>>>,
    /// One build at a time (the watch task's and the one at connect).
    building: tokio::sync::Mutex<()>,
    epochs: AtomicU64,
    /// Whether the last attempt to build a generation failed (its failures are logged once).
    failing: std::sync::atomic::AtomicBool,
    receiver: Arc<dyn Invalidations>,
}

/// What a [`TrackedCluster`] is made of, kept to make another with a new prefix.
#[derive(Clone)]
pub(in crate::store::redis) struct ClusterSettings {
    pub(in crate::store::redis) commands: ClusterConnection,
    pub(in crate::store::redis) template: ConnectionInfo,
    #[cfg(feature = "redis-tls")]
    pub(in crate::store::redis) certificates: Option<redis::TlsCertificates>,
}

impl TrackedCluster {
    /// Tracking for the keys under `prefix`, kept up by a task that lives as long as the
    /// store: it builds the first generation at once and a new one after any break.
    pub(in crate::store::redis) fn start(
        settings: ClusterSettings,
        prefix: String,
        timeout: Duration,
        heartbeat: Duration,
        receiver: Arc<dyn Invalidations>,
    ) -> Arc<Self> {
        let tracked = Arc::new(Self {
            commands: settings.commands,
            template: settings.template,
            #[cfg(feature = "redis-tls")]
            certificates: settings.certificates,
            prefix,
            timeout,
            current: RwLock::new(None),
            building: tokio::sync::Mutex::new(()),
            epochs: AtomicU64::new(0),
            failing: std::sync::atomic::AtomicBool::new(false),
            receiver,
        });
        tokio::spawn(watch(Arc::downgrade(&tracked), heartbeat));
        tracked
    }

    pub(in crate::store::redis) fn settings(&self) -> ClusterSettings {
        ClusterSettings {
            commands: self.commands.clone(),
            template: self.template.clone(),
            #[cfg(feature = "redis-tls")]
            certificates: self.certificates.clone(),
        }
    }

    /// The cluster connection, for what spans several masters (`SCAN`, `SCRIPT LOAD`).
    pub(in crate::store::redis) fn commands(&self) -> ClusterConnection {
        self.commands.clone()
    }

    /// The tracking connection of the master serving the slot of `cmd`'s key, with its epoch.
    fn route(&self, cmd: &Cmd) -> Option<(u64, MultiplexedConnection)> {
        let generation = self.current()?;
        if generation.epoch != self.receiver.connected_epoch() {
            return None;
        }
        let connection = generation.master_for(slot_of(key_of(cmd)?))?;
        Some((generation.epoch, connection))
    }

    /// Sends `cmd` to its master's tracking connection (the cluster connection if there is
    /// none, or if the master redirected it).
    pub(in crate::store::redis) async fn command(&self, cmd: &Cmd) -> Result<Value, RedisError> {
        if let Some((epoch, mut connection)) = self.route(cmd) {
            match connection.req_packed_command(cmd).await {
                Err(err) if redirected(err.code()) => self.end(epoch, &Broken::SlotMapChanged),
                outcome => return outcome,
            }
        }
        self.commands.clone().req_packed_command(cmd).await
    }

    /// Sends `pipeline` (all on one session's keys, so one slot) like [`Self::command`].
    pub(in crate::store::redis) async fn pipeline(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> Result<Vec<Value>, RedisError> {
        if let Some((epoch, mut connection)) =
            pipeline.cmd_iter().next().and_then(|cmd| self.route(cmd))
        {
            let outcome = connection
                .req_packed_commands(pipeline, offset, count)
                .await;
            let moved = match &outcome {
                Err(err) => redirected(err.code()),
                Ok(replies) => replies.iter().any(
                    |reply| matches!(reply, Value::ServerError(err) if redirected(Some(err.code()))),
                ),
            };
            if !moved {
                return outcome;
            }
            self.end(epoch, &Broken::SlotMapChanged);
        }
        self.commands
            .clone()
            .req_packed_commands(pipeline, offset, count)
            .await
    }

    /// Builds a generation now (at connect, so that the cache serves from the first request).
    pub(in crate::store::redis) async fn track_now(self: &Arc<Self>) -> Result<(), RedisError> {
        let tracked = Arc::clone(self);
        // On a task of its own: connecting to every master is a deep future.
        let build =
            tokio::spawn(
                async move { tokio::time::timeout(tracked.timeout, tracked.build()).await },
            );
        match build.await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(Broken::Redis(err)))) => Err(err),
            Ok(Ok(Err(other))) => Err(RedisError::from(std::io::Error::other(other.to_string()))),
            Ok(Err(_)) => Err(RedisError::from(std::io::Error::from(
                std::io::ErrorKind::TimedOut,
            ))),
            Err(_) => Err(RedisError::from(std::io::Error::other(
                "the task building the tracking connections failed",
            ))),
        }
    }

    fn current(&self) -> Option<Arc<Generation>> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// An operation failed with `error` (`None`: it timed out): unless the server merely
    /// refused the command, a node may be gone, and the generation ends.
    pub(in crate::store::redis) fn failed(&self, error: Option<&RedisError>) {
        if connection_in_doubt(error) {
            if let Some(generation) = self.current() {
                self.end(generation.epoch, &Broken::CommandFailed);
            }
        }
    }

    fn end(&self, epoch: u64, why: &Broken) {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.as_ref().is_some_and(|open| open.epoch == epoch) {
            *current = None;
            tracing::warn!(
                epoch,
                %why,
                "redis cluster cache: tracking lost; cache dropped until it is back"
            );
        }
        drop(current);
        self.receiver.disconnected(epoch);
    }

    /// The slot map as some node of the cluster sees it.
    async fn slot_map_from_cluster(&self) -> Result<SlotMap, Broken> {
        let mut commands = self.commands.clone();
        let reply = commands
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await?;
        SlotMap::parse(&reply).ok_or(Broken::NoSlotMap)
    }

    /// A client for the master at `host:port`, with the template's settings.
    fn client_for(&self, host: &str, port: u16) -> Result<redis::Client, RedisError> {
        let addr = match self.template.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host.to_owned(), port),
        };
        let info = self.template.clone().set_addr(addr);
        #[cfg(feature = "redis-tls")]
        if let Some(certificates) = &self.certificates {
            return redis::Client::build_with_tls(info, certificates.clone());
        }
        redis::Client::open(info)
    }

    /// Builds a generation: reads the slot map, connects to every master in it with tracking
    /// on, and checks that the map did not change meanwhile.
    async fn build(&self) -> Result<(), Broken> {
        let _one_at_a_time = self.building.lock().await;
        if self
            .current()
            .is_some_and(|open| open.epoch == self.receiver.connected_epoch())
        {
            return Ok(());
        }
        let slots = self.slot_map_from_cluster().await?;
        let epoch = self.epochs.fetch_add(1, Ordering::Relaxed) + 1;
        let mut masters = Vec::new();
        let addresses = slots.masters();
        for (host, port) in &addresses {
            let (host, port) = (host.as_str(), *port);
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
                .client_for(host, port)?
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            // Not the writes of this connection: the store applies them to the cache itself.
            super::track(&mut connection, &self.prefix, true).await?;
            masters.push(connection);
        }
        // Tracking is on everywhere; if the map is still the same, no master was missed.
        let Some(first) = masters.first_mut() else {
            return Err(Broken::NoSlotMap);
        };
        if slot_map(first).await? != slots {
            return Err(Broken::SlotMapChanged);
        }
        let owners = slots
            .0
            .iter()
            .map(|(_, _, host, port, _)| {
                addresses
                    .iter()
                    .position(|(h, p)| h == host && i64::from(*p) == *port)
                    .unwrap_or(usize::MAX)
            })
            .collect();
        let generation = Arc::new(Generation {
            epoch,
            slots,
            masters,
            owners,
        });
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(generation);
        self.receiver.connected(epoch);
        tracing::debug!(epoch, "redis cluster cache: tracking on every master");
        Ok(())
    }

    /// A heartbeat: every master answers a PING, and one of them (in turn) the slot map, which
    /// must be the generation's.
    async fn check(&self, generation: &Generation, turn: usize) -> Result<(), Broken> {
        for connection in &generation.masters {
            let mut connection = connection.clone();
            redis::cmd("PING")
                .query_async::<Value>(&mut connection)
                .await?;
        }
        let count = generation.masters.len().max(1);
        if let Some(connection) = generation.masters.get(turn % count) {
            let mut connection = connection.clone();
            if slot_map(&mut connection).await? != generation.slots {
                return Err(Broken::SlotMapChanged);
            }
        }
        Ok(())
    }
}

async fn slot_map(connection: &mut MultiplexedConnection) -> Result<SlotMap, Broken> {
    let reply: Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(connection)
        .await?;
    SlotMap::parse(&reply).ok_or(Broken::NoSlotMap)
}

/// Keeps tracking up while the store lives: checks the generation every `interval` (the lease
/// counts from the check's start), and builds a new one when there is none.
async fn watch(tracked: Weak<TrackedCluster>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut turn = 0usize;
    loop {
        ticks.tick().await;
        let Some(tracked) = tracked.upgrade() else {
            return;
        };
        let within = tracked.timeout.min(interval.saturating_mul(3));
        match tracked.current() {
            Some(generation) if tracked.receiver.connected_epoch() == generation.epoch => {
                let sent = Instant::now();
                turn = turn.wrapping_add(1);
                match tokio::time::timeout(within, tracked.check(&generation, turn)).await {
                    Ok(Ok(())) => tracked.receiver.pong(generation.epoch, sent),
                    Ok(Err(why)) => tracked.end(generation.epoch, &why),
                    Err(_) => tracked.end(generation.epoch, &Broken::Timeout),
                }
            }
            // Ended by a disconnection push, a failed command or a check.
            stale => {
                if let Some(generation) = stale {
                    tracked.end(generation.epoch, &Broken::Disconnected);
                }
                let outcome = match tokio::time::timeout(tracked.timeout, tracked.build()).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(Broken::Timeout),
                };
                match outcome {
                    Ok(()) => {
                        if tracked.failing.swap(false, Ordering::AcqRel) {
                            tracing::info!("redis cluster cache: tracking is back");
                        }
                    }
                    Err(why) => {
                        if !tracked.failing.swap(true, Ordering::AcqRel) {
                            tracing::warn!(%why, "redis cluster cache: cannot track yet; retrying every heartbeat");
                        } else {
                            tracing::debug!(%why, "redis cluster cache: cannot track yet");
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_the_clusters() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot_of(b"123456789"), 0x31C3);
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        assert_eq!(slot_of(b"foo{}{bar}"), slot_of(b"foo{}{bar}"));
        assert_eq!(slot_of(b"foo{{bar}}zap"), slot_of(b"{bar"));
        assert_eq!(slot_of(b"session:{abc}:live"), slot_of(b"abc"));
    }

    #[test]
    fn commands_are_routed_by_their_first_key() {
        let mut eval = redis::cmd("EVALSHA");
        eval.arg("0123abcd")
            .arg(2)
            .arg("session:{k}")
            .arg("session:{k}:live")
            .arg(5);
        assert_eq!(key_of(&eval), Some(&b"session:{k}"[..]));
        let mut get = redis::cmd("GETEX");
        get.arg("session:{k}:live").arg("PXAT").arg(1);
        assert_eq!(key_of(&get), Some(&b"session:{k}:live"[..]));
        let mut none = redis::cmd("EVAL");
        none.arg("return 1").arg(0);
        assert_eq!(key_of(&none), None);
        assert_eq!(key_of(&redis::cmd("PING")), None);
        let mut load = redis::cmd("SCRIPT");
        load.arg("LOAD").arg("return 1");
        assert_eq!(key_of(&load), None);
    }
}
