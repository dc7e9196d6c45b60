-- A dirty mark counts the batches that set it. The compactor no longer takes (locks and
-- deletes) the marks before rebuilding their slots, which made every insert of a late
-- event for such a slot wait until the rebuild committed (seconds for a busy slot). It
-- now reads each mark's generation, rebuilds, and at the end clears only the marks no
-- batch has set since (generation unchanged), skipping any a batch still holds: a batch
-- committed after the rebuild read the slot leaves it dirty.
ALTER TABLE user_sets_dirty ADD COLUMN gen bigint NOT NULL DEFAULT 0;
