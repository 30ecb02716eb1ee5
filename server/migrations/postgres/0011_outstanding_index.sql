-- The storage quota reads, on every upload, the bytes a school has sent
-- that are still held and not acknowledged. Without this index that read
-- visited every pack the school ever sent (through packs_sent), so uploads
-- slowed as history grew; this partial covering index holds exactly the
-- rows and the columns the sum reads (an index-only scan).
CREATE INDEX packs_outstanding ON packs (from_laestab, status, deleted_at_ms, ciphertext_length)
    WHERE status IN ('pending', 'downloaded') AND deleted_at_ms IS NULL;
