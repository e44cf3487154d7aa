//! PostgreSQL, through sqlx's pool. A unit of work is synchronous, so it runs on a blocking
//! thread and each of its statements waits there for sqlx's answer: the network round trip is
//! the cost that matters on PostgreSQL, and the work's code is the same as on SQLite.

use crate::failpoint::Failpoints;
use crate::{Backend, Error, Param, Result, Row, Tx, Value};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Column, Postgres, Row as _, Transaction, TypeInfo};
use std::time::Duration;
use tokio::runtime::Handle;

/// A pool of connections to one database.
#[derive(Debug, Clone)]
pub(crate) struct Pg {
    pub(crate) pool: PgPool,
    failpoints: Failpoints,
}

impl Pg {
    /// Connects, retrying every second for up to `patience` while the server is unreachable.
    pub(crate) async fn connect(url: &str, settings: &crate::Options) -> Result<Self> {
        let (patience, failpoints) = (settings.patience, settings.failpoints.clone());
        let options = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_secs(10));
        // No statement waits forever (a lock held by a stuck replica, a server gone silent):
        // a unit of work that cannot finish fails and is retried, and a transaction left open
        // by a process frozen mid-way is ended by the server.
        let connect = url
            .parse::<PgConnectOptions>()
            .map_err(|_| Error::Failed("the PostgreSQL URL does not parse".into()))?
            .options([
                ("statement_timeout", "30s"),
                ("idle_in_transaction_session_timeout", "60s"),
            ]);
        let started = tokio::time::Instant::now();
        loop {
            match options.clone().connect_with(connect.clone()).await {
                Ok(pool) => return Ok(Pg { pool, failpoints }),
                Err(error) if started.elapsed() < patience => {
                    tracing::warn!(error = %Error::from(error), "database unreachable; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// The failpoint `store.before_commit`, hit before a unit of work that succeeded commits.
    pub(crate) fn before_commit(&self) -> Result<()> {
        self.failpoints
            .hit("store.before_commit")
            .map_err(Error::from)
    }

    /// Begins a transaction. Without a connection nothing can be done, whatever the reason
    /// the server gives (refusing connections, the database gone, the pool exhausted): that is
    /// always [`Error::Unavailable`].
    pub(crate) async fn begin(&self) -> Result<Transaction<'static, Postgres>> {
        self.pool
            .begin()
            .await
            .map_err(|error| Error::Unavailable(format!("no database connection: {error}")))
    }
}

/// Runs `work` on a blocking thread inside `tx`; gives the transaction back with the result.
pub(crate) async fn run_in<T, E>(
    mut tx: Transaction<'static, Postgres>,
    work: impl FnOnce(&mut dyn Tx) -> Result<T, E> + Send + 'static,
) -> Result<(Transaction<'static, Postgres>, Result<T, E>)>
where
    T: Send + 'static,
    E: Send + 'static,
{
    let handle = Handle::current();
    tokio::task::spawn_blocking(move || {
        let result = work(&mut PgTx {
            conn: &mut tx,
            handle,
        });
        (tx, result)
    })
    .await
    .map_err(|_| Error::Failed("the unit of work panicked".into()))
}

/// A transaction driven from a blocking thread.
struct PgTx<'c> {
    conn: &'c mut PgConnection,
    handle: Handle,
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

fn with_params<'q>(sql: &'q str, params: &[Param<'q>]) -> PgQuery<'q> {
    params
        .iter()
        .fold(sqlx::query(sql), |query, param| match *param {
            Param::Int(value) => query.bind(value),
            Param::Text(value) => query.bind(value),
        })
}

impl Tx for PgTx<'_> {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        let query = with_params(sql, params);
        let done = self.handle.block_on(query.execute(&mut *self.conn))?;
        Ok(done.rows_affected())
    }

    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>> {
        let query = with_params(sql, params);
        let rows = self.handle.block_on(query.fetch_all(&mut *self.conn))?;
        rows.iter().map(to_row).collect()
    }
}

fn to_row(row: &PgRow) -> Result<Row> {
    let mut values = Vec::with_capacity(row.columns().len());
    for (index, column) in row.columns().iter().enumerate() {
        let value = match column.type_info().name() {
            "INT8" => row.try_get::<Option<i64>, _>(index)?.map(Value::Int),
            "INT4" => row
                .try_get::<Option<i32>, _>(index)?
                .map(|v| Value::Int(v.into())),
            "INT2" => row
                .try_get::<Option<i16>, _>(index)?
                .map(|v| Value::Int(v.into())),
            "BOOL" => row
                .try_get::<Option<bool>, _>(index)?
                .map(|v| Value::Int(v.into())),
            _ => row.try_get::<Option<String>, _>(index)?.map(Value::Text),
        };
        values.push(value.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}
