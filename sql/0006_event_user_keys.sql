-- The user key (user_keys) of each event, set by the worker in the insert transaction:
-- the compactor and the reports' raw reads (edges of a range, slots not compacted yet)
-- take it from the row. Looking it up per event cost ~7 us, most of a report's raw read.
-- NULL for rows stored before this column, or by a bulk load, or whose user a concurrent
-- batch was adding: readers fall back to the lookup (coalesce), so every row stays exact.
ALTER TABLE events ADD COLUMN user_key integer;
