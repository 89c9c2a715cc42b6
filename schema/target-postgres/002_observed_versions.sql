-- Contract v2 (docs/events.md, "Which version wins"): a version is (ModifiedOn, observation stamp), ModifiedOn may be
-- NULL, and a delete removes every version observed at or before it. Tombstones therefore remember the observation
-- of the delete; rows written before this migration have no stamp, and their ModifiedOn stands in for it (v1 order).
ALTER TABLE {{schema}}.hw_tombstones ADD COLUMN IF NOT EXISTS observed_ticks bigint;
ALTER TABLE {{schema}}.hw_tombstones ALTER COLUMN modified_on_ticks DROP NOT NULL;

-- Rows routed to the retry topic (their parent or their chunks were missing) and not yet resolved: while one of
-- them waits, consistent_as_of of its table stays below its ModifiedOn, so the watermark a target reports is true.
-- A parked row is resolved when the target holds its version or a newer one, or a delete covers it.
CREATE TABLE IF NOT EXISTS {{schema}}.hw_parked (
  table_name         text        NOT NULL,
  tenant             text        NOT NULL,
  key                text        NOT NULL,
  modified_on_ticks  bigint,
  observed_ticks     bigint      NOT NULL,
  reason             text        NOT NULL,
  parked_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (table_name, tenant, key)
);
