-- One-time sign-in links to the trust dashboard (`batond admin dashboard
-- link`): only the SHA-256 of each token is kept, and a link is deleted
-- when it is used.
CREATE TABLE dashboard_links (
    token_sha256 BYTEA PRIMARY KEY NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
