-- The registry writes a new key twice: a pending entry before its first send (so the delete sweep knows it even if
-- the poller dies before the checkpoint), then the acknowledged version at the checkpoint, which adds the digest,
-- content hash and observation. Neither indexed column (table_name with key, or with path_locator) changes, so that
-- update can be a HOT update — a new version on the same page and no new index entries — when the page has room.
-- Packed pages (fillfactor 100) had room for about half of them. 70 leaves room for most (measured at 100k rows with
-- test/bench/registry-writes.ts: 84 % HOT, the acknowledged writes 13 % faster, the heap 7 % larger, the indexes
-- smaller). New pages only; existing pages keep their fill until rewritten.
ALTER TABLE {{schema}}.published SET (fillfactor = 70);
