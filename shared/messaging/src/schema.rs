//! The runtime's own tables, `outbox` and `inbox`, created in the service's database.
//!
//! They are created with `IF NOT EXISTS` statements rather than through the service's migrations
//! so every service gets the same tables from one definition; a future change to them ships as a
//! new statement here, guarded the same way.

use sqlx::AnyConnection;

/// Which SQL database a service runs on; picked from the database URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One embedded file per service; one writer at a time.
    Sqlite,
    /// Shared by replicas; the relay claims rows with `FOR UPDATE SKIP LOCKED`.
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

/// The tables, with `{seq}` standing for the backend's auto-incrementing key.
const STATEMENTS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS outbox (
        seq {seq},
        event_id TEXT NOT NULL UNIQUE,
        event_type TEXT NOT NULL,
        correlation_id TEXT NOT NULL,
        time_ms BIGINT NOT NULL,
        body TEXT NOT NULL,
        created_at TEXT NOT NULL,
        sent_at TEXT
    )",
    "CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (seq) WHERE sent_at IS NULL",
    "CREATE TABLE IF NOT EXISTS inbox (
        event_id TEXT PRIMARY KEY,
        event_type TEXT NOT NULL,
        received_at TEXT NOT NULL
    )",
];

/// Creates the outbox and inbox tables if they are missing. On PostgreSQL the caller must hold a
/// lock that keeps replicas from running this at the same moment: `CREATE TABLE IF NOT EXISTS`
/// is not safe against a concurrent twin.
pub async fn install(conn: &mut AnyConnection, backend: Backend) -> Result<(), sqlx::Error> {
    let seq = match backend {
        Backend::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
        Backend::Postgres => "BIGSERIAL PRIMARY KEY",
    };
    for statement in STATEMENTS {
        sqlx::query(&statement.replace("{seq}", seq))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
