/**
 * Pure decisions of the poller about one row (src/poll/build.ts): how its content travels (planContent) and
 * whether the registry already holds this exact version (isUnchanged), plus the change event built from it.
 */
import { describe, expect, it } from 'vitest';
import type { SourceRow } from '../../src/contract.js';
import { changeFromRow, deleteToName, isUnchanged, movedBackwards, planContent, rowDigest, sha256, type Registered } from '../../src/poll/build.js';

const MiB = 1 << 20;

function row(over: Partial<SourceRow> = {}): SourceRow {
  return {
    key: 'k1', name: 'a.bin', pathLocator: '/1/2/', parentPathLocator: '/1/', isDirectory: false, contentLength: 3, content: Buffer.from('abc'),
    modifiedOn: 17_672_472_001_234_567n, businessUnit: 'bu1', attributes: { creationTime: 1n, lastWriteTime: 2n }, ...over,
  };
}

describe('planContent', () => {
  const INLINE = 64 * 1024;
  const MAX = 4 * MiB;

  it('has nothing to send for a directory or NULL content', () => {
    expect(planContent(row({ isDirectory: true, contentLength: null, content: null }), INLINE, MAX)).toBe('none');
    expect(planContent(row({ contentLength: null, content: null }), INLINE, MAX)).toBe('none');
  });

  it('sends content read in the page inline, including empty content', () => {
    expect(planContent(row(), INLINE, MAX)).toBe('inline');
    expect(planContent(row({ contentLength: 0, content: Buffer.alloc(0) }), INLINE, MAX)).toBe('inline');
  });

  it('fetches content not read in the page but small enough for one record', () => {
    expect(planContent(row({ contentLength: INLINE, content: null }), INLINE, MAX)).toBe('fetch-inline');
    expect(planContent(row({ contentLength: 1, content: null }), INLINE, MAX)).toBe('fetch-inline');
  });

  it('chunks content larger than the inline limit', () => {
    expect(planContent(row({ contentLength: INLINE + 1, content: null }), INLINE, MAX)).toBe('chunked');
    expect(planContent(row({ contentLength: 3 * MiB, content: null }), INLINE, MAX)).toBe('chunked');
  });

  it('accepts a blob of exactly the largest size and refuses one byte more, whether or not it was read', () => {
    expect(planContent(row({ contentLength: MAX, content: null }), INLINE, MAX)).toBe('chunked');
    expect(planContent(row({ contentLength: MAX + 1, content: null }), INLINE, MAX)).toBe('too-large');
    expect(planContent(row({ contentLength: 10, content: Buffer.alloc(10) }), INLINE, 9)).toBe('too-large');
  });
});

describe('isUnchanged', () => {
  const digest = rowDigest(row(), sha256(Buffer.from('abc')));
  const registered = (over: Partial<Registered> = {}): Registered => ({
    modifiedOn: row().modifiedOn, digest, deleted: false, acked: true, maxSentModifiedOn: row().modifiedOn, observed: null, ...over,
  });

  it('is false for a key never published, or whose first version is still in flight', () => {
    expect(isUnchanged(row(), digest, undefined)).toBe(false);
    expect(isUnchanged(row(), digest, registered({ acked: false }))).toBe(false);
  });

  it('is true for the same ModifiedOn and the same digest', () => {
    expect(isUnchanged(row(), rowDigest(row(), sha256(Buffer.from('abc'))), registered())).toBe(true);
    expect(isUnchanged(row({ modifiedOn: null }), digest, registered({ modifiedOn: null }))).toBe(true);
  });

  it('is false when ModifiedOn differs either way, even by one tick, or became NULL', () => {
    expect(isUnchanged(row({ modifiedOn: row().modifiedOn! + 1n }), digest, registered())).toBe(false);
    expect(isUnchanged(row({ modifiedOn: row().modifiedOn! - 1n }), digest, registered())).toBe(false);
    expect(isUnchanged(row({ modifiedOn: null }), digest, registered())).toBe(false);
  });

  it('is false when anything published changed under the same ModifiedOn: content, name, place, BU, attributes', () => {
    const same = sha256(Buffer.from('abc'));
    expect(isUnchanged(row(), rowDigest(row(), sha256(Buffer.from('abd'))), registered())).toBe(false);
    for (const over of [{ name: 'b.bin' }, { parentPathLocator: '/9/' }, { pathLocator: '/9/2/' }, { businessUnit: 'bu2' }, { attributes: { creationTime: 1n, lastWriteTime: 3n } }, { isDirectory: true }]) {
      expect(isUnchanged(row(over), rowDigest(row(over), same), registered()), JSON.stringify(Object.keys(over))).toBe(false);
    }
  });

  it('is false for a key whose last published event was a delete (the row came back)', () => {
    expect(isUnchanged(row(), digest, registered({ deleted: true }))).toBe(false);
  });

  it('never trusts ModifiedOn alone: an unknown content hash, or a registry entry without a digest, means publish', () => {
    expect(isUnchanged(row({ content: null }), undefined, registered())).toBe(false);
    expect(isUnchanged(row(), digest, registered({ digest: null }))).toBe(false);
  });
});

describe('movedBackwards', () => {
  const registered = (over: Partial<Registered> = {}): Registered => ({
    modifiedOn: 100n, digest: null, deleted: false, acked: true, maxSentModifiedOn: 100n, observed: null, ...over,
  });

  it('is true when the row is older than the newest ModifiedOn sent since the last delete, NULL counting as oldest', () => {
    expect(movedBackwards(row({ modifiedOn: 99n }), registered())).toBe(true);
    expect(movedBackwards(row({ modifiedOn: null }), registered())).toBe(true);
    expect(movedBackwards(row({ modifiedOn: 99n }), registered({ modifiedOn: 90n, maxSentModifiedOn: 100n }))).toBe(true);
  });

  it('is false for the same or a newer ModifiedOn, a new key, and a key deleted since', () => {
    expect(movedBackwards(row({ modifiedOn: 100n }), registered())).toBe(false);
    expect(movedBackwards(row({ modifiedOn: 101n }), registered())).toBe(false);
    expect(movedBackwards(row({ modifiedOn: 1n }), undefined)).toBe(false);
    expect(movedBackwards(row({ modifiedOn: 1n }), registered({ deleted: true }))).toBe(false);
    expect(movedBackwards(row({ modifiedOn: null }), registered({ modifiedOn: null, maxSentModifiedOn: null }))).toBe(false);
  });
});

describe('deleteToName (contract v2.1: the delete a change names, because compaction may drop its tombstone)', () => {
  const registered = (over: Partial<Registered> = {}): Registered => ({
    modifiedOn: 100n, digest: null, deleted: false, acked: true, maxSentModifiedOn: 100n, observed: 500n, ...over,
  });

  it('names a tombstone observed just before the row when its ModifiedOn moved backwards, NULL included', () => {
    expect(deleteToName({ row: row({ modifiedOn: 99n }), observed: 900n }, registered())).toBe(899n);
    expect(deleteToName({ row: row({ modifiedOn: null }), observed: 900n }, registered())).toBe(899n);
  });

  it('names the registered delete when the row comes back after one, whatever its ModifiedOn', () => {
    expect(deleteToName({ row: row({ modifiedOn: 1n }), observed: 900n }, registered({ deleted: true, observed: 700n }))).toBe(700n);
    expect(deleteToName({ row: row({ modifiedOn: 200n }), observed: 900n }, registered({ deleted: true, observed: 700n }))).toBe(700n);
  });

  it('names it too when the poller stopped between registering the re-life as pending and its acknowledgement', () => {
    expect(deleteToName({ row: row({ modifiedOn: 200n }), observed: 900n }, registered({ deleted: false, acked: false, observed: 700n, maxSentModifiedOn: 200n }))).toBe(700n);
    expect(deleteToName({ row: row({ modifiedOn: 200n }), observed: 900n }, registered({ deleted: false, acked: false, observed: null, maxSentModifiedOn: 200n }))).toBeUndefined();
  });

  it('names nothing for a new key, a newer version, a v1 registry entry without an observation, or a delete not before the row', () => {
    expect(deleteToName({ row: row({ modifiedOn: 1n }), observed: 900n }, undefined)).toBeUndefined();
    expect(deleteToName({ row: row({ modifiedOn: 101n }), observed: 900n }, registered())).toBeUndefined();
    expect(deleteToName({ row: row({ modifiedOn: 101n }), observed: 900n }, registered({ deleted: true, observed: null }))).toBeUndefined();
    expect(deleteToName({ row: row({ modifiedOn: 101n }), observed: 900n }, registered({ deleted: true, observed: 900n }))).toBeUndefined();
  });

  it('is carried into the change event', () => {
    const change = changeFromRow({ row: row(), observed: 900n, deletedBefore: 899n }, { table: 'T', tenant: '', runId: 'run', window: { start: 0n, end: 1n } }, { kind: 'none' }, null);
    expect(change.deletedBefore).toBe(899n);
  });
});

describe('changeFromRow', () => {
  it('carries the row, its observation, the window and the run into the event, ticks untouched', () => {
    const r = row();
    const window = { start: -5n, end: 2n ** 60n };
    const change = changeFromRow({ row: r, observed: 2n ** 61n }, { table: 'T', tenant: 'gwent', runId: 'run', window }, { kind: 'inline', bytes: r.content! }, sha256(r.content!));
    expect(change).toEqual({
      table: 'T', tenant: 'gwent', key: 'k1', name: 'a.bin', pathLocator: '/1/2/', parentPathLocator: '/1/', isDirectory: false, size: 3,
      attributes: { creationTime: 1n, lastWriteTime: 2n }, modifiedOn: 17_672_472_001_234_567n, observed: 2n ** 61n, businessUnit: 'bu1',
      content: { kind: 'inline', bytes: r.content }, contentSha256: sha256(Buffer.from('abc')), runId: 'run', window,
    });
  });
});
