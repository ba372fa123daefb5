//! SQLite: the regenerate is a `BEGIN IMMEDIATE` transaction (SQLite has no data-modifying
//! `WITH`), which holds the database's write lock from its first statement.

use sqlx::SqlitePool;

use super::{
    shared_statements, sql_store,
    statements::{Dialect, Statements, Tables},
    Move, NewRow, Row, Slide,
};

/// Rows one sweep statement deletes: SQLite has one writer, and a sweep must not hold it for
/// longer than a few milliseconds at a time.
const SWEEP_BATCH: i64 = 1000;
use crate::{record::unix_ms as millis, store::Forward};

/// The pool and the statements of one [`SqliteStore`].
struct Sqlite {
    pool: SqlitePool,
    sql: Statements,
}

impl Sqlite {
    fn new(pool: SqlitePool, tables: &Tables) -> Self {
        Self {
            pool,
            sql: Statements::new(Dialect::Sqlite, tables),
        }
    }
}

impl super::Database for Sqlite {
    shared_statements!();

    async fn migrate(&self) -> Result<(), sqlx::Error> {
        let mut transaction = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for statement in &self.sql.migrate {
            sqlx::query(statement).execute(&mut *transaction).await?;
        }
        transaction.commit().await
    }

    /// A read first, and the touch only when the row needs it: SQLite runs one write at a time,
    /// so a plain read must not take the write lock.
    async fn load(
        &self,
        key: &str,
        now: i64,
        slide: Slide,
        take_flash: bool,
    ) -> Result<Option<Row>, sqlx::Error> {
        let Some(mut row) = self.peek(key).await? else {
            return Ok(None);
        };
        let (_, expires_ms, deadline_ms, _, ref flash, ref moved_to, _) = row;
        let live = moved_to.is_none() && expires_ms.min(deadline_ms) > now;
        if live && (slide.moves(expires_ms, deadline_ms) || (take_flash && flash.is_some())) {
            let touched = sqlx::query_as(&self.sql.load)
                .bind(key)
                .bind(now)
                .bind(slide.to)
                .bind(take_flash)
                .bind(slide.step)
                .fetch_optional(&self.pool)
                .await?;
            if touched.is_some() {
                return Ok(touched);
            }
        }
        // Nothing to change, or another request changed the row first: this load saw it as it
        // was before that. Its flash, if any, belongs to the request that takes it.
        if take_flash {
            row.4 = None;
        }
        Ok(Some(row))
    }

    /// In batches, each its own write: other writers get the lock between them.
    async fn sweep(&self, cutoff: i64, now: i64) -> Result<u64, sqlx::Error> {
        let mut removed = 0;
        loop {
            let batch = sqlx::query(&self.sql.sweep_sessions)
                .bind(cutoff)
                .bind(SWEEP_BATCH)
                .execute(&self.pool)
                .await?
                .rows_affected();
            removed += batch;
            if batch < SWEEP_BATCH.unsigned_abs() {
                break;
            }
        }
        let owners = sqlx::query(&self.sql.sweep_owners)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(removed + owners.rows_affected())
    }

    async fn regenerate(
        &self,
        old: &str,
        now: i64,
        expect: Option<i64>,
        row: &NewRow<'_>,
        pointer: &Forward,
    ) -> Result<Move, sqlx::Error> {
        // Dropping the transaction without a commit rolls it back.
        let mut transaction = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let source: Option<(i64, Option<Vec<u8>>)> = sqlx::query_as(&self.sql.regenerate)
            .bind(old)
            .bind(now)
            .bind(expect)
            .fetch_optional(&mut *transaction)
            .await?;
        let Some((revision, pending_flash)) = source else {
            return Ok(Move::SourceNotLive);
        };
        let created = sqlx::query(&self.sql.create)
            .bind(row.key)
            .bind(revision.saturating_add(1))
            .bind(row.expires_ms)
            .bind(row.deadline_ms)
            .bind(&row.record)
            .bind(row.flash.as_ref().or(pending_flash.as_ref()))
            .execute(&mut *transaction)
            .await?;
        if created.rows_affected() != 1 {
            return Ok(Move::Collision);
        }
        sqlx::query(&self.sql.leave_pointer)
            .bind(old)
            .bind(row.key)
            .bind(pointer.grace_until.map(millis))
            .bind(millis(pointer.until))
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(Move::Done)
    }
}

sql_store!(
    /// Sessions in SQLite, on the application's own `SqlitePool` (sqlx 0.8): sessions that
    /// survive a restart of a single-machine application, with no server to run.
    ///
    /// The same schema and contract as [`PostgresStore`](crate::PostgresStore) (feature
    /// `postgres`), in a table of your choosing (default `typed_sessions`), keyed by a digest of
    /// the cookie's ID. A read is a `SELECT`, and an `UPDATE` only when it slides the
    /// expiry by a second or more or takes a pending flash, so that reads do not queue for
    /// SQLite's one writer. A regenerate is a `BEGIN IMMEDIATE` transaction. Open the
    /// database in WAL mode (`SqliteConnectOptions::journal_mode(SqliteJournalMode::Wal)`) so
    /// that reads never wait for a write; SQLite runs one write at a time either way.
    ///
    /// Expired rows stay for the expired-record retention (default 1 hour) and are then deleted
    /// by a background task (every 5 minutes by default) or [`SqliteStore::delete_expired`], a
    /// thousand rows per statement so that other writers are not held up.
    ///
    /// ```no_run
    /// use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool};
    /// use tower_typed_sessions::{Session, SessionLayer, SqliteStore};
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct Data;
    /// # impl Session for Data {}
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let options = SqliteConnectOptions::new()
    ///     .filename("sessions.db")
    ///     .create_if_missing(true)
    ///     .journal_mode(SqliteJournalMode::Wal);
    /// let store = SqliteStore::<Data>::new(SqlitePool::connect_with(options).await?);
    /// store.migrate().await?;
    /// let layer = SessionLayer::new(store);
    /// # Ok(()) }
    /// ```
    SqliteStore,
    Sqlite,
    SqlitePool
);
