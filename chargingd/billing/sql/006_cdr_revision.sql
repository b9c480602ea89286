-- 006: CDR revisions. A live call closed provisionally (reaped as stale after its
-- gateway went silent) is corrected when its late Stop arrives: the corrected CDR has
-- the next revision and replaces the stored row (one row per (source, call_id) still),
-- and usage_periods moves by the difference.
ALTER TABLE cdrs ADD COLUMN revision INTEGER NOT NULL DEFAULT 0 CHECK (revision >= 0);
