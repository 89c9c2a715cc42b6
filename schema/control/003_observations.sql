-- Contract v2 (docs/events.md): every read of a table's source rows is an observation with a stamp that strictly
-- increases per table across every process that reads it (poller, back-fill). A reader holds its table's row here
-- locked (FOR UPDATE, inside a control-store transaction) while it reads the source, then takes the next stamp, so
-- reads of one table are serialised and a later stamp always saw a state at least as new.
-- Stamps are ticks: the control store's clock, or one more than the last stamp when the clock is behind it.
CREATE TABLE {{schema}}.observations (
  table_name            text        PRIMARY KEY,
  last_observed_ticks   bigint      NOT NULL DEFAULT 0,
  updated_at            timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- The registry, contract v2:
-- * modified_on_ticks may be NULL (rows with a NULL ModifiedOn are replicated);
-- * observed_ticks: the observation of the version registered (of the delete, once deleted);
-- * row_digest: SHA-256 of every published column but the version (src/poller/build.ts), so a change of content,
--   name, place in the tree or business unit is seen even when ModifiedOn did not move;
-- * acked: false while a key's first version is in flight: the key is registered before its first send, so the
--   delete sweep checks it even if the poller dies between Kafka's acknowledgement and the registry write;
-- * max_sent_modified_on_ticks: the greatest ModifiedOn ever sent for the key (set before each send), so a
--   ModifiedOn that moved backwards (a restore) is recognised even when the acknowledged one was never registered.
ALTER TABLE {{schema}}.published ALTER COLUMN modified_on_ticks DROP NOT NULL;
ALTER TABLE {{schema}}.published ADD COLUMN observed_ticks bigint;
ALTER TABLE {{schema}}.published ADD COLUMN row_digest bytea;
ALTER TABLE {{schema}}.published ADD COLUMN acked boolean NOT NULL DEFAULT true;
ALTER TABLE {{schema}}.published ADD COLUMN max_sent_modified_on_ticks bigint;
UPDATE {{schema}}.published SET max_sent_modified_on_ticks = modified_on_ticks;

ALTER TABLE {{schema}}.deletion_log ALTER COLUMN modified_on_ticks DROP NOT NULL;
ALTER TABLE {{schema}}.deletion_log ADD COLUMN observed_ticks bigint;

-- Rows whose ModifiedOn is NULL: counted per table and run (so they are reported, never silently skipped) and
-- replicated by their own step, which walks them by key with a cursor kept across runs.
ALTER TABLE {{schema}}.run_tables ADD COLUMN rows_null_modified_on bigint;
ALTER TABLE {{schema}}.run_batches DROP CONSTRAINT run_batches_step_check;
ALTER TABLE {{schema}}.run_batches ADD CONSTRAINT run_batches_step_check
  CHECK (step IN ('roots', 'missing-parents', 'children', 'nulls', 'deletes', 'late-arrivals', 'backfill'));
