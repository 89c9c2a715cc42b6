-- Keys about to be sent for the first time, one row per source read (arrays) instead of one pending registry entry
-- per key: a first load wrote every new key twice (the pending entry, then the acknowledged version), about 1.5 s of
-- PostgreSQL per 100k rows for each write. The delete sweep must still know every key that may have reached Kafka,
-- so a row here is written before its keys' first send and deleted only once every key of it is recorded in the
-- registry (the checkpoint of the read's last page); whoever takes a lease of the table next first turns every row
-- left here (a poller stopped in between) into pending registry entries, before any sweep (ControlStore
-- replayPendingSends). Not indexed beyond the key: a table holds a few rows at a time.
CREATE TABLE {{schema}}.pending_sends (
  id                 bigserial   PRIMARY KEY,
  table_name         text        NOT NULL,
  run_id             uuid,
  keys               text[]      NOT NULL,
  modified_on_ticks  bigint[]    NOT NULL,
  path_locators      text[]      NOT NULL,
  created_at         timestamptz NOT NULL DEFAULT clock_timestamp()
);
