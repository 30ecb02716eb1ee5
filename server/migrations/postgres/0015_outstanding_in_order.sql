-- packs_outstanding (the quota's covering index) was keyed on the pack's
-- length after the school and status, so each new pack's entry landed at a
-- place set by its size: a page of its own to write for nearly every pack
-- stored. With the row's sequence number before the length, a school's new
-- packs are appended together, and the sum is still read from the index
-- alone.
DROP INDEX packs_outstanding;
CREATE INDEX packs_outstanding ON packs (from_laestab, status, deleted_at_ms, seq, ciphertext_length)
    WHERE status IN ('pending', 'downloaded') AND deleted_at_ms IS NULL;
