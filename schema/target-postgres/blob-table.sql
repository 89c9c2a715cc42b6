-- One target table per configured table. {{schema}} and {{table}} are validated, quoted identifiers.
-- (modified_on_ticks, observed_ticks) is the version (100 ns ticks since 1970, UTC; docs/events.md); it is compared,
-- never converted through a float. modified_on_ticks is NULL where the source row's ModifiedOn is.
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
  applied_at             timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (tenant, key)
);
CREATE INDEX IF NOT EXISTS {{index_path}} ON {{schema}}.{{table}} (tenant, path_locator);
-- Tables created before contract v2 get the observation stamp, and ModifiedOn may be NULL. Checked first, so a
-- migrated table is not locked again on every start.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '{{schema}}.{{table}}'::regclass AND attname = 'observed_ticks' AND NOT attisdropped) THEN
    ALTER TABLE {{schema}}.{{table}} ADD COLUMN observed_ticks bigint;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '{{schema}}.{{table}}'::regclass AND attname = 'modified_on_ticks' AND attnotnull) THEN
    ALTER TABLE {{schema}}.{{table}} ALTER COLUMN modified_on_ticks DROP NOT NULL;
  END IF;
END
$$;
