-- Rollups: pre-aggregated counts and revenue by time bucket, maintained by the worker in
-- the same transaction as the insert, for rows really inserted only (duplicates and
-- redeliveries never count twice). Reports read rollups for the whole buckets inside a
-- range and the raw table for the partial buckets at its edges, so answers are exact for
-- any [from, to) while the work stays independent of how many events are stored.

-- Derived facts (docs/events.md), computed once by the worker with shared-events, so rollup
-- rebuilds and edge reads need no JSON extraction.
ALTER TABLE events
    ADD COLUMN country     text,    -- NULL: the event has no country (TikTok bottom)
    ADD COLUMN campaign_id text,    -- Facebook bottom events only
    ADD COLUMN revenue     numeric; -- purchaseAmount of a revenue event with an amount

UPDATE events SET
    country = CASE
        WHEN source = 'facebook' THEN data #>> '{user,location,country}'
        WHEN funnel_stage = 'top' THEN data #>> '{engagement,country}'
    END,
    campaign_id = CASE
        WHEN source = 'facebook' AND funnel_stage = 'bottom' THEN data #>> '{engagement,campaignId}'
    END,
    revenue = CASE
        WHEN (source, event_type) IN (('facebook', 'checkout.complete'), ('tiktok', 'purchase'))
        THEN (data #>> '{engagement,purchaseAmount}')::numeric
    END;

-- Edges of a range are read from the raw table by event time: a btree (the BRIN could
-- not narrow out-of-order data).
DROP INDEX events_event_time_brin;
CREATE INDEX events_event_time_idx ON events (event_time);

-- grain: 'm' minute, 'h' hour, 'd' day; bucket: UTC-aligned start.
-- purchases: revenue events with a non-null amount; revenue: their exact sum.
CREATE TABLE rollup_events (
    grain        "char"      NOT NULL CHECK (grain IN ('m', 'h', 'd')),
    bucket       timestamptz NOT NULL,
    source       text        NOT NULL,
    funnel_stage text        NOT NULL,
    event_type   text        NOT NULL,
    events       bigint      NOT NULL,
    purchases    bigint      NOT NULL,
    revenue      numeric     NOT NULL,
    PRIMARY KEY (grain, bucket, source, funnel_stage, event_type)
);

-- By country ('' when the event has none; validation refuses an empty country).
CREATE TABLE rollup_geo (
    grain        "char"      NOT NULL CHECK (grain IN ('h', 'd')),
    bucket       timestamptz NOT NULL,
    source       text        NOT NULL,
    funnel_stage text        NOT NULL,
    event_type   text        NOT NULL,
    country      text        NOT NULL,
    events       bigint      NOT NULL,
    purchases    bigint      NOT NULL,
    revenue      numeric     NOT NULL,
    PRIMARY KEY (grain, bucket, source, funnel_stage, event_type, country)
);

-- By campaign (Facebook bottom events).
CREATE TABLE rollup_campaigns (
    grain        "char"      NOT NULL CHECK (grain IN ('h', 'd')),
    bucket       timestamptz NOT NULL,
    campaign_id  text        NOT NULL,
    events       bigint      NOT NULL,
    purchases    bigint      NOT NULL,
    revenue      numeric     NOT NULL,
    PRIMARY KEY (grain, bucket, campaign_id)
);

-- Recomputes every rollup from the raw table (the source of truth). Blocks writers while
-- it runs, so the result is consistent: `SELECT rebuild_rollups();` or `worker rebuild-rollups`.
CREATE FUNCTION rebuild_rollups() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    g record;
BEGIN
    LOCK TABLE events IN SHARE MODE;
    LOCK TABLE rollup_events, rollup_geo, rollup_campaigns IN ACCESS EXCLUSIVE MODE;
    TRUNCATE rollup_events, rollup_geo, rollup_campaigns;
    FOR g IN SELECT * FROM (VALUES ('m'::"char", 'minute'), ('h', 'hour'), ('d', 'day')) AS v(grain, unit) LOOP
        INSERT INTO rollup_events
        SELECT g.grain, date_trunc(g.unit, event_time, 'UTC'), source, funnel_stage, event_type,
               count(*), count(revenue), coalesce(sum(revenue), 0)
        FROM events GROUP BY 2, 3, 4, 5;
        CONTINUE WHEN g.grain = 'm';
        INSERT INTO rollup_geo
        SELECT g.grain, date_trunc(g.unit, event_time, 'UTC'), source, funnel_stage, event_type,
               coalesce(country, ''), count(*), count(revenue), coalesce(sum(revenue), 0)
        FROM events GROUP BY 2, 3, 4, 5, 6;
        INSERT INTO rollup_campaigns
        SELECT g.grain, date_trunc(g.unit, event_time, 'UTC'), campaign_id,
               count(*), count(revenue), coalesce(sum(revenue), 0)
        FROM events WHERE campaign_id IS NOT NULL GROUP BY 2, 3;
    END LOOP;
END;
$$;

SELECT rebuild_rollups();
