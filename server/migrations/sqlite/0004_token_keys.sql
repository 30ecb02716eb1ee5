-- A token belongs to the key it was issued with (one `baton init`, one
-- device): revoking the key revokes its token in the same transaction.
-- Tokens issued before this migration are bound to their school's first
-- key, the one enrolled with them.
ALTER TABLE tokens ADD COLUMN key_id TEXT REFERENCES keys (key_id);
UPDATE tokens SET key_id = (
    SELECT k.key_id FROM keys k WHERE k.laestab = tokens.laestab
    ORDER BY k.created_at_ms, k.key_id LIMIT 1
);
CREATE INDEX tokens_by_key ON tokens (key_id);
