//! The SQLite group writer ([`crate::store::group`]): a group of upload
//! commits in one `BEGIN IMMEDIATE … COMMIT` on the writer thread
//! ([`super::writer`]), answered only once that transaction is synced
//! (`synchronous=FULL`), so every acknowledged pack is on stable storage
//! and one fsync serves many uploads.
//!
//! A group is written with a handful of multi-row statements whatever its
//! size (one look-up of the pack ids, one insert each for chunks, pack rows
//! and audit entries). Should that batched write fail, it is rolled back
//! and the group is written again one pack at a time, each in a savepoint,
//! so a pack that cannot be stored fails alone.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, ToSql, TransactionBehavior};
use tokio::sync::broadcast;

use super::checkpoint::Checkpointer;
use super::writer::{Outcomes, WriterThread, append_all, read_head, values, with_connection};
use crate::store::group::{self, CommitRequest, GroupDone, GroupWriter, Head, statement_parts};
use crate::store::rows::{corrupt, forwards};
use crate::store::{Arrival, Committed, DIRECTORY_VERSION_SQL, Result, StoreError};

/// The SQLite group writer: one write transaction a group, on the writer
/// thread. Only that thread writes during ingest, so its connection's page
/// cache stays valid from one group to the next.
pub(super) struct Writer {
    /// The thread that writes.
    pub thread: WriterThread,
    /// Arrivals, in process: one node owns a SQLite file.
    pub arrivals: broadcast::Sender<Arrival>,
}

impl GroupWriter for Writer {
    async fn write(&self, batch: Vec<CommitRequest>) -> GroupDone {
        self.thread.group(batch).await
    }

    fn stored(&self, request: &CommitRequest, at_ms: i64) {
        // No subscriber is fine.
        let _ = self.arrivals.send(Arrival {
            to: request.route.to,
            header: request.header_bytes.clone(),
            uploaded_at_ms: at_ms,
        });
    }
}

/// Writes one group (on the writer thread) on the connection in `slot`,
/// and reads the audit log's head after it.
pub(super) fn write_group(
    slot: &mut Option<Connection>,
    path: &Path,
    checkpoints: &Checkpointer,
    batch: &[CommitRequest],
) -> (Outcomes, Option<Result<Head>>) {
    let written = with_connection(slot, path, checkpoints, |conn| {
        let outcomes = group_transaction(conn, batch, group::fell_back)?;
        Ok((outcomes, read_head(conn)))
    });
    match written {
        Ok((outcomes, head)) => {
            checkpoints.committed(
                batch
                    .iter()
                    .map(|r| {
                        let tail: usize = r.tail.iter().map(|(_, data)| data.len()).sum();
                        (r.header_bytes.len() + tail) as u64
                    })
                    .sum(),
            );
            (Ok(outcomes), Some(head))
        }
        Err(e) => (Err(e), None),
    }
}

/// Runs a group's commits in one write transaction; returns each request's
/// outcome once the transaction is committed. `fell_back` is told when the
/// batched write failed and the group is written one pack at a time.
fn group_transaction(
    conn: &mut Connection,
    batch: &[CommitRequest],
    fell_back: fn(&StoreError, usize),
) -> Outcomes {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch("SAVEPOINT group_batch")?;
    let outcomes = match batched(&tx, batch) {
        Ok(outcomes) => {
            tx.execute_batch("RELEASE group_batch")?;
            outcomes
        }
        Err(e) => {
            fell_back(&e, batch.len());
            tx.execute_batch("ROLLBACK TO group_batch; RELEASE group_batch")?;
            one_by_one(&tx, batch)?
        }
    };
    tx.commit()?;
    Ok(outcomes)
}

/// The fallback: each commit written alone in its own savepoint, so one
/// that fails is rolled back alone.
fn one_by_one(conn: &Connection, batch: &[CommitRequest]) -> Outcomes {
    let mut outcomes = Vec::with_capacity(batch.len());
    for request in batch {
        conn.execute_batch("SAVEPOINT group_commit")?;
        let outcome = batched(conn, std::slice::from_ref(request))
            .and_then(|mut one| one.pop().unwrap_or_else(|| Err(corrupt("no outcome"))));
        if outcome.is_ok() {
            conn.execute_batch("RELEASE group_commit")?;
        } else {
            conn.execute_batch("ROLLBACK TO group_commit; RELEASE group_commit")?;
        }
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// What a request holds to write, once the group's pack ids are known.
struct ToStore<'a> {
    request: &'a CommitRequest,
    /// Chunks staged before the commit.
    staged: i64,
}

/// The whole group in a few multi-row statements. Pack ids already stored
/// (or stored earlier in the same group) are answered `AlreadyStored` or
/// `Conflict` and their staged chunks dropped; every other pack gets its
/// tail chunks, its staged chunks flipped visible, its row and its audit
/// entry, in queue order. A request checked against a directory that has
/// moved on is answered `DirectoryMoved`, its tail kept staged for the
/// commit that follows a fresh check.
fn batched(conn: &Connection, batch: &[CommitRequest]) -> Outcomes {
    let current = directory_version(conn, batch)?;
    let ids: Vec<String> = batch
        .iter()
        .map(|r| r.header.header().pack_id.to_string())
        .collect();
    let mut known: HashMap<String, (Vec<u8>, i64)> = HashMap::new();
    for part in statement_parts(&ids) {
        let sql = in_list(
            "SELECT pack_id, header, uploaded_at_ms FROM packs WHERE pack_id IN (",
            part.len(),
            ")",
        );
        let mut statement = conn.prepare_cached(&sql)?;
        let rows = statement.query_map(rusqlite::params_from_iter(part), |row| {
            Ok((row.get(0)?, (row.get(1)?, row.get(2)?)))
        })?;
        for row in rows {
            let (id, stored) = row?;
            known.insert(id, stored);
        }
    }

    let mut outcomes = Vec::with_capacity(batch.len());
    let mut dropped: Vec<&str> = Vec::new();
    let mut stored: Vec<&CommitRequest> = Vec::new();
    let mut moved: Vec<&CommitRequest> = Vec::new();
    for (request, id) in batch.iter().zip(ids) {
        if group::moved(request, current) {
            outcomes.push(Ok(Committed::DirectoryMoved));
            moved.push(request);
            continue;
        }
        if let Some((stored, at)) = known.get(&id) {
            outcomes.push(Ok(if *stored == request.header_bytes {
                Committed::AlreadyStored(*at)
            } else {
                Committed::Conflict
            }));
            dropped.push(&request.upload_id);
            continue;
        }
        known.insert(id, (request.header_bytes.clone(), request.now_ms));
        outcomes.push(Ok(Committed::Stored(request.now_ms)));
        stored.push(request);
    }

    for_uploads(
        conn,
        "DELETE FROM pack_chunks WHERE staged = 1 AND upload_id IN (",
        &dropped,
    )?;
    let uploads: Vec<&str> = stored.iter().map(|r| r.upload_id.as_str()).collect();
    let counts = staged_counts(conn, &uploads)?;
    let to_store: Vec<ToStore<'_>> = stored
        .into_iter()
        .map(|request| ToStore {
            request,
            staged: counts.get(&request.upload_id).copied().unwrap_or(0),
        })
        .collect();
    insert_tails(conn, to_store.iter().map(|t| t.request), 0)?;
    insert_tails(conn, moved.into_iter(), 1)?;
    let flipped: Vec<&str> = to_store
        .iter()
        .filter(|t| t.staged > 0)
        .map(|t| t.request.upload_id.as_str())
        .collect();
    for_uploads(
        conn,
        "UPDATE pack_chunks SET staged = 0 WHERE staged = 1 AND upload_id IN (",
        &flipped,
    )?;
    insert_packs(conn, &to_store)?;
    let events: Vec<_> = to_store
        .iter()
        .map(|t| (t.request.now_ms, &t.request.event))
        .collect();
    append_all(conn, &events)?;
    Ok(outcomes)
}

/// The directory version, read inside the group's transaction, if any
/// request of `batch` was checked against one.
fn directory_version(conn: &Connection, batch: &[CommitRequest]) -> Result<Option<i64>> {
    if !group::wants_version(batch) {
        return Ok(None);
    }
    let version = conn
        .prepare_cached(DIRECTORY_VERSION_SQL)?
        .query_row([], |row| row.get(0))?;
    Ok(Some(version))
}

/// `head`, then `n` placeholders separated by commas, then `tail`.
fn in_list(head: &str, n: usize, tail: &str) -> String {
    format!("{head}{}{tail}", vec!["?"; n].join(", "))
}

/// Runs `head` + a list of `upload_ids` + `)`, a statement for each of
/// the [`statement_parts`] of the ids.
fn for_uploads(conn: &Connection, head: &str, upload_ids: &[&str]) -> Result<()> {
    for part in statement_parts(upload_ids) {
        conn.prepare_cached(&in_list(head, part.len(), ")"))?
            .execute(rusqlite::params_from_iter(part))?;
    }
    Ok(())
}

/// How many chunks each upload has staged.
fn staged_counts(conn: &Connection, upload_ids: &[&str]) -> Result<HashMap<String, i64>> {
    let mut counts = HashMap::new();
    for part in statement_parts(upload_ids) {
        let sql = in_list(
            "SELECT upload_id, COUNT(*) FROM pack_chunks WHERE staged = 1 AND upload_id IN (",
            part.len(),
            ") GROUP BY upload_id",
        );
        let mut statement = conn.prepare_cached(&sql)?;
        let rows = statement.query_map(rusqlite::params_from_iter(part), |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?;
        for row in rows {
            let (upload, n): (String, i64) = row?;
            counts.insert(upload, n);
        }
    }
    Ok(counts)
}

/// Inserts the tail chunks of `requests`, visible (`staged` 0) or staged (1).
fn insert_tails<'a>(
    conn: &Connection,
    requests: impl Iterator<Item = &'a CommitRequest>,
    staged: i64,
) -> Result<()> {
    let statements = group::tail_statements(requests);
    for part in statements.iter().flat_map(|s| statement_parts(s)) {
        let sql = values(
            "INSERT INTO pack_chunks (upload_id, idx, staged, data)",
            "(?, ?, ?, ?)",
            part.len(),
        );
        let mut binds: Vec<&dyn ToSql> = Vec::with_capacity(part.len() * 4);
        for (request, idx, data) in part {
            binds.extend([&request.upload_id as &dyn ToSql, idx, &staged, data]);
        }
        conn.prepare_cached(&sql)?.execute(binds.as_slice())?;
    }
    Ok(())
}

/// A pack row's values that are not the request's own fields.
struct PackRow<'a> {
    request: &'a CommitRequest,
    pack_id: String,
    from: &'a str,
    to: &'a str,
    kind: &'static str,
    created_at_ms: i64,
    length: i64,
    sha256: &'a [u8],
    sender_key_id: String,
    chunks: i64,
    supersedes: Option<String>,
    forwards: Option<String>,
    relay_to: Option<&'a str>,
    relayed_from: Option<&'a str>,
}

/// Inserts the pack rows, in queue order.
fn insert_packs(conn: &Connection, to_store: &[ToStore<'_>]) -> Result<()> {
    for part in statement_parts(to_store) {
        let mut rows = Vec::with_capacity(part.len());
        for t in part {
            let request = t.request;
            let h = request.header.header();
            rows.push(PackRow {
                request,
                pack_id: h.pack_id.to_string(),
                from: request.route.from.as_str(),
                to: request.route.to.as_str(),
                kind: h.kind.as_str(),
                created_at_ms: h.created_at_ms,
                length: i64::try_from(h.ciphertext_len).map_err(|_| corrupt("pack length"))?,
                sha256: &h.ciphertext_sha256,
                sender_key_id: h.sender_key_id.to_string(),
                chunks: t.staged
                    + request.in_file
                    + i64::try_from(request.tail.len()).unwrap_or(i64::MAX),
                supersedes: h.supersedes.map(|id| id.to_string()),
                forwards: forwards(h),
                relay_to: request.route.relay_to(),
                relayed_from: request.route.relayed_from(),
            });
        }
        let sql = values(
            "INSERT INTO packs (pack_id, from_laestab, to_laestab, kind, created_at_ms, \
             ciphertext_length, ciphertext_sha256, sender_key_id, header, upload_id, chunks, \
             status, uploaded_at_ms, supersedes, forwards, relay_to, relayed_from)",
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)",
            rows.len(),
        );
        let mut binds: Vec<&dyn ToSql> = Vec::with_capacity(rows.len() * 16);
        for row in &rows {
            binds.extend([
                &row.pack_id as &dyn ToSql,
                &row.from,
                &row.to,
                &row.kind,
                &row.created_at_ms,
                &row.length,
                &row.sha256,
                &row.sender_key_id,
                &row.request.header_bytes,
                &row.request.upload_id,
                &row.chunks,
                &row.request.now_ms,
                &row.supersedes,
                &row.forwards,
                &row.relay_to,
                &row.relayed_from,
            ]);
        }
        conn.prepare_cached(&sql)?.execute(binds.as_slice())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use baton::pack::PackId;

    use super::*;
    use crate::audit;
    use crate::store::conformance;

    /// Groups this test's writes fell back (not the store's global count,
    /// which other tests check stays 0).
    static FELL_BACK: AtomicUsize = AtomicUsize::new(0);

    fn count(_: &StoreError, _: usize) {
        FELL_BACK.fetch_add(1, Ordering::Relaxed);
    }

    #[tokio::test]
    async fn a_pack_the_batched_write_cannot_store_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let _store = super::super::Sqlite::open(&path).await.unwrap();
        let mut conn = super::super::writer::connect(&path).unwrap();
        let (a, b) = (conformance::school_id(1), conformance::school_id(2));
        let request = |upload: &str, tail: Vec<(i64, Vec<u8>)>| {
            let id = PackId::new();
            let event = audit::Event::by_school(&a, "pack.upload", id);
            let header = conformance::header(id, a, b, 1, 4);
            CommitRequest::unanswered(upload, header, tail, 7, event)
        };
        // The bad one's tail repeats a chunk it staged: its insert breaks
        // the chunks' primary key, and with it the group's multi-row insert.
        conn.execute(
            "INSERT INTO pack_chunks (upload_id, idx, staged, data) VALUES ('bad', 0, 1, x'00')",
            [],
        )
        .unwrap();
        let batch = [
            request("good1", vec![(0, b"good".to_vec())]),
            request("bad", vec![(0, b"dup!".to_vec())]),
            request("good2", vec![(0, b"good".to_vec())]),
        ];
        let outcomes = group_transaction(&mut conn, &batch, count).unwrap();
        assert_eq!(FELL_BACK.load(Ordering::Relaxed), 1);
        assert!(matches!(outcomes[0], Ok(Committed::Stored(7))));
        assert!(outcomes[1].is_err(), "{:?}", outcomes[1]);
        assert!(matches!(outcomes[2], Ok(Committed::Stored(7))));
        let stored: Vec<String> = conn
            .prepare("SELECT upload_id FROM packs ORDER BY seq")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(stored, ["good1", "good2"]);
        // The bad pack's staged chunk is as it was; the audit chain holds
        // the two stored packs and verifies.
        let chunks: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM pack_chunks WHERE upload_id = 'bad' AND staged = 1",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(chunks, 1);
        let (entries, _) = read_head(&conn).unwrap().unwrap();
        assert_eq!(entries, 2);
    }
}
