//! Test support: an in-memory SQLite database with the runtime's tables.

use choreo_store::{Database, Migrations, Options};
use std::time::Duration;

static NO_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate::Migrator::DEFAULT;

/// An in-memory database with the outbox and inbox tables.
pub(crate) async fn memory_database() -> Database {
    let options = Options {
        max_connections: 1,
        patience: Duration::ZERO,
    };
    let migrations = Migrations {
        sqlite: &NO_MIGRATIONS,
        postgres: &NO_MIGRATIONS,
    };
    Database::open(
        "sqlite::memory:",
        &options,
        &migrations,
        crate::schema::statements,
    )
    .await
    .expect("an in-memory database")
}
