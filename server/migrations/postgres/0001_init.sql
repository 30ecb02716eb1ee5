-- Baton daemon schema, PostgreSQL. Holds ciphertext and metadata only: no
-- table has a column that could identify a pupil. Several batond nodes may
-- share this database: every rule that matters is a constraint or a row
-- lock taken inside the transaction, never a lock held in one process.

CREATE TABLE schools (
    laestab       TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    phase         TEXT NOT NULL,
    urn           TEXT NOT NULL DEFAULT '',
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE keys (
    key_id        TEXT PRIMARY KEY,
    laestab       TEXT NOT NULL REFERENCES schools (laestab),
    age_recipient TEXT NOT NULL,
    signing_key   BYTEA NOT NULL,
    label         TEXT NOT NULL,
    -- role names, comma separated, e.g. "dsl,staff"
    roles         TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT
);
CREATE INDEX keys_by_school ON keys (laestab);

-- API tokens: SHA-256 of the token only.
CREATE TABLE tokens (
    token_hash    BYTEA PRIMARY KEY,
    laestab       TEXT NOT NULL REFERENCES schools (laestab),
    created_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT
);
CREATE INDEX tokens_by_school ON tokens (laestab);

-- One-time enrolment codes: SHA-256 of the code only.
CREATE TABLE enrolments (
    code_hash     BYTEA PRIMARY KEY,
    laestab       TEXT NOT NULL REFERENCES schools (laestab),
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    used_at_ms    BIGINT
);

-- Visible packs. A row exists only once every chunk is stored and checked.
CREATE TABLE packs (
    seq                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pack_id            TEXT NOT NULL UNIQUE,
    from_laestab       TEXT NOT NULL,
    to_laestab         TEXT NOT NULL,
    kind               TEXT NOT NULL,
    created_at_ms      BIGINT NOT NULL,
    ciphertext_length  BIGINT NOT NULL,
    ciphertext_sha256  BYTEA NOT NULL,
    sender_key_id      TEXT NOT NULL,
    -- the signed header as protobuf bytes (baton.v1.PackHeader)
    header             BYTEA NOT NULL,
    upload_id          TEXT NOT NULL UNIQUE,
    -- number of rows in pack_chunks for upload_id, idx 0..chunks
    chunks             BIGINT NOT NULL,
    -- pending | downloaded | acknowledged
    status             TEXT NOT NULL CHECK (status IN ('pending', 'downloaded', 'acknowledged')),
    uploaded_at_ms     BIGINT NOT NULL,
    downloaded_at_ms   BIGINT,
    acknowledged_at_ms BIGINT,
    -- the signed receipt as protobuf bytes (baton.v1.Receipt)
    receipt            BYTEA
);
CREATE INDEX packs_inbox ON packs (to_laestab, seq);
CREATE INDEX packs_sent ON packs (from_laestab, seq);

-- Ciphertext, in order. `staged` while the upload is in flight; flipped to
-- false in the transaction that inserts the pack row. `staged_at_ms` lets a
-- node clean up after another node that died mid-upload.
CREATE TABLE pack_chunks (
    upload_id    TEXT NOT NULL,
    idx          BIGINT NOT NULL,
    staged       BOOLEAN NOT NULL,
    staged_at_ms BIGINT NOT NULL,
    data         BYTEA NOT NULL,
    PRIMARY KEY (upload_id, idx)
);
CREATE INDEX pack_chunks_staged ON pack_chunks (staged_at_ms) WHERE staged;

-- Append-only, hash-chained audit log.
CREATE TABLE audit (
    seq       BIGINT PRIMARY KEY,
    at_ms     BIGINT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    subject   TEXT NOT NULL,
    prev_hash BYTEA NOT NULL,
    hash      BYTEA NOT NULL
);

-- The head of the audit chain: one row, locked (SELECT … FOR UPDATE) by
-- every transaction that appends, so appends from all nodes form one chain.
CREATE TABLE audit_head (
    id   SMALLINT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash BYTEA NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));
