-- Compaction that keeps up with late events.
--
-- A dirty mark counts the batches that set it (`gen`), and says whether its slot needs a
-- full rebuild from the raw events (`full_gen`: the generation at which a batch last
-- wrote to the slot while it was still open; NULL when every batch since the last build
-- came after the slot had ended). Events written to a slot after it ended are listed in
-- `user_sets_late`, so the compactor adds just those to the slot's built block instead
-- of rebuilding it from every raw event (a quarter-hour can hold millions). Either way an
-- event is in the block, or in the late list, or its slot is marked for a full rebuild.
--
-- The compactor no longer locks and deletes the marks before rebuilding, which made any
-- batch with a late event for such a slot wait until the rebuild committed: it reads the
-- marks, builds, commits, then clears only the marks no batch has set since (generation
-- unchanged), skipping any a batch holds.
ALTER TABLE user_sets_dirty
    ADD COLUMN gen      bigint NOT NULL DEFAULT 0,
    ADD COLUMN full_gen bigint DEFAULT 0;

CREATE TABLE user_sets_late (
    slot     timestamptz NOT NULL,
    event_id text        NOT NULL,
    PRIMARY KEY (slot, event_id)
);
