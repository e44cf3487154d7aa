//! The runtime's own tables, `outbox` and `inbox`, created in the service's database.
//!
//! They are created with `IF NOT EXISTS` statements rather than through the service's migrations
//! so every service gets the same tables from one definition; a future change to them ships as a
//! new statement here, guarded the same way. The store runs them after the service's migrations
//! (on PostgreSQL under the same lock, so replicas starting together do not race).

use choreo_store::Backend;

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

/// PostgreSQL only: the retention finds the inbox's oldest rows by this index. SQLite needs
/// none (it takes them in `rowid` order, see `crate::retention`), so its inbox insert stays one
/// index write; on PostgreSQL the second one is an append at the right edge of a B-tree, in the
/// statement the consumer sends anyway (no round trip more).
const POSTGRES_ONLY: &[&str] =
    &["CREATE INDEX IF NOT EXISTS inbox_received_at ON inbox (received_at)"];

/// The statements that create the outbox and inbox on `backend` if they are missing.
pub fn statements(backend: Backend) -> Vec<String> {
    let (seq, only) = match backend {
        Backend::Sqlite => ("INTEGER PRIMARY KEY AUTOINCREMENT", &[][..]),
        Backend::Postgres => ("BIGSERIAL PRIMARY KEY", POSTGRES_ONLY),
    };
    STATEMENTS
        .iter()
        .chain(only)
        .map(|statement| statement.replace("{seq}", seq))
        .collect()
}
