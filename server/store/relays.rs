//! The relay queues between peer daemons, kept in the packs table so they
//! survive restarts and kill -9 (docs/federation.md): on the sending
//! trust's daemon, packs addressed to a peer's school wait (`relay_to`)
//! until the peer's signed relay receipt is recorded, retried with backoff;
//! on the receiving trust's daemon, packs relayed in (`relayed_from`) whose
//! school has acknowledged them wait until the receipt is passed back.
//! Both are written with the pack row by the commit, so nothing is queued
//! that is not stored, and nothing stored misses its queue.
//!
//! [`relays_store!`] writes the statements once for both backends.

use std::future::Future;

use super::error::Result;
use crate::audit;

/// A pack waiting to be relayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayJob {
    /// The pack id.
    pub pack_id: String,
    /// The peer it goes to.
    pub peer: String,
    /// Tries so far.
    pub attempts: i64,
}

/// A receipt waiting to be passed back to the peer a pack came from (or a
/// recall waiting to be passed on to the peer a pack went to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptJob {
    /// The pack id.
    pub pack_id: String,
    /// The peer it came from.
    pub peer: String,
    /// The school's signed receipt (`baton.v1.Receipt`), or recall
    /// (`baton.v1.Recall`).
    pub receipt: Vec<u8>,
    /// Tries so far.
    pub attempts: i64,
}

/// A relayed pack's state to report back to the peer it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateJob {
    /// The pack id.
    pub pack_id: String,
    /// `downloaded` or `purged`.
    pub status: String,
    /// Why it was purged, if it was.
    pub purge_reason: Option<String>,
    /// Tries so far.
    pub attempts: i64,
}

/// The packs waiting to be relayed to one peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backlog {
    /// The peer.
    pub peer: String,
    /// How many.
    pub packs: i64,
    /// When the oldest was stored.
    pub oldest_ms: Option<i64>,
    /// The latest error a try ended with.
    pub last_error: Option<String>,
}

/// A pack's relay state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayState {
    /// The peer it is relayed to.
    pub relay_to: Option<String>,
    /// When the peer's relay receipt came.
    pub relayed_at_ms: Option<i64>,
    /// Why the last try failed.
    pub error: Option<String>,
    /// Tries so far.
    pub attempts: i64,
    /// The peer it was relayed from.
    pub relayed_from: Option<String>,
}

/// The relay queues.
pub trait Relays: Send + Sync {
    /// Up to `limit` packs to relay to `peer` whose next try is due at
    /// `now_ms`, oldest first (withdrawn and purged ones are not relayed).
    fn relays_due(
        &self,
        peer: &str,
        now_ms: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<RelayJob>>> + Send;

    /// Records the peer's relay receipt for `pack_id` and audits `event`;
    /// `false` if it was already recorded.
    fn relay_done(
        &self,
        pack_id: &str,
        receipt: &[u8],
        now_ms: i64,
        event: audit::Event,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Records a failed try (of a relay, or of passing a receipt back), and
    /// when to try again.
    fn relay_failed(
        &self,
        pack_id: &str,
        error: &str,
        next_at_ms: i64,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Up to `limit` receipts to pass back to `peer` whose next try is due
    /// at `now_ms`, oldest first.
    fn receipts_due(
        &self,
        peer: &str,
        now_ms: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<ReceiptJob>>> + Send;

    /// Records that the peer took the receipt of `pack_id`, and audits
    /// `event`.
    fn receipt_returned(
        &self,
        pack_id: &str,
        now_ms: i64,
        event: audit::Event,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Up to `limit` recalls of packs addressed to `peer`'s schools (relayed,
    /// or perhaps relayed: an answer may have been lost) to pass on, whose
    /// next try is due at `now_ms`, oldest first.
    fn recalls_due(
        &self,
        peer: &str,
        now_ms: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<ReceiptJob>>> + Send;

    /// Records that the peer took the recall of `pack_id`, and audits
    /// `event`.
    fn recall_relayed(
        &self,
        pack_id: &str,
        now_ms: i64,
        event: audit::Event,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Up to `limit` packs `peer` relayed here whose collection or purge
    /// (before a receipt) is not yet reported back to it, oldest first.
    fn states_due(
        &self,
        peer: &str,
        now_ms: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<StateJob>>> + Send;

    /// Records that `status` of `pack_id` was reported back.
    fn state_reported(
        &self,
        pack_id: &str,
        status: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Up to `limit` packs relayed to `peer` whose copy here is not yet
    /// deleted (a daemon stopped between the two steps), oldest first:
    /// (pack id, ciphertext SHA-256).
    fn unreleased(
        &self,
        peer: &str,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<(String, Vec<u8>)>>> + Send;

    /// The packs waiting to be relayed, by peer (peers with none left out).
    fn relay_backlog(&self) -> impl Future<Output = Result<Vec<Backlog>>> + Send;

    /// The ciphertext `peer` relayed here that waits for this daemon's
    /// schools (not acknowledged, not deleted), bytes.
    fn peer_outstanding_bytes(&self, peer: &str) -> impl Future<Output = Result<u64>> + Send;

    /// The relay state of `pack_id`, `None` if no such pack.
    fn relay_state(&self, pack_id: &str)
    -> impl Future<Output = Result<Option<RelayState>>> + Send;
}

/// Implements [`Relays`] for `$store` (with `begin` and `append` of its
/// backend in scope).
macro_rules! relays_store {
    ($store:ty) => {
        impl $crate::store::relays::Relays for $store {
            async fn relays_due(
                &self,
                peer: &str,
                now_ms: i64,
                limit: i64,
            ) -> $crate::store::Result<Vec<$crate::store::relays::RelayJob>> {
                let rows: Vec<(String, String, i64)> = sqlx::query_as(
                    "SELECT pack_id, relay_to, relay_attempts FROM packs \
                     WHERE relay_to = $1 AND relayed_at_ms IS NULL \
                     AND deleted_at_ms IS NULL AND recalled_at_ms IS NULL \
                     AND (relay_next_at_ms IS NULL OR relay_next_at_ms <= $2) \
                     ORDER BY seq LIMIT $3",
                )
                .bind(peer)
                .bind(now_ms)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(
                        |(pack_id, peer, attempts)| $crate::store::relays::RelayJob {
                            pack_id,
                            peer,
                            attempts,
                        },
                    )
                    .collect())
            }

            async fn relay_done(
                &self,
                pack_id: &str,
                receipt: &[u8],
                now_ms: i64,
                event: $crate::audit::Event,
            ) -> $crate::store::Result<bool> {
                let mut tx = begin(&self.pool).await?;
                let done = sqlx::query(
                    "UPDATE packs SET relayed_at_ms = $1, relay_receipt = $2, \
                     relay_error = NULL, relay_attempts = 0, relay_next_at_ms = NULL, \
                     recall_relayed_at_ms = NULL \
                     WHERE pack_id = $3 AND relayed_at_ms IS NULL",
                )
                .bind(now_ms)
                .bind(receipt)
                .bind(pack_id)
                .execute(&mut *tx)
                .await?;
                let recorded = done.rows_affected() > 0;
                if recorded {
                    append(&mut tx, now_ms, &event).await?;
                }
                tx.commit().await?;
                Ok(recorded)
            }

            async fn relay_failed(
                &self,
                pack_id: &str,
                error: &str,
                next_at_ms: i64,
            ) -> $crate::store::Result<()> {
                sqlx::query(
                    "UPDATE packs SET relay_attempts = relay_attempts + 1, relay_error = $1, \
                     relay_next_at_ms = $2 WHERE pack_id = $3",
                )
                .bind(error)
                .bind(next_at_ms)
                .bind(pack_id)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn receipts_due(
                &self,
                peer: &str,
                now_ms: i64,
                limit: i64,
            ) -> $crate::store::Result<Vec<$crate::store::relays::ReceiptJob>> {
                let rows: Vec<(String, String, Vec<u8>, i64)> = sqlx::query_as(
                    "SELECT pack_id, relayed_from, receipt, relay_attempts FROM packs \
                     WHERE relayed_from = $1 AND receipt_returned_at_ms IS NULL \
                     AND receipt IS NOT NULL \
                     AND (relay_next_at_ms IS NULL OR relay_next_at_ms <= $2) \
                     ORDER BY seq LIMIT $3",
                )
                .bind(peer)
                .bind(now_ms)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(
                        |(pack_id, peer, receipt, attempts)| $crate::store::relays::ReceiptJob {
                            pack_id,
                            peer,
                            receipt,
                            attempts,
                        },
                    )
                    .collect())
            }

            async fn receipt_returned(
                &self,
                pack_id: &str,
                now_ms: i64,
                event: $crate::audit::Event,
            ) -> $crate::store::Result<()> {
                let mut tx = begin(&self.pool).await?;
                let done = sqlx::query(
                    "UPDATE packs SET receipt_returned_at_ms = $1 \
                     WHERE pack_id = $2 AND receipt_returned_at_ms IS NULL",
                )
                .bind(now_ms)
                .bind(pack_id)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() > 0 {
                    append(&mut tx, now_ms, &event).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn recalls_due(
                &self,
                peer: &str,
                now_ms: i64,
                limit: i64,
            ) -> $crate::store::Result<Vec<$crate::store::relays::ReceiptJob>> {
                let rows: Vec<(String, String, Vec<u8>, i64)> = sqlx::query_as(
                    "SELECT pack_id, relay_to, recall, relay_attempts FROM packs \
                     WHERE relay_to = $1 AND recall IS NOT NULL \
                     AND recall_relayed_at_ms IS NULL \
                     AND (relay_next_at_ms IS NULL OR relay_next_at_ms <= $2) \
                     ORDER BY seq LIMIT $3",
                )
                .bind(peer)
                .bind(now_ms)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(
                        |(pack_id, peer, receipt, attempts)| {
                            $crate::store::relays::ReceiptJob {
                                pack_id,
                                peer,
                                receipt,
                                attempts,
                            }
                        },
                    )
                    .collect())
            }

            async fn recall_relayed(
                &self,
                pack_id: &str,
                now_ms: i64,
                event: $crate::audit::Event,
            ) -> $crate::store::Result<()> {
                let mut tx = begin(&self.pool).await?;
                let done = sqlx::query(
                    "UPDATE packs SET recall_relayed_at_ms = $1 \
                     WHERE pack_id = $2 AND recall_relayed_at_ms IS NULL",
                )
                .bind(now_ms)
                .bind(pack_id)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() > 0 {
                    append(&mut tx, now_ms, &event).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn states_due(
                &self,
                peer: &str,
                now_ms: i64,
                limit: i64,
            ) -> $crate::store::Result<Vec<$crate::store::relays::StateJob>> {
                let rows: Vec<(String, String, Option<String>, i64)> = sqlx::query_as(
                    "SELECT pack_id, status, purge_reason, relay_attempts FROM packs \
                     WHERE relayed_from = $1 AND relayed_from IS NOT NULL AND receipt IS NULL \
                     AND status IN ('downloaded', 'purged') \
                     AND (state_reported IS NULL OR state_reported <> status) \
                     AND (relay_next_at_ms IS NULL OR relay_next_at_ms <= $2) \
                     ORDER BY seq LIMIT $3",
                )
                .bind(peer)
                .bind(now_ms)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(
                        |(pack_id, status, purge_reason, attempts)| {
                            $crate::store::relays::StateJob {
                                pack_id,
                                status,
                                purge_reason,
                                attempts,
                            }
                        },
                    )
                    .collect())
            }

            async fn state_reported(
                &self,
                pack_id: &str,
                status: &str,
            ) -> $crate::store::Result<()> {
                sqlx::query("UPDATE packs SET state_reported = $1 WHERE pack_id = $2")
                    .bind(status)
                    .bind(pack_id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn unreleased(
                &self,
                peer: &str,
                limit: i64,
            ) -> $crate::store::Result<Vec<(String, Vec<u8>)>> {
                Ok(sqlx::query_as(
                    "SELECT pack_id, ciphertext_sha256 FROM packs \
                     WHERE relay_to = $1 AND relay_to IS NOT NULL \
                     AND relayed_at_ms IS NOT NULL AND deleted_at_ms IS NULL \
                     ORDER BY seq LIMIT $2",
                )
                .bind(peer)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn relay_backlog(
                &self,
            ) -> $crate::store::Result<Vec<$crate::store::relays::Backlog>> {
                let rows: Vec<(String, i64, Option<i64>, Option<String>)> = sqlx::query_as(
                    "SELECT q.relay_to, COUNT(*), MIN(q.uploaded_at_ms), \
                     (SELECT e.relay_error FROM packs e WHERE e.relay_to = q.relay_to \
                     AND e.relay_to IS NOT NULL AND e.relayed_at_ms IS NULL \
                     AND e.deleted_at_ms IS NULL AND e.recalled_at_ms IS NULL \
                     AND e.relay_error IS NOT NULL \
                     ORDER BY e.seq DESC LIMIT 1) FROM packs q \
                     WHERE q.relay_to IS NOT NULL AND q.relayed_at_ms IS NULL \
                     AND q.deleted_at_ms IS NULL AND q.recalled_at_ms IS NULL \
                     GROUP BY q.relay_to ORDER BY q.relay_to",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(
                        |(peer, packs, oldest_ms, last_error)| $crate::store::relays::Backlog {
                            peer,
                            packs,
                            oldest_ms,
                            last_error,
                        },
                    )
                    .collect())
            }

            async fn peer_outstanding_bytes(&self, peer: &str) -> $crate::store::Result<u64> {
                let (bytes,): (i64,) = sqlx::query_as(
                    "SELECT CAST(COALESCE(SUM(ciphertext_length), 0) AS BIGINT) FROM packs \
                     WHERE relayed_from = $1 AND status IN ('pending', 'downloaded') \
                     AND deleted_at_ms IS NULL",
                )
                .bind(peer)
                .fetch_one(&self.pool)
                .await?;
                u64::try_from(bytes).map_err(|_| {
                    $crate::store::StoreError::Corrupt("a negative pack length".into())
                })
            }

            async fn relay_state(
                &self,
                pack_id: &str,
            ) -> $crate::store::Result<Option<$crate::store::relays::RelayState>> {
                let row: Option<(
                    Option<String>,
                    Option<i64>,
                    Option<String>,
                    i64,
                    Option<String>,
                )> = sqlx::query_as(
                    "SELECT relay_to, relayed_at_ms, relay_error, relay_attempts, relayed_from \
                     FROM packs WHERE pack_id = $1",
                )
                .bind(pack_id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(
                    row.map(|(relay_to, relayed_at_ms, error, attempts, relayed_from)| {
                        $crate::store::relays::RelayState {
                            relay_to,
                            relayed_at_ms,
                            error,
                            attempts,
                            relayed_from,
                        }
                    }),
                )
            }
        }
    };
}
