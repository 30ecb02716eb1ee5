//! What can go wrong in the store, in the store's own words: a missing or
//! duplicate thing, a bad enrolment code, damaged data, the database itself
//! failing, or the store's own machinery (a committer that stopped, a
//! shared read that failed) being unavailable.

/// A store failure the services turn into a status code.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The thing named does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A unique thing already exists.
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// The one-time enrolment code is unknown, used, expired or for another school.
    #[error("the enrolment code is not valid for this school (unknown, used or expired)")]
    BadCode,
    /// The enrolment code does not grant a role the key asks for; it holds
    /// the roles the code grants (comma separated).
    #[error("this enrolment code grants only the role(s) {0}")]
    RolesNotGranted(String),
    /// A stored row does not decode: the database was edited or is damaged.
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
    /// The database failed (the driver's error).
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The group writer's SQLite connection failed (the driver's error).
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A ciphertext file could not be written, read or removed.
    #[error("ciphertext file: {0}")]
    Files(#[from] std::io::Error),
    /// Applying migrations failed.
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The store's own machinery is not there to do the work: a committer
    /// task that stopped, a group write that failed for everyone in it, a
    /// shared read that failed.
    #[error("{0}")]
    Unavailable(String),
}

/// Shorthand for store results.
pub type Result<T> = std::result::Result<T, StoreError>;
