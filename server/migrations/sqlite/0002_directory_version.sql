-- A counter that moves whenever a school, key or token changes, by any
-- process (the daemon, `batond admin`, or SQL by hand): the daemon caches
-- the directory and tokens, and reads only this row per call to know its
-- cache is current.
CREATE TABLE directory_version (
    id      INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO directory_version (id, version) VALUES (1, 0);

CREATE TRIGGER schools_insert_version AFTER INSERT ON schools
BEGIN UPDATE directory_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER schools_update_version AFTER UPDATE ON schools
BEGIN UPDATE directory_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER schools_delete_version AFTER DELETE ON schools
BEGIN UPDATE directory_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER keys_insert_version AFTER INSERT ON keys
BEGIN UPDATE directory_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER keys_update_version AFTER UPDATE ON keys
BEGIN UPDATE directory_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER keys_delete_version AFTER DELETE ON keys
BEGIN UPDATE directory_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER tokens_insert_version AFTER INSERT ON tokens
BEGIN UPDATE directory_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER tokens_update_version AFTER UPDATE ON tokens
BEGIN UPDATE directory_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER tokens_delete_version AFTER DELETE ON tokens
BEGIN UPDATE directory_version SET version = version + 1 WHERE id = 1; END;

-- The inbox lists packs not yet acknowledged: with this partial index in
-- place of the one over every pack, a school's inbox stays a short range
-- scan however many acknowledged packs it has received over the years (and
-- each upload still updates one inbox index).
CREATE INDEX packs_inbox_open ON packs (to_laestab, seq) WHERE status != 'acknowledged';
DROP INDEX packs_inbox;
