//! SQLite: one connection owned by a writer thread and one by a reader thread, each fed units of
//! work through a channel.
//!
//! Why threads and closures: with an async driver every statement is a hand-off to the driver's
//! thread and back, and a message costs five to eight of them. Here a whole unit of work (inbox,
//! effect, outbox rows) crosses threads once. The writer also **group-commits**: work queued
//! while it was busy runs in one transaction, each piece inside its own savepoint, so one failure
//! rolls back only its own writes; every caller is answered after the shared commit, never
//! before. Reads run on their own connection (WAL lets them proceed beside the writer), so a heavy
//! `GET` cannot hold up the consumer or the relay.

use crate::failpoint::Failpoints;
use crate::work::{Done, Job};
use crate::{Backend, Error, Param, Result, Row, Tx, Value};
use rusqlite::{CachedStatement, Connection, OpenFlags};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

/// The most queued units of work one transaction takes.
pub(crate) const MAX_GROUP: usize = 64;

/// Statements kept prepared per connection.
const STATEMENT_CACHE: usize = 128;

/// Page cache of each connection, in KiB (SQLite's default is 2,000 KiB each). The writer's
/// working set is the tails of the outbox and inbox B-trees and the rows in flight; the OS keeps
/// the rest of the file in its own cache, so a larger private cache buys little and costs RSS.
const WRITER_CACHE_KIB: u32 = 1024;
const READER_CACHE_KIB: u32 = 512;

/// The two threads of one SQLite database.
#[derive(Debug, Clone)]
pub(crate) struct Sqlite {
    writer: mpsc::Sender<Box<dyn Job>>,
    reader: mpsc::Sender<Box<dyn Job>>,
    /// Set when a write failed for lack of the database (disk full, I/O error), cleared when a
    /// write commits: see [`crate::Database::ping`].
    writes_failing: Arc<AtomicBool>,
}

impl Sqlite {
    /// Opens the file (creating it and its directory), applies `migrations` and `extra`
    /// statements on the writer connection, and starts both threads.
    pub(crate) fn open(
        path: &str,
        migrations: &sqlx::migrate::Migrator,
        extra: &[String],
        failpoints: Failpoints,
    ) -> Result<Self> {
        let memory = path == ":memory:";
        if !memory
            && let Some(dir) = std::path::Path::new(path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|e| Error::Unavailable(e.to_string()))?;
        }
        let writer = connect(path, false)?;
        crate::migrate::sqlite(&writer, migrations, extra)?;
        let writes_failing = Arc::new(AtomicBool::new(false));
        let failing = writes_failing.clone();
        let writer = spawn("sqlite-writer", move |jobs| {
            write_loop(writer, jobs, &failpoints, &failing)
        })?;
        // An in-memory database exists only on its one connection: reads go to the writer.
        let reader = if memory {
            writer.clone()
        } else {
            let reader = connect(path, true)?;
            spawn("sqlite-reader", move |jobs| read_loop(reader, jobs))?
        };
        Ok(Sqlite {
            writer,
            reader,
            writes_failing,
        })
    }

    /// Whether the last write failed for lack of the database, and none has committed since.
    pub(crate) fn writes_failing(&self) -> bool {
        self.writes_failing.load(Ordering::SeqCst)
    }

    pub(crate) fn send_write(&self, job: Box<dyn Job>) {
        send(&self.writer, job);
    }

    pub(crate) fn send_read(&self, job: Box<dyn Job>) {
        send(&self.reader, job);
    }
}

fn send(thread: &mpsc::Sender<Box<dyn Job>>, job: Box<dyn Job>) {
    if let Err(mpsc::SendError(job)) = thread.send(job) {
        job.fail(Error::Unavailable("the database thread has stopped".into()));
    }
}

fn connect(path: &str, read_only: bool) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)?;
    // WAL: readers never block the writer nor the writer them. NORMAL: durable against a process
    // crash; a power loss can lose the last commits, never corrupt the file. temp_store MEMORY:
    // statement journals and temporary b-trees in memory, not in a file created and deleted
    // within a transaction (the observer's writer did that about once per transaction at 500
    // orders/s: docs/benchmarks.md); they hold nothing that must outlive the connection.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA busy_timeout = 5000;
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;",
    )?;
    let cache_kib = if read_only {
        READER_CACHE_KIB
    } else {
        WRITER_CACHE_KIB
    };
    // A negative cache_size is a size in KiB rather than a number of pages.
    conn.execute_batch(&format!("PRAGMA cache_size = -{cache_kib};"))?;
    if read_only {
        conn.execute_batch("PRAGMA query_only = ON;")?;
    }
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

fn spawn(
    name: &str,
    body: impl FnOnce(mpsc::Receiver<Box<dyn Job>>) + Send + 'static,
) -> Result<mpsc::Sender<Box<dyn Job>>> {
    let (sender, receiver) = mpsc::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || body(receiver))
        .map_err(|e| Error::Unavailable(format!("cannot start {name}: {e}")))?;
    Ok(sender)
}

/// Runs until every sender is gone: takes what is queued (up to [`MAX_GROUP`]) into one
/// transaction.
fn write_loop(
    conn: Connection,
    jobs: mpsc::Receiver<Box<dyn Job>>,
    failpoints: &Failpoints,
    failing: &AtomicBool,
) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        commit_group(&conn, group, failpoints, failing);
    }
}

/// One transaction for the whole group; each unit of work in a savepoint when there are several.
fn commit_group(
    conn: &Connection,
    group: Vec<Box<dyn Job>>,
    failpoints: &Failpoints,
    failing: &AtomicBool,
) {
    if let Err(error) = conn.execute_batch("BEGIN IMMEDIATE") {
        let error = Error::from(error);
        note(failing, &error);
        for job in group {
            job.fail(error.clone());
        }
        return;
    }
    let alone = group.len() == 1;
    let mut ran: Vec<Box<dyn Done>> = Vec::with_capacity(group.len());
    let mut broken: Option<Error> = None;
    for job in group {
        if let Some(error) = &broken {
            job.fail(error.clone());
            continue;
        }
        if !alone && let Err(error) = conn.execute_batch("SAVEPOINT work") {
            let error = Error::from(error);
            job.fail(error.clone());
            broken = Some(error);
            continue;
        }
        let done = run(conn, job, Some(failing));
        let succeeded = done.as_ref().is_some_and(|d| d.succeeded());
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back by itself (disk full, I/O error).
            broken = Some(Error::Unavailable(
                "SQLite rolled the transaction back".into(),
            ));
        } else if !alone {
            let end = if succeeded {
                "RELEASE work"
            } else {
                "ROLLBACK TO work; RELEASE work"
            };
            if let Err(error) = conn.execute_batch(end) {
                broken = Some(error.into());
            }
        } else if !succeeded {
            broken = Some(Error::Failed("rolled back".into()));
        }
        ran.extend(done);
    }
    let committed = match broken {
        // A unit of work that failed answers its own error (`Done::finish`); anything else that
        // broke the transaction is every unit's error.
        Some(error) => {
            rollback(conn);
            Err(error)
        }
        None => failpoints
            .hit("store.before_commit")
            .map_err(Error::from)
            .and_then(|()| conn.execute_batch("COMMIT").map_err(Error::from))
            .inspect_err(|_| rollback(conn)),
    };
    match &committed {
        Ok(()) => failing.store(false, Ordering::SeqCst),
        Err(error) => note(failing, error),
    }
    for done in ran {
        done.finish(committed.clone());
    }
}

/// Runs one reader job in its own read transaction, so it sees one snapshot.
fn read_loop(conn: Connection, jobs: mpsc::Receiver<Box<dyn Job>>) {
    while let Ok(job) = jobs.recv() {
        if let Err(error) = conn.execute_batch("BEGIN") {
            job.fail(error.into());
            continue;
        }
        let done = run(&conn, job, None);
        rollback(&conn);
        if let Some(done) = done {
            done.finish(Ok(()));
        }
    }
}

/// Runs a job; `None` if it panicked (its caller then hears that from the dropped channel).
fn run(
    conn: &Connection,
    job: Box<dyn Job>,
    failing: Option<&AtomicBool>,
) -> Option<Box<dyn Done>> {
    let mut tx = SqliteTx { conn, failing };
    catch_unwind(AssertUnwindSafe(|| job.run(&mut tx))).ok()
}

fn rollback(conn: &Connection) {
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
}

/// Sets `failing` when `error` says the database is unavailable (a full disk among others).
fn note(failing: &AtomicBool, error: &Error) {
    if matches!(error, Error::Unavailable(_)) {
        failing.store(true, Ordering::SeqCst);
    }
}

/// A transaction on the thread's connection; the writer's notes the writes that fail for lack
/// of the database.
struct SqliteTx<'c> {
    conn: &'c Connection,
    failing: Option<&'c AtomicBool>,
}

impl SqliteTx<'_> {
    /// Refuses to go on once SQLite has rolled the transaction back by itself (disk full, I/O
    /// error): work that swallowed that error must not carry on in autocommit mode, where each
    /// statement would commit alone.
    fn still_open(&self) -> Result<()> {
        if self.conn.is_autocommit() {
            return Err(Error::Unavailable(
                "SQLite rolled the transaction back".into(),
            ));
        }
        Ok(())
    }
}

impl Tx for SqliteTx<'_> {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        let executed = (|| {
            self.still_open()?;
            let mut statement = self.conn.prepare_cached(sql)?;
            bind(&mut statement, params)?;
            Ok(statement.raw_execute()? as u64)
        })();
        if let (Err(error), Some(failing)) = (&executed, self.failing) {
            note(failing, error);
        }
        executed
    }

    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>> {
        let queried = self.query_rows(sql, params);
        if let (Err(error), Some(failing)) = (&queried, self.failing) {
            note(failing, error);
        }
        queried
    }
}

impl SqliteTx<'_> {
    fn query_rows(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>> {
        self.still_open()?;
        let mut statement = self.conn.prepare_cached(sql)?;
        bind(&mut statement, params)?;
        let columns = statement.column_count();
        let mut rows = statement.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let mut values = Vec::with_capacity(columns);
            for index in 0..columns {
                use rusqlite::types::ValueRef;
                values.push(match row.get_ref(index)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(int) => Value::Int(int),
                    ValueRef::Real(real) => Value::Text(real.to_string()),
                    ValueRef::Text(text) | ValueRef::Blob(text) => {
                        Value::Text(String::from_utf8_lossy(text).into_owned())
                    }
                });
            }
            out.push(Row(values));
        }
        Ok(out)
    }
}

/// Binds `$n` parameters by name, so a statement may use one twice or out of order.
fn bind(statement: &mut CachedStatement<'_>, params: &[Param<'_>]) -> Result<()> {
    for index in 1..=statement.parameter_count() {
        let name = statement.parameter_name(index).unwrap_or_default();
        let param = name
            .strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| params.get(n.checked_sub(1)?))
            .ok_or_else(|| Error::Failed(format!("no value for parameter {name:?}")))?;
        match param {
            Param::Int(value) => statement.raw_bind_parameter(index, value)?,
            Param::Text(value) => statement.raw_bind_parameter(index, value)?,
        }
    }
    Ok(())
}
