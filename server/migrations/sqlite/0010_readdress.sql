-- Re-addressing (issue: pupils whose next school is unknown). The escrow
-- forwards a held pack to the school the pupil joined as a new pack whose
-- signed header names the original (`forwards`, from the header); the
-- original records the pack that forwards it (`readdressed_as`) and its
-- held ciphertext is deleted; its status becomes `readdressed` (out of the
-- escrow's inbox).
ALTER TABLE packs ADD COLUMN forwards TEXT;
ALTER TABLE packs ADD COLUMN readdressed_as TEXT;
