//! The SQLite writer thread: every group write of the store (uploads'
//! commits, [`super::committer`]; delivery's queued writes and listings'
//! audit events, [`super::appends`]) runs synchronously on one thread of its
//! own, over one connection of its own ([`rusqlite`], on the same SQLite
//! library as the pool's).
//!
//! Through sqlx every statement was a hand-off between the task that wrote
//! and the connection's worker thread, a dozen a group, each a wake-up that
//! waited for a core on a busy machine: about half of an upload group's
//! time was those waits (BENCHMARKS.md, rounds 10 and 11), and a delivery
//! group of receipts made one a receipt. Here a group is one hand-off to
//! the thread and one back. One connection writes everything the services
//! write in groups, so those writes queue in order instead of waiting on
//! each other's locks; the pool's occasional writes (the directory,
//! purges, the operator's) wait on the busy timeout as before.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, OptionalExtension as _, ToSql};
use tokio::sync::oneshot;

use super::checkpoint::Checkpointer;
use crate::audit;
use crate::store::appender::{Write, Written};
use crate::store::group::{CommitRequest, GroupDone, Head, statement_parts};
use crate::store::rows::{HEAD_SQL, chain_entries};
use crate::store::{Committed, Result, StoreError};

/// Statements the writer's connection keeps prepared: every shape of the
/// groups' multi-row statements (eight row counts each, see
/// [`statement_parts`]) and the fixed ones, parsed once instead of once a
/// group (parsing was ~3 % of the daemon's CPU in a 20 KB ingest).
const STATEMENT_CACHE: usize = 128;

/// Each upload commit's outcome, or the group's failure.
pub type Outcomes = Result<Vec<Result<Committed>>>;

/// Each queued write's outcome, or the group's failure.
pub type WritesDone = Result<Vec<Result<Written>>>;

/// Work for the thread, and where to send its outcome.
enum Job {
    /// Upload commits ([`super::committer`]).
    Group {
        batch: Vec<CommitRequest>,
        reply: oneshot::Sender<GroupDone>,
    },
    /// Queued delivery writes and audit events ([`super::appends`]).
    Writes {
        writes: Arc<[(i64, Write)]>,
        reply: oneshot::Sender<WritesDone>,
    },
}

/// A handle on the writer thread; the thread ends once every handle is
/// dropped.
#[derive(Debug, Clone)]
pub struct WriterThread {
    jobs: mpsc::Sender<Job>,
}

/// The error a write gets when the writer thread is not there.
fn gone() -> StoreError {
    StoreError::Unavailable("the SQLite writer has stopped".into())
}

impl WriterThread {
    /// Starts the thread for the database at `path`; it connects (with
    /// [`connect`]) when it first writes and leaves checkpoints to
    /// `checkpoints`' task.
    pub fn start(path: &Path, checkpoints: Checkpointer) -> Result<Self> {
        let (jobs, queue) = mpsc::channel();
        let path = path.to_path_buf();
        std::thread::Builder::new()
            .name("batond-sqlite-writer".into())
            .spawn(move || serve(&path, &checkpoints, &queue))
            .map_err(|e| {
                StoreError::Unavailable(format!("could not start the SQLite writer: {e}"))
            })?;
        Ok(Self { jobs })
    }

    /// Writes `batch` in one transaction and hands it back with its
    /// outcomes and the head read after it.
    pub async fn group(&self, batch: Vec<CommitRequest>) -> GroupDone {
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::SendError(Job::Group { batch, .. })) =
            self.jobs.send(Job::Group { batch, reply })
        {
            return (batch, Err(gone()), None);
        }
        // The thread does not end with a job short of an abort; had it, the
        // uploads' answers went with the batch.
        answer
            .await
            .unwrap_or_else(|_| (Vec::new(), Err(gone()), None))
    }

    /// Makes `writes` in one transaction.
    pub async fn writes(&self, writes: Arc<[(i64, Write)]>) -> WritesDone {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Writes { writes, reply })
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// A group write slower than this is logged (as sqlx logs a slow
/// statement): a group waiting on the busy timeout behind another
/// process's write, or a disk that has slowed down.
const SLOW: Duration = Duration::from_secs(1);

/// The thread: does each job queued, until every handle is dropped. A
/// panic while writing fails that job (and the connection, taken out while
/// writing, is opened again), not the thread.
fn serve(path: &Path, checkpoints: &Checkpointer, queue: &mpsc::Receiver<Job>) {
    let mut conn: Option<Connection> = None;
    while let Ok(job) = queue.recv() {
        let started = Instant::now();
        let (what, rows) = match job {
            Job::Group { batch, reply } => {
                let done = catch_unwind(AssertUnwindSafe(|| {
                    super::committer::write_group(&mut conn, path, checkpoints, &batch)
                }));
                let (outcomes, head) = done.unwrap_or_else(|_| (Err(unexpected()), None));
                let rows = batch.len();
                // The committer may have gone away; nothing to answer then.
                let _ = reply.send((batch, outcomes, head));
                ("upload commits", rows)
            }
            Job::Writes { writes, reply } => {
                let done = catch_unwind(AssertUnwindSafe(|| {
                    with_connection(&mut conn, path, checkpoints, |conn| {
                        super::appends::write_all(conn, &writes)
                    })
                }));
                let _ = reply.send(done.unwrap_or_else(|_| Err(unexpected())));
                ("queued writes", writes.len())
            }
        };
        let took = started.elapsed();
        if took >= SLOW {
            tracing::warn!(
                group = what,
                rows,
                ms = took.as_millis() as u64,
                "slow group write"
            );
        }
    }
}

/// A job that panicked: logged, and answered as failed.
fn unexpected() -> StoreError {
    tracing::error!("a group write failed unexpectedly; its writes were refused");
    StoreError::Unavailable("a group write failed unexpectedly".into())
}

/// Runs `write` on the connection in `slot` (opened if there is none, after
/// a checkpoint if the WAL has grown past its limit). The connection is
/// taken out while writing and put back only if `write` succeeded, so a
/// broken one is not reused.
pub fn with_connection<T>(
    slot: &mut Option<Connection>,
    path: &Path,
    checkpoints: &Checkpointer,
    write: impl FnOnce(&mut Connection) -> Result<T>,
) -> Result<T> {
    let mut conn = match slot.take() {
        Some(conn) => conn,
        None => connect(path)?,
    };
    if let Err(e) = checkpoints.if_needed(&conn) {
        tracing::warn!(error = %e, "the SQLite writer's WAL checkpoint failed");
    }
    let written = write(&mut conn)?;
    *slot = Some(conn);
    Ok(written)
}

/// Opens the writer's connection to the database at `path` (which the
/// pool has created, migrated and put in WAL mode, which lasts), with the
/// settings every connection of the store has ([`super::PRAGMAS`]).
pub fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(super::BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    for (name, value) in super::PRAGMAS {
        conn.pragma_update(None, name, value)?;
    }
    Ok(conn)
}

/// The audit log's last row.
fn last_entry(conn: &Connection) -> Result<Option<(i64, Vec<u8>)>> {
    Ok(conn
        .prepare_cached(HEAD_SQL)?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?)
}

/// The audit log's head, as the next answers sign it.
pub fn read_head(conn: &Connection) -> Result<Head> {
    last_entry(conn)?.map(crate::store::rows::head).transpose()
}

/// `head`, then `n` copies of the row of placeholders `row`, separated by
/// commas: a multi-row `INSERT`.
pub fn values(head: &str, row: &str, n: usize) -> String {
    format!("{head} VALUES {}", vec![row; n].join(", "))
}

/// Appends `events` (each with its time), in order, to the audit chain
/// inside the caller's transaction: one read of the head and one insert.
pub fn append_all(conn: &Connection, events: &[(i64, &audit::Event)]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let entries = chain_entries(last_entry(conn)?, events);
    for part in statement_parts(&entries) {
        let sql = values(
            "INSERT INTO audit (seq, at_ms, actor, action, subject, prev_hash, hash)",
            "(?, ?, ?, ?, ?, ?, ?)",
            part.len(),
        );
        let mut binds: Vec<&dyn ToSql> = Vec::with_capacity(part.len() * 7);
        for e in part {
            binds.extend([
                &e.seq as &dyn ToSql,
                &e.at_ms,
                &e.actor,
                &e.action,
                &e.subject,
                &e.prev_hash,
                &e.hash,
            ]);
        }
        conn.prepare_cached(&sql)?.execute(binds.as_slice())?;
    }
    Ok(())
}
