-- Other trusts' daemons this one federates with (`batond admin peer add`),
-- from their signed descriptors: their federation CA certificate (pinned
-- by its SHA-256) and their daemon's Ed25519 key.
CREATE TABLE peers (
    name TEXT PRIMARY KEY NOT NULL,
    url TEXT NOT NULL,
    ca_cert_pem TEXT NOT NULL,
    ca_cert_sha256 BLOB NOT NULL,
    daemon_key BLOB NOT NULL UNIQUE,
    valid_until_ms INTEGER NOT NULL,
    added_at_ms INTEGER NOT NULL
);
