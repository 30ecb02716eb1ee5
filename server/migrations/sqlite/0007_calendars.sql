-- School calendars (issue: statutory clocks). `scope` is '' for the
-- trust's default calendar, or the LAESTAB of a school with its own term
-- dates. `body` is the calendar as JSON (name, terms, closures).
CREATE TABLE calendars (
    scope          TEXT PRIMARY KEY NOT NULL,
    name           TEXT NOT NULL,
    body           TEXT NOT NULL,
    imported_at_ms INTEGER NOT NULL
);
