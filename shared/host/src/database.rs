//! Opens a service's database: SQLite by default (one file per service, WAL), PostgreSQL when the
//! URL says so. Waits for an unreachable database instead of exiting, then runs the service's
//! migrations and installs the messaging runtime's outbox and inbox tables.

use crate::{Error, Result};
use choreo_messaging::Backend;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor};
use std::time::Duration;

/// The key of the PostgreSQL advisory lock held while a service migrates its database.
const SCHEMA_LOCK: i64 = 0x63686f72656f; // "choreo"

/// A service's migrations, one set per backend (their SQL differs: types, autoincrement).
#[derive(Debug)]
pub struct Migrations {
    pub sqlite: &'static Migrator,
    pub postgres: &'static Migrator,
}

/// An open database.
#[derive(Debug, Clone)]
pub struct Database {
    pub pool: AnyPool,
    pub backend: Backend,
}

impl Database {
    /// Opens `url`, retrying every second for up to `patience` while the database is unreachable.
    pub async fn open(
        url: &str,
        max_connections: u32,
        migrations: &Migrations,
        patience: Duration,
    ) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend =
            Backend::from_url(url).ok_or_else(|| Error::UnsupportedDatabase(url.to_owned()))?;
        let url = match backend {
            Backend::Sqlite => sqlite_url(url)?,
            Backend::Postgres => url.to_owned(),
        };
        let options = match backend {
            // SQLite has one writer. One connection serializes every transaction in the process,
            // so none of them can fail with SQLITE_BUSY when a deferred transaction upgrades.
            Backend::Sqlite => AnyPoolOptions::new()
                .max_connections(1)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        // NORMAL in WAL mode: durable against a process crash; a power loss can lose
                        // the last commits, never corrupt the file.
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        Ok(())
                    })
                }),
            Backend::Postgres => AnyPoolOptions::new().max_connections(max_connections),
        }
        .acquire_timeout(Duration::from_secs(10));

        let started = tokio::time::Instant::now();
        let pool = loop {
            match options.clone().connect(&url).await {
                Ok(pool) => break pool,
                Err(error) if started.elapsed() < patience => {
                    tracing::warn!(%error, "database unreachable; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(error) => return Err(error.into()),
            }
        };
        let migrator = match backend {
            Backend::Sqlite => migrations.sqlite,
            Backend::Postgres => migrations.postgres,
        };
        // Replicas starting together must not migrate at the same moment: on PostgreSQL one
        // session-level advisory lock covers the migrations and the runtime's tables.
        let mut conn = pool.acquire().await?;
        if backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(SCHEMA_LOCK)
                .execute(&mut *conn)
                .await?;
        }
        let installed = async {
            migrator.run(&mut *conn).await?;
            choreo_messaging::schema::install(&mut conn, backend).await?;
            Ok::<_, Error>(())
        }
        .await;
        if backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(SCHEMA_LOCK)
                .execute(&mut *conn)
                .await?;
        }
        installed?;
        drop(conn);
        Ok(Database { pool, backend })
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}

/// Creates the SQLite file's directory and asks SQLite to create the file if it is missing.
fn sqlite_url(url: &str) -> Result<String> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if let Some(dir) = std::path::Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir)?;
    }
    Ok(if url.contains('?') {
        url.to_owned()
    } else {
        format!("{url}?mode=rwc")
    })
}
