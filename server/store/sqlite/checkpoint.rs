//! WAL checkpoints off the upload commit path.
//!
//! SQLite's default copies the WAL back into the database file (and syncs
//! that file) inside whichever commit takes the WAL past 1000 pages, so
//! every few groups one upload group waited for a checkpoint as well as
//! its own sync. The group writer's connection does not checkpoint by
//! itself (`wal_autocheckpoint=0`); instead it tells a [`Checkpointer`]
//! task, on a connection of its own, once about [`TRIGGER_BYTES`] have been
//! committed, and that task runs a `PASSIVE` checkpoint while the writer
//! carries on. Durability is unchanged: a commit is durable once the WAL is
//! synced, which every group still waits for.
//!
//! A passive checkpoint never blocks the writer, but under unbroken load it
//! can never catch up with it either, and the WAL can only start again from
//! its beginning once everything in it has been copied. So when the WAL
//! holds more than [`LIMIT_FRAMES`] the writer checkpoints itself between
//! two groups (most of the WAL has been copied by then, so that is short),
//! and the WAL starts again with the next group.
//!
//! No other connection checkpoints either (the pool's are opened with
//! `wal_autocheckpoint=0` too): with SQLite's default, the first small
//! write after a burst of uploads (the audit entry of a listing or a
//! `GetSchool`, a receipt) copied the whole WAL back and synced the
//! database inside its own call. The writes that do not go through the
//! writer (those, and the operator's) are not counted, so the task also
//! checkpoints whenever [`QUIET`] passes without a wake-up; a passive
//! checkpoint with nothing to copy reads the WAL's index and returns.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection as _, SqliteConnection};
use tokio::sync::mpsc;

/// Committed bytes after which a background checkpoint is started (about
/// SQLite's default of 1000 pages of 4 KiB).
pub const TRIGGER_BYTES: u64 = 32 * 1024 * 1024;

/// WAL frames (pages) beyond which the writer checkpoints itself.
pub const LIMIT_FRAMES: i64 = 64 * 1024;

/// Time without a wake-up after which the task checkpoints anyway, for the
/// writes the writer does not count.
pub const QUIET: Duration = Duration::from_secs(1);

/// The writer's side: counts what it commits, wakes the task, and learns
/// when it must checkpoint itself.
#[derive(Debug)]
pub struct Checkpointer {
    wake: mpsc::Sender<()>,
    since: AtomicU64,
    trigger_bytes: u64,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    /// WAL frames beyond which the writer checkpoints itself.
    limit_frames: i64,
    /// Set by the task when the WAL is past [`LIMIT_FRAMES`].
    writer_must: AtomicBool,
}

impl Checkpointer {
    /// Starts the checkpoint task for the database `options` opens. It ends
    /// when the `Checkpointer` is dropped.
    pub fn start(options: SqliteConnectOptions) -> Self {
        Self::with_limits(options, TRIGGER_BYTES, LIMIT_FRAMES, QUIET)
    }

    /// [`Checkpointer::start`] with other limits than [`TRIGGER_BYTES`] and
    /// [`LIMIT_FRAMES`], and `quiet` for [`QUIET`].
    fn with_limits(
        options: SqliteConnectOptions,
        trigger_bytes: u64,
        limit_frames: i64,
        quiet: Duration,
    ) -> Self {
        let (wake, woken) = mpsc::channel(1);
        let shared = Arc::new(Shared {
            limit_frames,
            writer_must: AtomicBool::new(false),
        });
        tokio::spawn(run(options, woken, Arc::clone(&shared), quiet));
        Self {
            wake,
            since: AtomicU64::new(0),
            trigger_bytes,
            shared,
        }
    }

    /// Counts `bytes` committed; wakes the task every [`TRIGGER_BYTES`].
    pub fn committed(&self, bytes: u64) {
        let total = self.since.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if total >= self.trigger_bytes {
            self.since.store(0, Ordering::Relaxed);
            // A wake-up already pending covers this one.
            let _ = self.wake.try_send(());
        }
    }

    /// Checkpoints on the writer's own connection, between two groups, if
    /// the WAL has grown past [`LIMIT_FRAMES`].
    pub fn if_needed(&self, conn: &rusqlite::Connection) -> rusqlite::Result<()> {
        if self.shared.writer_must.swap(false, Ordering::Relaxed) {
            // (busy, frames in the WAL, frames copied): nothing to act on.
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        }
        Ok(())
    }
}

/// `PRAGMA wal_checkpoint(PASSIVE)`: (frames in the WAL, frames copied).
async fn checkpoint(conn: &mut SqliteConnection) -> sqlx::Result<(i64, i64)> {
    let (_busy, log, copied): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(&mut *conn)
        .await?;
    Ok((log, copied))
}

async fn run(
    options: SqliteConnectOptions,
    mut woken: mpsc::Receiver<()>,
    shared: Arc<Shared>,
    quiet: Duration,
) {
    let mut conn: Option<SqliteConnection> = None;
    // Whether the last checkpoint failed: a failure that lasts is logged
    // once, not every `quiet`.
    let mut failing = false;
    loop {
        // Woken by the writer, or `quiet` passed: checkpoint either way;
        // the writer gone (the store dropped): stop.
        if let Ok(None) = tokio::time::timeout(quiet, woken.recv()).await {
            break;
        }
        let done = match &mut conn {
            Some(c) => checkpoint(c).await,
            empty => match SqliteConnection::connect_with(&options).await {
                Ok(c) => checkpoint(empty.insert(c)).await,
                Err(e) => Err(e),
            },
        };
        match done {
            Ok((log, _)) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("WAL checkpoints work again");
                }
                shared
                    .writer_must
                    .store(log > shared.limit_frames, Ordering::Relaxed);
            }
            Err(e) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(error = %e, "WAL checkpoint failed; the writer checkpoints instead");
                }
                shared.writer_must.store(true, Ordering::Relaxed);
                conn = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database in WAL mode at `path` that checkpoints only when told,
    /// and a connection to it holding a table `t` of blobs.
    async fn wal_table(path: &std::path::Path) -> (SqliteConnectOptions, SqliteConnection) {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            // What is measured is sizes, not durability.
            .synchronous(sqlx::sqlite::SqliteSynchronous::Off)
            .pragma("wal_autocheckpoint", "0");
        let mut conn = SqliteConnection::connect_with(&options).await.unwrap();
        sqlx::query("CREATE TABLE t (b BLOB)")
            .execute(&mut conn)
            .await
            .unwrap();
        (options, conn)
    }

    // Multi-threaded: the writer's loop is synchronous, as the group
    // writer's thread is, and the checkpoint task runs beside it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_starts_again_under_unbroken_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (options, _created) = wal_table(&dir.path().join("db")).await;
        let writer = rusqlite::Connection::open(dir.path().join("db")).unwrap();
        writer.pragma_update(None, "synchronous", "OFF").unwrap();
        writer
            .pragma_update(None, "wal_autocheckpoint", "0")
            .unwrap();
        // Small limits, so that a short test writes many times the limit.
        let limit = 1024;
        let checkpoints =
            Checkpointer::with_limits(options.clone(), 256 * 1024, limit, Duration::from_secs(60));
        let blob = vec![7u8; 16 * 1024];
        // 6000 × 16 KiB: about 30,000 pages, thirty times the limit.
        let inserts = 6000;
        for _ in 0..inserts {
            checkpoints.if_needed(&writer).unwrap();
            writer
                .execute("INSERT INTO t VALUES (?)", [blob.as_slice()])
                .unwrap();
            checkpoints.committed(blob.len() as u64);
        }
        // The WAL file never shrinks, so its size is the most it ever held.
        // Without the writer's own checkpoints it holds every page written
        // (passive checkpoints never catch up with unbroken writes); with
        // them it starts again. How far past the limit it gets depends on
        // how long a background checkpoint takes on a busy machine (3,148
        // frames seen), so the bound is a third of what was written.
        let frame = 4096 + 24;
        let wal = std::fs::metadata(dir.path().join("db-wal")).unwrap().len() / frame;
        let written = u64::try_from(inserts).unwrap() * (blob.len() as u64 / 4096 + 1);
        // (The WAL may also stay under the limit, when the background
        // checkpoints happen to keep up: no lower bound.)
        assert!(
            wal < written / 3,
            "the WAL grew to {wal} frames of {written} written (limit {limit})"
        );
        let rows: i64 = writer
            .query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0))
            .unwrap();
        assert_eq!(rows, inserts);
    }

    #[tokio::test]
    async fn writes_the_writer_does_not_count_are_checkpointed_once_quiet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        // Another connection than the writer's (as the pool's are): its
        // commits never tell the task.
        let (options, mut other) = wal_table(&path).await;
        let before = std::fs::metadata(&path).unwrap().len();
        let _checkpoints = Checkpointer::with_limits(
            options.clone(),
            TRIGGER_BYTES,
            LIMIT_FRAMES,
            Duration::from_millis(50),
        );
        for _ in 0..50 {
            sqlx::query("INSERT INTO t VALUES (?)")
                .bind(vec![9u8; 16 * 1024])
                .execute(&mut other)
                .await
                .unwrap();
        }
        // The pages reach the database file only by a checkpoint, and
        // nobody but the task checkpoints here.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::fs::metadata(&path).unwrap().len() < before + 50 * 16 * 1024 {
            assert!(
                std::time::Instant::now() < deadline,
                "the task never checkpointed writes it was not told of"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
