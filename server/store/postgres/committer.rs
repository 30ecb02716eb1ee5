//! The PostgreSQL group writer ([`crate::store::group`]): each node's
//! concurrent upload commits in one transaction, with a handful of
//! multi-row statements, one lock of the audit chain's head and one
//! `NOTIFY` statement for the whole group. Pack rows are inserted in pack-id
//! order, so two nodes committing the same ids lock them in the same order
//! and cannot deadlock. Should the batched write fail, the group is written
//! again one pack per transaction, as a lone commit would be.

use std::collections::{HashMap, HashSet};

use sqlx::{PgConnection, PgPool, Postgres as Db, QueryBuilder};

use super::chain::{append, append_all};
use super::events;
use crate::store::group::{self, CommitRequest, GroupDone, GroupWriter, Head, ROWS_PER_STATEMENT};
use crate::store::rows::corrupt;
use crate::store::rows::forwards;
use crate::store::{Committed, DIRECTORY_VERSION_SQL, Result};

/// The PostgreSQL group writer.
pub(super) struct Writer {
    pub pool: PgPool,
}

impl GroupWriter for Writer {
    async fn write(&self, batch: Vec<CommitRequest>) -> GroupDone {
        let outcomes = self.write_group(&batch).await;
        let head = match outcomes {
            Ok(_) => Some(self.head().await),
            Err(_) => None,
        };
        (batch, outcomes, head)
    }
}

impl Writer {
    /// The audit log's head, read after a group was committed.
    async fn head(&self) -> Result<Head> {
        let row: Option<(i64, Vec<u8>)> = sqlx::query_as(crate::store::rows::HEAD_SQL)
            .fetch_optional(&self.pool)
            .await?;
        row.map(crate::store::rows::head).transpose()
    }

    /// The group in one transaction, or, should that fail, one pack a
    /// transaction.
    async fn write_group(&self, batch: &[CommitRequest]) -> Result<Vec<Result<Committed>>> {
        match batched(&self.pool, batch).await {
            Ok(outcomes) => Ok(outcomes),
            Err(e) => {
                group::fell_back(&e, batch.len());
                let mut outcomes = Vec::with_capacity(batch.len());
                for request in batch {
                    outcomes.push(commit_alone(&self.pool, request).await);
                }
                Ok(outcomes)
            }
        }
    }
}

/// The whole group in one transaction: tail chunks, staged chunks flipped,
/// byte counts checked, pack rows (`ON CONFLICT DO NOTHING`), the losers'
/// chunks dropped, audit entries, and one notification a stored pack.
async fn batched(pool: &PgPool, batch: &[CommitRequest]) -> Result<Vec<Result<Committed>>> {
    let mut tx = pool.begin().await?;
    let conn: &mut PgConnection = &mut tx;
    // Checked against a directory that has moved on: not stored; the tail
    // is kept (staged) for the commit that follows a fresh check.
    let current = directory_version(conn, batch).await?;
    let (moved, live): (Vec<&CommitRequest>, Vec<&CommitRequest>) =
        batch.iter().partition(|r| group::moved(r, current));
    insert_tails(conn, live.iter().copied(), false).await?;
    insert_tails(conn, moved.iter().copied(), true).await?;
    let uploads: Vec<&str> = live.iter().map(|r| r.upload_id.as_str()).collect();
    sqlx::query("UPDATE pack_chunks SET staged = FALSE WHERE staged AND upload_id = ANY($1)")
        .bind(&uploads)
        .execute(&mut *conn)
        .await?;
    // Never make a pack visible with a chunk missing (e.g. removed as stale
    // by another node): the bytes must add up to the header's.
    let sums: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT upload_id, COUNT(*), COALESCE(SUM(octet_length(data)), 0)::BIGINT \
         FROM pack_chunks WHERE upload_id = ANY($1) GROUP BY upload_id",
    )
    .bind(&uploads)
    .fetch_all(&mut *conn)
    .await?;
    let sums: HashMap<String, (i64, i64)> = sums.into_iter().map(|(u, n, b)| (u, (n, b))).collect();

    let mut outcomes: Vec<Option<Result<Committed>>> = Vec::with_capacity(batch.len());
    let mut candidates = Vec::new();
    // A pack whose bytes do not add up is not stored: none of its chunks
    // (staged or tail) may outlive this transaction.
    let mut short: Vec<&str> = Vec::new();
    for (i, request) in batch.iter().enumerate() {
        if group::moved(request, current) {
            outcomes.push(Some(Ok(Committed::DirectoryMoved)));
            continue;
        }
        let length = i64::try_from(request.header.header().ciphertext_len)
            .map_err(|_| corrupt("pack length"))?;
        let (chunks, bytes) = sums.get(&request.upload_id).copied().unwrap_or((0, 0));
        if bytes == length {
            candidates.push((i, chunks, length));
            outcomes.push(None);
        } else {
            short.push(&request.upload_id);
            outcomes.push(Some(Err(corrupt(format!(
                "upload {}: {bytes} bytes stored, header says {length}",
                request.upload_id
            )))));
        }
    }
    if !short.is_empty() {
        sqlx::query("DELETE FROM pack_chunks WHERE upload_id = ANY($1)")
            .bind(&short)
            .execute(&mut *conn)
            .await?;
    }
    // Pack-id order, queue order among equal ids (the first one wins).
    candidates.sort_by_key(|(i, _, _)| (batch[*i].header.header().pack_id.to_string(), *i));
    let mut won: HashSet<String> = HashSet::new();
    for part in candidates.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Db>::new(
            "INSERT INTO packs (pack_id, from_laestab, to_laestab, kind, created_at_ms, \
             ciphertext_length, ciphertext_sha256, sender_key_id, header, upload_id, chunks, \
             status, uploaded_at_ms, supersedes, forwards, relay_to, relayed_from) ",
        );
        q.push_values(part, |mut row, (i, chunks, length)| {
            let r = &batch[*i];
            let h = r.header.header();
            row.push_bind(h.pack_id.to_string())
                .push_bind(r.route.from.as_str())
                .push_bind(r.route.to.as_str())
                .push_bind(h.kind.as_str())
                .push_bind(h.created_at_ms)
                .push_bind(*length)
                .push_bind(h.ciphertext_sha256.to_vec())
                .push_bind(h.sender_key_id.to_string())
                .push_bind(r.header_bytes.as_slice())
                .push_bind(r.upload_id.as_str())
                .push_bind(*chunks)
                .push_bind("pending")
                .push_bind(r.now_ms)
                .push_bind(h.supersedes.map(|id| id.to_string()))
                .push_bind(forwards(h))
                .push_bind(r.route.relay_to())
                .push_bind(r.route.relayed_from());
        });
        q.push(" ON CONFLICT (pack_id) DO NOTHING RETURNING upload_id");
        let rows: Vec<(String,)> = q.build_query_as().fetch_all(&mut *conn).await?;
        won.extend(rows.into_iter().map(|(u,)| u));
    }

    // The others: another upload of the same id was stored (before, on
    // another node, or earlier in this group). Drop their chunks; the same
    // header is a retry, another one a conflict.
    let lost: Vec<usize> = candidates
        .iter()
        .map(|(i, _, _)| *i)
        .filter(|i| !won.contains(&batch[*i].upload_id))
        .collect();
    if !lost.is_empty() {
        let lost_uploads: Vec<&str> = lost.iter().map(|i| batch[*i].upload_id.as_str()).collect();
        sqlx::query("DELETE FROM pack_chunks WHERE upload_id = ANY($1)")
            .bind(&lost_uploads)
            .execute(&mut *conn)
            .await?;
        let ids: Vec<String> = lost
            .iter()
            .map(|i| batch[*i].header.header().pack_id.to_string())
            .collect();
        let stored: Vec<(String, Vec<u8>, i64)> = sqlx::query_as(
            "SELECT pack_id, header, uploaded_at_ms FROM packs WHERE pack_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
        let stored: HashMap<String, (Vec<u8>, i64)> = stored
            .into_iter()
            .map(|(id, h, at)| (id, (h, at)))
            .collect();
        for (i, id) in lost.iter().zip(&ids) {
            outcomes[*i] = Some(Ok(match stored.get(id) {
                Some((header, at)) if *header == batch[*i].header_bytes => {
                    Committed::AlreadyStored(*at)
                }
                _ => Committed::Conflict,
            }));
        }
    }

    // Audit entries and notifications for the stored packs, in queue order.
    let stored: Vec<&CommitRequest> = batch
        .iter()
        .filter(|r| won.contains(&r.upload_id))
        .collect();
    if !stored.is_empty() {
        let events: Vec<_> = stored.iter().map(|r| (r.now_ms, &r.event)).collect();
        append_all(conn, &events).await?;
        let ids: Vec<String> = stored
            .iter()
            .map(|r| r.header.header().pack_id.to_string())
            .collect();
        sqlx::query("SELECT pg_notify($1, id) FROM unnest($2::text[]) AS id")
            .bind(events::CHANNEL)
            .bind(&ids)
            .execute(&mut *conn)
            .await?;
    }
    tx.commit().await?;
    Ok(batch
        .iter()
        .zip(outcomes)
        .map(|(r, outcome)| outcome.unwrap_or(Ok(Committed::Stored(r.now_ms))))
        .collect())
}

/// Inserts the tail chunks of `requests`, visible or staged.
async fn insert_tails<'a>(
    conn: &mut PgConnection,
    requests: impl Iterator<Item = &'a CommitRequest>,
    staged: bool,
) -> Result<()> {
    for part in group::tail_statements(requests) {
        let mut q = QueryBuilder::<Db>::new(
            "INSERT INTO pack_chunks (upload_id, idx, staged, staged_at_ms, data) ",
        );
        q.push_values(part, |mut row, (request, idx, data)| {
            row.push_bind(request.upload_id.as_str())
                .push_bind(idx)
                .push_bind(staged)
                .push_bind(request.now_ms)
                .push_bind(data);
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// The directory version, read inside the group's transaction, if any
/// request of `batch` was checked against one.
async fn directory_version(
    conn: &mut PgConnection,
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

/// Removes the staged chunks of an upload that will not be stored.
async fn drop_staged(pool: &PgPool, upload_id: &str) -> Result<()> {
    sqlx::query("DELETE FROM pack_chunks WHERE upload_id = $1 AND staged")
        .bind(upload_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// One commit in its own transaction (the fallback).
async fn commit_alone(pool: &PgPool, request: &CommitRequest) -> Result<Committed> {
    let CommitRequest {
        upload_id,
        header,
        header_bytes,
        tail,
        now_ms,
        event,
        route,
        ..
    } = request;
    let (upload_id, header_bytes, now_ms) = (upload_id.as_str(), header_bytes.as_slice(), *now_ms);
    let h = header.header();
    let length = i64::try_from(h.ciphertext_len).map_err(|_| corrupt("pack length"))?;
    let mut tx = pool.begin().await?;
    let current = directory_version(&mut tx, std::slice::from_ref(request)).await?;
    if group::moved(request, current) {
        insert_tails(&mut tx, std::iter::once(request), true).await?;
        tx.commit().await?;
        return Ok(Committed::DirectoryMoved);
    }
    for (idx, data) in tail {
        sqlx::query(
            "INSERT INTO pack_chunks (upload_id, idx, staged, staged_at_ms, data) \
             VALUES ($1, $2, FALSE, $3, $4)",
        )
        .bind(upload_id)
        .bind(idx)
        .bind(now_ms)
        .bind(data.as_slice())
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("UPDATE pack_chunks SET staged = FALSE WHERE upload_id = $1 AND staged")
        .bind(upload_id)
        .execute(&mut *tx)
        .await?;
    // Never make a pack visible with a chunk missing (e.g. removed as
    // stale by another node): the bytes must add up to the header's.
    let (chunks, bytes): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COALESCE(SUM(octet_length(data)), 0)::BIGINT \
         FROM pack_chunks WHERE upload_id = $1",
    )
    .bind(upload_id)
    .fetch_one(&mut *tx)
    .await?;
    if bytes != length {
        return Err(corrupt(format!(
            "upload {upload_id}: {bytes} bytes stored, header says {length}"
        )));
    }
    // A concurrent commit of the same pack id through another node waits
    // here for that transaction, then sees its row: no half-visible pack.
    let inserted: Option<(i64,)> = sqlx::query_as(
        "INSERT INTO packs (pack_id, from_laestab, to_laestab, kind, created_at_ms, \
         ciphertext_length, ciphertext_sha256, sender_key_id, header, upload_id, chunks, \
         status, uploaded_at_ms, supersedes, forwards, relay_to, relayed_from) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'pending', $12, $13, $14, $15, $16) \
         ON CONFLICT (pack_id) DO NOTHING RETURNING seq",
    )
    .bind(h.pack_id.to_string())
    .bind(route.from.as_str())
    .bind(route.to.as_str())
    .bind(h.kind.as_str())
    .bind(h.created_at_ms)
    .bind(length)
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
    .fetch_optional(&mut *tx)
    .await?;
    if inserted.is_none() {
        tx.rollback().await?;
        drop_staged(pool, upload_id).await?;
        let existing: Option<(Vec<u8>, i64)> =
            sqlx::query_as("SELECT header, uploaded_at_ms FROM packs WHERE pack_id = $1")
                .bind(h.pack_id.to_string())
                .fetch_optional(pool)
                .await?;
        return Ok(match existing {
            Some((stored, at)) if stored == header_bytes => Committed::AlreadyStored(at),
            _ => Committed::Conflict,
        });
    }
    append(&mut tx, now_ms, event).await?;
    // Delivered to every listening node when (and only if) this commits.
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(events::CHANNEL)
        .bind(h.pack_id.to_string())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Committed::Stored(now_ms))
}
