-- Baton daemon schema, SQLite. Holds ciphertext and metadata only: no table
-- has a column that could identify a pupil.

CREATE TABLE schools (
    laestab       TEXT PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL,
    phase         TEXT NOT NULL,
    urn           TEXT NOT NULL DEFAULT '',
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE keys (
    key_id        TEXT PRIMARY KEY NOT NULL,
    laestab       TEXT NOT NULL REFERENCES schools (laestab),
    age_recipient TEXT NOT NULL,
    signing_key   BLOB NOT NULL,
    label         TEXT NOT NULL,
    -- role names, comma separated, e.g. "dsl,staff"
    roles         TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);
CREATE INDEX keys_by_school ON keys (laestab);

-- API tokens: SHA-256 of the token only.
CREATE TABLE tokens (
    token_hash    BLOB PRIMARY KEY NOT NULL,
    laestab       TEXT NOT NULL REFERENCES schools (laestab),
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);
CREATE INDEX tokens_by_school ON tokens (laestab);

-- One-time enrolment codes: SHA-256 of the code only.
CREATE TABLE enrolments (
    code_hash     BLOB PRIMARY KEY NOT NULL,
    laestab       TEXT NOT NULL REFERENCES schools (laestab),
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    used_at_ms    INTEGER
);

-- Visible packs. A row exists only once every chunk is stored and checked.
CREATE TABLE packs (
    seq                INTEGER PRIMARY KEY AUTOINCREMENT,
    pack_id            TEXT NOT NULL UNIQUE,
    from_laestab       TEXT NOT NULL,
    to_laestab         TEXT NOT NULL,
    kind               TEXT NOT NULL,
    created_at_ms      INTEGER NOT NULL,
    ciphertext_length  INTEGER NOT NULL,
    ciphertext_sha256  BLOB NOT NULL,
    sender_key_id      TEXT NOT NULL,
    -- the signed header as protobuf bytes (baton.v1.PackHeader)
    header             BLOB NOT NULL,
    upload_id          TEXT NOT NULL UNIQUE,
    -- number of rows in pack_chunks for upload_id, idx 0..chunks
    chunks             INTEGER NOT NULL,
    -- pending | downloaded | acknowledged
    status             TEXT NOT NULL,
    uploaded_at_ms     INTEGER NOT NULL,
    downloaded_at_ms   INTEGER,
    acknowledged_at_ms INTEGER,
    -- the signed receipt as protobuf bytes (baton.v1.Receipt)
    receipt            BLOB
);
CREATE INDEX packs_inbox ON packs (to_laestab, seq);
CREATE INDEX packs_sent ON packs (from_laestab, seq);

-- Ciphertext, in order. `staged = 1` while the upload is in flight; flipped
-- to 0 in the transaction that inserts the pack row.
CREATE TABLE pack_chunks (
    upload_id TEXT NOT NULL,
    idx       INTEGER NOT NULL,
    staged    INTEGER NOT NULL,
    data      BLOB NOT NULL,
    PRIMARY KEY (upload_id, idx)
);
CREATE INDEX pack_chunks_staged ON pack_chunks (staged) WHERE staged = 1;

-- Append-only, hash-chained audit log.
CREATE TABLE audit (
    seq       INTEGER PRIMARY KEY NOT NULL,
    at_ms     INTEGER NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    subject   TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash      BLOB NOT NULL
);
