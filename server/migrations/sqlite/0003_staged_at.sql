-- When a chunk was staged, as PostgreSQL has always kept it, so both
-- backends stage chunks with the same statement. NULL for chunks written
-- before this migration and for chunks committed with their pack.
ALTER TABLE pack_chunks ADD COLUMN staged_at_ms INTEGER;
