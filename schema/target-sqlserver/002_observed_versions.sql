-- Contract v2 (docs/events.md, "Which version wins"): a version is (ModifiedOn, observation stamp), ModifiedOn may be
-- NULL, and a delete removes every version observed at or before it. Tombstones therefore remember the observation
-- of the delete; rows written before this migration have no stamp, and their ModifiedOn stands in for it (v1 order).
IF COL_LENGTH(N'{{schema}}.[hw_tombstones]', N'observed_ticks') IS NULL
ALTER TABLE {{schema}}.[hw_tombstones] ADD observed_ticks bigint NULL;
GO

-- EXEC: the column type is restated, which the T-SQL parser of the tests does not know.
EXEC(N'ALTER TABLE {{schema}}.[hw_tombstones] ALTER COLUMN modified_on_ticks bigint NULL');
GO

-- Rows routed to the retry topic (their parent or their chunks were missing) and not yet resolved: while one of
-- them waits, consistent_as_of of its table stays below its ModifiedOn, so the watermark a target reports is true.
-- A parked row is resolved when the target holds its version or a newer one, or a delete covers it.
IF OBJECT_ID(N'{{schema}}.[hw_parked]', N'U') IS NULL
CREATE TABLE {{schema}}.[hw_parked] (
  table_name         nvarchar(100) COLLATE Latin1_General_100_BIN2 NOT NULL,
  tenant             nvarchar(100) COLLATE Latin1_General_100_BIN2 NOT NULL,
  [key]              nvarchar(450) COLLATE Latin1_General_100_BIN2 NOT NULL,
  modified_on_ticks  bigint        NULL,
  observed_ticks     bigint        NOT NULL,
  reason             nvarchar(100) NOT NULL,
  parked_at          datetime2(7)  NOT NULL DEFAULT SYSUTCDATETIME(),
  PRIMARY KEY NONCLUSTERED (table_name, tenant, [key])
);
