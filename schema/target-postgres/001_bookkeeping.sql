-- highwater target bookkeeping (PostgreSQL). {{schema}} is replaced by the validated, quoted target schema.
-- Offsets live here, beside the rows they cover, and are written in the same transaction.
CREATE SCHEMA IF NOT EXISTS {{schema}};

CREATE TABLE IF NOT EXISTS {{schema}}.hw_offsets (
  group_id     text        NOT NULL,
  topic        text        NOT NULL,
  partition    integer     NOT NULL,
  next_offset  bigint      NOT NULL,
  updated_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (group_id, topic, partition)
);

-- One row per partition and scope: the last watermark marker passed on that partition.
CREATE TABLE IF NOT EXISTS {{schema}}.hw_watermarks (
  group_id         text        NOT NULL,
  table_name       text        NOT NULL,
  tenant           text        NOT NULL,
  scope            text        NOT NULL,
  topic            text        NOT NULL,
  partition        integer     NOT NULL,
  watermark_ticks  bigint      NOT NULL,
  updated_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (group_id, topic, partition, scope)
);

-- Deleted versions: an older version replayed after a delete must not bring the row back.
CREATE TABLE IF NOT EXISTS {{schema}}.hw_tombstones (
  table_name         text        NOT NULL,
  tenant             text        NOT NULL,
  key                text        NOT NULL,
  modified_on_ticks  bigint      NOT NULL,
  deleted_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (table_name, tenant, key)
);

-- Chunks of large blobs wait here until their row arrives; the row's upsert assembles them in the database and
-- then deletes them. They are kept per row key (not by hash alone): two rows with the same content, applied in
-- different batches, must not consume each other's chunks; and per chunk count, so chunks of one content cut at two
-- chunk sizes never mix.
CREATE TABLE IF NOT EXISTS {{schema}}.hw_chunks (
  table_name      text        NOT NULL,
  key             text        NOT NULL,
  content_sha256  bytea       NOT NULL,
  chunk_count     integer     NOT NULL,
  idx             integer     NOT NULL,
  bytes           bytea       NOT NULL,
  staged_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (table_name, key, content_sha256, chunk_count, idx)
);
