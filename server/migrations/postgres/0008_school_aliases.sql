-- A school's former numbers (issue: renumbering). After an academy
-- conversion the school keeps its keys, tokens and packs under its new
-- LAESTAB; the old one becomes an alias that still routes to it. Part of
-- the directory: a change moves the directory version.
CREATE TABLE school_aliases (
    alias         TEXT PRIMARY KEY NOT NULL,
    laestab       TEXT NOT NULL REFERENCES schools (laestab),
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX school_aliases_by_school ON school_aliases (laestab);
CREATE TRIGGER school_aliases_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON school_aliases
    FOR EACH STATEMENT EXECUTE FUNCTION bump_directory_version();
