-- Children whose parent is not yet in the target wait here, whole (every column of the target row), written in the
-- same transaction as the batch that brought them. Each batch, after its upsert, promotes in one set-based step
-- every held child whose parent now exists (and the chains hanging from it). The latest version per key is kept;
-- a held row never overwrites a newer version in the target, and a delete observed at or after it removes it.
-- While a child is held it is also parked (hw_parked), so consistent_as_of stays below it.
IF OBJECT_ID(N'{{schema}}.[hw_held]', N'U') IS NULL
CREATE TABLE {{schema}}.[hw_held] (
  table_name             nvarchar(100)  COLLATE Latin1_General_100_BIN2 NOT NULL,
  tenant                 nvarchar(100)  COLLATE Latin1_General_100_BIN2 NOT NULL,
  [key]                  nvarchar(450)  COLLATE Latin1_General_100_BIN2 NOT NULL,
  name                   nvarchar(4000),
  path_locator           nvarchar(850)  COLLATE Latin1_General_100_BIN2,
  parent_path_locator    nvarchar(850)  COLLATE Latin1_General_100_BIN2,
  is_directory           bit            NOT NULL DEFAULT 0,
  size                   bigint,
  content                varbinary(max),
  content_sha256         varbinary(32),
  modified_on_ticks      bigint         NULL,
  observed_ticks         bigint         NULL,
  business_unit          nvarchar(100),
  creation_time_ticks    bigint,
  last_write_time_ticks  bigint,
  last_access_time_ticks bigint,
  is_readonly            bit,
  is_hidden              bit,
  is_system              bit,
  is_archive             bit,
  run_id                 nvarchar(100),
  source_partition       int,
  source_offset          bigint,
  held_at                datetime2(7)   NOT NULL DEFAULT SYSUTCDATETIME(),
  PRIMARY KEY NONCLUSTERED (table_name, tenant, [key])
);
GO

-- Promotion looks held children up by the parent that just arrived (the path fills an index key; the rest rides along).
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'{{schema}}.[hw_held]') AND name = N'ix_hw_held_parent')
CREATE INDEX [ix_hw_held_parent] ON {{schema}}.[hw_held] (parent_path_locator) INCLUDE (table_name, tenant);
