//! Group commit, for either store: uploads' final commits are queued to one
//! committer task, which takes everything queued (up to [`MAX_GROUP`]),
//! writes it in one transaction through a [`GroupWriter`], and answers each
//! upload only once that transaction is durable. One sync serves many
//! uploads, and nothing is acknowledged before it is on stable storage.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use baton::pack::SignedHeader;
use tokio::sync::{mpsc, oneshot};

use super::{Committed, Result, Route, StoreError};
use crate::audit;

/// One upload's final commit, queued for the committer.
pub struct CommitRequest {
    /// The upload's staging id.
    pub upload_id: String,
    /// The checked header.
    pub header: SignedHeader,
    /// The header as stored (canonical protobuf).
    pub header_bytes: Vec<u8>,
    /// Chunks not staged yet, by index.
    pub tail: Vec<(i64, Vec<u8>)>,
    /// Chunks held in the upload's ciphertext file (SQLite, a pack of a
    /// chunk or more: see `store::files`); 0 when its chunks are rows.
    pub in_file: i64,
    /// When the upload finished, ms.
    pub now_ms: i64,
    /// The audit entry to append if the pack is stored.
    pub event: audit::Event,
    /// Store only if the directory is still at this version.
    pub directory_version: Option<i64>,
    /// The schools it is stored under: the header's, or the schools those
    /// numbers now belong to (aliases after a renumbering).
    pub route: Route,
    reply: oneshot::Sender<Result<Committed>>,
}

#[cfg(test)]
impl CommitRequest {
    /// A commit of `header` (stored under its own schools) that nobody
    /// waits on, for the writers' own tests.
    pub fn unanswered(
        upload_id: &str,
        header: SignedHeader,
        tail: Vec<(i64, Vec<u8>)>,
        now_ms: i64,
        event: audit::Event,
    ) -> Self {
        let h = header.header();
        let route = Route {
            from: h.from,
            to: h.to,
            peer: None,
        };
        Self {
            upload_id: upload_id.to_string(),
            header_bytes: format!("header of {upload_id}").into_bytes(),
            header,
            tail,
            in_file: 0,
            now_ms,
            event,
            directory_version: None,
            route,
            reply: oneshot::channel().0,
        }
    }
}

/// How many groups a writer had to write again one pack at a time. None
/// should: the batched writes settle conflicts and retries themselves; the
/// tests check it stays 0.
pub static FALLBACKS: AtomicU64 = AtomicU64::new(0);

/// Counts a group written again one pack at a time, and logs why.
pub fn fell_back(error: &StoreError, packs: usize) {
    FALLBACKS.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(%error, packs, "batched commit failed; committing one pack at a time");
}

/// The most commits one transaction groups.
pub const MAX_GROUP: usize = 256;

/// Rows of one multi-row statement, and the most chunk bytes one binds
/// (binds are copied for the database driver, so this bounds that copy).
pub const ROWS_PER_STATEMENT: usize = 128;
const CHUNK_BYTES_PER_STATEMENT: usize = 4 * 1024 * 1024;

/// `rows` in runs of a power of two each, largest first, at most
/// [`ROWS_PER_STATEMENT`] (13 rows: 8, 4, 1). A multi-row statement then
/// has one of eight shapes whatever a group's size, so a connection keeps
/// every shape prepared instead of parsing a new one for most groups.
pub fn statement_parts<T>(rows: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = rows;
    std::iter::from_fn(move || {
        let n = rest.len().min(ROWS_PER_STATEMENT);
        if n == 0 {
            return None;
        }
        let (part, after) = rest.split_at(1 << n.ilog2());
        rest = after;
        Some(part)
    })
}

/// One tail chunk to insert: its request, index and bytes.
pub type TailRow<'a> = (&'a CommitRequest, i64, &'a [u8]);

/// The tail chunks of `requests`, split into statements of at most
/// [`ROWS_PER_STATEMENT`] rows and 4 MiB of chunk bytes (one row at least).
pub fn tail_statements<'a>(
    requests: impl Iterator<Item = &'a CommitRequest>,
) -> Vec<Vec<TailRow<'a>>> {
    let mut statements: Vec<Vec<TailRow<'a>>> = Vec::new();
    let mut bytes = 0;
    for request in requests {
        for (idx, data) in &request.tail {
            let full = statements.last().is_none_or(|last| {
                last.len() >= ROWS_PER_STATEMENT || bytes + data.len() > CHUNK_BYTES_PER_STATEMENT
            });
            if full {
                statements.push(Vec::new());
                bytes = 0;
            }
            bytes += data.len();
            if let Some(last) = statements.last_mut() {
                last.push((request, *idx, data.as_slice()));
            }
        }
    }
    statements
}

/// Whether `request` was checked against a directory version other than
/// `current` (and so must not be stored in this group).
pub fn moved(request: &CommitRequest, current: Option<i64>) -> bool {
    matches!((request.directory_version, current), (Some(v), Some(now)) if v != now)
}

/// Whether any request of `batch` asks for a directory check.
pub fn wants_version(batch: &[CommitRequest]) -> bool {
    batch.iter().any(|r| r.directory_version.is_some())
}

/// The audit log's head: entries and the last hash (`None`: empty).
pub type Head = Option<(u64, [u8; 32])>;

/// A group written: the batch handed back to be answered, each request's
/// outcome (`Err`: nothing was stored), and the audit log's head read after
/// the commit (`None` when nothing was committed).
pub type GroupDone = (
    Vec<CommitRequest>,
    Result<Vec<Result<Committed>>>,
    Option<Result<Head>>,
);

/// Writes a group of commits in one transaction.
pub trait GroupWriter: Send + Sync + 'static {
    /// Writes every request of `batch` in one transaction and, once it is
    /// committed, reads the audit log's head. The batch is handed over (a
    /// writer may write it on a thread of its own) and handed back with the
    /// outcomes, to be answered.
    fn write(&self, batch: Vec<CommitRequest>) -> impl Future<Output = GroupDone> + Send + '_;

    /// Called for each pack stored, after the commit and before its answer.
    fn stored(&self, _request: &CommitRequest, _at_ms: i64) {}
}

/// The audit log's head as read after this node's latest group commit,
/// which includes every pack that group stored: an upload's answer signs
/// it instead of reading the head once a pack. Groups are written one at a
/// time and the head read after each, so it is always the latest reading,
/// never kept against the store: a log cut short behind the daemon's back
/// shows in the next answer.
#[derive(Debug, Default)]
pub struct WrittenHead(Mutex<Option<(u64, [u8; 32])>>);

impl WrittenHead {
    /// The head as last read, if it could be.
    pub fn get(&self) -> Option<(u64, [u8; 32])> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The head as just read after a commit.
    fn set(&self, head: Option<(u64, [u8; 32])>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = head;
    }

    /// Forgets the head (it could not be read after a commit), so answers
    /// read it afresh until the next commit reads it.
    fn forget(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// The error a request gets when the committer task has stopped.
fn committer_gone() -> StoreError {
    StoreError::Unavailable("the group committer has stopped".into())
}

/// A handle that queues commits for a committer task.
#[derive(Debug, Clone)]
pub struct Committer {
    queue: mpsc::Sender<CommitRequest>,
    head: Arc<WrittenHead>,
}

impl Committer {
    /// Starts the committer task over `writer`; it ends when every handle
    /// is dropped.
    pub fn start(writer: impl GroupWriter) -> Self {
        let (queue, requests) = mpsc::channel(MAX_GROUP);
        let head = Arc::new(WrittenHead::default());
        tokio::spawn(run(Arc::new(writer), requests, head.clone()));
        Self { queue, head }
    }

    /// The audit log's head as read after the latest group commit (`None`
    /// before the first, or if it could not be read): it includes every
    /// pack whose commit has been answered.
    pub fn written_head(&self) -> Option<(u64, [u8; 32])> {
        self.head.get()
    }

    /// Queues one commit and waits for its outcome.
    #[allow(clippy::too_many_arguments)]
    pub async fn commit(
        &self,
        upload_id: &str,
        header: &SignedHeader,
        header_bytes: &[u8],
        tail: Vec<(i64, Vec<u8>)>,
        in_file: i64,
        now_ms: i64,
        event: audit::Event,
        directory_version: Option<i64>,
        route: Route,
    ) -> Result<Committed> {
        let (reply, answer) = oneshot::channel();
        let request = CommitRequest {
            upload_id: upload_id.to_string(),
            header: header.clone(),
            header_bytes: header_bytes.to_vec(),
            tail,
            in_file,
            now_ms,
            event,
            directory_version,
            route,
            reply,
        };
        self.queue
            .send(request)
            .await
            .map_err(|_| committer_gone())?;
        answer.await.map_err(|_| committer_gone())?
    }
}

/// The committer loop. Each group is written in a task of its own, so a
/// panic while writing one fails that group's uploads (their answers are
/// dropped: "the group committer has stopped") and not every later one.
async fn run<W: GroupWriter>(
    writer: Arc<W>,
    mut queue: mpsc::Receiver<CommitRequest>,
    head: Arc<WrittenHead>,
) {
    while let Some(first) = queue.recv().await {
        let mut batch = Vec::with_capacity(MAX_GROUP);
        batch.push(first);
        while batch.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (writer, head) = (writer.clone(), head.clone());
        let group = tokio::spawn(async move {
            let started = std::time::Instant::now();
            let packs = batch.len();
            // The head is read before anyone is answered, so every answer's
            // head includes its own pack.
            let (mut batch, outcomes, read) = writer.write(batch).await;
            match read {
                Some(Ok(read)) => head.set(read),
                Some(Err(error)) => {
                    tracing::warn!(%error, "could not read the audit log's head after a group commit");
                    head.forget();
                }
                None => {}
            }
            metrics::histogram!("baton_group_commit_packs").record(packs as f64);
            metrics::histogram!("baton_group_commit_seconds")
                .record(started.elapsed().as_secs_f64());
            answer(&*writer, &mut batch, outcomes);
        });
        if group.await.is_err() {
            tracing::error!("a group commit failed unexpectedly; its uploads were refused");
        }
    }
}

/// Answers every request of `batch` (draining it).
fn answer(
    writer: &impl GroupWriter,
    batch: &mut Vec<CommitRequest>,
    outcomes: Result<Vec<Result<Committed>>>,
) {
    let outcomes = match outcomes {
        Ok(outcomes) => outcomes,
        Err(e) => {
            // Nothing of the group was stored: every request fails (the
            // first with the real error) and its upload is discarded.
            let message = e.to_string();
            let mut first = Some(e);
            for request in batch.drain(..) {
                let error = first.take().unwrap_or_else(|| {
                    StoreError::Unavailable(format!("group commit failed: {message}"))
                });
                let _ = request.reply.send(Err(error));
            }
            return;
        }
    };
    for (request, outcome) in batch.drain(..).zip(outcomes) {
        if let Ok(Committed::Stored(at)) = &outcome {
            writer.stored(&request, *at);
        }
        // The caller may have gone away; the pack is stored regardless.
        let _ = request.reply.send(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::{ROWS_PER_STATEMENT, WrittenHead, statement_parts};

    #[test]
    fn statement_parts_are_powers_of_two_in_order() {
        let lens = |n: usize| {
            let rows: Vec<usize> = (0..n).collect();
            let parts: Vec<&[usize]> = statement_parts(&rows).collect();
            // Every row once, in order.
            assert_eq!(parts.concat(), rows);
            parts.iter().map(|p| p.len()).collect::<Vec<_>>()
        };
        assert_eq!(lens(0), Vec::<usize>::new());
        assert_eq!(lens(1), [1]);
        assert_eq!(lens(13), [8, 4, 1]);
        assert_eq!(lens(128), [128]);
        assert_eq!(lens(300), [128, 128, 32, 8, 4]);
        // Eight shapes at most, whatever the group.
        let shapes: std::collections::BTreeSet<usize> =
            (0..=2 * ROWS_PER_STATEMENT).flat_map(lens).collect();
        assert_eq!(shapes.len(), 8);
    }

    #[test]
    fn the_written_head_is_the_latest_reading() {
        let head = WrittenHead::default();
        assert_eq!(head.get(), None);
        head.set(Some((5, [5; 32])));
        assert_eq!(head.get(), Some((5, [5; 32])));
        // A log cut short behind the daemon's back is not hidden.
        head.set(Some((3, [3; 32])));
        assert_eq!(head.get(), Some((3, [3; 32])));
        head.forget();
        assert_eq!(head.get(), None);
    }
}
