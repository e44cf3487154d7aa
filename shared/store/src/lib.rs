//! A service's database, one unit of work at a time.
//!
//! A unit of work is a closure over an open transaction ([`Tx`]): everything a consumed message
//! or an HTTP request changes, run as one transaction with **one hand-off** to the thread that
//! owns the connection and one answer back. [`Database::write`] commits it (the closure's `Err`
//! rolls it back), [`Database::read`] runs it on a read snapshot.
//!
//! Two backends behind the same SQL (`$1` parameters, integers and text):
//! - **SQLite** (the default): a writer thread and a reader thread each own a connection
//!   (rusqlite); the writer group-commits what queued up while it was busy, each unit of work in
//!   its own savepoint ([`sqlite`]).
//! - **PostgreSQL** (replicas sharing state): sqlx's pool; the closure runs on a blocking thread
//!   ([`postgres`]).
//!
//! Architecture invariant: this crate knows no table but its own `schema_migrations`. Services and
//! the messaging runtime bring their SQL.

mod clock;
mod error;
pub mod failpoint;
mod migrate;
mod postgres;
mod sql;
mod sqlite;
mod work;

pub use clock::{drift, now, now_text, time_text};
pub use error::{Error, Result};
pub use sql::{FromValue, Param, Row, Tx, Value, placeholders, runs_of_powers_of_two, value_rows};

use sqlx::migrate::Migrator;
use std::time::Duration;
use work::Work;

/// Which SQL database a service runs on; picked from the database URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One embedded file per service; one writer at a time.
    Sqlite,
    /// Shared by replicas.
    Postgres,
}

impl Backend {
    /// The backend a database URL names, if it is one we support.
    pub fn from_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }
}

/// A service's migrations, one set per backend (their SQL differs: types, autoincrement).
#[derive(Debug)]
pub struct Migrations {
    pub sqlite: &'static Migrator,
    pub postgres: &'static Migrator,
}

/// How to open a database.
#[derive(Debug, Clone)]
pub struct Options {
    /// PostgreSQL pool size (SQLite has one writer and one reader connection).
    pub max_connections: u32,
    /// How long to wait for an unreachable PostgreSQL before giving up.
    pub patience: Duration,
    /// The fault tests' failpoints; the store's is `store.before_commit`.
    pub failpoints: failpoint::Failpoints,
}

/// An open database. Cheap to clone; clones share the connections.
#[derive(Debug, Clone)]
pub struct Database {
    inner: Inner,
}

#[derive(Debug, Clone)]
enum Inner {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Pg),
}

impl Database {
    /// Opens `url` (`sqlite://path`, `sqlite::memory:`, `postgres://…`), runs `migrations` and
    /// then the idempotent statements `extra` gives for the backend.
    pub async fn open(
        url: &str,
        options: &Options,
        migrations: &Migrations,
        extra: impl FnOnce(Backend) -> Vec<String>,
    ) -> Result<Self> {
        let backend = Backend::from_url(url).ok_or_else(|| {
            // Only what is a scheme is shown: text before the first `:` of something that is
            // no URL at all (`user%3Apassword@host/db`) can be the password.
            let scheme = url
                .split_once(':')
                .map(|(scheme, _)| scheme)
                .filter(|s| {
                    !s.is_empty()
                        && s.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                })
                .map_or_else(|| "(not a URL)".to_owned(), |s| format!("{s:?}"));
            Error::Failed(format!(
                "unsupported database scheme {scheme}: use sqlite:// or postgres://"
            ))
        })?;
        let mut extra = extra(backend);
        extra.push(PROBE_TABLE.to_owned());
        let inner = match backend {
            Backend::Sqlite => {
                let path = sqlite_path(url).to_owned();
                let migrator = migrations.sqlite;
                let failpoints = options.failpoints.clone();
                tokio::task::spawn_blocking(move || {
                    sqlite::Sqlite::open(&path, migrator, &extra, failpoints)
                })
                .await
                .map_err(|_| Error::Failed("opening SQLite panicked".into()))?
                .map(Inner::Sqlite)?
            }
            Backend::Postgres => {
                let pg = postgres::Pg::connect(url, options).await?;
                migrate::postgres(&pg.pool, migrations.postgres, &extra).await?;
                Inner::Postgres(pg)
            }
        };
        Ok(Database { inner })
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        match self.inner {
            Inner::Sqlite(_) => Backend::Sqlite,
            Inner::Postgres(_) => Backend::Postgres,
        }
    }

    /// Runs `work` in a transaction and commits it if it returns `Ok`; its `Err` rolls back
    /// everything it wrote. The answer comes after the commit: `Ok` means durable (as far as the
    /// backend's settings go).
    pub async fn write<T, E>(
        &self,
        work: impl FnOnce(&mut dyn Tx) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        self.run(Mode::Write, work).await
    }

    /// Runs `work` beside the writer and keeps nothing it does: on SQLite in one read snapshot
    /// (a read transaction on the reader connection), on PostgreSQL in a transaction at the
    /// server's default isolation (READ COMMITTED: each statement sees what was committed when
    /// it started).
    pub async fn read<T, E>(
        &self,
        work: impl FnOnce(&mut dyn Tx) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        self.run(Mode::Read, work).await
    }

    async fn run<T, E>(
        &self,
        mode: Mode,
        work: impl FnOnce(&mut dyn Tx) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        match &self.inner {
            Inner::Sqlite(sqlite) => {
                let (job, answer) = Work::queued(work);
                match mode {
                    Mode::Write => sqlite.send_write(job),
                    Mode::Read => sqlite.send_read(job),
                }
                work::answer(answer).await
            }
            Inner::Postgres(pg) => {
                let tx = pg.begin().await?;
                let (tx, result) = postgres::run_in(tx, work).await?;
                match (mode, result) {
                    (Mode::Write, Ok(value)) => {
                        pg.before_commit()?;
                        tx.commit().await.map_err(Error::from)?;
                        Ok(value)
                    }
                    (_, result) => {
                        let _ = tx.rollback().await;
                        result
                    }
                }
            }
        }
    }

    /// Opens a transaction that stays open across awaits (PostgreSQL only), for work that must
    /// hold row locks while it talks to something else: the outbox relay claims its rows with
    /// `FOR UPDATE SKIP LOCKED` until the broker confirmed them. SQLite has one writer, and
    /// holding it across a broker round trip would stall every other unit of work.
    pub async fn hold(&self) -> Result<Held> {
        match &self.inner {
            Inner::Postgres(pg) => Ok(Held {
                tx: Some(pg.begin().await?),
                pg: pg.clone(),
            }),
            Inner::Sqlite(_) => Err(Error::Failed(
                "SQLite holds no transaction across awaits".into(),
            )),
        }
    }

    /// Whether the database answers a trivial query and takes writes. After a write failed for
    /// lack of the database (SQLite's disk full, an I/O error) and none has committed since, a
    /// read is not enough: a one-row write must commit too, which clears the failure. (On
    /// PostgreSQL a full disk is the server's: it refuses writes, which are then unavailable,
    /// and this checks the connection.)
    pub async fn ping(&self) -> bool {
        let answers = self
            .read(|tx| tx.query("SELECT 1", &[]).map(|_| ()))
            .await
            .is_ok();
        match &self.inner {
            Inner::Sqlite(sqlite) if answers && sqlite.writes_failing() => self
                .write(|tx| tx.execute(PROBE, &[]).map(|_| ()))
                .await
                .is_ok(),
            _ => answers,
        }
    }

    /// Waits for the work already queued, then lets the connections go.
    pub async fn close(&self) {
        match &self.inner {
            Inner::Sqlite(_) => {
                let _ = self.write(|_| Ok::<_, Error>(())).await;
            }
            Inner::Postgres(pg) => pg.pool.close().await,
        }
    }
}

/// One row that [`Database::ping`] writes to find out whether writes work again.
const PROBE_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS store_probe (id INTEGER PRIMARY KEY, at TEXT NOT NULL)";
const PROBE: &str = "INSERT INTO store_probe (id, at) VALUES (1, CURRENT_TIMESTAMP) \
     ON CONFLICT (id) DO UPDATE SET at = excluded.at";

/// Whether a unit of work keeps what it wrote.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Write,
    Read,
}

/// A PostgreSQL transaction kept open across awaits; see [`Database::hold`]. Dropped without
/// [`Held::commit`], it rolls back.
#[derive(Debug)]
pub struct Held {
    tx: Option<sqlx::Transaction<'static, sqlx::Postgres>>,
    pg: postgres::Pg,
}

impl Held {
    /// Runs `work` inside the held transaction.
    pub async fn run<T, E>(
        &mut self,
        work: impl FnOnce(&mut dyn Tx) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        let tx = self
            .tx
            .take()
            .ok_or_else(|| Error::Failed("the held transaction is gone".into()))?;
        let (tx, result) = postgres::run_in(tx, work).await?;
        self.tx = Some(tx);
        result
    }

    /// Commits the held transaction.
    pub async fn commit(mut self) -> Result<()> {
        match self.tx.take() {
            Some(tx) => {
                self.pg.before_commit()?;
                Ok(tx.commit().await?)
            }
            None => Err(Error::Failed("the held transaction is gone".into())),
        }
    }
}

/// The file path of a `sqlite:` URL (`sqlite://data/x.db?mode=rwc` -> `data/x.db`).
fn sqlite_path(url: &str) -> &str {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    path.split('?').next().unwrap_or_default()
}

#[cfg(test)]
mod tests;
