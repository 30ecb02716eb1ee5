-- Signed statements about keys: the trust directory key's endorsement
-- (set by `batond admin key approve`) and the signed revocation (who signed
-- it: "directory" or a key id of the same school, and the signature).
ALTER TABLE keys ADD COLUMN endorsement BLOB;
ALTER TABLE keys ADD COLUMN revoked_by TEXT;
ALTER TABLE keys ADD COLUMN revocation_signature BLOB;
