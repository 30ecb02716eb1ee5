-- A school's former numbers (issue: renumbering). After an academy
-- conversion the school keeps its keys, tokens and packs under its new
-- LAESTAB; the old one becomes an alias that still routes to it. Part of
-- the directory: a change moves the directory version.
CREATE TABLE school_aliases (
    alias         TEXT PRIMARY KEY NOT NULL,
    laestab       TEXT NOT NULL REFERENCES schools (laestab),
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX school_aliases_by_school ON school_aliases (laestab);
CREATE TRIGGER school_aliases_insert_version AFTER INSERT ON school_aliases
BEGIN UPDATE directory_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER school_aliases_update_version AFTER UPDATE ON school_aliases
BEGIN UPDATE directory_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER school_aliases_delete_version AFTER DELETE ON school_aliases
BEGIN UPDATE directory_version SET version = version + 1 WHERE id = 1; END;
