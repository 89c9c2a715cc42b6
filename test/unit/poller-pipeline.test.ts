/**
 * Pure parts of the poller's page pipeline (src/poll/table-poll.ts): how many rows one source query reads (by the
 * bytes of the rows just read), how a read is cut into checkpointed pages, and which part of a merged send's outcome
 * belongs to each page.
 */
import { describe, expect, it } from 'vitest';
import type { SourceRow } from '../../src/contract.js';
import type { ObservedRow, Registered } from '../../src/poll/build.js';
import type { PublishedRow } from '../../src/poll/publish-rows.js';
import { SendPipeline, heldAtSameVersion, outcomeOf, pagesOf, readLimit, sameVersionInFlight } from '../../src/poll/table-poll.js';

function row(key: string, contentBytes: number | null): SourceRow {
  return {
    key, name: `${key}.bin`, pathLocator: null, parentPathLocator: null, isDirectory: false, contentLength: contentBytes,
    content: contentBytes === null ? null : Buffer.alloc(contentBytes), modifiedOn: 1n, businessUnit: null, attributes: { creationTime: null, lastWriteTime: null },
  };
}

const observed = (r: SourceRow): ObservedRow => ({ row: r, observed: 7n });
const published = (key: string): PublishedRow => ({ key, modifiedOn: 1n, observed: 7n, digest: Buffer.alloc(32), contentSha256: null, pathLocator: null, chunkCount: null, bytes: 0 });

describe('readLimit', () => {
  it('reads several pages at once when the rows are small, never more than eight', () => {
    const small = Array.from({ length: 500 }, (_, i) => row(`k${i}`, 200));
    expect(readLimit(small, 500)).toBe(8 * 500);
    expect(readLimit(Array.from({ length: 10 }, (_, i) => row(`k${i}`, null)), 500)).toBe(8 * 500);
  });

  it('reads one page at a time when a page of such rows holds megabytes of content', () => {
    const large = Array.from({ length: 50 }, (_, i) => row(`k${i}`, 64 * 1024));
    expect(readLimit(large, 500)).toBe(500);
  });

  it('reads as many pages as stay near 4 MiB of content in between', () => {
    const medium = Array.from({ length: 100 }, (_, i) => row(`k${i}`, 4096 - 256));
    // 500 rows × 4 KiB = 2 MiB per page: two pages per read.
    expect(readLimit(medium, 500)).toBe(2 * 500);
  });

  it('reads at least one page when nothing was read', () => {
    expect(readLimit([], 500)).toBe(8 * 500);
  });
});

describe('pagesOf', () => {
  it('cuts rows into pages of the batch size, in order, the last one shorter', () => {
    expect(pagesOf([1, 2, 3, 4, 5], 2)).toEqual([[1, 2], [3, 4], [5]]);
    expect(pagesOf([1, 2], 2)).toEqual([[1, 2]]);
    expect(pagesOf([], 2)).toEqual([]);
  });
});

describe('outcomeOf', () => {
  it('gives each page of a merged send its own published and refused rows', () => {
    const outcome = { published: [published('a'), published('c')], failed: [{ key: 'b', modifiedOn: 1n, reason: 'too large' }] };
    const first = outcomeOf(outcome, [observed(row('a', 1)), observed(row('b', 1))]);
    const second = outcomeOf(outcome, [observed(row('c', 1))]);
    expect(first.published.map((r) => r.key)).toEqual(['a']);
    expect(first.failed.map((f) => f.key)).toEqual(['b']);
    expect(second.published.map((r) => r.key)).toEqual(['c']);
    expect(second.failed).toEqual([]);
  });
});

describe('sameVersionInFlight', () => {
  const inline = (over: Partial<SourceRow> = {}): SourceRow => ({ ...row('k', 8), content: Buffer.from('12345678'), ...over });
  const pending = (over: Partial<Registered> = {}): Registered => ({ modifiedOn: null, digest: null, deleted: false, acked: false, maxSentModifiedOn: 1n, observed: null, ...over });

  it('skips a row whose exact version (ModifiedOn, content, name, place) an earlier page has in flight', () => {
    expect(sameVersionInFlight(inline(), inline(), pending())).toBe(true);
    expect(sameVersionInFlight(inline(), inline(), undefined)).toBe(true);
    expect(sameVersionInFlight(inline({ contentLength: null, content: null }), inline({ contentLength: null, content: null }), pending())).toBe(true);
  });

  it('does not skip a key that is not in flight', () => {
    expect(sameVersionInFlight(inline(), undefined, pending())).toBe(false);
  });

  it('does not skip another version of the key: other ModifiedOn, content, name or place', () => {
    expect(sameVersionInFlight(inline({ modifiedOn: 2n }), inline(), pending({ maxSentModifiedOn: 2n }))).toBe(false);
    expect(sameVersionInFlight(inline(), inline({ modifiedOn: null }), pending())).toBe(false);
    expect(sameVersionInFlight(inline({ content: Buffer.from('87654321') }), inline(), pending())).toBe(false);
    expect(sameVersionInFlight(inline({ name: 'renamed' }), inline(), pending())).toBe(false);
    expect(sameVersionInFlight(inline({ pathLocator: '/2/', parentPathLocator: null }), inline({ pathLocator: '/1/2/', parentPathLocator: '/1/' }), pending())).toBe(false);
  });

  it('does not skip when the content was not read with the row (its hash is not known without reading it)', () => {
    const notInline = inline({ content: null, contentLength: 1 << 20 });
    expect(sameVersionInFlight(notInline, notInline, pending())).toBe(false);
    expect(sameVersionInFlight(inline(), inline({ content: null }), pending())).toBe(false);
  });

  it('does not skip when the registry holds a version sent later (the in-flight one would not replace it)', () => {
    expect(sameVersionInFlight(inline(), inline(), pending({ acked: true, modifiedOn: 5n, maxSentModifiedOn: 5n }))).toBe(false);
    expect(sameVersionInFlight(inline(), inline(), pending({ acked: true, modifiedOn: 0n, maxSentModifiedOn: 1n }))).toBe(true);
  });
});

describe('heldAtSameVersion (a read\'s rows left to preparePage to register, only if they changed)', () => {
  const entry = (over: Partial<Registered> = {}): Registered => ({ modifiedOn: 1n, digest: Buffer.alloc(32), deleted: false, acked: true, maxSentModifiedOn: 1n, observed: 7n, ...over });

  it('is true for a key the registry holds acknowledged at the row\'s ModifiedOn (the folders the missing-parents step published)', () => {
    expect(heldAtSameVersion(row('k', null), entry())).toBe(true);
    expect(heldAtSameVersion({ ...row('k', null), modifiedOn: null }, entry({ modifiedOn: null, maxSentModifiedOn: null }))).toBe(true);
  });

  it('is false for a new key, one in flight (not acknowledged), a deleted one, or another ModifiedOn', () => {
    expect(heldAtSameVersion(row('k', null), undefined)).toBe(false);
    expect(heldAtSameVersion(row('k', null), entry({ acked: false }))).toBe(false);
    expect(heldAtSameVersion(row('k', null), entry({ deleted: true }))).toBe(false);
    expect(heldAtSameVersion(row('k', null), entry({ modifiedOn: 0n }))).toBe(false);
    expect(heldAtSameVersion(row('k', null), entry({ modifiedOn: 2n, maxSentModifiedOn: 2n }))).toBe(false);
    expect(heldAtSameVersion({ ...row('k', null), modifiedOn: null }, entry())).toBe(false);
  });
});

describe('SendPipeline.watch (the keys a registry lookup made ahead of its read must look up again)', () => {
  const at = (batchNo: number) => ({ step: 'roots' as const, batchNo, position: { modifiedOn: 1n, key: 'k' }, startedAt: new Date(0) });
  const prepared = (...keys: string[]) => ({ ordered: keys.map((k) => observed(row(k, 1))), registered: new Map(), skipped: 0 });

  it('collects the keys in flight when the lookup starts and every key queued until unwatched, and no other', () => {
    const pipe = new SendPipeline();
    pipe.queue(at(1), prepared('a', 'b'));
    const read = [row('a', 1), row('c', 1), row('d', 1), row('e', 1)];
    const stale = pipe.watch(new Set(pipe.inFlight(read).map((r) => r.key)));
    expect([...stale]).toEqual(['a']);
    pipe.release(1); // checkpointed after the lookup: 'a' stays stale
    pipe.queue(at(2), prepared('c', 'x'));
    expect([...stale].sort()).toEqual(['a', 'c', 'x']);
    pipe.unwatch(stale);
    pipe.queue(at(3), prepared('d'));
    expect([...stale].sort()).toEqual(['a', 'c', 'x']);
  });

  it('feeds every set watched at once', () => {
    const pipe = new SendPipeline();
    const first = pipe.watch(new Set());
    const second = pipe.watch(new Set(['z']));
    pipe.queue(at(1), prepared('a'));
    pipe.unwatch(first);
    pipe.queue(at(2), prepared('b'));
    expect([...first]).toEqual(['a']);
    expect([...second].sort()).toEqual(['a', 'b', 'z']);
  });
});
