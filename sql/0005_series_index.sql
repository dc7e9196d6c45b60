-- rollup_series is read as one filter's run of buckets: (grain, source, funnel_stage)
-- then a range of bucket. Keyed by bucket first, an hourly series over 90 days visited
-- every filter's row of each bucket and fetched each from the heap; keyed this way, with
-- the figures in the index, it is one contiguous index-only scan. The worker's upserts
-- name the same columns, so their conflict target is unchanged.
ALTER TABLE rollup_series DROP CONSTRAINT rollup_series_pkey;
ALTER TABLE rollup_series ADD PRIMARY KEY (grain, source, funnel_stage, bucket) INCLUDE (events, revenue);
