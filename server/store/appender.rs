//! The write queue: the small writes of delivery are queued and written in
//! groups, one synced write transaction for everything queued, instead of
//! each call opening a write transaction of its own: audit events that come
//! with no write of their own (an inbox or sent listing), download marks
//! (`ConfirmDownload`) and receipts (`Acknowledge`), each with its audit
//! entry. A call is answered only once its write is committed, so the chain
//! means what it always meant: every answered call is in the log, in the
//! order its entry was appended (but a receipt is logged once, when it is
//! recorded: the same receipt sent again is answered as before and changes
//! nothing, so it is not logged again). Should a group fail, its writes are tried
//! again one transaction each, so one bad write fails alone.
//!
//! The statements are written once for both backends (the `*_SQL`
//! constants) and so is what a group's outcomes and audit events are
//! ([`settle`]); PostgreSQL runs them through its pool ([`queue_writer!`]),
//! SQLite on its writer thread (`sqlite::appends`).

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use baton::pack::PackId;

use super::{Acknowledged, Result, StoreError};
use crate::audit;

/// The most events one transaction appends.
const MAX_GROUP: usize = 512;

/// One queued write.
#[derive(Debug, Clone)]
pub enum Write {
    /// An audit event with no write of its own.
    Audit(audit::Event),
    /// A download the destination confirmed: the pack moves to
    /// `downloaded`, and `event` is appended, the first time only.
    Downloaded {
        /// The pack.
        id: PackId,
        /// Its audit event.
        event: audit::Event,
    },
    /// A download its destination confirmed, made only if the pack is
    /// still pending for `to` with ciphertext `sha256` and, without
    /// `safeguarding`, is a transfer pack: one write instead of a read
    /// and a write (see [`Written::Confirmed`]).
    Confirm {
        /// The pack.
        id: PackId,
        /// The confirming school (its current LAESTAB).
        to: String,
        /// The ciphertext's SHA-256 the school read.
        sha256: Vec<u8>,
        /// Whether the confirming key may see child-protection files.
        safeguarding: bool,
        /// The directory version the caller was authenticated against, if
        /// it did not read it: the write is made only at that version.
        directory_version: Option<i64>,
        /// Its audit event, appended only if the pack moved.
        event: audit::Event,
    },
    /// A receipt: recorded unless one is already (the same one again is a
    /// retry; another is a conflict, recorded nowhere).
    Acknowledge {
        /// The pack.
        id: PackId,
        /// The signed receipt, protobuf bytes.
        receipt: Vec<u8>,
        /// Its audit event.
        event: audit::Event,
    },
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Done (an event, or a download mark).
    Done,
    /// A receipt's outcome.
    Acknowledged(Acknowledged),
    /// Whether a [`Write::Confirm`] moved its pack to `downloaded`.
    Confirmed(bool),
}

impl Write {
    /// The audit event the write appends when it changes something.
    pub fn event(&self) -> &audit::Event {
        match self {
            Write::Audit(event)
            | Write::Downloaded { event, .. }
            | Write::Confirm { event, .. }
            | Write::Acknowledge { event, .. } => event,
        }
    }
}

/// One write's outcome, and whether it changed something (and so appends
/// its event): an event always; a download mark or confirmation that moved
/// its pack; a receipt recorded now (the same receipt again is a retry,
/// answered as before and not logged twice).
pub type Made = (Result<Written>, bool);

/// The outcomes of `writes`, each as it was `made`, and the events to
/// append for them, in order (every write's, together at the end of the
/// group's transaction).
pub fn settle(
    writes: &[(i64, Write)],
    made: Vec<Made>,
) -> (Vec<Result<Written>>, Vec<(i64, &audit::Event)>) {
    let mut events = Vec::with_capacity(writes.len());
    let outcomes = writes
        .iter()
        .zip(made)
        .map(|((at_ms, write), (outcome, changed))| {
            if changed {
                events.push((*at_ms, write.event()));
            }
            outcome
        })
        .collect();
    (outcomes, events)
}

/// Marks a downloaded pack (`Write::Downloaded`): $1 the time, $2 the pack.
pub const DOWNLOADED_SQL: &str = "UPDATE packs SET downloaded_at_ms = $1, \
     status = CASE status WHEN 'pending' THEN 'downloaded' ELSE status END \
     WHERE pack_id = $2 AND downloaded_at_ms IS NULL";

/// A confirmed download (`Write::Confirm`): $1 the time, $2 the pack, $3
/// the school, $4 the ciphertext's hash, $5 safeguarding, $6 the directory
/// version or NULL.
pub const CONFIRM_SQL: &str = "UPDATE packs SET downloaded_at_ms = $1, status = 'downloaded' \
     WHERE pack_id = $2 AND to_laestab = $3 AND ciphertext_sha256 = $4 \
     AND status = 'pending' AND downloaded_at_ms IS NULL \
     AND deleted_at_ms IS NULL AND (kind = 'transfer' OR $5) \
     AND ($6 IS NULL OR $6 = (SELECT v.version FROM directory_version v WHERE v.id = 1))";

/// A receipt for a pack with none yet, in one statement (the busy path):
/// $1 the receipt, $2 the time, $3 the pack. Concurrent acknowledgements
/// (through several nodes) take turns on the row: the first receipt wins,
/// and a later one reads what is recorded ([`RECEIPT_SQL`]).
pub const RECORD_RECEIPT_SQL: &str = "UPDATE packs SET receipt = $1, acknowledged_at_ms = $2, \
     status = CASE WHEN status IN ('pending', 'downloaded') \
     THEN 'acknowledged' ELSE status END, \
     downloaded_at_ms = COALESCE(downloaded_at_ms, $2) \
     WHERE pack_id = $3 AND receipt IS NULL";

/// The receipt recorded for pack $1, and when (PostgreSQL locks the row).
pub const RECEIPT_SQL: &str = "SELECT receipt, acknowledged_at_ms FROM packs WHERE pack_id = $1";

/// Writes a group in one transaction.
pub trait AppendWriter: Send + Sync + 'static {
    /// Makes every `(at_ms, write)` of `writes`, in order, in one
    /// transaction, and returns each one's outcome (a pack that is not
    /// there fails alone); `Err` means none was written.
    /// The writes are shared, not copied, with a writer that writes on a
    /// thread of its own.
    fn write_all(
        &self,
        writes: Arc<[(i64, Write)]>,
    ) -> impl Future<Output = Result<Vec<Result<Written>>>> + Send + '_;
}

type Queued = (i64, Write, oneshot::Sender<Result<Written>>);

/// A handle that queues events for the appender task.
#[derive(Debug, Clone)]
pub struct Appender {
    queue: mpsc::Sender<Queued>,
}

fn gone() -> StoreError {
    StoreError::Unavailable("the audit queue has stopped".into())
}

impl Appender {
    /// Starts the appender task over `writer`; it ends when every handle is
    /// dropped.
    pub fn start(writer: impl AppendWriter) -> Self {
        let (queue, events) = mpsc::channel(MAX_GROUP);
        tokio::spawn(run(Arc::new(writer), events));
        Self { queue }
    }

    /// Queues `event` (at `now_ms`) and waits until it is committed.
    pub async fn append(&self, now_ms: i64, event: audit::Event) -> Result<()> {
        self.write(now_ms, Write::Audit(event)).await.map(|_| ())
    }

    /// Queues `write` (at `now_ms`) and waits until it is committed.
    pub async fn write(&self, now_ms: i64, write: Write) -> Result<Written> {
        let (reply, done) = oneshot::channel();
        self.queue
            .send((now_ms, write, reply))
            .await
            .map_err(|_| gone())?;
        done.await.map_err(|_| gone())?
    }
}

async fn run<W: AppendWriter>(writer: Arc<W>, mut queue: mpsc::Receiver<Queued>) {
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let (writes, replies): (Vec<_>, Vec<_>) =
            group.into_iter().map(|(at, w, r)| ((at, w), r)).unzip();
        let writes: Arc<[(i64, Write)]> = writes.into();
        let outcomes = match writer.write_all(writes.clone()).await {
            Ok(outcomes) => outcomes,
            Err(e) if writes.len() == 1 => vec![Err(failed(&e))],
            Err(e) => {
                tracing::warn!(error = %e, writes = writes.len(), "a group write failed; writing each alone");
                let mut alone = Vec::with_capacity(writes.len());
                for w in writes.iter() {
                    alone.push(match writer.write_all(Arc::from([w.clone()])).await {
                        Ok(mut one) => one.pop().unwrap_or_else(|| Err(gone())),
                        Err(e) => Err(failed(&e)),
                    });
                }
                alone
            }
        };
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            let _ = reply.send(outcome);
        }
    }
}

/// A write that failed with the group (logged; the caller is told to retry).
fn failed(e: &StoreError) -> StoreError {
    tracing::error!(error = %e, "a queued write failed");
    StoreError::Unavailable(format!("the write failed: {e}"))
}

/// Implements [`AppendWriter`] for the backend's pool `$pool` (with `begin`
/// and `append_all` of its backend in scope); `$lock` is the row lock a receipt
/// takes (`FOR UPDATE` on PostgreSQL, where nodes write at once).
macro_rules! queue_writer {
    ($pool:ty, $conn:ty, for_update = $lock:literal) => {
        impl $crate::store::appender::AppendWriter for $pool {
            async fn write_all(
                &self,
                writes: std::sync::Arc<[(i64, $crate::store::appender::Write)]>,
            ) -> $crate::store::Result<Vec<$crate::store::Result<$crate::store::appender::Written>>>
            {
                use $crate::store::appender::{Write, Written, settle};
                let mut tx = begin(self).await?;
                let mut made = Vec::with_capacity(writes.len());
                for (at_ms, write) in writes.iter() {
                    made.push(match write {
                        Write::Audit(_) => (Ok(Written::Done), true),
                        Write::Downloaded { id, .. } => {
                            // A second report (a peer's two nodes at once)
                            // changes nothing.
                            let marked = sqlx::query($crate::store::appender::DOWNLOADED_SQL)
                                .bind(*at_ms)
                                .bind(id.to_string())
                                .execute(&mut *tx)
                                .await?
                                .rows_affected();
                            (Ok(Written::Done), marked == 1)
                        }
                        Write::Confirm {
                            id,
                            to,
                            sha256,
                            safeguarding,
                            directory_version,
                            ..
                        } => {
                            let moved = sqlx::query($crate::store::appender::CONFIRM_SQL)
                                .bind(*at_ms)
                                .bind(id.to_string())
                                .bind(to)
                                .bind(sha256)
                                .bind(*safeguarding)
                                .bind(*directory_version)
                                .execute(&mut *tx)
                                .await?
                                .rows_affected()
                                == 1;
                            (Ok(Written::Confirmed(moved)), moved)
                        }
                        Write::Acknowledge { id, receipt, .. } => {
                            match acknowledge_in(&mut tx, *id, receipt, *at_ms).await? {
                                Ok((outcome, recorded)) => {
                                    (Ok(Written::Acknowledged(outcome)), recorded)
                                }
                                Err(e) => (Err(e), false),
                            }
                        }
                    });
                }
                let (out, events) = settle(&writes, made);
                append_all(&mut tx, &events).await?;
                tx.commit().await?;
                Ok(out)
            }
        }

        /// Records a receipt inside the caller's transaction (its event is
        /// the caller's to append, when the flag says it was recorded now):
        /// the outer `Err` is the database's, the inner one a pack that is
        /// not there.
        async fn acknowledge_in(
            conn: &mut $conn,
            id: baton::pack::PackId,
            receipt: &[u8],
            now_ms: i64,
        ) -> $crate::store::Result<$crate::store::Result<($crate::store::Acknowledged, bool)>> {
            use $crate::store::{Acknowledged, StoreError};
            // The busy path in one statement (see `RECORD_RECEIPT_SQL`).
            let recorded = sqlx::query($crate::store::appender::RECORD_RECEIPT_SQL)
                .bind(receipt)
                .bind(now_ms)
                .bind(id.to_string())
                .execute(&mut *conn)
                .await?
                .rows_affected();
            if recorded == 1 {
                return Ok(Ok((Acknowledged::At(now_ms), true)));
            }
            // The same receipt again is a retry; another is a conflict.
            let row: Option<(Option<Vec<u8>>, Option<i64>)> = sqlx::query_as(sqlx::AssertSqlSafe(
                format!("{}{}", $crate::store::appender::RECEIPT_SQL, $lock),
            ))
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await?;
            let outcome = match row {
                None => return Ok(Err(StoreError::NotFound("pack"))),
                Some((Some(stored), at)) if stored == receipt => {
                    Acknowledged::At(at.unwrap_or(now_ms))
                }
                Some((Some(_), _)) => Acknowledged::Conflict,
                // Not reachable: the update above takes a pack without one.
                Some((None, _)) => {
                    return Err($crate::store::rows::corrupt(format!(
                        "pack {id}: its receipt was neither recorded nor found"
                    )));
                }
            };
            Ok(Ok((outcome, false)))
        }
    };
}
