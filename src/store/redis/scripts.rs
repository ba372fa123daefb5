//! The Lua scripts behind the writes that must check something and change it in one step.
//!
//! Reads and last-write-wins saves never run a script (see `layout.rs`): a script costs Redis
//! at least 0.5 µs per call and 0.6 µs per `redis.call`, against about 0.3 µs for a native
//! command. What is left here is a create (nothing may be under any of the three keys), a save
//! that checks a revision, a delete, and the checking half of a regenerate (the new session is
//! written with plain `SET … NX` before it). Every script is inline, with no
//! helper functions: defining a function costs a script call time too. KEYS are always the
//! session's `record`, `live` and `moved` keys (then the new session's for a regenerate).
//! Rust formats every value a script writes (the record with its header, the pointer) and every
//! number it compares: ARGV[1] is the clock as 15 digits and a revision is 20, so a script
//! compares them as strings, as the header holds them: the session scripts call neither
//! `string.format` nor `tonumber`, which cost a script a microsecond or more each.
//!
//! Replies: `{1, ...}` done, `{0}` missing (or expired), `{2, key}` moved, `{3}` conflict,
//! `{4}` collision, `{9}` not a session record.

use std::sync::Arc;

use redis::Script;

/// The start of a script that changes a live session (optimistic save, regenerate, retire):
/// reads the record and the `live` key (its pending flash) of KEYS[1..2], answers moved (from
/// KEYS[3]), missing, expired, not a session or conflict, and leaves `v` and `pending` set
/// otherwise. A macro, not
/// a Lua function: a function defined per call costs the script time.
macro_rules! live_at_expected_revision {
    () => {
        r#"
local got = redis.call('MGET', KEYS[1], KEYS[2])
local v, pending = got[1], got[2]
if not v then
  local p = redis.call('GET', KEYS[3])
  if p and string.byte(p, 1) == 80 then return {2, string.sub(p, 2, 44)} end
  return {0}
end
if string.byte(v, 1) ~= 83 or #v < 36 then return {9} end
if not pending or string.sub(v, 22, 36) <= ARGV[1] then return {0} end
if ARGV[2] ~= '' and string.sub(v, 2, 21) ~= ARGV[2] then return {3} end
"#
    };
}

/// Creates a session unless anything is under its keys. ARGV: record value, flash ('' none),
/// expiry ms, record TTL end ms. Returns 1 done, 0 collision.
const CREATE: &str = r#"
if redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[3]) > 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[4])
redis.call('SET', KEYS[2], ARGV[2], 'PXAT', ARGV[3])
return 1
"#;

/// Replaces a live session at the expected revision (optimistic concurrency). ARGV: now,
/// expected revision, record value, flash ('' keeps the pending one). The expiry stays where
/// the load that read this copy slid it.
const SAVE: &str = concat!(
    live_at_expected_revision!(),
    r#"
redis.call('SET', KEYS[1], ARGV[3], 'KEEPTTL')
if ARGV[4] ~= '' then redis.call('SET', KEYS[2], ARGV[4], 'KEEPTTL') end
return {1}
"#
);

/// Deletes a live session (at the expected revision, '' any). ARGV: now, expected revision.
/// An expired record, or a value that is not a session record, is removed too and answers
/// missing.
const DELETE: &str = r#"
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'table' then
  redis.call('DEL', KEYS[1], KEYS[2])
  return {0}
end
if not v then
  local p = redis.call('GET', KEYS[3])
  if p and string.byte(p, 1) == 80 then return {2, string.sub(p, 2, 44)} end
  return {0}
end
local live = string.byte(v, 1) == 83 and #v >= 36 and string.sub(v, 22, 36) > ARGV[1] and redis.call('EXISTS', KEYS[2]) == 1
if live and ARGV[2] ~= '' and string.sub(v, 2, 21) ~= ARGV[2] then return {3} end
redis.call('DEL', KEYS[1], KEYS[2])
if live then return {1} end
return {0}
"#;

/// The last command of a regenerate on one server, in a transaction whose first two commands
/// wrote the new session's record and `live` key with plain `SET … NX` (plain commands, so that
/// a cached store's `NOLOOP` covers them and it keeps the copy it wrote). Turns the old session
/// into the pointer if it is live at the expected revision and the new record holds this
/// call's value (else its `SET` found the key taken); on a refusal it removes the new keys when
/// the record is this call's, so a refused regenerate leaves nothing, in the same step.
/// KEYS: the old session's three, the new one's record and `live`. ARGV: now, expected revision
/// ('' any), pointer value, pointer end ms, the new record's value, the new `live` value ('' no
/// flash: a pending one moves over). Returns `{1, pending flash}` done, `{4}` a new key taken,
/// else as the others.
const REGENERATE: &str = r#"
local got = redis.call('MGET', KEYS[1], KEYS[2], KEYS[4])
local v, pending = got[1], got[2]
local mine = got[3] == ARGV[5]
local refused
if not v then
  local p = redis.call('GET', KEYS[3])
  if p and string.byte(p, 1) == 80 then refused = {2, string.sub(p, 2, 44)} else refused = {0} end
elseif string.byte(v, 1) ~= 83 or #v < 36 then refused = {9}
elseif not pending or string.sub(v, 22, 36) <= ARGV[1] then refused = {0}
elseif ARGV[2] ~= '' and string.sub(v, 2, 21) ~= ARGV[2] then refused = {3}
elseif not mine then refused = {4}
end
if refused then
  if mine then redis.call('DEL', KEYS[4], KEYS[5]) end
  return refused
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('SET', KEYS[3], ARGV[3], 'PXAT', ARGV[4])
if ARGV[6] == '' and pending ~= '' then redis.call('SET', KEYS[5], pending, 'KEEPTTL') end
return {1, pending}
"#;

/// The second half of a regenerate on a Cluster, once the new session was written: turns the
/// old session into the pointer if it is still live at the expected revision. ARGV: now,
/// expected revision ('' any), pointer value, pointer end ms. Returns {1, pending flash} done,
/// else as the others.
const RETIRE: &str = concat!(
    live_at_expected_revision!(),
    r#"
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('SET', KEYS[3], ARGV[3], 'PXAT', ARGV[4])
return {1, pending}
"#
);

/// Adds ARGV[1] to the owner's set KEYS[1] and keeps the set at least until ARGV[2] ms (the
/// latest deadline of its sessions), on one key, so it is Cluster-safe.
const INDEX_OWNER: &str = r#"
redis.call('SADD', KEYS[1], ARGV[1])
local expires = redis.call('PEXPIRETIME', KEYS[1])
if expires < tonumber(ARGV[2]) then redis.call('PEXPIREAT', KEYS[1], ARGV[2]) end
return 1
"#;

/// One script: its source, for `EVAL` when the server has lost it (a restart, `SCRIPT FLUSH`),
/// and its SHA1, for `EVALSHA`.
pub(super) struct Lua {
    pub(super) code: &'static str,
    pub(super) script: Script,
}

impl Lua {
    fn new(code: &'static str) -> Arc<Self> {
        Arc::new(Self {
            code,
            script: Script::new(code),
        })
    }
}

#[derive(Clone)]
pub(super) struct Scripts {
    pub(super) create: Arc<Lua>,
    pub(super) save: Arc<Lua>,
    pub(super) delete: Arc<Lua>,
    pub(super) regenerate: Arc<Lua>,
    pub(super) retire: Arc<Lua>,
    pub(super) index_owner: Arc<Lua>,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            create: Lua::new(CREATE),
            save: Lua::new(SAVE),
            delete: Lua::new(DELETE),
            regenerate: Lua::new(REGENERATE),
            retire: Lua::new(RETIRE),
            index_owner: Lua::new(INDEX_OWNER),
        }
    }

    pub(super) fn all(&self) -> [&Arc<Lua>; 6] {
        [
            &self.create,
            &self.save,
            &self.delete,
            &self.regenerate,
            &self.retire,
            &self.index_owner,
        ]
    }
}
