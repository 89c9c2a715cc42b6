-- highwater target bookkeeping (SQL Server). {{schema}} is replaced by the validated, bracket-quoted target schema.
-- Offsets live here, beside the rows they cover, and are written in the same transaction.
-- Batches are separated by GO lines, as in sqlcmd and SSMS; highwater runs them one by one in one transaction.
-- Text that is compared (names, keys, topics, path locators) uses a binary collation: comparisons are exact, as in
-- PostgreSQL, whatever the database's default collation, and the #hw_stage table in tempdb never meets a
-- collation conflict.
-- SQL Server limits a clustered index key to 900 bytes and a nonclustered one to 1,700: the primary keys that can
-- be longer than 900 bytes are NONCLUSTERED; group_id is nvarchar(200) so hw_offsets and hw_watermarks stay clustered.
IF SCHEMA_ID(PARSENAME(N'{{schema}}', 1)) IS NULL EXEC(N'CREATE SCHEMA {{schema}}');
GO

IF OBJECT_ID(N'{{schema}}.[hw_offsets]', N'U') IS NULL
CREATE TABLE {{schema}}.[hw_offsets] (
  group_id     nvarchar(200) COLLATE Latin1_General_100_BIN2 NOT NULL,
  topic        varchar(249)  COLLATE Latin1_General_100_BIN2 NOT NULL,
  [partition]  int           NOT NULL,
  next_offset  bigint        NOT NULL,
  updated_at   datetime2(7)  NOT NULL DEFAULT SYSUTCDATETIME(),
  PRIMARY KEY CLUSTERED (group_id, topic, [partition])
);
GO

-- One row per partition and scope: the last watermark marker passed on that partition.
IF OBJECT_ID(N'{{schema}}.[hw_watermarks]', N'U') IS NULL
CREATE TABLE {{schema}}.[hw_watermarks] (
  group_id         nvarchar(200) COLLATE Latin1_General_100_BIN2 NOT NULL,
  table_name       nvarchar(100) COLLATE Latin1_General_100_BIN2 NOT NULL,
  tenant           nvarchar(100) COLLATE Latin1_General_100_BIN2 NOT NULL,
  scope            nvarchar(100) COLLATE Latin1_General_100_BIN2 NOT NULL,
  topic            varchar(249)  COLLATE Latin1_General_100_BIN2 NOT NULL,
  [partition]      int           NOT NULL,
  watermark_ticks  bigint        NOT NULL,
  updated_at       datetime2(7)  NOT NULL DEFAULT SYSUTCDATETIME(),
  PRIMARY KEY CLUSTERED (group_id, topic, [partition], scope)
);
GO

-- Deleted versions: an older version replayed after a delete must not bring the row back.
IF OBJECT_ID(N'{{schema}}.[hw_tombstones]', N'U') IS NULL
CREATE TABLE {{schema}}.[hw_tombstones] (
  table_name         nvarchar(100) COLLATE Latin1_General_100_BIN2 NOT NULL,
  tenant             nvarchar(100) COLLATE Latin1_General_100_BIN2 NOT NULL,
  [key]              nvarchar(450) COLLATE Latin1_General_100_BIN2 NOT NULL,
  modified_on_ticks  bigint        NOT NULL,
  deleted_at         datetime2(7)  NOT NULL DEFAULT SYSUTCDATETIME(),
  PRIMARY KEY NONCLUSTERED (table_name, tenant, [key])
);
GO

-- Chunks of large blobs wait here until their row arrives; the row's upsert assembles them in the database and
-- then deletes them. They are kept per row key (not by hash alone): two rows with the same content, applied in
-- different batches, must not consume each other's chunks; and per chunk count, so chunks of one content cut at two
-- chunk sizes never mix.
IF OBJECT_ID(N'{{schema}}.[hw_chunks]', N'U') IS NULL
CREATE TABLE {{schema}}.[hw_chunks] (
  table_name      nvarchar(100)  COLLATE Latin1_General_100_BIN2 NOT NULL,
  [key]           nvarchar(450)  COLLATE Latin1_General_100_BIN2 NOT NULL,
  content_sha256  varbinary(32)  NOT NULL,
  chunk_count     int            NOT NULL,
  idx             int            NOT NULL,
  bytes           varbinary(max) NOT NULL,
  staged_at       datetime2(7)   NOT NULL DEFAULT SYSUTCDATETIME(),
  PRIMARY KEY NONCLUSTERED (table_name, [key], content_sha256, chunk_count, idx)
);
