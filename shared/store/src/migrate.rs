//! Schema set-up at open: the service's migrations (embedded by `sqlx::migrate!`, one set per
//! backend) and then `extra` idempotent statements (the messaging runtime's tables).
//!
//! PostgreSQL uses sqlx's migrator under a session advisory lock, so replicas starting together
//! cannot race each other. SQLite applies the same embedded files itself on the writer
//! connection (one process owns the file) and records them in `schema_migrations`.

use crate::{Error, Result};
use rusqlite::Connection;
use sqlx::migrate::Migrator;

/// The key of the PostgreSQL advisory lock held while a service migrates its database.
const SCHEMA_LOCK: i64 = 0x63686f72656f; // "choreo"

/// Applies what SQLite has not applied yet, each migration in its own transaction.
pub(crate) fn sqlite(conn: &Connection, migrator: &Migrator, extra: &[String]) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY,
            description TEXT NOT NULL,
            applied_at TEXT NOT NULL
        )",
    )?;
    // Files created before this runner kept their record in sqlx's table: honour it.
    let sqlx_table: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        [],
        |row| row.get(0),
    )?;
    if sqlx_table {
        conn.execute(
            "INSERT OR IGNORE INTO schema_migrations (version, description, applied_at)
             SELECT version, description, installed_on FROM _sqlx_migrations WHERE success",
            [],
        )?;
    }
    for migration in migrator.iter() {
        if migration.migration_type.is_down_migration() {
            continue;
        }
        let applied: bool = conn.query_row(
            "SELECT COUNT(*) > 0 FROM schema_migrations WHERE version = ?1",
            [migration.version],
            |row| row.get(0),
        )?;
        if applied {
            continue;
        }
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let applied = conn.execute_batch(&migration.sql).and_then(|()| {
            conn.execute(
                "INSERT INTO schema_migrations (version, description, applied_at) VALUES (?1, ?2, ?3)",
                (migration.version, &*migration.description, crate::now_text()),
            )
        });
        match applied {
            Ok(_) => conn.execute_batch("COMMIT")?,
            Err(error) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(Error::Failed(format!(
                    "migration {} ({}): {error}",
                    migration.version, migration.description
                )));
            }
        }
    }
    for statement in extra {
        conn.execute_batch(statement)?;
    }
    Ok(())
}

/// Runs the migrations and `extra` on PostgreSQL under the schema advisory lock.
pub(crate) async fn postgres(
    pool: &sqlx::PgPool,
    migrator: &Migrator,
    extra: &[String],
) -> Result<()> {
    let mut conn = pool.acquire().await?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(SCHEMA_LOCK)
        .execute(&mut *conn)
        .await?;
    let installed = async {
        migrator
            .run(&mut *conn)
            .await
            .map_err(|e| Error::Failed(format!("migrations: {e}")))?;
        for statement in extra {
            sqlx::query(statement).execute(&mut *conn).await?;
        }
        Ok::<_, Error>(())
    }
    .await;
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(SCHEMA_LOCK)
        .execute(&mut *conn)
        .await?;
    installed
}
