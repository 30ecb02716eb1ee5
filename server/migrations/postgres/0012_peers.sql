-- Other trusts' daemons this one federates with (`batond admin peer add`),
-- from their signed descriptors: their federation CA certificate (pinned
-- by its SHA-256) and their daemon's Ed25519 key.
CREATE TABLE peers (
    name TEXT PRIMARY KEY NOT NULL,
    url TEXT NOT NULL,
    ca_cert_pem TEXT NOT NULL,
    ca_cert_sha256 BYTEA NOT NULL,
    daemon_key BYTEA NOT NULL UNIQUE,
    valid_until_ms BIGINT NOT NULL,
    added_at_ms BIGINT NOT NULL
);
