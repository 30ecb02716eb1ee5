//! The SQLite group writer ([`crate::store::group`]): a group of upload
//! commits in one `BEGIN IMMEDIATE … COMMIT`, answered only once that
//! transaction is synced (`synchronous=FULL`), so every acknowledged pack is
//! on stable storage and one fsync serves many uploads.
//!
//! A group is written with a handful of multi-row statements whatever its
//! size (one look-up of the pack ids, one insert each for chunks, pack rows
//! and audit entries), because each statement through sqlx costs a hand-off
//! to the connection's worker thread. Should that batched write fail, it is
//! rolled back and the group is written again one pack at a time, each in a
//! savepoint, so a pack that cannot be stored fails alone.

use std::collections::HashMap;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection as _, QueryBuilder, Sqlite as Db, SqliteConnection};
use tokio::sync::{Mutex, broadcast};

use super::chain::{append, append_all};
use super::checkpoint::Checkpointer;
use crate::store::group::{self, CommitRequest, GroupWriter, ROWS_PER_STATEMENT};
use crate::store::rows::corrupt;
use crate::store::rows::forwards;
use crate::store::{Arrival, Committed, DIRECTORY_VERSION_SQL, Result};

/// The SQLite group writer: one write transaction a group, on a connection
/// of its own. Only the writer writes during ingest, so that connection's
/// page cache stays valid from one group to the next (a pooled connection
/// would often be one another had not used since the last write, and would
/// read the pages it needs again), and one worker thread does the writing.
pub(super) struct Writer {
    options: SqliteConnectOptions,
    /// Checkpoints the WAL off the commit path (see [`super::checkpoint`]).
    checkpoints: Checkpointer,
    /// `None` until first used, and again after a failed group (a broken
    /// connection is opened again rather than reused).
    conn: Mutex<Option<SqliteConnection>>,
    /// Arrivals, in process: one node owns a SQLite file.
    arrivals: broadcast::Sender<Arrival>,
}

impl Writer {
    /// A writer that connects with `options` (the store's, which turn
    /// SQLite's own checkpoints off for every connection) when it first
    /// writes, and leaves checkpoints to a task of its own.
    pub fn new(options: SqliteConnectOptions, arrivals: broadcast::Sender<Arrival>) -> Self {
        Self {
            checkpoints: Checkpointer::start(options.clone()),
            options,
            conn: Mutex::new(None),
            arrivals,
        }
    }
}

impl GroupWriter for Writer {
    async fn write(&self, batch: &[CommitRequest]) -> Result<Vec<Result<Committed>>> {
        let mut slot = self.conn.lock().await;
        let conn = match &mut *slot {
            Some(conn) => conn,
            empty => empty.insert(SqliteConnection::connect_with(&self.options).await?),
        };
        if let Err(e) = self.checkpoints.if_needed(conn).await {
            tracing::warn!(error = %e, "the group writer's WAL checkpoint failed");
        }
        let written = group_transaction(conn, batch).await;
        match &written {
            Ok(_) => self.checkpoints.committed(
                batch
                    .iter()
                    .map(|r| {
                        let tail: usize = r.tail.iter().map(|(_, data)| data.len()).sum();
                        (r.header_bytes.len() + tail) as u64
                    })
                    .sum(),
            ),
            Err(_) => *slot = None,
        }
        written
    }

    async fn head(&self) -> Result<Option<(u64, [u8; 32])>> {
        let mut slot = self.conn.lock().await;
        let conn = match &mut *slot {
            Some(conn) => conn,
            empty => empty.insert(SqliteConnection::connect_with(&self.options).await?),
        };
        let row: Option<(i64, Vec<u8>)> = sqlx::query_as(crate::store::rows::HEAD_SQL)
            .fetch_optional(&mut *conn)
            .await?;
        row.map(crate::store::rows::head).transpose()
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

/// Runs a group's commits in one write transaction; returns each request's
/// outcome once the transaction is committed.
async fn group_transaction(
    conn: &mut SqliteConnection,
    batch: &[CommitRequest],
) -> Result<Vec<Result<Committed>>> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query("SAVEPOINT group_batch")
        .execute(&mut *tx)
        .await?;
    let outcomes = match batched(&mut tx, batch).await {
        Ok(outcomes) => {
            sqlx::query("RELEASE group_batch").execute(&mut *tx).await?;
            outcomes
        }
        Err(e) => {
            group::fell_back(&e, batch.len());
            sqlx::query("ROLLBACK TO group_batch")
                .execute(&mut *tx)
                .await?;
            sqlx::query("RELEASE group_batch").execute(&mut *tx).await?;
            one_by_one(&mut tx, batch).await?
        }
    };
    tx.commit().await?;
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
/// entry, in queue order.
async fn batched(
    conn: &mut SqliteConnection,
    batch: &[CommitRequest],
) -> Result<Vec<Result<Committed>>> {
    let current = directory_version(conn, batch).await?;
    let ids: Vec<String> = batch
        .iter()
        .map(|r| r.header.header().pack_id.to_string())
        .collect();
    let mut known: HashMap<String, (Vec<u8>, i64)> = HashMap::new();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    for part in id_refs.chunks(ROWS_PER_STATEMENT) {
        let mut q = in_list(
            "SELECT pack_id, header, uploaded_at_ms FROM packs WHERE pack_id IN (",
            part,
            ")",
        );
        let rows: Vec<(String, Vec<u8>, i64)> = q.build_query_as().fetch_all(&mut *conn).await?;
        known.extend(rows.into_iter().map(|(id, header, at)| (id, (header, at))));
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

    delete_staged(conn, &dropped).await?;
    let uploads: Vec<&str> = stored.iter().map(|r| r.upload_id.as_str()).collect();
    let counts = staged_counts(conn, &uploads).await?;
    let to_store: Vec<ToStore<'_>> = stored
        .into_iter()
        .map(|request| ToStore {
            request,
            staged: counts.get(&request.upload_id).copied().unwrap_or(0),
        })
        .collect();
    insert_tails(conn, to_store.iter().map(|t| t.request), 0).await?;
    // Checked against a directory that has moved on: keep the tail (staged)
    // for the commit that follows a fresh check.
    insert_tails(conn, moved.into_iter(), 1).await?;
    let flipped: Vec<&str> = to_store
        .iter()
        .filter(|t| t.staged > 0)
        .map(|t| t.request.upload_id.as_str())
        .collect();
    for part in flipped.chunks(ROWS_PER_STATEMENT) {
        in_list(
            "UPDATE pack_chunks SET staged = 0 WHERE staged = 1 AND upload_id IN (",
            part,
            ")",
        )
        .build()
        .execute(&mut *conn)
        .await?;
    }
    insert_packs(conn, &to_store).await?;
    let events: Vec<_> = to_store
        .iter()
        .map(|t| (t.request.now_ms, &t.request.event))
        .collect();
    append_all(conn, &events).await?;
    Ok(outcomes)
}

/// The directory version, read inside the group's transaction, if any
/// request of `batch` was checked against one.
async fn directory_version(
    conn: &mut SqliteConnection,
    batch: &[CommitRequest],
) -> Result<Option<i64>> {
    if !group::wants_version(batch) {
        return Ok(None);
    }
    let (version,): (i64,) = sqlx::query_as(DIRECTORY_VERSION_SQL)
        .fetch_one(&mut *conn)
        .await?;
    Ok(Some(version))
}

/// Drops the staged chunks of uploads that will not be stored.
async fn delete_staged(conn: &mut SqliteConnection, upload_ids: &[&str]) -> Result<()> {
    for part in upload_ids.chunks(ROWS_PER_STATEMENT) {
        in_list(
            "DELETE FROM pack_chunks WHERE staged = 1 AND upload_id IN (",
            part,
            ")",
        )
        .build()
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// `head`, then `values` bound as a comma-separated list, then `tail`.
fn in_list(head: &str, values: &[&str], tail: &str) -> QueryBuilder<Db> {
    let mut q = QueryBuilder::<Db>::new(head);
    let mut list = q.separated(", ");
    for value in values {
        list.push_bind(*value);
    }
    list.push_unseparated(tail);
    q
}

/// How many chunks each upload has staged.
async fn staged_counts(
    conn: &mut SqliteConnection,
    upload_ids: &[&str],
) -> Result<HashMap<String, i64>> {
    let mut counts = HashMap::new();
    for part in upload_ids.chunks(ROWS_PER_STATEMENT) {
        let mut q = in_list(
            "SELECT upload_id, COUNT(*) FROM pack_chunks WHERE staged = 1 AND upload_id IN (",
            part,
            ") GROUP BY upload_id",
        );
        let rows: Vec<(String, i64)> = q.build_query_as().fetch_all(&mut *conn).await?;
        counts.extend(rows);
    }
    Ok(counts)
}

/// Inserts the tail chunks of `requests`, visible (`staged` 0) or staged (1).
async fn insert_tails<'a>(
    conn: &mut SqliteConnection,
    requests: impl Iterator<Item = &'a CommitRequest>,
    staged: i64,
) -> Result<()> {
    for part in group::tail_statements(requests) {
        let mut q =
            QueryBuilder::<Db>::new("INSERT INTO pack_chunks (upload_id, idx, staged, data) ");
        q.push_values(part, |mut row, (request, idx, data)| {
            row.push_bind(request.upload_id.as_str())
                .push_bind(idx)
                .push_bind(staged)
                .push_bind(data);
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Inserts the pack rows, in queue order.
async fn insert_packs(conn: &mut SqliteConnection, to_store: &[ToStore<'_>]) -> Result<()> {
    for part in to_store.chunks(ROWS_PER_STATEMENT) {
        let mut rows = Vec::with_capacity(part.len());
        for t in part {
            let h = t.request.header.header();
            let len = i64::try_from(h.ciphertext_len).map_err(|_| corrupt("pack length"))?;
            let chunks = t.staged
                + t.request.in_file
                + i64::try_from(t.request.tail.len()).unwrap_or(i64::MAX);
            rows.push((t.request, h, len, chunks));
        }
        let mut q = QueryBuilder::<Db>::new(
            "INSERT INTO packs (pack_id, from_laestab, to_laestab, kind, created_at_ms, \
             ciphertext_length, ciphertext_sha256, sender_key_id, header, upload_id, chunks, \
             status, uploaded_at_ms, supersedes, forwards, relay_to, relayed_from) ",
        );
        q.push_values(rows, |mut row, (request, h, len, chunks)| {
            row.push_bind(h.pack_id.to_string())
                .push_bind(request.route.from.as_str())
                .push_bind(request.route.to.as_str())
                .push_bind(h.kind.as_str())
                .push_bind(h.created_at_ms)
                .push_bind(len)
                .push_bind(h.ciphertext_sha256.to_vec())
                .push_bind(h.sender_key_id.to_string())
                .push_bind(request.header_bytes.as_slice())
                .push_bind(request.upload_id.as_str())
                .push_bind(chunks)
                .push_bind("pending")
                .push_bind(request.now_ms)
                .push_bind(h.supersedes.map(|id| id.to_string()))
                .push_bind(forwards(h))
                .push_bind(request.route.relay_to())
                .push_bind(request.route.relayed_from());
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// The fallback: each commit in its own savepoint, so one that fails is
/// rolled back alone.
async fn one_by_one(
    conn: &mut SqliteConnection,
    batch: &[CommitRequest],
) -> Result<Vec<Result<Committed>>> {
    let current = directory_version(conn, batch).await?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for request in batch {
        sqlx::query("SAVEPOINT group_commit")
            .execute(&mut *conn)
            .await?;
        let outcome = if group::moved(request, current) {
            insert_tails(conn, std::iter::once(request), 1)
                .await
                .map(|()| Committed::DirectoryMoved)
        } else {
            commit_one(conn, request).await
        };
        let end = if outcome.is_ok() {
            "RELEASE group_commit"
        } else {
            "ROLLBACK TO group_commit"
        };
        sqlx::query(end).execute(&mut *conn).await?;
        if outcome.is_err() {
            sqlx::query("RELEASE group_commit")
                .execute(&mut *conn)
                .await?;
        }
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// One upload's commit inside the group's transaction: on a pack id
/// already stored, drops the staged chunks; otherwise stores the tail,
/// flips the staged chunks visible, inserts the pack row and appends the
/// audit entry.
async fn commit_one(conn: &mut SqliteConnection, request: &CommitRequest) -> Result<Committed> {
    let CommitRequest {
        upload_id,
        header,
        header_bytes,
        tail,
        in_file,
        now_ms,
        event,
        route,
        ..
    } = request;
    let (upload_id, header_bytes, now_ms) = (upload_id.as_str(), header_bytes.as_slice(), *now_ms);
    let h = header.header();
    let existing: Option<(Vec<u8>, i64)> =
        sqlx::query_as("SELECT header, uploaded_at_ms FROM packs WHERE pack_id = ?")
            .bind(h.pack_id.to_string())
            .fetch_optional(&mut *conn)
            .await?;
    if let Some((stored, at)) = existing {
        sqlx::query("DELETE FROM pack_chunks WHERE upload_id = ? AND staged = 1")
            .bind(upload_id)
            .execute(&mut *conn)
            .await?;
        return Ok(if stored == header_bytes {
            Committed::AlreadyStored(at)
        } else {
            Committed::Conflict
        });
    }
    for (idx, data) in tail {
        sqlx::query("INSERT INTO pack_chunks (upload_id, idx, staged, data) VALUES (?, ?, 0, ?)")
            .bind(upload_id)
            .bind(idx)
            .bind(data.as_slice())
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query("UPDATE pack_chunks SET staged = 0 WHERE upload_id = ? AND staged = 1")
        .bind(upload_id)
        .execute(&mut *conn)
        .await?;
    let (rows,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM pack_chunks WHERE upload_id = ?")
        .bind(upload_id)
        .fetch_one(&mut *conn)
        .await?;
    let chunks = rows + in_file;
    sqlx::query(
        "INSERT INTO packs (pack_id, from_laestab, to_laestab, kind, created_at_ms, \
             ciphertext_length, ciphertext_sha256, sender_key_id, header, upload_id, chunks, \
             status, uploaded_at_ms, supersedes, forwards, relay_to, relayed_from) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)",
    )
    .bind(h.pack_id.to_string())
    .bind(route.from.as_str())
    .bind(route.to.as_str())
    .bind(h.kind.as_str())
    .bind(h.created_at_ms)
    .bind(i64::try_from(h.ciphertext_len).map_err(|_| corrupt("pack length"))?)
    .bind(h.ciphertext_sha256.to_vec())
    .bind(h.sender_key_id.to_string())
    .bind(header_bytes)
    .bind(upload_id)
    .bind(chunks)
    .bind(now_ms)
    .bind(h.supersedes.map(|id| id.to_string()))
    .bind(forwards(h))
    .bind(route.relay_to())
    .bind(route.relayed_from())
    .execute(&mut *conn)
    .await?;
    append(conn, now_ms, event).await?;
    Ok(Committed::Stored(now_ms))
}
