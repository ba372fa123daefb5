//! PostgreSQL: the regenerate is one statement (three chained common table expressions), and
//! the schema is created under an advisory lock.

use sqlx::PgPool;

use super::{
    shared_statements, sql_store,
    statements::{Dialect, Statements, Tables},
    Move, NewRow, Row, Slide,
};
use crate::{record::unix_ms as millis, store::Forward};

/// The pool and the statements of one [`PostgresStore`].
struct Postgres {
    pool: PgPool,
    sql: Statements,
}

impl Postgres {
    fn new(pool: PgPool, tables: &Tables) -> Self {
        Self {
            pool,
            sql: Statements::new(Dialect::Postgres, tables),
        }
    }
}

/// Any key: the lock that keeps two instances from creating the tables at the same moment
/// (`CREATE TABLE IF NOT EXISTS` is not safe against itself).
const MIGRATE_LOCK: i64 = 0x7474_735f_6d69_6772;

impl super::Database for Postgres {
    shared_statements!();

    async fn migrate(&self) -> Result<(), sqlx::Error> {
        let mut transaction = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATE_LOCK)
            .execute(&mut *transaction)
            .await?;
        for statement in &self.sql.migrate {
            sqlx::query(statement).execute(&mut *transaction).await?;
        }
        transaction.commit().await
    }

    async fn load(
        &self,
        key: &str,
        now: i64,
        slide: Slide,
        take_flash: bool,
    ) -> Result<Option<Row>, sqlx::Error> {
        sqlx::query_as(&self.sql.load)
            .bind(key)
            .bind(now)
            .bind(slide.to)
            .bind(take_flash)
            .bind(slide.step)
            .fetch_optional(&self.pool)
            .await
    }

    /// One `DELETE`: it locks only rows nobody uses (ended sessions), so reads and writes of
    /// live sessions go on (measured in BENCHMARKS.md); batches would each rescan the table.
    async fn sweep(&self, cutoff: i64, now: i64) -> Result<u64, sqlx::Error> {
        let sessions = sqlx::query(&self.sql.sweep_sessions)
            .bind(cutoff)
            .execute(&self.pool)
            .await?;
        let owners = sqlx::query(&self.sql.sweep_owners)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(sessions.rows_affected() + owners.rows_affected())
    }

    async fn regenerate(
        &self,
        old: &str,
        now: i64,
        expect: Option<i64>,
        row: &NewRow<'_>,
        pointer: &Forward,
    ) -> Result<Move, sqlx::Error> {
        let (found, created): (bool, bool) = sqlx::query_as(&self.sql.regenerate)
            .bind(old)
            .bind(now)
            .bind(expect)
            .bind(row.key)
            .bind(row.expires_ms)
            .bind(row.deadline_ms)
            .bind(&row.record)
            .bind(&row.flash)
            .bind(pointer.grace_until.map(millis))
            .bind(millis(pointer.until))
            .fetch_one(&self.pool)
            .await?;
        Ok(match (found, created) {
            (true, true) => Move::Done,
            (true, false) => Move::Collision,
            (false, _) => Move::SourceNotLive,
        })
    }
}

sql_store!(
    /// Sessions in PostgreSQL, on the application's own `PgPool` (sqlx 0.8).
    ///
    /// One row per session in a table of your choosing (default `typed_sessions`, in the
    /// connection's search path or [`PostgresStore::with_schema`]), keyed by a digest of the
    /// cookie's ID (never the cookie itself), and an owner index in a second table. Create both
    /// with [`PostgresStore::migrate`].
    ///
    /// # Statements per operation
    /// | operation | statements | round trips |
    /// |---|---|---|
    /// | load (sliding, taking the flash) | one statement: an `UPDATE … RETURNING` in a `WITH`, which writes only when the slide moves the expiry by a second or more or a flash waits, and the row as it is otherwise | 1 |
    /// | save | one `UPDATE` checking liveness and the revision | 1 (2 when it changes nothing) |
    /// | create | one `INSERT … ON CONFLICT DO NOTHING` | 1 |
    /// | regenerate | one statement: `SELECT … FOR UPDATE`, `INSERT`, `UPDATE` chained in `WITH` | 1 (2 when it changes nothing) |
    /// | delete | one `DELETE … RETURNING` | 1 (2 when it deletes nothing) |
    ///
    /// A write that changes nothing reads the row once more to say why (missing, moved,
    /// conflict). sqlx pings every connection it takes from the pool unless the pool is built
    /// with `test_before_acquire(false)`: one more round trip per operation on the request's
    /// path (sqlx also pings each connection it takes back, after the operation has answered).
    ///
    /// # Expiry
    /// The layer's clock judges expiry, not the database's: every statement carries it. A
    /// sliding read moves the row's expiry in the same statement that reads it, when that moves
    /// it by a second or more (half the idle timeout, if shorter): a session read many times a
    /// second is written about once a second, and may expire up to that step before the idle
    /// timeout after its last read. An expired
    /// session's row stays for the expired-record retention (default 1 hour), so that a client
    /// coming back is told "expired", and the sweep then deletes it: a background task (every
    /// 5 minutes by default, started by the first create, stopped when the store is dropped) or
    /// your own scheduler calling [`PostgresStore::delete_expired`].
    ///
    /// ```no_run
    /// use sqlx::postgres::PgPoolOptions;
    /// use tower_typed_sessions::{PostgresStore, Session, SessionLayer};
    /// # #[derive(Clone, Default, serde::Serialize, serde::Deserialize)] struct Data;
    /// # impl Session for Data {}
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = PgPoolOptions::new()
    ///     .test_before_acquire(false)
    ///     .connect("postgres://app@localhost/app")
    ///     .await?;
    /// let store = PostgresStore::<Data>::new(pool).with_schema("auth")?;
    /// store.migrate().await?;
    /// let layer = SessionLayer::new(store);
    /// # Ok(()) }
    /// ```
    PostgresStore,
    Postgres,
    PgPool
);

impl<T: crate::Session> PostgresStore<T> {
    /// The schema the tables live in (default: none, so the connection's `search_path`
    /// decides). [`PostgresStore::migrate`] creates it if it does not exist.
    pub fn with_schema(self, schema: &str) -> Result<Self, super::InvalidSqlName> {
        let schema = super::name(schema)?;
        Ok(self.rebuilt(|settings| settings.tables.schema = Some(schema)))
    }
}
