//! SQL backends through sqlx: [`PostgresStore`] and [`SqliteStore`].
//!
//! `statements.rs` holds every statement and the schema; `postgres.rs` and `sqlite.rs` run them
//! on their pool (they differ in how a load avoids needless writes, how a regenerate is made
//! atomic, how the sweep deletes and how the schema is created); this module turns what the
//! database answered into the store contract's outcomes, and runs the background sweep.

mod statements;

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::{fmt, future::Future, sync::Arc, time::Duration};

use time::OffsetDateTime;

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use self::postgres::PostgresStore;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use self::sqlite::SqliteStore;
use self::statements::{Name, Tables};
use super::{sweeper::Sweeper, Expect, Forward, LoadOptions, Loaded, WriteOutcome};
use crate::{
    error::StoreError, flash::Flash, id::SessionKey, record::unix_ms as millis, record::Record,
};

const DEFAULT_TABLE: &str = "typed_sessions";
const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_EXPIRED_RETENTION: Duration = Duration::from_secs(60 * 60);
const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// A load slides the expiry only when that moves it by at least this much, or half the idle
/// timeout if that is shorter (the store contract allows skipping a slide of less than a
/// second): a session read many times a second is written about once a second.
const SLIDE_STEP_MS: i64 = 1000;
/// A write that fails, then finds the row in a state that should have let it through (it
/// changed between the two statements), tries again this many times.
const WRITE_ATTEMPTS: usize = 3;

/// A table or schema name the SQL stores refuse: only ASCII letters, digits and `_` are
/// accepted, not starting with a digit, at most 48 bytes. Names are written quoted, so they are
/// case-sensitive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidSqlName {
    name: String,
}

impl InvalidSqlName {
    /// The refused name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for InvalidSqlName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid SQL table or schema name {:?}: use ASCII letters, digits and `_`, at most \
             48 bytes, not starting with a digit",
            self.name
        )
    }
}

impl std::error::Error for InvalidSqlName {}

fn name(name: &str) -> Result<Name, InvalidSqlName> {
    Name::new(name).ok_or_else(|| InvalidSqlName {
        name: name.to_owned(),
    })
}

/// A row as a load returns it: revision, expires, deadline, record, flash, moved to, grace until.
type Row = (
    i64,
    i64,
    i64,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<String>,
    Option<i64>,
);

/// A session as the statements write it.
struct NewRow<'a> {
    key: &'a str,
    revision: i64,
    expires_ms: i64,
    deadline_ms: i64,
    record: Vec<u8>,
    /// `None` leaves (or, in a regenerate, carries over) the pending flash.
    flash: Option<Vec<u8>>,
}

impl<'a> NewRow<'a> {
    fn of<T: serde::Serialize>(record: &'a Record<T>) -> Result<Self, StoreError> {
        Ok(Self {
            key: record.key.as_str(),
            revision: revision_column(record.revision),
            expires_ms: millis(record.expires_at),
            deadline_ms: millis(record.deadline),
            record: record.encode_without_flash()?,
            flash: if record.flash.is_empty() {
                None
            } else {
                Some(record.flash.encode()?)
            },
        })
    }
}

/// How a load slides: to `to` (ms), if that moves the expiry by at least `step` ms.
#[derive(Clone, Copy, Debug)]
struct Slide {
    to: i64,
    step: i64,
}

impl Slide {
    /// `now + idle`, in steps of a second or half the idle timeout; without sliding, a target
    /// that never moves a live session's expiry (`now`, before it) and a step never reached.
    fn at(now: i64, idle: Option<Duration>) -> Self {
        match idle {
            Some(idle) => {
                let idle = duration_ms(idle);
                Self {
                    to: now.saturating_add(idle),
                    step: SLIDE_STEP_MS.min(idle / 2).max(1),
                }
            }
            None => Self {
                to: now,
                step: i64::MAX,
            },
        }
    }

    /// Whether a live session expiring at `expires_ms` with `deadline_ms` needs the write.
    #[cfg(feature = "sqlite")]
    fn moves(self, expires_ms: i64, deadline_ms: i64) -> bool {
        self.to.min(deadline_ms).saturating_sub(expires_ms) >= self.step
    }
}

/// What a regenerate statement (or transaction) did.
enum Move {
    Done,
    /// The old key holds no live session at the expected revision: nothing was written.
    SourceNotLive,
    /// The new key is taken: nothing was written.
    Collision,
}

/// What a database does for the store: one method per statement, or per transaction where an
/// operation needs several. Errors are sqlx's; [`Core`] maps them.
trait Database: Send + Sync + 'static {
    fn migrate(&self) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
    /// The row under `key`, after sliding a live session's expiry to `slide.to` when that
    /// moves it by at least `slide.step`, and taking its flash when `take_flash` (a taken flash
    /// is in the returned row and no longer in the stored one).
    fn load(
        &self,
        key: &str,
        now: i64,
        slide: Slide,
        take_flash: bool,
    ) -> impl Future<Output = Result<Option<Row>, sqlx::Error>> + Send;
    fn peek(&self, key: &str) -> impl Future<Output = Result<Option<Row>, sqlx::Error>> + Send;
    fn create(&self, row: &NewRow<'_>) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;
    fn save(
        &self,
        now: i64,
        expect: Option<i64>,
        row: &NewRow<'_>,
    ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;
    fn regenerate(
        &self,
        old: &str,
        now: i64,
        expect: Option<i64>,
        row: &NewRow<'_>,
        pointer: &Forward,
    ) -> impl Future<Output = Result<Move, sqlx::Error>> + Send;
    /// `Some(true)`: a live session was deleted; `Some(false)`: a dead row was; `None`: nothing.
    fn delete(
        &self,
        key: &str,
        now: i64,
        expect: Option<i64>,
    ) -> impl Future<Output = Result<Option<bool>, sqlx::Error>> + Send;
    fn count(&self, now: i64) -> impl Future<Output = Result<i64, sqlx::Error>> + Send;
    fn index_owner(
        &self,
        owner: &str,
        key: &str,
        until: i64,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
    fn unindex_owner(
        &self,
        owner: &str,
        key: &str,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
    fn owner_keys(
        &self,
        owner: &str,
    ) -> impl Future<Output = Result<Vec<String>, sqlx::Error>> + Send;
    /// Removes session and pointer rows that ended before `cutoff` and owner entries past
    /// `now`: rows removed.
    fn sweep(&self, cutoff: i64, now: i64)
        -> impl Future<Output = Result<u64, sqlx::Error>> + Send;
}

/// The statements every dialect runs the same way, on `self.pool` with `self.sql`.
macro_rules! shared_statements {
    () => {
        async fn peek(&self, key: &str) -> Result<Option<super::Row>, sqlx::Error> {
            sqlx::query_as(&self.sql.peek)
                .bind(key)
                .fetch_optional(&self.pool)
                .await
        }

        async fn create(&self, row: &super::NewRow<'_>) -> Result<bool, sqlx::Error> {
            let done = sqlx::query(&self.sql.create)
                .bind(row.key)
                .bind(row.revision)
                .bind(row.expires_ms)
                .bind(row.deadline_ms)
                .bind(&row.record)
                .bind(&row.flash)
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn save(
            &self,
            now: i64,
            expect: Option<i64>,
            row: &super::NewRow<'_>,
        ) -> Result<bool, sqlx::Error> {
            let done = sqlx::query(&self.sql.save)
                .bind(row.key)
                .bind(now)
                .bind(expect)
                .bind(row.expires_ms)
                .bind(row.deadline_ms)
                .bind(&row.record)
                .bind(&row.flash)
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn delete(
            &self,
            key: &str,
            now: i64,
            expect: Option<i64>,
        ) -> Result<Option<bool>, sqlx::Error> {
            sqlx::query_scalar(&self.sql.delete)
                .bind(key)
                .bind(now)
                .bind(expect)
                .fetch_optional(&self.pool)
                .await
        }

        async fn count(&self, now: i64) -> Result<i64, sqlx::Error> {
            sqlx::query_scalar(&self.sql.count)
                .bind(now)
                .fetch_one(&self.pool)
                .await
        }

        async fn index_owner(&self, owner: &str, key: &str, until: i64) -> Result<(), sqlx::Error> {
            sqlx::query(&self.sql.index_owner)
                .bind(owner.as_bytes())
                .bind(key)
                .bind(until)
                .execute(&self.pool)
                .await
                .map(drop)
        }

        async fn unindex_owner(&self, owner: &str, key: &str) -> Result<(), sqlx::Error> {
            sqlx::query(&self.sql.unindex_owner)
                .bind(owner.as_bytes())
                .bind(key)
                .execute(&self.pool)
                .await
                .map(drop)
        }

        async fn owner_keys(&self, owner: &str) -> Result<Vec<String>, sqlx::Error> {
            sqlx::query_scalar(&self.sql.owner_keys)
                .bind(owner.as_bytes())
                .fetch_all(&self.pool)
                .await
        }
    };
}
use shared_statements;

/// What a store is configured with.
#[derive(Clone, Debug)]
struct Settings {
    tables: Tables,
    operation_timeout: Duration,
    retention: Duration,
    sweep_interval: Option<Duration>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            tables: Tables {
                schema: None,
                table: Name::new(DEFAULT_TABLE).unwrap_or_else(|| unreachable!()),
            },
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            retention: DEFAULT_EXPIRED_RETENTION,
            sweep_interval: Some(DEFAULT_SWEEP_INTERVAL),
        }
    }
}

/// The dialect-independent half of a SQL store: the contract's outcomes, timeouts, the sweeper.
struct Core<D> {
    db: D,
    settings: Settings,
    sweeper: Sweeper,
}

fn expect_column(expect: Expect) -> Option<i64> {
    match expect {
        Expect::Revision(revision) => Some(revision_column(revision)),
        _ => None,
    }
}

fn revision_column(revision: u64) -> i64 {
    i64::try_from(revision).unwrap_or(i64::MAX)
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn at_ms(ms: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|err| StoreError::Decode(Box::new(err)))
}

/// A write found the row changed under it on every attempt. Under an expected revision that is
/// a conflict; a last-write-wins write (a logout, say) must not pass it off as one.
fn exhausted(expect: Expect) -> Result<WriteOutcome, StoreError> {
    match expect {
        Expect::Revision(_) => Ok(WriteOutcome::Conflict),
        _ => Err(StoreError::Backend(
            "the session's row changed under every attempt to write it".into(),
        )),
    }
}

fn corrupt(what: &'static str) -> StoreError {
    StoreError::Decode(what.into())
}

fn database_error(err: sqlx::Error) -> StoreError {
    match err {
        sqlx::Error::PoolTimedOut => StoreError::Timeout,
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. } => StoreError::Decode(Box::new(err)),
        other => StoreError::Backend(Box::new(other)),
    }
}

/// What the row under a key says about a write that changed nothing.
enum Verdict {
    Outcome(WriteOutcome),
    /// The row would have let the write through: it changed between the two statements.
    Retry,
}

fn verdict(row: Option<Row>, now: i64, expect: Expect) -> Result<Verdict, StoreError> {
    let Some((revision, expires_ms, deadline_ms, _, _, moved_to, _)) = row else {
        return Ok(Verdict::Outcome(WriteOutcome::Missing));
    };
    if let Some(to) = moved_to {
        if expires_ms <= now {
            return Ok(Verdict::Outcome(WriteOutcome::Missing));
        }
        let to = SessionKey::parse(&to).ok_or_else(|| corrupt("pointer to a malformed key"))?;
        return Ok(Verdict::Outcome(WriteOutcome::Moved(to)));
    }
    if expires_ms.min(deadline_ms) <= now {
        return Ok(Verdict::Outcome(WriteOutcome::Missing));
    }
    match expect {
        Expect::Revision(expected) if revision_column(expected) != revision => {
            Ok(Verdict::Outcome(WriteOutcome::Conflict))
        }
        _ => Ok(Verdict::Retry),
    }
}

fn loaded<T: serde::de::DeserializeOwned>(
    key: &SessionKey,
    now: OffsetDateTime,
    row: Row,
) -> Result<Loaded<T>, StoreError> {
    let (revision, expires_ms, deadline_ms, record, flash, moved_to, grace_until_ms) = row;
    if let Some(to) = moved_to {
        let until = at_ms(expires_ms)?;
        if until <= now {
            return Ok(Loaded::Missing);
        }
        let to = SessionKey::parse(&to).ok_or_else(|| corrupt("pointer to a malformed key"))?;
        let grace_until = grace_until_ms.map(at_ms).transpose()?;
        return Ok(Loaded::Moved(Forward::new(to, grace_until, until)));
    }
    let bytes = record.ok_or_else(|| corrupt("session row without a record"))?;
    let mut record = Record::<T>::decode(key, &bytes)?;
    record.revision = u64::try_from(revision).map_err(|_| corrupt("negative revision"))?;
    record.expires_at = at_ms(expires_ms)?;
    record.deadline = at_ms(deadline_ms)?;
    record.flash = match flash {
        Some(bytes) => Flash::decode(&bytes)?,
        None => Flash::default(),
    };
    Ok(if record.is_expired(now) {
        Loaded::Expired(record)
    } else {
        Loaded::Active(record)
    })
}

impl<D: Database> Core<D> {
    fn new(db: D, settings: Settings) -> Self {
        Self {
            db,
            settings,
            sweeper: Sweeper::default(),
        }
    }

    async fn timed<V>(
        &self,
        operation: impl Future<Output = Result<V, sqlx::Error>>,
    ) -> Result<V, StoreError> {
        match tokio::time::timeout(self.settings.operation_timeout, operation).await {
            Ok(result) => result.map_err(database_error),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        self.db.migrate().await.map_err(database_error)
    }

    async fn delete_expired(&self) -> Result<u64, StoreError> {
        let now = millis(OffsetDateTime::now_utc());
        let cutoff = now.saturating_sub(duration_ms(self.settings.retention));
        self.db.sweep(cutoff, now).await.map_err(database_error)
    }

    async fn load<T: serde::de::DeserializeOwned>(
        &self,
        key: &SessionKey,
        options: LoadOptions,
    ) -> Result<Loaded<T>, StoreError> {
        let now = millis(options.now);
        let row = if options.slide.is_none() && !options.take_flash {
            self.timed(self.db.peek(key.as_str())).await?
        } else {
            let slide = Slide::at(now, options.slide);
            let load = self.db.load(key.as_str(), now, slide, options.take_flash);
            self.timed(load).await?
        };
        match row {
            Some(row) => loaded(key, options.now, row),
            None => Ok(Loaded::Missing),
        }
    }

    async fn create<T: serde::Serialize>(
        self: &Arc<Self>,
        record: &Record<T>,
    ) -> Result<WriteOutcome, StoreError> {
        self.ensure_sweeper();
        let row = NewRow::of(record)?;
        Ok(if self.timed(self.db.create(&row)).await? {
            WriteOutcome::Done
        } else {
            WriteOutcome::Collision
        })
    }

    async fn save<T: serde::Serialize>(
        &self,
        record: &Record<T>,
        expect: Expect,
    ) -> Result<WriteOutcome, StoreError> {
        let row = NewRow::of(record)?;
        let now = millis(OffsetDateTime::now_utc());
        for _ in 0..WRITE_ATTEMPTS {
            if self
                .timed(self.db.save(now, expect_column(expect), &row))
                .await?
            {
                return Ok(WriteOutcome::Done);
            }
            if let Verdict::Outcome(outcome) = self.verdict(&record.key, now, expect).await? {
                return Ok(outcome);
            }
        }
        exhausted(expect)
    }

    async fn regenerate<T: serde::Serialize>(
        &self,
        old: &SessionKey,
        record: &Record<T>,
        expect: Expect,
        forward: Forward,
    ) -> Result<WriteOutcome, StoreError> {
        let row = NewRow::of(record)?;
        let now = millis(OffsetDateTime::now_utc());
        for _ in 0..WRITE_ATTEMPTS {
            let moved =
                self.db
                    .regenerate(old.as_str(), now, expect_column(expect), &row, &forward);
            match self.timed(moved).await? {
                Move::Done => return Ok(WriteOutcome::Done),
                Move::Collision => return Ok(WriteOutcome::Collision),
                Move::SourceNotLive => {}
            }
            if let Verdict::Outcome(outcome) = self.verdict(old, now, expect).await? {
                return Ok(outcome);
            }
        }
        exhausted(expect)
    }

    async fn delete(&self, key: &SessionKey, expect: Expect) -> Result<WriteOutcome, StoreError> {
        let now = millis(OffsetDateTime::now_utc());
        for _ in 0..WRITE_ATTEMPTS {
            let deleted = self.db.delete(key.as_str(), now, expect_column(expect));
            match self.timed(deleted).await? {
                Some(true) => return Ok(WriteOutcome::Done),
                Some(false) => return Ok(WriteOutcome::Missing),
                None => {}
            }
            if let Verdict::Outcome(outcome) = self.verdict(key, now, expect).await? {
                return Ok(outcome);
            }
        }
        exhausted(expect)
    }

    async fn verdict(
        &self,
        key: &SessionKey,
        now: i64,
        expect: Expect,
    ) -> Result<Verdict, StoreError> {
        let row = self.timed(self.db.peek(key.as_str())).await?;
        verdict(row, now, expect)
    }

    async fn count(&self) -> Result<usize, StoreError> {
        let now = millis(OffsetDateTime::now_utc());
        let count = self.timed(self.db.count(now)).await?;
        Ok(usize::try_from(count).unwrap_or(0))
    }

    async fn index_owner(
        &self,
        owner: &str,
        key: &SessionKey,
        until: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let index = self.db.index_owner(owner, key.as_str(), millis(until));
        self.timed(index).await
    }

    async fn unindex_owner(&self, owner: &str, key: &SessionKey) -> Result<(), StoreError> {
        self.timed(self.db.unindex_owner(owner, key.as_str())).await
    }

    async fn owner_keys(&self, owner: &str) -> Result<Vec<SessionKey>, StoreError> {
        let keys = self.timed(self.db.owner_keys(owner)).await?;
        // An entry that is not a key cannot lead to a session; the sweep removes it in time.
        Ok(keys
            .iter()
            .filter_map(|key| SessionKey::parse(key))
            .collect())
    }

    /// Starts the background sweep at the first create, on the runtime that runs it.
    fn ensure_sweeper(self: &Arc<Self>) {
        let Some(interval) = self.settings.sweep_interval else {
            return;
        };
        self.sweeper
            .start_once(Arc::downgrade(self), interval, |core| async move {
                match core.delete_expired().await {
                    Ok(0) => {}
                    Ok(removed) => tracing::debug!(removed, "SQL session store swept expired rows"),
                    Err(error) => tracing::warn!(%error, "SQL session store sweep failed"),
                }
            });
    }
}

/// A SQL store type: its builder methods, `migrate`, the sweep and the [`Store`] impl, the same
/// for every dialect. `$database` is the dialect's [`Database`], built from a `$pool`.
macro_rules! sql_store {
    ($(#[$doc:meta])* $store:ident, $database:ident, $pool:ty) => {
        $(#[$doc])*
        pub struct $store<T> {
            core: std::sync::Arc<super::Core<$database>>,
            session: std::marker::PhantomData<fn() -> T>,
        }

        impl<T> Clone for $store<T> {
            fn clone(&self) -> Self {
                Self {
                    core: std::sync::Arc::clone(&self.core),
                    session: std::marker::PhantomData,
                }
            }
        }

        impl<T> std::fmt::Debug for $store<T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let settings = &self.core.settings;
                f.debug_struct(stringify!($store))
                    .field("tables", &settings.tables)
                    .field("operation_timeout", &settings.operation_timeout)
                    .field("expired_retention", &settings.retention)
                    .field("sweep_interval", &settings.sweep_interval)
                    .finish_non_exhaustive()
            }
        }

        impl<T: $crate::Session> $store<T> {
            /// A store on the application's pool, in the table `typed_sessions` (and
            /// `typed_sessions_owners` for the owner index). Call [`Self::migrate`] once to
            /// create them.
            pub fn new(pool: $pool) -> Self {
                Self::build(pool, super::Settings::default())
            }

            fn build(pool: $pool, settings: super::Settings) -> Self {
                let database = $database::new(pool, &settings.tables);
                Self {
                    core: std::sync::Arc::new(super::Core::new(database, settings)),
                    session: std::marker::PhantomData,
                }
            }

            fn rebuilt(self, change: impl FnOnce(&mut super::Settings)) -> Self {
                let mut settings = self.core.settings.clone();
                change(&mut settings);
                Self::build(self.core.db.pool.clone(), settings)
            }

            /// The table sessions live in (default `typed_sessions`); the owner index lives in
            /// the same name with `_owners` appended. Refuses a name that is not plain ASCII
            /// letters, digits and `_`.
            pub fn with_table(self, table: &str) -> Result<Self, super::InvalidSqlName> {
                let table = super::name(table)?;
                Ok(self.rebuilt(|settings| settings.tables.table = table))
            }

            /// How long one store operation may take before it fails with
            /// [`StoreError::Timeout`](crate::StoreError::Timeout) (default 2 s), waiting for a
            /// pooled connection included. The database may still complete a statement the
            /// layer stopped waiting for (as Redis may a command): the request gets the error
            /// response either way, and never a cookie for what it may have written.
            #[must_use]
            pub fn with_operation_timeout(self, timeout: std::time::Duration) -> Self {
                self.rebuilt(|settings| settings.operation_timeout = timeout)
            }

            /// How long an expired session's row stays so that a client coming back with its
            /// cookie fires the `expired` event instead of `rejected(unknown)` (default 1 hour).
            /// Changing it does not change when a session expires.
            #[must_use]
            pub fn with_expired_retention(self, retention: std::time::Duration) -> Self {
                self.rebuilt(|settings| settings.retention = retention)
            }

            /// How often the background task deletes expired rows (default 5 minutes). The
            /// task starts with the first session this store creates and stops when the last
            /// clone of the store is dropped.
            #[must_use]
            pub fn with_sweep_interval(self, interval: std::time::Duration) -> Self {
                let interval = interval.max(std::time::Duration::from_millis(1));
                self.rebuilt(|settings| settings.sweep_interval = Some(interval))
            }

            /// No background sweep: call [`Self::delete_expired`] from your own scheduler.
            #[must_use]
            pub fn without_sweeper(self) -> Self {
                self.rebuilt(|settings| settings.sweep_interval = None)
            }

            /// Creates the tables if they do not exist (idempotent; safe to run from several
            /// instances at once).
            pub async fn migrate(&self) -> Result<(), $crate::StoreError> {
                self.core.migrate().await
            }

            /// Deletes the rows of sessions that expired, and of forwarding pointers that ended,
            /// more than the expired-record retention ago, and owner-index entries past their
            /// time; returns how many rows went. The background sweep calls this; it runs without the
            /// operation timeout.
            pub async fn delete_expired(&self) -> Result<u64, $crate::StoreError> {
                self.core.delete_expired().await
            }
        }

        impl<T: $crate::Session> $crate::Store<T> for $store<T> {
            async fn load(
                &self,
                key: &$crate::SessionKey,
                options: $crate::store::LoadOptions,
            ) -> Result<$crate::Loaded<T>, $crate::StoreError> {
                self.core.load(key, options).await
            }

            async fn create(
                &self,
                record: &$crate::Record<T>,
            ) -> Result<$crate::WriteOutcome, $crate::StoreError> {
                self.core.create(record).await
            }

            async fn save(
                &self,
                record: &$crate::Record<T>,
                expect: $crate::store::Expect,
            ) -> Result<$crate::WriteOutcome, $crate::StoreError> {
                self.core.save(record, expect).await
            }

            async fn regenerate(
                &self,
                old: &$crate::SessionKey,
                record: &$crate::Record<T>,
                expect: $crate::store::Expect,
                forward: $crate::store::Forward,
            ) -> Result<$crate::WriteOutcome, $crate::StoreError> {
                self.core.regenerate(old, record, expect, forward).await
            }

            async fn delete(
                &self,
                key: &$crate::SessionKey,
                expect: $crate::store::Expect,
            ) -> Result<$crate::WriteOutcome, $crate::StoreError> {
                self.core.delete(key, expect).await
            }

            async fn count(&self) -> Result<usize, $crate::StoreError> {
                self.core.count().await
            }

            fn supports_owner_index(&self) -> bool {
                true
            }

            async fn index_owner(
                &self,
                owner: &str,
                key: &$crate::SessionKey,
                until: time::OffsetDateTime,
            ) -> Result<(), $crate::StoreError> {
                self.core.index_owner(owner, key, until).await
            }

            async fn unindex_owner(
                &self,
                owner: &str,
                key: &$crate::SessionKey,
            ) -> Result<(), $crate::StoreError> {
                self.core.unindex_owner(owner, key).await
            }

            async fn owner_keys(
                &self,
                owner: &str,
            ) -> Result<Vec<$crate::SessionKey>, $crate::StoreError> {
                self.core.owner_keys(owner).await
            }
        }
    };
}
use sql_store;
