-- One target table per configured table. {{schema}} and {{table}} are validated, quoted identifiers.
-- modified_on_ticks (100 ns since 1970, UTC) is the version; it is compared, never converted through a float.
CREATE TABLE IF NOT EXISTS {{schema}}.{{table}} (
  tenant                 text        NOT NULL DEFAULT '',
  key                    text        NOT NULL,
  name                   text,
  path_locator           text,
  parent_path_locator    text,
  is_directory           boolean     NOT NULL DEFAULT false,
  size                   bigint,
  content                bytea,
  content_sha256         bytea,
  modified_on_ticks      bigint      NOT NULL,
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
  applied_at             timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (tenant, key)
);
CREATE INDEX IF NOT EXISTS {{index_path}} ON {{schema}}.{{table}} (tenant, path_locator);
