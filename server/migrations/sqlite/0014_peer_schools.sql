-- The schools each peer serves, as it last answered `Federation.PeerSchools`
-- (the School message, checked and encoded again), replaced whole at each
-- sync; and how the last sync with each peer went.
CREATE TABLE peer_schools (
    peer TEXT NOT NULL,
    laestab TEXT NOT NULL,
    school BLOB NOT NULL,
    PRIMARY KEY (peer, laestab)
);
ALTER TABLE peers ADD COLUMN synced_at_ms INTEGER;
ALTER TABLE peers ADD COLUMN sync_tried_at_ms INTEGER;
ALTER TABLE peers ADD COLUMN sync_error TEXT;
