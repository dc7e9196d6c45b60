-- Each set also counts the events that put its users there, and their revenue: geo's
-- events and revenue by country then come from the same blocks as its distinct users
-- (rollup_geo summed ~15,000 rows per 90-day request). Counts and sums add up across
-- blocks, so a parent's are its children's sums; the compactor writes them with the
-- users.
ALTER TABLE user_sets
    ADD COLUMN events  bigint  NOT NULL DEFAULT 0,
    ADD COLUMN revenue numeric NOT NULL DEFAULT 0;

-- The stored sets have no counts yet: start them over. Every slot with events becomes
-- dirty (read raw by reports, exact meanwhile) until the compactor has rebuilt it.
TRUNCATE user_sets, user_totals, user_sets_dirty;
INSERT INTO user_sets_dirty
SELECT DISTINCT date_bin('15 minutes', event_time, TIMESTAMPTZ '1970-01-01 00:00:00+00') FROM events;
