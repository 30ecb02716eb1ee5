-- Recall, supersede and retention (issue: mistakes and endings). A pack row
-- outlives its ciphertext: the header, the receipt and the times stay as
-- evidence; the chunks go.
--   status: pending | downloaded | acknowledged | recalled (withdrawn
--           before the destination downloaded it) | purged (retention)
ALTER TABLE packs ADD COLUMN supersedes TEXT;          -- from the signed header
ALTER TABLE packs ADD COLUMN superseded_by TEXT;       -- the pack that corrects it
ALTER TABLE packs ADD COLUMN recall BYTEA;             -- baton.v1.Recall, signed by the sender
ALTER TABLE packs ADD COLUMN recalled_at_ms BIGINT;    -- withdrawn (recall or supersede)
ALTER TABLE packs ADD COLUMN deleted_at_ms BIGINT;     -- ciphertext deleted
ALTER TABLE packs ADD COLUMN purged_at_ms BIGINT;
ALTER TABLE packs ADD COLUMN purge_reason TEXT;        -- acknowledged | not collected
-- The inbox lists packs waiting for the school, and withdrawn packs it had
-- already acknowledged (the recall notice). The query's WHERE repeats this
-- predicate word for word, so the planner can use the partial index.
CREATE INDEX packs_inbox_live ON packs (to_laestab, seq)
    WHERE (status IN ('pending', 'downloaded') OR (status = 'acknowledged' AND recalled_at_ms IS NOT NULL));
DROP INDEX packs_inbox_open;
-- Retention finds acknowledged packs by receipt time and waiting ones by
-- upload time.
CREATE INDEX packs_retention ON packs (status, acknowledged_at_ms, uploaded_at_ms);
-- The two new states.
ALTER TABLE packs DROP CONSTRAINT packs_status_check;
ALTER TABLE packs ADD CONSTRAINT packs_status_check
    CHECK (status IN ('pending', 'downloaded', 'acknowledged', 'recalled', 'purged'));
