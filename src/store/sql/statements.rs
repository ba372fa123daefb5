//! Every SQL statement the SQL stores run, for both dialects, in one place.
//!
//! One table holds sessions and forwarding pointers, one row per key; a second one is the owner
//! index. Times are Unix milliseconds (`BIGINT`), the precision records keep, so both dialects
//! compare them the same way and the layer's clock, not the database's, judges expiry.
//!
//! | column | session row | pointer row (after a regenerate) |
//! |---|---|---|
//! | `key` | the session key (a digest of the cookie's ID by default) | the old key |
//! | `revision` | bumped by every write | the revision it moved at |
//! | `expires_ms` | idle expiry, slid by reads | until when the pointer exists |
//! | `deadline_ms` | absolute deadline | the same as `expires_ms` |
//! | `record` | the record's JSON, without its flash | `NULL` |
//! | `flash` | pending flash messages (JSON), or `NULL` | `NULL` |
//! | `flash_taken` | what the last load took (see below) | `NULL` |
//! | `moved_to` | `NULL` | the new key |
//! | `grace_until_ms` | `NULL` | end of the grace window, or `NULL` |
//!
//! A load takes the pending flash in the same `UPDATE` that slides the expiry: `SET` expressions
//! see the row as it was, so `flash_taken = flash, flash = NULL` moves it aside and `RETURNING`
//! hands it out; of two concurrent loads the second waits for the row lock and finds nothing to
//! take. What `flash_taken` keeps is overwritten by the next load that writes. That `UPDATE`
//! runs only when it changes something: a pending flash, or a slide of at least a second (the
//! store contract lets a store skip smaller ones), so a session read many times a second is
//! written about once a second, not on every read.
//!
//! Nothing but the primary keys is indexed. Sliding reads rewrite the row's expiry (at most
//! about once a second per session), and an index on it would turn each of those writes into an
//! index insert too (in PostgreSQL it would also rule out heap-only updates); the sweep scans
//! the table instead.
//!
//! The owner index keeps owners as bytes, so that any string an application uses as an owner
//! is stored as it is (PostgreSQL's `TEXT` refuses NUL).

use std::fmt::Write;

/// The SQL dialect, and what differs between the two.
// With one of the two features, the other dialect's parts go unused.
#[cfg_attr(not(all(feature = "postgres", feature = "sqlite")), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    fn greatest(self) -> &'static str {
        match self {
            Dialect::Postgres => "GREATEST",
            Dialect::Sqlite => "MAX",
        }
    }

    fn least(self) -> &'static str {
        match self {
            Dialect::Postgres => "LEAST",
            Dialect::Sqlite => "MIN",
        }
    }

    /// The statement as this dialect numbers parameters: `$1` in PostgreSQL, `?1` in SQLite.
    fn numbered(self, sql: String) -> String {
        match self {
            Dialect::Postgres => sql,
            Dialect::Sqlite => sql.replace('$', "?"),
        }
    }
}

/// A table or schema name: ASCII letters, digits and `_`, not starting with a digit, at most 48
/// bytes (PostgreSQL's limit is 63, and the owner table adds `_owners`). Always written quoted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Name(String);

impl Name {
    pub(super) fn new(name: &str) -> Option<Self> {
        let mut chars = name.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        let ok = first_ok
            && name.len() <= 48
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        ok.then(|| Self(name.to_owned()))
    }

    pub(super) fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where the store's tables live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Tables {
    pub(super) schema: Option<Name>,
    pub(super) table: Name,
}

impl Tables {
    /// `"schema"."table"` (or `"table"`), with `suffix` appended to the table name.
    fn qualified(&self, suffix: &str) -> String {
        let mut out = String::new();
        if let Some(schema) = &self.schema {
            let _ = write!(out, "\"{}\".", schema.as_str());
        }
        let _ = write!(out, "\"{}{suffix}\"", self.table.as_str());
        out
    }
}

/// The statements of one store, built once when it is configured.
#[cfg_attr(not(all(feature = "postgres", feature = "sqlite")), allow(dead_code))]
#[derive(Debug)]
pub(super) struct Statements {
    /// Schema creation, in order; idempotent.
    pub(super) migrate: Vec<String>,
    /// `$1` key, `$2` now, `$3` slide to (0: no slide), `$4` take the flash, `$5` the smallest
    /// slide worth a write (ms): slides a live session's expiry and takes its flash, and returns
    /// the row as [`ROW`] lists it. PostgreSQL: one statement that also returns the row when
    /// it changed nothing. SQLite: only a row it changed (see [`Statements::new`]).
    pub(super) load: String,
    /// `$1` key: the row as it is.
    pub(super) peek: String,
    /// `$1` key, `$2` revision, `$3` expires, `$4` deadline, `$5` record, `$6` flash.
    pub(super) create: String,
    /// `$1` key, `$2` now, `$3` expected revision (`NULL`: any), `$4` expires, `$5` deadline,
    /// `$6` record, `$7` flash (`NULL`: leave the pending one).
    pub(super) save: String,
    /// `$1` key, `$2` now, `$3` expected revision (`NULL`: any): returns whether the deleted row
    /// was a live session (a dead one is removed too).
    pub(super) delete: String,
    /// PostgreSQL: the whole move in one statement (see [`Statements::new`]). SQLite: the
    /// source's revision and flash, read inside the move's transaction.
    pub(super) regenerate: String,
    /// SQLite only: turns the old row into the pointer (`$1` old key, `$2` new key, `$3` grace
    /// until, `$4` until).
    pub(super) leave_pointer: String,
    /// `$1` now.
    pub(super) count: String,
    /// `$1` owner, `$2` key, `$3` until.
    pub(super) index_owner: String,
    /// `$1` owner, `$2` key.
    pub(super) unindex_owner: String,
    /// `$1` owner.
    pub(super) owner_keys: String,
    /// `$1` cutoff: removes sessions that expired before it and pointers that ended before it
    /// (SQLite: at most `$2` of them).
    pub(super) sweep_sessions: String,
    /// `$1` now: removes owner entries past their time.
    pub(super) sweep_owners: String,
}

/// The columns a load returns, in this order.
const ROW: &str = "revision, expires_ms, deadline_ms, record, flash, moved_to, grace_until_ms";

impl Statements {
    pub(super) fn new(dialect: Dialect, tables: &Tables) -> Self {
        let t = tables.qualified("");
        let owners = tables.qualified("_owners");
        let (max, min) = (dialect.greatest(), dialect.least());
        let (text_key, bigint, bytes, table_options) = match dialect {
            Dialect::Postgres => (
                "TEXT COLLATE \"C\"",
                "BIGINT",
                "BYTEA",
                // Room on each page for the new row version a sliding read writes, so that it
                // stays a heap-only update.
                " WITH (fillfactor = 80)",
            ),
            Dialect::Sqlite => ("TEXT", "INTEGER", "BLOB", " WITHOUT ROWID"),
        };
        let live = format!("moved_to IS NULL AND {min}(expires_ms, deadline_ms) > $2");
        let expected = "($3 IS NULL OR revision = $3)";

        let mut migrate = Vec::new();
        if let (Dialect::Postgres, Some(schema)) = (dialect, &tables.schema) {
            migrate.push(format!(
                "CREATE SCHEMA IF NOT EXISTS \"{}\"",
                schema.as_str()
            ));
        }
        migrate.push(format!(
            "CREATE TABLE IF NOT EXISTS {t} (
    key            {text_key} PRIMARY KEY,
    revision       {bigint} NOT NULL,
    expires_ms     {bigint} NOT NULL,
    deadline_ms    {bigint} NOT NULL,
    record         {bytes},
    flash          {bytes},
    flash_taken    {bytes},
    moved_to       TEXT,
    grace_until_ms {bigint}
){table_options}"
        ));
        migrate.push(format!(
            "CREATE TABLE IF NOT EXISTS {owners} (
    owner    {bytes} NOT NULL,
    key      {text_key} NOT NULL,
    until_ms {bigint} NOT NULL,
    PRIMARY KEY (owner, key)
)"
        ));

        // Slides a live session's expiry if that moves it by at least `$5` ms, and takes its
        // flash if it has one: a read that needs neither writes nothing.
        let touch = format!(
            "UPDATE {t} SET
    expires_ms = {max}(expires_ms, {min}($3, deadline_ms)),
    flash_taken = CASE WHEN $4 THEN flash END,
    flash = CASE WHEN $4 THEN NULL ELSE flash END
WHERE key = $1 AND {live}
  AND ({min}($3, deadline_ms) - expires_ms >= $5 OR ($4 AND flash IS NOT NULL))
RETURNING revision, expires_ms, deadline_ms, record, COALESCE(flash_taken, flash), moved_to, grace_until_ms"
        );
        let load = match dialect {
            // The touch, and the row as it is when the touch changed nothing. A flash in that
            // row is not returned when taking: had it still been there, the touch (which waits
            // for a concurrent writer's row lock and re-reads the row) would have taken it.
            Dialect::Postgres => format!(
                "WITH touched AS (
{touch}
)
SELECT * FROM touched
UNION ALL
SELECT revision, expires_ms, deadline_ms, record, CASE WHEN $4 THEN NULL ELSE flash END,
    moved_to, grace_until_ms
FROM {t} WHERE key = $1 AND NOT EXISTS (SELECT 1 FROM touched)"
            ),
            // SQLite has no data-modifying `WITH`: the store reads the row first and runs the
            // touch only when the row needs it, so that a plain read never takes the database's
            // write lock.
            Dialect::Sqlite => touch,
        };
        let peek = format!("SELECT {ROW} FROM {t} WHERE key = $1");
        let create = format!(
            "INSERT INTO {t} (key, revision, expires_ms, deadline_ms, record, flash)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (key) DO NOTHING"
        );
        let save = format!(
            "UPDATE {t} SET
    revision = revision + 1,
    expires_ms = {max}(expires_ms, $4),
    deadline_ms = $5,
    record = $6,
    flash = COALESCE($7, flash)
WHERE key = $1 AND {live} AND {expected}"
        );
        let delete = format!(
            "DELETE FROM {t}
WHERE key = $1 AND ({min}(expires_ms, deadline_ms) <= $2 OR (moved_to IS NULL AND {expected}))
RETURNING {live}"
        );
        let regenerate = match dialect {
            // One statement, so one round trip: `source` locks the old row if it is live and
            // at the expected revision, `created` inserts the new session only then (and not
            // over an existing key), and `pointer` turns the old row into the pointer only if
            // the insert happened. Nothing is written unless all of it is.
            Dialect::Postgres => format!(
                "WITH source AS (
    SELECT revision, flash FROM {t}
    WHERE key = $1 AND {live} AND {expected}
    FOR UPDATE
), created AS (
    INSERT INTO {t} (key, revision, expires_ms, deadline_ms, record, flash)
    SELECT $4, revision + 1, $5, $6, $7, COALESCE($8, flash) FROM source
    ON CONFLICT (key) DO NOTHING
    RETURNING key
), pointer AS (
    UPDATE {t} SET moved_to = $4, grace_until_ms = $9, expires_ms = $10, deadline_ms = $10,
        record = NULL, flash = NULL, flash_taken = NULL
    WHERE key = $1 AND EXISTS (SELECT 1 FROM created)
)
SELECT EXISTS (SELECT 1 FROM source), EXISTS (SELECT 1 FROM created)"
            ),
            // Inside a `BEGIN IMMEDIATE` transaction, which holds the database's write lock from
            // its start: read the source, insert the new session, leave the pointer.
            Dialect::Sqlite => {
                format!("SELECT revision, flash FROM {t} WHERE key = $1 AND {live} AND {expected}")
            }
        };
        let leave_pointer = format!(
            "UPDATE {t} SET moved_to = $2, grace_until_ms = $3, expires_ms = $4, deadline_ms = $4,
    record = NULL, flash = NULL, flash_taken = NULL
WHERE key = $1"
        );
        let count = format!(
            "SELECT COUNT(*) FROM {t} WHERE moved_to IS NULL AND {min}(expires_ms, deadline_ms) > $1"
        );
        let index_owner = format!(
            "INSERT INTO {owners} AS o (owner, key, until_ms) VALUES ($1, $2, $3)
ON CONFLICT (owner, key) DO UPDATE SET until_ms = {max}(o.until_ms, excluded.until_ms)"
        );
        let unindex_owner = format!("DELETE FROM {owners} WHERE owner = $1 AND key = $2");
        let owner_keys = format!("SELECT key FROM {owners} WHERE owner = $1");
        let sweep_sessions = match dialect {
            Dialect::Postgres => {
                format!("DELETE FROM {t} WHERE {min}(expires_ms, deadline_ms) <= $1")
            }
            // `$2` rows at a time (see sqlite.rs).
            Dialect::Sqlite => format!(
                "DELETE FROM {t} WHERE key IN (
    SELECT key FROM {t} WHERE {min}(expires_ms, deadline_ms) <= $1 LIMIT $2
)"
            ),
        };
        let sweep_owners = format!("DELETE FROM {owners} WHERE until_ms <= $1");

        let n = |sql: String| dialect.numbered(sql);
        Self {
            migrate: migrate.into_iter().map(n).collect(),
            load: n(load),
            peek: n(peek),
            create: n(create),
            save: n(save),
            delete: n(delete),
            regenerate: n(regenerate),
            leave_pointer: n(leave_pointer),
            count: n(count),
            index_owner: n(index_owner),
            unindex_owner: n(unindex_owner),
            owner_keys: n(owner_keys),
            sweep_sessions: n(sweep_sessions),
            sweep_owners: n(sweep_owners),
        }
    }
}
