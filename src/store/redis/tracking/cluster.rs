//! Tracking on a Redis Cluster. Commands go through the cluster connection (the redis crate
//! routes them, follows `MOVED`/`ASK` and failovers); beside it, a pair of connections to each
//! master (commands with `CLIENT TRACKING ON REDIRECT ... BCAST PREFIX <prefix> NOLOOP`, and the
//! quiet one the invalidations go to), so a change to a session key on any master reaches the
//! cache, whichever slot the key lives in. The set of those connections (a
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
//! slot over that master's tracked commands connection (`NOLOOP`, invalidations redirected to
//! the master's quiet connection): the store's own writes (and the expiry a sliding read moves)
//! do not come back as invalidations, exactly as on one server, and the cache keeps what the
//! store wrote or read. A command the master redirects (`MOVED`,
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
    Arg, Cmd, ConnectionAddr, ConnectionInfo, Pipeline, PushInfo, RedisError, Value,
};

use crate::store::redis::connection::connection_in_doubt;

use super::{
    socket::{self, Pair, Pushes, Settled, Tls},
    Invalidations,
};

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
    /// A master reports `cluster_state:fail` (cut off from the majority, or slots uncovered).
    ClusterDown,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Broken::Redis(err) => write!(f, "{err}"),
            Broken::Timeout => f.write_str("no answer in time"),
            Broken::SlotMapChanged => f.write_str("the slot map changed"),
            Broken::NoSlotMap => {
                f.write_str("CLUSTER SLOTS gave no map of every slot to one master")
            }
            Broken::CommandFailed => f.write_str("a command failed"),
            Broken::Disconnected => f.write_str("a tracking connection closed"),
            Broken::ClusterDown => f.write_str("a master reports the cluster down"),
        }
    }
}

impl From<RedisError> for Broken {
    fn from(err: RedisError) -> Self {
        Broken::Redis(err)
    }
}

/// Which master serves which slot, as `CLUSTER SLOTS` tells it: every slot of the 16,384 exactly
/// once, or no map at all.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SlotMap {
    /// `(first, last, index into masters)`, sorted, without gaps or overlaps.
    ranges: Vec<(u16, u16, usize)>,
    /// `(host, port, node id)` of each master, sorted.
    masters: Vec<(String, u16, String)>,
}

/// How many hash slots a Cluster has.
const SLOTS: u32 = 16_384;

impl SlotMap {
    /// Reads a `CLUSTER SLOTS` reply (replicas are left out: they serve no writes). `None` for
    /// anything but a map of every slot to one master: a cluster with unassigned slots is not
    /// one the cache can trust.
    fn parse(reply: &Value) -> Option<Self> {
        let Value::Array(ranges) = reply else {
            return None;
        };
        let mut raw = Vec::with_capacity(ranges.len());
        for range in ranges {
            let Value::Array(fields) = range else {
                return None;
            };
            let (Some(Value::Int(first)), Some(Value::Int(last)), Some(Value::Array(master))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                return None;
            };
            let (Some(host), Some(Value::Int(port))) = (text(master.first()), master.get(1)) else {
                return None;
            };
            let id = text(master.get(2)).unwrap_or_default();
            let (first, last, port) = (
                u16::try_from(*first).ok()?,
                u16::try_from(*last).ok()?,
                u16::try_from(*port).ok()?,
            );
            raw.push((first, last, (host, port, id)));
        }
        let mut masters: Vec<(String, u16, String)> =
            raw.iter().map(|(_, _, master)| master.clone()).collect();
        masters.sort();
        masters.dedup();
        let mut ranges = Vec::with_capacity(raw.len());
        for (first, last, master) in raw {
            let index = masters.binary_search(&master).ok()?;
            ranges.push((first, last, index));
        }
        ranges.sort();
        let mut next: u32 = 0;
        for (first, last, _) in &ranges {
            if u32::from(*first) != next || last < first {
                return None;
            }
            next = u32::from(*last) + 1;
        }
        (next == SLOTS).then_some(SlotMap { ranges, masters })
    }

    /// The index of the master serving `slot`.
    fn master_of(&self, slot: u16) -> Option<usize> {
        let at = self.ranges.partition_point(|(first, ..)| *first <= slot);
        let (first, last, master) = self.ranges.get(at.checked_sub(1)?)?;
        (*first..=*last).contains(&slot).then_some(*master)
    }
}

/// A reply's text (`CLUSTER SLOTS` fields, `CLUSTER INFO`).
fn text(value: Option<&Value>) -> Option<String> {
    match value {
        Some(Value::BulkString(bytes)) => String::from_utf8(bytes.clone()).ok(),
        Some(Value::SimpleString(text)) => Some(text.clone()),
        Some(Value::VerbatimString { text, .. }) => Some(text.clone()),
        _ => None,
    }
}

/// One set of tracking connections, one per master of one slot map.
struct Generation {
    epoch: u64,
    slots: SlotMap,
    /// Each master's connections, in the order of `slots.masters`.
    masters: Vec<Pair>,
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
fn slot_of(key: &[u8]) -> u16 {
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
    crc % 16384
}

/// The slot every keyed command of `pipeline` acts on, if they share one (the store's
/// pipelines are on one session's keys, which share a hash tag).
fn one_slot(pipeline: &Pipeline) -> Option<u16> {
    let mut slots = pipeline.cmd_iter().filter_map(key_of).map(slot_of);
    let slot = slots.next()?;
    slots.all(|other| other == slot).then_some(slot)
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
    tls: Tls,
    runtime: tokio::runtime::Handle,
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
    pub(in crate::store::redis) tls: Tls,
    /// The runtime the store was connected on: the watch task of every prefix runs there (so
    /// `with_key_prefix` needs no runtime of its own).
    pub(in crate::store::redis) runtime: tokio::runtime::Handle,
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
            tls: settings.tls,
            runtime: settings.runtime,
            prefix,
            timeout,
            current: RwLock::new(None),
            building: tokio::sync::Mutex::new(()),
            epochs: AtomicU64::new(0),
            failing: std::sync::atomic::AtomicBool::new(false),
            receiver,
        });
        tracked
            .runtime
            .spawn(watch(Arc::downgrade(&tracked), heartbeat));
        tracked
    }

    // Without TLS the setting is an `Option<Infallible>`, which is `Copy`.
    #[cfg_attr(not(feature = "redis-tls"), allow(clippy::clone_on_copy))]
    pub(in crate::store::redis) fn settings(&self) -> ClusterSettings {
        ClusterSettings {
            commands: self.commands.clone(),
            template: self.template.clone(),
            tls: self.tls.clone(),
            runtime: self.runtime.clone(),
        }
    }

    /// What tells whether every invalidation that reached the tracking connection of the
    /// master serving `key`'s slot has been applied; `None` without a generation.
    pub(in crate::store::redis) fn watch(&self, key: &[u8]) -> Option<(Arc<Settled>, u64)> {
        let generation = self.current()?;
        if generation.epoch != self.receiver.connected_epoch() {
            return None;
        }
        let master = generation.slots.master_of(slot_of(key))?;
        generation
            .masters
            .get(master)
            .map(|pair| (Arc::clone(&pair.settled), generation.epoch))
    }

    /// Holds every master's tracking connection back from reading for `pause` (fault injection
    /// for tests).
    #[cfg(feature = "testing")]
    pub(in crate::store::redis) fn pause(&self, pause: Duration) {
        if let Some(generation) = self.current() {
            for pair in &generation.masters {
                pair.settled.pause(pause);
            }
        }
    }

    /// Holds back for `hold` the replies of the commands connection of the master serving
    /// `redis_key`'s slot (fault injection for tests).
    #[cfg(feature = "testing")]
    pub(in crate::store::redis) fn hold_replies(&self, redis_key: &str, hold: Duration) {
        if let Some(generation) = self.current() {
            if let Some(pair) = generation
                .slots
                .master_of(slot_of(redis_key.as_bytes()))
                .and_then(|master| generation.masters.get(master))
            {
                pair.settled.hold_replies(hold);
            }
        }
    }

    /// The cluster connection, for what spans several masters (`SCAN`, `SCRIPT LOAD`).
    pub(in crate::store::redis) fn commands(&self) -> ClusterConnection {
        self.commands.clone()
    }

    /// The tracking connection of the master serving `slot`, with its epoch. A live generation
    /// whose map names no master for the slot is not one to trust: it ends.
    fn route(&self, slot: u16) -> Option<(u64, MultiplexedConnection)> {
        let generation = self.current()?;
        if generation.epoch != self.receiver.connected_epoch() {
            return None;
        }
        let connection = generation
            .slots
            .master_of(slot)
            .and_then(|master| generation.masters.get(master))
            .map(|pair| pair.commands.clone());
        if connection.is_none() {
            self.end(generation.epoch, &Broken::NoSlotMap);
        }
        Some((generation.epoch, connection?))
    }

    /// Sends `cmd` to its master's tracking connection (the cluster connection if there is
    /// none, or if the master redirected it).
    pub(in crate::store::redis) async fn command(&self, cmd: &Cmd) -> Result<Value, RedisError> {
        if let Some((epoch, mut connection)) = key_of(cmd).and_then(|key| self.route(slot_of(key)))
        {
            match connection.req_packed_command(cmd).await {
                Err(err) if redirected(err.code()) => self.end(epoch, &Broken::SlotMapChanged),
                outcome => return self.reported(epoch, outcome),
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
        if let Some((epoch, mut connection)) = one_slot(pipeline).and_then(|slot| self.route(slot))
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
                return self.reported(epoch, outcome);
            }
            self.end(epoch, &Broken::SlotMapChanged);
        }
        self.commands
            .clone()
            .req_packed_commands(pipeline, offset, count)
            .await
    }

    /// `outcome` of a command sent through generation `epoch`, which ends if the failure puts
    /// its connection in doubt. (The store reports failures too, but with the generation in use
    /// when the operation began: the route may have been taken from a newer one.)
    fn reported<V>(&self, epoch: u64, outcome: Result<V, RedisError>) -> Result<V, RedisError> {
        if let Err(err) = &outcome {
            if connection_in_doubt(Some(err)) {
                self.failed(epoch);
            }
        }
        outcome
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

    /// The epoch of the generation in use now (0: none).
    pub(in crate::store::redis) fn epoch(&self) -> u64 {
        self.current().map_or(0, |generation| generation.epoch)
    }

    /// An operation that started under generation `epoch` failed in a way that may mean a node
    /// is gone: that generation ends (not one built since).
    pub(in crate::store::redis) fn failed(&self, epoch: u64) {
        if self
            .current()
            .is_some_and(|generation| generation.epoch == epoch)
        {
            self.end(epoch, &Broken::CommandFailed);
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

    /// The settings of the master at `host:port`: the template's, with its address.
    fn info_for(&self, host: &str, port: u16) -> ConnectionInfo {
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
        self.template.clone().set_addr(addr)
    }

    /// Builds a generation: reads the slot map, connects to every master in it with tracking
    /// on, and checks that the map did not change meanwhile.
    // Without TLS the setting is an `Option<Infallible>`, which is `Copy`.
    #[cfg_attr(not(feature = "redis-tls"), allow(clippy::clone_on_copy))]
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
        // Every master at once: a build takes one connection set-up, not one per master.
        let mut connecting = tokio::task::JoinSet::new();
        for (index, (host, port, _)) in slots.masters.iter().enumerate() {
            let receiver = Arc::clone(&self.receiver);
            let pushes: Pushes = Arc::new(move |push: PushInfo| receiver.push(epoch, push));
            let (info, tls) = (self.info_for(host, *port), self.tls.clone());
            let (prefix, timeout) = (self.prefix.clone(), self.timeout);
            connecting.spawn_on(
                async move {
                    let pair = socket::open_pair(&info, &tls, &prefix, pushes, timeout).await?;
                    Ok::<_, RedisError>((index, pair))
                },
                &self.runtime,
            );
        }
        let mut masters: Vec<Option<Pair>> = (0..slots.masters.len()).map(|_| None).collect();
        while let Some(joined) = connecting.join_next().await {
            let (index, pair) = joined.map_err(|_| Broken::Disconnected)??;
            if let Some(slot) = masters.get_mut(index) {
                *slot = Some(pair);
            }
        }
        let Some(masters) = masters.into_iter().collect::<Option<Vec<_>>>() else {
            return Err(Broken::Disconnected);
        };
        // Tracking is on everywhere; if every master still sees the same map, none was missed.
        let generation = Generation {
            epoch,
            slots,
            masters,
        };
        check(&generation).await?;
        // Published and connected under the lock that `end` takes: a generation cannot be
        // ended between the two and then serve.
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *current = Some(Arc::new(generation));
        self.receiver.connected(epoch);
        drop(current);
        tracing::debug!(epoch, "redis cluster cache: tracking on every master");
        Ok(())
    }
}

/// A heartbeat, on every master at once: its quiet connection answers a PING, and its commands
/// connection the slot map, which must be the generation's, and a cluster state of `ok` (a
/// master cut off from the majority reports `fail` while it still answers).
async fn check(generation: &Generation) -> Result<(), Broken> {
    let mut checks = tokio::task::JoinSet::new();
    for pair in &generation.masters {
        let (mut connection, mut quiet) = (pair.commands.clone(), pair.invalidations.clone());
        checks.spawn(async move {
            redis::cmd("PING").query_async::<Value>(&mut quiet).await?;
            let mut pipe = redis::pipe();
            pipe.cmd("CLUSTER").arg("SLOTS").cmd("CLUSTER").arg("INFO");
            let replies: Vec<Value> = pipe.query_async(&mut connection).await?;
            Ok::<_, RedisError>(replies)
        });
    }
    while let Some(joined) = checks.join_next().await {
        let replies = joined.map_err(|_| Broken::Disconnected)??;
        match (
            replies.first().and_then(SlotMap::parse),
            text(replies.get(1)),
        ) {
            (Some(map), _) if map != generation.slots => return Err(Broken::SlotMapChanged),
            (Some(_), Some(info)) if info.contains("cluster_state:ok") => {}
            (Some(_), Some(_)) => return Err(Broken::ClusterDown),
            _ => return Err(Broken::NoSlotMap),
        }
    }
    Ok(())
}

/// Keeps tracking up while the store lives: checks the generation every `interval` (the lease
/// counts from the check's start), and builds a new one when there is none.
async fn watch(tracked: Weak<TrackedCluster>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(tracked) = tracked.upgrade() else {
            return;
        };
        let within = tracked.timeout.min(interval.saturating_mul(3));
        match tracked.current() {
            Some(generation) if tracked.receiver.connected_epoch() == generation.epoch => {
                let sent = Instant::now();
                match tokio::time::timeout(within, check(&generation)).await {
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
