-- Per-user activity, for the reports that count distinct users (geo, funnel,
-- demographics) or rank users (users/top). Counts and sums add up across buckets; distinct
-- users do not, so these tables keep *who*: for each block of quarter-hour slots and each
-- set key, the set of users (a roaring bitmap of user keys), and per user the events and
-- revenue.
--
-- Blocks are dyadic: level k, block i covers the slots [i * 2^k, (i + 1) * 2^k) since
-- the Unix epoch, for k = 0..13 (15 minutes to 85 days). Any range of whole slots is
-- covered by at most ~2 blocks per level, so a report reads a few dozen sets whatever
-- the range; the partial slots at its edges come from the raw table.
--
-- Maintenance: the worker's insert transaction marks the slots it added events to in
-- `user_sets_dirty`. A compactor (in the worker, one at a time under an advisory lock)
-- rebuilds a dirty slot's level-0 block from the raw events once the slot has ended, then
-- its ancestors from their two children, and clears the mark in the same transaction.
-- Readers treat any block holding a dirty slot as not built: they split it and read the
-- dirty slots raw. So answers are exact at every moment, and a duplicate or redelivered
-- event (never inserted) changes nothing.

-- Users as dense integers (bitmap members), assigned by the compactor.
CREATE TABLE user_keys (
    user_key integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source   text NOT NULL,
    user_id  text NOT NULL,
    UNIQUE (source, user_id)
);

-- One set of users per block and key. `dim`: 'country' (value = country; the filters
-- source, funnel_stage and event_type each either set or '' = any), 'all' (per source and
-- stage, and per event type: funnel), 'age', 'gender', 'city' (context = its country),
-- 'followers' and 'device' (TikTok top events): demographics, per source.
CREATE TABLE user_sets (
    level        smallint NOT NULL,
    block        bigint   NOT NULL,
    dim          text     NOT NULL,
    source       text     NOT NULL,
    funnel_stage text     NOT NULL,
    event_type   text     NOT NULL,
    value        text     NOT NULL,
    context      text     NOT NULL,
    users        bytea    NOT NULL, -- portable roaring bitmap of user keys
    PRIMARY KEY (level, block, dim, source, funnel_stage, event_type, value, context)
);

-- Per block and source: events and revenue per user (see the user-sets crate, `codec`).
CREATE TABLE user_totals (
    level  smallint NOT NULL,
    block  bigint   NOT NULL,
    source text     NOT NULL,
    totals bytea    NOT NULL,
    PRIMARY KEY (level, block, source)
);

-- Bitmaps barely compress: keep them out of line, uncompressed.
ALTER TABLE user_sets ALTER COLUMN users SET STORAGE EXTERNAL;
ALTER TABLE user_totals ALTER COLUMN totals SET STORAGE EXTERNAL;

-- Slots whose blocks are not (or no longer) built from all their events.
CREATE TABLE user_sets_dirty (
    slot timestamptz PRIMARY KEY
);

INSERT INTO user_sets_dirty
SELECT DISTINCT date_bin('15 minutes', event_time, TIMESTAMPTZ '1970-01-01 00:00:00+00') FROM events;

-- The rebuild now also resets the per-user sets: every slot with events becomes dirty and
-- the compactor rebuilds them (`worker rebuild-rollups` waits for it).
ALTER FUNCTION rebuild_rollups() RENAME TO rebuild_counts;

CREATE FUNCTION rebuild_rollups() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM rebuild_counts();
    LOCK TABLE user_sets, user_totals, user_sets_dirty IN ACCESS EXCLUSIVE MODE;
    TRUNCATE user_sets, user_totals, user_sets_dirty;
    INSERT INTO user_sets_dirty
    SELECT DISTINCT date_bin('15 minutes', event_time, TIMESTAMPTZ '1970-01-01 00:00:00+00') FROM events;
END;
$$;
