//! The SQLite store: one database file in the data directory, WAL and fully
//! synchronous commits. What it does its own way: write transactions and
//! the audit chain ([`chain`]), cleaning every staged chunk on start (one
//! node owns the file), arrivals in process, and one writer thread
//! ([`writer`]) on a connection of its own for every group write: the group
//! committer's ([`committer`]: one task drains every commit request queued,
//! the thread writes them in one transaction with a few multi-row
//! statements, and each is answered only after that transaction is synced)
//! and the write queue's ([`appends`]: download marks, receipts, listings'
//! audit events). Every acknowledged pack is on stable storage, and one
//! fsync serves many uploads. A pack of a chunk or
//! more is kept in a ciphertext file beside the database
//! ([`super::files`]): its file is synced and in place before its row is
//! committed. The statements both backends share are in [`sql`].

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use sqlx::ConnectOptions as _;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use tokio::sync::broadcast;

use self::checkpoint::Checkpointer;
use self::writer::WriterThread;
use super::appender::Appender;
use super::group::Committer;
use super::{ARRIVALS_BUFFER, Arrival, CHUNK_BYTES, Events, PackFiles, Result};

mod appends;
pub(super) mod chain;
mod checkpoint;
mod committer;
mod sql;
mod writer;

/// How long a connection waits for another's write transaction (the
/// writer's, or `batond admin` in another process) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(15);

/// The settings of every connection, the pool's and the group writer's
/// (journal mode WAL, set once, lasts in the file).
const PRAGMAS: [(&str, &str); 5] = [
    // Every commit synced before it is answered.
    ("synchronous", "FULL"),
    ("foreign_keys", "ON"),
    // Deleted content (purged or recalled ciphertext) is overwritten with
    // zeros, not left in free pages.
    ("secure_delete", "ON"),
    // Statement journals (multi-row statements inside a transaction),
    // temporary tables and sorts in memory, not in temporary files: ingest
    // was 5–13 % slower without it in five alternating pairs of runs
    // (BENCHMARKS.md, round 6). Nothing the daemon runs sorts more than an
    // index's keys.
    ("temp_store", "MEMORY"),
    // No call checkpoints the WAL inside itself: SQLite's default (1000
    // pages) had the first small write after a burst of uploads (an audit
    // entry of a listing or a `GetSchool`, a receipt) copy the whole log
    // back into the database and sync it before answering: 42 ms for the
    // first `GetSchool` of a class's re-run, up to 32 MB of copying after
    // heavy ingest. The checkpoint task does it instead (see `checkpoint`).
    ("wal_autocheckpoint", "0"),
];

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
    /// Ciphertext files of packs of a chunk or more (see [`super::files`]).
    files: Option<PackFiles>,
}

impl Sqlite {
    /// Opens (creating if needed) the database file and applies migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        let files = PackFiles::beside(path)?;
        let options = PRAGMAS
            .iter()
            .fold(SqliteConnectOptions::new(), |options, (name, value)| {
                options.pragma(*name, *value)
            })
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(BUSY_TIMEOUT)
            // Every statement at debug level cost ~3 % of the daemon's CPU
            // in checks alone; slow ones are still logged (warn, 1 s), and
            // so are slow group writes on the writer thread (`writer`).
            .log_statements(log::LevelFilter::Off);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            // No ping before each use: a connection is a thread in this
            // process, not a link that can drop, and the ping was a round
            // trip to that thread for every query (sqlx still pings once
            // as a connection goes back to the pool, which catches one
            // left broken).
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("server/migrations/sqlite")
            .run(&pool)
            .await?;
        let (arrivals, _) = broadcast::channel(ARRIVALS_BUFFER);
        let thread = WriterThread::start(path, Checkpointer::start(options))?;
        let committer = Committer::start(committer::Writer {
            thread: thread.clone(),
            arrivals: arrivals.clone(),
        });
        let audit = Appender::start(appends::Appends(thread));
        Ok(Self {
            pool,
            arrivals,
            committer,
            audit,
            files: Some(files),
        })
    }

    /// The upload ids of packs whose ciphertext is held (`deleted` false)
    /// or deleted (true) and large enough to be in a file.
    async fn file_uploads(&self, deleted: bool) -> Result<HashSet<String>> {
        let sql = if deleted {
            "SELECT upload_id FROM packs WHERE ciphertext_length >= $1 AND deleted_at_ms IS NOT NULL"
        } else {
            "SELECT upload_id FROM packs WHERE ciphertext_length >= $1 AND deleted_at_ms IS NULL"
        };
        let rows: Vec<(String,)> = sqlx::query_as(sql)
            .bind(CHUNK_BYTES as i64)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// Removes every staged chunk and staged file (uploads that never
    /// finished: one node owns the file, so none is in flight when it
    /// starts), and every ciphertext file no held pack names.
    async fn clean_staged(&self) -> Result<u64> {
        let mut tx = chain::begin(&self.pool).await?;
        let done = sqlx::query("DELETE FROM pack_chunks WHERE staged = 1")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut cleaned = done.rows_affected();
        if let Some(files) = &self.files {
            cleaned += files.clear_staging().await?;
            // The one recovery rule: a file no held pack names goes. (Held
            // packs of a chunk or more are read at once; any other file is
            // looked up on its own before it is removed.)
            let held = self.file_uploads(false).await?;
            let mut gone = Vec::new();
            for id in files.held_ids().await? {
                if !held.contains(&id) && !self.holds_ciphertext(&id).await? {
                    gone.push(id);
                }
            }
            let orphans = files.remove_each(gone).await?;
            if orphans > 0 {
                tracing::info!(files = orphans, "removed ciphertext files no pack holds");
            }
        }
        Ok(cleaned)
    }

    /// Checkpoints the write-ahead log into the database and truncates it:
    /// the log still holds every page as it was written (ciphertext since
    /// deleted included) until then. False when a reader kept the log from
    /// being checkpointed whole.
    async fn reclaim_space(&self) -> Result<bool> {
        if let Some(files) = &self.files {
            // Files left while a backup held the lock (a failure is logged:
            // the log below is still checkpointed, the next purge retries).
            let swept = async {
                let ids = files.held_ids().await?;
                if ids.is_empty() {
                    return Ok(0);
                }
                let gone = self.file_uploads(true).await?;
                files
                    .remove_each(ids.into_iter().filter(|id| gone.contains(id)))
                    .await
            };
            if let Err(error) = swept.await {
                tracing::warn!(%error, "ciphertext files of deleted packs are left for the next purge");
            }
        }
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
        let copy = async {
            sqlx::query("VACUUM INTO $1")
                .bind(target)
                .execute(&self.pool)
                .await?;
            Ok(())
        };
        match &self.files {
            // No file is removed between the copy and the files' copy.
            Some(files) => {
                files.copy_while(&PackFiles::folder_for(path), copy).await?;
            }
            None => copy.await?,
        }
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
