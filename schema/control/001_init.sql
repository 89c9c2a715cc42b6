-- highwater control store (PostgreSQL): the poller's durable state.
-- {{schema}} is replaced by the validated, quoted schema name (controlStore.schema, default highwater_control).
-- The migration runner (src/control/migrate.ts) creates the schema and {{schema}}.schema_migrations
-- (version int PRIMARY KEY, name text, applied_at timestamptz) before it applies this file, in the same transaction.
--
-- Every ModifiedOn and window bound is stored as *ticks*: bigint, 100 ns intervals since 1970-01-01T00:00:00Z.
-- Never timestamptz: PostgreSQL keeps microseconds and would drop the last digit of SQL Server's datetime2(7).
-- Columns that are only ever the database's own clock (started_at, lease_expires_at, ...) are timestamptz.
--
-- Seed equivalents: runs ≈ BlobDeltaRun, run_tables + run_batches ≈ BlobDeltaRunStep,
-- watermarks ≈ BlobDeltaHighWatermark (with its IsRunning lease), deletion_log ≈ BlobDeltaDeletionLog.

-- One row per invocation of the poller (a poll over some tables, a back-fill, ...).
CREATE TABLE {{schema}}.runs (
  run_id        uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
  kind          text        NOT NULL CHECK (kind ~ '^[a-z][a-z-]*$'),
  status        text        NOT NULL DEFAULT 'running'
                            CHECK (status IN ('running', 'completed', 'failed', 'abandoned')),
  requested_by  text,
  host          text,
  pid           integer,
  started_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
  finished_at   timestamptz,
  error         text,
  options       jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX runs_started_at_idx ON {{schema}}.runs (started_at DESC);
CREATE INDEX runs_status_idx ON {{schema}}.runs (status, started_at DESC);

-- One row per table and scope a run works on. The window is fixed when the row is first written: a resumed run
-- keeps it. scope '*' means all business units, otherwise the business unit id.
CREATE TABLE {{schema}}.run_tables (
  run_id                  uuid        NOT NULL REFERENCES {{schema}}.runs (run_id) ON DELETE CASCADE,
  table_name              text        NOT NULL,
  scope                   text        NOT NULL,
  tenant                  text        NOT NULL DEFAULT '',
  window_start_ticks      bigint      NOT NULL,
  window_end_ticks        bigint      NOT NULL,
  end_clamped_by          text        CHECK (end_clamped_by IN ('oldest-open-transaction')),
  oldest_tx_visible       boolean,
  status                  text        NOT NULL DEFAULT 'running'
                                      CHECK (status IN ('running', 'completed', 'failed', 'skipped', 'abandoned')),
  rows_published          bigint      NOT NULL DEFAULT 0,
  bytes_published         bigint      NOT NULL DEFAULT 0,
  rows_skipped_unchanged  bigint      NOT NULL DEFAULT 0,
  rows_failed             bigint      NOT NULL DEFAULT 0,
  tombstones              bigint      NOT NULL DEFAULT 0,
  started_at              timestamptz NOT NULL DEFAULT clock_timestamp(),
  finished_at             timestamptz,
  error                   text,
  PRIMARY KEY (run_id, table_name, scope)
);
CREATE INDEX run_tables_table_idx ON {{schema}}.run_tables (table_name, scope, started_at DESC);

-- One row per published (and acknowledged) page of a step: the checkpoint a resumed run continues after.
-- Steps run in the order roots < missing-parents < children < deletes; a back-fill run has only 'backfill'.
CREATE TABLE {{schema}}.run_batches (
  run_id                  uuid        NOT NULL,
  table_name              text        NOT NULL,
  scope                   text        NOT NULL,
  step                    text        NOT NULL
                                      CHECK (step IN ('roots', 'missing-parents', 'children', 'deletes', 'backfill')),
  batch_no                integer     NOT NULL CHECK (batch_no >= 0),
  rows                    integer     NOT NULL DEFAULT 0,
  bytes                   bigint      NOT NULL DEFAULT 0,
  rows_skipped            integer     NOT NULL DEFAULT 0,
  rows_failed             integer     NOT NULL DEFAULT 0,
  last_modified_on_ticks  bigint,
  last_key                text,
  started_at              timestamptz NOT NULL,
  finished_at             timestamptz NOT NULL DEFAULT clock_timestamp(),
  status                  text        NOT NULL CHECK (status IN ('completed', 'failed')),
  error                   text,
  PRIMARY KEY (run_id, table_name, scope, step, batch_no),
  FOREIGN KEY (run_id, table_name, scope) REFERENCES {{schema}}.run_tables (run_id, table_name, scope) ON DELETE CASCADE,
  CHECK ((last_modified_on_ticks IS NULL) = (last_key IS NULL))
);

-- Per table and scope: the high-watermark (window end of the last fully acknowledged window) and the lease.
-- Lease expiry is always computed with the database's clock, never a host's.
CREATE TABLE {{schema}}.watermarks (
  table_name        text        NOT NULL,
  scope             text        NOT NULL,
  tenant            text        NOT NULL DEFAULT '',
  high_water_ticks  bigint,
  last_run_id       uuid        REFERENCES {{schema}}.runs (run_id) ON DELETE SET NULL,
  last_advanced_at  timestamptz,
  lease_owner       text,
  lease_expires_at  timestamptz,
  PRIMARY KEY (table_name, scope),
  CHECK ((lease_owner IS NULL) = (lease_expires_at IS NULL))
);

-- The published-state registry: the last version of each key published to the table's topic. Used to skip
-- unchanged re-reads in the window overlap, to find missing parents, and by the delete sweep.
-- key is COLLATE "C" so the sweep's key ranges are byte-ordered and independent of the database's locale.
CREATE TABLE {{schema}}.published (
  table_name         text        NOT NULL,
  key                text        COLLATE "C" NOT NULL,
  modified_on_ticks  bigint      NOT NULL,
  content_sha256     bytea,
  path_locator       text,
  chunk_count        integer,
  deleted            boolean     NOT NULL DEFAULT false,
  run_id             uuid,
  published_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (table_name, key)
);
CREATE INDEX published_path_locator_idx ON {{schema}}.published (table_name, path_locator);

-- Rows that disappeared from the source and were published as tombstones.
CREATE TABLE {{schema}}.deletion_log (
  id                 bigserial   PRIMARY KEY,
  table_name         text        NOT NULL,
  key                text        NOT NULL,
  modified_on_ticks  bigint      NOT NULL,
  run_id             uuid,
  detected_at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX deletion_log_table_idx ON {{schema}}.deletion_log (table_name, key);
CREATE INDEX deletion_log_run_idx ON {{schema}}.deletion_log (run_id);

-- Rows a run could not publish (blob too large, unreadable content, ...), with the reason.
CREATE TABLE {{schema}}.row_failures (
  id                 bigserial   PRIMARY KEY,
  run_id             uuid        NOT NULL REFERENCES {{schema}}.runs (run_id) ON DELETE CASCADE,
  table_name         text        NOT NULL,
  key                text        NOT NULL,
  modified_on_ticks  bigint,
  reason             text        NOT NULL,
  recorded_at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX row_failures_run_idx ON {{schema}}.row_failures (run_id, id);

-- The delete sweep walks the registered keys of a table range by range across polls; this is where it stopped.
CREATE TABLE {{schema}}.sweep_cursors (
  table_name  text        PRIMARY KEY,
  last_key    text        COLLATE "C",
  updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
