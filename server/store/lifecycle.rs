//! The end of a pack's life: withdrawing it (a recall by its sender, or a
//! corrected pack that supersedes it) and retention purging it. Each
//! deletes the pack's ciphertext and keeps its row (header, receipt, times)
//! as evidence, in one transaction that first re-reads the row under lock:
//! a download, an acknowledgement, a second node's purge or a recall racing
//! it sees the pack either before or after, never half-deleted.
//!
//! [`lifecycle_store!`] writes the statements once for both backends, as
//! `shared_store!` does; each backend adds [`Lifecycle::reclaim`], making
//! deleted bytes really gone from its files.

use std::future::Future;

use baton::pack::PackId;

use super::error::Result;
use super::packs::StoredPack;
use crate::audit;

/// How a pack is withdrawn.
#[derive(Debug, Clone, Copy)]
pub enum Withdrawal<'a> {
    /// Its sender's signed recall (`baton.v1.Recall` bytes).
    Recall(&'a [u8]),
    /// A stored pack whose signed header names it as superseded.
    Supersede(PackId),
}

/// What a withdrawal found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withdrawn {
    /// Withdrawn (now, or before, at this time) before the destination
    /// downloaded it: it no longer sees the pack.
    BeforeDownload(i64),
    /// Withdrawn (now, or before, at this time) after the destination
    /// downloaded it: it sees the notice.
    AfterDownload(i64),
    /// Nothing done: a corrected pack already supersedes it.
    Superseded(PackId),
    /// Nothing done: retention already purged it.
    Purged,
    /// Nothing done: the escrow forwarded it already, as this pack.
    Readdressed(PackId),
}

/// What retention keeps, as cut-off times: a pack acknowledged before
/// `acknowledged_before_ms`, or stored before `uploaded_before_ms` and never
/// acknowledged, is purged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoffs {
    /// Acknowledged packs whose receipt was recorded before this go.
    pub acknowledged_before_ms: i64,
    /// Unacknowledged packs stored before this go.
    pub uploaded_before_ms: i64,
}

/// Why retention purged a pack, as stored and shown to its sender.
pub mod reason {
    /// Acknowledged, and kept the configured days after its receipt.
    pub const ACKNOWLEDGED: &str = "acknowledged";
    /// Never downloaded within the configured days.
    pub const NOT_COLLECTED: &str = "not collected";
    /// Downloaded but never acknowledged within the configured days.
    pub const NOT_ACKNOWLEDGED: &str = "not acknowledged";
}

/// Withdrawing and purging packs.
pub trait Lifecycle: Send + Sync {
    /// Withdraws pack `id`: deletes its ciphertext, records the recall or
    /// the superseding pack, and moves a pack not yet downloaded to
    /// `recalled`. A pack already withdrawn keeps its first withdrawal
    /// (answered with its time); `event` is appended only when something
    /// changed. `NotFound` if there is no such pack.
    fn withdraw(
        &self,
        id: PackId,
        withdrawal: Withdrawal<'_>,
        now_ms: i64,
        event: audit::Event,
    ) -> impl Future<Output = Result<Withdrawn>> + Send;

    /// Packs retention would purge at `cutoffs`, oldest first (metadata).
    fn purge_candidates(
        &self,
        cutoffs: Cutoffs,
    ) -> impl Future<Output = Result<Vec<StoredPack>>> + Send;

    /// Purges pack `id` if, read again under lock, retention still says it
    /// goes: deletes its chunks, marks it `purged` with the reason, and
    /// appends the deletion record (`pack.purge`: id, ciphertext SHA-256,
    /// reason) by `actor`. The reason, or `None` when it stays.
    fn purge(
        &self,
        id: PackId,
        cutoffs: Cutoffs,
        now_ms: i64,
        actor: &str,
    ) -> impl Future<Output = Result<Option<&'static str>>> + Send;

    /// Stored packs whose header supersedes a pack not yet marked as
    /// superseded by them (a daemon stopped between the two steps):
    /// (superseding, superseded).
    fn unlinked_supersedes(&self) -> impl Future<Output = Result<Vec<(PackId, PackId)>>> + Send;

    /// Records that pack `id`, held in escrow, was forwarded as pack `by`
    /// and deletes the held ciphertext, appending `event`. `Some(other)`
    /// (nothing done) when another pack forwards it already; `Conflict`
    /// when its sender recalled or superseded it, or retention purged it,
    /// first; `NotFound` if there is no such pack.
    fn readdress(
        &self,
        id: PackId,
        by: PackId,
        now_ms: i64,
        event: audit::Event,
    ) -> impl Future<Output = Result<Option<PackId>>> + Send;

    /// Stored packs whose header forwards a pack not yet marked as
    /// forwarded by them: (forwarding, forwarded).
    fn unlinked_readdresses(&self) -> impl Future<Output = Result<Vec<(PackId, PackId)>>> + Send;

    /// Deletes the ciphertext of pack `id` once the peer it was relayed to
    /// has confirmed holding it (its relay receipt is recorded), appending
    /// `event`; the row stays, for the receipt and states to come. `false`
    /// if it was not relayed or is already deleted.
    fn release_relayed(
        &self,
        id: PackId,
        now_ms: i64,
        event: audit::Event,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Makes deleted ciphertext unrecoverable from the database's own files
    /// where the backend can (SQLite: its write-ahead log checkpointed and
    /// truncated; deleted pages are zeroed by `secure_delete`). Whether it
    /// completed (false: a reader held the log; it is tried again next time).
    fn reclaim(&self) -> impl Future<Output = Result<bool>> + Send;
}

/// The deletion record's subject: what was deleted and why, never who the
/// pupil was.
pub fn deletion_record(id: PackId, sha256: &[u8], why: &str) -> String {
    format!("{id} sha256={} reason={why}", hex::encode(sha256))
}

/// Implements [`Lifecycle`] (but `reclaim`) for `$store`, as
/// `shared_store!` does for the other concerns; `$lock` is the row lock
/// PostgreSQL takes (SQLite's write transaction already excludes others).
macro_rules! lifecycle_store {
    ($store:ty, $conn:ty, for_update = $lock:literal) => {
        use $crate::store::lifecycle::{Cutoffs, Withdrawal, Withdrawn, deletion_record, reason};

        /// The row a withdrawal or purge decides on, locked.
        type LifeRow = (String, Option<String>, Option<i64>, Vec<u8>, String, Option<i64>, Option<i64>, i64, Option<String>);

        async fn life_row(conn: &mut $conn, id: PackId) -> Result<Option<LifeRow>> {
            Ok(sqlx::query_as(concat!(
                "SELECT status, superseded_by, recalled_at_ms, ciphertext_sha256, upload_id, \
                 downloaded_at_ms, acknowledged_at_ms, uploaded_at_ms, readdressed_as \
                 FROM packs WHERE pack_id = $1",
                $lock
            ))
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await?)
        }

        /// Deletes a pack's stored ciphertext rows (staged chunks of a retry
        /// are the committer's to drop; a ciphertext file goes once the
        /// transaction is committed: see `erase_file`).
        async fn delete_chunks(conn: &mut $conn, upload_id: &str) -> Result<()> {
            sqlx::query("DELETE FROM pack_chunks WHERE upload_id = $1 AND NOT staged")
                .bind(upload_id)
                .execute(&mut *conn)
                .await?;
            Ok(())
        }

        impl $crate::store::Lifecycle for $store {
            async fn withdraw(
                &self,
                id: PackId,
                withdrawal: Withdrawal<'_>,
                now_ms: i64,
                event: audit::Event,
            ) -> Result<Withdrawn> {
                let mut tx = begin(&self.pool).await?;
                let Some((status, superseded_by, recalled_at, _, upload_id, downloaded, _, _, forwarded)) =
                    life_row(&mut tx, id).await?
                else {
                    return Err(StoreError::NotFound("pack"));
                };
                // Forwarded by the escrow: the school that holds it now is
                // not the one this pack was addressed to.
                if let Some(by) = forwarded {
                    let by = by.parse::<PackId>().map_err(|_| corrupt(format!("readdressed_as {by:?}")))?;
                    return Ok(Withdrawn::Readdressed(by));
                }
                let superseded_by = superseded_by
                    .map(|s| s.parse::<PackId>().map_err(|_| corrupt(format!("superseded_by {s:?}"))))
                    .transpose()?;
                let answer = |at| {
                    if downloaded.is_some() || status == "acknowledged" {
                        Withdrawn::AfterDownload(at)
                    } else {
                        Withdrawn::BeforeDownload(at)
                    }
                };
                // Already withdrawn the same way: a retry.
                if let (Withdrawal::Supersede(by), Some(done)) = (withdrawal, superseded_by) {
                    return Ok(if by == done {
                        answer(recalled_at.unwrap_or(now_ms))
                    } else {
                        Withdrawn::Superseded(done)
                    });
                }
                if let (Withdrawal::Recall(_), Some(done)) = (withdrawal, superseded_by) {
                    return Ok(Withdrawn::Superseded(done));
                }
                if status == "purged" {
                    return Ok(Withdrawn::Purged);
                }
                if let (Withdrawal::Recall(_), Some(at)) = (withdrawal, recalled_at) {
                    return Ok(answer(at));
                }
                let (recall, by) = match withdrawal {
                    Withdrawal::Recall(bytes) => (Some(bytes), None),
                    Withdrawal::Supersede(by) => (None, Some(by.to_string())),
                };
                // A recalled pack that is then superseded keeps its recall.
                sqlx::query(
                    "UPDATE packs SET recall = COALESCE(recall, $1), superseded_by = $2, \
                     recalled_at_ms = COALESCE(recalled_at_ms, $3), \
                     deleted_at_ms = COALESCE(deleted_at_ms, $3), \
                     status = CASE status WHEN 'pending' THEN 'recalled' ELSE status END \
                     WHERE pack_id = $4",
                )
                .bind(recall)
                .bind(by)
                .bind(now_ms)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
                delete_chunks(&mut tx, &upload_id).await?;
                append(&mut tx, now_ms, &event).await?;
                tx.commit().await?;
                self.erase_file(&upload_id).await;
                Ok(answer(recalled_at.unwrap_or(now_ms)))
            }

            async fn purge_candidates(&self, cutoffs: Cutoffs) -> Result<Vec<StoredPack>> {
                let rows: Vec<PackRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    pack_columns!(),
                    " FROM packs WHERE (status = 'acknowledged' AND acknowledged_at_ms < $1) \
                     OR (status IN ('pending', 'downloaded') AND uploaded_at_ms < $2 \
                     AND relayed_at_ms IS NULL) ORDER BY seq"
                ))
                .bind(cutoffs.acknowledged_before_ms)
                .bind(cutoffs.uploaded_before_ms)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(pack_from_row).collect()
            }

            async fn purge(
                &self,
                id: PackId,
                cutoffs: Cutoffs,
                now_ms: i64,
                actor: &str,
            ) -> Result<Option<&'static str>> {
                let mut tx = begin(&self.pool).await?;
                let Some((status, _, _, sha, upload_id, downloaded, acked, uploaded, _)) =
                    life_row(&mut tx, id).await?
                else {
                    return Ok(None);
                };
                let why = match status.as_str() {
                    "acknowledged" if acked.is_some_and(|at| at < cutoffs.acknowledged_before_ms) => {
                        reason::ACKNOWLEDGED
                    }
                    "pending" | "downloaded" if uploaded < cutoffs.uploaded_before_ms => {
                        if downloaded.is_some() {
                            reason::NOT_ACKNOWLEDGED
                        } else {
                            reason::NOT_COLLECTED
                        }
                    }
                    // Acknowledged, recalled or purged since it was listed.
                    _ => return Ok(None),
                };
                sqlx::query(
                    "UPDATE packs SET status = 'purged', purged_at_ms = $1, purge_reason = $2, \
                     deleted_at_ms = COALESCE(deleted_at_ms, $1) WHERE pack_id = $3",
                )
                .bind(now_ms)
                .bind(why)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
                delete_chunks(&mut tx, &upload_id).await?;
                let event = audit::Event {
                    actor: actor.to_string(),
                    action: "pack.purge",
                    subject: deletion_record(id, &sha, why),
                };
                append(&mut tx, now_ms, &event).await?;
                tx.commit().await?;
                self.erase_file(&upload_id).await;
                Ok(Some(why))
            }

            async fn release_relayed(
                &self,
                id: PackId,
                now_ms: i64,
                event: audit::Event,
            ) -> Result<bool> {
                let mut tx = begin(&self.pool).await?;
                let row: Option<(String,)> = sqlx::query_as(concat!(
                    "SELECT upload_id FROM packs WHERE pack_id = $1 \
                     AND relayed_at_ms IS NOT NULL AND deleted_at_ms IS NULL",
                    $lock
                ))
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
                let Some((upload_id,)) = row else {
                    return Ok(false);
                };
                sqlx::query("UPDATE packs SET deleted_at_ms = $1 WHERE pack_id = $2")
                    .bind(now_ms)
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?;
                delete_chunks(&mut tx, &upload_id).await?;
                append(&mut tx, now_ms, &event).await?;
                tx.commit().await?;
                self.erase_file(&upload_id).await;
                Ok(true)
            }

            async fn unlinked_supersedes(&self) -> Result<Vec<(PackId, PackId)>> {
                let rows: Vec<(String, String)> = sqlx::query_as(
                    "SELECT n.pack_id, n.supersedes FROM packs n JOIN packs o \
                     ON o.pack_id = n.supersedes WHERE n.supersedes IS NOT NULL \
                     AND o.superseded_by IS NULL AND o.from_laestab = n.from_laestab \
                     ORDER BY n.seq",
                )
                .fetch_all(&self.pool)
                .await?;
                pairs(rows)
            }

            async fn readdress(
                &self,
                id: PackId,
                by: PackId,
                now_ms: i64,
                event: audit::Event,
            ) -> Result<Option<PackId>> {
                let mut tx = begin(&self.pool).await?;
                type Row = (Option<String>, String, String, Option<i64>, String, Option<String>);
                let row: Option<Row> = sqlx::query_as(concat!(
                    "SELECT readdressed_as, upload_id, status, recalled_at_ms, to_laestab, \
                     relayed_from FROM packs WHERE pack_id = $1",
                    $lock
                ))
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
                let Some((done, upload_id, status, recalled, to, relayed_from)) = row else {
                    return Err(StoreError::NotFound("pack"));
                };
                // Only a pack this trust's escrow holds is re-addressed (a
                // peer's forwarding names a pack of the other trust).
                let held = to == Laestab::ESCROW.as_str() || to == Laestab::ESCROW_ABROAD.as_str();
                if !held || relayed_from.is_some() {
                    return Err(StoreError::Conflict("pack not held in escrow"));
                }
                // Withdrawn by its sender (or purged) since the forwarding
                // was admitted: the sender's word stands.
                if done.is_none() && (recalled.is_some() || status == "purged") {
                    return Err(StoreError::Conflict("pack withdrawn"));
                }
                if let Some(done) = done {
                    let done = done
                        .parse::<PackId>()
                        .map_err(|_| corrupt(format!("readdressed_as {done:?}")))?;
                    return Ok((done != by).then_some(done));
                }
                sqlx::query(
                    "UPDATE packs SET readdressed_as = $1, deleted_at_ms = COALESCE(deleted_at_ms, $2), \
                     status = 'readdressed' WHERE pack_id = $3",
                )
                .bind(by.to_string())
                .bind(now_ms)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
                delete_chunks(&mut tx, &upload_id).await?;
                append(&mut tx, now_ms, &event).await?;
                tx.commit().await?;
                self.erase_file(&upload_id).await;
                Ok(None)
            }

            async fn unlinked_readdresses(&self) -> Result<Vec<(PackId, PackId)>> {
                let rows: Vec<(String, String)> = sqlx::query_as(
                    "SELECT n.pack_id, n.forwards FROM packs n JOIN packs o \
                     ON o.pack_id = n.forwards WHERE n.forwards IS NOT NULL \
                     AND o.readdressed_as IS NULL AND o.recalled_at_ms IS NULL \
                     AND o.status != 'purged' AND o.to_laestab IN ('XXXXXXX', 'MMMMMMM') \
                     AND n.relayed_from IS NULL AND o.relayed_from IS NULL ORDER BY n.seq",
                )
                .fetch_all(&self.pool)
                .await?;
                pairs(rows)
            }

            async fn reclaim(&self) -> Result<bool> {
                self.reclaim_space().await
            }
        }

        /// Pairs of stored pack ids.
        fn pairs(rows: Vec<(String, String)>) -> Result<Vec<(PackId, PackId)>> {
                rows.into_iter()
                    .map(|(new, old)| {
                        let parse = |t: &str| t.parse::<PackId>().map_err(|_| corrupt(format!("pack id {t:?}")));
                        Ok((parse(&new)?, parse(&old)?))
                    })
                    .collect()
        }
    };
}
