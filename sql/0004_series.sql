-- Totals per bucket for the time series without an event-type filter. rollup_events has
-- one row per (source, stage, type) and bucket, so an hourly series over 90 days summed
-- ~30,000 rows per request; this table has the one row the request needs per bucket:
-- source and funnel_stage are each a value or '' (any). Maintained with the other rollups.
CREATE TABLE rollup_series (
    grain        "char"      NOT NULL CHECK (grain IN ('m', 'h', 'd')),
    bucket       timestamptz NOT NULL,
    source       text        NOT NULL,
    funnel_stage text        NOT NULL,
    events       bigint      NOT NULL,
    revenue      numeric     NOT NULL,
    PRIMARY KEY (grain, bucket, source, funnel_stage)
);

INSERT INTO rollup_series
SELECT grain, bucket, s, st, sum(events), sum(revenue)
FROM rollup_events,
     LATERAL (VALUES ('', ''), (source, ''), ('', funnel_stage), (source, funnel_stage)) AS k(s, st)
GROUP BY 1, 2, 3, 4;

ALTER FUNCTION rebuild_counts() RENAME TO rebuild_event_counts;

CREATE FUNCTION rebuild_counts() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM rebuild_event_counts();
    LOCK TABLE rollup_series IN ACCESS EXCLUSIVE MODE;
    TRUNCATE rollup_series;
    INSERT INTO rollup_series
    SELECT grain, bucket, s, st, sum(events), sum(revenue)
    FROM rollup_events,
         LATERAL (VALUES ('', ''), (source, ''), ('', funnel_stage), (source, funnel_stage)) AS k(s, st)
    GROUP BY 1, 2, 3, 4;
END;
$$;
