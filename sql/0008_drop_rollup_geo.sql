-- Geo reads its events and revenue by country from the per-user sets (migration 7);
-- nothing reads rollup_geo any more, so the insert path stops maintaining it.
CREATE OR REPLACE FUNCTION rebuild_event_counts() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    g record;
BEGIN
    LOCK TABLE events IN SHARE MODE;
    LOCK TABLE rollup_events, rollup_campaigns IN ACCESS EXCLUSIVE MODE;
    TRUNCATE rollup_events, rollup_campaigns;
    FOR g IN SELECT * FROM (VALUES ('m'::"char", 'minute'), ('h', 'hour'), ('d', 'day')) AS v(grain, unit) LOOP
        INSERT INTO rollup_events
        SELECT g.grain, date_trunc(g.unit, event_time, 'UTC'), source, funnel_stage, event_type,
               count(*), count(revenue), coalesce(sum(revenue), 0)
        FROM events GROUP BY 2, 3, 4, 5;
        CONTINUE WHEN g.grain = 'm';
        INSERT INTO rollup_campaigns
        SELECT g.grain, date_trunc(g.unit, event_time, 'UTC'), campaign_id,
               count(*), count(revenue), coalesce(sum(revenue), 0)
        FROM events WHERE campaign_id IS NOT NULL GROUP BY 2, 3;
    END LOOP;
END;
$$;

DROP TABLE rollup_geo;
