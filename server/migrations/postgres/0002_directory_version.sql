-- A counter that moves whenever a school, key or token changes, by any
-- node or process (`batond admin`, or SQL by hand): each node caches the
-- directory and tokens, and reads only this row per call to know its cache
-- is current.
CREATE TABLE directory_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO directory_version (id, version) VALUES (1, 0);

CREATE FUNCTION bump_directory_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE directory_version SET version = version + 1 WHERE id = 1;
    RETURN NULL;
END;
$$;

CREATE TRIGGER schools_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON schools
    FOR EACH STATEMENT EXECUTE FUNCTION bump_directory_version();
CREATE TRIGGER keys_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON keys
    FOR EACH STATEMENT EXECUTE FUNCTION bump_directory_version();
CREATE TRIGGER tokens_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tokens
    FOR EACH STATEMENT EXECUTE FUNCTION bump_directory_version();

-- The inbox lists packs not yet acknowledged: with this partial index in
-- place of the one over every pack, a school's inbox stays a short range
-- scan however many acknowledged packs it has received over the years (and
-- each upload still updates one inbox index).
CREATE INDEX packs_inbox_open ON packs (to_laestab, seq) WHERE status <> 'acknowledged';
DROP INDEX packs_inbox;
