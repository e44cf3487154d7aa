//! Hosting for a Choreo service: what `orders`, `billing` and `shipping` share that is neither the
//! event contract nor the messaging runtime.
//!
//! - [`settings`]: defaults, then an optional file, then `CHOREO_*` environment variables, into
//!   typed structs;
//! - [`telemetry`]: one tracing subscriber, human or JSON;
//! - [`database`]: opens SQLite (WAL, one writer) or PostgreSQL, waits for it, runs migrations;
//! - [`http`]: the JSON error shape of the contract, a body extractor that never answers 500 for
//!   bad input, `/healthz` and `/readyz`;
//! - [`service`]: binds, runs the HTTP server and the broker supervisor, stops gracefully.

pub mod cli;
pub mod database;
pub mod http;
pub mod service;
pub mod settings;
pub mod telemetry;

pub use service::Service;
pub use settings::CommonSettings;

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("settings: {0}")]
    Settings(#[from] config::ConfigError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL {0:?}: use sqlite:// or postgres://")]
    UnsupportedDatabase(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("broker: {0}")]
    Messaging(#[from] choreo_messaging::Error),
    #[error("{0}")]
    Usage(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
