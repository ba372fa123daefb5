//! A Redis backend: one server through a reconnecting `ConnectionManager`, or Redis Cluster.

use std::{fmt, future::Future, time::Duration};

use redis::{aio::ConnectionManager, FromRedisValue, RedisError, Script, Value};
use time::OffsetDateTime;

use super::{Expect, Forward, LoadOptions, Loaded, Store, WriteOutcome};
use crate::{error::StoreError, flash::Flash, id::SessionKey, record::Record, session::Session};

const DEFAULT_PREFIX: &str = "session:";
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_EXPIRED_RETENTION: Duration = Duration::from_secs(60 * 60);
const SCAN_BATCH: usize = 1000;

// Every session key holds one string: a fixed-width text header, then the record's JSON without
// its flash (`Record::encode_without_flash`), then the pending flash's JSON, if any:
//
//   S | revision (20 digits) | effective expiry ms (15) | deadline ms (15) |
//     record length (10) | flash pending (1: 0 or 1) | record JSON | flash JSON
//
// A regenerated session's old key holds a forwarding pointer instead:
//
//   P | new key (43) | end of the grace window ms (15, 0: none) | end of the pointer ms (15)
//
// Scripts read the header without decoding JSON and change a field in place with SETRANGE, so a
// sliding read or a taken flash costs no copy of the record. A live key's TTL is its expiry plus
// the expired-record retention, so an expired session is still told from an unknown one for that
// long; the truth is the expiry in the header, which every script checks. Each script touches
// one key (slot) except REGENERATE, which Cluster replaces by CREATE and RETIRE; ARGV[1] is
// always the layer's clock.

/// The header helpers every script starts with.
const PRELUDE: &str = r#"
local H = 62
local function field(v, from, to) return tonumber(string.sub(v, from, to)) end
local function pad(n, width) return string.format('%0' .. width .. '.0f', n) end
local function header(rev, e, d, rlen, flash)
  return 'S' .. pad(rev, 20) .. pad(e, 15) .. pad(d, 15) .. pad(rlen, 10) .. flash
end
local function session(rev, e, d, record, flash)
  local pending = '0'
  if flash ~= '' then pending = '1' end
  return header(rev, e, d, #record, pending) .. record .. flash
end
-- The state of a key for a write: `state` is nil for a live session at the expected revision
-- (ARGV[2], '' for any), else the reply to give: {0} missing or expired, {2, key} moved,
-- {3} conflict, {9} not a session record (another string, or a value of another type).
local function check(key, now, expected)
  local v = redis.pcall('GET', key)
  if type(v) == 'table' and v.err then return {9}, true end
  if not v then return {0}, nil end
  local kind = string.sub(v, 1, 1)
  if kind == 'P' then return {2, string.sub(v, 2, 44)}, v end
  if kind ~= 'S' or #v < H then return {9}, v end
  if field(v, 22, 36) <= now then return {0}, v end
  if expected ~= '' and tonumber(expected) ~= field(v, 2, 21) then return {3}, v end
  return nil, v
end
"#;

/// Loads a session. ARGV: now, idle ms (0: no slide), take flash (1/0: clear it in the same
/// step), retention ms. Returns nil (missing), {1, record, revision, expiry, flash|nil} (live),
/// {2, key, grace end, pointer end} (pointer), {3, record, revision, expiry} (expired: the key
/// is deleted), {9} (not a session record).
const LOAD: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then return false end
local kind = string.sub(v, 1, 1)
if kind == 'P' then return {2, string.sub(v, 2, 44), string.sub(v, 45, 59), string.sub(v, 60, 74)} end
if kind ~= 'S' or #v < H then return {9} end
local now = tonumber(ARGV[1])
local e = field(v, 22, 36)
local rlen = field(v, 52, 61)
local record = string.sub(v, H + 1, H + rlen)
local rev = string.sub(v, 2, 21)
if e <= now then
  redis.call('DEL', KEYS[1])
  return {3, record, rev, e}
end
local idle = tonumber(ARGV[2])
if idle > 0 then
  local slid = math.min(now + idle, field(v, 37, 51))
  if slid > e then
    e = slid
    redis.call('SETRANGE', KEYS[1], 21, pad(e, 15))
    redis.call('PEXPIREAT', KEYS[1], e + tonumber(ARGV[4]))
  end
end
local flash = false
if string.sub(v, 62, 62) == '1' then
  flash = string.sub(v, H + rlen + 1)
  if ARGV[3] == '1' then redis.call('SETRANGE', KEYS[1], 61, '0') end
end
return {1, record, rev, e, flash}
"#;

/// Creates a session unless anything is under the key. ARGV: now, record, flash ('' none),
/// revision, expiry, deadline, retention ms. Returns 1 done, 0 collision.
const CREATE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local e = tonumber(ARGV[5])
redis.call('SET', KEYS[1], session(tonumber(ARGV[4]), e, tonumber(ARGV[6]), ARGV[2], ARGV[3]), 'PXAT', e + tonumber(ARGV[7]))
return 1
"#;

/// Replaces a live session. ARGV: now, expected revision, record, flash ('' none), expiry,
/// retention ms. The expiry never moves back; the deadline stays. Returns {1} done, {0}
/// missing, {2, key} moved, {3} conflict, {9} not a session.
const SAVE: &str = r#"
local state, v = check(KEYS[1], tonumber(ARGV[1]), ARGV[2])
if state then return state end
local e = math.max(field(v, 22, 36), tonumber(ARGV[5]))
redis.call('SET', KEYS[1], session(field(v, 2, 21) + 1, e, field(v, 37, 51), ARGV[3], ARGV[4]), 'PXAT', e + tonumber(ARGV[6]))
return {1}
"#;

/// Deletes a live session. ARGV: now, expected revision. Returns {1} done, {0} missing (an
/// expired record, or a value that is not a session record, is removed too), {2, key} moved,
/// {3} conflict.
const DELETE: &str = r#"
local state, v = check(KEYS[1], tonumber(ARGV[1]), ARGV[2])
if state and (state[1] == 2 or state[1] == 3) then return state end
if v then redis.call('DEL', KEYS[1]) end
if state then return {0} end
return {1}
"#;

/// Moves a session in one step (one server). KEYS: old, new. ARGV: now, expected revision,
/// record, flash ('' none), expiry, deadline, retention ms, new key, grace end ms (0 none),
/// pointer end ms. Returns {1} done, {0} missing, {2, key} moved, {3} conflict,
/// {4} collision, {9} not a session.
const REGENERATE: &str = r#"
local state, v = check(KEYS[1], tonumber(ARGV[1]), ARGV[2])
if state then return state end
if redis.call('EXISTS', KEYS[2]) == 1 then return {4} end
local e = tonumber(ARGV[5])
redis.call('SET', KEYS[2], session(field(v, 2, 21) + 1, e, tonumber(ARGV[6]), ARGV[3], ARGV[4]), 'PXAT', e + tonumber(ARGV[7]))
redis.call('SET', KEYS[1], 'P' .. ARGV[8] .. pad(tonumber(ARGV[9]), 15) .. pad(tonumber(ARGV[10]), 15), 'PXAT', ARGV[10])
return {1}
"#;

/// The second step of a regenerate on a Cluster, where the new key was created first: turns the
/// old key into the pointer if it is still live at the expected revision. ARGV: now, expected
/// revision, new key, grace end ms, pointer end ms. Returns {1, old revision} done, else as
/// `check`.
const RETIRE: &str = r#"
local state, v = check(KEYS[1], tonumber(ARGV[1]), ARGV[2])
if state then return state end
redis.call('SET', KEYS[1], 'P' .. ARGV[3] .. pad(tonumber(ARGV[4]), 15) .. pad(tonumber(ARGV[5]), 15), 'PXAT', ARGV[5])
return {1, field(v, 2, 21)}
"#;

/// Sets the revision of a key that still holds a live session. ARGV: revision.
const SET_REVISION: &str = r#"
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 1) == 'S' then redis.call('SETRANGE', KEYS[1], 1, pad(tonumber(ARGV[1]), 20)) end
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

/// Sessions in Redis: one string per session under `prefix + key` (the key is by default a
/// digest of the cookie's ID, never the cookie itself): a fixed-width header (revision, expiry,
/// deadline), the record's JSON and the pending flash, with a TTL of the session's expiry plus
/// a retention during which an expired session is still reported expired.
///
/// # Commands per operation
/// Every operation is one `EVALSHA` of a short script on one key (no JSON is parsed in Redis):
///
/// | operation | round trips |
/// |---|---|
/// | load (sliding, flash taken) | 1 |
/// | create, save, delete | 1 |
/// | regenerate, one server | 1 (both keys in one script) |
/// | regenerate, Cluster | 2: create the new key, then turn the old one into a pointer (undone if that fails) |
/// | count | `SCAN MATCH prefix*` and one `GETRANGE` of the header per key (on every primary of a Cluster) |
///
/// Each operation has a timeout (default 1 s), so a hung server never hangs a request. The
/// connection reconnects by itself after an outage. Needs Redis 7.0 or newer.
///
/// # Expired sessions
/// An idle-expired or past-deadline session stays in Redis for the expired-record retention
/// (default 1 hour, [`RedisStore::with_expired_retention`]) so that a client that comes back
/// with its cookie is told "expired", not "unknown". The record is deleted by the first load
/// that finds it expired, or by its TTL.
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
    load: std::sync::Arc<Script>,
    create: std::sync::Arc<Script>,
    save: std::sync::Arc<Script>,
    delete: std::sync::Arc<Script>,
    regenerate: std::sync::Arc<Script>,
    retire: std::sync::Arc<Script>,
    set_revision: std::sync::Arc<Script>,
    index_owner: std::sync::Arc<Script>,
}

impl Scripts {
    fn new() -> Self {
        let with_prelude =
            |body: &str| std::sync::Arc::new(Script::new(&format!("{PRELUDE}{body}")));
        Self {
            load: with_prelude(LOAD),
            create: with_prelude(CREATE),
            save: with_prelude(SAVE),
            delete: with_prelude(DELETE),
            regenerate: with_prelude(REGENERATE),
            retire: with_prelude(RETIRE),
            set_revision: with_prelude(SET_REVISION),
            index_owner: std::sync::Arc::new(Script::new(INDEX_OWNER)),
        }
    }

    fn all(&self) -> [&std::sync::Arc<Script>; 8] {
        [
            &self.load,
            &self.create,
            &self.save,
            &self.delete,
            &self.regenerate,
            &self.retire,
            &self.set_revision,
            &self.index_owner,
        ]
    }
}

fn at_millis(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn millis(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `Expect` as a script argument: the revision, or '' for any.
fn expect_arg(expect: Expect) -> String {
    match expect {
        Expect::Revision(revision) => revision.to_string(),
        _ => String::new(),
    }
}

fn malformed(what: &'static str) -> StoreError {
    StoreError::Decode(format!("unexpected reply from a session script: {what}").into())
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

/// A value under a session key that is not a session record (another program's data).
fn foreign() -> StoreError {
    StoreError::Decode("the value under a session key is not a session record".into())
}

impl<T> Clone for RedisStore<T> {
    fn clone(&self) -> Self {
        Self {
            connection: self.connection.clone(),
            prefix: self.prefix.clone(),
            command_timeout: self.command_timeout,
            retention: self.retention,
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
            .field("expired_retention", &self.retention)
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
            retention: DEFAULT_EXPIRED_RETENTION,
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

    /// How long an expired session stays in Redis so that a client coming back with its cookie
    /// fires the `expired` event instead of `rejected(unknown)` (default 1 hour; zero turns it
    /// off). It costs the memory of each idle-expired session for that long: the first load
    /// after the expiry deletes it. Changing it does not change when a session expires.
    #[must_use]
    pub fn with_expired_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    fn key(&self, key: &SessionKey) -> String {
        let mut text = String::with_capacity(self.prefix.len() + 43);
        text.push_str(&self.prefix);
        text.push_str(key.as_str());
        text
    }

    /// The owner index key: `prefix + "owner:" + owner`. A `:` never occurs in a session key, so
    /// it cannot collide with one.
    fn owner_key(&self, owner: &str) -> String {
        format!("{}owner:{owner}", self.prefix)
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
        for script in self.scripts.all() {
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

    /// Runs a script that answers a write outcome.
    async fn write_script(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<Vec<Value>, StoreError> {
        on_connection!(self, |conn| invocation
            .invoke_async::<Vec<Value>>(&mut conn)
            .await)
    }

    /// The flash as a script argument ('' for none).
    fn flash_arg(record: &Record<T>) -> Result<Vec<u8>, StoreError> {
        if record.flash.is_empty() {
            Ok(Vec::new())
        } else {
            record.flash.encode()
        }
    }

    /// Regenerate on a Cluster, where two keys of different slots cannot change in one step:
    /// create the new key first, then turn the old one into the pointer if it is still live at
    /// the expected revision, and remove the new key if not.
    #[cfg(feature = "cluster")]
    async fn regenerate_in_steps(
        &self,
        old: &SessionKey,
        record: &Record<T>,
        expect: Expect,
        forward: Forward,
    ) -> Result<WriteOutcome, StoreError> {
        if self.create(record).await? == WriteOutcome::Collision {
            return Ok(WriteOutcome::Collision);
        }
        let mut retire = self.scripts.retire.key(self.key(old));
        retire
            .arg(millis(OffsetDateTime::now_utc()))
            .arg(expect_arg(expect))
            .arg(forward.to.as_str())
            .arg(forward.grace_until.map_or(0, millis))
            .arg(millis(forward.until));
        let reply = self.write_script(retire).await?;
        let outcome = write_outcome(&reply)?;
        if outcome != WriteOutcome::Done {
            let mut undo = redis::cmd("DEL");
            undo.arg(self.key(&record.key));
            self.query::<i64>(undo).await?;
            return Ok(outcome);
        }
        // The new record was written with the revision this copy expected; under last write
        // wins the old one may have moved on: the new key gets the old revision plus one.
        let revision = u64::try_from(int(reply.get(1))?).unwrap_or(0) + 1;
        if revision != record.revision {
            let mut fix = self.scripts.set_revision.key(self.key(&record.key));
            fix.arg(revision);
            on_connection!(self, |conn| fix.invoke_async::<i64>(&mut conn).await)?;
        }
        Ok(WriteOutcome::Done)
    }

    /// Counts the live sessions among `keys` (skipping owner index keys, pointers and expired
    /// records), reading each key's header with `GETRANGE`.
    async fn live_among(&self, keys: Vec<String>) -> Result<usize, StoreError> {
        let keys: Vec<String> = keys
            .into_iter()
            .filter(|k| {
                k.get(self.prefix.len()..)
                    .and_then(SessionKey::parse)
                    .is_some()
            })
            .collect();
        let now = millis(OffsetDateTime::now_utc());
        let mut live = 0;
        for key in keys {
            let mut cmd = redis::cmd("GETRANGE");
            cmd.arg(&key).arg(0).arg(35);
            let header: Vec<u8> = self.query(cmd).await?;
            let expiry = header
                .get(21..36)
                .and_then(|digits| std::str::from_utf8(digits).ok())
                .and_then(|digits| digits.parse::<i64>().ok());
            if header.first() == Some(&b'S') && expiry.is_some_and(|e| e > now) {
                live += 1;
            }
        }
        Ok(live)
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

impl<T: Session> Store<T> for RedisStore<T> {
    async fn load(&self, key: &SessionKey, options: LoadOptions) -> Result<Loaded<T>, StoreError> {
        let mut invocation = self.scripts.load.key(self.key(key));
        invocation
            .arg(millis(options.now))
            .arg(options.slide.map_or(0, duration_ms).max(0))
            .arg(u8::from(options.take_flash))
            .arg(duration_ms(self.retention));
        let reply: Value = on_connection!(self, |conn| invocation.invoke_async(&mut conn).await)?;
        let reply = match reply {
            Value::Nil => return Ok(Loaded::Missing),
            Value::Array(reply) => reply,
            _ => return Err(malformed("load")),
        };
        let record = |reply: &[Value]| -> Result<Record<T>, StoreError> {
            let body = bytes(reply.get(1)).ok_or_else(|| malformed("record"))?;
            let mut record = Record::<T>::decode(key, body)?;
            record.revision = u64::try_from(int(reply.get(2))?).unwrap_or(0);
            record.expires_at = at_millis(int(reply.get(3))?).min(record.deadline);
            Ok(record)
        };
        match int(reply.first())? {
            1 => {
                let mut record = record(&reply)?;
                if let Some(flash) = bytes(reply.get(4)) {
                    record.flash = Flash::decode(flash)?;
                }
                Ok(Loaded::Active(record))
            }
            2 => {
                let grace = int(reply.get(2))?;
                Ok(Loaded::Moved(Forward::new(
                    key_of(reply.get(1))?,
                    (grace > 0).then(|| at_millis(grace)),
                    at_millis(int(reply.get(3))?),
                )))
            }
            3 => Ok(Loaded::Expired(record(&reply)?)),
            9 => Err(foreign()),
            _ => Err(malformed("load outcome")),
        }
    }

    async fn create(&self, record: &Record<T>) -> Result<WriteOutcome, StoreError> {
        let mut invocation = self.scripts.create.key(self.key(&record.key));
        invocation
            .arg(millis(OffsetDateTime::now_utc()))
            .arg(record.encode_without_flash()?)
            .arg(Self::flash_arg(record)?)
            .arg(record.revision)
            .arg(millis(record.effective_expiry()))
            .arg(millis(record.deadline))
            .arg(duration_ms(self.retention));
        let created: i64 = on_connection!(self, |conn| invocation.invoke_async(&mut conn).await)?;
        Ok(if created == 1 {
            WriteOutcome::Done
        } else {
            WriteOutcome::Collision
        })
    }

    async fn save(&self, record: &Record<T>, expect: Expect) -> Result<WriteOutcome, StoreError> {
        let mut invocation = self.scripts.save.key(self.key(&record.key));
        invocation
            .arg(millis(OffsetDateTime::now_utc()))
            .arg(expect_arg(expect))
            .arg(record.encode_without_flash()?)
            .arg(Self::flash_arg(record)?)
            .arg(millis(record.effective_expiry()))
            .arg(duration_ms(self.retention));
        write_outcome(&self.write_script(invocation).await?)
    }

    async fn regenerate(
        &self,
        old: &SessionKey,
        record: &Record<T>,
        expect: Expect,
        forward: Forward,
    ) -> Result<WriteOutcome, StoreError> {
        #[cfg(feature = "cluster")]
        if matches!(self.connection, Connection::Cluster(_)) {
            return self.regenerate_in_steps(old, record, expect, forward).await;
        }
        let mut invocation = self.scripts.regenerate.key(self.key(old));
        invocation
            .key(self.key(&record.key))
            .arg(millis(OffsetDateTime::now_utc()))
            .arg(expect_arg(expect))
            .arg(record.encode_without_flash()?)
            .arg(Self::flash_arg(record)?)
            .arg(millis(record.effective_expiry()))
            .arg(millis(record.deadline))
            .arg(duration_ms(self.retention))
            .arg(record.key.as_str())
            .arg(forward.grace_until.map_or(0, millis))
            .arg(millis(forward.until));
        write_outcome(&self.write_script(invocation).await?)
    }

    async fn delete(&self, key: &SessionKey, expect: Expect) -> Result<WriteOutcome, StoreError> {
        let mut invocation = self.scripts.delete.key(self.key(key));
        invocation
            .arg(millis(OffsetDateTime::now_utc()))
            .arg(expect_arg(expect));
        write_outcome(&self.write_script(invocation).await?)
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
                    total += self.live_among(keys).await?;
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
        let script = &self.scripts.index_owner;
        let _: i64 = on_connection!(self, |conn| {
            script
                .key(&owner_key)
                .arg(key.as_str())
                .arg(millis(until))
                .invoke_async(&mut conn)
                .await
        })?;
        Ok(())
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
