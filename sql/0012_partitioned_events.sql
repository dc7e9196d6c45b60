-- The raw events become a table partitioned by event time, one partition per UTC day,
-- so that old events leave by dropping whole partitions (no DELETE over millions of
-- rows, no vacuum after it) while the rollups and the per-user sets keep their figures.
--
-- By event time rather than arrival time: every reader (reports' raw edges, the
-- compactor, `rebuild_rollups()`) asks for an event-time range, which then prunes to a
-- few partitions; and retention means "events older than N days", which only an
-- event-time partition can drop whole. Late events write into older partitions, which
-- costs nothing more than writing into the newest.
--
-- Partitions are created ahead of need by the worker (`prepare_event_partitions`); an
-- event with a time outside them (far-off dates: year 1970, year 9999) goes to the
-- default partition, which is also where the rows stored before this migration stay.
--
-- A partitioned table cannot have a unique index on `event_id` alone (a unique index must
-- contain the partition key), and an event re-sent with another time would fall into
-- another partition. The dedup moves to `event_keys`: one row per stored event id, with
-- its event time. The insert path writes the key first; a conflict there means the event
-- is stored already, whatever its time. A key leaves only with its event, when retention
-- drops the event's day (`apply_events_retention`), and events older than the retention
-- horizon are refused, so an event id is never stored twice.
--
-- Online: the migration renames the existing table and attaches it as the default
-- partition (no rows move); what takes time is copying every stored id into
-- `event_keys` (docs/operations.md, "Retention", gives the time at 10M rows). Inserts
-- wait for it; reports go on reading the old table until the commit.

ALTER TABLE events RENAME TO events_default;
ALTER TABLE events_default DROP CONSTRAINT events_pkey;
DROP INDEX IF EXISTS events_event_time_brin;

CREATE TABLE events (LIKE events_default INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (event_time);

-- The reports' raw edges and the compactor read event-time ranges. Attaching the old
-- table adopts its index of the same definition instead of building one.
ALTER INDEX events_event_time_idx RENAME TO events_default_event_time_idx;
CREATE INDEX events_event_time_idx ON events (event_time);
ALTER TABLE events ATTACH PARTITION events_default DEFAULT;

CREATE TABLE event_keys (
    event_id   text        NOT NULL,
    event_time timestamptz NOT NULL
);
-- The stored ids first, the indexes after: one sort builds an index faster than as many
-- insertions.
INSERT INTO event_keys SELECT event_id, event_time FROM events_default;
ALTER TABLE event_keys ADD PRIMARY KEY (event_id);
-- Retention deletes the keys of the days it drops; keys arrive nearly in time order, so
-- a BRIN index finds them at almost no cost to the insert path.
CREATE INDEX event_keys_event_time_brin ON event_keys USING brin (event_time);

-- The oldest instant whose events are kept, once retention has dropped anything; no row
-- until then. `rebuild_rollups()` rebuilds from it, so the figures of dropped days stay.
CREATE TABLE events_retention (
    horizon timestamptz NOT NULL
);

-- Creates the daily partitions of `first_day` to `last_day` (UTC) that do not exist yet,
-- moving the default partition's events of those days into them. Returns how many it
-- created. The services' roles call it (SECURITY DEFINER: it runs as this schema's owner,
-- and does only this); one caller at a time.
CREATE FUNCTION prepare_event_partitions(first_day date, last_day date) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    day date;
    name text;
    lo timestamptz;
    hi timestamptz;
    created integer := 0;
BEGIN
    IF last_day - first_day > 3660 THEN
        RAISE EXCEPTION 'prepare_event_partitions: % days is more than ten years', last_day - first_day;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('events partitions'));
    FOR day IN SELECT generate_series(first_day, last_day, interval '1 day')::date LOOP
        name := 'events_' || to_char(day, 'YYYYMMDD');
        CONTINUE WHEN to_regclass(quote_ident(name)) IS NOT NULL;
        lo := day::timestamp AT TIME ZONE 'UTC';
        hi := (day + 1)::timestamp AT TIME ZONE 'UTC';
        EXECUTE format('CREATE TABLE %I (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name);
        -- The parent first, as any DDL on `events` (a migration, a trigger) and every
        -- insert take it: locking the default partition first would deadlock with them.
        -- This mode lets inserts and reads through.
        LOCK TABLE events IN SHARE UPDATE EXCLUSIVE MODE;
        -- Attaching checks that the default partition holds no event of the new range:
        -- inserts into it wait from here (reads go on) until the commit, so none can
        -- add one after the move.
        LOCK TABLE events_default IN EXCLUSIVE MODE;
        EXECUTE format('WITH moved AS (DELETE FROM events_default WHERE event_time >= $1 AND event_time < $2 RETURNING *)
                        INSERT INTO %I SELECT * FROM moved', name) USING lo, hi;
        EXECUTE format('ALTER TABLE events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', name, lo, hi);
        created := created + 1;
    END LOOP;
    RETURN created;
END;
$$;

-- Drops every daily partition that ends at or before `horizon` (a UTC midnight), and
-- deletes the default partition's events and the keys older than it. A day is kept
-- while the per-user sets still need its raw events (a slot marked dirty or with events
-- listed and not compacted yet): the horizon stops at the first such day. Returns the
-- horizon applied. SECURITY DEFINER, as above.
CREATE FUNCTION apply_events_retention(horizon timestamptz) RETURNS timestamptz
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    needed timestamptz;
    part record;
BEGIN
    IF horizon <> date_trunc('day', horizon, 'UTC') THEN
        RAISE EXCEPTION 'apply_events_retention: % is not a UTC midnight', horizon;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('events partitions'));
    SELECT least((SELECT min(slot) FROM user_sets_dirty), (SELECT min(slot) FROM user_sets_pending))
    INTO needed;
    IF needed IS NOT NULL AND needed < horizon THEN
        horizon := date_trunc('day', needed, 'UTC');
    END IF;
    IF horizon <= coalesce((SELECT max(r.horizon) FROM events_retention r), '-infinity') THEN
        RETURN horizon;
    END IF;
    FOR part IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'events'::regclass AND c.relname ~ '^events_[0-9]{8}$'
          AND (to_date(substr(c.relname, 8), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC' <= horizon
    LOOP
        -- The parent before the partition, in the order inserts take them (a moment's
        -- lock: dropping a table is quick).
        LOCK TABLE events IN ACCESS EXCLUSIVE MODE;
        EXECUTE format('DROP TABLE %I', part.relname);
    END LOOP;
    DELETE FROM events_default WHERE event_time < horizon;
    DELETE FROM event_keys WHERE event_time < horizon;
    DELETE FROM events_retention;
    INSERT INTO events_retention VALUES (horizon);
    RETURN horizon;
END;
$$;

-- The rebuild keeps what retention dropped: below the horizon the rollups and the sets
-- are all that is left of those days, so only the days still held raw are rebuilt.
CREATE OR REPLACE FUNCTION rebuild_event_counts() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    g record;
    h timestamptz := coalesce((SELECT max(horizon) FROM events_retention), '-infinity');
BEGIN
    LOCK TABLE events IN SHARE MODE;
    LOCK TABLE rollup_events, rollup_campaigns IN ACCESS EXCLUSIVE MODE;
    DELETE FROM rollup_events WHERE bucket >= h;
    DELETE FROM rollup_campaigns WHERE bucket >= h;
    FOR g IN SELECT * FROM (VALUES ('m'::"char", 'minute'), ('h', 'hour'), ('d', 'day')) AS v(grain, unit) LOOP
        INSERT INTO rollup_events
        SELECT g.grain, date_trunc(g.unit, event_time, 'UTC'), source, funnel_stage, event_type,
               count(*), count(revenue), coalesce(sum(revenue), 0)
        FROM events WHERE event_time >= h GROUP BY 2, 3, 4, 5;
        CONTINUE WHEN g.grain = 'm';
        INSERT INTO rollup_campaigns
        SELECT g.grain, date_trunc(g.unit, event_time, 'UTC'), campaign_id,
               count(*), count(revenue), coalesce(sum(revenue), 0)
        FROM events WHERE campaign_id IS NOT NULL AND event_time >= h GROUP BY 2, 3;
    END LOOP;
END;
$$;

CREATE OR REPLACE FUNCTION rebuild_counts() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    h timestamptz := coalesce((SELECT max(horizon) FROM events_retention), '-infinity');
BEGIN
    PERFORM rebuild_event_counts();
    LOCK TABLE rollup_series IN ACCESS EXCLUSIVE MODE;
    DELETE FROM rollup_series WHERE bucket >= h;
    INSERT INTO rollup_series
    SELECT grain, bucket, s, st, sum(events), sum(revenue)
    FROM rollup_events,
         LATERAL (VALUES ('', ''), (source, ''), ('', funnel_stage), (source, funnel_stage)) AS k(s, st)
    WHERE bucket >= h
    GROUP BY 1, 2, 3, 4;
END;
$$;

-- Without a horizon, as before: the sets start over. With one, the sets of the dropped
-- days stay; every slot still held raw is rebuilt from its events (a full rebuild
-- replaces its level-0 block, and each ancestor is rebuilt from its children).
CREATE OR REPLACE FUNCTION rebuild_rollups() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    h timestamptz := (SELECT max(horizon) FROM events_retention);
BEGIN
    PERFORM rebuild_counts();
    LOCK TABLE user_sets, user_totals, user_sets_dirty IN ACCESS EXCLUSIVE MODE;
    IF h IS NULL THEN
        TRUNCATE user_sets, user_totals, user_sets_dirty;
    ELSE
        DELETE FROM user_sets_dirty WHERE slot >= h;
    END IF;
    INSERT INTO user_sets_dirty (slot)
    SELECT DISTINCT date_bin('15 minutes', event_time, TIMESTAMPTZ '1970-01-01 00:00:00+00')
    FROM events WHERE event_time >= coalesce(h, '-infinity');
END;
$$;

GRANT SELECT ON events, event_keys, events_retention TO events_reader, events_writer;
-- Partitions are reached through `events`, whose grants alone are checked; the old table
-- keeps none of its own.
REVOKE ALL ON events_default FROM events_reader, events_writer;
GRANT INSERT ON events, event_keys TO events_writer;
REVOKE ALL ON FUNCTION prepare_event_partitions(date, date), apply_events_retention(timestamptz)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION prepare_event_partitions(date, date), apply_events_retention(timestamptz)
    TO events_writer;
