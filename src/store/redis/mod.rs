//! A Redis backend: one server through a reconnecting `ConnectionManager`, Redis Cluster, or
//! the master Redis Sentinel names; any of them with a local cache in front.
//!
//! `layout.rs` says where a session lives and in what form, `scripts.rs` holds the few writes
//! that need a script, `connection.rs` where commands go, `cache.rs` the local cache and
//! `tracking/` how Redis's invalidations reach it; this module runs the operations.

mod cache;
mod connection;
mod layout;
mod scripts;
#[cfg(feature = "sentinel")]
mod sentinel;
#[cfg(feature = "redis-tls")]
mod tls;
mod tracking;

use std::{fmt, future::Future, io::Write, sync::Arc, time::Duration};

use redis::{
    aio::ConnectionManager, Cmd, ErrorKind, FromRedisValue, Pipeline, RedisError, RedisWrite,
    ServerErrorKind, Value,
};

use self::connection::{Conn, Connection, Generation};
use time::OffsetDateTime;

pub use self::cache::LocalCache;
#[cfg(feature = "sentinel")]
#[cfg_attr(docsrs, doc(cfg(feature = "sentinel")))]
pub use self::sentinel::SentinelMaster;
#[cfg(feature = "redis-tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
pub use self::tls::RedisTls;
use self::{
    cache::{Cache, Lookup},
    layout::{at_millis, foreign, Keys, Pointer, StoredRecord, LIVE, RECORD_SLACK_MS},
    scripts::{Lua, Scripts},
    tracking::{
        server::{Source, Tracked},
        Receiver,
    },
};
use super::{Expect, Forward, LoadOptions, Loaded, Store, WriteOutcome};
use crate::{error::StoreError, id::SessionKey, record::Record, session::Session};

const DEFAULT_PREFIX: &str = "session:";

#[cfg(all(feature = "cluster", feature = "redis-tls"))]
type RedisTlsOption = RedisTls;
/// Without TLS support there are no TLS settings to pass.
#[cfg(all(feature = "cluster", not(feature = "redis-tls")))]
type RedisTlsOption = std::convert::Infallible;

/// The same settings, speaking RESP3 (invalidation pushes need it).
fn resp3(settings: &redis::RedisConnectionInfo) -> redis::RedisConnectionInfo {
    settings.clone().set_protocol(redis::ProtocolVersion::RESP3)
}
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_EXPIRED_RETENTION: Duration = Duration::from_secs(60 * 60);
const SCAN_BATCH: usize = 1000;

/// Sessions in Redis: each session is a record string, a `live` key that exists exactly as long
/// as the session is not idle-expired (and holds its pending flash), and, once it is
/// regenerated, a forwarding pointer; the three share a hash tag, so they sit in one Cluster
/// slot. The key is by default a digest of the cookie's ID, never the cookie itself.
///
/// # Commands per operation
/// The hot paths are native commands, pipelined; only writes that must check and change in one
/// step run a short script:
///
/// | operation | commands | round trips |
/// |---|---|---|
/// | load, sliding | `GETEX live PXAT`, `GETEX record PXAT` | 1 (2 when it takes a pending flash, or when the key is unknown or moved) |
/// | load, fixed expiry | `GET live`, `PEXPIRETIME live`, `GET record` | 1 (as above) |
/// | save, last write wins | `SET record XX KEEPTTL` (with a flash, also `SET live flash XX KEEPTTL`) | 1 (2 when the session moved or ended meanwhile) |
/// | save, optimistic | one script | 1 |
/// | create, delete | one script | 1 |
/// | regenerate, one server | a transaction: `SET … NX` of the new record and `live` key, then a script that turns the old session into the pointer (if it is live and the new record is this call's), or removes the new keys | 1 (2 if Redis lost the script) |
/// | regenerate, Cluster | `SET … NX` the new session, then a script turns the old one into the pointer (the new one is removed if that fails; a pending flash moves over after) | 2 or 3 |
/// | count | `SCAN MATCH prefix{*}:live` and one `GETRANGE` of each record's header (on every primary of a Cluster) | |
///
/// Each operation has a timeout (default 1 s), so a hung server never hangs a request. The
/// connection reconnects by itself after an outage. Needs Redis 7.0 or newer.
///
/// # Expiry
/// Redis enforces the idle timeout itself: the `live` key's TTL is the session's expiry, which
/// every sliding read moves to `now + idle` by the layer's clock (not capped at the deadline:
/// the deadline sits in the record's header and is checked on every read, and the expiry a load
/// reports never passes it). A save leaves the TTL where the load put it (the layer saves the
/// expiry it loaded). The record outlives its `live` key by the expired-record retention plus a
/// second; app servers whose clocks differ by more than that second, with the retention set to
/// zero, can see a busy session's record go before its `live` key.
///
/// # Revisions under last write wins
/// A last-write-wins save is a plain `SET`, so it stores the revision the engine gives it (the
/// revision it read, plus one): two saves that read the same revision both store the next one,
/// and a save from an older copy can store a revision the session already had. Last write wins
/// compares revisions in one place: a session that held only a flash is removed after the
/// flash is shown unless its revision moved meanwhile, so such a save racing that removal can be
/// removed with it. Optimistic saves run a script that checks the stored revision and moves it
/// on by one.
///
/// # Expired sessions
/// An idle-expired or past-deadline session's record stays in Redis for the expired-record
/// retention (default 1 hour, [`RedisStore::with_expired_retention`]) after its expiry, and in
/// sliding mode after the last request that presented it, so that a client that comes back
/// with its cookie is told "expired", not "unknown"; the TTL removes it then. It never becomes
/// live again: a last-write-wins save checks the expiry by the layer's clock, and one that
/// raced the expiry by a few milliseconds may still rewrite the record, which stays expired.
///
/// # Upgrading
/// Version 0.1 kept each session as a plain JSON string under `prefix + key`; this version never
/// reads those keys (they expire by their own TTL), so every session ends once when you upgrade
/// (users log in again).
///
/// ```no_run
/// use tower_typed_sessions::{store::redis::RedisStore, Session, SessionLayer};
/// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct Data;
/// # impl Session for Data {}
/// # async fn run() -> Result<(), tower_typed_sessions::StoreError> {
/// let store = RedisStore::<Data>::connect("redis://127.0.0.1:6379").await?;
/// let layer = SessionLayer::new(store.with_key_prefix("myapp:session:"));
/// # Ok(()) }
/// ```
pub struct RedisStore<T> {
    connection: Connection,
    prefix: String,
    command_timeout: Duration,
    retention: Duration,
    scripts: Scripts,
    /// The local cache ([`RedisStore::connect_cached`]), fed by the tracked connection.
    cache: Option<Arc<Cache<T>>>,
}

/// What a write leaves that the local cache may keep.
enum Fill<'a, T> {
    Nothing,
    /// A new session: nothing was pending under its key.
    Created(&'a Record<T>),
    /// A save, and the revision it stored: a flash may still be pending from before.
    Saved(&'a Record<T>, u64),
    /// A regenerate from the first key to `record.key`, and the revision it stored: the old
    /// session's pending flash, if any, moved along.
    Regenerated(&'a Record<T>, u64),
}

impl<T> Clone for Fill<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Fill<'_, T> {}

/// Room reserved in a command for the record's JSON: enough for a small session without
/// growing the buffer; a larger one grows it as needed.
const RECORD_SIZE_HINT: usize = 512;

/// Room reserved for a pending flash's JSON.
const FLASH_SIZE_HINT: usize = 128;

use crate::record::unix_ms as millis;

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `Expect` as a script argument: the revision as the header holds it (20 digits), or '' for
/// any.
fn expect_arg(expect: Expect) -> String {
    match expect {
        Expect::Revision(revision) => format!("{revision:020}"),
        _ => String::new(),
    }
}

/// The clock as a script compares it with a header's deadline (15 digits).
fn now_arg() -> String {
    format!("{:015}", millis(OffsetDateTime::now_utc()))
}

/// The revision a write stores: the expected one plus one, or under last write wins the one the
/// engine gives (the revision it read plus one).
fn next_revision<T>(record: &Record<T>, expect: Expect) -> u64 {
    match expect {
        Expect::Revision(revision) => revision.saturating_add(1),
        _ => record.revision,
    }
}

fn malformed(what: &'static str) -> StoreError {
    StoreError::Decode(format!("unexpected reply from Redis: {what}").into())
}

fn int(value: Option<&Value>) -> Result<i64, StoreError> {
    match value {
        Some(Value::Int(n)) => Ok(*n),
        Some(Value::BulkString(bytes)) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| malformed("not a number")),
        _ => Err(malformed("missing number")),
    }
}

fn bytes(value: Option<&Value>) -> Option<&[u8]> {
    match value {
        Some(Value::BulkString(bytes)) => Some(bytes),
        _ => None,
    }
}

/// Whether a reply says the command took effect: `OK` or a count above zero (not nil or 0).
fn took(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Okay) => true,
        Some(Value::Int(n)) => *n > 0,
        Some(Value::SimpleString(text)) => text == "OK",
        _ => false,
    }
}

fn key_of(value: Option<&Value>) -> Result<SessionKey, StoreError> {
    bytes(value)
        .and_then(SessionKey::parse_bytes)
        .ok_or_else(|| malformed("not a session key"))
}

/// A write script's reply: {1, ...} done, {0} missing, {2, key} moved, {3} conflict,
/// {4} collision, {9} not a session record.
fn write_outcome(reply: &[Value]) -> Result<WriteOutcome, StoreError> {
    Ok(match int(reply.first())? {
        1 => WriteOutcome::Done,
        0 => WriteOutcome::Missing,
        2 => WriteOutcome::Moved(key_of(reply.get(1))?),
        3 => WriteOutcome::Conflict,
        4 => WriteOutcome::Collision,
        9 => return Err(foreign()),
        _ => return Err(malformed("unknown outcome")),
    })
}

/// The first error among a pipeline's replies.
fn first_error(replies: &[Value]) -> Option<RedisError> {
    replies.iter().find_map(|reply| match reply {
        Value::ServerError(err) => Some(err.clone().into()),
        _ => None,
    })
}

/// Which of a regenerate's two `SET … NX` (record, `live` key: the first two replies) wrote.
fn written(replies: &[Value]) -> [bool; 2] {
    let wrote = |reply: Option<&Value>| matches!(reply, Some(Value::Okay));
    [wrote(replies.first()), wrote(replies.get(1))]
}

/// One `SCAN` step over the `live` keys (`pattern`: [`RedisStore::live_pattern`]).
fn scan_live(cursor: u64, pattern: &str) -> Cmd {
    let mut scan = redis::cmd("SCAN");
    scan.arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(SCAN_BATCH);
    scan
}

/// Escapes the glob characters of `text` for `SCAN MATCH`.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() + 4);
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

impl<T> Clone for RedisStore<T> {
    fn clone(&self) -> Self {
        Self {
            connection: self.connection.clone(),
            prefix: self.prefix.clone(),
            command_timeout: self.command_timeout,
            retention: self.retention,
            scripts: self.scripts.clone(),
            cache: self.cache.clone(),
        }
    }
}

impl<T> fmt::Debug for RedisStore<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("connection", &self.connection.kind())
            .field("prefix", &self.prefix)
            .field("command_timeout", &self.command_timeout)
            .field("expired_retention", &self.retention)
            .field(
                "local_cache",
                &self.cache.as_ref().map(|cache| &cache.settings),
            )
            .finish()
    }
}

/// The server `url` names, reached with the store's TCP settings
/// ([`connection::tcp_settings`]).
fn with_tcp_settings(url: &str) -> Result<redis::ConnectionInfo, StoreError> {
    use redis::IntoConnectionInfo;
    Ok(url
        .into_connection_info()
        .map_err(backend)?
        .set_tcp_settings(connection::tcp_settings()))
}

fn backend(err: RedisError) -> StoreError {
    // A non-string value under a session key is foreign data, not an outage.
    if err.code() == Some("WRONGTYPE") {
        return StoreError::Decode(Box::new(err));
    }
    if err.is_timeout() {
        return StoreError::Timeout;
    }
    StoreError::Backend(Box::new(err))
}

impl<T: Session> RedisStore<T> {
    /// Connects to one Redis server (`redis://host:port/db`; `rediss://` for TLS with the
    /// system's root certificates, feature `redis-tls`) through a `ConnectionManager`, which
    /// reconnects by itself after an outage. Fails if the server cannot be reached now, or if
    /// its certificate is not trusted.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_client(redis::Client::open(with_tcp_settings(url)?).map_err(backend)?).await
    }

    /// Connects to one Redis server over TLS (`rediss://host:port/db`) with your own CA or a
    /// client certificate ([`RedisTls`]); otherwise like [`RedisStore::connect`].
    #[cfg(feature = "redis-tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
    pub async fn connect_with_tls(url: &str, tls: RedisTls) -> Result<Self, StoreError> {
        let client = redis::Client::build_with_tls(with_tcp_settings(url)?, tls.certificates())
            .map_err(backend)?;
        Self::connect_client(client).await
    }

    async fn connect_client(client: redis::Client) -> Result<Self, StoreError> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(DEFAULT_COMMAND_TIMEOUT))
            // No reply timeout of the redis crate's own: the store's command timeout bounds
            // every operation, and one here would cut a longer one short.
            .set_response_timeout(None)
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(100));
        let manager = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(backend)?;
        Self::from_connection_manager(manager).await
    }

    /// Uses an existing `ConnectionManager` (for your own TLS, auth or timeouts). Loads the
    /// scripts, so the first request already takes one round trip.
    pub async fn from_connection_manager(manager: ConnectionManager) -> Result<Self, StoreError> {
        let store = Self::with_connection(Connection::Single(manager));
        store.load_scripts().await?;
        Ok(store)
    }

    /// Connects to a Redis Cluster through any of its nodes (`rediss://` URLs for TLS with the
    /// system's root certificates, feature `redis-tls`).
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub async fn connect_cluster(nodes: &[&str]) -> Result<Self, StoreError> {
        Self::connect_cluster_client(Self::cluster_builder(nodes)).await
    }

    /// Connects to a Redis Cluster over TLS (`rediss://` URLs) with your own CA or a client
    /// certificate ([`RedisTls`]).
    #[cfg(all(feature = "cluster", feature = "redis-tls"))]
    #[cfg_attr(docsrs, doc(cfg(all(feature = "cluster", feature = "redis-tls"))))]
    pub async fn connect_cluster_with_tls(
        nodes: &[&str],
        tls: RedisTls,
    ) -> Result<Self, StoreError> {
        Self::connect_cluster_client(Self::cluster_builder(nodes).certs(tls.certificates())).await
    }

    #[cfg(feature = "cluster")]
    fn cluster_builder(nodes: &[&str]) -> redis::cluster::ClusterClientBuilder {
        // A reply timeout per node: the redis crate's slot refreshes hold its connection table
        // while they ask the nodes, and one that never answers must not hold it for ever. It
        // also caps the uncached Cluster's operations at 1 s; a cached one sends sessions'
        // commands over its own connections, which only the store's command timeout bounds.
        redis::cluster::ClusterClient::builder(nodes.iter().copied())
            .tcp_settings(connection::tcp_settings())
            .connection_timeout(DEFAULT_COMMAND_TIMEOUT)
            .response_timeout(DEFAULT_COMMAND_TIMEOUT)
            .retries(2)
            // The redis crate waits at least 1.28 s before a retry (a request caught in a
            // failover would outlast the command timeout): 10 to 100 ms, so that a request
            // sent just before a replica's promotion is answered just after it.
            .min_retry_wait(10)
            .max_retry_wait(100)
    }

    #[cfg(feature = "cluster")]
    async fn connect_cluster_client(
        builder: redis::cluster::ClusterClientBuilder,
    ) -> Result<Self, StoreError> {
        let client = builder.build().map_err(backend)?;
        let connection = client.get_async_connection().await.map_err(backend)?;
        Self::from_cluster_connection(connection).await
    }

    /// Connects to the master that Redis Sentinel names `master_name`, through any of
    /// `sentinels` (`redis://host:26379` each). The store keeps one multiplexed connection to
    /// that master; when an operation fails in a way that may mean a failover (the connection
    /// broke or timed out, or the node answers `READONLY`), the next one asks the sentinels
    /// again, so the store follows a failover by itself: requests in between get the layer's
    /// error response, with no Set-Cookie. Fails if no sentinel names a reachable master now.
    /// A master that asks for a password, or a database other than 0, or TLS with your own
    /// CA: [`RedisStore::connect_sentinel_with`].
    #[cfg(feature = "sentinel")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sentinel")))]
    pub async fn connect_sentinel(
        sentinels: &[&str],
        master_name: &str,
    ) -> Result<Self, StoreError> {
        Self::connect_sentinel_with(sentinels, master_name, SentinelMaster::new()).await
    }

    /// [`RedisStore::connect_sentinel`] to a master reached as `master` says: its password (or
    /// ACL user), database and TLS settings ([`SentinelMaster`]).
    ///
    /// ```no_run
    /// use tower_typed_sessions::{store::redis::SentinelMaster, RedisStore, Session};
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct Data;
    /// # impl Session for Data {}
    /// # async fn run() -> Result<(), tower_typed_sessions::StoreError> {
    /// let master = SentinelMaster::new().with_password("the master's requirepass");
    /// let store =
    ///     RedisStore::<Data>::connect_sentinel_with(&["redis://10.0.0.1:26379"], "sessions", master)
    ///         .await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "sentinel")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sentinel")))]
    pub async fn connect_sentinel_with(
        sentinels: &[&str],
        master_name: &str,
        master: SentinelMaster,
    ) -> Result<Self, StoreError> {
        let client = master
            .client(sentinels, master_name, false)
            .map_err(backend)?;
        // The store's command timeout bounds every operation, the sentinels' answer included.
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(DEFAULT_COMMAND_TIMEOUT))
            .set_response_timeout(None);
        let master = connection::sentinel::Master::new(client, config);
        let store = Self::with_connection(Connection::Sentinel(std::sync::Arc::new(master)));
        store.load_scripts().await?;
        Ok(store)
    }

    /// Uses an existing cluster connection.
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub async fn from_cluster_connection(
        connection: redis::cluster_async::ClusterConnection,
    ) -> Result<Self, StoreError> {
        let store = Self::with_connection(Connection::Cluster(connection));
        store.load_scripts().await?;
        Ok(store)
    }

    fn with_connection(connection: Connection) -> Self {
        Self {
            connection,
            prefix: DEFAULT_PREFIX.to_owned(),
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            retention: DEFAULT_EXPIRED_RETENTION,
            scripts: Scripts::new(),
            cache: None,
        }
    }

    /// Connects to one Redis server (`redis://host:port/db`) with a local cache in front: live
    /// sessions are read from process memory, and Redis itself tells the store when one changed
    /// (server-assisted client-side caching, RESP3 `CLIENT TRACKING ... BCAST`), so a logout,
    /// login or revoke on another instance is seen here as soon as its invalidation arrives.
    /// Needs Redis 7.0 or newer, like the store.
    ///
    /// The store opens two connections: one for every command, whose tracking sends the
    /// invalidations to the other, which carries nothing else (before a cached read is answered,
    /// the store checks that no unread byte waits on it). When either breaks (or stops answering
    /// the heartbeat), the cache is dropped at once and nothing is served from memory until a
    /// new pair has tracking on again: requests go to Redis
    /// meanwhile, and get the layer's error response while Redis is down. A sliding read moves
    /// the Redis expiry at most once per refresh interval ([`LocalCache::with_refresh_interval`]),
    /// by the idle timeout plus that interval: a session used within its idle timeout never
    /// expires, and an unused one stays in Redis up to the interval longer than the idle
    /// timeout. The layer still checks idle expiry and the deadline on every read.
    ///
    /// ```no_run
    /// use tower_typed_sessions::{store::redis::LocalCache, RedisStore, Session, SessionLayer};
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct Data;
    /// # impl Session for Data {}
    /// # async fn run() -> Result<(), tower_typed_sessions::StoreError> {
    /// let store = RedisStore::<Data>::connect_cached("redis://127.0.0.1:6379", LocalCache::new())
    ///     .await?;
    /// let layer = SessionLayer::new(store);
    /// # Ok(()) }
    /// ```
    pub async fn connect_cached(url: &str, cache: LocalCache) -> Result<Self, StoreError> {
        Self::connect_cached_to(url, None, cache).await
    }

    /// [`RedisStore::connect_cached`] over TLS (`rediss://host:port/db`) with your own CA or a
    /// client certificate ([`RedisTls`]).
    #[cfg(feature = "redis-tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
    pub async fn connect_cached_with_tls(
        url: &str,
        tls: RedisTls,
        cache: LocalCache,
    ) -> Result<Self, StoreError> {
        Self::connect_cached_to(url, Some(tls), cache).await
    }

    async fn connect_cached_to(
        url: &str,
        tls: tracking::socket::Tls,
        cache: LocalCache,
    ) -> Result<Self, StoreError> {
        use redis::IntoConnectionInfo;
        let info = url.into_connection_info().map_err(backend)?;
        // Invalidation pushes need RESP3.
        let info = info
            .clone()
            .set_redis_settings(resp3(info.redis_settings()));
        Self::connect_tracked(Source::Server(Box::new(info), tls), cache).await
    }

    /// [`RedisStore::connect_sentinel`] with a local cache in front, as
    /// [`RedisStore::connect_cached`] describes: the tracked connection goes to the master the
    /// sentinels name; a failure that may mean a failover drops it with the whole cache, and
    /// the next operation asks the sentinels again and switches tracking on at the new master
    /// before anything is cached.
    ///
    /// ```no_run
    /// use tower_typed_sessions::{store::redis::LocalCache, RedisStore, Session};
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct Data;
    /// # impl Session for Data {}
    /// # async fn run() -> Result<(), tower_typed_sessions::StoreError> {
    /// let store = RedisStore::<Data>::connect_sentinel_cached(
    ///     &["redis://127.0.0.1:26379", "redis://127.0.0.1:26380"],
    ///     "sessions",
    ///     LocalCache::new(),
    /// )
    /// .await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "sentinel")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sentinel")))]
    pub async fn connect_sentinel_cached(
        sentinels: &[&str],
        master_name: &str,
        cache: LocalCache,
    ) -> Result<Self, StoreError> {
        Self::connect_sentinel_cached_with(sentinels, master_name, SentinelMaster::new(), cache)
            .await
    }

    /// [`RedisStore::connect_sentinel_cached`] to a master reached as `master` says (password,
    /// database, TLS: [`SentinelMaster`]); both tracked connections log in with it.
    #[cfg(feature = "sentinel")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sentinel")))]
    pub async fn connect_sentinel_cached_with(
        sentinels: &[&str],
        master_name: &str,
        master: SentinelMaster,
        cache: LocalCache,
    ) -> Result<Self, StoreError> {
        // Invalidation pushes need RESP3.
        let client = master
            .client(sentinels, master_name, true)
            .map_err(backend)?;
        let source = Source::Sentinel(Arc::new(tokio::sync::Mutex::new(client)), master.tls());
        Self::connect_tracked(source, cache).await
    }

    async fn connect_tracked(source: Source, cache: LocalCache) -> Result<Self, StoreError> {
        let (connection, cache) =
            Self::tracking(source, DEFAULT_PREFIX, DEFAULT_COMMAND_TIMEOUT, cache);
        let mut store = Self::with_connection(connection);
        store.cache = Some(cache);
        store.load_scripts().await?;
        Ok(store)
    }

    /// [`RedisStore::connect_cluster`] with a local cache in front, as
    /// [`RedisStore::connect_cached`] describes, on every master: beside the cluster connection,
    /// a pair of connections to each master receives the invalidations of every session key,
    /// whichever slot it is in. Every heartbeat pings each
    /// master and reads the slot map again: a failover, a resharding, a master added or
    /// removed, a master reporting the cluster down, a lost connection or an unanswered ping
    /// empties the cache, and nothing is served from it until tracking is on at every master of
    /// the new map (the next heartbeat, 100 ms by default). A session's commands go to its
    /// slot's master over that master's tracked connection, so the store's own plain writes
    /// keep their entry as on one server.
    ///
    /// ```no_run
    /// use tower_typed_sessions::{store::redis::LocalCache, RedisStore, Session};
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct Data;
    /// # impl Session for Data {}
    /// # async fn run() -> Result<(), tower_typed_sessions::StoreError> {
    /// let nodes = ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"];
    /// let store = RedisStore::<Data>::connect_cluster_cached(&nodes, LocalCache::new()).await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub async fn connect_cluster_cached(
        nodes: &[&str],
        cache: LocalCache,
    ) -> Result<Self, StoreError> {
        // Boxed: setting up a cluster connection is a large future.
        Box::pin(Self::connect_cluster_cached_inner(nodes, None, cache)).await
    }

    /// [`RedisStore::connect_cluster_cached`] over TLS (`rediss://` URLs) with your own CA or a
    /// client certificate ([`RedisTls`]).
    #[cfg(all(feature = "cluster", feature = "redis-tls"))]
    #[cfg_attr(docsrs, doc(cfg(all(feature = "cluster", feature = "redis-tls"))))]
    pub async fn connect_cluster_cached_with_tls(
        nodes: &[&str],
        tls: RedisTls,
        cache: LocalCache,
    ) -> Result<Self, StoreError> {
        Box::pin(Self::connect_cluster_cached_inner(nodes, Some(tls), cache)).await
    }

    #[cfg(feature = "cluster")]
    async fn connect_cluster_cached_inner(
        nodes: &[&str],
        #[cfg_attr(not(feature = "redis-tls"), allow(unused_variables))] tls: Option<
            RedisTlsOption,
        >,
        cache: LocalCache,
    ) -> Result<Self, StoreError> {
        use redis::IntoConnectionInfo;
        let first = nodes.first().copied().unwrap_or_default();
        let template = first.into_connection_info().map_err(backend)?;
        let template = template
            .clone()
            .set_redis_settings(resp3(template.redis_settings()));
        let builder = Self::cluster_builder(nodes);
        #[cfg(feature = "redis-tls")]
        let builder = match &tls {
            Some(tls) => builder.certs(tls.certificates()),
            None => builder,
        };
        let client = builder.build().map_err(backend)?;
        let commands = client.get_async_connection().await.map_err(backend)?;
        let settings = tracking::cluster::ClusterSettings {
            commands,
            template,
            #[cfg(feature = "redis-tls")]
            tls,
            #[cfg(not(feature = "redis-tls"))]
            tls: None,
            runtime: tokio::runtime::Handle::current(),
        };
        let (connection, cache) =
            Self::tracking_cluster(settings, DEFAULT_PREFIX, DEFAULT_COMMAND_TIMEOUT, cache);
        if let Connection::TrackedCluster(tracked) = &connection {
            tracked.track_now().await.map_err(backend)?;
        }
        let mut store = Self::with_connection(connection);
        store.cache = Some(cache);
        store.load_scripts().await?;
        Ok(store)
    }

    #[cfg(feature = "cluster")]
    fn tracking_cluster(
        settings: tracking::cluster::ClusterSettings,
        prefix: &str,
        timeout: Duration,
        local: LocalCache,
    ) -> (Connection, Arc<Cache<T>>) {
        let cache = Arc::new(Cache::new(local.clone()));
        let receiver = Arc::new(Receiver {
            cache: Arc::clone(&cache),
            prefix: prefix.to_owned(),
        });
        let tracked = tracking::cluster::TrackedCluster::start(
            settings,
            prefix.to_owned(),
            timeout,
            local.heartbeat,
            receiver,
        );
        (Connection::TrackedCluster(tracked), cache)
    }

    /// A tracked connection for the keys under `prefix`, and the cache it feeds.
    fn tracking(
        source: Source,
        prefix: &str,
        timeout: Duration,
        settings: LocalCache,
    ) -> (Connection, Arc<Cache<T>>) {
        let cache = Arc::new(Cache::new(settings.clone()));
        let receiver = Arc::new(Receiver {
            cache: Arc::clone(&cache),
            prefix: prefix.to_owned(),
        });
        let tracked = Tracked::new(
            source,
            prefix.to_owned(),
            timeout,
            settings.heartbeat,
            receiver,
        );
        (Connection::Tracked(Arc::new(tracked)), cache)
    }

    /// The prefix of every session key (default `session:`). A session's keys are
    /// `prefix{key}`, `prefix{key}:live` and `prefix{key}:moved`.
    #[must_use]
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        // A cached store tracks the keys under its prefix: track the new one.
        self.retracked()
    }

    /// A cached store's tracking set up again with the store's prefix and command timeout (its
    /// connections are opened, and their heartbeats answered, within that timeout), with an
    /// empty cache; the store itself when it has no cache.
    fn retracked(mut self) -> Self {
        let Some(local) = self.cache.as_ref().map(|cache| cache.settings.clone()) else {
            return self;
        };
        let (connection, cache) = match &self.connection {
            Connection::Tracked(tracked) => Self::tracking(
                tracked.source().clone(),
                &self.prefix,
                self.command_timeout,
                local,
            ),
            #[cfg(feature = "cluster")]
            Connection::TrackedCluster(tracked) => Self::tracking_cluster(
                tracked.settings(),
                &self.prefix,
                self.command_timeout,
                local,
            ),
            _ => return self,
        };
        self.connection = connection;
        self.cache = Some(cache);
        self
    }

    /// How many loads the local cache answered, and how many went to Redis (zeros without a
    /// cache): for tests and monitoring.
    pub fn cache_hits_and_misses(&self) -> (u64, u64) {
        self.cache.as_ref().map_or((0, 0), |cache| {
            (
                cache.hits(),
                cache
                    .counters
                    .misses
                    .load(std::sync::atomic::Ordering::Relaxed),
            )
        })
    }

    /// Holds this store's tracked connections back from reading for `pause`: invalidations that
    /// reach them meanwhile stay unread on the socket. Fault injection for tests of what a
    /// cached read does when an invalidation has arrived but is not applied yet (it waits for
    /// it); no effect without a cache.
    ///
    /// ```no_run
    /// # use tower_typed_sessions::{store::redis::LocalCache, RedisStore, Session};
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct Data;
    /// # impl Session for Data {}
    /// # async fn run() -> Result<(), tower_typed_sessions::StoreError> {
    /// let store = RedisStore::<Data>::connect_cached("redis://127.0.0.1:6379", LocalCache::new())
    ///     .await?;
    /// store.pause_invalidations(std::time::Duration::from_millis(50));
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "testing")]
    #[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
    pub fn pause_invalidations(&self, pause: Duration) {
        match &self.connection {
            Connection::Tracked(tracked) => tracked.pause(pause),
            #[cfg(feature = "cluster")]
            Connection::TrackedCluster(tracked) => tracked.pause(pause),
            _ => {}
        }
    }

    /// Holds back, for `hold`, the replies to this store's commands on the connection that
    /// serves the session `key` (on a Cluster, its slot's master; not the commands, nor the
    /// invalidations): a write reaches Redis at once, and the store learns that it was done
    /// `hold` later. Fault injection for tests (feature `testing`) of what reaches the cache
    /// while a write is in flight; does nothing on a store without a cache.
    ///
    /// ```no_run
    /// # use tower_typed_sessions::{store::redis::LocalCache, RedisStore, Session};
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct Data;
    /// # impl Session for Data {}
    /// # use tower_typed_sessions::{SessionKey, StoreError};
    /// # async fn run(key: SessionKey) -> Result<(), StoreError> {
    /// let store = RedisStore::<Data>::connect_cached("redis://127.0.0.1:6379", LocalCache::new())
    ///     .await?;
    /// store.hold_replies(&key, std::time::Duration::from_millis(20));
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "testing")]
    #[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
    pub fn hold_replies(&self, key: &SessionKey, hold: Duration) {
        // One server: one connection serves every key.
        #[cfg(not(feature = "cluster"))]
        let _ = key;
        match &self.connection {
            Connection::Tracked(tracked) => tracked.hold_replies(hold),
            #[cfg(feature = "cluster")]
            Connection::TrackedCluster(tracked) => {
                tracked.hold_replies(&self.keys(key).record, hold);
            }
            _ => {}
        }
    }

    /// How many sessions the local cache holds now (zero without a cache).
    pub fn cached_sessions(&self) -> usize {
        self.cache.as_ref().map_or(0, |cache| cache.len())
    }

    /// Whether the local cache holds the session under `key` now.
    pub fn is_cached(&self, key: &SessionKey) -> bool {
        self.cache.as_ref().is_some_and(|cache| cache.holds(key))
    }

    /// How long each wait of a store operation may last before it fails with
    /// [`StoreError::Timeout`] (default 1 s): the wait for a connection (a cached store's
    /// tracked connections, which are opened within it, or the master the sentinels name),
    /// then the wait for the reply; so an operation that must open a connection first may take
    /// up to twice as long. No reply timeout of the redis crate's cuts a longer one short,
    /// except on a Cluster's own connection, where each node's reply is also bounded at 1 s
    /// (the redis crate's slot refreshes need that bound): an uncached Cluster's commands, and
    /// a cached one's while its tracking is not on. The uncached stores' reconnections have
    /// their own 1 s per attempt.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use tower_typed_sessions::{RedisStore, Session};
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct Data;
    /// # impl Session for Data {}
    /// # async fn run() -> Result<(), tower_typed_sessions::StoreError> {
    /// let store = RedisStore::<Data>::connect("redis://127.0.0.1:6379")
    ///     .await?
    ///     .with_command_timeout(Duration::from_secs(3));
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self.retracked()
    }

    /// How long an expired session stays in Redis so that a client coming back with its cookie
    /// fires the `expired` event instead of `rejected(unknown)` (default 1 hour; zero keeps it
    /// only a few seconds). It costs the memory of each idle-expired session for that long.
    /// Changing it does not change when a session expires.
    #[must_use]
    pub fn with_expired_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// `verb prefix{key}suffix` with room for `args` more arguments of about `bytes` bytes in
    /// all: the key is written in place and nothing is reallocated on the hot path (redis-rs
    /// grows a `Cmd`'s buffers from empty otherwise, which callgrind showed as the largest part
    /// of the layer's own cost per Redis request).
    fn session_cmd(
        &self,
        verb: &str,
        key: &SessionKey,
        suffix: &str,
        args: usize,
        bytes: usize,
    ) -> Result<Cmd, StoreError> {
        let mut cmd = Cmd::with_capacity(
            2 + args,
            verb.len() + self.prefix.len() + 45 + suffix.len() + bytes,
        );
        cmd.arg(verb);
        let mut arg = cmd.writer_for_next_arg();
        arg.write_all(self.prefix.as_bytes())
            .and_then(|()| arg.write_all(b"{"))
            .and_then(|()| arg.write_all(key.as_bytes()))
            .and_then(|()| arg.write_all(b"}"))
            .and_then(|()| arg.write_all(suffix.as_bytes()))
            .map_err(|err| StoreError::Encode(Box::new(err)))?;
        drop(arg);
        Ok(cmd)
    }

    fn keys(&self, key: &SessionKey) -> Keys {
        Keys::new(&self.prefix, key)
    }

    /// When a record whose session expires at `expiry_ms` may leave Redis.
    fn record_end(&self, expiry_ms: i64) -> i64 {
        expiry_ms
            .saturating_add(duration_ms(self.retention))
            .saturating_add(RECORD_SLACK_MS)
    }

    /// The owner index key: `prefix + "owner:" + owner`. A session's keys continue the prefix
    /// with `{`, so an owner key cannot collide with one.
    fn owner_key(&self, owner: &str) -> String {
        format!("{}owner:{owner}", self.prefix)
    }

    /// Runs `f`, which goes through connection `generation`, within the command timeout; a
    /// failure is reported to the connection (behind Sentinel it may mean a failover).
    async fn timed<V>(
        &self,
        generation: Generation,
        f: impl Future<Output = Result<V, RedisError>>,
    ) -> Result<V, StoreError> {
        match tokio::time::timeout(self.command_timeout, f).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                self.connection.failed(generation, Some(&err));
                Err(backend(err))
            }
            Err(_) => {
                self.connection.failed(generation, None);
                Err(StoreError::Timeout)
            }
        }
    }

    /// A connection for one operation: the open one at once, with no timer on the request's
    /// path; otherwise (a cached store's tracked connections, or the master behind Sentinel,
    /// after a failure) one opened within the command timeout, the wait for another
    /// operation's opening included. A failure here is not reported: nothing open has failed.
    async fn conn(&self) -> Result<Conn, StoreError> {
        if let Some(conn) = self.connection.open_now() {
            return Ok(conn);
        }
        match tokio::time::timeout(self.command_timeout, self.connection.get()).await {
            Ok(opened) => opened.map_err(backend),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    async fn load_scripts(&self) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        for lua in self.scripts.all() {
            let load = lua.script.prepare_invoke();
            self.timed(conn.generation(), load.load_async(&mut conn))
                .await?;
        }
        Ok(())
    }

    async fn query<V: FromRedisValue + Send>(&self, cmd: Cmd) -> Result<V, StoreError> {
        let mut conn = self.conn().await?;
        self.timed(conn.generation(), cmd.query_async(&mut conn))
            .await
    }

    /// Sends the pipeline (all on one session's keys, so one slot) in one round trip. A
    /// command's error fails the whole, as what it is (a value of another type under a session
    /// key is foreign data, not an outage).
    async fn pipeline(&self, pipe: Pipeline) -> Result<Vec<Value>, StoreError> {
        let replies = self.replies(pipe).await?;
        match first_error(&replies) {
            Some(err) => Err(backend(err)),
            None => Ok(replies),
        }
    }

    /// Sends `pipe` in one round trip and returns each command's reply, errors included (the
    /// commands of a pipeline or a transaction that failed do not undo the others, so the
    /// caller looks at each). An error that may mean a failover is reported to the connection.
    async fn replies(&self, mut pipe: Pipeline) -> Result<Vec<Value>, StoreError> {
        pipe.ignore_errors();
        let mut conn = self.conn().await?;
        let generation = conn.generation();
        let replies: Vec<Value> = self.timed(generation, pipe.query_async(&mut conn)).await?;
        for reply in &replies {
            if let Value::ServerError(err) = reply {
                self.connection
                    .failed(generation, Some(&err.clone().into()));
            }
        }
        Ok(replies)
    }

    /// Sends `cmd` within the command timeout, keeping the server's error as it is.
    async fn exec<V: FromRedisValue>(
        &self,
        cmd: &Cmd,
    ) -> Result<redis::RedisResult<V>, StoreError> {
        let mut conn = self.conn().await?;
        let generation = conn.generation();
        match tokio::time::timeout(self.command_timeout, cmd.query_async(&mut conn)).await {
            Ok(result) => {
                if let Err(err) = &result {
                    self.connection.failed(generation, Some(err));
                }
                Ok(result)
            }
            Err(_) => {
                self.connection.failed(generation, None);
                Err(StoreError::Timeout)
            }
        }
    }

    /// Runs `lua` on `keys` with the arguments `args` writes: one `EVALSHA`, built in one
    /// buffer with the arguments written in place (no allocation per argument), and `EVAL` of
    /// the source if the server lost the script.
    async fn run<V: FromRedisValue>(
        &self,
        lua: &Lua,
        keys: &[&str],
        args: impl Fn(&mut Cmd) -> Result<(), StoreError>,
    ) -> Result<V, StoreError> {
        let mut cmd = Self::script_cmd("EVALSHA", lua.script.get_hash().as_bytes(), keys);
        args(&mut cmd)?;
        match self.exec(&cmd).await? {
            Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                let mut cmd = Self::script_cmd("EVAL", lua.code.as_bytes(), keys);
                args(&mut cmd)?;
                self.exec(&cmd).await?.map_err(backend)
            }
            reply => reply.map_err(backend),
        }
    }

    /// `verb script numkeys key...`, with room for a record's worth of arguments.
    fn script_cmd(verb: &str, script: &[u8], keys: &[&str]) -> Cmd {
        let keys_len: usize = keys.iter().map(|k| k.len()).sum();
        let mut cmd = Cmd::with_capacity(
            16,
            verb.len() + script.len() + 4 + keys_len + RECORD_SIZE_HINT,
        );
        cmd.arg(verb).arg(script).arg(keys.len());
        for key in keys {
            cmd.arg(*key);
        }
        cmd
    }

    /// Writes the record's value (header and JSON, without its flash) as the next argument.
    fn record_arg(cmd: &mut Cmd, record: &Record<T>, revision: u64) -> Result<(), StoreError> {
        layout::write_record(cmd.writer_for_next_arg(), revision, record)
    }

    /// Writes the pending flash as the next argument ('' for none).
    fn flash_arg(cmd: &mut Cmd, record: &Record<T>) -> Result<(), StoreError> {
        if record.flash.is_empty() {
            cmd.arg("");
            Ok(())
        } else {
            serde_json::to_writer(cmd.writer_for_next_arg(), &record.flash)
                .map_err(|err| StoreError::Encode(Box::new(err)))
        }
    }

    /// What a key that holds no record holds: a pointer (`Moved`) or nothing (`Missing`).
    async fn moved_or_missing(&self, keys: &Keys) -> Result<Option<Pointer>, StoreError> {
        let mut get = redis::cmd("GET");
        get.arg(keys.moved());
        let pointer: Option<Vec<u8>> = self.query(get).await?;
        pointer.as_deref().map(Pointer::parse).transpose()
    }

    /// Takes the pending flash of a live session: swaps it for '' and returns what it was, so
    /// that of several requests that saw it only one gets it.
    async fn take_flash(&self, keys: &Keys) -> Result<Vec<u8>, StoreError> {
        let mut swap = redis::cmd("SET");
        swap.arg(&keys.live)
            .arg("")
            .arg("XX")
            .arg("KEEPTTL")
            .arg("GET");
        let taken: Option<Vec<u8>> = self.query(swap).await?;
        Ok(taken.unwrap_or_default())
    }

    /// Last write wins, without a script: `SET record … XX` writes only if the record is still
    /// there, and a regenerate or a delete removes it in the same step as the `live` key, so a
    /// save never brings a session back. The expiry is checked by the layer's clock first: the
    /// load that read this copy has just slid the `live` key to it. A save with a flash also
    /// sets the `live` key's value (`XX`: only while the session lives). The TTLs stay where
    /// that load put them.
    async fn save_any(&self, record: &Record<T>) -> Result<WriteOutcome, StoreError> {
        if record.effective_expiry() <= OffsetDateTime::now_utc() {
            return Ok(WriteOutcome::Missing);
        }
        let key = &record.key;
        let mut write =
            self.session_cmd("SET", key, "", 3, layout::HEADER + RECORD_SIZE_HINT + 16)?;
        layout::write_record(write.writer_for_next_arg(), record.revision, record)?;
        write.arg("XX").arg("KEEPTTL");
        let (live, written) = if record.flash.is_empty() {
            let written: Option<String> = self.query(write).await?;
            (true, written.is_some())
        } else {
            let mut flash = self.session_cmd("SET", key, LIVE, 3, FLASH_SIZE_HINT)?;
            serde_json::to_writer(flash.writer_for_next_arg(), &record.flash)
                .map_err(|err| StoreError::Encode(Box::new(err)))?;
            flash.arg("XX").arg("KEEPTTL");
            let mut pipe = Pipeline::with_capacity(2);
            pipe.add_command(flash).add_command(write);
            let replies = self.pipeline(pipe).await?;
            (took(replies.first()), took(replies.get(1)))
        };
        if !written {
            return Ok(match self.moved_or_missing(&self.keys(key)).await? {
                Some(pointer) => WriteOutcome::Moved(pointer.to),
                None => WriteOutcome::Missing,
            });
        }
        // A flash that found no `live` key: the session expired as this request ran (the record
        // it rewrote stays expired).
        Ok(if live {
            WriteOutcome::Done
        } else {
            WriteOutcome::Missing
        })
    }

    /// Regenerate on a Cluster, where two sessions' keys live in different slots: write the new
    /// session first, then turn the old one into the pointer if it is still live at the
    /// expected revision, and remove the new one if not.
    #[cfg(feature = "cluster")]
    async fn regenerate_in_steps(
        &self,
        old: &SessionKey,
        record: &Record<T>,
        expect: Expect,
        forward: Forward,
    ) -> Result<(WriteOutcome, bool), StoreError> {
        let (old_keys, new_keys) = (self.keys(old), self.keys(&record.key));
        let (record_value, live_value) = Self::new_session_values(record, expect)?;
        let mut pipe = Pipeline::with_capacity(2);
        self.write_new_session(&mut pipe, &new_keys, (&record_value, &live_value), record);
        let replies = self.replies(pipe).await?;
        let created = written(&replies);
        if let Some(err) = first_error(&replies) {
            self.remove_written(&new_keys, created).await?;
            return Err(backend(err));
        }
        if created != [true, true] {
            self.remove_written(&new_keys, created).await?;
            return Ok((WriteOutcome::Collision, false));
        }
        let (now, pointer) = (now_arg(), layout::pointer_value(&forward));
        let reply: Vec<Value> = self
            .run(
                &self.scripts.retire,
                &[&old_keys.record, &old_keys.live, &old_keys.moved()],
                |cmd| {
                    cmd.arg(&now)
                        .arg(expect_arg(expect))
                        .arg(&pointer)
                        .arg(millis(forward.until));
                    Ok(())
                },
            )
            .await?;
        self.finish_regenerate(&new_keys, created, &reply, record)
            .await
    }

    /// A regenerated session's record and `live` values, as its keys will hold them.
    fn new_session_values(
        record: &Record<T>,
        expect: Expect,
    ) -> Result<(Vec<u8>, Vec<u8>), StoreError> {
        let mut record_value = Vec::with_capacity(RECORD_SIZE_HINT);
        layout::write_record(&mut record_value, next_revision(record, expect), record)?;
        let mut live_value = Vec::new();
        if !record.flash.is_empty() {
            serde_json::to_writer(&mut live_value, &record.flash)
                .map_err(|err| StoreError::Encode(Box::new(err)))?;
        }
        Ok((record_value, live_value))
    }

    /// Writes a regenerated session's record and `live` key (`values`) with plain `SET … NX`
    /// (so that a cached store's `NOLOOP` covers them) as the next two commands of `pipe`.
    fn write_new_session(
        &self,
        pipe: &mut Pipeline,
        keys: &Keys,
        (record_value, live_value): (&[u8], &[u8]),
        record: &Record<T>,
    ) {
        let expiry = millis(record.effective_expiry());
        for (key, value, end) in [
            (&keys.record, record_value, self.record_end(expiry)),
            (&keys.live, live_value, expiry),
        ] {
            let mut set = redis::cmd("SET");
            set.arg(key).arg(value).arg("NX").arg("PXAT").arg(end);
            pipe.add_command(set);
        }
    }

    /// Removes what [`Self::write_new_session`] wrote (`written`: record, `live` key) when the
    /// regenerate did not go through.
    async fn remove_written(&self, keys: &Keys, written: [bool; 2]) -> Result<(), StoreError> {
        if written == [false, false] {
            return Ok(());
        }
        let mut undo = redis::cmd("DEL");
        for (key, wrote) in [&keys.record, &keys.live].into_iter().zip(written) {
            if wrote {
                undo.arg(key);
            }
        }
        self.query::<i64>(undo).await?;
        Ok(())
    }

    /// What a regenerate comes to once the old session's script answered (`reply`) and the new
    /// session's keys were written (`written`): the new keys are removed unless it went
    /// through, and a flash still pending on the old session moves over unless this one brings
    /// its own. Also says whether the new session may hold what `record` does not show (a
    /// flash that moved over, or nothing known: a resend).
    #[cfg(feature = "cluster")]
    async fn finish_regenerate(
        &self,
        new_keys: &Keys,
        written: [bool; 2],
        reply: &[Value],
        record: &Record<T>,
    ) -> Result<(WriteOutcome, bool), StoreError> {
        let outcome = match write_outcome(reply)? {
            // The script ran before, and this is a resend (the cluster client resends a command
            // whose reply a dropped connection lost): the old key already points here.
            WriteOutcome::Moved(to) if to == record.key => return Ok((WriteOutcome::Done, true)),
            outcome => outcome,
        };
        if outcome != WriteOutcome::Done {
            self.remove_written(new_keys, written).await?;
            return Ok((outcome, false));
        }
        let pending = bytes(reply.get(1)).unwrap_or_default();
        let carried = record.flash.is_empty() && !pending.is_empty();
        if carried {
            let mut carry = redis::cmd("SET");
            carry
                .arg(&new_keys.live)
                .arg(pending)
                .arg("XX")
                .arg("KEEPTTL");
            self.query::<Option<String>>(carry).await?;
        }
        Ok((WriteOutcome::Done, carried))
    }

    /// Counts the live sessions among `live_keys` (`p{K}:live` keys): those whose record is
    /// still there and short of its deadline.
    async fn live_among(&self, live_keys: Vec<String>) -> Result<usize, StoreError> {
        let now = millis(OffsetDateTime::now_utc());
        let mut live = 0;
        for live_key in live_keys {
            if Keys::session_of_live(&self.prefix, &live_key).is_none() {
                continue;
            }
            let mut cmd = redis::cmd("GETRANGE");
            cmd.arg(Keys::record_of_live(&live_key))
                .arg(0)
                .arg(layout::HEADER - 1);
            let header: Vec<u8> = match self.query(cmd).await {
                Ok(header) => header,
                // Another program's value of another type under a record key: not a session.
                Err(err) if err.is_decode() => continue,
                Err(err) => return Err(err),
            };
            if StoredRecord::parse(&header).is_ok_and(|record| record.deadline_ms > now) {
                live += 1;
            }
        }
        Ok(live)
    }

    fn live_pattern(&self) -> String {
        format!("{}{{*}}:live", glob_escape(&self.prefix))
    }

    #[cfg(feature = "cluster")]
    async fn count_cluster(
        &self,
        conn: &mut redis::cluster_async::ClusterConnection,
    ) -> Result<usize, StoreError> {
        use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
        let generation = self.connection.generation();
        let nodes: String = self
            .timed(
                generation,
                conn.route_command(
                    redis::cmd("CLUSTER").arg("NODES").clone(),
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
                ),
            )
            .await
            .and_then(|value| String::from_redis_value(value).map_err(|e| backend(e.into())))?;
        let pattern = self.live_pattern();
        let mut total = 0;
        // `CLUSTER NODES`: id, address, flags (comma-separated), ...: the primaries not failing.
        let primaries = nodes.lines().filter(|line| {
            line.split(' ').nth(2).is_some_and(|flags| {
                let mut flags = flags.split(',');
                flags.clone().any(|f| f == "master") && !flags.any(|f| f == "fail" || f == "fail?")
            })
        });
        for line in primaries {
            let Some(address) = line.split(' ').nth(1).and_then(|a| a.split('@').next()) else {
                continue;
            };
            let Some((host, port)) = address.rsplit_once(':') else {
                continue;
            };
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: host.to_owned(),
                port,
            });
            let mut cursor: u64 = 0;
            loop {
                let scan = scan_live(cursor, &pattern);
                let value = self
                    .timed(generation, conn.route_command(scan, route.clone()))
                    .await?;
                let (next, keys): (u64, Vec<String>) =
                    FromRedisValue::from_redis_value(value).map_err(|e| backend(e.into()))?;
                total += self.live_among(keys).await?;
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(total)
    }
}

impl<T: Session> RedisStore<T> {
    /// A load the local cache could not answer: from Redis (sliding by the refresh interval
    /// more, so that the next reads can be hits), storing what it found under `ticket` unless an
    /// invalidation or a write came first.
    async fn load_and_fill(
        &self,
        cache: &Cache<T>,
        key: &SessionKey,
        options: LoadOptions,
        ticket: Option<cache::Ticket>,
    ) -> Result<Loaded<T>, StoreError> {
        let mut claims = cache::Claims::new(cache);
        if let Some(ticket) = ticket {
            claims.hold(*key, ticket);
        }
        let loaded = self
            .load_from_redis(key, cache::refreshed(options, cache.settings.refresh))
            .await;
        claims.take();
        if let Some(ticket) = ticket {
            match &loaded {
                // After a load that took the flash, or found none, no flash is pending.
                Ok(Loaded::Active(record))
                    if (options.take_flash || record.flash.is_empty())
                        && cache::cacheable(record) =>
                {
                    let mut cached = record.clone();
                    cached.flash = crate::flash::Flash::default();
                    cache.fill_read(key, ticket, cached);
                }
                _ => cache.release(key, ticket),
            }
        }
        loaded
    }

    /// Runs a write of `keys` with the cache told first (each key's entry goes, reads in flight
    /// will not fill), then stores what the write says it left, if it went through alone.
    async fn write_through<'a>(
        &self,
        keys: &[&SessionKey],
        write: impl Future<Output = Result<(WriteOutcome, Fill<'a, T>), StoreError>>,
    ) -> Result<WriteOutcome, StoreError> {
        let Some(cache) = &self.cache else {
            return write.await.map(|(outcome, _)| outcome);
        };
        let mut claims = cache::Claims::new(cache);
        for key in keys {
            claims.hold(**key, cache.begin_write(key));
        }
        let written = write.await;
        let tickets = claims.take();
        let fill = match &written {
            Ok((WriteOutcome::Done, fill)) => *fill,
            _ => Fill::Nothing,
        };
        for (key, ticket) in tickets {
            match fill {
                Fill::Created(record) if record.key == key && cache::cacheable(record) => {
                    cache.fill_write(&key, ticket, record.clone(), false);
                }
                Fill::Saved(record, revision) if record.key == key && cache::cacheable(record) => {
                    let mut stored = record.clone();
                    stored.revision = revision;
                    cache.fill_write(&key, ticket, stored, true);
                }
                Fill::Regenerated(record, revision)
                    if record.key == key && cache::cacheable(record) =>
                {
                    let mut stored = record.clone();
                    stored.revision = revision;
                    cache.fill_write(&key, ticket, stored, false);
                }
                _ => cache.release(&key, ticket),
            }
        }
        written.map(|(outcome, _)| outcome)
    }

    async fn load_from_redis(
        &self,
        key: &SessionKey,
        options: LoadOptions,
    ) -> Result<Loaded<T>, StoreError> {
        let now = millis(options.now);
        let slid = options
            .slide
            .map(|idle| now.saturating_add(duration_ms(idle)));
        let mut pipe = Pipeline::with_capacity(3);
        match slid {
            Some(expiry) => {
                let mut live = self.session_cmd("GETEX", key, LIVE, 2, 24)?;
                live.arg("PXAT").arg(expiry);
                let mut record = self.session_cmd("GETEX", key, "", 2, 24)?;
                record.arg("PXAT").arg(self.record_end(expiry));
                pipe.add_command(live).add_command(record);
            }
            None => {
                // The live key's expiry before the record, so that a live key that ends between
                // the two commands shows as ended (-2), never as a session without an expiry.
                pipe.add_command(self.session_cmd("GET", key, LIVE, 0, 0)?)
                    .add_command(self.session_cmd("PEXPIRETIME", key, LIVE, 0, 0)?)
                    .add_command(self.session_cmd("GET", key, "", 0, 0)?);
            }
        }
        let replies = self.pipeline(pipe).await?;
        let (live, live_expiry, value) = match slid {
            Some(expiry) => (replies.first(), Some(expiry), replies.get(1)),
            None => (
                replies.first(),
                match replies.get(1) {
                    Some(Value::Int(at)) if *at > 0 => Some(*at),
                    _ => None,
                },
                replies.get(2),
            ),
        };
        let Some(value) = bytes(value) else {
            return Ok(match self.moved_or_missing(&self.keys(key)).await? {
                Some(pointer) => Loaded::Moved(pointer.forward()),
                None => Loaded::Missing,
            });
        };
        let stored = StoredRecord::parse(value)?;
        let (pending, expiry) = match (live, live_expiry) {
            (Some(Value::BulkString(pending)), Some(expiry)) if stored.deadline_ms > now => {
                (pending.as_slice(), expiry)
            }
            // The `live` key is gone (idle-expired), or the deadline has passed.
            _ => return Ok(Loaded::Expired(stored.record(key, b"")?)),
        };
        let taken;
        let flash = if options.take_flash && !pending.is_empty() {
            taken = self.take_flash(&self.keys(key)).await?;
            taken.as_slice()
        } else {
            pending
        };
        let mut record = stored.record::<T>(key, flash)?;
        record.expires_at = at_millis(expiry.min(stored.deadline_ms));
        Ok(Loaded::Active(record))
    }

    async fn create_in_redis(&self, record: &Record<T>) -> Result<WriteOutcome, StoreError> {
        let keys = self.keys(&record.key);
        let expiry = millis(record.effective_expiry());
        let created: i64 = self
            .run(
                &self.scripts.create,
                &[&keys.record, &keys.live, &keys.moved()],
                |cmd| {
                    layout::write_record(cmd.writer_for_next_arg(), record.revision, record)?;
                    Self::flash_arg(cmd, record)?;
                    cmd.arg(expiry).arg(self.record_end(expiry));
                    Ok(())
                },
            )
            .await?;
        Ok(if created == 1 {
            WriteOutcome::Done
        } else {
            WriteOutcome::Collision
        })
    }

    async fn save_in_redis(
        &self,
        record: &Record<T>,
        expect: Expect,
    ) -> Result<WriteOutcome, StoreError> {
        if matches!(expect, Expect::Any) {
            return self.save_any(record).await;
        }
        let keys = self.keys(&record.key);
        let now = now_arg();
        let revision = next_revision(record, expect);
        let reply: Vec<Value> = self
            .run(
                &self.scripts.save,
                &[&keys.record, &keys.live, &keys.moved()],
                |cmd| {
                    cmd.arg(&now).arg(expect_arg(expect));
                    Self::record_arg(cmd, record, revision)?;
                    Self::flash_arg(cmd, record)
                },
            )
            .await?;
        write_outcome(&reply)
    }

    async fn regenerate_in_redis(
        &self,
        old: &SessionKey,
        record: &Record<T>,
        expect: Expect,
        forward: Forward,
    ) -> Result<(WriteOutcome, bool), StoreError> {
        #[cfg(feature = "cluster")]
        if self.connection.cluster().is_some() {
            return self.regenerate_in_steps(old, record, expect, forward).await;
        }
        let (old_keys, new_keys) = (self.keys(old), self.keys(&record.key));
        let (now, pointer) = (now_arg(), layout::pointer_value(&forward));
        let old_moved = old_keys.moved();
        let (record_value, live_value) = Self::new_session_values(record, expect)?;
        // One transaction: the new session's keys, then the script that retires the old session
        // or, refusing, removes them again (so that nothing is left, whatever happens after).
        let handover = |verb: &str, script: &[u8]| {
            let mut pipe = Pipeline::with_capacity(3);
            pipe.atomic();
            self.write_new_session(&mut pipe, &new_keys, (&record_value, &live_value), record);
            let mut retire = Self::script_cmd(
                verb,
                script,
                &[
                    &old_keys.record,
                    &old_keys.live,
                    &old_moved,
                    &new_keys.record,
                    &new_keys.live,
                ],
            );
            retire
                .arg(&now)
                .arg(expect_arg(expect))
                .arg(&pointer)
                .arg(millis(forward.until))
                .arg(&record_value)
                .arg(&live_value);
            pipe.add_command(retire);
            pipe
        };
        let lua = &self.scripts.regenerate;
        let mut replies = self
            .replies(handover("EVALSHA", lua.script.get_hash().as_bytes()))
            .await?;
        if matches!(replies.get(2), Some(Value::ServerError(err)) if err.kind() == Some(ServerErrorKind::NoScript))
        {
            // The keys the first attempt wrote hold this call's values: the script takes them
            // as its own.
            replies = self.replies(handover("EVAL", lua.code.as_bytes())).await?;
        }
        let reply = match replies.get(2) {
            Some(Value::Array(reply)) => reply,
            Some(Value::ServerError(err)) => {
                // The script stopped before writing (a value of another type under a key):
                // what the SETs wrote goes.
                let err: RedisError = err.clone().into();
                self.remove_written(&new_keys, written(&replies)).await?;
                return Err(backend(err));
            }
            _ => {
                self.remove_written(&new_keys, written(&replies)).await?;
                return Err(malformed("regenerate reply"));
            }
        };
        let outcome = write_outcome(reply)?;
        let carried = outcome == WriteOutcome::Done
            && live_value.is_empty()
            && !bytes(reply.get(1)).unwrap_or_default().is_empty();
        Ok((outcome, carried))
    }

    async fn delete_in_redis(
        &self,
        key: &SessionKey,
        expect: Expect,
    ) -> Result<WriteOutcome, StoreError> {
        let keys = self.keys(key);
        let now = now_arg();
        let reply: Vec<Value> = self
            .run(
                &self.scripts.delete,
                &[&keys.record, &keys.live, &keys.moved()],
                |cmd| {
                    cmd.arg(&now).arg(expect_arg(expect));
                    Ok(())
                },
            )
            .await?;
        write_outcome(&reply)
    }
}

impl<T: Session> Store<T> for RedisStore<T> {
    async fn load(&self, key: &SessionKey, options: LoadOptions) -> Result<Loaded<T>, StoreError> {
        let Some(cache) = &self.cache else {
            return self.load_from_redis(key, options).await;
        };
        // Every invalidation that reached the connection's socket before now (a logout another
        // instance just acknowledged) is applied before the cache answers; when that cannot be
        // told in time, Redis answers.
        let settled = match self.connection.watch(key) {
            // The entries must be those of the connection checked (not of one that replaced it
            // while the read waited).
            Some((watch, epoch)) => {
                let settled = match watch.settled_now() {
                    Some(answer) => answer,
                    None => watch.settled(self.command_timeout).await,
                };
                settled && cache.connected_epoch() == epoch
            }
            None => false,
        };
        let ticket = if settled {
            match cache.lookup(key, &options) {
                Lookup::Hit(record) => return Ok(Loaded::Active(record)),
                Lookup::Miss(ticket) => ticket,
            }
        } else {
            None
        };
        // Boxed: the uncached store's future stays the size it was.
        Box::pin(self.load_and_fill(cache, key, options, ticket)).await
    }

    fn slide_headroom(&self) -> Duration {
        self.cache
            .as_ref()
            .map_or(Duration::ZERO, |cache| cache.settings.refresh)
    }

    async fn create(&self, record: &Record<T>) -> Result<WriteOutcome, StoreError> {
        if self.cache.is_none() {
            return self.create_in_redis(record).await;
        }
        let write = async move { Ok((self.create_in_redis(record).await?, Fill::Created(record))) };
        Box::pin(self.write_through(&[&record.key], write)).await
    }

    async fn save(&self, record: &Record<T>, expect: Expect) -> Result<WriteOutcome, StoreError> {
        if self.cache.is_none() {
            return self.save_in_redis(record, expect).await;
        }
        let write = async move {
            let outcome = self.save_in_redis(record, expect).await?;
            Ok((outcome, Fill::Saved(record, next_revision(record, expect))))
        };
        Box::pin(self.write_through(&[&record.key], write)).await
    }

    async fn regenerate(
        &self,
        old: &SessionKey,
        record: &Record<T>,
        expect: Expect,
        forward: Forward,
    ) -> Result<WriteOutcome, StoreError> {
        if self.cache.is_none() {
            return Ok(self
                .regenerate_in_redis(old, record, expect, forward)
                .await?
                .0);
        }
        let write = async move {
            let (outcome, carried) = self
                .regenerate_in_redis(old, record, expect, forward)
                .await?;
            // A flash that moved over from the old session is not in this copy.
            let fill = if carried {
                Fill::Nothing
            } else {
                Fill::Regenerated(record, next_revision(record, expect))
            };
            Ok((outcome, fill))
        };
        Box::pin(self.write_through(&[old, &record.key], write)).await
    }

    async fn delete(&self, key: &SessionKey, expect: Expect) -> Result<WriteOutcome, StoreError> {
        if self.cache.is_none() {
            return self.delete_in_redis(key, expect).await;
        }
        let write = async move { Ok((self.delete_in_redis(key, expect).await?, Fill::Nothing)) };
        Box::pin(self.write_through(&[key], write)).await
    }

    async fn count(&self) -> Result<usize, StoreError> {
        #[cfg(feature = "cluster")]
        if let Some(mut conn) = self.connection.cluster() {
            return self.count_cluster(&mut conn).await;
        }
        let mut conn = self.conn().await?;
        let generation = conn.generation();
        let pattern = self.live_pattern();
        let mut total = 0;
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .timed(
                    generation,
                    scan_live(cursor, &pattern).query_async(&mut conn),
                )
                .await?;
            total += self.live_among(keys).await?;
            cursor = next;
            if cursor == 0 {
                return Ok(total);
            }
        }
    }

    fn supports_owner_index(&self) -> bool {
        true
    }

    async fn index_owner(
        &self,
        owner: &str,
        key: &SessionKey,
        until: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let owner_key = self.owner_key(owner);
        self.run::<i64>(&self.scripts.index_owner, &[&owner_key], |cmd| {
            cmd.arg(key.as_str()).arg(millis(until));
            Ok(())
        })
        .await
        .map(|_| ())
    }

    async fn unindex_owner(&self, owner: &str, key: &SessionKey) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("SREM");
        cmd.arg(self.owner_key(owner)).arg(key.as_str());
        self.query::<i64>(cmd).await.map(|_| ())
    }

    async fn owner_keys(&self, owner: &str) -> Result<Vec<SessionKey>, StoreError> {
        let mut cmd = redis::cmd("SMEMBERS");
        cmd.arg(self.owner_key(owner));
        let members: Vec<Vec<u8>> = self.query(cmd).await?;
        Ok(members
            .iter()
            .filter_map(|m| SessionKey::parse_bytes(m))
            .collect())
    }
}
