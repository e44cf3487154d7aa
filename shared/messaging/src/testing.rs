//! Test support: an in-memory SQLite database with the runtime's tables, for the runtime's own
//! unit tests and for a service's tests of its handler and store (no broker needed).

use choreo_store::{Database, Migrations, Options};
use std::time::Duration;

#[cfg(test)]
static NO_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate::Migrator::DEFAULT;

/// An in-memory database with the outbox and inbox tables.
#[cfg(test)]
pub(crate) async fn memory_database() -> Database {
    service_memory_database(&Migrations {
        sqlite: &NO_MIGRATIONS,
        postgres: &NO_MIGRATIONS,
    })
    .await
}

/// An in-memory database with a service's `migrations`, then the outbox and inbox tables: what
/// the service's handler and store run on in production, without a file or a broker.
pub async fn service_memory_database(migrations: &Migrations) -> Database {
    let options = Options {
        max_connections: 1,
        patience: Duration::ZERO,
        failpoints: Default::default(),
    };
    Database::open(
        "sqlite::memory:",
        &options,
        migrations,
        crate::schema::statements,
    )
    .await
    .expect("an in-memory database")
}
