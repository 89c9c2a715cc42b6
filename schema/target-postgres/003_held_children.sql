-- Children whose parent is not yet in the target wait here, whole (every column of the target row), written in the
-- same transaction as the batch that brought them. Each batch, after its upserts, promotes in one set-based step
-- every held child whose parent now exists (and the chains hanging from it). The latest version per key is kept;
-- a held row never overwrites a newer version in the target, and a delete observed at or after it removes it.
-- While a child is held it is also parked (hw_parked), so consistent_as_of stays below it.
CREATE TABLE IF NOT EXISTS {{schema}}.hw_held (
  table_name             text        NOT NULL,
  tenant                 text        NOT NULL,
  key                    text        NOT NULL,
  name                   text,
  path_locator           text,
  parent_path_locator    text,
  is_directory           boolean     NOT NULL DEFAULT false,
  size                   bigint,
  content                bytea,
  content_sha256         bytea,
  modified_on_ticks      bigint,
  observed_ticks         bigint,
  business_unit          text,
  creation_time_ticks    bigint,
  last_write_time_ticks  bigint,
  last_access_time_ticks bigint,
  is_readonly            boolean,
  is_hidden              boolean,
  is_system              boolean,
  is_archive             boolean,
  run_id                 text,
  source_partition       integer,
  source_offset          bigint,
  held_at                timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (table_name, tenant, key)
);
-- Promotion looks held children up by the parent that just arrived.
CREATE INDEX IF NOT EXISTS hw_held_parent_idx ON {{schema}}.hw_held (table_name, tenant, parent_path_locator);
