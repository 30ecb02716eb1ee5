-- The roles an enrolment code grants, chosen by the operator who issued it
-- (comma separated): a key enrolled with the code may hold only these.
-- Codes issued before this migration grant staff only.
ALTER TABLE enrolments ADD COLUMN roles TEXT NOT NULL DEFAULT 'staff';
