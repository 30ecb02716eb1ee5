-- The schools each peer serves, as it last answered `Federation.PeerSchools`
-- (the School message, checked and encoded again), replaced whole at each
-- sync; how the last sync with each peer went; and the local authorities
-- a peer may list schools for.
CREATE TABLE peer_schools (
    peer TEXT NOT NULL,
    laestab TEXT NOT NULL,
    school BYTEA NOT NULL,
    PRIMARY KEY (peer, laestab)
);
ALTER TABLE peers ADD COLUMN synced_at_ms BIGINT;
ALTER TABLE peers ADD COLUMN sync_tried_at_ms BIGINT;
ALTER TABLE peers ADD COLUMN sync_error TEXT;
-- The local authority codes (3 digits, comma-separated) the operator
-- agreed the peer may list schools for; empty: any.
ALTER TABLE peers ADD COLUMN la_codes TEXT NOT NULL DEFAULT '';
