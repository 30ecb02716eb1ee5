-- Packs between trusts (docs/federation.md). On the sending trust's
-- daemon, `relay_to` names the peer a pack is relayed to; it is queued
-- until `relayed_at_ms` (the peer's signed relay receipt in
-- `relay_receipt`), retried at `relay_next_at_ms`. On the receiving
-- trust's daemon, `relayed_from` names the peer it came from, and the
-- school's receipt is passed back to it until `receipt_returned_at_ms`.
-- A recall of a relayed pack is passed on until `recall_relayed_at_ms`.
ALTER TABLE packs ADD COLUMN relay_to TEXT;
ALTER TABLE packs ADD COLUMN relayed_at_ms BIGINT;
ALTER TABLE packs ADD COLUMN relay_receipt BYTEA;
ALTER TABLE packs ADD COLUMN relay_attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE packs ADD COLUMN relay_next_at_ms BIGINT;
ALTER TABLE packs ADD COLUMN relay_error TEXT;
ALTER TABLE packs ADD COLUMN recall_relayed_at_ms BIGINT;
ALTER TABLE packs ADD COLUMN relayed_from TEXT;
-- The last state (downloaded, purged) reported back to the peer it came from.
ALTER TABLE packs ADD COLUMN state_reported TEXT;
ALTER TABLE packs ADD COLUMN receipt_returned_at_ms BIGINT;
-- Each queue's partial index holds exactly the rows its query looks for
-- (the same terms, so SQLite's planner uses it), and loses them when done.
CREATE INDEX packs_relay_queue ON packs (relay_to, seq)
    WHERE relay_to IS NOT NULL AND relayed_at_ms IS NULL
    AND deleted_at_ms IS NULL AND recalled_at_ms IS NULL;
CREATE INDEX packs_release_queue ON packs (relay_to, seq)
    WHERE relay_to IS NOT NULL AND relayed_at_ms IS NOT NULL AND deleted_at_ms IS NULL;
CREATE INDEX packs_recall_queue ON packs (relay_to, seq)
    WHERE relay_to IS NOT NULL AND recall IS NOT NULL AND recall_relayed_at_ms IS NULL;
CREATE INDEX packs_receipt_queue ON packs (relayed_from, seq)
    WHERE relayed_from IS NOT NULL AND receipt IS NOT NULL AND receipt_returned_at_ms IS NULL;
CREATE INDEX packs_state_queue ON packs (relayed_from, seq)
    WHERE relayed_from IS NOT NULL AND receipt IS NULL AND status IN ('downloaded', 'purged')
    AND (state_reported IS NULL OR state_reported <> status);
