-- Every stored event is listed, with the facts the per-user sets need, until the
-- compactor has added it to its slot's block.
--
-- Until now only events written to a slot that had already ended were listed (one row
-- per event id in `user_sets_late`); the slot being written was marked for a full
-- rebuild and readers read it raw: at a few thousand events/s that is millions of events,
-- and every distinct-user report over a range ending now paid for them.
--
-- Now each insert transaction lists the events it stored, one row per slot it wrote: the
-- facts of its events (source, stage, type, user and key, country, revenue, demographic
-- facts) in one `bytea` (`user_sets::encode_activities`), so neither the
-- compactor nor a reader looks the events up again. The compactor folds a slot's lists
-- into its level-0 block and drops them in one transaction, also while the slot is still
-- open (its mark stays, so no ancestor block is used for it); readers read a dirty slot
-- as its level-0 block plus the lists left, all in one snapshot. A mark asks for a full
-- rebuild (`full_gen`) only after `rebuild_rollups()`, or here; such a slot is read raw.
CREATE TABLE user_sets_pending (
    slot     timestamptz NOT NULL,
    batch    bigint      GENERATED ALWAYS AS IDENTITY,
    -- when the listing transaction started: the compactor folds an open slot once its
    -- oldest list is a few seconds old
    added_at timestamptz NOT NULL DEFAULT now(),
    facts    bytea       NOT NULL,
    PRIMARY KEY (slot, batch)
);
-- Read whole, written once, deleted soon: compressing it is wasted work.
ALTER TABLE user_sets_pending ALTER COLUMN facts SET STORAGE EXTERNAL;

-- The slots with late events listed the old way are rebuilt from their raw events.
UPDATE user_sets_dirty SET full_gen = gen
WHERE full_gen IS NULL AND slot IN (SELECT slot FROM user_sets_late);

DROP TABLE user_sets_late;
