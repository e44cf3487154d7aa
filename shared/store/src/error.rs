//! Errors of the store, sorted by what a caller can do about them.

/// Why a unit of work failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The database cannot be used at all right now (connection lost, pool exhausted, I/O
    /// failure, disk full, file locked by another process): nothing can succeed until it is back,
    /// so callers wait rather than give up on the work.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A unique constraint refused the statement: the row is already there (another replica, a
    /// repeated request).
    #[error("unique constraint: {0}")]
    UniqueViolation(String),
    /// Any other refusal (a check constraint, a lost serialization race, a column of an
    /// unexpected type); trying the same work again later may succeed.
    #[error("database: {0}")]
    Failed(String),
}

/// Result of the store.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether this is [`Error::UniqueViolation`].
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, Error::UniqueViolation(_))
    }
}

impl From<rusqlite::Error> for Error {
    fn from(error: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        use rusqlite::ffi;
        let rusqlite::Error::SqliteFailure(failure, _) = &error else {
            return Error::Failed(error.to_string());
        };
        match failure.code {
            ErrorCode::ConstraintViolation
                if matches!(
                    failure.extended_code,
                    ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                ) =>
            {
                Error::UniqueViolation(error.to_string())
            }
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::CannotOpen
            | ErrorCode::ReadOnly
            | ErrorCode::NotADatabase
            | ErrorCode::DatabaseCorrupt
            | ErrorCode::OutOfMemory => Error::Unavailable(error.to_string()),
            _ => Error::Failed(error.to_string()),
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Error::Unavailable(error.to_string()),
            sqlx::Error::Database(database) if database.is_unique_violation() => {
                Error::UniqueViolation(error.to_string())
            }
            // Class 08: connection exceptions; 57P0x: the server is shutting down or the
            // session was terminated by an administrator; class 53: insufficient resources
            // (53100 disk full, 53200 out of memory, 53300 too many connections).
            sqlx::Error::Database(database)
                if database.code().is_some_and(|code| {
                    code.starts_with("08") || code.starts_with("57P0") || code.starts_with("53")
                }) =>
            {
                Error::Unavailable(error.to_string())
            }
            _ => Error::Failed(error.to_string()),
        }
    }
}
