//! A Redis backend: one server through a reconnecting `ConnectionManager`, or Redis Cluster.

use std::{fmt, future::Future, io::Write, time::Duration};

use redis::{aio::ConnectionManager, Cmd, FromRedisValue, RedisError, RedisWrite, Script};
use time::OffsetDateTime;

use super::{Loaded, Store, WriteOutcome};
use crate::{
    error::StoreError,
    id::SessionId,
    record::{Record, RECORD_FORMAT},
    session::Session,
};

const DEFAULT_PREFIX: &str = "session:";
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// Room reserved in a `SET` command for the record's JSON and the arguments after it: enough for
/// a small session without growing the buffer; a larger one grows it as needed.
const RECORD_SIZE_HINT: usize = 512;
const SCAN_BATCH: usize = 1000;

/// The timestamps that end every record's JSON (`Record` serializes them last, in this order), so
/// scripts can read and rewrite them without decoding the application's data.
const TAIL: &str = r#"'"last_seen":(%d+),"expires_at":(%d+),"deadline":(%d+)}$'"#;

/// Extends a record's expiry to ARGV[2] ms (never past its deadline), with `last_seen` = ARGV[1].
/// Returns 1, or 0 if missing or not a record.
const TOUCH: &str = r#"
local value = redis.call('GET', KEYS[1])
if not value then return 0 end
local seen, old, deadline = string.match(value, TAIL)
if not deadline then return 0 end
local expires = ARGV[2]
if tonumber(deadline) < tonumber(expires) then expires = deadline end
local head = string.sub(value, 1, string.find(value, TAIL) - 1)
local updated = head .. '"last_seen":' .. ARGV[1] .. ',"expires_at":' .. expires .. ',"deadline":' .. deadline .. '}'
redis.call('SET', KEYS[1], updated, 'PXAT', expires)
return 1
"#;

/// Replaces a record only if it is still at revision ARGV[3] (read from the record's tail).
/// KEYS[1] = key; ARGV = new record, expiry ms, expected revision. Returns 1 done, 0 missing,
/// 2 conflict.
const SAVE_IF_REVISION: &str = r#"
local value = redis.call('GET', KEYS[1])
if not value then return 0 end
local revision = string.match(value, '"revision":(%d+),"last_seen":%d+,"expires_at":%d+,"deadline":%d+}$')
if revision ~= ARGV[3] then return 2 end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2])
return 1
"#;

/// Adds ARGV[1] to the owner's set KEYS[1] and keeps the set at least until ARGV[2] ms (the
/// latest deadline of its sessions), on one key, so it is Cluster-safe.
const INDEX_OWNER: &str = r#"
redis.call('SADD', KEYS[1], ARGV[1])
local expires = redis.call('PEXPIRETIME', KEYS[1])
if expires < tonumber(ARGV[2]) then redis.call('PEXPIREAT', KEYS[1], ARGV[2]) end
return 1
"#;

/// Moves a session in one atomic step. KEYS = old, new, grace pointer of old; ARGV = new record,
/// expiry ms, new ID, grace ms (0: no pointer). Returns 1 done, 0 old missing, 2 new taken.
const REGENERATE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 2 end
redis.call('SET', KEYS[2], ARGV[1], 'PXAT', ARGV[2])
if tonumber(ARGV[4]) > 0 then redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4]) end
redis.call('DEL', KEYS[1])
return 1
"#;

/// Sessions in Redis: one key per session, `prefix + ID`, holding the record as JSON, with a TTL
/// equal to the session's effective expiry (the earlier of idle expiry and absolute deadline).
///
/// # Commands per operation
/// | operation | commands | round trips |
/// |---|---|---|
/// | create | `SET key value NX PXAT t` (collision: the layer draws a new ID) | 1 |
/// | load, sliding | `GETEX key PXAT now+idle` (plus `PEXPIREAT deadline` once the deadline caps it) | 1 |
/// | load, fixed expiry | `GET` and `PEXPIRETIME`, pipelined | 1 |
/// | save | `SET key value XX PXAT t` (update-only: never re-creates) | 1 |
/// | delete | `DEL` | 1 |
/// | regenerate, one server | one script: create the new key, delete the old | 1 |
/// | regenerate, Cluster | `SET new NX PXAT t`, then `DEL old` (and `DEL new` if the old one was gone) | 2 |
/// | count | `SCAN MATCH prefix*` (on every primary of a Cluster) | n |
///
/// Each operation has a timeout (default 1 s), so a hung server never hangs a request. The
/// connection reconnects by itself after an outage.
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
    scripts: Scripts,
    session: std::marker::PhantomData<fn() -> T>,
}

#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    #[cfg(feature = "cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
}

#[derive(Clone)]
struct Scripts {
    touch: std::sync::Arc<Script>,
    regenerate: std::sync::Arc<Script>,
    index_owner: std::sync::Arc<Script>,
    save_if_revision: std::sync::Arc<Script>,
}

impl Scripts {
    fn new() -> Self {
        Self {
            touch: std::sync::Arc::new(Script::new(&with_tail(TOUCH))),
            regenerate: std::sync::Arc::new(Script::new(REGENERATE)),
            index_owner: std::sync::Arc::new(Script::new(INDEX_OWNER)),
            save_if_revision: std::sync::Arc::new(Script::new(SAVE_IF_REVISION)),
        }
    }
}

fn with_tail(script: &str) -> String {
    format!("local TAIL = {TAIL}\n{script}")
}

impl<T> Clone for RedisStore<T> {
    fn clone(&self) -> Self {
        Self {
            connection: self.connection.clone(),
            prefix: self.prefix.clone(),
            command_timeout: self.command_timeout,
            scripts: self.scripts.clone(),
            session: std::marker::PhantomData,
        }
    }
}

impl<T> fmt::Debug for RedisStore<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field(
                "connection",
                &match self.connection {
                    Connection::Single(_) => "single",
                    #[cfg(feature = "cluster")]
                    Connection::Cluster(_) => "cluster",
                },
            )
            .field("prefix", &self.prefix)
            .field("command_timeout", &self.command_timeout)
            .finish()
    }
}

/// Runs one future against whichever connection the store holds.
macro_rules! on_connection {
    ($store:expr, |$conn:ident| $body:expr) => {{
        match $store.connection.clone() {
            Connection::Single(mut $conn) => $store.timed(async move { $body }).await,
            #[cfg(feature = "cluster")]
            Connection::Cluster(mut $conn) => $store.timed(async move { $body }).await,
        }
    }};
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

/// The scripts answer 1 for done, 0 for a missing session and 2 for `two` (a collision or a
/// conflict, depending on the script).
fn script_outcome(code: i64, two: WriteOutcome) -> WriteOutcome {
    match code {
        1 => WriteOutcome::Done,
        2 => two,
        _ => WriteOutcome::Missing,
    }
}

fn at_millis(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn millis(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

impl<T: Session> RedisStore<T> {
    /// Connects to one Redis server (`redis://host:port/db`) through a `ConnectionManager`, which
    /// reconnects by itself after an outage. Fails if the server cannot be reached now.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(backend)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(DEFAULT_COMMAND_TIMEOUT))
            .set_response_timeout(Some(DEFAULT_COMMAND_TIMEOUT))
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

    /// Connects to a Redis Cluster through any of its nodes.
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub async fn connect_cluster(nodes: &[&str]) -> Result<Self, StoreError> {
        let client = redis::cluster::ClusterClient::builder(nodes.iter().copied())
            .connection_timeout(DEFAULT_COMMAND_TIMEOUT)
            .response_timeout(DEFAULT_COMMAND_TIMEOUT)
            .retries(2)
            .build()
            .map_err(backend)?;
        let connection = client.get_async_connection().await.map_err(backend)?;
        Self::from_cluster_connection(connection).await
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
            scripts: Scripts::new(),
            session: std::marker::PhantomData,
        }
    }

    /// The prefix of every session key (default `session:`).
    #[must_use]
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long one store operation may take before it fails with [`StoreError::Timeout`]
    /// (default 1 s).
    #[must_use]
    pub fn with_command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// The owner index key: `prefix + "owner:" + owner`. A `:` never occurs in an ID, so it
    /// cannot collide with a session key.
    fn owner_key(&self, owner: &str) -> String {
        format!("{}owner:{owner}", self.prefix)
    }

    /// The grace pointer of a regenerated session: `prefix + "moved:" + old ID`.
    fn moved_key(&self, id: &SessionId) -> String {
        format!("{}moved:{}", self.prefix, id.expose_secret())
    }

    /// Counts the session keys among `keys` (skipping owner index keys).
    fn session_keys(&self, keys: &[String]) -> usize {
        keys.iter()
            .filter(|k| {
                k.get(self.prefix.len()..)
                    .and_then(SessionId::parse)
                    .is_some()
            })
            .count()
    }

    fn key(&self, id: &SessionId) -> String {
        let mut key = String::with_capacity(self.prefix.len() + 43);
        key.push_str(&self.prefix);
        key.push_str(id.expose_secret());
        key
    }

    /// A command on one session key, its buffer sized up front: `name`, then the key written in
    /// place (no intermediate `String`), with room for `extra` more bytes of arguments.
    fn session_command(&self, name: &str, id: &SessionId, extra: usize) -> Result<Cmd, StoreError> {
        let id = id.expose_secret().as_bytes();
        // 6 arguments: the most a session command here has (`SET key value XX PXAT ms`).
        let mut cmd = Cmd::with_capacity(6, name.len() + self.prefix.len() + id.len() + extra);
        cmd.arg(name);
        let mut key = cmd.writer_for_next_arg();
        key.write_all(self.prefix.as_bytes())
            .and_then(|()| key.write_all(id))
            .map_err(|err| StoreError::Encode(Box::new(err)))?;
        drop(key);
        Ok(cmd)
    }

    /// `SET key <record JSON> <condition> PXAT <expiry>`, the JSON written straight into the
    /// command's buffer.
    fn set_command(&self, record: &Record<T>, condition: &str) -> Result<Cmd, StoreError> {
        let mut cmd = self.session_command("SET", &record.id, RECORD_SIZE_HINT)?;
        serde_json::to_writer(cmd.writer_for_next_arg(), record)
            .map_err(|err| StoreError::Encode(Box::new(err)))?;
        cmd.arg(condition)
            .arg("PXAT")
            .arg(millis(record.effective_expiry()));
        Ok(cmd)
    }

    async fn timed<V>(
        &self,
        f: impl Future<Output = Result<V, RedisError>>,
    ) -> Result<V, StoreError> {
        match tokio::time::timeout(self.command_timeout, f).await {
            Ok(result) => result.map_err(backend),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    async fn load_scripts(&self) -> Result<(), StoreError> {
        for script in [
            &self.scripts.touch,
            &self.scripts.regenerate,
            &self.scripts.index_owner,
            &self.scripts.save_if_revision,
        ] {
            on_connection!(self, |conn| script
                .prepare_invoke()
                .load_async(&mut conn)
                .await)?;
        }
        Ok(())
    }

    async fn query<V: FromRedisValue + Send>(&self, cmd: redis::Cmd) -> Result<V, StoreError> {
        on_connection!(self, |conn| cmd.query_async::<V>(&mut conn).await)
    }

    /// Moves `old` to `record.id`, leaving a grace pointer from `old` when `grace` is set: one
    /// script on a single server, ordered steps on a Cluster.
    async fn move_session(
        &self,
        old: &SessionId,
        record: &Record<T>,
        grace: Option<Duration>,
    ) -> Result<WriteOutcome, StoreError> {
        let value = Self::encode(record)?;
        #[cfg(feature = "cluster")]
        if matches!(self.connection, Connection::Cluster(_)) {
            return self.regenerate_in_steps(old, record, value, grace).await;
        }
        let keys = [self.key(old), self.key(&record.id), self.moved_key(old)];
        let expires = millis(record.effective_expiry());
        let grace_ms = grace.map_or(0, |g| {
            u64::try_from(g.as_millis()).unwrap_or(u64::MAX).max(1)
        });
        let script = &self.scripts.regenerate;
        let outcome: i64 = on_connection!(self, |conn| {
            script
                .key(&keys[0])
                .key(&keys[1])
                .key(&keys[2])
                .arg(value)
                .arg(expires)
                .arg(record.id.expose_secret())
                .arg(grace_ms)
                .invoke_async(&mut conn)
                .await
        })?;
        Ok(script_outcome(outcome, WriteOutcome::Collision))
    }

    /// `SET key value NX|XX PXAT expiry`: the value and its TTL in one command. Returns `refused`
    /// when the condition stopped the write.
    async fn set_record(
        &self,
        record: &Record<T>,
        condition: &'static str,
        refused: WriteOutcome,
    ) -> Result<WriteOutcome, StoreError> {
        let cmd = self.set_command(record, condition)?;
        Ok(match self.query::<Option<String>>(cmd).await? {
            Some(_) => WriteOutcome::Done,
            None => refused,
        })
    }

    fn encode(record: &Record<T>) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(record).map_err(|err| StoreError::Encode(Box::new(err)))
    }

    fn decode(id: &SessionId, bytes: &[u8]) -> Result<Record<T>, StoreError> {
        let record: Record<T> =
            serde_json::from_slice(bytes).map_err(|err| StoreError::Decode(Box::new(err)))?;
        if record.id != *id {
            return Err(StoreError::Decode(
                "record stored under another session's key".into(),
            ));
        }
        if record.format > RECORD_FORMAT {
            // Written by a newer version of this crate: its meaning may differ, so do not guess.
            return Err(StoreError::Decode(
                format!(
                    "record format {} is newer than {RECORD_FORMAT}",
                    record.format
                )
                .into(),
            ));
        }
        Ok(record)
    }

    /// Regenerate on a Cluster, where keys of different slots cannot change in one step: create
    /// the new key first (and the grace pointer, if any), then delete the old one, so at no
    /// moment are both lost; if the old one was already gone (a logout won the race), undo.
    #[cfg(feature = "cluster")]
    async fn regenerate_in_steps(
        &self,
        old: &SessionId,
        record: &Record<T>,
        value: Vec<u8>,
        grace: Option<Duration>,
    ) -> Result<WriteOutcome, StoreError> {
        let new_key = self.key(&record.id);
        let mut set = redis::cmd("SET");
        set.arg(&new_key)
            .arg(value)
            .arg("NX")
            .arg("PXAT")
            .arg(millis(record.effective_expiry()));
        if self.query::<Option<String>>(set).await?.is_none() {
            return Ok(WriteOutcome::Collision);
        }
        if let Some(grace) = grace {
            let mut pointer = redis::cmd("SET");
            pointer
                .arg(self.moved_key(old))
                .arg(record.id.expose_secret())
                .arg("PX")
                .arg(u64::try_from(grace.as_millis()).unwrap_or(u64::MAX).max(1));
            self.query::<Option<String>>(pointer).await?;
        }
        let mut del = redis::cmd("DEL");
        del.arg(self.key(old));
        if self.query::<i64>(del).await? == 1 {
            return Ok(WriteOutcome::Done);
        }
        let mut undo = redis::cmd("DEL");
        undo.arg(new_key);
        self.query::<i64>(undo).await?;
        if grace.is_some() {
            let mut undo = redis::cmd("DEL");
            undo.arg(self.moved_key(old));
            self.query::<i64>(undo).await?;
        }
        Ok(WriteOutcome::Missing)
    }

    #[cfg(feature = "cluster")]
    async fn count_cluster(
        &self,
        conn: &mut redis::cluster_async::ClusterConnection,
    ) -> Result<usize, StoreError> {
        use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
        let nodes: String = self
            .timed(conn.route_command(
                redis::cmd("CLUSTER").arg("NODES").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            ))
            .await
            .and_then(|value| String::from_redis_value(value).map_err(|e| backend(e.into())))?;
        let mut total = 0;
        for line in nodes
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail"))
        {
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
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{}*", self.prefix))
                    .arg("COUNT")
                    .arg(SCAN_BATCH);
                let value = self.timed(conn.route_command(scan, route.clone())).await?;
                let (next, keys): (u64, Vec<String>) =
                    FromRedisValue::from_redis_value(value).map_err(|e| backend(e.into()))?;
                total += self.session_keys(&keys);
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(total)
    }
}

impl<T: Session> Store<T> for RedisStore<T> {
    /// Yes: a Redis dump, replica or backup must not hold live session cookies.
    fn hashes_ids_at_rest(&self) -> bool {
        true
    }

    async fn create(&self, record: &Record<T>) -> Result<WriteOutcome, StoreError> {
        self.set_record(record, "NX", WriteOutcome::Collision).await
    }

    async fn load(&self, id: &SessionId) -> Result<Loaded<T>, StoreError> {
        let key = self.key(id);
        // One round trip: the value and its TTL, which sliding reads may have moved past the
        // expiry written in the JSON.
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(&key).cmd("PEXPIRETIME").arg(&key);
        let (bytes, expires_ms): (Option<Vec<u8>>, i64) =
            on_connection!(self, |conn| pipe.query_async(&mut conn).await)?;
        let Some(bytes) = bytes else {
            return Ok(Loaded::Missing);
        };
        let mut record = Self::decode(id, &bytes)?;
        if expires_ms > 0 {
            record.expires_at = at_millis(expires_ms).min(record.deadline);
        }
        if record.is_expired(OffsetDateTime::now_utc()) {
            self.delete(id).await?;
            return Ok(Loaded::Expired(record));
        }
        Ok(Loaded::Active(record))
    }

    async fn load_and_touch(
        &self,
        id: &SessionId,
        idle: Duration,
    ) -> Result<Loaded<T>, StoreError> {
        // Whole milliseconds, the precision of the stored timestamps and of PXAT.
        let now = at_millis(millis(OffsetDateTime::now_utc()));
        let slid = now + idle;
        // GETEX reads and slides the TTL in one native command. The stored JSON keeps the
        // expiry of its last write; the TTL is the truth, and `load` reads it back.
        let mut getex = self.session_command("GETEX", id, 32)?;
        getex.arg("PXAT").arg(millis(slid));
        let Some(bytes) = self.query::<Option<Vec<u8>>>(getex).await? else {
            return Ok(Loaded::Missing);
        };
        let mut record = Self::decode(id, &bytes)?;
        if now >= record.deadline {
            self.delete(id).await?;
            return Ok(Loaded::Expired(record));
        }
        record.touch(now, idle);
        if record.expires_at < slid {
            // Near the end of its life: the absolute deadline caps the TTL GETEX just set.
            let mut cap = self.session_command("PEXPIREAT", id, 16)?;
            cap.arg(millis(record.deadline));
            self.query::<i64>(cap).await?;
        }
        Ok(Loaded::Active(record))
    }

    async fn touch(
        &self,
        id: &SessionId,
        expires_at: OffsetDateTime,
    ) -> Result<WriteOutcome, StoreError> {
        let key = self.key(id);
        let now = millis(OffsetDateTime::now_utc());
        let script = &self.scripts.touch;
        let done: i64 = on_connection!(self, |conn| {
            script
                .key(&key)
                .arg(now)
                .arg(millis(expires_at))
                .invoke_async(&mut conn)
                .await
        })?;
        Ok(if done == 1 {
            WriteOutcome::Done
        } else {
            WriteOutcome::Missing
        })
    }

    async fn save(&self, record: &Record<T>) -> Result<WriteOutcome, StoreError> {
        self.set_record(record, "XX", WriteOutcome::Missing).await
    }

    async fn save_if_revision(
        &self,
        record: &Record<T>,
        expected: u64,
    ) -> Result<WriteOutcome, StoreError> {
        let key = self.key(&record.id);
        let value = Self::encode(record)?;
        let expires = millis(record.effective_expiry());
        let script = &self.scripts.save_if_revision;
        let outcome: i64 = on_connection!(self, |conn| {
            script
                .key(&key)
                .arg(value)
                .arg(expires)
                .arg(expected)
                .invoke_async(&mut conn)
                .await
        })?;
        Ok(script_outcome(outcome, WriteOutcome::Conflict))
    }

    async fn delete(&self, id: &SessionId) -> Result<WriteOutcome, StoreError> {
        let cmd = self.session_command("DEL", id, 0)?;
        Ok(if self.query::<i64>(cmd).await? > 0 {
            WriteOutcome::Done
        } else {
            WriteOutcome::Missing
        })
    }

    async fn regenerate(
        &self,
        old: &SessionId,
        record: &Record<T>,
    ) -> Result<WriteOutcome, StoreError> {
        self.move_session(old, record, None).await
    }

    async fn count(&self) -> Result<usize, StoreError> {
        match self.connection.clone() {
            Connection::Single(mut conn) => {
                let pattern = format!("{}*", self.prefix);
                let mut total = 0;
                let mut cursor: u64 = 0;
                loop {
                    let mut scan = redis::cmd("SCAN");
                    scan.arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(SCAN_BATCH);
                    let (next, keys): (u64, Vec<String>) =
                        self.timed(scan.query_async(&mut conn)).await?;
                    total += self.session_keys(&keys);
                    cursor = next;
                    if cursor == 0 {
                        return Ok(total);
                    }
                }
            }
            #[cfg(feature = "cluster")]
            Connection::Cluster(mut conn) => self.count_cluster(&mut conn).await,
        }
    }

    async fn index_owner(
        &self,
        owner: &str,
        id: &SessionId,
        until: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let key = self.owner_key(owner);
        let script = &self.scripts.index_owner;
        let _: i64 = on_connection!(self, |conn| {
            script
                .key(&key)
                .arg(id.expose_secret())
                .arg(millis(until))
                .invoke_async(&mut conn)
                .await
        })?;
        Ok(())
    }

    async fn unindex_owner(&self, owner: &str, id: &SessionId) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("SREM");
        cmd.arg(self.owner_key(owner)).arg(id.expose_secret());
        self.query::<i64>(cmd).await.map(|_| ())
    }

    async fn owner_ids(&self, owner: &str) -> Result<Vec<SessionId>, StoreError> {
        let mut cmd = redis::cmd("SMEMBERS");
        cmd.arg(self.owner_key(owner));
        let members: Vec<Vec<u8>> = self.query(cmd).await?;
        Ok(members
            .iter()
            .filter_map(|m| SessionId::parse_bytes(m))
            .collect())
    }

    async fn regenerate_with_grace(
        &self,
        old: &SessionId,
        record: &Record<T>,
        grace: Duration,
    ) -> Result<WriteOutcome, StoreError> {
        self.move_session(old, record, Some(grace)).await
    }

    async fn moved_to(&self, id: &SessionId) -> Result<Option<SessionId>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.moved_key(id));
        let target: Option<Vec<u8>> = self.query(cmd).await?;
        Ok(target.and_then(|bytes| SessionId::parse_bytes(&bytes)))
    }
}
