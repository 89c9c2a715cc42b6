import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { childrenNeedingParents, compareVersions, parentsFirst, reduceBatch, type BatchEvent } from '../../src/apply/reduce.js';
import type { BlobChange, BlobChunk, Deletion, Ticks, WatermarkMarker } from '../../src/contract.js';

const sha = (text: string): Buffer => createHash('sha256').update(text).digest();

function change(key: string, modifiedOn: Ticks, over: Partial<BlobChange> = {}): BlobChange {
  const content = Buffer.from(`${key}@${modifiedOn}`);
  return {
    table: 'T', tenant: '', key, name: key, pathLocator: `/${key}/`, parentPathLocator: null, isDirectory: false,
    size: content.length, attributes: {}, modifiedOn, observed: modifiedOn, businessUnit: null, content: { kind: 'inline', bytes: content },
    contentSha256: sha(content.toString()), runId: 'r', window: { start: 0n, end: modifiedOn }, ...over,
  };
}

/** A delete observed at `observed` (its ModifiedOn, informational, the same unless given). */
const deletion = (key: string, observed: Ticks, tenant = ''): Deletion => ({ table: 'T', tenant, key, modifiedOn: observed, observed, runId: 'r' });
const c = (ch: BlobChange): BatchEvent => ({ type: 'change', change: ch });
const d = (del: Deletion): BatchEvent => ({ type: 'delete', deletion: del });
const marker = (scope: string, watermark: Ticks, partition = 0): WatermarkMarker => ({ table: 'T', tenant: '', scope, watermark, runId: 'r', partition });
const chunk = (key: string, index: number): BlobChunk => ({ table: 'T', key, contentSha256: sha(key), index, count: 2, bytes: Buffer.from([index]) });

/** What survives of each key: `key@ticks` for changes, `-key@ticks` for deletes. */
function survivors(events: readonly BatchEvent[]): string[] {
  const r = reduceBatch(events);
  return [...r.changes.map((x) => `${x.tenant}/${x.key}@${x.modifiedOn}`), ...r.deletes.map((x) => `-${x.tenant}/${x.key}@${x.modifiedOn}`)].sort();
}

describe('compareVersions', () => {
  it('is the contract order: ModifiedOn, then observation, the hash only between identical observations', () => {
    const [lo, hi] = [sha('a'), sha('b')].sort(Buffer.compare) as [Buffer, Buffer];
    expect(compareVersions({ modifiedOn: 1n, observed: 9n, contentSha256: hi }, { modifiedOn: 2n, observed: 3n, contentSha256: lo })).toBeLessThan(0);
    expect(compareVersions({ modifiedOn: 2n, observed: 5n, contentSha256: lo }, { modifiedOn: 2n, observed: 4n, contentSha256: hi })).toBeGreaterThan(0);
    expect(compareVersions({ modifiedOn: 2n, observed: 4n, contentSha256: hi }, { modifiedOn: 2n, observed: 4n, contentSha256: lo })).toBeGreaterThan(0);
    expect(compareVersions({ modifiedOn: 2n, observed: 4n, contentSha256: lo }, { modifiedOn: 2n, observed: 4n, contentSha256: Buffer.from(lo) })).toBe(0);
  });
});

describe('reduceBatch', () => {
  it('keeps the latest version of each key whatever the arrival order, and counts the rest as superseded', () => {
    const events = [c(change('a', 5n)), c(change('b', 1n)), c(change('a', 9n)), c(change('a', 7n)), c(change('b', 1n))];
    const reduced = reduceBatch(events);
    expect(reduced.changes.map((x) => [x.key, x.modifiedOn])).toEqual([['a', 9n], ['b', 1n]]);
    expect(reduced.superseded).toBe(3);
    expect(reduceBatch([...events].reverse()).changes.map((x) => [x.key, x.modifiedOn])).toEqual([['b', 1n], ['a', 9n]]);
  });

  it('breaks a ModifiedOn tie by the later observation, whatever the hashes and the arrival order', () => {
    const [lo, hi] = [sha('x'), sha('y')].sort(Buffer.compare) as [Buffer, Buffer];
    const earlier = change('k', 4n, { contentSha256: hi, observed: 10n });
    const later = change('k', 4n, { contentSha256: lo, observed: 11n });
    expect(reduceBatch([c(earlier), c(later)]).changes).toEqual([later]);
    expect(reduceBatch([c(later), c(earlier)]).changes).toEqual([later]);
    const directory = change('k', 4n, { contentSha256: null, content: { kind: 'none' }, observed: 12n });
    expect(reduceBatch([c(later), c(directory)]).changes).toEqual([directory]);
  });

  it('keeps ticks apart that a millisecond clock would merge (2^60 and 2^60 + 1)', () => {
    const reduced = reduceBatch([c(change('k', 2n ** 60n + 1n)), c(change('k', 2n ** 60n))]);
    expect(reduced.changes.map((x) => x.modifiedOn)).toEqual([2n ** 60n + 1n]);
  });

  it('lets a delete win over a change observed at or before it, and a change only when observed after it', () => {
    expect(survivors([c(change('k', 10n)), d(deletion('k', 10n))])).toEqual(['-/k@10']);
    expect(survivors([d(deletion('k', 10n)), c(change('k', 10n))])).toEqual(['-/k@10']);
    expect(survivors([c(change('k', 9n)), d(deletion('k', 10n))])).toEqual(['-/k@10']);
    // The row came back after the delete: the change is written, and the delete is still recorded (an older version
    // arriving later from the retry topic must meet the tombstone).
    expect(survivors([c(change('k', 11n)), d(deletion('k', 10n))])).toEqual(['-/k@10', '/k@11']);
    expect(survivors([d(deletion('k', 10n)), c(change('k', 11n))])).toEqual(['-/k@10', '/k@11']);
    expect(survivors([d(deletion('k', 10n)), d(deletion('k', 12n)), d(deletion('k', 11n))])).toEqual(['-/k@12']);
    expect(reduceBatch([c(change('k', 9n)), d(deletion('k', 10n)), c(change('k', 8n))]).superseded).toBe(2);
  });

  it('judges a delete by observation, not ModifiedOn: a restore with an old ModifiedOn outlives an earlier delete', () => {
    const restored = change('k', 3n, { observed: 20n });
    for (const events of [[d(deletion('k', 15n)), c(restored)], [c(restored), d(deletion('k', 15n))]]) {
      expect(reduceBatch(events)).toMatchObject({ changes: [restored], deletes: [deletion('k', 15n)] });
    }
    const stale = change('k', 30n, { observed: 14n });
    expect(reduceBatch([c(stale), d(deletion('k', 15n))]).deletes.map((x) => x.observed)).toEqual([15n]);
  });

  it('keeps the same key of two tenants apart', () => {
    const events = [c(change('k', 5n)), c(change('k', 3n, { tenant: 'south' })), d(deletion('k', 4n, 'south')), c(change('k', 1n))];
    expect(survivors(events)).toEqual(['-south/k@4', '/k@5']);
  });

  it('passes every chunk through in order and keeps the latest marker per table and scope', () => {
    const events: BatchEvent[] = [
      { type: 'chunk', chunk: chunk('big', 1) },
      { type: 'marker', marker: marker('*', 100n) },
      c(change('big', 3n)),
      { type: 'chunk', chunk: chunk('big', 0) },
      { type: 'marker', marker: marker('bu1', 50n) },
      { type: 'marker', marker: marker('*', 200n) },
    ];
    const reduced = reduceBatch(events);
    expect(reduced.chunks.map((x) => x.index)).toEqual([1, 0]);
    expect(reduced.markers.map((m) => [m.scope, m.watermark])).toEqual([['*', 200n], ['bu1', 50n]]);
    expect(reduced.superseded).toBe(0);
  });

  it('returns changes parents first, and nothing for an empty batch', () => {
    const events = [
      c(change('file', 1n, { pathLocator: '/1/2/3/', parentPathLocator: '/1/2/' })),
      c(change('root', 9n, { pathLocator: '/1/' })),
      c(change('folder', 5n, { pathLocator: '/1/2/', parentPathLocator: '/1/' })),
    ];
    expect(reduceBatch(events).changes.map((x) => x.key)).toEqual(['root', 'folder', 'file']);
    expect(reduceBatch([])).toEqual({ dropped: [], changes: [], deletes: [], chunks: [], markers: [], superseded: 0 });
  });
});

describe('parentsFirst', () => {
  it('sorts by hierarchy depth and keeps the arrival order within a depth', () => {
    const rows = [
      change('c1', 1n, { pathLocator: '/1/2/3/' }),
      change('r1', 1n, { pathLocator: '/1/' }),
      change('m1', 1n, { pathLocator: '/1/2/' }),
      change('r2', 1n, { pathLocator: '/5/' }),
      change('m2', 1n, { pathLocator: '/5/6/' }),
      change('none', 1n, { pathLocator: null }),
    ];
    expect(parentsFirst(rows).map((x) => x.key)).toEqual(['none', 'r1', 'r2', 'm1', 'm2', 'c1']);
    expect(rows.map((x) => x.key)).toEqual(['c1', 'r1', 'm1', 'r2', 'm2', 'none']);
  });
});

describe('childrenNeedingParents', () => {
  it('lists the children whose parent is not among the changes of the same tenant', () => {
    const rows = [
      change('root', 1n, { pathLocator: '/1/' }),
      change('with-parent', 1n, { pathLocator: '/1/2/', parentPathLocator: '/1/' }),
      change('grandchild', 1n, { pathLocator: '/1/2/3/', parentPathLocator: '/1/2/' }),
      change('orphan', 1n, { pathLocator: '/7/8/', parentPathLocator: '/7/' }),
      change('other-tenant', 1n, { tenant: 'south', pathLocator: '/1/9/', parentPathLocator: '/1/' }),
    ];
    expect(childrenNeedingParents(rows).map((x) => x.key)).toEqual(['orphan', 'other-tenant']);
    expect(childrenNeedingParents([])).toEqual([]);
  });

  it('does not count a parent that is only deleted in the batch', () => {
    const reduced = reduceBatch([
      c(change('parent', 1n, { pathLocator: '/1/' })),
      d(deletion('parent', 2n)),
      c(change('child', 1n, { pathLocator: '/1/2/', parentPathLocator: '/1/' })),
    ]);
    expect(childrenNeedingParents(reduced.changes).map((x) => x.key)).toEqual(['child']);
  });
});
