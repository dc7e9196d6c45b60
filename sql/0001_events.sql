-- The raw events: one row per unique eventId, the source of truth for every report.
--
-- Indexes are chosen by insert cost (measured on a 2-core box with COPY into PG 15):
-- the unique key alone ~44-74k rows/s; typed columns with a few btree indexes ~40k rows/s
-- (~17k at 5M rows); a GIN index on the JSONB ~16k rows/s. Reports are served from
-- rollups, so the raw table carries only the primary key (deduplication) and a BRIN
-- index on event time (near-free to maintain; lets a rollup rebuild scan a time range).
CREATE TABLE events (
    event_id     text        PRIMARY KEY CHECK (char_length(event_id) BETWEEN 1 AND 128),
    event_time   timestamptz NOT NULL,
    source       text        NOT NULL CHECK (source IN ('facebook', 'tiktok')),
    funnel_stage text        NOT NULL CHECK (funnel_stage IN ('top', 'bottom')),
    event_type   text        NOT NULL,
    user_id      text        NOT NULL,
    -- the event's `data` object exactly as received, unknown fields included
    data         jsonb       NOT NULL,
    -- top-level fields the spec does not define (forward compatibility); NULL if none
    extra        jsonb,
    -- when ingestion accepted the event (PubAck), from the message header
    ingested_at  timestamptz,
    -- when the worker committed it
    stored_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX events_event_time_brin ON events USING brin (event_time);
