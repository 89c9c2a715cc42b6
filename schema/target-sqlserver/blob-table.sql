-- One target table per configured table (SQL Server). {{schema}} and {{table}} are validated, bracket-quoted identifiers.
-- (modified_on_ticks, observed_ticks) is the version (100 ns ticks since 1970, UTC; docs/events.md); it is compared,
-- never converted through a float. modified_on_ticks is NULL where the source row's ModifiedOn is.
-- Keys, tenants and path locators use a binary collation: exact comparisons, as in PostgreSQL, and no collation
-- conflict with the #hw_stage table in tempdb.
-- The primary key is NONCLUSTERED: tenant + key can reach 1,100 bytes, over the 900-byte limit of a clustered key.
-- path_locator is nvarchar(850), the most an index key holds (1,700 bytes): hierarchyid text of a FileTable path
-- about twenty levels deep. A longer one fails its batch with a truncation error (2628) instead of being cut.
IF OBJECT_ID(N'{{schema}}.{{table}}', N'U') IS NULL
CREATE TABLE {{schema}}.{{table}} (
  tenant                 nvarchar(100)  COLLATE Latin1_General_100_BIN2 NOT NULL DEFAULT N'',
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
  applied_at             datetime2(7)   NOT NULL DEFAULT SYSUTCDATETIME(),
  PRIMARY KEY NONCLUSTERED (tenant, [key])
);
GO

-- Index names belong to their table in SQL Server, so one fixed name serves every target table. The key is the
-- path alone (850 characters fill the 1,700 bytes); tenant rides along as an included column.
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE object_id = OBJECT_ID(N'{{schema}}.{{table}}') AND name = N'ix_hw_path_locator')
CREATE INDEX [ix_hw_path_locator] ON {{schema}}.{{table}} (path_locator) INCLUDE (tenant);
GO

-- Tables created before contract v2 get the observation stamp, and ModifiedOn may be NULL. Checked first, so a
-- migrated table is not altered again on every start.
IF COL_LENGTH(N'{{schema}}.{{table}}', N'observed_ticks') IS NULL
ALTER TABLE {{schema}}.{{table}} ADD observed_ticks bigint NULL;
GO

IF EXISTS (SELECT 1 FROM sys.columns WHERE object_id = OBJECT_ID(N'{{schema}}.{{table}}') AND name = N'modified_on_ticks' AND is_nullable = 0)
EXEC(N'ALTER TABLE {{schema}}.{{table}} ALTER COLUMN modified_on_ticks bigint NULL');
