//! The SQLite store: one database file in the data directory, WAL and fully
//! synchronous commits. What it does its own way: write transactions and
//! the audit chain ([`chain`]), cleaning every staged chunk on start (one
//! node owns the file), arrivals in process, and its group committer
//! ([`committer`]): one task drains every commit request queued, writes them
//! in one transaction with a few multi-row statements, and answers each
//! only after that transaction is synced. Every acknowledged pack is on
//! stable storage, and one fsync serves many uploads. The statements both
//! backends share are in [`sql`].

use std::path::Path;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::broadcast;

use super::appender::Appender;
use super::group::Committer;
use super::{ARRIVALS_BUFFER, Arrival, Events, Result};

pub(super) mod chain;
mod checkpoint;
mod committer;
mod sql;

/// The SQLite implementation of [`super::Store`].
#[derive(Debug, Clone)]
pub struct Sqlite {
    pool: SqlitePool,
    /// Arrivals, in process: one node owns a SQLite file.
    arrivals: broadcast::Sender<Arrival>,
    /// The group committer's queue (see [`committer`]).
    committer: Committer,
    /// The audit queue, for listings.
    audit: Appender,
}

impl Sqlite {
    /// Opens (creating if needed) the database file and applies migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(15))
            .foreign_keys(true)
            // Deleted content (purged or recalled ciphertext) is overwritten
            // with zeros, not left in free pages.
            .pragma("secure_delete", "ON");
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("server/migrations/sqlite")
            .run(&pool)
            .await?;
        let (arrivals, _) = broadcast::channel(ARRIVALS_BUFFER);
        let committer = Committer::start(committer::Writer::new(options, arrivals.clone()));
        let audit = Appender::start(pool.clone());
        Ok(Self {
            pool,
            arrivals,
            committer,
            audit,
        })
    }

    /// Removes every staged chunk: uploads that never finished (one node
    /// owns the file, so none is in flight when it starts).
    async fn clean_staged(&self) -> Result<u64> {
        let mut tx = chain::begin(&self.pool).await?;
        let done = sqlx::query("DELETE FROM pack_chunks WHERE staged = 1")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// Checkpoints the write-ahead log into the database and truncates it:
    /// the log still holds every page as it was written (ciphertext since
    /// deleted included) until then. False when a reader kept the log from
    /// being checkpointed whole.
    async fn reclaim_space(&self) -> Result<bool> {
        let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&self.pool)
            .await?;
        Ok(busy == 0)
    }
}

impl super::Backup for Sqlite {
    async fn backup_into(&self, path: &Path) -> Result<bool> {
        let target = path
            .to_str()
            .ok_or_else(|| super::StoreError::Corrupt("a backup path that is not UTF-8".into()))?;
        sqlx::query("VACUUM INTO $1")
            .bind(target)
            .execute(&self.pool)
            .await?;
        Ok(true)
    }
}

impl Events for Sqlite {
    async fn listen(&self) -> Result<()> {
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<Arrival> {
        self.arrivals.subscribe()
    }
}

#[cfg(test)]
mod tests;
