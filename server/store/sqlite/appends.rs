//! The SQLite side of the write queue ([`crate::store::appender`]): a group
//! of queued writes (download marks and confirmations, receipts, listings'
//! audit events) in one write transaction on the writer thread
//! ([`super::writer`]), with the statements PostgreSQL's queue runs.

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};

use super::writer::{WriterThread, WritesDone, append_all};
use crate::store::appender::{
    AppendWriter, CONFIRM_SQL, DOWNLOADED_SQL, Made, RECEIPT_SQL, RECORD_RECEIPT_SQL, Write,
    Written, settle,
};
use crate::store::rows::corrupt;
use crate::store::{Acknowledged, Result, StoreError};

/// The queue's writer: hands each group to the writer thread.
pub(super) struct Appends(pub WriterThread);

impl AppendWriter for Appends {
    async fn write_all(&self, writes: Arc<[(i64, Write)]>) -> WritesDone {
        self.0.writes(writes).await
    }
}

/// Makes every `(at_ms, write)` of `writes`, in order, in one transaction
/// (on the writer thread), appending the events of those that changed
/// something at the end, in order.
pub(super) fn write_all(conn: &mut Connection, writes: &[(i64, Write)]) -> WritesDone {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let made = writes
        .iter()
        .map(|(at_ms, write)| make(&tx, *at_ms, write))
        .collect::<Result<Vec<Made>>>()?;
    let (outcomes, events) = settle(writes, made);
    append_all(&tx, &events)?;
    tx.commit()?;
    Ok(outcomes)
}

/// One write, inside the group's transaction.
fn make(tx: &Connection, at_ms: i64, write: &Write) -> Result<Made> {
    Ok(match write {
        Write::Audit(_) => (Ok(Written::Done), true),
        Write::Downloaded { id, .. } => {
            let marked = tx
                .prepare_cached(DOWNLOADED_SQL)?
                .execute(params![at_ms, id.to_string()])?;
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
            let moved = tx.prepare_cached(CONFIRM_SQL)?.execute(params![
                at_ms,
                id.to_string(),
                to,
                sha256,
                safeguarding,
                directory_version
            ])? == 1;
            (Ok(Written::Confirmed(moved)), moved)
        }
        Write::Acknowledge { id, receipt, .. } => {
            match acknowledge_in(tx, &id.to_string(), receipt, at_ms)? {
                Ok((outcome, recorded)) => (Ok(Written::Acknowledged(outcome)), recorded),
                Err(e) => (Err(e), false),
            }
        }
    })
}

/// Records a receipt inside the caller's transaction (its event is the
/// caller's to append, when the flag says it was recorded now): the outer
/// `Err` is the database's, the inner one a pack that is not there.
fn acknowledge_in(
    conn: &Connection,
    id: &str,
    receipt: &[u8],
    now_ms: i64,
) -> Result<Result<(Acknowledged, bool)>> {
    let recorded = conn
        .prepare_cached(RECORD_RECEIPT_SQL)?
        .execute(params![receipt, now_ms, id])?;
    if recorded == 1 {
        return Ok(Ok((Acknowledged::At(now_ms), true)));
    }
    // The same receipt again is a retry; another is a conflict.
    let row: Option<(Option<Vec<u8>>, Option<i64>)> = conn
        .prepare_cached(RECEIPT_SQL)?
        .query_row(params![id], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let outcome = match row {
        None => return Ok(Err(StoreError::NotFound("pack"))),
        Some((Some(stored), at)) if stored == receipt => Acknowledged::At(at.unwrap_or(now_ms)),
        Some((Some(_), _)) => Acknowledged::Conflict,
        // Not reachable: the update above takes a pack without one.
        Some((None, _)) => {
            return Err(corrupt(format!(
                "pack {id}: its receipt was neither recorded nor found"
            )));
        }
    };
    Ok(Ok((outcome, false)))
}
