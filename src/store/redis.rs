//! A Redis backend: one server through a reconnecting `ConnectionManager`, or Redis Cluster.

use std::{fmt, future::Future, io::Write, time::Duration};

use redis::{
    aio::ConnectionManager, Cmd, ErrorKind, FromRedisValue, RedisError, RedisWrite, Script,
    ServerErrorKind, Value,
};
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

/// Loads a session, with nothing but one `GET` unless it must change it (the hot path: no
/// helper functions, no copies). ARGV: now, idle ms (0: no slide), take flash (1/0: clear it in
/// the same step), retention ms. Returns nil (missing), {1, value} (live) or {1, value, slid
/// expiry} when the slide moved the expiry, {2, value} (pointer), {3, value} (expired: it stays
/// until its retention ends, so every load until then can say so), {9} (not a session record).
/// The expiry moves only by steps of at least a second, which saves two writes on most reads.
const LOAD: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then return false end
local kind = string.byte(v, 1)
if kind == 80 then return {2, v} end
if kind ~= 83 or #v < 62 then return {9} end
local now = tonumber(ARGV[1])
local e = tonumber(string.sub(v, 22, 36))
if e <= now then return {3, v} end
if ARGV[3] == '1' and string.byte(v, 62) == 49 then redis.call('SETRANGE', KEYS[1], 61, '0') end
local idle = tonumber(ARGV[2])
if idle > 0 then
  local slid = math.min(now + idle, tonumber(string.sub(v, 37, 51)))
  if slid - e >= 1000 then
    redis.call('SETRANGE', KEYS[1], 21, string.format('%015.0f', slid))
    redis.call('PEXPIREAT', KEYS[1], slid + tonumber(ARGV[4]))
    return {1, v, slid}
  end
end
return {1, v}
"#;

/// Creates a session unless anything is under the key. ARGV: now, record, flash ('' none),
/// revision, expiry, deadline, retention ms. Returns 1 done, 0 collision.
const CREATE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local e = tonumber(ARGV[5])
redis.call('SET', KEYS[1], session(tonumber(ARGV[4]), e, tonumber(ARGV[6]), ARGV[2], ARGV[3]), 'PXAT', e + tonumber(ARGV[7]))
return 1
"#;

/// Replaces a live session (inline, like LOAD: it is on every write's path). ARGV: now,
/// expected revision ('' any), record, flash ('' none), expiry, retention ms. The expiry never
/// moves back; the deadline stays. Returns {1} done, {0} missing, {2, key} moved, {3}
/// conflict, {9} not a session.
const SAVE: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then return {0} end
local kind = string.byte(v, 1)
if kind == 80 then return {2, string.sub(v, 2, 44)} end
if kind ~= 83 or #v < 62 then return {9} end
local e = tonumber(string.sub(v, 22, 36))
if e <= tonumber(ARGV[1]) then return {0} end
local rev = tonumber(string.sub(v, 2, 21))
if ARGV[2] ~= '' and tonumber(ARGV[2]) ~= rev then return {3} end
e = math.max(e, tonumber(ARGV[5]))
local pending = '0'
if ARGV[4] ~= '' then pending = '1' end
local head = string.format('S%020.0f%015.0f', rev + 1, e) .. string.sub(v, 37, 51) .. string.format('%010.0f', #ARGV[3])
redis.call('SET', KEYS[1], head .. pending .. ARGV[3] .. ARGV[4], 'PXAT', e + tonumber(ARGV[6]))
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
/// # Sliding expiry
/// A read moves the expiry to `now + idle` only when that moves it by a second or more: on a
/// busy session most reads then write nothing. A session used at time `t` therefore expires at
/// the earliest at `t + idle - 1 s`; the expiry is still checked on every read.
///
/// # Expired sessions
/// An idle-expired or past-deadline session stays in Redis for the expired-record retention
/// (default 1 hour, [`RedisStore::with_expired_retention`]) so that a client that comes back
/// with its cookie is told "expired", not "unknown"; the TTL removes it then. No write reaches
/// it meanwhile.
///
/// # Upgrading from 0.1
/// Version 0.1 kept each session as a plain JSON string. This version reads such a value as not
/// a session record and removes it: every session ends once when you upgrade (users log in
/// again). 0.1's `moved:` grace keys expire by themselves.
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

/// One of the store's Lua scripts: its source, for `EVAL` when the server has lost it (a
/// restart, `SCRIPT FLUSH`), and its SHA1, for `EVALSHA`.
struct Lua {
    code: String,
    script: Script,
}

impl Lua {
    fn new(code: String) -> std::sync::Arc<Self> {
        let script = Script::new(&code);
        std::sync::Arc::new(Self { code, script })
    }
}

#[derive(Clone)]
struct Scripts {
    load: std::sync::Arc<Lua>,
    create: std::sync::Arc<Lua>,
    save: std::sync::Arc<Lua>,
    delete: std::sync::Arc<Lua>,
    regenerate: std::sync::Arc<Lua>,
    retire: std::sync::Arc<Lua>,
    set_revision: std::sync::Arc<Lua>,
    index_owner: std::sync::Arc<Lua>,
}

impl Scripts {
    fn new() -> Self {
        let with_prelude = |body: &str| Lua::new(format!("{PRELUDE}{body}"));
        Self {
            load: Lua::new(LOAD.to_owned()),
            create: with_prelude(CREATE),
            save: Lua::new(SAVE.to_owned()),
            delete: with_prelude(DELETE),
            regenerate: with_prelude(REGENERATE),
            retire: with_prelude(RETIRE),
            set_revision: with_prelude(SET_REVISION),
            index_owner: Lua::new(INDEX_OWNER.to_owned()),
        }
    }

    fn all(&self) -> [&std::sync::Arc<Lua>; 8] {
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

/// Room reserved in a script command for the record's JSON: enough for a small session without
/// growing the buffer; a larger one grows it as needed.
const RECORD_SIZE_HINT: usize = 512;

fn at_millis(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

use crate::record::unix_ms as millis;

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

/// A session value as the scripts keep it: the 62-byte header, the record, the flash.
struct Stored<'a> {
    revision: u64,
    expiry: i64,
    record: &'a [u8],
    flash: Option<&'a [u8]>,
}

/// The decimal number in `bytes[range]` of a header.
fn header_number(bytes: &[u8], range: std::ops::Range<usize>) -> Result<i64, StoreError> {
    bytes
        .get(range)
        .and_then(|digits| std::str::from_utf8(digits).ok())
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(foreign)
}

impl<'a> Stored<'a> {
    fn parse(value: &'a [u8]) -> Result<Self, StoreError> {
        if value.first() != Some(&b'S') {
            return Err(foreign());
        }
        let length = usize::try_from(header_number(value, 51..61)?).map_err(|_| foreign())?;
        let end = 62usize.checked_add(length).ok_or_else(foreign)?;
        Ok(Self {
            revision: u64::try_from(header_number(value, 1..21)?).map_err(|_| foreign())?,
            expiry: header_number(value, 21..36)?,
            record: value.get(62..end).ok_or_else(foreign)?,
            flash: (value.get(61) == Some(&b'1')).then(|| value.get(end..).unwrap_or_default()),
        })
    }

    /// The record, with the header's revision, expiry and flash (which are the truth).
    fn record<T: serde::de::DeserializeOwned>(
        &self,
        key: &SessionKey,
    ) -> Result<Record<T>, StoreError> {
        let mut record = Record::<T>::decode(key, self.record)?;
        record.revision = self.revision;
        record.expires_at = at_millis(self.expiry).min(record.deadline);
        if let Some(flash) = self.flash {
            record.flash = Flash::decode(flash)?;
        }
        Ok(record)
    }
}

/// A forwarding pointer as the scripts keep it.
struct Pointer {
    to: SessionKey,
    grace_until: i64,
    until: i64,
}

impl Pointer {
    fn parse(value: &[u8]) -> Result<Self, StoreError> {
        if value.first() != Some(&b'P') {
            return Err(foreign());
        }
        Ok(Self {
            to: value
                .get(1..44)
                .and_then(SessionKey::parse_bytes)
                .ok_or_else(foreign)?,
            grace_until: header_number(value, 44..59)?,
            until: header_number(value, 59..74)?,
        })
    }
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
    /// off). It costs the memory of each idle-expired session for that long. Changing it does
    /// not change when a session expires.
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
        for lua in self.scripts.all() {
            on_connection!(self, |conn| lua
                .script
                .prepare_invoke()
                .load_async(&mut conn)
                .await)?;
        }
        Ok(())
    }

    async fn query<V: FromRedisValue + Send>(&self, cmd: redis::Cmd) -> Result<V, StoreError> {
        on_connection!(self, |conn| cmd.query_async::<V>(&mut conn).await)
    }

    /// Sends `cmd` within the command timeout, keeping the server's error as it is.
    async fn exec<V: FromRedisValue>(
        &self,
        cmd: &Cmd,
    ) -> Result<redis::RedisResult<V>, StoreError> {
        let sent = async {
            match self.connection.clone() {
                Connection::Single(mut conn) => cmd.query_async(&mut conn).await,
                #[cfg(feature = "cluster")]
                Connection::Cluster(mut conn) => cmd.query_async(&mut conn).await,
            }
        };
        tokio::time::timeout(self.command_timeout, sent)
            .await
            .map_err(|_| StoreError::Timeout)
    }

    /// Runs `lua` on `keys` with the arguments `args` writes: one `EVALSHA`, built in one
    /// buffer with the arguments written in place (no allocation per argument), and `EVAL` of
    /// the source if the server lost the script.
    async fn run<V: FromRedisValue>(
        &self,
        lua: &Lua,
        keys: &[&SessionKey],
        args: impl Fn(&mut Cmd) -> Result<(), StoreError>,
    ) -> Result<V, StoreError> {
        let mut cmd = self.script_cmd("EVALSHA", lua.script.get_hash().as_bytes(), keys)?;
        args(&mut cmd)?;
        match self.exec(&cmd).await? {
            Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                let mut cmd = self.script_cmd("EVAL", lua.code.as_bytes(), keys)?;
                args(&mut cmd)?;
                self.exec(&cmd).await?.map_err(backend)
            }
            reply => reply.map_err(backend),
        }
    }

    /// `verb script numkeys key...`, the keys (`prefix + key`) written in place, with room for
    /// a record's worth of arguments.
    fn script_cmd(
        &self,
        verb: &str,
        script: &[u8],
        keys: &[&SessionKey],
    ) -> Result<Cmd, StoreError> {
        let key_len = self.prefix.len() + 43;
        let mut cmd = Cmd::with_capacity(
            16,
            verb.len() + script.len() + 4 + keys.len() * key_len + RECORD_SIZE_HINT,
        );
        cmd.arg(verb).arg(script).arg(keys.len());
        for key in keys {
            let mut arg = cmd.writer_for_next_arg();
            arg.write_all(self.prefix.as_bytes())
                .and_then(|()| arg.write_all(key.as_str().as_bytes()))
                .map_err(|err| StoreError::Encode(Box::new(err)))?;
        }
        Ok(cmd)
    }

    /// Writes the record's JSON (without its flash) and the flash ('' for none) as the next two
    /// arguments.
    fn record_args(cmd: &mut Cmd, record: &Record<T>) -> Result<(), StoreError> {
        record.write_without_flash(cmd.writer_for_next_arg())?;
        if record.flash.is_empty() {
            cmd.arg("");
        } else {
            serde_json::to_writer(cmd.writer_for_next_arg(), &record.flash)
                .map_err(|err| StoreError::Encode(Box::new(err)))?;
        }
        Ok(())
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
        let now = millis(OffsetDateTime::now_utc());
        let reply: Vec<Value> = self
            .run(&self.scripts.retire, &[old], |cmd| {
                cmd.arg(now)
                    .arg(expect_arg(expect))
                    .arg(forward.to.as_str())
                    .arg(forward.grace_until.map_or(0, millis))
                    .arg(millis(forward.until));
                Ok(())
            })
            .await?;
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
            self.run::<i64>(&self.scripts.set_revision, &[&record.key], |cmd| {
                cmd.arg(revision);
                Ok(())
            })
            .await?;
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
        let reply: Value = self
            .run(&self.scripts.load, &[key], |cmd| {
                cmd.arg(millis(options.now))
                    .arg(options.slide.map_or(0, duration_ms))
                    .arg(u8::from(options.take_flash))
                    .arg(duration_ms(self.retention));
                Ok(())
            })
            .await?;
        let reply = match reply {
            Value::Nil => return Ok(Loaded::Missing),
            Value::Array(reply) => reply,
            _ => return Err(malformed("load")),
        };
        let value = bytes(reply.get(1));
        match int(reply.first())? {
            1 => {
                let stored = Stored::parse(value.ok_or_else(foreign)?)?;
                let mut record = stored.record::<T>(key)?;
                if let Some(slid) = reply.get(2) {
                    record.expires_at = at_millis(int(Some(slid))?).min(record.deadline);
                }
                Ok(Loaded::Active(record))
            }
            2 => {
                let pointer = Pointer::parse(value.ok_or_else(foreign)?)?;
                Ok(Loaded::Moved(Forward::new(
                    pointer.to,
                    (pointer.grace_until > 0).then(|| at_millis(pointer.grace_until)),
                    at_millis(pointer.until),
                )))
            }
            3 => {
                let stored = Stored::parse(value.ok_or_else(foreign)?)?;
                Ok(Loaded::Expired(stored.record::<T>(key)?))
            }
            9 => Err(foreign()),
            _ => Err(malformed("load outcome")),
        }
    }

    async fn create(&self, record: &Record<T>) -> Result<WriteOutcome, StoreError> {
        let now = millis(OffsetDateTime::now_utc());
        let created: i64 = self
            .run(&self.scripts.create, &[&record.key], |cmd| {
                cmd.arg(now);
                Self::record_args(cmd, record)?;
                cmd.arg(record.revision)
                    .arg(millis(record.effective_expiry()))
                    .arg(millis(record.deadline))
                    .arg(duration_ms(self.retention));
                Ok(())
            })
            .await?;
        Ok(if created == 1 {
            WriteOutcome::Done
        } else {
            WriteOutcome::Collision
        })
    }

    async fn save(&self, record: &Record<T>, expect: Expect) -> Result<WriteOutcome, StoreError> {
        let now = millis(OffsetDateTime::now_utc());
        let reply: Vec<Value> = self
            .run(&self.scripts.save, &[&record.key], |cmd| {
                cmd.arg(now).arg(expect_arg(expect));
                Self::record_args(cmd, record)?;
                cmd.arg(millis(record.effective_expiry()))
                    .arg(duration_ms(self.retention));
                Ok(())
            })
            .await?;
        write_outcome(&reply)
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
        let now = millis(OffsetDateTime::now_utc());
        let reply: Vec<Value> = self
            .run(&self.scripts.regenerate, &[old, &record.key], |cmd| {
                cmd.arg(now).arg(expect_arg(expect));
                Self::record_args(cmd, record)?;
                cmd.arg(millis(record.effective_expiry()))
                    .arg(millis(record.deadline))
                    .arg(duration_ms(self.retention))
                    .arg(record.key.as_str())
                    .arg(forward.grace_until.map_or(0, millis))
                    .arg(millis(forward.until));
                Ok(())
            })
            .await?;
        write_outcome(&reply)
    }

    async fn delete(&self, key: &SessionKey, expect: Expect) -> Result<WriteOutcome, StoreError> {
        let now = millis(OffsetDateTime::now_utc());
        let reply: Vec<Value> = self
            .run(&self.scripts.delete, &[key], |cmd| {
                cmd.arg(now).arg(expect_arg(expect));
                Ok(())
            })
            .await?;
        write_outcome(&reply)
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
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.scripts.index_owner.script.get_hash())
            .arg(1)
            .arg(self.owner_key(owner))
            .arg(key.as_str())
            .arg(millis(until));
        match self.exec::<i64>(&cmd).await? {
            Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(&self.scripts.index_owner.code)
                    .arg(1)
                    .arg(self.owner_key(owner))
                    .arg(key.as_str())
                    .arg(millis(until));
                self.exec::<i64>(&cmd).await?.map_err(backend)?;
            }
            reply => {
                reply.map_err(backend)?;
            }
        }
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
